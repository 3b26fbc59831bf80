//! Fault plans and the decisions of the test-only fault proxy.
//!
//! The proxy (`src/main.rs`) forwards every request to the local stack and,
//! for requests a plan's rule matches, injects one fault instead of (or
//! around) the real answer. Which request gets a fault is a pure function of
//! the plan's seed, the request's sequence number and the rule, so a plan
//! injects the same share of faults on every run; which *operation* gets the
//! n-th number depends on the order requests arrive in.
//!
//! Control endpoints, on the proxy's own address:
//! - `PUT /_fault/plan` with a [`Plan`] as JSON replaces the plan and zeroes
//!   the counters;
//! - `DELETE /_fault/plan` stops injecting (counters kept);
//! - `GET /_fault/stats` returns [`Stats`];
//! - `GET /_fault/health` answers 200.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What to inject.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// HTTP 400 `ProvisionedThroughputExceededException` (DynamoDB's own
    /// throttle); the request never reaches the stack.
    Throttle,
    /// HTTP 400 `ThrottlingException` (the control-plane throttle).
    ThrottlingException,
    /// `BatchWriteItem` only: about half of the request's items are held
    /// back and returned as `UnprocessedItems`; the rest are written.
    Unprocessed,
    /// HTTP 500 `InternalServerError` (or the protocol's own internal
    /// error); the request never reaches the stack.
    Http500,
    /// HTTP 503 `ServiceUnavailable`; the request never reaches the stack.
    Http503,
    /// The request is forwarded after `latency_ms`.
    #[default]
    Latency,
    /// The request is forwarded and applied, then the connection is closed
    /// without an answer: the client cannot tell whether it happened.
    Drop,
    /// The request is forwarded and applied, then the process that signed
    /// it (its access key) is killed with SIGKILL before it hears the
    /// answer: a crash with a write in flight, between the write and
    /// whatever the process would have done next (a checkpoint, a heartbeat).
    KillCaller,
    /// The process that signed the request is killed before the request is
    /// forwarded: a crash just before a write.
    KillCallerBefore,
    /// A Lambda `Invoke`: the invocation is forwarded and runs on, but the
    /// caller is answered at once with HTTP 500 `ServiceException`, so a
    /// retry overlaps the attempt still running.
    Detach,
    /// An S3 `GetObject`: the answer's headers promise the whole object, the
    /// body stops half way and the connection closes.
    TruncateBody,
    /// An EventBridge `PutEvents`: about half of the entries are not
    /// forwarded and come back failed (`InternalFailure`); the rest are put.
    FailedEntries,
    /// A `TransactWriteItems` is refused, not forwarded, with
    /// `TransactionCanceledException` whose reasons are `None` but for one
    /// `TransactionConflict`.
    TransactionConflict,
    /// A `TransactWriteItems` is forwarded; when the stack cancels it (a
    /// condition failed), one of the `None` reasons becomes
    /// `TransactionConflict`: a conflict beside `ConditionalCheckFailed`.
    MixedCancellation,
}

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::Throttle,
        Kind::ThrottlingException,
        Kind::Unprocessed,
        Kind::Http500,
        Kind::Http503,
        Kind::Latency,
        Kind::Drop,
        Kind::KillCaller,
        Kind::KillCallerBefore,
        Kind::Detach,
        Kind::TruncateBody,
        Kind::FailedEntries,
        Kind::TransactionConflict,
        Kind::MixedCancellation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Throttle => "throttle",
            Kind::ThrottlingException => "throttling_exception",
            Kind::Unprocessed => "unprocessed",
            Kind::Http500 => "http500",
            Kind::Http503 => "http503",
            Kind::Latency => "latency",
            Kind::Drop => "drop",
            Kind::KillCaller => "kill_caller",
            Kind::KillCallerBefore => "kill_caller_before",
            Kind::Detach => "detach",
            Kind::TruncateBody => "truncate_body",
            Kind::FailedEntries => "failed_entries",
            Kind::TransactionConflict => "transaction_conflict",
            Kind::MixedCancellation => "mixed_cancellation",
        }
    }

    /// The one operation a kind is meaningful for, if it has one.
    pub fn only_operation(self) -> Option<&'static str> {
        match self {
            Kind::Unprocessed => Some("BatchWriteItem"),
            Kind::Detach => Some("Invoke"),
            Kind::TruncateBody => Some("GetObject"),
            Kind::FailedEntries => Some("PutEvents"),
            Kind::TransactionConflict | Kind::MixedCancellation => Some("TransactWriteItems"),
            _ => None,
        }
    }
}

/// One rule: requests whose operation is in `operations` (all requests when
/// empty), whose body holds `body_contains` when it is set, and whose
/// caller's identity holds `caller_contains` when that is set, get `kind`
/// with probability `rate`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub kind: Kind,
    pub rate: f64,
    #[serde(default)]
    pub operations: Vec<String>,
    /// For `latency`: the delay added (at most 30 s).
    #[serde(default)]
    pub latency_ms: u64,
    /// Only requests whose body contains this text (1 to 256 bytes), such
    /// as a key prefix: a test's faults then stay off other work on the
    /// stack. The body of a request the rule could apply to is read whole
    /// (at most 32 MB) before the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// Only requests whose signer (the gateway's `X-Tally-Caller`: the
    /// assumed-role session, such as `tally-CobPartitionFunctionRole/...`,
    /// or `operator`) contains this text (1 to 256 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_contains: Option<String>,
}

