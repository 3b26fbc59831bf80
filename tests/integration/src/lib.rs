//! Helpers for the integration tests: clients for the local stack, a clean
//! book per test, runs through the real state machine, the ledger as data.
//!
//! Tests share one local stack (the Lambdas read fixed table names), so they
//! take [`exclusive`] and start from emptied tables.

pub mod faults;
pub mod local;
pub mod recon;

use anyhow::{bail, Context, Result};
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use tally_aws::dynamo::DynamoBook;
use tally_cli::runs::{self, Options, RunStatus};
use tally_cli::stack::Stack;
use tally_domain::NaiveDate;

pub struct Env {
    pub stack: Stack,
    pub sdk: aws_config::SdkConfig,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub sfn: aws_sdk_sfn::Client,
    pub book: DynamoBook,
    pub outputs: HashMap<String, String>,
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// Serialises the tests: they share the stack's tables.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::Mutex::new(()))
        .lock()
        .await
}

impl Env {
    pub async fn connect() -> Result<Env> {
        let endpoint =
            std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into());
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .load()
            .await;
        let file = repo_root().join(".tally/stack.json");
        let stack = Stack::load(&file)
            .context("the local stack is not deployed: run `make test` (or `tally local up`)")?;
        let outputs: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&file)?)?;
        let outputs = outputs
            .iter()
            .map(|o| {
                (
                    o["OutputKey"].as_str().unwrap_or_default().to_owned(),
                    o["OutputValue"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let book = DynamoBook::new(dynamo.clone(), &stack.accounts_table, &stack.ledger_table);
        Ok(Env {
            sfn: aws_sdk_sfn::Client::new(&sdk),
            dynamo,
            book,
            stack,
            sdk,
            outputs,
        })
    }

    /// Deletes every item of the three tables.
    pub async fn truncate(&self) -> Result<()> {
        for (table, keys) in [
            (&self.stack.accounts_table, &["account_id"][..]),
            (
                &self.stack.ledger_table,
                &["account_id", "accrual_date"][..],
            ),
            (&self.stack.runs_table, &["run_id"][..]),
        ] {
            let mut start = None;
            loop {
                let page = self
                    .dynamo
                    .scan()
                    .table_name(table)
                    .set_exclusive_start_key(start)
                    .send()
                    .await?;
                let deletes: Vec<WriteRequest> = page
                    .items()
                    .iter()
                    .map(|i| {
                        let key: HashMap<String, AttributeValue> = keys
                            .iter()
                            .map(|k| (k.to_string(), i[*k].clone()))
                            .collect();
                        WriteRequest::builder()
                            .delete_request(
                                DeleteRequest::builder().set_key(Some(key)).build().unwrap(),
                            )
                            .build()
                    })
                    .collect();
                for chunk in deletes.chunks(25) {
                    self.book.batch_write(table, chunk.to_vec()).await?;
                }
                match page.last_evaluated_key() {
                    Some(k) if !k.is_empty() => start = Some(k.clone()),
                    _ => break,
                }
            }
        }
        Ok(())
    }

    pub async fn count(&self, table: &str) -> Result<usize> {
        let mut n = 0;
        let mut start = None;
        loop {
            let page = self
                .dynamo
                .scan()
                .table_name(table)
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await?;
            n += page.count() as usize;
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(n),
            }
        }
    }

    /// A fresh book of `count` generated accounts for `date`.
    pub async fn fresh_book(&self, count: u64, seed: u64, date: NaiveDate) -> Result<()> {
        self.truncate().await?;
        let file = temp_file(&format!("book-{seed}-{count}.jsonl"));
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file)?);
        tally_cli::generate::generate(count, seed, date, &mut w)?;
        drop(w);
        tally_cli::import::import(&self.book, &file, |_| {})
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }

    pub async fn start(
        &self,
        date: NaiveDate,
        options: &Options,
        fault: Option<serde_json::Value>,
    ) -> Result<(String, String)> {
        let run_id = runs::new_run_id(date);
        let arn = runs::start(
            &self.sfn,
            &self.stack.state_machine_arn,
            &run_id,
            date,
            options,
            fault,
        )
        .await?;
        Ok((run_id, arn))
    }

    /// Waits for a run: up to `TALLY_RUN_WAIT_SECS` (default 600) seconds.
    pub async fn wait(&self, arn: &str) -> Result<RunStatus> {
        let secs = std::env::var("TALLY_RUN_WAIT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(600);
        runs::wait(&self.sfn, arn, Duration::from_secs(secs), |_, _| {}).await
    }

    /// Runs the COB for `date` through the state machine and requires success.
    pub async fn run_ok(
        &self,
        date: NaiveDate,
        options: &Options,
        fault: Option<serde_json::Value>,
    ) -> Result<(RunStatus, String)> {
        let (_, arn) = self.start(date, options, fault).await?;
        let s = self.wait(&arn).await?;
        if !s.succeeded() {
            bail!(
                "run {} ended {}: {:?} {:?}",
                s.run_id,
                s.status,
                s.error,
                s.cause
            );
        }
        Ok((s, arn))
    }

    /// The ledger as comparable data: (account, date) → (amount, debit, credit, currency).
    pub async fn ledger(
        &self,
    ) -> Result<BTreeMap<(String, String), (String, String, String, String)>> {
        let mut out = BTreeMap::new();
        let mut buf = Vec::new();
        tally_cli::export::export(&self.book, None, &mut buf).await?;
        for line in String::from_utf8(buf)?.lines() {
            let e: tally_domain::ledger::ExportLine = serde_json::from_str(line)?;
            let prev = out.insert(
                (e.account_id.clone(), e.accrual_date.to_string()),
                (e.amount, e.debit, e.credit, e.currency.to_string()),
            );
            if prev.is_some() {
                bail!(
                    "duplicate ledger entry for {} {}",
                    e.account_id,
                    e.accrual_date
                );
            }
        }
        Ok(out)
    }

    /// Names of the history events of an execution, in order.
    pub async fn history(&self, arn: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .sfn
                .get_execution_history()
                .execution_arn(arn)
                .max_results(1000)
                .set_next_token(token)
                .send()
                .await?;
            names.extend(page.events().iter().map(|e| e.r#type().as_str().to_owned()));
            match page.next_token() {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(names),
            }
        }
    }
}

/// The `event` the aggregate published, from a run's output.
pub fn event(s: &RunStatus) -> serde_json::Value {
    s.output
        .as_ref()
        .and_then(|o| o.get("event"))
        .cloned()
        .unwrap_or_default()
}

pub fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tally-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// A program ID (1–10 of `A-Z 0-9`) of `prefix` and six characters unique to
/// this test process and moment, so a test never finds what an earlier run
/// on the same stack left (a report, a claim, a status) under its name.
pub fn unique_program(prefix: &str) -> String {
    assert!(
        prefix.len() <= 4,
        "a program prefix of at most 4 characters"
    );
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut x =
        tally_domain::partition::fnv1a_64(format!("{}-{t}-{n}", std::process::id()).as_bytes());
    let digits = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut tail = String::new();
    for _ in 0..6 {
        tail.push(digits[(x % 36) as usize] as char);
        x /= 36;
    }
    format!("{prefix}{tail}")
}

pub fn date(s: &str) -> NaiveDate {
    s.parse().expect("date")
}

impl Env {
    /// An SDK configuration signed as a role of the deployed stack (the role
    /// SAM makes for `<Logical>` is `tally-<Logical>Role`): an
    /// `sts:AssumeRole` through the local stack, so every call it signs is
    /// judged against that role's policies, as the function's own are.
    pub async fn as_role(&self, role_name: &str) -> Result<aws_config::SdkConfig> {
        let sts = aws_sdk_sts::Client::new(&self.sdk);
        let creds = sts
            .assume_role()
            .role_arn(format!("arn:aws:iam::123456789012:role/{role_name}"))
            .role_session_name(format!("it-{}", std::process::id()))
            .send()
            .await
            .with_context(|| format!("AssumeRole {role_name}"))?
            .credentials
            .context("AssumeRole returned no credentials")?;
        let endpoint =
            std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into());
        Ok(aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                creds.access_key_id,
                creds.secret_access_key,
                Some(creds.session_token),
                None,
                "assumed-role",
            ))
            .load()
            .await)
    }

    /// The run records of the stack.
    pub fn runs(&self) -> tally_aws::runs::DynamoRuns {
        tally_cli::runs::store(&self.sdk, &self.stack.runs_table)
    }

    /// Invokes a function of the local stack by name, as a scheduler would
    /// (through the gateway's Lambda `Invoke` endpoint); returns its JSON
    /// answer, or the error the function returned.
    pub async fn invoke(
        &self,
        function: &str,
        payload: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let endpoint =
            std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into());
        let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
        let body = payload.to_string();
        let mut conn = tokio::net::TcpStream::connect(host).await?;
        let req = format!(
            "POST /2015-03-31/functions/{function}/invocations HTTP/1.1\r\nHost: {host}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(req.as_bytes()).await?;
        let mut resp = Vec::new();
        conn.read_to_end(&mut resp).await?;
        let text = String::from_utf8_lossy(&resp);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .context("an HTTP answer from the gateway")?;
        let status = head.split_whitespace().nth(1).unwrap_or("?");
        let function_error = head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("x-amz-function-error"));
        // The gateway answers with Content-Length; a chunked body is not expected.
        if status != "200" || function_error {
            bail!("invoke {function}: HTTP {status}: {body}");
        }
        serde_json::from_str(body).with_context(|| format!("invoke {function}: {body}"))
    }
}

