//! The COB end to end on the local stack, through the real state machine.
//! Run with `make test` (which starts the stack with the fault switch on).

use aws_sdk_eventbridge::types::Target;
use std::collections::BTreeMap;
use tally_cli::runs::Options;
use tally_integration_tests::{date, event, exclusive, temp_file, Env};

const BOOK: u64 = 400;
const DATE: &str = "2026-11-20";

fn single() -> Options {
    Options {
        partition_threshold: Some(1_000_000),
        partition_count: None,
    }
}

fn fan_out(n: u32) -> Options {
    Options {
        partition_threshold: Some(1),
        partition_count: Some(n),
    }
}

type Ledger = BTreeMap<(String, String), (String, String, String, String)>;

/// The reference: a clean single-path run over a fresh book.
async fn clean_reference(env: &Env, seed: u64) -> (Ledger, serde_json::Value) {
    env.fresh_book(BOOK, seed, date(DATE)).await.unwrap();
    let (s, _) = env.run_ok(date(DATE), &single(), None).await.unwrap();
    (env.ledger().await.unwrap(), event(&s))
}

fn totals(event: &serde_json::Value) -> serde_json::Value {
    event["totals"].clone()
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn single_and_partitioned_paths_give_identical_ledgers() {
    let _guard = exclusive().await;
    let env = Env::connect().await.unwrap();
    let (reference, e1) = clean_reference(&env, 11).await;
    assert!(
        reference.len() > (BOOK as usize) / 2,
        "the book posts something: {}",
        reference.len()
    );
    assert_eq!(e1["partition_count"], 1);
    assert_eq!(
        e1["postings_written"].as_u64().unwrap() as usize,
        reference.len()
    );

    env.fresh_book(BOOK, 11, date(DATE)).await.unwrap();
    let (s, arn) = env.run_ok(date(DATE), &fan_out(4), None).await.unwrap();
    let e2 = event(&s);
    assert_eq!(e2["partition_count"], 4);
    assert!(
        env.history(&arn)
            .await
            .unwrap()
            .iter()
            .filter(|n| *n == "MapIterationSucceeded")
            .count()
            == 4
    );
    assert_eq!(env.ledger().await.unwrap(), reference);
    assert_eq!(totals(&e2), totals(&e1));
    assert_eq!(e2["accounts_processed"], e1["accounts_processed"]);
    // The per-currency totals are the ledger's own sums.
    let mut sums: BTreeMap<String, rust_decimal::Decimal> = BTreeMap::new();
    for (amount, _, _, ccy) in reference.values() {
        *sums.entry(ccy.clone()).or_default() += amount.parse::<rust_decimal::Decimal>().unwrap();
    }
    for t in e2["totals"].as_array().unwrap() {
        let got: rust_decimal::Decimal = t["amount"].as_str().unwrap().parse().unwrap();
        assert_eq!(got, sums[t["currency"].as_str().unwrap()], "{t}");
    }
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn running_the_same_date_twice_adds_nothing() {
    let _guard = exclusive().await;
    let env = Env::connect().await.unwrap();
    let (reference, _) = clean_reference(&env, 12).await;
    let accounts_before = env.count(&env.stack.accounts_table).await.unwrap();
    let (s, _) = env.run_ok(date(DATE), &fan_out(2), None).await.unwrap();
    assert_eq!(env.ledger().await.unwrap(), reference);
    assert_eq!(event(&s)["postings_written"], 0);
    assert_eq!(
        env.count(&env.stack.accounts_table).await.unwrap(),
        accounts_before
    );
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn a_partition_failing_part_way_is_retried_and_ends_as_the_clean_run() {
    let _guard = exclusive().await;
    let env = Env::connect().await.unwrap();
    let (reference, clean) = clean_reference(&env, 13).await;

    env.fresh_book(BOOK, 13, date(DATE)).await.unwrap();
    // Partition 1 of 4 dies twice after committing some accounts; the Retry
    // (MaxAttempts 3) carries it through.
    let fault = serde_json::json!({"fail_after_accounts": 20, "failures": 2, "partition": 1});
    let (s, arn) = env
        .run_ok(date(DATE), &fan_out(4), Some(fault))
        .await
        .unwrap();
    let history = env.history(&arn).await.unwrap();
    assert_eq!(
        history.iter().filter(|n| *n == "TaskFailed").count(),
        2,
        "two failed attempts: {history:?}"
    );
    assert_eq!(env.ledger().await.unwrap(), reference);
    let e = event(&s);
    assert_eq!(
        totals(&e),
        totals(&clean),
        "retried partition reports the clean totals"
    );
    assert_eq!(e["postings_written"], clean["postings_written"]);
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn two_runs_for_the_same_date_started_together_post_each_entry_once() {
    let _guard = exclusive().await;
    let env = Env::connect().await.unwrap();
    let (reference, _) = clean_reference(&env, 14).await;

    env.fresh_book(BOOK, 14, date(DATE)).await.unwrap();
    let (four, two) = (fan_out(4), fan_out(2));
    let (a, b) = tokio::join!(
        env.start(date(DATE), &four, None),
        env.start(date(DATE), &two, None)
    );
    let (a, b) = (a.unwrap().1, b.unwrap().1);
    let (sa, sb) = tokio::join!(env.wait(&a), env.wait(&b));
    let (sa, sb) = (sa.unwrap(), sb.unwrap());
    assert!(sa.succeeded() && sb.succeeded(), "{sa:?} {sb:?}");
    assert_eq!(
        env.ledger().await.unwrap(),
        reference,
        "ledger() also fails on any duplicate"
    );
    // Between them the two runs report every posting exactly once.
    let total = event(&sa)["postings_written"].as_u64().unwrap()
        + event(&sb)["postings_written"].as_u64().unwrap();
    assert_eq!(total as usize, reference.len());
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn a_bad_import_writes_nothing() {
    let _guard = exclusive().await;
    let env = Env::connect().await.unwrap();
    env.truncate().await.unwrap();
    let file = temp_file("bad-book.jsonl");
    let mut book = Vec::new();
    tally_cli::generate::generate(300, 15, date(DATE), &mut book).unwrap();
    let mut text = String::from_utf8(book).unwrap();
    text.push_str(r#"{"account_id":"BAD-1","product":"SAVINGS","status":"ACTIVE","currency":"USD","balance":"10.005","annual_rate":"0.01","day_count":"ACT/360","opened_on":"2026-01-01","accrued_through":null}"#);
    text.push('\n');
    std::fs::write(&file, text).unwrap();
    let err = tally_cli::import::import(&env.book, &file, |_| {})
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("line 301") && msg.contains("`balance`") && msg.contains("at most 2"),
        "{msg}"
    );
    assert_eq!(env.count(&env.stack.accounts_table).await.unwrap(), 0);
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn a_partition_that_keeps_failing_fails_the_run_publishes_failed_and_alarms() {
    let _guard = exclusive().await;
    let env = Env::connect().await.unwrap();
    env.fresh_book(60, 16, date(DATE)).await.unwrap();

    // Listen on the alarm topic and the event bus through one SQS queue.
    let sqs = aws_sdk_sqs::Client::new(&env.sdk);
    let queue = sqs
        .create_queue()
        .queue_name(format!("tally-it-{}", std::process::id()))
        .send()
        .await
        .unwrap();
    let url = queue.queue_url().unwrap().to_owned();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let sns = aws_sdk_sns::Client::new(&env.sdk);
    let subscription = sns
        .subscribe()
        .topic_arn(&env.outputs["AlarmTopicArn"])
        .protocol("sqs")
        .endpoint(&queue_arn)
        .send()
        .await
        .unwrap()
        .subscription_arn()
        .expect("a subscription ARN")
        .to_owned();
    let events = aws_sdk_eventbridge::Client::new(&env.sdk);
    let rule = format!("tally-it-{}", std::process::id());
    events
        .put_rule()
        .name(&rule)
        .event_bus_name(&env.outputs["EventBusName"])
        .event_pattern(r#"{"source":["bank.core"]}"#)
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(&rule)
        .event_bus_name(&env.outputs["EventBusName"])
        .targets(Target::builder().id("q").arn(&queue_arn).build().unwrap())
        .send()
        .await
        .unwrap();

    let fault = serde_json::json!({"fail_after_accounts": 0, "failures": 100, "partition": 0});
    let (_, arn) = env
        .start(date(DATE), &fan_out(2), Some(fault))
        .await
        .unwrap();
    let s = env.wait(&arn).await.unwrap();
    assert_eq!(s.status, "FAILED");
    assert_eq!(s.error.as_deref(), Some("AccrualRunFailed"));

    // SNS wraps the alarm in a notification; EventBridge delivers the event itself.
    let (mut alarms, mut published) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let got = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for body in got.messages().iter().filter_map(|m| m.body()) {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            match v["Message"].as_str() {
                Some(m) => alarms.push(serde_json::from_str::<serde_json::Value>(m).unwrap()),
                None => published.push(v),
            }
        }
        if !alarms.is_empty() && !published.is_empty() {
            break;
        }
    }
    assert_eq!(alarms.len(), 1, "one alarm: {alarms:?}");
    assert_eq!(alarms[0]["stage"], "PARTITION");
    assert_eq!(alarms[0]["failed_partitions"][0]["partition"], 0);
    assert_eq!(
        alarms[0]["failed_partitions"][0]["error"],
        "TransientStoreError"
    );
    let types: Vec<&str> = published
        .iter()
        .filter_map(|e| e["detail-type"].as_str())
        .collect();
    assert_eq!(
        types,
        ["accrual_run_failed"],
        "failed published, never completed"
    );
    events
        .remove_targets()
        .rule(&rule)
        .event_bus_name(&env.outputs["EventBusName"])
        .ids("q")
        .send()
        .await
        .unwrap();
    events
        .delete_rule()
        .name(&rule)
        .event_bus_name(&env.outputs["EventBusName"])
        .send()
        .await
        .unwrap();
    // Unsubscribe before the queue goes: moto fails every later Publish to a
    // topic with a subscription whose queue no longer exists.
    sns.unsubscribe()
        .subscription_arn(&subscription)
        .send()
        .await
        .unwrap();
    sqs.delete_queue().queue_url(&url).send().await.unwrap();
}

/// The account cases of the bad-input corpus (tests/corpus/manifest.json):
/// each is refused at the line and field it names, and the accounts table
/// stays empty.
#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn every_bad_account_file_of_the_corpus_is_refused_and_writes_nothing() {
    let _guard = exclusive().await;
    let env = Env::connect().await.unwrap();
    env.truncate().await.unwrap();
    let dir = tally_integration_tests::repo_root().join("tests/corpus");
    let cases: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let cases: Vec<_> = cases.iter().filter(|c| c["kind"] == "accounts").collect();
    assert!(cases.len() >= 15, "{} account cases", cases.len());
    let mut wrong = Vec::new();
    for c in cases {
        let file = dir.join(c["file"].as_str().unwrap());
        match tally_cli::import::import(&env.book, &file, |_| {}).await {
            Err(tally_cli::import::ImportFailure::Invalid(e))
                if e.line as u64 == c["line"].as_u64().unwrap()
                    && e.field == c["field"].as_str() => {}
            other => wrong.push(format!(
                "{}: want line {} field {}, got {other:?}",
                c["name"], c["line"], c["field"]
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(env.count(&env.stack.accounts_table).await.unwrap(), 0);
    // The base file itself imports: the cases fail for their own faults.
    let n = tally_cli::import::import(&env.book, &dir.join("base-accounts.jsonl"), |_| {})
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(env.count(&env.stack.accounts_table).await.unwrap(), 3);
    env.truncate().await.unwrap();
}
