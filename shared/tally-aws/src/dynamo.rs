//! DynamoDB adapters: the account book, the ledger, the fault switch.
//!
//! Why `TransactWriteItems` for postings: a posting and its account's
//! `accrued_through`/`residual` must move together, exactly once per
//! `(accrual_date, account_id)`. One transaction holds, per account, a
//! conditional `Update` of the account (its state must still be the one the
//! posting was computed from) and a `Put` of each ledger entry conditioned on
//! `attribute_not_exists`. A retried write, partition or run, or a second run
//! racing for the same date, fails the account's condition and writes
//! nothing; the partition then re-reads the account and finds it accrued.
//! Cost: transactional writes bill two write units per item, so an account
//! with one posting costs 4 WCU (two items, ≤ 1 KB each) against 2 WCU for
//! unconditional `BatchWriteItem`, which could not keep the two together or
//! refuse a duplicate. Up to 100 items go in one transaction, so a page of
//! accounts is one or two round trips. `BatchWriteItem` is used where
//! overwriting is the meaning: the book import.

use crate::error::{classify, condition_met, StoreError};
use crate::ports::{AccountBook, AccountCommit, CommitOutcome, FaultSwitch, IdPage};
use crate::retry::Backoff;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, PutRequest, Select, TransactWriteItem, Update,
    WriteRequest,
};
use aws_sdk_dynamodb::Client;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tally_domain::account::{Account, Product, RunMark, Status};
use tally_domain::currency::Currency;
use tally_domain::ledger::LedgerEntry;
use tally_domain::money::format_amount;
use tally_domain::partition::{cob_shard, COB_SHARD_COUNT};
use tally_domain::{Decimal, NaiveDate};

pub const COB_SHARD_INDEX: &str = "by_cob_shard";
/// DynamoDB's limit on items in one transaction.
pub const TRANSACT_ITEMS_MAX: usize = 100;
/// DynamoDB's limit on keys in one `BatchGetItem`.
pub const BATCH_GET_MAX: usize = 100;
/// DynamoDB's limit on writes in one `BatchWriteItem`.
pub const BATCH_WRITE_MAX: usize = 25;
/// Shards counted at once by `count_active`.
const COUNT_CONCURRENCY: usize = 16;

type Item = HashMap<String, AttributeValue>;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, String> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        Some(_) => Err(format!("`{name}` is not a string")),
        None => Err(format!("`{name}` is missing")),
    }
}

/// The stored form of an account. `cob_shard` is present only while the
/// account is ACTIVE, which keeps the shard index sparse.
pub fn account_item(a: &Account) -> Item {
    let mut item = Item::from([
        ("account_id".into(), s(&a.account_id)),
        ("product".into(), s(a.product.as_str())),
        ("status".into(), s(a.status.as_str())),
        ("currency".into(), s(a.currency.code())),
        ("balance".into(), s(a.balance.to_string())),
        ("annual_rate".into(), s(a.annual_rate.to_string())),
        ("day_count".into(), s(a.day_count.as_str())),
        ("opened_on".into(), s(a.opened_on.to_string())),
        ("residual".into(), s(a.residual.to_string())),
    ]);
    if let Some(d) = a.accrued_through {
        item.insert("accrued_through".into(), s(d.to_string()));
    }
    if a.status == Status::Active {
        item.insert(
            "cob_shard".into(),
            AttributeValue::N(cob_shard(&a.account_id).to_string()),
        );
    }
    if let Some(m) = &a.last_run {
        item.insert("last_run_id".into(), s(&m.run_id));
        item.insert(
            "last_run_postings".into(),
            AttributeValue::N(m.postings.to_string()),
        );
        item.insert("last_run_amount".into(), s(m.amount.to_string()));
        item.insert(
            "last_run_zero_days".into(),
            AttributeValue::N(m.zero_days.to_string()),
        );
    }
    item
}

fn get_n(item: &Item, name: &str) -> Result<u64, String> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| format!("`{name}` is not a whole number")),
        Some(_) => Err(format!("`{name}` is not a number")),
        None => Ok(0),
    }
}

