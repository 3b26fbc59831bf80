//! The settle step: after a side's ingest, accept it and decide what comes
//! next for its program and date.
//!
//! - The ingest rejected the file: `REJECTED` (it already quarantined and
//!   alarmed).
//! - A higher version of this side is already accepted: `SUPERSEDED`.
//! - Both sides are in: `READY` with the reconciliation of the two current
//!   versions, claimed by this execution (conditional write); if another
//!   execution claimed it first, `CLAIMED_ELSEWHERE`.
//! - The other side is missing: `WAITING`, to be asked again after
//!   `poll_seconds`. The other side's arrival starts its own execution,
//!   which goes on at once; this one only matters if the other side never
//!   comes: after `RECON_WAIT_SECONDS_MAX` (default 24 h) it reconciles with
//!   that side empty, which reports every transaction unmatched, and alarms.

use serde::{Deserialize, Serialize};
use tally_aws::config::{bounded, ConfigError};
use tally_aws::handler_error::HandlerError;
use tally_aws::ports::{
    Acceptance, Heartbeat, Patch, Publisher, ReconState, RunStore, SideManifest, Transition,
};
use tally_aws::runs::{cause, execution_name, join_recon_run};
use tally_aws::StoreError;
use tally_domain::errors;
use tally_domain::recon::matching::ControlSums;
use tally_domain::recon::pipeline::{Inspected, PipelineStatus, Recon};
use tally_domain::recon::Side;
use tally_domain::run::{self, RunCause, RunStatus};

