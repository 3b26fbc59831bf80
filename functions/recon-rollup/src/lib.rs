//! The rollup step: once every shard's summary is in, one report per
//! program and date.
//!
//! The completion watermark is the count of stored summaries of this
//! reconciliation: fewer than `shard_count` is `ReconIncomplete`, which the
//! state machine retries; it never rolls up "whatever is there". The report
//! and the exceptions CSV go to `reports/<program>/<date>/s<S>-i<I>/` (the
//! reconciliation's own, never overwritten by a later one) and, copied, to
//! `reports/<program>/<date>/` (the day's latest), the status
//! record says `RECONCILED`, `bank.recon.reconciliation_completed` goes on
//! the bus, and an alarm goes out when the breaks exceed the tolerance or
//! the control totals disagree. Every write overwrites with what the same
//! summaries give, so a retried rollup changes nothing.
//!
//! The same function records a failed execution (`failure` input): status
//! `FAILED` with the cause, and an alarm.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_aws::config::{bounded, ConfigError};
use tally_aws::handler_error::HandlerError;
use tally_aws::ports::{Blobs, Patch, Publisher, ReconState, RunStore, Transition};
use tally_aws::runs::cause as run_cause;
use tally_aws::StoreError;
use tally_domain::errors;
use tally_domain::recon::pipeline::{PipelineStatus, Recon, RECONCILIATION_COMPLETED};
use tally_domain::recon::rollup::{exceptions_csv, rollup, ReportStatus, RollupError};
use tally_domain::recon::ObjectKey;
use tally_domain::run::{recon_key, RunStatus};

