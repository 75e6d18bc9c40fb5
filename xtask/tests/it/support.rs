//! Helpers shared by the local-emulation tests: the echo test function, moto resources.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use aws_config::SdkConfig;
use xtask::runtime_api::{FunctionMode, FunctionSpec};

use crate::moto;

pub const REGION: &str = "us-east-1";

/// The `echo_function` example, built on first use (cargo builds examples with the tests, so this
/// is normally a no-op).
pub fn echo_function() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let path = profile_dir.join("examples").join("echo_function");
        if !path.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let ok = Command::new(cargo)
                .args(["build", "--package", "xtask", "--example", "echo_function"])
                .status()
                .unwrap()
                .success();
            assert!(ok, "building the echo_function example failed");
        }
        assert!(path.exists(), "{} missing", path.display());
        path
    })
    .clone()
}

/// A process-mode spec for the echo function.
pub fn echo_spec(name: &str) -> FunctionSpec {
    let arn = format!("arn:aws:lambda:{REGION}:123456789012:function:{name}");
    FunctionSpec::new(
        name,
        &arn,
        REGION,
        FunctionMode::Process {
            bootstrap: echo_function(),
        },
    )
}

/// The moto server binary, found like tests/support/moto.rs finds it.
pub fn moto_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MOTO_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let venv = moto::cache_dir().join("venvs/moto/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("moto_server"))
                .find(|p| p.exists())
        })
        .expect("moto_server not found: run `bash tools/setup.sh`")
}

/// SDK configuration for the shared moto server.
pub async fn sdk() -> SdkConfig {
    xtask::ctx::aws_config_for(REGION, Some(&moto::moto().endpoint))
        .await
        .unwrap()
}

/// Creates an IAM role in moto (Lambda's CreateFunction insists on an existing role). The
/// workspace has no IAM SDK, so this is IAM's query API by hand; moto routes it by the
/// credential scope and does not check signatures.
pub async fn create_role(name: &str) -> String {
    let body = format!(
        "Action=CreateRole&Version=2010-05-08&RoleName={name}&AssumeRolePolicyDocument=%7B%7D"
    );
    let resp = reqwest::Client::new()
        .post(&moto::moto().endpoint)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header(
            "Authorization",
            format!("AWS4-HMAC-SHA256 Credential=test/20260101/{REGION}/iam/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    let arn = text
        .split("<Arn>")
        .nth(1)
        .and_then(|s| s.split("</Arn>").next())
        .unwrap_or_else(|| panic!("no role ARN in {text}"));
    arn.to_string()
}

/// Creates a function in moto (code: an empty zip; moto never runs it, the host does) and
/// returns its ARN.
pub async fn create_function(sdk: &SdkConfig, name: &str) -> String {
    let role = create_role(&moto::unique("role")).await;
    // The smallest valid zip: an end-of-central-directory record and nothing else.
    let mut empty_zip = b"PK\x05\x06".to_vec();
    empty_zip.extend([0u8; 18]);
    let lambda = aws_sdk_lambda::Client::new(sdk);
    let out = lambda
        .create_function()
        .function_name(name)
        .role(role)
        .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
        .handler("bootstrap")
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(aws_smithy_types::Blob::new(empty_zip))
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.function_arn().unwrap().to_string()
}

/// Creates a stream and returns its ARN.
pub async fn create_stream(sdk: &SdkConfig, name: &str, shards: i32) -> String {
    let kinesis = aws_sdk_kinesis::Client::new(sdk);
    kinesis
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    let d = kinesis
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .unwrap();
    d.stream_description_summary()
        .unwrap()
        .stream_arn()
        .to_string()
}

/// Puts one JSON record and returns its sequence number.
pub async fn put(sdk: &SdkConfig, stream: &str, data: serde_json::Value) -> String {
    let kinesis = aws_sdk_kinesis::Client::new(sdk);
    let out = kinesis
        .put_record()
        .stream_name(stream)
        .partition_key("p")
        .data(aws_smithy_types::Blob::new(
            serde_json::to_vec(&data).unwrap(),
        ))
        .send()
        .await
        .unwrap();
    out.sequence_number().to_string()
}

/// Every record of a one-shard stream, from the start.
pub async fn read_all(sdk: &SdkConfig, stream: &str) -> Vec<Vec<u8>> {
    let kinesis = aws_sdk_kinesis::Client::new(sdk);
    let it = kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id("shardId-000000000000")
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap();
    let out = kinesis
        .get_records()
        .shard_iterator(it.shard_iterator().unwrap())
        .send()
        .await
        .unwrap();
    out.records()
        .iter()
        .map(|r| r.data().as_ref().to_vec())
        .collect()
}
