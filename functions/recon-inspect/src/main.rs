use lambda_runtime::{service_fn, Error, LambdaEvent};
use recon_inspect::{inspect, Config, InspectInput};
use tally_aws::config;
use tally_aws::handler_error::HandlerError;
use tally_aws::recon::{DynamoReconState, S3Objects};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tally_aws::config::init_logging();
    let cfg = Config::from_env()?;
    let sdk = config::aws().await;
    let s3 = config::s3_client(&sdk);
    let objects = S3Objects::new(s3.clone());
    let state = DynamoReconState::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        s3,
        config::required("RECON_STATE_TABLE")?,
        config::required("LANDING_BUCKET")?,
    );
    let runs = tally_aws::runs::DynamoRuns::from_env(aws_sdk_dynamodb::Client::new(&sdk))?;
    let (objects, state, runs, cfg) = (&objects, &state, &runs, &cfg);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let input: InspectInput = serde_json::from_value(event.payload)
                .map_err(|e| HandlerError::invalid_input(format!("inspect input: {e}")))?;
            inspect(objects, state, runs, cfg, input).await
        },
    ))
    .await
}