pub fn account_from_item(item: &Item) -> Result<Account, StoreError> {
    let id = get_s(item, "account_id").unwrap_or("?").to_owned();
    let bad = |e: String| StoreError::Permanent(format!("stored account {id}: {e}"));
    let dec = |name: &str| -> Result<Decimal, StoreError> {
        get_s(item, name)
            .map_err(bad)?
            .parse::<Decimal>()
            .map_err(|e| bad(format!("`{name}`: {e}")))
    };
    let date = |v: &str, name: &str| -> Result<NaiveDate, StoreError> {
        v.parse::<NaiveDate>()
            .map_err(|e| bad(format!("`{name}`: {e}")))
    };
    Ok(Account {
        product: Product::parse(get_s(item, "product").map_err(bad)?)
            .ok_or_else(|| bad("bad `product`".into()))?,
        status: Status::parse(get_s(item, "status").map_err(bad)?)
            .ok_or_else(|| bad("bad `status`".into()))?,
        currency: Currency::parse(get_s(item, "currency").map_err(bad)?)
            .map_err(|e| bad(e.to_string()))?,
        balance: dec("balance")?,
        annual_rate: dec("annual_rate")?,
        day_count: get_s(item, "day_count")
            .map_err(bad)?
            .parse()
            .map_err(|e: tally_domain::daycount::UnknownDayCount| bad(e.to_string()))?,
        opened_on: date(get_s(item, "opened_on").map_err(bad)?, "opened_on")?,
        accrued_through: match item.get("accrued_through") {
            Some(AttributeValue::S(v)) => Some(date(v, "accrued_through")?),
            _ => None,
        },
        residual: dec("residual")?,
        last_run: match item.get("last_run_id") {
            Some(AttributeValue::S(run_id)) => Some(RunMark {
                run_id: run_id.clone(),
                postings: get_n(item, "last_run_postings").map_err(bad)?,
                amount: dec("last_run_amount")?,
                zero_days: get_n(item, "last_run_zero_days").map_err(bad)?,
            }),
            _ => None,
        },
        account_id: id,
    })
}

pub fn ledger_item(e: &LedgerEntry) -> Item {
    Item::from([
        ("account_id".into(), s(&e.account_id)),
        ("accrual_date".into(), s(e.accrual_date.to_string())),
        ("currency".into(), s(e.currency.code())),
        ("amount".into(), s(format_amount(e.amount, e.currency))),
        ("debit".into(), s(&e.debit)),
        ("credit".into(), s(&e.credit)),
        ("run_id".into(), s(&e.run_id)),
    ])
}

pub fn ledger_from_item(item: &Item) -> Result<LedgerEntry, StoreError> {
    let bad = |e: String| StoreError::Permanent(format!("stored ledger entry: {e}"));
    let currency =
        Currency::parse(get_s(item, "currency").map_err(bad)?).map_err(|e| bad(e.to_string()))?;
    Ok(LedgerEntry {
        account_id: get_s(item, "account_id").map_err(bad)?.into(),
        accrual_date: get_s(item, "accrual_date")
            .map_err(bad)?
            .parse()
            .map_err(|e| bad(format!("{e}")))?,
        currency,
        amount: get_s(item, "amount")
            .map_err(bad)?
            .parse()
            .map_err(|e| bad(format!("{e}")))?,
        debit: get_s(item, "debit").map_err(bad)?.into(),
        credit: get_s(item, "credit").map_err(bad)?.into(),
        run_id: get_s(item, "run_id").map_err(bad)?.into(),
    })
}

/// The account book and ledger in DynamoDB.
#[derive(Clone)]
pub struct DynamoBook {
    client: Client,
    accounts_table: String,
    ledger_table: String,
    backoff: Backoff,
}

impl DynamoBook {
    pub fn new(
        client: Client,
        accounts_table: impl Into<String>,
        ledger_table: impl Into<String>,
    ) -> Self {
        DynamoBook {
            client,
            accounts_table: accounts_table.into(),
            ledger_table: ledger_table.into(),
            backoff: Backoff::DEFAULT,
        }
    }

