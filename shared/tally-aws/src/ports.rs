//! The narrow interfaces handlers take. Each has a DynamoDB (or AWS)
//! implementation and an in-memory one for handler tests.

use crate::error::StoreError;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use tally_domain::account::{Account, RunMark};
use tally_domain::ledger::LedgerEntry;
use tally_domain::Decimal;
use tally_domain::NaiveDate;

/// One page of active account ids from one index shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdPage {
    pub ids: Vec<String>,
    /// Pass back as `after` for the next page; `None` when the shard is done.
    pub next: Option<String>,
}

/// The accrual of one account, to be applied atomically: its new ledger
/// entries and its new state, conditioned on the state it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountCommit {
    /// The account as read: its `accrued_through` and `residual` are the
    /// condition of the write.
    pub before: Account,
    pub entries: Vec<LedgerEntry>,
    pub accrued_through: NaiveDate,
    pub residual: Decimal,
    /// What this run has posted to the account, including this commit.
    pub mark: RunMark,
}

impl AccountCommit {
    /// Write items this commit needs in a transaction.
    pub fn items(&self) -> usize {
        1 + self.entries.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Entries written and state advanced.
    Committed,
    /// The account's state was no longer the one computed from (another run,
    /// or an earlier attempt of this one, advanced it): nothing was written
    /// for it; re-read and recompute.
    AccountChanged,
    /// The transaction was cancelled because of another commit in it; this
    /// one was valid and may be sent again.
    NotApplied,
}

/// The account book.
pub trait AccountBook: Send + Sync {
    /// Exact number of ACTIVE accounts.
    fn count_active(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Up to `limit` ids of ACTIVE accounts in index shard `shard`, after
    /// `after`, in id order. Bounded by `limit`; pages never overlap.
    fn active_ids(
        &self,
        shard: u32,
        after: Option<String>,
        limit: u32,
    ) -> impl Future<Output = Result<IdPage, StoreError>> + Send;

    /// Strongly consistent read of the accounts that exist among `ids`
    /// (at most 100), in no particular order.
    fn load(&self, ids: &[String])
        -> impl Future<Output = Result<Vec<Account>, StoreError>> + Send;

    /// Applies `commits` (at most 100 items in all) as one all-or-nothing
    /// transaction. Each ledger entry is written only if no entry has its
    /// `(account_id, accrual_date)`; each account only if its state is still
    /// `before`. Idempotent: a commit already applied comes back as
    /// `AccountChanged`, never as a second entry. One outcome per commit, in order.
    fn commit(
        &self,
        commits: &[AccountCommit],
    ) -> impl Future<Output = Result<Vec<CommitOutcome>, StoreError>> + Send;
}

/// The test-only fault switch: lets a partition fail a bounded number of
/// times for a run, across retries of the partition.
pub trait FaultSwitch: Send + Sync {
    /// Consumes one of `failures` for `(run_id, partition)`; `true` when the
    /// caller should fail now. Atomic across concurrent and retried callers.
    fn trip(
        &self,
        run_id: &str,
        partition: u32,
        failures: u32,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Where run outcomes are announced.
pub trait Publisher: Send + Sync {
    /// Puts one event on the bus. Fails unless the bus accepted it.
    fn put_event(
        &self,
        detail_type: &str,
        detail: &serde_json::Value,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Sends an alarm to the operators' topic.
    fn alarm(
        &self,
        subject: &str,
        message: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

// ---------------------------------------------------------------------------
// Settlement reconciliation
// ---------------------------------------------------------------------------

/// A landed object, pinned to one version of its content by its ETag.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
    pub etag: String,
    pub size_bytes: u64,
}

/// Reads landed objects as byte streams.
pub trait ObjectSource: Send + Sync {
    type Reader: tokio::io::AsyncBufRead + Unpin + Send;
    /// The object's bytes from `offset` to the end, streamed (memory does not
    /// grow with the object). Fails with a permanent error if the object's
    /// ETag is no longer `obj.etag` (a new upload replaced it mid-ingest).
    fn open(
        &self,
        obj: &ObjectRef,
        offset: u64,
    ) -> impl Future<Output = Result<Self::Reader, StoreError>> + Send;
}

/// One normalised record as stored under `ProgramID#FileDate#ShardN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTxn {
    /// `ProgramID#FileDate#ShardN`.
    pub pk: String,
    pub txn: tally_domain::recon::Txn,
    /// The file line it came from (1-based).
    pub line: u64,
    /// Settlement: the file sequence; internal: the ingest's version.
    pub version: u64,
    /// Settlement only: the interchange fee (unsigned major units) and sign.
    pub fee: Option<(Decimal, tally_domain::recon::Sign)>,
}

/// Where normalised records are written.
pub trait RecordSink: Send + Sync {
    /// Writes at most 25 records of one side as plain puts (an identical
    /// record written twice is one record: idempotent). Only the items
    /// DynamoDB leaves unprocessed, and throttled calls, are retried, with
    /// bounded backoff and full jitter. Each retry is added to `retries` as it
    /// is made, so the count holds for a batch that finally fails too.
    fn put_records(
        &self,
        side: tally_domain::recon::Side,
        records: &[StoredTxn],
        retries: &AtomicU64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// How far an ingest of one object version has applied its records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Byte offset of the first line not yet applied.
    pub offset_bytes: u64,
    /// Line number of that line (1-based).
    pub next_line: u64,
    /// Records written so far.
    pub records_applied: u64,
}

/// Progress records of ingests.
pub trait IngestProgress: Send + Sync {
    /// The last checkpoint of `ingest_id` (side, program, date and ETag), if any.
    fn checkpoint(
        &self,
        ingest_id: &str,
    ) -> impl Future<Output = Result<Option<Checkpoint>, StoreError>> + Send;
    /// Saves `cp` unless a checkpoint at or beyond it is already stored
    /// (checkpoints only move forward, whoever writes them).
    fn save_checkpoint(
        &self,
        ingest_id: &str,
        cp: Checkpoint,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Where rejected files go.
pub trait Quarantine: Send + Sync {
    /// Writes the reason (JSON) as `rejected/<its key>.reason.json` and,
    /// when `copy`, copies the object under `rejected/<its key>`. Idempotent.
    fn reject(
        &self,
        obj: &ObjectRef,
        reason_json: &str,
        copy: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// One side of a program and date as accepted for reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SideManifest {
    pub side: tally_domain::recon::Side,
    /// Settlement: the file sequence; internal: the records' version.
    pub version: u64,
    pub ingest_id: String,
    pub key: String,
    pub records: u64,
    /// Settlement only: the trailer's control totals.
    pub control: Option<tally_domain::recon::matching::ControlSums>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// This version is now (or already was) the side's current one.
    Accepted,
    /// A higher version is already in: this one changes nothing.
    Superseded { current: u64 },
}

/// Reconciliation state for each program and date: ingest outcomes, the
/// accepted version of each side, claims, shard summaries and status.
pub trait ReconState: Send + Sync {
    /// Stores an ingest's outcome (JSON), overwriting: the same ingest gives
    /// the same outcome.
    fn put_outcome(
        &self,
        ingest_id: &str,
        outcome: &serde_json::Value,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn outcome(
        &self,
        ingest_id: &str,
    ) -> impl Future<Output = Result<Option<serde_json::Value>, StoreError>> + Send;
    /// Makes `m` the side's current version unless a higher one is in
    /// (conditional write: concurrent acceptances of two versions end with
    /// the higher one). Accepting the current version again is `Accepted`.
    fn accept(
        &self,
        program_id: &str,
        file_date: NaiveDate,
        m: &SideManifest,
    ) -> impl Future<Output = Result<Acceptance, StoreError>> + Send;
    /// The current (settlement, internal) manifests.
    fn manifests(
        &self,
        program_id: &str,
        file_date: NaiveDate,
    ) -> impl Future<Output = Result<(Option<SideManifest>, Option<SideManifest>), StoreError>> + Send;
    /// Claims reconciliation `recon_id` for `claimant`; `true` for the first
    /// claimant and for that claimant again (a retry), `false` for others.
    fn claim(
        &self,
        program_id: &str,
        file_date: NaiveDate,
        recon_id: &str,
        claimant: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Stores one shard's summary (overwriting: recomputed summaries of the
    /// same records are equal).
    fn put_summary(
        &self,
        recon_id: &str,
        summary: &tally_domain::recon::matching::ShardSummary,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every stored summary of `recon_id`.
    fn summaries(
        &self,
        program_id: &str,
        file_date: NaiveDate,
        recon_id: &str,
    ) -> impl Future<Output = Result<Vec<tally_domain::recon::matching::ShardSummary>, StoreError>> + Send;
    /// The status record of a program and date (JSON with at least `status`).
    fn put_status(
        &self,
        program_id: &str,
        file_date: NaiveDate,
        status: &serde_json::Value,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn status(
        &self,
        program_id: &str,
        file_date: NaiveDate,
    ) -> impl Future<Output = Result<Option<serde_json::Value>, StoreError>> + Send;
}

/// Reads one shard's records of one side.
pub trait RecordSource: Send + Sync {
    /// Every record under `pk` with `version`, sorted by transaction id
    /// (DynamoDB's sort-key order), read page by page. Memory: one shard,
    /// about records / RECON_SHARD_COUNT.
    fn shard_records(
        &self,
        side: tally_domain::recon::Side,
        pk: &str,
        version: u64,
    ) -> impl Future<Output = Result<Vec<StoredTxn>, StoreError>> + Send;
}

/// Reports and other outputs written as objects.
pub trait Blobs: Send + Sync {
    /// Writes `body` under `key` (overwriting: the same report twice is one).
    fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Whether a start made a new execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    New,
    /// An execution of that name exists (running or finished): nothing new.
    AlreadyExists,
}

/// Starts state machine executions.
pub trait Executions: Send + Sync {
    /// Starts an execution named `name` (names are unique per state machine
    /// for 90 days after an execution ends, which makes this idempotent).
    fn start(
        &self,
        name: &str,
        input: &serde_json::Value,
    ) -> impl Future<Output = Result<Started, StoreError>> + Send;
}

// ---------------------------------------------------------------------------
// Run records
// ---------------------------------------------------------------------------

/// What a status change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Applied,
    /// The run was already in the asked status (a retried writer).
    AlreadyThere,
    /// The run is in a status that may not move there (it stays as it is).
    Refused(tally_domain::run::RunStatus),
    /// No such run.
    Missing,
}

/// What a running unit should do after reporting its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    Continue,
    /// The run is no longer `EXECUTING` (canceled, or ended): stop at once.
    Stop(tally_domain::run::RunStatus),
    /// The run has no record (started before run records, or a direct test
    /// invocation): nothing to report to; go on.
    NoRecord,
}

/// Fields a status change may also set.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    pub units_total: Option<u32>,
    pub execution_arn: Option<String>,
    pub cause: Option<tally_domain::run::RunCause>,
    pub totals: Vec<tally_domain::run::RunTotal>,
    pub counts: std::collections::BTreeMap<String, u64>,
    pub report_key: Option<String>,
}

/// Run records. Every status change is conditional on the current status
/// being one of the new status's predecessors.
pub trait RunStore: Send + Sync {
    fn get(
        &self,
        run_id: &str,
    ) -> impl Future<Output = Result<Option<tally_domain::run::RunRecord>, StoreError>> + Send;

    /// The run holding `business_key` (the latest submitted or registered).
    fn current(
        &self,
        business_key: &str,
    ) -> impl Future<Output = Result<Option<tally_domain::run::RunRecord>, StoreError>> + Send;

    /// Creates the run `make(attempt)` for its business key, unless a run
    /// holds the key that is live or succeeded: then returns that one and
    /// `false`. Two submits racing for a key create one run.
    fn submit(
        &self,
        make: &(dyn Fn(u32) -> tally_domain::run::RunRecord + Sync),
    ) -> impl Future<Output = Result<(tally_domain::run::RunRecord, bool), StoreError>> + Send;

    /// Records a run started outside `submit` (the nightly schedule). Takes
    /// the business key when it is free or its holder failed or was canceled;
    /// otherwise the record names the holder in `duplicate_of`. Idempotent:
    /// an existing record of the run id is returned as it is.
    fn register(
        &self,
        record: tally_domain::run::RunRecord,
    ) -> impl Future<Output = Result<tally_domain::run::RunRecord, StoreError>> + Send;

    fn transition(
        &self,
        run_id: &str,
        to: tally_domain::run::RunStatus,
        at: chrono::DateTime<chrono::Utc>,
        patch: &Patch,
    ) -> impl Future<Output = Result<Transition, StoreError>> + Send;

    /// Reports `items` processed by the running `unit`, if the run is still
    /// `EXECUTING`; otherwise tells the unit to stop.
    fn heartbeat(
        &self,
        run_id: &str,
        unit: &str,
        items: u64,
        at: chrono::DateTime<chrono::Utc>,
    ) -> impl Future<Output = Result<Heartbeat, StoreError>> + Send;

    /// Names an execution working the run (idempotent), only while the run
    /// is `EXECUTING`; `false` when it has ended or has no record (the
    /// execution then belongs to the next attempt).
    fn attach(
        &self,
        run_id: &str,
        name: &str,
        execution_arn: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Ends a run whose executions all found nothing to do: moves it from
    /// `EXECUTING` to `to` with `patch`, only if it still names exactly
    /// `executions` executions (none joined since the caller read it).
    /// Otherwise `Refused` with the run's status, or `AlreadyThere`.
    fn end_idle(
        &self,
        run_id: &str,
        to: tally_domain::run::RunStatus,
        at: chrono::DateTime<chrono::Utc>,
        patch: &Patch,
        executions: usize,
    ) -> impl Future<Output = Result<Transition, StoreError>> + Send;

    /// Sets `patch`'s fields on a run that is in `status`, leaving its
    /// status and times; `false` when it is not (or has no record).
    fn amend(
        &self,
        run_id: &str,
        status: tally_domain::run::RunStatus,
        at: chrono::DateTime<chrono::Utc>,
        patch: &Patch,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records that the execution `name` found nothing to do, and what it
    /// found (idempotent); `false` when the run has no record.
    fn mark_idle(
        &self,
        run_id: &str,
        name: &str,
        found: &tally_domain::run::RunCause,
        at: chrono::DateTime<chrono::Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Sets the units planned and the execution doing them, if the run is
    /// still `EXECUTING` (a reconciliation plans its shards once both sides
    /// are in); otherwise tells the caller to stop, like a heartbeat.
    fn plan(
        &self,
        run_id: &str,
        units_total: u32,
        execution_arn: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> impl Future<Output = Result<Heartbeat, StoreError>> + Send;

    /// Records an ended unit once (the first report wins); `false` when it
    /// was already recorded or the run has no record.
    fn unit_done(
        &self,
        run_id: &str,
        unit: &str,
        rec: &tally_domain::run::UnitRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Newest first, at most `limit` (capped at 1,000).
    fn list(
        &self,
        kind: Option<tally_domain::run::RunKind>,
        status: Option<tally_domain::run::RunStatus>,
        created_before: Option<chrono::DateTime<chrono::Utc>>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<tally_domain::run::RunRecord>, StoreError>> + Send;
}

/// How a Step Functions execution ended, or that it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionState {
    /// `RUNNING`, `SUCCEEDED`, `FAILED`, `TIMED_OUT`, `ABORTED`, `PENDING_REDRIVE`.
    pub status: String,
    pub error: Option<String>,
    pub cause: Option<String>,
}

/// Reads executions by ARN.
pub trait ExecutionLookup: Send + Sync {
    /// `None` when no execution has that ARN.
    fn describe(
        &self,
        execution_arn: &str,
    ) -> impl Future<Output = Result<Option<ExecutionState>, StoreError>> + Send;
}
