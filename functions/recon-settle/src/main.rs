use lambda_runtime::{service_fn, Error, LambdaEvent};
use recon_settle::{settle, Config, SettleInput};
use tally_aws::config;
use tally_aws::handler_error::HandlerError;
use tally_aws::publish::AwsPublisher;
use tally_aws::recon::DynamoReconState;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tally_aws::config::init_logging();
    let cfg = Config::from_env()?;
    let sdk = config::aws().await;
    let state = DynamoReconState::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        config::s3_client(&sdk),
        config::required("RECON_STATE_TABLE")?,
        config::required("LANDING_BUCKET")?,
    );
    let alarms = AwsPublisher {
        events: aws_sdk_eventbridge::Client::new(&sdk),
        sns: aws_sdk_sns::Client::new(&sdk),
        event_bus_name: config::required("EVENT_BUS_NAME")?,
        alarm_topic_arn: config::required("ALARM_TOPIC_ARN")?,
        source: tally_domain::recon::pipeline::EVENT_SOURCE,
    };
    let runs = tally_aws::runs::DynamoRuns::from_env(aws_sdk_dynamodb::Client::new(&sdk))?;
    let (state, alarms, runs, cfg) = (&state, &alarms, &runs, &cfg);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let input: SettleInput = serde_json::from_value(event.payload)
                .map_err(|e| HandlerError::invalid_input(format!("settle input: {e}")))?;
            settle(state, alarms, runs, cfg, input).await
        },
    ))
    .await
}
