//! Ingest of one landed reconciliation file (a settlement file or internal
//! records): validate the whole file, then apply its records, sharded, to the
//! record store. One engine, two entry points: the Lambda (small files) and
//! the container task (large files) both call [`ingest`].
//!
//! # How a file is taken in
//!
//! 1. **Validate, whole file, before writing anything.** The object is read
//!    as a stream, line by line (a line longer than a record is refused
//!    without being read whole), through the domain's streaming reader, which
//!    checks every rule of the format, the record sequence and the control
//!    totals. Duplicate transaction ids are found with 8-byte fingerprints;
//!    if any fingerprint repeats, a second streamed pass confirms the
//!    duplicate exactly. A fault anywhere, even on the last line, rejects the
//!    file with nothing applied.
//! 2. **Apply, resumably.** A second stream, from the last checkpoint's byte
//!    offset, turns each record into a normalised item keyed
//!    `ProgramID#FileDate#ShardN` / transaction id, written as plain puts in
//!    `BatchWriteItem` chunks of 25, `write_concurrency` chunks in flight.
//!    After every `checkpoint_records` records, once all their writes are
//!    acknowledged, the checkpoint (byte offset, next line, records applied)
//!    is saved. A retried or restarted ingest of the same object version
//!    (same ETag) starts from there: puts are idempotent, so a chunk written
//!    twice is still one set of records, and the count never double counts.
//!
//! Memory: one line buffer, one chunk of `checkpoint_records` items, and the
//! validator's 8 bytes per record for duplicate detection.

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tally_aws::config::{bounded, switch, ConfigError};
use tally_aws::handler_error::HandlerError;
use tally_aws::ports::{
    Checkpoint, FaultSwitch, IngestProgress, ObjectRef, ObjectSource, Publisher, Quarantine,
    ReconState, RecordSink, StoredTxn,
};
use tally_aws::StoreError;
use tally_domain::recon::internal::{self, InternalReader};
use tally_domain::recon::matching::ControlSums;
use tally_domain::recon::pipeline::{ingest_id, PipelineStatus};
use tally_domain::recon::settlement::{self, SettlementReader};
use tally_domain::recon::shard::{check_shard_count, recon_shard, shard_key};
use tally_domain::recon::{ObjectKey, Rejection, Side, Txn};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// The longest line accepted: a 200-byte record and `\r\n` (settlement), or
/// an internal CSV row, which is far shorter.
pub const LINE_BYTES_MAX: usize = 512;
/// Records per `BatchWriteItem`.
pub const BATCH_RECORDS: usize = 25;

#[derive(Debug, Clone)]
pub struct Config {
    /// `RECON_SHARD_COUNT` (1–1024, default 64).
    pub shard_count: u32,
    /// `BatchWriteItem` calls in flight (1–32, default 8).
    pub write_concurrency: usize,
    /// Records between checkpoints (25–100,000, default 5,000).
    pub checkpoint_records: usize,
    /// Whether the test-only fault switch in a task is honoured.
    pub fault_injection: bool,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        let shard_count = bounded("RECON_SHARD_COUNT", 64, 1, 1024)?;
        check_shard_count(shard_count).map_err(|e| ConfigError(e.to_string()))?;
        Ok(Config {
            shard_count,
            write_concurrency: bounded("RECON_WRITE_CONCURRENCY", 8, 1, 32)?,
            checkpoint_records: bounded("RECON_CHECKPOINT_RECORDS", 5_000, 25, 100_000)?,
            fault_injection: switch("TALLY_FAULT_INJECTION")?,
        })
    }
}

/// Test-only: stop the ingest with a transient error once this many records
/// have been applied, `failures` times across retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestFault {
    pub fail_after_records: u64,
    pub failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestTask {
    pub object: ObjectRef,
    /// Internal records: the version their rows are stored under (assigned
    /// when the object was inspected). Settlement files carry their own (the
    /// header's file sequence).
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(default)]
    pub fault: Option<IngestFault>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IngestOutcome {
    Applied {
        side: Side,
        program_id: String,
        file_date: chrono::NaiveDate,
        version: u64,
        records: u64,
        /// Where this attempt started (0 for a fresh ingest).
        resumed_from_record: u64,
        write_retries: u64,
        /// The file's own control totals, from its trailer (settlement only).
        control: Option<ControlSums>,
    },
    Rejected {
        side: Option<Side>,
        reason: Rejection,
    },
}

