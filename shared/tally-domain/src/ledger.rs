//! Ledger entries: one balanced double entry per `(accrual_date, account_id)`.

use crate::account::Product;
use crate::accrual::entry_accounts;
use crate::currency::Currency;
use crate::money::format_amount;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One posting. Its idempotency key is `(accrual_date, account_id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub account_id: String,
    pub accrual_date: NaiveDate,
    pub currency: Currency,
    pub amount: Decimal,
    pub debit: String,
    pub credit: String,
    pub run_id: String,
}

impl LedgerEntry {
    pub fn new(
        account_id: &str,
        product: Product,
        accrual_date: NaiveDate,
        currency: Currency,
        amount: Decimal,
        run_id: &str,
    ) -> Self {
        let (debit, credit) = entry_accounts(product, account_id);
        LedgerEntry {
            account_id: account_id.into(),
            accrual_date,
            currency,
            amount,
            debit,
            credit,
            run_id: run_id.into(),
        }
    }

    pub fn export_line(&self) -> ExportLine {
        ExportLine {
            account_id: self.account_id.clone(),
            accrual_date: self.accrual_date,
            currency: self.currency,
            amount: format_amount(self.amount, self.currency),
            debit: self.debit.clone(),
            credit: self.credit.clone(),
            run_id: self.run_id.clone(),
        }
    }
}

/// The JSON Lines export format of `accrual.md`, field order as specified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportLine {
    pub account_id: String,
    pub accrual_date: NaiveDate,
    pub currency: Currency,
    pub amount: String,
    pub debit: String,
    pub credit: String,
    pub run_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{date, dec};

    #[test]
    fn export_lines_follow_the_spec_field_order_and_precision() {
        let e = LedgerEntry::new(
            "SAV-000001",
            Product::Savings,
            date("2026-11-20"),
            Currency::parse("USD").unwrap(),
            dec("0.29"),
            "r1",
        );
        assert_eq!(
            serde_json::to_string(&e.export_line()).unwrap(),
            r#"{"account_id":"SAV-000001","accrual_date":"2026-11-20","currency":"USD","amount":"0.29","debit":"interest_expense","credit":"interest_payable:SAV-000001","run_id":"r1"}"#
        );
        let j = LedgerEntry::new(
            "L-1",
            Product::Loan,
            date("2026-11-20"),
            Currency::parse("JPY").unwrap(),
            dec("3"),
            "r1",
        );
        assert_eq!(j.export_line().amount, "3");
        assert_eq!(
            (j.debit.as_str(), j.credit.as_str()),
            ("interest_receivable:L-1", "interest_income")
        );
    }
}
