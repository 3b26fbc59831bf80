//! Deterministic generated inputs with injected breaks, and the report they
//! must give: for the tests, the demo and the benchmarks.
//!
//! A [`SampleSpec`] (program, date, sequence, record count, seed and a
//! [`BreakMix`]) fully determines a settlement file ([`settlement_lines`],
//! exactly per `settlement-file.md`), the internal records CSV
//! ([`internal_lines`]) and the report ([`expected_report`]).
//!
//! Every record is a pure function of `(spec, index)`, drawn from a
//! splitmix64 stream seeded by both, so the generators hold only counters:
//! memory does not grow with `records`. Breaks are spread over the records
//! by an O(1) index map, and the internal rows come out in an order of their
//! own (an affine permutation of the records), not the file's.
//!
//! [`expected_report`] walks the same records and adds up what it
//! generated and which breaks it injected. It never compares the two sides
//! (no [`super::matching`], no [`super::rollup`]), so comparing it with
//! what the pipeline produced is a real check.

use super::matching::{Field, Outcome, Status};
use super::rollup::{CurrencyReport, Report, ReportStatus};
use super::{valid_program_id, Sign, TxnType};
use crate::currency::Currency;
use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Largest record count: the detail's record sequence has 8 digits.
pub const RECORDS_MAX: u64 = 99_999_999;
/// Largest file sequence: 10 digits.
pub const FILE_SEQUENCE_MAX: u64 = 9_999_999_999;
/// Length of every settlement record, without line end.
pub const RECORD_LEN: usize = 200;
/// The internal records CSV's header line.
pub const INTERNAL_CSV_HEADER: &str =
    "transaction_id,auth_code,masked_pan,transaction_date,transaction_type,currency,amount,sign";

/// How many transactions of each kind of break to inject. All but
/// `unmatched_internal` take one settlement detail each, so together they
/// must not exceed the record count; `unmatched_internal` rows are extra.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BreakMix {
    pub amount: u64,
    pub sign: u64,
    pub currency: u64,
    pub auth_code: u64,
    pub masked_pan: u64,
    pub transaction_date: u64,
    /// Two or more fields at once (cycling through a few combinations,
    /// one of them all six fields).
    pub several_fields: u64,
    /// The internal row is absent.
    pub unmatched_settlement: u64,
    /// An extra internal row whose ID is not in the file.
    pub unmatched_internal: u64,
}

impl BreakMix {
    /// About 0.1% of `records` of each kind (about 0.9% in all), at least one
    /// of each from 8 records up; none below that.
    pub fn default_for(records: u64) -> BreakMix {
        if records < 8 {
            return BreakMix::default();
        }
        let k = (records / 1000).max(1);
        BreakMix {
            amount: k,
            sign: k,
            currency: k,
            auth_code: k,
            masked_pan: k,
            transaction_date: k,
            several_fields: k,
            unmatched_settlement: k,
            unmatched_internal: k,
        }
    }

    /// Breaks that take a settlement detail: all but `unmatched_internal`.
    pub fn on_settlement_details(&self) -> u64 {
        self.kinds().iter().map(|(n, _)| n).sum()
    }

    /// Every break.
    pub fn total(&self) -> u64 {
        self.on_settlement_details() + self.unmatched_internal
    }

    /// The settlement-side kinds in the order they are laid out.
    fn kinds(&self) -> [(u64, Kind); 8] {
        [
            (self.amount, Kind::One(Field::Amount)),
            (self.sign, Kind::One(Field::Sign)),
            (self.currency, Kind::One(Field::Currency)),
            (self.auth_code, Kind::One(Field::AuthCode)),
            (self.masked_pan, Kind::One(Field::MaskedPan)),
            (self.transaction_date, Kind::One(Field::TransactionDate)),
            (self.several_fields, Kind::Several),
            (self.unmatched_settlement, Kind::UnmatchedSettlement),
        ]
    }
}

/// Everything the generated files depend on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleSpec {
    pub program_id: String,
    pub file_date: NaiveDate,
    pub file_sequence: u64,
    /// Settlement details (at most [`RECORDS_MAX`]).
    pub records: u64,
    pub seed: u64,
    pub breaks: BreakMix,
}

impl SampleSpec {
    /// File sequence 1 and [`BreakMix::default_for`] `records`.
    pub fn new(program_id: &str, file_date: NaiveDate, records: u64, seed: u64) -> SampleSpec {
        SampleSpec {
            program_id: program_id.to_owned(),
            file_date,
            file_sequence: 1,
            records,
            seed,
            breaks: BreakMix::default_for(records),
        }
    }