impl Rule {
    fn applies_to(&self, op: &str) -> bool {
        (self.operations.is_empty() || self.operations.iter().any(|o| o == op))
            && self.kind.only_operation().is_none_or(|only| only == op)
    }
}

/// A fault plan. Rules are tried in order; the first that fires wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub seed: u64,
    pub rules: Vec<Rule>,
    /// Stop injecting after this many faults (default 100,000).
    #[serde(default = "Plan::default_max_faults")]
    pub max_faults: u64,
    /// Stop injecting this long after the plan is set (default 1 h).
    #[serde(default = "Plan::default_expires_after_s")]
    pub expires_after_s: u64,
}

pub const LATENCY_MS_MAX: u64 = 30_000;
pub const BODY_CONTAINS_MAX: usize = 256;
pub const EXPIRES_AFTER_S_MAX: u64 = 6 * 3600;

impl Plan {
    fn default_max_faults() -> u64 {
        100_000
    }
    fn default_expires_after_s() -> u64 {
        3600
    }

    /// One plan of `kind` at `rate` on `operations`.
    pub fn one(seed: u64, kind: Kind, rate: f64, operations: &[&str]) -> Plan {
        Plan {
            seed,
            rules: vec![Rule {
                kind,
                rate,
                operations: operations.iter().map(|s| (*s).to_owned()).collect(),
                ..Rule::default()
            }],
            max_faults: Plan::default_max_faults(),
            expires_after_s: Plan::default_expires_after_s(),
        }
    }

    /// Checks the bounds; the error names the field and what was expected.
    pub fn validate(&self) -> Result<(), String> {
        if self.rules.is_empty() {
            return Err("rules: expected at least one rule".into());
        }
        for (i, r) in self.rules.iter().enumerate() {
            if !(0.0..=1.0).contains(&r.rate) || r.rate.is_nan() {
                return Err(format!("rules[{i}].rate: expected 0..=1, got {}", r.rate));
            }
            if r.kind == Kind::Latency && (r.latency_ms == 0 || r.latency_ms > LATENCY_MS_MAX) {
                return Err(format!(
                    "rules[{i}].latency_ms: expected 1..={LATENCY_MS_MAX} for latency, got {}",
                    r.latency_ms
                ));
            }
            if let Some(b) = &r.body_contains {
                if b.is_empty() || b.len() > BODY_CONTAINS_MAX {
                    return Err(format!(
                        "rules[{i}].body_contains: expected 1..={BODY_CONTAINS_MAX} bytes, got {}",
                        b.len()
                    ));
                }
            }
            if let Some(b) = &r.caller_contains {
                if b.is_empty() || b.len() > BODY_CONTAINS_MAX {
                    return Err(format!(
                        "rules[{i}].caller_contains: expected 1..={BODY_CONTAINS_MAX} bytes, got {}",
                        b.len()
                    ));
                }
            }
            if let Some(only) = r.kind.only_operation() {
                if r.operations.iter().any(|o| o != only) {
                    return Err(format!(
                        "rules[{i}].operations: {} applies to {only} only",
                        r.kind.as_str()
                    ));
                }
            }
        }
        if self.expires_after_s == 0 || self.expires_after_s > EXPIRES_AFTER_S_MAX {
            return Err(format!(
                "expires_after_s: expected 1..={EXPIRES_AFTER_S_MAX}, got {}",
                self.expires_after_s
            ));
        }
        Ok(())
    }
}

/// Counters since the plan was set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests forwarded or answered by the proxy (control calls excluded).
    pub requests: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Faults injected, by operation.
    pub by_operation: BTreeMap<String, u64>,
    /// Items held back as `UnprocessedItems` (and `PutEvents` entries failed).
    pub items_withheld: u64,
    /// Processes the proxy had killed (`kill_caller`, `kill_caller_before`).
    #[serde(default)]
    pub kills: u64,
}

impl Stats {
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }
}

/// The operation of a request: the part of `X-Amz-Target` after the last
/// `.` (`DynamoDB_20120810.BatchWriteItem` → `BatchWriteItem`); a Lambda
/// `Invoke`; S3's from the method, path and query (`GetObject`,
/// `PutObject`, `CopyObject`, `HeadObject`, `ListObjectsV2`, multipart
/// steps, `DeleteObject`); else the HTTP method and first path segment.
/// A query-protocol call (SNS, STS) names itself in its form body:
/// [`query_action`].
pub fn operation(target: Option<&str>, method: &str, path: &str) -> String {
    operation_of(target, method, path, false)
}

