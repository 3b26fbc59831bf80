//! The daily accrual rule of `accrual.md`: exact interest per day with the
//! one division last, half-even rounding to the minor unit with the residual
//! carried, catch-up over missed days, and the double entry of each posting.

use crate::account::{Account, Product, Status};
use crate::daycount::DayFraction;
use crate::money::round_half_even;
use chrono::NaiveDate;
use rust_decimal::Decimal;

/// One accrued day of one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayAccrual {
    pub date: NaiveDate,
    /// `balance × rate × days ÷ basis`, at full precision.
    pub exact: Decimal,
    /// `round_half_even(exact + residual before, exponent)`; zero is not
    /// written to the ledger but still counts as accrued.
    pub posted: Decimal,
    /// The residual carried after this day.
    pub residual: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccrualError {
    #[error("account {0}: interest overflows the decimal range")]
    Overflow(String),
}

/// The first day a run for `business_date` would accrue, or `None` when the
/// account is not active or already accrued through that date.
pub fn first_day(account: &Account, business_date: NaiveDate) -> Option<NaiveDate> {
    if account.status != Status::Active {
        return None;
    }
    let after_last = account.accrued_through.and_then(|d| d.succ_opt());
    let first = match after_last {
        Some(d) => d.max(account.opened_on),
        None if account.accrued_through.is_some() => return None, // accrued through the end of time
        None => account.opened_on,
    };
    (first <= business_date).then_some(first)
}

/// Accrues every day from [`first_day`] through `business_date` in order,
/// appending one [`DayAccrual`] a day to `out` (which is cleared first).
///
/// Per day the exact interest depends only on the day's `(days, basis)`, of
/// which an account meets at most a handful, so each is computed once.
pub fn accrue(
    account: &Account,
    business_date: NaiveDate,
    out: &mut Vec<DayAccrual>,
) -> Result<(), AccrualError> {
    accrue_limited(account, business_date, out, usize::MAX)
}

/// [`accrue`], stopping after the day that brings the non-zero postings to
/// `postings_max`: the days that fit one atomic commit, so the work of a
/// round is bounded however long the catch-up.
pub fn accrue_limited(
    account: &Account,
    business_date: NaiveDate,
    out: &mut Vec<DayAccrual>,
    postings_max: usize,
) -> Result<(), AccrualError> {
    out.clear();
    let mut postings = 0usize;
    let Some(first) = first_day(account, business_date) else {
        return Ok(());
    };
    let overflow = || AccrualError::Overflow(account.account_id.clone());
    // A balance of zero or below accrues zero.
    let principal_times_rate = if account.balance > Decimal::ZERO {
        account
            .balance
            .checked_mul(account.annual_rate)
            .ok_or_else(overflow)?
    } else {
        Decimal::ZERO
    };
    let exponent = account.currency.exponent();
    let mut memo: [(DayFraction, Decimal); 4] = [(
        DayFraction {
            days: u32::MAX,
            basis: 0,
        },
        Decimal::ZERO,
    ); 4];
    let mut residual = account.residual;
    let mut day = first;
    loop {
        let fraction = account.day_count.one_day(day);
        let exact = match memo.iter().find(|(f, _)| *f == fraction) {
            Some((_, e)) => *e,
            None => {
                let e = principal_times_rate
                    .checked_mul(Decimal::from(fraction.days))
                    .and_then(|n| n.checked_div(Decimal::from(fraction.basis)))
                    .ok_or_else(overflow)?;
                memo.rotate_right(1);
                memo[0] = (fraction, e);
                e
            }
        };
        let due = exact.checked_add(residual).ok_or_else(overflow)?;
        let posted = round_half_even(due, exponent);
        residual = due - posted;
        out.push(DayAccrual {
            date: day,
            exact,
            posted,
            residual,
        });
        postings += usize::from(!posted.is_zero());
        if day == business_date || postings == postings_max {
            return Ok(());
        }
        day = day
            .succ_opt()
            .expect("business dates stay inside chrono's range");
    }
}

