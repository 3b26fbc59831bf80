//! Tally's domain: money, day counts, accrual, partitioning and the COB run
//! as data. Pure: no AWS, no async, no I/O.
//!
//! # Layout
//!
//! - [`currency`]: ISO 4217 codes and minor-unit exponents.
//! - [`money`]: strict decimal parsing, half-even rounding, formatting.
//! - [`daycount`]: ACT/365F, ACT/360, 30/360 Bond Basis, ACT/ACT ISDA.
//! - [`account`]: the account book and its JSON Lines import.
//! - [`accrual`]: the daily accrual kernel with carried residual.
//! - [`ledger`]: ledger entries and their export lines.
//! - [`partition`]: the stable account-id hash, shards and buckets.
//! - [`cob`]: plan, partition results, aggregation, published events.
//! - [`recon`]: settlement reconciliation: parsing, matching, rollup.
//! - [`run`]: run records: status, progress, business keys, deadlines.
//! - [`errors`]: the stable error names the state machine matches.

pub mod account;
pub mod accrual;
pub mod cob;
pub mod currency;
pub mod daycount;
pub mod errors;
pub mod ledger;
pub mod money;
pub mod partition;
pub mod recon;
pub mod run;

pub use chrono::NaiveDate;
pub use rust_decimal::Decimal;

#[cfg(test)]
pub(crate) mod test_support {
    pub fn dec(s: &str) -> rust_decimal::Decimal {
        s.parse().unwrap()
    }
    pub fn date(s: &str) -> chrono::NaiveDate {
        s.parse().unwrap()
    }
}
