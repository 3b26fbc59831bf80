//! Account import: the whole file is validated before anything is written, so
//! a bad line writes nothing. Memory holds only the set of ids seen, not the
//! accounts: the file is read twice, once to validate and once to write.

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use std::io::{BufRead, BufReader};
use std::path::Path;
use tally_aws::dynamo::{DynamoBook, BATCH_WRITE_MAX};
use tally_domain::account::{Account, ImportError, ImportValidator};

/// `BatchWriteItem` requests in flight during an import.
pub const IMPORT_CONCURRENCY: usize = 8;
/// Accounts parsed ahead of the writers.
const CHUNK_ACCOUNTS: usize = BATCH_WRITE_MAX * IMPORT_CONCURRENCY;

/// Why an import stopped: the file was refused (nothing written), or writing failed.
#[derive(Debug)]
pub enum ImportFailure {
    Invalid(ImportError),
    Other(anyhow::Error),
}

impl std::fmt::Display for ImportFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportFailure::Invalid(e) => write!(f, "import refused, nothing written: {e}"),
            ImportFailure::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for ImportFailure {}

fn lines(path: &Path) -> Result<impl Iterator<Item = std::io::Result<String>>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(BufReader::new(f).lines())
}

/// Pass one: every line valid, no duplicate id. Returns the count.
pub fn validate(path: &Path) -> Result<usize, ImportFailure> {
    let mut v = ImportValidator::new();
    for line in lines(path).map_err(ImportFailure::Other)? {
        let line = line.map_err(|e| {
            ImportFailure::Invalid(ImportError {
                line: v.lines() + 1,
                field: None,
                reason: format!("not UTF-8 text: {e}"),
            })
        })?;
        v.push(&line).map_err(ImportFailure::Invalid)?;
    }
    if v.lines() == 0 {
        return Err(ImportFailure::Invalid(ImportError {
            line: 0,
            field: None,
            reason: "the file holds no accounts".into(),
        }));
    }
    Ok(v.lines())
}

/// Validates `path`, then writes every account. Returns the number written.
pub async fn import(
    book: &DynamoBook,
    path: &Path,
    mut progress: impl FnMut(usize),
) -> Result<usize, ImportFailure> {
    let total = validate(path)?;
    // Pass two: the file was valid a moment ago; parse again and write.
    let mut v = ImportValidator::new();
    let mut written = 0;
    let mut chunk: Vec<Account> = Vec::with_capacity(CHUNK_ACCOUNTS);
    let mut it = lines(path).map_err(ImportFailure::Other)?;
    loop {
        let next = it.next();
        if let Some(line) = &next {
            let line = line
                .as_ref()
                .map_err(|e| ImportFailure::Other(anyhow::anyhow!("re-reading: {e}")))?;
            chunk.push(v.push(line).map_err(|e| {
                ImportFailure::Other(anyhow::anyhow!("the file changed during the import: {e}"))
            })?);
        }
        if chunk.len() == CHUNK_ACCOUNTS || (next.is_none() && !chunk.is_empty()) {
            futures::stream::iter(chunk.chunks(BATCH_WRITE_MAX))
                .map(|c| book.put_accounts(c))
                .buffer_unordered(IMPORT_CONCURRENCY)
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| ImportFailure::Other(anyhow::anyhow!("writing accounts ({written} of {total} written; the import is an upsert, run it again): {e}")))?;
            written += chunk.len();
            progress(written);
            chunk.clear();
        }
        if next.is_none() {
            return Ok(written);
        }
    }
}
