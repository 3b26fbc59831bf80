//! The COB deadline check: at the deadline (06:00 local by default) in one
//! jurisdiction, is that night's COB `SUCCESS`? If not — no run, or one still
//! running, failed or canceled — an SNS alarm and a `cob_deadline_missed`
//! event. Quiet for a successful run.
//!
//! One EventBridge Scheduler schedule per jurisdiction invokes it at the
//! deadline in the jurisdiction's IANA time zone, passing the schedule's
//! `scheduled_time`; the check reasons from that time, never from the clock
//! when one is given, so a late or repeated delivery judges the same night,
//! and tests inject any instant.

use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use tally_aws::handler_error::HandlerError;
use tally_aws::ports::{Publisher, RunStore};
use tally_domain::run::{
    cob_key, deadline_business_date, deadline_verdict, past_deadline, DeadlineVerdict, Jurisdiction,
};

pub const MISSED_DETAIL_TYPE: &str = "cob_deadline_missed";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineEvent {
    pub jurisdiction: String,
    pub time_zone: String,
    /// Local deadline, `HH:MM`.
    pub deadline: String,
    /// The instant the check is for (the schedule's scheduled time).
    pub scheduled_time: Option<DateTime<Utc>>,
}

impl DeadlineEvent {
    pub fn jurisdiction(&self) -> Result<Jurisdiction, HandlerError> {
        let time_zone: Tz = self.time_zone.parse().map_err(|_| {
            HandlerError::invalid_input(format!(
                "time_zone `{}` is not an IANA time zone",
                self.time_zone
            ))
        })?;
        // H:M with one or two digits each (the template builds it from two numbers).
        let deadline = self
            .deadline
            .split_once(':')
            .and_then(|(h, m)| {
                let ok =
                    |x: &str| (1..=2).contains(&x.len()) && x.bytes().all(|b| b.is_ascii_digit());
                (ok(h) && ok(m)).then_some(())?;
                NaiveTime::from_hms_opt(h.parse().ok()?, m.parse().ok()?, 0)
            })
            .ok_or_else(|| {
                HandlerError::invalid_input(format!(
                    "deadline `{}`: expected a local time HH:MM such as 06:00",
                    self.deadline
                ))
            })?;
        if self.jurisdiction.trim().is_empty() {
            return Err(HandlerError::invalid_input("jurisdiction is empty"));
        }
        Ok(Jurisdiction {
            name: self.jurisdiction.clone(),
            time_zone,
            deadline,
        })
    }
}

