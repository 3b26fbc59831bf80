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
use tally_integration_tests::local::Local;
use tally_integration_tests::recon::{
    ingest_attempts, land, landed_execution, landed_outcome, wait_checkpoint, write_retries,
    ContainerBranch,
};
use tally_integration_tests::{exclusive, repo_root, temp_file, unique_program};

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

/// Rewrites line `line_no` (1-based) of a generated file with `edit`.
fn edit_line(file: &std::path::Path, line_no: usize, edit: impl Fn(&str) -> String) {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i + 1 == line_no {
                edit(l)
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
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
    // The last detail (line 501) gets a sign that is neither D nor C.
    edit_line(&dat, 501, |l| format!("{}X{}", &l[..95], &l[96..]));
    let key = r
        .upload(Side::Settlement, &s.program_id, s.file_date, &dat)
        .await
        .unwrap();
    let st = rejected(&r, &s.program_id).await;
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

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn the_container_branch_gives_the_same_report_as_the_lambda_branch() {
    let _g = exclusive().await;
    let r = recon().await;
    let local = Local::from_env();
    let s = spec(&unique_program("ITF"), 2_000, 21);
    let [dat, csv, _] = files(&s);
    let before: Vec<String> = local
        .tasks()
        .await
        .unwrap()
        .iter()
        .map(|t| t["task"].as_str().unwrap_or_default().to_owned())
        .collect();
    // Every file counts as large: both go through ecs:runTask.sync (the local
    // stack runs the recon-ingest-task binary as a process in place of Fargate).
    let branch = ContainerBranch::on().await.unwrap();
    land(&r, Side::Internal, &s.program_id, DATE, &csv).await;
    land(&r, Side::Settlement, &s.program_id, DATE, &dat).await;
    let got = report(&r, &s.program_id).await;
    drop(branch);
    assert_eq!(
        serde_json::to_string(&got).unwrap(),
        serde_json::to_string(&sample::expected_report(&s)).unwrap()
    );
    // Both sides ran as container tasks of this test (not any earlier one's).
    let ran: Vec<serde_json::Value> = local
        .tasks()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| !before.iter().any(|b| t["task"] == b.as_str()))
        .collect();
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert!(ran.iter().all(|t| t["running"] == false), "{ran:?}");
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn an_ingest_killed_part_way_resumes_and_the_report_is_unchanged() {
    let _g = exclusive().await;
    let r = recon().await;
    let local = Local::from_env();
    // More than two checkpoints' worth (5,000 records each) of details.
    let s = spec(&unique_program("ITR"), 12_000, 33);
    let [dat, csv, _] = files(&s);
    // The internal side first, whole, so that the settlement ingest is the
    // only recon-ingest at work when it is killed.
    let k_internal = land(&r, Side::Internal, &s.program_id, DATE, &csv).await;
    let deadline = std::time::Instant::now() + WAIT;
    while landed_outcome(&r, &k_internal).await.is_null() {
        assert!(
            std::time::Instant::now() < deadline,
            "the internal side never ended"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let test_start = chrono::Utc::now();
    let k_settlement = land(&r, Side::Settlement, &s.program_id, DATE, &dat).await;
    // SIGKILL the ingest once its first checkpoint is saved: the process
    // dies wherever it is (mid-write, or between a write and its checkpoint).
    let saved = wait_checkpoint(&r, &k_settlement, 5_000).await.unwrap();
    let killed = local.kill_busy("recon-ingest").await.unwrap();
    assert_eq!(killed.len(), 1, "one ingest was running: {killed:?}");
    let got = report(&r, &s.program_id).await;
    assert_eq!(
        serde_json::to_string(&got).unwrap(),
        serde_json::to_string(&sample::expected_report(&s)).unwrap()
    );
    // The state machine retried the killed attempt (Runtime.ExitError) and
    // the retry resumed from a checkpoint, never from the start.
    let (arn, _) = landed_execution(&r, &k_settlement).await.unwrap();
    let env = tally_integration_tests::Env::connect().await.unwrap();
    let history = env.history(&arn).await.unwrap();
    assert!(history.iter().any(|h| h == "TaskFailed"), "{history:?}");
    let outcome = landed_outcome(&r, &k_settlement).await;
    assert_eq!(outcome["records"], 12_000, "{outcome}");
    let resumed = outcome["resumed_from_record"].as_u64().unwrap_or(0);
    assert!(
        resumed >= saved && resumed % 5_000 == 0,
        "resumed from {resumed}, saved {saved}: {outcome}"
    );
    // A killed attempt prints no metric line; the applied one wrote the rest.
    let attempts: Vec<_> = ingest_attempts(test_start, &[&k_settlement])
        .iter()
        .map(|m| (m["attempt"].clone(), m.get("RecordsIngested").cloned()))
        .collect();
    assert_eq!(
        attempts,
        [(
            serde_json::json!("applied"),
            Some(serde_json::json!((12_000 - resumed) as f64))
        )],
        "{attempts:?}"
    );
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn the_same_object_delivered_twice_reconciles_once() {
    let r = recon().await;
    let s = spec("ITTWICE", 800, 44);
    let [dat, csv, _] = files(&s);
    r.upload(Side::Internal, &s.program_id, s.file_date, &csv)
        .await
        .unwrap();
    r.upload(Side::Settlement, &s.program_id, s.file_date, &dat)
        .await
        .unwrap();
    let first = report(&r, &s.program_id).await;
    // The same bytes again under the same key: same ETag, same execution name.
    r.upload(Side::Settlement, &s.program_id, s.file_date, &dat)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let sdk = tally_aws::config::aws().await;
    let names: Vec<String> = aws_sdk_sfn::Client::new(&sdk)
        .list_executions()
        .state_machine_arn(&r.stack.state_machine_arn)
        .send()
        .await
        .unwrap()
        .executions()
        .iter()
        .map(|e| e.name().to_owned())
        .collect();
    let settlement_key = format!("settlement/ITTWICE/{DATE}/ITTWICE-{DATE}.dat");
    let wanted = recon_trigger_name(&r, &settlement_key).await;
    assert_eq!(
        names.iter().filter(|n| **n == wanted).count(),
        1,
        "{names:?}"
    );
    assert_eq!(report(&r, &s.program_id).await, first);
}

async fn recon_trigger_name(r: &Recon, key: &str) -> String {
    let head =
        r.s3.head_object()
            .bucket(&r.stack.landing_bucket)
            .key(key)
            .send()
            .await
            .unwrap();
    recon_trigger::execution_name(key, head.e_tag().unwrap())
}

#[tokio::test]
#[ignore = "needs the local stack with its fault proxy: make test"]
async fn throttled_and_partly_unprocessed_writes_are_survived_with_the_same_report() {
    use fault_proxy::{control, Kind, Plan, Rule};
    let proxy = std::env::var("TALLY_FAULT_PROXY")
        .expect("TALLY_FAULT_PROXY: the local stack's fault proxy (make test starts it)");
    let r = recon().await;
    let s = spec(&unique_program("ITT"), 3_000, 55);
    let [dat, csv, _] = files(&s);
    // Every record write is a BatchWriteItem: a fifth are throttled (both
    // throttle errors), a third of the rest come back partly unprocessed.
    // Only this program's records (their keys start with its id): work
    // another test left on the stack is neither faulted nor counted.
    let rule = |kind, rate| Rule {
        kind,
        rate,
        operations: vec!["BatchWriteItem".into()],
        latency_ms: 0,
        body_contains: Some(format!("{}#", s.program_id)),
        ..Rule::default()
    };
    let plan = Plan {
        seed: 2026,
        rules: vec![
            rule(Kind::Throttle, 0.15),
            rule(Kind::ThrottlingException, 0.05),
            rule(Kind::Unprocessed, 0.3),
        ],
        max_faults: 10_000,
        expires_after_s: 900,
    };
    let test_start = chrono::Utc::now();
    control::set_plan(&proxy, &plan).await.unwrap();
    let _clear = control::ClearOnDrop(proxy.clone());
    let k_internal = land(&r, Side::Internal, &s.program_id, DATE, &csv).await;
    let k_settlement = land(&r, Side::Settlement, &s.program_id, DATE, &dat).await;
    let got = report(&r, &s.program_id).await;
    let stats = control::stats(&proxy).await.unwrap();
    eprintln!("fault proxy: {}", serde_json::to_string(&stats).unwrap());
    assert_eq!(
        serde_json::to_string(&got).unwrap(),
        serde_json::to_string(&sample::expected_report(&s)).unwrap()
    );
    // 3,000 records a side in chunks of 25: 240 first attempts at least.
    assert!(
        stats.faults.get("throttle").copied().unwrap_or(0) >= 10,
        "{stats:?}"
    );
    assert!(
        stats.faults.get("unprocessed").copied().unwrap_or(0) >= 20,
        "{stats:?}"
    );
    assert!(stats.items_withheld > 0, "{stats:?}");
    for key in [&k_internal, &k_settlement] {
        let o = landed_outcome(&r, key).await;
        assert_eq!(o["records"], 3_000, "{o}");
    }
    // Unprocessed items reach the ingest's own retry loop (the SDK does not
    // retry them): every such answer cost at least one retry. The retries
    // are summed over every attempt's metric line, a failed attempt's too
    // (an attempt that gives up is retried from its checkpoint).
    let attempts = ingest_attempts(test_start, &[&k_internal, &k_settlement]);
    let retries = write_retries(&attempts);
    assert!(
        attempts.len() >= 2 && retries >= stats.faults["unprocessed"],
        "{retries} retries in {attempts:?}, {stats:?}"
    );
}

/// Waits until the program's date is `REJECTED`; returns the status.
async fn rejected(r: &Recon, program: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let st = r.status(program, DATE.parse().unwrap()).await.unwrap();
        if let Some(st) = st.filter(|v| v["status"] == "REJECTED") {
            return st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{program} not rejected in time"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every stored thing as text: each item of every table (attribute values
/// printed whole) and each object of every bucket, with where it is.
async fn everything_stored(r: &Recon) -> Vec<(String, String)> {
    let sdk = tally_aws::config::aws().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let mut out = Vec::new();
    let tables = dynamo.list_tables().send().await.unwrap();
    for table in tables.table_names() {
        let mut items = dynamo
            .scan()
            .table_name(table)
            .into_paginator()
            .items()
            .send();
        while let Some(item) = items.next().await {
            out.push((format!("dynamodb {table}"), format!("{:?}", item.unwrap())));
        }
    }
    let buckets = r.s3.list_buckets().send().await.unwrap();
    for bucket in buckets.buckets().iter().filter_map(|b| b.name()) {
        let mut pages =
            r.s3.list_objects_v2()
                .bucket(bucket)
                .into_paginator()
                .send();
        while let Some(page) = pages.next().await {
            for obj in page.unwrap().contents() {
                let key = obj.key().unwrap();
                let body =
                    r.s3.get_object()
                        .bucket(bucket)
                        .key(key)
                        .send()
                        .await
                        .unwrap()
                        .body
                        .collect()
                        .await
                        .unwrap()
                        .into_bytes();
                out.push((
                    format!("s3://{bucket}/{key}"),
                    String::from_utf8_lossy(&body).into_owned(),
                ));
            }
        }
    }
    out
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn no_unmasked_pan_is_stored_anywhere_after_a_reconciliation() {
    let r = recon().await;
    // A day that reconciles, so that records, summaries, the report and the
    // exceptions are all stored.
    let good = spec("ITPANOK", 400, 21);
    let [dat, csv, _] = files(&good);
    r.upload(Side::Internal, &good.program_id, good.file_date, &csv)
        .await
        .unwrap();
    r.upload(Side::Settlement, &good.program_id, good.file_date, &dat)
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(report(&r, &good.program_id).await).unwrap(),
        serde_json::to_value(sample::expected_report(&good)).unwrap()
    );

    // A settlement file and an internal-records file, each with one full
    // card number (Luhn-valid test PANs) where a masked one belongs.
    const SETTLEMENT_PAN: &str = "4539578763621486";
    const INTERNAL_PAN: &str = "5500005555555559";
    let s = spec("ITPANS", 300, 22);
    let [dat, _, _] = files(&s);
    edit_line(&dat, 7, |l| {
        format!("{}{SETTLEMENT_PAN:<19}{}", &l[..39], &l[58..])
    });
    let s_key = r
        .upload(Side::Settlement, &s.program_id, s.file_date, &dat)
        .await
        .unwrap();
    let i = spec("ITPANI", 300, 23);
    let [_, csv, _] = files(&i);
    edit_line(&csv, 4, |l| {
        let mut cols: Vec<&str> = l.split(',').collect();
        cols[2] = INTERNAL_PAN; // masked_pan
        cols.join(",")
    });
    let i_key = r
        .upload(Side::Internal, &i.program_id, i.file_date, &csv)
        .await
        .unwrap();
    let st = rejected(&r, "ITPANS").await;
    assert_eq!(
        (&st["reason"]["line"], &st["reason"]["field"]),
        (&7.into(), &"masked PAN".into())
    );
    let st = rejected(&r, "ITPANI").await;
    assert_eq!(
        (&st["reason"]["line"], &st["reason"]["field"]),
        (&4.into(), &"masked_pan".into())
    );

    let stored = everything_stored(&r).await;
    assert!(
        stored.iter().any(|(_, t)| t.contains("ITPANOK")),
        "the scan saw none of the good day's data: is it reading the stack?"
    );
    // The two landed originals are the senders' files, which Tally neither
    // copies nor keeps: the reason beside them says to delete them.
    let landed = [
        format!("s3://{}/{s_key}", r.stack.landing_bucket),
        format!("s3://{}/{i_key}", r.stack.landing_bucket),
    ];
    let mut found = Vec::new();
    let mut masked_seen = 0;
    for (place, text) in &stored {
        if landed.contains(place) {
            assert!(text.contains(SETTLEMENT_PAN) || text.contains(INTERNAL_PAN));
            continue;
        }
        for pan in [SETTLEMENT_PAN, INTERNAL_PAN] {
            if text.contains(pan) {
                found.push(format!("{place} holds {pan}"));
            }
        }
        // Every stored masked_pan is masked: 6 digits, `*` fill, 4 digits.
        for m in masked_pan_values(text) {
            masked_seen += 1;
            if !tally_domain::recon::settlement::valid_masked_pan(&m) {
                found.push(format!("{place}: masked_pan `{m}` is not masked"));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
    assert!(
        masked_seen >= 800,
        "only {masked_seen} stored masked_pan values seen"
    );
}

/// The values stored under a `masked_pan` attribute, from the printed form
/// of an item (`"masked_pan": S("…")`).
fn masked_pan_values(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("\"masked_pan\": S(\"") {
        rest = &rest[at + 17..];
        if let Some(end) = rest.find('"') {
            out.push(rest[..end].to_owned());
        }
    }
    out
}
