//! EventBridge events and SNS alarms.

use crate::error::{classify, StoreError};
use crate::ports::Publisher;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

/// SNS caps a subject at 100 characters.
const SUBJECT_CHARS_MAX: usize = 100;

#[derive(Clone)]
pub struct AwsPublisher {
    pub events: aws_sdk_eventbridge::Client,
    pub sns: aws_sdk_sns::Client,
    pub event_bus_name: String,
    pub alarm_topic_arn: String,
    /// The events' `source`: `bank.core` (the COB) or `bank.recon`.
    pub source: &'static str,
}

impl Publisher for AwsPublisher {
    async fn put_event(
        &self,
        detail_type: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.event_bus_name)
            .source(self.source)
            .detail_type(detail_type)
            .detail(detail.to_string())
            .build();
        let out = self
            .events
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| classify("PutEvents", e))?;
        // PutEvents answers 200 even when an entry was refused.
        if out.failed_entry_count() > 0 {
            let why = out
                .entries()
                .iter()
                .filter_map(|e| {
                    e.error_code()
                        .map(|c| format!("{c}: {}", e.error_message().unwrap_or("")))
                })
                .collect::<Vec<_>>()
                .join("; ");
            let transient = out.entries().iter().any(|e| {
                matches!(
                    e.error_code(),
                    Some("ThrottlingException" | "InternalFailure")
                )
            });
            let msg = format!("PutEvents refused the {detail_type} entry: {why}");
            return Err(if transient {
                StoreError::Transient(msg)
            } else {
                StoreError::Permanent(msg)
            });
        }
        Ok(())
    }

    async fn alarm(&self, subject: &str, message: &str) -> Result<(), StoreError> {
        let subject: String = subject.chars().take(SUBJECT_CHARS_MAX).collect();
        self.sns
            .publish()
            .topic_arn(&self.alarm_topic_arn)
            .subject(subject)
            .message(message)
            .send()
            .await
            .map_err(|e| classify("Publish(SNS)", e))?;
        Ok(())
    }
}
