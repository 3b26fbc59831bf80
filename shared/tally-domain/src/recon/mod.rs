//! Settlement reconciliation, pure: parsing and validating the settlement
//! file and the internal records, normalising amounts, sharding, matching,
//! and the rollup and report. Formats: `settlement-file.md` and
//! `reconciliation.md` (in the project's specs).
//!
//! # Layout
//!
//! - this module: the types every part shares ([`Txn`], [`Sign`],
//!   [`TxnType`], [`Rejection`], [`ObjectKey`]).
//! - [`settlement`]: the fixed-width settlement file, streamed line by line.
//! - [`internal`]: the internal records CSV, streamed row by row.
//! - [`seen`]: transaction IDs already used in a file, in fixed memory.
//! - [`shard`]: the stable transaction-id hash into `RECON_SHARD_COUNT` shards.
//! - [`pipeline`]: what the state machine's steps hand each other.
//! - [`matching`]: one transaction's outcome; a shard's summary.
//! - [`rollup`]: shard summaries combined into the report and exceptions CSV.
//! - [`sample`]: deterministic generated files with injected breaks, and
//!   the report they must give (for tests, the demo and benchmarks).

pub mod internal;
pub mod matching;
pub mod pipeline;
pub mod rollup;
pub mod sample;
pub mod seen;
pub mod settlement;
pub mod shard;

use crate::currency::Currency;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// `D` debit (owed by the cardholder: sales) or `C` credit (returned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sign {
    #[serde(rename = "D")]
    Debit,
    #[serde(rename = "C")]
    Credit,
}

impl Sign {
    pub fn parse(s: &str) -> Option<Sign> {
        match s {
            "D" => Some(Sign::Debit),
            "C" => Some(Sign::Credit),
            _ => None,
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Sign::Debit => "D",
            Sign::Credit => "C",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnType {
    #[serde(rename = "SAL")]
    Sale,
    #[serde(rename = "REF")]
    Refund,
    #[serde(rename = "REV")]
    Reversal,
    #[serde(rename = "CBK")]
    Chargeback,
}

impl TxnType {
    pub fn parse(s: &str) -> Option<TxnType> {
        match s {
            "SAL" => Some(TxnType::Sale),
            "REF" => Some(TxnType::Refund),
            "REV" => Some(TxnType::Reversal),
            "CBK" => Some(TxnType::Chargeback),
            _ => None,
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            TxnType::Sale => "SAL",
            TxnType::Refund => "REF",
            TxnType::Reversal => "REV",
            TxnType::Chargeback => "CBK",
        }
    }
}

/// One side of a transaction, normalised: what matching compares. Both the
/// settlement detail and the internal row become one of these. `amount` is
/// unsigned, exact, in major units, at the currency's exponent
/// (USD `12.34`, JPY `1234`, BHD `0.171`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub transaction_id: String,
    pub auth_code: String,
    /// Always masked (first 6, `*` fill, last 4); a full PAN never gets here.
    pub masked_pan: String,
    pub transaction_date: NaiveDate,
    pub transaction_type: TxnType,
    pub currency: Currency,
    pub amount: Decimal,
    pub sign: Sign,
}

impl Txn {
    /// Debits positive, credits negative (major units).
    pub fn signed_amount(&self) -> Decimal {
        match self.sign {
            Sign::Debit => self.amount,
            Sign::Credit => -self.amount,
        }
    }
}

/// Why a whole file is rejected: the 1-based line (the header line of a CSV
/// is line 1), the field, what was expected, and what was found (never a
/// full PAN: a PAN-shaped value is reported masked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("line {line}, field `{field}`: expected {expected}, found {found}")]
pub struct Rejection {
    pub line: u64,
    pub field: String,
    pub expected: String,
    pub found: String,
}

/// Which side a landed object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Settlement,
    Internal,
}

impl Side {
    /// `settlement` or `internal`: the landing prefix, and the name in keys and ids.
    pub fn as_str(&self) -> &'static str {
        match self {
            Side::Settlement => "settlement",
            Side::Internal => "internal",
        }
    }
}

/// A landing-bucket key: `settlement/<ProgramID>/<YYYY-MM-DD>/<name>.dat` or
/// `internal/<ProgramID>/<YYYY-MM-DD>/<name>.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectKey {
    pub side: Side,
    pub program_id: String,
    pub file_date: NaiveDate,
    pub name: String,
}

/// `ProgramID`: 1 to 10 characters of `A-Z 0-9 _ -`.
pub fn valid_program_id(p: &str) -> bool {
    (1..=10).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl ObjectKey {
    /// Parses a landing key; the error says which part is wrong.
    pub fn parse(key: &str) -> Result<ObjectKey, String> {
        let parts: Vec<&str> = key.split('/').collect();
        let [side, program, date, name] = parts[..] else {
            return Err(format!(
                "object key `{key}`: expected settlement/<ProgramID>/<YYYY-MM-DD>/<name>.dat or internal/<ProgramID>/<YYYY-MM-DD>/<name>.csv"
            ));
        };
        let (side, ext) = match side {
            "settlement" => (Side::Settlement, ".dat"),
            "internal" => (Side::Internal, ".csv"),
            other => {
                return Err(format!(
                    "object key `{key}`: prefix `{other}` is neither settlement nor internal"
                ))
            }
        };
        if !valid_program_id(program) {
            return Err(format!(
                "object key `{key}`: program `{program}` is not 1-10 characters of A-Z 0-9 _ -"
            ));
        }
        let file_date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .ok()
            .filter(|d| d.format("%Y-%m-%d").to_string() == date)
            .ok_or_else(|| format!("object key `{key}`: `{date}` is not a YYYY-MM-DD date"))?;
        if name.len() <= ext.len() || !name.ends_with(ext) {
            return Err(format!(
                "object key `{key}`: the file name must end in {ext}"
            ));
        }
        Ok(ObjectKey {
            side,
            program_id: program.to_owned(),
            file_date,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_landing_key_names_side_program_and_date() {
        let k = ObjectKey::parse("settlement/ACME_1/2026-11-20/visa-001.dat").unwrap();
        assert_eq!(k.side, Side::Settlement);
        assert_eq!(k.program_id, "ACME_1");
        assert_eq!(k.file_date.to_string(), "2026-11-20");
        let k = ObjectKey::parse("internal/ACME/2026-11-20/auths.csv").unwrap();
        assert_eq!(k.side, Side::Internal);
    }

    #[test]
    fn a_bad_landing_key_says_which_part_is_wrong() {
        for (key, part) in [
            ("settlement/acme/2026-11-20/a.dat", "program"),
            ("settlement/ACMEACMEACME/2026-11-20/a.dat", "program"),
            ("settlement/ACME/2026-02-30/a.dat", "date"),
            ("settlement/ACME/2026-11-20/a.csv", ".dat"),
            ("internal/ACME/2026-11-20/a.dat", ".csv"),
            ("rejected/ACME/2026-11-20/a.dat", "prefix"),
            ("settlement/ACME/a.dat", "expected"),
        ] {
            let e = ObjectKey::parse(key).unwrap_err();
            assert!(e.contains(part), "{key}: {e}");
        }
    }
}
