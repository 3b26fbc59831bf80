//! Peak memory of an ingest as the file grows. Prints figures; asserts
//! nothing (the bench binary of the issue's "peak memory of an ingest for a
//! 100 MB and a 1 GB file").
//!
//! The file is generated on the fly while it is read (it never exists in
//! memory or on disk), the records go to a sink that counts them and keeps
//! nothing, so the peak resident memory (VmHWM) measured is the ingest
//! engine's own: line buffer, one checkpoint chunk, duplicate detection.
//!
//!     cargo run --release -p recon-ingest --bin bench-ingest [MB ...]

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use tally_aws::memory::{MemoryFaults, MemoryProgress};
use tally_aws::ports::{ObjectRef, ObjectSource, RecordSink, StoredTxn};
use tally_aws::StoreError;
use tally_domain::recon::sample::{self, BreakMix, SampleSpec};
use tally_domain::recon::Side;
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes of a settlement line and its `\n`.
const LINE_BYTES: u64 = 201;

struct Generated {
    spec: SampleSpec,
}

/// The generated file as a byte stream, from an offset.
struct GeneratedReader {
    lines: Box<dyn Iterator<Item = String> + Send>,
    current: Vec<u8>,
    at: usize,
}

impl AsyncRead for GeneratedReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while buf.remaining() > 0 {
            if self.at == self.current.len() {
                match self.lines.next() {
                    Some(l) => {
                        self.current.clear();
                        self.current.extend_from_slice(l.as_bytes());
                        self.current.push(b'\n');
                        self.at = 0;
                    }
                    None => break,
                }
            }
            let n = buf.remaining().min(self.current.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.current[at..at + n]);
            self.at += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl ObjectSource for Generated {
    type Reader = tokio::io::BufReader<GeneratedReader>;
    async fn open(&self, _obj: &ObjectRef, offset: u64) -> Result<Self::Reader, StoreError> {
        // Every line is LINE_BYTES long, so an offset is a line boundary.
        let skip = (offset / LINE_BYTES) as usize;
        Ok(tokio::io::BufReader::with_capacity(
            64 * 1024,
            GeneratedReader {
                lines: Box::new(sample::settlement_lines(&self.spec).skip(skip)),
                current: Vec::new(),
                at: 0,
            },
        ))
    }
}

#[derive(Default)]
struct CountingSink {
    records: AtomicU64,
}

impl RecordSink for CountingSink {
    async fn put_records(
        &self,
        _side: Side,
        records: &[StoredTxn],
        _retries: &AtomicU64,
    ) -> Result<(), StoreError> {
        self.records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let sizes_mb: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes_mb = if sizes_mb.is_empty() {
        vec![100, 1000]
    } else {
        sizes_mb
    };
    let cfg = recon_ingest::Config {
        shard_count: 64,
        write_concurrency: 8,
        checkpoint_records: 5_000,
        fault_injection: false,
    };
    println!(
        "== ingest peak memory (VmHWM; file generated while read, records counted and dropped)"
    );
    for mb in sizes_mb {
        let records = mb * 1_000_000 / LINE_BYTES;
        let spec = SampleSpec {
            program_id: "BENCH".into(),
            file_date: "2026-11-20".parse().unwrap(),
            file_sequence: 1,
            records,
            seed: 7,
            breaks: BreakMix::default_for(records),
        };
        let size_bytes = (records + 2) * LINE_BYTES;
        let src = Generated { spec };
        let sink = CountingSink::default();
        let obj = ObjectRef {
            bucket: "bench".into(),
            key: format!("settlement/BENCH/2026-11-20/{mb}mb.dat"),
            etag: "bench".into(),
            size_bytes,
        };
        // Reset VmHWM to the current RSS (Linux), so each size reports its own peak.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let before = vm_hwm_kb();
        let started = Instant::now();
        let out = recon_ingest::ingest(
            &src,
            &sink,
            &MemoryProgress::default(),
            &MemoryFaults::default(),
            &cfg,
            recon_ingest::IngestTask {
                object: obj,
                version: None,
                fault: None,
            },
            &AtomicU64::new(0),
        )
        .await
        .expect("ingest");
        let secs = started.elapsed().as_secs_f64();
        let applied = sink.records.load(Ordering::Relaxed);
        assert!(
            matches!(out, recon_ingest::IngestOutcome::Applied { .. }),
            "{out:?}"
        );
        println!(
            "{:>5} MB ({records} records, both passes): peak {:.1} MiB (before {:.1} MiB), {:.1} s, {:.0} records/s, {applied} records applied",
            size_bytes / 1_000_000,
            vm_hwm_kb() as f64 / 1024.0,
            before as f64 / 1024.0,
            secs,
            records as f64 / secs,
        );
    }
}
