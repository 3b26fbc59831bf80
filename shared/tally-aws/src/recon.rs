//! Reconciliation adapters: landed objects in S3, normalised records and
//! ingest checkpoints in DynamoDB.
//!
//! Records: one table per side (settlement, internal), each keyed
//! `pk = ProgramID#FileDate#ShardN`, `sk = v<version>#TransactionID`.
//! Sharding the partition key spreads one program's heavy day over
//! `RECON_SHARD_COUNT` DynamoDB partitions instead of one hot key. A record
//! is written with a plain put: the same record written again is the same
//! item, so every retry is idempotent. The version (the settlement file
//! sequence, or the internal records' upload time) is part of the key, so
//! each version of a side is its own set of items: a corrected file never
//! mixes with the earlier one's records, and an older file re-sent after a
//! newer one (which Settle then finds superseded) cannot overwrite the
//! records the newer one's reconciliation reads. A reconciliation reads its
//! versions by key prefix.
//!
//! Checkpoints live in the reconciliation state table
//! (`pk = INGEST#<ingest id>`, `sk = CHECKPOINT`) and only move forward: the
//! write is conditioned on the stored `records_applied` not being ahead.

use crate::dynamo::batch_write_all;
use crate::error::{classify, condition_met, StoreError};
use crate::ports::{Checkpoint, IngestProgress, ObjectRef, ObjectSource, RecordSink, StoredTxn};
use crate::retry::Backoff;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use tally_domain::money::format_amount;
use tally_domain::recon::{Side, Sign, Txn, TxnType};

type Item = HashMap<String, AttributeValue>;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Landed objects in S3.
#[derive(Clone)]
pub struct S3Objects {
    client: aws_sdk_s3::Client,
}

impl S3Objects {
    pub fn new(client: aws_sdk_s3::Client) -> Self {
        S3Objects { client }
    }
}

pub type ObjectReader = Pin<Box<dyn tokio::io::AsyncBufRead + Send>>;

impl ObjectSource for S3Objects {
    type Reader = ObjectReader;
    async fn open(&self, obj: &ObjectRef, offset: u64) -> Result<ObjectReader, StoreError> {
        if offset >= obj.size_bytes {
            return Ok(Box::pin(tokio::io::BufReader::new(tokio::io::empty())));
        }
        let out = self
            .client
            .get_object()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .if_match(&obj.etag)
            .range(format!("bytes={offset}-"))
            .send()
            .await
            .map_err(|e| {
                let precondition = e.raw_response().is_some_and(|r| r.status().as_u16() == 412);
                let e = classify("GetObject", e);
                if precondition {
                    StoreError::Permanent(format!(
                        "{}: no longer ETag {} (replaced mid-ingest): {e}",
                        obj.key, obj.etag
                    ))
                } else {
                    e
                }
            })?;
        Ok(Box::pin(out.body.into_async_read()))
    }
}

/// Normalised records in DynamoDB, one table per side.
#[derive(Clone)]
pub struct DynamoRecords {
    client: aws_sdk_dynamodb::Client,
    settlement_table: String,
    internal_table: String,
    backoff: Backoff,
}

impl DynamoRecords {
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        settlement_table: impl Into<String>,
        internal_table: impl Into<String>,
    ) -> Self {
        DynamoRecords {
            client,
            settlement_table: settlement_table.into(),
            internal_table: internal_table.into(),
            backoff: Backoff::DEFAULT,
        }
    }

    pub fn table(&self, side: Side) -> &str {
        match side {
            Side::Settlement => &self.settlement_table,
            Side::Internal => &self.internal_table,
        }
    }
}

/// A record's sort key: its version, then its transaction id (so one
/// version's records are one key range, in transaction id order).
pub fn record_sk(version: u64, transaction_id: &str) -> String {
    format!("{}{transaction_id}", version_prefix(version))
}

fn version_prefix(version: u64) -> String {
    format!("v{version}#")
}

