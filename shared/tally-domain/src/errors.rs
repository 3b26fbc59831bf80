//! The stable error names functions return as `errorType`. The state
//! machine's `Retry`/`Catch` lists match these strings exactly, and a test
//! checks every `ErrorEquals` in `statemachines/` against [`ALL`].

pub const TRANSIENT_STORE_ERROR: &str = "TransientStoreError";
pub const STORE_ERROR: &str = "StoreError";
pub const INVALID_INPUT: &str = "InvalidInput";
pub const CONFIG_ERROR: &str = "ConfigError";
pub const LEDGER_INCONSISTENCY: &str = "LedgerInconsistency";
pub const TRANSIENT_PUBLISH_ERROR: &str = "TransientPublishError";
pub const PUBLISH_ERROR: &str = "PublishError";

/// Every name a Tally function can emit.
pub const ALL: &[&str] = &[
    TRANSIENT_STORE_ERROR,
    STORE_ERROR,
    INVALID_INPUT,
    CONFIG_ERROR,
    LEDGER_INCONSISTENCY,
    TRANSIENT_PUBLISH_ERROR,
    PUBLISH_ERROR,
];

/// Names that mean "the same call may succeed if tried again".
pub const TRANSIENT: &[&str] = &[TRANSIENT_STORE_ERROR, TRANSIENT_PUBLISH_ERROR];

/// Errors the Lambda service raises on its own (not the function's code),
/// which the state machine may retry.
pub const LAMBDA_SERVICE: &[&str] = &[
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
];
