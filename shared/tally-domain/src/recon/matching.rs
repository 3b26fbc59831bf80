//! One transaction's outcome, the merge-join that pairs a shard's two sides
//! by transaction ID, and a shard's summary (`reconciliation.md`).
//!
//! A shard is matched by walking its settlement details and its internal
//! records, both sorted by transaction ID, side by side ([`merge_by_id`]):
//! constant memory whatever the shard's size. Each pair goes into a
//! [`ShardSummary`], which keeps only per-currency totals and counts, the
//! control sums, and the exceptions (the non-`MATCHED` outcomes).

use super::{Side, Sign, Txn};
use crate::currency::{Currency, UnknownCurrency};
use chrono::NaiveDate;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// A transaction's reconciliation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Matched,
    Mismatched,
    UnmatchedSettlement,
    UnmatchedInternal,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Matched => "MATCHED",
            Status::Mismatched => "MISMATCHED",
            Status::UnmatchedSettlement => "UNMATCHED_SETTLEMENT",
            Status::UnmatchedInternal => "UNMATCHED_INTERNAL",
        }
    }
}

/// A compared field. The declaration order is the spec's order, which is
/// the order [`Outcome::fields`] lists them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// The unsigned amount, compared as an exact decimal in major units.
    Amount,
    Sign,
    Currency,
    AuthCode,
    MaskedPan,
    TransactionDate,
}

impl Field {
    /// Every field, in the spec's order.
    pub const ALL: [Field; 6] = [
        Field::Amount,
        Field::Sign,
        Field::Currency,
        Field::AuthCode,
        Field::MaskedPan,
        Field::TransactionDate,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Field::Amount => "amount",
            Field::Sign => "sign",
            Field::Currency => "currency",
            Field::AuthCode => "auth_code",
            Field::MaskedPan => "masked_pan",
            Field::TransactionDate => "transaction_date",
        }
    }

    fn differs(&self, s: &Txn, i: &Txn) -> bool {
        match self {
            // `Decimal`'s equality is numeric: 12.3 == 12.30.
            Field::Amount => s.amount != i.amount,
            Field::Sign => s.sign != i.sign,
            Field::Currency => s.currency != i.currency,
            Field::AuthCode => s.auth_code != i.auth_code,
            Field::MaskedPan => s.masked_pan != i.masked_pan,
            Field::TransactionDate => s.transaction_date != i.transaction_date,
        }
    }
}

/// One transaction's outcome. The field order is the report's key order.
///
/// `Ord` is derived (transaction ID first) so that a list of outcomes can be
/// sorted into one canonical order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Outcome {
    pub transaction_id: String,
    pub status: Status,
    /// The differing fields in the spec's order; empty unless `MISMATCHED`.
    pub fields: Vec<Field>,
    /// The settlement side's currency where there is one, else the internal
    /// side's.
    pub currency: Currency,
    /// Signed (debit positive), major units; `None` when the side is missing.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub internal_amount: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub settlement_amount: Option<Decimal>,
}

/// Compares the two sides of one transaction ID. `None` only when both are
/// `None`. When both are present they are assumed to carry the same
/// transaction ID (the caller paired them); the settlement side's ID is the
/// one reported.
pub fn outcome(settlement: Option<&Txn>, internal: Option<&Txn>) -> Option<Outcome> {
    let (transaction_id, status, fields, currency) = match (settlement, internal) {
        (None, None) => return None,
        (Some(s), Some(i)) => {
            let fields: Vec<Field> = Field::ALL.into_iter().filter(|f| f.differs(s, i)).collect();
            let status = if fields.is_empty() {
                Status::Matched
            } else {
                Status::Mismatched
            };
            (&s.transaction_id, status, fields, s.currency)
        }
        (Some(s), None) => (
            &s.transaction_id,
            Status::UnmatchedSettlement,
            Vec::new(),
            s.currency,
        ),
        (None, Some(i)) => (
            &i.transaction_id,
            Status::UnmatchedInternal,
            Vec::new(),
            i.currency,
        ),
    };
    Some(Outcome {
        transaction_id: transaction_id.clone(),
        status,
        fields,
        currency,
        internal_amount: internal.map(Txn::signed_amount),
        settlement_amount: settlement.map(Txn::signed_amount),
    })
}

