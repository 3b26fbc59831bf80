//! Local end-to-end COB benchmark. Prints figures; asserts nothing.
//!
//! 1. The raw DynamoDB write rate of this local stack: `BatchWriteItem` of
//!    ledger-sized items into a scratch table, 8 requests in flight; and the
//!    raw rate of the kind of write the COB makes (conditional
//!    `TransactWriteItems`, 100 items each), with no COB around it.
//! 2. A COB of `BENCH_ACCOUNTS` (default 100,000) accounts through the real
//!    state machine on the partitioned path, in accounts/s and write items/s
//!    (each account's update plus its ledger entries), and its ratio to (1).
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
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    let rate = RAW_ITEMS as f64 / started.elapsed().as_secs_f64();
    env.dynamo.delete_table().table_name(&table).send().await?;
    Ok(rate)
}

/// The same kind of write the COB makes, with no COB around it: transactions
/// of 50 × (a conditional account update + a conditional ledger put).
async fn raw_transact_rate(env: &Env) -> Result<f64> {
    use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
    let accounts = RAW_ITEMS / 2;
    env.fresh_book(accounts as u64, 22, date("2026-11-20"))
        .await?;
    let ids: Vec<String> = {
        let mut buf = Vec::new();
        tally_cli::generate::generate(accounts as u64, 22, date("2026-11-20"), &mut buf)?;
        String::from_utf8(buf)?
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["account_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let groups: Vec<Vec<TransactWriteItem>> = ids
        .chunks(50)
        .map(|chunk| {
            chunk
                .iter()
                .flat_map(|id| {
                    let update = Update::builder()
                        .table_name(&env.stack.accounts_table)
                        .key("account_id", s(id))
                        .update_expression("SET bench_mark = :m")
                        .condition_expression(
                            "attribute_exists(account_id) AND attribute_not_exists(bench_mark)",
                        )
                        .expression_attribute_values(":m", s("1"))
                        .build()
                        .unwrap();
                    let item = [
                        ("account_id", id.clone()),
                        ("accrual_date", "2099-01-01".into()),
                        ("currency", "USD".into()),
                        ("amount", "0.29".into()),
                        ("debit", "interest_expense".into()),
                        ("credit", format!("interest_payable:{id}")),
                        ("run_id", "bench".into()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), AttributeValue::S(v)))
                    .collect();
                    let put = Put::builder()
                        .table_name(&env.stack.ledger_table)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(account_id)")
                        .build()
                        .unwrap();
                    [
                        TransactWriteItem::builder().update(update).build(),
                        TransactWriteItem::builder().put(put).build(),
                    ]
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    futures::stream::iter(groups)
        .map(|g| {
            env.dynamo
                .transact_write_items()
                .set_transact_items(Some(g))
                .send()
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    Ok((ids.len() * 2) as f64 / started.elapsed().as_secs_f64())
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
    let r = cob_partition::run(&book, &MemoryFaults::default(), &cfg, task)
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
    println!("BatchWriteItem, {RAW_ITEMS} ledger-sized items, 8 in flight: {raw:.0} items/s");
    let raw_tx = raw_transact_rate(&env).await?;
    println!("TransactWriteItems, {RAW_ITEMS} items as 50 × (conditional update + conditional put), 8 in flight: {raw_tx:.0} items/s");

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
        "ratio to raw BatchWriteItem rate: items {:.2}, accounts {:.2}  (target ≥ 0.7)",
        items as f64 / secs / raw,
        processed as f64 / secs / raw
    );
    println!(
        "ratio to raw conditional TransactWriteItems rate (the same kind of write): items {:.2}",
        items as f64 / secs / raw_tx
    );

    let t = Instant::now();
    let mut sink = std::io::sink();
    let exported = tally_cli::export::export(&env.book, Some(d), &mut sink).await?;
    println!(
        "ledger export: {exported} entries in {:.1} s",
        t.elapsed().as_secs_f64()
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
    env.truncate().await?;
    Ok(())
}
