//! The internal records CSV (the issuer's own record of each authorization),
//! parsed and validated one row at a time.
//!
//! # Format
//!
//! ```text
//! transaction_id,auth_code,masked_pan,transaction_date,transaction_type,currency,amount,sign
//! TXN-00000001,A1B2C3,411111******1111,2026-11-19,SAL,USD,12.34,D
//! ```
//!
//! The spec fixes the header line and the amount; the rest is decided here,
//! to be as strict as the settlement file so that both sides mean the same:
//!
//! - No quoting. No field may contain `,` or `"`; a row with other than 8
//!   fields is rejected. None of the fields can legitimately hold a comma,
//!   and refusing quotes keeps a row one `split(',')` away from its fields.
//! - Every byte is printable ASCII (0x20–0x7E), like the settlement file; a
//!   byte-order mark or a tab is rejected, reported by position.
//! - `transaction_date` is `YYYY-MM-DD` (ISO 8601): the internal system
//!   exports ISO dates, and a hyphenated date cannot be mistaken for the
//!   settlement file's `YYYYMMDD` or for an amount.
//! - `amount` is a non-negative decimal in major units: digits, optionally
//!   `.` and digits, at most the currency's exponent of decimals (`12.34`,
//!   `1234` for JPY; `12.345` USD is rejected); no sign, no `+`, no exponent
//!   notation, no leading or trailing `.`. In minor units it must fit the
//!   settlement file's 15-digit amount field. It is normalised to the
//!   currency's exponent (`12.3` USD becomes `12.30`).
//! - `sign` `D`/`C`; `transaction_type` `SAL`/`REF`/`REV`/`CBK`; `currency`
//!   an ISO 4217 code; `masked_pan` as in the settlement file.
//! - `transaction_id` is 1–24 characters and `auth_code` 0–6 (the widths of
//!   the settlement fields), neither ending in a space: the settlement file
//!   cannot carry a trailing space, so such an ID could never match.
//! - Lines end `\n` or `\r\n`; the last may lack its end; blank lines are
//!   rejected; a line may be at most [`LINE_BYTES_MAX`] bytes.
//!
//! Line numbers count the header as line 1. Duplicate transaction IDs are
//! found as in the settlement file: a fixed-size filter of the IDs seen, suspects
//! at [`InternalReader::finish`], and a second pass through a
//! [`DuplicateCheck`] when there are any.

use super::seen::SeenIds;
use super::settlement::{
    first_unprintable, major_units, pan_for_report, reject, shown, strip_cr, valid_masked_pan,
    CurrencyCache, DuplicateCheck, CURRENCY_EXPECTED, PAN_EXPECTED, TYPE_EXPECTED,
};
use super::{ObjectKey, Rejection, Sign, Txn, TxnType};
use crate::money::format_amount;
use chrono::NaiveDate;

/// The header line, exactly.
pub const HEADER: &str =
    "transaction_id,auth_code,masked_pan,transaction_date,transaction_type,currency,amount,sign";

/// The columns, in order.
pub const COLUMNS: [&str; 8] = [
    "transaction_id",
    "auth_code",
    "masked_pan",
    "transaction_date",
    "transaction_type",
    "currency",
    "amount",
    "sign",
];

/// A longer line is rejected before it is split (a valid row is under 120).
pub const LINE_BYTES_MAX: usize = 512;
/// Rows per file, as many as the settlement file can hold details.
pub const ROWS_MAX: u64 = 99_999_999;
pub const TRANSACTION_ID_LEN_MAX: usize = 24;
pub const AUTH_CODE_LEN_MAX: usize = 6;
/// Largest amount in minor units: the settlement amount field's 15 digits.
pub const AMOUNT_MINOR_MAX: u64 = 999_999_999_999_999;

/// What a valid file held. If `duplicate_suspects` is not empty the file is
/// not yet accepted: read it again through [`InternalSummary::duplicate_check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalSummary {
    pub rows: u64,
    /// Lines including the header.
    pub lines: u64,
    /// Sorted fingerprints (`fnv1a_64`) of the IDs that may repeat.
    pub duplicate_suspects: Vec<u64>,
}