/// The two sides of one transaction ID, either of which may be missing
/// (never both).
pub type Pair = (Option<Txn>, Option<Txn>);

/// An input of the merge-join was not strictly ascending by transaction ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{side:?} input out of order: transaction ID `{next}` came after `{previous}` (expected strictly ascending IDs in byte order)")]
pub struct OutOfOrder {
    pub side: Side,
    pub previous: String,
    pub next: String,
}

/// The merge-join of [`try_merge_by_id`]: holds one look-ahead record and
/// the last ID taken from each side, nothing more.
pub struct MergeById<S, I> {
    settlement: S,
    internal: I,
    settlement_head: Option<Txn>,
    internal_head: Option<Txn>,
    settlement_last: Option<String>,
    internal_last: Option<String>,
    failed: bool,
}

/// Takes the next record of one side into `head` (if `head` is empty),
/// checking that its ID is strictly above the side's previous one.
fn refill(
    side: Side,
    input: &mut impl Iterator<Item = Txn>,
    head: &mut Option<Txn>,
    last: &mut Option<String>,
) -> Result<(), OutOfOrder> {
    if head.is_some() {
        return Ok(());
    }
    let Some(next) = input.next() else {
        return Ok(());
    };
    if let Some(previous) = last.as_deref() {
        if next.transaction_id.as_bytes() <= previous.as_bytes() {
            return Err(OutOfOrder {
                side,
                previous: previous.to_owned(),
                next: next.transaction_id,
            });
        }
    }
    *last = Some(next.transaction_id.clone());
    *head = Some(next);
    Ok(())
}

impl<S, I> Iterator for MergeById<S, I>
where
    S: Iterator<Item = Txn>,
    I: Iterator<Item = Txn>,
{
    type Item = Result<Pair, OutOfOrder>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let filled = refill(
            Side::Settlement,
            &mut self.settlement,
            &mut self.settlement_head,
            &mut self.settlement_last,
        )
        .and_then(|()| {
            refill(
                Side::Internal,
                &mut self.internal,
                &mut self.internal_head,
                &mut self.internal_last,
            )
        });
        if let Err(e) = filled {
            self.failed = true;
            return Some(Err(e));
        }
        let order = match (&self.settlement_head, &self.internal_head) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(s), Some(i)) => s.transaction_id.as_bytes().cmp(i.transaction_id.as_bytes()),
        };
        Some(Ok(match order {
            Ordering::Less => (self.settlement_head.take(), None),
            Ordering::Greater => (None, self.internal_head.take()),
            Ordering::Equal => (self.settlement_head.take(), self.internal_head.take()),
        }))
    }
}

/// Merge-joins one shard's settlement details and internal records by
/// transaction ID in constant memory, yielding each ID once: both sides
/// when the ID is on both, else the one side.
///
/// Precondition: each input is sorted strictly ascending by transaction ID
/// in byte order (as DynamoDB returns a string sort key; IDs are unique per
/// side). This is checked on every record, in release builds too: the first
/// violation yields an [`OutOfOrder`] naming both IDs, and the iterator then
/// ends. Use this where the inputs come from outside the process.
pub fn try_merge_by_id<S, I>(settlement: S, internal: I) -> MergeById<S::IntoIter, I::IntoIter>
where
    S: IntoIterator<Item = Txn>,
    I: IntoIterator<Item = Txn>,
{
    MergeById {
        settlement: settlement.into_iter(),
        internal: internal.into_iter(),
        settlement_head: None,
        internal_head: None,
        settlement_last: None,
        internal_last: None,
        failed: false,
    }
}

