//! A Lambda function for testing the local Runtime API and Kinesis event-source emulators,
//! built on the real `lambda_runtime` client. Its behaviour is driven by the payload:
//!
//! - a plain JSON object is echoed back with the invocation context the runtime client saw
//!   (request id, deadline, ARN, trace id) and the Lambda environment variables;
//!   `{"error": "msg"}` makes the invocation fail, `{"sleep_ms": n}` sleeps first,
//!   `{"exit": code}` kills the process mid-invocation;
//! - a Kinesis event is answered with `batchItemFailures` for every record whose data is a JSON
//!   object with `"fail": true`, or with `"fail_times": n` for the first n times this process sees
//!   it (so that a retry succeeds); a record with `"error": true` fails the whole invocation, one
//!   with `"sleep_ms": n` sleeps. When `ECHO_LOG` names a file, each Kinesis invocation appends
//!   one line `{"request_id", "sequence_numbers", "data"}` to it, so tests can see the batches.
//!
//! At start-up, `ECHO_INIT=post-error` reports an init error through `/init/error` and exits;
//! `ECHO_INIT=exit` exits at once without reporting.

use std::io::{Read, Write};
use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEvent;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::{Value, json};

/// How often this process has seen each sequence number.
static SEEN: std::sync::Mutex<std::collections::BTreeMap<String, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

const VARS: [&str; 10] = [
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_ENDPOINT_URL",
    "ECHO_EXTRA",
];

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    match std::env::var("ECHO_INIT").as_deref() {
        Ok("post-error") => {
            post_init_error("EchoInitFailed", "ECHO_INIT asked for an init error");
            std::process::exit(1);
        }
        Ok("exit") => std::process::exit(3),
        _ => {}
    }
    lambda_runtime::run(service_fn(handle)).await
}

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
    let (payload, ctx) = event.into_parts();
    if payload.get("Records").is_some() {
        return kinesis(payload, &ctx.request_id).await;
    }
    if let Some(ms) = payload.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(code) = payload.get("exit").and_then(Value::as_i64) {
        std::process::exit(code as i32);
    }
    if let Some(msg) = payload.get("error").and_then(Value::as_str) {
        return Err(Diagnostic {
            error_type: "EchoError".into(),
            error_message: msg.into(),
        });
    }
    let env: serde_json::Map<String, Value> = VARS
        .iter()
        .filter_map(|k| {
            std::env::var(k)
                .ok()
                .map(|v| (k.to_string(), Value::String(v)))
        })
        .collect();
    Ok(json!({
        "echo": payload,
        "context": {
            "request_id": ctx.request_id,
            "deadline_ms": ctx.deadline,
            "invoked_function_arn": ctx.invoked_function_arn,
            "trace_id": ctx.xray_trace_id,
        },
        "env": env,
    }))
}

async fn kinesis(payload: Value, request_id: &str) -> Result<Value, Diagnostic> {
    let event: KinesisEvent = serde_json::from_value(payload).map_err(|e| Diagnostic {
        error_type: "BadEvent".into(),
        error_message: e.to_string(),
    })?;
    let mut failures = Vec::new();
    let mut seqs = Vec::new();
    let mut datas = Vec::new();
    let mut error = false;
    for record in &event.records {
        let data: Value = serde_json::from_slice(&record.kinesis.data.0).unwrap_or(Value::Null);
        seqs.push(record.kinesis.sequence_number.clone());
        if let Some(ms) = data.get("sleep_ms").and_then(Value::as_u64) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let seen = {
            let mut seen = SEEN.lock().expect("not poisoned");
            let n = seen
                .entry(record.kinesis.sequence_number.clone())
                .or_insert(0);
            *n += 1;
            *n
        };
        let fail_times = data.get("fail_times").and_then(Value::as_u64).unwrap_or(0);
        if data.get("fail") == Some(&Value::Bool(true)) || seen <= fail_times {
            failures.push(json!({"itemIdentifier": record.kinesis.sequence_number}));
        }
        error |= data.get("error") == Some(&Value::Bool(true));
        datas.push(data);
    }
    if let Ok(path) = std::env::var("ECHO_LOG") {
        let line = json!({"request_id": request_id, "sequence_numbers": seqs, "data": datas});
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open ECHO_LOG");
        writeln!(f, "{line}").expect("write ECHO_LOG");
    }
    if error {
        return Err(Diagnostic {
            error_type: "EchoBatchError".into(),
            error_message: "a record asked for an error".into(),
        });
    }
    Ok(json!({"batchItemFailures": failures}))
}

/// What a custom runtime does when its initialisation fails: one POST to `/init/error`.
fn post_init_error(error_type: &str, message: &str) {
    let api =
        std::env::var("AWS_LAMBDA_RUNTIME_API").expect("AWS_LAMBDA_RUNTIME_API is set by the host");
    let body = json!({"errorType": error_type, "errorMessage": message}).to_string();
    let mut s = std::net::TcpStream::connect(&api).expect("connect to the Runtime API");
    write!(
        s,
        "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: {api}\r\nLambda-Runtime-Function-Error-Type: {error_type}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send init error");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
}
