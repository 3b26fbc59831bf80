//! The close-of-business run as data: the plan the coordinator makes, what
//! each partition reports, and how the aggregate combines the reports into
//! the published events (`docs/design.md` has the JSON shapes).

use crate::currency::Currency;
use crate::money::format_amount;
use crate::partition::{check_partition_count, BadPartitionCount};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const COMPLETED_DETAIL_TYPE: &str = "accrual_run_completed";
pub const FAILED_DETAIL_TYPE: &str = "accrual_run_failed";
pub const EVENT_SOURCE: &str = "bank.core";
pub const SCHEMA_VERSION: &str = "2";
/// Longest run id (the execution name): Step Functions allows 80 characters.
pub const RUN_ID_LEN_MAX: usize = 80;

/// A COB may run for any past date (catch-up) but never after tomorrow (UTC
/// today + 1, for time zones ahead of UTC): that would post future interest.
pub fn check_business_date(date: NaiveDate, today_utc: NaiveDate) -> Result<NaiveDate, String> {
    let latest = today_utc + chrono::Days::new(1);
    if date > latest {
        return Err(format!("business_date {date} is after {latest}"));
    }
    Ok(date)
}

pub fn check_run_id(run_id: &str) -> Result<&str, String> {
    if run_id.is_empty() || run_id.len() > RUN_ID_LEN_MAX {
        return Err(format!("run id must be 1–{RUN_ID_LEN_MAX} characters"));
    }
    Ok(run_id)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Path {
    Single,
    Partitioned,
    /// Nothing to do: the run was canceled before it started, or has ended.
    Skip,
}

/// Test-only fault switch carried by a partition task; honoured only when the
/// partition runs with `TALLY_FAULT_INJECTION=enabled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Fail after this many accounts have been committed in this attempt.
    pub fail_after_accounts: u64,
    /// How many attempts fail before the partition is let through.
    pub failures: u32,
    /// Only this partition fails (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
}

/// One unit of partition work: accounts whose hash bucket is `partition` of
/// `partition_count`, for `business_date`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTask {
    pub run_id: String,
    pub business_date: NaiveDate,
    pub partition: u32,
    pub partition_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub run_id: String,
    pub business_date: NaiveDate,
    pub path: Path,
    pub active_accounts: u64,
    pub partition_threshold: u64,
    pub partition_count: u32,
    pub partitions: Vec<PartitionTask>,
    /// Why the path is `SKIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
}

impl Plan {
    /// Single path below the threshold, `partition_count` buckets at or above it.
    pub fn make(
        run_id: &str,
        business_date: NaiveDate,
        active_accounts: u64,
        partition_threshold: u64,
        partition_count: u32,
        fault: Option<Fault>,
    ) -> Result<Plan, BadPartitionCount> {
        check_partition_count(partition_count)?;
        let (path, n) = if active_accounts < partition_threshold {
            (Path::Single, 1)
        } else {
            (Path::Partitioned, partition_count)
        };
        let partitions = (0..n)
            .map(|partition| PartitionTask {
                run_id: run_id.to_owned(),
                business_date,
                partition,
                partition_count: n,
                fault: fault.clone(),
            })
            .collect();
        Ok(Plan {
            run_id: run_id.to_owned(),
            business_date,
            path,
            active_accounts,
            partition_threshold,
            partition_count: n,
            partitions,
            skip_reason: None,
        })
    }
}

/// Posted total of one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyTotal {
    pub currency: Currency,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub postings: u64,
}

/// Running totals per currency, kept exact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals(BTreeMap<Currency, (Decimal, u64)>);

impl Totals {
    pub fn add(&mut self, currency: Currency, amount: Decimal, postings: u64) {
        let e = self.0.entry(currency).or_insert((Decimal::ZERO, 0));
        e.0 += amount;
        e.1 += postings;
    }

    pub fn to_vec(&self) -> Vec<CurrencyTotal> {
        self.0
            .iter()
            .map(|(c, (a, n))| CurrencyTotal {
                currency: *c,
                amount: format_amount(*a, *c)
                    .parse()
                    .expect("formatted decimals parse"),
                postings: *n,
            })
            .collect()
    }

    /// Adds every total of `other`.
    pub fn absorb(&mut self, other: Totals) {
        for (c, (amount, postings)) in other.0 {
            self.add(c, amount, postings);
        }
    }

