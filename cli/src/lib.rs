//! The operator CLI's operations, usable from the `tally` binary and from the
//! integration tests.
//!
//! # Layout
//!
//! - [`stack`]: where the deployed resources are (stack outputs file or env).
//! - [`import`]: the account book import (validate all, then write).
//! - [`runs`]: submit, follow and cancel runs; execution status.
//! - [`export`]: the ledger as JSON Lines.
//! - [`generate`]: a deterministic synthetic book for demos and benchmarks.
//! - [`recon`]: upload reconciliation files, follow a day, read its report.
//! - [`report`]: the run report as one self-contained HTML page.

pub mod export;
pub mod generate;
pub mod import;
pub mod recon;
pub mod report;
pub mod runs;
pub mod stack;
