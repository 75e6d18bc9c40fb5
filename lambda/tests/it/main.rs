//! Integration tests of the function against a real moto server: model in S3, predictions and
//! dead letters in Kinesis streams or S3, and the real `bootstrap` binary behind a loopback
//! Lambda Runtime API.

// The shared harness is formatted with the workspace, not as part of this crate.
#[rustfmt::skip]
#[path = "../../../tests/support/moto.rs"]
mod moto;
#[path = "../common/runtime_api.rs"]
mod runtime_api;
#[path = "../common/synthetic.rs"]
mod synthetic;
#[path = "../common/tiny_model.rs"]
mod tiny_model;

mod aws;
mod bootstrap;
mod delivery;
mod footprint;
mod loading;

use std::collections::HashMap;

use lambda::{Config, Handler};
use serde_json::Value;

/// A fixture from `tests/fixtures/lambda/`.
pub fn fixture(name: &str) -> Value {
    serde_json::from_str(&fixture_text(name)).unwrap()
}

pub fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../tests/fixtures/lambda/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The sequence numbers of a Kinesis fixture's records, by index.
pub fn sequence_numbers(event: &Value) -> Vec<String> {
    event["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kinesis"]["sequenceNumber"].as_str().unwrap().to_string())
        .collect()
}

/// The (index, kind) of each bad record of `kinesis_mixed.json`, from its `.expected.json`.
pub fn expected_rejections() -> Vec<(usize, String)> {
    serde_json::from_value(fixture("kinesis_mixed.expected.json")["rejected"].clone()).unwrap()
}

/// A configuration read from these variables only.
pub fn config(vars: &[(&str, &str)]) -> Result<Config, lambda::Error> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|k| map.get(k).cloned())
}

/// The tiny model stored in a fresh bucket under the training layout; returns (bucket, run id).
pub async fn model_in_s3() -> (String, String) {
    let bucket = aws::bucket("models").await;
    let run_id = moto::unique("run");
    aws::put_object(
        &bucket,
        &format!("models/{run_id}/model.json"),
        tiny_model::bytes(),
    )
    .await;
    (bucket, run_id)
}

/// Cold start with these variables, against moto.
pub async fn handler(vars: &[(&str, &str)]) -> Handler {
    lambda::init(&config(vars).unwrap(), &aws::sdk().await)
        .await
        .unwrap()
}