/// [`try_merge_by_id`] for inputs that are sorted by contract (a DynamoDB
/// query on the sort key).
///
/// # Panics
///
/// On an input out of order (the message names both IDs), in release builds
/// too: a mis-sorted input would otherwise pair nothing and report every
/// transaction as unmatched.
pub fn merge_by_id<S, I>(settlement: S, internal: I) -> impl Iterator<Item = Pair>
where
    S: IntoIterator<Item = Txn>,
    I: IntoIterator<Item = Txn>,
{
    try_merge_by_id(settlement, internal).map(|r| r.unwrap_or_else(|e| panic!("merge_by_id: {e}")))
}

/// One currency's line of a shard summary (or of the rollup).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyLine {
    /// Signed (debit positive), major units, exact.
    #[serde(with = "rust_decimal::serde::str")]
    pub internal_net: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub settlement_net: Decimal,
    pub matched: u64,
    pub mismatched: u64,
    pub unmatched_settlement: u64,
    pub unmatched_internal: u64,
}

impl CurrencyLine {
    /// Adds every total and count of `other`.
    pub fn absorb(&mut self, other: &CurrencyLine) {
        self.internal_net += other.internal_net;
        self.settlement_net += other.settlement_net;
        self.matched += other.matched;
        self.mismatched += other.mismatched;
        self.unmatched_settlement += other.unmatched_settlement;
        self.unmatched_internal += other.unmatched_internal;
    }

    fn count(&mut self, status: Status) {
        let n = match status {
            Status::Matched => &mut self.matched,
            Status::Mismatched => &mut self.mismatched,
            Status::UnmatchedSettlement => &mut self.unmatched_settlement,
            Status::UnmatchedInternal => &mut self.unmatched_internal,
        };
        *n += 1;
    }
}

/// The settlement file's control totals, recomputed from its stored details
/// to compare with the trailer: the detail count, the sum of `D`-signed and
/// of `C`-signed amounts (minor units, all currencies added: a hash total),
/// and the sum of interchange fees, signs ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ControlSums {
    pub details: u64,
    pub debit_total_minor: u128,
    pub credit_total_minor: u128,
    pub fee_total_minor: u128,
}

impl ControlSums {
    /// Adds every sum of `other`.
    pub fn absorb(&mut self, other: &ControlSums) {
        self.details += other.details;
        self.debit_total_minor += other.debit_total_minor;
        self.credit_total_minor += other.credit_total_minor;
        self.fee_total_minor += other.fee_total_minor;
    }
}

/// A settlement amount that is not a whole, non-negative number of minor
/// units of its currency, so it cannot come from a valid file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} `{value}` {currency} is not a whole, non-negative number of minor units")]
pub struct NotMinorUnits {
    pub what: &'static str,
    pub value: Decimal,
    pub currency: Currency,
}

/// `amount × 10^exponent`, exactly, or `None` when that is not a
/// non-negative integer.
pub fn to_minor_units(amount: Decimal, currency: Currency) -> Option<u128> {
    let mut minor = amount.checked_mul(Decimal::from(10u64.pow(currency.exponent())))?;
    if (minor.is_sign_negative() && !minor.is_zero()) || !minor.fract().is_zero() {
        return None;
    }
    minor.rescale(0);
    minor.to_u128()
}

/// What one shard of one settlement file (program, date, sequence)
/// reconciled to. Holds no per-transaction state except the exceptions, so
/// its size is bounded by the breaks, not by the shard's volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSummary {
    pub program_id: String,
    pub file_date: NaiveDate,
    pub file_sequence: u64,
    pub shard: u32,
    pub shard_count: u32,
    /// By currency code (a `BTreeMap` so that equal inputs give equal,
    /// identically serialised summaries).
    pub currencies: BTreeMap<String, CurrencyLine>,
    pub control: ControlSums,
    /// Every non-`MATCHED` outcome, in the order added.
    pub exceptions: Vec<Outcome>,
}

impl ShardSummary {
    pub fn new(
        program_id: &str,
        file_date: NaiveDate,
        file_sequence: u64,
        shard: u32,
        shard_count: u32,
    ) -> ShardSummary {
        ShardSummary {
            program_id: program_id.to_owned(),
            file_date,
            file_sequence,
            shard,
            shard_count,
            currencies: BTreeMap::new(),
            control: ControlSums::default(),
            exceptions: Vec::new(),
        }
    }

