//! The fixed-width settlement file (`settlement-file.md`, format `001`),
//! parsed and validated one line at a time.
//!
//! [`parse_header`], [`parse_detail`] and [`parse_trailer`] check one record
//! on its own; [`SettlementReader`] adds every rule that spans records
//! (order, sequence, dates, control totals, the object key) and so validates
//! a whole file streamed through it. The first fault rejects the file: the
//! [`Rejection`] names its line, the field (the spec's name), what was
//! expected and what was found. A `found` never holds a full PAN: the masked
//! PAN field is reported with its middle digits starred, and any other run of
//! 13 or more digits is starred the same way.
//!
//! # Memory
//!
//! A record is checked in place: one line is the only input held. Across the
//! file the reader keeps a fixed set of counters and totals, and the
//! transaction IDs seen in a fixed-size filter ([`super::seen`]: 16 MiB
//! whatever the file's size, plus 8 bytes per *suspect*, an ID that may have
//! been seen before). The 8-digit record sequence caps a file at 99,999,999
//! details. A suspect is not yet a duplicate: when there are suspects
//! ([`FileSummary::duplicate_suspects`]) the caller reads the file a second
//! time through a [`DuplicateCheck`], which keeps only the IDs whose
//! fingerprint is a suspect and rejects the second occurrence of an
//! identical ID. Without suspects there are no duplicates and no second pass.

use super::seen::SeenIds;
use super::{valid_program_id, ObjectKey, Rejection, Sign, Txn, TxnType};
use crate::currency::Currency;
use crate::partition::fnv1a_64;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use rust_decimal::Decimal;
use std::collections::HashMap;

/// Bytes in every record, without its line end.
pub const RECORD_BYTES: usize = 200;
/// The only format version this parser reads.
pub const FORMAT_VERSION: &str = "001";
/// Largest record sequence (an 8-digit field), so also the most details a
/// file can hold.
pub const DETAILS_MAX: u64 = 99_999_999;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Creation date and time (UTC).
    pub created_at: NaiveDateTime,
    pub program_id: String,
    /// The settlement date the file covers.
    pub file_date: NaiveDate,
    /// Increases per program; a resent file keeps its number.
    pub file_sequence: u64,
    pub format_version: String,
    pub sender: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    pub record_sequence: u64,
    /// `txn.amount` is unsigned, in major units at the currency's exponent.
    pub txn: Txn,
    pub settlement_date: NaiveDate,
    /// Interchange fee, unsigned, in major units of the transaction currency.
    pub fee: Decimal,
    pub fee_sign: Sign,
    pub merchant_id: String,
    /// Merchant category code.
    pub mcc: u16,
    pub merchant_name: String,
}

/// The control totals, in minor units, all currencies added (hash totals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub detail_count: u64,
    pub debit_total_minor: u128,
    pub credit_total_minor: u128,
    /// Interchange fees, signs ignored.
    pub fee_total_minor: u128,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Header(Header),
    Detail(Detail),
    Trailer(Trailer),
}

// ---------------------------------------------------------------------------
// Layout. Positions are the spec's: 1-based, so the tables read like it.

#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    at: usize,
    len: usize,
}

impl Field {
    const fn new(name: &'static str, pos: usize, len: usize) -> Field {
        Field {
            name,
            at: pos - 1,
            len,
        }
    }
    /// The field's bytes of a record already checked to be 200 bytes of ASCII.
    fn of<'a>(&self, rec: &'a str) -> &'a str {
        &rec[self.at..self.at + self.len]
    }
}

const RECORD_TYPE: Field = Field::new("record type", 1, 1);

mod h {
    use super::{Field, RECORD_TYPE};
    pub const CREATION_DATE: Field = Field::new("creation date", 2, 8);
    pub const CREATION_TIME: Field = Field::new("creation time", 10, 6);
    pub const PROGRAM_ID: Field = Field::new("program ID", 16, 10);
    pub const FILE_DATE: Field = Field::new("file date", 26, 8);
    pub const FILE_SEQUENCE: Field = Field::new("file sequence", 34, 10);
    pub const FORMAT_VERSION: Field = Field::new("format version", 44, 3);
    pub const SENDER: Field = Field::new("sender", 47, 10);
    pub const FILLER: Field = Field::new("filler", 57, 144);
    pub const ALL: [Field; 9] = [
        RECORD_TYPE,
        CREATION_DATE,
        CREATION_TIME,
        PROGRAM_ID,
        FILE_DATE,
        FILE_SEQUENCE,
        FORMAT_VERSION,
        SENDER,
        FILLER,
    ];
}

mod d {
    use super::{Field, RECORD_TYPE};
    pub const RECORD_SEQUENCE: Field = Field::new("record sequence", 2, 8);
    pub const TRANSACTION_ID: Field = Field::new("transaction ID", 10, 24);
    pub const AUTH_CODE: Field = Field::new("authorization code", 34, 6);
    pub const MASKED_PAN: Field = Field::new("masked PAN", 40, 19);
    pub const TRANSACTION_DATE: Field = Field::new("transaction date", 59, 8);
    pub const SETTLEMENT_DATE: Field = Field::new("settlement date", 67, 8);
    pub const TRANSACTION_TYPE: Field = Field::new("transaction type", 75, 3);
    pub const CURRENCY: Field = Field::new("currency", 78, 3);
    pub const AMOUNT: Field = Field::new("amount", 81, 15);
    pub const AMOUNT_SIGN: Field = Field::new("amount sign", 96, 1);
    pub const FEE: Field = Field::new("interchange fee", 97, 15);
    pub const FEE_SIGN: Field = Field::new("fee sign", 112, 1);
    pub const MERCHANT_ID: Field = Field::new("merchant ID", 113, 15);
    pub const MCC: Field = Field::new("merchant category code", 128, 4);
    pub const MERCHANT_NAME: Field = Field::new("merchant name", 132, 25);
    pub const FILLER: Field = Field::new("filler", 157, 44);
    pub const ALL: [Field; 17] = [
        RECORD_TYPE,
        RECORD_SEQUENCE,
        TRANSACTION_ID,
        AUTH_CODE,
        MASKED_PAN,
        TRANSACTION_DATE,
        SETTLEMENT_DATE,
        TRANSACTION_TYPE,
        CURRENCY,
        AMOUNT,
        AMOUNT_SIGN,
        FEE,
        FEE_SIGN,
        MERCHANT_ID,
        MCC,
        MERCHANT_NAME,
        FILLER,
    ];
}

mod t {
    use super::{Field, RECORD_TYPE};
    pub const DETAIL_COUNT: Field = Field::new("detail count", 2, 10);
    pub const DEBIT_TOTAL: Field = Field::new("debit total", 12, 18);
    pub const CREDIT_TOTAL: Field = Field::new("credit total", 30, 18);
    pub const FEE_TOTAL: Field = Field::new("fee total", 48, 18);
    pub const FILLER: Field = Field::new("filler", 66, 135);
    pub const ALL: [Field; 6] = [
        RECORD_TYPE,
        DETAIL_COUNT,
        DEBIT_TOTAL,
        CREDIT_TOTAL,
        FEE_TOTAL,
        FILLER,
    ];
}

/// The field a byte position (0-based) falls in, for a record of this type.
fn field_at(record_type: u8, at: usize) -> &'static str {
    let table: &[Field] = match record_type {
        b'H' => &h::ALL,
        b'D' => &d::ALL,
        b'T' => &t::ALL,
        _ if at == 0 => return RECORD_TYPE.name,
        _ => return "record",
    };
    table
        .iter()
        .find(|f| (f.at..f.at + f.len).contains(&at))
        .map_or("record", |f| f.name)
}

