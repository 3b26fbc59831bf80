//! Run records in the runs table (DynamoDB), and in memory for tests.
//!
//! Two kinds of item share the table's `run_id` key:
//!
//! - the run record, `run_id = <run id>`, with `status` (the `by_status`
//!   index: hash `status`, range `created_at`; sparse, so only run records
//!   are in it);
//! - the business-key claim, `run_id = key#<business key>`, with `holder`
//!   (the run id holding the key) and `attempt`.
//!
//! A submit writes the claim and the new record in one transaction, the
//! claim conditioned on its absence or on still naming the holder read
//! before: two submits racing for one key create one run. Every status
//! change is an `UpdateItem` conditioned on the status being one of the new
//! status's predecessors, so a status only moves forward, whoever writes.

use crate::error::{classify, condition_met, StoreError};
use crate::ports::{Heartbeat, RunStore, Transition};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use tally_domain::run::{RunCause, RunKind, RunRecord, RunStatus, RunTotal, UnitRecord};

pub const STATUS_INDEX: &str = "by_status";
/// Submits that lose a race re-read and try again at most this many times.
const SUBMIT_ROUNDS_MAX: u32 = 5;
/// Most records one `list` returns.
pub const LIST_MAX: u32 = 1000;

type Item = HashMap<String, AttributeValue>;

/// JSON to a DynamoDB attribute value (numbers as `N`, objects as `M`).
pub fn to_av(v: &serde_json::Value) -> AttributeValue {
    use serde_json::Value as J;
    match v {
        J::Null => AttributeValue::Null(true),
        J::Bool(b) => AttributeValue::Bool(*b),
        J::Number(n) => AttributeValue::N(n.to_string()),
        J::String(s) => AttributeValue::S(s.clone()),
        J::Array(a) => AttributeValue::L(a.iter().map(to_av).collect()),
        J::Object(o) => AttributeValue::M(o.iter().map(|(k, v)| (k.clone(), to_av(v))).collect()),
    }
}

/// A DynamoDB attribute value back to JSON.
pub fn from_av(v: &AttributeValue) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        AttributeValue::Null(_) => J::Null,
        AttributeValue::Bool(b) => J::Bool(*b),
        AttributeValue::N(n) => J::Number(
            n.parse::<serde_json::Number>()
                .map_err(|e| format!("number `{n}`: {e}"))?,
        ),
        AttributeValue::S(s) => J::String(s.clone()),
        AttributeValue::L(l) => J::Array(l.iter().map(from_av).collect::<Result<_, _>>()?),
        AttributeValue::M(m) => J::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), from_av(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => return Err(format!("unsupported attribute type {other:?}")),
    })
}

pub fn record_item(r: &RunRecord) -> Item {
    let mut v = serde_json::to_value(r).expect("run records serialize");
    // The input is kept as a JSON string: its shape is the caller's.
    v["input"] = serde_json::Value::String(r.input.to_string());
    match to_av(&v) {
        AttributeValue::M(m) => m,
        _ => unreachable!("a record serializes to an object"),
    }
}

