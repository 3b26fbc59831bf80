//! The account book: one interest-bearing account and the JSON Lines import
//! format of `accrual.md`, validated field by field.

use crate::currency::Currency;
use crate::daycount::DayCount;
use crate::money::{parse_amount, parse_decimal};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;

pub const ACCOUNT_ID_LEN_MAX: usize = 64;
/// An import line longer than this is refused before it is parsed.
pub const IMPORT_LINE_BYTES_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Product {
    /// The bank owes interest to the customer.
    Savings,
    /// The customer owes interest to the bank.
    Loan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Active,
    Dormant,
    Closed,
}

impl Product {
    pub fn as_str(self) -> &'static str {
        match self {
            Product::Savings => "SAVINGS",
            Product::Loan => "LOAN",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "SAVINGS" => Some(Product::Savings),
            "LOAN" => Some(Product::Loan),
            _ => None,
        }
    }
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "ACTIVE",
            Status::Dormant => "DORMANT",
            Status::Closed => "CLOSED",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ACTIVE" => Some(Status::Active),
            "DORMANT" => Some(Status::Dormant),
            "CLOSED" => Some(Status::Closed),
            _ => None,
        }
    }
}

/// 1–64 characters of `A-Z a-z 0-9 _ -`.
pub fn valid_account_id(id: &str) -> bool {
    (1..=ACCOUNT_ID_LEN_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An account with its accrual state (`accrued_through` and the carried
/// sub-minor-unit `residual`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub account_id: String,
    pub product: Product,
    pub status: Status,
    pub currency: Currency,
    pub balance: Decimal,
    pub annual_rate: Decimal,
    pub day_count: DayCount,
    pub opened_on: NaiveDate,
    pub accrued_through: Option<NaiveDate>,
    /// Exact interest accrued but not yet posted, below one minor unit in
    /// magnitude. Zero for a freshly imported account.
    pub residual: Decimal,
    /// What the most recent run posted to this account, so that a retried
    /// partition of that run reports the same totals as a clean one.
    pub last_run: Option<RunMark>,
}

/// The postings one run made to one account (cumulative over catch-up chunks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMark {
    pub run_id: String,
    pub postings: u64,
    pub amount: Decimal,
    pub zero_days: u64,
}

/// Why an import line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ImportError {
    pub line: usize,
    pub field: Option<&'static str>,
    pub reason: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "line {}: field `{}`: {}", self.line, field, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    account_id: String,
    product: String,
    status: String,
    currency: String,
    balance: String,
    annual_rate: String,
    day_count: String,
    opened_on: String,
    accrued_through: Option<String>,
}

/// The fields of an import record, in the order of `accrual.md`. Every one
/// is a JSON string; only `accrued_through` may be null or absent.
const FIELDS: [&str; 9] = [
    "account_id",
    "product",
    "status",
    "currency",
    "balance",
    "annual_rate",
    "day_count",
    "opened_on",
    "accrued_through",
];

/// When a line is a JSON object that serde refused, which known field is at
/// fault: missing, or not a string (a balance of `2500.0` is a JSON number,
/// and money is never read through a binary float). `None` for what has no
/// field to name (not JSON, an unknown field: serde's message names it).
fn field_fault(text: &str) -> Option<(&'static str, String)> {
    use serde_json::Value;
    let map: serde_json::Map<String, Value> = serde_json::from_str(text).ok()?;
    FIELDS.into_iter().find_map(|name| {
        let optional = name == "accrued_through";
        let found = match map.get(name) {
            None if optional => return None,
            None => return Some((name, "missing: every record has it".to_string())),
            Some(Value::String(_)) => return None,
            Some(Value::Null) if optional => return None,
            Some(Value::Null) => "null",
            Some(Value::Bool(_)) => "a boolean",
            Some(Value::Number(_)) => "a JSON number",
            Some(Value::Array(_)) => "an array",
            Some(Value::Object(_)) => "an object",
        };
        let expected = if optional {
            "a string YYYY-MM-DD or null"
        } else if matches!(name, "balance" | "annual_rate") {
            "a decimal string such as \"2500.00\""
        } else {
            "a string"
        };
        Some((name, format!("{found}, expected {expected}")))
    })
}

/// Dates outside this range are refused at import: they are typing errors,
/// and an opening date centuries back would make a catch-up of that length.
pub const DATE_MIN: &str = "1900-01-01";
pub const DATE_MAX: &str = "2199-12-31";