// ---------------------------------------------------------------------------
// Rejections. Shared with `internal`.

pub(super) fn reject(
    line: u64,
    field: &str,
    expected: impl Into<String>,
    found: impl Into<String>,
) -> Rejection {
    Rejection {
        line,
        field: field.to_owned(),
        expected: expected.into(),
        found: scrub_digit_runs(found.into()),
    }
}

/// A value as found, in backticks so that spaces and emptiness show.
pub(super) fn shown(value: &str) -> String {
    format!("`{value}`")
}

/// Digit runs this long may be card numbers: they never appear in a `found`.
const DIGIT_RUN_HIDDEN_MIN: usize = 13;

/// Stars the middle of every run of 13 or more digits (first 6 and last 4
/// kept), so a PAN that strays into any field is never echoed.
fn scrub_digit_runs(found: String) -> String {
    let b = found.as_bytes();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i - start >= DIGIT_RUN_HIDDEN_MIN {
                runs.push((start, i));
            }
        } else {
            i += 1;
        }
    }
    if runs.is_empty() {
        return found;
    }
    let mut out = found.into_bytes();
    for (start, end) in runs {
        out[start + 6..end - 4].fill(b'*');
    }
    let mut out = String::from_utf8(out).expect("only ASCII digits were replaced");
    out.push_str(" (long digit run not shown)");
    out
}

/// A masked-PAN value as it may be reported: every digit outside the first 6
/// and last 4 characters starred.
pub(super) fn pan_for_report(value: &str) -> String {
    let b = value.as_bytes();
    let mut out = b.to_vec();
    let mut hidden = false;
    if b.len() > 10 {
        for c in &mut out[6..b.len() - 4] {
            if c.is_ascii_digit() {
                *c = b'*';
                hidden = true;
            }
        }
    }
    // Only ASCII digits were replaced, so the bytes are still UTF-8.
    let out = String::from_utf8(out).unwrap_or_else(|_| "(not UTF-8)".to_owned());
    if hidden {
        format!("`{out}` (unmasked PAN not shown)")
    } else {
        shown(&out)
    }
}

pub(super) const PAN_EXPECTED: &str =
    "a masked PAN of 13 to 19 characters: first 6 and last 4 digits with `*` between";

/// 13–19 characters: 6 digits, at least 3 `*` and nothing else, 4 digits.
pub fn valid_masked_pan(pan: &str) -> bool {
    let b = pan.as_bytes();
    (13..=19).contains(&b.len())
        && b[..6].iter().all(u8::is_ascii_digit)
        && b[6..b.len() - 4].iter().all(|c| *c == b'*')
        && b[b.len() - 4..].iter().all(u8::is_ascii_digit)
}

pub(super) fn is_printable(b: u8) -> bool {
    (0x20..=0x7e).contains(&b)
}

/// Position (0-based) of the first byte outside 0x20–0x7E.
pub(super) fn first_unprintable(line: &[u8]) -> Option<usize> {
    // A branch-free pass first (the common, clean case), then the search.
    let any_bad = line
        .iter()
        .fold(false, |acc, b| acc | (b.wrapping_sub(0x20) > 0x5e));
    if any_bad {
        line.iter().position(|b| !is_printable(*b))
    } else {
        None
    }
}

pub(super) fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Splits a whole file into lines for `push`: on `\n`, with no line after a
/// final `\n`, so `a\nb` and `a\nb\n` both give two lines; `\r` is left for
/// the parsers to strip. An empty input gives no lines.
pub fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let empty = data.is_empty();
    body.split(|b| *b == b'\n').filter(move |_| !empty)
}

// ---------------------------------------------------------------------------
// Field parsing over a checked record.

/// Length, printability and blankness; the record as `&str`.
fn check_record(line: &[u8], line_no: u64) -> Result<&str, Rejection> {
    let line = strip_cr(line);
    if line.is_empty() {
        return Err(reject(
            line_no,
            "record",
            "a 200-byte record (blank lines are not allowed)",
            "a blank line",
        ));
    }
    if line.len() != RECORD_BYTES {
        // The length only: a malformed record may hold a full PAN.
        return Err(reject(
            line_no,
            "record",
            "200 bytes",
            format!("{} bytes", line.len()),
        ));
    }
    if let Some(at) = first_unprintable(line) {
        return Err(reject(
            line_no,
            field_at(line[0], at),
            "printable ASCII (bytes 0x20 to 0x7E)",
            format!("byte 0x{:02X} at position {}", line[at], at + 1),
        ));
    }
    Ok(std::str::from_utf8(line).expect("printable ASCII is UTF-8"))
}

fn check_type(rec: &str, want: u8, line_no: u64) -> Result<(), Rejection> {
    let got = rec.as_bytes()[0];
    if got == want {
        Ok(())
    } else {
        Err(reject(
            line_no,
            RECORD_TYPE.name,
            format!("`{}`", want as char),
            shown(RECORD_TYPE.of(rec)),
        ))
    }
}

/// An `N` field as a number. 18 digits at most, so it fits a `u64`.
fn number(rec: &str, f: Field, line_no: u64) -> Result<u64, Rejection> {
    digits(f.of(rec)).ok_or_else(|| reject(line_no, f.name, "digits only", shown(f.of(rec))))
}

fn digits(s: &str) -> Option<u64> {
    let mut v: u64 = 0;
    for b in s.bytes() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u64::from(d);
    }
    Some(v)
}

fn date(rec: &str, f: Field, line_no: u64) -> Result<NaiveDate, Rejection> {
    let s = f.of(rec);
    digits(s)
        .and_then(|v| {
            NaiveDate::from_ymd_opt(
                (v / 10_000) as i32,
                (v / 100 % 100) as u32,
                (v % 100) as u32,
            )
        })
        .ok_or_else(|| reject(line_no, f.name, "a date YYYYMMDD that exists", shown(s)))
}

fn time(rec: &str, f: Field, line_no: u64) -> Result<NaiveTime, Rejection> {
    let s = f.of(rec);
    digits(s)
        .and_then(|v| {
            NaiveTime::from_hms_opt(
                (v / 10_000) as u32,
                (v / 100 % 100) as u32,
                (v % 100) as u32,
            )
        })
        .ok_or_else(|| reject(line_no, f.name, "a time HHMMSS (UTC) that exists", shown(s)))
}

/// An `A` field: left-justified, trailing spaces are padding.
fn alpha(rec: &str, f: Field) -> &str {
    f.of(rec).trim_end_matches(' ')
}

fn sign(rec: &str, f: Field, line_no: u64) -> Result<Sign, Rejection> {
    match f.of(rec).as_bytes()[0] {
        b'D' => Ok(Sign::Debit),
        b'C' => Ok(Sign::Credit),
        _ => Err(reject(line_no, f.name, "D or C", shown(f.of(rec)))),
    }
}

/// The few currencies a file uses, so that most lookups skip the ISO table.
#[derive(Debug, Default)]
pub(super) struct CurrencyCache {
    recent: Vec<Currency>,
}

impl CurrencyCache {
    const LEN_MAX: usize = 8;

    pub(super) fn get(&mut self, code: &str) -> Option<Currency> {
        if let Some(c) = self.recent.iter().find(|c| c.code() == code) {
            return Some(*c);
        }
        let c = Currency::parse(code).ok()?;
        if self.recent.len() < Self::LEN_MAX {
            self.recent.push(c);
        }
        Some(c)
    }
}

pub(super) const CURRENCY_EXPECTED: &str = "an ISO 4217 currency code with a minor unit (e.g. USD)";
pub(super) const TYPE_EXPECTED: &str = "SAL, REF, REV or CBK";

