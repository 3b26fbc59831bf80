//! Local end-to-end COB benchmark. Prints figures; asserts nothing.
//!
//! 1. The raw DynamoDB write rate of this local stack: `BatchWriteItem` of
//!    ledger-sized items into a scratch table, 8 requests in flight.
//! 2. A COB of `BENCH_ACCOUNTS` (default 100,000) accounts through the real
//!    state machine on the partitioned path, in accounts/s and write items/s
//!    (each account's update plus its ledger entries), and its ratio to (1).
//! 3. Peak memory (VmHWM) of the partition engine, run in this process
//!    against the same stack, at 10,000 and at 100,000 accounts.

use anyhow::Result;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, WriteRequest,
};
use futures::{StreamExt, TryStreamExt};
use std::time::Instant;
use tally_aws::memory::MemoryFaults;
use tally_cli::runs::Options;
use tally_domain::cob::PartitionTask;
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

async fn partition_peak_kb(env: &Env, accounts: u64) -> Result<(u64, u64, f64)> {
    let d = date("2026-11-20");
    env.fresh_book(accounts, 21, d).await?;
    let cfg = cob_partition::Config::from_env()?;
    let task = PartitionTask {
        run_id: format!("mem-{accounts}"),
        business_date: d,
        partition: 0,
        partition_count: 1,
        fault: None,
    };
    reset_hwm();
    let before = vm_hwm_kb();
    let started = Instant::now();
    let r = cob_partition::run(&env.book, &MemoryFaults::default(), &cfg, task)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let secs = started.elapsed().as_secs_f64();
    assert!(r.accounts_seen > 0);
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
        "ratio to raw write rate: items {:.2}, accounts {:.2}  (target ≥ 0.7)",
        items as f64 / secs / raw,
        processed as f64 / secs / raw
    );

    println!("== partition peak memory (VmHWM of this process, engine run in-process)");
    for n in [10_000, 100_000] {
        let (before, peak, secs) = partition_peak_kb(&env, n).await?;
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
