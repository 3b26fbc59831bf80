//! Reconciliation helpers shared by the recon tests, the fault suite and the
//! benchmarks: objects staged where nothing is notified, and executions
//! started directly under names of the caller's own.

use std::path::Path;
use tally_cli::recon::Recon;

/// A bucket without notifications: objects staged there start nothing by
/// themselves, so a caller's own executions are the only ones.
pub const STAGING: &str = "tally-it-staging";

/// Uploads `file` to the staging bucket under a landing key for `side`,
/// `program` and `date`; returns the key.
pub async fn stage(r: &Recon, side: &str, program: &str, date: &str, file: &Path) -> String {
    let _ = r.s3.create_bucket().bucket(STAGING).send().await;
    let ext = if side == "settlement" { "dat" } else { "csv" };
    let key = format!("{side}/{program}/{date}/staged.{ext}");
    r.s3.put_object()
        .bucket(STAGING)
        .key(&key)
        .body(
            aws_sdk_s3::primitives::ByteStream::from_path(file)
                .await
                .expect("a staged file"),
        )
        .send()
        .await
        .expect("staging upload");
    key
}

/// The upload time [`start_direct`] gives (the internal records' version).
pub const STAGED_UPLOADED_AT_MS: u64 = 1_700_000_000_000;

/// Starts the reconciliation of a staged object as the trigger would, with
/// `extra` fields merged into the input (test-only: `large_file_bytes`,
/// `fault`), under execution `name`.
pub async fn start_direct(r: &Recon, key: &str, name: &str, extra: serde_json::Value) {
    let sdk = tally_aws::config::aws().await;
    let head =
        r.s3.head_object()
            .bucket(STAGING)
            .key(key)
            .send()
            .await
            .expect("the staged object");
    let mut input = serde_json::json!({
        "object": {
            "bucket": STAGING,
            "key": key,
            "etag": head.e_tag().unwrap_or_default().trim_matches('"'),
            "size_bytes": head.content_length().unwrap_or_default(),
        },
        "uploaded_at_ms": STAGED_UPLOADED_AT_MS,
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        input[k] = v.clone();
    }
    aws_sdk_sfn::Client::new(&sdk)
        .start_execution()
        .state_machine_arn(&r.stack.state_machine_arn)
        .name(name)
        .input(input.to_string())
        .send()
        .await
        .expect("StartExecution");
}

/// The recorded outcome of the ingest of a staged object.
pub async fn staged_outcome(r: &Recon, key: &str) -> serde_json::Value {
    use tally_aws::ports::ReconState;
    let etag =
        r.s3.head_object()
            .bucket(STAGING)
            .key(key)
            .send()
            .await
            .expect("the staged object")
            .e_tag()
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned();
    r.state
        .outcome(&tally_domain::recon::pipeline::ingest_id(
            key,
            &etag,
            key.starts_with("internal/")
                .then_some(STAGED_UPLOADED_AT_MS),
        ))
        .await
        .expect("the ingest's outcome")
        .unwrap_or_default()
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
