//! The COB aggregate: combines the partition results, publishes
//! `accrual_run_completed` only when every partition succeeded, and otherwise
//! `accrual_run_failed` plus an SNS alarm.
//!
//! # Layout
//!
//! - [`AggregateEvent`]: the two shapes the state machine sends.
//! - [`aggregate_run`]: decides the outcome, ends the run record (`SUCCESS`
//!   with its totals, or `FAILURE` with its cause) and publishes. A run
//!   canceled meanwhile stays `CANCELED`: nothing is published and the
//!   outcome is `CANCELED` (an operator's cancel wakes nobody).
//!
//! A retry after a transient publish failure may publish an event again;
//! EventBridge delivery is at least once anyway, and consumers key on `run_id`.

use serde::{Deserialize, Serialize};
use tally_aws::handler_error::HandlerError;
use tally_aws::ports::{Patch, Publisher, RunStore, Transition};
use tally_aws::runs::{cause, run_totals};
use tally_aws::StoreError;
use tally_domain::cob::{
    aggregate, plan_failed, Outcome, PartitionResult, Plan, RunFailed, COMPLETED_DETAIL_TYPE,
    FAILED_DETAIL_TYPE,
};
use tally_domain::errors;
use tally_domain::run::RunStatus;

#[derive(Debug, Clone, Deserialize)]
pub struct Failure {
    pub error: String,
    #[serde(default)]
    pub cause: String,
}

