//! AWS helpers over the test binary's moto server.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_s3::config::Credentials;

use crate::moto::moto;

/// The region every test uses.
pub const REGION: &str = "us-east-1";

/// An SDK configuration pointing at moto, built by the same loader the function uses.
pub async fn sdk() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&moto().endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await
}

/// Environment variables that make a child process (the bootstrap binary) use moto.
pub fn child_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", moto().endpoint.clone()),
        ("AWS_REGION", REGION.into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

pub async fn kinesis() -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&sdk().await)
}

pub async fn s3() -> aws_sdk_s3::Client {
    lambda::s3_client(&sdk().await)
}

/// Creates a stream with `shards` shards and returns its name.
pub async fn stream(prefix: &str, shards: i32) -> String {
    let name = crate::moto::unique(prefix);
    kinesis()
        .await
        .create_stream()
        .stream_name(&name)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    name
}

/// Creates a bucket and returns its name.
pub async fn bucket(prefix: &str) -> String {
    let name = crate::moto::unique(prefix);
    s3().await
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap();
    name
}

/// Stores an object.
pub async fn put_object(bucket: &str, key: &str, body: Vec<u8>) {
    s3().await
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap();
}

/// A record read back from a stream.
#[derive(Debug, Clone)]
pub struct Stored {
    pub partition_key: String,
    pub json: serde_json::Value,
}

/// Every record in a stream, from all shards, read with GetRecords from the trim horizon.
pub async fn read_stream(name: &str) -> Vec<Stored> {
    let client = kinesis().await;
    let shards = client.list_shards().stream_name(name).send().await.unwrap();
    let mut out = Vec::new();
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(name)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        loop {
            let page = client
                .get_records()
                .shard_iterator(&iterator)
                .limit(10_000)
                .send()
                .await
                .unwrap();
            if page.records().is_empty() {
                break;
            }
            for r in page.records() {
                out.push(Stored {
                    partition_key: r.partition_key().unwrap_or_default().to_string(),
                    json: serde_json::from_slice(r.data().as_ref()).unwrap(),
                });
            }
            match page.next_shard_iterator() {
                Some(next) => iterator = next.to_string(),
                None => break,
            }
        }
    }
    out
}

/// Every object under a prefix, as (key, JSON body).
pub async fn read_prefix(bucket: &str, prefix: &str) -> Vec<(String, serde_json::Value)> {
    let client = s3().await;
    let listing = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    let mut out = Vec::new();
    for obj in listing.contents() {
        let key = obj.key().unwrap().to_string();
        let body = client
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap();
        out.push((key, serde_json::from_slice(&body.into_bytes()).unwrap()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