/// Reads one line of at most `LINE_BYTES_MAX` bytes into `buf` (without its
/// `\n`). `Ok(None)` at the end of the stream; `Ok(Some(n))` with `n` the
/// bytes consumed (line end included). An overlong line is returned cut at
/// `LINE_BYTES_MAX + 1` bytes, which no parser accepts.
async fn next_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<u64>, StoreError> {
    buf.clear();
    let n = r
        .take(LINE_BYTES_MAX as u64 + 1)
        .read_until(b'\n', buf)
        .await
        .map_err(|e| StoreError::Transient(format!("reading the object: {e}")))?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Ok(Some(n as u64))
}

enum Summary {
    Settlement(settlement::FileSummary),
    Internal(internal::InternalSummary),
}

/// Pass 1: the whole file through the streaming validator (and, when a
/// fingerprint repeats, the exact duplicate check).
async fn validate<S: ObjectSource>(
    src: &S,
    obj: &ObjectRef,
    key: &ObjectKey,
) -> Result<Result<Summary, Rejection>, StoreError> {
    let mut r = src.open(obj, 0).await?;
    let mut buf = Vec::with_capacity(LINE_BYTES_MAX + 1);
    let summary = match key.side {
        Side::Settlement => {
            let mut reader = SettlementReader::new(key);
            while next_line(&mut r, &mut buf).await?.is_some() {
                if let Err(rej) = reader.push(&buf) {
                    return Ok(Err(rej));
                }
            }
            match reader.finish() {
                Ok(s) => Summary::Settlement(s),
                Err(rej) => return Ok(Err(rej)),
            }
        }
        Side::Internal => {
            let mut reader = InternalReader::new(key);
            while next_line(&mut r, &mut buf).await?.is_some() {
                if let Err(rej) = reader.push(&buf) {
                    return Ok(Err(rej));
                }
            }
            match reader.finish() {
                Ok(s) => Summary::Internal(s),
                Err(rej) => return Ok(Err(rej)),
            }
        }
    };
    let mut check = match &summary {
        Summary::Settlement(s) => s.duplicate_check(),
        Summary::Internal(s) => s.duplicate_check(),
    };
    if !check.is_empty() {
        let mut r = src.open(obj, 0).await?;
        let mut line_no = 0;
        while next_line(&mut r, &mut buf).await?.is_some() {
            line_no += 1;
            let id = match (key.side, line_no) {
                (Side::Settlement, _) if buf.first() == Some(&b'D') => {
                    settlement::parse_detail(&buf, line_no).map(|d| d.txn.transaction_id)
                }
                (Side::Internal, n) if n > 1 => {
                    internal::parse_row(&buf, line_no).map(|t| t.transaction_id)
                }
                _ => continue,
            };
            // Validated above, so parsing cannot fail here.
            let id = id.map_err(|e| StoreError::Permanent(format!("re-reading: {e}")))?;
            if let Err(rej) = check.check(line_no, &id) {
                return Ok(Err(rej));
            }
        }
    }
    Ok(Ok(summary))
}

