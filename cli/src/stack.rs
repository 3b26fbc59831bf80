//! Resource names of a deployed Tally: from `TALLY_*` environment variables,
//! else from a stack outputs file in the shape of
//! `sam list stack-outputs --output json` (the local stack writes
//! `.tally/stack.json` in that shape).

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct Stack {
    pub accounts_table: String,
    pub ledger_table: String,
    pub runs_table: String,
    pub state_machine_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Output {
    output_key: String,
    output_value: String,
}

impl Stack {
    pub fn load(file: &Path) -> Result<Stack> {
        let outputs: HashMap<String, String> = if file.exists() {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let v: Vec<Output> = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a stack outputs list", file.display()))?;
            v.into_iter()
                .map(|o| (o.output_key, o.output_value))
                .collect()
        } else {
            HashMap::new()
        };
        let get = |env: &str, key: &str| -> Result<String> {
            if let Ok(v) = std::env::var(env) {
                return Ok(v);
            }
            match outputs.get(key) {
                Some(v) => Ok(v.clone()),
                None if !file.exists() => bail!(
                    "no stack outputs at {} and {env} is not set: run `tally local up`, or for AWS \
                     `sam list stack-outputs --stack-name tally --output json > {}`",
                    file.display(), file.display()),
                None => bail!("{} has no output {key}", file.display()),
            }
        };
        Ok(Stack {
            accounts_table: get("TALLY_ACCOUNTS_TABLE", "AccountsTableName")?,
            ledger_table: get("TALLY_LEDGER_TABLE", "LedgerTableName")?,
            runs_table: get("TALLY_RUNS_TABLE", "RunsTableName")?,
            state_machine_arn: get("TALLY_STATE_MACHINE_ARN", "AccrualCobStateMachineArn")?,
        })
    }
}

/// Resource names of the reconciliation pipeline.
#[derive(Debug, Clone)]
pub struct ReconStack {
    pub landing_bucket: String,
    pub state_table: String,
    pub state_machine_arn: String,
}

impl ReconStack {
    pub fn load(file: &Path) -> Result<ReconStack> {
        let text = std::fs::read_to_string(file).unwrap_or_else(|_| "[]".into());
        let outputs: HashMap<String, String> = serde_json::from_str::<Vec<Output>>(&text)
            .with_context(|| format!("{} is not a stack outputs list", file.display()))?
            .into_iter()
            .map(|o| (o.output_key, o.output_value))
            .collect();
        let get = |env: &str, key: &str| -> Result<String> {
            std::env::var(env)
                .ok()
                .or_else(|| outputs.get(key).cloned())
                .with_context(|| {
                    format!(
                        "neither {env} nor output {key} in {} is set",
                        file.display()
                    )
                })
        };
        Ok(ReconStack {
            landing_bucket: get("TALLY_LANDING_BUCKET", "LandingBucketName")?,
            state_table: get("TALLY_RECON_STATE_TABLE", "ReconStateTableName")?,
            state_machine_arn: get(
                "TALLY_RECON_STATE_MACHINE_ARN",
                "ReconciliationStateMachineArn",
            )?,
        })
    }
}
