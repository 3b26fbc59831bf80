use super::*;
use tally_aws::memory::{MemoryPublisher, MemoryReconState};
use tally_aws::runs::MemoryRuns;

fn cfg() -> Config {
    Config {
        shard_count: 4,
        poll_seconds: 600,
        wait_seconds_max: 3_600,
    }
}

/// What one Settle call works on: the reconciliation state, the alarm
/// channel and the run store, all in memory.
#[derive(Default)]
struct World {
    state: MemoryReconState,
    alarms: MemoryPublisher,
    runs: MemoryRuns,
}

impl World {
    async fn settle(&self, input: SettleInput) -> Result<Settled, HandlerError> {
        settle(&self.state, &self.alarms, &self.runs, &cfg(), input).await
    }
}

fn inspected(side: Side, ingest_id: &str) -> Inspected {
    Inspected {
        side,
        program_id: "ACME".into(),
        file_date: "2026-11-20".parse().unwrap(),
        key: format!("{side:?}/ACME/2026-11-20/x"),
        ingest_id: ingest_id.into(),
        size_bytes: 1_000,
        large_file_bytes: 1 << 30,
        file_sequence: None,
        ingest_task: serde_json::json!({}),
        run_id: None,
        execution_id: None,
    }
}

fn input(i: Inspected, waited_seconds: u64) -> SettleInput {
    SettleInput {
        inspect: Wrapped { result: i },
        waited_seconds,
    }
}

