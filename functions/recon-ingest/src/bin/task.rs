//! The container entry point: large files, as an ECS Fargate task. The task
//! comes in `TALLY_INGEST_TASK` (JSON, set by the state machine's container
//! override). Exit 0 when the file was applied or rejected (the outcome is
//! stored for the settle step); exit 1 on an error, which fails the ECS task
//! so that the state machine retries it, resuming from the checkpoint.
use recon_ingest::aws::AwsIngest;
use recon_ingest::IngestTask;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tally_aws::config::init_logging();
    let task = match std::env::var("TALLY_INGEST_TASK")
        .map_err(|_| "TALLY_INGEST_TASK must be set".to_owned())
        .and_then(|t| {
            serde_json::from_str::<IngestTask>(&t).map_err(|e| format!("TALLY_INGEST_TASK: {e}"))
        }) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = "InvalidInput", message = %e, "bad task");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match AwsIngest::from_env().await {
        Ok(engine) => engine.run(task).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = e.name, message = %e.message, "ingest failed");
            std::process::ExitCode::FAILURE
        }
    }
}
