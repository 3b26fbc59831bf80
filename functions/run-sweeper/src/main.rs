use lambda_runtime::{service_fn, Error, LambdaEvent};
use run_sweeper::{sweep, Config};
use tally_aws::config;
use tally_aws::runs::DynamoRuns;
use tally_aws::sfn::SfnLookup;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tally_aws::config::init_logging();
    let cfg = Config::from_env()?;
    let sdk = config::aws().await;
    let runs = DynamoRuns::from_env(aws_sdk_dynamodb::Client::new(&sdk))?;
    let execs = SfnLookup {
        client: aws_sdk_sfn::Client::new(&sdk),
    };
    let (runs, execs, cfg) = (&runs, &execs, &cfg);
    // The scheduled event's content is not used: every invocation sweeps.
    lambda_runtime::run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let report = sweep(runs, execs, cfg, chrono::Utc::now()).await?;
            use tally_aws::emf::{names, Metrics};
            Metrics::new("run-sweeper")
                .count(names::RUNS_CORRECTED, report.fixed.len() as u64)
                .count(names::RUNS_UNREADABLE, report.unreadable.len() as u64)
                .property(
                    "run_ids",
                    report
                        .fixed
                        .iter()
                        .map(|f| f.run_id.clone())
                        .collect::<Vec<_>>(),
                )
                .emit();
            Ok::<_, tally_aws::handler_error::HandlerError>(report)
        },
    ))
    .await
}