pub async fn check<R: RunStore, P: Publisher>(
    runs: &R,
    publisher: &P,
    event: DeadlineEvent,
    clock: DateTime<Utc>,
) -> Result<DeadlineVerdict, HandlerError> {
    let j = event.jurisdiction()?;
    let now = event.scheduled_time.unwrap_or(clock);
    let date = deadline_business_date(now, j.time_zone);
    let run = runs.current(&cob_key(date)).await?;
    let mut v = deadline_verdict(&j, date, run.as_ref());
    if v.alarm && !past_deadline(now, &j) {
        v.alarm = false;
        v.reason = format!(
            "{} is before the {} deadline in {}: {}",
            now.with_timezone(&j.time_zone).format("%H:%M"),
            j.deadline.format("%H:%M"),
            j.time_zone,
            v.reason
        );
    }
    if v.alarm {
        let detail = serde_json::json!({
            "jurisdiction": v.jurisdiction,
            "time_zone": j.time_zone.name(),
            "deadline": j.deadline.format("%H:%M").to_string(),
            "business_date": v.business_date,
            "checked_at": now,
            "run_id": v.run_id,
            "status": v.status,
            "reason": v.reason,
        });
        publisher
            .alarm(
                &format!(
                    "Tally COB {} not complete by {} {} ({})",
                    v.business_date,
                    j.deadline.format("%H:%M"),
                    j.time_zone,
                    v.jurisdiction
                ),
                &serde_json::to_string_pretty(&detail).expect("json"),
            )
            .await?;
        publisher.put_event(MISSED_DETAIL_TYPE, &detail).await?;
        tracing::error!(jurisdiction = v.jurisdiction, business_date = %v.business_date,
                        reason = v.reason, "COB deadline missed");
    } else {
        tracing::info!(jurisdiction = v.jurisdiction, business_date = %v.business_date,
                       reason = v.reason, "COB deadline check quiet");
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_aws::memory::MemoryPublisher;
    use tally_aws::runs::MemoryRuns;
    use tally_domain::run::{RunRecord, RunStatus};

    fn ev(zone: &str, at: &str) -> DeadlineEvent {
        DeadlineEvent {
            jurisdiction: "UK".into(),
            time_zone: zone.into(),
            deadline: "06:00".into(),
            scheduled_time: Some(at.parse().unwrap()),
        }
    }

    fn clock() -> DateTime<Utc> {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    #[tokio::test]
    async fn a_missing_or_unfinished_run_alarms_and_a_successful_one_is_quiet() {
        let runs = MemoryRuns::default();
        let p = MemoryPublisher::default();
        // 06:00 in London on 21 November is 06:00 UTC; the night is the 20th's.
        let v = check(
            &runs,
            &p,
            ev("Europe/London", "2026-11-21T06:00:00Z"),
            clock(),
        )
        .await
        .unwrap();
        assert!(v.alarm);
        assert_eq!(v.business_date.to_string(), "2026-11-20");
        assert_eq!(p.alarms.lock().unwrap().len(), 1);
        assert!(p.alarms.lock().unwrap()[0].0.contains("2026-11-20"));
        assert_eq!(p.events.lock().unwrap()[0].0, MISSED_DETAIL_TYPE);

        let d = "2026-11-20".parse().unwrap();
        let at = "2026-11-21T01:00:00Z".parse().unwrap();
        for (status, alarms) in [
            (RunStatus::Executing, 2),
            (RunStatus::Failure, 3),
            (RunStatus::Success, 3),
        ] {
            let runs = MemoryRuns::default();
            runs.insert(RunRecord::new_cob(d, 1, status, at));
            let v = check(
                &runs,
                &p,
                ev("Europe/London", "2026-11-21T06:00:00Z"),
                clock(),
            )
            .await
            .unwrap();
            assert_eq!(v.alarm, status != RunStatus::Success, "{status}");
            assert_eq!(p.alarms.lock().unwrap().len(), alarms, "{status}");
        }
    }

    #[tokio::test]
    async fn the_night_and_the_deadline_are_the_jurisdictions_own() {
        let runs = MemoryRuns::default();
        let d = "2026-07-20".parse().unwrap();
        runs.insert(RunRecord::new_cob(d, 1, RunStatus::Success, clock()));
        let p = MemoryPublisher::default();
        // New York in July (EDT): 06:00 local is 10:00 UTC on the 21st, about the 20th: quiet.
        let v = check(
            &runs,
            &p,
            ev("America/New_York", "2026-07-21T10:00:00Z"),
            clock(),
        )
        .await
        .unwrap();
        assert!(!v.alarm, "{v:?}");
        // Tokyo: 06:00 on the 21st is 21:00 UTC on the 20th; the night is the 20th's
        // too, and a check at that instant from Sydney (07:00 on the 21st) likewise.
        let v = check(&runs, &p, ev("Asia/Tokyo", "2026-07-20T21:00:00Z"), clock())
            .await
            .unwrap();
        assert_eq!((v.alarm, v.business_date), (false, d));
        // Before the deadline nothing alarms, whatever the run's state.
        let v = check(
            &MemoryRuns::default(),
            &p,
            ev("Europe/London", "2026-11-21T05:59:00Z"),
            clock(),
        )
        .await
        .unwrap();
        assert!(
            !v.alarm && v.reason.contains("before the 06:00 deadline"),
            "{}",
            v.reason
        );
        assert!(p.alarms.lock().unwrap().is_empty());
    }

    #[test]
    fn bad_configuration_names_the_field() {
        let mut e = ev("Mars/Olympus", "2026-11-21T06:00:00Z");
        assert!(e
            .jurisdiction()
            .unwrap_err()
            .message
            .contains("time_zone `Mars/Olympus`"));
        e.time_zone = "UTC".into();
        for bad in ["6am", "24:00", "06:60", "06", ":30", "006:00"] {
            e.deadline = bad.into();
            assert!(e
                .jurisdiction()
                .unwrap_err()
                .message
                .contains(&format!("deadline `{bad}`")));
        }
        for (good, h, m) in [("6:0", 6, 0), ("06:00", 6, 0), ("23:59", 23, 59)] {
            e.deadline = good.into();
            assert_eq!(
                e.jurisdiction().unwrap().deadline,
                NaiveTime::from_hms_opt(h, m, 0).unwrap()
            );
        }
    }
}
