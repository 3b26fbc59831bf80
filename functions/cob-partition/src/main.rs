use cob_partition::{run, Config};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use tally_aws::config;
use tally_aws::dynamo::{DynamoBook, DynamoFaultSwitch};
use tally_aws::handler_error::HandlerError;
use tally_domain::cob::PartitionTask;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cfg = Config::from_env()?;
    let client = aws_sdk_dynamodb::Client::new(&config::aws().await);
    let book = DynamoBook::new(
        client.clone(),
        config::required("ACCOUNTS_TABLE")?,
        config::required("LEDGER_TABLE")?,
    );
    let runs_table = config::required("RUNS_TABLE")?;
    let runs = tally_aws::runs::DynamoRuns {
        client: client.clone(),
        table: runs_table.clone(),
    };
    let faults = DynamoFaultSwitch { client, runs_table };
    let (book, faults, runs, cfg) = (&book, &faults, &runs, &cfg);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let task: PartitionTask = serde_json::from_value(event.payload)
                .map_err(|e| HandlerError::invalid_input(format!("partition task: {e}")))?;
            let result = run(book, faults, runs, cfg, task).await;
            match &result {
                Ok(r) => tracing::info!(
                    partition = r.partition,
                    accounts = r.accounts_seen,
                    postings = r.postings_written,
                    duration_ms = r.duration_ms,
                    "partition done"
                ),
                Err(e) => tracing::error!(error = e.name, message = %e.message, "partition failed"),
            }
            result
        },
    ))
    .await
}
