//! The COB partition: accrues every ACTIVE account in one hash bucket for the
//! business date, posting each day exactly once however often it is retried.
//!
//! # Layout
//!
//! - [`Config`]: limits read once from the environment.
//! - [`run`]: the engine, over the [`AccountBook`], [`RunStore`] and
//!   [`FaultSwitch`] ports. After every page it reports its progress to the
//!   run record and learns whether the run is still `EXECUTING`; a canceled
//!   run stops it there (every account it wrote is whole: each account's
//!   postings and state are one transaction) with `RunCanceled`.
//! - [`plan_commit`]: one account's next atomic step.
//!
//! Memory is bounded by `write_concurrency × page_size` accounts: ids are read
//! a page at a time from the shard index, and pages are processed as a
//! bounded concurrent stream.

use futures::{StreamExt, TryStreamExt};
use std::time::Instant;
use tally_aws::config::{bounded, switch, ConfigError};
use tally_aws::dynamo::TRANSACT_ITEMS_MAX;
use tally_aws::handler_error::HandlerError;
use tally_aws::ports::{
    AccountBook, AccountCommit, CommitOutcome, FaultSwitch, Heartbeat, RunStore,
};
use tally_aws::retry::Backoff;
use tally_aws::StoreError;
use tally_domain::account::{Account, RunMark};
use tally_domain::accrual::{accrue_limited, first_day, DayAccrual};
use tally_domain::cob::{
    check_business_date, check_run_id, PartitionResult, PartitionStatus, PartitionTask, Totals,
};
use tally_domain::ledger::LedgerEntry;
use tally_domain::partition::{check_partition_count, shards_of};
use tally_domain::run::{unit_name, UnitRecord};
use tally_domain::{Decimal, NaiveDate};

/// Rounds of re-reading an account whose state moved under us (another run,
/// or catch-up longer than one transaction) before giving up.
const ROUNDS_MAX: u32 = 200;

/// Transactions of one page committed at once. A page of 100 accounts is
/// two to four transactions (100 items each); a page of long catch-ups can
/// be up to 100. In flight per partition: this × `write_concurrency`.
pub const TRANSACTIONS_IN_FLIGHT: usize = 4;

#[derive(Debug, Clone)]
pub struct Config {
    /// Account ids read per index page (1–100).
    pub page_size: u32,
    /// Pages processed at once (1–32).
    pub write_concurrency: usize,
    /// Whether the test-only fault switch in a task is honoured.
    pub fault_injection: bool,
    pub backoff: Backoff,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Ok(Config {
            page_size: bounded("COB_PAGE_SIZE", 100, 1, 100)?,
            write_concurrency: bounded("COB_WRITE_CONCURRENCY", 8, 1, 32)?,
            fault_injection: switch("TALLY_FAULT_INJECTION")?,
            backoff: Backoff::DEFAULT,
        })
    }
}

/// Counters for one partition attempt; merged page by page.
#[derive(Debug, Default, Clone)]
struct Stats {
    seen: u64,
    accrued_by_run: u64,
    already: u64,
    postings: u64,
    zero_days: u64,
    totals: Totals,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.seen += o.seen;
        self.accrued_by_run += o.accrued_by_run;
        self.already += o.already;
        self.postings += o.postings;
        self.zero_days += o.zero_days;
        self.totals.absorb(o.totals);
    }

    /// Counts an account that is accrued through the business date: what
    /// this run posted to it (this attempt or an earlier one), or nothing
    /// when another run did it.
    fn count_done(&mut self, a: &Account, run_id: &str) {
        match &a.last_run {
            Some(m) if m.run_id == run_id => {
                self.accrued_by_run += 1;
                self.postings += m.postings;
                self.zero_days += m.zero_days;
                self.totals.add(a.currency, m.amount, m.postings);
            }
            _ => self.already += 1,
        }
    }
}

/// The next atomic step for `account`: its days from [`first_day`] through
/// `business_date`, cut where the ledger entries would overflow one
/// transaction. `None` when there is nothing to accrue.
pub fn plan_commit(
    account: &Account,
    business_date: NaiveDate,
    run_id: &str,
    days: &mut Vec<DayAccrual>,
) -> Result<Option<AccountCommit>, HandlerError> {
    if first_day(account, business_date).is_none() {
        return Ok(None);
    }
    // At most one transaction's worth of postings (the account takes one item).
    accrue_limited(account, business_date, days, TRANSACT_ITEMS_MAX - 1)
        .map_err(|e| HandlerError::invalid_input(e.to_string()))?;
    let mut entries = Vec::new();
    let mut last = days[0];
    let mut zero_days = 0;
    for d in days.iter() {
        if d.posted.is_zero() {
            zero_days += 1;
        } else {
            entries.push(LedgerEntry::new(
                &account.account_id,
                account.product,
                d.date,
                account.currency,
                d.posted,
                run_id,
            ));
        }
        last = *d;
    }
    let amount: Decimal = entries.iter().map(|e| e.amount).sum();
    let mark = match &account.last_run {
        Some(m) if m.run_id == run_id => RunMark {
            run_id: run_id.into(),
            postings: m.postings + entries.len() as u64,
            amount: m.amount + amount,
            zero_days: m.zero_days + zero_days,
        },
        _ => RunMark {
            run_id: run_id.into(),
            postings: entries.len() as u64,
            amount,
            zero_days,
        },
    };
    Ok(Some(AccountCommit {
        before: account.clone(),
        entries,
        accrued_through: last.date,
        residual: last.residual,
        mark,
    }))
}

