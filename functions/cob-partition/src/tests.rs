use super::*;
use tally_aws::memory::{MemoryBook, MemoryFaults};
use tally_aws::ports::{Patch, RunStore};
use tally_aws::runs::MemoryRuns;
use tally_domain::account::{Product, Status};
use tally_domain::cob::Fault;
use tally_domain::currency::Currency;
use tally_domain::daycount::DayCount;
use tally_domain::run::{RunRecord, RunStatus};

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
    let r = run(
        &b,
        &MemoryFaults::default(),
        &MemoryRuns::default(),
        &cfg(),
        task("clean", 0, 1),
    )
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
    let again = run(
        &b,
        &MemoryFaults::default(),
        &MemoryRuns::default(),
        &cfg(),
        task("second", 0, 1),
    )
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
    let retry = run(
        &b,
        &MemoryFaults::default(),
        &MemoryRuns::default(),
        &cfg(),
        task("clean", 0, 1),
    )
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
    let r = run(
        &b,
        &MemoryFaults::default(),
        &MemoryRuns::default(),
        &cfg(),
        task("clean", 0, 1),
    )
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
    let r = run(
        &b,
        &MemoryFaults::default(),
        &MemoryRuns::default(),
        &cfg(),
        task("clean", 0, 1),
    )
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
    let e = run(&b, &faults, &MemoryRuns::default(), &cfg(), t.clone())
        .await
        .unwrap_err();
    assert_eq!(e.name, "TransientStoreError");
    assert!(
        !b.ledger().is_empty() && b.ledger().len() < reference.ledger().len(),
        "failed part-way"
    );
    let r = run(&b, &faults, &MemoryRuns::default(), &cfg(), t)
        .await
        .unwrap();
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
    assert!(
        run(&b, &MemoryFaults::default(), &MemoryRuns::default(), &c, t)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn partitions_split_the_book_and_together_equal_the_single_path() {
    let (reference, r0) = clean(120).await;
    let b = book(120);
    let mut seen = 0;
    let mut totals = Totals::default();
    for p in 0..4 {
        let r = run(
            &b,
            &MemoryFaults::default(),
            &MemoryRuns::default(),
            &cfg(),
            task("clean", p, 4),
        )
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
    let r = run(
        &b,
        &MemoryFaults::default(),
        &MemoryRuns::default(),
        &cfg(),
        task("r", 0, 1),
    )
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
            run(
                &b,
                &MemoryFaults::default(),
                &MemoryRuns::default(),
                &cfg(),
                t
            )
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
    let e = run(
        &b,
        &MemoryFaults::default(),
        &MemoryRuns::default(),
        &cfg(),
        task("r", 0, 1),
    )
    .await
    .unwrap_err();
    assert_eq!(e.name, "StoreError", "{e}");
}

#[tokio::test]
async fn a_business_date_after_tomorrow_is_refused() {
    let mut t = task("r", 0, 1);
    t.business_date = date("2999-01-01");
    assert_eq!(
        run(
            &book(1),
            &MemoryFaults::default(),
            &MemoryRuns::default(),
            &cfg(),
            t
        )
        .await
        .unwrap_err()
        .name,
        "InvalidInput"
    );
}

async fn executing(runs: &MemoryRuns, attempt: u32) -> String {
    let d = date("2026-11-20");
    let now = chrono::Utc::now();
    let (r, _) = runs
        .submit(&|a| RunRecord::new_cob(d, a.max(attempt), RunStatus::Initiated, now))
        .await
        .unwrap();
    runs.transition(
        &r.run_id,
        RunStatus::Executing,
        now,
        &Patch {
            units_total: Some(1),
            ..Patch::default()
        },
    )
    .await
    .unwrap();
    r.run_id
}

#[tokio::test]
async fn a_partition_reports_progress_and_its_unit_to_the_run_record() {
    let b = book(100);
    let runs = MemoryRuns::default();
    let id = executing(&runs, 1).await;
    let r = run(&b, &MemoryFaults::default(), &runs, &cfg(), task(&id, 0, 1))
        .await
        .unwrap();
    let rec = runs.get(&id).await.unwrap().unwrap();
    let unit = &rec.units["p0"];
    assert_eq!(
        (unit.items, unit.postings),
        (r.accounts_seen, r.postings_written)
    );
    assert_eq!(unit.outcome, "SUCCEEDED");
    assert_eq!(rec.progress["p0"], r.accounts_seen);
    assert_eq!(rec.items_processed(), r.accounts_seen);
    // A retried partition does not record its unit twice (the first report stands).
    run(&b, &MemoryFaults::default(), &runs, &cfg(), task(&id, 0, 1))
        .await
        .unwrap();
    assert_eq!(runs.get(&id).await.unwrap().unwrap().units.len(), 1);
}

#[tokio::test]
async fn a_canceled_run_stops_its_partition_at_a_page_with_every_account_whole_and_a_rerun_completes_once(
) {
    let n = 300;
    let (reference, _) = clean(n).await;
    let b = book(n);
    let runs = MemoryRuns::default();
    let first = executing(&runs, 1).await;
    runs.cancel_after_heartbeats(5);
    let e = run(
        &b,
        &MemoryFaults::default(),
        &runs,
        &cfg(),
        task(&first, 0, 1),
    )
    .await
    .unwrap_err();
    assert_eq!(e.name, "RunCanceled", "{e}");
    let rec = runs.get(&first).await.unwrap().unwrap();
    assert_eq!(rec.status, RunStatus::Canceled);
    assert_eq!(rec.units["p0"].outcome, "CANCELED");
    // Stopped part-way: some accounts accrued, some not, none half-done.
    let ledger_now = b.ledger();
    let (mut done, mut untouched) = (0, 0);
    for i in 0..n {
        let a = b.account(&account(i).account_id).unwrap();
        if a.status != Status::Active {
            continue;
        }
        let entries = ledger_now
            .iter()
            .filter(|e| e.account_id == a.account_id)
            .count();
        match a.accrued_through {
            Some(d) if d == date("2026-11-20") => done += 1,
            Some(d) if d == date("2026-11-17") => {
                assert_eq!(entries, 0, "{} has entries but no state", a.account_id);
                untouched += 1;
            }
            other => panic!("{}: accrued through {other:?}", a.account_id),
        }
    }
    assert!(
        done > 0 && untouched > 0,
        "done {done}, untouched {untouched}"
    );
    // The date submitted again is attempt 2 and completes it exactly once.
    let second = executing(&runs, 2).await;
    assert_ne!(second, first);
    run(
        &b,
        &MemoryFaults::default(),
        &runs,
        &cfg(),
        task(&second, 0, 1),
    )
    .await
    .unwrap();
    assert_eq!(ledger(&b), ledger(&reference));
}
