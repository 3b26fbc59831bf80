//! Local end-to-end COB benchmark. Prints figures; asserts nothing.
//!
//! 1. The raw DynamoDB write rate of this local stack, two ways:
//!    - the COB's own writes with nothing around them: the conditional
//!      `TransactWriteItems` a partition commits for a book of
//!      `RAW_ACCOUNTS` accounts, planned beforehand and replayed straight at
//!      DynamoDB (the target's denominator: what the COB costs over its
//!      writes);
//!    - unconditional `BatchWriteItem` of ledger-sized items into a scratch
//!      table (for reference: a cheaper kind of write, which cannot keep a
//!      posting and its account together).
//! 2. A COB of `BENCH_ACCOUNTS` (default 100,000) accounts through the real
//!    state machine on the partitioned path, in accounts/s and write items/s
//!    (each account's update plus its ledger entries), and its ratios to (1).
//! 3. Peak memory (VmHWM) of the partition engine, run in this process over
//!    a synthetic book that keeps nothing, at 10,000, 100,000 and 1,000,000
//!    accounts: flat means memory does not grow with the number of accounts.

use anyhow::Result;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, WriteRequest,
};
use futures::{StreamExt, TryStreamExt};
use std::time::Instant;
use tally_aws::memory::MemoryFaults;
use tally_aws::ports::{AccountBook, AccountCommit, CommitOutcome, IdPage};
use tally_aws::StoreError;
use tally_cli::runs::Options;
use tally_domain::account::{Account, Product, Status};
use tally_domain::cob::PartitionTask;
use tally_domain::currency::Currency;
use tally_domain::daycount::DayCount;
use tally_domain::Decimal;
use tally_integration_tests::{date, event, Env};

const RAW_ITEMS: usize = 20_000;
/// Accounts whose COB writes are replayed for the raw rate.
const RAW_ACCOUNTS: u64 = 10_000;
/// Requests in flight for the raw rates.
const RAW_IN_FLIGHT: usize = 16;
/// Above this many postings the bench does not time the ledger export.
const EXPORT_MAX: u64 = 200_000;

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux: write 5 to clear_refs).
fn reset_hwm() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

async fn raw_write_rate(env: &Env) -> Result<f64> {
    let table = format!("tally-bench-raw-{}", std::process::id());
    env.dynamo
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("account_id")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("accrual_date")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("account_id")
                .key_type(KeyType::Hash)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("accrual_date")
                .key_type(KeyType::Range)
                .build()?,
        )
        .send()
        .await?;
    let requests: Vec<WriteRequest> = (0..RAW_ITEMS)
        .map(|i| {
            let item = [
                ("account_id", format!("SV-{i:08}")),
                ("accrual_date", "2026-11-20".into()),
                ("currency", "USD".into()),
                ("amount", "0.29".into()),
                ("debit", "interest_expense".into()),
                ("credit", format!("interest_payable:SV-{i:08}")),
                ("run_id", "bench".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), AttributeValue::S(v)))
            .collect();
            WriteRequest::builder()
                .put_request(PutRequest::builder().set_item(Some(item)).build().unwrap())
                .build()
        })
        .collect();
    let started = Instant::now();
    futures::stream::iter(requests.chunks(25))
        .map(|c| env.book.batch_write(&table, c.to_vec()))
        .buffer_unordered(RAW_IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await?;
    let rate = RAW_ITEMS as f64 / started.elapsed().as_secs_f64();
    env.dynamo.delete_table().table_name(&table).send().await?;
    Ok(rate)
}