/// Minor units at `exponent` as an exact major-unit amount. The callers keep
/// `minor` below 10^18, so it fits an `i64`.
pub(super) fn major_units(minor: u64, exponent: u32) -> Decimal {
    Decimal::new(minor as i64, exponent)
}

fn header_fields(rec: &str, line_no: u64) -> Result<Header, Rejection> {
    let created_on = date(rec, h::CREATION_DATE, line_no)?;
    let created_time = time(rec, h::CREATION_TIME, line_no)?;
    let program_id = alpha(rec, h::PROGRAM_ID);
    if !valid_program_id(program_id) {
        return Err(reject(
            line_no,
            h::PROGRAM_ID.name,
            "1 to 10 characters of A-Z 0-9 _ -",
            shown(program_id),
        ));
    }
    let file_date = date(rec, h::FILE_DATE, line_no)?;
    let file_sequence = number(rec, h::FILE_SEQUENCE, line_no)?;
    let format_version = alpha(rec, h::FORMAT_VERSION);
    if format_version != FORMAT_VERSION {
        return Err(reject(
            line_no,
            h::FORMAT_VERSION.name,
            "`001` (the only version this parser reads)",
            shown(h::FORMAT_VERSION.of(rec)),
        ));
    }
    Ok(Header {
        created_at: created_on.and_time(created_time),
        program_id: program_id.to_owned(),
        file_date,
        file_sequence,
        format_version: format_version.to_owned(),
        sender: alpha(rec, h::SENDER).to_owned(),
    })
}

/// A detail and its amount and fee in minor units (for the control totals).
struct ParsedDetail {
    detail: Detail,
    amount_minor: u64,
    fee_minor: u64,
}

fn detail_fields(
    rec: &str,
    line_no: u64,
    currencies: &mut CurrencyCache,
) -> Result<ParsedDetail, Rejection> {
    let record_sequence = number(rec, d::RECORD_SEQUENCE, line_no)?;
    let transaction_id = alpha(rec, d::TRANSACTION_ID);
    if transaction_id.is_empty() {
        return Err(reject(
            line_no,
            d::TRANSACTION_ID.name,
            "a transaction ID (not all spaces)",
            "spaces only",
        ));
    }
    let auth_code = alpha(rec, d::AUTH_CODE);
    let masked_pan = alpha(rec, d::MASKED_PAN);
    if !valid_masked_pan(masked_pan) {
        return Err(reject(
            line_no,
            d::MASKED_PAN.name,
            PAN_EXPECTED,
            pan_for_report(masked_pan),
        ));
    }
    let transaction_date = date(rec, d::TRANSACTION_DATE, line_no)?;
    let settlement_date = date(rec, d::SETTLEMENT_DATE, line_no)?;
    let code = d::TRANSACTION_TYPE.of(rec);
    let transaction_type = TxnType::parse(code).ok_or_else(|| {
        reject(
            line_no,
            d::TRANSACTION_TYPE.name,
            TYPE_EXPECTED,
            shown(code),
        )
    })?;
    let code = d::CURRENCY.of(rec);
    let currency = currencies
        .get(code)
        .ok_or_else(|| reject(line_no, d::CURRENCY.name, CURRENCY_EXPECTED, shown(code)))?;
    let amount_minor = number(rec, d::AMOUNT, line_no)?;
    let amount_sign = sign(rec, d::AMOUNT_SIGN, line_no)?;
    let fee_minor = number(rec, d::FEE, line_no)?;
    let fee_sign = sign(rec, d::FEE_SIGN, line_no)?;
    let merchant_id = alpha(rec, d::MERCHANT_ID);
    let mcc = number(rec, d::MCC, line_no)? as u16; // 4 digits
    let merchant_name = alpha(rec, d::MERCHANT_NAME);
    let exponent = currency.exponent();
    Ok(ParsedDetail {
        detail: Detail {
            record_sequence,
            txn: Txn {
                transaction_id: transaction_id.to_owned(),
                auth_code: auth_code.to_owned(),
                masked_pan: masked_pan.to_owned(),
                transaction_date,
                transaction_type,
                currency,
                amount: major_units(amount_minor, exponent),
                sign: amount_sign,
            },
            settlement_date,
            fee: major_units(fee_minor, exponent),
            fee_sign,
            merchant_id: merchant_id.to_owned(),
            mcc,
            merchant_name: merchant_name.to_owned(),
        },
        amount_minor,
        fee_minor,
    })
}

fn trailer_fields(rec: &str, line_no: u64) -> Result<Trailer, Rejection> {
    Ok(Trailer {
        detail_count: number(rec, t::DETAIL_COUNT, line_no)?,
        debit_total_minor: number(rec, t::DEBIT_TOTAL, line_no)?.into(),
        credit_total_minor: number(rec, t::CREDIT_TOTAL, line_no)?.into(),
        fee_total_minor: number(rec, t::FEE_TOTAL, line_no)?.into(),
    })
}

/// One header record on its own. `line` excludes the `\n`; one trailing `\r`
/// is stripped. Checks the format version (`001`) and that the program ID is
/// well formed; comparing with the object key is the reader's job.
pub fn parse_header(line: &[u8], line_no: u64) -> Result<Header, Rejection> {
    let rec = check_record(line, line_no)?;
    check_type(rec, b'H', line_no)?;
    header_fields(rec, line_no)
}

/// One detail record on its own (sequence and settlement date are checked
/// against the file by the reader). `line` as for [`parse_header`].
pub fn parse_detail(line: &[u8], line_no: u64) -> Result<Detail, Rejection> {
    let rec = check_record(line, line_no)?;
    check_type(rec, b'D', line_no)?;
    Ok(detail_fields(rec, line_no, &mut CurrencyCache::default())?.detail)
}

/// One trailer record on its own (the totals are compared by the reader).
/// `line` as for [`parse_header`].
pub fn parse_trailer(line: &[u8], line_no: u64) -> Result<Trailer, Rejection> {
    let rec = check_record(line, line_no)?;
    check_type(rec, b'T', line_no)?;
    trailer_fields(rec, line_no)
}

// ---------------------------------------------------------------------------
// The whole file.

/// What a valid file held. If `duplicate_suspects` is not empty the file is
/// not yet accepted: read it again through [`FileSummary::duplicate_check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSummary {
    pub header: Header,
    pub trailer: Trailer,
    pub details: u64,
    pub lines: u64,
    /// Sorted fingerprints (`fnv1a_64`) of the IDs that may repeat.
    pub duplicate_suspects: Vec<u64>,
}

impl FileSummary {
    /// The second pass: feed it the transaction ID of every detail (lines 2
    /// to `lines - 1`).
    pub fn duplicate_check(&self) -> DuplicateCheck {
        DuplicateCheck::new(self.duplicate_suspects.clone())
    }
}

/// Validates a settlement file streamed one line at a time against the spec's
/// "Validity" rules. Holds 8 bytes per detail (see the module doc). After a
/// rejection every further `push` and `finish` return that same rejection.
#[derive(Debug)]
pub struct SettlementReader {
    key_program_id: String,
    key_file_date: NaiveDate,
    line_no: u64,
    header: Option<Header>,
    /// The trailer and its line, once read.
    trailer: Option<(Trailer, u64)>,
    details: u64,
    debit_total_minor: u128,
    credit_total_minor: u128,
    fee_total_minor: u128,
    seen: SeenIds,
    currencies: CurrencyCache,
    rejected: Option<Rejection>,
}

