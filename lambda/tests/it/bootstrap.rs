//! The real `bootstrap` binary, as Lambda runs it: environment variables in, the Runtime API
//! over loopback HTTP, AWS through `AWS_ENDPOINT_URL` (moto).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::runtime_api::{self, Call};
use crate::{aws, fixture_text, model_in_s3};

/// Kills the child when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(api: &str, vars: &[(&str, String)]) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bootstrap"));
    cmd.env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "taxi-duration-test")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .envs(aws::child_env())
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    Running(cmd.spawn().unwrap())
}

fn next_call(api: &runtime_api::RuntimeApi) -> Call {
    api.calls
        .recv_timeout(Duration::from_secs(60))
        .expect("the function did not call the runtime API within 60 s")
}

#[tokio::test]
async fn bootstrap_serves_a_kinesis_batch_and_logs_its_counts() {
    let (bucket, run) = model_in_s3().await;
    let (out, dlq) = (aws::stream("out", 1).await, aws::stream("dlq", 1).await);
    let api = runtime_api::start(vec![fixture_text("kinesis_mixed.json")]);
    let started = Instant::now();
    let mut child = spawn(
        &api.address,
        &[
            ("MODEL_BUCKET", bucket),
            ("RUN_ID", run),
            ("PREDICTIONS_STREAM_NAME", out.clone()),
            ("DEAD_LETTER", format!("kinesis:{dlq}")),
        ],
    );

    let Call::Next(ready) = next_call(&api) else {
        panic!("expected the function to ask for an event")
    };
    eprintln!(
        "cold start (debug build, process start to ready, model from moto S3): {:?}",
        ready - started
    );
    let Call::Response { request_id, body } = next_call(&api) else {
        panic!("expected a response")
    };
    assert_eq!(request_id, "req-0");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!({"batchItemFailures": []})
    );
    assert!(
        matches!(next_call(&api), Call::Next(_)),
        "the function serves the next event"
    );

    assert_eq!(aws::read_stream(&out).await.len(), 3);
    assert_eq!(aws::read_stream(&dlq).await.len(), 10);
    let _ = child.0.kill();
    let logs: Vec<Value> = BufReader::new(child.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .map(|l| {
            serde_json::from_str(&l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
        })
        .collect();
    let batch = logs
        .iter()
        .find(|l| l["fields"]["message"] == "kinesis batch")
        .expect("a per-batch log line");
    let f = &batch["fields"];
    assert_eq!(
        (
            f["records_in"].as_u64(),
            f["predicted"].as_u64(),
            f["dead_lettered"].as_u64(),
            f["retried"].as_u64()
        ),
        (Some(13), Some(3), Some(10), Some(0)),
        "{batch}"
    );
    assert!(f["elapsed_ms"].as_f64().is_some(), "{batch}");
}

#[tokio::test]
async fn bootstrap_reports_a_missing_model_as_an_init_error() {
    let bucket = aws::bucket("models").await;
    let api = runtime_api::start(vec![]);
    let mut child = spawn(
        &api.address,
        &[
            ("MODEL_BUCKET", bucket.clone()),
            ("RUN_ID", "absent".into()),
            ("TEST_RUN", "true".into()),
        ],
    );

    let Call::InitError { body, error_type } = next_call(&api) else {
        panic!("expected an init error")
    };
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["errorType"], "ModelNotFound");
    assert_eq!(error_type.as_deref(), Some("ModelNotFound"));
    let message = body["errorMessage"].as_str().unwrap();
    assert!(
        message.contains(&format!("s3://{bucket}/models/absent/model.json")),
        "{message}"
    );
    let status = child.0.wait().unwrap();
    assert!(
        !status.success(),
        "the process must exit with an error after an init failure"
    );
}

#[tokio::test]
async fn bootstrap_reports_missing_configuration_as_an_init_error() {
    let api = runtime_api::start(vec![]);
    let mut child = spawn(&api.address, &[]);
    let Call::InitError { body, .. } = next_call(&api) else {
        panic!("expected an init error")
    };
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["errorType"], "ConfigError");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("MODEL_LOCATION"),
        "{body}"
    );
    assert!(!child.0.wait().unwrap().success());
}