pub fn record_from_item(item: &Item) -> Result<RunRecord, StoreError> {
    let mut v = from_av(&AttributeValue::M(item.clone())).map_err(StoreError::Permanent)?;
    if let Some(s) = v.get("input").and_then(|i| i.as_str()) {
        v["input"] = serde_json::from_str(s)
            .map_err(|e| StoreError::Permanent(format!("run record input: {e}")))?;
    }
    serde_json::from_value(v).map_err(|e| StoreError::Permanent(format!("run record: {e}")))
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// Timestamps as the records store them (fixed milliseconds, `Z`), so that
/// the `created_at` range key compares as text in time order.
fn ts(t: DateTime<Utc>) -> AttributeValue {
    s(tally_domain::run::fixed_ts(t))
}

fn claim_id(business_key: &str) -> String {
    format!("key#{business_key}")
}

#[derive(Clone)]
pub struct DynamoRuns {
    pub client: Client,
    pub table: String,
}

impl DynamoRuns {
    async fn claim(&self, business_key: &str) -> Result<Option<(String, u32)>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("run_id", s(claim_id(business_key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem(claim)", e))?;
        Ok(out.item().map(|i| {
            let holder = match i.get("holder") {
                Some(AttributeValue::S(h)) => h.clone(),
                _ => String::new(),
            };
            let attempt = match i.get("attempt") {
                Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
                _ => 0,
            };
            (holder, attempt)
        }))
    }

    /// Writes the claim (naming `record`) and `record` together. `prev`: the
    /// holder the claim must still name (`None`: the claim must not exist).
    /// `Ok(false)` when a condition failed (someone else won the race).
    async fn claim_and_put(
        &self,
        record: &RunRecord,
        prev: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut claim = Put::builder()
            .table_name(&self.table)
            .item("run_id", s(claim_id(&record.business_key)))
            .item("holder", s(&record.run_id))
            .item("attempt", AttributeValue::N(record.attempt.to_string()));
        claim = match prev {
            None => claim.condition_expression("attribute_not_exists(run_id)"),
            Some(h) => claim
                .condition_expression("holder = :prev")
                .expression_attribute_values(":prev", s(h)),
        };
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(record_item(record)))
            .condition_expression("attribute_not_exists(run_id)");
        let out = self
            .client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .put(claim.build().expect("table, item"))
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .put(put.build().expect("table, item"))
                    .build(),
            )
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) => {
                let reasons: Vec<String> = e
                    .as_service_error()
                    .and_then(|se| match se {
                        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => Some(c),
                        _ => None,
                    })
                    .map(|c| {
                        c.cancellation_reasons()
                            .iter()
                            .filter_map(|r| r.code().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let lost = |code: &str| {
                    matches!(
                        code,
                        "ConditionalCheckFailed"
                            | "TransactionConflict"
                            | "ThrottlingError"
                            | "ProvisionedThroughputExceeded"
                    )
                };
                if reasons.iter().any(|c| lost(c)) {
                    // Another writer won (or is writing) the claim, or the
                    // table is busy: the caller re-reads and tries again.
                    if !reasons.iter().any(|c| c == "ConditionalCheckFailed") {
                        let ms = 20 + rand::random::<u64>() % 180;
                        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    }
                    Ok(false)
                } else {
                    Err(classify("TransactWriteItems(run)", e))
                }
            }
        }
    }

    async fn put_new(&self, record: &RunRecord) -> Result<bool, StoreError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(record_item(record)))
            .condition_expression("attribute_not_exists(run_id)")
            .send()
            .await;
        condition_met("PutItem(run)", out)
    }

    async fn query_status(
        &self,
        status: RunStatus,
        created_before: Option<DateTime<Utc>>,
        kind: Option<RunKind>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(STATUS_INDEX)
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":s", s(status.as_str()))
            .scan_index_forward(false);
        if let Some(k) = kind {
            q = q
                .filter_expression("#k = :k")
                .expression_attribute_names("#k", "kind")
                .expression_attribute_values(":k", s(k.as_str()));
        }
        q = match created_before {
            Some(t) => q
                .key_condition_expression("#s = :s AND created_at < :t")
                .expression_attribute_values(":t", ts(t)),
            None => q.key_condition_expression("#s = :s"),
        };
        let mut out = Vec::new();
        let mut pages = q.into_paginator().page_size(100).send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("Query(by_status)", e))?;
            for i in page.items() {
                out.push(record_from_item(i)?);
                if out.len() >= limit as usize {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}

/// What a status change is conditional on, besides its target.
enum Guard {
    /// The current status is one of the target's predecessors.
    Predecessors,
    /// `EXECUTING`, naming exactly that many executions.
    Idle(usize),
    /// Already in the target status: only the patch is set.
    Is,
}

impl DynamoRuns {
    async fn set_status(
        &self,
        run_id: &str,
        to: RunStatus,
        at: DateTime<Utc>,
        patch: &crate::ports::Patch,
        guard: Guard,
    ) -> Result<Transition, StoreError> {
        let mut set = vec!["#s = :to", "updated_at = :at"];
        let mut u = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("run_id", s(run_id))
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":at", ts(at));
        let amend = matches!(guard, Guard::Is);
        if to == RunStatus::Executing && !amend {
            set.push("started_at = if_not_exists(started_at, :at)");
        }
        if to.is_terminal() && !amend {
            set.push("ended_at = :at");
        }
        if let Some(n) = patch.units_total {
            set.push("units_total = :ut");
            u = u.expression_attribute_values(":ut", AttributeValue::N(n.to_string()));
        }
        if let Some(arn) = &patch.execution_arn {
            set.push("execution_arn = :arn");
            u = u.expression_attribute_values(":arn", s(arn));
        }
        if let Some(c) = &patch.cause {
            set.push("#c = :c");
            u = u
                .expression_attribute_names("#c", "cause")
                .expression_attribute_values(":c", to_av(&serde_json::to_value(c).expect("json")));
        }
        if !patch.totals.is_empty() {
            set.push("totals = :tot");
            u = u.expression_attribute_values(
                ":tot",
                to_av(&serde_json::to_value(&patch.totals).expect("json")),
            );
        }
        if !patch.counts.is_empty() {
            set.push("#cn = :cn");
            u = u
                .expression_attribute_names("#cn", "counts")
                .expression_attribute_values(
                    ":cn",
                    to_av(&serde_json::to_value(&patch.counts).expect("json")),
                );
        }
        if let Some(k) = &patch.report_key {
            set.push("report_key = :rk");
            u = u.expression_attribute_values(":rk", s(k));
        }
        let condition = match guard {
            Guard::Predecessors => {
                let mut cond = Vec::new();
                for (i, p) in to.predecessors().iter().enumerate() {
                    let name = format!(":p{i}");
                    cond.push(name.clone());
                    u = u.expression_attribute_values(name, s(p.as_str()));
                }
                if cond.is_empty() {
                    return Err(StoreError::Permanent(format!("no run moves to {to}")));
                }
                format!("#s IN ({})", cond.join(", "))
            }
            Guard::Is => {
                u = u.expression_attribute_values(":is", s(to.as_str()));
                "#s = :is".to_owned()
            }
            Guard::Idle(executions) => {
                if !RunStatus::Executing.can_move_to(to) {
                    return Err(StoreError::Permanent(format!(
                        "an executing run does not move to {to}"
                    )));
                }
                u = u
                    .expression_attribute_values(":ex", s(RunStatus::Executing.as_str()))
                    .expression_attribute_values(":nx", AttributeValue::N(executions.to_string()));
                "#s = :ex AND size(executions) = :nx".to_owned()
            }
        };
        let out = u
            .update_expression(format!("SET {}", set.join(", ")))
            .condition_expression(condition)
            .send()
            .await;
        if condition_met("UpdateItem(run status)", out)? {
            return Ok(Transition::Applied);
        }
        Ok(match self.get(run_id).await? {
            None => Transition::Missing,
            Some(r) if r.status == to => Transition::AlreadyThere,
            Some(r) => Transition::Refused(r.status),
        })
    }
}

