//! A settlement file, read as the ingest reads it: every line through the
//! streaming reader, then the duplicate pass when the summary asks for one.
//! No input may panic; an accepted file must agree with itself, and a
//! rejection must name a line of the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_domain::recon::settlement::{lines, parse_detail, Record, SettlementReader};
use tally_domain::recon::ObjectKey;

fuzz_target!(|data: &[u8]| {
    // The key of the seed corpus (tests/corpus/base-settlement.dat), so that
    // mutations of a valid file get past the header.
    let key = ObjectKey::parse("settlement/CORPUS/2026-11-20/fuzz.dat").unwrap();
    let mut reader = SettlementReader::new(&key);
    let line_count = lines(data).count() as u64;
    let mut details = 0u64;
    for line in lines(data) {
        match reader.push(line) {
            Ok(record) => details += u64::from(matches!(record, Record::Detail(_))),
            Err(r) => {
                assert!(
                    r.line >= 1 && r.line <= line_count.max(1),
                    "{r:?} of {line_count} lines"
                );
                return;
            }
        }
    }
    let summary = match reader.finish() {
        Ok(s) => s,
        Err(r) => {
            assert!(r.line <= line_count.max(1), "{r:?} of {line_count} lines");
            return;
        }
    };
    assert_eq!(summary.details, details);
    assert_eq!(summary.lines, line_count);
    assert_eq!(summary.trailer.detail_count, details);
    let mut check = summary.duplicate_check();
    if !check.is_empty() {
        for (i, line) in lines(data).enumerate().skip(1).take(details as usize) {
            let id = parse_detail(line, i as u64 + 1)
                .expect("an accepted detail parses again")
                .txn
                .transaction_id;
            let _ = check.check(i as u64 + 1, &id);
        }
    }
});