/// Groups commits into transactions of at most [`TRANSACT_ITEMS_MAX`] items.
pub fn transactions(commits: Vec<AccountCommit>) -> Vec<Vec<AccountCommit>> {
    let mut out: Vec<Vec<AccountCommit>> = Vec::new();
    let mut items = 0;
    for c in commits {
        if out.is_empty() || items + c.items() > TRANSACT_ITEMS_MAX {
            out.push(Vec::new());
            items = 0;
        }
        items += c.items();
        out.last_mut().expect("pushed above").push(c);
    }
    out
}

/// Accrues one page of accounts to completion.
async fn process_page<B: AccountBook>(
    book: &B,
    cfg: &Config,
    task: &PartitionTask,
    ids: Vec<String>,
) -> Result<Stats, HandlerError> {
    let mut stats = Stats::default();
    let mut days = Vec::new();
    let mut to_load = ids;
    let mut first_round = true;
    // Accounts whose write failed its condition, as they were when computed.
    let mut changed: std::collections::HashMap<String, Account> = std::collections::HashMap::new();
    for _round in 0..ROUNDS_MAX {
        if to_load.is_empty() {
            return Ok(stats);
        }
        let accounts = book.load(&to_load).await?;
        for a in &accounts {
            if changed
                .remove(&a.account_id)
                .is_some_and(|before| before == *a)
            {
                // Re-read unchanged, so the same condition would fail forever.
                return Err(StoreError::Permanent(format!(
                    "account {}: the write's condition fails on an unchanged account (stored state not in canonical form?)",
                    a.account_id
                ))
                .into());
            }
        }
        let mut commits = Vec::new();
        for a in accounts
            .iter()
            .filter(|a| a.status == tally_domain::account::Status::Active)
        {
            if first_round {
                stats.seen += 1;
            }
            match plan_commit(a, task.business_date, &task.run_id, &mut days)? {
                Some(c) => commits.push(c),
                None => stats.count_done(a, &task.run_id),
            }
        }
        first_round = false;
        // Accounts to look at again: moved under us, or more catch-up to do.
        to_load = Vec::new();
        let mut attempt = 0;
        while !commits.is_empty() {
            let mut retry = Vec::new();
            let mut transient: Option<StoreError> = None;
            let groups = transactions(std::mem::take(&mut commits));
            let mut results = std::pin::pin!(futures::stream::iter(groups)
                .map(|group| async move {
                    let r = book.commit(&group).await;
                    (group, r)
                })
                .buffered(TRANSACTIONS_IN_FLIGHT));
            while let Some((group, result)) = results.next().await {
                match result {
                    Ok(outcomes) => {
                        for (c, o) in group.into_iter().zip(outcomes) {
                            match o {
                                CommitOutcome::Committed
                                    if c.accrued_through >= task.business_date =>
                                {
                                    let mut done = c.before;
                                    done.last_run = Some(c.mark);
                                    stats.count_done(&done, &task.run_id);
                                }
                                // Re-read: the new state tells whether more days remain,
                                // and counts this run's postings exactly once.
                                CommitOutcome::Committed => to_load.push(c.before.account_id),
                                CommitOutcome::AccountChanged => {
                                    to_load.push(c.before.account_id.clone());
                                    changed.insert(c.before.account_id.clone(), c.before);
                                }
                                CommitOutcome::NotApplied => retry.push(c),
                            }
                        }
                    }
                    Err(e) if e.is_transient() => {
                        transient = Some(e);
                        retry.extend(group);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if !retry.is_empty() {
                attempt += 1;
                if attempt >= cfg.backoff.attempts_max {
                    let why = transient
                        .map_or("transaction kept being cancelled".into(), |e| e.to_string());
                    return Err(StoreError::Transient(format!(
                        "giving up after {attempt} attempts: {why}"
                    ))
                    .into());
                }
                cfg.backoff.sleep(attempt).await;
            }
            commits = retry;
        }
    }
    Err(StoreError::Transient(format!("accounts still moving after {ROUNDS_MAX} rounds")).into())
}

/// Accrues every ACTIVE account of the task's hash bucket.
pub async fn run<B: AccountBook, F: FaultSwitch, R: RunStore>(
    book: &B,
    faults: &F,
    runs: &R,
    cfg: &Config,
    task: PartitionTask,
) -> Result<PartitionResult, HandlerError> {
    check_partition_count(task.partition_count)
        .map_err(|e| HandlerError::invalid_input(e.to_string()))?;
    if task.partition >= task.partition_count {
        return Err(HandlerError::invalid_input(format!(
            "partition {} of {}",
            task.partition, task.partition_count
        )));
    }
    check_run_id(&task.run_id).map_err(HandlerError::invalid_input)?;
    check_business_date(task.business_date, chrono::Utc::now().date_naive())
        .map_err(HandlerError::invalid_input)?;
    let fault = task
        .fault
        .clone()
        .filter(|f| cfg.fault_injection && f.partition.is_none_or(|p| p == task.partition));
    if task.fault.is_some() && !cfg.fault_injection {
        tracing::warn!("fault switch in the task ignored: TALLY_FAULT_INJECTION is not enabled");
    }
    let started_at = chrono::Utc::now();
    let clock = Instant::now();

    // One stream of id pages over the bucket's shards, read in order.
    let page_size = cfg.page_size;
    let pages = futures::stream::try_unfold(
        (
            shards_of(task.partition, task.partition_count),
            None::<u32>,
            None::<String>,
        ),
        move |(mut shards, mut shard, mut after)| async move {
            loop {
                let s = match shard {
                    Some(s) => s,
                    None => match shards.next() {
                        Some(s) => {
                            shard = Some(s);
                            s
                        }
                        None => return Ok::<_, HandlerError>(None),
                    },
                };
                let page = book.active_ids(s, after.take(), page_size).await?;
                match page.next {
                    Some(n) => after = Some(n),
                    None => shard = None,
                }
                if !page.ids.is_empty() {
                    return Ok(Some((page.ids, (shards, shard, after))));
                }
            }
        },
    );
    let mut stats = Stats::default();
    let mut pages = std::pin::pin!(pages
        .map_ok(|ids| process_page(book, cfg, &task, ids))
        .try_buffer_unordered(cfg.write_concurrency));
    let unit = unit_name(task.partition);
    while let Some(page) = pages.try_next().await? {
        stats.merge(page);
        if let Heartbeat::Stop(status) = runs
            .heartbeat(&task.run_id, &unit, stats.seen, chrono::Utc::now())
            .await?
        {
            let ended_at = chrono::Utc::now();
            runs.unit_done(
                &task.run_id,
                &unit,
                &UnitRecord {
                    started_at,
                    ended_at,
                    items: stats.seen,
                    postings: stats.postings,
                    duration_ms: clock.elapsed().as_millis() as u64,
                    outcome: "CANCELED".into(),
                },
            )
            .await?;
            tracing::warn!(run_id = task.run_id, partition = task.partition, %status,
                           accounts = stats.seen, "run no longer executing: stopped at a page boundary");
            return Err(HandlerError {
                name: tally_domain::errors::RUN_CANCELED,
                message: format!(
                    "run {} is {status}: partition {} stopped after {} accounts",
                    task.run_id, task.partition, stats.seen
                ),
            });
        }
        if let Some(f) = &fault {
            if stats.seen >= f.fail_after_accounts
                && faults
                    .trip(&task.run_id, task.partition, f.failures)
                    .await?
            {
                return Err(StoreError::Transient(format!(
                    "injected fault: partition {} stopped after {} accounts",
                    task.partition, stats.seen
                ))
                .into());
            }
        }
    }
    let finished_at = chrono::Utc::now();
    let duration_ms = clock.elapsed().as_millis() as u64;
    runs.unit_done(
        &task.run_id,
        &unit,
        &UnitRecord {
            started_at,
            ended_at: finished_at,
            items: stats.seen,
            postings: stats.postings,
            duration_ms,
            outcome: "SUCCEEDED".into(),
        },
    )
    .await?;
    Ok(PartitionResult {
        partition: task.partition,
        partition_count: task.partition_count,
        status: PartitionStatus::Succeeded,
        accounts_seen: stats.seen,
        accounts_accrued: stats.accrued_by_run,
        already_accrued: stats.already,
        postings_written: stats.postings,
        zero_postings_skipped: stats.zero_days,
        totals: stats.totals.to_vec(),
        started_at: Some(started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        finished_at: Some(finished_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        duration_ms,
        error: None,
        cause: None,
    })
}

#[cfg(test)]
mod tests;
