//! Run records on the local stack: every status transition, submit
//! idempotent per date, cancel during a partitioned COB, the sweeper, the
//! deadline check. Run with `make test`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tally_aws::dynamo::account_from_item;
use tally_aws::ports::RunStore;
use tally_cli::runs::{self, Options};
use tally_domain::run::{RunRecord, RunStatus};
use tally_integration_tests::{
    date, exclusive, function_log_lines, render_in_chromium, temp_file, AlarmListener, Env,
};

const DATE: &str = "2026-11-20";

fn fan_out(n: u32) -> Options {
    Options {
        partition_threshold: Some(1),
        partition_count: Some(n),
    }
}

async fn submit(env: &Env, d: &str, o: &Options) -> (RunRecord, bool) {
    runs::submit(
        &env.runs(),
        &env.sfn,
        &env.stack.state_machine_arn,
        date(d),
        o,
        None,
    )
    .await
    .unwrap()
}

async fn follow(env: &Env, run_id: &str) -> RunRecord {
    runs::follow(&env.runs(), run_id, Duration::from_secs(900), |_, _| {})
        .await
        .unwrap()
}

/// Account id → accrued_through, from the accounts table.
async fn accrued_through(env: &Env) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    let mut pages = env
        .dynamo
        .scan()
        .table_name(&env.stack.accounts_table)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for i in page.unwrap().items() {
            let a = account_from_item(i).unwrap();
            out.insert(a.account_id, a.accrued_through.map(|d| d.to_string()));
        }
    }
    out
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn a_submitted_run_goes_initiated_executing_success_and_a_second_submit_returns_it() {
    let _guard = exclusive().await;
    let env = Env::connect().await.unwrap();
    env.fresh_book(300, 41, date(DATE)).await.unwrap();
    let test_start = chrono::Utc::now();

    let (first, created) = submit(&env, DATE, &fan_out(2)).await;
    assert!(created);
    assert!(
        first.run_id.starts_with("cob-2026-11-20-a1-"),
        "{}",
        first.run_id
    );
    assert_eq!(first.status, RunStatus::Initiated);
    // Submitted again at once (the run is live): the same run, nothing started.
    let (again, created) = submit(&env, DATE, &fan_out(2)).await;
    assert!(!created);
    assert_eq!(again.run_id, first.run_id);

    let done = follow(&env, &first.run_id).await;
    assert_eq!(done.status, RunStatus::Success, "{done:?}");
    // Through EXECUTING: the coordinator's transition set started_at and the plan.
    let started = done.started_at.expect("started_at, set on EXECUTING");
    let ended = done.ended_at.expect("ended_at");
    assert!(done.created_at <= started && started <= ended);
    assert_eq!(done.units_total, 2);
    assert_eq!(done.units_done(), 2);
    assert!(done.units.values().all(|u| u.outcome == "SUCCEEDED"));
    let accounts: u64 = done.units.values().map(|u| u.items).sum();
    let postings: u64 = done.units.values().map(|u| u.postings).sum();
    assert!(accounts > 250, "{accounts}");
    assert_eq!(postings as usize, env.ledger().await.unwrap().len());
    assert!(!done.totals.is_empty());
    assert!(done
        .execution_arn
        .as_deref()
        .unwrap()
        .ends_with(&format!(":{}", first.run_id)));

    // After SUCCESS a submit still returns the same run: the date is done.
    let (after, created) = submit(&env, DATE, &fan_out(2)).await;
    assert!(!created);
    assert_eq!(
        (after.run_id.as_str(), after.status),
        (first.run_id.as_str(), RunStatus::Success)
    );
    // Listed, and found by status.
    let listed = env
        .runs()
        .list(None, Some(RunStatus::Success), None, 10)
        .await
        .unwrap();
    assert!(listed.iter().any(|r| r.run_id == first.run_id));

    // What the functions printed: EMF lines with this run's figures, and
    // every log line of the COB functions carrying a run id.
    // The local lambda host (cargo lambda watch) relays the functions'
    // output to its log, at times late: a run's lines were seen to arrive
    // only when another function was invoked. Wait up to 60 s for the three
    // lines of this run, invoking the sweeper (a no-op here) every few
    // seconds to move the relay along.
    let wait_until = std::time::Instant::now() + Duration::from_secs(60);
    let mut polls = 0u32;
    let (lines, emf) = loop {
        polls += 1;
        if polls.is_multiple_of(6) {
            env.invoke("run-sweeper", &serde_json::json!({}))
                .await
                .unwrap();
        }
        let lines = function_log_lines(test_start).unwrap();
        let emf: Vec<_> = lines
            .iter()
            .filter(|l| l.get("_aws").is_some() && l["run_id"] == first.run_id.as_str())
            .map(|l| tally_aws::emf::parse_line(&l.to_string()).unwrap())
            .collect();
        if emf.len() >= 3 || std::time::Instant::now() > wait_until {
            break (lines, emf);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let of = |f: &str| {
        emf.iter()
            .filter(|m| m["Function"] == f)
            .collect::<Vec<_>>()
    };
    let parts = of("cob-partition");
    assert_eq!(parts.len(), 2, "{emf:?}");
    let emf_accounts: f64 = parts
        .iter()
        .map(|m| m["AccountsProcessed"].as_f64().unwrap())
        .sum();
    assert_eq!(emf_accounts, accounts as f64);
    let emf_postings: f64 = parts
        .iter()
        .map(|m| m["PostingsWritten"].as_f64().unwrap())
        .sum();
    assert_eq!(emf_postings, postings as f64);
    let agg = of("cob-aggregate");
    assert_eq!(agg.len(), 1, "{emf:?}");
    assert_eq!(agg[0]["RunsSucceeded"], 1.0);
    assert_eq!(agg[0]["PartitionCount"], 2.0);
    assert_eq!(agg[0]["AccountsProcessed"].as_f64(), Some(accounts as f64));
    let slowest = parts
        .iter()
        .map(|m| m["PartitionDurationMs"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(agg[0]["SlowestPartitionMs"].as_f64(), Some(slowest));
    assert!(agg[0]["RunDurationMs"].as_f64().unwrap() >= slowest);
    let cob_lines: Vec<_> = lines
        .iter()
        .filter(|l| l["target"].as_str().is_some_and(|t| t.starts_with("cob_")))
        .collect();
    assert!(cob_lines.len() >= 4, "{cob_lines:?}");
    for l in &cob_lines {
        let id = l["span"]["run_id"]
            .as_str()
            .or_else(|| l["fields"]["run_id"].as_str());
        assert!(
            id.is_some_and(|id| !id.is_empty()),
            "a log line without a run id: {l}"
        );
    }
    assert!(cob_lines
        .iter()
        .any(|l| l["span"]["run_id"] == first.run_id.as_str()));

    // The run report, rendered by Chromium: the figures are on the page.
    let html = temp_file("cob-report.html");
    std::fs::write(&html, tally_cli::report::cob_html(&done)).unwrap();
    let dom = render_in_chromium(&html).unwrap();
    let text = strip_tags(&dom);
    for want in [
        format!("COB run {}", first.run_id),
        "SUCCESS".into(),
        "Partitions2 of 2".into(),
        format!(
            "Accounts processed{}",
            tally_domain::run::group_thousands(accounts)
        ),
        format!(
            "Postings written{}",
            tally_domain::run::group_thousands(postings)
        ),
    ] {
        assert!(text.contains(&want), "{want:?} not on the page: {text}");
    }
    for t in &done.totals {
        assert!(
            text.contains(&format!("{}{}", t.currency, t.amount)),
            "{t:?}: {text}"
        );
    }
    assert_eq!(
        dom.matches("<rect").count(),
        2,
        "one timeline bar a partition"
    );
}

/// The text of a DOM as a reader sees it, run together: tags, and the
/// style sheet, removed.
fn strip_tags(dom: &str) -> String {
    let without_style = match (dom.find("<style"), dom.find("</style>")) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &dom[..a], &dom[b + 8..]),
        _ => dom.to_owned(),
    };
    let mut out = String::new();
    let mut in_tag = false;
    for c in without_style.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            '\n' => {}
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn cancel_during_a_partitioned_cob_leaves_no_account_half_posted_and_a_rerun_completes_the_date_once(
) {
    let _guard = exclusive().await;
    let env = Env::connect().await.unwrap();
    const BOOK: u64 = 4000;
    // The reference: the same book, run clean.
    env.fresh_book(BOOK, 42, date(DATE)).await.unwrap();
    let before = accrued_through(&env).await;
    let (r, _) = submit(&env, DATE, &fan_out(4)).await;
    assert_eq!(follow(&env, &r.run_id).await.status, RunStatus::Success);
    let reference = env.ledger().await.unwrap();

    env.fresh_book(BOOK, 42, date(DATE)).await.unwrap();
    let (r, _) = submit(&env, DATE, &fan_out(4)).await;
    // Cancel once the partitions have written something, well before the end.
    let store = env.runs();
    loop {
        let now = store.get(&r.run_id).await.unwrap().unwrap();
        assert!(
            !now.status.is_terminal(),
            "ended before the cancel: {now:?}"
        );
        if now.items_processed() > 0 {
            assert!(
                now.items_processed() < BOOK / 2,
                "too late to cancel: {now:?}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let canceled = runs::cancel(&store, &env.sfn, &r.run_id, "it")
        .await
        .unwrap();
    assert_eq!(canceled.status, RunStatus::Canceled);
    assert_eq!(canceled.cause.as_ref().unwrap().error, "CanceledByOperator");
    // Canceling again is a no-op, not an error.
    runs::cancel(&store, &env.sfn, &r.run_id, "it")
        .await
        .unwrap();

    // Let every partition still running reach its next page and stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let now = store.get(&r.run_id).await.unwrap().unwrap();
        let stopped = now.units.len() as u32 == now.units_total;
        let d = env
            .sfn
            .describe_execution()
            .execution_arn(now.execution_arn.clone().unwrap());
        let exec = d.send().await.unwrap();
        if stopped || (exec.status().as_str() != "RUNNING" && std::time::Instant::now() > deadline)
        {
            assert_eq!(now.status, RunStatus::Canceled, "a cancel is final");
            break;
        }
        assert!(std::time::Instant::now() < deadline + Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Every account is whole: all of its postings with its state moved, or
    // none with its state as it was.
    let ledger = env.ledger().await.unwrap();
    let through = accrued_through(&env).await;
    let mut per_account: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (acct, day) in reference.keys() {
        per_account.entry(acct).or_default().insert(day);
    }
    let (mut whole, mut untouched) = (0, 0);
    for (acct, days) in &per_account {
        let have: BTreeSet<&str> = ledger
            .keys()
            .filter(|(a, _)| a == acct)
            .map(|(_, d)| d.as_str())
            .collect();
        if have.is_empty() {
            assert_eq!(
                through[*acct], before[*acct],
                "{acct}: state moved, no postings"
            );
            untouched += 1;
        } else {
            assert_eq!(&have, days, "{acct}: half of its postings");
            assert_eq!(through[*acct].as_deref(), Some(DATE), "{acct}");
            whole += 1;
        }
    }
    assert!(
        whole > 0 && untouched > 0,
        "whole {whole}, untouched {untouched}"
    );
    assert!(ledger.keys().all(|k| reference.contains_key(k)));

    // The date again: attempt 2, which completes it exactly once.
    let (second, created) = submit(&env, DATE, &fan_out(4)).await;
    assert!(created);
    assert!(
        second.run_id.starts_with("cob-2026-11-20-a2-"),
        "{}",
        second.run_id
    );
    let done = follow(&env, &second.run_id).await;
    assert_eq!(done.status, RunStatus::Success, "{done:?}");
    assert_eq!(env.ledger().await.unwrap(), reference);
    let first = store.get(&r.run_id).await.unwrap().unwrap();
    assert_eq!(first.status, RunStatus::Canceled, "{first:?}");
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn the_sweeper_ends_runs_whose_executions_ended_outside_tally() {
    let _guard = exclusive().await;
    let env = Env::connect().await.unwrap();
    env.fresh_book(3000, 43, date(DATE)).await.unwrap();
    let store = env.runs();

    // 1. An execution aborted from outside (the console's "Stop execution").
    let (r, _) = submit(&env, DATE, &fan_out(2)).await;
    loop {
        let now = store.get(&r.run_id).await.unwrap().unwrap();
        if now.status == RunStatus::Executing {
            break;
        }
        assert_eq!(now.status, RunStatus::Initiated);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let arn = r.execution_arn.clone().unwrap();
    env.sfn
        .stop_execution()
        .execution_arn(&arn)
        .send()
        .await
        .unwrap();
    // AWS aborts at once (ABORTED). The emulator lets the running task
    // return, and a stop during the Map ends the execution FAILED
    // (States.Runtime) instead: either way it ended outside Tally's functions.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let ended = loop {
        let d = env
            .sfn
            .describe_execution()
            .execution_arn(&arn)
            .send()
            .await
            .unwrap();
        if d.status().as_str() != "RUNNING" {
            break d;
        }
        assert!(std::time::Instant::now() < deadline, "still running");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // 2. A run recorded an hour ago whose execution never started.
    let stale_date = date("2026-11-10");
    let (stale, _) = store
        .submit(&|a| {
            let mut s = RunRecord::new_cob(
                stale_date,
                a,
                RunStatus::Initiated,
                chrono::Utc::now() - chrono::Duration::hours(1),
            );
            s.execution_arn = runs::execution_arn(&env.stack.state_machine_arn, &s.run_id).ok();
            s
        })
        .await
        .unwrap();
    assert_eq!(
        store.get(&r.run_id).await.unwrap().unwrap().status,
        RunStatus::Executing,
        "the record does not know yet"
    );

    let report = env
        .invoke("run-sweeper", &serde_json::json!({}))
        .await
        .unwrap();
    let swept = store.get(&r.run_id).await.unwrap().unwrap();
    let (want_status, want_error) = match ended.status().as_str() {
        "ABORTED" => (RunStatus::Canceled, "ExecutionAborted".to_owned()),
        "FAILED" => (
            RunStatus::Failure,
            ended.error().unwrap_or("FAILED").to_owned(),
        ),
        other => panic!("the stopped execution ended {other}"),
    };
    assert_eq!(swept.status, want_status, "{report}");
    assert_eq!(swept.cause.unwrap().error, want_error, "{report}");
    let never = store.get(&stale.run_id).await.unwrap().unwrap();
    assert_eq!(never.status, RunStatus::Failure, "{report}");
    assert_eq!(never.cause.unwrap().error, "ExecutionNotFound");
    assert_eq!(report["fixed"].as_array().unwrap().len(), 2, "{report}");

    // Swept again: nothing left to change.
    let again = env
        .invoke("run-sweeper", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(again["fixed"].as_array().unwrap().len(), 0, "{again}");
    // Both dates can be submitted again.
    let (next, created) = submit(&env, DATE, &fan_out(2)).await;
    assert!(created, "{next:?}");
    assert_eq!(follow(&env, &next.run_id).await.status, RunStatus::Success);
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn the_deadline_check_alarms_for_a_missing_or_failed_run_and_is_quiet_for_a_successful_one() {
    let _guard = exclusive().await;
    let env = Env::connect().await.unwrap();
    env.fresh_book(50, 44, date(DATE)).await.unwrap();
    let alarms = AlarmListener::new(&env, "deadline").await.unwrap();
    // 06:00 in New York on 21 November (EST) is 11:00 UTC: the night of the 20th.
    let check = |at: &str| {
        serde_json::json!({
            "jurisdiction": "US",
            "time_zone": "America/New_York",
            "deadline": "06:00",
            "scheduled_time": at,
        })
    };
    let at = "2026-11-21T11:00:00Z";

    // No run at all.
    let v = env.invoke("cob-deadline", &check(at)).await.unwrap();
    assert_eq!(
        (v["alarm"].as_bool(), v["business_date"].as_str()),
        (Some(true), Some(DATE)),
        "{v}"
    );
    let got = alarms.subjects(Duration::from_secs(3)).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("2026-11-20") && got[0].contains("America/New_York"),
        "{got:?}"
    );

    // A failed run.
    let store = env.runs();
    let (failed, _) = store
        .submit(&|a| RunRecord::new_cob(date(DATE), a, RunStatus::Initiated, chrono::Utc::now()))
        .await
        .unwrap();
    store
        .transition(
            &failed.run_id,
            RunStatus::Failure,
            chrono::Utc::now(),
            &tally_aws::ports::Patch::default(),
        )
        .await
        .unwrap();
    let v = env.invoke("cob-deadline", &check(at)).await.unwrap();
    assert_eq!(v["alarm"], true, "{v}");
    assert_eq!(v["status"], "FAILURE", "{v}");
    assert_eq!(
        alarms.subjects(Duration::from_secs(3)).await.unwrap().len(),
        1
    );

    // A successful run (attempt 2, through the state machine): quiet.
    let (ok, created) = submit(&env, DATE, &fan_out(2)).await;
    assert!(created);
    assert_eq!(follow(&env, &ok.run_id).await.status, RunStatus::Success);
    let v = env.invoke("cob-deadline", &check(at)).await.unwrap();
    assert_eq!(
        (v["alarm"].as_bool(), v["run_id"].as_str()),
        (Some(false), Some(ok.run_id.as_str())),
        "{v}"
    );
    // Tokyo's own deadline, 06:00 JST on the 22nd (21:00 UTC on the 21st),
    // is about the night of the 21st, which has no run: it alarms.
    let mut tokyo = check("2026-11-21T21:00:00Z");
    tokyo["time_zone"] = "Asia/Tokyo".into();
    let v = env.invoke("cob-deadline", &tokyo).await.unwrap();
    assert_eq!(
        (v["alarm"].as_bool(), v["business_date"].as_str()),
        (Some(true), Some("2026-11-21")),
        "{v}"
    );
    let got = alarms.subjects(Duration::from_secs(3)).await.unwrap();
    assert_eq!(got.len(), 1, "only Tokyo's alarm: {got:?}");
    alarms.close().await.unwrap();
}

// ---------------------------------------------------------------------------
// Reconciliation runs
// ---------------------------------------------------------------------------

async fn recon() -> tally_cli::recon::Recon {
    let stack = tally_cli::stack::ReconStack::load(
        &tally_integration_tests::repo_root().join(".tally/stack.json"),
    )
    .expect("the local stack is not deployed: run `make test`");
    tally_cli::recon::Recon::connect(stack).await
}

fn recon_files(
    program: &str,
    records: u64,
    seed: u64,
) -> (
    tally_domain::recon::sample::SampleSpec,
    [std::path::PathBuf; 3],
) {
    let spec = tally_domain::recon::sample::SampleSpec::new(program, date(DATE), records, seed);
    let files = tally_cli::recon::generate(&spec, &temp_file(&format!("runs-{program}"))).unwrap();
    (spec, files)
}

/// A program id of this test run's own (a re-run on the same stack starts
/// afresh): the stem and five digits of the clock.
fn unique(stem: &str) -> String {
    format!(
        "{stem}{:05}",
        chrono::Utc::now().timestamp_millis() % 100_000
    )
}

/// The `tally` binary `make test` builds beside the functions.
fn tally_bin() -> std::path::PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tally_integration_tests::repo_root().join("target"));
    target.join("debug/tally")
}

/// Polls the run of a business key until it is in `status` (10 min at most).
async fn wait_for_key(env: &Env, key: &str, status: RunStatus) -> RunRecord {
    let started = std::time::Instant::now();
    loop {
        if let Some(r) = env.runs().current(key).await.unwrap() {
            if r.status == status {
                return r;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{key} not {status} after 10 min"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Polls the run of `key` until it is `EXECUTING` with its settlement side
/// accepted (5 min at most): its execution then waits for the other side.
async fn settlement_accepted(env: &Env, key: &str) -> RunRecord {
    let started = std::time::Instant::now();
    loop {
        let run = wait_for_key(env, key, RunStatus::Executing).await;
        if run.progress.contains_key("settlement") {
            return run;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "{run:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn a_reconciliation_run_joins_both_sides_reports_its_shards_and_ends_with_the_reports_figures(
) {
    use tally_domain::recon::Side;
    let _g = exclusive().await;
    let env = Env::connect().await.unwrap();
    let r = recon().await;
    let program = unique("ITRU");
    let (spec, [dat, csv, _]) = recon_files(&program, 3_000, 41);
    let key = tally_domain::run::recon_key(&program, spec.file_date);
    r.upload(Side::Settlement, &program, spec.file_date, &dat)
        .await
        .unwrap();
    // The settlement side's execution made the run and waits in it.
    let live = wait_for_key(&env, &key, RunStatus::Executing).await;
    assert_eq!(live.kind, tally_domain::run::RunKind::Recon);
    // `tally recon report --wait` follows it with a progress bar while the
    // other side lands.
    let cli = std::process::Command::new(tally_bin())
        .current_dir(tally_integration_tests::repo_root())
        .args([
            "recon",
            "report",
            "--program",
            &program,
            "--date",
            DATE,
            "--wait",
            "--summary",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", tally_bin().display()));
    r.upload(Side::Internal, &program, spec.file_date, &csv)
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking(move || cli.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tally recon report --wait: {stderr}");
    let bars: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" shards · "))
        .collect();
    assert!(
        bars.iter().any(|l| l.contains("3,000 settlement")),
        "a progress line with the settlement records: {stderr}"
    );
    assert!(
        bars.last()
            .unwrap()
            .trim_start()
            .starts_with("[##############################] 64/64 shards")
            && bars.last().unwrap().contains("SUCCESS"),
        "the last progress line is full and SUCCESS: {stderr}"
    );
    assert!(
        bars.len() >= 2,
        "the bar is drawn while the run goes, then once more at its end: {stderr}"
    );

    let done = wait_for_key(&env, &key, RunStatus::Success).await;
    assert_eq!(done.run_id, live.run_id, "both landings joined one run");
    assert_eq!(done.executions.len(), 2, "{:?}", done.executions);
    assert_eq!((done.units_total, done.units.len()), (64, 64));
    assert_eq!(done.progress["settlement"], 3_000);
    let report: tally_domain::recon::rollup::Report =
        serde_json::from_str(&r.report(&program, spec.file_date).await.unwrap().unwrap()).unwrap();
    assert_eq!(report, tally_domain::recon::sample::expected_report(&spec));
    assert_eq!(done.counts["EXCEPTIONS"], report.exceptions.len() as u64);
    let matched: u64 = report.currencies.iter().map(|c| c.matched).sum();
    assert_eq!(done.counts["MATCHED"], matched);
    let records: u64 = done.units.values().map(|u| u.items).sum();
    let want: u64 = report
        .currencies
        .iter()
        .map(|c| 2 * c.matched + 2 * c.mismatched + c.unmatched_settlement + c.unmatched_internal)
        .sum();
    assert_eq!(records, want, "the shards read every stored record once");
    let listed = env
        .runs()
        .list(
            Some(tally_domain::run::RunKind::Recon),
            Some(RunStatus::Success),
            None,
            50,
        )
        .await
        .unwrap();
    assert!(listed.iter().any(|l| l.run_id == done.run_id));

    // The run report, from the CLI, rendered by Chromium.
    let html = temp_file("recon-report.html");
    let st = std::process::Command::new(tally_bin())
        .current_dir(tally_integration_tests::repo_root())
        .args(["runs", "report", &done.run_id, "--html"])
        .arg(&html)
        .status()
        .unwrap();
    assert!(st.success());
    let dom = render_in_chromium(&html).unwrap();
    let text = strip_tags(&dom);
    for want in [
        format!("Reconciliation run {}", done.run_id),
        "Settlement records in3,000".into(),
        "Shards matched64 of 64".into(),
        format!("Exceptions ({})", report.exceptions.len()),
    ] {
        assert!(text.contains(&want), "{want:?} not on the page: {text}");
    }
    for c in &report.currencies {
        let row = format!(
            "{cur}{}{}{}{}",
            tally_domain::run::group_thousands(c.matched),
            tally_domain::run::group_thousands(c.mismatched),
            tally_domain::run::group_thousands(c.unmatched_settlement),
            tally_domain::run::group_thousands(c.unmatched_internal),
            cur = c.currency.code()
        );
        assert!(text.contains(&row), "breaks row {row:?} not on the page");
    }
    for e in &report.exceptions {
        assert!(
            text.contains(&e.transaction_id),
            "exception {}",
            e.transaction_id
        );
    }
    assert_eq!(dom.matches("<rect").count(), 64, "one timeline bar a shard");
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn a_canceled_reconciliation_stops_its_executions_and_the_next_landing_reconciles_the_day() {
    use tally_domain::recon::Side;
    let _g = exclusive().await;
    let env = Env::connect().await.unwrap();
    let r = recon().await;
    let program = unique("ITRC");
    let (spec, [dat, csv, _]) = recon_files(&program, 2_000, 43);
    let key = tally_domain::run::recon_key(&program, spec.file_date);
    r.upload(Side::Settlement, &program, spec.file_date, &dat)
        .await
        .unwrap();
    // Its execution ingests, accepts the side and waits for the other one.
    let live = settlement_accepted(&env, &key).await;
    let (_, arn) = live.executions.iter().next().unwrap();
    let arn = arn.clone();
    let canceled = runs::cancel(&env.runs(), &env.sfn, &live.run_id, "it")
        .await
        .unwrap();
    assert_eq!(canceled.status, RunStatus::Canceled);
    assert_eq!(canceled.cause.as_ref().unwrap().error, "CanceledByOperator");
    // A second cancel changes nothing.
    let again = runs::cancel(&env.runs(), &env.sfn, &live.run_id, "it")
        .await
        .unwrap();
    assert_eq!(
        (again.status, again.ended_at),
        (canceled.status, canceled.ended_at)
    );
    // The waiting execution is stopped.
    let ended = env.wait(&arn).await.unwrap();
    assert!(
        ended.status == "ABORTED" || ended.status == "FAILED",
        "{ended:?}"
    );
    assert!(
        r.report(&program, spec.file_date).await.unwrap().is_none(),
        "nothing reconciled"
    );

    // The other side lands: attempt 2 reconciles the day, with the
    // settlement side the canceled run had accepted.
    r.upload(Side::Internal, &program, spec.file_date, &csv)
        .await
        .unwrap();
    let done = wait_for_key(&env, &key, RunStatus::Success).await;
    assert_ne!(done.run_id, live.run_id);
    assert_eq!(done.attempt, 2);
    let report: tally_domain::recon::rollup::Report =
        serde_json::from_str(&r.report(&program, spec.file_date).await.unwrap().unwrap()).unwrap();
    assert_eq!(report, tally_domain::recon::sample::expected_report(&spec));
    assert_eq!(
        env.runs().get(&live.run_id).await.unwrap().unwrap().status,
        RunStatus::Canceled,
        "the canceled attempt stays canceled"
    );
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn the_sweeper_marks_a_run_canceled_when_its_execution_was_stopped_outside_tally() {
    use tally_domain::recon::Side;
    let _g = exclusive().await;
    let env = Env::connect().await.unwrap();
    let r = recon().await;
    let program = unique("ITRA");
    let (spec, [dat, _, _]) = recon_files(&program, 500, 47);
    let key = tally_domain::run::recon_key(&program, spec.file_date);
    r.upload(Side::Settlement, &program, spec.file_date, &dat)
        .await
        .unwrap();
    // The execution waits for the internal side (in a Wait state, no task
    // in flight) when it is stopped by someone other than Tally.
    let live = settlement_accepted(&env, &key).await;
    let arn = live.executions.values().next().unwrap().clone();
    env.sfn
        .stop_execution()
        .execution_arn(&arn)
        .cause("stopped from the console")
        .send()
        .await
        .unwrap();
    let ended = env.wait(&arn).await.unwrap();
    assert_eq!(ended.status, "ABORTED", "{ended:?}");
    assert_eq!(
        env.runs().get(&live.run_id).await.unwrap().unwrap().status,
        RunStatus::Executing,
        "nothing in Tally saw the stop"
    );
    let out = env
        .invoke("run-sweeper", &serde_json::json!({}))
        .await
        .unwrap();
    let fixed = out["fixed"].as_array().unwrap();
    assert!(
        fixed
            .iter()
            .any(|f| f["run_id"] == live.run_id.as_str() && f["to"] == "CANCELED"),
        "{out}"
    );
    let swept = env.runs().get(&live.run_id).await.unwrap().unwrap();
    assert_eq!(swept.status, RunStatus::Canceled);
    assert_eq!(swept.cause.unwrap().error, "ExecutionAborted");
    // A second sweep leaves it.
    let again = env
        .invoke("run-sweeper", &serde_json::json!({}))
        .await
        .unwrap();
    assert!(!again["fixed"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["run_id"] == live.run_id.as_str()));
}

/// Polls the attempt `attempt` of a business key until it is in `status`
/// (10 min at most).
async fn wait_for_attempt(env: &Env, key: &str, attempt: u32, status: RunStatus) -> RunRecord {
    let started = std::time::Instant::now();
    loop {
        let r = wait_for_key(env, key, status).await;
        if r.attempt == attempt {
            return r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{key} attempt {attempt} not {status} after 10 min (current: {r:?})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn a_landing_that_changes_nothing_ends_on_the_days_report_and_each_reconciliation_keeps_its_own(
) {
    use tally_domain::recon::rollup::Report;
    use tally_domain::recon::Side;
    let _g = exclusive().await;
    let env = Env::connect().await.unwrap();
    let r = recon().await;
    let program = unique("ITRN");
    let mut spec = tally_domain::recon::sample::SampleSpec::new(&program, date(DATE), 1_000, 53);
    spec.file_sequence = 2;
    let dir = temp_file(&format!("runs-{program}"));
    let [dat, csv, _] = tally_cli::recon::generate(&spec, &dir).unwrap();
    let key = tally_domain::run::recon_key(&program, spec.file_date);
    let report_at = |k: String| {
        let r = &r;
        async move {
            let text = r
                .object_text(&k)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("no {k}"));
            serde_json::from_str::<Report>(&text).unwrap()
        }
    };

    // Attempt 1 reconciles file sequence 2 with the internal records.
    r.upload(Side::Settlement, &program, spec.file_date, &dat)
        .await
        .unwrap();
    r.upload(Side::Internal, &program, spec.file_date, &csv)
        .await
        .unwrap();
    let a1 = wait_for_attempt(&env, &key, 1, RunStatus::Success).await;
    let k1 = a1.report_key.clone().unwrap();
    assert!(
        k1.starts_with(&format!("reports/{program}/{DATE}/s2-i")) && k1.ends_with("/report.json"),
        "the reconciliation's own report: {k1}"
    );
    let expected = tally_domain::recon::sample::expected_report(&spec);
    assert_eq!(report_at(k1.clone()).await, expected);

    // The network re-sends file sequence 1: attempt 2 finds it older than
    // the accepted 2, has nothing to do, and ends SUCCESS on the day's report.
    let mut old = spec.clone();
    old.file_sequence = 1;
    let [old_dat, _, _] = tally_cli::recon::generate(&old, &dir.join("old")).unwrap();
    let stale = dir.join("resent.dat");
    std::fs::copy(&old_dat, &stale).unwrap();
    r.upload(Side::Settlement, &program, spec.file_date, &stale)
        .await
        .unwrap();
    let a2 = wait_for_attempt(&env, &key, 2, RunStatus::Success).await;
    assert_eq!(a2.report_key.as_deref(), Some(k1.as_str()), "{a2:?}");
    assert_eq!(a2.cause, None);
    assert_eq!(a2.units_total, 0, "nothing was planned");
    let found: Vec<&str> = a2.idle.values().map(|c| c.error.as_str()).collect();
    assert_eq!(found, vec!["Superseded"], "{a2:?}");
    assert!(a2
        .idle
        .values()
        .next()
        .unwrap()
        .cause
        .contains("older than the accepted 2"));
    assert_eq!(
        a2.idle.keys().collect::<Vec<_>>(),
        a2.executions.keys().collect::<Vec<_>>()
    );
    // The internal records uploaded again, unchanged: attempt 3 reconciles
    // the new internal version with settlement sequence 2, and its report is
    // exactly the day's (the re-sent sequence 1 wrote its records, but they
    // are its own: sequence 2's are as they were).
    let again = dir.join("again.csv");
    std::fs::copy(&csv, &again).unwrap();
    r.upload(Side::Internal, &program, spec.file_date, &again)
        .await
        .unwrap();
    let a3 = wait_for_attempt(&env, &key, 3, RunStatus::Success).await;
    let k3 = a3.report_key.clone().unwrap();
    assert_ne!(k3, k1, "a new internal version, a new reconciliation");
    assert_eq!(report_at(k3.clone()).await, expected);

    // A corrected internal side (one record fewer): attempt 4's report has
    // one internal record fewer; attempt 1's stays what it found.
    let full = std::fs::read_to_string(&csv).unwrap();
    let mut lines: Vec<&str> = full.lines().collect();
    lines.pop();
    let corrected = dir.join("corrected.csv");
    std::fs::write(&corrected, lines.join("\n") + "\n").unwrap();
    r.upload(Side::Internal, &program, spec.file_date, &corrected)
        .await
        .unwrap();
    let a4 = wait_for_attempt(&env, &key, 4, RunStatus::Success).await;
    let k4 = a4.report_key.clone().unwrap();
    assert_ne!(k4, k3);
    let fourth = report_at(k4.clone()).await;
    let internal = |rep: &Report| {
        rep.currencies
            .iter()
            .map(|c| c.matched + c.mismatched + c.unmatched_internal)
            .sum::<u64>()
    };
    assert_eq!(
        internal(&fourth) + 1,
        internal(&expected),
        "the dropped record"
    );
    assert_eq!(
        report_at(k1.clone()).await,
        expected,
        "attempt 1's report is what it found"
    );
    assert_eq!(
        report_at(format!("reports/{program}/{DATE}/report.json")).await,
        fourth,
        "the day's latest copy is attempt 4's"
    );
    for (run, k) in [(&a1, &k1), (&a2, &k1), (&a3, &k3), (&a4, &k4)] {
        let now = env.runs().get(&run.run_id).await.unwrap().unwrap();
        assert_eq!(
            (now.status, now.report_key.as_ref()),
            (RunStatus::Success, Some(k))
        );
    }
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn the_idle_record_the_idle_end_the_attach_and_the_amend_hold_their_conditions_in_dynamodb() {
    use tally_aws::ports::{Patch, Transition};
    use tally_domain::run::RunCause;
    let _g = exclusive().await;
    let env = Env::connect().await.unwrap();
    let store = env.runs();
    let now = chrono::Utc::now();
    let program = unique("ITRI");
    // A record written before runs had an `idle` map.
    let record = RunRecord::new_recon(&program, date(DATE), 1, now);
    let mut item = tally_aws::runs::record_item(&record);
    item.remove("idle").expect("new records store the map");
    env.dynamo
        .put_item()
        .table_name(&env.stack.runs_table)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    let run_id = record.run_id.clone();
    for e in ["e1", "e2"] {
        let arn = format!("arn:aws:states:us-east-1:000000000000:execution:recon:{e}");
        assert!(store.attach(&run_id, e, &arn, now).await.unwrap());
    }
    let found = |e: &str| RunCause {
        error: "Superseded".into(),
        cause: format!("{e} found an older version"),
    };
    assert!(store
        .mark_idle(&run_id, "e1", &found("e1"), now)
        .await
        .unwrap());
    assert!(store
        .mark_idle(&run_id, "e2", &found("e2"), now)
        .await
        .unwrap());
    assert!(
        store
            .mark_idle(&run_id, "e2", &found("e2"), now)
            .await
            .unwrap(),
        "idempotent"
    );
    assert!(!store
        .mark_idle("recon-NOPE-2026-11-20-a1", "e1", &found("e1"), now)
        .await
        .unwrap());
    let r = store.get(&run_id).await.unwrap().unwrap();
    assert_eq!(r.idle.len(), 2);
    assert_eq!(r.idle["e1"], found("e1"));
    assert!(r.all_idle());
    // The end holds only while the run names the executions it was read with.
    let seen = r.executions.len();
    let late = "arn:aws:states:us-east-1:000000000000:execution:recon:e3";
    store.attach(&run_id, "e3", late, now).await.unwrap();
    let patch = Patch {
        report_key: Some("reports/x/report.json".into()),
        ..Patch::default()
    };
    assert_eq!(
        store
            .end_idle(&run_id, RunStatus::Success, now, &patch, seen)
            .await
            .unwrap(),
        Transition::Refused(RunStatus::Executing)
    );
    assert_eq!(
        store
            .end_idle(&run_id, RunStatus::Success, now, &patch, seen + 1)
            .await
            .unwrap(),
        Transition::Applied
    );
    assert_eq!(
        store
            .end_idle(&run_id, RunStatus::Success, now, &patch, seen + 1)
            .await
            .unwrap(),
        Transition::AlreadyThere
    );
    assert_eq!(
        store
            .end_idle(
                &run_id,
                RunStatus::Failure,
                now,
                &Patch::default(),
                seen + 1
            )
            .await
            .unwrap(),
        Transition::Refused(RunStatus::Success)
    );
    let r = store.get(&run_id).await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.report_key.as_deref()),
        (RunStatus::Success, Some("reports/x/report.json"))
    );
    // An ended run names no execution that comes after its end.
    let after = "arn:aws:states:us-east-1:000000000000:execution:recon:e4";
    assert!(!store.attach(&run_id, "e4", after, now).await.unwrap());
    // The amend sets its fields only on a run in the given status, and
    // leaves the status and the times.
    let later = now + chrono::Duration::seconds(30);
    let newer = Patch {
        report_key: Some("reports/y/report.json".into()),
        ..Patch::default()
    };
    assert!(store
        .amend(&run_id, RunStatus::Success, later, &newer)
        .await
        .unwrap());
    let other = Patch {
        report_key: Some("reports/z/report.json".into()),
        ..Patch::default()
    };
    assert!(!store
        .amend(&run_id, RunStatus::Failure, later, &other)
        .await
        .unwrap());
    let amended = store.get(&run_id).await.unwrap().unwrap();
    assert_eq!(amended.status, RunStatus::Success);
    assert_eq!(amended.ended_at, r.ended_at);
    assert_eq!(amended.report_key.as_deref(), Some("reports/y/report.json"));
    assert!(!amended.executions.contains_key("e4"));
    // Through the claim (the record above was written without one): a
    // landing after a run's end joins the next attempt.
    let program = unique("ITRJ");
    let join = |arn: &'static str| {
        tally_aws::runs::join_recon_run(&store, &program, date(DATE), Some(arn))
    };
    let (first, new) = join("arn:aws:states:us-east-1:000000000000:execution:recon:f1")
        .await
        .unwrap();
    assert!(new);
    store
        .transition(&first.run_id, RunStatus::Success, now, &Patch::default())
        .await
        .unwrap();
    let (next, new) = join(after).await.unwrap();
    assert!(new);
    assert_eq!(next.attempt, 2);
    let next = store.get(&next.run_id).await.unwrap().unwrap();
    assert_eq!(next.status, RunStatus::Executing);
    assert_eq!(next.executions.keys().collect::<Vec<_>>(), ["e4"]);
    let first = store.get(&first.run_id).await.unwrap().unwrap();
    assert_eq!(first.executions.keys().collect::<Vec<_>>(), ["f1"]);
}