impl InternalSummary {
    /// The second pass: feed it the `transaction_id` of every row (lines 2
    /// to `lines`).
    pub fn duplicate_check(&self) -> DuplicateCheck {
        DuplicateCheck::new(self.duplicate_suspects.clone()).with_field(COLUMNS[0])
    }
}

/// A value and its length, cut short if long (a found value is for reading).
fn shown_with_len(v: &str) -> String {
    const SHOWN_MAX: usize = 40;
    if v.len() <= SHOWN_MAX {
        format!("`{v}` ({} characters)", v.len())
    } else {
        format!("`{}…` ({} characters)", &v[..SHOWN_MAX], v.len())
    }
}

/// What a line is when it cannot be shown.
fn unreadable(line: &[u8], line_no: u64, expected: &str) -> Option<Rejection> {
    if line.is_empty() {
        return Some(reject(line_no, "row", expected, "a blank line"));
    }
    if line.len() > LINE_BYTES_MAX {
        return Some(reject(
            line_no,
            "row",
            format!("a line of at most {LINE_BYTES_MAX} bytes"),
            format!("{} bytes", line.len()),
        ));
    }
    let at = first_unprintable(line)?;
    let column = line[..at].iter().filter(|b| **b == b',').count();
    Some(reject(
        line_no,
        COLUMNS.get(column).copied().unwrap_or("row"),
        "printable ASCII (bytes 0x20 to 0x7E)",
        format!("byte 0x{:02X} at position {}", line[at], at + 1),
    ))
}

/// One data row on its own. `line` excludes the `\n`; one trailing `\r` is
/// stripped.
pub fn parse_row(line: &[u8], line_no: u64) -> Result<Txn, Rejection> {
    parse_row_with(line, line_no, &mut CurrencyCache::default())
}

fn parse_row_with(
    line: &[u8],
    line_no: u64,
    currencies: &mut CurrencyCache,
) -> Result<Txn, Rejection> {
    let line = strip_cr(line);
    if let Some(r) = unreadable(
        line,
        line_no,
        "a row of 8 comma-separated fields (blank lines are not allowed)",
    ) {
        return Err(r);
    }
    let row = std::str::from_utf8(line).expect("printable ASCII is UTF-8");
    if row == HEADER {
        return Err(reject(
            line_no,
            "header",
            "the header on line 1 only",
            "the header again",
        ));
    }
    let mut cols = [""; 8];
    let mut n = 0;
    for part in row.split(',') {
        if let Some(c) = cols.get_mut(n) {
            *c = part;
        }
        n += 1;
    }
    if n != cols.len() {
        return Err(reject(
            line_no,
            "row",
            "8 comma-separated fields (transaction_id,…,sign; no quoting)",
            format!("{n} fields"),
        ));
    }
    if let Some(i) = cols.iter().position(|c| c.contains('"')) {
        return Err(reject(
            line_no,
            COLUMNS[i],
            "no `\"` (fields are not quoted)",
            if i == 2 {
                pan_for_report(cols[i])
            } else {
                shown(cols[i])
            },
        ));
    }
    let [id, auth, pan, txn_date, txn_type, ccy, amount, sign] = cols;

    if id.is_empty() || id.len() > TRANSACTION_ID_LEN_MAX || id.ends_with(' ') {
        return Err(reject(
            line_no,
            COLUMNS[0],
            "1 to 24 printable characters, not ending in a space",
            shown_with_len(id),
        ));
    }
    if auth.len() > AUTH_CODE_LEN_MAX || auth.ends_with(' ') {
        return Err(reject(
            line_no,
            COLUMNS[1],
            "0 to 6 printable characters, not ending in a space",
            shown_with_len(auth),
        ));
    }
    if !valid_masked_pan(pan) {
        return Err(reject(
            line_no,
            COLUMNS[2],
            PAN_EXPECTED,
            pan_for_report(pan),
        ));
    }
    let transaction_date = iso_date(txn_date).ok_or_else(|| {
        reject(
            line_no,
            COLUMNS[3],
            "a date YYYY-MM-DD that exists",
            shown(txn_date),
        )
    })?;
    let transaction_type = TxnType::parse(txn_type)
        .ok_or_else(|| reject(line_no, COLUMNS[4], TYPE_EXPECTED, shown(txn_type)))?;
    let currency = currencies
        .get(ccy)
        .ok_or_else(|| reject(line_no, COLUMNS[5], CURRENCY_EXPECTED, shown(ccy)))?;
    let exponent = currency.exponent();
    let minor = amount_minor(amount, exponent).map_err(|why| {
        let expected = match why {
            AmountFault::Malformed => "a non-negative decimal in major units: digits, optionally `.` and digits (e.g. 12.34; no sign, no exponent)".to_owned(),
            AmountFault::Scale => format!("at most {exponent} decimal places for {currency}"),
            AmountFault::TooLarge => format!("at most {AMOUNT_MINOR_MAX} minor units (the settlement amount field's 15 digits)"),
        };
        reject(line_no, COLUMNS[6], expected, shown(amount))
    })?;
    let sign =
        Sign::parse(sign).ok_or_else(|| reject(line_no, COLUMNS[7], "D or C", shown(sign)))?;
    Ok(Txn {
        transaction_id: id.to_owned(),
        auth_code: auth.to_owned(),
        masked_pan: pan.to_owned(),
        transaction_date,
        transaction_type,
        currency,
        amount: major_units(minor, exponent),
        sign,
    })
}

