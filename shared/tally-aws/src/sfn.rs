//! Step Functions executions.

use crate::error::{classify, StoreError};
use crate::ports::{Executions, Started};

#[derive(Clone)]
pub struct SfnExecutions {
    pub client: aws_sdk_sfn::Client,
    pub state_machine_arn: String,
}

impl Executions for SfnExecutions {
    async fn start(&self, name: &str, input: &serde_json::Value) -> Result<Started, StoreError> {
        let out = self
            .client
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(name)
            .input(input.to_string())
            .send()
            .await;
        match out {
            Ok(_) => Ok(Started::New),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_execution_already_exists()) =>
            {
                Ok(Started::AlreadyExists)
            }
            Err(e) => Err(classify("StartExecution", e)),
        }
    }
}

/// Describes executions of any state machine (the sweeper).
#[derive(Clone)]
pub struct SfnLookup {
    pub client: aws_sdk_sfn::Client,
}

impl crate::ports::ExecutionLookup for SfnLookup {
    async fn describe(
        &self,
        execution_arn: &str,
    ) -> Result<Option<crate::ports::ExecutionState>, StoreError> {
        let out = self
            .client
            .describe_execution()
            .execution_arn(execution_arn)
            .send()
            .await;
        match out {
            Ok(d) => Ok(Some(crate::ports::ExecutionState {
                status: d.status().as_str().to_owned(),
                error: d.error().map(str::to_owned),
                cause: d.cause().map(str::to_owned),
            })),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_execution_does_not_exist()) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify("DescribeExecution", e)),
        }
    }
}