/// The stored form of a record.
pub fn record_item(r: &StoredTxn) -> Item {
    let t = &r.txn;
    let mut item: Item = [
        ("pk", s(&r.pk)),
        ("sk", s(record_sk(r.version, &t.transaction_id))),
        ("transaction_id", s(&t.transaction_id)),
        ("version", n(r.version)),
        ("line", n(r.line)),
        ("auth_code", s(&t.auth_code)),
        ("masked_pan", s(&t.masked_pan)),
        ("transaction_date", s(t.transaction_date.to_string())),
        ("transaction_type", s(t.transaction_type.as_str())),
        ("currency", s(t.currency.code())),
        ("amount", s(format_amount(t.amount, t.currency))),
        ("sign", s(t.sign.as_str())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some((fee, sign)) = r.fee {
        item.insert("fee".into(), s(format_amount(fee, t.currency)));
        item.insert("fee_sign".into(), s(sign.as_str()));
    }
    item
}

/// Reads a stored record back; the error names the attribute.
pub fn record_from_item(item: &Item) -> Result<StoredTxn, StoreError> {
    let bad = |name: &str| StoreError::Permanent(format!("record: `{name}` missing or malformed"));
    let get = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v.as_str()),
        _ => Err(bad(name)),
    };
    let num = |name: &str| match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse::<u64>().map_err(|_| bad(name)),
        _ => Err(bad(name)),
    };
    let currency =
        tally_domain::currency::Currency::parse(get("currency")?).map_err(|_| bad("currency"))?;
    let sign = |name: &str| Sign::parse(get(name)?).ok_or_else(|| bad(name));
    let amount =
        |name: &str| tally_domain::money::parse_amount(get(name)?, currency).map_err(|_| bad(name));
    let fee = match item.get("fee") {
        Some(_) => Some((amount("fee")?, sign("fee_sign")?)),
        None => None,
    };
    Ok(StoredTxn {
        pk: get("pk")?.to_owned(),
        txn: Txn {
            transaction_id: get("transaction_id")?.to_owned(),
            auth_code: get("auth_code")?.to_owned(),
            masked_pan: get("masked_pan")?.to_owned(),
            transaction_date: get("transaction_date")?
                .parse()
                .map_err(|_| bad("transaction_date"))?,
            transaction_type: TxnType::parse(get("transaction_type")?)
                .ok_or_else(|| bad("transaction_type"))?,
            currency,
            amount: amount("amount")?,
            sign: sign("sign")?,
        },
        line: num("line")?,
        version: num("version")?,
        fee,
    })
}

impl RecordSink for DynamoRecords {
    async fn put_records(
        &self,
        side: Side,
        records: &[StoredTxn],
        retries: &AtomicU64,
    ) -> Result<(), StoreError> {
        let requests = records
            .iter()
            .map(|r| {
                let put = PutRequest::builder()
                    .set_item(Some(record_item(r)))
                    .build()
                    .map_err(|e| StoreError::Permanent(format!("record: {e}")))?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        batch_write_all(
            &self.client,
            self.table(side),
            requests,
            self.backoff,
            retries,
        )
        .await
    }
}

/// Ingest checkpoints in the reconciliation state table.
#[derive(Clone)]
pub struct DynamoProgress {
    client: aws_sdk_dynamodb::Client,
    state_table: String,
}

impl DynamoProgress {
    pub fn new(client: aws_sdk_dynamodb::Client, state_table: impl Into<String>) -> Self {
        DynamoProgress {
            client,
            state_table: state_table.into(),
        }
    }
}

impl IngestProgress for DynamoProgress {
    async fn checkpoint(&self, ingest_id: &str) -> Result<Option<Checkpoint>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.state_table)
            .key("pk", s(format!("INGEST#{ingest_id}")))
            .key("sk", s("CHECKPOINT"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem(checkpoint)", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let num = |name: &str| match item.get(name) {
            Some(AttributeValue::N(v)) => v.parse::<u64>().map_err(|_| {
                StoreError::Permanent(format!("checkpoint {ingest_id}: `{name}` malformed"))
            }),
            _ => Err(StoreError::Permanent(format!(
                "checkpoint {ingest_id}: `{name}` missing"
            ))),
        };
        Ok(Some(Checkpoint {
            offset_bytes: num("offset_bytes")?,
            next_line: num("next_line")?,
            records_applied: num("records_applied")?,
        }))
    }

    async fn save_checkpoint(&self, ingest_id: &str, cp: Checkpoint) -> Result<(), StoreError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.state_table)
            .item("pk", s(format!("INGEST#{ingest_id}")))
            .item("sk", s("CHECKPOINT"))
            .item("offset_bytes", n(cp.offset_bytes))
            .item("next_line", n(cp.next_line))
            .item("records_applied", n(cp.records_applied))
            .condition_expression("attribute_not_exists(pk) OR records_applied <= :r")
            .expression_attribute_values(":r", n(cp.records_applied))
            .send()
            .await;
        // Not applied: a checkpoint further on is already there; keep it.
        condition_met("PutItem(checkpoint)", out).map(|_| ())
    }
}