    fn line(&mut self, currency: Currency) -> &mut CurrencyLine {
        self.currencies
            .entry(currency.code().to_owned())
            .or_default()
    }

    /// Applies one transaction's outcome: each side's signed amount to its
    /// own currency's net, the status to the outcome's currency, and a
    /// non-`MATCHED` outcome to the exceptions. Both `None` adds nothing.
    ///
    /// The control sums are not touched: the fee is not part of [`Txn`].
    /// Call [`ShardSummary::add_settlement_control`] once per stored
    /// settlement detail as well (matched or not).
    pub fn add(&mut self, settlement: Option<&Txn>, internal: Option<&Txn>) {
        let Some(o) = outcome(settlement, internal) else {
            return;
        };
        if let Some(s) = settlement {
            self.line(s.currency).settlement_net += s.signed_amount();
        }
        if let Some(i) = internal {
            self.line(i.currency).internal_net += i.signed_amount();
        }
        self.line(o.currency).count(o.status);
        if o.status != Status::Matched {
            self.exceptions.push(o);
        }
    }

    /// Adds one stored settlement detail to the control sums. `amount` and
    /// `fee` are in major units (as stored: `12.34` USD), unsigned; the fee's
    /// sign is ignored, as the trailer's fee total ignores it. Fails, adding
    /// nothing, when either is not a whole number of minor units (a valid
    /// file cannot give one).
    pub fn add_settlement_control(
        &mut self,
        amount: Decimal,
        sign: Sign,
        currency: Currency,
        fee: Decimal,
    ) -> Result<(), NotMinorUnits> {
        let amount_minor = to_minor_units(amount, currency).ok_or(NotMinorUnits {
            what: "amount",
            value: amount,
            currency,
        })?;
        let fee_minor = to_minor_units(fee.abs(), currency).ok_or(NotMinorUnits {
            what: "fee",
            value: fee,
            currency,
        })?;
        self.control.details += 1;
        match sign {
            Sign::Debit => self.control.debit_total_minor += amount_minor,
            Sign::Credit => self.control.credit_total_minor += amount_minor,
        }
        self.control.fee_total_minor += fee_minor;
        Ok(())
    }

