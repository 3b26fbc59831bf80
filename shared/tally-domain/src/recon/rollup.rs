//! The shard summaries of one settlement file combined into the report of
//! `reconciliation.md`, and the exceptions as CSV.
//!
//! [`rollup`] is pure and order-independent: it is the completion
//! watermark's last check (every shard exactly once) and the report's only
//! author, so the same summaries, in whatever order the shards finished,
//! give a byte-identical report.

use super::matching::{ControlSums, CurrencyLine, Outcome, ShardSummary};
use crate::currency::Currency;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// `BALANCED` when every transaction matched, `BREAKS` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ReportStatus {
    Balanced,
    Breaks,
}

/// One currency's line of the report. Amounts are signed (debit positive),
/// in major units with exactly the currency's decimals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyReport {
    pub currency: Currency,
    #[serde(with = "rust_decimal::serde::str")]
    pub internal_net: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub settlement_net: Decimal,
    /// `internal_net − settlement_net`.
    #[serde(with = "rust_decimal::serde::str")]
    pub difference: Decimal,
    pub matched: u64,
    pub mismatched: u64,
    pub unmatched_settlement: u64,
    pub unmatched_internal: u64,
}

/// The report of one `(ProgramID, FileDate)`: serialises to exactly the JSON
/// of `reconciliation.md`, keys in the spec's order.
///
/// Amounts (in the currency lines and in the exceptions) hold exactly the
/// currency's decimals (`"1523.10"`, JPY `"1234"`, BHD `"0.171"`); a missing
/// side's amount is `null`. `fields` is always present: the empty list for an
/// unmatched transaction. Currency lines are sorted by code, exceptions by
/// transaction ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub program_id: String,
    pub file_date: NaiveDate,
    pub status: ReportStatus,
    pub control_totals_agree: bool,
    pub currencies: Vec<CurrencyReport>,
    /// Every transaction that is not `MATCHED`.
    pub exceptions: Vec<Outcome>,
}

/// How many missing shards an error lists (the count is always given).
pub const MISSING_LISTED_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollupError {
    #[error("no shard summaries to roll up")]
    NoSummaries,
    #[error("shard {shard}'s summary has {field} `{found}` where shard {reference_shard}'s has `{expected}`")]
    Inconsistent {
        shard: u32,
        reference_shard: u32,
        field: &'static str,
        expected: String,
        found: String,
    },
    #[error("shard summaries for {shard_count} shards are not one per shard: {missing_count} missing {missing:?}, duplicated {duplicated:?}, out of range {out_of_range:?}")]
    Incomplete {
        shard_count: u32,
        /// At most [`MISSING_LISTED_MAX`] of them, lowest first.
        missing: Vec<u32>,
        missing_count: u64,
        duplicated: Vec<u32>,
        out_of_range: Vec<u32>,
    },
    #[error("shard {shard}'s summary has a line for `{code}`, which is not an ISO 4217 currency")]
    UnknownCurrency { shard: u32, code: String },
}

/// `d` with exactly the currency's decimals. Exact: an amount with more
/// decimals than the currency has (only possible for the internal side of a
/// currency mismatch, e.g. BHD `0.171` reported under USD) keeps them rather
/// than being rounded.
fn at_exponent(d: Decimal, currency: Currency) -> Decimal {
    let mut d = d.normalize();
    if d.scale() <= currency.exponent() {
        d.rescale(currency.exponent());
    }
    if d.is_zero() {
        d.set_sign_positive(true);
    }
    d
}

impl CurrencyReport {
    /// The report line of `line`: nets at the currency's decimals and their
    /// difference.
    pub fn new(currency: Currency, line: &CurrencyLine) -> CurrencyReport {
        CurrencyReport {
            currency,
            internal_net: at_exponent(line.internal_net, currency),
            settlement_net: at_exponent(line.settlement_net, currency),
            difference: at_exponent(line.internal_net - line.settlement_net, currency),
            matched: line.matched,
            mismatched: line.mismatched,
            unmatched_settlement: line.unmatched_settlement,
            unmatched_internal: line.unmatched_internal,
        }
    }
}