    fn account_update(&self, c: &AccountCommit) -> Result<TransactWriteItem, StoreError> {
        let before = &c.before;
        // Every field the postings were computed from: a re-import that changed
        // any of them between the read and this write makes the write fail.
        let mut condition = String::from(
            "#status = :active AND balance = :balance AND annual_rate = :rate AND residual = :old_residual \
             AND currency = :currency AND product = :product AND day_count = :day_count AND opened_on = :opened_on AND ",
        );
        let mut update = Update::builder()
            .table_name(&self.accounts_table)
            .key("account_id", s(&before.account_id))
            .update_expression("SET accrued_through = :through, residual = :residual, last_run_id = :run, last_run_postings = :postings, last_run_amount = :amount, last_run_zero_days = :zero_days")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":active", s(Status::Active.as_str()))
            .expression_attribute_values(":balance", s(before.balance.to_string()))
            .expression_attribute_values(":rate", s(before.annual_rate.to_string()))
            .expression_attribute_values(":old_residual", s(before.residual.to_string()))
            .expression_attribute_values(":currency", s(before.currency.code()))
            .expression_attribute_values(":product", s(before.product.as_str()))
            .expression_attribute_values(":day_count", s(before.day_count.as_str()))
            .expression_attribute_values(":opened_on", s(before.opened_on.to_string()))
            .expression_attribute_values(":through", s(c.accrued_through.to_string()))
            .expression_attribute_values(":residual", s(c.residual.to_string()))
            .expression_attribute_values(":run", s(&c.mark.run_id))
            .expression_attribute_values(":postings", AttributeValue::N(c.mark.postings.to_string()))
            .expression_attribute_values(":amount", s(c.mark.amount.to_string()))
            .expression_attribute_values(":zero_days", AttributeValue::N(c.mark.zero_days.to_string()));
        match before.accrued_through {
            Some(d) => {
                condition.push_str("accrued_through = :old_through");
                update = update.expression_attribute_values(":old_through", s(d.to_string()));
            }
            None => condition.push_str("attribute_not_exists(accrued_through)"),
        }
        let update = update
            .condition_expression(condition)
            .build()
            .map_err(|e| StoreError::Permanent(e.to_string()))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    fn ledger_put(&self, e: &LedgerEntry) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.ledger_table)
            .set_item(Some(ledger_item(e)))
            .condition_expression("attribute_not_exists(account_id)")
            .build()
            .map_err(|e| StoreError::Permanent(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    async fn count_shard(&self, shard: u32) -> Result<u64, StoreError> {
        let mut total = 0u64;
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.accounts_table)
                .index_name(COB_SHARD_INDEX)
                .key_condition_expression("cob_shard = :s")
                .expression_attribute_values(":s", AttributeValue::N(shard.to_string()))
                .select(Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify("Query(count)", e))?;
            total += out.count() as u64;
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(total),
            }
        }
    }

    /// Writes accounts with `BatchWriteItem`, 25 a request, retrying only the
    /// unprocessed items with backoff. Overwrites: the import is the book.
    pub async fn put_accounts(&self, accounts: &[Account]) -> Result<(), StoreError> {
        let requests: Vec<WriteRequest> = accounts
            .iter()
            .map(|a| {
                let put = PutRequest::builder()
                    .set_item(Some(account_item(a)))
                    .build()
                    .map_err(|e| StoreError::Permanent(e.to_string()))?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<Result<_, StoreError>>()?;
        for chunk in requests.chunks(BATCH_WRITE_MAX) {
            self.batch_write(&self.accounts_table, chunk.to_vec())
                .await?;
        }
        Ok(())
    }

    /// One `BatchWriteItem` of at most 25 writes, retrying unprocessed items
    /// (bounded, with full-jitter backoff).
    pub async fn batch_write(
        &self,
        table: &str,
        pending: Vec<WriteRequest>,
    ) -> Result<(), StoreError> {
        batch_write_all(
            &self.client,
            table,
            pending,
            self.backoff,
            &AtomicU64::new(0),
        )
        .await
    }

    /// One page of the ledger (a `Scan`), optionally only one accrual date.
    /// A page is what DynamoDB returns at most: 1 MB, about 4,500 entries.
    pub async fn ledger_page(
        &self,
        date: Option<NaiveDate>,
        start: Option<Item>,
    ) -> Result<(Vec<LedgerEntry>, Option<Item>), StoreError> {
        let mut req = self
            .client
            .scan()
            .table_name(&self.ledger_table)
            .set_exclusive_start_key(start);
        if let Some(d) = date {
            req = req
                .filter_expression("accrual_date = :d")
                .expression_attribute_values(":d", s(d.to_string()));
        }
        let out = req.send().await.map_err(|e| classify("Scan(ledger)", e))?;
        let entries = out
            .items()
            .iter()
            .map(ledger_from_item)
            .collect::<Result<Vec<_>, _>>()?;
        let next = out.last_evaluated_key().filter(|k| !k.is_empty()).cloned();
        Ok((entries, next))
    }
}

impl AccountBook for DynamoBook {
    async fn count_active(&self) -> Result<u64, StoreError> {
        // Exact and cheap: the index holds only the keys of ACTIVE accounts,
        // so counting reads ~40 bytes an account, in 720 parallel slices.
        futures::stream::iter(0..COB_SHARD_COUNT)
            .map(|shard| self.count_shard(shard))
            .buffer_unordered(COUNT_CONCURRENCY)
            .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
            .await
    }

    async fn active_ids(
        &self,
        shard: u32,
        after: Option<String>,
        limit: u32,
    ) -> Result<IdPage, StoreError> {
        let start = after.map(|id| {
            Item::from([
                ("cob_shard".into(), AttributeValue::N(shard.to_string())),
                ("account_id".into(), s(id)),
            ])
        });
        let out = self
            .client
            .query()
            .table_name(&self.accounts_table)
            .index_name(COB_SHARD_INDEX)
            .key_condition_expression("cob_shard = :s")
            .expression_attribute_values(":s", AttributeValue::N(shard.to_string()))
            .limit(limit as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| classify("Query(active ids)", e))?;
        let ids = out
            .items()
            .iter()
            .map(|i| {
                get_s(i, "account_id")
                    .map(str::to_owned)
                    .map_err(StoreError::Permanent)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let next = match out.last_evaluated_key() {
            Some(k) if !k.is_empty() => Some(
                get_s(k, "account_id")
                    .map_err(StoreError::Permanent)?
                    .to_owned(),
            ),
            _ => None,
        };
        Ok(IdPage { ids, next })
    }

    async fn load(&self, ids: &[String]) -> Result<Vec<Account>, StoreError> {
        assert!(
            ids.len() <= BATCH_GET_MAX,
            "load takes at most {BATCH_GET_MAX} ids"
        );
        let mut accounts = Vec::with_capacity(ids.len());
        let mut keys: Vec<Item> = ids
            .iter()
            .map(|id| Item::from([("account_id".into(), s(id))]))
            .collect();
        for attempt in 1..=self.backoff.attempts_max {
            if keys.is_empty() {
                return Ok(accounts);
            }
            let ka = KeysAndAttributes::builder()
                .set_keys(Some(keys.clone()))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Permanent(e.to_string()))?;
            match self
                .client
                .batch_get_item()
                .request_items(&self.accounts_table, ka)
                .send()
                .await
            {
                Ok(out) => {
                    if let Some(items) = out.responses().and_then(|r| r.get(&self.accounts_table)) {
                        for item in items {
                            accounts.push(account_from_item(item)?);
                        }
                    }
                    keys = out
                        .unprocessed_keys()
                        .and_then(|u| u.get(&self.accounts_table))
                        .map(|k| k.keys().to_vec())
                        .unwrap_or_default();
                    if keys.is_empty() {
                        return Ok(accounts);
                    }
                }
                Err(e) => {
                    let e = classify("BatchGetItem(accounts)", e);
                    if !e.is_transient() {
                        return Err(e);
                    }
                }
            }
            self.backoff.sleep(attempt).await;
        }
        Err(StoreError::Transient(format!(
            "BatchGetItem: {} keys unprocessed after {} attempts",
            keys.len(),
            self.backoff.attempts_max
        )))
    }

    async fn commit(&self, commits: &[AccountCommit]) -> Result<Vec<CommitOutcome>, StoreError> {
        let total: usize = commits.iter().map(AccountCommit::items).sum();
        assert!(
            total <= TRANSACT_ITEMS_MAX,
            "a transaction holds at most {TRANSACT_ITEMS_MAX} items, got {total}"
        );
        if commits.is_empty() {
            return Ok(vec![]);
        }
        let mut items = Vec::with_capacity(total);
        for c in commits {
            items.push(self.account_update(c)?);
            for e in &c.entries {
                items.push(self.ledger_put(e)?);
            }
        }
        let err = match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => return Ok(vec![CommitOutcome::Committed; commits.len()]),
            Err(e) => e,
        };
        let reasons: Vec<Option<String>> = match err.as_service_error() {
            Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(t)) => {
                t.cancellation_reasons().iter().map(|r| r.code().map(str::to_owned)).collect()
            }
            _ => return Err(classify("TransactWriteItems", err)),
        };
        let is = |code: &Option<String>, want: &str| code.as_deref() == Some(want);
        // Reasons that mean "this item was fine; the transaction was cancelled
        // for another reason": the commit may be sent again.
        let retryable = |code: &Option<String>| {
            matches!(
                code.as_deref(),
                None | Some(
                    "None"
                        | "TransactionConflict"
                        | "ThrottlingError"
                        | "ProvisionedThroughputExceeded"
                )
            )
        };
        let mut outcomes = Vec::with_capacity(commits.len());
        let mut at = 0;
        for c in commits {
            let own = reasons.get(at..at + c.items()).unwrap_or(&[]);
            at += c.items();
            let account = own.first().cloned().flatten();
            if is(&account, "ConditionalCheckFailed") {
                outcomes.push(CommitOutcome::AccountChanged);
            } else if let Some(bad) = own
                .iter()
                .find(|r| !retryable(r) && !is(r, "ConditionalCheckFailed"))
            {
                return Err(StoreError::Permanent(format!(
                    "TransactWriteItems refused account {}: {:?}",
                    c.before.account_id, bad
                )));
            } else if matches!(account.as_deref(), None | Some("None"))
                && own.iter().skip(1).any(|r| is(r, "ConditionalCheckFailed"))
            {
                // The account's own condition held, yet an entry for a day it
                // says is not accrued exists: the two have diverged.
                let i = own
                    .iter()
                    .skip(1)
                    .position(|r| is(r, "ConditionalCheckFailed"))
                    .unwrap_or(0);
                return Err(StoreError::Inconsistent(format!(
                    "account {} is accrued through {:?} but a ledger entry for {} already exists",
                    c.before.account_id, c.before.accrued_through, c.entries[i].accrual_date
                )));
            } else {
                outcomes.push(CommitOutcome::NotApplied);
            }
        }
        if outcomes.iter().all(|o| *o == CommitOutcome::NotApplied) {
            // Cancelled for conflicts or throttling, not for our conditions.
            return Err(StoreError::Transient(format!(
                "TransactWriteItems cancelled: {reasons:?}"
            )));
        }
        Ok(outcomes)
    }
}