impl DynamoRuns {
    /// The store of the table named by `RUNS_TABLE`.
    pub fn from_env(client: aws_sdk_dynamodb::Client) -> Result<Self, crate::config::ConfigError> {
        Ok(DynamoRuns {
            client,
            table: crate::config::required("RUNS_TABLE")?,
        })
    }
}

impl RunStore for DynamoRuns {
    async fn get(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("run_id", s(run_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem(run)", e))?;
        match out.item() {
            Some(i) if i.contains_key("status") => Ok(Some(record_from_item(i)?)),
            _ => Ok(None),
        }
    }

    async fn current(&self, business_key: &str) -> Result<Option<RunRecord>, StoreError> {
        match self.claim(business_key).await? {
            Some((holder, _)) => self.get(&holder).await,
            None => Ok(None),
        }
    }

    async fn submit(
        &self,
        make: &(dyn Fn(u32) -> RunRecord + Sync),
    ) -> Result<(RunRecord, bool), StoreError> {
        let key = make(1).business_key;
        for _ in 0..SUBMIT_ROUNDS_MAX {
            let claim = self.claim(&key).await?;
            let (attempt, prev) = match &claim {
                None => (1, None),
                Some((holder, attempt)) => {
                    if let Some(r) = self.get(holder).await? {
                        if !r.allows_resubmit() {
                            return Ok((r, false));
                        }
                    }
                    (attempt + 1, Some(holder.as_str()))
                }
            };
            let record = make(attempt);
            if self.claim_and_put(&record, prev).await? {
                return Ok((record, true));
            }
        }
        Err(StoreError::Transient(format!(
            "submit for {key}: lost the race {SUBMIT_ROUNDS_MAX} times"
        )))
    }

    async fn register(&self, mut record: RunRecord) -> Result<RunRecord, StoreError> {
        for _ in 0..SUBMIT_ROUNDS_MAX {
            if let Some(r) = self.get(&record.run_id).await? {
                return Ok(r);
            }
            let claim = self.claim(&record.business_key).await?;
            let holder_blocks = match &claim {
                None => None,
                Some((holder, _)) => match self.get(holder).await? {
                    Some(h) if !h.allows_resubmit() => Some(h.run_id),
                    _ => None,
                },
            };
            if let Some(h) = holder_blocks {
                record.duplicate_of = Some(h);
                record.attempt = 0;
                if self.put_new(&record).await? {
                    return Ok(record);
                }
                continue;
            }
            record.attempt = claim.as_ref().map_or(1, |(_, a)| a + 1);
            if self
                .claim_and_put(&record, claim.as_ref().map(|(h, _)| h.as_str()))
                .await?
            {
                return Ok(record);
            }
        }
        Err(StoreError::Transient(format!(
            "register {}: lost the race {SUBMIT_ROUNDS_MAX} times",
            record.run_id
        )))
    }

    async fn transition(
        &self,
        run_id: &str,
        to: RunStatus,
        at: DateTime<Utc>,
        patch: &crate::ports::Patch,
    ) -> Result<Transition, StoreError> {
        self.set_status(run_id, to, at, patch, Guard::Predecessors)
            .await
    }

    async fn end_idle(
        &self,
        run_id: &str,
        to: RunStatus,
        at: DateTime<Utc>,
        patch: &crate::ports::Patch,
        executions: usize,
    ) -> Result<Transition, StoreError> {
        self.set_status(run_id, to, at, patch, Guard::Idle(executions))
            .await
    }

    async fn amend(
        &self,
        run_id: &str,
        status: RunStatus,
        at: DateTime<Utc>,
        patch: &crate::ports::Patch,
    ) -> Result<bool, StoreError> {
        Ok(matches!(
            self.set_status(run_id, status, at, patch, Guard::Is)
                .await?,
            Transition::Applied
        ))
    }

    async fn mark_idle(
        &self,
        run_id: &str,
        name: &str,
        found: &RunCause,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let found = to_av(&serde_json::to_value(found).expect("json"));
        // Into the record's `idle` map; a record written before the map
        // existed gets it made with this entry (conditional, so two
        // executions making it at once cannot drop each other's).
        for nested in [true, false, true] {
            let u = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("run_id", s(run_id))
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(":at", ts(at));
            let u = if nested {
                u.update_expression("SET idle.#n = :f, updated_at = :at")
                    .condition_expression("attribute_exists(#s) AND attribute_exists(idle)")
                    .expression_attribute_names("#n", name)
                    .expression_attribute_values(":f", found.clone())
            } else {
                let one = AttributeValue::M([(name.to_owned(), found.clone())].into());
                u.update_expression("SET idle = :one, updated_at = :at")
                    .condition_expression("attribute_exists(#s) AND attribute_not_exists(idle)")
                    .expression_attribute_values(":one", one)
            };
            if condition_met("UpdateItem(run idle execution)", u.send().await)? {
                return Ok(true);
            }
        }
        // Neither condition held twice over: the record does not exist.
        Ok(false)
    }

    async fn heartbeat(
        &self,
        run_id: &str,
        unit: &str,
        items: u64,
        at: DateTime<Utc>,
    ) -> Result<Heartbeat, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("run_id", s(run_id))
            .update_expression("SET progress.#u = :n, updated_at = :at")
            .condition_expression("#s = :ex")
            .expression_attribute_names("#u", unit)
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":n", AttributeValue::N(items.to_string()))
            .expression_attribute_values(":at", ts(at))
            .expression_attribute_values(":ex", s(RunStatus::Executing.as_str()))
            .send()
            .await;
        if condition_met("UpdateItem(run progress)", out)? {
            return Ok(Heartbeat::Continue);
        }
        Ok(match self.get(run_id).await? {
            None => Heartbeat::NoRecord,
            Some(r) => Heartbeat::Stop(r.status),
        })
    }