impl Report {
    /// Assembles a report from combined lines and exceptions (in any order):
    /// formats the amounts, sorts, and sets the status.
    fn assemble(
        program_id: &str,
        file_date: NaiveDate,
        control_totals_agree: bool,
        lines: &BTreeMap<Currency, CurrencyLine>,
        mut exceptions: Vec<Outcome>,
    ) -> Report {
        // `Currency` orders by code, so the lines come out sorted by code.
        let currencies = lines
            .iter()
            .map(|(c, line)| CurrencyReport::new(*c, line))
            .collect();
        for o in &mut exceptions {
            o.internal_amount = o.internal_amount.map(|d| at_exponent(d, o.currency));
            o.settlement_amount = o.settlement_amount.map(|d| at_exponent(d, o.currency));
        }
        // IDs are unique in a complete rollup; the full order only makes
        // the result independent of input order should they not be.
        exceptions.sort_by(|a, b| {
            a.transaction_id
                .as_bytes()
                .cmp(b.transaction_id.as_bytes())
                .then_with(|| a.cmp(b))
        });
        Report {
            program_id: program_id.to_owned(),
            file_date,
            status: if exceptions.is_empty() {
                ReportStatus::Balanced
            } else {
                ReportStatus::Breaks
            },
            control_totals_agree,
            currencies,
            exceptions,
        }
    }
}

/// Checks that `summaries` are one per shard `0..shard_count` of the same
/// program, date and file sequence; sorted by shard on return.
fn check_complete(summaries: &mut [ShardSummary]) -> Result<(), RollupError> {
    summaries.sort_by_key(|s| s.shard);
    let reference = summaries.first().ok_or(RollupError::NoSummaries)?;
    for s in summaries.iter() {
        let differs = |field, expected: String, found: String| {
            (expected != found).then_some(RollupError::Inconsistent {
                shard: s.shard,
                reference_shard: reference.shard,
                field,
                expected,
                found,
            })
        };
        let inconsistent = differs(
            "program_id",
            reference.program_id.clone(),
            s.program_id.clone(),
        )
        .or_else(|| {
            differs(
                "file_date",
                reference.file_date.to_string(),
                s.file_date.to_string(),
            )
        })
        .or_else(|| {
            differs(
                "file_sequence",
                reference.file_sequence.to_string(),
                s.file_sequence.to_string(),
            )
        })
        .or_else(|| {
            differs(
                "shard_count",
                reference.shard_count.to_string(),
                s.shard_count.to_string(),
            )
        });
        if let Some(e) = inconsistent {
            return Err(e);
        }
    }
    let shard_count = reference.shard_count;
    let mut duplicated = Vec::new();
    let mut out_of_range = Vec::new();
    for pair in summaries.windows(2) {
        if pair[0].shard == pair[1].shard && duplicated.last() != Some(&pair[1].shard) {
            duplicated.push(pair[1].shard);
        }
    }
    for s in summaries.iter() {
        if s.shard >= shard_count && out_of_range.last() != Some(&s.shard) {
            out_of_range.push(s.shard);
        }
    }
    // Present shards are sorted: walk 0..shard_count against them without
    // allocating per shard (a corrupt shard_count could be huge).
    let mut missing = Vec::new();
    let mut missing_count = 0u64;
    let mut present = summaries.iter().map(|s| s.shard).peekable();
    for shard in 0..shard_count {
        while present.next_if(|p| *p < shard).is_some() {}
        if present.peek() != Some(&shard) {
            missing_count += 1;
            if missing.len() < MISSING_LISTED_MAX {
                missing.push(shard);
            }
        }
    }
    if missing_count > 0 || !duplicated.is_empty() || !out_of_range.is_empty() {
        return Err(RollupError::Incomplete {
            shard_count,
            missing,
            missing_count,
            duplicated,
            out_of_range,
        });
    }
    Ok(())
}

/// Combines the shard summaries of one settlement file into its report.
///
/// Requires exactly one summary per shard `0..shard_count`, all of the same
/// program, date, file sequence and shard count; the error names the
/// missing, duplicated or out-of-range shards, or the inconsistent field.
/// Sums each currency's nets and counts, compares the summed control sums
/// with `trailer` (`control_totals_agree`), and sorts the exceptions. The
/// result does not depend on the order of `summaries`.
pub fn rollup(
    mut summaries: Vec<ShardSummary>,
    trailer: &ControlSums,
) -> Result<Report, RollupError> {
    check_complete(&mut summaries)?;
    let mut lines: BTreeMap<Currency, CurrencyLine> = BTreeMap::new();
    let mut control = ControlSums::default();
    let mut exceptions = Vec::new();
    for s in &summaries {
        for (code, line) in &s.currencies {
            let currency = Currency::parse(code).map_err(|_| RollupError::UnknownCurrency {
                shard: s.shard,
                code: code.clone(),
            })?;
            lines.entry(currency).or_default().absorb(line);
        }
        control.absorb(&s.control);
    }
    let first = &summaries[0];
    let (program_id, file_date) = (first.program_id.clone(), first.file_date);
    for s in summaries {
        exceptions.extend(s.exceptions);
    }
    Ok(Report::assemble(
        &program_id,
        file_date,
        control == *trailer,
        &lines,
        exceptions,
    ))
}

