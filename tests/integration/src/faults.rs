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

use crate::local::Local;
use crate::recon::{
    ingest_attempts, land, landed_outcome, wait_checkpoint, write_retries, ContainerBranch,
};
use crate::{date, event, temp_file, unique_program, Env};
use anyhow::{bail, Context, Result};
use fault_proxy::{control, Kind, Plan, Rule, Stats};
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use tally_cli::recon::{generate, Recon};
use tally_cli::runs::Options;
use tally_domain::recon::sample::{self, SampleSpec};
use tally_domain::recon::Side;

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
    /// A killed ingest is killed after a checkpoint (every 5,000 records)
    /// with at least 5,000 records still to write, so the kill scenarios
    /// need more than two checkpoints' worth.
    pub recon_kill_records: u64,
}

impl Scale {
    /// `make test`: small, about five minutes.
    pub const SMALL: Scale = Scale {
        cob_accounts: 2_000,
        recon_records: 1_000,
        recon_kill_records: 12_000,
    };
    /// `make faults`.
    pub const FULL: Scale = Scale {
        cob_accounts: 10_000,
        recon_records: 10_000,
        recon_kill_records: 20_000,
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
    /// Processes killed with SIGKILL (functions' instances, container tasks).
    pub kills: u64,
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
        ..Rule::default()
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
                ..Rule::default()
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
    for (branch, container) in [("recon Lambda", false), ("recon container", true)] {
        for stress in STRESSES {
            // A program of its own per scenario and suite run: nothing an
            // earlier run left on the stack can stand in for this one's.
            let program = unique_program(if container { "FC" } else { "FL" });
            let row = recon(
                &r, &proxy, scale, seed, &mut rng, branch, &program, container, stress,
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
    control::set_plan(proxy, &plan(seed, stress.rate())).await?;
    let started = Instant::now();
    let local = Local::from_env();
    let mut kills = 0;
    let outcome = async {
        let (run_id, arn) = env.start(date(DATE), options, None).await?;
        if let Stress::Kill = stress {
            // SIGKILL one partition's process at a random point of the run:
            // once the record shows a random share of the book processed
            // (up to an eighth, which every partition of four holds), a
            // random busy partition dies wherever it is, mid-transaction or
            // between its commit and its progress write.
            let at = rng.gen_range(1..scale.cob_accounts / 8);
            kills = kill_partition_after(env, &local, &run_id, at, rng).await?;
        }
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
    let difference = difference.or_else(|| match stress {
        Stress::Kill if kills == 0 => Some("no partition was running to kill".into()),
        Stress::Kill if retries == 0 => {
            Some("the killed partition was not retried: no failed attempt".into())
        }
        _ => None,
    });
    Ok(row(scenario, &stats, retries, kills, wall, difference))
}

/// Waits until the run's partitions have processed `accounts` between them,
/// then SIGKILLs one busy cob-partition instance picked at random; returns
/// how many processes were killed (0: none was busy any more).
async fn kill_partition_after(
    env: &Env,
    local: &Local,
    run_id: &str,
    accounts: u64,
    rng: &mut rand::rngs::StdRng,
) -> Result<u64> {
    let runs = env.runs();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        use tally_aws::ports::RunStore;
        let done = runs
            .get(run_id)
            .await?
            .map(|r| {
                r.progress.values().sum::<u64>() + r.units.values().map(|u| u.items).sum::<u64>()
            })
            .unwrap_or(0);
        if done >= accounts {
            break;
        }
        if Instant::now() > deadline {
            bail!("run {run_id}: {accounts} accounts not processed in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let busy: Vec<String> = local
        .instances()
        .await?
        .into_iter()
        .filter(|i| i["function"] == "cob-partition" && i["busy"] == true)
        .filter_map(|i| i["instance"].as_str().map(str::to_owned))
        .collect();
    if busy.is_empty() {
        return Ok(0);
    }
    let victim = &busy[rng.gen_range(0..busy.len())];
    Ok(local.kill_instance(victim).await?.len() as u64)
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
    container: bool,
    stress: Stress,
) -> Result<Row> {
    let scenario = format!("{branch}, {}", stress.label());
    let records = match stress {
        Stress::Kill => scale.recon_kill_records,
        Stress::Rate(_) => scale.recon_records,
    };
    let spec = SampleSpec::new(program, DATE.parse()?, records, seed);
    let [dat, csv, _] = generate(&spec, &temp_file(&format!("faults-{program}")))?;
    let local = Local::from_env();
    let branch_guard = if container {
        Some(ContainerBranch::on().await?)
    } else {
        None
    };
    control::set_plan(proxy, &plan(seed, stress.rate())).await?;
    let (started, since) = (Instant::now(), chrono::Utc::now());
    // Both sides land as a sender lands them: S3 → EventBridge → SQS →
    // recon-trigger → an execution per object version.
    let k_internal = land(r, Side::Internal, program, DATE, &csv).await;
    let k_settlement = land(r, Side::Settlement, program, DATE, &dat).await;
    let mut kills = 0;
    if let Stress::Kill = stress {
        // SIGKILL the settlement ingest once a random checkpoint is saved
        // (each is 5,000 records): it dies wherever it is, mid-write or
        // between a write and its checkpoint, and the state machine's Retry
        // (a container task: the ContainerExited loop) must resume it.
        let checkpoints = (records.saturating_sub(5_000) / 5_000).max(1);
        let at = 5_000 * rng.gen_range(1..=checkpoints);
        wait_checkpoint(r, &k_settlement, at).await?;
        let killed = if container {
            local.kill_tasks("tally-recon-ingest").await?
        } else {
            local.kill_busy("recon-ingest").await?
        };
        kills = killed.len() as u64;
    }
    let report = r
        .wait_report(program, DATE.parse()?, Duration::from_secs(900), |_| {})
        .await;
    drop(branch_guard);
    let wall = started.elapsed();
    let stats = control::stats(proxy).await?;
    control::clear(proxy).await?;
    // Write retries, every attempt's (one that gave up reports them too; a
    // killed one cannot), and restarts: an ingest that resumed from a
    // checkpoint was stopped and started again by the state machine.
    let retries = write_retries(&ingest_attempts(since, &[&k_internal, &k_settlement]));
    let mut restarts = 0;
    for key in [&k_internal, &k_settlement] {
        let outcome = landed_outcome(r, key).await;
        restarts += u64::from(outcome["resumed_from_record"].as_u64().unwrap_or(0) > 0);
    }
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
    let difference = difference.or_else(|| match stress {
        Stress::Kill if kills == 0 => Some("no ingest was running to kill".into()),
        Stress::Kill if restarts == 0 => {
            Some("the killed ingest did not resume from a checkpoint".into())
        }
        _ => None,
    });
    Ok(row(
        scenario,
        &stats,
        retries + restarts,
        kills,
        wall,
        difference,
    ))
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
    kills: u64,
    wall: Duration,
    difference: Option<String>,
) -> Row {
    Row {
        scenario,
        faults: stats.total_faults(),
        requests: stats.requests,
        retries,
        kills,
        wall,
        difference,
    }
}

/// The table `make faults` prints.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<38} {:>7} {:>9} {:>6} {:>8} {:>7}  {}\n",
        "scenario", "faults", "requests", "kills", "retries", "wall", "outcome"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<38} {:>7} {:>9} {:>6} {:>8} {:>6.0}s  {}\n",
            r.scenario,
            r.faults,
            r.requests,
            r.kills,
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