async fn applied(state: &MemoryReconState, id: &str, version: u64, settlement: bool) {
    let control = settlement.then(|| {
        serde_json::json!({"details": 10, "debit_total_minor": 100, "credit_total_minor": 5, "fee_total_minor": 1})
    });
    state
        .put_outcome(
            id,
            &serde_json::json!({"outcome": "APPLIED", "version": version, "records": 10, "control": control}),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_first_side_waits_and_the_second_reconciles_both() {
    let w = World::default();
    let World { state, alarms, .. } = &w;
    applied(state, "s-1", 7, true).await;
    let first = w
        .settle(input(inspected(Side::Settlement, "s-1"), 0))
        .await
        .unwrap();
    assert_eq!(
        first,
        Settled::Waiting {
            poll_seconds: 600,
            waited_seconds: 600
        }
    );
    let d = "2026-11-20".parse().unwrap();
    assert_eq!(
        state.status("ACME", d).await.unwrap().unwrap()["status"],
        "WAITING_FOR_INTERNAL"
    );
    applied(state, "i-1", 1_700_000, false).await;
    let second = w
        .settle(input(inspected(Side::Internal, "i-1"), 0))
        .await
        .unwrap();
    let Settled::Ready { recon, shards, .. } = second else {
        panic!("{second:?}")
    };
    assert_eq!(shards, vec![0, 1, 2, 3]);
    assert_eq!(recon.recon_id, "ACME#2026-11-20#s7#i1700000");
    assert_eq!(recon.control.unwrap().details, 10);
    // The waiting execution, checking back, finds the reconciliation claimed.
    let again = w
        .settle(input(inspected(Side::Settlement, "s-1"), 600))
        .await
        .unwrap();
    assert_eq!(
        again,
        Settled::ClaimedElsewhere {
            recon_id: "ACME#2026-11-20#s7#i1700000".into()
        }
    );
    // A retry of the claimant itself is still READY (idempotent).
    let retried = w
        .settle(input(inspected(Side::Internal, "i-1"), 0))
        .await
        .unwrap();
    assert!(matches!(retried, Settled::Ready { .. }));
    assert!(alarms.alarms.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_rejected_file_goes_no_further() {
    let w = World::default();
    let World { state, .. } = &w;
    state
        .put_outcome(
            "s-1",
            &serde_json::json!({"outcome": "REJECTED", "reason": {}}),
        )
        .await
        .unwrap();
    let out = w
        .settle(input(inspected(Side::Settlement, "s-1"), 0))
        .await
        .unwrap();
    assert_eq!(out, Settled::Rejected);
    let d = "2026-11-20".parse().unwrap();
    assert_eq!(state.manifests("ACME", d).await.unwrap(), (None, None));
}

#[tokio::test]
async fn an_older_file_sequence_after_a_newer_one_is_superseded() {
    let w = World::default();
    let World { state, .. } = &w;
    applied(state, "s-8", 8, true).await;
    applied(state, "s-7", 7, true).await;
    w.settle(input(inspected(Side::Settlement, "s-8"), 0))
        .await
        .unwrap();
    let out = w
        .settle(input(inspected(Side::Settlement, "s-7"), 0))
        .await
        .unwrap();
    assert_eq!(out, Settled::Superseded { current: 8 });
}

#[tokio::test]
async fn a_side_that_never_arrives_is_reconciled_empty_after_the_wait_with_an_alarm() {
    let w = World::default();
    let World { state, alarms, .. } = &w;
    applied(state, "s-1", 3, true).await;
    let out = w
        .settle(input(inspected(Side::Settlement, "s-1"), 3_600))
        .await
        .unwrap();
    let Settled::Ready { recon, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(recon.internal_version, 0);
    assert_eq!(recon.settlement_version, 3);
    let a = alarms.alarms.lock().unwrap();
    assert_eq!(a.len(), 1);
    assert!(a[0].0.contains("Internal"), "{}", a[0].0);
}

#[tokio::test]
async fn a_missing_ingest_outcome_is_an_error_not_a_guess() {
    let w = World::default();
    let err = w
        .settle(input(inspected(Side::Settlement, "nope"), 0))
        .await
        .unwrap_err();
    assert_eq!(err.name, tally_domain::errors::STORE_ERROR);
}

mod runs {
    use super::*;
    use tally_aws::ports::{Patch, RunStore};
    use tally_domain::run::{RunRecord, RunStatus};

    async fn joined(runs: &MemoryRuns) -> String {
        let now = chrono::Utc::now();
        let (r, _) = runs
            .submit(&|a| RunRecord::new_recon("ACME", "2026-11-20".parse().unwrap(), a, now))
            .await
            .unwrap();
        r.run_id
    }

    fn arn(execution: &str) -> String {
        format!("arn:aws:states:us-east-1:0:execution:recon:{execution}")
    }

    /// The ingest `id` landed by its own execution, which joined `run_id`
    /// (as Inspect does).
    async fn in_run(runs: &MemoryRuns, side: Side, id: &str, run_id: &str) -> SettleInput {
        assert!(
            runs.attach(run_id, id, &arn(id), chrono::Utc::now())
                .await
                .unwrap(),
            "{id} lands while {run_id} is live"
        );
        again(side, id, run_id)
    }

    /// The input of a later Settle call (a poll, a retry) of an execution
    /// that joined `run_id` before.
    fn again(side: Side, id: &str, run_id: &str) -> SettleInput {
        let mut i = inspected(side, id);
        i.run_id = Some(run_id.into());
        i.execution_id = Some(arn(id));
        input(i, 0)
    }

    async fn rejected(state: &MemoryReconState, id: &str) {
        state
            .put_outcome(
                id,
                &serde_json::json!({"outcome": "REJECTED", "reason":
                    {"line": 7, "field": "amount", "expected": "12 digits", "found": "12a"}}),
            )
            .await
            .unwrap();
    }

    async fn run(runs: &MemoryRuns, run_id: &str) -> RunRecord {
        runs.get(run_id).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_rejected_file_fails_its_run_with_line_field_and_expectation() {
        let w = World::default();
        let World { state, runs, .. } = &w;
        let run_id = joined(runs).await;
        state
            .put_outcome(
                "s-1",
                &serde_json::json!({"outcome": "REJECTED", "reason":
                    {"line": 7, "field": "amount", "expected": "12 digits", "found": "12a"}}),
            )
            .await
            .unwrap();
        let out = w
            .settle(in_run(runs, Side::Settlement, "s-1", &run_id).await)
            .await
            .unwrap();
        assert_eq!(out, Settled::Rejected);
        let r = runs.get(&run_id).await.unwrap().unwrap();
        assert_eq!(r.status, RunStatus::Failure);
        let c = r.cause.unwrap();
        assert_eq!(c.error, "FileRejected");
        assert!(
            c.cause.contains("line 7") && c.cause.contains("amount"),
            "{}",
            c.cause
        );
    }

    #[tokio::test]
    async fn a_landing_whose_run_ended_under_it_joins_the_next_attempt_and_is_reconciled() {
        let w = World::default();
        let World { state, runs, .. } = &w;
        let first = joined(runs).await;
        applied(state, "s-1", 7, true).await;
        applied(state, "i-1", 100, false).await;
        w.settle(in_run(runs, Side::Settlement, "s-1", &first).await)
            .await
            .unwrap();
        // This landing (a corrected internal side) joins the live run; another
        // execution reconciles and ends it before this one reaches Settle.
        let landed = in_run(runs, Side::Internal, "i-1", &first).await;
        runs.transition(
            &first,
            RunStatus::Success,
            chrono::Utc::now(),
            &Patch::default(),
        )
        .await
        .unwrap();
        let out = w.settle(landed).await.unwrap();
        let Settled::Ready {
            run_id: Some(next),
            recon,
            ..
        } = out
        else {
            panic!("the corrected side is reconciled: {out:?}")
        };
        assert_eq!(next, "recon-ACME-2026-11-20-a2");
        assert_eq!(recon.internal_version, 100);
        let r = runs.get(&next).await.unwrap().unwrap();
        assert_eq!((r.status, r.units_total), (RunStatus::Executing, 4));
        assert_eq!(r.progress["internal"], 10);
        assert!(r.executions.contains_key("i-1"));
    }

    #[tokio::test]
    async fn a_canceled_run_stops_settle_before_it_accepts_the_side() {
        let w = World::default();
        let World { state, runs, .. } = &w;
        let run_id = joined(runs).await;
        let landed = in_run(runs, Side::Settlement, "s-1", &run_id).await;
        runs.transition(
            &run_id,
            RunStatus::Canceled,
            chrono::Utc::now(),
            &Patch::default(),
        )
        .await
        .unwrap();
        applied(state, "s-1", 7, true).await;
        let err = w.settle(landed).await.unwrap_err();
        assert_eq!(err.name, errors::RUN_CANCELED);
        let (settlement, _) = state
            .manifests("ACME", "2026-11-20".parse().unwrap())
            .await
            .unwrap();
        assert!(settlement.is_none(), "the side was not accepted");
    }

    #[tokio::test]
    async fn a_rejected_file_in_a_run_another_execution_carries_is_recorded_and_the_day_goes_on() {
        let w = World::default();
        let World { state, runs, .. } = &w;
        let run_id = joined(runs).await;
        applied(state, "s-1", 7, true).await;
        let waiting = w
            .settle(in_run(runs, Side::Settlement, "s-1", &run_id).await)
            .await
            .unwrap();
        assert!(matches!(waiting, Settled::Waiting { .. }), "{waiting:?}");
        rejected(state, "i-bad").await;
        let out = w
            .settle(in_run(runs, Side::Internal, "i-bad", &run_id).await)
            .await
            .unwrap();
        assert_eq!(out, Settled::Rejected);
        let r = run(runs, &run_id).await;
        assert_eq!(
            r.status,
            RunStatus::Executing,
            "the settlement side still waits in it"
        );
        assert_eq!(r.idle["i-bad"].error, "FileRejected");
        assert!(
            r.idle["i-bad"].cause.contains("line 7"),
            "{}",
            r.idle["i-bad"].cause
        );
        // The corrected file joins the same run and reconciles the day.
        applied(state, "i-2", 200, false).await;
        let out = w
            .settle(in_run(runs, Side::Internal, "i-2", &run_id).await)
            .await
            .unwrap();
        let Settled::Ready {
            run_id: Some(ready),
            ..
        } = out
        else {
            panic!("{out:?}")
        };
        assert_eq!(ready, run_id);
        assert_eq!(run(runs, &run_id).await.status, RunStatus::Executing);
    }

    /// The day reconciled in attempt 1 (settlement 8, internal 100), its
    /// report at `REPORT`.
    const REPORT: &str = "reports/ACME/2026-11-20/s8-i100/report.json";

    async fn reconciled_day(w: &World) -> String {
        let a1 = joined(&w.runs).await;
        applied(&w.state, "s-8", 8, true).await;
        applied(&w.state, "i-1", 100, false).await;
        w.settle(in_run(&w.runs, Side::Settlement, "s-8", &a1).await)
            .await
            .unwrap();
        let out = w
            .settle(in_run(&w.runs, Side::Internal, "i-1", &a1).await)
            .await
            .unwrap();
        assert!(matches!(out, Settled::Ready { .. }), "{out:?}");
        // The shards and the rollup, as far as the run sees them.
        let patch = Patch {
            report_key: Some(REPORT.into()),
            ..Patch::default()
        };
        w.runs
            .transition(&a1, RunStatus::Success, chrono::Utc::now(), &patch)
            .await
            .unwrap();
        a1
    }

    #[tokio::test]
    async fn a_landing_that_changes_nothing_after_the_day_was_reconciled_ends_its_attempt_on_the_days_report(
    ) {
        let w = World::default();
        let World { state, runs, .. } = &w;
        let a1 = reconciled_day(&w).await;
        // An older file sequence is delivered again: a new attempt, nothing new.
        applied(state, "s-7", 7, true).await;
        let a2 = joined(runs).await;
        assert_eq!(a2, "recon-ACME-2026-11-20-a2");
        let stale = in_run(runs, Side::Settlement, "s-7", &a2).await;
        let out = w.settle(stale.clone()).await.unwrap();
        assert_eq!(out, Settled::Superseded { current: 8 });
        let r = run(runs, &a2).await;
        assert_eq!(r.status, RunStatus::Success, "{:?}", r.cause);
        assert_eq!(r.report_key.as_deref(), Some(REPORT));
        assert_eq!(r.idle["s-7"].error, "Superseded");
        assert!(
            r.idle["s-7"].cause.contains("older than the accepted 8"),
            "{}",
            r.idle["s-7"].cause
        );
        // Retried, the Settle changes nothing.
        assert_eq!(w.settle(stale).await.unwrap(), out);
        assert!(
            runs.get("recon-ACME-2026-11-20-a3")
                .await
                .unwrap()
                .is_none(),
            "the retry opened no attempt"
        );
        let again = run(runs, &a2).await;
        assert_eq!(
            (again.status, again.ended_at, again.idle),
            (r.status, r.ended_at, r.idle)
        );
        // The current settlement file sent again under another name: the
        // same versions, a reconciliation already claimed.
        let a3 = joined(runs).await;
        applied(state, "s-8-again", 8, true).await;
        let dup = in_run(runs, Side::Settlement, "s-8-again", &a3).await;
        let out = w.settle(dup).await.unwrap();
        assert!(matches!(out, Settled::ClaimedElsewhere { .. }), "{out:?}");
        let r = run(runs, &a3).await;
        assert_eq!(
            (r.status, r.report_key.as_deref()),
            (RunStatus::Success, Some(REPORT))
        );
        assert_eq!(r.idle["s-8-again"].error, "ClaimedElsewhere");
        assert_eq!(run(runs, &a1).await.report_key.as_deref(), Some(REPORT));
    }

    #[tokio::test]
    async fn a_run_ends_only_when_every_execution_in_it_has_found_nothing_to_do() {
        let w = World::default();
        let World { state, runs, .. } = &w;
        reconciled_day(&w).await;
        applied(state, "s-7", 7, true).await;
        let a2 = joined(runs).await;
        // Two landings join attempt 2 before either settles.
        let stale = in_run(runs, Side::Settlement, "s-7", &a2).await;
        applied(state, "s-8-again", 8, true).await;
        let dup = in_run(runs, Side::Settlement, "s-8-again", &a2).await;
        w.settle(stale).await.unwrap();
        let r = run(runs, &a2).await;
        assert_eq!(
            r.status,
            RunStatus::Executing,
            "the other landing has not settled"
        );
        w.settle(dup).await.unwrap();
        let r = run(runs, &a2).await;
        assert_eq!(
            (r.status, r.report_key.as_deref()),
            (RunStatus::Success, Some(REPORT))
        );
        assert_eq!(r.idle.len(), 2);
    }

    #[tokio::test]
    async fn an_idle_run_ends_refused_when_an_execution_joined_after_it_was_read() {
        let runs = MemoryRuns::default();
        let run_id = joined(&runs).await;
        let now = chrono::Utc::now();
        runs.attach(&run_id, "e1", &arn("e1"), now).await.unwrap();
        let seen = run(&runs, &run_id).await.executions.len();
        runs.attach(&run_id, "e2", &arn("e2"), now).await.unwrap();
        let t = runs
            .end_idle(&run_id, RunStatus::Success, now, &Patch::default(), seen)
            .await
            .unwrap();
        assert_eq!(
            t,
            tally_aws::ports::Transition::Refused(RunStatus::Executing)
        );
        let t = runs
            .end_idle(
                &run_id,
                RunStatus::Success,
                now,
                &Patch::default(),
                seen + 1,
            )
            .await
            .unwrap();
        assert_eq!(t, tally_aws::ports::Transition::Applied);
    }

    #[tokio::test]
    async fn an_idle_run_on_a_day_with_no_report_fails_as_nothing_reconciled() {
        let w = World::default();
        let World { state, runs, .. } = &w;
        // Attempt 1 claimed the day's reconciliation, then failed.
        let a1 = joined(runs).await;
        applied(state, "s-8", 8, true).await;
        applied(state, "i-1", 100, false).await;
        w.settle(in_run(runs, Side::Settlement, "s-8", &a1).await)
            .await
            .unwrap();
        w.settle(in_run(runs, Side::Internal, "i-1", &a1).await)
            .await
            .unwrap();
        runs.transition(
            &a1,
            RunStatus::Failure,
            chrono::Utc::now(),
            &Patch::default(),
        )
        .await
        .unwrap();
        let a2 = joined(runs).await;
        applied(state, "s-8-again", 8, true).await;
        let dup = in_run(runs, Side::Settlement, "s-8-again", &a2).await;
        let out = w.settle(dup).await.unwrap();
        assert!(matches!(out, Settled::ClaimedElsewhere { .. }), "{out:?}");
        let r = run(runs, &a2).await;
        assert_eq!(r.status, RunStatus::Failure);
        let c = r.cause.unwrap();
        assert_eq!(c.error, "NothingReconciled");
        assert!(c.cause.contains("ClaimedElsewhere"), "{}", c.cause);
        assert_eq!(r.report_key, None);
    }

    #[tokio::test]
    async fn the_waiting_sides_next_poll_after_the_day_was_reconciled_opens_no_attempt() {
        let w = World::default();
        let World { runs, .. } = &w;
        let a1 = reconciled_day(&w).await;
        // The settlement side's execution, which waited in attempt 1, asks again.
        let mut poll = again(Side::Settlement, "s-8", &a1);
        poll.waited_seconds = 600;
        let out = w.settle(poll).await.unwrap();
        assert!(matches!(out, Settled::ClaimedElsewhere { .. }), "{out:?}");
        assert!(runs
            .get("recon-ACME-2026-11-20-a2")
            .await
            .unwrap()
            .is_none());
        let r = run(runs, &a1).await;
        assert_eq!(
            (r.status, r.report_key.as_deref()),
            (RunStatus::Success, Some(REPORT))
        );
        assert_eq!(r.idle["s-8"].error, "ClaimedElsewhere");
    }

    #[tokio::test]
    async fn an_idle_run_does_not_stand_on_a_report_of_versions_no_longer_current() {
        let w = World::default();
        let World { state, runs, .. } = &w;
        reconciled_day(&w).await;
        // A corrected internal side claims s8-i200 in attempt 2, which then fails.
        let a2 = joined(runs).await;
        applied(state, "i-2", 200, false).await;
        let out = w
            .settle(in_run(runs, Side::Internal, "i-2", &a2).await)
            .await
            .unwrap();
        assert!(matches!(out, Settled::Ready { .. }), "{out:?}");
        runs.transition(
            &a2,
            RunStatus::Failure,
            chrono::Utc::now(),
            &Patch::default(),
        )
        .await
        .unwrap();
        // An older settlement file in attempt 3: nothing to do, and no report
        // of s8-i200 to stand on (attempt 1's is of s8-i100).
        applied(state, "s-7", 7, true).await;
        let a3 = joined(runs).await;
        w.settle(in_run(runs, Side::Settlement, "s-7", &a3).await)
            .await
            .unwrap();
        let r = run(runs, &a3).await;
        assert_eq!(r.status, RunStatus::Failure);
        let c = r.cause.unwrap();
        assert_eq!(c.error, "NothingReconciled");
        assert!(c.cause.contains("s8-i200"), "{}", c.cause);
    }

    #[tokio::test]
    async fn an_idle_run_that_planned_before_losing_the_claim_ends_with_nothing_planned() {
        let w = World::default();
        let World { state, runs, .. } = &w;
        reconciled_day(&w).await;
        let a2 = joined(runs).await;
        applied(state, "s-8-again", 8, true).await;
        w.settle(in_run(runs, Side::Settlement, "s-8-again", &a2).await)
            .await
            .unwrap();
        let r = run(runs, &a2).await;
        assert_eq!((r.status, r.units_total), (RunStatus::Success, 0));
    }
}
