//! `tally`: the operator CLI. See `tally --help`.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tally_aws::dynamo::DynamoBook;
use tally_cli::{export, generate, import, runs, stack::Stack};
use tally_domain::NaiveDate;

#[derive(Parser)]
#[command(
    name = "tally",
    about = "Tally: nightly close of business on AWS serverless",
    version
)]
struct Cli {
    /// Stack outputs (`sam list stack-outputs --output json`); `tally local up` writes it.
    #[arg(
        long,
        global = true,
        env = "TALLY_STACK_FILE",
        default_value = ".tally/stack.json"
    )]
    stack_file: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The local stack (moto + gateway + cargo-lambda) on 127.0.0.1:4566.
    Local {
        #[command(subcommand)]
        action: LocalAction,
    },
    /// The account book.
    Accounts {
        #[command(subcommand)]
        action: AccountsAction,
    },
    /// Close-of-business runs.
    Cob {
        #[command(subcommand)]
        action: CobAction,
    },
    /// The ledger.
    Ledger {
        #[command(subcommand)]
        action: LedgerAction,
    },
    /// Settlement reconciliation.
    Recon {
        #[command(subcommand)]
        action: ReconAction,
    },
    /// Run records: list, read, cancel.
    Runs {
        #[command(subcommand)]
        action: RunsAction,
    },
}

#[derive(Subcommand)]
enum RunsAction {
    /// Runs, newest first.
    List {
        #[arg(long)]
        kind: Option<tally_domain::run::RunKind>,
        /// INITIATED, EXECUTING, SUCCESS, FAILURE or CANCELED.
        #[arg(long)]
        status: Option<tally_domain::run::RunStatus>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// One JSON record a line.
        #[arg(long)]
        json: bool,
    },
    /// One run: status, progress, partitions, cause, totals.
    Get {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run: CANCELED, its execution stopped, partitions stop at their next page.
    Cancel { run_id: String },
    /// Write the run report: one self-contained HTML page (timeline, partitions, totals).
    Report {
        run_id: String,
        #[arg(long)]
        html: PathBuf,
    },
}

#[derive(Args)]
struct Day {
    #[arg(long)]
    program: String,
    #[arg(long)]
    date: NaiveDate,
}

#[derive(Subcommand)]
enum ReconAction {
    /// Upload a settlement file (fixed width) for a program and date.
    Submit {
        file: PathBuf,
        #[command(flatten)]
        day: Day,
    },
    /// Upload internal records (CSV) for a program and date.
    Internal {
        file: PathBuf,
        #[command(flatten)]
        day: Day,
    },
    /// Where the pipeline is for a program and date.
    Status {
        #[command(flatten)]
        day: Day,
        /// One JSON object: at least `status`; for a rejected file, `reason` with `line`, `field`, `expected`.
        #[arg(long)]
        json: bool,
    },
    /// The reconciliation report (JSON) to stdout.
    Report {
        #[command(flatten)]
        day: Day,
        /// Wait until the day is reconciled (exit non-zero if rejected or failed).
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 1800)]
        timeout_secs: u64,
        /// A few lines for a terminal (status, per-currency rows, first exceptions) instead of the JSON.
        #[arg(long)]
        summary: bool,
        /// Also write the JSON report to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Generate a settlement file and internal records with injected breaks, and the report they must give.
    Generate {
        #[command(flatten)]
        day: Day,
        #[arg(long, default_value_t = 50_000)]
        records: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1)]
        file_sequence: u64,
        #[arg(long, default_value = ".tally/recon")]
        out_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum LocalAction {
    /// Start the local stack and deploy Tally into it from infra/template.yaml.
    Up {
        /// Passed on to localstack/tally_local.py (e.g. --no-lambda-host).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        extra: Vec<String>,
    },
    /// Stop the local stack.
    Down,
    /// What runs.
    Status,
}

