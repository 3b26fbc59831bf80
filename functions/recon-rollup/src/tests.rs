//! The whole reconciliation over in-memory ports: ingest both sides of a
//! generated program day with injected breaks, settle, match every shard,
//! roll up, and compare with the report the generator says it must give.

use super::*;
use recon_ingest::{ingest, IngestTask};
use recon_match::{match_shard, MatchTask};
use recon_settle::{settle, SettleInput, Settled, Wrapped};
use tally_aws::memory::{
    MemoryBlobs, MemoryFaults, MemoryObjects, MemoryProgress, MemoryPublisher, MemoryReconState,
    MemoryRecords,
};
use tally_aws::ports::ReconState;
use tally_aws::runs::MemoryRuns;
use tally_domain::recon::pipeline::Inspected;
use tally_domain::recon::rollup::Report;
use tally_domain::recon::sample::{self, BreakMix, SampleSpec};
use tally_domain::recon::ObjectKey;

struct World {
    objects: MemoryObjects,
    records: MemoryRecords,
    progress: MemoryProgress,
    faults: MemoryFaults,
    state: MemoryReconState,
    blobs: MemoryBlobs,
    bus: MemoryPublisher,
    runs: MemoryRuns,
    /// The run the pipeline reports to, once `join` made one.
    run_id: std::sync::Mutex<Option<String>>,
}

const SHARDS: u32 = 8;

impl World {
    fn new() -> World {
        World {
            objects: MemoryObjects::default(),
            records: MemoryRecords::default(),
            progress: MemoryProgress::default(),
            faults: MemoryFaults::default(),
            state: MemoryReconState::default(),
            blobs: MemoryBlobs::default(),
            bus: MemoryPublisher::default(),
            runs: MemoryRuns::default(),
            run_id: std::sync::Mutex::new(None),
        }
    }

    /// Inspect's part for the run: the reconciliation run of ACME's day,
    /// joined as the state machine's Inspect step does.
    async fn join(&self) -> String {
        let now = chrono::Utc::now();
        let (run, _) = self
            .runs
            .submit(&|a| {
                tally_domain::run::RunRecord::new_recon(
                    "ACME",
                    "2026-11-20".parse().unwrap(),
                    a,
                    now,
                )
            })
            .await
            .unwrap();
        *self.run_id.lock().unwrap() = Some(run.run_id.clone());
        run.run_id
    }

    /// Lands an object and runs inspect's part by hand, then ingest and settle.
    async fn land(&self, key: &str, body: String, version: Option<u64>) -> Settled {
        let obj = self.objects.put(key, body.into_bytes());
        let k = ObjectKey::parse(key).unwrap();
        let cfg = recon_ingest::Config {
            shard_count: SHARDS,
            write_concurrency: 4,
            checkpoint_records: 100,
            fault_injection: false,
        };
        let task = IngestTask {
            object: obj.clone(),
            version,
            fault: None,
        };
        let outcome = ingest(
            &self.objects,
            &self.records,
            &self.progress,
            &self.faults,
            &cfg,
            task.clone(),
            &std::sync::atomic::AtomicU64::new(0),
        )
        .await
        .unwrap();
        let id = tally_domain::recon::pipeline::ingest_id(key, &obj.etag, version);
        self.state
            .put_outcome(&id, &serde_json::to_value(&outcome).unwrap())
            .await
            .unwrap();
        let inspected = Inspected {
            side: k.side,
            program_id: k.program_id.clone(),
            file_date: k.file_date,
            key: key.into(),
            ingest_id: id,
            size_bytes: obj.size_bytes,
            large_file_bytes: u64::MAX,
            file_sequence: None,
            ingest_task: serde_json::to_value(&task).unwrap(),
            run_id: self.run_id.lock().unwrap().clone(),
            execution_id: Some(format!(
                "arn:aws:states:us-east-1:000000000000:execution:recon:{}",
                k.side.as_str()
            )),
        };
        let cfg = recon_settle::Config {
            shard_count: SHARDS,
            poll_seconds: 60,
            wait_seconds_max: 3_600,
        };
        settle(
            &self.state,
            &self.bus,
            &self.runs,
            &cfg,
            SettleInput {
                inspect: Wrapped { result: inspected },
                waited_seconds: 0,
            },
        )
        .await
        .unwrap()
    }