/// What happens to a rejected file: a copy under `rejected/` with the reason
/// (line, field, expected, found) beside it, and an alarm. A file rejected
/// for an unmasked PAN gets the reason but no copy. Idempotent: a retry
/// copies and alarms again, which is harmless.
pub async fn quarantine<Q: Quarantine, A: Publisher>(
    q: &Q,
    alarms: &A,
    obj: &ObjectRef,
    reason: &Rejection,
) -> Result<(), HandlerError> {
    // A file rejected for an unmasked card number is not copied: the copy
    // would be one more place holding a full PAN. The reason says so.
    let copy = reason.field != "masked PAN" && reason.field != "masked_pan";
    let reason_json = serde_json::json!({
        "key": obj.key,
        "etag": obj.etag,
        "status": "REJECTED",
        "reason": reason,
        "copied": copy,
        "note": if copy { "" } else { "no copy: the file holds a card number that is not masked; delete the original" },
    });
    q.reject(obj, &reason_json.to_string(), copy).await?;
    alarms
        .alarm(
            &format!("Tally: settlement file rejected: {}", obj.key),
            &format!("{} was rejected and nothing of it was applied: {reason}. A copy and the reason are under rejected/{}.", obj.key, obj.key),
        )
        .await?;
    Ok(())
}

/// After an ingest: a rejected file is quarantined (with an alarm) and its
/// program and date marked `REJECTED` with the reason; then the outcome is
/// stored under the ingest's id (`version`: the task's, which internal
/// records' ids include), where the settle step reads it (the
/// container branch returns nothing to the state machine). Every write
/// overwrites with the same value, so a retry is harmless.
pub async fn record_outcome<R: ReconState, Q: Quarantine, A: Publisher>(
    state: &R,
    q: &Q,
    alarms: &A,
    obj: &ObjectRef,
    version: Option<u64>,
    outcome: &IngestOutcome,
) -> Result<(), HandlerError> {
    if let IngestOutcome::Rejected { reason, side } = outcome {
        quarantine(q, alarms, obj, reason).await?;
        if let Ok(k) = ObjectKey::parse(&obj.key) {
            state
                .put_status(
                    &k.program_id,
                    k.file_date,
                    &serde_json::json!({
                        "status": PipelineStatus::Rejected,
                        "program_id": k.program_id,
                        "file_date": k.file_date,
                        "side": side,
                        "key": obj.key,
                        "reason": reason,
                        "rejected_copy": format!("rejected/{}", obj.key),
                    }),
                )
                .await?;
        }
    }
    let id = ingest_id(&obj.key, &obj.etag, version);
    let json = serde_json::to_value(outcome)
        .map_err(|e| StoreError::Permanent(format!("ingest outcome: {e}")))?;
    state.put_outcome(&id, &json).await?;
    Ok(())
}

/// Validates the file, then applies its records from the last checkpoint.
/// Every write retry this attempt makes is added to `retries` as it is made,
/// so an attempt that fails still shows what it cost.
pub async fn ingest<S, K, P, F>(
    src: &S,
    sink: &K,
    progress: &P,
    faults: &F,
    cfg: &Config,
    task: IngestTask,
    retries: &AtomicU64,
) -> Result<IngestOutcome, HandlerError>
where
    S: ObjectSource,
    K: RecordSink,
    P: IngestProgress,
    F: FaultSwitch,
{
    let obj = &task.object;
    let key = match ObjectKey::parse(&obj.key) {
        Ok(k) => k,
        Err(e) => {
            return Ok(IngestOutcome::Rejected {
                side: None,
                reason: Rejection {
                    line: 0,
                    field: "object key".into(),
                    expected: e,
                    found: obj.key.clone(),
                },
            })
        }
    };
    let summary = match validate(src, obj, &key).await? {
        Ok(s) => s,
        Err(reason) => {
            return Ok(IngestOutcome::Rejected {
                side: Some(key.side),
                reason,
            })
        }
    };
    let (version, control) = match &summary {
        Summary::Settlement(s) => (
            s.header.file_sequence,
            Some(ControlSums {
                details: s.trailer.detail_count,
                debit_total_minor: s.trailer.debit_total_minor,
                credit_total_minor: s.trailer.credit_total_minor,
                fee_total_minor: s.trailer.fee_total_minor,
            }),
        ),
        Summary::Internal(_) => (task.version.unwrap_or(0), None),
    };
    let id = ingest_id(&obj.key, &obj.etag, task.version);
    let fault = task.fault.clone().filter(|_| cfg.fault_injection);
    let start = progress.checkpoint(&id).await?.unwrap_or(Checkpoint {
        offset_bytes: 0,
        next_line: 1,
        records_applied: 0,
    });
    let mut r = src.open(obj, start.offset_bytes).await?;
    let mut buf = Vec::with_capacity(LINE_BYTES_MAX + 1);
    let mut chunk: Vec<StoredTxn> = Vec::with_capacity(cfg.checkpoint_records);
    // Where the next line starts; the checkpoint is saved at this cursor
    // once every record before it is written.
    let (mut offset, mut line_no) = (start.offset_bytes, start.next_line);
    let mut applied = start.records_applied;
    loop {
        let consumed = next_line(&mut r, &mut buf).await?;
        if let Some(n) = consumed {
            if let Some(rec) = to_record(&key, &buf, line_no, version, cfg.shard_count)? {
                chunk.push(rec);
            }
            offset += n;
            line_no += 1;
        }
        if chunk.len() < cfg.checkpoint_records && consumed.is_some() {
            continue;
        }
        write_chunk(sink, key.side, &chunk, cfg, retries).await?;
        applied += chunk.len() as u64;
        chunk.clear();
        progress
            .save_checkpoint(
                &id,
                Checkpoint {
                    offset_bytes: offset,
                    next_line: line_no,
                    records_applied: applied,
                },
            )
            .await?;
        if consumed.is_none() {
            break;
        }
        if let Some(f) = &fault {
            if applied >= f.fail_after_records && faults.trip(&id, 0, f.failures).await? {
                return Err(StoreError::Transient(format!(
                    "injected fault: ingest stopped after {applied} records"
                ))
                .into());
            }
        }
    }
    Ok(IngestOutcome::Applied {
        side: key.side,
        program_id: key.program_id.clone(),
        file_date: key.file_date,
        version,
        records: applied,
        resumed_from_record: start.records_applied,
        write_retries: retries.load(Ordering::Relaxed),
        control,
    })
}