#[derive(Debug, Clone)]
pub struct Config {
    /// Exceptions tolerated before an alarm (`RECON_ALARM_BREAKS_MAX`, default 0).
    pub breaks_max: u64,
    /// Net difference tolerated per currency, major units
    /// (`RECON_ALARM_DIFFERENCE_MAX`, default 0).
    pub difference_max: Decimal,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        let difference_max = match std::env::var("RECON_ALARM_DIFFERENCE_MAX") {
            Ok(v) if !v.trim().is_empty() => tally_domain::money::parse_decimal(v.trim())
                .ok()
                .filter(|d| !d.is_sign_negative())
                .ok_or_else(|| {
                    ConfigError(format!(
                        "RECON_ALARM_DIFFERENCE_MAX=`{v}`: expected a non-negative decimal"
                    ))
                })?,
            _ => Decimal::ZERO,
        };
        Ok(Config {
            breaks_max: bounded("RECON_ALARM_BREAKS_MAX", 0, 0, u64::MAX)?,
            difference_max,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Failure {
    pub object: serde_json::Value,
    pub error: serde_json::Value,
    /// The execution's state when it failed (its `inspect.result.run_id`
    /// names its run, once Inspect joined one).
    #[serde(default)]
    pub state: serde_json::Value,
}

/// `{"recon": …}` to roll up, or `{"failure": …}` to record a failed
/// execution. (A struct, not an untagged enum: serde's untagged enums cannot
/// carry the u128 control totals.)
#[derive(Debug, Clone, Deserialize)]
pub struct RollupInput {
    #[serde(default)]
    pub recon: Option<Recon>,
    #[serde(default)]
    pub failure: Option<Failure>,
    /// The reconciliation run to end (null for an execution started without one).
    #[serde(default)]
    pub run_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledUp {
    pub recon_id: String,
    pub status: ReportStatus,
    pub exceptions: u64,
    pub report_key: String,
    pub alarmed: bool,
    /// Transactions by status over all currencies (the metrics).
    #[serde(default)]
    pub counts: std::collections::BTreeMap<String, u64>,
    /// Its versions were still the day's accepted ones when it rolled up.
    #[serde(default)]
    pub current: bool,
}

/// The reconciliation's own report: each pair of side versions has its
/// own, so a later reconciliation of the day never overwrites an earlier
/// one's (its run's report stays what that run found).
pub fn report_key(r: &Recon) -> String {
    Recon::report_key(
        &r.program_id,
        r.file_date,
        r.settlement_version,
        r.internal_version,
    )
}

pub fn exceptions_key(r: &Recon) -> String {
    let dir = Recon::report_dir(
        &r.program_id,
        r.file_date,
        r.settlement_version,
        r.internal_version,
    );
    format!("{dir}/exceptions.csv")
}

/// The day's latest report: a copy of the last reconciliation's.
pub fn latest_report_key(program_id: &str, file_date: chrono::NaiveDate) -> String {
    format!("reports/{program_id}/{file_date}/report.json")
}

pub fn latest_exceptions_key(program_id: &str, file_date: chrono::NaiveDate) -> String {
    format!("reports/{program_id}/{file_date}/exceptions.csv")
}

pub async fn handle<R: ReconState, B: Blobs, A: Publisher, U: RunStore>(
    state: &R,
    blobs: &B,
    bus: &A,
    runs: &U,
    cfg: &Config,
    input: RollupInput,
) -> Result<Option<RolledUp>, HandlerError> {
    match input {
        RollupInput {
            recon: Some(recon),
            failure: None,
            run_id,
        } => {
            let r = roll_up(state, blobs, bus, cfg, recon).await?;
            if let Some(run_id) = run_id {
                end_run(runs, &run_id, &r).await?;
            }
            Ok(Some(r))
        }
        RollupInput {
            recon: None,
            failure: Some(failure),
            ..
        } => {
            record_failure(state, bus, runs, failure).await?;
            Ok(None)
        }
        _ => Err(HandlerError::invalid_input(
            "rollup input: expected exactly one of `recon` and `failure`",
        )),
    }
}

pub async fn roll_up<R: ReconState, B: Blobs, A: Publisher>(
    state: &R,
    blobs: &B,
    bus: &A,
    cfg: &Config,
    recon: Recon,
) -> Result<RolledUp, HandlerError> {
    let (program, date) = (recon.program_id.as_str(), recon.file_date);
    let summaries = state.summaries(program, date, &recon.recon_id).await?;
    if summaries.len() < recon.shard_count as usize {
        return Err(HandlerError {
            name: errors::RECON_INCOMPLETE,
            message: format!(
                "{}: {} of {} shard summaries in",
                recon.recon_id,
                summaries.len(),
                recon.shard_count
            ),
        });
    }
    let trailer = recon.control.unwrap_or_default();
    let report = rollup(summaries, &trailer).map_err(|e| match e {
        RollupError::Incomplete { .. } => HandlerError {
            name: errors::RECON_INCOMPLETE,
            message: e.to_string(),
        },
        other => StoreError::Permanent(format!("{}: {other}", recon.recon_id)).into(),
    })?;
    let json =
        serde_json::to_vec(&report).map_err(|e| StoreError::Permanent(format!("report: {e}")))?;
    let key = report_key(&recon);
    let csv = exceptions_csv(&report).into_bytes();
    // Whether these are still the day's accepted versions: a reconciliation
    // that a newer side overtook while it matched keeps its own report, but
    // does not become the day's latest or its status.
    let (settlement, internal) = state.manifests(program, date).await?;
    let current = Recon::id(
        program,
        date,
        settlement.map_or(0, |m| m.version),
        internal.map_or(0, |m| m.version),
    ) == recon.recon_id;
    // Its own first, then the day's latest: a rollup that dies between them
    // is retried and writes both again.
    blobs.put(&key, json.clone(), "application/json").await?;
    blobs
        .put(&exceptions_key(&recon), csv.clone(), "text/csv")
        .await?;
    if current {
        blobs
            .put(&latest_report_key(program, date), json, "application/json")
            .await?;
        blobs
            .put(&latest_exceptions_key(program, date), csv, "text/csv")
            .await?;
    }
    let exceptions = report.exceptions.len() as u64;
    let over_difference = report
        .currencies
        .iter()
        .any(|c| c.difference.abs() > cfg.difference_max);
    let alarm = exceptions > cfg.breaks_max || over_difference || !report.control_totals_agree;
    let detail = serde_json::json!({
        "schema_version": "1",
        "program_id": program,
        "file_date": date,
        "recon_id": recon.recon_id,
        "status": report.status,
        "control_totals_agree": report.control_totals_agree,
        "exceptions": exceptions,
        "currencies": report.currencies,
        "report_key": key,
    });
    if current {
        state
            .put_status(
                program,
                date,
                &serde_json::json!({
                    "status": PipelineStatus::Reconciled,
                    "program_id": program,
                    "file_date": date,
                    "recon_id": recon.recon_id,
                    "report_status": report.status,
                    "exceptions": exceptions,
                    "report_key": key,
                }),
            )
            .await?;
    }
    bus.put_event(RECONCILIATION_COMPLETED, &detail).await?;
    if alarm {
        bus.alarm(
            &format!("Tally: {program} {date} reconciliation has breaks"),
            &format!(
                "{program} {date} ({}): {exceptions} exceptions (tolerated {}), control totals {}; report at {key}",
                recon.recon_id,
                cfg.breaks_max,
                if report.control_totals_agree { "agree" } else { "DISAGREE" }
            ),
        )
        .await?;
    }
    let mut counts = std::collections::BTreeMap::new();
    for c in &report.currencies {
        for (k, v) in [
            ("MATCHED", c.matched),
            ("MISMATCHED", c.mismatched),
            ("UNMATCHED_SETTLEMENT", c.unmatched_settlement),
            ("UNMATCHED_INTERNAL", c.unmatched_internal),
        ] {
            *counts.entry(k.to_owned()).or_insert(0) += v;
        }
    }
    Ok(RolledUp {
        recon_id: recon.recon_id,
        status: report.status,
        exceptions,
        report_key: key,
        alarmed: alarm,
        counts,
        current,
    })
}

/// The run ends `SUCCESS` with the report's figures. A run canceled while
/// the report was being written stays `CANCELED` (the report is written,
/// and says what it says; the operator's word on the run stands).
async fn end_run<U: RunStore>(runs: &U, run_id: &str, r: &RolledUp) -> Result<(), HandlerError> {
    let mut counts = r.counts.clone();
    counts.insert("EXCEPTIONS".into(), r.exceptions);
    let patch = Patch {
        counts,
        report_key: Some(r.report_key.clone()),
        ..Patch::default()
    };
    let now = chrono::Utc::now();
    match runs
        .transition(run_id, RunStatus::Success, now, &patch)
        .await?
    {
        // Two reconciliations ran in one run (a newer side joined it while
        // the first matched): the day's current one names the run's report,
        // whichever rolled up first.
        Transition::AlreadyThere if r.current => {
            runs.amend(run_id, RunStatus::Success, now, &patch).await?;
        }
        Transition::Applied | Transition::AlreadyThere | Transition::Missing => {}
        Transition::Refused(st) => {
            tracing::warn!(run_id, status = %st, "reconciled, but the run had already ended")
        }
    }
    Ok(())
}

async fn record_failure<R: ReconState, A: Publisher, U: RunStore>(
    state: &R,
    bus: &A,
    runs: &U,
    failure: Failure,
) -> Result<(), HandlerError> {
    let key = failure.object["key"].as_str().unwrap_or_default();
    let cause = failure.error["Cause"]
        .as_str()
        .or_else(|| failure.error["cause"].as_str())
        .unwrap_or("unknown")
        .to_owned();
    let error = failure.error["Error"]
        .as_str()
        .unwrap_or("unknown")
        .to_owned();
    if let Ok(k) = ObjectKey::parse(key) {
        state
            .put_status(
                &k.program_id,
                k.file_date,
                &serde_json::json!({
                    "status": PipelineStatus::Failed,
                    "program_id": k.program_id,
                    "file_date": k.file_date,
                    "key": key,
                    "error": error,
                    "cause": cause,
                }),
            )
            .await?;
        // The execution's own run fails with it (not whichever attempt is
        // current: a late failure of an old execution leaves a later one be).
        let own = failure.state["inspect"]["result"]["run_id"].as_str();
        if let Some(run) = match own {
            Some(id) => runs.get(id).await?,
            None => None,
        }
        .filter(|r| {
            !r.status.is_terminal() && r.business_key == recon_key(&k.program_id, k.file_date)
        }) {
            let patch = Patch {
                cause: Some(run_cause(&error, format!("{key}: {cause}"))),
                ..Patch::default()
            };
            runs.transition(&run.run_id, RunStatus::Failure, chrono::Utc::now(), &patch)
                .await?;
        }
    }
    bus.alarm(
        &format!("Tally: reconciliation of {key} failed"),
        &format!("{key}: {error}: {cause}"),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
