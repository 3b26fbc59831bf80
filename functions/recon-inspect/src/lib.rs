//! The inspect step: what a landed object is, and the ingest task both
//! branches of the state machine run. Reads only the object's first line
//! (the settlement header: its file sequence), never the whole object.

use serde::Deserialize;
use tally_aws::config::{bounded, ConfigError};
use tally_aws::handler_error::HandlerError;
use tally_aws::ports::{ObjectRef, ObjectSource, ReconState, RunStore};
use tally_aws::runs::join_recon_run;
use tally_domain::recon::pipeline::{ingest_id, Inspected, PipelineStatus};
use tally_domain::recon::settlement::parse_header;
use tally_domain::recon::{ObjectKey, Side};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

#[derive(Debug, Clone)]
pub struct Config {
    /// `RECON_LARGE_FILE_BYTES`: at or above it, the container ingests.
    pub large_file_bytes: u64,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Ok(Config {
            large_file_bytes: bounded("RECON_LARGE_FILE_BYTES", 50 * 1024 * 1024, 1, u64::MAX)?,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct InspectInput {
    pub object: ObjectRef,
    /// When the object was created (ms since the epoch, from its event):
    /// the version of internal records, so a later upload replaces an earlier one.
    #[serde(default)]
    pub uploaded_at_ms: u64,
    /// Test-only fault switch for the ingest, passed through.
    #[serde(default)]
    pub fault: Option<serde_json::Value>,
    /// Per-execution override of `RECON_LARGE_FILE_BYTES` (tests).
    #[serde(default)]
    pub large_file_bytes: Option<u64>,
    /// `{"id": $$.Execution.Id}`, added by the state machine's first state:
    /// the execution joins its program and date's run.
    #[serde(default)]
    pub execution: Option<ExecutionRef>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ExecutionRef {
    pub id: String,
}

pub async fn inspect<S: ObjectSource, R: ReconState, U: RunStore>(
    objects: &S,
    state: &R,
    runs: &U,
    cfg: &Config,
    input: InspectInput,
) -> Result<Inspected, HandlerError> {
    let obj = input.object;
    // A key that is not a landing key is rejected by the ingest, with the
    // reason quarantined like any other rejection; here it only needs a name.
    let key = ObjectKey::parse(&obj.key).ok();
    let mut file_sequence = None;
    if key.as_ref().is_some_and(|k| k.side == Side::Settlement) {
        let mut r = objects.open(&obj, 0).await?;
        let mut line = Vec::with_capacity(256);
        (&mut r)
            .take(256)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| tally_aws::StoreError::Transient(format!("reading {}: {e}", obj.key)))?;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        file_sequence = parse_header(&line, 1).ok().map(|h| h.file_sequence);
    }
    let (side, program_id, file_date) = match &key {
        Some(k) => (k.side, k.program_id.clone(), k.file_date),
        // Nothing to record a status under; the ingest rejects it.
        None => (Side::Settlement, String::new(), chrono::NaiveDate::MIN),
    };
    let version = (side == Side::Internal).then_some(input.uploaded_at_ms);
    let ingest_id = ingest_id(&obj.key, &obj.etag, version);
    if key.is_some() {
        state
            .put_status(
                &program_id,
                file_date,
                &serde_json::json!({
                    "status": PipelineStatus::Ingesting,
                    "program_id": program_id,
                    "file_date": file_date,
                    "side": side,
                    "key": obj.key,
                    "size_bytes": obj.size_bytes,
                }),
            )
            .await?;
    }
    let execution_id = input.execution.map(|e| e.id);
    let run_id = match (&key, &execution_id) {
        (Some(_), Some(arn)) => {
            let (run, new) = join_recon_run(runs, &program_id, file_date, Some(arn)).await?;
            tracing::info!(run_id = run.run_id, new, execution = %arn, "joined reconciliation run");
            Some(run.run_id)
        }
        _ => None,
    };
    Ok(Inspected {
        side,
        program_id,
        file_date,
        key: obj.key.clone(),
        ingest_id,
        size_bytes: obj.size_bytes,
        large_file_bytes: input.large_file_bytes.unwrap_or(cfg.large_file_bytes),
        file_sequence,
        ingest_task: serde_json::json!({
            "object": obj,
            "version": version,
            "fault": input.fault,
        }),
        run_id,
        execution_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_aws::memory::{MemoryObjects, MemoryReconState};
    use tally_aws::runs::MemoryRuns;
    use tally_domain::recon::sample::{self, SampleSpec};

    #[tokio::test]
    async fn a_settlement_file_is_inspected_from_its_header_and_routed_by_size() {
        let objects = MemoryObjects::default();
        let state = MemoryReconState::default();
        let mut spec = SampleSpec::new("ACME", "2026-11-20".parse().unwrap(), 50, 1);
        spec.file_sequence = 12;
        let obj = objects.put(
            "settlement/ACME/2026-11-20/v.dat",
            sample::settlement_file(&spec).into_bytes(),
        );
        let cfg = Config {
            large_file_bytes: 1_000,
        };
        let input = InspectInput {
            object: obj.clone(),
            uploaded_at_ms: 5,
            fault: None,
            large_file_bytes: None,
            execution: None,
        };
        let got = inspect(&objects, &state, &MemoryRuns::default(), &cfg, input)
            .await
            .unwrap();
        assert_eq!(got.file_sequence, Some(12));
        assert_eq!(got.large_file_bytes, 1_000);
        assert!(
            got.size_bytes >= got.large_file_bytes,
            "50 records are over 1,000 bytes"
        );
        assert_eq!(got.ingest_task["version"], serde_json::Value::Null);
        assert_eq!(got.ingest_task["object"]["etag"], obj.etag);
        let st = state
            .status("ACME", "2026-11-20".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(st["status"], "INGESTING");
        // Only the header was read: one open, from the start.
        assert_eq!(objects.opens(), vec![(obj.key.clone(), 0)]);
    }

    #[tokio::test]
    async fn internal_records_take_their_upload_time_as_version() {
        let objects = MemoryObjects::default();
        let state = MemoryReconState::default();
        let obj = objects.put("internal/ACME/2026-11-20/a.csv", b"x".to_vec());
        let input = InspectInput {
            object: obj,
            uploaded_at_ms: 1_763_600_000_000,
            fault: None,
            large_file_bytes: Some(7),
            execution: None,
        };
        let cfg = Config {
            large_file_bytes: 1_000,
        };
        let got = inspect(&objects, &state, &MemoryRuns::default(), &cfg, input)
            .await
            .unwrap();
        assert_eq!(got.ingest_task["version"], 1_763_600_000_000u64);
        assert_eq!(got.large_file_bytes, 7);
        assert!(objects.opens().is_empty(), "a CSV has no header to peek at");
    }

    #[tokio::test]
    async fn both_sides_of_a_day_join_one_run_and_a_landing_after_its_end_starts_the_next() {
        let objects = MemoryObjects::default();
        let state = MemoryReconState::default();
        let runs = MemoryRuns::default();
        let cfg = Config {
            large_file_bytes: 1_000,
        };
        let arn = |n: &str| format!("arn:aws:states:us-east-1:000000000000:execution:recon:{n}");
        let land = |key: &str, exec: &str| InspectInput {
            object: objects.put(key, b"x".to_vec()),
            uploaded_at_ms: 1,
            fault: None,
            large_file_bytes: None,
            execution: Some(ExecutionRef { id: arn(exec) }),
        };
        let a = inspect(
            &objects,
            &state,
            &runs,
            &cfg,
            land("internal/ACME/2026-11-20/a.csv", "e1"),
        )
        .await
        .unwrap();
        let b = inspect(
            &objects,
            &state,
            &runs,
            &cfg,
            land("internal/ACME/2026-11-20/b.csv", "e2"),
        )
        .await
        .unwrap();
        let run_id = a.run_id.clone().unwrap();
        assert_eq!(b.run_id.as_deref(), Some(run_id.as_str()));
        assert_eq!(a.execution_id, Some(arn("e1")));
        let r = runs.get(&run_id).await.unwrap().unwrap();
        assert_eq!(r.status, tally_domain::run::RunStatus::Executing);
        assert_eq!(r.business_key, "recon#ACME#2026-11-20");
        assert_eq!(
            r.executions.keys().cloned().collect::<Vec<_>>(),
            vec!["e1".to_string(), "e2".to_string()]
        );
        // A retried Inspect of the same execution joins again, changing nothing.
        inspect(
            &objects,
            &state,
            &runs,
            &cfg,
            land("internal/ACME/2026-11-20/b.csv", "e2"),
        )
        .await
        .unwrap();
        assert_eq!(
            runs.get(&run_id).await.unwrap().unwrap().executions.len(),
            2
        );
        use tally_aws::ports::{Patch, RunStore};
        runs.transition(
            &run_id,
            tally_domain::run::RunStatus::Success,
            chrono::Utc::now(),
            &Patch::default(),
        )
        .await
        .unwrap();
        let c = inspect(
            &objects,
            &state,
            &runs,
            &cfg,
            land("internal/ACME/2026-11-20/c.csv", "e3"),
        )
        .await
        .unwrap();
        assert_eq!(c.run_id.as_deref(), Some("recon-ACME-2026-11-20-a2"));
        // A key that names no program and date joins nothing.
        let bad = inspect(&objects, &state, &runs, &cfg, land("elsewhere/x", "e4"))
            .await
            .unwrap();
        assert_eq!(bad.run_id, None);
    }
}
