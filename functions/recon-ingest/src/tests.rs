use super::*;
use std::sync::atomic::{AtomicU64, Ordering};
use tally_aws::memory::{
    MemoryFaults, MemoryObjects, MemoryProgress, MemoryPublisher, MemoryQuarantine, MemoryRecords,
};
use tally_domain::recon::sample::{self, BreakMix, SampleSpec};

const KEY: &str = "settlement/ACME/2026-11-20/visa-0001.dat";
const INTERNAL_KEY: &str = "internal/ACME/2026-11-20/auths.csv";

fn spec(records: u64) -> SampleSpec {
    SampleSpec {
        program_id: "ACME".into(),
        file_date: "2026-11-20".parse().unwrap(),
        file_sequence: 7,
        records,
        seed: 42,
        breaks: BreakMix::default_for(records),
    }
}

fn cfg(checkpoint_records: usize) -> Config {
    Config {
        shard_count: 64,
        write_concurrency: 4,
        checkpoint_records,
        fault_injection: true,
    }
}

struct World {
    objects: MemoryObjects,
    records: MemoryRecords,
    progress: MemoryProgress,
    faults: MemoryFaults,
}

impl World {
    fn new() -> World {
        World {
            objects: MemoryObjects::default(),
            records: MemoryRecords::default(),
            progress: MemoryProgress::default(),
            faults: MemoryFaults::default(),
        }
    }
    async fn ingest(&self, cfg: &Config, task: IngestTask) -> Result<IngestOutcome, HandlerError> {
        self.ingest_counting(cfg, task, &AtomicU64::new(0)).await
    }
    async fn ingest_counting(
        &self,
        cfg: &Config,
        task: IngestTask,
        retries: &AtomicU64,
    ) -> Result<IngestOutcome, HandlerError> {
        ingest(
            &self.objects,
            &self.records,
            &self.progress,
            &self.faults,
            cfg,
            task,
            retries,
        )
        .await
    }
}

fn task(object: ObjectRef) -> IngestTask {
    IngestTask {
        object,
        version: None,
        fault: None,
    }
}

fn applied(o: &IngestOutcome) -> (u64, u64, u64) {
    match o {
        IngestOutcome::Applied {
            records,
            resumed_from_record,
            write_retries,
            ..
        } => (*records, *resumed_from_record, *write_retries),
        other => panic!("expected Applied, got {other:?}"),
    }
}

#[tokio::test]
async fn a_valid_settlement_file_is_applied_once_per_transaction_under_its_shard_key() {
    let w = World::new();
    let s = spec(1_000);
    let obj = w.objects.put(KEY, sample::settlement_file(&s).into_bytes());
    let out = w.ingest(&cfg(100), task(obj.clone())).await.unwrap();
    assert_eq!(applied(&out), (1_000, 0, 0));
    let stored = w.records.records(Side::Settlement);
    assert_eq!(stored.len(), 1_000);
    for r in &stored {
        let shard = recon_shard(&r.txn.transaction_id, 64);
        assert_eq!(r.pk, format!("ACME#2026-11-20#{shard}"));
        assert_eq!(r.version, 7);
        assert!(r.fee.is_some());
    }
    // Spread over the shards, not one hot key.
    let shards: std::collections::BTreeSet<_> = stored.iter().map(|r| r.pk.clone()).collect();
    assert!(shards.len() > 50, "{} shards used", shards.len());
    let IngestOutcome::Applied { control, .. } = out else {
        unreachable!()
    };
    assert_eq!(control.unwrap().details, 1_000);
}

#[tokio::test]
async fn the_same_object_ingested_again_writes_nothing_more() {
    let w = World::new();
    let obj = w
        .objects
        .put(KEY, sample::settlement_file(&spec(500)).into_bytes());
    w.ingest(&cfg(100), task(obj.clone())).await.unwrap();
    let before = (w.records.records(Side::Settlement), w.records.puts());
    let again = w.ingest(&cfg(100), task(obj)).await.unwrap();
    // The finished checkpoint says everything is applied: the re-delivery
    // reads the file to validate it and writes nothing.
    assert_eq!(applied(&again), (500, 500, 0));
    assert_eq!(
        (w.records.records(Side::Settlement), w.records.puts()),
        before
    );
}