    async fn attach(
        &self,
        run_id: &str,
        name: &str,
        execution_arn: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("run_id", s(run_id))
            .update_expression("SET executions.#n = :a, updated_at = :at")
            .condition_expression("#s = :ex")
            .expression_attribute_names("#n", name)
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":a", s(execution_arn))
            .expression_attribute_values(":at", ts(at))
            .expression_attribute_values(":ex", s(RunStatus::Executing.as_str()))
            .send()
            .await;
        condition_met("UpdateItem(run execution)", out)
    }

    async fn plan(
        &self,
        run_id: &str,
        units_total: u32,
        execution_arn: &str,
        at: DateTime<Utc>,
    ) -> Result<Heartbeat, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("run_id", s(run_id))
            .update_expression("SET units_total = :ut, execution_arn = :arn, updated_at = :at")
            .condition_expression("#s = :ex")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":ut", AttributeValue::N(units_total.to_string()))
            .expression_attribute_values(":arn", s(execution_arn))
            .expression_attribute_values(":at", ts(at))
            .expression_attribute_values(":ex", s(RunStatus::Executing.as_str()))
            .send()
            .await;
        if condition_met("UpdateItem(run plan)", out)? {
            return Ok(Heartbeat::Continue);
        }
        Ok(match self.get(run_id).await? {
            None => Heartbeat::NoRecord,
            Some(r) => Heartbeat::Stop(r.status),
        })
    }

    async fn unit_done(
        &self,
        run_id: &str,
        unit: &str,
        rec: &UnitRecord,
    ) -> Result<bool, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("run_id", s(run_id))
            .update_expression("SET units.#u = :r, updated_at = :at")
            .condition_expression("attribute_exists(#s) AND attribute_not_exists(units.#u)")
            .expression_attribute_names("#u", unit)
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":r", to_av(&serde_json::to_value(rec).expect("json")))
            .expression_attribute_values(":at", ts(rec.ended_at))
            .send()
            .await;
        condition_met("UpdateItem(run unit)", out)
    }

    async fn list(
        &self,
        kind: Option<RunKind>,
        status: Option<RunStatus>,
        created_before: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let limit = limit.min(LIST_MAX);
        let statuses: Vec<RunStatus> = match status {
            Some(s) => vec![s],
            None => RunStatus::ALL.to_vec(),
        };
        let mut out = Vec::new();
        for st in statuses {
            out.extend(self.query_status(st, created_before, kind, limit).await?);
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        out.truncate(limit as usize);
        Ok(out)
    }
}