/// The CSV header of [`exceptions_csv`].
pub const EXCEPTIONS_CSV_HEADER: &str =
    "transaction_id,status,fields,currency,internal_amount,settlement_amount";

/// The report's exceptions as CSV: [`EXCEPTIONS_CSV_HEADER`], then one line
/// per exception in the report's order, each ending in `\n`. `fields` are
/// joined by `|`; a missing side's amount is empty.
///
/// Every column but the transaction ID is a fixed name, a currency code or a
/// decimal, so it never needs quoting. The ID is written bare too unless it
/// holds a comma, a double quote or a line end, which the internal CSV cannot
/// carry but the settlement file's 24-character printable-ASCII field can (the
/// spec does not forbid them); such an ID is quoted as RFC 4180 says, so the
/// line keeps its six columns.
pub fn exceptions_csv(report: &Report) -> String {
    let mut out = String::with_capacity(64 * (report.exceptions.len() + 1));
    out.push_str(EXCEPTIONS_CSV_HEADER);
    out.push('\n');
    let amount = |d: Option<Decimal>| d.map(|d| d.to_string()).unwrap_or_default();
    for o in &report.exceptions {
        let fields: Vec<&str> = o.fields.iter().map(|f| f.as_str()).collect();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            csv_value(&o.transaction_id),
            o.status.as_str(),
            fields.join("|"),
            o.currency,
            amount(o.internal_amount),
            amount(o.settlement_amount),
        );
    }
    out
}