/// [`operation`], knowing whether the request copies an object.
pub fn operation_of(target: Option<&str>, method: &str, path: &str, copy: bool) -> String {
    if let Some(t) = target.filter(|t| !t.is_empty()) {
        return t.rsplit('.').next().unwrap_or(t).to_owned();
    }
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    if path_only.starts_with("/20") && path_only.ends_with("/invocations") {
        return "Invoke".into();
    }
    let q = |k: &str| {
        query
            .split('&')
            .any(|p| p == k || p.starts_with(&format!("{k}=")))
    };
    if let Some(id) = query.split('&').find_map(|p| p.strip_prefix("x-id=")) {
        return id.to_owned();
    }
    let mut parts = path_only.trim_start_matches('/').splitn(2, '/');
    let bucket = parts.next().unwrap_or("");
    let key = parts.next().unwrap_or("");
    let s3 = match (method, key.is_empty()) {
        ("GET", false) if q("uploadId") => "ListParts",
        ("GET", false) => "GetObject",
        ("HEAD", false) => "HeadObject",
        ("PUT", false) if q("partNumber") => "UploadPart",
        ("PUT", false) if copy => "CopyObject",
        ("PUT", false) => "PutObject",
        ("POST", false) if q("uploads") => "CreateMultipartUpload",
        ("POST", false) if q("uploadId") => "CompleteMultipartUpload",
        ("DELETE", false) if q("uploadId") => "AbortMultipartUpload",
        ("DELETE", false) => "DeleteObject",
        ("GET", true) if !bucket.is_empty() && q("list-type") => "ListObjectsV2",
        _ => "",
    };
    if !s3.is_empty() {
        return s3.to_owned();
    }
    format!("{method} {bucket}")
}

/// The `Action` of a query-protocol form body (`Action=Publish&...`).
pub fn query_action(body: &[u8]) -> Option<String> {
    std::str::from_utf8(body).ok()?.split('&').find_map(|p| {
        p.strip_prefix("Action=")
            .map(|a| a.replace('+', " "))
            .filter(|a| !a.is_empty())
    })
}

/// The access key that signed a request (its SigV4 `Credential=`).
pub fn access_key(authorization: &str) -> Option<&str> {
    let rest = authorization.split("Credential=").nth(1)?;
    rest.split('/').next().filter(|k| !k.is_empty())
}

/// splitmix64: a good 64-bit mix of a counter, enough for fault coin flips.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// True with probability `rate` for this (seed, request, salt).
pub fn coin(seed: u64, request: u64, salt: u64, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    let x = mix(seed ^ mix(request ^ mix(salt)));
    // 53 bits of the draw as a fraction in [0, 1).
    ((x >> 11) as f64) / ((1u64 << 53) as f64) < rate
}

/// The plan in force and its counters.
#[derive(Debug)]
pub struct Injector {
    plan: Option<(Plan, Instant)>,
    stats: Stats,
}

/// What the proxy should do with one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub kind: Kind,
    pub latency: Duration,
    pub seed: u64,
    pub request: u64,
}

impl Default for Injector {
    fn default() -> Self {
        Self::new()
    }
}

impl Injector {
    pub fn new() -> Self {
        Injector {
            plan: None,
            stats: Stats::default(),
        }
    }

    pub fn set(&mut self, plan: Plan, now: Instant) -> Result<(), String> {
        plan.validate()?;
        self.plan = Some((plan, now));
        self.stats = Stats::default();
        Ok(())
    }

    pub fn clear(&mut self) {
        self.plan = None;
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether a request for `op` must be read whole before `decide`: some
    /// rule that could apply to it looks into bodies.
    pub fn needs_body(&self, op: &str) -> bool {
        self.plan.as_ref().is_some_and(|(plan, _)| {
            plan.rules
                .iter()
                .any(|r| r.body_contains.is_some() && r.applies_to(op))
        })
    }

    /// Counts the request and decides whether it gets a fault. `body` is the
    /// request's body when `needs_body` asked for it; a rule that looks into
    /// bodies never fires without one.
    pub fn decide(&mut self, op: &str, body: Option<&[u8]>, now: Instant) -> Option<Decision> {
        self.decide_for(op, body, "", now)
    }

    /// [`Injector::decide`] for a request from `caller` (the gateway's
    /// `X-Tally-Caller`; empty when unknown, which no `caller_contains` matches).
    pub fn decide_for(
        &mut self,
        op: &str,
        body: Option<&[u8]>,
        caller: &str,
        now: Instant,
    ) -> Option<Decision> {
        self.stats.requests += 1;
        let request = self.stats.requests;
        let (plan, set_at) = self.plan.as_ref()?;
        if now.duration_since(*set_at) >= Duration::from_secs(plan.expires_after_s)
            || self.stats.total_faults() >= plan.max_faults
        {
            return None;
        }
        let (seed, rules) = (plan.seed, plan.rules.clone());
        for (i, rule) in rules.iter().enumerate() {
            let applies = rule.applies_to(op)
                && rule.body_contains.as_ref().is_none_or(|needle| {
                    body.is_some_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
                })
                && rule
                    .caller_contains
                    .as_ref()
                    .is_none_or(|c| !caller.is_empty() && caller.contains(c.as_str()));
            if applies && coin(seed, request, i as u64, rule.rate) {
                return Some(Decision {
                    kind: rule.kind,
                    latency: Duration::from_millis(rule.latency_ms),
                    seed,
                    request,
                });
            }
        }
        None
    }

    /// Records a process the proxy had killed.
    pub fn count_kill(&mut self) {
        self.stats.kills += 1;
    }

    /// Records a fault that was injected.
    pub fn count(&mut self, kind: Kind, op: &str, withheld: u64) {
        *self
            .stats
            .faults
            .entry(kind.as_str().to_owned())
            .or_default() += 1;
        *self.stats.by_operation.entry(op.to_owned()).or_default() += 1;
        self.stats.items_withheld += withheld;
    }
}

/// How a service speaks, which decides what an error answer looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `X-Amz-Target` JSON (DynamoDB, SQS, Step Functions, EventBridge, ECS…).
    Json,
    /// Form body with `Action=` (SNS, STS): XML errors.
    Query,
    /// S3's REST XML.
    S3,
    /// Lambda's REST JSON (`x-amzn-ErrorType`).
    Lambda,
}