#[derive(Debug, Clone)]
pub struct Config {
    pub shard_count: u32,
    pub poll_seconds: u64,
    pub wait_seconds_max: u64,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Ok(Config {
            shard_count: bounded("RECON_SHARD_COUNT", 64, 1, 1024)?,
            poll_seconds: bounded("RECON_WAIT_POLL_SECONDS", 600, 1, 86_400)?,
            wait_seconds_max: bounded("RECON_WAIT_SECONDS_MAX", 86_400, 0, 7 * 86_400)?,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Wrapped<T> {
    pub result: T,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SettleInput {
    pub inspect: Wrapped<Inspected>,
    #[serde(default)]
    pub waited_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Settled {
    Ready {
        recon: Recon,
        shards: Vec<u32>,
        /// The run the shards report to (null: none).
        run_id: Option<String>,
    },
    Waiting {
        poll_seconds: u64,
        waited_seconds: u64,
    },
    Rejected,
    Superseded {
        current: u64,
    },
    ClaimedElsewhere {
        recon_id: String,
    },
}

fn canceled(run_id: &str) -> HandlerError {
    HandlerError {
        name: errors::RUN_CANCELED,
        message: format!("run {run_id} was canceled"),
    }
}

/// Reports to the run through `report`; if the run was canceled, stops the
/// execution with `RunCanceled`. If a rejected file or a failed step ended
/// it while this landing was on its way, this landing is work still to do:
/// it joins the next attempt (as Inspect would have) and reports there. If
/// another execution reconciled and ended it `SUCCESS`, this landing may be
/// covered by that reconciliation (a waiting side's next poll, a retry): it
/// joins the next attempt only with `rejoin_after_success`, and otherwise
/// stays with the ended run. Returns the run the execution now works for,
/// and whether that run is live.
async fn report_to_run<U, F, Fut>(
    runs: &U,
    run_id: String,
    program: &str,
    date: chrono::NaiveDate,
    execution_arn: Option<&str>,
    rejoin_after_success: bool,
    report: F,
) -> Result<(String, bool), HandlerError>
where
    U: RunStore,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Heartbeat, StoreError>>,
{
    match report(run_id.clone()).await? {
        Heartbeat::Continue | Heartbeat::NoRecord => Ok((run_id, true)),
        Heartbeat::Stop(RunStatus::Canceled) => Err(canceled(&run_id)),
        Heartbeat::Stop(RunStatus::Success) if !rejoin_after_success => Ok((run_id, false)),
        Heartbeat::Stop(ended) => {
            let (next, _) = join_recon_run(runs, program, date, execution_arn).await?;
            tracing::info!(run_id, %ended, next = next.run_id, "run ended under this landing: joined the next");
            match report(next.run_id.clone()).await? {
                Heartbeat::Continue | Heartbeat::NoRecord => Ok((next.run_id, true)),
                Heartbeat::Stop(RunStatus::Canceled) => Err(canceled(&next.run_id)),
                Heartbeat::Stop(st) => Err(StoreError::Transient(format!(
                    "run {} is {st} as soon as joined; retry",
                    next.run_id
                ))
                .into()),
            }
        }
    }
}

/// This execution has nothing to do (`found` says why): it records so in
/// its run. When every execution the run names has done the same, no work
/// is left in the run, and it ends:
///
/// - `FAILURE` with a rejected file's cause, if a file was rejected;
/// - else `SUCCESS` on the day's last report (the landings changed
///   nothing: the day stands as last reconciled);
/// - else, with no earlier report, `FAILURE` (`NothingReconciled`).
///
/// Each execution records itself before it reads the run, so the last of
/// them to read sees them all; the end is conditional on no execution
/// having joined since.
async fn idle<R: ReconState, U: RunStore>(
    state: &R,
    runs: &U,
    run_id: Option<&str>,
    execution_arn: Option<&str>,
    program: &str,
    date: chrono::NaiveDate,
    found: RunCause,
) -> Result<(), HandlerError> {
    let (Some(run_id), Some(arn)) = (run_id, execution_arn) else {
        return Ok(());
    };
    let now = chrono::Utc::now();
    runs.mark_idle(run_id, execution_name(arn), &found, now)
        .await?;
    let Some(run) = runs.get(run_id).await? else {
        return Ok(());
    };
    if run.status != RunStatus::Executing || !run.all_idle() {
        tracing::info!(
            run_id,
            found = found.error,
            "nothing to do here; the run goes on"
        );
        return Ok(());
    }
    // Nothing was planned here that will be done (a plan made before a
    // claim that was lost).
    let patch = |c: Option<RunCause>, report_key: Option<String>| Patch {
        cause: c,
        report_key,
        units_total: Some(0),
        ..Patch::default()
    };
    // The report of the day's accepted versions, if an earlier attempt made it.
    let (settlement, internal) = state.manifests(program, date).await?;
    let current = Recon::report_key(
        program,
        date,
        settlement.map_or(0, |m| m.version),
        internal.map_or(0, |m| m.version),
    );
    let (to, patch) = match run.idle_rejection() {
        Some(rejected) => (RunStatus::Failure, patch(Some(rejected.clone()), None)),
        None => match last_report(runs, program, &run, &current).await? {
            Some(key) => (RunStatus::Success, patch(None, Some(key))),
            None => (
                RunStatus::Failure,
                patch(
                    Some(cause(
                        run::NOTHING_RECONCILED,
                        format!(
                            "no landing of the run had work, and no earlier attempt reported the day's accepted versions ({current}) ({}: {})",
                            found.error, found.cause
                        ),
                    )),
                    None,
                ),
            ),
        },
    };
    match runs
        .end_idle(run_id, to, now, &patch, run.executions.len())
        .await?
    {
        Transition::Applied => tracing::info!(run_id, %to, "no execution had work left: run ended"),
        t => tracing::info!(
            run_id,
            ?t,
            "run not ended here (it ended, or an execution joined)"
        ),
    }
    Ok(())
}

/// Earlier attempts looked back over for the day's last report.
const LOOK_BACK_ATTEMPTS: u32 = 16;

/// `report_key`, if an earlier attempt of the day (the latest
/// [`LOOK_BACK_ATTEMPTS`]) succeeded with it: the report of the day's
/// accepted versions, which the idle run then stands on.
async fn last_report<U: RunStore>(
    runs: &U,
    program: &str,
    run: &run::RunRecord,
    report_key: &str,
) -> Result<Option<String>, StoreError> {
    let first = run.attempt.saturating_sub(LOOK_BACK_ATTEMPTS).max(1);
    for attempt in (first..run.attempt).rev() {
        let id = run::recon_run_id(program, run.business_date, attempt);
        if let Some(r) = runs.get(&id).await? {
            if r.status == RunStatus::Success && r.report_key.as_deref() == Some(report_key) {
                return Ok(r.report_key);
            }
        }
    }
    Ok(None)
}

/// A side's name in a run's progress.
fn side_name(side: Side) -> &'static str {
    match side {
        Side::Settlement => "settlement",
        Side::Internal => "internal",
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Settlement => Side::Internal,
        Side::Internal => Side::Settlement,
    }
}

fn manifest_from_outcome(i: &Inspected, o: &serde_json::Value) -> Result<SideManifest, StoreError> {
    let bad =
        |what: &str| StoreError::Permanent(format!("ingest outcome of {}: {what}", i.ingest_id));
    let control = match o.get("control") {
        None | Some(serde_json::Value::Null) => None,
        Some(c) => Some(
            serde_json::from_value::<ControlSums>(c.clone()).map_err(|e| bad(&e.to_string()))?,
        ),
    };
    Ok(SideManifest {
        side: i.side,
        version: o["version"].as_u64().ok_or_else(|| bad("no version"))?,
        ingest_id: i.ingest_id.clone(),
        key: i.key.clone(),
        records: o["records"].as_u64().ok_or_else(|| bad("no records"))?,
        control,
    })
}

pub async fn settle<R: ReconState, A: Publisher, U: RunStore>(
    state: &R,
    alarms: &A,
    runs: &U,
    cfg: &Config,
    input: SettleInput,
) -> Result<Settled, HandlerError> {
    let i = input.inspect.result;
    let (program, date) = (i.program_id.as_str(), i.file_date);
    let mut run_id = i.run_id.clone();
    // Whether `run_id` is still live (see `report_to_run`).
    let mut live = true;
    let arn = i.execution_id.as_deref();
    let now = chrono::Utc::now;
    let outcome = state.outcome(&i.ingest_id).await?.ok_or_else(|| {
        StoreError::Permanent(format!(
            "no stored outcome for ingest {}: the ingest did not finish",
            i.ingest_id
        ))
    })?;
    match outcome["outcome"].as_str() {
        Some("REJECTED") => {
            // The file is refused whole (the ingest quarantined it and
            // alarmed). The run fails with the reason once no execution in
            // it has work left; while another carries the day (a side
            // waiting, the shards matching), the rejection is recorded in
            // the run and the day goes on (a corrected file joins it).
            let r = &outcome["reason"];
            let why = format!(
                "line {}, field {}: expected {}, found {}",
                r["line"], r["field"], r["expected"], r["found"]
            );
            let found = cause(run::FILE_REJECTED, format!("{}: {why}", i.key));
            idle(state, runs, run_id.as_deref(), arn, program, date, found).await?;
            return Ok(Settled::Rejected);
        }
        Some("APPLIED") => {}
        other => {
            return Err(StoreError::Permanent(format!(
                "ingest {}: unknown outcome {other:?}",
                i.ingest_id
            ))
            .into())
        }
    }
    let m = manifest_from_outcome(&i, &outcome)?;
    // The side's records, as the progress of whichever run it reports to.
    let (side, records) = (side_name(i.side), m.records);
    let progress = |r: String| async move { runs.heartbeat(&r, side, records, now()).await };
    // A canceled run stops here, before the side is accepted.
    if let Some(current) = run_id.take() {
        let (joined, l) = report_to_run(runs, current, program, date, arn, false, progress).await?;
        run_id = Some(joined);
        live = l;
        if !live {
            tracing::info!(
                run_id,
                "the run was reconciled under this landing; it may be covered"
            );
        }
    }
    let superseded = |current: u64| {
        cause(
            run::SUPERSEDED,
            format!(
                "{}: version {} of this side is older than the accepted {current}",
                i.key, m.version
            ),
        )
    };
    if let Acceptance::Superseded { current } = state.accept(program, date, &m).await? {
        let found = superseded(current);
        idle(state, runs, run_id.as_deref(), arn, program, date, found).await?;
        return Ok(Settled::Superseded { current });
    }
    let (settlement, internal) = state.manifests(program, date).await?;
    // This execution's own side must still be current (a newer version may
    // have been accepted in between): otherwise the newer one's execution
    // reconciles.
    let mine = match i.side {
        Side::Settlement => settlement.as_ref(),
        Side::Internal => internal.as_ref(),
    };
    if let Some(cur) = mine.filter(|c| c.version > m.version) {
        let found = superseded(cur.version);
        idle(state, runs, run_id.as_deref(), arn, program, date, found).await?;
        return Ok(Settled::Superseded {
            current: cur.version,
        });
    }
    let missing = match (&settlement, &internal) {
        (Some(_), Some(_)) => None,
        (None, _) => Some(Side::Settlement),
        (_, None) => Some(Side::Internal),
    };
    if let Some(missing) = missing {
        if input.waited_seconds < cfg.wait_seconds_max {
            state
                .put_status(
                    program,
                    date,
                    &serde_json::json!({
                        "status": PipelineStatus::waiting_for(missing),
                        "program_id": program,
                        "file_date": date,
                        "waited_seconds": input.waited_seconds,
                        "wait_seconds_max": cfg.wait_seconds_max,
                    }),
                )
                .await?;
            // A side still waiting is work: not in a run that has ended.
            if let Some(ended) = run_id.take().filter(|_| !live) {
                report_to_run(runs, ended, program, date, arn, true, progress).await?;
            }
            let poll = cfg
                .poll_seconds
                .min(cfg.wait_seconds_max - input.waited_seconds)
                .max(1);
            return Ok(Settled::Waiting {
                poll_seconds: poll,
                waited_seconds: input.waited_seconds + poll,
            });
        }
        alarms
            .alarm(
                &format!("Tally: {program} {date}: {:?} records never arrived", missing),
                &format!(
                    "The {:?} side of {program} {date} has not arrived after {} s; reconciling without it, so every transaction of the other side is reported unmatched.",
                    missing, input.waited_seconds
                ),
            )
            .await?;
        debug_assert_eq!(other(missing), i.side);
    }
    let recon = Recon {
        recon_id: Recon::id(
            program,
            date,
            settlement.as_ref().map_or(0, |m| m.version),
            internal.as_ref().map_or(0, |m| m.version),
        ),
        program_id: program.to_owned(),
        file_date: date,
        settlement_version: settlement.as_ref().map_or(0, |m| m.version),
        internal_version: internal.as_ref().map_or(0, |m| m.version),
        shard_count: cfg.shard_count,
        control: settlement.as_ref().and_then(|m| m.control),
    };
    // The plan before the claim: a run canceled now stops before this
    // execution holds the reconciliation. A run that was reconciled under
    // this landing is the exception: only a reconciliation that no one
    // holds yet is new work, for the next attempt, so the claim comes first.
    let mut claimed = false;
    if let Some(current) = run_id.take() {
        let (shards, exec) = (recon.shard_count, arn.unwrap_or_default());
        let plan = |r: String| async move { runs.plan(&r, shards, exec, now()).await };
        let (mut joined, mut l) = (current, false);
        if live {
            (joined, l) = report_to_run(runs, joined, program, date, arn, false, plan).await?;
        }
        if !l {
            claimed = state
                .claim(program, date, &recon.recon_id, &i.ingest_id)
                .await?;
        }
        if claimed {
            (joined, l) = report_to_run(runs, joined, program, date, arn, true, plan).await?;
            // The side's records, as the new attempt's progress.
            progress(joined.clone()).await?;
        }
        run_id = Some(joined);
        live = l;
    }
    // Claimed above already, or claimed now (a claim by the same ingest
    // again is granted, so a retried Settle gets here too).
    if !live
        || !(claimed
            || state
                .claim(program, date, &recon.recon_id, &i.ingest_id)
                .await?)
    {
        let found = cause(
            run::CLAIMED_ELSEWHERE,
            format!(
                "{}: reconciliation {} is another execution's",
                i.key, recon.recon_id
            ),
        );
        idle(state, runs, run_id.as_deref(), arn, program, date, found).await?;
        return Ok(Settled::ClaimedElsewhere {
            recon_id: recon.recon_id,
        });
    }
    state
        .put_status(
            program,
            date,
            &serde_json::json!({
                "status": PipelineStatus::Matching,
                "program_id": program,
                "file_date": date,
                "recon_id": recon.recon_id,
            }),
        )
        .await?;
    Ok(Settled::Ready {
        shards: (0..recon.shard_count).collect(),
        recon,
        run_id,
    })
}

#[cfg(test)]
mod tests;