/// `v`, quoted (RFC 4180) only if it holds a comma, quote or line end.
fn csv_value(v: &str) -> Cow<'_, str> {
    if v.contains([',', '"', '\r', '\n']) {
        Cow::Owned(format!("\"{}\"", v.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recon::matching::{Field, Status};
    use crate::recon::{Sign, Txn, TxnType};
    use crate::test_support::{date, dec};

    fn txn(id: &str, amount: &str, sign: Sign, currency: &str) -> Txn {
        Txn {
            transaction_id: id.to_owned(),
            auth_code: "A1B2C3".to_owned(),
            masked_pan: "411111******1111".to_owned(),
            transaction_date: date("2026-11-19"),
            transaction_type: match sign {
                Sign::Debit => TxnType::Sale,
                Sign::Credit => TxnType::Refund,
            },
            currency: Currency::parse(currency).unwrap(),
            amount: dec(amount),
            sign,
        }
    }

    /// The hand-worked case: (settlement, internal, fee) by shard.
    ///
    /// USD: T01 matched 100.00 D both; T02 15.00 C settled, 40 C recorded.
    /// JPY: T03 matched 1234 D; T04 500 C settled only.
    /// BHD: T05 0.171 D recorded only; T06 matched 1.500 D (1.5 recorded).
    ///
    /// Nets: USD internal 100 − 40 = 60.00, settlement 100 − 15 = 85.00,
    /// difference −25.00; JPY internal 1234, settlement 1234 − 500 = 734,
    /// difference 500; BHD internal 0.171 + 1.5 = 1.671, settlement 1.500,
    /// difference 0.171.
    /// Control: 5 details; debits 10000 + 1234 + 1500 = 12734 minor;
    /// credits 1500 + 500 = 2000; fees 150 + 20 + 12 + 5 + 15 = 202.
    type Row = (Option<Txn>, Option<Txn>, &'static str);

    fn hand_case() -> Vec<Vec<Row>> {
        let d = Sign::Debit;
        let c = Sign::Credit;
        vec![
            vec![
                (
                    Some(txn("T01", "100.00", d, "USD")),
                    Some(txn("T01", "100.00", d, "USD")),
                    "1.50",
                ),
                (Some(txn("T04", "500", c, "JPY")), None, "5"),
                (None, Some(txn("T05", "0.171", d, "BHD")), ""),
            ],
            vec![
                (
                    Some(txn("T02", "15.00", c, "USD")),
                    Some(txn("T02", "40", c, "USD")),
                    "0.20",
                ),
                (
                    Some(txn("T03", "1234", d, "JPY")),
                    Some(txn("T03", "1234", d, "JPY")),
                    "12",
                ),
                (
                    Some(txn("T06", "1.500", d, "BHD")),
                    Some(txn("T06", "1.5", d, "BHD")),
                    "0.015",
                ),
            ],
        ]
    }

    fn summaries_of(case: &[Vec<Row>]) -> Vec<ShardSummary> {
        case.iter()
            .enumerate()
            .map(|(shard, rows)| {
                let mut s = ShardSummary::new(
                    "ACME",
                    date("2026-11-20"),
                    3,
                    shard as u32,
                    case.len() as u32,
                );
                for (st, it, fee) in rows {
                    s.add(st.as_ref(), it.as_ref());
                    if let Some(st) = st {
                        s.add_settlement_control(st.amount, st.sign, st.currency, dec(fee))
                            .unwrap();
                    }
                }
                s
            })
            .collect()
    }

    fn hand_trailer() -> ControlSums {
        ControlSums {
            details: 5,
            debit_total_minor: 12734,
            credit_total_minor: 2000,
            fee_total_minor: 202,
        }
    }

    const HAND_JSON: &str = concat!(
        r#"{"program_id":"ACME","file_date":"2026-11-20","status":"BREAKS","control_totals_agree":true,"#,
        r#""currencies":["#,
        r#"{"currency":"BHD","internal_net":"1.671","settlement_net":"1.500","difference":"0.171","matched":1,"mismatched":0,"unmatched_settlement":0,"unmatched_internal":1},"#,
        r#"{"currency":"JPY","internal_net":"1234","settlement_net":"734","difference":"500","matched":1,"mismatched":0,"unmatched_settlement":1,"unmatched_internal":0},"#,
        r#"{"currency":"USD","internal_net":"60.00","settlement_net":"85.00","difference":"-25.00","matched":1,"mismatched":1,"unmatched_settlement":0,"unmatched_internal":0}],"#,
        r#""exceptions":["#,
        r#"{"transaction_id":"T02","status":"MISMATCHED","fields":["amount"],"currency":"USD","internal_amount":"-40.00","settlement_amount":"-15.00"},"#,
        r#"{"transaction_id":"T04","status":"UNMATCHED_SETTLEMENT","fields":[],"currency":"JPY","internal_amount":null,"settlement_amount":"-500"},"#,
        r#"{"transaction_id":"T05","status":"UNMATCHED_INTERNAL","fields":[],"currency":"BHD","internal_amount":"0.171","settlement_amount":null}]}"#,
    );

    #[test]
    fn the_report_json_is_byte_for_byte_the_spec_shape() {
        let report = rollup(summaries_of(&hand_case()), &hand_trailer()).unwrap();
        assert_eq!(serde_json::to_string(&report).unwrap(), HAND_JSON);
    }

    #[test]
    fn a_stored_report_reads_back_equal() {
        let report = rollup(summaries_of(&hand_case()), &hand_trailer()).unwrap();
        let back: Report = serde_json::from_str(HAND_JSON).unwrap();
        assert_eq!(back, report);
        assert_eq!(serde_json::to_string(&back).unwrap(), HAND_JSON);
    }

    #[test]
    fn shards_combine_into_one_line_per_currency() {
        // The same currencies in both shards: nets and counts add up.
        let d = Sign::Debit;
        let mut case = hand_case();
        case[1].push((
            Some(txn("T07", "1.00", d, "USD")),
            Some(txn("T07", "1.00", d, "USD")),
            "0",
        ));
        case[0].push((None, Some(txn("T08", "2.50", Sign::Credit, "USD")), ""));
        let report = rollup(summaries_of(&case), &hand_trailer()).unwrap();
        let usd = &report.currencies[2];
        assert_eq!(usd.currency.code(), "USD");
        assert_eq!(usd.internal_net, dec("58.50"));
        assert_eq!(usd.settlement_net, dec("86.00"));
        assert_eq!(usd.difference.to_string(), "-27.50");
        assert_eq!(
            (usd.matched, usd.mismatched, usd.unmatched_internal),
            (2, 1, 1)
        );
        // One more detail than the trailer says.
        assert!(!report.control_totals_agree);
    }

    #[test]
    fn control_totals_agree_only_when_every_sum_equals_the_trailers() {
        let agree = rollup(summaries_of(&hand_case()), &hand_trailer()).unwrap();
        assert!(agree.control_totals_agree);
        for change in [
            |t: &mut ControlSums| t.details += 1,
            |t: &mut ControlSums| t.debit_total_minor -= 1,
            |t: &mut ControlSums| t.credit_total_minor += 1,
            |t: &mut ControlSums| t.fee_total_minor += 100,
        ] {
            let mut trailer = hand_trailer();
            change(&mut trailer);
            let report = rollup(summaries_of(&hand_case()), &trailer).unwrap();
            assert!(!report.control_totals_agree);
            assert_eq!(report.exceptions, agree.exceptions);
        }
    }

    #[test]
    fn every_transaction_matched_is_balanced() {
        let d = Sign::Debit;
        let t = txn("T1", "5.00", d, "EUR");
        let case = vec![vec![(Some(t.clone()), Some(t), "0.05")]];
        let trailer = ControlSums {
            details: 1,
            debit_total_minor: 500,
            credit_total_minor: 0,
            fee_total_minor: 5,
        };
        let report = rollup(summaries_of(&case), &trailer).unwrap();
        assert_eq!(report.status, ReportStatus::Balanced);
        assert!(report.exceptions.is_empty());
        assert!(serde_json::to_string(&report)
            .unwrap()
            .contains(r#""status":"BALANCED""#));
    }

    #[test]
    fn the_order_of_the_summaries_does_not_change_the_report() {
        // Four shards, exceptions spread over them out of ID order.
        let d = Sign::Debit;
        let case: Vec<Vec<Row>> = (0..4)
            .map(|shard| {
                (0..5)
                    .map(|k| {
                        // A bijection of 0..20: unique IDs, not in shard order.
                        let id = format!("T{:02}", (k * 4 + shard) * 7 % 20);
                        let s = txn(&id, "10.00", d, ["USD", "EUR"][k % 2]);
                        let mut i = s.clone();
                        if k == 1 {
                            i.amount = dec("10.01");
                        }
                        (Some(s), (k != 3).then_some(i), "0.10")
                    })
                    .collect()
            })
            .collect();
        let summaries = summaries_of(&case);
        let trailer = ControlSums::default();
        let expected =
            serde_json::to_string(&rollup(summaries.clone(), &trailer).unwrap()).unwrap();
        for order in [[3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]] {
            let shuffled = order.iter().map(|&i| summaries[i].clone()).collect();
            let got = serde_json::to_string(&rollup(shuffled, &trailer).unwrap()).unwrap();
            assert_eq!(got, expected);
        }
        let report = rollup(summaries, &trailer).unwrap();
        let ids: Vec<&str> = report
            .exceptions
            .iter()
            .map(|o| o.transaction_id.as_str())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert_eq!(ids.len(), 8);
    }

    #[test]
    fn a_missing_shard_is_named() {
        let mut summaries = summaries_of(&[vec![], vec![], vec![], vec![]]);
        summaries.remove(2);
        let e = rollup(summaries, &ControlSums::default()).unwrap_err();
        assert_eq!(
            e,
            RollupError::Incomplete {
                shard_count: 4,
                missing: vec![2],
                missing_count: 1,
                duplicated: vec![],
                out_of_range: vec![],
            }
        );
        assert!(e.to_string().contains("1 missing [2]"), "{e}");
    }

    #[test]
    fn a_duplicated_shard_is_named() {
        let mut summaries = summaries_of(&[vec![], vec![], vec![]]);
        summaries.push(summaries[1].clone());
        let e = rollup(summaries, &ControlSums::default()).unwrap_err();
        assert!(
            matches!(&e, RollupError::Incomplete { duplicated, missing_count: 0, .. } if duplicated == &vec![1]),
            "{e}"
        );
        // A duplicate standing in for a missing shard is both.
        let mut summaries = summaries_of(&[vec![], vec![], vec![]]);
        summaries[2] = summaries[0].clone();
        let e = rollup(summaries, &ControlSums::default()).unwrap_err();
        assert!(
            matches!(&e, RollupError::Incomplete { duplicated, missing, .. } if duplicated == &vec![0] && missing == &vec![2]),
            "{e}"
        );
    }

    #[test]
    fn a_shard_beyond_the_count_is_named() {
        let mut summaries = summaries_of(&[vec![], vec![]]);
        summaries[1].shard = 5;
        let e = rollup(summaries, &ControlSums::default()).unwrap_err();
        assert!(
            matches!(&e, RollupError::Incomplete { out_of_range, missing, .. } if out_of_range == &vec![5] && missing == &vec![1]),
            "{e}"
        );
    }

    #[test]
    fn summaries_of_different_files_do_not_roll_up_together() {
        for (field, change) in [
            (
                "program_id",
                (|s: &mut ShardSummary| s.program_id = "OTHER".into()) as fn(&mut ShardSummary),
            ),
            ("file_date", |s| s.file_date = date("2026-11-21")),
            ("file_sequence", |s| s.file_sequence = 4),
            ("shard_count", |s| s.shard_count = 3),
        ] {
            let mut summaries = summaries_of(&[vec![], vec![]]);
            change(&mut summaries[1]);
            let e = rollup(summaries, &ControlSums::default()).unwrap_err();
            assert!(
                matches!(&e, RollupError::Inconsistent { field: f, shard: 1, .. } if *f == field),
                "{field}: {e}"
            );
        }
        assert_eq!(
            rollup(vec![], &ControlSums::default()).unwrap_err(),
            RollupError::NoSummaries
        );
    }

    #[test]
    fn a_huge_corrupt_shard_count_lists_a_bounded_number_of_missing_shards() {
        let mut summaries = summaries_of(&[vec![]]);
        summaries[0].shard_count = 1_000_000;
        let e = rollup(summaries, &ControlSums::default()).unwrap_err();
        assert!(
            matches!(&e, RollupError::Incomplete { missing, missing_count: 999_999, .. } if missing.len() == MISSING_LISTED_MAX),
            "{e}"
        );
    }

    #[test]
    fn exceptions_csv_has_a_header_and_one_line_per_exception() {
        let mut case = hand_case();
        let mut i = txn("T09", "9.99", Sign::Credit, "EUR");
        let s = txn("T09", "9.90", Sign::Debit, "USD");
        i.auth_code = "ZZZZZZ".into();
        case[0].push((Some(s), Some(i), "0"));
        let report = rollup(summaries_of(&case), &hand_trailer()).unwrap();
        assert_eq!(
            exceptions_csv(&report),
            "transaction_id,status,fields,currency,internal_amount,settlement_amount\n\
             T02,MISMATCHED,amount,USD,-40.00,-15.00\n\
             T04,UNMATCHED_SETTLEMENT,,JPY,,-500\n\
             T05,UNMATCHED_INTERNAL,,BHD,0.171,\n\
             T09,MISMATCHED,amount|sign|currency|auth_code,USD,-9.99,9.90\n"
        );
        assert_eq!(
            report.exceptions[3].fields,
            vec![Field::Amount, Field::Sign, Field::Currency, Field::AuthCode]
        );
        assert_eq!(report.exceptions[3].status, Status::Mismatched);
    }

    #[test]
    fn an_id_holding_a_comma_or_quote_is_quoted_in_the_csv() {
        let case = vec![vec![
            (Some(txn("A,1", "1.00", Sign::Debit, "USD")), None, "0"),
            (Some(txn("B\"2", "2.00", Sign::Debit, "USD")), None, "0"),
        ]];
        let report = rollup(summaries_of(&case), &ControlSums::default()).unwrap();
        assert_eq!(
            exceptions_csv(&report),
            "transaction_id,status,fields,currency,internal_amount,settlement_amount\n\
             \"A,1\",UNMATCHED_SETTLEMENT,,USD,,1.00\n\
             \"B\"\"2\",UNMATCHED_SETTLEMENT,,USD,,2.00\n"
        );
    }

    #[test]
    fn an_amount_with_more_decimals_than_the_outcome_currency_is_kept_whole() {
        let mut case = hand_case();
        let s = txn("T10", "1.00", Sign::Debit, "USD");
        let i = txn("T10", "1.005", Sign::Debit, "BHD");
        case[0].push((Some(s), Some(i), "0"));
        let report = rollup(summaries_of(&case), &hand_trailer()).unwrap();
        let o = report.exceptions.last().unwrap();
        assert_eq!(o.internal_amount.unwrap().to_string(), "1.005");
        assert_eq!(o.settlement_amount.unwrap().to_string(), "1.00");
        assert_eq!(report.currencies[0].internal_net.to_string(), "2.676");
    }
}
