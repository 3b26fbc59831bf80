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
    let (state, alarms) = (MemoryReconState::default(), MemoryPublisher::default());
    applied(&state, "s-1", 7, true).await;
    let first = settle(
        &state,
        &alarms,
        &MemoryRuns::default(),
        &cfg(),
        input(inspected(Side::Settlement, "s-1"), 0),
    )
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
    applied(&state, "i-1", 1_700_000, false).await;
    let second = settle(
        &state,
        &alarms,
        &MemoryRuns::default(),
        &cfg(),
        input(inspected(Side::Internal, "i-1"), 0),
    )
    .await
    .unwrap();
    let Settled::Ready { recon, shards, .. } = second else {
        panic!("{second:?}")
    };
    assert_eq!(shards, vec![0, 1, 2, 3]);
    assert_eq!(recon.recon_id, "ACME#2026-11-20#s7#i1700000");
    assert_eq!(recon.control.unwrap().details, 10);
    // The waiting execution, checking back, finds the reconciliation claimed.
    let again = settle(
        &state,
        &alarms,
        &MemoryRuns::default(),
        &cfg(),
        input(inspected(Side::Settlement, "s-1"), 600),
    )
    .await
    .unwrap();
    assert_eq!(
        again,
        Settled::ClaimedElsewhere {
            recon_id: "ACME#2026-11-20#s7#i1700000".into()
        }
    );
    // A retry of the claimant itself is still READY (idempotent).
    let retried = settle(
        &state,
        &alarms,
        &MemoryRuns::default(),
        &cfg(),
        input(inspected(Side::Internal, "i-1"), 0),
    )
    .await
    .unwrap();
    assert!(matches!(retried, Settled::Ready { .. }));
    assert!(alarms.alarms.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_rejected_file_goes_no_further() {
    let (state, alarms) = (MemoryReconState::default(), MemoryPublisher::default());
    state
        .put_outcome(
            "s-1",
            &serde_json::json!({"outcome": "REJECTED", "reason": {}}),
        )
        .await
        .unwrap();
    let out = settle(
        &state,
        &alarms,
        &MemoryRuns::default(),
        &cfg(),
        input(inspected(Side::Settlement, "s-1"), 0),
    )
    .await
    .unwrap();
    assert_eq!(out, Settled::Rejected);
    let d = "2026-11-20".parse().unwrap();
    assert_eq!(state.manifests("ACME", d).await.unwrap(), (None, None));
}

#[tokio::test]
async fn an_older_file_sequence_after_a_newer_one_is_superseded() {
    let (state, alarms) = (MemoryReconState::default(), MemoryPublisher::default());
    applied(&state, "s-8", 8, true).await;
    applied(&state, "s-7", 7, true).await;
    settle(
        &state,
        &alarms,
        &MemoryRuns::default(),
        &cfg(),
        input(inspected(Side::Settlement, "s-8"), 0),
    )
    .await
    .unwrap();
    let out = settle(
        &state,
        &alarms,
        &MemoryRuns::default(),
        &cfg(),
        input(inspected(Side::Settlement, "s-7"), 0),
    )
    .await
    .unwrap();
    assert_eq!(out, Settled::Superseded { current: 8 });
}

#[tokio::test]
async fn a_side_that_never_arrives_is_reconciled_empty_after_the_wait_with_an_alarm() {
    let (state, alarms) = (MemoryReconState::default(), MemoryPublisher::default());
    applied(&state, "s-1", 3, true).await;
    let out = settle(
        &state,
        &alarms,
        &MemoryRuns::default(),
        &cfg(),
        input(inspected(Side::Settlement, "s-1"), 3_600),
    )
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
    let (state, alarms) = (MemoryReconState::default(), MemoryPublisher::default());
    let err = settle(
        &state,
        &alarms,
        &MemoryRuns::default(),
        &cfg(),
        input(inspected(Side::Settlement, "nope"), 0),
    )
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

    fn in_run(side: Side, id: &str, run_id: &str) -> SettleInput {
        let mut i = inspected(side, id);
        i.run_id = Some(run_id.into());
        i.execution_id = Some(format!("arn:aws:states:us-east-1:0:execution:recon:{id}"));
        input(i, 0)
    }

    #[tokio::test]
    async fn a_rejected_file_fails_its_run_with_line_field_and_expectation() {
        let (state, alarms, runs) = (
            MemoryReconState::default(),
            MemoryPublisher::default(),
            MemoryRuns::default(),
        );
        let run_id = joined(&runs).await;
        state
            .put_outcome(
                "s-1",
                &serde_json::json!({"outcome": "REJECTED", "reason":
                    {"line": 7, "field": "amount", "expected": "12 digits", "found": "12a"}}),
            )
            .await
            .unwrap();
        let out = settle(
            &state,
            &alarms,
            &runs,
            &cfg(),
            in_run(Side::Settlement, "s-1", &run_id),
        )
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
        let (state, alarms, runs) = (
            MemoryReconState::default(),
            MemoryPublisher::default(),
            MemoryRuns::default(),
        );
        let first = joined(&runs).await;
        applied(&state, "s-1", 7, true).await;
        applied(&state, "i-1", 100, false).await;
        settle(
            &state,
            &alarms,
            &runs,
            &cfg(),
            in_run(Side::Settlement, "s-1", &first),
        )
        .await
        .unwrap();
        // Another execution reconciles and ends the run; this landing (a
        // corrected internal side) reaches Settle only afterwards.
        runs.transition(
            &first,
            RunStatus::Success,
            chrono::Utc::now(),
            &Patch::default(),
        )
        .await
        .unwrap();
        let out = settle(
            &state,
            &alarms,
            &runs,
            &cfg(),
            in_run(Side::Internal, "i-1", &first),
        )
        .await
        .unwrap();
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
        let (state, alarms, runs) = (
            MemoryReconState::default(),
            MemoryPublisher::default(),
            MemoryRuns::default(),
        );
        let run_id = joined(&runs).await;
        runs.transition(
            &run_id,
            RunStatus::Canceled,
            chrono::Utc::now(),
            &Patch::default(),
        )
        .await
        .unwrap();
        applied(&state, "s-1", 7, true).await;
        let err = settle(
            &state,
            &alarms,
            &runs,
            &cfg(),
            in_run(Side::Settlement, "s-1", &run_id),
        )
        .await
        .unwrap_err();
        assert_eq!(err.name, errors::RUN_CANCELED);
        let (settlement, _) = state
            .manifests("ACME", "2026-11-20".parse().unwrap())
            .await
            .unwrap();
        assert!(settlement.is_none(), "the side was not accepted");
    }
}