    async fn reconcile(&self, recon: Recon) -> RolledUp {
        let run_id = self.run_id.lock().unwrap().clone();
        for shard in 0..recon.shard_count {
            match_shard(
                &self.records,
                &self.state,
                &self.runs,
                MatchTask {
                    recon: recon.clone(),
                    shard,
                    run_id: run_id.clone(),
                },
            )
            .await
            .unwrap();
        }
        handle(
            &self.state,
            &self.blobs,
            &self.bus,
            &self.runs,
            &config(),
            RollupInput {
                recon: Some(recon),
                failure: None,
                run_id,
            },
        )
        .await
        .unwrap()
        .expect("a rollup")
    }

    fn report(&self, key: &str) -> Report {
        serde_json::from_slice(&self.blobs.objects.lock().unwrap()[key]).unwrap()
    }
}

fn config() -> Config {
    Config {
        breaks_max: 0,
        difference_max: Decimal::ZERO,
    }
}

fn spec() -> SampleSpec {
    SampleSpec {
        program_id: "ACME".into(),
        file_date: "2026-11-20".parse().unwrap(),
        file_sequence: 3,
        records: 2_000,
        seed: 11,
        breaks: BreakMix::default_for(2_000),
    }
}

const S_KEY: &str = "settlement/ACME/2026-11-20/visa.dat";
const I_KEY: &str = "internal/ACME/2026-11-20/auths.csv";

#[tokio::test]
async fn a_day_with_injected_breaks_gives_exactly_the_expected_report() {
    let w = World::new();
    let s = spec();
    let first = w.land(S_KEY, sample::settlement_file(&s), None).await;
    assert!(matches!(first, Settled::Waiting { .. }), "{first:?}");
    let Settled::Ready { recon, .. } = w.land(I_KEY, sample::internal_file(&s), Some(1)).await
    else {
        panic!("both sides are in")
    };
    let done = w.reconcile(recon.clone()).await;
    let expected = sample::expected_report(&s);
    let got = w.report(&done.report_key);
    assert_eq!(got, expected);
    assert_eq!(
        serde_json::to_string(&got).unwrap(),
        serde_json::to_string(&expected).unwrap()
    );
    assert_eq!(done.exceptions, expected.exceptions.len() as u64);
    assert!(done.alarmed, "breaks above a tolerance of 0");
    let events = w.bus.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, RECONCILIATION_COMPLETED);
    assert_eq!(events[0].1["status"], "BREAKS");
    let status = w.state.status("ACME", s.file_date).await.unwrap().unwrap();
    assert_eq!(status["status"], "RECONCILED");
    // The exceptions CSV has a header and one line per exception.
    let objects = w.blobs.objects.lock().unwrap().clone();
    let csv = String::from_utf8(objects[&exceptions_key(&recon)].clone()).unwrap();
    assert_eq!(csv.lines().count(), 1 + expected.exceptions.len());
    // The reconciliation's own objects, and the day's latest copies of them.
    assert_eq!(done.report_key, "reports/ACME/2026-11-20/s3-i1/report.json");
    assert_eq!(
        objects[&latest_report_key("ACME", s.file_date)],
        objects[&done.report_key]
    );
    assert_eq!(
        objects[&latest_exceptions_key("ACME", s.file_date)],
        objects[&exceptions_key(&recon)]
    );

    // Matching and rolling up again (a retried step) gives the same report.
    let again = w.reconcile(recon).await;
    assert_eq!(again.report_key, done.report_key);
    assert_eq!(w.report(&again.report_key), expected);
}