/// Records by run id, and claims: business key → (holder, attempt).
type MemoryState = (HashMap<String, RunRecord>, HashMap<String, (String, u32)>);

/// The run store in memory, with the same contract (handler tests).
#[derive(Default)]
pub struct MemoryRuns {
    state: Mutex<MemoryState>,
    /// Test hook: cancel the run after this many heartbeats (an operator
    /// canceling while partitions run).
    cancel_after: Mutex<Option<u32>>,
    /// Test hook: the next `attach` finds its run moved to this status first
    /// (a run ending between a landing's claim and its attach).
    end_before_attach: Mutex<Option<RunStatus>>,
}

impl MemoryRuns {
    /// Ends the run that the next `attach` names, just before it applies.
    pub fn end_before_next_attach(&self, to: RunStatus) {
        *self.end_before_attach.lock().unwrap() = Some(to);
    }

    /// Cancels whatever run is heartbeating once `n` heartbeats have been taken.
    pub fn cancel_after_heartbeats(&self, n: u32) {
        *self.cancel_after.lock().unwrap() = Some(n);
    }

    pub fn records(&self) -> Vec<RunRecord> {
        self.state.lock().unwrap().0.values().cloned().collect()
    }
    /// Puts `r` as it is, claiming its key (test set-up).
    pub fn insert(&self, r: RunRecord) {
        let mut st = self.state.lock().unwrap();
        st.1.insert(r.business_key.clone(), (r.run_id.clone(), r.attempt));
        st.0.insert(r.run_id.clone(), r);
    }
}

/// The in-memory store's status change, with its patch.
fn apply_transition(
    r: &mut RunRecord,
    to: RunStatus,
    at: DateTime<Utc>,
    patch: &crate::ports::Patch,
) -> Transition {
    if r.status == to {
        return Transition::AlreadyThere;
    }
    if !r.status.can_move_to(to) {
        return Transition::Refused(r.status);
    }
    r.status = to;
    if to == RunStatus::Executing {
        r.started_at.get_or_insert(at);
    }
    if to.is_terminal() {
        r.ended_at = Some(at);
    }
    apply_patch(r, at, patch);
    Transition::Applied
}

fn apply_patch(r: &mut RunRecord, at: DateTime<Utc>, patch: &crate::ports::Patch) {
    r.updated_at = at;
    if let Some(n) = patch.units_total {
        r.units_total = n;
    }
    if let Some(a) = &patch.execution_arn {
        r.execution_arn = Some(a.clone());
    }
    if let Some(c) = &patch.cause {
        r.cause = Some(c.clone());
    }
    if !patch.totals.is_empty() {
        r.totals = patch.totals.clone();
    }
    if !patch.counts.is_empty() {
        r.counts = patch.counts.clone();
    }
    if let Some(k) = &patch.report_key {
        r.report_key = Some(k.clone());
    }
}