impl Protocol {
    pub fn of(target: Option<&str>, content_type: Option<&str>, path: &str) -> Protocol {
        if target.is_some_and(|t| !t.is_empty()) {
            Protocol::Json
        } else if content_type.is_some_and(|c| c.contains("x-www-form-urlencoded")) {
            Protocol::Query
        } else if path.starts_with("/20") && path.contains("/functions/") {
            Protocol::Lambda
        } else {
            Protocol::S3
        }
    }
}

/// A fault the proxy answers itself: status, headers, body.
pub type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);

/// A fault answered by the proxy itself, in the shape the service's
/// protocol gives (the SDKs parse the error code out of it).
pub fn error_answer(kind: Kind, protocol: Protocol) -> Option<Answer> {
    let (status, json_type, code, message) = match kind {
        Kind::Throttle => (
            400,
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "ProvisionedThroughputExceededException",
            "fault-proxy: injected ProvisionedThroughputExceededException",
        ),
        Kind::ThrottlingException => (
            400,
            "com.amazon.coral.availability#ThrottlingException",
            "Throttling",
            "fault-proxy: injected ThrottlingException",
        ),
        Kind::Http500 => (
            500,
            "com.amazonaws.dynamodb.v20120810#InternalServerError",
            "InternalError",
            "fault-proxy: injected internal error",
        ),
        Kind::Http503 => (
            503,
            "com.amazon.coral.availability#ServiceUnavailableException",
            "ServiceUnavailable",
            "fault-proxy: injected service unavailable",
        ),
        _ => return None,
    };
    Some(match protocol {
        Protocol::Json => (
            status,
            vec![("content-type", "application/x-amz-json-1.0".into())],
            serde_json::to_vec(&serde_json::json!({"__type": json_type, "message": message}))
                .expect("json"),
        ),
        Protocol::Lambda => {
            let code = match kind {
                Kind::Throttle | Kind::ThrottlingException => "TooManyRequestsException",
                _ => "ServiceException",
            };
            let status = if code == "TooManyRequestsException" { 429 } else { status };
            (
                status,
                vec![
                    ("content-type", "application/json".into()),
                    ("x-amzn-errortype", code.into()),
                ],
                serde_json::to_vec(&serde_json::json!({"Type": "Service", "message": message}))
                    .expect("json"),
            )
        }
        Protocol::S3 => {
            let code = match kind {
                Kind::Throttle | Kind::ThrottlingException => "SlowDown",
                _ => code,
            };
            let status = if code == "SlowDown" { 503 } else { status };
            (
                status,
                vec![("content-type", "application/xml".into())],
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>FAULT</RequestId></Error>").into_bytes(),
            )
        }
        Protocol::Query => (
            status,
            vec![("content-type", "text/xml".into())],
            format!("<ErrorResponse><Error><Type>{}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>FAULT</RequestId></ErrorResponse>",
                    if status >= 500 { "Receiver" } else { "Sender" }).into_bytes(),
        ),
    })
}

/// The `TransactionCanceledException` of a `TransactWriteItems` with `n`
/// items: every reason `None` but one `TransactionConflict`.
pub fn conflict_answer(n: usize, seed: u64, request: u64) -> Value {
    let n = n.max(1);
    let at = (mix(seed ^ mix(request ^ 0xC0F1)) % n as u64) as usize;
    let reasons: Vec<Value> = (0..n)
        .map(|i| {
            if i == at {
                serde_json::json!({"Code": "TransactionConflict",
                                   "Message": "Transaction is ongoing for the item"})
            } else {
                serde_json::json!({"Code": "None"})
            }
        })
        .collect();
    let codes: Vec<&str> = (0..n)
        .map(|i| {
            if i == at {
                "TransactionConflict"
            } else {
                "None"
            }
        })
        .collect();
    serde_json::json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": format!("Transaction cancelled, please refer cancellation reasons for specific reasons [{}]", codes.join(", ")),
        "CancellationReasons": reasons,
    })
}

