//! What the reconciliation state machine's steps hand each other (JSON).

use super::matching::ControlSums;
use super::Side;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// One reconciliation: a program and date, and the versions of the two
/// sides it compares (0: the side never arrived within the wait).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recon {
    pub recon_id: String,
    pub program_id: String,
    pub file_date: NaiveDate,
    pub settlement_version: u64,
    pub internal_version: u64,
    pub shard_count: u32,
    /// The settlement file's trailer (None when it never arrived).
    pub control: Option<ControlSums>,
}

impl Recon {
    pub fn id(program_id: &str, file_date: NaiveDate, settlement: u64, internal: u64) -> String {
        format!("{program_id}#{file_date}#s{settlement}#i{internal}")
    }

    /// Where the reconciliation of these versions keeps its report and
    /// exceptions (its own: a later reconciliation of the day has another).
    pub fn report_dir(
        program_id: &str,
        file_date: NaiveDate,
        settlement: u64,
        internal: u64,
    ) -> String {
        format!("reports/{program_id}/{file_date}/s{settlement}-i{internal}")
    }

    /// The report of the reconciliation of these versions (in
    /// [`Recon::report_dir`]).
    pub fn report_key(
        program_id: &str,
        file_date: NaiveDate,
        settlement: u64,
        internal: u64,
    ) -> String {
        format!(
            "{}/report.json",
            Self::report_dir(program_id, file_date, settlement, internal)
        )
    }
}

/// Where a program and date stands, as `tally recon status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PipelineStatus {
    Ingesting,
    Rejected,
    WaitingForInternal,
    WaitingForSettlement,
    Matching,
    Reconciled,
    Failed,
}

impl PipelineStatus {
    pub fn waiting_for(missing: Side) -> PipelineStatus {
        match missing {
            Side::Settlement => PipelineStatus::WaitingForSettlement,
            Side::Internal => PipelineStatus::WaitingForInternal,
        }
    }
}

/// The id of an ingest of one object version: side, program, date and ETag
/// (quotes dropped), and for internal records their version (the upload
/// time: the same content uploaded again is a new version, whose records
/// are written under it); `unparsable#<key>#<etag>` for a key that is not a
/// landing key (its ingest rejects it). Checkpoints and outcomes are stored
/// under it, so inspect, ingest and settle must all name it this way.
pub fn ingest_id(object_key: &str, etag: &str, version: Option<u64>) -> String {
    let etag = etag.trim_matches('"');
    let v = version.map(|v| format!("#v{v}")).unwrap_or_default();
    match super::ObjectKey::parse(object_key) {
        Ok(k) => format!(
            "{}#{}#{}#{etag}{v}",
            k.side.as_str(),
            k.program_id,
            k.file_date
        ),
        Err(_) => format!("unparsable#{object_key}#{etag}"),
    }
}

/// What the inspect step learned of a landed object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspected {
    pub side: Side,
    pub program_id: String,
    pub file_date: NaiveDate,
    pub key: String,
    pub ingest_id: String,
    pub size_bytes: u64,
    /// `RECON_LARGE_FILE_BYTES` (or the execution's override): at or above
    /// it the container ingests the file.
    pub large_file_bytes: u64,
    /// Settlement: the header's file sequence, when the header could be read.
    pub file_sequence: Option<u64>,
    /// The ingest task both branches run, as JSON.
    pub ingest_task: serde_json::Value,
    /// The reconciliation run this execution works for (none when the
    /// execution was started without its id, as a direct test invocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The execution (`$$.Execution.Id`), named in the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
}

/// The `source` of reconciliation events.
pub const EVENT_SOURCE: &str = "bank.recon";
/// The `detail-type` of the event a finished reconciliation publishes.
pub const RECONCILIATION_COMPLETED: &str = "bank.recon.reconciliation_completed";
