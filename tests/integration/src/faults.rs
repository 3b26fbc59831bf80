//! The fault suite: the COB (single and partitioned paths) and a
//! reconciliation (Lambda and container branches), each run clean, at 10 %
//! and at 30 % injected faults on every DynamoDB call of the workers, and
//! with a worker killed at a random point and restarted by the state
//! machine's Retry. Every run must end identical to the clean run: the same
//! ledger (no entry missing, none twice) and the same totals; the same
//! reconciliation report.
//!
//! Needs the local stack with its fault proxy and the fault switch enabled
//! (`make faults`, or `make test` for the small scale).

use crate::recon::{ingest_attempts, stage, staged_outcome, start_direct, write_retries};
use crate::{date, event, temp_file, Env};
use anyhow::{bail, Context, Result};
use fault_proxy::{control, Kind, Plan, Rule, Stats};
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use tally_cli::recon::{generate, Recon};
use tally_cli::runs::Options;
use tally_domain::recon::sample::{self, SampleSpec};

const DATE: &str = "2026-11-20";

/// The DynamoDB operations the workers call: every one gets faults.
const OPERATIONS: [&str; 8] = [
    "Query",
    "BatchGetItem",
    "TransactWriteItems",
    "UpdateItem",
    "PutItem",
    "GetItem",
    "BatchWriteItem",
    "Scan",
];

/// How large the runs are.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub cob_accounts: u64,
    pub recon_records: u64,
    /// A killed ingest stops after a checkpoint (every 5,000 records), so the
    /// kill scenarios need more than one checkpoint's worth.
    pub recon_kill_records: u64,
}

impl Scale {
    /// `make test`: small, about five minutes.
    pub const SMALL: Scale = Scale {
        cob_accounts: 300,
        recon_records: 1_000,
        recon_kill_records: 6_000,
    };
    /// `make faults`.
    pub const FULL: Scale = Scale {
        cob_accounts: 3_000,
        recon_records: 10_000,
        recon_kill_records: 12_000,
    };
}

/// One scenario's line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub faults: u64,
    pub requests: u64,
    /// Retries Tally's own code counted (the SDK's retries are inside
    /// `requests`): failed Step Functions attempts for the COB; for a
    /// reconciliation, the write retries of every ingest attempt (from the
    /// metric lines) plus the restarts from a checkpoint.
    pub retries: u64,
    pub wall: Duration,
    /// `None` when the run ended identical to the clean run.
    pub difference: Option<String>,
}

impl Row {
    pub fn identical(&self) -> bool {
        self.difference.is_none()
    }
}

/// The plan for `rate`: spread over the error kinds the workers meet on
/// AWS, on every DynamoDB operation; `BatchWriteItem`s also come back
/// partly unprocessed at `rate`. A plan at 0 % injects nothing but counts.
fn plan(seed: u64, rate: f64) -> Plan {
    let ops: Vec<String> = OPERATIONS.iter().map(|s| (*s).to_owned()).collect();
    let rule = |kind, rate: f64| Rule {
        kind,
        rate,
        operations: ops.clone(),
        latency_ms: if kind == Kind::Latency { 200 } else { 0 },
        body_contains: None,
    };
    let share = rate / 6.0;
    Plan {
        seed,
        rules: vec![
            rule(Kind::Throttle, share),
            rule(Kind::ThrottlingException, share),
            rule(Kind::Http500, share),
            rule(Kind::Http503, share),
            rule(Kind::Drop, share),
            rule(Kind::Latency, share),
            Rule {
                kind: Kind::Unprocessed,
                rate,
                operations: vec!["BatchWriteItem".into()],
                latency_ms: 0,
                body_contains: None,
            },
        ],
        max_faults: 50_000,
        expires_after_s: 1_800,
    }
}

/// What a scenario runs under.
#[derive(Debug, Clone, Copy)]
enum Stress {
    Rate(f64),
    Kill,
}

impl Stress {
    fn label(self) -> String {
        match self {
            Stress::Rate(r) => format!("{:.0} % faults", r * 100.0),
            Stress::Kill => "worker killed".into(),
        }
    }
    fn rate(self) -> f64 {
        match self {
            Stress::Rate(r) => r,
            Stress::Kill => 0.0,
        }
    }
}

const STRESSES: [Stress; 4] = [
    Stress::Rate(0.0),
    Stress::Rate(0.1),
    Stress::Rate(0.3),
    Stress::Kill,
];

fn proxy() -> Result<String> {
    std::env::var("TALLY_FAULT_PROXY").context(
        "TALLY_FAULT_PROXY: the local stack's fault proxy (tally_local.py up --fault-proxy)",
    )
}

