//! The error a handler returns: a stable name (the `errorType` the state
//! machine matches) and a message.

use crate::error::StoreError;
use tally_domain::errors;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct HandlerError {
    pub name: &'static str,
    pub message: String,
}

impl HandlerError {
    pub fn invalid_input(message: impl Into<String>) -> Self {
        HandlerError {
            name: errors::INVALID_INPUT,
            message: message.into(),
        }
    }
    pub fn config(message: impl Into<String>) -> Self {
        HandlerError {
            name: errors::CONFIG_ERROR,
            message: message.into(),
        }
    }
}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        HandlerError {
            name: e.name(),
            message: e.to_string(),
        }
    }
}

impl From<crate::config::ConfigError> for HandlerError {
    fn from(e: crate::config::ConfigError) -> Self {
        HandlerError::config(e.0)
    }
}

#[cfg(feature = "lambda")]
impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(e: HandlerError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: e.name.to_owned(),
            error_message: e.message,
        }
    }
}
