//! Day-count conventions for one day of accrual, `d` to `d + 1`.
//!
//! Each convention yields a pair `(days, basis)` of integers rather than a
//! fraction, so that the accrual can multiply by `days` and divide by `basis`
//! last, keeping every terminating result exact.

use chrono::{Datelike, NaiveDate};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DayCount {
    /// Actual days over a fixed 365.
    Act365F,
    /// Actual days over 360.
    Act360,
    /// 30/360 Bond Basis, ISDA 2006 §4.16(f).
    Thirty360,
    /// Actual/Actual ISDA, ISDA 2006 §4.16(b): days in a leap year over 366,
    /// the rest over 365.
    ActAct,
}

/// The numerator and denominator of a day's year fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DayFraction {
    pub days: u32,
    pub basis: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a day count (expected ACT/365F, ACT/360, 30/360 or ACT/ACT)")]
pub struct UnknownDayCount(pub String);

impl DayCount {
    pub const ALL: [DayCount; 4] = [
        DayCount::Act365F,
        DayCount::Act360,
        DayCount::Thirty360,
        DayCount::ActAct,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DayCount::Act365F => "ACT/365F",
            DayCount::Act360 => "ACT/360",
            DayCount::Thirty360 => "30/360",
            DayCount::ActAct => "ACT/ACT",
        }
    }

    /// The year fraction of the single day from `d` to `d + 1`.
    pub fn one_day(self, d: NaiveDate) -> DayFraction {
        match self {
            DayCount::Act365F => DayFraction {
                days: 1,
                basis: 365,
            },
            DayCount::Act360 => DayFraction {
                days: 1,
                basis: 360,
            },
            DayCount::ActAct => {
                // The whole day lies in d's year, so one term of the ISDA sum.
                let basis = if is_leap_year(d.year()) { 366 } else { 365 };
                DayFraction { days: 1, basis }
            }
            DayCount::Thirty360 => {
                let next = d.succ_opt().expect("dates stay inside chrono's range");
                DayFraction {
                    days: thirty_360_days(d, next),
                    basis: 360,
                }
            }
        }
    }
}

/// Bond Basis day count between two dates: `D1` = 31 becomes 30; `D2` = 31
/// becomes 30 when (the adjusted) `D1` is 30 or more. February is not adjusted.
pub fn thirty_360_days(d1: NaiveDate, d2: NaiveDate) -> u32 {
    let mut day1 = d1.day() as i64;
    let mut day2 = d2.day() as i64;
    if day1 == 31 {
        day1 = 30;
    }
    if day2 == 31 && day1 >= 30 {
        day2 = 30;
    }
    let n = 360 * (d2.year() as i64 - d1.year() as i64)
        + 30 * (d2.month() as i64 - d1.month() as i64)
        + (day2 - day1);
    u32::try_from(n).expect("d2 follows d1")
}

pub fn is_leap_year(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

impl FromStr for DayCount {
    type Err = UnknownDayCount;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DayCount::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownDayCount(s.to_owned()))
    }
}

impl fmt::Display for DayCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::date;

    fn frac(c: DayCount, d: &str) -> (u32, u32) {
        let f = c.one_day(date(d));
        (f.days, f.basis)
    }

    #[test]
    fn act_conventions_count_one_actual_day() {
        assert_eq!(frac(DayCount::Act365F, "2024-02-29"), (1, 365));
        assert_eq!(frac(DayCount::Act360, "2026-12-31"), (1, 360));
    }

    #[test]
    fn act_act_uses_366_only_inside_a_leap_year() {
        assert_eq!(frac(DayCount::ActAct, "2024-02-29"), (1, 366));
        assert_eq!(frac(DayCount::ActAct, "2024-12-31"), (1, 366));
        assert_eq!(frac(DayCount::ActAct, "2025-01-01"), (1, 365));
        assert_eq!(frac(DayCount::ActAct, "2100-02-28"), (1, 365)); // century, not leap
        assert_eq!(frac(DayCount::ActAct, "2000-02-29"), (1, 366)); // 400-year leap
    }

    #[test]
    fn thirty_360_month_ends_follow_bond_basis() {
        // 30th → 31st counts nothing; 31st → 1st counts one.
        assert_eq!(frac(DayCount::Thirty360, "2026-01-30"), (0, 360));
        assert_eq!(frac(DayCount::Thirty360, "2026-01-31"), (1, 360));
        // 28 February → 1 March of a common year counts three.
        assert_eq!(frac(DayCount::Thirty360, "2026-02-28"), (3, 360));
        // In a leap year: 28 → 29 February one, 29 February → 1 March two.
        assert_eq!(frac(DayCount::Thirty360, "2024-02-28"), (1, 360));
        assert_eq!(frac(DayCount::Thirty360, "2024-02-29"), (2, 360));
        // 31 December → 1 January: 360 − 330 + (1 − 30) = 1.
        assert_eq!(frac(DayCount::Thirty360, "2026-12-31"), (1, 360));
    }

    #[test]
    fn thirty_360_days_sum_to_thirty_over_any_whole_month() {
        for (start, end) in [
            ("2026-01-01", "2026-02-01"),
            ("2026-02-01", "2026-03-01"),
            ("2024-02-01", "2024-03-01"),
            ("2026-04-01", "2026-05-01"),
        ] {
            let (mut d, end) = (date(start), date(end));
            let mut total = 0;
            while d < end {
                total += DayCount::Thirty360.one_day(d).days;
                d = d.succ_opt().unwrap();
            }
            assert_eq!(total, 30, "{start}..{end}");
            assert_eq!(thirty_360_days(date(start), end), 30);
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for c in DayCount::ALL {
            assert_eq!(c.as_str().parse::<DayCount>().unwrap(), c);
        }
        assert!("ACT/365".parse::<DayCount>().is_err());
        assert!("act/360".parse::<DayCount>().is_err());
    }
}