/// Runs every scenario; `seed` fixes the faults and the kill points.
pub async fn run(scale: Scale, seed: u64, mut each: impl FnMut(&Row)) -> Result<Vec<Row>> {
    let proxy = proxy()?;
    let _clear = control::ClearOnDrop(proxy.clone());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut rows = Vec::new();
    let env = Env::connect().await?;
    for (path, options) in [
        (
            "COB single",
            Options {
                partition_threshold: Some(1_000_000),
                partition_count: None,
            },
        ),
        (
            "COB partitioned (4)",
            Options {
                partition_threshold: Some(1),
                partition_count: Some(4),
            },
        ),
    ] {
        let mut clean = None;
        for stress in STRESSES {
            let row = cob(
                &env, &proxy, scale, seed, &mut rng, path, &options, stress, &mut clean,
            )
            .await?;
            each(&row);
            rows.push(row);
        }
    }
    let r = Recon::connect(tally_cli::stack::ReconStack::load(
        &crate::repo_root().join(".tally/stack.json"),
    )?)
    .await;
    let nonce = format!("{:03}", rng.gen_range(0..1000));
    for (branch, extra) in [
        ("recon Lambda", serde_json::json!({})),
        (
            "recon container",
            serde_json::json!({"large_file_bytes": 1}),
        ),
    ] {
        for (i, stress) in STRESSES.into_iter().enumerate() {
            // A program of its own per scenario and suite run (≤ 10 chars).
            let program = format!("F{}{i}{nonce}", &branch[6..7].to_uppercase());
            let row = recon(
                &r, &proxy, scale, seed, &mut rng, branch, &program, &extra, stress,
            )
            .await?;
            each(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

type Ledger = std::collections::BTreeMap<(String, String), (String, String, String, String)>;

#[allow(clippy::too_many_arguments)]
async fn cob(
    env: &Env,
    proxy: &str,
    scale: Scale,
    seed: u64,
    rng: &mut rand::rngs::StdRng,
    path: &str,
    options: &Options,
    stress: Stress,
    clean: &mut Option<(Ledger, serde_json::Value)>,
) -> Result<Row> {
    let scenario = format!("{path}, {}", stress.label());
    env.fresh_book(scale.cob_accounts, seed, date(DATE)).await?;
    let fault = match stress {
        // Partition 0 (or the single partition) stops once, part way, after
        // it has committed some accounts; the Retry starts it again.
        Stress::Kill => Some(serde_json::json!({
            // Partition 0 of 4 holds about a quarter of the book, less its
            // inactive accounts: an eighth is always inside it.
            "fail_after_accounts": rng.gen_range(1..scale.cob_accounts / 8),
            "failures": 1,
            "partition": 0,
        })),
        Stress::Rate(_) => None,
    };
    control::set_plan(proxy, &plan(seed, stress.rate())).await?;
    let started = Instant::now();
    let outcome = async {
        let (_, arn) = env.start(date(DATE), options, fault).await?;
        let s = env.wait(&arn).await?;
        Ok::<_, anyhow::Error>((s, arn))
    }
    .await;
    let wall = started.elapsed();
    let stats = control::stats(proxy).await?;
    control::clear(proxy).await?;
    let (status, arn) = outcome?;
    let history = env.history(&arn).await?;
    let retries = history.iter().filter(|n| *n == "TaskFailed").count() as u64;
    let difference = if !status.succeeded() {
        Some(format!(
            "run {}: {:?} {:?}",
            status.status, status.error, status.cause
        ))
    } else {
        // `ledger` refuses a second entry for an account and date.
        match env.ledger().await {
            Err(e) => Some(e.to_string()),
            Ok(ledger) => {
                let e = event(&status);
                let got = (ledger, totals(&e));
                match clean {
                    None if matches!(stress, Stress::Rate(r) if r == 0.0) => {
                        *clean = Some(got);
                        None
                    }
                    None => Some("no clean run to compare with".into()),
                    Some(want) => compare_cob(want, &got),
                }
            }
        }
    };
    let difference = difference.or_else(|| {
        (matches!(stress, Stress::Kill) && retries == 0)
            .then(|| "the worker was never killed: no failed attempt in the execution".into())
    });
    Ok(row(scenario, &stats, retries, wall, difference))
}

fn totals(e: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "totals": e["totals"],
        "accounts_processed": e["accounts_processed"],
        "postings_written": e["postings_written"],
    })
}

fn compare_cob(
    want: &(Ledger, serde_json::Value),
    got: &(Ledger, serde_json::Value),
) -> Option<String> {
    if want.0 != got.0 {
        let missing = want.0.keys().filter(|k| !got.0.contains_key(*k)).count();
        let extra = got.0.keys().filter(|k| !want.0.contains_key(*k)).count();
        let changed = want
            .0
            .iter()
            .filter(|(k, v)| got.0.get(*k).is_some_and(|g| g != *v))
            .count();
        return Some(format!(
            "ledger differs: {missing} entries missing, {extra} extra, {changed} changed"
        ));
    }
    (want.1 != got.1).then(|| format!("totals differ: {} vs {}", got.1, want.1))
}

#[allow(clippy::too_many_arguments)]
async fn recon(
    r: &Recon,
    proxy: &str,
    scale: Scale,
    seed: u64,
    rng: &mut rand::rngs::StdRng,
    branch: &str,
    program: &str,
    extra: &serde_json::Value,
    stress: Stress,
) -> Result<Row> {
    let scenario = format!("{branch}, {}", stress.label());
    let records = match stress {
        Stress::Kill => scale.recon_kill_records,
        Stress::Rate(_) => scale.recon_records,
    };
    let spec = SampleSpec::new(program, DATE.parse()?, records, seed);
    let [dat, csv, _] = generate(&spec, &temp_file(&format!("faults-{program}")))?;
    let k_internal = stage(r, "internal", program, DATE, &csv).await;
    let k_settlement = stage(r, "settlement", program, DATE, &dat).await;
    let mut settlement_extra = extra.clone();
    if let Stress::Kill = stress {
        // Stops after the first checkpoint at or past a random record.
        settlement_extra["fault"] = serde_json::json!({
            "fail_after_records": rng.gen_range(1..records - 5_000),
            "failures": 1,
        });
    }
    control::set_plan(proxy, &plan(seed, stress.rate())).await?;
    let (started, since) = (Instant::now(), chrono::Utc::now());
    let name = program.to_lowercase();
    start_direct(r, &k_internal, &format!("faults-{name}-i"), extra.clone()).await;
    start_direct(
        r,
        &k_settlement,
        &format!("faults-{name}-s"),
        settlement_extra,
    )
    .await;
    let report = r
        .wait_report(program, DATE.parse()?, Duration::from_secs(900), |_| {})
        .await;
    let wall = started.elapsed();
    let stats = control::stats(proxy).await?;
    control::clear(proxy).await?;
    // Write retries, every attempt's (one that gave up reports them too; a
    // killed one cannot), and restarts: an ingest that resumed from a
    // checkpoint was stopped and started again by the state machine's Retry.
    let retries = write_retries(&ingest_attempts(since, &[&k_internal, &k_settlement]));
    let mut restarts = 0;
    for key in [&k_internal, &k_settlement] {
        let outcome = staged_outcome(r, key).await;
        restarts += u64::from(outcome["resumed_from_record"].as_u64().unwrap_or(0) > 0);
    }
    let never_killed = matches!(stress, Stress::Kill) && restarts == 0;
    let difference = match report {
        Err(e) => Some(format!("no report: {e:#}")),
        Ok(json) => {
            // The clean run's report is the generator's expected one: every
            // scenario is compared with it field by field.
            let got: serde_json::Value = serde_json::from_str(&json)?;
            let want = serde_json::to_value(sample::expected_report(&spec))?;
            (got != want).then(|| report_difference(&want, &got))
        }
    };
    let difference = difference.or_else(|| {
        never_killed.then(|| "the ingest was never killed: it resumed from no checkpoint".into())
    });
    Ok(row(scenario, &stats, retries + restarts, wall, difference))
}

fn report_difference(want: &serde_json::Value, got: &serde_json::Value) -> String {
    let fields = [
        "program_id",
        "file_date",
        "status",
        "control_totals_agree",
        "currencies",
        "exceptions",
    ];
    let differing: Vec<&str> = fields
        .into_iter()
        .filter(|f| want.get(*f) != got.get(*f))
        .collect();
    format!("report differs in {differing:?}")
}

fn row(
    scenario: String,
    stats: &Stats,
    retries: u64,
    wall: Duration,
    difference: Option<String>,
) -> Row {
    Row {
        scenario,
        faults: stats.total_faults(),
        requests: stats.requests,
        retries,
        wall,
        difference,
    }
}

/// The table `make faults` prints.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<38} {:>7} {:>9} {:>8} {:>7}  {}\n",
        "scenario", "faults", "requests", "retries", "wall", "outcome"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<38} {:>7} {:>9} {:>8} {:>6.0}s  {}\n",
            r.scenario,
            r.faults,
            r.requests,
            r.retries,
            r.wall.as_secs_f64(),
            r.difference
                .as_deref()
                .unwrap_or("identical to the clean run")
        ));
    }
    out
}

/// Fails unless every row ended identical to the clean run.
pub fn check(rows: &[Row]) -> Result<()> {
    let bad: Vec<&Row> = rows.iter().filter(|r| !r.identical()).collect();
    if !bad.is_empty() {
        bail!(
            "{} of {} scenarios differ from the clean run",
            bad.len(),
            rows.len()
        );
    }
    Ok(())
}