impl crate::ports::Quarantine for S3Objects {
    async fn reject(
        &self,
        obj: &ObjectRef,
        reason_json: &str,
        copy: bool,
    ) -> Result<(), StoreError> {
        let target = format!("rejected/{}", obj.key);
        if copy {
            self.client
                .copy_object()
                .bucket(&obj.bucket)
                .key(&target)
                .copy_source(format!("{}/{}", obj.bucket, encode_key(&obj.key)))
                .copy_source_if_match(&obj.etag)
                .send()
                .await
                .map_err(|e| classify("CopyObject(rejected)", e))?;
        }
        self.client
            .put_object()
            .bucket(&obj.bucket)
            .key(format!("{target}.reason.json"))
            .content_type("application/json")
            .body(aws_sdk_s3::primitives::ByteStream::from(
                reason_json.as_bytes().to_vec(),
            ))
            .send()
            .await
            .map_err(|e| classify("PutObject(reason)", e))?;
        Ok(())
    }
}

/// Percent-encodes a key for `x-amz-copy-source` (every byte but the
/// unreserved characters and `/`).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Reconciliation state
// ---------------------------------------------------------------------------

use crate::ports::{Acceptance, ReconState, RecordSource, SideManifest};
use tally_domain::recon::matching::ShardSummary;
use tally_domain::NaiveDate;

/// State items: `pk = RECON#<program>#<date>` with `sk` one of `SIDE#<side>`
/// (the accepted manifest), `CLAIM#<recon id>`, `SUMMARY#<recon id>#<shard>`
/// (a marker: the summary itself is a JSON object in S3 under
/// `state/<program>/<date>/<recon id>/shard-<n>.json`, because a shard with
/// many breaks can outgrow DynamoDB's 400 KB item), and `STATUS`; and
/// `pk = INGEST#<ingest id>` with `sk = OUTCOME`.
#[derive(Clone)]
pub struct DynamoReconState {
    client: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    state_table: String,
    bucket: String,
}

impl DynamoReconState {
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        s3: aws_sdk_s3::Client,
        state_table: impl Into<String>,
        bucket: impl Into<String>,
    ) -> Self {
        DynamoReconState {
            client,
            s3,
            state_table: state_table.into(),
            bucket: bucket.into(),
        }
    }

    fn pk(program_id: &str, file_date: NaiveDate) -> AttributeValue {
        s(format!("RECON#{program_id}#{file_date}"))
    }

    async fn get_json(
        &self,
        pk: AttributeValue,
        sk: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.state_table)
            .key("pk", pk)
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem(recon state)", e))?;
        match out.item.as_ref().and_then(|i| i.get("body")) {
            Some(AttributeValue::S(body)) => serde_json::from_str(body)
                .map(Some)
                .map_err(|e| StoreError::Permanent(format!("recon state {sk}: {e}"))),
            Some(_) => Err(StoreError::Permanent(format!(
                "recon state {sk}: body is not a string"
            ))),
            None => Ok(None),
        }
    }

    async fn put_json(&self, pk: AttributeValue, sk: &str, body: String) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.state_table)
            .item("pk", pk)
            .item("sk", s(sk))
            .item("body", s(body))
            .send()
            .await
            .map_err(|e| classify("PutItem(recon state)", e))?;
        Ok(())
    }

    fn summary_key(program_id: &str, file_date: NaiveDate, recon_id: &str, shard: u32) -> String {
        format!(
            "state/{program_id}/{file_date}/{}/shard-{shard:04}.json",
            recon_id.replace('#', "_")
        )
    }
}

fn json_err(what: &str) -> impl Fn(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::Permanent(format!("{what}: {e}"))
}

impl ReconState for DynamoReconState {
    async fn put_outcome(&self, id: &str, o: &serde_json::Value) -> Result<(), StoreError> {
        self.put_json(s(format!("INGEST#{id}")), "OUTCOME", o.to_string())
            .await
    }

    async fn outcome(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.get_json(s(format!("INGEST#{id}")), "OUTCOME").await
    }

    async fn accept(
        &self,
        program_id: &str,
        file_date: NaiveDate,
        m: &SideManifest,
    ) -> Result<Acceptance, StoreError> {
        let body = serde_json::to_string(m).map_err(json_err("manifest"))?;
        let out = self
            .client
            .put_item()
            .table_name(&self.state_table)
            .item("pk", Self::pk(program_id, file_date))
            .item("sk", s(format!("SIDE#{}", m.side.as_str())))
            .item("version", n(m.version))
            .item("body", s(body))
            .condition_expression("attribute_not_exists(pk) OR version <= :v")
            .expression_attribute_values(":v", n(m.version))
            .send()
            .await;
        if condition_met("PutItem(manifest)", out)? {
            return Ok(Acceptance::Accepted);
        }
        let current = self.manifests(program_id, file_date).await?;
        let current = match m.side {
            Side::Settlement => current.0,
            Side::Internal => current.1,
        };
        Ok(Acceptance::Superseded {
            current: current.map_or(0, |c| c.version),
        })
    }

