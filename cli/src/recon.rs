//! Reconciliation from the operator's side: upload a settlement file or
//! internal records under the right key, follow a program and date, read
//! its report, and generate sample files with injected breaks.

use crate::stack::ReconStack;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};
use tally_aws::ports::ReconState;
use tally_aws::recon::DynamoReconState;
use tally_domain::recon::sample::{self, SampleSpec};
use tally_domain::recon::{ObjectKey, Side};
use tally_domain::NaiveDate;

pub struct Recon {
    pub stack: ReconStack,
    pub s3: aws_sdk_s3::Client,
    pub state: DynamoReconState,
}

impl Recon {
    pub async fn connect(stack: ReconStack) -> Recon {
        let sdk = tally_aws::config::aws().await;
        let s3 = tally_aws::config::s3_client(&sdk);
        let state = DynamoReconState::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            s3.clone(),
            stack.state_table.clone(),
            stack.landing_bucket.clone(),
        );
        Recon { stack, s3, state }
    }

    /// Uploads `file` as `<side>/<program>/<date>/<name>` (name: the file's
    /// own name, with the side's extension). Returns the key.
    pub async fn upload(
        &self,
        side: Side,
        program: &str,
        date: NaiveDate,
        file: &Path,
    ) -> Result<String> {
        let (prefix, ext) = match side {
            Side::Settlement => ("settlement", "dat"),
            Side::Internal => ("internal", "csv"),
        };
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .context("the file needs a name")?;
        let key = format!("{prefix}/{program}/{date}/{stem}.{ext}");
        ObjectKey::parse(&key).map_err(anyhow::Error::msg)?;
        let body = aws_sdk_s3::primitives::ByteStream::from_path(file)
            .await
            .with_context(|| format!("reading {}", file.display()))?;
        self.s3
            .put_object()
            .bucket(&self.stack.landing_bucket)
            .key(&key)
            .body(body)
            .send()
            .await
            .with_context(|| format!("uploading s3://{}/{key}", self.stack.landing_bucket))?;
        Ok(key)
    }

    pub async fn status(
        &self,
        program: &str,
        date: NaiveDate,
    ) -> Result<Option<serde_json::Value>> {
        Ok(self.state.status(program, date).await?)
    }

    /// The stored report JSON, if the program and date has been reconciled.
    pub async fn report(&self, program: &str, date: NaiveDate) -> Result<Option<String>> {
        self.object_text(&format!("reports/{program}/{date}/report.json"))
            .await
    }

    /// A text object of the landing bucket (a report), if it exists.
    pub async fn object_text(&self, key: &str) -> Result<Option<String>> {
        match self
            .s3
            .get_object()
            .bucket(&self.stack.landing_bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => {
                let bytes = o.body.collect().await?.into_bytes();
                Ok(Some(String::from_utf8(bytes.to_vec())?))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {key}")),
        }
    }

    /// Follows the status until RECONCILED (returns the report), REJECTED or
    /// FAILED (an error with the reason), or `timeout`.
    pub async fn wait_report(
        &self,
        program: &str,
        date: NaiveDate,
        timeout: Duration,
        mut progress: impl FnMut(&str),
    ) -> Result<String> {
        let started = Instant::now();
        loop {
            let st = self.status(program, date).await?;
            let status = st
                .as_ref()
                .and_then(|s| s["status"].as_str())
                .unwrap_or("NOT_STARTED")
                .to_owned();
            progress(&status);
            match status.as_str() {
                "RECONCILED" => {
                    if let Some(r) = self.report(program, date).await? {
                        return Ok(r);
                    }
                }
                "REJECTED" | "FAILED" => bail!(
                    "{program} {date} is {status}: {}",
                    serde_json::to_string(&st).unwrap_or_default()
                ),
                _ => {}
            }
            if started.elapsed() > timeout {
                bail!(
                    "{program} {date} still {status} after {} s",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Writes `<dir>/<program>-<date>.dat`, `.csv` and `-expected.json` (the
/// report the pipeline must give) for a generated day with injected breaks.
pub fn generate(spec: &SampleSpec, dir: &Path) -> Result<[std::path::PathBuf; 3]> {
    use std::io::Write;
    spec.check().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(dir)?;
    let base = format!("{}-{}", spec.program_id, spec.file_date);
    let dat = dir.join(format!("{base}.dat"));
    let csv = dir.join(format!("{base}.csv"));
    let expected = dir.join(format!("{base}-expected.json"));
    let mut w = std::io::BufWriter::new(std::fs::File::create(&dat)?);
    for line in sample::settlement_lines(spec) {
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    let mut w = std::io::BufWriter::new(std::fs::File::create(&csv)?);
    for line in sample::internal_lines(spec) {
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    std::fs::write(
        &expected,
        serde_json::to_string_pretty(&sample::expected_report(spec))?,
    )?;
    Ok([dat, csv, expected])
}

/// How many exceptions [`summary`] lists (the count is always given).
pub const SUMMARY_EXCEPTIONS_MAX: usize = 10;

/// The report as a few lines for a terminal: status, control totals, one
/// row per currency, and the first exceptions.
pub fn summary(r: &tally_domain::recon::rollup::Report) -> String {
    use std::fmt::Write;
    use tally_domain::recon::rollup::ReportStatus;
    let mut s = String::new();
    let status = match r.status {
        ReportStatus::Balanced => "BALANCED",
        ReportStatus::Breaks => "BREAKS",
    };
    let control = if r.control_totals_agree {
        "agree"
    } else {
        "DO NOT AGREE"
    };
    let _ = writeln!(
        s,
        "{} {}: {status}; the file's control totals {control}",
        r.program_id, r.file_date
    );
    let _ = writeln!(
        s,
        "{:<4} {:>9} {:>10} {:>12} {:>12} {:>18} {:>18} {:>16}",
        "ccy",
        "matched",
        "mismatched",
        "unmatched_s",
        "unmatched_i",
        "settlement_net",
        "internal_net",
        "difference"
    );
    for c in &r.currencies {
        let _ = writeln!(
            s,
            "{:<4} {:>9} {:>10} {:>12} {:>12} {:>18} {:>18} {:>16}",
            c.currency.code(),
            c.matched,
            c.mismatched,
            c.unmatched_settlement,
            c.unmatched_internal,
            c.settlement_net,
            c.internal_net,
            c.difference
        );
    }
    let _ = writeln!(s, "exceptions: {}", r.exceptions.len());
    for e in r.exceptions.iter().take(SUMMARY_EXCEPTIONS_MAX) {
        let fields: Vec<&str> = e.fields.iter().map(|f| f.as_str()).collect();
        let amount = |d: Option<rust_decimal::Decimal>| d.map_or("-".to_owned(), |d| d.to_string());
        let _ = writeln!(
            s,
            "  {:<24} {:<20} {:<3} settlement {:>14} internal {:>14} {}",
            e.transaction_id,
            e.status.as_str(),
            e.currency.code(),
            amount(e.settlement_amount),
            amount(e.internal_amount),
            fields.join(",")
        );
    }
    if r.exceptions.len() > SUMMARY_EXCEPTIONS_MAX {
        let _ = writeln!(
            s,
            "  ... {} more in the report",
            r.exceptions.len() - SUMMARY_EXCEPTIONS_MAX
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_shows_each_currency_and_the_first_exceptions() {
        let spec = SampleSpec::new("SUMM", "2026-11-20".parse().unwrap(), 2_000, 3);
        let report = sample::expected_report(&spec);
        let text = summary(&report);
        assert!(text.starts_with("SUMM 2026-11-20: BREAKS; the file's control totals agree\n"));
        for c in &report.currencies {
            let row = text
                .lines()
                .find(|l| l.starts_with(c.currency.code()))
                .unwrap_or_else(|| panic!("no row for {}", c.currency.code()));
            let cols: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(cols[1], c.matched.to_string());
            assert_eq!(cols[7], c.difference.to_string());
        }
        assert!(text.contains(&format!("exceptions: {}\n", report.exceptions.len())));
        let listed = text
            .lines()
            .filter(|l| l.starts_with("  ") && !l.contains("more in"))
            .count();
        assert_eq!(listed, report.exceptions.len().min(SUMMARY_EXCEPTIONS_MAX));
        assert!(
            report.exceptions.len() > SUMMARY_EXCEPTIONS_MAX,
            "the sample has breaks to cut"
        );
        assert!(text.ends_with(&format!(
            "  ... {} more in the report\n",
            report.exceptions.len() - SUMMARY_EXCEPTIONS_MAX
        )));
    }
}