/// A stack's own `TransactionCanceledException` with one of its `None`
/// reasons turned into `TransactionConflict`; `None` when the answer is not
/// a cancellation or has no `None` reason left.
pub fn add_conflict(answer: &Value, seed: u64, request: u64) -> Option<Value> {
    let ty = answer.get("__type")?.as_str()?;
    if !ty.ends_with("TransactionCanceledException") {
        return None;
    }
    let reasons = answer.get("CancellationReasons")?.as_array()?;
    let free: Vec<usize> = reasons
        .iter()
        .enumerate()
        .filter(|(_, r)| r.get("Code").and_then(Value::as_str) == Some("None"))
        .map(|(i, _)| i)
        .collect();
    if free.is_empty() {
        return None;
    }
    let at = free[(mix(seed ^ mix(request ^ 0xC0F2)) % free.len() as u64) as usize];
    let mut out = answer.clone();
    out["CancellationReasons"][at] = serde_json::json!({
        "Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"});
    Some(out)
}

/// Splits a `PutEvents` request: the request to forward (without the
/// failed entries; `None` when none is left) and the failed entries'
/// positions. About half fail, at least one.
pub fn fail_entries(
    body: &Value,
    seed: u64,
    request: u64,
) -> Result<(Option<Value>, Vec<usize>), String> {
    let entries = body
        .get("Entries")
        .and_then(Value::as_array)
        .ok_or("PutEvents body without Entries")?;
    let mut failed: Vec<usize> = (0..entries.len())
        .filter(|i| coin(seed, request, 2_000 + *i as u64, 0.5))
        .collect();
    if failed.is_empty() && !entries.is_empty() {
        failed.push(0);
    }
    let kept: Vec<Value> = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| !failed.contains(i))
        .map(|(_, e)| e.clone())
        .collect();
    let forward = (!kept.is_empty()).then(|| {
        let mut b = body.clone();
        b["Entries"] = Value::Array(kept);
        b
    });
    Ok((forward, failed))
}