/// The COB's own writes, with no COB around them: the transactions a
/// partition would commit for `accounts` accounts (the same conditional
/// account updates and ledger puts, grouped the same way, through the same
/// `DynamoBook::commit`), planned ahead from a book read beforehand, then
/// replayed straight at DynamoDB, `RAW_IN_FLIGHT` at a time. Only the replay
/// is timed: no index reads, no account reads, no Step Functions, no Lambda.
async fn raw_cob_write_rate(env: &Env, accounts: u64, d: chrono::NaiveDate) -> Result<f64> {
    env.fresh_book(accounts, 22, d).await?;
    let mut ids = Vec::new();
    for shard in 0..tally_domain::partition::COB_SHARD_COUNT {
        let mut after = None;
        loop {
            let page = env.book.active_ids(shard, after, 100).await?;
            ids.extend(page.ids);
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    let mut commits = Vec::new();
    let mut days = Vec::new();
    for chunk in ids.chunks(100) {
        for a in env.book.load(chunk).await? {
            if let Some(c) = cob_partition::plan_commit(&a, d, "bench-raw", &mut days)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
            {
                commits.push(c);
            }
        }
    }
    let items: usize = commits.iter().map(|c| c.items()).sum();
    let groups = cob_partition::transactions(commits);
    let started = Instant::now();
    let outcomes: Vec<Vec<CommitOutcome>> = futures::stream::iter(groups.iter())
        .map(|g| env.book.commit(g))
        .buffer_unordered(RAW_IN_FLIGHT)
        .try_collect()
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let committed = outcomes
        .iter()
        .flatten()
        .filter(|o| **o == CommitOutcome::Committed)
        .count();
    anyhow::ensure!(
        committed == groups.iter().map(Vec::len).sum::<usize>(),
        "raw replay: {committed} of the planned commits applied"
    );
    Ok(items as f64 / secs)
}

/// A book that makes accounts up on demand and accepts every commit without
/// keeping it, so that the peak memory measured is the partition engine's own.
struct SyntheticBook {
    by_shard: Vec<Vec<String>>,
}

impl SyntheticBook {
    fn new(accounts: u64) -> Self {
        let mut by_shard = vec![Vec::new(); tally_domain::partition::COB_SHARD_COUNT as usize];
        for i in 0..accounts {
            let id = format!("SV-{i:08}");
            by_shard[tally_domain::partition::cob_shard(&id) as usize].push(id);
        }
        SyntheticBook { by_shard }
    }
}

impl AccountBook for SyntheticBook {
    async fn count_active(&self) -> Result<u64, StoreError> {
        Ok(self.by_shard.iter().map(|s| s.len() as u64).sum())
    }
    async fn active_ids(
        &self,
        shard: u32,
        after: Option<String>,
        limit: u32,
    ) -> Result<IdPage, StoreError> {
        let ids = &self.by_shard[shard as usize];
        let from = after.map_or(0, |a| {
            ids.iter()
                .position(|x| *x == a)
                .map_or(ids.len(), |p| p + 1)
        });
        let page: Vec<String> = ids[from..].iter().take(limit as usize).cloned().collect();
        let next = (from + page.len() < ids.len())
            .then(|| page.last().cloned())
            .flatten();
        Ok(IdPage { ids: page, next })
    }
    async fn load(&self, ids: &[String]) -> Result<Vec<Account>, StoreError> {
        Ok(ids
            .iter()
            .map(|id| Account {
                account_id: id.clone(),
                product: Product::Savings,
                status: Status::Active,
                currency: Currency::parse("USD").unwrap(),
                balance: Decimal::new(250_000, 2),
                annual_rate: Decimal::new(425, 4),
                day_count: DayCount::Act365F,
                opened_on: date("2020-01-01"),
                accrued_through: Some(date("2026-11-19")),
                residual: Decimal::ZERO,
                last_run: None,
            })
            .collect())
    }
    async fn commit(&self, commits: &[AccountCommit]) -> Result<Vec<CommitOutcome>, StoreError> {
        Ok(vec![CommitOutcome::Committed; commits.len()])
    }
}

async fn partition_peak_kb(accounts: u64) -> Result<(u64, u64, f64)> {
    let book = SyntheticBook::new(accounts);
    let cfg = cob_partition::Config::from_env()?;
    let task = PartitionTask {
        run_id: format!("mem-{accounts}"),
        business_date: date("2026-11-20"),
        partition: 0,
        partition_count: 1,
        fault: None,
    };
    reset_hwm();
    let before = vm_hwm_kb();
    let started = Instant::now();
    let r = cob_partition::run(
        &book,
        &MemoryFaults::default(),
        &tally_aws::runs::MemoryRuns::default(),
        &cfg,
        task,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(r.accounts_seen, accounts);
    Ok((before, vm_hwm_kb(), secs))
}

#[tokio::main]
async fn main() -> Result<()> {
    let accounts: u64 = std::env::var("BENCH_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let env = Env::connect().await?;
    println!("== local stack raw write rate");
    let raw = raw_write_rate(&env).await?;
    println!("BatchWriteItem, {RAW_ITEMS} ledger-sized items, {RAW_IN_FLIGHT} in flight: {raw:.0} items/s");
    let raw_tx = raw_cob_write_rate(&env, RAW_ACCOUNTS, date("2026-11-20")).await?;
    println!("the COB's own transactions for {RAW_ACCOUNTS} accounts (conditional account update + conditional ledger puts, ≤100 items each), replayed with nothing else, {RAW_IN_FLIGHT} in flight: {raw_tx:.0} items/s");

    println!("== COB of {accounts} accounts through the state machine (partitioned path)");
    let d = date("2026-11-20");
    let t = Instant::now();
    env.fresh_book(accounts, 20, d).await?;
    println!(
        "import: {:.1} s ({:.0} accounts/s)",
        t.elapsed().as_secs_f64(),
        accounts as f64 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let (s, _) = env.run_ok(d, &Options::default(), None).await?;
    let secs = t.elapsed().as_secs_f64();
    let e = event(&s);
    let processed = e["accounts_processed"].as_u64().unwrap_or(0);
    let postings = e["postings_written"].as_u64().unwrap_or(0);
    let items = processed + postings;
    println!(
        "partitions {}, slowest partition {} ms, wall {secs:.1} s",
        e["partition_count"], e["slowest_partition_ms"]
    );
    println!("accounts {processed} ({:.0} accounts/s), postings {postings}, write items {items} ({:.0} items/s)",
             processed as f64 / secs, items as f64 / secs);
    println!(
        "ratio to the raw rate of the COB's own writes: items {:.2}  (target ≥ 0.7)",
        items as f64 / secs / raw_tx
    );
    println!(
        "ratio to the raw BatchWriteItem rate (unconditional puts, a cheaper kind of write): items {:.2}",
        items as f64 / secs / raw
    );

    println!("== partition engine peak memory (VmHWM of this process; a synthetic book keeps nothing, so growth is the engine's)");
    for n in [10_000, 100_000, 1_000_000] {
        let (before, peak, secs) = partition_peak_kb(n).await?;
        println!(
            "{n:>7} accounts: peak {:.1} MiB (baseline {:.1} MiB, +{:.1} MiB), {secs:.1} s",
            peak as f64 / 1024.0,
            before as f64 / 1024.0,
            (peak.saturating_sub(before)) as f64 / 1024.0
        );
    }
    // Last, because on the emulator it is the slow part: moto's Scan walks
    // the table from its start for every page, so the export is quadratic
    // in the ledger's size (1,000,000 entries would take hours).
    if postings <= EXPORT_MAX {
        let t = Instant::now();
        let mut sink = std::io::sink();
        let exported = tally_cli::export::export(&env.book, Some(d), &mut sink).await?;
        println!(
            "ledger export: {exported} entries in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    } else {
        println!(
            "ledger export: skipped above {EXPORT_MAX} postings (quadratic on the emulator's Scan)"
        );
    }
    env.truncate().await?;
    Ok(())
}