/// The debit and credit ledger accounts of a posting.
pub fn entry_accounts(product: Product, account_id: &str) -> (String, String) {
    match product {
        Product::Savings => (
            "interest_expense".into(),
            format!("interest_payable:{account_id}"),
        ),
        Product::Loan => (
            format!("interest_receivable:{account_id}"),
            "interest_income".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::currency::Currency;
    use crate::daycount::DayCount;
    use crate::test_support::{date, dec};

    fn account(ccy: &str, balance: &str, rate: &str, dc: DayCount) -> Account {
        Account {
            account_id: "T-1".into(),
            product: Product::Savings,
            status: Status::Active,
            currency: Currency::parse(ccy).unwrap(),
            balance: dec(balance),
            annual_rate: dec(rate),
            day_count: dc,
            opened_on: date("2020-01-01"),
            accrued_through: Some(date("2026-11-19")),
            residual: Decimal::ZERO,
            last_run: None,
        }
    }

    fn run(a: &Account, through: &str) -> Vec<DayAccrual> {
        let mut out = Vec::new();
        accrue(a, date(through), &mut out).unwrap();
        out
    }

    fn posted(v: &[DayAccrual]) -> Vec<String> {
        v.iter().map(|d| d.posted.to_string()).collect()
    }

    #[test]
    fn the_spec_example_posts_29_cents() {
        // 2500.00 × 0.0425 × 1 ÷ 365 = 106.25 ÷ 365 = 0.291095890410958904109589041…
        let v = run(
            &account("USD", "2500.00", "0.0425", DayCount::Act365F),
            "2026-11-20",
        );
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].date, date("2026-11-20"));
        assert_eq!(v[0].posted, dec("0.29"));
        assert_eq!(v[0].residual, v[0].exact - dec("0.29"));
        assert!(v[0]
            .exact
            .to_string()
            .starts_with("0.29109589041095890410958904"));
    }

    #[test]
    fn a_half_way_tie_rounds_to_even_and_the_residual_carries() {
        // 4500.00 × 0.01 ÷ 360 = 0.125 exactly: a tie at the cent.
        let mut a = account("USD", "4500.00", "0.01", DayCount::Act360);
        a.accrued_through = Some(date("2026-11-17"));
        let v = run(&a, "2026-11-20");
        // Day 1: 0.125 → 0.12 (even), residual 0.005.
        // Day 2: 0.125 + 0.005 = 0.130 → 0.13, residual 0.000.
        // Day 3: 0.125 → 0.12, residual 0.005.
        assert_eq!(posted(&v), ["0.12", "0.13", "0.12"]);
        assert_eq!(
            v.iter().map(|d| d.residual).collect::<Vec<_>>(),
            [dec("0.005"), dec("0"), dec("0.005")]
        );
        // The posted sum never drifts a cent from the exact sum.
        let exact: Decimal = v.iter().map(|d| d.exact).sum();
        let total: Decimal = v.iter().map(|d| d.posted).sum();
        assert!((exact - total).abs() < dec("0.01"));
    }

    #[test]
    fn thirty_360_posts_nothing_on_the_31st_and_three_days_at_the_end_of_february() {
        // 36000.00 × 0.05 ÷ 360 = 5.00 a 30/360 day.
        let mut a = account("USD", "36000.00", "0.05", DayCount::Thirty360);
        a.accrued_through = Some(date("2026-01-28"));
        let v = run(&a, "2026-02-01");
        // 29 → 30 Jan counts 1, 30 → 31 Jan counts 0, 31 Jan → 1 Feb 1, 1 → 2 Feb 1.
        assert_eq!(posted(&v), ["5.00", "0.00", "5.00", "5.00"]);
        a.accrued_through = Some(date("2026-02-27"));
        assert_eq!(posted(&run(&a, "2026-02-28")), ["15.00"]);
    }

    #[test]
    fn act_act_divides_29_february_by_366() {
        // 36600.00 × 0.05 ÷ 366 = 5.00 exactly on a leap-year day; over 365 it would be 5.01…
        let mut a = account("USD", "36600.00", "0.05", DayCount::ActAct);
        a.accrued_through = Some(date("2024-02-28"));
        let v = run(&a, "2024-02-29");
        assert_eq!(v[0].exact, dec("5"));
        a.accrued_through = Some(date("2025-02-27"));
        let v = run(&a, "2025-02-28");
        // 1830 ÷ 365 = 5.013698630136986301369863014 → 5.01
        assert_eq!(v[0].posted, dec("5.01"));
    }

    #[test]
    fn yen_posts_whole_units_and_carries_the_fraction() {
        // 1,000,000 JPY × 0.001 ÷ 365 = 2.7397260273972602739726027397… → 3, residual −0.26…
        let a = account("JPY", "1000000", "0.001", DayCount::Act365F);
        let mut a2 = a.clone();
        a2.accrued_through = Some(date("2026-11-15"));
        let v = run(&a2, "2026-11-20");
        // Cumulative exact: 2.74, 5.48, 8.22, 10.96, 13.70 → posted so far is the
        // rounding of the cumulative sum: 3, 5, 8, 11, 14.
        assert_eq!(posted(&v), ["3", "2", "3", "3", "3"]);
        assert!(v.iter().all(|d| d.posted.scale() == 0));
    }

    #[test]
    fn dinar_posts_to_the_fils() {
        // 1000.000 BHD × 0.0365 ÷ 365 = 0.1 exactly.
        let a = account("BHD", "1000.000", "0.0365", DayCount::Act365F);
        assert_eq!(posted(&run(&a, "2026-11-20")), ["0.100"]);
        // 1234.567 × 0.05 ÷ 360 = 0.171467638888… → 0.171
        let b = account("BHD", "1234.567", "0.05", DayCount::Act360);
        assert_eq!(posted(&run(&b, "2026-11-20")), ["0.171"]);
    }

    #[test]
    fn a_negative_or_zero_balance_accrues_zero_but_the_day_counts() {
        for balance in ["-500.00", "0.00"] {
            let v = run(
                &account("USD", balance, "0.05", DayCount::Act365F),
                "2026-11-20",
            );
            assert_eq!(v.len(), 1, "the day still counts as accrued");
            assert_eq!(
                (v[0].exact, v[0].posted, v[0].residual),
                (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO)
            );
        }
    }

    #[test]
    fn catch_up_accrues_every_missed_day_in_order() {
        let mut a = account("USD", "2500.00", "0.0425", DayCount::Act365F);
        a.accrued_through = Some(date("2026-11-16"));
        let v = run(&a, "2026-11-20");
        assert_eq!(
            v.iter().map(|d| d.date).collect::<Vec<_>>(),
            ["2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20"].map(date)
        );
        // 0.2910958904… a day; cumulative 0.29, 0.58, 0.87, 1.16 → 0.29 every day.
        assert_eq!(posted(&v), ["0.29", "0.29", "0.29", "0.29"]);
        // Residual after 4 days is 4 × exact − 1.16 = 1.1643835616… − 1.16.
        assert!(v[3]
            .residual
            .to_string()
            .starts_with("0.004383561643835616438356164"));
    }

    #[test]
    fn an_account_opening_inside_the_range_starts_on_its_opening_day() {
        let mut a = account("USD", "2500.00", "0.0425", DayCount::Act365F);
        a.accrued_through = None;
        a.opened_on = date("2026-11-19");
        let v = run(&a, "2026-11-20");
        assert_eq!(
            v.iter().map(|d| d.date).collect::<Vec<_>>(),
            [date("2026-11-19"), date("2026-11-20")]
        );
        // Accrued through a date before opening: still starts on the opening day.
        a.accrued_through = Some(date("2026-10-01"));
        assert_eq!(run(&a, "2026-11-20").len(), 2);
        // Opens after the business date: nothing.
        a.opened_on = date("2026-11-21");
        assert!(run(&a, "2026-11-20").is_empty());
    }

    #[test]
    fn inactive_or_already_accrued_accounts_accrue_nothing() {
        let mut a = account("USD", "2500.00", "0.0425", DayCount::Act365F);
        a.accrued_through = Some(date("2026-11-20"));
        assert!(run(&a, "2026-11-20").is_empty());
        a.accrued_through = Some(date("2026-11-19"));
        for s in [Status::Dormant, Status::Closed] {
            a.status = s;
            assert!(run(&a, "2026-11-20").is_empty());
        }
    }

    #[test]
    fn a_limited_accrual_stops_after_the_last_posting_that_fits() {
        let mut a = account("USD", "2500.00", "0.0425", DayCount::Act365F);
        a.accrued_through = Some(date("2026-11-10"));
        let mut out = Vec::new();
        accrue_limited(&a, date("2026-11-20"), &mut out, 3).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].date, date("2026-11-13"));
        // The limited prefix is exactly the start of the full accrual.
        assert_eq!(out[..], run(&a, "2026-11-20")[..3]);
    }

    #[test]
    fn a_carried_residual_from_an_earlier_run_is_used() {
        let mut a = account("USD", "4500.00", "0.01", DayCount::Act360);
        a.residual = dec("0.005");
        assert_eq!(posted(&run(&a, "2026-11-20")), ["0.13"]);
    }

    #[test]
    fn savings_and_loans_post_opposite_sides() {
        assert_eq!(
            entry_accounts(Product::Savings, "S1"),
            (
                "interest_expense".to_string(),
                "interest_payable:S1".to_string()
            )
        );
        assert_eq!(
            entry_accounts(Product::Loan, "L1"),
            (
                "interest_receivable:L1".to_string(),
                "interest_income".to_string()
            )
        );
    }
}
