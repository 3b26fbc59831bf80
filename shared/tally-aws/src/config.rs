//! Reading configuration from the environment, failing fast with the
//! variable's name. The AWS endpoint comes only from the standard
//! `AWS_ENDPOINT_URL*` variables, read by `aws-config`.

use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

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
pub async fn aws() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// An S3 client for `sdk`, with path-style addressing (what S3-compatible
/// emulators need; AWS accepts it too).
pub fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}
