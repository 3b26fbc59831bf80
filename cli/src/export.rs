//! The ledger as JSON Lines (`accrual.md`), streamed page by page.

use anyhow::Result;
use std::io::Write;
use tally_aws::dynamo::DynamoBook;
use tally_domain::NaiveDate;

/// Writes every ledger entry (of `date`, if given) to `out`, one JSON object
/// a line, in storage order. Returns the number written.
pub async fn export(
    book: &DynamoBook,
    date: Option<NaiveDate>,
    out: &mut impl Write,
) -> Result<u64> {
    let mut start = None;
    let mut n = 0;
    loop {
        let (entries, next) = book.ledger_page(date, start).await?;
        for e in entries {
            serde_json::to_writer(&mut *out, &e.export_line())?;
            out.write_all(b"\n")?;
            n += 1;
        }
        match next {
            Some(k) => start = Some(k),
            None => return Ok(n),
        }
    }
}
