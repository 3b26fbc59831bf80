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
