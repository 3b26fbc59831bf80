//! The trigger: S3 "Object Created" events (EventBridge → SQS) become
//! reconciliation executions, one per object version.
//!
//! The execution name is derived from the object's key and ETag, and Step
//! Functions refuses a second execution of the same name: the same event
//! delivered twice, or the same bytes uploaded twice, starts one
//! reconciliation. (A name is kept 90 days after its execution ends, longer
//! than any redelivery.) A message that fails for a transient reason is
//! reported as a batch item failure, so SQS delivers it again, and after
//! five failures it goes to the dead-letter queue, whose depth alarms.

use serde::Serialize;
use tally_aws::handler_error::HandlerError;
use tally_aws::ports::{Executions, ObjectRef, Started};
use tally_domain::partition::fnv1a_64;

/// What SQS hands the function (the parts used).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SqsEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<SqsMessage>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct SqsMessage {
    #[serde(rename = "messageId")]
    pub message_id: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchResponse {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<BatchItemFailure>,
}

/// The execution for one landed object: its name and input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    pub name: String,
    pub input: serde_json::Value,
}

/// Reads an EventBridge "Object Created" event. `Err` names what is missing.
pub fn landed(event: &serde_json::Value) -> Result<Landed, String> {
    let detail = &event["detail"];
    let text = |v: &serde_json::Value, what: &str| {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("event without {what}"))
    };
    let bucket = text(&detail["bucket"]["name"], "detail.bucket.name")?;
    let key = text(&detail["object"]["key"], "detail.object.key")?;
    // AWS spells it `etag`; moto, `eTag`.
    let etag = match &detail["object"]["etag"] {
        serde_json::Value::Null => text(&detail["object"]["eTag"], "detail.object.etag")?,
        v => text(v, "detail.object.etag")?,
    };
    let size_bytes = detail["object"]["size"]
        .as_u64()
        .ok_or("event without detail.object.size")?;
    // An RFC 3339 string on AWS; some emulators send epoch seconds.
    let uploaded_at_ms = match &event["time"] {
        serde_json::Value::String(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| t.timestamp_millis().max(0) as u64)
            .map_err(|e| format!("event time `{t}`: {e}"))?,
        serde_json::Value::Number(n) => n
            .as_f64()
            .filter(|s| *s >= 0.0)
            .map(|s| (s * 1000.0) as u64)
            .ok_or("event time is not a non-negative number")?,
        _ => return Err("event without time".into()),
    };
    Ok(Landed {
        name: execution_name(&key, &etag),
        input: serde_json::json!({
            "object": ObjectRef { bucket, key, etag, size_bytes },
            "uploaded_at_ms": uploaded_at_ms,
        }),
    })
}

/// `recon-` and 32 hex digits of two FNV-1a-64 hashes of key and ETag:
/// the same object version always gets the same name, within Step
/// Functions' 80 characters of `[A-Za-z0-9-_]`.
pub fn execution_name(key: &str, etag: &str) -> String {
    let etag = etag.trim_matches('"');
    let a = fnv1a_64(format!("{key}\n{etag}").as_bytes());
    let b = fnv1a_64(format!("{etag}\n{key}").as_bytes());
    format!("recon-{a:016x}{b:016x}")
}

