//! IAM on the local stack, as AWS enforces it: each function's calls signed
//! with its own role (an `sts:AssumeRole` of the role deployed from
//! `infra/template.yaml`) and judged on the resource they touch.
//!
//! The first three tests are the holes a review found (every local test
//! passed while AWS would refuse these calls); each failed here with
//! `AccessDenied` before the template granted what the code calls. The last
//! shows a role refused what another function may do.

use anyhow::{Context, Result};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use tally_aws::ports::ReconState;
use tally_aws::recon::DynamoReconState;
use tally_aws::runs::{join_recon_run, DynamoRuns};
use tally_integration_tests::{exclusive, repo_root, Env};

fn role(logical: &str) -> String {
    format!("tally-{logical}Role")
}

/// The error code of a failed SDK call (None: the call succeeded).
fn code<T, E: ProvideErrorMetadata, R>(
    r: &Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>,
) -> Option<String> {
    r.as_ref().err().map(|e| e.code().unwrap_or("?").to_owned())
}

fn date() -> chrono::NaiveDate {
    "2026-11-20".parse().unwrap()
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn rollup_may_read_the_manifests_it_rolls_up() {
    let _g = exclusive().await;
    let env = Env::connect().await.unwrap();
    let sdk = env.as_role(&role("ReconRollupFunction")).await.unwrap();
    let state = DynamoReconState::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        aws_sdk_s3::Client::new(&sdk),
        &env.outputs["ReconStateTableName"],
        &env.outputs["LandingBucketName"],
    );
    // No manifests for this program: the read itself is what is judged.
    let got = state.manifests("IAMPROBE", date()).await;
    assert!(got.is_ok(), "{got:?}");
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn settle_may_open_the_next_attempt_of_a_reconciliation_run() {
    let _g = exclusive().await;
    let env = Env::connect().await.unwrap();
    let sdk = env.as_role(&role("ReconSettleFunction")).await.unwrap();
    let runs = DynamoRuns {
        client: aws_sdk_dynamodb::Client::new(&sdk),
        table: env.stack.runs_table.clone(),
    };
    // A program no other test uses: the submit creates the run and its claim
    // in one TransactWriteItems of two Puts.
    let program = format!("IAMSETTLE{}", std::process::id());
    let got = join_recon_run(&runs, &program, date(), None).await;
    let (run, new) = got.unwrap();
    assert!(new, "{run:?}");
}

/// The ingest task definition as deploy.py registered it.
fn task_definition() -> Result<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(repo_root().join(".tally/ecs-tasks.json"))?;
    let doc: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)?;
    let (arn, td) = doc
        .into_iter()
        .next()
        .context("no task definition deployed")?;
    Ok((arn, td))
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn the_ingest_task_starts_with_its_execution_role() {
    let _g = exclusive().await;
    let env = Env::connect().await.unwrap();
    let (arn, td) = task_definition().unwrap();
    let image = td["containers"]["recon-ingest"]["image"].as_str().unwrap();
    assert!(
        image.contains(".dkr.ecr."),
        "the task's image must come from the stack's ECR repository: {image}"
    );
    // As Step Functions runs it: with the reconciliation state machine's role.
    let sdk = env
        .as_role(&role("ReconciliationStateMachine"))
        .await
        .unwrap();
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    let cluster = "arn:aws:ecs:us-east-1:123456789012:cluster/tally-recon";
    // No task input: the container starts and exits at once, naming what it lacks.
    let task = ecs
        .run_task()
        .cluster(cluster)
        .task_definition(&arn)
        .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
        .send()
        .await
        .unwrap()
        .tasks
        .unwrap_or_default()
        .pop()
        .unwrap();
    let task_arn = task.task_arn.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let stopped = loop {
        let d = ecs
            .describe_tasks()
            .cluster(cluster)
            .tasks(&task_arn)
            .send()
            .await
            .unwrap();
        let t = d.tasks.unwrap_or_default().pop().unwrap();
        if t.last_status.as_deref() == Some("STOPPED") {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the task never stopped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(
        stopped.stop_code.as_ref().map(|c| c.as_str()),
        Some("EssentialContainerExited"),
        "the task did not start: {:?}",
        stopped.stopped_reason
    );
    // It ran: the binary's own refusal of a missing TALLY_INGEST_TASK.
    assert_eq!(stopped.containers()[0].exit_code, Some(2));
}

#[tokio::test]
#[ignore = "needs the local stack: make test"]
async fn a_functions_role_is_refused_what_another_function_may_do() {
    let _g = exclusive().await;
    let env = Env::connect().await.unwrap();
    let o = &env.outputs;

    // The partition writes ledger entries: a conditional Put on a key that
    // is not there is judged (ConditionalCheckFailed), nothing written.
    let partition = env.as_role(&role("CobPartitionFunction")).await.unwrap();
    let ddb = aws_sdk_dynamodb::Client::new(&partition);
    let probe = |table: &str| {
        ddb.put_item()
            .table_name(table)
            .item("account_id", AttributeValue::S("IAM-PROBE".into()))
            .item("accrual_date", AttributeValue::S("2000-01-01".into()))
            .item("pk", AttributeValue::S("IAM-PROBE".into()))
            .item("sk", AttributeValue::S("IAM-PROBE".into()))
            .condition_expression("attribute_exists(nothing_here)")
            .send()
    };
    let own = probe(&o["LedgerTableName"]).await;
    assert_eq!(
        code(&own).as_deref(),
        Some("ConditionalCheckFailedException")
    );
    let other = probe(&o["ReconStateTableName"]).await;
    assert_eq!(code(&other).as_deref(), Some("AccessDeniedException"));
    // Resource right, action not granted: the partition never reads a ledger entry.
    let read = ddb
        .get_item()
        .table_name(&o["LedgerTableName"])
        .key("account_id", AttributeValue::S("IAM-PROBE".into()))
        .key("accrual_date", AttributeValue::S("2000-01-01".into()))
        .send()
        .await;
    assert_eq!(code(&read).as_deref(), Some("AccessDeniedException"));
    // Granted on the index, not on the table.
    let scan_table = ddb
        .query()
        .table_name(&o["AccountsTableName"])
        .key_condition_expression("account_id = :a")
        .expression_attribute_values(":a", AttributeValue::S("x".into()))
        .send()
        .await;
    assert_eq!(code(&scan_table).as_deref(), Some("AccessDeniedException"));

    // Rollup reads summaries under state/, never a landed file.
    let rollup = env.as_role(&role("ReconRollupFunction")).await.unwrap();
    let s3 = aws_sdk_s3::Client::new(&rollup);
    let bucket = &o["LandingBucketName"];
    let summary = s3
        .get_object()
        .bucket(bucket)
        .key("state/IAMPROBE/none.json")
        .send()
        .await;
    assert_eq!(code(&summary).as_deref(), Some("NoSuchKey"));
    let landed = s3
        .get_object()
        .bucket(bucket)
        .key("settlement/IAMPROBE/x.dat")
        .send()
        .await;
    assert_eq!(code(&landed).as_deref(), Some("AccessDenied"));

    // The trigger starts reconciliations, not COB runs.
    let trigger = env.as_role(&role("ReconTriggerFunction")).await.unwrap();
    let sfn = aws_sdk_sfn::Client::new(&trigger);
    let cob = sfn
        .start_execution()
        .state_machine_arn(&o["AccrualCobStateMachineArn"])
        .name(format!("iam-probe-{}", std::process::id()))
        .input("{}")
        .send()
        .await;
    assert_eq!(code(&cob).as_deref(), Some("AccessDeniedException"));

    // The aggregate publishes to the stack's bus, not the default one.
    let aggregate = env.as_role(&role("CobAggregateFunction")).await.unwrap();
    let events = aws_sdk_eventbridge::Client::new(&aggregate);
    let default_bus = events
        .put_events()
        .entries(
            aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .source("tally.iam-probe")
                .detail_type("probe")
                .detail("{}")
                .build(),
        )
        .send()
        .await;
    assert_eq!(code(&default_bus).as_deref(), Some("AccessDeniedException"));

    // Only the COB state machine invokes the COB functions.
    let coordinator = env.as_role(&role("CobCoordinatorFunction")).await.unwrap();
    let invoke = invoke_as(&coordinator, "cob-partition").await.unwrap();
    assert_eq!(invoke, 403);
    let machine = env.as_role(&role("AccrualCobStateMachine")).await.unwrap();
    assert_eq!(invoke_as(&machine, "recon-ingest").await.unwrap(), 403);
}

/// The HTTP status of a Lambda Invoke signed as `sdk`'s role (an empty
/// event; a refused call never reaches the function).
async fn invoke_as(sdk: &aws_config::SdkConfig, function: &str) -> Result<u16> {
    use aws_sdk_sts::config::ProvideCredentials;
    let creds = sdk
        .credentials_provider()
        .context("credentials")?
        .provide_credentials()
        .await?;
    // The Lambda SDK is not a dependency of the tests; the gateway judges the
    // Credential and session token of the Authorization header (it does not
    // verify signatures), so a request carrying them is judged as the SDK's.
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into());
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = tokio::net::TcpStream::connect(host).await?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = "{}";
    let req = format!(
        "POST /2015-03-31/functions/{function}/invocations HTTP/1.1\r\nHost: {host}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential={}/20261204/us-east-1/lambda/aws4_request, \
         SignedHeaders=host, Signature=0\r\nX-Amz-Security-Token: {}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        creds.access_key_id(),
        creds.session_token().unwrap_or_default(),
        body.len()
    );
    conn.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    conn.read_to_end(&mut resp).await?;
    let text = String::from_utf8_lossy(&resp);
    text.split_whitespace()
        .nth(1)
        .context("a status line")?
        .parse()
        .context("a status code")
}
