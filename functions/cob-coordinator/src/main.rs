#![recursion_limit = "256"]
use cob_coordinator::{plan, Config, CoordinatorEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use tally_aws::{config, dynamo::DynamoBook, handler_error::HandlerError};
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tally_aws::config::init_logging();
    let cfg = Config::from_env()?;
    let accounts = config::required("ACCOUNTS_TABLE")?;
    let client = aws_sdk_dynamodb::Client::new(&config::aws().await);
    // The coordinator never writes the ledger; the name is only for the type.
    let runs = tally_aws::runs::DynamoRuns::from_env(client.clone())?;
    let book = DynamoBook::new(client, accounts, String::new());
    let (book, runs, cfg) = (&book, &runs, &cfg);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let event: CoordinatorEvent = serde_json::from_value(event.payload)
                .map_err(|e| HandlerError::invalid_input(format!("coordinator event: {e}")))?;
            let span = tracing::info_span!("run", run_id = event.execution_name);
            plan(book, runs, cfg, event, chrono::Utc::now())
                .instrument(span)
                .await
        },
    ))
    .await
}