#[derive(Subcommand)]
enum AccountsAction {
    /// Import JSON Lines (accrual.md); a bad line fails the import, nothing written.
    Import { file: PathBuf },
    /// Write a deterministic synthetic book.
    Generate {
        #[arg(long)]
        count: u64,
        /// The business date the book is made for.
        #[arg(long)]
        date: NaiveDate,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    #[arg(long)]
    date: NaiveDate,
    /// Follow the run until it ends; exit non-zero unless it succeeded.
    #[arg(long)]
    wait: bool,
    /// Override COB_PARTITION_THRESHOLD for this run.
    #[arg(long)]
    partition_threshold: Option<u64>,
    /// Override COB_PARTITION_COUNT for this run.
    #[arg(long)]
    partition_count: Option<u32>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout_secs: u64,
}

#[derive(Subcommand)]
enum CobAction {
    /// Start a COB run for a business date.
    Run(RunArgs),
    /// Status of a run.
    Status { run_id: String },
}

#[derive(Subcommand)]
enum LedgerAction {
    /// JSON Lines to stdout, one posting a line.
    Export {
        #[arg(long)]
        date: Option<NaiveDate>,
    },
}

fn repo_root() -> Result<PathBuf> {
    let mut dir = std::env::current_dir()?;
    loop {
        if dir.join("localstack/tally_local.py").exists() {
            return Ok(dir);
        }
        if !dir.pop() {
            bail!("run `tally local` inside the Tally repository (no localstack/tally_local.py above here)");
        }
    }
}

fn local(args: &[&str], extra: &[String]) -> Result<()> {
    let root = repo_root()?;
    let venv = std::env::var("TALLY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/tally/venv")
        });
    let python = venv.join("bin/python");
    if !python.exists() {
        bail!("{} is missing: run `make setup` first", python.display());
    }
    let status = std::process::Command::new(&python)
        .arg(root.join("localstack/tally_local.py"))
        .args(args)
        .args(extra)
        .current_dir(&root)
        .status()
        .with_context(|| format!("running {}", python.display()))?;
    if !status.success() {
        bail!("local stack: {status}");
    }
    Ok(())
}

async fn book(stack: &Stack) -> DynamoBook {
    let client = aws_sdk_dynamodb::Client::new(&tally_aws::config::aws().await);
    DynamoBook::new(client, &stack.accounts_table, &stack.ledger_table)
}

async fn sfn() -> aws_sdk_sfn::Client {
    aws_sdk_sfn::Client::new(&tally_aws::config::aws().await)
}

fn print_summary(s: &runs::RunStatus) {
    let Some(event) = s.output.as_ref().and_then(|o| o.get("event")) else {
        return;
    };
    let get = |k: &str| {
        event
            .get(k)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into())
    };
    eprintln!("  accounts processed   {}", get("accounts_processed"));
    eprintln!("  postings written     {}", get("postings_written"));
    eprintln!("  partitions           {}", get("partition_count"));
    eprintln!("  slowest partition    {} ms", get("slowest_partition_ms"));
    for t in event
        .get("totals")
        .and_then(|t| t.as_array())
        .into_iter()
        .flatten()
    {
        eprintln!(
            "  total {}            {} ({} postings)",
            t["currency"].as_str().unwrap_or("?"),
            t["amount"].as_str().unwrap_or("?"),
            t["postings"]
        );
    }
}

async fn run_store(stack: &Stack) -> tally_aws::runs::DynamoRuns {
    runs::store(&tally_aws::config::aws().await, &stack.runs_table)
}

/// A live progress bar from the run record: redrawn in place on a terminal,
/// a line per change otherwise (logs, CI).
fn progress_printer() -> impl FnMut(&tally_domain::run::RunRecord, Duration) {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let mut last = String::new();
    move |r, elapsed| {
        let line = tally_domain::run::progress_line(r, 30);
        if tty {
            eprint!("\r{line} {:>5}s ", elapsed.as_secs());
        } else if line != last {
            eprintln!("{line} {:>5}s", elapsed.as_secs());
        }
        last = line;
    }
}