    /// Whether the files can be generated: a valid program ID, counts within
    /// the format's fields, breaks that fit the records.
    pub fn check(&self) -> Result<(), String> {
        if !valid_program_id(&self.program_id) {
            return Err(format!(
                "program `{}` is not 1-10 characters of A-Z 0-9 _ -",
                self.program_id
            ));
        }
        if self.records > RECORDS_MAX {
            return Err(format!("{} records: at most {RECORDS_MAX}", self.records));
        }
        if self.file_sequence > FILE_SEQUENCE_MAX {
            return Err(format!(
                "file sequence {}: at most {FILE_SEQUENCE_MAX}",
                self.file_sequence
            ));
        }
        if self.breaks.on_settlement_details() > self.records {
            return Err(format!(
                "{} breaks on settlement details, but only {} records",
                self.breaks.on_settlement_details(),
                self.records
            ));
        }
        if self.breaks.unmatched_internal > RECORDS_MAX {
            return Err(format!(
                "{} unmatched internal rows: at most {RECORDS_MAX}",
                self.breaks.unmatched_internal
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The pseudo-random source
// ---------------------------------------------------------------------------

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's finaliser: a bijection of `u64` that scatters its bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Streams, so that each purpose draws independent numbers.
const STREAM_DETAIL: u64 = 1;
const STREAM_BREAK: u64 = 2;
const STREAM_EXTRA: u64 = 3;
const STREAM_LAYOUT: u64 = 4;
const STREAM_ID: u64 = 5;

/// splitmix64 (Steele, Lea, Flood 2014), seeded per `(seed, stream, index)`.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64, stream: u64, index: u64) -> SplitMix64 {
        SplitMix64(mix(seed ^ mix(stream.wrapping_mul(GOLDEN) ^ mix(index))))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// In `0..n` (`n > 0`); the modulo bias is irrelevant here.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------
// What one record is
// ---------------------------------------------------------------------------

/// [`Field::ALL`] with a `'static` address, to slice single fields from.
static FIELDS: [Field; 6] = Field::ALL;

/// The combinations used for `several_fields`, each in the spec's order.
const SEVERAL: [&[Field]; 4] = [
    &[Field::Amount, Field::Sign],
    &[Field::AuthCode, Field::MaskedPan, Field::TransactionDate],
    &[Field::Amount, Field::Currency, Field::TransactionDate],
    &Field::ALL,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    One(Field),
    Several,
    UnmatchedSettlement,
}

/// The break injected into one settlement detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    Mismatch(&'static [Field]),
    UnmatchedSettlement,
}

impl Break {
    fn changes(&self, field: Field) -> bool {
        matches!(self, Break::Mismatch(fields) if fields.contains(&field))
    }
}

const AUTH_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const BINS: [&str; 5] = ["411111", "424242", "510510", "545454", "601100"];
/// Merchant names (at most 25 characters) and their category codes.
const MERCHANTS: [(&str, u16); 8] = [
    ("CORNER GROCERY", 5411),
    ("BLUE DOOR CAFE", 5812),
    ("METRO TRANSIT", 4111),
    ("CITY FUEL 24", 5541),
    ("HARBOUR HOTEL", 7011),
    ("BOOKS AND MORE", 5942),
    ("PHARMACY PLUS", 5912),
    ("ELECTRO WORLD LTD", 5732),
];

/// One side of a transaction as the generator knows it: amounts in minor
/// units of `currency`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    transaction_id: String,
    auth_code: String,
    masked_pan: String,
    transaction_date: NaiveDate,
    transaction_type: TxnType,
    currency: Currency,
    amount_minor: u64,
    sign: Sign,
}

impl Record {
    fn signed_minor(&self) -> i128 {
        match self.sign {
            Sign::Debit => self.amount_minor as i128,
            Sign::Credit => -(self.amount_minor as i128),
        }
    }

    fn signed_major(&self) -> Decimal {
        Decimal::from_i128_with_scale(self.signed_minor(), self.currency.exponent())
    }

    /// The internal CSV row.
    fn csv_row(&self) -> String {
        let amount =
            Decimal::from_i128_with_scale(self.amount_minor as i128, self.currency.exponent());
        format!(
            "{},{},{},{},{},{},{},{}",
            self.transaction_id,
            self.auth_code,
            self.masked_pan,
            self.transaction_date.format("%Y-%m-%d"),
            self.transaction_type.as_str(),
            self.currency,
            amount,
            self.sign.as_str(),
        )
    }
}

/// One settlement detail and the break injected into it, if any.
#[derive(Debug, Clone)]
struct Detail {
    sequence: u64,
    record: Record,
    fee_minor: u64,
    fee_sign: Sign,
    merchant: usize,
    brk: Option<Break>,
}

/// Everything computed once per spec; O(1) in size.
struct Layout {
    spec: SampleSpec,
    /// USD, EUR, JPY, BHD.
    currencies: [Currency; 4],
    /// Rotation of the breaks over the records.
    break_offset: u64,
    /// Internal row `j` is record `(perm_a × j + perm_c) mod records`.
    perm_a: u64,
    perm_c: u64,
    id_salt: u64,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Layout {
    /// # Panics
    ///
    /// When `spec` fails [`SampleSpec::check`].
    fn new(spec: &SampleSpec) -> Layout {
        if let Err(e) = spec.check() {
            panic!("sample spec: {e}");
        }
        let cur = |c| Currency::parse(c).expect("listed in ISO 4217");
        let n = spec.records;
        let mut rng = SplitMix64::new(spec.seed, STREAM_LAYOUT, 0);
        let (break_offset, perm_c) = if n == 0 {
            (0, 0)
        } else {
            (rng.below(n), rng.below(n))
        };
        // A multiplier coprime with n near 5/8 n: consecutive rows land far
        // apart in the file. a = 1 always qualifies, so this ends.
        let mut perm_a = (n / 8 * 5).max(1);
        while gcd(perm_a, n.max(1)) != 1 {
            perm_a -= 1;
        }
        Layout {
            spec: spec.clone(),
            currencies: [cur("USD"), cur("EUR"), cur("JPY"), cur("BHD")],
            break_offset,
            perm_a,
            perm_c,
            id_salt: rng.next_u64(),
        }
    }

    /// A unique ID per index: `mix` is a bijection, so distinct indexes give
    /// distinct IDs (details use `0..records`, extra internal rows follow).
    fn transaction_id(&self, index: u64) -> String {
        format!(
            "TX{:016X}",
            mix(index.wrapping_add(self.id_salt) ^ mix(STREAM_ID))
        )
    }

    /// The break of record `i`: break `k` of `B` sits at record
    /// `(⌊k·n/B⌋ + offset) mod n`, spreading them evenly; this inverts that.
    fn break_of(&self, i: u64) -> Option<Break> {
        let n = self.spec.records as u128;
        let b = self.spec.breaks.on_settlement_details() as u128;
        if b == 0 {
            return None;
        }
        let j = (i as u128 + n - self.break_offset as u128) % n;
        let k = (j * b).div_ceil(n);
        if k >= b || k * n / b != j {
            return None;
        }
        let mut k = k as u64;
        for (count, kind) in self.spec.breaks.kinds() {
            if k < count {
                return Some(match kind {
                    Kind::One(field) => {
                        let at = field as usize;
                        Break::Mismatch(&FIELDS[at..=at])
                    }
                    Kind::Several => Break::Mismatch(SEVERAL[(k as usize) % SEVERAL.len()]),
                    Kind::UnmatchedSettlement => Break::UnmatchedSettlement,
                });
            }
            k -= count;
        }
        unreachable!("k < the sum of the counts")
    }

    /// A record's common fields, drawn from `rng`.
    fn draw_record(&self, rng: &mut SplitMix64, id: String, currency_break: bool) -> Record {
        let transaction_type = match rng.below(100) {
            0..=84 => TxnType::Sale,
            85..=94 => TxnType::Refund,
            _ => TxnType::Reversal,
        };
        let sign = match transaction_type {
            TxnType::Sale => Sign::Debit,
            _ => Sign::Credit,
        };
        let [usd, eur, jpy, bhd] = self.currencies;
        let r = rng.below(100);
        // A currency break swaps USD and EUR: same exponent, so the amount
        // stays valid on both sides and only the currency differs.
        let currency = match (currency_break, r) {
            (_, 0..=54) => usd,
            (true, _) | (false, 55..=79) => eur,
            (false, 80..=89) => jpy,
            (false, _) => bhd,
        };
        let amount_minor = 100
            + match currency.exponent() {
                3 => rng.below(2_000_000),
                _ => rng.below(500_000),
            };
        let auth_code = (0..6).map(|_| *rng.pick(AUTH_ALPHABET) as char).collect();
        let masked_pan = format!("{}******{:04}", rng.pick(&BINS), rng.below(10_000));
        let transaction_date = self.spec.file_date - Days::new(rng.below(3));
        Record {
            transaction_id: id,
            auth_code,
            masked_pan,
            transaction_date,
            transaction_type,
            currency,
            amount_minor,
            sign,
        }
    }

    fn detail(&self, i: u64) -> Detail {
        let mut rng = SplitMix64::new(self.spec.seed, STREAM_DETAIL, i);
        let brk = self.break_of(i);
        let currency_break = brk.is_some_and(|b| b.changes(Field::Currency));
        let record = self.draw_record(&mut rng, self.transaction_id(i), currency_break);
        // Interchange 0.5%-2.4% of the amount, same direction as the amount.
        let fee_minor = record.amount_minor * (5 + rng.below(20)) / 1000;
        Detail {
            sequence: i + 1,
            fee_sign: record.sign,
            fee_minor,
            merchant: rng.below(MERCHANTS.len() as u64) as usize,
            record,
            brk,
        }
    }

    /// The internal row of a detail: the same record with the break's
    /// fields changed (each really different), or none.
    fn internal_of(&self, d: &Detail) -> Option<Record> {
        let mut r = d.record.clone();
        let Some(brk) = d.brk else {
            return Some(r);
        };
        if brk == Break::UnmatchedSettlement {
            return None;
        }
        let mut rng = SplitMix64::new(self.spec.seed, STREAM_BREAK, d.sequence);
        if brk.changes(Field::Amount) {
            r.amount_minor += 1 + rng.below(999);
        }
        if brk.changes(Field::Sign) {
            r.sign = match r.sign {
                Sign::Debit => Sign::Credit,
                Sign::Credit => Sign::Debit,
            };
        }
        if brk.changes(Field::Currency) {
            let [usd, eur, ..] = self.currencies;
            r.currency = if r.currency == usd { eur } else { usd };
        }
        if brk.changes(Field::AuthCode) {
            let first = r.auth_code.as_bytes()[0];
            let at = AUTH_ALPHABET
                .iter()
                .position(|c| *c == first)
                .expect("drawn from the alphabet");
            let shift = 1 + rng.below(AUTH_ALPHABET.len() as u64 - 1) as usize;
            let other = AUTH_ALPHABET[(at + shift) % AUTH_ALPHABET.len()] as char;
            r.auth_code
                .replace_range(0..1, other.encode_utf8(&mut [0; 4]));
        }
        if brk.changes(Field::MaskedPan) {
            let last4: u64 = r.masked_pan[12..].parse().expect("four digits");
            let other = (last4 + 1 + rng.below(9_999)) % 10_000;
            r.masked_pan = format!("{}{other:04}", &r.masked_pan[..12]);
        }
        if brk.changes(Field::TransactionDate) {
            r.transaction_date = r.transaction_date - Days::new(1 + rng.below(2));
        }
        Some(r)
    }

    /// Extra internal row `k` (an `unmatched_internal` break).
    fn extra(&self, k: u64) -> Record {
        let mut rng = SplitMix64::new(self.spec.seed, STREAM_EXTRA, k);
        let id = self.transaction_id(self.spec.records + k);
        self.draw_record(&mut rng, id, false)
    }

    /// The record at internal row position `j` (`j < records`).
    fn record_at_row(&self, j: u64) -> u64 {
        let n = self.spec.records as u128;
        ((self.perm_a as u128 * j as u128 + self.perm_c as u128) % n) as u64
    }
}

// ---------------------------------------------------------------------------
// The settlement file
// ---------------------------------------------------------------------------

/// Appends `s` left-justified, space-padded to `len` (an `A` field).
fn alpha(out: &mut String, s: &str, len: usize) {
    assert!(s.len() <= len, "`{s}` does not fit {len} bytes");
    let _ = write!(out, "{s:<len$}");
}

/// Appends `v` right-justified, zero-padded to `len` (an `N` field).
fn numeric(out: &mut String, v: u128, len: usize) {
    let before = out.len();
    let _ = write!(out, "{v:0len$}");
    assert_eq!(out.len() - before, len, "{v} does not fit {len} digits");
}

fn ymd(d: NaiveDate) -> String {
    d.format("%Y%m%d").to_string()
}

fn finish(out: String) -> String {
    assert_eq!(out.len(), RECORD_LEN, "record `{out}`");
    out
}

fn header_line(l: &Layout) -> String {
    let spec = &l.spec;
    let mut rng = SplitMix64::new(spec.seed, STREAM_LAYOUT, 1);
    let mut out = String::with_capacity(RECORD_LEN);
    out.push('H');
    // Created early the next morning (UTC).
    alpha(&mut out, &ymd(spec.file_date + Days::new(1)), 8);
    let seconds = 3600 + rng.below(4 * 3600);
    let _ = write!(
        out,
        "{:02}{:02}{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    alpha(&mut out, &spec.program_id, 10);
    alpha(&mut out, &ymd(spec.file_date), 8);
    numeric(&mut out, spec.file_sequence as u128, 10);
    alpha(&mut out, "001", 3);
    alpha(&mut out, "VISA", 10);
    alpha(&mut out, "", 144);
    finish(out)
}

fn detail_line(l: &Layout, d: &Detail) -> String {
    let r = &d.record;
    let m = d.merchant;
    let mut out = String::with_capacity(RECORD_LEN);
    out.push('D');
    numeric(&mut out, d.sequence as u128, 8);
    alpha(&mut out, &r.transaction_id, 24);
    alpha(&mut out, &r.auth_code, 6);
    alpha(&mut out, &r.masked_pan, 19);
    alpha(&mut out, &ymd(r.transaction_date), 8);
    alpha(&mut out, &ymd(l.spec.file_date), 8);
    alpha(&mut out, r.transaction_type.as_str(), 3);
    alpha(&mut out, r.currency.code(), 3);
    numeric(&mut out, r.amount_minor as u128, 15);
    alpha(&mut out, r.sign.as_str(), 1);
    numeric(&mut out, d.fee_minor as u128, 15);
    alpha(&mut out, d.fee_sign.as_str(), 1);
    alpha(&mut out, &format!("MRC{:012}", 4_000_017 + 7_919 * m), 15);
    let (name, mcc) = MERCHANTS[m];
    numeric(&mut out, mcc as u128, 4);
    alpha(&mut out, name, 25);
    alpha(&mut out, "", 44);
    finish(out)
}

/// Sums the trailer needs, kept as the details go by.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    details: u64,
    debit_minor: u128,
    credit_minor: u128,
    fee_minor: u128,
}

fn trailer_line(t: &Totals) -> String {
    let mut out = String::with_capacity(RECORD_LEN);
    out.push('T');
    numeric(&mut out, t.details as u128, 10);
    numeric(&mut out, t.debit_minor, 18);
    numeric(&mut out, t.credit_minor, 18);
    numeric(&mut out, t.fee_minor, 18);
    alpha(&mut out, "", 135);
    finish(out)
}

/// The lines of [`settlement_lines`].
pub struct SettlementLines {
    layout: Layout,
    /// 0: header; `1..=records`: details; `records + 1`: trailer.
    next: u64,
    totals: Totals,
}

impl Iterator for SettlementLines {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let n = self.layout.spec.records;
        let at = self.next;
        if at > n + 1 {
            return None;
        }
        self.next += 1;
        Some(if at == 0 {
            header_line(&self.layout)
        } else if at <= n {
            let d = self.layout.detail(at - 1);
            let t = &mut self.totals;
            t.details += 1;
            match d.record.sign {
                Sign::Debit => t.debit_minor += d.record.amount_minor as u128,
                Sign::Credit => t.credit_minor += d.record.amount_minor as u128,
            }
            t.fee_minor += d.fee_minor as u128;
            detail_line(&self.layout, &d)
        } else {
            trailer_line(&self.totals)
        })
    }
}

/// The settlement file's records in order: header, `records` details,
/// trailer; each exactly 200 bytes of printable ASCII, without line end.
///
/// Header: created the day after the file date at a seeded time, sender
/// `VISA`, version `001`. Details: sequence 1..=records; IDs `TX` + 16 hex
/// digits (unique, not in ID order); types 85% SAL (`D`), 10% REF and 5%
/// REV (`C`); currencies about 55% USD, 25% EUR, 10% JPY, 10% BHD;
/// transaction dates up to two days before the file date. The trailer's
/// count and totals are the details'.
///
/// # Panics
///
/// When `spec` fails [`SampleSpec::check`].
pub fn settlement_lines(spec: &SampleSpec) -> SettlementLines {
    SettlementLines {
        layout: Layout::new(spec),
        next: 0,
        totals: Totals::default(),
    }
}

// ---------------------------------------------------------------------------
// The internal records
// ---------------------------------------------------------------------------

/// The lines of [`internal_lines`].
pub struct InternalLines {
    layout: Layout,
    header_done: bool,
    /// Next row position, `0..records`.
    row: u64,
    /// Next extra (unmatched internal) row.
    extra: u64,
}

impl Iterator for InternalLines {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if !self.header_done {
            self.header_done = true;
            return Some(INTERNAL_CSV_HEADER.to_owned());
        }
        let n = self.layout.spec.records;
        let extras = self.layout.spec.breaks.unmatched_internal;
        loop {
            // Extra row k goes before row position ⌊k·n/extras⌋: spread out.
            if self.extra < extras
                && (self.extra as u128 * n as u128 / extras as u128) <= self.row as u128
            {
                self.extra += 1;
                return Some(self.layout.extra(self.extra - 1).csv_row());
            }
            if self.row >= n {
                return None;
            }
            let i = self.layout.record_at_row(self.row);
            self.row += 1;
            if let Some(r) = self.layout.internal_of(&self.layout.detail(i)) {
                return Some(r.csv_row());
            }
        }
    }
}

/// The internal records CSV: [`INTERNAL_CSV_HEADER`], then one row per
/// settlement detail that has one (all but `unmatched_settlement` breaks),
/// with the break's fields changed where one was injected, plus the
/// `unmatched_internal` extra rows, in an order unlike the file's. Dates
/// `YYYY-MM-DD`; amounts in major units at the currency's exponent (`12.34`,
/// JPY `1234`, BHD `0.171`). No line ends.
///
/// # Panics
///
/// When `spec` fails [`SampleSpec::check`].
pub fn internal_lines(spec: &SampleSpec) -> InternalLines {
    InternalLines {
        layout: Layout::new(spec),
        header_done: false,
        row: 0,
        extra: 0,
    }
}

/// [`settlement_lines`] joined by `\n` (no line end after the trailer).
pub fn settlement_file(spec: &SampleSpec) -> String {
    join(settlement_lines(spec))
}

/// [`internal_lines`] joined by `\n` (no line end after the last row).
pub fn internal_file(spec: &SampleSpec) -> String {
    join(internal_lines(spec))
}

fn join(lines: impl Iterator<Item = String>) -> String {
    let mut out = String::new();
    for (k, line) in lines.enumerate() {
        if k > 0 {
            out.push('\n');
        }
        out.push_str(&line);
    }
    out
}

// ---------------------------------------------------------------------------
// The report they must give
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Line {
    internal_minor: i128,
    settlement_minor: i128,
    counts: [u64; 4],
}

/// The report reconciling the generated files must produce, from the
/// generator's own account of what it generated and injected: every detail
/// not chosen for a break counts as `MATCHED`, a chosen one as the status
/// and fields of its break. Nets are summed in minor units. The trailer is
/// correct by construction, so `control_totals_agree` is true. Memory is
/// bounded by the breaks, not by `records`.
///
/// # Panics
///
/// When `spec` fails [`SampleSpec::check`].
pub fn expected_report(spec: &SampleSpec) -> Report {
    let l = Layout::new(spec);
    let mut lines: BTreeMap<Currency, Line> = BTreeMap::new();
    let mut exceptions = Vec::new();
    let count = |lines: &mut BTreeMap<Currency, Line>, currency, status: Status| {
        let slot = match status {
            Status::Matched => 0,
            Status::Mismatched => 1,
            Status::UnmatchedSettlement => 2,
            Status::UnmatchedInternal => 3,
        };
        lines.entry(currency).or_default().counts[slot] += 1;
    };
    for i in 0..spec.records {
        let d = l.detail(i);
        let s = &d.record;
        lines.entry(s.currency).or_default().settlement_minor += s.signed_minor();
        let internal = l.internal_of(&d);
        if let Some(r) = &internal {
            lines.entry(r.currency).or_default().internal_minor += r.signed_minor();
        }
        let (status, fields) = match d.brk {
            None => (Status::Matched, Vec::new()),
            Some(Break::UnmatchedSettlement) => (Status::UnmatchedSettlement, Vec::new()),
            Some(Break::Mismatch(fields)) => (Status::Mismatched, fields.to_vec()),
        };
        count(&mut lines, s.currency, status);
        if status != Status::Matched {
            exceptions.push(Outcome {
                transaction_id: s.transaction_id.clone(),
                status,
                fields,
                currency: s.currency,
                internal_amount: internal.as_ref().map(Record::signed_major),
                settlement_amount: Some(s.signed_major()),
            });
        }
    }
    for k in 0..spec.breaks.unmatched_internal {
        let r = l.extra(k);
        lines.entry(r.currency).or_default().internal_minor += r.signed_minor();
        count(&mut lines, r.currency, Status::UnmatchedInternal);
        exceptions.push(Outcome {
            transaction_id: r.transaction_id.clone(),
            status: Status::UnmatchedInternal,
            fields: Vec::new(),
            currency: r.currency,
            internal_amount: Some(r.signed_major()),
            settlement_amount: None,
        });
    }
    exceptions.sort_by(|a, b| a.transaction_id.cmp(&b.transaction_id));
    let major = |minor: i128, c: Currency| Decimal::from_i128_with_scale(minor, c.exponent());
    Report {
        program_id: spec.program_id.clone(),
        file_date: spec.file_date,
        status: if exceptions.is_empty() {
            ReportStatus::Balanced
        } else {
            ReportStatus::Breaks
        },
        control_totals_agree: true,
        currencies: lines
            .iter()
            .map(|(c, line)| CurrencyReport {
                currency: *c,
                internal_net: major(line.internal_minor, *c),
                settlement_net: major(line.settlement_minor, *c),
                difference: major(line.internal_minor - line.settlement_minor, *c),
                matched: line.counts[0],
                mismatched: line.counts[1],
                unmatched_settlement: line.counts[2],
                unmatched_internal: line.counts[3],
            })
            .collect(),
        exceptions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::parse_amount;
    use crate::recon::matching::{merge_by_id, ControlSums, ShardSummary};
    use crate::recon::rollup::rollup;
    use crate::recon::shard::recon_shard;
    use crate::recon::Txn;
    use crate::test_support::date;
    use std::collections::{BTreeSet, HashMap};

    fn spec(records: u64, seed: u64, breaks: BreakMix) -> SampleSpec {
        SampleSpec {
            program_id: "ACME".into(),
            file_date: date("2026-11-20"),
            file_sequence: 3,
            records,
            seed,
            breaks,
        }
    }

    /// Every kind of break, several of each (`several_fields` covers every
    /// combination).
    fn every_break() -> BreakMix {
        BreakMix {
            amount: 3,
            sign: 2,
            currency: 4,
            auth_code: 2,
            masked_pan: 3,
            transaction_date: 2,
            several_fields: 9,
            unmatched_settlement: 5,
            unmatched_internal: 6,
        }
    }

    fn field(line: &str, from: usize, to: usize) -> &str {
        line[from - 1..to].trim_end_matches(' ')
    }

    fn ymd(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y%m%d").unwrap()
    }

    /// A minimal reading of a detail by the spec's positions: the record and
    /// its fee in major units.
    fn parse_detail(line: &str) -> (Txn, Decimal) {
        let currency = Currency::parse(field(line, 78, 80)).unwrap();
        let minor = |s: &str| {
            Decimal::from_i128_with_scale(s.parse::<i128>().unwrap(), currency.exponent())
        };
        let txn = Txn {
            transaction_id: field(line, 10, 33).to_owned(),
            auth_code: field(line, 34, 39).to_owned(),
            masked_pan: field(line, 40, 58).to_owned(),
            transaction_date: ymd(field(line, 59, 66)),
            transaction_type: TxnType::parse(field(line, 75, 77)).unwrap(),
            currency,
            amount: minor(field(line, 81, 95)),
            sign: Sign::parse(field(line, 96, 96)).unwrap(),
        };
        (txn, minor(field(line, 97, 111)))
    }

    fn parse_trailer(line: &str) -> ControlSums {
        ControlSums {
            details: field(line, 2, 11).parse().unwrap(),
            debit_total_minor: field(line, 12, 29).parse().unwrap(),
            credit_total_minor: field(line, 30, 47).parse().unwrap(),
            fee_total_minor: field(line, 48, 65).parse().unwrap(),
        }
    }

    fn parse_row(row: &str) -> Txn {
        let v: Vec<&str> = row.split(',').collect();
        assert_eq!(v.len(), 8, "{row}");
        let currency = Currency::parse(v[5]).unwrap();
        Txn {
            transaction_id: v[0].to_owned(),
            auth_code: v[1].to_owned(),
            masked_pan: v[2].to_owned(),
            transaction_date: NaiveDate::parse_from_str(v[3], "%Y-%m-%d").unwrap(),
            transaction_type: TxnType::parse(v[4]).unwrap(),
            currency,
            amount: parse_amount(v[6], currency).unwrap(),
            sign: Sign::parse(v[7]).unwrap(),
        }
    }

    /// What the pipeline does, minus the storage: read both sides, shard by
    /// ID (the pipeline's own hash), sort each shard's sides by ID (as a DynamoDB query returns them),
    /// merge-join, summarise, roll up against the trailer.
    fn reconcile(spec: &SampleSpec, shard_count: u32) -> Report {
        let n = shard_count as usize;
        let mut settlement: Vec<Vec<(Txn, Decimal)>> = vec![Vec::new(); n];
        let mut internal: Vec<Vec<Txn>> = vec![Vec::new(); n];
        let mut trailer = None;
        for line in settlement_lines(spec) {
            match &line[..1] {
                "D" => {
                    let (txn, fee) = parse_detail(&line);
                    settlement[recon_shard(&txn.transaction_id, shard_count) as usize]
                        .push((txn, fee));
                }
                "T" => trailer = Some(parse_trailer(&line)),
                _ => {}
            }
        }
        for row in internal_lines(spec).skip(1) {
            let txn = parse_row(&row);
            internal[recon_shard(&txn.transaction_id, shard_count) as usize].push(txn);
        }
        let mut summaries = Vec::new();
        for (shard, (mut s, mut i)) in settlement.into_iter().zip(internal).enumerate() {
            s.sort_by(|a, b| a.0.transaction_id.cmp(&b.0.transaction_id));
            i.sort_by(|a, b| a.transaction_id.cmp(&b.transaction_id));
            let mut sum = ShardSummary::new(
                &spec.program_id,
                spec.file_date,
                spec.file_sequence,
                shard as u32,
                shard_count,
            );
            for (t, fee) in &s {
                sum.add_settlement_control(t.amount, t.sign, t.currency, *fee)
                    .unwrap();
            }
            for (st, it) in merge_by_id(s.into_iter().map(|(t, _)| t), i) {
                sum.add(st.as_ref(), it.as_ref());
            }
            summaries.push(sum);
        }
        // Shards finish in any order.
        summaries.reverse();
        rollup(summaries, &trailer.expect("a trailer")).unwrap()
    }

    #[test]
    fn reconciling_the_generated_files_gives_the_expected_report() {
        for (records, seed, shard_count) in [(3_000, 1, 4), (2_000, 99, 1), (1_500, 7, 7)] {
            let spec = spec(records, seed, every_break());
            let expected = expected_report(&spec);
            let got = reconcile(&spec, shard_count);
            assert_eq!(got, expected, "seed {seed}");
            assert_eq!(
                serde_json::to_string(&got).unwrap(),
                serde_json::to_string(&expected).unwrap()
            );
            assert!(got.control_totals_agree);
        }
    }

    #[test]
    fn a_generated_settlement_file_passes_the_settlement_reader() {
        use crate::recon::settlement::{Record as Parsed, SettlementReader};
        use crate::recon::ObjectKey;
        let spec = spec(4_000, 11, every_break());
        let key = ObjectKey::parse("settlement/ACME/2026-11-20/visa-0003.dat").unwrap();
        let mut reader = SettlementReader::new(&key);
        let file = settlement_file(&spec);
        let mut details = 0u64;
        for (line, ours) in file.split('\n').zip(settlement_lines(&spec)) {
            match reader.push(line.as_bytes()) {
                Ok(Parsed::Detail(d)) => {
                    // The reader and the spec's positions read the same.
                    assert_eq!((d.txn, d.fee), parse_detail(&ours));
                    details += 1;
                }
                Ok(Parsed::Header(h)) => {
                    assert_eq!(h.program_id, "ACME");
                    assert_eq!(h.file_sequence, 3);
                    assert_eq!(h.sender, "VISA");
                }
                Ok(Parsed::Trailer(t)) => assert_eq!(t.detail_count, 4_000),
                Err(e) => panic!("rejected: {e}"),
            }
        }
        let summary = reader.finish().unwrap_or_else(|e| panic!("rejected: {e}"));
        assert_eq!(details, 4_000);
        assert_eq!(summary.details, 4_000);
        let mut second = summary.duplicate_check();
        for (n, line) in file.split('\n').enumerate().skip(1).take(4_000) {
            second
                .check(n as u64 + 1, field(line, 10, 33))
                .unwrap_or_else(|e| panic!("rejected: {e}"));
        }
    }

    #[test]
    fn a_generated_internal_file_passes_the_internal_reader() {
        use crate::recon::internal::InternalReader;
        use crate::recon::ObjectKey;
        let spec = spec(4_000, 11, every_break());
        let key = ObjectKey::parse("internal/ACME/2026-11-20/auths.csv").unwrap();
        let mut reader = InternalReader::new(&key);
        let file = internal_file(&spec);
        let mut rows = 0u64;
        for (k, line) in file.split('\n').enumerate() {
            match reader.push(line.as_bytes()) {
                Ok(None) => assert_eq!(k, 0, "only the header is not a row"),
                Ok(Some(txn)) => {
                    // The reader and the minimal reading agree.
                    assert_eq!(txn, parse_row(line));
                    rows += 1;
                }
                Err(e) => panic!("rejected: {e}"),
            }
        }
        let summary = reader.finish().unwrap_or_else(|e| panic!("rejected: {e}"));
        let expected_rows =
            4_000 - every_break().unmatched_settlement + every_break().unmatched_internal;
        assert_eq!((rows, summary.rows), (expected_rows, expected_rows));
        let mut second = summary.duplicate_check();
        for (n, line) in file.split('\n').enumerate().skip(1) {
            let id = line.split(',').next().unwrap();
            second
                .check(n as u64 + 1, id)
                .unwrap_or_else(|e| panic!("rejected: {e}"));
        }
    }

    #[test]
    fn the_expected_report_lists_exactly_the_injected_breaks() {
        let mix = every_break();
        let report = expected_report(&spec(3_000, 1, mix));
        assert_eq!(report.status, ReportStatus::Breaks);
        assert_eq!(report.exceptions.len() as u64, mix.total());
        let count =
            |f: &dyn Fn(&Outcome) -> bool| report.exceptions.iter().filter(|o| f(o)).count() as u64;
        for (field, n) in [
            (Field::Amount, mix.amount),
            (Field::Sign, mix.sign),
            (Field::Currency, mix.currency),
            (Field::AuthCode, mix.auth_code),
            (Field::MaskedPan, mix.masked_pan),
            (Field::TransactionDate, mix.transaction_date),
        ] {
            assert_eq!(count(&|o| o.fields == [field]), n, "{field:?}");
        }
        assert_eq!(count(&|o| o.fields.len() >= 2), mix.several_fields);
        let combos: BTreeSet<Vec<Field>> = report
            .exceptions
            .iter()
            .filter(|o| o.fields.len() >= 2)
            .map(|o| o.fields.clone())
            .collect();
        assert_eq!(combos.len(), SEVERAL.len());
        assert_eq!(
            count(&|o| o.status == Status::UnmatchedSettlement),
            mix.unmatched_settlement
        );
        assert_eq!(
            count(&|o| o.status == Status::UnmatchedInternal),
            mix.unmatched_internal
        );
        let matched: u64 = report.currencies.iter().map(|c| c.matched).sum();
        assert_eq!(matched, 3_000 - mix.on_settlement_details());
        let ids: Vec<&str> = report
            .exceptions
            .iter()
            .map(|o| o.transaction_id.as_str())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    /// Seed 13, 6 records, one break each of sign, masked PAN, unmatched
    /// settlement and unmatched internal. Worked by hand from the generated
    /// files (`settlement_file`, `internal_file`):
    ///
    /// ```text
    /// 1 TX78EAE8056D387441 REF EUR 1214.34 C   internal PAN …3867, file …7170
    /// 2 TXCD06C396D216D33E SAL EUR 3892.79 D   same
    /// 3 TX8FD3A8D2DEF4E830 SAL EUR 2650.45 D   no internal row
    /// 4 TX2DD51498E2CF2501 REF BHD 778.945 C   same
    /// 5 TX6F34AC185E1EA35E SAL USD 4030.64 D   internal sign C
    /// 6 TX43844671DDD4C2EC REF JPY 348866  C   same
    /// + TXD5D145DC002412CB REV BHD 445.512 C   internal only
    /// ```
    ///
    /// BHD: settlement −778.945, internal −778.945 − 445.512 = −1224.457.
    /// EUR: settlement −1214.34 + 3892.79 + 2650.45 = 5328.90, internal
    /// −1214.34 + 3892.79 = 2678.45. JPY: −348866 both. USD: 4030.64
    /// settled, −4030.64 recorded. Trailer: debits 389279 + 265045 + 403064
    /// = 1057388, credits 121434 + 778945 + 348866 = 1249245, fees 35774.
    fn hand_spec() -> SampleSpec {
        spec(
            6,
            13,
            BreakMix {
                sign: 1,
                masked_pan: 1,
                unmatched_settlement: 1,
                unmatched_internal: 1,
                ..BreakMix::default()
            },
        )
    }

    const HAND_REPORT: &str = concat!(
        r#"{"program_id":"ACME","file_date":"2026-11-20","status":"BREAKS","control_totals_agree":true,"currencies":["#,
        r#"{"currency":"BHD","internal_net":"-1224.457","settlement_net":"-778.945","difference":"-445.512","matched":1,"mismatched":0,"unmatched_settlement":0,"unmatched_internal":1},"#,
        r#"{"currency":"EUR","internal_net":"2678.45","settlement_net":"5328.90","difference":"-2650.45","matched":1,"mismatched":1,"unmatched_settlement":1,"unmatched_internal":0},"#,
        r#"{"currency":"JPY","internal_net":"-348866","settlement_net":"-348866","difference":"0","matched":1,"mismatched":0,"unmatched_settlement":0,"unmatched_internal":0},"#,
        r#"{"currency":"USD","internal_net":"-4030.64","settlement_net":"4030.64","difference":"-8061.28","matched":0,"mismatched":1,"unmatched_settlement":0,"unmatched_internal":0}],"#,
        r#""exceptions":["#,
        r#"{"transaction_id":"TX6F34AC185E1EA35E","status":"MISMATCHED","fields":["sign"],"currency":"USD","internal_amount":"-4030.64","settlement_amount":"4030.64"},"#,
        r#"{"transaction_id":"TX78EAE8056D387441","status":"MISMATCHED","fields":["masked_pan"],"currency":"EUR","internal_amount":"-1214.34","settlement_amount":"-1214.34"},"#,
        r#"{"transaction_id":"TX8FD3A8D2DEF4E830","status":"UNMATCHED_SETTLEMENT","fields":[],"currency":"EUR","internal_amount":null,"settlement_amount":"2650.45"},"#,
        r#"{"transaction_id":"TXD5D145DC002412CB","status":"UNMATCHED_INTERNAL","fields":[],"currency":"BHD","internal_amount":"-445.512","settlement_amount":null}]}"#,
    );

    #[test]
    fn a_small_case_gives_the_report_worked_by_hand() {
        let spec = hand_spec();
        let lines: Vec<String> = settlement_lines(&spec).collect();
        assert_eq!(
            &lines[5][..96],
            "D00000005TX6F34AC185E1EA35E      YSEYXC411111******7664   2026111920261120SALUSD000000000403064D"
        );
        assert_eq!(
            lines[7].trim_end(),
            "T0000000006000000000001057388000000000001249245000000000000035774"
        );
        let rows: Vec<String> = internal_lines(&spec).collect();
        assert!(rows.contains(
            &"TX6F34AC185E1EA35E,YSEYXC,411111******7664,2026-11-19,SAL,USD,4030.64,C".to_owned()
        ));
        assert!(rows.contains(
            &"TXD5D145DC002412CB,LSM273,411111******8550,2026-11-20,REV,BHD,445.512,C".to_owned()
        ));
        assert_eq!(rows.len(), 1 + 6 - 1 + 1);
        assert_eq!(
            serde_json::to_string(&expected_report(&spec)).unwrap(),
            HAND_REPORT
        );
        assert_eq!(reconcile(&spec, 2), expected_report(&spec));
    }

    #[test]
    fn the_same_seed_gives_the_same_files_and_report() {
        let a = spec(500, 42, BreakMix::default_for(500));
        assert_eq!(settlement_file(&a), settlement_file(&a.clone()));
        assert_eq!(internal_file(&a), internal_file(&a.clone()));
        assert_eq!(expected_report(&a), expected_report(&a.clone()));
    }

    #[test]
    fn another_seed_gives_different_files() {
        let a = spec(500, 42, BreakMix::default_for(500));
        let b = SampleSpec {
            seed: 43,
            ..a.clone()
        };
        assert_ne!(settlement_file(&a), settlement_file(&b));
        assert_ne!(internal_file(&a), internal_file(&b));
        assert_ne!(expected_report(&a), expected_report(&b));
    }

    #[test]
    fn settlement_records_are_200_printable_bytes_in_the_specified_layout() {
        let spec = spec(2_000, 5, every_break());
        let lines: Vec<String> = settlement_lines(&spec).collect();
        assert_eq!(lines.len(), 2_002);
        for line in &lines {
            assert_eq!(line.len(), RECORD_LEN, "{line}");
            assert!(line.bytes().all(|b| (0x20..=0x7E).contains(&b)), "{line}");
        }
        let h = &lines[0];
        assert_eq!(&h[..1], "H");
        ymd(field(h, 2, 9));
        assert!(field(h, 10, 15).bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(field(h, 16, 25), "ACME");
        assert_eq!(field(h, 26, 33), "20261120");
        assert_eq!(field(h, 34, 43), "0000000003");
        assert_eq!(field(h, 44, 46), "001");
        assert_eq!(field(h, 47, 56), "VISA");
        assert_eq!(field(h, 57, 200), "");
        let mut ids = HashMap::new();
        let mut types = BTreeSet::new();
        let mut currencies = BTreeSet::new();
        let mut totals = ControlSums::default();
        for (k, line) in lines[1..lines.len() - 1].iter().enumerate() {
            assert_eq!(&line[..1], "D");
            assert_eq!(field(line, 2, 9).parse::<usize>().unwrap(), k + 1);
            let id = field(line, 10, 33);
            assert!(!id.is_empty() && id.len() <= 24 && !id.contains(','));
            assert_eq!(ids.insert(id.to_owned(), k), None, "{id} twice");
            assert_eq!(field(line, 34, 39).len(), 6);
            let pan = field(line, 40, 58);
            assert!(pan.len() == 16 && &pan[6..12] == "******", "{pan}");
            assert!(pan[..6]
                .bytes()
                .chain(pan[12..].bytes())
                .all(|b| b.is_ascii_digit()));
            assert!(ymd(field(line, 59, 66)) <= spec.file_date);
            assert_eq!(field(line, 67, 74), "20261120");
            for (from, to) in [(81, 95), (97, 111), (128, 131)] {
                assert!(
                    field(line, from, to).bytes().all(|b| b.is_ascii_digit()),
                    "{line}"
                );
            }
            let kind = field(line, 75, 77);
            let sign = field(line, 96, 96);
            assert_eq!(sign, if kind == "SAL" { "D" } else { "C" });
            assert!(["D", "C"].contains(&field(line, 112, 112)));
            assert!(!field(line, 113, 127).is_empty() && !field(line, 132, 156).is_empty());
            assert_eq!(field(line, 157, 200), "");
            types.insert(kind.to_owned());
            currencies.insert(field(line, 78, 80).to_owned());
            let amount: u128 = field(line, 81, 95).parse().unwrap();
            match sign {
                "D" => totals.debit_total_minor += amount,
                _ => totals.credit_total_minor += amount,
            }
            totals.fee_total_minor += field(line, 97, 111).parse::<u128>().unwrap();
            totals.details += 1;
        }
        assert_eq!(types, ["REF", "REV", "SAL"].map(String::from).into());
        assert_eq!(
            currencies,
            ["BHD", "EUR", "JPY", "USD"].map(String::from).into()
        );
        let t = lines.last().unwrap();
        assert_eq!(&t[..1], "T");
        assert_eq!(field(t, 66, 200), "");
        assert_eq!(parse_trailer(t), totals);
    }

    #[test]
    fn internal_rows_mirror_the_details_in_another_order_with_the_breaks_injected() {
        let mix = every_break();
        let spec = spec(2_000, 5, mix);
        let mut rows = internal_lines(&spec);
        assert_eq!(rows.next().unwrap(), INTERNAL_CSV_HEADER);
        let rows: Vec<Txn> = rows.map(|r| parse_row(&r)).collect();
        assert_eq!(
            rows.len() as u64,
            2_000 - mix.unmatched_settlement + mix.unmatched_internal
        );
        let details: HashMap<String, Txn> = settlement_lines(&spec)
            .filter(|l| l.starts_with('D'))
            .map(|l| {
                let (t, _) = parse_detail(&l);
                (t.transaction_id.clone(), t)
            })
            .collect();
        let (mut same, mut differ, mut extra) = (0u64, 0u64, 0u64);
        for r in &rows {
            // The amount string has exactly the currency's decimals.
            assert!(r.amount.scale() == r.currency.exponent(), "{r:?}");
            match details.get(&r.transaction_id) {
                Some(d) if d == r => same += 1,
                Some(_) => differ += 1,
                None => extra += 1,
            }
        }
        assert_eq!(extra, mix.unmatched_internal);
        assert_eq!(
            differ,
            mix.on_settlement_details() - mix.unmatched_settlement
        );
        assert_eq!(same, 2_000 - mix.on_settlement_details());
        // Not in the file's order.
        let file_ids: Vec<String> = settlement_lines(&spec)
            .filter(|l| l.starts_with('D'))
            .map(|l| field(&l, 10, 33).to_owned())
            .collect();
        let row_ids: Vec<&str> = rows
            .iter()
            .map(|r| r.transaction_id.as_str())
            .filter(|id| details.contains_key(*id))
            .collect();
        assert_ne!(row_ids, file_ids);
        let mut sorted = row_ids.clone();
        sorted.sort();
        assert_ne!(row_ids, sorted);
    }

    #[test]
    fn an_empty_file_is_a_header_and_a_trailer_and_balances() {
        let spec = spec(0, 1, BreakMix::default_for(0));
        let lines: Vec<String> = settlement_lines(&spec).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(parse_trailer(&lines[1]), ControlSums::default());
        assert_eq!(internal_file(&spec), INTERNAL_CSV_HEADER);
        let report = expected_report(&spec);
        assert_eq!(report.status, ReportStatus::Balanced);
        assert!(report.currencies.is_empty());
        assert_eq!(reconcile(&spec, 3), report);
    }

    #[test]
    fn unmatched_internal_rows_alone_need_no_records() {
        let spec = spec(
            0,
            1,
            BreakMix {
                unmatched_internal: 3,
                ..BreakMix::default()
            },
        );
        assert_eq!(internal_lines(&spec).count(), 4);
        assert_eq!(reconcile(&spec, 2), expected_report(&spec));
    }

    #[test]
    fn the_default_mix_has_every_kind_and_grows_with_the_records() {
        assert_eq!(BreakMix::default_for(7), BreakMix::default());
        let small = BreakMix::default_for(8);
        assert_eq!(small.on_settlement_details(), 8);
        assert_eq!(small.total(), 9);
        let big = BreakMix::default_for(1_000_000);
        assert_eq!(big.amount, 1_000);
        assert_eq!(big.total(), 9_000);
        let s = SampleSpec::new("ACME", date("2026-11-20"), 1_000_000, 1);
        assert_eq!(s.breaks, big);
        assert_eq!(s.check(), Ok(()));
    }

    #[test]
    fn a_spec_the_format_cannot_hold_is_refused() {
        let ok = spec(10, 1, BreakMix::default_for(10));
        assert!(ok.check().is_ok());
        for (bad, says) in [
            (
                SampleSpec {
                    program_id: "acme".into(),
                    ..ok.clone()
                },
                "program",
            ),
            (
                SampleSpec {
                    records: RECORDS_MAX + 1,
                    ..ok.clone()
                },
                "records",
            ),
            (
                SampleSpec {
                    file_sequence: FILE_SEQUENCE_MAX + 1,
                    ..ok.clone()
                },
                "sequence",
            ),
            (
                SampleSpec {
                    breaks: BreakMix {
                        amount: 11,
                        ..BreakMix::default()
                    },
                    ..ok.clone()
                },
                "only 10 records",
            ),
        ] {
            let e = bad.check().unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    #[should_panic(expected = "sample spec")]
    fn generating_from_a_bad_spec_panics_with_the_reason() {
        let bad = spec(
            1,
            1,
            BreakMix {
                amount: 2,
                ..BreakMix::default()
            },
        );
        let _ = settlement_lines(&bad);
    }

    #[test]
    fn the_generators_are_lazy_so_the_largest_spec_costs_only_the_lines_taken() {
        let spec = SampleSpec::new("ACME", date("2026-11-20"), RECORDS_MAX, 1);
        assert_eq!(settlement_lines(&spec).take(3).count(), 3);
        assert_eq!(internal_lines(&spec).take(3).count(), 3);
    }
}