    /// The currency codes as [`Currency`] values (a summary read back from
    /// storage could hold anything).
    pub fn currency_lines(&self) -> Result<Vec<(Currency, &CurrencyLine)>, UnknownCurrency> {
        self.currencies
            .iter()
            .map(|(code, line)| Ok((Currency::parse(code)?, line)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recon::TxnType;
    use crate::test_support::{date, dec};

    fn cur(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

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
            currency: cur(currency),
            amount: dec(amount),
            sign,
        }
    }

    fn usd(id: &str, amount: &str) -> Txn {
        txn(id, amount, Sign::Debit, "USD")
    }

    #[test]
    fn identical_sides_match() {
        let s = usd("T1", "12.34");
        let o = outcome(Some(&s), Some(&s.clone())).unwrap();
        assert_eq!(o.status, Status::Matched);
        assert!(o.fields.is_empty());
        assert_eq!(o.transaction_id, "T1");
        assert_eq!(o.internal_amount, Some(dec("12.34")));
        assert_eq!(o.settlement_amount, Some(dec("12.34")));
    }

    #[test]
    fn a_settlement_detail_alone_is_unmatched_settlement() {
        let s = txn("T1", "15.00", Sign::Credit, "EUR");
        let o = outcome(Some(&s), None).unwrap();
        assert_eq!(o.status, Status::UnmatchedSettlement);
        assert!(o.fields.is_empty());
        assert_eq!(o.currency, cur("EUR"));
        assert_eq!(o.settlement_amount, Some(dec("-15.00")));
        assert_eq!(o.internal_amount, None);
    }

    #[test]
    fn an_internal_record_alone_is_unmatched_internal_under_its_own_currency() {
        let i = txn("T9", "1234", Sign::Debit, "JPY");
        let o = outcome(None, Some(&i)).unwrap();
        assert_eq!(o.status, Status::UnmatchedInternal);
        assert_eq!(o.currency, cur("JPY"));
        assert_eq!(o.internal_amount, Some(dec("1234")));
        assert_eq!(o.settlement_amount, None);
    }

    #[test]
    fn nothing_on_either_side_has_no_outcome() {
        assert_eq!(outcome(None, None), None);
    }

    #[test]
    fn each_field_alone_is_reported_as_the_one_mismatch() {
        let s = usd("T1", "12.34");
        type Change = fn(&mut Txn);
        let cases: Vec<(Field, Change)> = vec![
            (Field::Amount, |t| t.amount = dec("12.35")),
            (Field::Sign, |t| t.sign = Sign::Credit),
            (Field::Currency, |t| t.currency = cur("EUR")),
            (Field::AuthCode, |t| t.auth_code = "ZZZZZZ".into()),
            (Field::MaskedPan, |t| {
                t.masked_pan = "411111******2222".into()
            }),
            (Field::TransactionDate, |t| {
                t.transaction_date = date("2026-11-18")
            }),
        ];
        for (field, change) in cases {
            let mut i = s.clone();
            change(&mut i);
            let o = outcome(Some(&s), Some(&i)).unwrap();
            assert_eq!(o.status, Status::Mismatched, "{field:?}");
            assert_eq!(o.fields, vec![field]);
        }
    }

    #[test]
    fn several_mismatched_fields_are_listed_in_the_spec_order() {
        let s = usd("T1", "12.34");
        let mut i = s.clone();
        i.transaction_date = date("2026-11-01");
        i.masked_pan = "522222******4444".into();
        i.currency = cur("EUR");
        i.amount = dec("99.00");
        let o = outcome(Some(&s), Some(&i)).unwrap();
        assert_eq!(
            o.fields,
            vec![
                Field::Amount,
                Field::Currency,
                Field::MaskedPan,
                Field::TransactionDate
            ]
        );
        i.sign = Sign::Credit;
        i.auth_code = "QQQQQQ".into();
        let o = outcome(Some(&s), Some(&i)).unwrap();
        assert_eq!(o.fields, Field::ALL.to_vec());
        // The outcome is under the settlement side's currency.
        assert_eq!(o.currency, cur("USD"));
    }

    #[test]
    fn amounts_compare_as_exact_decimals_whatever_their_scale() {
        let s = usd("T1", "12.30");
        let same = usd("T1", "12.3");
        assert_eq!(
            outcome(Some(&s), Some(&same)).unwrap().status,
            Status::Matched
        );
        let off = usd("T1", "12.31");
        let o = outcome(Some(&s), Some(&off)).unwrap();
        assert_eq!(o.fields, vec![Field::Amount]);
    }

    #[test]
    fn statuses_and_fields_serialise_as_the_spec_names() {
        let names: Vec<String> = [
            Status::Matched,
            Status::Mismatched,
            Status::UnmatchedSettlement,
            Status::UnmatchedInternal,
        ]
        .iter()
        .map(|s| {
            let j = serde_json::to_string(s).unwrap();
            assert_eq!(j, format!("\"{}\"", s.as_str()));
            j
        })
        .collect();
        assert_eq!(
            names.join(","),
            r#""MATCHED","MISMATCHED","UNMATCHED_SETTLEMENT","UNMATCHED_INTERNAL""#
        );
        let fields = serde_json::to_string(&Field::ALL).unwrap();
        assert_eq!(
            fields,
            r#"["amount","sign","currency","auth_code","masked_pan","transaction_date"]"#
        );
        for f in Field::ALL {
            assert_eq!(
                serde_json::to_string(&f).unwrap(),
                format!("\"{}\"", f.as_str())
            );
        }
    }

    fn ids(pairs: &[Pair]) -> Vec<(Option<&str>, Option<&str>)> {
        pairs
            .iter()
            .map(|(s, i)| {
                (
                    s.as_ref().map(|t| t.transaction_id.as_str()),
                    i.as_ref().map(|t| t.transaction_id.as_str()),
                )
            })
            .collect()
    }

    fn side(list: &[&str]) -> Vec<Txn> {
        list.iter().map(|id| usd(id, "1.00")).collect()
    }

    #[test]
    fn merging_pairs_equal_ids_and_passes_the_rest_through_singly() {
        let pairs: Vec<Pair> = merge_by_id(
            side(&["A", "C", "D", "F"]),
            side(&["B", "C", "E", "F", "G"]),
        )
        .collect();
        assert_eq!(
            ids(&pairs),
            vec![
                (Some("A"), None),
                (None, Some("B")),
                (Some("C"), Some("C")),
                (Some("D"), None),
                (None, Some("E")),
                (Some("F"), Some("F")),
                (None, Some("G")),
            ]
        );
    }

    #[test]
    fn merging_with_an_empty_side_yields_the_other_side_singly() {
        let pairs: Vec<Pair> = merge_by_id(side(&[]), side(&[])).collect();
        assert!(pairs.is_empty());
        let pairs: Vec<Pair> = merge_by_id(side(&["A", "B"]), side(&[])).collect();
        assert_eq!(ids(&pairs), vec![(Some("A"), None), (Some("B"), None)]);
        let pairs: Vec<Pair> = merge_by_id(side(&[]), side(&["A", "B"])).collect();
        assert_eq!(ids(&pairs), vec![(None, Some("A")), (None, Some("B"))]);
    }

    #[test]
    fn merging_orders_ids_by_bytes_as_dynamodb_does() {
        // Upper case sorts before lower case, "10" before "9".
        let pairs: Vec<Pair> = merge_by_id(side(&["10", "9", "Z"]), side(&["9", "a"])).collect();
        assert_eq!(
            ids(&pairs),
            vec![
                (Some("10"), None),
                (Some("9"), Some("9")),
                (Some("Z"), None),
                (None, Some("a")),
            ]
        );
    }

    #[test]
    fn an_input_out_of_order_is_an_error_naming_both_ids() {
        let got: Vec<Result<Pair, OutOfOrder>> =
            try_merge_by_id(side(&["A", "C"]), side(&["B", "D", "C", "E"])).collect();
        let err = got.last().unwrap().as_ref().unwrap_err();
        assert_eq!(
            err,
            &OutOfOrder {
                side: Side::Internal,
                previous: "D".into(),
                next: "C".into(),
            }
        );
        assert!(err.to_string().contains("`C` came after `D`"), "{err}");
        // Nothing follows the error.
        assert!(got[..got.len() - 1].iter().all(Result::is_ok));
    }

    #[test]
    fn a_repeated_id_on_one_side_is_out_of_order() {
        let err = try_merge_by_id(side(&["A", "A"]), side(&[]))
            .find_map(Result::err)
            .unwrap();
        assert_eq!(err.side, Side::Settlement);
    }

    #[test]
    #[should_panic(expected = "`A` came after `B`")]
    fn the_infallible_merge_panics_on_an_input_out_of_order() {
        merge_by_id(side(&["B", "A"]), side(&[])).for_each(drop);
    }

    fn summary() -> ShardSummary {
        ShardSummary::new("ACME", date("2026-11-20"), 7, 1, 4)
    }

    #[test]
    fn nets_are_per_currency_with_debits_positive_and_credits_negative() {
        let mut sum = summary();
        let sale = usd("T1", "100.00");
        let refund = txn("T2", "30.25", Sign::Credit, "USD");
        let yen = txn("T3", "5000", Sign::Debit, "JPY");
        sum.add(Some(&sale), Some(&sale));
        sum.add(Some(&refund), Some(&refund));
        sum.add(Some(&yen), None);
        let usd_line = &sum.currencies["USD"];
        assert_eq!(usd_line.settlement_net, dec("69.75"));
        assert_eq!(usd_line.internal_net, dec("69.75"));
        assert_eq!(usd_line.matched, 2);
        let jpy = &sum.currencies["JPY"];
        assert_eq!(jpy.settlement_net, dec("5000"));
        assert_eq!(jpy.internal_net, dec("0"));
        assert_eq!(jpy.unmatched_settlement, 1);
        assert_eq!(sum.exceptions.len(), 1);
        assert_eq!(sum.exceptions[0].transaction_id, "T3");
    }

    #[test]
    fn a_currency_mismatch_counts_each_amount_in_its_own_currency_and_the_status_in_the_settlements(
    ) {
        let mut sum = summary();
        let s = usd("T1", "10.00");
        let i = txn("T1", "10.00", Sign::Debit, "EUR");
        sum.add(Some(&s), Some(&i));
        assert_eq!(
            sum.currencies["USD"],
            CurrencyLine {
                settlement_net: dec("10.00"),
                mismatched: 1,
                ..CurrencyLine::default()
            }
        );
        assert_eq!(
            sum.currencies["EUR"],
            CurrencyLine {
                internal_net: dec("10.00"),
                ..CurrencyLine::default()
            }
        );
        // An unmatched internal record's status counts under its currency.
        sum.add(None, Some(&txn("T2", "0.171", Sign::Credit, "BHD")));
        assert_eq!(sum.currencies["BHD"].unmatched_internal, 1);
        assert_eq!(sum.currencies["BHD"].internal_net, dec("-0.171"));
    }

    #[test]
    fn control_sums_add_minor_units_by_sign_and_fees_regardless_of_sign() {
        let mut sum = summary();
        sum.add_settlement_control(dec("12.34"), Sign::Debit, cur("USD"), dec("0.20"))
            .unwrap();
        sum.add_settlement_control(dec("1234"), Sign::Debit, cur("JPY"), dec("12"))
            .unwrap();
        sum.add_settlement_control(dec("0.171"), Sign::Credit, cur("BHD"), dec("-0.002"))
            .unwrap();
        assert_eq!(
            sum.control,
            ControlSums {
                details: 3,
                debit_total_minor: 1234 + 1234,
                credit_total_minor: 171,
                fee_total_minor: 20 + 12 + 2,
            }
        );
    }

    #[test]
    fn a_fraction_of_a_minor_unit_is_refused_and_adds_nothing() {
        let mut sum = summary();
        let e = sum
            .add_settlement_control(dec("12.345"), Sign::Debit, cur("USD"), dec("0"))
            .unwrap_err();
        assert_eq!(e.what, "amount");
        let e = sum
            .add_settlement_control(dec("12"), Sign::Debit, cur("JPY"), dec("0.5"))
            .unwrap_err();
        assert_eq!(e.what, "fee");
        assert!(sum
            .add_settlement_control(dec("-1.00"), Sign::Debit, cur("USD"), dec("0"))
            .is_err());
        assert_eq!(sum.control, ControlSums::default());
        assert_eq!(to_minor_units(dec("12.3"), cur("USD")), Some(1230));
        assert_eq!(to_minor_units(dec("0"), cur("BHD")), Some(0));
    }

    #[test]
    fn the_same_input_gives_an_equal_summary() {
        let feed = |sum: &mut ShardSummary| {
            for (s, i) in [
                (Some(usd("T1", "1.00")), Some(usd("T1", "1.00"))),
                (Some(usd("T2", "2.00")), Some(usd("T2", "2.50"))),
                (None, Some(txn("T3", "7", Sign::Debit, "JPY"))),
                (Some(txn("T4", "1.000", Sign::Credit, "BHD")), None),
            ] {
                sum.add(s.as_ref(), i.as_ref());
                if let Some(s) = &s {
                    sum.add_settlement_control(s.amount, s.sign, s.currency, dec("0.01"))
                        .unwrap();
                }
            }
        };
        let (mut a, mut b) = (summary(), summary());
        feed(&mut a);
        feed(&mut b);
        assert_eq!(a, b);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        let ids: Vec<&str> = a
            .exceptions
            .iter()
            .map(|o| o.transaction_id.as_str())
            .collect();
        assert_eq!(ids, ["T2", "T3", "T4"]);
        let back: ShardSummary = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }
}