/// One validated line as a stored record; `None` for a header, trailer or
/// the CSV header line.
fn to_record(
    key: &ObjectKey,
    line: &[u8],
    line_no: u64,
    version: u64,
    shard_count: u32,
) -> Result<Option<StoredTxn>, StoreError> {
    // The file passed validation, so a parse error here means the object
    // changed under us (its ETag is checked on open) or a bug: stop.
    let reparse = |e: Rejection| StoreError::Permanent(format!("re-reading a validated file: {e}"));
    let (txn, fee): (Txn, _) = match key.side {
        Side::Settlement => {
            if line.first() != Some(&b'D') {
                return Ok(None);
            }
            let d = settlement::parse_detail(line, line_no).map_err(reparse)?;
            (d.txn, Some((d.fee, d.fee_sign)))
        }
        Side::Internal => {
            if line_no == 1 {
                return Ok(None);
            }
            (internal::parse_row(line, line_no).map_err(reparse)?, None)
        }
    };
    let shard = recon_shard(&txn.transaction_id, shard_count);
    Ok(Some(StoredTxn {
        pk: shard_key(&key.program_id, key.file_date, shard),
        txn,
        line: line_no,
        version,
        fee,
    }))
}

/// Writes one chunk in `BatchWriteItem`s of 25, `write_concurrency` at once.
/// Returns the retries the sink needed.
async fn write_chunk<K: RecordSink>(
    sink: &K,
    side: Side,
    chunk: &[StoredTxn],
    cfg: &Config,
    retries: &AtomicU64,
) -> Result<(), StoreError> {
    // After a batch fails no new one starts, but those in flight finish:
    // none is cut off between a call and its answer, and every retry they
    // make is counted.
    let failed = AtomicBool::new(false);
    let mut done = futures::stream::iter(chunk.chunks(BATCH_RECORDS))
        .take_while(|_| std::future::ready(!failed.load(Ordering::Relaxed)))
        .map(|batch| async {
            let r = sink.put_records(side, batch, retries).await;
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            r
        })
        .buffer_unordered(cfg.write_concurrency);
    let mut first_error = None;
    while let Some(r) = done.next().await {
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

pub mod aws;

#[cfg(test)]
mod tests;
