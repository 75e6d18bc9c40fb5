//! Kinesis event-source mapping emulation against moto Kinesis, with the echo function.

use std::path::Path;
use std::time::Duration;

use aws_config::SdkConfig;
use serde_json::{Value, json};
use xtask::esm::{DrainOptions, FailureRecord, drain};
use xtask::runtime_api::FunctionHost;

use crate::moto;
use crate::support::{self, echo_spec};

/// A function with one mapping from a fresh one-shard stream, hosted with ECHO_LOG on.
struct Fixture {
    function: String,
    sdk: SdkConfig,
    stream: String,
    host: FunctionHost,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn new(
        configure: impl FnOnce(aws_sdk_lambda::operation::create_event_source_mapping::builders::CreateEventSourceMappingFluentBuilder) -> aws_sdk_lambda::operation::create_event_source_mapping::builders::CreateEventSourceMappingFluentBuilder,
    ) -> Self {
        let sdk = support::sdk().await;
        let function = moto::unique("esm-fn");
        let stream = moto::unique("esm-in");
        let function_arn = support::create_function(&sdk, &function).await;
        let stream_arn = support::create_stream(&sdk, &stream, 1).await;
        let lambda = aws_sdk_lambda::Client::new(&sdk);
        let req = lambda
            .create_event_source_mapping()
            .function_name(&function)
            .event_source_arn(&stream_arn)
            .starting_position(aws_sdk_lambda::types::EventSourcePosition::TrimHorizon);
        configure(req).send().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut spec = echo_spec(&function);
        spec.arn = function_arn;
        spec.env.insert(
            "ECHO_LOG".into(),
            dir.path().join("echo.log").display().to_string(),
        );
        let host = FunctionHost::start(spec).await.unwrap();
        Self {
            function,
            sdk,
            stream,
            host,
            dir,
        }
    }

    fn opts(&self) -> DrainOptions {
        let mut o = DrainOptions::new(self.dir.path().join("checkpoints"));
        o.timeout = Duration::from_secs(120);
        o
    }

    async fn put(&self, data: Value) -> String {
        support::put(&self.sdk, &self.stream, data).await
    }

    /// The sequence numbers of each invocation, from the function's own log.
    fn invocations(&self) -> Vec<Vec<String>> {
        read_log(&self.dir.path().join("echo.log"))
    }
}

fn read_log(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["sequence_numbers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn batches_honour_batch_size_and_checkpoints_persist() {
    let fx = Fixture::new(|r| r.batch_size(3).maximum_batching_window_in_seconds(0)).await;
    let mut seqs = Vec::new();
    for i in 0..7 {
        seqs.push(fx.put(json!({"i": i})).await);
    }
    let report = drain(&fx.sdk, &fx.host, &fx.opts()).await.unwrap();
    assert_eq!(report.batch_sizes, vec![3, 3, 1]);
    assert_eq!(report.records_succeeded, 7);
    assert_eq!(
        fx.invocations().concat(),
        seqs,
        "every record once, in order"
    );

    // A second drain starts after the checkpoint: nothing to do until new records arrive.
    let again = drain(&fx.sdk, &fx.host, &fx.opts()).await.unwrap();
    assert_eq!(again.invocations, 0);
    let late = fx.put(json!({"i": 7})).await;
    let more = drain(&fx.sdk, &fx.host, &fx.opts()).await.unwrap();
    assert_eq!(more.batch_sizes, vec![1]);
    assert_eq!(fx.invocations().last().unwrap(), &vec![late]);
    fx.host.shutdown().await;
}

#[tokio::test]
async fn the_batching_window_gathers_records_that_arrive_late() {
    let fx = Fixture::new(|r| r.batch_size(100).maximum_batching_window_in_seconds(3)).await;
    for i in 0..3 {
        fx.put(json!({"i": i})).await;
    }
    let sdk = fx.sdk.clone();
    let stream = fx.stream.clone();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        for i in 3..5 {
            support::put(&sdk, &stream, json!({"i": i})).await;
        }
    });
    let started = std::time::Instant::now();
    let report = drain(&fx.sdk, &fx.host, &fx.opts()).await.unwrap();
    late.await.unwrap();
    assert_eq!(
        report.batch_sizes,
        vec![5],
        "records put within the window join the batch"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "a partial batch waits for the window"
    );
    fx.host.shutdown().await;
}

#[tokio::test]
async fn batch_item_failures_are_retried_from_the_first_failed_record() {
    let fx = Fixture::new(|r| {
        r.batch_size(10)
            .maximum_batching_window_in_seconds(0)
            .maximum_retry_attempts(2)
            .function_response_types(
                aws_sdk_lambda::types::FunctionResponseType::ReportBatchItemFailures,
            )
    })
    .await;
    let mut seqs = Vec::new();
    for i in 0..5 {
        let data = if i == 2 {
            json!({"i": i, "fail_times": 1})
        } else {
            json!({"i": i})
        };
        seqs.push(fx.put(data).await);
    }
    let report = drain(&fx.sdk, &fx.host, &fx.opts()).await.unwrap();
    assert_eq!(report.batch_sizes, vec![5, 3]);
    assert_eq!(report.records_succeeded, 5);
    assert_eq!(report.records_to_destination, 0);
    assert_eq!(
        fx.invocations()[1],
        seqs[2..].to_vec(),
        "the retry starts at the failed record"
    );
    fx.host.shutdown().await;
}