#[tokio::test]
async fn the_rollup_waits_for_every_shard() {
    let w = World::new();
    let s = spec();
    w.land(S_KEY, sample::settlement_file(&s), None).await;
    let Settled::Ready { recon, .. } = w.land(I_KEY, sample::internal_file(&s), Some(1)).await
    else {
        panic!("both sides are in")
    };
    for shard in 0..recon.shard_count - 1 {
        match_shard(
            &w.records,
            &w.state,
            &w.runs,
            MatchTask {
                run_id: None,
                recon: recon.clone(),
                shard,
            },
        )
        .await
        .unwrap();
    }
    let err = roll_up(&w.state, &w.blobs, &w.bus, &config(), recon)
        .await
        .unwrap_err();
    assert_eq!(err.name, errors::RECON_INCOMPLETE);
    assert!(w.blobs.objects.lock().unwrap().is_empty(), "no report yet");
    assert!(w.bus.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_corrected_file_replaces_the_earlier_ones_details() {
    let w = World::new();
    let s = spec();
    w.land(I_KEY, sample::internal_file(&s), Some(1)).await;
    // Sequence 3 (2,000 details, with breaks), then a corrected sequence 4 of
    // 1,500 details without breaks: the records of sequence 3 that sequence 4
    // does not repeat stay stored, and must not be counted.
    w.land(S_KEY, sample::settlement_file(&s), None).await;
    let mut clean = s.clone();
    clean.file_sequence = 4;
    clean.breaks = BreakMix::default();
    clean.records = 1_500;
    let Settled::Ready { recon, .. } = w
        .land(
            "settlement/ACME/2026-11-20/visa-corrected.dat",
            sample::settlement_file(&clean),
            None,
        )
        .await
    else {
        panic!("both sides are in")
    };
    assert_eq!(recon.settlement_version, 4);
    let done = w.reconcile(recon).await;
    // Internal is still the broken-day's internal file; the settlement side is
    // the corrected file only: compare with what the generator says for that pair.
    let got = w.report(&done.report_key);
    assert_eq!(got.program_id, "ACME");
    assert!(
        got.control_totals_agree,
        "control totals from the corrected file's trailer"
    );
    // No record of sequence 3 is counted: settlement-side counts equal the corrected file's details.
    let settled: u64 = got
        .currencies
        .iter()
        .map(|c| c.matched + c.mismatched + c.unmatched_settlement)
        .sum();
    assert_eq!(settled, 1_500);
    let stale = w
        .records
        .records(tally_domain::recon::Side::Settlement)
        .iter()
        .filter(|r| r.version == 3)
        .count();
    assert!(
        stale > 0,
        "the test must leave stale records behind to mean anything"
    );
}

#[tokio::test]
async fn a_recorded_failure_marks_the_day_failed_and_alarms() {
    let w = World::new();
    handle(
        &w.state,
        &w.blobs,
        &w.bus,
        &w.runs,
        &config(),
        serde_json::from_value(serde_json::json!({"failure": {
            "object": {"key": S_KEY},
            "error": {"Error": "TransientStoreError", "Cause": "throttled for too long"}
        }}))
        .unwrap(),
    )
    .await
    .unwrap();
    let st = w
        .state
        .status("ACME", "2026-11-20".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st["status"], "FAILED");
    assert_eq!(st["cause"], "throttled for too long");
    assert_eq!(w.bus.alarms.lock().unwrap().len(), 1);
}

#[test]
fn the_state_machines_rollup_input_reads_back_with_its_control_totals() {
    // As the Rollup state sends it (u128 totals included).
    let input: RollupInput = serde_json::from_value(serde_json::json!({"recon": {
        "recon_id": "ITLAMBDA#2026-11-20#s1#i1795277354000", "program_id": "ITLAMBDA",
        "file_date": "2026-11-20", "settlement_version": 1, "internal_version": 1_795_277_354_000u64,
        "shard_count": 64,
        "control": {"details": 3000, "debit_total_minor": 803_368_928, "credit_total_minor": 156_736_137,
                    "fee_total_minor": 13_875_944}}}))
    .unwrap();
    let recon = input.recon.unwrap();
    assert_eq!(recon.control.unwrap().debit_total_minor, 803_368_928);
    assert!(input.failure.is_none());
}

#[tokio::test]
async fn a_reconciliation_run_records_its_sides_shards_and_outcome() {
    let w = World::new();
    let s = spec();
    let run_id = w.join().await;
    w.land(S_KEY, sample::settlement_file(&s), None).await;
    // The second landing joins the same run (Inspect's submit returns it).
    assert_eq!(w.join().await, run_id);
    let Settled::Ready {
        recon,
        run_id: Some(ready_run),
        ..
    } = w.land(I_KEY, sample::internal_file(&s), Some(1)).await
    else {
        panic!("both sides are in, with the run")
    };
    assert_eq!(ready_run, run_id);
    let r = w.runs.get(&run_id).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Executing);
    assert_eq!(r.units_total, SHARDS);
    assert_eq!(
        r.progress["settlement"], 2_000,
        "settlement details ingested"
    );
    assert!(r.progress["internal"] > 0);
    assert!(r.execution_arn.as_deref().unwrap().ends_with(":internal"));
    let done = w.reconcile(recon).await;
    let r = w.runs.get(&run_id).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Success);
    assert_eq!(r.units.len() as u32, SHARDS, "every shard reported once");
    let expected = sample::expected_report(&s);
    let records: u64 = r.units.values().map(|u| u.items).sum();
    let want: u64 = expected
        .currencies
        .iter()
        .map(|c| 2 * c.matched + 2 * c.mismatched + c.unmatched_settlement + c.unmatched_internal)
        .sum();
    assert_eq!(records, want, "shard items are the records matched");
    assert_eq!(r.counts["EXCEPTIONS"], expected.exceptions.len() as u64);
    assert_eq!(r.counts["MATCHED"], done.counts["MATCHED"]);
    assert_eq!(r.report_key.as_deref(), Some(done.report_key.as_str()));
    // A new landing after the end is a new attempt.
    let again = w.join().await;
    assert_ne!(again, run_id);
    assert!(again.ends_with("-a2"), "{again}");
}