/// `YYYY-MM-DD`, a date that exists.
fn iso_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        b[r].iter().try_fold(0u32, |v, c| {
            c.is_ascii_digit().then(|| v * 10 + u32::from(c - b'0'))
        })
    };
    NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AmountFault {
    Malformed,
    Scale,
    TooLarge,
}

/// A major-unit decimal string as minor units at `exponent`, exactly.
fn amount_minor(s: &str, exponent: u32) -> Result<u64, AmountFault> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err(AmountFault::Malformed);
    }
    let frac = frac.unwrap_or("");
    if frac.len() > exponent as usize {
        return Err(AmountFault::Scale);
    }
    let pad = exponent as usize - frac.len();
    let mut v: u64 = 0;
    for b in int
        .bytes()
        .chain(frac.bytes())
        .chain(std::iter::repeat_n(b'0', pad))
    {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .filter(|v| *v <= AMOUNT_MINOR_MAX)
            .ok_or(AmountFault::TooLarge)?;
    }
    Ok(v)
}

/// Validates an internal records CSV streamed one line at a time. Holds 8
/// bytes per row (see the module doc). After a rejection every further
/// `push` and `finish` return that same rejection.
#[derive(Debug)]
pub struct InternalReader {
    line_no: u64,
    rows: u64,
    seen: SeenIds,
    currencies: CurrencyCache,
    rejected: Option<Rejection>,
}

impl InternalReader {
    /// A reader for the object at `key`. The rows carry no program or file
    /// date to compare with the key, so it is taken for symmetry with the
    /// settlement reader only.
    pub fn new(_key: &ObjectKey) -> InternalReader {
        InternalReader {
            line_no: 0,
            rows: 0,
            seen: SeenIds::new(),
            currencies: CurrencyCache::default(),
            rejected: None,
        }
    }

