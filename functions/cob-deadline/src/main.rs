use cob_deadline::{check, DeadlineEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use tally_aws::handler_error::HandlerError;
use tally_aws::publish::AwsPublisher;
use tally_aws::{config, runs::DynamoRuns};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tally_aws::config::init_logging();
    let sdk = config::aws().await;
    let runs = DynamoRuns::from_env(aws_sdk_dynamodb::Client::new(&sdk))?;
    let publisher = AwsPublisher {
        events: aws_sdk_eventbridge::Client::new(&sdk),
        sns: aws_sdk_sns::Client::new(&sdk),
        event_bus_name: config::required("EVENT_BUS_NAME")?,
        alarm_topic_arn: config::required("ALARM_TOPIC_ARN")?,
        source: tally_domain::cob::EVENT_SOURCE,
    };
    let (runs, publisher) = (&runs, &publisher);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let event: DeadlineEvent = serde_json::from_value(event.payload)
                .map_err(|e| HandlerError::invalid_input(format!("deadline event: {e}")))?;
            let v = check(runs, publisher, event, chrono::Utc::now()).await?;
            use tally_aws::emf::{names, Metrics};
            let mut m = Metrics::new("cob-deadline")
                .dimension("Jurisdiction", &v.jurisdiction)
                .count(names::DEADLINE_MISSED, u64::from(v.alarm))
                .property("business_date", v.business_date.to_string());
            if let Some(id) = &v.run_id {
                m = m.property("run_id", id.as_str());
            }
            m.emit();
            Ok::<_, HandlerError>(v)
        },
    ))
    .await
}
