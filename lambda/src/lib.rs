//! The streaming inference function: Kinesis ride events in, ride-duration predictions out.
//!
//! `main.rs` only reads the configuration ([`Config::from_env`]), calls [`init`] once at cold
//! start and hands [`Handler::handle`] to `lambda_runtime`. Everything else lives here so tests
//! drive the same code.
//!
//! # What happens to each record of a Kinesis batch
//!
//! Every input record ends as exactly one of:
//! - **predicted**: its prediction is in the `PREDICTIONS_STREAM_NAME` stream;
//! - **dead-lettered**: it can never succeed (bad base64, not JSON, a missing or wrong-typed
//!   field, a zone id or distance out of range) and its dead-letter record, with the reason, is in
//!   the `DEAD_LETTER` stream or S3 prefix;
//! - **retried**: it is neither (a write failed after bounded retries with backoff), so it is
//!   reported in `batchItemFailures` and Lambda delivers it again.
//!
//! Lambda resumes a shard from the lowest reported sequence number, so records after it that did
//! succeed are delivered again: predictions are written at least once, never lost. The counts of
//! each batch are logged (`records_in`, `predicted`, `dead_lettered`, `retried`, `elapsed_ms`).
//!
//! # Dead letters
//!
//! One JSON record per bad input record: `reason`, `kind`, `sequence_number`, `partition_key`,
//! `event_source_arn`, `data` (the original base64), `model_version`, `at`. On a Kinesis stream
//! its partition key is the input record's. On S3 each is one object,
//! `<prefix>/<stream>/<shard>/<sequence number>.json`, so a redelivered record overwrites its
//! own dead letter instead of duplicating it.
#![warn(missing_docs)]

pub mod config;
mod error;
pub mod handler;
pub mod load;
pub mod output;
pub mod record;
#[cfg(test)]
#[path = "../tests/common/tiny_model.rs"]
mod tiny_model;

use std::io::{Read, Write};
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};

pub use config::{Config, DeadLetter, Destinations, ModelSource};
pub use error::Error;
pub use handler::{Handler, Response};
pub use output::Sinks;

/// The AWS configuration from the standard chain (environment, profile, container and instance
/// credentials), honouring `AWS_ENDPOINT_URL`, so one binary runs against moto, LocalStack and AWS.
pub async fn aws_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// An S3 client; path-style addressing when an endpoint URL is set, since emulators serve
/// buckets by path rather than by DNS name.
pub fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    let emulated =
        sdk.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(emulated)
            .build(),
    )
}

/// Cold start: builds the clients and loads the model. Any failure is an [`Error`] to report as
/// an init error; nothing falls back to a default.
pub async fn init(config: &Config, sdk: &SdkConfig) -> Result<Handler, Error> {
    let s3 = s3_client(sdk);
    let model = load::load_model(&config.model, &s3).await?;
    let sinks = config
        .destinations
        .clone()
        .map(|d| Sinks::new(aws_sdk_kinesis::Client::new(sdk), s3, d));
    tracing::info!(
        model_location = %config.model,
        model_version = model.version(),
        destinations = ?config.destinations,
        test_run = sinks.is_none(),
        "model loaded"
    );
    Ok(Handler::new(model, sinks))
}

/// Reports an init failure to the Lambda Runtime API (`POST /runtime/init/error`), so the
/// invocation fails with the error's type and message rather than a bare "runtime exited".
/// `runtime_api` is `AWS_LAMBDA_RUNTIME_API` (`host:port`, plain HTTP on the sandbox's loopback).
pub fn report_init_error(runtime_api: &str, error: &Error) -> std::io::Result<()> {
    let body = serde_json::json!({
        "errorMessage": error.to_string(),
        "errorType": error.error_type(),
        "stackTrace": [],
    })
    .to_string();
    let mut stream = std::net::TcpStream::connect(runtime_api)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: {runtime_api}\r\nLambda-Runtime-Function-Error-Type: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        error.error_type(),
        body.len()
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let head = String::from_utf8_lossy(&answer);
    match head.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        _ => Err(std::io::Error::other(format!(
            "runtime API answered {:.60}",
            head.lines().next().unwrap_or("nothing")
        ))),
    }
}
