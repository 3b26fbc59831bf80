//! Run records: what every COB (and, later, reconciliation) run is doing, as
//! data. A run has a business key (the COB date), a status that only moves
//! forward, progress by unit (partition) and the failure cause.
//!
//! ```text
//! INITIATED ──► EXECUTING ──► SUCCESS
//!     │             │
//!     │             ├──────► FAILURE
//!     └─────────────┴──────► CANCELED   (and INITIATED ──► FAILURE)
//! ```

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Cob,
    Recon,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Cob => "cob",
            RunKind::Recon => "recon",
        }
    }
}

impl std::str::FromStr for RunKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cob" => Ok(RunKind::Cob),
            "recon" => Ok(RunKind::Recon),
            _ => Err(format!("`{s}`: expected cob or recon")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunStatus {
    Initiated,
    Executing,
    Success,
    Failure,
    Canceled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Initiated,
        RunStatus::Executing,
        RunStatus::Success,
        RunStatus::Failure,
        RunStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Initiated => "INITIATED",
            RunStatus::Executing => "EXECUTING",
            RunStatus::Success => "SUCCESS",
            RunStatus::Failure => "FAILURE",
            RunStatus::Canceled => "CANCELED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Success | RunStatus::Failure | RunStatus::Canceled
        )
    }

    /// The statuses a run may move to `self` from: the condition of the write.
    pub fn predecessors(self) -> &'static [RunStatus] {
        match self {
            RunStatus::Initiated => &[],
            RunStatus::Executing => &[RunStatus::Initiated],
            RunStatus::Success => &[RunStatus::Executing],
            RunStatus::Failure | RunStatus::Canceled => {
                &[RunStatus::Initiated, RunStatus::Executing]
            }
        }
    }

    pub fn can_move_to(self, to: RunStatus) -> bool {
        to.predecessors().contains(&self)
    }

    /// Whether a new submit for the same business key starts a new run
    /// (the last one ended without doing the work) or returns this one.
    pub fn allows_resubmit(self) -> bool {
        matches!(self, RunStatus::Failure | RunStatus::Canceled)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RunStatus::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("`{s}`: expected one of INITIATED, EXECUTING, SUCCESS, FAILURE, CANCELED")
            })
    }
}

/// The business key of a COB run: its date. One live or successful run per key.
pub fn cob_key(date: NaiveDate) -> String {
    format!("cob#{date}")
}

/// The run id of attempt `attempt` (1-based) for a COB date; also the
/// Step Functions execution name, so a repeated start of the same attempt is
/// the same execution.
pub fn cob_run_id(date: NaiveDate, attempt: u32) -> String {
    format!("cob-{date}-a{attempt}")
}

/// The business key of a reconciliation run: its program and file date.
pub fn recon_key(program: &str, date: NaiveDate) -> String {
    format!("recon#{program}#{date}")
}

/// The run id of attempt `attempt` of a reconciliation (one program and file
/// date). Not an execution name: a reconciliation is worked by several
/// executions (one per landed object), all named in the record.
pub fn recon_run_id(program: &str, date: NaiveDate, attempt: u32) -> String {
    format!("recon-{program}-{date}-a{attempt}")
}

/// One unit of a run (a COB partition) once it has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRecord {
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// Accounts (or records) processed.
    pub items: u64,
    pub postings: u64,
    pub duration_ms: u64,
    /// `SUCCEEDED`, `FAILED` or `CANCELED`.
    pub outcome: String,
}

/// What a reconciliation execution found when it had nothing to do (the
/// `error` of its entry in a run's `idle`).
pub const FILE_REJECTED: &str = "FileRejected";
pub const SUPERSEDED: &str = "Superseded";
pub const CLAIMED_ELSEWHERE: &str = "ClaimedElsewhere";
/// A run whose executions all found nothing to do, on a day with no
/// earlier report to stand on.
pub const NOTHING_RECONCILED: &str = "NothingReconciled";

/// Why a run failed or was canceled (and, in a run's `idle`, what an
/// execution with nothing to do found).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCause {
    pub error: String,
    pub cause: String,
}