impl RunStore for MemoryRuns {
    async fn get(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.state.lock().unwrap().0.get(run_id).cloned())
    }

    async fn current(&self, business_key: &str) -> Result<Option<RunRecord>, StoreError> {
        let st = self.state.lock().unwrap();
        Ok(st
            .1
            .get(business_key)
            .and_then(|(h, _)| st.0.get(h).cloned()))
    }

    async fn submit(
        &self,
        make: &(dyn Fn(u32) -> RunRecord + Sync),
    ) -> Result<(RunRecord, bool), StoreError> {
        let key = make(1).business_key;
        let mut st = self.state.lock().unwrap();
        let attempt = match st.1.get(&key) {
            None => 1,
            Some((h, a)) => {
                if let Some(r) = st.0.get(h) {
                    if !r.allows_resubmit() {
                        return Ok((r.clone(), false));
                    }
                }
                a + 1
            }
        };
        let r = make(attempt);
        st.1.insert(key, (r.run_id.clone(), attempt));
        st.0.insert(r.run_id.clone(), r.clone());
        Ok((r, true))
    }

    async fn register(&self, mut record: RunRecord) -> Result<RunRecord, StoreError> {
        let mut st = self.state.lock().unwrap();
        if let Some(r) = st.0.get(&record.run_id) {
            return Ok(r.clone());
        }
        let holder = st.1.get(&record.business_key).cloned();
        match holder.as_ref().and_then(|(h, _)| st.0.get(h)) {
            Some(h) if !h.allows_resubmit() => {
                record.duplicate_of = Some(h.run_id.clone());
                record.attempt = 0;
            }
            _ => {
                record.attempt = holder.map_or(1, |(_, a)| a + 1);
                st.1.insert(
                    record.business_key.clone(),
                    (record.run_id.clone(), record.attempt),
                );
            }
        }
        st.0.insert(record.run_id.clone(), record.clone());
        Ok(record)
    }

    async fn transition(
        &self,
        run_id: &str,
        to: RunStatus,
        at: DateTime<Utc>,
        patch: &crate::ports::Patch,
    ) -> Result<Transition, StoreError> {
        let mut st = self.state.lock().unwrap();
        Ok(match st.0.get_mut(run_id) {
            None => Transition::Missing,
            Some(r) => apply_transition(r, to, at, patch),
        })
    }

    async fn end_idle(
        &self,
        run_id: &str,
        to: RunStatus,
        at: DateTime<Utc>,
        patch: &crate::ports::Patch,
        executions: usize,
    ) -> Result<Transition, StoreError> {
        let mut st = self.state.lock().unwrap();
        Ok(match st.0.get_mut(run_id) {
            None => Transition::Missing,
            Some(r) if r.status == to => Transition::AlreadyThere,
            Some(r) if r.status != RunStatus::Executing || r.executions.len() != executions => {
                Transition::Refused(r.status)
            }
            Some(r) => apply_transition(r, to, at, patch),
        })
    }

    async fn amend(
        &self,
        run_id: &str,
        status: RunStatus,
        at: DateTime<Utc>,
        patch: &crate::ports::Patch,
    ) -> Result<bool, StoreError> {
        let mut st = self.state.lock().unwrap();
        Ok(match st.0.get_mut(run_id) {
            Some(r) if r.status == status => {
                apply_patch(r, at, patch);
                true
            }
            _ => false,
        })
    }

    async fn mark_idle(
        &self,
        run_id: &str,
        name: &str,
        found: &RunCause,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut st = self.state.lock().unwrap();
        Ok(match st.0.get_mut(run_id) {
            Some(r) => {
                r.idle.insert(name.into(), found.clone());
                r.updated_at = at;
                true
            }
            None => false,
        })
    }

    async fn heartbeat(
        &self,
        run_id: &str,
        unit: &str,
        items: u64,
        at: DateTime<Utc>,
    ) -> Result<Heartbeat, StoreError> {
        let mut st = self.state.lock().unwrap();
        {
            let mut c = self.cancel_after.lock().unwrap();
            match *c {
                Some(0) => {
                    if let Some(r) = st.0.get_mut(run_id) {
                        r.status = RunStatus::Canceled;
                    }
                    *c = None;
                }
                Some(n) => *c = Some(n - 1),
                None => {}
            }
        }
        Ok(match st.0.get_mut(run_id) {
            None => Heartbeat::NoRecord,
            Some(r) if r.status == RunStatus::Executing => {
                r.progress.insert(unit.into(), items);
                r.updated_at = at;
                Heartbeat::Continue
            }
            Some(r) => Heartbeat::Stop(r.status),
        })
    }

    async fn attach(
        &self,
        run_id: &str,
        name: &str,
        execution_arn: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut st = self.state.lock().unwrap();
        if let Some(to) = self.end_before_attach.lock().unwrap().take() {
            if let Some(r) = st.0.get_mut(run_id) {
                apply_transition(r, to, at, &crate::ports::Patch::default());
            }
        }
        Ok(match st.0.get_mut(run_id) {
            Some(r) if r.status == RunStatus::Executing => {
                r.executions.insert(name.into(), execution_arn.into());
                r.updated_at = at;
                true
            }
            _ => false,
        })
    }

    async fn plan(
        &self,
        run_id: &str,
        units_total: u32,
        execution_arn: &str,
        at: DateTime<Utc>,
    ) -> Result<Heartbeat, StoreError> {
        let mut st = self.state.lock().unwrap();
        Ok(match st.0.get_mut(run_id) {
            None => Heartbeat::NoRecord,
            Some(r) if r.status == RunStatus::Executing => {
                r.units_total = units_total;
                r.execution_arn = Some(execution_arn.into());
                r.updated_at = at;
                Heartbeat::Continue
            }
            Some(r) => Heartbeat::Stop(r.status),
        })
    }

    async fn unit_done(
        &self,
        run_id: &str,
        unit: &str,
        rec: &UnitRecord,
    ) -> Result<bool, StoreError> {
        let mut st = self.state.lock().unwrap();
        Ok(match st.0.get_mut(run_id) {
            Some(r) if !r.units.contains_key(unit) => {
                r.units.insert(unit.into(), rec.clone());
                true
            }
            _ => false,
        })
    }

    async fn list(
        &self,
        kind: Option<RunKind>,
        status: Option<RunStatus>,
        created_before: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let mut v: Vec<RunRecord> = self
            .records()
            .into_iter()
            .filter(|r| kind.is_none_or(|k| r.kind == k))
            .filter(|r| status.is_none_or(|s| r.status == s))
            .filter(|r| created_before.is_none_or(|t| r.created_at < t))
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        v.truncate(limit.min(LIST_MAX) as usize);
        Ok(v)
    }
}