impl SettlementReader {
    /// A reader for the object at `key`, whose program and date the header
    /// must carry.
    pub fn new(key: &ObjectKey) -> SettlementReader {
        SettlementReader {
            key_program_id: key.program_id.clone(),
            key_file_date: key.file_date,
            line_no: 0,
            header: None,
            trailer: None,
            details: 0,
            debit_total_minor: 0,
            credit_total_minor: 0,
            fee_total_minor: 0,
            seen: SeenIds::new(),
            currencies: CurrencyCache::default(),
            rejected: None,
        }
    }

    /// The next line, without its `\n` (a trailing `\r` is stripped). Lines
    /// are numbered from 1 by the reader.
    pub fn push(&mut self, line: &[u8]) -> Result<Record, Rejection> {
        if let Some(r) = &self.rejected {
            return Err(r.clone());
        }
        self.line_no += 1;
        let result = self.step(line);
        if let Err(r) = &result {
            self.rejected = Some(r.clone());
        }
        result
    }

    fn step(&mut self, line: &[u8]) -> Result<Record, Rejection> {
        let n = self.line_no;
        let rec = check_record(line, n)?;
        let kind = rec.as_bytes()[0];
        if let Some((_, trailer_line)) = self.trailer {
            return Err(reject(
                n,
                RECORD_TYPE.name,
                format!("nothing after the trailer (line {trailer_line})"),
                shown(RECORD_TYPE.of(rec)),
            ));
        }
        match (self.header.is_some(), kind) {
            (false, b'H') => self.header(rec, n),
            (false, _) => Err(reject(
                n,
                RECORD_TYPE.name,
                "`H` (the header comes first)",
                shown(RECORD_TYPE.of(rec)),
            )),
            (true, b'D') => self.detail(rec, n),
            (true, b'T') => self.trailer(rec, n),
            (true, b'H') => Err(reject(
                n,
                RECORD_TYPE.name,
                "`D` or `T` (the header was line 1; a file has one)",
                "`H`",
            )),
            (true, _) => Err(reject(
                n,
                RECORD_TYPE.name,
                "`D` or `T`",
                shown(RECORD_TYPE.of(rec)),
            )),
        }
    }

    fn header(&mut self, rec: &str, n: u64) -> Result<Record, Rejection> {
        let header = header_fields(rec, n)?;
        if header.program_id != self.key_program_id {
            return Err(reject(
                n,
                h::PROGRAM_ID.name,
                format!("`{}` (the object key's program)", self.key_program_id),
                shown(&header.program_id),
            ));
        }
        if header.file_date != self.key_file_date {
            return Err(reject(
                n,
                h::FILE_DATE.name,
                format!(
                    "`{}` (the object key's date, {})",
                    self.key_file_date.format("%Y%m%d"),
                    self.key_file_date.format("%Y-%m-%d")
                ),
                shown(h::FILE_DATE.of(rec)),
            ));
        }
        self.header = Some(header.clone());
        Ok(Record::Header(header))
    }

    fn detail(&mut self, rec: &str, n: u64) -> Result<Record, Rejection> {
        let ParsedDetail {
            detail,
            amount_minor,
            fee_minor,
        } = detail_fields(rec, n, &mut self.currencies)?;
        let want = self.details + 1;
        if detail.record_sequence != want {
            let why = if want == 1 {
                "the first detail"
            } else {
                "one more than the previous detail's"
            };
            return Err(reject(
                n,
                d::RECORD_SEQUENCE.name,
                format!("{want} ({why})"),
                detail.record_sequence.to_string(),
            ));
        }
        let file_date = self.header.as_ref().map(|h| h.file_date);
        if Some(detail.settlement_date) != file_date {
            let file_date = file_date.map_or(String::new(), |d| d.format("%Y%m%d").to_string());
            return Err(reject(
                n,
                d::SETTLEMENT_DATE.name,
                format!("`{file_date}` (the header's file date)"),
                shown(d::SETTLEMENT_DATE.of(rec)),
            ));
        }
        match detail.txn.sign {
            Sign::Debit => self.debit_total_minor += u128::from(amount_minor),
            Sign::Credit => self.credit_total_minor += u128::from(amount_minor),
        }
        self.fee_total_minor += u128::from(fee_minor);
        self.details += 1;
        self.seen.insert(&detail.txn.transaction_id);
        Ok(Record::Detail(detail))
    }

    fn trailer(&mut self, rec: &str, n: u64) -> Result<Record, Rejection> {
        let trailer = trailer_fields(rec, n)?;
        if trailer.detail_count != self.details {
            return Err(reject(
                n,
                t::DETAIL_COUNT.name,
                format!("{} (the details counted)", self.details),
                trailer.detail_count.to_string(),
            ));
        }
        for (f, found, counted, what) in [
            (
                t::DEBIT_TOTAL,
                trailer.debit_total_minor,
                self.debit_total_minor,
                "D-signed amounts",
            ),
            (
                t::CREDIT_TOTAL,
                trailer.credit_total_minor,
                self.credit_total_minor,
                "C-signed amounts",
            ),
            (
                t::FEE_TOTAL,
                trailer.fee_total_minor,
                self.fee_total_minor,
                "interchange fees, signs ignored",
            ),
        ] {
            if found != counted {
                return Err(reject(
                    n,
                    f.name,
                    format!(
                        "{} (the sum of the details' {what}, minor units)",
                        grouped(counted)
                    ),
                    grouped(found),
                ));
            }
        }
        self.trailer = Some((trailer, n));
        Ok(Record::Trailer(trailer))
    }

    /// The end of the file: a header and a trailer must have been read.
    pub fn finish(self) -> Result<FileSummary, Rejection> {
        if let Some(r) = self.rejected {
            return Err(r);
        }
        // Any line pushed either became the header or was rejected, so no
        // header means no lines.
        let Some(header) = self.header else {
            return Err(reject(
                1,
                RECORD_TYPE.name,
                "a header (`H`) record on line 1",
                "an empty file",
            ));
        };
        let Some((trailer, _)) = self.trailer else {
            return Err(reject(
                self.line_no,
                RECORD_TYPE.name,
                "a trailer (`T`) record after the last detail",
                format!("the end of the file after line {}", self.line_no),
            ));
        };
        Ok(FileSummary {
            header,
            trailer,
            details: self.details,
            lines: self.line_no,
            duplicate_suspects: self.seen.into_suspects(),
        })
    }
}