    /// The next line, without its `\n` (a trailing `\r` is stripped): `None`
    /// for the header line, the row's transaction otherwise.
    pub fn push(&mut self, line: &[u8]) -> Result<Option<Txn>, Rejection> {
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

    fn step(&mut self, line: &[u8]) -> Result<Option<Txn>, Rejection> {
        let n = self.line_no;
        if n == 1 {
            let line = strip_cr(line);
            let expected = format!("the header line `{HEADER}`");
            if let Some(mut r) = unreadable(line, n, &expected) {
                r.field = "header".to_owned();
                return Err(r);
            }
            if line != HEADER.as_bytes() {
                let found = String::from_utf8_lossy(line);
                return Err(reject(n, "header", expected, shown_with_len(&found)));
            }
            return Ok(None);
        }
        if self.rows == ROWS_MAX {
            return Err(reject(
                n,
                "row",
                format!("at most {ROWS_MAX} rows"),
                "another row",
            ));
        }
        let txn = parse_row_with(line, n, &mut self.currencies)?;
        self.rows += 1;
        self.seen.insert(&txn.transaction_id);
        Ok(Some(txn))
    }

    /// The end of the file: the header must have been read.
    pub fn finish(self) -> Result<InternalSummary, Rejection> {
        if let Some(r) = self.rejected {
            return Err(r);
        }
        if self.line_no == 0 {
            return Err(reject(
                1,
                "header",
                format!("the header line `{HEADER}`"),
                "an empty file",
            ));
        }
        Ok(InternalSummary {
            rows: self.rows,
            lines: self.line_no,
            duplicate_suspects: self.seen.into_suspects(),
        })
    }
}

/// One row (no line end), the amount at the currency's exponent.
pub fn format_row(t: &Txn) -> String {
    format!(
        "{},{},{},{},{},{},{},{}",
        t.transaction_id,
        t.auth_code,
        t.masked_pan,
        t.transaction_date.format("%Y-%m-%d"),
        t.transaction_type.as_str(),
        t.currency,
        format_amount(t.amount, t.currency),
        t.sign.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::currency::Currency;
    use crate::recon::settlement::lines;
    use crate::test_support::{date, dec};

    const FULL_PAN: &str = "4111111111111111";
    const ROW: &str = "TXN-00000001,A1B2C3,411111******1111,2026-11-19,SAL,USD,12.34,D";

    fn key() -> ObjectKey {
        ObjectKey::parse("internal/ACME/2026-11-20/auths.csv").unwrap()
    }

    fn txn(i: u64) -> Txn {
        let ccy = ["USD", "JPY", "BHD", "CLF"][(i % 4) as usize];
        let currency = Currency::parse(ccy).unwrap();
        Txn {
            transaction_id: format!("TXN-{i:08}"),
            auth_code: if i.is_multiple_of(5) {
                String::new()
            } else {
                format!("{:06}", i % 1_000_000)
            },
            masked_pan: "550000*******0004".into(),
            transaction_date: date("2026-11-19"),
            transaction_type: TxnType::Sale,
            currency,
            amount: major_units(i * 7919 % 100_000, currency.exponent()),
            sign: if i.is_multiple_of(3) {
                Sign::Credit
            } else {
                Sign::Debit
            },
        }
    }

    fn file(n: u64) -> Vec<String> {
        let mut lines = vec![HEADER.to_owned()];
        lines.extend((1..=n).map(|i| format_row(&txn(i))));
        lines
    }

    fn read<S: AsRef<[u8]>>(lines: &[S]) -> Result<InternalSummary, Rejection> {
        let mut r = InternalReader::new(&key());
        for l in lines {
            r.push(l.as_ref())?;
        }
        r.finish()
    }

    /// Reads a file of the header and `row` on line 2.
    fn read_row(row: &str) -> Result<InternalSummary, Rejection> {
        read(&[HEADER, row])
    }

    #[track_caller]
    fn assert_rejected<T: std::fmt::Debug>(
        r: Result<T, Rejection>,
        line: u64,
        field: &str,
    ) -> Rejection {
        let e = r.expect_err("should be rejected");
        assert_eq!((e.line, e.field.as_str()), (line, field), "{e}");
        assert!(!e.expected.is_empty() && !e.found.is_empty(), "{e:?}");
        e
    }

    /// ROW with column `i` replaced.
    fn with(i: usize, value: &str) -> String {
        let mut cols: Vec<&str> = ROW.split(',').collect();
        cols[i] = value;
        cols.join(",")
    }

    #[test]
    fn a_valid_file_round_trips_through_format_row_and_the_reader() {
        let lines = file(40);
        let mut r = InternalReader::new(&key());
        assert_eq!(r.push(lines[0].as_bytes()), Ok(None));
        for (i, l) in lines.iter().enumerate().skip(1) {
            assert_eq!(r.push(l.as_bytes()), Ok(Some(txn(i as u64))), "{l}");
        }
        let s = r.finish().unwrap();
        assert_eq!(
            s,
            InternalSummary {
                rows: 40,
                lines: 41,
                duplicate_suspects: vec![]
            }
        );
        assert!(s.duplicate_check().is_empty());
    }

    #[test]
    fn a_row_parses_into_a_normalised_transaction() {
        let t = parse_row(ROW.as_bytes(), 2).unwrap();
        assert_eq!(t.transaction_id, "TXN-00000001");
        assert_eq!(t.auth_code, "A1B2C3");
        assert_eq!(t.masked_pan, "411111******1111");
        assert_eq!(t.transaction_date, date("2026-11-19"));
        assert_eq!(t.transaction_type, TxnType::Sale);
        assert_eq!(t.currency.code(), "USD");
        assert_eq!((t.amount, t.sign), (dec("12.34"), Sign::Debit));
        assert_eq!(format_row(&t), ROW);
    }

    #[test]
    fn amounts_are_normalised_to_the_currency_exponent() {
        for (ccy, amount, want, scale) in [
            ("USD", "12.34", "12.34", 2),
            ("USD", "12.3", "12.30", 2),
            ("USD", "12", "12.00", 2),
            ("JPY", "1234", "1234", 0),
            ("BHD", "0.171", "0.171", 3),
            ("CLF", "1.2345", "1.2345", 4),
            ("USD", "0", "0.00", 2),
            ("USD", "0.00", "0.00", 2),
            ("USD", "007.50", "7.50", 2),
            ("USD", "9999999999999.99", "9999999999999.99", 2),
        ] {
            let row = with(5, ccy).replace("12.34", amount);
            let t = parse_row(row.as_bytes(), 2).unwrap();
            assert_eq!(t.amount, dec(want), "{ccy} {amount}");
            assert_eq!(t.amount.scale(), scale, "{ccy} {amount}");
            assert_eq!(t.amount.to_string(), want);
        }
    }

    #[test]
    fn credits_have_a_negative_signed_amount() {
        let t = parse_row(with(7, "C").as_bytes(), 2).unwrap();
        assert_eq!(t.signed_amount(), dec("-12.34"));
        let z = parse_row(with(6, "0").replace(",D", ",C").as_bytes(), 2).unwrap();
        assert!(z.signed_amount().is_zero());
    }

    #[test]
    fn a_header_only_file_is_valid_and_empty() {
        let s = read(&[HEADER]).unwrap();
        assert_eq!((s.rows, s.lines), (0, 1));
    }

    #[test]
    fn crlf_line_ends_and_a_missing_final_line_end_are_accepted() {
        let rows = file(3);
        for (end, last) in [("\r\n", "\r\n"), ("\r\n", ""), ("\n", ""), ("\n", "\n")] {
            let mut data = rows.join(end);
            data.push_str(last);
            let split: Vec<&[u8]> = lines(data.as_bytes()).collect();
            let s = read(&split).unwrap();
            assert_eq!((s.rows, s.lines), (3, 4), "{end:?} {last:?}");
        }
    }

    #[test]
    fn an_empty_file_is_missing_its_header() {
        let none: [&str; 0] = [];
        assert_rejected(read(&none), 1, "header");
    }

    #[test]
    fn a_file_without_its_header_is_rejected_on_line_1() {
        let e = assert_rejected(read(&[ROW]), 1, "header");
        assert!(e.expected.contains(HEADER));
        for bad in [
            HEADER.replace("sign", "Sign"),
            format!("{HEADER},extra"),
            format!("\u{feff}{HEADER}"),
            String::new(),
        ] {
            assert_rejected(read(&[bad.as_str(), ROW]), 1, "header");
        }
        let e = assert_rejected(read(&[format!("{FULL_PAN},x")]), 1, "header");
        assert!(!format!("{e:?}").contains(FULL_PAN), "{e:?}");
    }

    #[test]
    fn a_second_header_line_is_rejected() {
        assert_rejected(read(&[HEADER, ROW, HEADER]), 3, "header");
    }

    #[test]
    fn a_blank_line_is_rejected() {
        assert_rejected(read(&[HEADER, ROW, "", ROW]), 3, "row");
        assert_rejected(read(&[HEADER, "\r"]), 2, "row");
    }

    #[test]
    fn a_row_with_the_wrong_number_of_fields_is_rejected() {
        for (row, found) in [
            (ROW.replacen(",A1B2C3", "", 1), "7 fields"),
            (format!("{ROW},x"), "9 fields"),
            (ROW.replace(",", ";"), "1 fields"),
            // A comma inside a quoted field is not quoting: 9 fields.
            (with(0, "\"TXN,1\""), "9 fields"),
        ] {
            let e = assert_rejected(read_row(&row), 2, "row");
            assert_eq!(e.found, found);
        }
    }

    #[test]
    fn a_quote_in_a_field_is_rejected() {
        assert_rejected(read_row(&with(0, "\"TXN1\"")), 2, "transaction_id");
        assert_rejected(read_row(&with(1, "A\"1")), 2, "auth_code");
    }

    #[test]
    fn a_byte_outside_printable_ascii_is_reported_by_column_and_position() {
        let e = assert_rejected(read_row(&with(1, "A\tB")), 2, "auth_code");
        assert_eq!(e.found, "byte 0x09 at position 15");
        assert_rejected(read_row(&with(0, "TXN-é")), 2, "transaction_id");
    }

    #[test]
    fn an_overlong_line_is_rejected_before_it_is_split() {
        let e = assert_rejected(
            read_row(&format!("{ROW}{}", " ".repeat(LINE_BYTES_MAX))),
            2,
            "row",
        );
        assert!(e.found.ends_with("bytes"), "{e}");
    }

    #[test]
    fn a_bad_transaction_id_is_rejected() {
        for bad in ["", "TXN-0000000000000000000001", "TXN-1 "] {
            assert_rejected(read_row(&with(0, bad)), 2, "transaction_id");
        }
        assert!(read_row(&with(0, &"X".repeat(24))).is_ok());
        let e = assert_rejected(
            read_row(&with(0, "1234567890123456789012345")),
            2,
            "transaction_id",
        );
        assert!(!e.found.contains("1234567890123"), "{e}");
    }

    #[test]
    fn a_bad_auth_code_is_rejected() {
        for bad in ["A1B2C3D", "A1 "] {
            assert_rejected(read_row(&with(1, bad)), 2, "auth_code");
        }
        assert_eq!(parse_row(with(1, "").as_bytes(), 2).unwrap().auth_code, "");
    }

    #[test]
    fn an_unmasked_pan_is_rejected_and_never_shown() {
        let e = assert_rejected(read_row(&with(2, FULL_PAN)), 2, "masked_pan");
        assert!(!format!("{e:?} {e}").contains(FULL_PAN), "{e:?}");
        assert_eq!(e.found, "`411111******1111` (unmasked PAN not shown)");
        let long = "41111111111111111111111111";
        let e = assert_rejected(read_row(&with(2, long)), 2, "masked_pan");
        assert!(!format!("{e:?}").contains("1111111"), "{e:?}");
    }

    #[test]
    fn a_badly_masked_pan_is_rejected() {
        for bad in [
            "411111XXXXXX1111",
            "411111**1111",
            "",
            "411111******111",
            " 411111*****1111",
        ] {
            let e = assert_rejected(read_row(&with(2, bad)), 2, "masked_pan");
            assert!(e.expected.contains("first 6 and last 4 digits"), "{e}");
        }
    }

    #[test]
    fn a_transaction_date_must_be_an_iso_date_that_exists() {
        for bad in [
            "20261119",
            "2026-02-30",
            "2026/11/19",
            "2026-1-19",
            "19-11-2026",
            "",
            "2026-11-1x",
        ] {
            let e = assert_rejected(read_row(&with(3, bad)), 2, "transaction_date");
            assert_eq!(e.expected, "a date YYYY-MM-DD that exists");
        }
        assert!(read_row(&with(3, "2024-02-29")).is_ok());
    }

    #[test]
    fn a_bad_transaction_type_is_rejected() {
        for bad in ["SALE", "sal", ""] {
            assert_rejected(read_row(&with(4, bad)), 2, "transaction_type");
        }
    }

    #[test]
    fn a_bad_currency_is_rejected() {
        for bad in ["usd", "XXX", "US", "XAU", ""] {
            assert_rejected(read_row(&with(5, bad)), 2, "currency");
        }
    }

    #[test]
    fn a_malformed_amount_is_rejected() {
        for bad in [
            "-12.34", "+12.34", "1e3", "12.", ".5", " 12.34", "12.34 ", "", "1.2.3", "0x10", "NaN",
        ] {
            let e = assert_rejected(read_row(&with(6, bad)), 2, "amount");
            assert!(
                e.expected.starts_with("a non-negative decimal"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn an_amount_with_more_decimals_than_the_currency_is_rejected() {
        let e = assert_rejected(read_row(&with(6, "12.345")), 2, "amount");
        assert_eq!(e.expected, "at most 2 decimal places for USD");
        let jpy = with(5, "JPY");
        assert_rejected(read_row(&jpy.replace("12.34", "1234.0")), 2, "amount");
        assert!(read_row(&jpy.replace("12.34", "1234")).is_ok());
    }

    #[test]
    fn an_amount_beyond_the_settlement_field_is_rejected() {
        assert!(read_row(&with(6, "9999999999999.99")).is_ok());
        for bad in ["10000000000000", "99999999999999999999999999999999"] {
            let e = assert_rejected(read_row(&with(6, bad)), 2, "amount");
            assert!(e.expected.contains("minor units"), "{e}");
        }
    }

    #[test]
    fn a_bad_sign_is_rejected() {
        for bad in ["X", "d", "", "DC"] {
            let e = assert_rejected(read_row(&with(7, bad)), 2, "sign");
            assert_eq!(e.expected, "D or C");
        }
    }

    #[test]
    fn a_duplicate_transaction_id_is_found_by_suspects_and_named_with_both_lines() {
        let mut lines = file(10);
        lines[9] = lines[9].replace("TXN-00000009", "TXN-00000004"); // lines 10 and 5
        let s = read(&lines).unwrap();
        assert_eq!(s.duplicate_suspects.len(), 1);
        let mut check = s.duplicate_check();
        let mut errors = Vec::new();
        for (i, l) in lines.iter().enumerate().skip(1) {
            let line_no = i as u64 + 1;
            let t = parse_row(l.as_bytes(), line_no).unwrap();
            errors.extend(check.check(line_no, &t.transaction_id).err());
        }
        let [e] = &errors[..] else {
            panic!("{errors:?}")
        };
        assert_eq!((e.line, e.field.as_str()), (10, "transaction_id"));
        assert_eq!(
            e.expected,
            "a transaction ID not already used (first used on line 5)"
        );
    }

    #[test]
    fn a_fault_in_the_last_line_of_a_long_file_names_that_line() {
        let mut lines = file(20_000);
        let last = lines.last_mut().unwrap();
        last.pop();
        last.push('X');
        assert_rejected(read(&lines), 20_001, "sign");
    }

    #[test]
    fn after_a_rejection_the_reader_keeps_rejecting() {
        let mut r = InternalReader::new(&key());
        let e = r.push(b"nope").unwrap_err();
        assert_eq!(r.push(HEADER.as_bytes()), Err(e.clone()));
        assert_eq!(r.finish(), Err(e));
    }
}