fn parse_date(s: &str) -> Option<NaiveDate> {
    // Exactly YYYY-MM-DD: chrono alone would also take `2026-1-5`.
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|_| (DATE_MIN..=DATE_MAX).contains(&s))
}

/// Parses and validates one JSON Lines record. `line` is 1-based, for errors.
pub fn parse_account_line(text: &str, line: usize) -> Result<Account, ImportError> {
    let err = |field: Option<&'static str>, reason: String| ImportError {
        line,
        field,
        reason,
    };
    if text.len() > IMPORT_LINE_BYTES_MAX {
        return Err(err(
            None,
            format!(
                "line is {} bytes; at most {IMPORT_LINE_BYTES_MAX} allowed",
                text.len()
            ),
        ));
    }
    let raw: RawAccount = serde_json::from_str(text).map_err(|e| match field_fault(text) {
        Some((field, reason)) => err(Some(field), reason),
        None => err(None, format!("not a valid account record: {e}")),
    })?;

    if !valid_account_id(&raw.account_id) {
        return Err(err(
            Some("account_id"),
            format!(
                "`{}` is not 1–{ACCOUNT_ID_LEN_MAX} characters of A-Z a-z 0-9 _ -",
                raw.account_id
            ),
        ));
    }
    let product = Product::parse(&raw.product).ok_or_else(|| {
        err(
            Some("product"),
            format!("`{}` is not SAVINGS or LOAN", raw.product),
        )
    })?;
    let status = Status::parse(&raw.status).ok_or_else(|| {
        err(
            Some("status"),
            format!("`{}` is not ACTIVE, DORMANT or CLOSED", raw.status),
        )
    })?;
    let currency =
        Currency::parse(&raw.currency).map_err(|e| err(Some("currency"), e.to_string()))?;
    let balance =
        parse_amount(&raw.balance, currency).map_err(|e| err(Some("balance"), e.to_string()))?;
    let annual_rate =
        parse_decimal(&raw.annual_rate).map_err(|e| err(Some("annual_rate"), e.to_string()))?;
    if annual_rate.is_sign_negative() && !annual_rate.is_zero() || annual_rate >= Decimal::ONE {
        return Err(err(
            Some("annual_rate"),
            format!(
                "`{}` is outside 0 ≤ rate < 1 (a fraction: 0.0425 is 4.25 %)",
                raw.annual_rate
            ),
        ));
    }
    let day_count: DayCount = raw
        .day_count
        .parse()
        .map_err(|e: crate::daycount::UnknownDayCount| err(Some("day_count"), e.to_string()))?;
    let opened_on = parse_date(&raw.opened_on).ok_or_else(|| {
        err(
            Some("opened_on"),
            format!(
                "`{}` is not a date YYYY-MM-DD between {DATE_MIN} and {DATE_MAX}",
                raw.opened_on
            ),
        )
    })?;
    let accrued_through = match raw.accrued_through.as_deref() {
        None => None,
        Some(s) => Some(parse_date(s).ok_or_else(|| {
            err(
                Some("accrued_through"),
                format!(
                    "`{s}` is not a date YYYY-MM-DD between {DATE_MIN} and {DATE_MAX}, or null"
                ),
            )
        })?),
    };
    Ok(Account {
        account_id: raw.account_id,
        product,
        status,
        currency,
        balance,
        annual_rate,
        day_count,
        opened_on,
        accrued_through,
        residual: Decimal::ZERO,
        last_run: None,
    })
}

/// Validates a whole import before anything is written: every line parses
/// and no `account_id` repeats. Holds only the set of ids seen.
#[derive(Default)]
pub struct ImportValidator {
    seen: HashSet<String>,
    line: usize,
}

