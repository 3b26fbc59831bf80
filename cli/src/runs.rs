//! COB runs through Step Functions: start one, follow it, read its status.

use anyhow::{bail, Context, Result};
use aws_sdk_sfn::types::ExecutionStatus;
use serde::Serialize;
use std::time::{Duration, Instant};
use tally_domain::NaiveDate;

/// Polling interval while waiting for a run.
pub const POLL_INTERVAL: Duration = Duration::from_millis(1000);

#[derive(Debug, Clone, Default, Serialize)]
pub struct Options {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_threshold: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_count: Option<u32>,
}

/// A run id: the execution name. Unique per start, so two starts for the same
/// date are two runs (the ledger, not the name, keeps postings unique).
pub fn new_run_id(date: NaiveDate) -> String {
    let now = chrono::Utc::now();
    format!(
        "cob-{date}-{}-{:04x}",
        now.format("%Y%m%dT%H%M%S%3f"),
        rand_suffix()
    )
}

fn rand_suffix() -> u16 {
    // No RNG crate for one number: the clock's nanoseconds and the pid.
    let n = chrono::Utc::now().timestamp_subsec_nanos() ^ std::process::id().rotate_left(16);
    (n ^ (n >> 16)) as u16
}

pub fn execution_arn(state_machine_arn: &str, run_id: &str) -> Result<String> {
    match state_machine_arn.split_once(":stateMachine:") {
        Some((prefix, name)) => Ok(format!("{prefix}:execution:{name}:{run_id}")),
        None => bail!("`{state_machine_arn}` is not a state machine ARN"),
    }
}

/// Starts a run; `input` extras (`options`, `fault`) are passed through.
pub async fn start(
    sfn: &aws_sdk_sfn::Client,
    state_machine_arn: &str,
    run_id: &str,
    date: NaiveDate,
    options: &Options,
    fault: Option<serde_json::Value>,
) -> Result<String> {
    let mut input = serde_json::json!({"business_date": date, "options": options});
    if let Some(f) = fault {
        input["fault"] = f;
    }
    let out = sfn
        .start_execution()
        .state_machine_arn(state_machine_arn)
        .name(run_id)
        .input(input.to_string())
        .send()
        .await
        .context("StartExecution")?;
    Ok(out.execution_arn().to_owned())
}

#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub run_id: String,
    pub status: String,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

impl RunStatus {
    pub fn is_running(&self) -> bool {
        self.status == ExecutionStatus::Running.as_str()
            || self.status == ExecutionStatus::PendingRedrive.as_str()
    }
    pub fn succeeded(&self) -> bool {
        self.status == ExecutionStatus::Succeeded.as_str()
    }
}

pub async fn status(sfn: &aws_sdk_sfn::Client, execution_arn: &str) -> Result<RunStatus> {
    let d = sfn
        .describe_execution()
        .execution_arn(execution_arn)
        .send()
        .await
        .context("DescribeExecution")?;
    let fmt = |t: &aws_sdk_sfn::primitives::DateTime| {
        t.fmt(aws_sdk_sfn::primitives::DateTimeFormat::DateTime)
            .unwrap_or_default()
    };
    Ok(RunStatus {
        run_id: d.name().unwrap_or_default().to_owned(),
        status: d.status().as_str().to_owned(),
        started_at: fmt(d.start_date()),
        stopped_at: d.stop_date().map(fmt),
        output: d.output().and_then(|o| serde_json::from_str(o).ok()),
        error: d.error().map(str::to_owned),
        cause: d.cause().map(str::to_owned),
    })
}

