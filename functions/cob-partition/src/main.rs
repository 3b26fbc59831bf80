#![recursion_limit = "256"]
use cob_partition::{run, Config};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use tally_aws::config;
use tally_aws::dynamo::{DynamoBook, DynamoFaultSwitch};
use tally_aws::handler_error::HandlerError;
use tally_domain::cob::PartitionTask;
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tally_aws::config::init_logging();
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
            let span = tracing::info_span!("run", run_id = task.run_id, partition = task.partition);
            async move {
                let run_id = task.run_id.clone();
                let result = run(book, faults, runs, cfg, task).await;
                match &result {
                    Ok(r) => {
                        tracing::info!(
                            partition = r.partition,
                            accounts = r.accounts_seen,
                            postings = r.postings_written,
                            duration_ms = r.duration_ms,
                            "partition done"
                        );
                        use tally_aws::emf::{names, Metrics};
                        Metrics::new("cob-partition")
                            .ms(names::PARTITION_DURATION_MS, r.duration_ms)
                            .count(names::ACCOUNTS_PROCESSED, r.accounts_seen)
                            .count(names::POSTINGS_WRITTEN, r.postings_written)
                            .property("run_id", run_id.as_str())
                            .property("partition", r.partition)
                            .emit();
                    }
                    Err(e) => {
                        tracing::error!(error = e.name, message = %e.message, "partition failed")
                    }
                }
                result
            }
            .instrument(span)
            .await
        },
    ))
    .await
}