/// The `PutEvents` answer for `total` entries: the stack's answer to the
/// forwarded ones (in order) with the failed ones put back in their places.
pub fn merge_entries(answer: Option<&Value>, failed: &[usize], total: usize) -> Value {
    let mut put = answer
        .and_then(|a| a.get("Entries"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter();
    let prior = answer
        .and_then(|a| a.get("FailedEntryCount"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let entries: Vec<Value> = (0..total)
        .map(|i| {
            if failed.contains(&i) {
                serde_json::json!({"ErrorCode": "InternalFailure",
                                   "ErrorMessage": "fault-proxy: injected entry failure"})
            } else {
                put.next().unwrap_or_else(|| serde_json::json!({}))
            }
        })
        .collect();
    serde_json::json!({"FailedEntryCount": prior + failed.len() as u64, "Entries": entries})
}

/// Splits a `BatchWriteItem` request: returns the request to forward (its
/// `RequestItems` with the held-back items removed; `None` when nothing is
/// left) and the held-back items by table. About half the items are held
/// back, at least one.
pub fn withhold(body: &Value, seed: u64, request: u64) -> Result<(Option<Value>, Value), String> {
    let items = body
        .get("RequestItems")
        .and_then(Value::as_object)
        .ok_or("BatchWriteItem body without RequestItems")?;
    let mut keep = serde_json::Map::new();
    let mut held = serde_json::Map::new();
    let mut n = 0u64;
    for (table, reqs) in items {
        let reqs = reqs
            .as_array()
            .ok_or("RequestItems values must be arrays")?;
        let (mut k, mut h) = (Vec::new(), Vec::new());
        for r in reqs {
            n += 1;
            if coin(seed, request, 1_000 + n, 0.5) {
                h.push(r.clone());
            } else {
                k.push(r.clone());
            }
        }
        if !k.is_empty() {
            keep.insert(table.clone(), Value::Array(k));
        }
        if !h.is_empty() {
            held.insert(table.clone(), Value::Array(h));
        }
    }
    if held.is_empty() {
        // Hold back the first item of the first table.
        if let Some((table, reqs)) = keep.iter_mut().next() {
            let arr = reqs.as_array_mut().expect("built as array");
            held.insert(table.clone(), Value::Array(vec![arr.remove(0)]));
        }
        keep.retain(|_, v| v.as_array().is_some_and(|a| !a.is_empty()));
    }
    let forward = if keep.is_empty() {
        None
    } else {
        let mut b = body.clone();
        b["RequestItems"] = Value::Object(keep);
        Some(b)
    };
    Ok((forward, Value::Object(held)))
}

/// Adds `held` to the `UnprocessedItems` of a `BatchWriteItem` answer.
pub fn merge_unprocessed(answer: &mut Value, held: &Value) {
    if !answer.is_object() {
        *answer = Value::Object(Default::default());
    }
    let un = answer
        .as_object_mut()
        .expect("object")
        .entry("UnprocessedItems")
        .or_insert_with(|| Value::Object(Default::default()));
    if !un.is_object() {
        *un = Value::Object(Default::default());
    }
    let un = un.as_object_mut().expect("object");
    for (table, reqs) in held.as_object().into_iter().flatten() {
        let slot = un
            .entry(table.clone())
            .or_insert_with(|| Value::Array(vec![]));
        if let (Some(dst), Some(src)) = (slot.as_array_mut(), reqs.as_array()) {
            dst.extend(src.iter().cloned());
        }
    }
}

/// Counts the items of a `RequestItems`-shaped object.
pub fn item_count(v: &Value) -> u64 {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(_, a)| a.as_array().map_or(0, |a| a.len() as u64))
        .sum()
}

/// A tiny HTTP/1.1 client for the control endpoints (tests use it; no
/// dependency on an HTTP client crate).
pub mod control {
    use super::{Plan, Stats};
    use anyhow::{anyhow, Context, Result};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn call(addr: &str, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("fault proxy at {addr}"))?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        let text = String::from_utf8(raw)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("bad answer from fault proxy: {text}"))?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line: {head}"))?;
        Ok((status, body.to_owned()))
    }

    pub async fn set_plan(addr: &str, plan: &Plan) -> Result<()> {
        let (status, body) =
            call(addr, "PUT", "/_fault/plan", &serde_json::to_string(plan)?).await?;
        anyhow::ensure!(status == 200, "PUT /_fault/plan: {status} {body}");
        Ok(())
    }

    pub async fn clear(addr: &str) -> Result<()> {
        let (status, body) = call(addr, "DELETE", "/_fault/plan", "").await?;
        anyhow::ensure!(status == 200, "DELETE /_fault/plan: {status} {body}");
        Ok(())
    }

    /// Clears the plan from synchronous code (a test's drop guard).
    pub fn clear_blocking(addr: &str) -> Result<()> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        write!(
            s,
            "DELETE /_fault/plan HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        anyhow::ensure!(
            out.starts_with("HTTP/1.1 200"),
            "DELETE /_fault/plan: {out}"
        );
        Ok(())
    }

    /// Clears the plan when dropped, so a failing test leaves no faults behind.
    pub struct ClearOnDrop(pub String);

    impl Drop for ClearOnDrop {
        fn drop(&mut self) {
            if let Err(e) = clear_blocking(&self.0) {
                eprintln!("fault proxy at {}: plan not cleared: {e}", self.0);
            }
        }
    }

    pub async fn stats(addr: &str) -> Result<Stats> {
        let (status, body) = call(addr, "GET", "/_fault/stats", "").await?;
        anyhow::ensure!(status == 200, "GET /_fault/stats: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operation_names() {
        assert_eq!(
            operation(Some("DynamoDB_20120810.BatchWriteItem"), "POST", "/"),
            "BatchWriteItem"
        );
        assert_eq!(operation(None, "PUT", "/bucket/a/b"), "PutObject");
        assert_eq!(operation_of(None, "PUT", "/bucket/a/b", true), "CopyObject");
        assert_eq!(
            operation(Some(""), "GET", "/b?list-type=2"),
            "ListObjectsV2"
        );
        assert_eq!(operation(None, "GET", "/b/k?x-id=GetObject"), "GetObject");
        assert_eq!(operation(None, "HEAD", "/b/k"), "HeadObject");
        assert_eq!(
            operation(None, "POST", "/b/k?uploads"),
            "CreateMultipartUpload"
        );
        assert_eq!(
            operation(None, "PUT", "/b/k?partNumber=2&uploadId=u"),
            "UploadPart"
        );
        assert_eq!(operation(None, "PUT", "/b"), "PUT b");
        assert_eq!(
            operation(
                None,
                "POST",
                "/2015-03-31/functions/cob-partition/invocations"
            ),
            "Invoke"
        );
        assert_eq!(
            query_action(b"Action=Publish&TopicArn=x").as_deref(),
            Some("Publish")
        );
        assert_eq!(query_action(b"TopicArn=x"), None);
        assert_eq!(
            access_key("AWS4-HMAC-SHA256 Credential=ASIAX/20261204/us-east-1/s3/aws4_request, S"),
            Some("ASIAX")
        );
    }

    #[test]
    fn a_rule_with_caller_contains_fires_only_for_that_caller() {
        let mut inj = Injector::new();
        let mut plan = Plan::one(1, Kind::KillCaller, 1.0, &["TransactWriteItems"]);
        plan.rules[0].caller_contains = Some("CobPartitionFunctionRole".into());
        inj.set(plan, Instant::now()).unwrap();
        let now = Instant::now();
        let partition = "arn:aws:sts::123456789012:assumed-role/tally-CobPartitionFunctionRole/i-1";
        assert!(inj
            .decide_for("TransactWriteItems", None, partition, now)
            .is_some());
        assert!(inj
            .decide_for("TransactWriteItems", None, "operator", now)
            .is_none());
        assert!(inj
            .decide_for("TransactWriteItems", None, "", now)
            .is_none());
    }

    #[test]
    fn a_kind_for_one_operation_refuses_a_plan_naming_another() {
        let e = Plan::one(1, Kind::TruncateBody, 1.0, &["PutObject"])
            .validate()
            .unwrap_err();
        assert!(e.contains("truncate_body applies to GetObject only"), "{e}");
        assert!(Plan::one(1, Kind::TruncateBody, 1.0, &[])
            .validate()
            .is_ok());
        let mut inj = Injector::new();
        inj.set(Plan::one(1, Kind::Detach, 1.0, &[]), Instant::now())
            .unwrap();
        assert!(inj.decide("GetItem", None, Instant::now()).is_none());
        assert!(inj.decide("Invoke", None, Instant::now()).is_some());
    }

    #[test]
    fn a_conflict_is_one_reason_among_nones_and_a_mixed_one_keeps_the_stacks() {
        let a = conflict_answer(5, 3, 9);
        let codes: Vec<&str> = a["CancellationReasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["Code"].as_str().unwrap())
            .collect();
        assert_eq!(codes.len(), 5);
        assert_eq!(
            codes
                .iter()
                .filter(|c| **c == "TransactionConflict")
                .count(),
            1
        );
        assert_eq!(codes.iter().filter(|c| **c == "None").count(), 4);
        let stack = json!({"__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                           "Message": "m", "CancellationReasons": [
                               {"Code": "None"}, {"Code": "ConditionalCheckFailed"}, {"Code": "None"}]});
        let mixed = add_conflict(&stack, 3, 9).unwrap();
        let codes: Vec<&str> = mixed["CancellationReasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["Code"].as_str().unwrap())
            .collect();
        assert_eq!(codes[1], "ConditionalCheckFailed");
        assert_eq!(
            codes
                .iter()
                .filter(|c| **c == "TransactionConflict")
                .count(),
            1
        );
        assert!(
            add_conflict(&json!({}), 3, 9).is_none(),
            "a success is left alone"
        );
    }

    #[test]
    fn failed_entries_keep_their_places_in_the_answer() {
        let body = json!({"Entries": [{"Detail": "0"}, {"Detail": "1"}, {"Detail": "2"}, {"Detail": "3"}]});
        let (fwd, failed) = fail_entries(&body, 4, 11).unwrap();
        assert!(!failed.is_empty());
        let kept = fwd
            .as_ref()
            .map_or(0, |f| f["Entries"].as_array().unwrap().len());
        assert_eq!(kept + failed.len(), 4);
        let stack = json!({"FailedEntryCount": 0, "Entries":
            (0..kept).map(|i| json!({"EventId": format!("e{i}")})).collect::<Vec<_>>()});
        let merged = merge_entries(Some(&stack), &failed, 4);
        assert_eq!(merged["FailedEntryCount"], failed.len() as u64);
        let entries = merged["Entries"].as_array().unwrap();
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                failed.contains(&i),
                e.get("ErrorCode").is_some(),
                "{merged}"
            );
        }
    }

    #[test]
    fn coin_rate_is_close_to_the_plan_and_repeatable() {
        for rate in [0.1, 0.3, 0.5] {
            let hits = (0..100_000).filter(|n| coin(7, *n, 0, rate)).count() as f64;
            assert!((hits / 100_000.0 - rate).abs() < 0.01, "{rate}: {hits}");
        }
        let a: Vec<bool> = (0..64).map(|n| coin(9, n, 2, 0.3)).collect();
        let b: Vec<bool> = (0..64).map(|n| coin(9, n, 2, 0.3)).collect();
        assert_eq!(a, b);
        assert!(!coin(1, 1, 1, 0.0));
        assert!(coin(1, 1, 1, 1.0));
    }

    #[test]
    fn rules_match_operations_and_respect_budget_and_expiry() {
        let mut inj = Injector::new();
        let t0 = Instant::now();
        assert_eq!(
            inj.decide("BatchWriteItem", None, t0),
            None,
            "no plan, no fault"
        );
        let mut plan = Plan::one(1, Kind::Throttle, 1.0, &["BatchWriteItem"]);
        plan.max_faults = 3;
        inj.set(plan, t0).unwrap();
        assert_eq!(inj.decide("GetItem", None, t0), None);
        for _ in 0..3 {
            let d = inj.decide("BatchWriteItem", None, t0).unwrap();
            assert_eq!(d.kind, Kind::Throttle);
            inj.count(d.kind, "BatchWriteItem", 0);
        }
        assert_eq!(inj.decide("BatchWriteItem", None, t0), None, "budget spent");
        assert_eq!(inj.stats().requests, 5);
        assert_eq!(inj.stats().faults["throttle"], 3);

        let mut plan = Plan::one(1, Kind::Http503, 1.0, &[]);
        plan.expires_after_s = 10;
        inj.set(plan, t0).unwrap();
        assert!(inj
            .decide("PUT bucket", None, t0 + Duration::from_secs(9))
            .is_some());
        assert!(inj
            .decide("PUT bucket", None, t0 + Duration::from_secs(10))
            .is_none());
    }

    #[test]
    fn a_rule_with_body_contains_fires_only_on_bodies_that_hold_its_text() {
        let mut inj = Injector::new();
        let mut plan = Plan::one(1, Kind::Throttle, 1.0, &["BatchWriteItem"]);
        plan.rules[0].body_contains = Some("ITTHROTTLE#".into());
        inj.set(plan, Instant::now()).unwrap();
        assert!(inj.needs_body("BatchWriteItem"));
        assert!(!inj.needs_body("GetItem"), "no rule applies to it");
        let now = Instant::now();
        let ours = br#"{"RequestItems":{"t":[{"PutRequest":{"Item":{"pk":{"S":"ITTHROTTLE#2026-11-20#Shard3"}}}}]}}"#;
        let other = br#"{"RequestItems":{"t":[{"PutRequest":{"Item":{"pk":{"S":"ITTWICE#2026-11-20#Shard3"}}}}]}}"#;
        assert!(inj.decide("BatchWriteItem", Some(ours), now).is_some());
        assert!(inj.decide("BatchWriteItem", Some(other), now).is_none());
        assert!(inj.decide("BatchWriteItem", None, now).is_none());
        assert!(!Injector::new().needs_body("BatchWriteItem"), "no plan");
    }

    #[test]
    fn unprocessed_fires_only_on_batch_write_item() {
        let mut inj = Injector::new();
        inj.set(Plan::one(1, Kind::Unprocessed, 1.0, &[]), Instant::now())
            .unwrap();
        assert!(inj
            .decide("TransactWriteItems", None, Instant::now())
            .is_none());
        assert!(inj.decide("BatchWriteItem", None, Instant::now()).is_some());
    }

    #[test]
    fn bad_plans_are_refused_naming_the_field() {
        let mut p = Plan::one(1, Kind::Throttle, 1.5, &[]);
        assert!(p.validate().unwrap_err().starts_with("rules[0].rate"));
        p.rules[0].rate = 0.5;
        p.rules[0].kind = Kind::Latency;
        assert!(p.validate().unwrap_err().starts_with("rules[0].latency_ms"));
        p.rules[0].latency_ms = 10;
        p.expires_after_s = 0;
        assert!(p.validate().unwrap_err().starts_with("expires_after_s"));
        let mut p = Plan::one(1, Kind::Throttle, 0.5, &[]);
        p.rules[0].body_contains = Some(String::new());
        assert!(p
            .validate()
            .unwrap_err()
            .starts_with("rules[0].body_contains"));
        p.rules[0].body_contains = Some("x".repeat(BODY_CONTAINS_MAX + 1));
        assert!(p
            .validate()
            .unwrap_err()
            .starts_with("rules[0].body_contains"));
        let p = Plan::one(1, Kind::Unprocessed, 0.5, &["PutItem"]);
        assert!(p.validate().unwrap_err().contains("BatchWriteItem only"));
        assert!(serde_json::from_str::<Plan>(r#"{"seed":1,"rules":[],"extra":1}"#).is_err());
    }

    #[test]
    fn withhold_partitions_every_item_exactly_once() {
        let reqs: Vec<Value> = (0..25)
            .map(|i| json!({"PutRequest": {"Item": {"PK": {"S": format!("k{i}")}}}}))
            .collect();
        let body = json!({"RequestItems": {"T": reqs}, "ReturnConsumedCapacity": "NONE"});
        for request in 0..50 {
            let (fwd, held) = withhold(&body, 3, request).unwrap();
            let kept = fwd.as_ref().map_or(0, |f| item_count(&f["RequestItems"]));
            assert!(item_count(&held) >= 1);
            assert_eq!(kept + item_count(&held), 25);
            if let Some(f) = &fwd {
                assert_eq!(f["ReturnConsumedCapacity"], "NONE");
            }
            let mut all: Vec<String> = fwd
                .iter()
                .flat_map(|f| f["RequestItems"]["T"].as_array().unwrap().clone())
                .chain(held["T"].as_array().unwrap().clone())
                .map(|r| {
                    r["PutRequest"]["Item"]["PK"]["S"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), 25);
        }
        // A single item is always held back.
        let one = json!({"RequestItems": {"T": [reqs[0].clone()]}});
        let (fwd, held) = withhold(&one, 3, 1).unwrap();
        assert!(fwd.is_none());
        assert_eq!(item_count(&held), 1);
    }

    #[test]
    fn merge_adds_to_the_stacks_own_unprocessed_items() {
        let mut answer = json!({"UnprocessedItems": {"T": [{"PutRequest": {"Item": {"a": 1}}}]}});
        merge_unprocessed(
            &mut answer,
            &json!({"T": [{"PutRequest": {"Item": {"b": 2}}}], "U": [{"x": 1}]}),
        );
        assert_eq!(item_count(&answer["UnprocessedItems"]), 3);
        let mut empty = json!({});
        merge_unprocessed(&mut empty, &json!({"T": [{"x": 1}]}));
        assert_eq!(item_count(&empty["UnprocessedItems"]), 1);
    }
}