/// Posted total of one currency, as the aggregate reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTotal {
    pub currency: String,
    pub amount: String,
    pub postings: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub kind: RunKind,
    pub business_key: String,
    pub business_date: NaiveDate,
    pub attempt: u32,
    pub status: RunStatus,
    /// The `by_status` index's range key: stored in [`fixed_ts`] form.
    #[serde(with = "fixed_ts_serde")]
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_arn: Option<String>,
    /// The execution input, kept so that a re-submit starts the same execution.
    #[serde(default)]
    pub input: serde_json::Value,
    /// Partitions planned (0 until the coordinator has planned).
    #[serde(default)]
    pub units_total: u32,
    /// Ended units by name (`p0`, `p1`, …).
    /// Always stored, even empty: the store updates `units.<name>` and
    /// `progress.<name>`, which need the map to exist.
    #[serde(default)]
    pub units: BTreeMap<String, UnitRecord>,
    /// Items processed so far by units still running, by unit name.
    #[serde(default)]
    pub progress: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<RunCause>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub totals: Vec<RunTotal>,
    /// Executions working the run, by name (a reconciliation has one per
    /// landed object; a COB names its one in `execution_arn`). Always
    /// stored, even empty, like `units`.
    #[serde(default)]
    pub executions: BTreeMap<String, String>,
    /// Executions that found nothing to do, by name, with what they found
    /// (an older file sequence, a reconciliation already claimed, a rejected
    /// file in a run another execution carries). Always stored, like `units`.
    #[serde(default)]
    pub idle: BTreeMap<String, RunCause>,
    /// Figures of the outcome by name (a reconciliation: records by match
    /// status, breaks; a COB keeps its in `totals`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
    /// Where the outcome's report is (a reconciliation's report object key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_key: Option<String>,
    /// Another live or successful run held the business key when this one
    /// was started outside `submit` (the ledger still posts each day once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
}

impl RunRecord {
    pub fn new_cob(
        date: NaiveDate,
        attempt: u32,
        status: RunStatus,
        now: DateTime<Utc>,
    ) -> RunRecord {
        RunRecord {
            run_id: cob_run_id(date, attempt),
            kind: RunKind::Cob,
            business_key: cob_key(date),
            business_date: date,
            attempt,
            status,
            created_at: now,
            updated_at: now,
            started_at: (status == RunStatus::Executing).then_some(now),
            ended_at: None,
            execution_arn: None,
            input: serde_json::Value::Null,
            units_total: 0,
            units: BTreeMap::new(),
            progress: BTreeMap::new(),
            cause: None,
            totals: Vec::new(),
            executions: BTreeMap::new(),
            idle: BTreeMap::new(),
            counts: BTreeMap::new(),
            report_key: None,
            duplicate_of: None,
        }
    }

