//! What a failed AWS call means for the caller: try again, or stop.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use tally_domain::errors;

/// A store or publish failure, classified once at the adapter edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Throttling, 5xx, timeouts, dropped connections, transaction conflicts:
    /// the same call may succeed later.
    #[error("transient: {0}")]
    Transient(String),
    /// Validation, access denied, missing table: retrying will not help.
    #[error("{0}")]
    Permanent(String),
    /// A ledger entry exists for a day its account says is not accrued.
    #[error("ledger inconsistency: {0}")]
    Inconsistent(String),
}

impl StoreError {
    /// The stable error name of `tally_domain::errors` this maps to.
    pub fn name(&self) -> &'static str {
        match self {
            StoreError::Transient(_) => errors::TRANSIENT_STORE_ERROR,
            StoreError::Permanent(_) => errors::STORE_ERROR,
            StoreError::Inconsistent(_) => errors::LEDGER_INCONSISTENCY,
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }
}

/// Service error codes that mean "try again" on DynamoDB, SNS, EventBridge
/// and Step Functions.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TransactionConflictException",
    "TransactionInProgressException",
    "InternalServerError",
    "InternalServerErrorException",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "KMSThrottlingException",
];

/// Maps an SDK error to its meaning, keeping the operation name and the full
/// error chain in the message.
/// The answer to a conditional DynamoDB write: `Ok(true)` when it was
/// applied, `Ok(false)` when its condition did not hold
/// (`ConditionalCheckFailedException`), any other failure classified.
pub fn condition_met<O, E>(
    operation: &str,
    out: Result<O, SdkError<E, HttpResponse>>,
) -> Result<bool, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match out {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.code() == Some("ConditionalCheckFailedException")) =>
        {
            Ok(false)
        }
        Err(e) => Err(classify(operation, e)),
    }
}

pub fn classify<E>(operation: &str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let transient = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => {
            s.raw().status().is_server_error()
                || s.raw().status().as_u16() == 429
                || s.err().code().is_some_and(|c| TRANSIENT_CODES.contains(&c))
        }
        _ => false,
    };
    let message = format!("{operation}: {}", DisplayErrorContext(&err));
    if transient {
        StoreError::Transient(message)
    } else {
        StoreError::Permanent(message)
    }
}