/// Polls until the run ends or `timeout` passes; `tick` sees each poll.
pub async fn wait(
    sfn: &aws_sdk_sfn::Client,
    execution_arn: &str,
    timeout: Duration,
    mut tick: impl FnMut(&RunStatus, Duration),
) -> Result<RunStatus> {
    let started = Instant::now();
    loop {
        let s = status(sfn, execution_arn).await?;
        tick(&s, started.elapsed());
        if !s.is_running() {
            return Ok(s);
        }
        if started.elapsed() > timeout {
            bail!("run {} still {} after {:?}", s.run_id, s.status, timeout);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_arns_derive_from_the_state_machine_arn() {
        assert_eq!(
            execution_arn(
                "arn:aws:states:us-east-1:123456789012:stateMachine:tally-accrual-cob",
                "cob-1"
            )
            .unwrap(),
            "arn:aws:states:us-east-1:123456789012:execution:tally-accrual-cob:cob-1"
        );
        assert!(execution_arn("nope", "x").is_err());
    }

    #[test]
    fn run_ids_fit_an_execution_name() {
        let id = new_run_id("2026-11-20".parse().unwrap());
        assert!(id.len() <= 80 && id.starts_with("cob-2026-11-20-"), "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    }
}

/// Where a run is: the state it last entered and how many fan-out
/// partitions have finished, read from the execution history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub state: String,
    pub partitions_done: u32,
    pub partitions_failed: u32,
}

pub async fn progress(sfn: &aws_sdk_sfn::Client, execution_arn: &str) -> Result<Progress> {
    use aws_sdk_sfn::types::HistoryEventType as T;
    let mut p = Progress::default();
    let mut token = None;
    loop {
        let page = sfn
            .get_execution_history()
            .execution_arn(execution_arn)
            .max_results(1000)
            .set_next_token(token)
            .send()
            .await
            .context("GetExecutionHistory")?;
        for e in page.events() {
            match e.r#type() {
                T::MapIterationSucceeded => p.partitions_done += 1,
                T::MapIterationFailed | T::MapIterationAborted => p.partitions_failed += 1,
                _ => {}
            }
            if let Some(d) = e.state_entered_event_details() {
                p.state = d.name().to_owned();
            }
        }
        match page.next_token() {
            Some(t) => token = Some(t.to_owned()),
            None => return Ok(p),
        }
    }
}

// ---------------------------------------------------------------------------
// Run records: submit, cancel, follow
// ---------------------------------------------------------------------------

use tally_aws::ports::{Patch, RunStore, Transition};
use tally_aws::runs::DynamoRuns;
use tally_domain::run::{RunRecord, RunStatus as Status};

pub fn store(sdk: &aws_config::SdkConfig, table: &str) -> DynamoRuns {
    DynamoRuns {
        client: aws_sdk_dynamodb::Client::new(sdk),
        table: table.to_owned(),
    }
}

/// Submits the COB for `date`: idempotent per date. A date whose run is
/// live or succeeded returns that run (`false`); otherwise a new attempt is
/// recorded `INITIATED` and its execution, named by the run id, started.
/// An `INITIATED` run returned again has its execution started again (the
/// same name and input: Step Functions starts it at most once).
pub async fn submit(
    store: &DynamoRuns,
    sfn: &aws_sdk_sfn::Client,
    state_machine_arn: &str,
    date: NaiveDate,
    options: &Options,
    fault: Option<serde_json::Value>,
) -> Result<(RunRecord, bool)> {
    let mut input = serde_json::json!({"business_date": date, "options": options});
    if let Some(f) = fault {
        input["fault"] = f;
    }
    let now = chrono::Utc::now();
    // The attempt, and a random suffix: execution names must stay unique
    // for 90 days even if the runs table were ever restored or emptied.
    let suffix = rand_suffix();
    let make = |attempt: u32| {
        let mut r = RunRecord::new_cob(date, attempt, Status::Initiated, now);
        r.run_id = format!("{}-{suffix:04x}", r.run_id);
        r.input = input.clone();
        r.execution_arn = execution_arn(state_machine_arn, &r.run_id).ok();
        r
    };
    let (record, created) = store.submit(&make).await?;
    if record.status == Status::Initiated {
        let out = sfn
            .start_execution()
            .state_machine_arn(state_machine_arn)
            .name(&record.run_id)
            .input(record.input.to_string())
            .send()
            .await;
        match out {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_execution_already_exists()) =>
            {
                // A repeated submit of a run whose execution is already
                // running with this input is fine; anything else is a
                // collision with another execution, never to be ignored.
                let arn = execution_arn(state_machine_arn, &record.run_id)?;
                let d = sfn
                    .describe_execution()
                    .execution_arn(&arn)
                    .send()
                    .await
                    .context("DescribeExecution")?;
                let same_input = d
                    .input()
                    .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
                    .is_some_and(|i| i == record.input);
                if !same_input || d.status().as_str() != "RUNNING" {
                    bail!(
                        "run {} is INITIATED but an execution of that name already exists ({}{}): \
                         the sweeper will end the run; submit the date again after that",
                        record.run_id,
                        d.status().as_str(),
                        if same_input { "" } else { ", another input" }
                    );
                }
            }
            Err(e) => return Err(anyhow::Error::new(e).context("StartExecution")),
        }
    }
    Ok((record, created))
}

/// Cancels a run: the record becomes `CANCELED` (conditional: only from
/// `INITIATED` or `EXECUTING`), then its executions are stopped. Partitions
/// still running see the status at their next page and stop there; shards
/// before they write their summary.
/// Canceling a canceled run again only repeats the stop (idempotent).
pub async fn cancel(
    store: &DynamoRuns,
    sfn: &aws_sdk_sfn::Client,
    run_id: &str,
    who: &str,
) -> Result<RunRecord> {
    let Some(r) = store.get(run_id).await? else {
        bail!("no run {run_id}");
    };
    // Every partition has posted: the work is done and the aggregate is
    // about to end the run. A cancel now would only hide a complete run.
    if r.status == Status::Executing
        && r.units_total > 0
        && r.units.len() as u32 == r.units_total
        && r.units.values().all(|u| u.outcome == "SUCCEEDED")
    {
        bail!("run {run_id} has finished every partition or shard and is ending: not canceled");
    }
    let patch = Patch {
        cause: Some(tally_aws::runs::cause(
            "CanceledByOperator",
            format!("tally runs cancel by {who}"),
        )),
        ..Patch::default()
    };
    match store
        .transition(run_id, Status::Canceled, chrono::Utc::now(), &patch)
        .await?
    {
        Transition::Applied | Transition::AlreadyThere => {}
        Transition::Refused(s) => bail!("run {run_id} has already ended {s}: nothing to cancel"),
        Transition::Missing => bail!("no run {run_id}"),
    }
    // A COB has one execution; a reconciliation names one per landed object.
    let arns: std::collections::BTreeSet<&String> = r
        .execution_arn
        .iter()
        .chain(r.executions.values())
        .collect();
    for arn in arns {
        let out = sfn
            .stop_execution()
            .execution_arn(arn)
            .error(tally_domain::errors::RUN_CANCELED)
            .cause(format!("canceled by {who}"))
            .send()
            .await;
        if let Err(e) = out {
            // Not started yet, or already ended: the record is what counts.
            let benign = e
                .as_service_error()
                .is_some_and(|s| s.is_execution_does_not_exist());
            if !benign {
                let msg = format!("{}", aws_sdk_sfn::error::DisplayErrorContext(&e));
                if !msg.contains("ExecutionNotRunning") && !msg.contains("not running") {
                    return Err(anyhow::Error::new(e).context("StopExecution"));
                }
            }
        }
    }
    Ok(store.get(run_id).await?.expect("the run exists"))
}

/// Polls the record until the run ends or `timeout` passes; `tick` sees each poll.
pub async fn follow(
    store: &DynamoRuns,
    run_id: &str,
    timeout: Duration,
    mut tick: impl FnMut(&RunRecord, Duration),
) -> Result<RunRecord> {
    let started = Instant::now();
    loop {
        let Some(r) = store.get(run_id).await? else {
            bail!("no run {run_id}");
        };
        tick(&r, started.elapsed());
        if r.status.is_terminal() {
            return Ok(r);
        }
        if started.elapsed() > timeout {
            bail!("run {run_id} still {} after {timeout:?}", r.status);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