    async fn manifests(
        &self,
        program_id: &str,
        file_date: NaiveDate,
    ) -> Result<(Option<SideManifest>, Option<SideManifest>), StoreError> {
        let mut out = (None, None);
        for side in [Side::Settlement, Side::Internal] {
            let m = match self
                .get_json(
                    Self::pk(program_id, file_date),
                    &format!("SIDE#{}", side.as_str()),
                )
                .await?
            {
                Some(v) => {
                    Some(serde_json::from_value::<SideManifest>(v).map_err(json_err("manifest"))?)
                }
                None => None,
            };
            match side {
                Side::Settlement => out.0 = m,
                Side::Internal => out.1 = m,
            }
        }
        Ok(out)
    }

    async fn claim(
        &self,
        program_id: &str,
        file_date: NaiveDate,
        recon_id: &str,
        claimant: &str,
    ) -> Result<bool, StoreError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.state_table)
            .item("pk", Self::pk(program_id, file_date))
            .item("sk", s(format!("CLAIM#{recon_id}")))
            .item("claimant", s(claimant))
            .condition_expression("attribute_not_exists(pk) OR claimant = :c")
            .expression_attribute_values(":c", s(claimant))
            .send()
            .await;
        condition_met("PutItem(claim)", out)
    }

    async fn put_summary(&self, recon_id: &str, sm: &ShardSummary) -> Result<(), StoreError> {
        let key = Self::summary_key(&sm.program_id, sm.file_date, recon_id, sm.shard);
        let body = serde_json::to_vec(sm).map_err(json_err("summary"))?;
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .map_err(|e| classify("PutObject(summary)", e))?;
        // The marker goes last: a counted marker always has its summary.
        self.client
            .put_item()
            .table_name(&self.state_table)
            .item("pk", Self::pk(&sm.program_id, sm.file_date))
            .item("sk", s(format!("SUMMARY#{recon_id}#{:04}", sm.shard)))
            .item("object_key", s(key))
            .send()
            .await
            .map_err(|e| classify("PutItem(summary marker)", e))?;
        Ok(())
    }

    async fn summaries(
        &self,
        program_id: &str,
        file_date: NaiveDate,
        recon_id: &str,
    ) -> Result<Vec<ShardSummary>, StoreError> {
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.state_table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":pk", Self::pk(program_id, file_date))
                .expression_attribute_values(":p", s(format!("SUMMARY#{recon_id}#")))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify("Query(summaries)", e))?;
            for item in out.items() {
                if let Some(AttributeValue::S(k)) = item.get("object_key") {
                    keys.push(k.clone());
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let obj = self
                .s3
                .get_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| classify("GetObject(summary)", e))?;
            let bytes = obj
                .body
                .collect()
                .await
                .map_err(|e| StoreError::Transient(format!("reading {key}: {e}")))?
                .into_bytes();
            out.push(serde_json::from_slice(&bytes).map_err(json_err("summary"))?);
        }
        Ok(out)
    }

    async fn put_status(
        &self,
        program_id: &str,
        file_date: NaiveDate,
        status: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.put_json(
            Self::pk(program_id, file_date),
            "STATUS",
            status.to_string(),
        )
        .await
    }

    async fn status(
        &self,
        program_id: &str,
        file_date: NaiveDate,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        self.get_json(Self::pk(program_id, file_date), "STATUS")
            .await
    }
}

impl RecordSource for DynamoRecords {
    async fn shard_records(
        &self,
        side: Side,
        pk: &str,
        version: u64,
    ) -> Result<Vec<StoredTxn>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(self.table(side))
                .consistent_read(true)
                .key_condition_expression("pk = :pk AND begins_with(sk, :v)")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":v", s(version_prefix(version)))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify("Query(records)", e))?;
            for item in page.items() {
                out.push(record_from_item(item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }
}

/// Objects written to one bucket.
#[derive(Clone)]
pub struct S3Blobs {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
}

impl crate::ports::Blobs for S3Blobs {
    async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .map_err(|e| classify("PutObject", e))?;
        Ok(())
    }
}
