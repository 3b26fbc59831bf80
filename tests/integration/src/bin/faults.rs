//! `make faults`: the fault suite at full scale (see `faults.rs`), printed
//! as a table; exits 1 if any scenario differs from its clean run.
//!   faults [--small] [--seed N]

use tally_integration_tests::faults::{self, Scale};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scale = if args.iter().any(|a| a == "--small") {
        Scale::SMALL
    } else {
        Scale::FULL
    };
    let seed = match args.iter().position(|a| a == "--seed") {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("--seed: expected a whole number"))?,
        None => 2026,
    };
    println!("fault suite: {scale:?}, seed {seed}");
    let rows = faults::run(scale, seed, |r| {
        eprintln!(
            "  {} … {:?}",
            r.scenario,
            r.difference.as_deref().unwrap_or("identical")
        )
    })
    .await?;
    print!("{}", faults::table(&rows));
    faults::check(&rows)
}
