use lambda_runtime::{service_fn, Error, LambdaEvent};
use recon_match::{match_shard, MatchTask};
use tally_aws::config;
use tally_aws::handler_error::HandlerError;
use tally_aws::recon::{DynamoReconState, DynamoRecords};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tally_aws::config::init_logging();
    let sdk = config::aws().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let records = DynamoRecords::new(
        dynamo.clone(),
        config::required("SETTLEMENT_RECORDS_TABLE")?,
        config::required("INTERNAL_RECORDS_TABLE")?,
    );
    let state = DynamoReconState::new(
        dynamo,
        config::s3_client(&sdk),
        config::required("RECON_STATE_TABLE")?,
        config::required("LANDING_BUCKET")?,
    );
    let runs = tally_aws::runs::DynamoRuns::from_env(aws_sdk_dynamodb::Client::new(&sdk))?;
    let (records, state, runs) = (&records, &state, &runs);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let task: MatchTask = serde_json::from_value(event.payload)
                .map_err(|e| HandlerError::invalid_input(format!("match task: {e}")))?;
            let done = match_shard(records, state, runs, task).await?;
            tracing::info!(
                shard = done.shard,
                settlement = done.settlement_records,
                internal = done.internal_records,
                exceptions = done.exceptions,
                "shard matched"
            );
            Ok::<_, HandlerError>(done)
        },
    ))
    .await
}