/// A total with thousands separators: readable, and never a long digit run.
fn grouped(v: u128) -> String {
    let digits = v.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The second pass over a file whose summary has duplicate suspects. Keeps
/// only the IDs whose fingerprint is a suspect (with the line each was first
/// seen on), so its memory is bounded by the suspects, not by the file.
#[derive(Debug, Clone)]
pub struct DuplicateCheck {
    suspects: Vec<u64>,
    field: &'static str,
    seen: HashMap<String, u64>,
}

impl DuplicateCheck {
    /// From a summary's `duplicate_suspects`. A rejection names the field
    /// `transaction ID` (the settlement file's name); see [`Self::with_field`].
    pub fn new(mut suspects: Vec<u64>) -> DuplicateCheck {
        suspects.sort_unstable();
        suspects.dedup();
        DuplicateCheck {
            suspects,
            field: d::TRANSACTION_ID.name,
            seen: HashMap::new(),
        }
    }

    /// The field a rejection names (`transaction_id` for the internal CSV).
    pub fn with_field(mut self, field: &'static str) -> DuplicateCheck {
        self.field = field;
        self
    }

    /// No suspects: the second pass can be skipped.
    pub fn is_empty(&self) -> bool {
        self.suspects.is_empty()
    }

    /// Rejects the second occurrence of an identical ID, naming the line it
    /// was first used on.
    pub fn check(&mut self, line_no: u64, transaction_id: &str) -> Result<(), Rejection> {
        if self
            .suspects
            .binary_search(&fnv1a_64(transaction_id.as_bytes()))
            .is_err()
        {
            return Ok(());
        }
        if let Some(first) = self.seen.get(transaction_id) {
            return Err(reject(
                line_no,
                self.field,
                format!("a transaction ID not already used (first used on line {first})"),
                shown(transaction_id),
            ));
        }
        self.seen.insert(transaction_id.to_owned(), line_no);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Writing records (generators and tests).

/// A record being written: 200 spaces, fields placed by the layout tables.
struct Out([u8; RECORD_BYTES]);

impl Out {
    fn new(kind: u8) -> Out {
        let mut b = [b' '; RECORD_BYTES];
        b[0] = kind;
        Out(b)
    }
    fn alpha(&mut self, f: Field, value: &str) -> &mut Out {
        assert!(
            value.len() <= f.len && value.bytes().all(is_printable),
            "{} `{value}` does not fit {} bytes of printable ASCII",
            f.name,
            f.len
        );
        self.0[f.at..f.at + value.len()].copy_from_slice(value.as_bytes());
        self
    }
    fn number(&mut self, f: Field, value: u128) -> &mut Out {
        let digits = format!("{value:0width$}", width = f.len);
        assert!(
            digits.len() == f.len,
            "{} {value} does not fit {} digits",
            f.name,
            f.len
        );
        self.0[f.at..f.at + f.len].copy_from_slice(digits.as_bytes());
        self
    }
    fn date(&mut self, f: Field, value: NaiveDate) -> &mut Out {
        self.alpha(f, &value.format("%Y%m%d").to_string())
    }
    fn finish(&self) -> String {
        String::from_utf8(self.0.to_vec()).expect("only ASCII was written")
    }
}

/// An amount in minor units: `amount × 10^exponent`, exact.
///
/// # Panics
/// If the amount has more decimals than the exponent or is negative.
fn minor_units(amount: Decimal, exponent: u32) -> u128 {
    let mut scaled = amount;
    scaled.rescale(exponent);
    assert!(
        scaled == amount && !amount.is_sign_negative(),
        "{amount} is not an unsigned amount with at most {exponent} decimals"
    );
    scaled.mantissa() as u128
}

/// The header as a 200-byte record (no line end).
///
/// # Panics
/// If a value does not fit its field (the formatters are for well-formed
/// records; write invalid bytes by editing the result).
pub fn format_header(hd: &Header) -> String {
    Out::new(b'H')
        .date(h::CREATION_DATE, hd.created_at.date())
        .alpha(
            h::CREATION_TIME,
            &hd.created_at.time().format("%H%M%S").to_string(),
        )
        .alpha(h::PROGRAM_ID, &hd.program_id)
        .date(h::FILE_DATE, hd.file_date)
        .number(h::FILE_SEQUENCE, hd.file_sequence.into())
        .alpha(h::FORMAT_VERSION, &hd.format_version)
        .alpha(h::SENDER, &hd.sender)
        .finish()
}

/// The detail as a 200-byte record (no line end). Amount and fee are written
/// in minor units of the transaction currency.
///
/// # Panics
/// As [`format_header`]; also if an amount has more decimals than the
/// currency allows.
pub fn format_detail(dt: &Detail) -> String {
    let x = &dt.txn;
    let exponent = x.currency.exponent();
    Out::new(b'D')
        .number(d::RECORD_SEQUENCE, dt.record_sequence.into())
        .alpha(d::TRANSACTION_ID, &x.transaction_id)
        .alpha(d::AUTH_CODE, &x.auth_code)
        .alpha(d::MASKED_PAN, &x.masked_pan)
        .date(d::TRANSACTION_DATE, x.transaction_date)
        .date(d::SETTLEMENT_DATE, dt.settlement_date)
        .alpha(d::TRANSACTION_TYPE, x.transaction_type.as_str())
        .alpha(d::CURRENCY, x.currency.code())
        .number(d::AMOUNT, minor_units(x.amount, exponent))
        .alpha(d::AMOUNT_SIGN, x.sign.as_str())
        .number(d::FEE, minor_units(dt.fee, exponent))
        .alpha(d::FEE_SIGN, dt.fee_sign.as_str())
        .alpha(d::MERCHANT_ID, &dt.merchant_id)
        .number(d::MCC, dt.mcc.into())
        .alpha(d::MERCHANT_NAME, &dt.merchant_name)
        .finish()
}

/// The trailer as a 200-byte record (no line end).
///
/// # Panics
/// If a total does not fit its 18 digits.
pub fn format_trailer(tr: &Trailer) -> String {
    Out::new(b'T')
        .number(t::DETAIL_COUNT, tr.detail_count.into())
        .number(t::DEBIT_TOTAL, tr.debit_total_minor)
        .number(t::CREDIT_TOTAL, tr.credit_total_minor)
        .number(t::FEE_TOTAL, tr.fee_total_minor)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recon::Side;
    use crate::test_support::{date, dec};

    const FULL_PAN: &str = "4111111111111111";

    fn key() -> ObjectKey {
        ObjectKey::parse("settlement/ACME/2026-11-20/visa-001.dat").unwrap()
    }

    fn header() -> Header {
        Header {
            created_at: date("2026-11-21").and_hms_opt(2, 30, 5).unwrap(),
            program_id: "ACME".into(),
            file_date: date("2026-11-20"),
            file_sequence: 42,
            format_version: "001".into(),
            sender: "VISA".into(),
        }
    }

    fn detail(seq: u64, ccy: &str, amount: &str, sign: Sign) -> Detail {
        Detail {
            record_sequence: seq,
            txn: Txn {
                transaction_id: format!("TXN-{seq:08}"),
                auth_code: "A1B2C3".into(),
                masked_pan: "411111******1111".into(),
                transaction_date: date("2026-11-19"),
                transaction_type: if sign == Sign::Debit {
                    TxnType::Sale
                } else {
                    TxnType::Refund
                },
                currency: Currency::parse(ccy).unwrap(),
                amount: dec(amount),
                sign,
            },
            settlement_date: date("2026-11-20"),
            fee: dec(if ccy == "JPY" { "3" } else { "0.25" }),
            fee_sign: Sign::Credit,
            merchant_id: "MID000000000123".into(),
            mcc: 5411,
            merchant_name: "CORNER GROCERY".into(),
        }
    }

    fn trailer_for(details: &[Detail]) -> Trailer {
        let mut t = Trailer {
            detail_count: details.len() as u64,
            debit_total_minor: 0,
            credit_total_minor: 0,
            fee_total_minor: 0,
        };
        for dt in details {
            let e = dt.txn.currency.exponent();
            let m = minor_units(dt.txn.amount, e);
            match dt.txn.sign {
                Sign::Debit => t.debit_total_minor += m,
                Sign::Credit => t.credit_total_minor += m,
            }
            t.fee_total_minor += minor_units(dt.fee, e);
        }
        t
    }

    fn details(n: u64) -> Vec<Detail> {
        let ccys = ["USD", "JPY", "BHD", "EUR"];
        (1..=n)
            .map(|i| {
                let sign = if i % 3 == 0 {
                    Sign::Credit
                } else {
                    Sign::Debit
                };
                let amount = match ccys[(i % 4) as usize] {
                    "JPY" => format!("{}", 100 + i),
                    "BHD" => format!("{}.{:03}", i, i % 1000),
                    _ => format!("{}.{:02}", i, i % 100),
                };
                detail(i, ccys[(i % 4) as usize], &amount, sign)
            })
            .collect()
    }

    /// A valid file of `n` details, one record per element.
    fn file(n: u64) -> Vec<String> {
        let ds = details(n);
        let mut lines = vec![format_header(&header())];
        lines.extend(ds.iter().map(format_detail));
        lines.push(format_trailer(&trailer_for(&ds)));
        lines
    }

    fn read<S: AsRef<[u8]>>(lines: &[S]) -> Result<FileSummary, Rejection> {
        let mut r = SettlementReader::new(&key());
        for l in lines {
            r.push(l.as_ref())?;
        }
        r.finish()
    }

    /// `line` with `value` written at 1-based `pos`.
    fn put(line: &str, pos: usize, value: &str) -> String {
        let mut b = line.as_bytes().to_vec();
        b[pos - 1..pos - 1 + value.len()].copy_from_slice(value.as_bytes());
        String::from_utf8(b).unwrap()
    }

    /// Reads a 3-detail file with line `line_no` (1-based) edited.
    fn read_edited(
        line_no: usize,
        edit: impl Fn(&str) -> String,
    ) -> Result<FileSummary, Rejection> {
        let mut lines = file(3);
        lines[line_no - 1] = edit(&lines[line_no - 1]);
        read(&lines)
    }

    #[track_caller]
    fn assert_rejected(r: Result<FileSummary, Rejection>, line: u64, field: &str) -> Rejection {
        let e = r.expect_err("the file should be rejected");
        assert_eq!((e.line, e.field.as_str()), (line, field), "{e}");
        assert!(!e.expected.is_empty() && !e.found.is_empty(), "{e:?}");
        e
    }

    #[test]
    fn the_layout_tables_cover_every_position_exactly_once() {
        for table in [&h::ALL[..], &d::ALL[..], &t::ALL[..]] {
            let mut next = 0;
            for f in table {
                assert_eq!(f.at, next, "{} starts where the previous ends", f.name);
                next = f.at + f.len;
            }
            assert_eq!(next, RECORD_BYTES);
        }
    }

    #[test]
    fn a_valid_file_round_trips_through_the_formatters_and_the_reader() {
        let ds = details(12);
        let lines = file(12);
        assert!(lines.iter().all(|l| l.len() == RECORD_BYTES));
        let mut r = SettlementReader::new(&key());
        assert_eq!(r.push(lines[0].as_bytes()), Ok(Record::Header(header())));
        for (l, want) in lines[1..13].iter().zip(&ds) {
            assert_eq!(r.push(l.as_bytes()), Ok(Record::Detail(want.clone())));
        }
        let trailer = trailer_for(&ds);
        assert_eq!(r.push(lines[13].as_bytes()), Ok(Record::Trailer(trailer)));
        let s = r.finish().unwrap();
        assert_eq!(
            s,
            FileSummary {
                header: header(),
                trailer,
                details: 12,
                lines: 14,
                duplicate_suspects: vec![],
            }
        );
        assert!(s.duplicate_check().is_empty());
        // And each record through its standalone parser and back.
        assert_eq!(
            format_header(&parse_header(lines[0].as_bytes(), 1).unwrap()),
            lines[0]
        );
        assert_eq!(
            format_detail(&parse_detail(lines[5].as_bytes(), 6).unwrap()),
            lines[5]
        );
        assert_eq!(
            format_trailer(&parse_trailer(lines[13].as_bytes(), 14).unwrap()),
            lines[13]
        );
    }

    #[test]
    fn a_file_with_no_details_is_valid() {
        let lines = file(0);
        let s = read(&lines).unwrap();
        assert_eq!((s.details, s.lines), (0, 2));
    }

    #[test]
    fn crlf_line_ends_and_a_missing_final_line_end_are_accepted() {
        let lines = file(3);
        for (end, last) in [("\r\n", "\r\n"), ("\r\n", ""), ("\n", ""), ("\n", "\n")] {
            let mut data = lines.join(end);
            data.push_str(last);
            let split: Vec<&[u8]> = super::lines(data.as_bytes()).collect();
            assert_eq!(split.len(), 5, "{end:?} {last:?}");
            let s = read(&split).unwrap();
            assert_eq!((s.details, s.lines), (3, 5));
        }
        assert_eq!(super::lines(b"").count(), 0);
        assert_eq!(super::lines(b"\n").collect::<Vec<_>>(), vec![b""]);
    }

    #[test]
    fn the_standalone_parsers_strip_one_carriage_return_only() {
        let line = format_detail(&detail(1, "USD", "12.34", Sign::Debit));
        assert!(parse_detail(format!("{line}\r").as_bytes(), 1).is_ok());
        let e = parse_detail(format!("{line}\r\r").as_bytes(), 9).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (9, "record"));
    }

    #[test]
    fn minor_units_become_major_units_at_the_currency_exponent() {
        let base = format_detail(&detail(1, "USD", "0", Sign::Debit));
        for (ccy, field, want, scale) in [
            ("USD", "000000000001234", "12.34", 2),
            ("JPY", "000000000001234", "1234", 0),
            ("BHD", "000000000000171", "0.171", 3),
            ("CLF", "000000000012345", "1.2345", 4),
            ("USD", "000000000000000", "0", 2),
            ("USD", "999999999999999", "9999999999999.99", 2),
        ] {
            let line = put(&put(&base, 78, ccy), 81, field);
            let dt = parse_detail(line.as_bytes(), 2).unwrap();
            assert_eq!(dt.txn.amount, dec(want), "{ccy} {field}");
            assert_eq!(dt.txn.amount.scale(), scale, "{ccy} keeps its exponent");
            assert_eq!(dt.txn.currency.code(), ccy);
            assert_eq!(format_detail(&dt), line, "round trip of {ccy} {field}");
        }
    }

    #[test]
    fn the_fee_is_in_major_units_of_the_transaction_currency() {
        let base = format_detail(&detail(1, "USD", "1", Sign::Debit));
        let line = put(&put(&base, 97, "000000000000171"), 112, "D");
        let dt = parse_detail(line.as_bytes(), 2).unwrap();
        assert_eq!((dt.fee, dt.fee_sign), (dec("1.71"), Sign::Debit));
    }

    #[test]
    fn credits_have_a_negative_signed_amount_and_zero_is_unsigned() {
        let c = parse_detail(
            format_detail(&detail(1, "USD", "12.34", Sign::Credit)).as_bytes(),
            2,
        )
        .unwrap();
        assert_eq!(c.txn.signed_amount(), dec("-12.34"));
        let d = parse_detail(
            format_detail(&detail(1, "USD", "12.34", Sign::Debit)).as_bytes(),
            2,
        )
        .unwrap();
        assert_eq!(d.txn.signed_amount(), dec("12.34"));
        let z = parse_detail(
            format_detail(&detail(1, "USD", "0", Sign::Credit)).as_bytes(),
            2,
        )
        .unwrap();
        assert!(z.txn.amount.is_zero() && z.txn.signed_amount().is_zero());
    }

    #[test]
    fn alphanumeric_fields_lose_their_trailing_spaces_only() {
        let mut dt = detail(1, "USD", "1", Sign::Debit);
        dt.txn.transaction_id = " LEAD".into();
        dt.txn.auth_code = String::new();
        dt.merchant_name = "A  B".into();
        let got = parse_detail(format_detail(&dt).as_bytes(), 2).unwrap();
        assert_eq!(got.txn.transaction_id, " LEAD");
        assert_eq!(got.txn.auth_code, "");
        assert_eq!(got.merchant_name, "A  B");
    }

    // --- Structure -----------------------------------------------------------

    #[test]
    fn an_empty_file_is_missing_its_header_on_line_1() {
        let none: [&str; 0] = [];
        assert_rejected(read(&none), 1, "record type");
    }

    #[test]
    fn a_detail_before_the_header_is_out_of_place() {
        let mut lines = file(2);
        lines.remove(0);
        let e = assert_rejected(read(&lines), 1, "record type");
        assert!(e.expected.contains("`H`"), "{e}");
    }

    #[test]
    fn a_second_header_is_rejected_on_its_line() {
        let mut lines = file(2);
        lines.insert(2, format_header(&header()));
        assert_rejected(read(&lines), 3, "record type");
    }

    #[test]
    fn a_missing_trailer_names_the_last_line() {
        let mut lines = file(4);
        lines.pop();
        let e = assert_rejected(read(&lines), 5, "record type");
        assert!(e.expected.contains("trailer"), "{e}");
        let header_only = [format_header(&header())];
        assert_rejected(read(&header_only), 1, "record type");
    }

    #[test]
    fn a_second_trailer_is_rejected_on_its_line() {
        let mut lines = file(2);
        lines.push(lines[3].clone());
        let e = assert_rejected(read(&lines), 5, "record type");
        assert!(e.expected.contains("line 4"), "{e}");
    }

    #[test]
    fn a_record_after_the_trailer_is_rejected() {
        let mut lines = file(2);
        lines.push(format_detail(&detail(3, "USD", "1", Sign::Debit)));
        assert_rejected(read(&lines), 5, "record type");
    }

    #[test]
    fn an_unknown_record_type_is_rejected() {
        let e = assert_rejected(read_edited(3, |l| put(l, 1, "X")), 3, "record type");
        assert_eq!(e.found, "`X`");
    }

    #[test]
    fn a_blank_line_is_rejected_wherever_it_is() {
        for at in [0, 2, 5] {
            let mut lines = file(3);
            lines.insert(at, String::new());
            assert_rejected(read(&lines), at as u64 + 1, "record");
        }
        let mut lines = file(3);
        lines.insert(2, "\r".into());
        assert_rejected(read(&lines), 3, "record");
    }

    #[test]
    fn a_record_shorter_or_longer_than_200_bytes_is_rejected_without_echoing_it() {
        let with_pan = put(&file(3)[2], 40, &format!("{FULL_PAN}   "));
        for (edited, len) in [
            (with_pan[..199].to_owned(), 199),
            (format!("{with_pan} "), 201),
        ] {
            let mut lines = file(3);
            lines[2] = edited;
            let e = assert_rejected(read(&lines), 3, "record");
            assert_eq!(
                (e.expected.as_str(), e.found.clone()),
                ("200 bytes", format!("{len} bytes"))
            );
            assert!(!format!("{e:?}{e}").contains(FULL_PAN));
        }
    }

    #[test]
    fn a_byte_outside_printable_ascii_is_reported_by_position_not_echoed() {
        for (pos, byte, field) in [
            (60usize, 0x09u8, "transaction date"),
            (200, 0x7F, "filler"),
            (45, 0xC3, "masked PAN"),
        ] {
            let mut lines: Vec<Vec<u8>> = file(3).into_iter().map(String::into_bytes).collect();
            lines[2][39..55].copy_from_slice(FULL_PAN.as_bytes());
            lines[2][pos - 1] = byte;
            let e = assert_rejected(read(&lines), 3, field);
            assert_eq!(e.found, format!("byte 0x{byte:02X} at position {pos}"));
            assert!(!format!("{e:?}").contains(FULL_PAN));
        }
        let e = assert_rejected(read_edited(1, |l| put(l, 20, "\u{1}")), 1, "program ID");
        assert!(e.expected.contains("0x20"), "{e}");
    }

    // --- Fields --------------------------------------------------------------

    #[test]
    fn a_non_digit_in_any_numeric_field_is_rejected() {
        for (line, pos, field) in [
            (1, 2, "creation date"),
            (1, 15, "creation time"),
            (1, 26, "file date"),
            (1, 43, "file sequence"),
            (2, 9, "record sequence"),
            (2, 59, "transaction date"),
            (2, 74, "settlement date"),
            (2, 95, "amount"),
            (2, 81, "amount"),
            (2, 97, "interchange fee"),
            (2, 128, "merchant category code"),
            (5, 2, "detail count"),
            (5, 29, "debit total"),
            (5, 30, "credit total"),
            (5, 65, "fee total"),
        ] {
            for bad in ["A", " ", "-"] {
                let e =
                    assert_rejected(read_edited(line, |l| put(l, pos, bad)), line as u64, field);
                assert!(e.found.contains(bad), "{e}");
            }
        }
    }

    #[test]
    fn a_date_that_does_not_exist_is_rejected_in_every_date_field() {
        for (line, pos, field) in [
            (1, 2, "creation date"),
            (1, 26, "file date"),
            (3, 59, "transaction date"),
            (3, 67, "settlement date"),
        ] {
            for bad in ["20260230", "20261301", "20261100", "20250229"] {
                let e =
                    assert_rejected(read_edited(line, |l| put(l, pos, bad)), line as u64, field);
                assert_eq!(e.expected, "a date YYYYMMDD that exists");
                assert_eq!(e.found, format!("`{bad}`"));
            }
        }
        // A leap day exists.
        let mut dt = detail(1, "USD", "1", Sign::Debit);
        dt.txn.transaction_date = date("2024-02-29");
        assert!(parse_detail(format_detail(&dt).as_bytes(), 2).is_ok());
    }

    #[test]
    fn a_time_that_does_not_exist_is_rejected() {
        for bad in ["240000", "126000", "120060", "999999"] {
            assert_rejected(read_edited(1, |l| put(l, 10, bad)), 1, "creation time");
        }
        assert!(read_edited(1, |l| put(l, 10, "235959")).is_ok());
    }

    #[test]
    fn a_sign_other_than_d_or_c_is_rejected_for_the_amount_and_the_fee() {
        for (pos, field) in [(96, "amount sign"), (112, "fee sign")] {
            for bad in ["X", " ", "d", "+"] {
                let e = assert_rejected(read_edited(4, |l| put(l, pos, bad)), 4, field);
                assert_eq!(e.expected, "D or C");
            }
        }
    }

    #[test]
    fn a_currency_outside_iso_4217_is_rejected() {
        for bad in ["XXX", "usd", "US ", "XAU", "123"] {
            let e = assert_rejected(read_edited(2, |l| put(l, 78, bad)), 2, "currency");
            assert!(e.expected.contains("ISO 4217"), "{e}");
        }
    }

    #[test]
    fn an_unknown_transaction_type_is_rejected() {
        for bad in ["SAX", "sal", "   "] {
            assert_rejected(read_edited(2, |l| put(l, 75, bad)), 2, "transaction type");
        }
        for ok in ["SAL", "REF", "REV", "CBK"] {
            assert!(read_edited(2, |l| put(l, 75, ok)).is_ok(), "{ok}");
        }
    }

    #[test]
    fn an_empty_transaction_id_is_rejected() {
        let e = assert_rejected(
            read_edited(3, |l| put(l, 10, &" ".repeat(24))),
            3,
            "transaction ID",
        );
        assert_eq!(e.found, "spaces only");
    }

    #[test]
    fn an_unmasked_pan_is_rejected_and_never_shown() {
        for pan in [
            FULL_PAN,
            "4111111111111",
            "4111111111111111111",
            "5500 0000 0000 0004",
        ] {
            let padded = format!("{pan:<19}");
            let e = assert_rejected(read_edited(2, |l| put(l, 40, &padded)), 2, "masked PAN");
            let all = format!("{e:?} {e}");
            assert!(!all.contains(pan), "{all}");
            assert!(longest_digit_run(&all) <= 6, "{all}");
            assert!(e.found.contains("(unmasked PAN not shown)"), "{e}");
        }
        let e = parse_detail(
            put(&file(1)[1], 40, &format!("{FULL_PAN}   ")).as_bytes(),
            2,
        )
        .unwrap_err();
        assert_eq!(e.found, "`411111******1111` (unmasked PAN not shown)");
    }

    fn longest_digit_run(s: &str) -> usize {
        s.split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_badly_masked_pan_is_rejected() {
        for bad in [
            "411111XXXXXX1111",    // wrong fill
            "41111*******1111",    // 5 leading digits
            "411111*******111",    // 3 trailing digits
            "411111**1111",        // 12 characters
            "411111***1**1111",    // a digit in the fill
            "                   ", // empty
            " 411111*****1111",    // leading space
        ] {
            let padded = format!("{bad:<19}");
            let e = assert_rejected(read_edited(2, |l| put(l, 40, &padded)), 2, "masked PAN");
            assert!(e.expected.contains("first 6 and last 4 digits"), "{e}");
        }
        assert!(valid_masked_pan("411111***1111"));
        assert!(valid_masked_pan("411111*********1111"));
        assert!(!valid_masked_pan("411111**********1111"));
    }

    // --- Across records ------------------------------------------------------

    #[test]
    fn a_gap_in_the_record_sequence_is_rejected() {
        let e = assert_rejected(
            read_edited(3, |l| put(l, 2, "00000003")),
            3,
            "record sequence",
        );
        assert_eq!(
            (e.expected.as_str(), e.found.as_str()),
            ("2 (one more than the previous detail's)", "3")
        );
        let e = assert_rejected(
            read_edited(2, |l| put(l, 2, "00000000")),
            2,
            "record sequence",
        );
        assert!(e.expected.starts_with("1 "), "{e}");
    }

    #[test]
    fn a_settlement_date_other_than_the_file_date_is_rejected() {
        let e = assert_rejected(
            read_edited(4, |l| put(l, 67, "20261119")),
            4,
            "settlement date",
        );
        assert!(e.expected.contains("20261120"), "{e}");
    }

    #[test]
    fn a_wrong_trailer_count_is_rejected() {
        let e = assert_rejected(
            read_edited(5, |l| put(l, 2, "0000000004")),
            5,
            "detail count",
        );
        assert_eq!(
            (e.expected.as_str(), e.found.as_str()),
            ("3 (the details counted)", "4")
        );
    }

    #[test]
    fn each_wrong_trailer_total_is_rejected() {
        let t = trailer_for(&details(3));
        for (pos, field, counted) in [
            (12, "debit total", t.debit_total_minor),
            (30, "credit total", t.credit_total_minor),
            (48, "fee total", t.fee_total_minor),
        ] {
            let wrong = format!("{:018}", counted + 1_000_000);
            let e = assert_rejected(read_edited(5, |l| put(l, pos, &wrong)), 5, field);
            assert!(e.expected.starts_with(&grouped(counted)), "{e}");
            assert_eq!(e.found, grouped(counted + 1_000_000));
        }
    }

    #[test]
    fn the_header_must_carry_the_object_keys_program_and_date() {
        let e = assert_rejected(read_edited(1, |l| put(l, 16, "ACMF")), 1, "program ID");
        assert_eq!(e.found, "`ACMF`");
        let e = assert_rejected(read_edited(1, |l| put(l, 26, "20261121")), 1, "file date");
        assert!(e.expected.contains("2026-11-20"), "{e}");
        assert_rejected(read_edited(1, |l| put(l, 16, "acme")), 1, "program ID");
        // The standalone parser knows no key.
        assert!(parse_header(put(&file(0)[0], 16, "ACMF").as_bytes(), 1).is_ok());
        assert_eq!(key().side, Side::Settlement);
    }

    #[test]
    fn a_format_version_other_than_001_is_rejected() {
        for bad in ["002", "01 ", "   "] {
            assert_rejected(read_edited(1, |l| put(l, 44, bad)), 1, "format version");
        }
    }

    #[test]
    fn a_duplicate_transaction_id_is_found_by_suspects_and_named_with_both_lines() {
        let mut ds = details(9);
        ds[6].txn.transaction_id = ds[2].txn.transaction_id.clone(); // lines 4 and 8
        let mut lines = vec![format_header(&header())];
        lines.extend(ds.iter().map(format_detail));
        lines.push(format_trailer(&trailer_for(&ds)));
        let s = read(&lines).unwrap();
        assert_eq!(
            s.duplicate_suspects,
            vec![fnv1a_64(ds[2].txn.transaction_id.as_bytes())]
        );
        let mut check = s.duplicate_check();
        assert!(!check.is_empty());
        let mut first_error = None;
        for (i, l) in lines.iter().enumerate().take(s.lines as usize - 1).skip(1) {
            let line_no = i as u64 + 1;
            let id = parse_detail(l.as_bytes(), line_no)
                .unwrap()
                .txn
                .transaction_id;
            if let Err(e) = check.check(line_no, &id) {
                first_error.get_or_insert(e);
            }
        }
        let e = first_error.expect("the duplicate is rejected");
        assert_eq!((e.line, e.field.as_str()), (8, "transaction ID"));
        assert_eq!(
            e.expected,
            "a transaction ID not already used (first used on line 4)"
        );
        assert_eq!(e.found, "`TXN-00000003`");
    }

    #[test]
    fn a_suspect_fingerprint_alone_is_not_a_duplicate() {
        // As if "A" and "B" collided: both are kept, neither is rejected.
        let mut check = DuplicateCheck::new(vec![fnv1a_64(b"B"), fnv1a_64(b"A"), fnv1a_64(b"B")]);
        assert_eq!(check.check(2, "A"), Ok(()));
        assert_eq!(check.check(3, "B"), Ok(()));
        assert_eq!(check.check(4, "C"), Ok(()));
        assert_eq!(check.check(5, "C"), Ok(()), "not a suspect: not even kept");
        assert_eq!(check.check(6, "A").unwrap_err().line, 6);
        assert_eq!(check.seen.len(), 2);
    }

    #[test]
    fn a_fault_in_the_last_line_of_a_long_file_names_that_line() {
        let mut lines = file(20_000);
        let last = lines.len();
        lines[last - 1] = put(&lines[last - 1], 48, "000000000000000000");
        assert_rejected(read(&lines), 20_002, "fee total");
        let mut lines = file(20_000);
        lines[last - 2] = put(&lines[last - 2], 96, "X");
        assert_rejected(read(&lines), 20_001, "amount sign");
    }

    #[test]
    fn after_a_rejection_the_reader_keeps_rejecting() {
        let lines = file(2);
        let mut r = SettlementReader::new(&key());
        r.push(lines[0].as_bytes()).unwrap();
        let e = r.push(b"").unwrap_err();
        assert_eq!(r.push(lines[1].as_bytes()), Err(e.clone()));
        assert_eq!(r.finish(), Err(e));
    }

    #[test]
    fn a_long_digit_run_never_appears_in_a_found() {
        let e = reject(1, "x", "y", format!("`{FULL_PAN}` and `0000000000001`"));
        assert_eq!(
            e.found,
            "`411111******1111` and `000000***0001` (long digit run not shown)"
        );
        assert_eq!(
            reject(1, "x", "y", "`123456789012`").found,
            "`123456789012`"
        );
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(123), "123");
        assert_eq!(grouped(0), "0");
    }
}
