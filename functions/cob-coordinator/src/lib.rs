//! The COB coordinator: counts the active accounts and plans the run — one
//! partition below the threshold, the hash-bucket fan-out at or above it.
//!
//! # Layout
//!
//! - [`Config`]: threshold, partition count and time zone from the environment.
//! - [`plan`]: validates the execution input, makes the [`Plan`] and moves
//!   the run record to `EXECUTING` (creating it first for a run started
//!   outside `submit`, such as the nightly schedule). A run canceled before
//!   its execution reached the coordinator gets the `SKIP` path.

use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use tally_aws::config::{bounded, ConfigError};
use tally_aws::handler_error::HandlerError;
use tally_aws::ports::{AccountBook, Patch, RunStore, Transition};
use tally_domain::cob::{check_business_date, check_run_id, Fault, Path, Plan};
use tally_domain::partition::{check_partition_count, COB_SHARD_COUNT};
use tally_domain::run::{RunRecord, RunStatus};

#[derive(Debug, Clone)]
pub struct Config {
    pub partition_threshold: u64,
    pub partition_count: u32,
    /// Where "the day before the scheduled night" is reckoned.
    pub time_zone: Tz,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        let partition_count = bounded("COB_PARTITION_COUNT", 10, 1, COB_SHARD_COUNT)?;
        check_partition_count(partition_count)
            .map_err(|e| ConfigError(format!("COB_PARTITION_COUNT: {e}")))?;
        let tz = std::env::var("COB_TIME_ZONE").unwrap_or_else(|_| "UTC".into());
        Ok(Config {
            partition_threshold: bounded("COB_PARTITION_THRESHOLD", 50_000, 1, u64::MAX)?,
            partition_count,
            time_zone: tz.parse().map_err(|_| {
                ConfigError(format!("COB_TIME_ZONE=`{tz}` is not an IANA time zone"))
            })?,
        })
    }
}

