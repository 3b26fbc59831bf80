//! Settlement reconciliation end to end on the local stack: files land in S3,
//! S3 → EventBridge → SQS → recon-trigger starts the real state machine,
//! which ingests (Lambda or container branch), matches every shard and rolls
//! up. Run with `make test`. Each test uses its own program ID, so they
//! share the stack without sharing data.

use std::time::Duration;
use tally_cli::recon::{generate, Recon};
use tally_cli::stack::ReconStack;
use tally_domain::recon::rollup::Report;
use tally_domain::recon::sample::{self, SampleSpec};
use tally_domain::recon::Side;
use tally_integration_tests::{repo_root, temp_file};

const DATE: &str = "2026-11-20";
const WAIT: Duration = Duration::from_secs(600);

async fn recon() -> Recon {
    let stack = ReconStack::load(&repo_root().join(".tally/stack.json"))
        .expect("the local stack is not deployed: run `make test`");
    Recon::connect(stack).await
}

fn spec(program: &str, records: u64, seed: u64) -> SampleSpec {
    SampleSpec::new(program, DATE.parse().unwrap(), records, seed)
}

fn files(spec: &SampleSpec) -> [std::path::PathBuf; 3] {
    generate(spec, &temp_file(&format!("recon-{}", spec.program_id))).unwrap()
}

async fn report(r: &Recon, program: &str) -> Report {
    let json = r
        .wait_report(program, DATE.parse().unwrap(), WAIT, |_| {})
        .await
        .unwrap();
    serde_json::from_str(&json).unwrap()
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn a_day_with_injected_breaks_reconciles_to_exactly_the_expected_report() {
    let r = recon().await;
    let s = spec("ITLAMBDA", 3_000, 5);
    let [dat, csv, _] = files(&s);
    // Settlement first: its execution waits for the internal records.
    r.upload(Side::Settlement, &s.program_id, s.file_date, &dat)
        .await
        .unwrap();
    r.upload(Side::Internal, &s.program_id, s.file_date, &csv)
        .await
        .unwrap();
    let got = report(&r, &s.program_id).await;
    let want = sample::expected_report(&s);
    assert_eq!(
        serde_json::to_string(&got).unwrap(),
        serde_json::to_string(&want).unwrap()
    );
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn a_bad_file_applies_nothing_and_lands_under_rejected_with_its_reason() {
    let r = recon().await;
    let s = spec("ITBAD", 500, 9);
    let [dat, _, _] = files(&s);
    let text = std::fs::read_to_string(&dat).unwrap();
    // The last detail (line 501) gets a sign that is neither D nor C.
    let bad: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i + 1 == 501 {
                format!("{}X{}", &l[..95], &l[96..])
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(&dat, bad.join("\n") + "\n").unwrap();
    let key = r
        .upload(Side::Settlement, &s.program_id, s.file_date, &dat)
        .await
        .unwrap();
    let date = s.file_date;
    let st = loop {
        let st = r.status(&s.program_id, date).await.unwrap();
        if st.as_ref().is_some_and(|v| v["status"] == "REJECTED") {
            break st.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(st["reason"]["line"], 501);
    assert_eq!(st["reason"]["field"], "amount sign");
    let reason =
        r.s3.get_object()
            .bucket(&r.stack.landing_bucket)
            .key(format!("rejected/{key}.reason.json"))
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
    let reason: serde_json::Value = serde_json::from_slice(&reason).unwrap();
    assert_eq!(reason["reason"]["line"], 501);
    r.s3.head_object()
        .bucket(&r.stack.landing_bucket)
        .key(format!("rejected/{key}"))
        .send()
        .await
        .expect("a copy of the rejected file");
}
