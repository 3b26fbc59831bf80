//! The match step: one shard of one reconciliation. Reads the shard's
//! records of both sides (each sorted by transaction id), merge-joins them,
//! and stores the shard's summary. Recomputed from the records every time,
//! so a retried or repeated match stores an equal summary.

use serde::{Deserialize, Serialize};
use tally_aws::handler_error::HandlerError;
use tally_aws::ports::{ReconState, RecordSource, RunStore};
use tally_aws::StoreError;
use tally_domain::errors;
use tally_domain::recon::matching::{try_merge_by_id, ShardSummary};
use tally_domain::recon::pipeline::Recon;
use tally_domain::recon::shard::shard_key;
use tally_domain::recon::Side;
use tally_domain::run::{RunStatus, UnitRecord};

#[derive(Debug, Clone, Deserialize)]
pub struct MatchTask {
    pub recon: Recon,
    pub shard: u32,
    /// The run to report the shard to (null: none).
    #[serde(default)]
    pub run_id: Option<String>,
}

/// Stops the shard with `RunCanceled` when its run was canceled.
async fn check_run<U: RunStore>(runs: &U, run_id: Option<&str>) -> Result<(), HandlerError> {
    let Some(run_id) = run_id else { return Ok(()) };
    match runs.get(run_id).await? {
        Some(r) if r.status == RunStatus::Canceled => Err(HandlerError {
            name: errors::RUN_CANCELED,
            message: format!("run {run_id} was canceled"),
        }),
        _ => Ok(()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matched {
    pub shard: u32,
    pub settlement_records: u64,
    pub internal_records: u64,
    pub exceptions: u64,
}

pub async fn match_shard<S: RecordSource, R: ReconState, U: RunStore>(
    records: &S,
    state: &R,
    runs: &U,
    task: MatchTask,
) -> Result<Matched, HandlerError> {
    let started_at = chrono::Utc::now();
    let t0 = std::time::Instant::now();
    let r = &task.recon;
    let run_id = task.run_id.as_deref();
    check_run(runs, run_id).await?;
    if task.shard >= r.shard_count {
        return Err(HandlerError::invalid_input(format!(
            "shard {} of {}",
            task.shard, r.shard_count
        )));
    }
    let pk = shard_key(&r.program_id, r.file_date, task.shard);
    let pk_ref = pk.as_str();
    let load = |side, version| async move {
        if version == 0 {
            // The side never arrived: nothing to read.
            Ok(Vec::new())
        } else {
            records.shard_records(side, pk_ref, version).await
        }
    };
    let settlement = load(Side::Settlement, r.settlement_version).await?;
    let internal = load(Side::Internal, r.internal_version).await?;
    let mut summary = ShardSummary::new(
        &r.program_id,
        r.file_date,
        r.settlement_version,
        task.shard,
        r.shard_count,
    );
    for s in &settlement {
        let (fee, _) = s.fee.ok_or_else(|| {
            StoreError::Permanent(format!(
                "settlement record {} has no fee",
                s.txn.transaction_id
            ))
        })?;
        summary
            .add_settlement_control(s.txn.amount, s.txn.sign, s.txn.currency, fee)
            .map_err(|e| StoreError::Permanent(e.to_string()))?;
    }
    let (n_s, n_i) = (settlement.len() as u64, internal.len() as u64);
    let pairs = try_merge_by_id(
        settlement.into_iter().map(|s| s.txn),
        internal.into_iter().map(|s| s.txn),
    );
    for pair in pairs {
        let (s, i) = pair.map_err(|e| StoreError::Permanent(format!("shard {pk}: {e}")))?;
        summary.add(s.as_ref(), i.as_ref());
    }
    let exceptions = summary.exceptions.len() as u64;
    // Canceled while reading: the summary is not written (a shard's only
    // write, so nothing of it is left half-done).
    check_run(runs, run_id).await?;
    state.put_summary(&r.recon_id, &summary).await?;
    if let Some(run_id) = run_id {
        let rec = UnitRecord {
            started_at,
            ended_at: chrono::Utc::now(),
            items: n_s + n_i,
            postings: 0,
            duration_ms: t0.elapsed().as_millis() as u64,
            outcome: "SUCCEEDED".into(),
        };
        runs.unit_done(run_id, &format!("s{}", task.shard), &rec)
            .await?;
    }
    Ok(Matched {
        shard: task.shard,
        settlement_records: n_s,
        internal_records: n_i,
        exceptions,
    })
}
