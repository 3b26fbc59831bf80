//! Reading configuration from the environment, failing fast with the
//! variable's name. The AWS endpoint comes only from the standard
//! `AWS_ENDPOINT_URL*` variables, read by `aws-config`.

use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// Every binary's logs: one JSON object a line (what CloudWatch Logs
/// Insights queries), filtered by `RUST_LOG`.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
}

pub fn required(name: &str) -> Result<String, ConfigError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(ConfigError(format!("{name} must be set"))),
    }
}

/// A number from the environment, or `default`, within `min..=max`.
pub fn bounded<T>(name: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Copy + std::fmt::Display,
{
    let v = match std::env::var(name) {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse::<T>()
            .map_err(|_| ConfigError(format!("{name}=`{s}` is not a number")))?,
        _ => default,
    };
    if v < min || v > max {
        return Err(ConfigError(format!("{name}={v} is outside {min}..={max}")));
    }
    Ok(v)
}

/// `enabled` / `disabled` (default disabled).
pub fn switch(name: &str) -> Result<bool, ConfigError> {
    match std::env::var(name).as_deref() {
        Err(_) | Ok("") | Ok("disabled") => Ok(false),
        Ok("enabled") => Ok(true),
        Ok(other) => Err(ConfigError(format!(
            "{name}=`{other}`: expected enabled or disabled"
        ))),
    }
}

/// The shared AWS configuration (region, credentials, endpoint) from the
/// standard environment and profile chain.
///
/// Every call is retried by the SDK (standard mode: exponential backoff with
/// full jitter) up to `TALLY_AWS_MAX_ATTEMPTS` attempts (default 10, 1–20),
/// waiting at most 5 s between two. The SDK's default of 3 attempts fails a
/// partition of a thousand calls on a bad minute of DynamoDB (at 30 % of
/// calls failing, 0.3³ ≈ 3 % of calls would fail); 10 makes that 6 in a
/// million. Operations are safe to retry: every write is conditional or an
/// idempotent overwrite. An invalid value is refused loudly.
pub async fn aws() -> aws_config::SdkConfig {
    let attempts = match bounded("TALLY_AWS_MAX_ATTEMPTS", 10u32, 1, 20) {
        Ok(n) => n,
        Err(e) => panic!("{e}"),
    };
    let retry = aws_config::retry::RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_max_backoff(std::time::Duration::from_secs(5));
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(retry)
        .load()
        .await
}

/// An S3 client for `sdk`, with path-style addressing (what S3-compatible
/// emulators need; AWS accepts it too).
pub fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}
