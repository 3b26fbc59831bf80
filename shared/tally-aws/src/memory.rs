//! In-memory ports with the same contracts as the DynamoDB ones, for handler
//! tests. Faults can be injected into `commit` to exercise retries.

use crate::error::StoreError;
use crate::ports::{AccountBook, AccountCommit, CommitOutcome, FaultSwitch, IdPage, Publisher};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use tally_domain::account::{Account, Status};
use tally_domain::ledger::LedgerEntry;
use tally_domain::partition::cob_shard;
use tally_domain::NaiveDate;

#[derive(Default)]
pub struct MemoryBook {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    accounts: BTreeMap<String, Account>,
    ledger: BTreeMap<(String, NaiveDate), LedgerEntry>,
    /// The next `commit` calls to fail with a transient error before doing anything.
    fail_next_commits: u32,
    /// Fail the next commit *after* applying it, as a lost response does.
    lose_next_response: bool,
    commits: u64,
}

impl MemoryBook {
    pub fn with_accounts(accounts: impl IntoIterator<Item = Account>) -> Self {
        let book = MemoryBook::default();
        book.state.lock().unwrap().accounts = accounts
            .into_iter()
            .map(|a| (a.account_id.clone(), a))
            .collect();
        book
    }

    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.state
            .lock()
            .unwrap()
            .ledger
            .values()
            .cloned()
            .collect()
    }

    pub fn account(&self, id: &str) -> Option<Account> {
        self.state.lock().unwrap().accounts.get(id).cloned()
    }

    pub fn fail_next_commits(&self, n: u32) {
        self.state.lock().unwrap().fail_next_commits = n;
    }

    pub fn lose_next_response(&self) {
        self.state.lock().unwrap().lose_next_response = true;
    }

    pub fn commit_calls(&self) -> u64 {
        self.state.lock().unwrap().commits
    }
}

impl AccountBook for MemoryBook {
    async fn count_active(&self) -> Result<u64, StoreError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .accounts
            .values()
            .filter(|a| a.status == Status::Active)
            .count() as u64)
    }

    async fn active_ids(
        &self,
        shard: u32,
        after: Option<String>,
        limit: u32,
    ) -> Result<IdPage, StoreError> {
        let st = self.state.lock().unwrap();
        let mut ids: Vec<String> = st
            .accounts
            .values()
            .filter(|a| a.status == Status::Active && cob_shard(&a.account_id) == shard)
            .map(|a| a.account_id.clone())
            .filter(|id| after.as_ref().is_none_or(|x| id > x))
            .take(limit as usize + 1)
            .collect();
        let next = if ids.len() > limit as usize {
            ids.truncate(limit as usize);
            ids.last().cloned()
        } else {
            None
        };
        Ok(IdPage { ids, next })
    }

    async fn load(&self, ids: &[String]) -> Result<Vec<Account>, StoreError> {
        let st = self.state.lock().unwrap();
        Ok(ids
            .iter()
            .filter_map(|id| st.accounts.get(id).cloned())
            .collect())
    }

    async fn commit(&self, commits: &[AccountCommit]) -> Result<Vec<CommitOutcome>, StoreError> {
        let mut st = self.state.lock().unwrap();
        st.commits += 1;
        if st.fail_next_commits > 0 {
            st.fail_next_commits -= 1;
            return Err(StoreError::Transient("injected: throttled".into()));
        }
        let current = |st: &State, c: &AccountCommit| {
            st.accounts.get(&c.before.account_id).is_some_and(|a| {
                a.status == Status::Active
                    && a.balance == c.before.balance
                    && a.annual_rate == c.before.annual_rate
                    && a.accrued_through == c.before.accrued_through
                    && a.residual == c.before.residual
                    && a.currency == c.before.currency
                    && a.product == c.before.product
                    && a.day_count == c.before.day_count
                    && a.opened_on == c.before.opened_on
            })
        };
        let outcomes: Vec<CommitOutcome> = commits
            .iter()
            .map(|c| {
                if current(&st, c) {
                    CommitOutcome::NotApplied
                } else {
                    CommitOutcome::AccountChanged
                }
            })
            .collect();
        for (c, o) in commits.iter().zip(&outcomes) {
            if *o == CommitOutcome::NotApplied {
                if let Some(e) = c.entries.iter().find(|e| {
                    st.ledger
                        .contains_key(&(e.account_id.clone(), e.accrual_date))
                }) {
                    return Err(StoreError::Inconsistent(format!(
                        "entry {} {} exists",
                        e.account_id, e.accrual_date
                    )));
                }
            }
        }
        if outcomes.contains(&CommitOutcome::AccountChanged) {
            return Ok(outcomes);
        }
        for c in commits {
            for e in &c.entries {
                st.ledger
                    .insert((e.account_id.clone(), e.accrual_date), e.clone());
            }
            let a = st
                .accounts
                .get_mut(&c.before.account_id)
                .expect("checked above");
            a.accrued_through = Some(c.accrued_through);
            a.residual = c.residual;
            a.last_run = Some(c.mark.clone());
        }
        if std::mem::take(&mut st.lose_next_response) {
            return Err(StoreError::Transient(
                "injected: response lost after commit".into(),
            ));
        }
        Ok(vec![CommitOutcome::Committed; commits.len()])
    }
}

