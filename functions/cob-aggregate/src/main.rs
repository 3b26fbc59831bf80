#![recursion_limit = "256"]
use cob_aggregate::{aggregate_run, AggregateEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use tally_aws::ports::RunStore;
use tally_aws::{config, handler_error::HandlerError, publish::AwsPublisher};
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tally_aws::config::init_logging();
    let sdk = config::aws().await;
    let publisher = AwsPublisher {
        events: aws_sdk_eventbridge::Client::new(&sdk),
        sns: aws_sdk_sns::Client::new(&sdk),
        event_bus_name: config::required("EVENT_BUS_NAME")?,
        alarm_topic_arn: config::required("ALARM_TOPIC_ARN")?,
        source: tally_domain::cob::EVENT_SOURCE,
    };
    let runs = tally_aws::runs::DynamoRuns::from_env(aws_sdk_dynamodb::Client::new(&sdk))?;
    let (publisher, runs) = (&publisher, &runs);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let event: AggregateEvent = serde_json::from_value(event.payload)
                .map_err(|e| HandlerError::invalid_input(format!("aggregate event: {e}")))?;
            let run_id = event
                .plan
                .as_ref()
                .map(|p| p.run_id.clone())
                .or_else(|| event.execution_name.clone())
                .unwrap_or_default();
            let span = tracing::info_span!("run", run_id);
            async move {
                let at = chrono::Utc::now();
                let out = aggregate_run(publisher, runs, event, at).await?;
                let started = match runs.get(&out.run_id).await {
                    Ok(r) => r.and_then(|r| r.started_at),
                    Err(_) => None,
                };
                cob_aggregate::metrics(&out, started, at).emit();
                Ok::<_, HandlerError>(out)
            }
            .instrument(span)
            .await
        },
    ))
    .await
}