#[tokio::test]
async fn an_ingest_stopped_part_way_resumes_from_its_checkpoint_without_double_counting() {
    let w = World::new();
    let obj = w
        .objects
        .put(KEY, sample::settlement_file(&spec(1_000)).into_bytes());
    let mut t = task(obj.clone());
    t.fault = Some(IngestFault {
        fail_after_records: 300,
        failures: 1,
    });
    let err = w.ingest(&cfg(100), t.clone()).await.unwrap_err();
    assert_eq!(err.name, tally_domain::errors::TRANSIENT_STORE_ERROR);
    let id = ingest_id(KEY, &obj.etag, None);
    let cp = w.progress.get(&id).unwrap();
    assert_eq!(cp.records_applied, 300);
    assert_eq!(w.records.records(Side::Settlement).len(), 300);

    // The retry (same task: the fault is spent) starts at the checkpoint's byte offset.
    let out = w.ingest(&cfg(100), t).await.unwrap();
    assert_eq!(applied(&out), (1_000, 300, 0));
    assert_eq!(w.records.puts(), 1_000, "no record written twice");
    assert_eq!(w.records.records(Side::Settlement).len(), 1_000);
    let resumed_at = w.objects.opens().last().unwrap().1;
    assert_eq!(resumed_at, cp.offset_bytes);
    assert!(cp.offset_bytes > 0);
    // Equal to a clean ingest of the same file.
    let clean = World::new();
    let obj2 = clean
        .objects
        .put(KEY, sample::settlement_file(&spec(1_000)).into_bytes());
    clean.ingest(&cfg(100), task(obj2)).await.unwrap();
    assert_eq!(
        w.records.records(Side::Settlement),
        clean.records.records(Side::Settlement)
    );
}

#[tokio::test]
async fn throttled_writes_are_retried_and_every_record_lands_once() {
    let w = World::new();
    let obj = w
        .objects
        .put(KEY, sample::settlement_file(&spec(600)).into_bytes());
    w.records.throttle_next(15);
    let out = w.ingest(&cfg(100), task(obj)).await.unwrap();
    let (records, _, retries) = applied(&out);
    assert_eq!(records, 600);
    assert!(retries >= 15, "{retries} retries");
    assert_eq!(w.records.throttled(), 15);
    assert_eq!(w.records.records(Side::Settlement).len(), 600);
}

#[tokio::test]
async fn an_attempt_whose_writes_give_up_fails_with_its_retries_counted_and_its_chunk_unsaved() {
    let w = World::new();
    let obj = w
        .objects
        .put(KEY, sample::settlement_file(&spec(600)).into_bytes());
    // The first 15 calls come back partly unprocessed; the memory sink spends
    // them all on the first batch (a single held-back record is held back
    // again), which then lands on call 16. Call 17, the second batch's first,
    // fails as a batch does that is still unprocessed after its last attempt.
    w.records.throttle_next(15);
    w.records.fail_after_calls(16);
    let retries = AtomicU64::new(0);
    // Chunks of 200 records are 8 batches, 4 in flight at once.
    let err = w
        .ingest_counting(&cfg(200), task(obj.clone()), &retries)
        .await
        .unwrap_err();
    assert_eq!(err.name, tally_domain::errors::TRANSIENT_STORE_ERROR);
    assert_eq!(retries.load(Ordering::Relaxed), 15);
    // The failed chunk is not checkpointed: the retry writes it again.
    assert_eq!(w.progress.get(&ingest_id(KEY, &obj.etag, None)), None);
    // Batches 2 to 5 were in flight (5 took 1's place) and failed on their
    // first call; once a failure was seen, 6 to 8 never started. Only the
    // first batch's 25 records were written.
    assert_eq!(w.records.calls(), 16 + 4);
    assert_eq!(w.records.records(Side::Settlement).len(), 25);
    w.records.stop_failing();
    let again = AtomicU64::new(0);
    let out = w
        .ingest_counting(&cfg(200), task(obj), &again)
        .await
        .unwrap();
    assert_eq!(applied(&out), (600, 0, 0));
    assert_eq!(w.records.records(Side::Settlement).len(), 600);
}

