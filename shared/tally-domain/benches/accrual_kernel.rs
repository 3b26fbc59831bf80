//! The accrual kernel on one core, in account-days per second (criterion's
//! `thrpt` line: elements are account-days). Target: at least 5 million.
//! Prints figures; asserts nothing.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tally_domain::account::{Account, Product, Status};
use tally_domain::accrual::accrue;
use tally_domain::currency::Currency;
use tally_domain::daycount::DayCount;
use tally_domain::{Decimal, NaiveDate};

fn book(n: usize, days_behind: u64, business_date: NaiveDate) -> Vec<Account> {
    let ccys = ["USD", "EUR", "JPY", "BHD", "GBP"].map(|c| Currency::parse(c).unwrap());
    (0..n)
        .map(|i| Account {
            account_id: format!("SV-{i:08}"),
            product: if i % 3 == 0 {
                Product::Loan
            } else {
                Product::Savings
            },
            status: Status::Active,
            currency: ccys[i % ccys.len()],
            balance: Decimal::new(100_000 + (i as i64 * 7919) % 900_000_000, 2),
            annual_rate: Decimal::new(1 + (i as i64 * 31) % 1200, 4),
            day_count: DayCount::ALL[i % 4],
            opened_on: NaiveDate::from_ymd_opt(2020, 1, 1).unwrap(),
            accrued_through: Some(business_date - chrono::Days::new(days_behind)),
            residual: Decimal::ZERO,
            last_run: None,
        })
        .collect()
}

fn kernel(c: &mut Criterion) {
    let date = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let mut group = c.benchmark_group("accrual_kernel");
    // One day per account (the nightly case) and a week of catch-up.
    for days in [1u64, 7] {
        let accounts = book(10_000, days, date);
        group.throughput(Throughput::Elements(accounts.len() as u64 * days));
        group.bench_with_input(
            BenchmarkId::new("account_days", format!("{days}d")),
            &accounts,
            |b, accounts| {
                let mut out = Vec::with_capacity(days as usize);
                b.iter(|| {
                    let mut posted = Decimal::ZERO;
                    for a in accounts {
                        accrue(a, date, &mut out).unwrap();
                        posted += out.last().map_or(Decimal::ZERO, |d| d.posted);
                    }
                    black_box(posted)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, kernel);
criterion_main!(benches);
