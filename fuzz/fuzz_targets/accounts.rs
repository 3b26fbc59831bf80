//! An account-book import (JSON Lines), validated as `tally accounts import`
//! validates it before writing anything. No input may panic; a refusal names
//! the line it is on; an accepted record has a well-formed ID and a balance
//! with no more decimals than its currency has.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_domain::account::{valid_account_id, ImportValidator};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // the import refuses non-UTF-8 before it parses (cli/src/import.rs)
    };
    let mut v = ImportValidator::new();
    for (i, line) in text.lines().enumerate() {
        match v.push(line) {
            Ok(account) => {
                assert!(valid_account_id(&account.account_id));
                assert!(account.balance.scale() <= account.currency.exponent());
            }
            Err(e) => {
                assert_eq!(e.line, i + 1, "{e}");
                return;
            }
        }
    }
});
