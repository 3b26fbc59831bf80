//! The Lambda entry point: small files.
use lambda_runtime::{service_fn, Error, LambdaEvent};
use recon_ingest::aws::AwsIngest;
use recon_ingest::IngestTask;
use tally_aws::handler_error::HandlerError;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tally_aws::config::init_logging();
    let engine = AwsIngest::from_env().await?;
    let engine = &engine;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let task: IngestTask = serde_json::from_value(event.payload)
                .map_err(|e| HandlerError::invalid_input(format!("ingest task: {e}")))?;
            engine.run(task).await
        },
    ))
    .await
}