impl ImportValidator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next line (without its line end). Blank lines are refused:
    /// a blank line inside a book file is a sign of a damaged file.
    pub fn push(&mut self, text: &str) -> Result<Account, ImportError> {
        self.line += 1;
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.trim().is_empty() {
            return Err(ImportError {
                line: self.line,
                field: None,
                reason: "blank line".into(),
            });
        }
        let account = parse_account_line(text, self.line)?;
        if !self.seen.insert(account.account_id.clone()) {
            return Err(ImportError {
                line: self.line,
                field: Some("account_id"),
                reason: format!("`{}` appears earlier in this import", account.account_id),
            });
        }
        Ok(account)
    }

    pub fn lines(&self) -> usize {
        self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"account_id":"SAV-000001","product":"SAVINGS","status":"ACTIVE","currency":"USD","balance":"2500.00","annual_rate":"0.0425","day_count":"ACT/365F","opened_on":"2024-03-01","accrued_through":"2026-11-19"}"#;

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn the_spec_example_parses() {
        let a = parse_account_line(GOOD, 1).unwrap();
        assert_eq!(a.account_id, "SAV-000001");
        assert_eq!(a.balance.to_string(), "2500.00");
        assert_eq!(
            a.accrued_through,
            Some(NaiveDate::from_ymd_opt(2026, 11, 19).unwrap())
        );
        assert_eq!(a.residual, Decimal::ZERO);
    }

    #[test]
    fn each_bad_field_is_named_with_its_line() {
        let cases = [
            ("account_id", r#""has space""#),
            ("account_id", &format!("\"{}\"", "A".repeat(65))),
            ("product", r#""CHEQUE""#),
            ("status", r#""OPEN""#),
            ("currency", r#""XXX""#),
            ("balance", r#""12.345""#),
            ("balance", r#""1e3""#),
            ("annual_rate", r#""1.0""#),
            ("annual_rate", r#""-0.01""#),
            ("day_count", r#""ACT/365""#),
            ("opened_on", r#""2026-02-30""#),
            ("opened_on", r#""2026-2-3""#),
            ("opened_on", r#""0001-01-01""#),
            ("accrued_through", r#""9999-12-31""#),
            ("accrued_through", r#""yesterday""#),
        ];
        for (field, value) in cases {
            let e = parse_account_line(&with(field, value), 7).unwrap_err();
            assert_eq!((e.line, e.field), (7, Some(field)), "{field}={value}: {e}");
        }
    }

    #[test]
    fn unknown_and_missing_fields_are_refused() {
        let extra = GOOD.replace("}", r#","nickname":"x"}"#);
        assert!(parse_account_line(&extra, 1)
            .unwrap_err()
            .reason
            .contains("nickname"));
        let missing = GOOD.replace(r#""currency":"USD","#, "");
        assert_eq!(
            parse_account_line(&missing, 1).unwrap_err().to_string(),
            "line 1: field `currency`: missing: every record has it"
        );
    }

    #[test]
    fn a_field_of_the_wrong_json_type_or_missing_is_named() {
        for (field, value, says) in [
            (
                "balance",
                "2500.0",
                "a JSON number, expected a decimal string",
            ),
            ("annual_rate", "0.0425", "a JSON number"),
            ("currency", "null", "null, expected a string"),
            ("product", "[]", "an array"),
            ("opened_on", "true", "a boolean"),
            (
                "accrued_through",
                "20261119",
                "expected a string YYYY-MM-DD or null",
            ),
        ] {
            let e = parse_account_line(&with(field, value), 4).unwrap_err();
            assert_eq!((e.line, e.field), (4, Some(field)), "{field}={value}: {e}");
            assert!(e.reason.contains(says), "{field}={value}: {e}");
        }
        let missing = GOOD.replace(r#""balance":"2500.00","#, "");
        let e = parse_account_line(&missing, 2).unwrap_err();
        assert_eq!(
            (e.field, e.reason.as_str()),
            (Some("balance"), "missing: every record has it")
        );
        // Without accrued_through the record is whole: nothing accrued yet.
        let without = GOOD.replace(r#","accrued_through":"2026-11-19""#, "");
        assert_eq!(
            parse_account_line(&without, 1).unwrap().accrued_through,
            None
        );
    }

    #[test]
    fn a_null_accrued_through_means_nothing_accrued_yet() {
        assert_eq!(
            parse_account_line(&with("accrued_through", "null"), 1)
                .unwrap()
                .accrued_through,
            None
        );
    }

    #[test]
    fn a_duplicate_id_is_refused_on_its_second_line() {
        let mut v = ImportValidator::new();
        v.push(GOOD).unwrap();
        v.push(&with("account_id", r#""SAV-000002""#)).unwrap();
        let e = v.push(GOOD).unwrap_err();
        assert_eq!((e.line, e.field), (3, Some("account_id")));
        assert_eq!(
            e.to_string(),
            "line 3: field `account_id`: `SAV-000001` appears earlier in this import"
        );
    }

    #[test]
    fn blank_and_oversized_lines_are_refused() {
        let mut v = ImportValidator::new();
        assert_eq!(v.push("  ").unwrap_err().line, 1);
        assert!(parse_account_line(&" ".repeat(IMPORT_LINE_BYTES_MAX + 1), 2).is_err());
    }
}