/// The fault switch as counters in the runs table (test-only).
#[derive(Clone)]
pub struct DynamoFaultSwitch {
    pub client: Client,
    pub runs_table: String,
}

impl FaultSwitch for DynamoFaultSwitch {
    async fn trip(&self, run_id: &str, partition: u32, failures: u32) -> Result<bool, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.runs_table)
            .key("run_id", s(format!("fault#{run_id}#{partition}")))
            .update_expression("SET used = if_not_exists(used, :zero) + :one")
            .condition_expression("attribute_not_exists(used) OR used < :max")
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":max", AttributeValue::N(failures.to_string()))
            .send()
            .await;
        condition_met("UpdateItem(fault)", out)
    }
}

/// One `BatchWriteItem` of at most 25 requests, carried to the end: only the
/// items DynamoDB returns as `UnprocessedItems` are sent again, and a
/// throttled or failed call (transient errors only) is repeated, each time
/// after a full-jitter backoff, at most `backoff.attempts_max` calls in all.
/// Each retry is added to `retries` as it is made, so a batch that finally
/// fails still shows the retries it took.
pub async fn batch_write_all(
    client: &Client,
    table: &str,
    mut pending: Vec<WriteRequest>,
    backoff: Backoff,
    retries: &AtomicU64,
) -> Result<(), StoreError> {
    for attempt in 1..=backoff.attempts_max {
        let out = client
            .batch_write_item()
            .request_items(table, pending.clone())
            .send()
            .await;
        match out {
            Ok(out) => {
                pending = out
                    .unprocessed_items()
                    .and_then(|m| m.get(table))
                    .cloned()
                    .unwrap_or_default();
                if pending.is_empty() {
                    return Ok(());
                }
            }
            Err(e) => {
                let e = classify("BatchWriteItem", e);
                if !e.is_transient() {
                    return Err(e);
                }
            }
        }
        if attempt < backoff.attempts_max {
            retries.fetch_add(1, Ordering::Relaxed);
            backoff.sleep(attempt).await;
        }
    }
    Err(StoreError::Transient(format!(
        "BatchWriteItem: {} items still unprocessed after {} attempts",
        pending.len(),
        backoff.attempts_max
    )))
}