pub async fn handle<E: Executions>(
    exec: &E,
    event: SqsEvent,
) -> Result<BatchResponse, HandlerError> {
    let mut failures = Vec::new();
    for m in event.records {
        let parsed: Result<Landed, String> = serde_json::from_str::<serde_json::Value>(&m.body)
            .map_err(|e| format!("message body is not JSON: {e}"))
            .and_then(|v| landed(&v));
        let l = match parsed {
            Ok(l) => l,
            Err(e) => {
                // Malformed: retrying cannot help; let it go to the DLQ.
                tracing::error!(message_id = %m.message_id, error = %e, "not an Object Created event");
                failures.push(BatchItemFailure {
                    item_identifier: m.message_id,
                });
                continue;
            }
        };
        match exec.start(&l.name, &l.input).await {
            Ok(Started::New) => tracing::info!(name = %l.name, "reconciliation started"),
            Ok(Started::AlreadyExists) => {
                tracing::info!(name = %l.name, "already started for this object version")
            }
            Err(e) => {
                tracing::warn!(message_id = %m.message_id, error = %e, "start failed; SQS will redeliver");
                failures.push(BatchItemFailure {
                    item_identifier: m.message_id,
                });
            }
        }
    }
    Ok(BatchResponse {
        batch_item_failures: failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tally_aws::StoreError;

    /// Step Functions' name rule, in memory; `fail_next` fails starts.
    #[derive(Default)]
    struct Fake {
        started: Mutex<HashMap<String, serde_json::Value>>,
        fail_next: Mutex<u32>,
    }

    impl Executions for Fake {
        async fn start(
            &self,
            name: &str,
            input: &serde_json::Value,
        ) -> Result<Started, StoreError> {
            let mut f = self.fail_next.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err(StoreError::Transient("ThrottlingException".into()));
            }
            let mut s = self.started.lock().unwrap();
            if s.contains_key(name) {
                return Ok(Started::AlreadyExists);
            }
            s.insert(name.into(), input.clone());
            Ok(Started::New)
        }
    }

    fn event(key: &str, etag: &str) -> String {
        serde_json::json!({
            "version": "0", "id": "e1", "detail-type": "Object Created", "source": "aws.s3",
            "time": "2026-11-21T03:04:05Z",
            "detail": {"bucket": {"name": "landing"},
                       "object": {"key": key, "size": 2010, "etag": etag, "sequencer": "00"}}
        })
        .to_string()
    }

    fn sqs(bodies: &[String]) -> SqsEvent {
        SqsEvent {
            records: bodies
                .iter()
                .enumerate()
                .map(|(i, b)| SqsMessage {
                    message_id: format!("m{i}"),
                    body: b.clone(),
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn the_same_object_delivered_twice_starts_one_reconciliation() {
        let f = Fake::default();
        let e = event("settlement/ACME/2026-11-20/v.dat", "\"abc\"");
        let r = handle(&f, sqs(&[e.clone(), e.clone()])).await.unwrap();
        assert!(r.batch_item_failures.is_empty());
        let r = handle(&f, sqs(&[e])).await.unwrap();
        assert!(r.batch_item_failures.is_empty());
        let started = f.started.lock().unwrap();
        assert_eq!(started.len(), 1);
        let input = started.values().next().unwrap();
        assert_eq!(input["object"]["key"], "settlement/ACME/2026-11-20/v.dat");
        assert_eq!(input["object"]["size_bytes"], 2010);
        // 2026-11-21T03:04:05Z (python3: datetime(2026,11,21,3,4,5,tzinfo=utc).timestamp())
        assert_eq!(input["uploaded_at_ms"], 1_795_230_245_000u64);
    }

    #[tokio::test]
    async fn a_new_upload_of_the_same_key_is_a_new_reconciliation() {
        let f = Fake::default();
        let k = "internal/ACME/2026-11-20/a.csv";
        handle(&f, sqs(&[event(k, "e1"), event(k, "e2")]))
            .await
            .unwrap();
        assert_eq!(f.started.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn failed_starts_and_malformed_messages_go_back_to_the_queue() {
        let f = Fake::default();
        *f.fail_next.lock().unwrap() = 1;
        let r = handle(
            &f,
            sqs(&[
                event("settlement/A/2026-11-20/x.dat", "1"),
                "not json".into(),
                event("settlement/A/2026-11-20/y.dat", "2"),
            ]),
        )
        .await
        .unwrap();
        let ids: Vec<_> = r
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(ids, vec!["m0", "m1"]);
        assert_eq!(f.started.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_emulator_event_with_e_tag_and_epoch_time_is_read_too() {
        let f = Fake::default();
        let body = serde_json::json!({
            "detail-type": "Object Created", "source": "aws.s3", "time": 1_795_230_245.5,
            "detail": {"bucket": {"name": "landing"},
                       "object": {"key": "internal/A/2026-11-20/a.csv", "size": 7, "eTag": "abc"}}
        })
        .to_string();
        let r = handle(&f, sqs(&[body])).await.unwrap();
        assert!(r.batch_item_failures.is_empty());
        let started = f.started.lock().unwrap();
        let input = started.values().next().unwrap();
        assert_eq!(input["object"]["etag"], "abc");
        assert_eq!(input["uploaded_at_ms"], 1_795_230_245_500u64);
    }

    #[test]
    fn execution_names_are_valid_and_stable() {
        let n = execution_name("settlement/ACME/2026-11-20/v.dat", "\"abc\"");
        assert_eq!(n, execution_name("settlement/ACME/2026-11-20/v.dat", "abc"));
        assert_ne!(n, execution_name("settlement/ACME/2026-11-20/v.dat", "abd"));
        assert!(n.len() <= 80);
        assert!(n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
