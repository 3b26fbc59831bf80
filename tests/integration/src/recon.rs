//! Reconciliation helpers shared by the recon tests, the fault suite and the
//! benchmarks: files landed where the bank's senders land them (the landing
//! bucket: S3 → EventBridge → SQS → recon-trigger starts the execution, as
//! on AWS), the executions the trigger started, the ingests' outcomes.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};
use tally_cli::recon::Recon;
use tally_domain::recon::Side;
use tally_domain::NaiveDate;

/// Lands `file` for `side`, `program` and `date` in the landing bucket;
/// returns its key. The trigger path starts its reconciliation.
pub async fn land(r: &Recon, side: Side, program: &str, date: &str, file: &Path) -> String {
    let date: NaiveDate = date.parse().expect("a date");
    r.upload(side, program, date, file)
        .await
        .expect("an upload to the landing bucket")
}

/// The execution the trigger started for the landed object at `key` (named
/// from its key and ETag), once it exists: (its ARN, its input).
pub async fn landed_execution(r: &Recon, key: &str) -> Result<(String, serde_json::Value)> {
    let head =
        r.s3.head_object()
            .bucket(&r.stack.landing_bucket)
            .key(key)
            .send()
            .await
            .with_context(|| format!("the landed object {key}"))?;
    let name = recon_trigger::execution_name(key, head.e_tag().unwrap_or_default());
    let arn = format!(
        "{}:{name}",
        r.stack
            .state_machine_arn
            .replace(":stateMachine:", ":execution:")
    );
    let sdk = tally_aws::config::aws().await;
    let sfn = aws_sdk_sfn::Client::new(&sdk);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match sfn.describe_execution().execution_arn(&arn).send().await {
            Ok(d) => {
                let input = serde_json::from_str(d.input().unwrap_or("{}"))?;
                return Ok((arn, input));
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => bail!("no execution {name} for {key} after 120 s: {e}"),
        }
    }
}

/// The id of the ingest of a landed object (the internal records' id
/// carries their upload time, from the trigger's input).
pub async fn landed_ingest_id(r: &Recon, key: &str) -> Result<String> {
    let (_, input) = landed_execution(r, key).await?;
    let etag = input["object"]["etag"].as_str().unwrap_or_default();
    let uploaded = input["uploaded_at_ms"].as_u64();
    Ok(tally_domain::recon::pipeline::ingest_id(
        key,
        etag,
        key.starts_with("internal/").then_some(uploaded).flatten(),
    ))
}

/// The recorded outcome of the ingest of a landed object (empty until it ends).
pub async fn landed_outcome(r: &Recon, key: &str) -> serde_json::Value {
    use tally_aws::ports::ReconState;
    let id = landed_ingest_id(r, key)
        .await
        .expect("the landed object's ingest");
    r.state
        .outcome(&id)
        .await
        .expect("the ingest's outcome")
        .unwrap_or_default()
}

/// Waits until the ingest of a landed object has saved a checkpoint of at
/// least `records` records; returns what it saved.
pub async fn wait_checkpoint(r: &Recon, key: &str, records: u64) -> Result<u64> {
    use tally_aws::ports::IngestProgress;
    let id = landed_ingest_id(r, key).await?;
    let progress = tally_aws::recon::DynamoProgress::new(
        aws_sdk_dynamodb::Client::new(&tally_aws::config::aws().await),
        &r.stack.state_table,
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(cp) = progress.checkpoint(&id).await? {
            if cp.records_applied >= records {
                return Ok(cp.records_applied);
            }
        }
        if Instant::now() > deadline {
            bail!("{key}: no checkpoint of {records} records within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// While it lives, every landed file goes down the container branch: the
/// Lambda host lays `RECON_LARGE_FILE_BYTES=1` over recon-inspect's
/// environment, as a redeploy with `ReconLargeFileBytes=1` would.
pub struct ContainerBranch(crate::local::Local);

impl ContainerBranch {
    pub async fn on() -> Result<ContainerBranch> {
        let local = crate::local::Local::from_env();
        local
            .set_environment(
                "recon-inspect",
                serde_json::json!({"RECON_LARGE_FILE_BYTES": "1"}),
            )
            .await?;
        Ok(ContainerBranch(local))
    }
}

impl Drop for ContainerBranch {
    fn drop(&mut self) {
        let local = self.0.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(local.set_environment("recon-inspect", serde_json::Value::Null))
        })
        .join();
    }
}

/// The metric lines recon-ingest printed since `since` for these object
/// keys, one an attempt (`attempt` is `failed` or `applied`), from the
/// Lambda and the container task alike.
pub fn ingest_attempts(
    since: chrono::DateTime<chrono::Utc>,
    keys: &[&str],
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    crate::function_log_lines(since)
        .expect("the local stack's function logs")
        .iter()
        .filter(|l| {
            l.get("_aws").is_some() && keys.contains(&l["object_key"].as_str().unwrap_or(""))
        })
        .map(|l| tally_aws::emf::parse_line(&l.to_string()).expect("an EMF line"))
        .collect()
}

/// The write retries those attempts reported, a failed attempt's too.
pub fn write_retries(attempts: &[serde_json::Map<String, serde_json::Value>]) -> u64 {
    attempts
        .iter()
        .filter_map(|m| m.get("ThrottledWriteRetries").and_then(|v| v.as_f64()))
        .sum::<f64>() as u64
}