#[tokio::test]
async fn a_canceled_reconciliation_stops_before_its_shards_write() {
    let w = World::new();
    let s = spec();
    let run_id = w.join().await;
    w.land(S_KEY, sample::settlement_file(&s), None).await;
    let Settled::Ready { recon, .. } = w.land(I_KEY, sample::internal_file(&s), Some(1)).await
    else {
        panic!("both sides are in")
    };
    // The operator cancels after the plan, before the shards.
    let t = w
        .runs
        .transition(
            &run_id,
            RunStatus::Canceled,
            chrono::Utc::now(),
            &Patch::default(),
        )
        .await
        .unwrap();
    assert_eq!(t, Transition::Applied);
    let err = match_shard(
        &w.records,
        &w.state,
        &w.runs,
        MatchTask {
            recon: recon.clone(),
            shard: 0,
            run_id: Some(run_id.clone()),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.name, errors::RUN_CANCELED);
    assert!(
        w.state
            .summaries("ACME", s.file_date, &recon.recon_id)
            .await
            .unwrap()
            .is_empty(),
        "no shard summary written"
    );
    // The waiting side's next settle stops too, and the run stays CANCELED.
    let mut i = Inspected {
        side: tally_domain::recon::Side::Settlement,
        program_id: "ACME".into(),
        file_date: s.file_date,
        key: S_KEY.into(),
        ingest_id: tally_domain::recon::pipeline::ingest_id(S_KEY, "x", None),
        size_bytes: 1,
        large_file_bytes: u64::MAX,
        file_sequence: None,
        ingest_task: serde_json::Value::Null,
        run_id: Some(run_id.clone()),
        execution_id: None,
    };
    let obj_etag = w
        .objects
        .put(S_KEY, sample::settlement_file(&s).into_bytes())
        .etag;
    i.ingest_id = tally_domain::recon::pipeline::ingest_id(S_KEY, &obj_etag, None);
    let err = settle(
        &w.state,
        &w.bus,
        &w.runs,
        &recon_settle::Config {
            shard_count: SHARDS,
            poll_seconds: 60,
            wait_seconds_max: 3_600,
        },
        SettleInput {
            inspect: Wrapped { result: i },
            waited_seconds: 0,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.name, errors::RUN_CANCELED);
    assert_eq!(
        w.runs.get(&run_id).await.unwrap().unwrap().status,
        RunStatus::Canceled
    );
}

#[tokio::test]
async fn a_recorded_failure_fails_the_live_run_with_its_cause() {
    let w = World::new();
    let run_id = w.join().await;
    handle(
        &w.state,
        &w.blobs,
        &w.bus,
        &w.runs,
        &config(),
        serde_json::from_value(serde_json::json!({"failure": {
            "object": {"key": S_KEY},
            "error": {"Error": "ContainerFailed", "Cause": "exited 3 times"},
            "state": {"inspect": {"result": {"run_id": run_id}}}
        }}))
        .unwrap(),
    )
    .await
    .unwrap();
    let r = w.runs.get(&run_id).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Failure);
    let c = r.cause.unwrap();
    assert_eq!(c.error, "ContainerFailed");
    assert!(
        c.cause.contains("exited 3 times") && c.cause.contains(S_KEY),
        "{}",
        c.cause
    );
}

#[tokio::test]
async fn each_reconciliation_of_a_day_keeps_its_own_report_and_its_run_points_at_it() {
    let w = World::new();
    let s = spec();
    let first_run = w.join().await;
    w.land(S_KEY, sample::settlement_file(&s), None).await;
    let Settled::Ready { recon, .. } = w.land(I_KEY, sample::internal_file(&s), Some(1)).await
    else {
        panic!("both sides are in")
    };
    let first = w.reconcile(recon).await;
    let expected = sample::expected_report(&s);
    assert_eq!(w.report(&first.report_key), expected);
    // A corrected internal side lands: a new attempt, a new reconciliation.
    // (One authorisation fewer: its transaction is now unmatched.)
    let second_run = w.join().await;
    assert_ne!(second_run, first_run);
    let full = sample::internal_file(&s);
    let mut lines: Vec<&str> = full.lines().collect();
    lines.pop();
    let corrected = lines.join("\n") + "\n";
    let Settled::Ready { recon, .. } = w.land(I_KEY, corrected, Some(2)).await else {
        panic!("the corrected side is reconciled")
    };
    let second = w.reconcile(recon).await;
    assert_ne!(second.report_key, first.report_key);
    assert_ne!(w.report(&second.report_key), expected);
    // The first reconciliation's report is still what it found.
    assert_eq!(w.report(&first.report_key), expected);
    // The day's latest copy is the second's.
    assert_eq!(
        w.report(&latest_report_key("ACME", s.file_date)),
        w.report(&second.report_key)
    );
    for (run_id, done) in [(first_run, &first), (second_run, &second)] {
        let r = w.runs.get(&run_id).await.unwrap().unwrap();
        assert_eq!(r.report_key.as_ref(), Some(&done.report_key), "{run_id}");
    }
}

#[tokio::test]
async fn an_older_file_re_sent_after_the_day_was_reconciled_leaves_the_current_records_as_they_were(
) {
    let w = World::new();
    let s = spec();
    w.land(S_KEY, sample::settlement_file(&s), None).await;
    let Settled::Ready { recon, .. } = w.land(I_KEY, sample::internal_file(&s), Some(1)).await
    else {
        panic!("both sides are in")
    };
    let expected = sample::expected_report(&s);
    assert_eq!(
        w.report(&w.reconcile(recon.clone()).await.report_key),
        expected
    );
    // The network re-sends file sequence 2 (the day's is 3), under another
    // name: its ingest writes its records, and Settle finds it superseded.
    let mut old = s.clone();
    old.file_sequence = 2;
    let out = w
        .land(
            "settlement/ACME/2026-11-20/resent.dat",
            sample::settlement_file(&old),
            None,
        )
        .await;
    assert_eq!(out, Settled::Superseded { current: 3 });
    // The day's reconciliation, matched again, reads exactly what it read.
    assert_eq!(w.report(&w.reconcile(recon).await.report_key), expected);
}

#[tokio::test]
async fn two_reconciliations_in_one_run_leave_the_run_and_the_days_copy_on_the_current_one() {
    for current_first in [true, false] {
        let w = World::new();
        let s = spec();
        let run_id = w.join().await;
        w.land(S_KEY, sample::settlement_file(&s), None).await;
        let Settled::Ready { recon: older, .. } =
            w.land(I_KEY, sample::internal_file(&s), Some(1)).await
        else {
            panic!("both sides are in")
        };
        // A corrected internal side joins the live run and claims its own
        // reconciliation while the first one still matches.
        assert_eq!(w.join().await, run_id);
        let full = sample::internal_file(&s);
        let corrected = full.lines().collect::<Vec<_>>();
        let corrected = corrected[..corrected.len() - 1].join("\n") + "\n";
        let Settled::Ready { recon: newer, .. } = w
            .land("internal/ACME/2026-11-20/corrected.csv", corrected, Some(2))
            .await
        else {
            panic!("the corrected side is reconciled")
        };
        let (first, second) = if current_first {
            (newer.clone(), older.clone())
        } else {
            (older.clone(), newer.clone())
        };
        let a = w.reconcile(first).await;
        let b = w.reconcile(second).await;
        let (new, old) = if current_first { (a, b) } else { (b, a) };
        assert!(new.current && !old.current, "{current_first}");
        let r = w.runs.get(&run_id).await.unwrap().unwrap();
        assert_eq!(r.status, RunStatus::Success);
        assert_eq!(
            r.report_key.as_ref(),
            Some(&new.report_key),
            "{current_first}"
        );
        assert_eq!(r.counts["EXCEPTIONS"], new.exceptions, "{current_first}");
        assert_eq!(
            w.report(&latest_report_key("ACME", s.file_date)),
            w.report(&new.report_key),
            "{current_first}"
        );
        assert_eq!(w.report(&old.report_key), sample::expected_report(&s));
    }
}
