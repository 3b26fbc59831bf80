//! Lambda limits on the local stack, as AWS enforces them: a partition and
//! an ingest that run past their `Timeout` are killed by the Lambda host
//! (`Sandbox.Timedout`), retried by the state machine, and resume
//! idempotently, ending equal to the clean run.
//!
//! The timeout is shortened for the test (the host's limits knob, as a
//! redeploy with a shorter `Timeout` would) and the first attempt is made
//! slow with latency on its writes (the fault proxy, a small budget): it
//! cannot finish in time, the next one can.

use fault_proxy::{control, Kind, Plan, Rule};
use std::time::Duration;
use tally_cli::recon::{generate, Recon};
use tally_cli::runs::Options;
use tally_cli::stack::ReconStack;
use tally_domain::recon::sample::{self, SampleSpec};
use tally_domain::recon::Side;
use tally_integration_tests::local::Local;
use tally_integration_tests::recon::{land, landed_execution, landed_outcome};
use tally_integration_tests::{date, exclusive, repo_root, temp_file, unique_program, Env};

const DATE: &str = "2026-11-20";

fn proxy() -> String {
    std::env::var("TALLY_FAULT_PROXY")
        .expect("TALLY_FAULT_PROXY: the local stack's fault proxy (make test starts it)")
}

/// Latency on `operation` (for requests whose bodies hold `body_contains`)
/// for the first `budget` of them or the first `for_s` seconds, then nothing.
fn slow_first(
    operation: &str,
    body_contains: Option<String>,
    latency_ms: u64,
    budget: u64,
    for_s: u64,
) -> Plan {
    Plan {
        seed: 7,
        rules: vec![Rule {
            kind: Kind::Latency,
            rate: 1.0,
            operations: vec![operation.into()],
            latency_ms,
            body_contains,
            ..Rule::default()
        }],
        max_faults: budget,
        expires_after_s: for_s,
    }
}

/// Clears the function's test limits when the test ends, even by a panic.
struct Limits(Local, &'static str);

impl Drop for Limits {
    fn drop(&mut self) {
        let (local, f) = (self.0.clone(), self.1);
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(local.set_limits(f, serde_json::Value::Null))
        })
        .join();
    }
}

#[tokio::test]
#[ignore = "needs the local stack with its fault proxy: make test"]
async fn a_partition_past_its_timeout_is_retried_and_ends_as_the_clean_run() {
    let _g = exclusive().await;
    let env = Env::connect().await.unwrap();
    let single = Options {
        partition_threshold: Some(1_000_000),
        partition_count: None,
    };
    env.fresh_book(500, 61, date(DATE)).await.unwrap();
    let (clean, _) = env.run_ok(date(DATE), &single, None).await.unwrap();
    let clean_ledger = env.ledger().await.unwrap();

    env.fresh_book(500, 61, date(DATE)).await.unwrap();
    let local = Local::from_env();
    // The first attempt may run 3 s; its first transactions wait 10 s each,
    // so it is killed with its writes in flight. The retry has the template's
    // 900 s (and meets what is left of the slow writes).
    local
        .set_limits(
            "cob-partition",
            serde_json::json!({"timeout_s": 3, "invocations": 1}),
        )
        .await
        .unwrap();
    let _limits = Limits(local.clone(), "cob-partition");
    let proxy = proxy();
    let _clear = control::ClearOnDrop(proxy.clone());
    control::set_plan(
        &proxy,
        &slow_first("TransactWriteItems", None, 10_000, 16, 600),
    )
    .await
    .unwrap();
    let (status, arn) = env.run_ok(date(DATE), &single, None).await.unwrap();
    let history = env.history(&arn).await.unwrap();
    assert!(
        history.iter().filter(|h| *h == "TaskFailed").count() >= 1,
        "{history:?}"
    );
    let failures = timeouts(&env, &arn).await;
    assert!(failures >= 1, "no attempt timed out: {history:?}");
    assert_eq!(env.ledger().await.unwrap(), clean_ledger);
    assert_eq!(
        tally_integration_tests::event(&status)["totals"],
        tally_integration_tests::event(&clean)["totals"]
    );
}

/// How many task failures of an execution were `Sandbox.Timedout`.
async fn timeouts(env: &Env, arn: &str) -> usize {
    let mut n = 0;
    let mut token = None;
    loop {
        let page = env
            .sfn
            .get_execution_history()
            .execution_arn(arn)
            .max_results(1000)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        n += page
            .events()
            .iter()
            .filter_map(|e| e.task_failed_event_details())
            .filter(|d| d.error() == Some("Sandbox.Timedout"))
            .count();
        match page.next_token() {
            Some(t) => token = Some(t.to_owned()),
            None => return n,
        }
    }
}

#[tokio::test]
#[ignore = "needs the local stack with its fault proxy: make test"]
async fn an_ingest_past_its_timeout_is_retried_and_ends_with_the_same_report() {
    let _g = exclusive().await;
    let r = Recon::connect(ReconStack::load(&repo_root().join(".tally/stack.json")).unwrap()).await;
    let env = Env::connect().await.unwrap();
    let s = SampleSpec::new(&unique_program("ITO"), DATE.parse().unwrap(), 3_000, 71);
    let [dat, csv, _] = generate(&s, &temp_file(&format!("limits-{}", s.program_id))).unwrap();
    let k_internal = land(&r, Side::Internal, &s.program_id, DATE, &csv).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while landed_outcome(&r, &k_internal).await.is_null() {
        assert!(
            std::time::Instant::now() < deadline,
            "the internal side never ended"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let local = Local::from_env();
    local
        .set_limits(
            "recon-ingest",
            serde_json::json!({"timeout_s": 3, "invocations": 1}),
        )
        .await
        .unwrap();
    let _limits = Limits(local.clone(), "recon-ingest");
    let proxy = proxy();
    let _clear = control::ClearOnDrop(proxy.clone());
    // The first attempt may run 3 s and its record writes (this program's
    // only) each wait 2 s: it is killed part way; the retry writes the rest.
    control::set_plan(
        &proxy,
        &slow_first(
            "BatchWriteItem",
            Some(format!("{}#", s.program_id)),
            2_000,
            16,
            600,
        ),
    )
    .await
    .unwrap();
    let k_settlement = land(&r, Side::Settlement, &s.program_id, DATE, &dat).await;
    let json = r
        .wait_report(
            &s.program_id,
            DATE.parse().unwrap(),
            Duration::from_secs(600),
            |_| {},
        )
        .await
        .unwrap();
    let got: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        got,
        serde_json::to_value(sample::expected_report(&s)).unwrap()
    );
    let (arn, _) = landed_execution(&r, &k_settlement).await.unwrap();
    assert!(
        timeouts(&env, &arn).await >= 1,
        "the ingest never timed out"
    );
    let outcome = landed_outcome(&r, &k_settlement).await;
    assert_eq!(outcome["records"], 3_000, "{outcome}");
}
