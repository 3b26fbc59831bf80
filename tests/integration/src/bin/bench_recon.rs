//! Local end-to-end reconciliation benchmark. Prints figures; asserts
//! nothing (it says whether the report equals the generator's).
//!
//! 1. The raw write rate of this local stack for the reconciliation's own
//!    writes: record items (the very items an ingest writes) put with
//!    `BatchWriteItem` in chunks of 25, as many in flight as an ingest
//!    (`RECON_WRITE_CONCURRENCY`, default 8), straight at DynamoDB through
//!    the same adapter, with no S3, Step Functions or Lambda around them.
//! 2. A reconciliation of `BENCH_RECORDS` (default 100,000) settlement
//!    records with injected breaks and their internal records, from the
//!    uploads to S3 to the report: S3 → EventBridge → SQS → trigger → the
//!    state machine (Lambda branch) → 64 shard matches → rollup. Wall time,
//!    records/s, write items/s, and the ratio of items/s to (1).

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use std::time::{Duration, Instant};
use tally_aws::ports::{RecordSink, StoredTxn};
use tally_aws::recon::DynamoRecords;
use tally_cli::recon::{generate, summary, Recon};
use tally_cli::stack::ReconStack;
use tally_domain::recon::rollup::Report;
use tally_domain::recon::sample::{self, SampleSpec};
use tally_domain::recon::shard::{recon_shard, shard_key, RECON_SHARD_COUNT_DEFAULT};
use tally_domain::recon::{internal, Side};
use tally_integration_tests::{repo_root, Env};

/// Records replayed for the raw rate.
const RAW_RECORDS: u64 = 40_000;
/// Chunks in flight for the raw rate: the ingest's default.
const RAW_IN_FLIGHT: usize = 8;
const BATCH: usize = 25;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Items/s of record puts through the ingest's own adapter, into a program
/// of the bench's own (its items never meet a reconciliation).
async fn raw_record_rate(records: &DynamoRecords, date: chrono::NaiveDate) -> Result<f64> {
    let spec = SampleSpec::new("RAWBENCH", date, RAW_RECORDS, 77);
    let stored: Vec<StoredTxn> = sample::internal_lines(&spec)
        .enumerate()
        .skip(1) // the header
        .map(|(i, line)| {
            let txn = internal::parse_row(line.as_bytes(), i as u64 + 1)
                .map_err(|r| anyhow::anyhow!("sample line {}: {r:?}", i + 1))?;
            let shard = recon_shard(&txn.transaction_id, RECON_SHARD_COUNT_DEFAULT);
            Ok(StoredTxn {
                pk: shard_key("RAWBENCH", date, shard),
                txn,
                line: i as u64 + 1,
                version: 1,
                fee: None,
            })
        })
        .collect::<Result<_>>()?;
    let retries = std::sync::atomic::AtomicU64::new(0);
    let t = Instant::now();
    futures::stream::iter(stored.chunks(BATCH))
        .map(|c| records.put_records(Side::Internal, c, &retries))
        .buffer_unordered(RAW_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(stored.len() as f64 / t.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    let n = env_u64("BENCH_RECORDS", 100_000);
    let date: chrono::NaiveDate = "2026-11-20".parse()?;
    let env = Env::connect().await?;
    let output = |key: &str| {
        env.outputs
            .get(key)
            .cloned()
            .with_context(|| format!("output {key} in .tally/stack.json"))
    };
    let records = DynamoRecords::new(
        env.dynamo.clone(),
        output("SettlementRecordsTableName")?,
        output("InternalRecordsTableName")?,
    );
    let stack = ReconStack::load(&repo_root().join(".tally/stack.json"))
        .context("the local stack is not deployed: make up")?;
    let recon = Recon::connect(stack).await;

    println!("== local stack raw write rate (the reconciliation's own writes)");
    let raw = raw_record_rate(&records, date).await?;
    println!(
        "{RAW_RECORDS} record items, BatchWriteItem of {BATCH}, {RAW_IN_FLIGHT} in flight, through the ingest's adapter: {raw:.0} items/s"
    );

    // A program of this run's own, so that a rerun on the same stack
    // reconciles afresh.
    let program = format!("BENCH{}", chrono::Utc::now().timestamp() % 100_000);
    println!(
        "== reconciliation of {n} settlement records ({program} {date}) through the state machine"
    );
    let spec = SampleSpec::new(&program, date, n, 2026);
    let dir = repo_root().join(".tally/bench-recon");
    let t = Instant::now();
    let [dat, csv, expected] = generate(&spec, &dir)?;
    let (dat_mb, csv_mb) = (
        std::fs::metadata(&dat)?.len() as f64 / 1e6,
        std::fs::metadata(&csv)?.len() as f64 / 1e6,
    );
    println!(
        "generated {dat_mb:.1} MB settlement + {csv_mb:.1} MB internal in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    recon.upload(Side::Internal, &program, date, &csv).await?;
    recon.upload(Side::Settlement, &program, date, &dat).await?;
    let uploaded = t.elapsed().as_secs_f64();
    let mut phases: Vec<(String, f64)> = Vec::new();
    let json = recon
        .wait_report(&program, date, Duration::from_secs(3600), |s| {
            if phases.last().map(|(p, _)| p.as_str()) != Some(s) {
                phases.push((s.to_owned(), t.elapsed().as_secs_f64()));
            }
        })
        .await?;
    let wall = t.elapsed().as_secs_f64();
    let report: Report = serde_json::from_str(&json)?;
    let want: Report = serde_json::from_slice(&std::fs::read(&expected)?)?;
    let items: u64 = report
        .currencies
        .iter()
        .map(|c| {
            // Every settlement detail and every internal row is one stored item.
            2 * c.matched + 2 * c.mismatched + c.unmatched_settlement + c.unmatched_internal
        })
        .sum();
    println!("uploads {uploaded:.1} s; status as first seen (s from the first upload):");
    for (p, at) in &phases {
        println!("  {at:>7.1}  {p}");
    }
    println!(
        "wall {wall:.1} s: {:.0} settlement records/s, {items} record items ({:.0} items/s)",
        n as f64 / wall,
        items as f64 / wall
    );
    println!(
        "ratio to the raw rate of the reconciliation's own writes: items {:.2}",
        items as f64 / wall / raw
    );
    println!(
        "report equals the generator's expected report: {}",
        if report == want { "yes" } else { "NO" }
    );
    print!("{}", summary(&report));
    Ok(())
}
