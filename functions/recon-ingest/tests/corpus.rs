//! The bad-input corpus (tests/corpus, written by make_corpus.py): every
//! settlement and internal-records case is rejected at the line and field its
//! manifest names, and nothing of it is written. The base files themselves
//! are accepted, so each case fails for its own fault alone.

use recon_ingest::{ingest, Config, IngestOutcome, IngestTask};
use serde::Deserialize;
use std::path::PathBuf;
use tally_aws::memory::{MemoryFaults, MemoryObjects, MemoryProgress, MemoryRecords};
use tally_domain::recon::Side;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    kind: String,
    file: String,
    line: u64,
    field: Option<String>,
    why: String,
    key: Option<String>,
    append: Option<Append>,
}

#[derive(Debug, Deserialize)]
struct Append {
    byte: String,
    count: usize,
}

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus")
}

fn cases() -> Vec<Case> {
    serde_json::from_slice(&std::fs::read(corpus().join("manifest.json")).unwrap()).unwrap()
}

fn bytes(c: &Case) -> Vec<u8> {
    let mut b = std::fs::read(corpus().join(&c.file)).unwrap();
    if let Some(a) = &c.append {
        b.extend(std::iter::repeat_n(a.byte.as_bytes()[0], a.count));
    }
    b
}

fn cfg() -> Config {
    Config {
        shard_count: 64,
        write_concurrency: 4,
        checkpoint_records: 25,
        fault_injection: false,
    }
}

async fn run(key: &str, data: Vec<u8>) -> (IngestOutcome, MemoryRecords) {
    let objects = MemoryObjects::default();
    let records = MemoryRecords::default();
    let obj = objects.put(key, data);
    let out = ingest(
        &objects,
        &records,
        &MemoryProgress::default(),
        &MemoryFaults::default(),
        &cfg(),
        IngestTask {
            object: obj,
            version: Some(1),
            fault: None,
        },
        &std::sync::atomic::AtomicU64::new(0),
    )
    .await
    .unwrap();
    (out, records)
}

#[tokio::test]
async fn the_base_files_are_accepted() {
    for (key, file) in [
        (
            "settlement/CORPUS/2026-11-20/base.dat",
            "base-settlement.dat",
        ),
        ("internal/CORPUS/2026-11-20/base.csv", "base-internal.csv"),
    ] {
        let (out, records) = run(key, std::fs::read(corpus().join(file)).unwrap()).await;
        assert!(
            matches!(out, IngestOutcome::Applied { records: 6, .. }),
            "{file}: {out:?}"
        );
        assert_eq!(records.puts(), 6, "{file}");
    }
}

#[tokio::test]
async fn every_bad_file_is_rejected_at_its_line_and_field_and_writes_nothing() {
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| c.kind != "accounts")
        .collect();
    assert!(cases.len() >= 30, "{} recon cases", cases.len());
    let mut wrong = Vec::new();
    for c in &cases {
        let (out, records) = run(c.key.as_deref().unwrap(), bytes(c)).await;
        let written = records.puts()
            + records.records(Side::Settlement).len() as u64
            + records.records(Side::Internal).len() as u64;
        match out {
            IngestOutcome::Rejected { reason, .. }
                if reason.line == c.line
                    && Some(reason.field.as_str()) == c.field.as_deref()
                    && written == 0 =>
            {
                // The reason says what was expected, and never holds a full PAN.
                assert!(!reason.expected.is_empty(), "{}: {reason:?}", c.name);
                assert!(
                    !format!("{reason:?}").contains("4111111111111111"),
                    "{}: {reason:?}",
                    c.name
                );
            }
            other => wrong.push(format!(
                "{} ({}): want line {} field {:?}, got {other:?} with {written} written",
                c.name, c.why, c.line, c.field
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