async fn cob_run(stack: &Stack, a: RunArgs) -> Result<()> {
    let client = sfn().await;
    let options = runs::Options {
        partition_threshold: a.partition_threshold,
        partition_count: a.partition_count,
    };
    let store = run_store(stack).await;
    let (record, created) = runs::submit(
        &store,
        &client,
        &stack.state_machine_arn,
        a.date,
        &options,
        None,
    )
    .await?;
    println!("{}", record.run_id);
    if !created {
        eprintln!(
            "{} already has run {} ({}): not started again",
            a.date, record.run_id, record.status
        );
    }
    if !a.wait {
        return Ok(());
    }
    let r = runs::follow(
        &store,
        &record.run_id,
        Duration::from_secs(a.timeout_secs),
        progress_printer(),
    )
    .await?;
    eprintln!();
    print_record(&r);
    if let Some(arn) = &r.execution_arn {
        if let Ok(s) = runs::status(&client, arn).await {
            print_summary(&s);
        }
    }
    if r.status != tally_domain::run::RunStatus::Success {
        bail!(
            "run {} ended {}{}",
            r.run_id,
            r.status,
            r.cause
                .as_ref()
                .map(|c| format!(": {} {}", c.error, c.cause))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn print_record(r: &tally_domain::run::RunRecord) {
    let t = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or("-".into(), |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
    };
    eprintln!("{} {} ({})", r.run_id, r.status, r.business_key);
    eprintln!(
        "  created {}  started {}  ended {}",
        t(Some(r.created_at)),
        t(r.started_at),
        t(r.ended_at)
    );
    eprintln!("  {}", tally_domain::run::progress_line(r, 30));
    let items = match r.kind {
        tally_domain::run::RunKind::Cob => "accounts",
        tally_domain::run::RunKind::Recon => "records",
    };
    for (name, u) in &r.units {
        eprintln!(
            "  {name:>4} {:<9} {:>9} {items} {:>9} postings {:>8} ms",
            u.outcome, u.items, u.postings, u.duration_ms
        );
    }
    for (name, n) in &r.counts {
        eprintln!("  {name:<22} {n}");
    }
    if let Some(k) = &r.report_key {
        eprintln!("  report: {k}");
    }
    if let Some(c) = &r.cause {
        eprintln!("  cause: {} {}", c.error, c.cause);
    }
    for (name, c) in &r.idle {
        eprintln!("  {name}: nothing to do: {} {}", c.error, c.cause);
    }
    if let Some(d) = &r.duplicate_of {
        eprintln!("  started while {d} held the date (the ledger posted each day once)");
    }
}

async fn runs_command(stack: &Stack, stack_file: &Path, action: RunsAction) -> Result<()> {
    let store = run_store(stack).await;
    match action {
        RunsAction::List {
            kind,
            status,
            limit,
            json,
        } => {
            use tally_aws::ports::RunStore;
            let rs = store.list(kind, status, None, limit).await?;
            if !json {
                println!(
                    "{:<32} {:<5} {:<10} {:<9} {:<20} PROGRESS",
                    "RUN", "KIND", "DATE", "STATUS", "CREATED"
                );
            }
            for r in rs {
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "{:<32} {:<5} {:<10} {:<9} {:<20} {}/{} units, {} items",
                        r.run_id,
                        r.kind.as_str(),
                        r.business_date,
                        r.status.as_str(),
                        r.created_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        r.units_done(),
                        r.units_total,
                        r.items_processed()
                    );
                }
            }
            Ok(())
        }
        RunsAction::Get { run_id, json } => {
            use tally_aws::ports::RunStore;
            let Some(r) = store.get(&run_id).await? else {
                bail!("no run {run_id}");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_record(&r);
            }
            Ok(())
        }
        RunsAction::Report { run_id, html } => {
            use tally_aws::ports::RunStore;
            let Some(r) = store.get(&run_id).await? else {
                bail!("no run {run_id}");
            };
            let page = match r.kind {
                tally_domain::run::RunKind::Cob => tally_cli::report::cob_html(&r),
                tally_domain::run::RunKind::Recon => {
                    // The stored report, when the run reconciled.
                    let report = match &r.report_key {
                        Some(key) => {
                            let recon = tally_cli::recon::Recon::connect(
                                tally_cli::stack::ReconStack::load(stack_file)?,
                            )
                            .await;
                            let json = recon
                                .object_text(key)
                                .await?
                                .with_context(|| format!("run {run_id}: no report at {key}"))?;
                            Some(
                                serde_json::from_str::<tally_domain::recon::rollup::Report>(&json)
                                    .with_context(|| format!("the report at {key}"))?,
                            )
                        }
                        None => None,
                    };
                    tally_cli::report::recon_html(&r, report.as_ref())
                }
            };
            std::fs::write(&html, page).with_context(|| format!("writing {}", html.display()))?;
            eprintln!("wrote {}", html.display());
            Ok(())
        }
        RunsAction::Cancel { run_id } => {
            let who = std::env::var("USER").unwrap_or_else(|_| "operator".into());
            let r = runs::cancel(&store, &sfn().await, &run_id, &who).await?;
            println!("{} {}", r.run_id, r.status);
            Ok(())
        }
    }
}

async fn recon_command(stack_file: &Path, action: ReconAction) -> Result<()> {
    use tally_cli::recon::{generate, Recon};
    use tally_cli::stack::ReconStack;
    use tally_domain::recon::Side;
    let connect =
        || async { Ok::<_, anyhow::Error>(Recon::connect(ReconStack::load(stack_file)?).await) };
    match action {
        ReconAction::Submit { file, day } => {
            let key = connect()
                .await?
                .upload(Side::Settlement, &day.program, day.date, &file)
                .await?;
            eprintln!("uploaded {key}");
            Ok(())
        }
        ReconAction::Internal { file, day } => {
            let key = connect()
                .await?
                .upload(Side::Internal, &day.program, day.date, &file)
                .await?;
            eprintln!("uploaded {key}");
            Ok(())
        }
        ReconAction::Status { day, json } => {
            let st = connect().await?.status(&day.program, day.date).await?;
            let st = st.unwrap_or_else(|| serde_json::json!({"status": "NOT_STARTED", "program_id": day.program, "file_date": day.date}));
            if json {
                println!("{}", serde_json::to_string(&st)?);
            } else {
                println!(
                    "{} {}: {}",
                    day.program,
                    day.date,
                    st["status"].as_str().unwrap_or("?")
                );
                if let Some(r) = st.get("reason") {
                    println!(
                        "  line {}, field `{}`: expected {}, found {}",
                        r["line"],
                        r["field"].as_str().unwrap_or(""),
                        r["expected"].as_str().unwrap_or(""),
                        r["found"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
        ReconAction::Report {
            day,
            wait,
            timeout_secs,
            summary,
            out,
        } => {
            let recon = connect().await?;
            let report = if wait {
                let mut last = String::new();
                let waiting = recon.wait_report(
                    &day.program,
                    day.date,
                    Duration::from_secs(timeout_secs),
                    |s| {
                        if s != last {
                            eprintln!("{} {}: {s}", day.program, day.date);
                            last = s.to_owned();
                        }
                    },
                );
                // The live progress bar, from the day's run record.
                let store = run_store(&Stack::load(stack_file)?).await;
                let key = tally_domain::run::recon_key(&day.program, day.date);
                let bar = async {
                    use tally_aws::ports::RunStore;
                    let (started, mut draw) = (std::time::Instant::now(), progress_printer());
                    loop {
                        if let Ok(Some(r)) = store.current(&key).await {
                            draw(&r, started.elapsed());
                        }
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                };
                let report = tokio::select! {
                    r = waiting => r?,
                    never = bar => never,
                };
                eprintln!();
                // The report is written just before the run is ended: give
                // the record a moment (bounded) to say how it ended.
                let mut last = None;
                for _ in 0..60 {
                    last = tally_aws::ports::RunStore::current(&store, &key).await?;
                    if last.as_ref().is_none_or(|r| r.status.is_terminal()) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                if let Some(r) = &last {
                    print_record(r);
                }
                report
            } else {
                recon
                    .report(&day.program, day.date)
                    .await?
                    .with_context(|| format!("no report yet for {} {}", day.program, day.date))?
            };
            if let Some(out) = &out {
                std::fs::write(out, &report).with_context(|| format!("{}", out.display()))?;
            }
            if summary {
                let parsed: tally_domain::recon::rollup::Report = serde_json::from_str(&report)
                    .context("the stored report is not the report of reconciliation.md")?;
                print!("{}", tally_cli::recon::summary(&parsed));
            } else {
                println!("{report}");
            }
            Ok(())
        }
        ReconAction::Generate {
            day,
            records,
            seed,
            file_sequence,
            out_dir,
        } => {
            let mut spec =
                tally_domain::recon::sample::SampleSpec::new(&day.program, day.date, records, seed);
            spec.file_sequence = file_sequence;
            let [dat, csv, expected] = generate(&spec, &out_dir)?;
            eprintln!(
                "wrote {}, {} and {}",
                dat.display(),
                csv.display(),
                expected.display()
            );
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("TALLY_LOG"))
        .init();
    let cli = Cli::parse();
    let stack = || Stack::load(&cli.stack_file);
    match cli.command {
        Command::Local {
            action: LocalAction::Up { extra },
        } => local(&["up"], &extra),
        Command::Local {
            action: LocalAction::Down,
        } => local(&["down"], &[]),
        Command::Local {
            action: LocalAction::Status,
        } => local(&["status"], &[]),
        Command::Accounts {
            action:
                AccountsAction::Generate {
                    count,
                    date,
                    seed,
                    out,
                },
        } => {
            let mut w = std::io::BufWriter::new(
                std::fs::File::create(&out)
                    .with_context(|| format!("creating {}", out.display()))?,
            );
            generate::generate(count, seed, date, &mut w)?;
            w.flush()?;
            eprintln!("wrote {count} accounts to {}", out.display());
            Ok(())
        }
        Command::Accounts {
            action: AccountsAction::Import { file },
        } => {
            let stack = stack()?;
            let started = std::time::Instant::now();
            let n = import::import(&book(&stack).await, Path::new(&file), |n| {
                eprint!("\r{n} accounts written")
            })
            .await?;
            eprintln!(
                "\rimported {n} accounts in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Cob {
            action: CobAction::Run(a),
        } => cob_run(&stack()?, a).await,
        Command::Cob {
            action: CobAction::Status { run_id },
        } => {
            let stack = stack()?;
            let s = runs::status(
                &sfn().await,
                &runs::execution_arn(&stack.state_machine_arn, &run_id)?,
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(())
        }
        Command::Recon { action } => recon_command(&cli.stack_file, action).await,
        Command::Runs { action } => runs_command(&stack()?, &cli.stack_file, action).await,
        Command::Ledger {
            action: LedgerAction::Export { date },
        } => {
            let stack = stack()?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let n = export::export(&book(&stack).await, date, &mut out).await?;
            out.flush()?;
            eprintln!("exported {n} ledger entries");
            Ok(())
        }
    }
}