    /// A reconciliation run of `program` and `date`, started by the first
    /// object to land for it (so it is `EXECUTING` from its creation: the
    /// ingest is under way).
    pub fn new_recon(
        program: &str,
        date: NaiveDate,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> RunRecord {
        RunRecord {
            run_id: recon_run_id(program, date, attempt),
            kind: RunKind::Recon,
            business_key: recon_key(program, date),
            ..RunRecord::new_cob(date, attempt, RunStatus::Executing, now)
        }
    }

    /// Whether a new submit for this run's business key starts a new run or
    /// returns this one. A COB date is done once: only a failed or canceled
    /// run lets it be submitted again. A reconciliation is done again
    /// whenever a new object lands after it ended (a corrected file is a new
    /// version, reconciled afresh); while it is live, every landing joins it.
    pub fn allows_resubmit(&self) -> bool {
        match self.kind {
            RunKind::Cob => self.status.allows_resubmit(),
            RunKind::Recon => self.status.is_terminal(),
        }
    }

    /// Every execution the run names found nothing to do: no work is left
    /// in it. (An execution that plans and claims the reconciliation goes
    /// on to its shards and never marks itself idle.)
    pub fn all_idle(&self) -> bool {
        !self.executions.is_empty() && self.executions.keys().all(|n| self.idle.contains_key(n))
    }

    /// The first rejected file among the executions that found nothing to
    /// do: a run that had nothing else to do fails with it.
    pub fn idle_rejection(&self) -> Option<&RunCause> {
        self.idle.values().find(|c| c.error == FILE_REJECTED)
    }

    pub fn units_done(&self) -> u32 {
        self.units.len() as u32
    }

    /// Items processed: ended units' counts plus running units' last report.
    pub fn items_processed(&self) -> u64 {
        let ended: u64 = self.units.values().map(|u| u.items).sum();
        let running: u64 = self
            .progress
            .iter()
            .filter(|(k, _)| !self.units.contains_key(*k))
            .map(|(_, n)| n)
            .sum();
        ended + running
    }

    /// The slowest ended unit, by duration.
    pub fn slowest_unit(&self) -> Option<(&str, &UnitRecord)> {
        self.units
            .iter()
            .max_by_key(|(_, u)| u.duration_ms)
            .map(|(k, u)| (k.as_str(), u))
    }
}

/// A timestamp as text that sorts in time order: RFC 3339, UTC, always
/// three fraction digits (`2026-11-21T01:00:00.000Z`).
pub fn fixed_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

mod fixed_ts_serde {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::fixed_ts(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The unit name of partition `p`.
pub fn unit_name(partition: u32) -> String {
    format!("p{partition}")
}

/// A one-line progress bar: `[######----] 6/10 partitions · 60,000 accounts`.
pub fn progress_line(r: &RunRecord, width: usize) -> String {
    let (done, total) = (r.units_done(), r.units_total);
    let filled = if total == 0 {
        0
    } else {
        (done as usize * width) / total as usize
    };
    let bar: String = "#".repeat(filled) + &"-".repeat(width - filled.min(width));
    match r.kind {
        RunKind::Cob => format!(
            "[{bar}] {done}/{total} partitions · {} accounts · {}",
            group_thousands(r.items_processed()),
            r.status
        ),
        RunKind::Recon => {
            let side = |s: &str| group_thousands(r.progress.get(s).copied().unwrap_or(0));
            format!(
                "[{bar}] {done}/{total} shards · {} settlement + {} internal records in · {}",
                side("settlement"),
                side("internal"),
                r.status
            )
        }
    }
}

pub fn group_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A jurisdiction whose COB deadline is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jurisdiction {
    pub name: String,
    pub time_zone: Tz,
    pub deadline: NaiveTime,
}

/// The COB date a deadline check at `now` is about: the local day before
/// the local date of `now` (the night's run accrues the day that ended at
/// midnight).
pub fn deadline_business_date(now: DateTime<Utc>, tz: Tz) -> NaiveDate {
    now.with_timezone(&tz).date_naive() - Days::new(1)
}

/// Whether `now` is at or past the deadline on its local day.
pub fn past_deadline(now: DateTime<Utc>, j: &Jurisdiction) -> bool {
    now.with_timezone(&j.time_zone).time() >= j.deadline
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadlineVerdict {
    pub jurisdiction: String,
    pub business_date: NaiveDate,
    /// The run holding the date, if any.
    pub run_id: Option<String>,
    pub status: Option<RunStatus>,
    /// `true` when the night's COB is not `SUCCESS` at the deadline.
    pub alarm: bool,
    pub reason: String,
}

/// The verdict of a deadline check: quiet only for a `SUCCESS` run.
pub fn deadline_verdict(
    j: &Jurisdiction,
    business_date: NaiveDate,
    run: Option<&RunRecord>,
) -> DeadlineVerdict {
    let (alarm, reason) = match run {
        None => (true, format!("no COB run for {business_date}")),
        Some(r) if r.status == RunStatus::Success => (false, format!("{} SUCCESS", r.run_id)),
        Some(r) => (
            true,
            format!(
                "COB {} for {business_date} is {}{}",
                r.run_id,
                r.status,
                r.cause
                    .as_ref()
                    .map(|c| format!(": {} ({})", c.error, c.cause))
                    .unwrap_or_default()
            ),
        ),
    };
    DeadlineVerdict {
        jurisdiction: j.name.clone(),
        business_date,
        run_id: run.map(|r| r.run_id.clone()),
        status: run.map(|r| r.status),
        alarm,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunStatus::*;

    #[test]
    fn status_moves_only_forward() {
        let allowed = [
            (Initiated, Executing),
            (Initiated, Failure),
            (Initiated, Canceled),
            (Executing, Success),
            (Executing, Failure),
            (Executing, Canceled),
        ];
        for from in RunStatus::ALL {
            for to in RunStatus::ALL {
                assert_eq!(
                    from.can_move_to(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        for t in [Success, Failure, Canceled] {
            assert!(t.is_terminal());
            assert!(RunStatus::ALL.iter().all(|to| !t.can_move_to(*to)));
        }
    }

    #[test]
    fn statuses_parse_and_print_as_named() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!("executing".parse::<RunStatus>().unwrap(), Executing);
        assert!("DONE".parse::<RunStatus>().is_err());
    }

    #[test]
    fn only_a_failed_or_canceled_run_lets_its_date_be_submitted_again() {
        assert!(Failure.allows_resubmit() && Canceled.allows_resubmit());
        assert!(!Success.allows_resubmit());
        assert!(!Initiated.allows_resubmit() && !Executing.allows_resubmit());
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn progress_counts_ended_units_and_the_last_report_of_running_ones() {
        let d: NaiveDate = "2026-11-20".parse().unwrap();
        let mut r = RunRecord::new_cob(d, 2, Executing, t("2026-11-21T01:00:00Z"));
        assert_eq!(r.run_id, "cob-2026-11-20-a2");
        r.units_total = 4;
        let unit = |items, ms| UnitRecord {
            started_at: t("2026-11-21T01:00:00Z"),
            ended_at: t("2026-11-21T01:01:00Z"),
            items,
            postings: items,
            duration_ms: ms,
            outcome: "SUCCEEDED".into(),
        };
        r.units.insert("p0".into(), unit(1000, 900));
        r.units.insert("p2".into(), unit(1200, 1500));
        // p0 reported 700 before it ended: its ended count wins.
        r.progress.insert("p0".into(), 700);
        r.progress.insert("p1".into(), 350);
        assert_eq!(r.items_processed(), 1000 + 1200 + 350);
        assert_eq!(r.slowest_unit().unwrap().0, "p2");
        assert_eq!(
            progress_line(&r, 10),
            "[#####-----] 2/4 partitions · 2,550 accounts · EXECUTING"
        );
    }

    #[test]
    fn created_at_is_stored_as_text_that_sorts_in_time_order() {
        let at = |s: &str| RunRecord::new_cob("2026-11-20".parse().unwrap(), 1, Initiated, t(s));
        let a = serde_json::to_value(at("2026-11-21T01:00:00Z")).unwrap();
        let b = serde_json::to_value(at("2026-11-21T01:00:00.5Z")).unwrap();
        assert_eq!(a["created_at"], "2026-11-21T01:00:00.000Z");
        assert_eq!(b["created_at"], "2026-11-21T01:00:00.500Z");
        assert!(a["created_at"].as_str() < b["created_at"].as_str());
        let back: RunRecord = serde_json::from_value(b).unwrap();
        assert_eq!(back.created_at, t("2026-11-21T01:00:00.5Z"));
    }

    #[test]
    fn a_reconciliation_shows_shards_and_the_records_of_each_side() {
        let t0: DateTime<Utc> = "2026-11-21T01:00:00Z".parse().unwrap();
        let mut r = RunRecord::new_recon("ACME", "2026-11-20".parse().unwrap(), 2, t0);
        assert_eq!(r.run_id, "recon-ACME-2026-11-20-a2");
        assert_eq!(r.business_key, "recon#ACME#2026-11-20");
        assert_eq!(r.status, RunStatus::Executing);
        r.units_total = 4;
        r.progress.insert("settlement".into(), 12_000);
        r.progress.insert("internal".into(), 11_990);
        let unit = UnitRecord {
            started_at: t0,
            ended_at: t0,
            items: 6_000,
            postings: 0,
            duration_ms: 5,
            outcome: "SUCCEEDED".into(),
        };
        r.units.insert("s0".into(), unit.clone());
        r.units.insert("s1".into(), unit);
        assert_eq!(
            progress_line(&r, 8),
            "[####----] 2/4 shards · 12,000 settlement + 11,990 internal records in · EXECUTING"
        );
        assert!(!r.allows_resubmit(), "a live reconciliation is joined");
        r.status = RunStatus::Success;
        assert!(
            r.allows_resubmit(),
            "a landing after the end reconciles again"
        );
        let mut cob = RunRecord::new_cob("2026-11-20".parse().unwrap(), 1, RunStatus::Success, t0);
        assert!(!cob.allows_resubmit(), "a COB date is done once");
        cob.status = RunStatus::Canceled;
        assert!(cob.allows_resubmit());
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(1234567), "1,234,567");
    }

    fn london() -> Jurisdiction {
        Jurisdiction {
            name: "UK".into(),
            time_zone: "Europe/London".parse().unwrap(),
            deadline: NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
        }
    }

    #[test]
    fn the_deadline_is_local_time_across_daylight_saving() {
        let ny = Jurisdiction {
            name: "US".into(),
            time_zone: "America/New_York".parse().unwrap(),
            deadline: NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
        };
        // 06:00 in New York is 11:00 UTC in winter (EST) and 10:00 UTC in summer (EDT).
        assert!(past_deadline(t("2026-11-21T11:00:00Z"), &ny));
        assert!(!past_deadline(t("2026-11-21T10:59:59Z"), &ny));
        assert!(past_deadline(t("2026-07-21T10:00:00Z"), &ny));
        assert!(!past_deadline(t("2026-07-21T09:59:59Z"), &ny));
        // London in summer (BST): 06:00 local is 05:00 UTC.
        assert!(past_deadline(t("2026-07-21T05:00:00Z"), &london()));
        assert!(!past_deadline(t("2026-07-21T04:59:00Z"), &london()));
        // The check at 06:00 local on the 21st is about the 20th.
        assert_eq!(
            deadline_business_date(t("2026-11-21T11:00:00Z"), ny.time_zone).to_string(),
            "2026-11-20"
        );
        // Tokyo is already on the 22nd at 21:00 UTC on the 21st.
        assert_eq!(
            deadline_business_date(t("2026-11-21T21:00:00Z"), "Asia/Tokyo".parse().unwrap())
                .to_string(),
            "2026-11-21"
        );
        // 1 March local: the day before is 29 February in a leap year.
        assert_eq!(
            deadline_business_date(t("2028-03-01T06:00:00Z"), london().time_zone).to_string(),
            "2028-02-29"
        );
    }

    #[test]
    fn the_deadline_alarms_unless_the_run_succeeded() {
        let d: NaiveDate = "2026-11-20".parse().unwrap();
        let now = t("2026-11-21T06:00:00Z");
        let v = deadline_verdict(&london(), d, None);
        assert!(v.alarm && v.reason.contains("no COB run for 2026-11-20"));
        for (status, alarm) in [
            (Initiated, true),
            (Executing, true),
            (Failure, true),
            (Canceled, true),
            (Success, false),
        ] {
            let mut r = RunRecord::new_cob(d, 1, status, now);
            if status == Failure {
                r.cause = Some(RunCause {
                    error: "AccrualRunFailed".into(),
                    cause: "partition 3".into(),
                });
            }
            let v = deadline_verdict(&london(), d, Some(&r));
            assert_eq!(v.alarm, alarm, "{status}");
            assert_eq!(v.status, Some(status));
            if status == Failure {
                assert!(
                    v.reason.contains("AccrualRunFailed (partition 3)"),
                    "{}",
                    v.reason
                );
            }
        }
    }
}
