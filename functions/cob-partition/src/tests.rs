use super::*;
use tally_aws::memory::{MemoryBook, MemoryFaults};
use tally_domain::account::{Product, Status};
use tally_domain::cob::Fault;
use tally_domain::currency::Currency;
use tally_domain::daycount::DayCount;

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn account(i: usize) -> Account {
    let ccy = ["USD", "JPY", "BHD"][i % 3];
    Account {
        account_id: format!("ACC-{i:05}"),
        product: if i.is_multiple_of(2) {
            Product::Savings
        } else {
            Product::Loan
        },
        status: if i.is_multiple_of(17) {
            Status::Dormant
        } else {
            Status::Active
        },
        currency: Currency::parse(ccy).unwrap(),
        balance: match ccy {
            "JPY" => Decimal::from(1_000_000 + i as i64),
            _ => Decimal::new(250_000 + i as i64 * 7, 2),
        },
        annual_rate: Decimal::new(425, 4),
        day_count: DayCount::ALL[i % 4],
        opened_on: date("2024-01-01"),
        accrued_through: Some(date("2026-11-17")),
        residual: Decimal::ZERO,
        last_run: None,
    }
}

fn book(n: usize) -> MemoryBook {
    MemoryBook::with_accounts((0..n).map(account))
}

fn cfg() -> Config {
    Config {
        page_size: 7,
        write_concurrency: 3,
        fault_injection: true,
        backoff: Backoff {
            base_ms: 1,
            cap_ms: 2,
            attempts_max: 8,
        },
    }
}

fn task(run: &str, p: u32, n: u32) -> PartitionTask {
    PartitionTask {
        run_id: run.into(),
        business_date: date("2026-11-20"),
        partition: p,
        partition_count: n,
        fault: None,
    }
}

/// The ledger without run ids: what must be identical between runs.
fn ledger(b: &MemoryBook) -> Vec<(String, NaiveDate, String)> {
    b.ledger()
        .into_iter()
        .map(|e| (e.account_id, e.accrual_date, e.amount.to_string()))
        .collect()
}

async fn clean(n: usize) -> (MemoryBook, PartitionResult) {
    let b = book(n);
    let r = run(&b, &MemoryFaults::default(), &cfg(), task("clean", 0, 1))
        .await
        .unwrap();
    (b, r)
}

#[tokio::test]
async fn every_active_account_accrues_each_missing_day_once() {
    let (b, r) = clean(60).await;
    let active = (0..60usize).filter(|i| !i.is_multiple_of(17)).count() as u64;
    assert_eq!(
        (r.accounts_seen, r.accounts_accrued, r.already_accrued),
        (active, active, 0)
    );
    // Three days (18th, 19th, 20th) per active account, minus the zero postings.
    assert_eq!(r.postings_written + r.zero_postings_skipped, active * 3);
    assert_eq!(b.ledger().len() as u64, r.postings_written);
    for i in (0..60usize).filter(|i| !i.is_multiple_of(17)) {
        assert_eq!(
            b.account(&format!("ACC-{i:05}")).unwrap().accrued_through,
            Some(date("2026-11-20"))
        );
    }
    assert_eq!(
        b.account("ACC-00000").unwrap().accrued_through,
        Some(date("2026-11-17")),
        "dormant untouched"
    );
    // The totals are the ledger's, per currency.
    let usd: Decimal = b
        .ledger()
        .iter()
        .filter(|e| e.currency.code() == "USD")
        .map(|e| e.amount)
        .sum();
    assert_eq!(
        r.totals
            .iter()
            .find(|t| t.currency.code() == "USD")
            .unwrap()
            .amount,
        usd
    );
}

#[tokio::test]
async fn running_the_same_date_again_adds_nothing() {
    let (b, first) = clean(40).await;
    let before = ledger(&b);
    let again = run(&b, &MemoryFaults::default(), &cfg(), task("second", 0, 1))
        .await
        .unwrap();
    assert_eq!(ledger(&b), before);
    assert_eq!(
        (
            again.postings_written,
            again.accounts_accrued,
            again.already_accrued
        ),
        (0, 0, first.accounts_seen)
    );
    // A retry of the same run reports the same totals as its first attempt.
    let retry = run(&b, &MemoryFaults::default(), &cfg(), task("clean", 0, 1))
        .await
        .unwrap();
    assert_eq!(
        (retry.totals, retry.postings_written),
        (first.totals, first.postings_written)
    );
}

#[tokio::test]
async fn transient_write_failures_are_retried_to_the_same_ledger() {
    let (reference, r0) = clean(40).await;
    let b = book(40);
    b.fail_next_commits(5);
    let r = run(&b, &MemoryFaults::default(), &cfg(), task("clean", 0, 1))
        .await
        .unwrap();
    assert_eq!(ledger(&b), ledger(&reference));
    assert_eq!(r.totals, r0.totals);
}

#[tokio::test]
async fn a_lost_response_after_a_commit_posts_nothing_twice() {
    let (reference, r0) = clean(40).await;
    let b = book(40);
    b.lose_next_response();
    let r = run(&b, &MemoryFaults::default(), &cfg(), task("clean", 0, 1))
        .await
        .unwrap();
    assert_eq!(ledger(&b), ledger(&reference));
    assert_eq!(
        (r.totals, r.postings_written),
        (r0.totals, r0.postings_written)
    );
}

