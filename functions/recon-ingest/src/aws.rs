//! The engine wired to AWS, shared by the Lambda and the container task.

use crate::{ingest, record_outcome, Config, IngestOutcome, IngestTask};
use std::sync::atomic::{AtomicU64, Ordering};
use tally_aws::config;
use tally_aws::dynamo::DynamoFaultSwitch;
use tally_aws::handler_error::HandlerError;
use tally_aws::publish::AwsPublisher;
use tally_aws::recon::{DynamoProgress, DynamoReconState, DynamoRecords, S3Objects};

pub struct AwsIngest {
    cfg: Config,
    objects: S3Objects,
    records: DynamoRecords,
    progress: DynamoProgress,
    faults: DynamoFaultSwitch,
    state: DynamoReconState,
    alarms: AwsPublisher,
}

impl AwsIngest {
    /// Clients built once, configuration read once (fails with the variable's name).
    pub async fn from_env() -> Result<AwsIngest, HandlerError> {
        let cfg = Config::from_env()?;
        let sdk = config::aws().await;
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let s3 = config::s3_client(&sdk);
        let state_table = config::required("RECON_STATE_TABLE")?;
        Ok(AwsIngest {
            cfg,
            objects: S3Objects::new(s3.clone()),
            records: DynamoRecords::new(
                dynamo.clone(),
                config::required("SETTLEMENT_RECORDS_TABLE")?,
                config::required("INTERNAL_RECORDS_TABLE")?,
            ),
            progress: DynamoProgress::new(dynamo.clone(), state_table.clone()),
            faults: DynamoFaultSwitch {
                client: dynamo.clone(),
                runs_table: config::required("RUNS_TABLE")?,
            },
            state: DynamoReconState::new(
                dynamo,
                s3,
                state_table,
                config::required("LANDING_BUCKET")?,
            ),
            alarms: AwsPublisher {
                events: aws_sdk_eventbridge::Client::new(&sdk),
                sns: aws_sdk_sns::Client::new(&sdk),
                event_bus_name: config::required("EVENT_BUS_NAME")?,
                alarm_topic_arn: config::required("ALARM_TOPIC_ARN")?,
                source: tally_domain::recon::pipeline::EVENT_SOURCE,
            },
        })
    }

    /// Ingests, reports what the attempt did (its write retries too when it
    /// failed), then records the outcome (and quarantines a rejected file).
    pub async fn run(&self, task: IngestTask) -> Result<IngestOutcome, HandlerError> {
        use tally_aws::emf::{names, Metrics};
        let (obj, version) = (task.object.clone(), task.version);
        let retries = AtomicU64::new(0);
        let result = ingest(
            &self.objects,
            &self.records,
            &self.progress,
            &self.faults,
            &self.cfg,
            task,
            &retries,
        )
        .await;
        let write_retries = retries.load(Ordering::Relaxed);
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                // The retry of this attempt resumes from its checkpoint; what
                // this one cost in throttled writes is reported here or never.
                tracing::warn!(key = %obj.key, write_retries, error = %e.name, "ingest attempt failed");
                Metrics::new("recon-ingest")
                    .count(names::WRITE_RETRIES, write_retries)
                    .property("object_key", obj.key.as_str())
                    .property("attempt", "failed")
                    .emit();
                return Err(e);
            }
        };
        match &outcome {
            IngestOutcome::Applied {
                records,
                resumed_from_record,
                program_id,
                file_date,
                ..
            } => {
                tracing::info!(
                    key = %obj.key,
                    records,
                    resumed_from_record,
                    write_retries,
                    "ingest applied"
                );
                Metrics::new("recon-ingest")
                    .count(names::RECORDS_INGESTED, records - resumed_from_record)
                    .count(names::WRITE_RETRIES, write_retries)
                    .property("object_key", obj.key.as_str())
                    .property("program_id", program_id.as_str())
                    .property("file_date", file_date.to_string())
                    .property("attempt", "applied")
                    .emit();
            }
            IngestOutcome::Rejected { reason, .. } => {
                tracing::warn!(key = %obj.key, line = reason.line, field = %reason.field, "file rejected")
            }
        }
        record_outcome(
            &self.state,
            &self.objects,
            &self.alarms,
            &obj,
            version,
            &outcome,
        )
        .await?;
        Ok(outcome)
    }
}