/// Kept for the report and the aggregate: the totals as run-record rows.
pub fn run_totals(totals: &[tally_domain::cob::CurrencyTotal]) -> Vec<RunTotal> {
    totals
        .iter()
        .map(|t| RunTotal {
            currency: t.currency.to_string(),
            amount: t.amount.to_string(),
            postings: t.postings,
        })
        .collect()
}

/// A cause from an error name and message.
/// Joins a reconciliation execution to the live run of its program and
/// date, or starts attempt N+1 when the last one has ended (a landing after
/// the end is a new version to reconcile), and names the execution in it.
/// Two sides landing at once join one run: `submit` is a conditional claim
/// on the business key. A run that ends between the claim and the attach
/// refuses the attach, and the landing claims again (the next attempt).
/// Returns the run and whether it is new.
pub async fn join_recon_run<U: RunStore>(
    runs: &U,
    program: &str,
    date: chrono::NaiveDate,
    execution_arn: Option<&str>,
) -> Result<(RunRecord, bool), StoreError> {
    for _ in 0..JOIN_ROUNDS {
        let now = Utc::now();
        let (run, new) = runs
            .submit(&|attempt| RunRecord::new_recon(program, date, attempt, now))
            .await?;
        let Some(arn) = execution_arn else {
            return Ok((run, new));
        };
        if runs
            .attach(&run.run_id, execution_name(arn), arn, now)
            .await?
        {
            return Ok((run, new));
        }
        // The run ended between the claim and the attach: this landing is
        // not part of it, so it goes to the next attempt.
    }
    Err(StoreError::Transient(format!(
        "run of {program} {date}: ended under {JOIN_ROUNDS} joins in a row"
    )))
}

/// How many times a landing tries to join a live run before it gives up
/// (each failure means a run ended between its claim and its attach).
const JOIN_ROUNDS: usize = 4;

