//! An internal-records CSV, read as the ingest reads it. No input may panic;
//! a rejection names a line of the file; an accepted file counts its rows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_domain::recon::internal::{parse_row, InternalReader};
use tally_domain::recon::settlement::lines;
use tally_domain::recon::ObjectKey;

fuzz_target!(|data: &[u8]| {
    let key = ObjectKey::parse("internal/CORPUS/2026-11-20/fuzz.csv").unwrap();
    let mut reader = InternalReader::new(&key);
    let line_count = lines(data).count() as u64;
    let mut rows = 0u64;
    for line in lines(data) {
        match reader.push(line) {
            Ok(row) => rows += u64::from(row.is_some()),
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
    assert_eq!(summary.rows, rows);
    let mut check = summary.duplicate_check();
    if !check.is_empty() {
        for (i, line) in lines(data).enumerate().skip(1) {
            let id = parse_row(line, i as u64 + 1)
                .expect("an accepted row parses again")
                .transaction_id;
            let _ = check.check(i as u64 + 1, &id);
        }
    }
});
