use lambda_runtime::{service_fn, Error, LambdaEvent};
use recon_trigger::{handle, SqsEvent};
use tally_aws::config;
use tally_aws::handler_error::HandlerError;
use tally_aws::sfn::SfnExecutions;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tally_aws::config::init_logging();
    let sdk = config::aws().await;
    let exec = SfnExecutions {
        client: aws_sdk_sfn::Client::new(&sdk),
        state_machine_arn: config::required("RECON_STATE_MACHINE_ARN")?,
    };
    let exec = &exec;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let event: SqsEvent = serde_json::from_value(event.payload)
                .map_err(|e| HandlerError::invalid_input(format!("SQS event: {e}")))?;
            handle(exec, event).await
        },
    ))
    .await
}
