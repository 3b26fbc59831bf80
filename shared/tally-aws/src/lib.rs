//! Adapters from Tally's ports to AWS (DynamoDB, EventBridge, SNS, Step
//! Functions), and in-memory ports for tests.
//!
//! # Layout
//!
//! - [`ports`]: the narrow traits handlers take, with their contracts.
//! - [`dynamo`]: the account book, ledger and fault switch in DynamoDB.
//! - [`publish`]: EventBridge events and SNS alarms.
//! - [`emf`]: metrics as CloudWatch Embedded Metric Format log lines.
//! - [`recon`]: landed objects (S3), reconciliation records and checkpoints (DynamoDB).
//! - [`memory`]: in-memory ports for handler tests.
//! - [`error`]: SDK errors classified into transient or permanent.
//! - [`retry`]: bounded backoff with full jitter.
//! - [`runs`]: run records (DynamoDB and in memory).
//! - [`sfn`]: starting Step Functions executions.
//! - [`config`]: typed environment reading.
//! - [`handler_error`]: the error a Lambda handler returns, with its stable name.

pub mod config;
pub mod dynamo;
pub mod emf;
pub mod error;
pub mod handler_error;
pub mod memory;
pub mod ports;
pub mod publish;
pub mod recon;
pub mod retry;
pub mod runs;
pub mod sfn;

pub use error::StoreError;