/// Replaces 1-based line `n` of a newline-separated file.
fn with_line(file: &str, n: usize, f: impl Fn(&str) -> String) -> String {
    file.split('\n')
        .enumerate()
        .map(|(i, l)| if i + 1 == n { f(l) } else { l.to_owned() })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_fault_on_the_last_detail_rejects_the_whole_file_with_nothing_applied() {
    let w = World::new();
    let file = sample::settlement_file(&spec(2_000));
    // Line 2001 is the last detail (line 1 is the header); its amount sign is at byte 96.
    let bad = with_line(&file, 2_001, |l| format!("{}X{}", &l[..95], &l[96..]));
    let obj = w.objects.put(KEY, bad.into_bytes());
    let out = w.ingest(&cfg(100), task(obj.clone())).await.unwrap();
    let IngestOutcome::Rejected { reason, side } = out else {
        panic!("expected a rejection, got {out:?}")
    };
    assert_eq!(side, Some(Side::Settlement));
    assert_eq!(reason.line, 2_001);
    assert_eq!(reason.field, "amount sign");
    assert!(reason.expected.contains('D') && reason.expected.contains('C'));
    assert!(w.records.records(Side::Settlement).is_empty());
    assert_eq!(w.records.puts(), 0);

    let q = MemoryQuarantine::default();
    let alarms = MemoryPublisher::default();
    quarantine(&q, &alarms, &obj, &reason).await.unwrap();
    let rejected = q.rejected.lock().unwrap().clone();
    let why: serde_json::Value =
        serde_json::from_str(&rejected[&format!("rejected/{KEY}")]).unwrap();
    assert_eq!(why["reason"]["line"], 2_001);
    assert_eq!(why["reason"]["field"], "amount sign");
    assert_eq!(*q.copies.lock().unwrap(), vec![format!("rejected/{KEY}")]);
    assert_eq!(alarms.alarms.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_duplicate_transaction_id_is_found_exactly_and_rejects_the_file() {
    let w = World::new();
    let file = sample::settlement_file(&spec(300));
    let lines: Vec<&str> = file.split('\n').collect();
    // Give line 250's detail the transaction id of line 10's (columns 10-33).
    let id = &lines[9][9..33];
    let bad = with_line(&file, 250, |l| format!("{}{}{}", &l[..9], id, &l[33..]));
    let obj = w.objects.put(KEY, bad.into_bytes());
    let out = w.ingest(&cfg(100), task(obj)).await.unwrap();
    let IngestOutcome::Rejected { reason, .. } = out else {
        panic!("expected a rejection, got {out:?}")
    };
    assert_eq!(reason.line, 250);
    assert_eq!(reason.field, "transaction ID");
    assert!(reason.expected.contains("line 10"), "{}", reason.expected);
    assert_eq!(w.records.puts(), 0);
}

#[tokio::test]
async fn a_line_longer_than_a_record_is_refused_without_reading_it_whole() {
    let w = World::new();
    let file = sample::settlement_file(&spec(10));
    let huge = "9".repeat(10 * 1024 * 1024);
    let bad = with_line(&file, 5, |l| format!("{l}{huge}"));
    let obj = w.objects.put(KEY, bad.into_bytes());
    let out = w.ingest(&cfg(100), task(obj)).await.unwrap();
    let IngestOutcome::Rejected { reason, .. } = out else {
        panic!("expected a rejection, got {out:?}")
    };
    assert_eq!(reason.line, 5);
    assert!(
        !reason.found.contains(&huge[..300]),
        "the line is not echoed"
    );
}

#[tokio::test]
async fn a_key_that_disagrees_with_the_header_rejects_the_file() {
    let w = World::new();
    let obj = w.objects.put(
        "settlement/OTHER/2026-11-20/visa-0001.dat",
        sample::settlement_file(&spec(10)).into_bytes(),
    );
    let out = w.ingest(&cfg(100), task(obj)).await.unwrap();
    let IngestOutcome::Rejected { reason, .. } = out else {
        panic!("expected a rejection, got {out:?}")
    };
    assert_eq!(reason.line, 1);
    assert_eq!(reason.field, "program ID");
}

#[tokio::test]
async fn internal_records_are_applied_under_the_same_shard_keys() {
    let w = World::new();
    let s = spec(400);
    let obj = w
        .objects
        .put(INTERNAL_KEY, sample::internal_file(&s).into_bytes());
    let mut t = task(obj);
    t.version = Some(3);
    let out = w.ingest(&cfg(100), t).await.unwrap();
    let rows = sample::internal_lines(&s).count() as u64 - 1;
    assert_eq!(applied(&out).0, rows);
    let stored = w.records.records(Side::Internal);
    assert_eq!(stored.len() as u64, rows);
    assert!(stored.iter().all(|r| r.version == 3
        && r.fee.is_none()
        && r.pk == format!("ACME#2026-11-20#{}", recon_shard(&r.txn.transaction_id, 64))));
}

#[tokio::test]
async fn a_file_replaced_mid_ingest_is_not_mixed_with_its_replacement() {
    let w = World::new();
    let obj = w
        .objects
        .put(KEY, sample::settlement_file(&spec(50)).into_bytes());
    // A new upload under the same key changes the ETag.
    w.objects
        .put(KEY, sample::settlement_file(&spec(60)).into_bytes());
    let err = w.ingest(&cfg(100), task(obj)).await.unwrap_err();
    assert_eq!(err.name, tally_domain::errors::STORE_ERROR);
    assert_eq!(w.records.puts(), 0);
}

#[tokio::test]
async fn a_file_with_an_unmasked_pan_is_not_copied_and_the_pan_is_in_no_record_or_reason() {
    let w = World::new();
    let file = sample::settlement_file(&spec(20));
    // Line 5's masked PAN (columns 40-58) becomes a full one.
    let pan = "4111111111111111   ";
    let bad = with_line(&file, 5, |l| format!("{}{}{}", &l[..39], pan, &l[58..]));
    let obj = w.objects.put(KEY, bad.into_bytes());
    let out = w.ingest(&cfg(100), task(obj.clone())).await.unwrap();
    let IngestOutcome::Rejected { reason, .. } = out else {
        panic!("expected a rejection, got {out:?}")
    };
    assert_eq!(reason.line, 5);
    let q = MemoryQuarantine::default();
    let alarms = MemoryPublisher::default();
    quarantine(&q, &alarms, &obj, &reason).await.unwrap();
    assert!(
        q.copies.lock().unwrap().is_empty(),
        "no copy of a file with a full PAN"
    );
    let rejected = q.rejected.lock().unwrap().clone();
    let text = &rejected[&format!("rejected/{KEY}")];
    assert!(!text.contains("4111111111111111"), "{text}");
    assert!(!alarms.alarms.lock().unwrap()[0]
        .1
        .contains("4111111111111111"));
    assert_eq!(w.records.puts(), 0);
}

#[tokio::test]
async fn the_same_internal_records_uploaded_again_are_a_new_version_written_under_it() {
    let w = World::new();
    let key = "internal/ACME/2026-11-20/auths.csv";
    let obj = w
        .objects
        .put(key, sample::internal_file(&spec(300)).into_bytes());
    let mut t = task(obj.clone());
    t.version = Some(1_000);
    let first = w.ingest(&cfg(100), t.clone()).await.unwrap();
    let n = applied(&first).0;
    assert!(n >= 300, "{first:?}");
    // Uploaded again, unchanged (same ETag), later: its own ingest, which
    // does not find the first one's finished checkpoint, and writes every
    // record under the new version.
    t.version = Some(2_000);
    let second = w.ingest(&cfg(100), t).await.unwrap();
    assert_eq!(applied(&second), (n, 0, 0));
    let records = w.records.records(Side::Internal);
    for v in [1_000, 2_000] {
        assert_eq!(
            records.iter().filter(|r| r.version == v).count() as u64,
            n,
            "version {v}"
        );
    }
    assert_ne!(
        ingest_id(key, &obj.etag, Some(1_000)),
        ingest_id(key, &obj.etag, Some(2_000))
    );
}
