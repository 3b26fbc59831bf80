//! The consistency sweeper: makes run records agree with Step Functions.
//!
//! A run record is ended by the functions of its run (the aggregate writes
//! `SUCCESS` or `FAILURE`). When an execution ends outside them — aborted
//! from the console, timed out, failed in a state no function catches — its
//! record would stay `EXECUTING` for ever. The sweeper, on a schedule, reads
//! the records still `EXECUTING` (and `INITIATED` ones older than a grace
//! period), describes each one's execution and ends the record as the
//! execution ended: `FAILED` and `TIMED_OUT` become `FAILURE` with the
//! execution's error and cause, `ABORTED` becomes `CANCELED`, `SUCCEEDED`
//! becomes `SUCCESS`. A running execution is left alone.
//!
//! - Bounded: at most `SWEEPER_BATCH_MAX` records per invocation (the oldest
//!   are reached on later invocations; the report says how many were left).
//! - Idempotent and safe beside itself: every change is the store's
//!   conditional status write, so two sweepers (or a sweeper and the
//!   aggregate) racing on one record change it once; the loser sees
//!   `AlreadyThere` or `Refused` and moves on.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use tally_aws::config::{bounded, ConfigError};
use tally_aws::handler_error::HandlerError;
use tally_aws::ports::{ExecutionLookup, Patch, RunStore, Transition};
use tally_aws::runs::cause;
use tally_domain::run::{RunRecord, RunStatus};