#[tokio::test]
async fn exhausted_partial_failures_go_to_a_kinesis_destination() {
    let sdk = support::sdk().await;
    let dead = moto::unique("esm-dead");
    let dead_arn = support::create_stream(&sdk, &dead, 1).await;
    let fx = Fixture::new(|r| {
        r.batch_size(10)
            .maximum_batching_window_in_seconds(0)
            .maximum_retry_attempts(1)
            .function_response_types(
                aws_sdk_lambda::types::FunctionResponseType::ReportBatchItemFailures,
            )
            .destination_config(
                aws_sdk_lambda::types::DestinationConfig::builder()
                    .on_failure(
                        aws_sdk_lambda::types::OnFailure::builder()
                            .destination(dead_arn)
                            .build(),
                    )
                    .build(),
            )
    })
    .await;
    let a = fx.put(json!({"i": 0})).await;
    let b = fx.put(json!({"i": 1, "fail": true})).await;
    let c = fx.put(json!({"i": 2})).await;
    let report = drain(&fx.sdk, &fx.host, &fx.opts()).await.unwrap();
    assert_eq!(
        report.batch_sizes,
        vec![3, 2],
        "one retry of the failed tail, then give up"
    );
    assert_eq!(report.records_succeeded, 1);
    assert_eq!(report.records_to_destination, 2);
    assert_eq!(
        fx.invocations(),
        vec![vec![a, b.clone(), c.clone()], vec![b.clone(), c.clone()]]
    );

    let sent = support::read_all(&sdk, &dead).await;
    assert_eq!(sent.len(), 1, "one failure record for the given-up batch");
    let record: FailureRecord = serde_json::from_slice(&sent[0]).unwrap();
    assert_eq!(record.kinesis_batch_info["startSequenceNumber"], json!(b));
    assert_eq!(record.kinesis_batch_info["endSequenceNumber"], json!(c));
    assert_eq!(record.kinesis_batch_info["batchSize"], json!(2));
    assert_eq!(
        record.request_context["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(record.request_context["approximateInvokeCount"], json!(2));
    let payload: Value = serde_json::from_str(&record.payload).unwrap();
    assert_eq!(payload["Records"].as_array().unwrap().len(), 2);
    fx.host.shutdown().await;
}

#[tokio::test]
async fn function_errors_bisect_the_batch_down_to_the_bad_record_which_goes_to_s3() {
    let sdk = support::sdk().await;
    let bucket = moto::unique("esm-failures");
    let s3 = xtask::ctx::s3_client(&sdk);
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    let fx = Fixture::new(|r| {
        r.batch_size(4)
            .maximum_batching_window_in_seconds(0)
            .bisect_batch_on_function_error(true)
            .maximum_retry_attempts(0)
            .destination_config(
                aws_sdk_lambda::types::DestinationConfig::builder()
                    .on_failure(
                        aws_sdk_lambda::types::OnFailure::builder()
                            .destination(bucket_arn)
                            .build(),
                    )
                    .build(),
            )
    })
    .await;
    let mut seqs = Vec::new();
    for i in 0..4 {
        let data = if i == 2 {
            json!({"i": i, "error": true})
        } else {
            json!({"i": i})
        };
        seqs.push(fx.put(data).await);
    }
    let report = drain(&fx.sdk, &fx.host, &fx.opts()).await.unwrap();
    assert_eq!(
        report.batch_sizes,
        vec![4, 2, 2, 1, 1],
        "halves, then quarters of the failing half"
    );
    assert_eq!(report.records_succeeded, 3);
    assert_eq!(report.records_to_destination, 1);
    let calls = fx.invocations();
    assert_eq!(calls[3], vec![seqs[2].clone()], "the bad record alone");

    let listed = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("aws/lambda/"), "{}", keys[0]);
    let obj = s3
        .get_object()
        .bucket(&bucket)
        .key(keys[0])
        .send()
        .await
        .unwrap();
    let bytes = obj.body.collect().await.unwrap().into_bytes();
    let record: FailureRecord = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        record.kinesis_batch_info["startSequenceNumber"],
        json!(seqs[2])
    );
    assert_eq!(record.response_context["functionError"], "Unhandled");
    fx.host.shutdown().await;
}

#[tokio::test]
async fn latest_reads_what_arrived_after_the_mapping_was_created() {
    // A TRIM_HORIZON mapping exists first; a second, LATEST mapping is added later.
    let fx = Fixture::new(|r| r.batch_size(10).maximum_batching_window_in_seconds(0)).await;
    let old = fx.put(json!({"old": true})).await;
    // moto records mapping creation times in whole seconds: let the old record's second pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stream_arn = aws_sdk_kinesis::Client::new(&fx.sdk)
        .describe_stream_summary()
        .stream_name(&fx.stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary()
        .unwrap()
        .stream_arn()
        .to_string();
    let lambda = aws_sdk_lambda::Client::new(&fx.sdk);
    lambda
        .create_event_source_mapping()
        .function_name(&fx.function)
        .event_source_arn(stream_arn)
        .starting_position(aws_sdk_lambda::types::EventSourcePosition::Latest)
        .batch_size(10)
        .send()
        .await
        .unwrap();
    let new = fx.put(json!({"new": true})).await;
    let report = drain(&fx.sdk, &fx.host, &fx.opts()).await.unwrap();
    assert_eq!(report.mappings, 2);
    let mut seen = fx.invocations();
    seen.sort();
    let mut want = vec![vec![old.clone(), new.clone()], vec![new.clone()]];
    want.sort();
    assert_eq!(
        seen, want,
        "TRIM_HORIZON reads both records, LATEST only the new one"
    );
    fx.host.shutdown().await;
}