    /// Adds every total of `v`.
    pub fn merge(&mut self, v: &[CurrencyTotal]) {
        for c in v {
            self.add(c.currency, c.amount, c.postings);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PartitionStatus {
    Succeeded,
    Failed,
}

/// What a partition reports. A failed partition (turned into a result by the
/// state machine's Catch) carries only `partition`, `status`, `error`, `cause`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionResult {
    pub partition: u32,
    #[serde(default)]
    pub partition_count: u32,
    pub status: PartitionStatus,
    #[serde(default)]
    pub accounts_seen: u64,
    #[serde(default)]
    pub accounts_accrued: u64,
    #[serde(default)]
    pub already_accrued: u64,
    #[serde(default)]
    pub postings_written: u64,
    #[serde(default)]
    pub zero_postings_skipped: u64,
    #[serde(default)]
    pub totals: Vec<CurrencyTotal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// Detail of `bank.core.accrual_run_completed`, schema version 2: the v1
/// fields plus `partition_count` and `slowest_partition_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCompleted {
    pub schema_version: String,
    pub event_type: String,
    pub run_id: String,
    pub business_date: NaiveDate,
    pub accounts_processed: u64,
    pub postings_written: u64,
    pub totals: Vec<CurrencyTotal>,
    pub completed_at: String,
    pub partition_count: u32,
    pub slowest_partition_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedPartition {
    pub partition: u32,
    pub error: String,
    pub cause: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FailedStage {
    Plan,
    Partition,
}

/// Detail of `bank.core.accrual_run_failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFailed {
    pub schema_version: String,
    pub event_type: String,
    pub run_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_date: Option<NaiveDate>,
    pub failed_at: String,
    pub stage: FailedStage,
    pub partition_count: u32,
    pub failed_partitions: Vec<FailedPartition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// The outcome of a run once every partition has reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed(RunCompleted),
    Failed(RunFailed),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    #[error("{got} partition results for a plan of {expected}")]
    WrongResultCount { expected: u32, got: usize },
    #[error("partition {0} reported twice")]
    DuplicatePartition(u32),
    #[error("partition {0} is not in the plan")]
    UnknownPartition(u32),
}

/// Combines the partition results of `plan`. Completed only when every
/// planned partition reported exactly once and succeeded.
pub fn aggregate(
    plan: &Plan,
    results: &[PartitionResult],
    now: &str,
) -> Result<Outcome, AggregateError> {
    if results.len() != plan.partition_count as usize {
        return Err(AggregateError::WrongResultCount {
            expected: plan.partition_count,
            got: results.len(),
        });
    }
    let mut seen = vec![false; plan.partition_count as usize];
    for r in results {
        let slot = seen
            .get_mut(r.partition as usize)
            .ok_or(AggregateError::UnknownPartition(r.partition))?;
        if std::mem::replace(slot, true) {
            return Err(AggregateError::DuplicatePartition(r.partition));
        }
    }
    let mut failed: Vec<FailedPartition> = results
        .iter()
        .filter(|r| r.status == PartitionStatus::Failed)
        .map(|r| FailedPartition {
            partition: r.partition,
            error: r.error.clone().unwrap_or_else(|| "Unknown".into()),
            cause: r.cause.clone().unwrap_or_default(),
        })
        .collect();
    if !failed.is_empty() {
        failed.sort_by_key(|f| f.partition);
        return Ok(Outcome::Failed(RunFailed {
            schema_version: SCHEMA_VERSION.into(),
            event_type: format!("{EVENT_SOURCE}.{FAILED_DETAIL_TYPE}"),
            run_id: plan.run_id.clone(),
            business_date: Some(plan.business_date),
            failed_at: now.into(),
            stage: FailedStage::Partition,
            partition_count: plan.partition_count,
            failed_partitions: failed,
            error: None,
            cause: None,
        }));
    }
    let mut totals = Totals::default();
    for r in results {
        totals.merge(&r.totals);
    }
    Ok(Outcome::Completed(RunCompleted {
        schema_version: SCHEMA_VERSION.into(),
        event_type: format!("{EVENT_SOURCE}.{COMPLETED_DETAIL_TYPE}"),
        run_id: plan.run_id.clone(),
        business_date: plan.business_date,
        accounts_processed: results.iter().map(|r| r.accounts_seen).sum(),
        postings_written: results.iter().map(|r| r.postings_written).sum(),
        totals: totals.to_vec(),
        completed_at: now.into(),
        partition_count: plan.partition_count,
        slowest_partition_ms: results.iter().map(|r| r.duration_ms).max().unwrap_or(0),
    }))
}

/// The failed event for a run whose plan could not be made.
pub fn plan_failed(
    run_id: &str,
    business_date: Option<NaiveDate>,
    error: &str,
    cause: &str,
    now: &str,
) -> RunFailed {
    RunFailed {
        schema_version: SCHEMA_VERSION.into(),
        event_type: format!("{EVENT_SOURCE}.{FAILED_DETAIL_TYPE}"),
        run_id: run_id.into(),
        business_date,
        failed_at: now.into(),
        stage: FailedStage::Plan,
        partition_count: 0,
        failed_partitions: vec![],
        error: Some(error.into()),
        cause: Some(cause.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{date, dec};

    fn ok(partition: u32, ms: u64, totals: &[(&str, &str, u64)]) -> PartitionResult {
        PartitionResult {
            partition,
            partition_count: 2,
            status: PartitionStatus::Succeeded,
            accounts_seen: 10,
            accounts_accrued: 10,
            already_accrued: 0,
            postings_written: totals.iter().map(|t| t.2).sum(),
            zero_postings_skipped: 0,
            totals: totals
                .iter()
                .map(|(c, a, n)| CurrencyTotal {
                    currency: Currency::parse(c).unwrap(),
                    amount: dec(a),
                    postings: *n,
                })
                .collect(),
            started_at: None,
            finished_at: None,
            duration_ms: ms,
            error: None,
            cause: None,
        }
    }

    fn plan(accounts: u64, threshold: u64) -> Plan {
        Plan::make("r1", date("2026-11-20"), accounts, threshold, 2, None).unwrap()
    }

    #[test]
    fn below_the_threshold_one_partition_at_or_above_it_the_fan_out() {
        assert_eq!(plan(49_999, 50_000).path, Path::Single);
        assert_eq!(plan(49_999, 50_000).partitions.len(), 1);
        let p = plan(50_000, 50_000);
        assert_eq!(
            (p.path, p.partition_count, p.partitions.len()),
            (Path::Partitioned, 2, 2)
        );
        assert_eq!(p.partitions[1].partition, 1);
        assert!(Plan::make("r", date("2026-11-20"), 1, 1, 7, None).is_err());
    }

    #[test]
    fn completed_sums_every_partition_and_reports_the_slowest() {
        let out = aggregate(
            &plan(60_000, 50_000),
            &[
                ok(1, 900, &[("USD", "1.10", 2), ("JPY", "5", 1)]),
                ok(0, 1200, &[("USD", "2.05", 3)]),
            ],
            "2026-11-21T01:00:00Z",
        )
        .unwrap();
        let Outcome::Completed(c) = out else {
            panic!("expected completed")
        };
        assert_eq!(
            (
                c.partition_count,
                c.slowest_partition_ms,
                c.postings_written,
                c.accounts_processed
            ),
            (2, 1200, 6, 20)
        );
        let totals: Vec<(String, String, u64)> = c
            .totals
            .iter()
            .map(|t| (t.currency.to_string(), t.amount.to_string(), t.postings))
            .collect();
        assert_eq!(
            totals,
            [
                ("JPY".into(), "5".into(), 1),
                ("USD".into(), "3.15".into(), 5)
            ]
        );
    }

    #[test]
    fn one_failed_partition_fails_the_run_with_a_summary() {
        let mut bad = ok(0, 5, &[]);
        bad.status = PartitionStatus::Failed;
        bad.error = Some("TransientStoreError".into());
        bad.cause = Some("throttled".into());
        let Outcome::Failed(f) = aggregate(&plan(60_000, 1), &[ok(1, 5, &[]), bad], "t").unwrap()
        else {
            panic!("expected failed")
        };
        assert_eq!(f.stage, FailedStage::Partition);
        assert_eq!(
            f.failed_partitions,
            [FailedPartition {
                partition: 0,
                error: "TransientStoreError".into(),
                cause: "throttled".into()
            }]
        );
    }

    #[test]
    fn missing_or_repeated_partitions_never_complete() {
        let p = plan(60_000, 1);
        assert!(aggregate(&p, &[ok(0, 1, &[])], "t").is_err());
        assert!(aggregate(&p, &[ok(0, 1, &[]), ok(0, 1, &[])], "t").is_err());
        assert!(aggregate(&p, &[ok(0, 1, &[]), ok(5, 1, &[])], "t").is_err());
    }
}
