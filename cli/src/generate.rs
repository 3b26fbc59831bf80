//! A deterministic synthetic account book for demos, tests and benchmarks:
//! the same seed gives the same file on every machine.

use std::io::Write;
use tally_domain::NaiveDate;

/// SplitMix64: tiny, stable, and good enough to spread test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes `count` accounts as JSON Lines for a COB on `business_date`: most
/// accrued through the day before, some a few days behind (catch-up), some
/// opening inside the range, some dormant or closed, a mix of currencies
/// (including JPY and BHD), products and day counts.
pub fn generate(
    count: u64,
    seed: u64,
    business_date: NaiveDate,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut r = Rng(seed);
    let day = |n: u64| business_date - chrono::Days::new(n);
    for i in 0..count {
        let product = if r.below(3) == 0 { "LOAN" } else { "SAVINGS" };
        let status = match r.below(50) {
            0 => "DORMANT",
            1 => "CLOSED",
            _ => "ACTIVE",
        };
        let (currency, exponent) = match r.below(20) {
            0 => ("JPY", 0),
            1 => ("BHD", 3),
            2..=4 => ("EUR", 2),
            5..=6 => ("GBP", 2),
            _ => ("USD", 2),
        };
        let minor = r.below(10_000_000) as i64 - if r.below(40) == 0 { 10_000_000 } else { 0 };
        let balance = match exponent {
            0 => format!("{}", minor * 10),
            3 => format!("{}.{:03}", minor / 1000, (minor % 1000).abs()),
            _ => format!("{}.{:02}", minor / 100, (minor % 100).abs()),
        };
        let balance = if minor < 0 && !balance.starts_with('-') {
            format!("-{balance}")
        } else {
            balance
        };
        let rate = format!("0.{:04}", r.below(1200));
        let day_count = ["ACT/365F", "ACT/360", "30/360", "ACT/ACT"][r.below(4) as usize];
        let (opened_on, accrued_through) = match r.below(100) {
            0..=1 => (day(1), "null".to_owned()), // opened yesterday, nothing accrued
            2..=6 => (day(800), format!("\"{}\"", day(4))), // three days behind
            _ => (day(400 + r.below(2000)), format!("\"{}\"", day(1))),
        };
        writeln!(
            out,
            r#"{{"account_id":"{}-{i:08}","product":"{product}","status":"{status}","currency":"{currency}","balance":"{balance}","annual_rate":"{rate}","day_count":"{day_count}","opened_on":"{opened_on}","accrued_through":{accrued_through}}}"#,
            if product == "LOAN" { "LN" } else { "SV" }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_domain::account::ImportValidator;

    #[test]
    fn every_generated_line_passes_the_import_validation() {
        let mut buf = Vec::new();
        generate(5_000, 7, "2026-11-20".parse().unwrap(), &mut buf).unwrap();
        let mut v = ImportValidator::new();
        for line in String::from_utf8(buf).unwrap().lines() {
            v.push(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
        assert_eq!(v.lines(), 5_000);
    }

    #[test]
    fn the_same_seed_gives_the_same_book() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        generate(100, 42, "2026-11-20".parse().unwrap(), &mut a).unwrap();
        generate(100, 42, "2026-11-20".parse().unwrap(), &mut b).unwrap();
        assert_eq!(a, b);
    }
}
