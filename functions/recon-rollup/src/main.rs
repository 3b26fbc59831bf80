use lambda_runtime::{service_fn, Error, LambdaEvent};
use recon_rollup::{handle, Config, RollupInput};
use tally_aws::config;
use tally_aws::handler_error::HandlerError;
use tally_aws::publish::AwsPublisher;
use tally_aws::recon::{DynamoReconState, S3Blobs};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tally_aws::config::init_logging();
    let cfg = Config::from_env()?;
    let sdk = config::aws().await;
    let s3 = config::s3_client(&sdk);
    let bucket = config::required("LANDING_BUCKET")?;
    let state = DynamoReconState::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        s3.clone(),
        config::required("RECON_STATE_TABLE")?,
        bucket.clone(),
    );
    let blobs = S3Blobs { client: s3, bucket };
    let bus = AwsPublisher {
        events: aws_sdk_eventbridge::Client::new(&sdk),
        sns: aws_sdk_sns::Client::new(&sdk),
        event_bus_name: config::required("EVENT_BUS_NAME")?,
        alarm_topic_arn: config::required("ALARM_TOPIC_ARN")?,
        source: tally_domain::recon::pipeline::EVENT_SOURCE,
    };
    let runs = tally_aws::runs::DynamoRuns::from_env(aws_sdk_dynamodb::Client::new(&sdk))?;
    let (state, blobs, bus, runs, cfg) = (&state, &blobs, &bus, &runs, &cfg);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let input: RollupInput = serde_json::from_value(event.payload)
                .map_err(|e| HandlerError::invalid_input(format!("rollup input: {e}")))?;
            let out = handle(state, blobs, bus, runs, cfg, input).await?;
            if let Some(r) = &out {
                use tally_aws::emf::{names, Metrics};
                for (status, n) in &r.counts {
                    Metrics::new("recon-rollup")
                        .dimension("Status", status)
                        .count(names::RECON_RECORDS, *n)
                        .property("run_id", r.recon_id.as_str())
                        .emit();
                }
            }
            Ok::<_, HandlerError>(out)
        },
    ))
    .await
}