/// An SQS queue subscribed to the alarm topic, for tests that expect (or
/// expect no) alarm. Deleted on `close`.
pub struct AlarmListener {
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
    url: String,
    subscription: String,
}

impl AlarmListener {
    pub async fn new(env: &Env, name: &str) -> Result<AlarmListener> {
        let sqs = aws_sdk_sqs::Client::new(&env.sdk);
        let url = sqs
            .create_queue()
            .queue_name(format!("tally-it-{name}-{}", std::process::id()))
            .send()
            .await?
            .queue_url()
            .context("a queue URL")?
            .to_owned();
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await?
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .context("the queue ARN")?
            .clone();
        let sns = aws_sdk_sns::Client::new(&env.sdk);
        let subscription = sns
            .subscribe()
            .topic_arn(&env.outputs["AlarmTopicArn"])
            .protocol("sqs")
            .endpoint(&arn)
            .send()
            .await?
            .subscription_arn()
            .context("a subscription ARN")?
            .to_owned();
        Ok(AlarmListener {
            sqs,
            sns,
            url,
            subscription,
        })
    }

    /// The alarm subjects received within `wait`, consumed.
    pub async fn subjects(&self, wait: Duration) -> Result<Vec<String>> {
        let deadline = std::time::Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await?;
            for m in got.messages() {
                let body: serde_json::Value = serde_json::from_str(m.body().unwrap_or("{}"))?;
                out.push(body["Subject"].as_str().unwrap_or_default().to_owned());
                if let Some(h) = m.receipt_handle() {
                    self.sqs
                        .delete_message()
                        .queue_url(&self.url)
                        .receipt_handle(h)
                        .send()
                        .await?;
                }
            }
            if std::time::Instant::now() >= deadline {
                return Ok(out);
            }
        }
    }

    pub async fn close(self) -> Result<()> {
        self.sns
            .unsubscribe()
            .subscription_arn(&self.subscription)
            .send()
            .await?;
        self.sqs.delete_queue().queue_url(&self.url).send().await?;
        Ok(())
    }
}