#[derive(Debug, Clone)]
pub struct Config {
    /// Records examined per invocation (1–500).
    pub batch_max: u32,
    /// An `INITIATED` run younger than this is left alone: its execution
    /// may be starting (seconds, 60–86,400).
    pub initiated_grace: Duration,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Ok(Config {
            batch_max: bounded("SWEEPER_BATCH_MAX", 100, 1, 500)?,
            initiated_grace: Duration::seconds(bounded(
                "SWEEPER_INITIATED_GRACE_SECS",
                900,
                60,
                86_400,
            )?),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fixed {
    pub run_id: String,
    pub from: RunStatus,
    pub to: RunStatus,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub examined: u32,
    pub still_running: u32,
    /// Records this invocation changed.
    pub fixed: Vec<Fixed>,
    /// Records another writer changed first.
    pub raced: u32,
    /// Whether the batch bound cut the work short.
    pub more: bool,
    /// Records whose executions could not be read (refused, or an ARN that
    /// is not this stack's): left as they are, reported, and the sweep goes
    /// on with the others.
    pub unreadable: Vec<Unreadable>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub run_id: String,
    pub error: String,
}

/// What the record of a run should become, given its execution.
pub fn verdict(
    r: &RunRecord,
    exec: Option<&tally_aws::ports::ExecutionState>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Option<(RunStatus, String, String)> {
    let old = now - r.created_at >= grace;
    let Some(e) = exec else {
        return match r.status {
            RunStatus::Initiated if !old => None,
            _ => Some((
                RunStatus::Failure,
                "ExecutionNotFound".into(),
                format!(
                    "no execution {} for run {}",
                    r.execution_arn.as_deref().unwrap_or("(none recorded)"),
                    r.run_id
                ),
            )),
        };
    };
    let err = || e.error.clone().unwrap_or_else(|| e.status.clone());
    let why = || e.cause.clone().unwrap_or_default();
    match e.status.as_str() {
        "RUNNING" | "PENDING_REDRIVE" => None,
        "SUCCEEDED" => Some((
            RunStatus::Success,
            "ExecutionSucceeded".into(),
            String::new(),
        )),
        "FAILED" => Some((RunStatus::Failure, err(), why())),
        "TIMED_OUT" => Some((RunStatus::Failure, "States.Timeout".into(), why())),
        "ABORTED" => Some((
            RunStatus::Canceled,
            "ExecutionAborted".into(),
            "the execution was stopped outside Tally (StopExecution)".into(),
        )),
        other => Some((
            RunStatus::Failure,
            "UnknownExecutionStatus".into(),
            format!("execution status {other}"),
        )),
    }
}

/// Executions looked at for one run, at most: a reconciliation names one
/// per landed object (two sides, and a few corrected versions).
pub const EXECUTIONS_PER_RUN_MAX: usize = 16;

/// The verdict over every execution of a run. A COB has one
/// (`execution_arn`); a reconciliation names several in `executions`, and
/// is settled only when none of them still runs: then canceled if any was
/// stopped, failed if any failed, else succeeded, which for a
/// reconciliation without a report is a failure (its executions ended
/// without one reconciling).
pub async fn run_verdict<X: ExecutionLookup>(
    r: &RunRecord,
    execs: &X,
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<Option<(RunStatus, String, String)>, tally_aws::StoreError> {
    if r.executions.is_empty() {
        // A reconciliation is created a moment before its first execution
        // is named in it: give it the same grace as an INITIATED run.
        if r.kind == tally_domain::run::RunKind::Recon && now - r.created_at < grace {
            return Ok(None);
        }
        let exec = match &r.execution_arn {
            Some(arn) => execs.describe(arn).await?,
            None => None,
        };
        return Ok(verdict(r, exec.as_ref(), now, grace));
    }
    if r.executions.len() > EXECUTIONS_PER_RUN_MAX {
        // Not all can be looked at: one of the others may still run.
        tracing::warn!(
            run_id = r.run_id,
            executions = r.executions.len(),
            "too many executions to settle the run"
        );
        return Ok(None);
    }
    let mut verdicts = Vec::new();
    for arn in r.executions.values() {
        let exec = execs.describe(arn).await?;
        match verdict(r, exec.as_ref(), now, grace) {
            None => return Ok(None),
            Some(v) => verdicts.push(v),
        }
    }
    let pick = |st: RunStatus| verdicts.iter().find(|v| v.0 == st).cloned();
    Ok(pick(RunStatus::Canceled)
        .or_else(|| pick(RunStatus::Failure))
        .or_else(|| {
            pick(RunStatus::Success).map(|v| match (r.kind, &r.report_key) {
                (tally_domain::run::RunKind::Recon, None) => (
                    RunStatus::Failure,
                    "ExecutionsEndedWithoutReport".into(),
                    format!("every execution of {} ended, none with a report", r.run_id),
                ),
                _ => v,
            })
        }))
}

pub async fn sweep<R: RunStore, X: ExecutionLookup>(
    runs: &R,
    execs: &X,
    cfg: &Config,
    now: DateTime<Utc>,
) -> Result<SweepReport, HandlerError> {
    let mut report = SweepReport::default();
    let executing = runs
        .list(None, Some(RunStatus::Executing), None, cfg.batch_max + 1)
        .await?;
    let initiated = runs
        .list(
            None,
            Some(RunStatus::Initiated),
            Some(now - cfg.initiated_grace),
            cfg.batch_max + 1,
        )
        .await?;
    let total = executing.len() + initiated.len();
    report.more = total > cfg.batch_max as usize;
    for r in executing
        .into_iter()
        .chain(initiated)
        .take(cfg.batch_max as usize)
    {
        report.examined += 1;
        let verdict = match run_verdict(&r, execs, now, cfg.initiated_grace).await {
            Ok(v) => v,
            Err(e) => {
                // One record's execution refused or unknown must not leave
                // every other record untrue: it is reported (and counted in
                // the sweeper's metric), the sweep goes on.
                tracing::error!(run_id = r.run_id, error = %e, "cannot read the run's execution");
                report.unreadable.push(Unreadable {
                    run_id: r.run_id.clone(),
                    error: e.to_string(),
                });
                continue;
            }
        };
        let Some((to, error, why)) = verdict else {
            report.still_running += 1;
            continue;
        };
        // SUCCESS is reachable from EXECUTING only; an INITIATED run whose
        // execution succeeded never reached the coordinator's write: FAILURE.
        let to = if to == RunStatus::Success && r.status == RunStatus::Initiated {
            RunStatus::Failure
        } else {
            to
        };
        let patch = Patch {
            cause: (to != RunStatus::Success).then(|| cause(&error, &why)),
            ..Patch::default()
        };
        match runs.transition(&r.run_id, to, now, &patch).await? {
            Transition::Applied => {
                tracing::warn!(run_id = r.run_id, from = %r.status, %to, error, cause = why,
                               "run record corrected from its execution");
                report.fixed.push(Fixed {
                    run_id: r.run_id.clone(),
                    from: r.status,
                    to,
                    reason: if why.is_empty() {
                        error
                    } else {
                        format!("{error}: {why}")
                    },
                });
            }
            _ => report.raced += 1,
        }
    }
    tracing::info!(
        examined = report.examined,
        fixed = report.fixed.len(),
        unreadable = report.unreadable.len(),
        raced = report.raced,
        still_running = report.still_running,
        more = report.more,
        "swept"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tally_aws::ports::ExecutionState;
    use tally_aws::runs::MemoryRuns;
    use tally_aws::StoreError;

    #[derive(Default)]
    struct Execs(Mutex<HashMap<String, ExecutionState>>, Mutex<u32>);

    impl Execs {
        fn set(&self, arn: &str, status: &str, error: Option<&str>) {
            self.0.lock().unwrap().insert(
                arn.into(),
                ExecutionState {
                    status: status.into(),
                    error: error.map(Into::into),
                    cause: error.map(|e| format!("cause of {e}")),
                },
            );
        }
    }

    impl ExecutionLookup for Execs {
        async fn describe(&self, arn: &str) -> Result<Option<ExecutionState>, StoreError> {
            *self.1.lock().unwrap() += 1;
            // Let the other sweeper of a test run between our read and write.
            tokio::task::yield_now().await;
            if arn.contains("forbidden") {
                return Err(StoreError::Permanent(format!(
                    "DescribeExecution: AccessDeniedException on {arn}"
                )));
            }
            Ok(self.0.lock().unwrap().get(arn).cloned())
        }
    }

    #[tokio::test]
    async fn a_record_whose_execution_cannot_be_read_is_reported_and_the_others_are_swept() {
        let runs = MemoryRuns::default();
        let execs = Execs::default();
        let now = t("2026-11-21T03:00:00Z");
        let bad = run(&runs, 1, RunStatus::Executing, "2026-11-21T01:00:00Z");
        let mut r = runs
            .records()
            .into_iter()
            .find(|r| r.run_id == bad)
            .unwrap();
        r.execution_arn = Some("arn:exec:forbidden".into());
        runs.insert(r);
        let good = run(&runs, 2, RunStatus::Executing, "2026-11-21T01:00:00Z");
        execs.set(
            &format!("arn:exec:{good}"),
            "FAILED",
            Some("States.Runtime"),
        );
        let report = sweep(&runs, &execs, &cfg(100), now).await.unwrap();
        assert_eq!(report.examined, 2);
        assert_eq!(report.fixed.len(), 1, "{report:?}");
        assert_eq!(report.fixed[0].run_id, good);
        assert_eq!(report.unreadable.len(), 1, "{report:?}");
        assert_eq!(report.unreadable[0].run_id, bad);
        assert!(report.unreadable[0].error.contains("AccessDenied"));
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn cfg(batch: u32) -> Config {
        Config {
            batch_max: batch,
            initiated_grace: Duration::seconds(900),
        }
    }

    fn run(runs: &MemoryRuns, day: u32, status: RunStatus, created: &str) -> String {
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, day).unwrap();
        let mut r = RunRecord::new_cob(d, 1, status, t(created));
        r.execution_arn = Some(format!("arn:exec:{}", r.run_id));
        let id = r.run_id.clone();
        runs.insert(r);
        id
    }

    #[tokio::test]
    async fn each_ended_execution_ends_its_record_and_running_ones_are_left() {
        let runs = MemoryRuns::default();
        let execs = Execs::default();
        let now = t("2026-11-21T03:00:00Z");
        let cases = [
            (
                1,
                RunStatus::Executing,
                Some(("FAILED", Some("States.Runtime"))),
                Some(RunStatus::Failure),
            ),
            (
                2,
                RunStatus::Executing,
                Some(("TIMED_OUT", None)),
                Some(RunStatus::Failure),
            ),
            (
                3,
                RunStatus::Executing,
                Some(("ABORTED", None)),
                Some(RunStatus::Canceled),
            ),
            (
                4,
                RunStatus::Executing,
                Some(("SUCCEEDED", None)),
                Some(RunStatus::Success),
            ),
            (5, RunStatus::Executing, Some(("RUNNING", None)), None),
            (6, RunStatus::Executing, None, Some(RunStatus::Failure)),
            (7, RunStatus::Initiated, None, Some(RunStatus::Failure)),
            (
                8,
                RunStatus::Initiated,
                Some(("SUCCEEDED", None)),
                Some(RunStatus::Failure),
            ),
            (9, RunStatus::Success, Some(("SUCCEEDED", None)), None),
        ];
        let mut ids = Vec::new();
        for (day, status, exec, _) in &cases {
            let id = run(&runs, *day, *status, "2026-11-21T01:00:00Z");
            if let Some((s, e)) = exec {
                execs.set(&format!("arn:exec:{id}"), s, *e);
            }
            ids.push(id);
        }
        // A young INITIATED run: its execution may be starting.
        let young = run(&runs, 10, RunStatus::Initiated, "2026-11-21T02:55:00Z");
        let report = sweep(&runs, &execs, &cfg(100), now).await.unwrap();
        for ((_, before, _, after), id) in cases.iter().zip(&ids) {
            let r = runs.get(id).await.unwrap().unwrap();
            assert_eq!(r.status, after.unwrap_or(*before), "{id}");
        }
        assert_eq!(
            runs.get(&young).await.unwrap().unwrap().status,
            RunStatus::Initiated
        );
        let failed = runs.get(&ids[0]).await.unwrap().unwrap();
        assert_eq!(failed.cause.unwrap().error, "States.Runtime");
        assert_eq!(failed.ended_at, Some(now));
        assert_eq!(report.fixed.len(), 7);
        assert_eq!(report.still_running, 1);
        assert!(!report.more);
        // Idempotent: a second sweep changes nothing.
        let again = sweep(&runs, &execs, &cfg(100), now).await.unwrap();
        assert!(again.fixed.is_empty());
        assert_eq!(again.examined, 1, "only the running one is still EXECUTING");
    }

    #[tokio::test]
    async fn a_reconciliation_is_settled_by_all_of_its_executions() {
        let runs = MemoryRuns::default();
        let execs = Execs::default();
        let now = t("2026-11-21T03:00:00Z");
        let day = "2026-11-20".parse().unwrap();
        // (program, the executions' statuses, report written, expected)
        let cases: [(&str, &[&str], bool, Option<RunStatus>); 5] = [
            ("WAITING", &["RUNNING", "SUCCEEDED"], false, None),
            (
                "STOPPED",
                &["SUCCEEDED", "ABORTED"],
                false,
                Some(RunStatus::Canceled),
            ),
            (
                "BROKE",
                &["FAILED", "SUCCEEDED"],
                false,
                Some(RunStatus::Failure),
            ),
            (
                "NOREPORT",
                &["SUCCEEDED", "SUCCEEDED"],
                false,
                Some(RunStatus::Failure),
            ),
            (
                "DONE",
                &["SUCCEEDED", "SUCCEEDED"],
                true,
                Some(RunStatus::Success),
            ),
        ];
        // Just made, no execution named yet: left alone for the grace period.
        runs.insert(RunRecord::new_recon(
            "NEW",
            day,
            1,
            t("2026-11-21T02:59:00Z"),
        ));
        for (program, statuses, report, _) in &cases {
            let mut r = RunRecord::new_recon(program, day, 1, t("2026-11-21T01:00:00Z"));
            for (i, st) in statuses.iter().enumerate() {
                let arn = format!("arn:exec:{program}-{i}");
                execs.set(&arn, st, (*st == "FAILED").then_some("ContainerFailed"));
                r.executions.insert(format!("{program}-{i}"), arn);
            }
            r.report_key = report.then(|| format!("reports/{program}/report.json"));
            runs.insert(r);
        }
        sweep(&runs, &execs, &cfg(100), now).await.unwrap();
        for (program, _, _, want) in &cases {
            let r = runs
                .get(&tally_domain::run::recon_run_id(program, day, 1))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(r.status, want.unwrap_or(RunStatus::Executing), "{program}");
        }
        assert_eq!(
            runs.get(&tally_domain::run::recon_run_id("NEW", day, 1))
                .await
                .unwrap()
                .unwrap()
                .status,
            RunStatus::Executing
        );
        let broke = runs
            .get(&tally_domain::run::recon_run_id("BROKE", day, 1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(broke.cause.unwrap().error, "ContainerFailed");
        let none = runs
            .get(&tally_domain::run::recon_run_id("NOREPORT", day, 1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(none.cause.unwrap().error, "ExecutionsEndedWithoutReport");
    }

    #[tokio::test]
    async fn a_sweep_is_bounded_and_the_next_one_goes_on() {
        let runs = MemoryRuns::default();
        let execs = Execs::default();
        for day in 1..=9 {
            let id = run(&runs, day, RunStatus::Executing, "2026-11-21T01:00:00Z");
            execs.set(&format!("arn:exec:{id}"), "ABORTED", None);
        }
        let now = t("2026-11-21T03:00:00Z");
        let a = sweep(&runs, &execs, &cfg(4), now).await.unwrap();
        assert_eq!((a.examined, a.fixed.len(), a.more), (4, 4, true));
        assert_eq!(*execs.1.lock().unwrap(), 4);
        let b = sweep(&runs, &execs, &cfg(4), now).await.unwrap();
        let c = sweep(&runs, &execs, &cfg(4), now).await.unwrap();
        assert_eq!((b.fixed.len(), c.fixed.len(), c.more), (4, 1, false));
    }

    #[tokio::test]
    async fn two_sweepers_at_once_change_each_record_once() {
        let runs = MemoryRuns::default();
        let execs = Execs::default();
        for day in 1..=6 {
            let id = run(&runs, day, RunStatus::Executing, "2026-11-21T01:00:00Z");
            execs.set(
                &format!("arn:exec:{id}"),
                "FAILED",
                Some("States.TaskFailed"),
            );
        }
        let now = t("2026-11-21T03:00:00Z");
        let c = cfg(100);
        let (a, b) = tokio::join!(sweep(&runs, &execs, &c, now), sweep(&runs, &execs, &c, now));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.fixed.len() + b.fixed.len(), 6);
        assert_eq!(a.raced + b.raced, (a.examined + b.examined) - 6);
        assert!(a.raced + b.raced > 0, "the two sweeps did not overlap");
        assert!(runs
            .records()
            .iter()
            .all(|r| r.status == RunStatus::Failure));
    }
}