/// `{plan, results}` after the partitions ran, or `{plan: null, failure,
/// input}` when the plan itself failed.
#[derive(Debug, Clone, Deserialize)]
pub struct AggregateEvent {
    pub plan: Option<Plan>,
    #[serde(default)]
    pub results: Vec<PartitionResult>,
    pub failure: Option<Failure>,
    #[serde(default)]
    pub input: serde_json::Value,
    #[serde(default)]
    pub execution_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum OutcomeName {
    Completed,
    Failed,
    Canceled,
}

#[derive(Debug, Clone, Serialize)]
pub struct AggregateOutput {
    pub outcome: OutcomeName,
    pub run_id: String,
    pub event: serde_json::Value,
}

/// The run's metrics: its outcome as a count, its duration from the record's
/// `started_at` (when known), and for a completed run its partitions,
/// slowest partition, accounts and postings.
pub fn metrics(
    out: &AggregateOutput,
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    at: chrono::DateTime<chrono::Utc>,
) -> tally_aws::emf::Metrics {
    use tally_aws::emf::{names, Metrics};
    let mut m = Metrics::new("cob-aggregate").property("run_id", out.run_id.as_str());
    m = match out.outcome {
        OutcomeName::Completed => m.count(names::RUNS_SUCCEEDED, 1),
        OutcomeName::Failed => m.count(names::RUNS_FAILED, 1),
        OutcomeName::Canceled => m.count(names::RUNS_CANCELED, 1),
    };
    if let Some(s) = started_at {
        m = m.ms(
            names::RUN_DURATION_MS,
            (at - s).num_milliseconds().max(0) as u64,
        );
    }
    if out.outcome == OutcomeName::Completed {
        let n = |k: &str| out.event.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        m = m
            .count(names::PARTITION_COUNT, n("partition_count"))
            .ms(names::SLOWEST_PARTITION_MS, n("slowest_partition_ms"))
            .count(names::ACCOUNTS_PROCESSED, n("accounts_processed"))
            .count(names::POSTINGS_WRITTEN, n("postings_written"));
    }
    m
}

fn publish_error(e: StoreError) -> HandlerError {
    let name = if e.is_transient() {
        errors::TRANSIENT_PUBLISH_ERROR
    } else {
        errors::PUBLISH_ERROR
    };
    HandlerError {
        name,
        message: e.to_string(),
    }
}

fn canceled(run_id: String) -> AggregateOutput {
    tracing::info!(run_id, "run canceled: nothing published");
    AggregateOutput {
        outcome: OutcomeName::Canceled,
        run_id,
        event: serde_json::Value::Null,
    }
}

/// Ends the run record; `false` when the run was canceled meanwhile.
async fn end_record<R: RunStore>(
    runs: &R,
    run_id: &str,
    to: RunStatus,
    patch: Patch,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<bool, HandlerError> {
    match runs.transition(run_id, to, at, &patch).await? {
        Transition::Applied | Transition::AlreadyThere | Transition::Missing => Ok(true),
        Transition::Refused(RunStatus::Canceled) => Ok(false),
        Transition::Refused(other) => {
            tracing::warn!(run_id, %other, wanted = %to, "run record already ended otherwise; left as it is");
            Ok(true)
        }
    }
}

async fn fail<P: Publisher, R: RunStore>(
    publisher: &P,
    runs: &R,
    failed: RunFailed,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<AggregateOutput, HandlerError> {
    let why = match (&failed.error, failed.failed_partitions.first()) {
        (Some(e), _) => cause(e, failed.cause.clone().unwrap_or_default()),
        (None, Some(p)) => cause(
            &p.error,
            format!(
                "{} of {} partitions failed; partition {}: {}",
                failed.failed_partitions.len(),
                failed.partition_count,
                p.partition,
                p.cause
            ),
        ),
        (None, None) => cause("AccrualRunFailed", "the run failed"),
    };
    if failed
        .failed_partitions
        .iter()
        .any(|p| p.error == errors::RUN_CANCELED)
        || !end_record(
            runs,
            &failed.run_id,
            RunStatus::Failure,
            Patch {
                cause: Some(why),
                ..Patch::default()
            },
            at,
        )
        .await?
    {
        // Partitions stopped by a cancel: the run is CANCELED, not failed.
        if runs
            .get(&failed.run_id)
            .await?
            .is_some_and(|r| r.status == RunStatus::Canceled)
        {
            return Ok(canceled(failed.run_id));
        }
    }
    let detail = serde_json::to_value(&failed).expect("events serialize");
    let date = failed
        .business_date
        .map_or("unknown date".into(), |d| d.to_string());
    // The alarm first: it is what wakes someone.
    publisher
        .alarm(
            &format!("Tally COB {date} FAILED ({})", failed.run_id),
            &serde_json::to_string_pretty(&detail).expect("json"),
        )
        .await
        .map_err(publish_error)?;
    publisher
        .put_event(FAILED_DETAIL_TYPE, &detail)
        .await
        .map_err(publish_error)?;
    Ok(AggregateOutput {
        outcome: OutcomeName::Failed,
        run_id: failed.run_id,
        event: detail,
    })
}

pub async fn aggregate_run<P: Publisher, R: RunStore>(
    publisher: &P,
    runs: &R,
    event: AggregateEvent,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<AggregateOutput, HandlerError> {
    let now = &at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let Some(plan) = event.plan else {
        let failure = event
            .failure
            .ok_or_else(|| HandlerError::invalid_input("neither a plan nor a failure"))?;
        let run_id = event.execution_name.unwrap_or_else(|| "unknown".into());
        let date = event
            .input
            .get("business_date")
            .and_then(|d| d.as_str())
            .and_then(|d| d.parse().ok());
        return fail(
            publisher,
            runs,
            plan_failed(&run_id, date, &failure.error, &failure.cause, now),
            at,
        )
        .await;
    };
    match aggregate(&plan, &event.results, now)
        .map_err(|e| HandlerError::invalid_input(e.to_string()))?
    {
        Outcome::Failed(failed) => fail(publisher, runs, failed, at).await,
        Outcome::Completed(done) => {
            let patch = Patch {
                totals: run_totals(&done.totals),
                ..Patch::default()
            };
            if !end_record(runs, &done.run_id, RunStatus::Success, patch, at).await? {
                return Ok(canceled(done.run_id));
            }
            let detail = serde_json::to_value(&done).expect("events serialize");
            publisher
                .put_event(COMPLETED_DETAIL_TYPE, &detail)
                .await
                .map_err(publish_error)?;
            tracing::info!(
                run_id = done.run_id,
                postings = done.postings_written,
                partitions = done.partition_count,
                slowest_partition_ms = done.slowest_partition_ms,
                "run completed"
            );
            Ok(AggregateOutput {
                outcome: OutcomeName::Completed,
                run_id: done.run_id,
                event: detail,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_aws::memory::MemoryPublisher;
    use tally_aws::runs::MemoryRuns;
    use tally_domain::run::RunRecord;

    fn at() -> chrono::DateTime<chrono::Utc> {
        "2026-11-21T01:00:00Z".parse().unwrap()
    }

    fn event(json: &str) -> AggregateEvent {
        serde_json::from_str(json).unwrap()
    }

    #[tokio::test]
    async fn all_partitions_succeeding_publishes_completed_and_no_alarm() {
        let p = MemoryPublisher::default();
        let out = aggregate_run(
            &p,
            &MemoryRuns::default(),
            event(include_str!("../../../events/cob-aggregate/completed.json")),
            at(),
        )
        .await
        .unwrap();
        assert_eq!(out.outcome, OutcomeName::Completed);
        let events = p.events.lock().unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, "accrual_run_completed");
        assert_eq!(events[0].1["schema_version"], "2");
        assert!(events[0].1["partition_count"].as_u64().unwrap() >= 1);
        assert!(p.alarms.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failed_partition_publishes_failed_and_an_alarm_never_completed() {
        let p = MemoryPublisher::default();
        let out = aggregate_run(
            &p,
            &MemoryRuns::default(),
            event(include_str!(
                "../../../events/cob-aggregate/partition-failed.json"
            )),
            at(),
        )
        .await
        .unwrap();
        assert_eq!(out.outcome, OutcomeName::Failed);
        let events = p.events.lock().unwrap();
        assert_eq!(
            events.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
            ["accrual_run_failed"]
        );
        assert_eq!(events[0].1["stage"], "PARTITION");
        assert!(!events[0].1["failed_partitions"]
            .as_array()
            .unwrap()
            .is_empty());
        assert_eq!(p.alarms.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_failed_plan_publishes_failed_with_the_error() {
        let p = MemoryPublisher::default();
        let out = aggregate_run(
            &p,
            &MemoryRuns::default(),
            event(include_str!(
                "../../../events/cob-aggregate/plan-failed.json"
            )),
            at(),
        )
        .await
        .unwrap();
        assert_eq!(out.outcome, OutcomeName::Failed);
        let events = p.events.lock().unwrap();
        assert_eq!(events[0].1["stage"], "PLAN");
        assert!(events[0].1["error"].is_string());
    }

    #[tokio::test]
    async fn a_throttled_publish_is_a_transient_error_and_the_retry_publishes() {
        let p = MemoryPublisher::default();
        *p.fail_next.lock().unwrap() = 1;
        let ev = event(include_str!("../../../events/cob-aggregate/completed.json"));
        assert_eq!(
            aggregate_run(&p, &MemoryRuns::default(), ev.clone(), at())
                .await
                .unwrap_err()
                .name,
            "TransientPublishError"
        );
        aggregate_run(&p, &MemoryRuns::default(), ev, at())
            .await
            .unwrap();
        assert_eq!(p.events.lock().unwrap().len(), 1);
    }

    fn record_for(ev: &AggregateEvent, status: RunStatus) -> RunRecord {
        let plan = ev.plan.as_ref().unwrap();
        let mut r = RunRecord::new_cob(plan.business_date, 1, status, at());
        r.run_id = plan.run_id.clone();
        r
    }

    #[tokio::test]
    async fn the_run_record_ends_success_with_totals_or_failure_with_the_cause() {
        let ev = event(include_str!("../../../events/cob-aggregate/completed.json"));
        let runs = MemoryRuns::default();
        runs.insert(record_for(&ev, RunStatus::Executing));
        let p = MemoryPublisher::default();
        let out = aggregate_run(&p, &runs, ev.clone(), at()).await.unwrap();
        let r = runs.get(&out.run_id).await.unwrap().unwrap();
        assert_eq!((r.status, r.ended_at), (RunStatus::Success, Some(at())));
        assert_eq!(
            r.totals.len(),
            out.event["totals"].as_array().unwrap().len()
        );
        assert!(!r.totals.is_empty());

        let ev = event(include_str!(
            "../../../events/cob-aggregate/partition-failed.json"
        ));
        let runs = MemoryRuns::default();
        runs.insert(record_for(&ev, RunStatus::Executing));
        let out = aggregate_run(&p, &runs, ev, at()).await.unwrap();
        let r = runs.get(&out.run_id).await.unwrap().unwrap();
        assert_eq!(r.status, RunStatus::Failure);
        let c = r.cause.unwrap();
        assert!(c.cause.contains("partitions failed"), "{c:?}");
    }

    #[tokio::test]
    async fn the_metrics_line_carries_the_outcome_duration_and_totals() {
        let p = MemoryPublisher::default();
        let ev = event(include_str!("../../../events/cob-aggregate/completed.json"));
        let out = aggregate_run(&p, &MemoryRuns::default(), ev, at())
            .await
            .unwrap();
        let started = at() - chrono::Duration::milliseconds(90_500);
        let line = metrics(&out, Some(started), at()).line(0);
        let m = tally_aws::emf::parse_line(&line).unwrap();
        assert_eq!(m["RunsSucceeded"], 1.0);
        assert_eq!(m["RunDurationMs"], 90_500.0);
        assert_eq!(
            m["PartitionCount"].as_f64(),
            out.event["partition_count"].as_f64()
        );
        assert_eq!(
            m["AccountsProcessed"].as_f64(),
            out.event["accounts_processed"].as_f64()
        );
        assert_eq!(m["run_id"], out.run_id.as_str());
        let failed = AggregateOutput {
            outcome: OutcomeName::Failed,
            run_id: "r".into(),
            event: serde_json::Value::Null,
        };
        let m = tally_aws::emf::parse_line(&metrics(&failed, None, at()).line(0)).unwrap();
        assert_eq!(m["RunsFailed"], 1.0);
        assert!(m.get("RunDurationMs").is_none() && m.get("PartitionCount").is_none());
    }

    #[tokio::test]
    async fn a_canceled_run_stays_canceled_and_publishes_nothing() {
        for file in [
            include_str!("../../../events/cob-aggregate/completed.json"),
            include_str!("../../../events/cob-aggregate/partition-failed.json"),
        ] {
            let ev = event(file);
            let runs = MemoryRuns::default();
            runs.insert(record_for(&ev, RunStatus::Canceled));
            let p = MemoryPublisher::default();
            let out = aggregate_run(&p, &runs, ev, at()).await.unwrap();
            assert_eq!(out.outcome, OutcomeName::Canceled);
            assert!(p.events.lock().unwrap().is_empty());
            assert!(p.alarms.lock().unwrap().is_empty());
            assert_eq!(
                runs.get(&out.run_id).await.unwrap().unwrap().status,
                RunStatus::Canceled
            );
        }
    }
}