/// The JSON lines the local stack's functions printed, from `since` on:
/// the lambda host's log and every container task's (`ecs-*.log`), tracing
/// lines (with `timestamp`) and EMF lines (with `_aws.Timestamp`).
pub fn function_log_lines(since: chrono::DateTime<chrono::Utc>) -> Result<Vec<serde_json::Value>> {
    let dir = repo_root().join(".tally/local");
    let mut paths = vec![dir.join("lambda.log")];
    for e in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
        let path = e?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("ecs-") && name.ends_with(".log") {
            paths.push(path);
        }
    }
    let since_ms = since.timestamp_millis();
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
                .filter(|v| {
                    let t = v["timestamp"]
                        .as_str()
                        .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
                        .map(|t| t.timestamp_millis())
                        .or_else(|| v["_aws"]["Timestamp"].as_i64());
                    t.is_some_and(|t| t >= since_ms)
                }),
        );
    }
    Ok(out)
}

/// Renders a local HTML file in headless Chromium (Debian's, installed by
/// `make setup`; `TALLY_CHROMIUM` overrides the path) and returns the DOM it
/// built, and writes a screenshot beside the file (`.png`). No network: the
/// background-networking flags keep Chromium from reaching out.
pub fn render_in_chromium(html: &Path) -> Result<String> {
    let chromium = std::env::var("TALLY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let profile = temp_file(&format!("chromium-{}", std::process::id()));
    let url = format!("file://{}", html.canonicalize()?.display());
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    let run = |extra: &[String]| -> Result<std::process::Output> {
        let out = std::process::Command::new(&chromium)
            .args(flags)
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .with_context(|| format!("running {chromium} (make setup installs it)"))?;
        if !out.status.success() {
            bail!("{chromium}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out)
    };
    let dom = String::from_utf8(run(&["--dump-dom".into()])?.stdout)?;
    let png = html.with_extension("png");
    run(&[
        format!("--screenshot={}", png.display()),
        "--window-size=1000,900".into(),
    ])?;
    if std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0) < 1000 {
        bail!("no screenshot at {}", png.display());
    }
    Ok(dom)
}