/// An execution's name: the last part of its ARN (the key of a run's
/// `executions` and `idle`).
pub fn execution_name(arn: &str) -> &str {
    arn.rsplit(':').next().unwrap_or(arn)
}

pub fn cause(error: impl Into<String>, cause: impl Into<String>) -> RunCause {
    RunCause {
        error: error.into(),
        cause: cause.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_domain::NaiveDate;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_record_survives_the_trip_through_dynamodb_attributes() {
        let d: NaiveDate = "2026-11-20".parse().unwrap();
        let mut r = RunRecord::new_cob(d, 3, RunStatus::Executing, t("2026-11-21T01:00:00Z"));
        r.input =
            serde_json::json!({"business_date": "2026-11-20", "options": {"partition_count": 4}});
        r.units_total = 4;
        r.units.insert(
            "p1".into(),
            UnitRecord {
                started_at: t("2026-11-21T01:00:00.125Z"),
                ended_at: t("2026-11-21T01:02:00Z"),
                items: 25_000,
                postings: 24_990,
                duration_ms: 120_000,
                outcome: "SUCCEEDED".into(),
            },
        );
        r.progress.insert("p2".into(), 1200);
        r.cause = Some(cause("AccrualRunFailed", "partition 3"));
        r.totals = vec![RunTotal {
            currency: "JPY".into(),
            amount: "1200".into(),
            postings: 3,
        }];
        let item = record_item(&r);
        assert!(matches!(item.get("input"), Some(AttributeValue::S(_))));
        assert!(matches!(item.get("units"), Some(AttributeValue::M(_))));
        assert_eq!(record_from_item(&item).unwrap(), r);
    }

    #[tokio::test]
    async fn a_second_submit_for_a_live_or_successful_key_returns_the_same_run() {
        let runs = MemoryRuns::default();
        let d: NaiveDate = "2026-11-20".parse().unwrap();
        let now = t("2026-11-21T01:00:00Z");
        let make = |a: u32| RunRecord::new_cob(d, a, RunStatus::Initiated, now);
        let (a, created) = runs.submit(&make).await.unwrap();
        assert!(created);
        let (b, created) = runs.submit(&make).await.unwrap();
        assert!(!created);
        assert_eq!(a.run_id, b.run_id);
        // FAILURE lets the date be submitted again, as attempt 2.
        let p = crate::ports::Patch::default();
        assert_eq!(
            runs.transition(&a.run_id, RunStatus::Failure, now, &p)
                .await
                .unwrap(),
            Transition::Applied
        );
        let (c, created) = runs.submit(&make).await.unwrap();
        assert!(created);
        assert_eq!(c.run_id, "cob-2026-11-20-a2");
        assert_eq!(
            runs.current("cob#2026-11-20")
                .await
                .unwrap()
                .unwrap()
                .run_id,
            c.run_id
        );
        // A terminal status never moves again.
        assert_eq!(
            runs.transition(&a.run_id, RunStatus::Success, now, &p)
                .await
                .unwrap(),
            Transition::Refused(RunStatus::Failure)
        );
    }

    #[tokio::test]
    async fn a_landing_whose_run_ends_before_it_attaches_joins_the_next_attempt() {
        let runs = MemoryRuns::default();
        let d: NaiveDate = "2026-11-20".parse().unwrap();
        let arn = |n: &str| format!("arn:aws:states:us-east-1:0:execution:recon:{n}");
        let (first, new) = join_recon_run(&runs, "ACME", d, Some(&arn("e1")))
            .await
            .unwrap();
        assert!(new);
        // e2 claims the live run, which then ends before e2 attaches.
        runs.end_before_next_attach(RunStatus::Success);
        let (second, new) = join_recon_run(&runs, "ACME", d, Some(&arn("e2")))
            .await
            .unwrap();
        assert!(new);
        assert_eq!(second.run_id, "recon-ACME-2026-11-20-a2");
        let first = runs.get(&first.run_id).await.unwrap().unwrap();
        assert_eq!(first.status, RunStatus::Success);
        assert_eq!(first.executions.keys().collect::<Vec<_>>(), ["e1"]);
        let second = runs.get(&second.run_id).await.unwrap().unwrap();
        assert_eq!(second.executions.keys().collect::<Vec<_>>(), ["e2"]);
        // An ended run names no one new.
        assert!(!runs
            .attach(&first.run_id, "e3", &arn("e3"), Utc::now())
            .await
            .unwrap());
    }
}