#[tokio::test]
async fn a_partition_failing_part_way_then_retried_ends_as_the_clean_run() {
    let (reference, r0) = clean(80).await;
    let b = book(80);
    let faults = MemoryFaults::default();
    let mut t = task("clean", 0, 1);
    t.fault = Some(Fault {
        fail_after_accounts: 20,
        failures: 1,
        partition: None,
    });
    let e = run(&b, &faults, &cfg(), t.clone()).await.unwrap_err();
    assert_eq!(e.name, "TransientStoreError");
    assert!(
        !b.ledger().is_empty() && b.ledger().len() < reference.ledger().len(),
        "failed part-way"
    );
    let r = run(&b, &faults, &cfg(), t).await.unwrap();
    assert_eq!(ledger(&b), ledger(&reference));
    assert_eq!(
        (r.totals, r.postings_written, r.accounts_accrued),
        (r0.totals, r0.postings_written, r0.accounts_accrued)
    );
}

#[tokio::test]
async fn the_fault_switch_is_ignored_unless_enabled() {
    let b = book(30);
    let mut t = task("r", 0, 1);
    t.fault = Some(Fault {
        fail_after_accounts: 1,
        failures: 5,
        partition: None,
    });
    let c = Config {
        fault_injection: false,
        ..cfg()
    };
    assert!(run(&b, &MemoryFaults::default(), &c, t).await.is_ok());
}

#[tokio::test]
async fn partitions_split_the_book_and_together_equal_the_single_path() {
    let (reference, r0) = clean(120).await;
    let b = book(120);
    let mut seen = 0;
    let mut totals = Totals::default();
    for p in 0..4 {
        let r = run(&b, &MemoryFaults::default(), &cfg(), task("clean", p, 4))
            .await
            .unwrap();
        seen += r.accounts_seen;
        for t in r.totals {
            totals.add(t.currency, t.amount, t.postings);
        }
    }
    assert_eq!(seen, r0.accounts_seen);
    assert_eq!(totals.to_vec(), r0.totals);
    assert_eq!(ledger(&b), ledger(&reference));
}

#[tokio::test]
async fn a_catch_up_longer_than_one_transaction_is_posted_in_order() {
    let mut a = account(1);
    a.accrued_through = Some(date("2026-03-01")); // 264 days behind, one posting a day
    let b = MemoryBook::with_accounts([a]);
    let r = run(&b, &MemoryFaults::default(), &cfg(), task("r", 0, 1))
        .await
        .unwrap();
    assert_eq!(r.postings_written + r.zero_postings_skipped, 264);
    assert_eq!(b.ledger().len() as u64, r.postings_written);
    assert!(b.commit_calls() >= 3, "needs more than one transaction");
    assert_eq!(
        b.account("ACC-00001").unwrap().accrued_through,
        Some(date("2026-11-20"))
    );
}

#[tokio::test]
async fn bad_tasks_are_invalid_input() {
    let b = book(1);
    for t in [task("r", 4, 4), task("r", 0, 7), task("", 0, 1)] {
        assert_eq!(
            run(&b, &MemoryFaults::default(), &cfg(), t)
                .await
                .unwrap_err()
                .name,
            "InvalidInput"
        );
    }
}

#[test]
fn the_sample_event_is_a_valid_task() {
    let t: PartitionTask =
        serde_json::from_str(include_str!("../../../events/cob-partition/partition.json")).unwrap();
    assert!(t.partition < t.partition_count);
}

/// A book whose conditional write always fails although the account never
/// changes, as a stored value in a non-canonical form would make it.
struct StuckBook(MemoryBook);

impl AccountBook for StuckBook {
    async fn count_active(&self) -> Result<u64, StoreError> {
        self.0.count_active().await
    }
    async fn active_ids(
        &self,
        shard: u32,
        after: Option<String>,
        limit: u32,
    ) -> Result<tally_aws::ports::IdPage, StoreError> {
        self.0.active_ids(shard, after, limit).await
    }
    async fn load(&self, ids: &[String]) -> Result<Vec<Account>, StoreError> {
        self.0.load(ids).await
    }
    async fn commit(&self, commits: &[AccountCommit]) -> Result<Vec<CommitOutcome>, StoreError> {
        Ok(vec![CommitOutcome::AccountChanged; commits.len()])
    }
}

#[tokio::test]
async fn a_condition_that_can_never_pass_is_a_permanent_error_not_a_retry() {
    let b = StuckBook(book(5));
    let e = run(&b, &MemoryFaults::default(), &cfg(), task("r", 0, 1))
        .await
        .unwrap_err();
    assert_eq!(e.name, "StoreError", "{e}");
}

#[tokio::test]
async fn a_business_date_after_tomorrow_is_refused() {
    let mut t = task("r", 0, 1);
    t.business_date = date("2999-01-01");
    assert_eq!(
        run(&book(1), &MemoryFaults::default(), &cfg(), t)
            .await
            .unwrap_err()
            .name,
        "InvalidInput"
    );
}
