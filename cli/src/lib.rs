//! The operator CLI's operations, usable from the `tally` binary and from the
//! integration tests.
//!
//! # Layout
//!
//! - [`stack`]: where the deployed resources are (stack outputs file or env).
//! - [`import`]: the account book import (validate all, then write).
//! - [`runs`]: start a COB run, wait for it, read its status.
//! - [`export`]: the ledger as JSON Lines.
//! - [`generate`]: a deterministic synthetic book for demos and benchmarks.
//! - [`recon`]: upload reconciliation files, follow a day, read its report.

pub mod export;
pub mod generate;
pub mod import;
pub mod recon;
pub mod runs;
pub mod stack;
