//! The Runtime API emulator with a real `lambda_runtime` function, as a process and in a container.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use xtask::runtime_api::{FunctionHost, FunctionMode, InvokeOutcome};

use crate::support::{echo_function, echo_spec};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn response(outcome: InvokeOutcome) -> serde_json::Value {
    match outcome {
        InvokeOutcome::Ok { response } => response,
        other => panic!("expected a response, got {other:?}"),
    }
}

#[tokio::test]
async fn the_runtime_client_sees_lambdas_headers_and_environment() {
    let mut spec = echo_spec("echo-headers");
    spec.timeout = Duration::from_secs(7);
    spec.memory_mb = 256;
    spec.endpoint = Some("http://127.0.0.1:9".into());
    spec.env.insert("ECHO_EXTRA".into(), "from-spec".into());
    let arn = spec.arn.clone();
    let host = FunctionHost::start(spec).await.unwrap();

    let before = now_ms();
    let first = response(host.invoke(&json!({"ride": 1})).await.unwrap());
    let second = response(host.invoke(&json!({"ride": 2})).await.unwrap());
    host.shutdown().await;

    assert_eq!(first["echo"], json!({"ride": 1}));
    assert_eq!(second["echo"], json!({"ride": 2}));
    let ctx = &first["context"];
    assert_eq!(ctx["invoked_function_arn"], json!(arn));
    assert_eq!(ctx["request_id"].as_str().unwrap().len(), 36);
    assert_ne!(
        ctx["request_id"], second["context"]["request_id"],
        "every invocation has its own id"
    );
    assert!(
        ctx["trace_id"].as_str().unwrap().starts_with("Root=1-"),
        "{ctx}"
    );
    let deadline = ctx["deadline_ms"].as_u64().unwrap();
    assert!(
        deadline >= before + 7_000 && deadline <= now_ms() + 7_000,
        "deadline {deadline} is not now + 7 s"
    );

    let env = &first["env"];
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "echo-headers");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
    assert_eq!(env["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/echo-headers");
    assert!(
        env["AWS_LAMBDA_LOG_STREAM_NAME"]
            .as_str()
            .unwrap()
            .contains("[$LATEST]")
    );
    assert!(
        env["AWS_LAMBDA_RUNTIME_API"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(env["AWS_REGION"], "us-east-1");
    assert_eq!(env["AWS_ENDPOINT_URL"], "http://127.0.0.1:9");
    assert_eq!(
        env["AWS_ACCESS_KEY_ID"], "test",
        "emulator credentials on an emulator endpoint"
    );
    assert_eq!(env["ECHO_EXTRA"], "from-spec");
    assert_eq!(
        host.cold_starts(),
        1,
        "a warm environment serves both invocations"
    );
}

#[tokio::test]
async fn a_function_error_is_reported_and_the_environment_stays_warm() {
    let host = FunctionHost::start(echo_spec("echo-error")).await.unwrap();
    let outcome = host.invoke(&json!({"error": "boom"})).await.unwrap();
    assert_eq!(
        outcome,
        InvokeOutcome::FunctionError {
            error_type: "EchoError".into(),
            error_message: "boom".into()
        }
    );
    assert!(host.invoke(&json!({"fine": true})).await.unwrap().is_ok());
    assert_eq!(host.cold_starts(), 1);
    host.shutdown().await;
}

#[tokio::test]
async fn the_timeout_kills_the_environment_and_the_next_invocation_starts_afresh() {
    let mut spec = echo_spec("echo-timeout");
    spec.timeout = Duration::from_secs(1);
    let host = FunctionHost::start(spec).await.unwrap();
    let started = std::time::Instant::now();
    let outcome = host.invoke(&json!({"sleep_ms": 20_000})).await.unwrap();
    let took = started.elapsed();
    assert_eq!(outcome, InvokeOutcome::Timeout { after_ms: 1000 });
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "took {took:?}"
    );
    let next = response(host.invoke(&json!({"again": 1})).await.unwrap());
    assert_eq!(next["echo"], json!({"again": 1}));
    assert_eq!(host.cold_starts(), 2, "a timed-out environment is replaced");
    host.shutdown().await;
}

#[tokio::test]
async fn a_process_dying_mid_invocation_is_a_function_error() {
    let host = FunctionHost::start(echo_spec("echo-exit")).await.unwrap();
    match host.invoke(&json!({"exit": 7})).await.unwrap() {
        InvokeOutcome::FunctionError {
            error_type,
            error_message,
        } => {
            assert_eq!(error_type, "Runtime.ExitError");
            assert!(error_message.contains('7'), "{error_message}");
        }
        other => panic!("expected an exit error, got {other:?}"),
    }
    assert!(host.invoke(&json!({})).await.unwrap().is_ok());
    host.shutdown().await;
}

#[tokio::test]
async fn init_errors_are_reported_whether_posted_or_not() {
    let mut posted = echo_spec("echo-init-post");
    posted.env.insert("ECHO_INIT".into(), "post-error".into());
    let host = FunctionHost::start(posted).await.unwrap();
    let outcome = host.invoke(&json!({})).await.unwrap();
    assert_eq!(
        outcome,
        InvokeOutcome::InitError {
            error_type: "EchoInitFailed".into(),
            error_message: "ECHO_INIT asked for an init error".into()
        }
    );

    let mut silent = echo_spec("echo-init-exit");
    silent.env.insert("ECHO_INIT".into(), "exit".into());
    let host = FunctionHost::start(silent).await.unwrap();
    match host.invoke(&json!({})).await.unwrap() {
        InvokeOutcome::InitError { error_type, .. } => assert_eq!(error_type, "Runtime.ExitError"),
        other => panic!("expected an init error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_executable_is_refused_with_the_fix() {
    let mut spec = echo_spec("nothing");
    spec.mode = FunctionMode::Process {
        bootstrap: "/nonexistent/bootstrap".into(),
    };
    let err = FunctionHost::start(spec).await.err().unwrap().to_string();
    assert!(err.contains("cargo xtask build lambda"), "{err}");
}

/// Builds a FROM scratch image holding the echo function as `/bootstrap`. The example is a
/// dynamically linked host binary, so the loader and the libraries `ldd` names go in too; the real
/// function image (image.rs) carries a static binary instead.
async fn echo_image(docker: &bollard::Docker, tag: &str) {
    let bin = echo_function();
    let ldd = std::process::Command::new("ldd")
        .arg(&bin)
        .output()
        .unwrap();
    let libs: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect();
    let mut tar = tar::Builder::new(Vec::new());
    // Plain entries from the files' bytes: symlinks resolved, no sparse headers Docker rejects.
    let mut add = |name: &str, bytes: &[u8], mode: u32| {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes).unwrap();
    };
    add(
        "Dockerfile",
        b"FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"/bootstrap\"]\n",
        0o644,
    );
    add("rootfs/bootstrap", &std::fs::read(&bin).unwrap(), 0o755);
    for lib in &libs {
        add(&format!("rootfs{lib}"), &std::fs::read(lib).unwrap(), 0o755);
    }
    let body = tar.into_inner().unwrap();
    let opts = bollard::query_parameters::BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(tag.into()),
        rm: true,
        ..Default::default()
    };
    let mut stream = docker.build_image(opts, None, Some(bollard::body_full(body.into())));
    use futures_util::StreamExt;
    while let Some(msg) = stream.next().await {
        let msg = msg.unwrap();
        assert!(msg.error_detail.is_none(), "image build failed: {msg:?}");
    }
}

#[tokio::test]
async fn a_container_image_runs_against_the_runtime_api_with_host_networking() {
    let docker = bollard::Docker::connect_with_local_defaults().unwrap();
    let tag = format!("taxi-duration-echo-test:{}", std::process::id());
    echo_image(&docker, &tag).await;

    let mut spec = echo_spec("echo-container");
    spec.mode = FunctionMode::Container { image: tag.clone() };
    spec.env
        .insert("ECHO_EXTRA".into(), "in-a-container".into());
    let host = FunctionHost::start(spec).await.unwrap();
    let outcome = host.invoke(&json!({"from": "docker"})).await;
    let failed = host.invoke(&json!({"error": "inside"})).await;
    host.shutdown().await;
    let rm = bollard::query_parameters::RemoveImageOptions {
        force: true,
        ..Default::default()
    };
    docker.remove_image(&tag, Some(rm), None).await.unwrap();

    let resp = response(outcome.unwrap());
    assert_eq!(resp["echo"], json!({"from": "docker"}));
    assert_eq!(resp["env"]["ECHO_EXTRA"], "in-a-container");
    assert_eq!(resp["env"]["AWS_LAMBDA_FUNCTION_NAME"], "echo-container");
    assert!(matches!(
        failed.unwrap(),
        InvokeOutcome::FunctionError { .. }
    ));
}
