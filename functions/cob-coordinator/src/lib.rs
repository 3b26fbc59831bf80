//! The COB coordinator: counts the active accounts and plans the run — one
//! partition below the threshold, the hash-bucket fan-out at or above it.
//!
//! # Layout
//!
//! - [`Config`]: threshold, partition count and time zone from the environment.
//! - [`plan`]: validates the execution input and makes the [`Plan`].

use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use tally_aws::config::{bounded, ConfigError};
use tally_aws::handler_error::HandlerError;
use tally_aws::ports::AccountBook;
use tally_domain::cob::{check_business_date, check_run_id, Fault, Plan};
use tally_domain::partition::{check_partition_count, COB_SHARD_COUNT};

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
    pub input: RunInput,
    pub execution_name: String,
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

pub async fn plan<B: AccountBook>(
    book: &B,
    cfg: &Config,
    event: CoordinatorEvent,
    now: DateTime<Utc>,
) -> Result<Plan, HandlerError> {
    let run_id = event.execution_name;
    check_run_id(&run_id).map_err(HandlerError::invalid_input)?;
    let date = business_date(&event.input, cfg.time_zone, now)?;
    let threshold = event
        .input
        .options
        .partition_threshold
        .unwrap_or(cfg.partition_threshold);
    let count = event
        .input
        .options
        .partition_count
        .unwrap_or(cfg.partition_count);
    let active = book.count_active().await?;
    let plan = Plan::make(&run_id, date, active, threshold, count, event.input.fault)
        .map_err(|e| HandlerError::invalid_input(e.to_string()))?;
    tracing::info!(run_id, business_date = %date, active_accounts = active, path = ?plan.path,
                   partitions = plan.partition_count, "planned");
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_aws::memory::MemoryBook;
    use tally_domain::cob::Path;

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
            plan(&MemoryBook::default(), &cfg(0), e, now())
                .await
                .unwrap_err()
                .name,
            "InvalidInput"
        );
    }
}