#[derive(Default)]
pub struct MemoryFaults {
    used: Mutex<HashMap<(String, u32), u32>>,
}

impl FaultSwitch for MemoryFaults {
    async fn trip(&self, run_id: &str, partition: u32, failures: u32) -> Result<bool, StoreError> {
        let mut used = self.used.lock().unwrap();
        let n = used.entry((run_id.to_owned(), partition)).or_default();
        if *n < failures {
            *n += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

/// Records what was published; can be told to fail transiently.
#[derive(Default)]
pub struct MemoryPublisher {
    pub events: Mutex<Vec<(String, serde_json::Value)>>,
    pub alarms: Mutex<Vec<(String, String)>>,
    pub fail_next: Mutex<u32>,
}

impl MemoryPublisher {
    fn maybe_fail(&self) -> Result<(), StoreError> {
        let mut n = self.fail_next.lock().unwrap();
        if *n > 0 {
            *n -= 1;
            return Err(StoreError::Transient("injected: throttled".into()));
        }
        Ok(())
    }
}

impl Publisher for MemoryPublisher {
    async fn put_event(
        &self,
        detail_type: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.maybe_fail()?;
        self.events
            .lock()
            .unwrap()
            .push((detail_type.to_owned(), detail.clone()));
        Ok(())
    }
    async fn alarm(&self, subject: &str, message: &str) -> Result<(), StoreError> {
        self.maybe_fail()?;
        self.alarms
            .lock()
            .unwrap()
            .push((subject.to_owned(), message.to_owned()));
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Reconciliation
// ---------------------------------------------------------------------------

use crate::ports::{Checkpoint, IngestProgress, ObjectRef, ObjectSource, RecordSink, StoredTxn};
use std::sync::atomic::AtomicU64;
use tally_domain::recon::Side;

/// An object's ETag and bytes.
type StoredObject = (String, std::sync::Arc<Vec<u8>>);

/// Landed objects in memory, by key, with their ETags.
#[derive(Default)]
pub struct MemoryObjects {
    objects: Mutex<HashMap<String, StoredObject>>,
    opens: Mutex<Vec<(String, u64)>>,
}

impl MemoryObjects {
    /// Stores `bytes` under `key` and returns its reference (ETag: a hash of
    /// the content, as S3's is for a single-part upload).
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> ObjectRef {
        let etag = format!("{:016x}", tally_domain::partition::fnv1a_64(&bytes));
        let size_bytes = bytes.len() as u64;
        self.objects
            .lock()
            .unwrap()
            .insert(key.into(), (etag.clone(), std::sync::Arc::new(bytes)));
        ObjectRef {
            bucket: "memory".into(),
            key: key.into(),
            etag,
            size_bytes,
        }
    }

    /// Every `open` so far: (key, offset).
    pub fn opens(&self) -> Vec<(String, u64)> {
        self.opens.lock().unwrap().clone()
    }
}

impl ObjectSource for MemoryObjects {
    type Reader = std::io::Cursor<ArcBytes>;
    async fn open(&self, obj: &ObjectRef, offset: u64) -> Result<Self::Reader, StoreError> {
        self.opens.lock().unwrap().push((obj.key.clone(), offset));
        let objects = self.objects.lock().unwrap();
        let (etag, bytes) = objects
            .get(&obj.key)
            .ok_or_else(|| StoreError::Permanent(format!("no object {}", obj.key)))?;
        if *etag != obj.etag {
            return Err(StoreError::Permanent(format!(
                "{}: ETag is {etag}, expected {} (replaced mid-ingest)",
                obj.key, obj.etag
            )));
        }
        let mut c = std::io::Cursor::new(ArcBytes(bytes.clone()));
        c.set_position(offset);
        Ok(c)
    }
}

/// Shared bytes that a `Cursor` can read.
#[derive(Clone)]
pub struct ArcBytes(std::sync::Arc<Vec<u8>>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Records in memory, keyed like the table: (side, pk, transaction id).
#[derive(Default)]
pub struct MemoryRecords {
    state: Mutex<RecordsState>,
}

#[derive(Default)]
struct RecordsState {
    records: BTreeMap<(String, String, String), StoredTxn>,
    /// Puts received (records), duplicates included.
    puts: u64,
    /// Throttle: the next calls answered with some items unprocessed
    /// (the first half of each batch written, the rest retried).
    throttle_next_calls: u32,
    throttled: u64,
    /// Write calls made (each retry is a call).
    calls: u64,
    /// Calls after this many fail with a transient error.
    fail_after_calls: Option<u64>,
}

impl MemoryRecords {
    /// Makes the next `calls` batch writes come back partly unprocessed, as
    /// DynamoDB does under throttling.
    pub fn throttle_next(&self, calls: u32) {
        self.state.lock().unwrap().throttle_next_calls = calls;
    }

    /// Makes every write call after the first `calls` (retries included)
    /// fail as a batch does that is still unprocessed after its last attempt.
    pub fn fail_after_calls(&self, calls: u64) {
        self.state.lock().unwrap().fail_after_calls = Some(calls);
    }

    /// Lets writes succeed again.
    pub fn stop_failing(&self) {
        self.state.lock().unwrap().fail_after_calls = None;
    }

    pub fn records(&self, side: Side) -> Vec<StoredTxn> {
        let side = format!("{side:?}");
        self.state
            .lock()
            .unwrap()
            .records
            .iter()
            .filter(|((s, _, _), _)| *s == side)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Record puts received in all (a re-written record counts again).
    pub fn puts(&self) -> u64 {
        self.state.lock().unwrap().puts
    }

    pub fn throttled(&self) -> u64 {
        self.state.lock().unwrap().throttled
    }

    /// Write calls made in all, retries included.
    pub fn calls(&self) -> u64 {
        self.state.lock().unwrap().calls
    }
}

impl RecordSink for MemoryRecords {
    async fn put_records(
        &self,
        side: Side,
        records: &[StoredTxn],
        retries: &AtomicU64,
    ) -> Result<(), StoreError> {
        if records.len() > 25 {
            return Err(StoreError::Permanent(format!(
                "{} records in one batch (at most 25)",
                records.len()
            )));
        }
        let mut pending: Vec<&StoredTxn> = records.iter().collect();
        while !pending.is_empty() {
            let mut st = self.state.lock().unwrap();
            st.calls += 1;
            if st.fail_after_calls.is_some_and(|n| st.calls > n) {
                return Err(StoreError::Transient(format!(
                    "BatchWriteItem: {} items still unprocessed (injected)",
                    pending.len()
                )));
            }
            let cut = if st.throttle_next_calls > 0 {
                st.throttle_next_calls -= 1;
                st.throttled += 1;
                pending.len() / 2
            } else {
                pending.len()
            };
            for r in pending.drain(..cut) {
                st.puts += 1;
                st.records.insert(
                    (
                        format!("{side:?}"),
                        r.pk.clone(),
                        crate::recon::record_sk(r.version, &r.txn.transaction_id),
                    ),
                    r.clone(),
                );
            }
            if !pending.is_empty() {
                retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

#[derive(Default)]
pub struct MemoryProgress {
    checkpoints: Mutex<HashMap<String, Checkpoint>>,
}

impl MemoryProgress {
    pub fn get(&self, ingest_id: &str) -> Option<Checkpoint> {
        self.checkpoints.lock().unwrap().get(ingest_id).copied()
    }
}

impl IngestProgress for MemoryProgress {
    async fn checkpoint(&self, ingest_id: &str) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.get(ingest_id))
    }
    async fn save_checkpoint(&self, ingest_id: &str, cp: Checkpoint) -> Result<(), StoreError> {
        let mut m = self.checkpoints.lock().unwrap();
        let e = m.entry(ingest_id.into()).or_default();
        if cp.records_applied >= e.records_applied && cp.offset_bytes >= e.offset_bytes {
            *e = cp;
        }
        Ok(())
    }
}

/// Rejected objects in memory: key → reason JSON, and the keys copied.
#[derive(Default)]
pub struct MemoryQuarantine {
    pub rejected: Mutex<BTreeMap<String, String>>,
    pub copies: Mutex<Vec<String>>,
}

impl crate::ports::Quarantine for MemoryQuarantine {
    async fn reject(
        &self,
        obj: &ObjectRef,
        reason_json: &str,
        copy: bool,
    ) -> Result<(), StoreError> {
        self.rejected
            .lock()
            .unwrap()
            .insert(format!("rejected/{}", obj.key), reason_json.into());
        if copy {
            self.copies
                .lock()
                .unwrap()
                .push(format!("rejected/{}", obj.key));
        }
        Ok(())
    }
}

use crate::ports::{Acceptance, ReconState, RecordSource, SideManifest};
use tally_domain::recon::matching::ShardSummary;

/// Reconciliation state in memory.
#[derive(Default)]
pub struct MemoryReconState {
    outcomes: Mutex<HashMap<String, serde_json::Value>>,
    sides: Mutex<HashMap<(String, NaiveDate, Side), SideManifest>>,
    claims: Mutex<HashMap<String, String>>,
    summaries: Mutex<BTreeMap<(String, u32), ShardSummary>>,
    statuses: Mutex<HashMap<(String, NaiveDate), serde_json::Value>>,
}

impl ReconState for MemoryReconState {
    async fn put_outcome(&self, id: &str, o: &serde_json::Value) -> Result<(), StoreError> {
        self.outcomes.lock().unwrap().insert(id.into(), o.clone());
        Ok(())
    }
    async fn outcome(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self.outcomes.lock().unwrap().get(id).cloned())
    }
    async fn accept(
        &self,
        program_id: &str,
        file_date: NaiveDate,
        m: &SideManifest,
    ) -> Result<Acceptance, StoreError> {
        let mut sides = self.sides.lock().unwrap();
        let key = (program_id.to_owned(), file_date, m.side);
        match sides.get(&key) {
            Some(cur) if cur.version > m.version => Ok(Acceptance::Superseded {
                current: cur.version,
            }),
            _ => {
                sides.insert(key, m.clone());
                Ok(Acceptance::Accepted)
            }
        }
    }
    async fn manifests(
        &self,
        program_id: &str,
        file_date: NaiveDate,
    ) -> Result<(Option<SideManifest>, Option<SideManifest>), StoreError> {
        let sides = self.sides.lock().unwrap();
        let get = |side| {
            sides
                .get(&(program_id.to_owned(), file_date, side))
                .cloned()
        };
        Ok((get(Side::Settlement), get(Side::Internal)))
    }
    async fn claim(
        &self,
        _program_id: &str,
        _file_date: NaiveDate,
        recon_id: &str,
        claimant: &str,
    ) -> Result<bool, StoreError> {
        let mut claims = self.claims.lock().unwrap();
        let holder = claims
            .entry(recon_id.into())
            .or_insert_with(|| claimant.into());
        Ok(holder == claimant)
    }
    async fn put_summary(&self, recon_id: &str, s: &ShardSummary) -> Result<(), StoreError> {
        self.summaries
            .lock()
            .unwrap()
            .insert((recon_id.into(), s.shard), s.clone());
        Ok(())
    }
    async fn summaries(
        &self,
        _program_id: &str,
        _file_date: NaiveDate,
        recon_id: &str,
    ) -> Result<Vec<ShardSummary>, StoreError> {
        Ok(self
            .summaries
            .lock()
            .unwrap()
            .iter()
            .filter(|((r, _), _)| r == recon_id)
            .map(|(_, s)| s.clone())
            .collect())
    }
    async fn put_status(
        &self,
        program_id: &str,
        file_date: NaiveDate,
        status: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.statuses
            .lock()
            .unwrap()
            .insert((program_id.into(), file_date), status.clone());
        Ok(())
    }
    async fn status(
        &self,
        program_id: &str,
        file_date: NaiveDate,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self
            .statuses
            .lock()
            .unwrap()
            .get(&(program_id.to_owned(), file_date))
            .cloned())
    }
}

impl RecordSource for MemoryRecords {
    async fn shard_records(
        &self,
        side: Side,
        pk: &str,
        version: u64,
    ) -> Result<Vec<StoredTxn>, StoreError> {
        // BTreeMap order is (side, pk, version, transaction id): one
        // version's records are already sorted by id.
        Ok(self
            .records(side)
            .into_iter()
            .filter(|r| r.pk == pk && r.version == version)
            .collect())
    }
}

/// Objects written, by key.
#[derive(Default)]
pub struct MemoryBlobs {
    pub objects: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl crate::ports::Blobs for MemoryBlobs {
    async fn put(&self, key: &str, body: Vec<u8>, _content_type: &str) -> Result<(), StoreError> {
        self.objects.lock().unwrap().insert(key.into(), body);
        Ok(())
    }
}