/// Per-run overrides of the environment's defaults (operator use, and tests
/// that need the fan-out on a small book).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub partition_threshold: Option<u64>,
    pub partition_count: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunInput {
    pub business_date: Option<NaiveDate>,
    pub scheduled_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub options: Options,
    pub fault: Option<Fault>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorEvent {
    pub input: serde_json::Value,
    pub execution_name: String,
    /// `$$.Execution.Id`: the execution ARN, kept on the run record.
    #[serde(default)]
    pub execution_id: Option<String>,
}

/// The business date of a run: given, or the local day before the night the
/// schedule fired in. Never after tomorrow (UTC), which catches typed years.
pub fn business_date(
    input: &RunInput,
    tz: Tz,
    now: DateTime<Utc>,
) -> Result<NaiveDate, HandlerError> {
    let date = match (input.business_date, input.scheduled_time) {
        (Some(d), None) => d,
        (None, Some(t)) => t
            .with_timezone(&tz)
            .date_naive()
            .checked_sub_days(Days::new(1))
            .ok_or_else(|| HandlerError::invalid_input("scheduled_time out of range"))?,
        _ => {
            return Err(HandlerError::invalid_input(
                "give exactly one of business_date or scheduled_time",
            ))
        }
    };
    check_business_date(date, now.date_naive()).map_err(HandlerError::invalid_input)
}

pub async fn plan<B: AccountBook, R: RunStore>(
    book: &B,
    runs: &R,
    cfg: &Config,
    event: CoordinatorEvent,
    now: DateTime<Utc>,
) -> Result<Plan, HandlerError> {
    let run_id = event.execution_name;
    check_run_id(&run_id).map_err(HandlerError::invalid_input)?;
    let input: RunInput = serde_json::from_value(event.input.clone())
        .map_err(|e| HandlerError::invalid_input(format!("execution input: {e}")))?;
    let date = business_date(&input, cfg.time_zone, now)?;
    let skip = |reason: String| {
        tracing::info!(run_id, reason, "skipped");
        Plan {
            run_id: run_id.clone(),
            business_date: date,
            path: Path::Skip,
            active_accounts: 0,
            partition_threshold: 0,
            partition_count: 0,
            partitions: Vec::new(),
            skip_reason: Some(reason),
        }
    };
    // A run submitted through `submit` has its record; one the schedule
    // started gets one now, INITIATED like a submitted one.
    let record = match runs.get(&run_id).await? {
        Some(r) => r,
        None => {
            let mut r = RunRecord::new_cob(date, 0, RunStatus::Initiated, now);
            r.run_id = run_id.clone();
            r.input = event.input.clone();
            r.execution_arn = event.execution_id.clone();
            runs.register(r).await?
        }
    };
    if record.business_date != date {
        return Err(HandlerError::invalid_input(format!(
            "run {run_id} is for {}, its execution input for {date}",
            record.business_date
        )));
    }
    if record.status.is_terminal() {
        return Ok(skip(format!("run {run_id} is already {}", record.status)));
    }
    let threshold = input
        .options
        .partition_threshold
        .unwrap_or(cfg.partition_threshold);
    let count = input.options.partition_count.unwrap_or(cfg.partition_count);
    let active = book.count_active().await?;
    let plan = Plan::make(&run_id, date, active, threshold, count, input.fault)
        .map_err(|e| HandlerError::invalid_input(e.to_string()))?;
    let patch = Patch {
        units_total: Some(plan.partition_count),
        execution_arn: event.execution_id,
        ..Patch::default()
    };
    match runs
        .transition(&run_id, RunStatus::Executing, now, &patch)
        .await?
    {
        Transition::Applied | Transition::AlreadyThere => {}
        Transition::Refused(s) => return Ok(skip(format!("run {run_id} is already {s}"))),
        Transition::Missing => {
            return Err(tally_aws::StoreError::Transient(format!(
                "run {run_id}: its record vanished"
            ))
            .into())
        }
    }
    tracing::info!(run_id, business_date = %date, active_accounts = active, path = ?plan.path,
                   partitions = plan.partition_count, duplicate_of = ?record.duplicate_of, "planned");
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_aws::memory::MemoryBook;
    use tally_aws::runs::MemoryRuns;

    fn cfg(threshold: u64) -> Config {
        Config {
            partition_threshold: threshold,
            partition_count: 10,
            time_zone: "Europe/London".parse().unwrap(),
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-21T00:30:00Z".parse().unwrap()
    }

    fn event(json: &str) -> CoordinatorEvent {
        serde_json::from_str(json).unwrap()
    }

    #[tokio::test]
    async fn the_sample_events_plan_as_documented() {
        let line = r#"{"account_id":"A","product":"LOAN","status":"ACTIVE","currency":"USD","balance":"1.00","annual_rate":"0.05","day_count":"ACT/360","opened_on":"2026-01-01","accrued_through":null}"#;
        let book =
            MemoryBook::with_accounts(
                [tally_domain::account::parse_account_line(line, 1).unwrap()],
            );
        let p = plan(
            &book,
            &MemoryRuns::default(),
            &cfg(50_000),
            event(include_str!("../../../events/cob-coordinator/manual.json")),
            now(),
        )
        .await
        .unwrap();
        assert_eq!(
            (p.path, p.partition_count, p.business_date.to_string()),
            (Path::Single, 1, "2026-11-20".into())
        );
        assert_eq!(p.run_id, "cob-2026-11-20-manual");
        let p = plan(
            &book,
            &MemoryRuns::default(),
            &cfg(50_000),
            event(include_str!(
                "../../../events/cob-coordinator/with-options.json"
            )),
            now(),
        )
        .await
        .unwrap();
        assert_eq!(
            (p.path, p.partition_count, p.partitions.len()),
            (Path::Partitioned, 4, 4)
        );
        let p = plan(
            &book,
            &MemoryRuns::default(),
            &cfg(50_000),
            event(include_str!(
                "../../../events/cob-coordinator/scheduled.json"
            )),
            now(),
        )
        .await
        .unwrap();
        assert_eq!(p.business_date.to_string(), "2026-11-20");
    }

    #[test]
    fn a_schedule_firing_after_midnight_local_accrues_the_local_day_before() {
        let input = |t: &str| RunInput {
            business_date: None,
            scheduled_time: Some(t.parse().unwrap()),
            options: Options::default(),
            fault: None,
        };
        let ny: Tz = "America/New_York".parse().unwrap();
        // 04:30 UTC on the 21st is 23:30 on the 20th in New York: the day before is the 19th.
        assert_eq!(
            business_date(&input("2026-11-21T04:30:00Z"), ny, now())
                .unwrap()
                .to_string(),
            "2026-11-19"
        );
        // 05:30 UTC is 00:30 on the 21st in New York: business date the 20th.
        assert_eq!(
            business_date(&input("2026-11-21T05:30:00Z"), ny, now())
                .unwrap()
                .to_string(),
            "2026-11-20"
        );
    }

    #[test]
    fn dates_far_in_the_future_or_ambiguous_inputs_are_refused() {
        let mk = |d: Option<&str>, t: Option<&str>| RunInput {
            business_date: d.map(|d| d.parse().unwrap()),
            scheduled_time: t.map(|t| t.parse().unwrap()),
            options: Options::default(),
            fault: None,
        };
        let tz: Tz = "UTC".parse().unwrap();
        assert!(business_date(&mk(Some("2062-11-20"), None), tz, now()).is_err());
        assert!(business_date(&mk(None, None), tz, now()).is_err());
        assert!(business_date(
            &mk(Some("2026-11-20"), Some("2026-11-21T00:00:00Z")),
            tz,
            now()
        )
        .is_err());
        assert!(
            serde_json::from_str::<RunInput>(r#"{"business_date":"2026-11-20","bogus":1}"#)
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_partition_count_that_does_not_divide_the_shards_is_refused() {
        let e = event(
            r#"{"input":{"business_date":"2026-11-20","options":{"partition_count":7}},"execution_name":"x"}"#,
        );
        assert_eq!(
            plan(
                &MemoryBook::default(),
                &MemoryRuns::default(),
                &cfg(0),
                e,
                now()
            )
            .await
            .unwrap_err()
            .name,
            "InvalidInput"
        );
    }

    fn one_account_book() -> MemoryBook {
        let line = r#"{"account_id":"A","product":"LOAN","status":"ACTIVE","currency":"USD","balance":"1.00","annual_rate":"0.05","day_count":"ACT/360","opened_on":"2026-01-01","accrued_through":null}"#;
        MemoryBook::with_accounts([tally_domain::account::parse_account_line(line, 1).unwrap()])
    }

    fn raw(name: &str) -> CoordinatorEvent {
        event(&format!(
            r#"{{"input":{{"business_date":"2026-11-20","options":{{"partition_threshold":1,"partition_count":4}}}},"execution_name":"{name}","execution_id":"arn:aws:states:us-east-1:000000000000:execution:cob:{name}"}}"#
        ))
    }

    #[tokio::test]
    async fn a_scheduled_run_gets_a_record_that_holds_its_date_and_moves_to_executing() {
        let runs = MemoryRuns::default();
        let p = plan(
            &one_account_book(),
            &runs,
            &cfg(50_000),
            raw("nightly-1"),
            now(),
        )
        .await
        .unwrap();
        assert_eq!(p.path, Path::Partitioned);
        let r = runs.get("nightly-1").await.unwrap().unwrap();
        assert_eq!(
            (r.status, r.units_total, r.attempt),
            (RunStatus::Executing, 4, 1)
        );
        assert!(r.execution_arn.unwrap().ends_with(":nightly-1"));
        assert_eq!(r.started_at, Some(now()));
        assert_eq!(
            runs.current("cob#2026-11-20")
                .await
                .unwrap()
                .unwrap()
                .run_id,
            "nightly-1"
        );
        // A retried coordinator plans the same and leaves the record as it is.
        let again = plan(
            &one_account_book(),
            &runs,
            &cfg(50_000),
            raw("nightly-1"),
            now(),
        )
        .await
        .unwrap();
        assert_eq!(again, p);
        assert_eq!(runs.records().len(), 1);
    }

    #[tokio::test]
    async fn a_submitted_run_moves_from_initiated_and_a_canceled_one_is_skipped() {
        let runs = MemoryRuns::default();
        let d = "2026-11-20".parse().unwrap();
        let (r, _) = runs
            .submit(&|a| RunRecord::new_cob(d, a, RunStatus::Initiated, now()))
            .await
            .unwrap();
        plan(
            &one_account_book(),
            &runs,
            &cfg(50_000),
            raw(&r.run_id),
            now(),
        )
        .await
        .unwrap();
        assert_eq!(
            runs.get(&r.run_id).await.unwrap().unwrap().status,
            RunStatus::Executing
        );

        let (c, _) = runs
            .submit(&|a| {
                RunRecord::new_cob(
                    "2026-11-19".parse().unwrap(),
                    a,
                    RunStatus::Initiated,
                    now(),
                )
            })
            .await
            .unwrap();
        runs.transition(&c.run_id, RunStatus::Canceled, now(), &Patch::default())
            .await
            .unwrap();
        let mut e = raw(&c.run_id);
        e.input["business_date"] = "2026-11-19".into();
        let p = plan(&one_account_book(), &runs, &cfg(50_000), e, now())
            .await
            .unwrap();
        assert_eq!(p.path, Path::Skip);
        assert!(p.partitions.is_empty());
        assert_eq!(
            runs.get(&c.run_id).await.unwrap().unwrap().status,
            RunStatus::Canceled
        );
    }

    #[tokio::test]
    async fn a_second_start_for_a_held_date_runs_but_is_marked_as_a_duplicate() {
        let runs = MemoryRuns::default();
        plan(
            &one_account_book(),
            &runs,
            &cfg(50_000),
            raw("first"),
            now(),
        )
        .await
        .unwrap();
        let p = plan(
            &one_account_book(),
            &runs,
            &cfg(50_000),
            raw("second"),
            now(),
        )
        .await
        .unwrap();
        assert_eq!(p.path, Path::Partitioned);
        let r = runs.get("second").await.unwrap().unwrap();
        assert_eq!(r.duplicate_of.as_deref(), Some("first"));
        assert_eq!(
            runs.current("cob#2026-11-20")
                .await
                .unwrap()
                .unwrap()
                .run_id,
            "first"
        );
    }
}
