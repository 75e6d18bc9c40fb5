//! Kinesis event-source mapping emulation: what Lambda's pollers do for a Kinesis trigger, run
//! locally against an emulator and a [`FunctionHost`].
//!
//! The mappings are read from the emulator (`ListEventSourceMappings`), so the deployed
//! configuration is the one exercised: BatchSize, MaximumBatchingWindowInSeconds,
//! StartingPosition, FunctionResponseTypes (`ReportBatchItemFailures`),
//! BisectBatchOnFunctionError, MaximumRetryAttempts and DestinationConfig.OnFailure
//! (a Kinesis stream or an S3 bucket). Progress is checkpointed per shard in a directory, keyed by
//! the mapping's UUID, so a later run continues where the last one stopped.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_config::SdkConfig;
use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use aws_sdk_kinesis::types::ShardIteratorType;
use serde::{Deserialize, Serialize};

use crate::runtime_api::{FunctionHost, InvokeOutcome};

/// Where a mapping starts reading a shard that has no checkpoint yet.
#[derive(Debug, Clone, PartialEq)]
pub enum StartingPosition {
    /// The oldest record still in the shard.
    TrimHorizon,
    /// Records added after the mapping was created. The emulator reads from the mapping's
    /// creation time, so records put between `deploy` and the first poll are not lost.
    Latest {
        since: Option<aws_smithy_types::DateTime>,
    },
    /// Records added at or after this time.
    AtTimestamp(aws_smithy_types::DateTime),
}

/// One Kinesis event-source mapping, as configured in the emulator.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The mapping's UUID (the checkpoint key).
    pub uuid: String,
    /// The function it invokes.
    pub function_arn: String,
    /// The source stream's ARN.
    pub stream_arn: String,
    /// Records per invocation, at most.
    pub batch_size: usize,
    /// How long to gather records before invoking with a partial batch.
    pub batching_window: Duration,
    /// Where reading starts without a checkpoint.
    pub starting_position: StartingPosition,
    /// Split a failing batch in two and retry each half.
    pub bisect_on_error: bool,
    /// Retries before records go to the on-failure destination; `None`: retry until they expire.
    pub max_retry_attempts: Option<u32>,
    /// The function reports partial failures with `batchItemFailures`.
    pub report_batch_item_failures: bool,
    /// The on-failure destination ARN (Kinesis stream or S3 bucket).
    pub on_failure: Option<String>,
    /// False for a disabled mapping, which is skipped.
    pub enabled: bool,
}

impl Mapping {
    /// The source stream's name.
    pub fn stream_name(&self) -> &str {
        stream_name(&self.stream_arn)
    }
}

fn stream_name(arn: &str) -> &str {
    arn.rsplit_once(":stream/").map(|(_, n)| n).unwrap_or(arn)
}

/// Reads the Kinesis event-source mappings of `function_name` from the emulator (or AWS).
pub async fn mappings(sdk: &SdkConfig, function_name: &str) -> anyhow::Result<Vec<Mapping>> {
    let lambda = aws_sdk_lambda::Client::new(sdk);
    let mut out = Vec::new();
    let mut pages = lambda
        .list_event_source_mappings()
        .function_name(function_name)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.with_context(|| format!("list the event-source mappings of {function_name}"))?;
        for m in page.event_source_mappings() {
            let Some(source) = m.event_source_arn().filter(|a| a.contains(":kinesis:")) else {
                continue;
            };
            let starting_position = match m.starting_position().map(|p| p.as_str()) {
                Some("LATEST") => StartingPosition::Latest {
                    since: m.last_modified().cloned(),
                },
                Some("AT_TIMESTAMP") => StartingPosition::AtTimestamp(
                    m.starting_position_timestamp()
                        .cloned()
                        .context("AT_TIMESTAMP mapping without a timestamp")?,
                ),
                _ => StartingPosition::TrimHorizon,
            };
            out.push(Mapping {
                uuid: m.uuid().context("mapping without UUID")?.to_string(),
                function_arn: m.function_arn().unwrap_or_default().to_string(),
                stream_arn: source.to_string(),
                batch_size: m.batch_size().unwrap_or(100).max(1) as usize,
                batching_window: Duration::from_secs(
                    m.maximum_batching_window_in_seconds().unwrap_or(0).max(0) as u64,
                ),
                starting_position,
                bisect_on_error: m.bisect_batch_on_function_error().unwrap_or(false),
                max_retry_attempts: m
                    .maximum_retry_attempts()
                    .and_then(|n| u32::try_from(n).ok()),
                report_batch_item_failures: m
                    .function_response_types()
                    .iter()
                    .any(|t| t.as_str() == "ReportBatchItemFailures"),
                on_failure: m
                    .destination_config()
                    .and_then(|d| d.on_failure())
                    .and_then(|f| f.destination())
                    .map(str::to_string),
                enabled: m.state().is_none_or(|s| s == "Enabled" || s == "Enabling"),
            });
        }
    }
    Ok(out)
}

/// Per-shard checkpoints of one mapping: the last sequence number processed (successfully or
/// sent to the on-failure destination), in `<dir>/<uuid>.json`.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    shards: BTreeMap<String, String>,
}

impl Checkpoints {
    /// Loads the checkpoints of mapping `uuid` from `dir` (none yet: empty).
    pub fn load(dir: &Path, uuid: &str) -> anyhow::Result<Self> {
        let path = dir.join(format!("{uuid}.json"));
        let shards = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parse {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        Ok(Self { path, shards })
    }

    /// The last processed sequence number of `shard`.
    pub fn get(&self, shard: &str) -> Option<&str> {
        self.shards.get(shard).map(String::as_str)
    }

    /// Records progress on `shard` and persists it at once (a crash loses no acknowledged work).
    pub fn set(&mut self, shard: &str, seq: &str) -> anyhow::Result<()> {
        self.shards.insert(shard.to_string(), seq.to_string());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.shards)?)?;
        std::fs::rename(&tmp, &self.path).with_context(|| format!("write {}", self.path.display()))
    }
}

/// How [`drain`] runs.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// Where checkpoints are kept (e.g. `<cache>/local/esm`).
    pub checkpoint_dir: PathBuf,
    /// Give up (with an error) when the shards are not drained by then, e.g. when a failing
    /// batch is retried forever under `MaximumRetryAttempts = -1`.
    pub timeout: Duration,
    /// How often an idle shard is polled while a batching window is open.
    pub poll_interval: Duration,
}

impl DrainOptions {
    /// Checkpoints under `checkpoint_dir`, a 5 minute limit, 100 ms polls.
    pub fn new(checkpoint_dir: impl Into<PathBuf>) -> Self {
        Self {
            checkpoint_dir: checkpoint_dir.into(),
            timeout: Duration::from_secs(300),
            poll_interval: Duration::from_millis(100),
        }
    }
}

/// Runs the environment's function locally (a container or a process, under the Runtime API
/// emulator) and drains its mappings through it, as Lambda's poller would; an error when any
/// record was given up on (sent to the on-failure destination or discarded).
pub async fn drain_with_local_function(
    ctx: &crate::ctx::Ctx,
    args: &crate::invoke::FunctionArgs,
) -> anyhow::Result<DrainReport> {
    let host = crate::invoke::local_host(ctx, args).await?;
    let opts = DrainOptions::new(crate::local::checkpoint_dir(&ctx.cache));
    let drained = drain(&ctx.aws().await?, &host, &opts).await;
    host.shutdown().await;
    let drained = drained?;
    anyhow::ensure!(
        drained.records_to_destination == 0 && drained.records_discarded == 0,
        "records were given up on: {drained}"
    );
    Ok(drained)
}

/// What a drain did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DrainReport {
    /// Mappings processed.
    pub mappings: usize,
    /// Function invocations, retries included.
    pub invocations: usize,
    /// Records the function processed successfully.
    pub records_succeeded: usize,
    /// Records given up on and sent to the on-failure destination.
    pub records_to_destination: usize,
    /// Records given up on without a destination (dropped, as Lambda does).
    pub records_discarded: usize,
    /// Failure records written to destinations, one per given-up batch.
    pub failure_records: Vec<FailureRecord>,
    /// Batch sizes of the invocations, in order.
    pub batch_sizes: Vec<usize>,
}

impl std::fmt::Display for DrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} mapping(s), {} invocation(s): {} record(s) succeeded, {} sent to the on-failure destination, {} discarded",
            self.mappings,
            self.invocations,
            self.records_succeeded,
            self.records_to_destination,
            self.records_discarded
        )
    }
}

impl DrainReport {
    fn absorb(&mut self, other: DrainReport) {
        self.mappings += other.mappings;
        self.invocations += other.invocations;
        self.records_succeeded += other.records_succeeded;
        self.records_to_destination += other.records_to_destination;
        self.records_discarded += other.records_discarded;
        self.failure_records.extend(other.failure_records);
        self.batch_sizes.extend(other.batch_sizes);
    }
}

/// Lambda's invocation record for records it gave up on, as sent to an on-failure destination.
/// `payload` (the failed batch's event, as a JSON string) is what Lambda adds for S3 destinations;
/// the emulator adds it for Kinesis destinations too, so that failed records can be replayed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailureRecord {
    #[serde(rename = "requestContext")]
    pub request_context: serde_json::Value,
    #[serde(rename = "responseContext")]
    pub response_context: serde_json::Value,
    pub version: String,
    pub timestamp: String,
    #[serde(rename = "KinesisBatchInfo")]
    pub kinesis_batch_info: serde_json::Value,
    pub payload: String,
}

/// Processes every enabled Kinesis mapping of the host's function until all of its shards are
/// drained: batches records, invokes the function, retries, bisects, and sends what cannot
/// succeed to the on-failure destination. Checkpoints persist between calls.
pub async fn drain(
    sdk: &SdkConfig,
    host: &FunctionHost,
    opts: &DrainOptions,
) -> anyhow::Result<DrainReport> {
    let function = host.spec().function_name.clone();
    let deadline = Instant::now() + opts.timeout;
    let mut report = DrainReport::default();
    for mapping in mappings(sdk, &function).await? {
        if !mapping.enabled {
            continue;
        }
        let part = drain_mapping(sdk, host, &mapping, opts, deadline).await?;
        report.absorb(part);
        report.mappings += 1;
    }
    Ok(report)
}

/// Drains one mapping (exposed for tests and tools that hold a [`Mapping`] already).
pub async fn drain_mapping(
    sdk: &SdkConfig,
    host: &FunctionHost,
    mapping: &Mapping,
    opts: &DrainOptions,
    deadline: Instant,
) -> anyhow::Result<DrainReport> {
    let kinesis = aws_sdk_kinesis::Client::new(sdk);
    let mut checkpoints = Checkpoints::load(&opts.checkpoint_dir, &mapping.uuid)?;
    let mut report = DrainReport::default();
    let stream = mapping.stream_name().to_string();
    let mut shards: Vec<String> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        // Kinesis refuses a stream name together with a continuation token.
        let req = match &token {
            Some(t) => kinesis.list_shards().next_token(t),
            None => kinesis.list_shards().stream_name(&stream),
        };
        let page = req
            .send()
            .await
            .with_context(|| format!("list the shards of {stream}"))?;
        shards.extend(page.shards().iter().map(|s| s.shard_id().to_string()));
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
    let dest = Destination::new(sdk, mapping.on_failure.as_deref());
    for shard in shards {
        let mut reader =
            ShardReader::open(&kinesis, &stream, &shard, mapping, checkpoints.get(&shard)).await?;
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "draining {stream} did not finish within {} s: a batch may be retried forever (MaximumRetryAttempts = -1)",
                opts.timeout.as_secs()
            );
            let batch = reader
                .next_batch(
                    mapping.batch_size,
                    mapping.batching_window,
                    opts.poll_interval,
                )
                .await?;
            if batch.is_empty() {
                break;
            }
            let ctx = BatchCtx {
                mapping,
                shard: &shard,
                region: &region,
                dest: &dest,
                deadline,
            };
            process_batch(host, &ctx, batch, &mut checkpoints, &mut report).await?;
        }
    }
    Ok(report)
}

/// Reads one shard with a shard iterator.
struct ShardReader<'a> {
    kinesis: &'a aws_sdk_kinesis::Client,
    iterator: Option<String>,
}

impl<'a> ShardReader<'a> {
    async fn open(
        kinesis: &'a aws_sdk_kinesis::Client,
        stream: &str,
        shard: &str,
        mapping: &Mapping,
        checkpoint: Option<&str>,
    ) -> anyhow::Result<Self> {
        let req = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard);
        let req = match (checkpoint, &mapping.starting_position) {
            (Some(seq), _) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            (None, StartingPosition::TrimHorizon)
            | (None, StartingPosition::Latest { since: None }) => {
                req.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            (None, StartingPosition::Latest { since: Some(t) })
            | (None, StartingPosition::AtTimestamp(t)) => req
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(*t),
        };
        let out = req
            .send()
            .await
            .with_context(|| format!("get a shard iterator for {stream}/{shard}"))?;
        Ok(Self {
            kinesis,
            iterator: out.shard_iterator().map(str::to_string),
        })
    }

    /// Up to `size` records. Once the shard is caught up, a partial batch waits for `window` to
    /// fill further; an empty result means the shard has nothing more.
    async fn next_batch(
        &mut self,
        size: usize,
        window: Duration,
        poll: Duration,
    ) -> anyhow::Result<Vec<aws_sdk_kinesis::types::Record>> {
        let window_end = Instant::now() + window;
        let mut batch = Vec::new();
        while batch.len() < size {
            let Some(it) = self.iterator.clone() else {
                break;
            };
            let limit = i32::try_from(size - batch.len())
                .unwrap_or(10_000)
                .min(10_000);
            let out = self
                .kinesis
                .get_records()
                .shard_iterator(it)
                .limit(limit)
                .send()
                .await
                .context("get records")?;
            self.iterator = out.next_shard_iterator().map(str::to_string);
            let got = out.records().len();
            batch.extend(out.records().iter().cloned());
            if got > 0 {
                continue;
            }
            // Caught up with the shard.
            let now = Instant::now();
            if batch.is_empty() || now >= window_end {
                break;
            }
            tokio::time::sleep(poll.min(window_end - now)).await;
        }
        Ok(batch)
    }
}

/// An on-failure destination.
enum Destination {
    None,
    Kinesis {
        client: aws_sdk_kinesis::Client,
        stream: String,
        arn: String,
    },
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        arn: String,
    },
    Unsupported(String),
}

impl Destination {
    fn new(sdk: &SdkConfig, arn: Option<&str>) -> Self {
        let Some(arn) = arn else { return Self::None };
        if arn.starts_with("arn:aws:kinesis:") || arn.contains(":kinesis:") {
            return Self::Kinesis {
                client: aws_sdk_kinesis::Client::new(sdk),
                stream: stream_name(arn).to_string(),
                arn: arn.to_string(),
            };
        }
        if let Some(bucket) = arn.split(":::").nth(1).filter(|_| arn.contains(":s3:")) {
            return Self::S3 {
                client: crate::ctx::s3_client(sdk),
                bucket: bucket.to_string(),
                arn: arn.to_string(),
            };
        }
        Self::Unsupported(arn.to_string())
    }

    /// Sends a failure record; returns whether it went anywhere.
    async fn send(
        &self,
        record: &FailureRecord,
        mapping_uuid: &str,
        shard: &str,
    ) -> anyhow::Result<bool> {
        let body = serde_json::to_vec(record)?;
        match self {
            Self::None => Ok(false),
            Self::Kinesis {
                client,
                stream,
                arn,
            } => {
                client
                    .put_record()
                    .stream_name(stream)
                    .partition_key(shard)
                    .data(aws_smithy_types::Blob::new(body))
                    .send()
                    .await
                    .with_context(|| format!("send a failure record to {arn}: create the stream, or fix DestinationConfig"))?;
                Ok(true)
            }
            Self::S3 {
                client,
                bucket,
                arn,
            } => {
                // Lambda's key layout for S3 on-failure destinations.
                let now = chrono::Utc::now();
                let key = format!(
                    "aws/lambda/{mapping_uuid}/{shard}/{}/{}-{}",
                    now.format("%Y/%m/%d"),
                    now.format("%Y-%m-%dT%H.%M.%S"),
                    crate::runtime_api::request_id()
                );
                client
                    .put_object()
                    .bucket(bucket)
                    .key(&key)
                    .body(body.into())
                    .content_type("application/json")
                    .send()
                    .await
                    .with_context(|| format!("write a failure record to {arn}: create the bucket, or fix DestinationConfig"))?;
                Ok(true)
            }
            Self::Unsupported(arn) => bail!(
                "on-failure destination {arn} is not supported by the local emulator: use a Kinesis stream or S3 bucket ARN"
            ),
        }
    }
}

struct BatchCtx<'a> {
    mapping: &'a Mapping,
    shard: &'a str,
    region: &'a str,
    dest: &'a Destination,
    deadline: Instant,
}

/// How an invocation went, for the retry logic.
enum Verdict {
    Success,
    /// Records from this index on failed (`batchItemFailures`); the ones before succeeded.
    PartialFrom(usize),
    /// The whole batch failed: function error, timeout, init error or an unusable response.
    Failed {
        function_error: String,
    },
}

fn judge(
    outcome: &InvokeOutcome,
    batch: &[aws_sdk_kinesis::types::Record],
    report_failures: bool,
) -> Verdict {
    let failed = |t: &str| Verdict::Failed {
        function_error: t.to_string(),
    };
    match outcome {
        InvokeOutcome::Ok { response } if report_failures => {
            let Some(items) = response.get("batchItemFailures") else {
                return Verdict::Success;
            };
            let Some(items) = items.as_array() else {
                return Verdict::Success;
            };
            if items.is_empty() {
                return Verdict::Success;
            }
            // Lambda treats an unknown, empty or missing identifier as a failure of the whole batch.
            let mut lowest: Option<usize> = None;
            for item in items {
                let Some(id) = item
                    .get("itemIdentifier")
                    .and_then(|v| v.as_str())
                    .filter(|s| !s.is_empty())
                else {
                    return failed("InvalidBatchItemFailure");
                };
                let Some(idx) = batch.iter().position(|r| r.sequence_number() == id) else {
                    return failed("InvalidBatchItemFailure");
                };
                lowest = Some(lowest.map_or(idx, |l| l.min(idx)));
            }
            Verdict::PartialFrom(lowest.expect("non-empty"))
        }
        InvokeOutcome::Ok { .. } => Verdict::Success,
        InvokeOutcome::FunctionError { .. } => failed("Unhandled"),
        InvokeOutcome::Timeout { .. } => failed("Unhandled"),
        InvokeOutcome::InitError { .. } => failed("Unhandled"),
    }
}

/// Invokes the function with `batch` until every record has succeeded or been given up on,
/// following Lambda's order: retry from the first reported failure, bisect on function errors,
/// give up after MaximumRetryAttempts.
async fn process_batch(
    host: &FunctionHost,
    ctx: &BatchCtx<'_>,
    batch: Vec<aws_sdk_kinesis::types::Record>,
    checkpoints: &mut Checkpoints,
    report: &mut DrainReport,
) -> anyhow::Result<()> {
    // Sub-batches in stream order, each with the retries it has used.
    let mut pending: VecDeque<(Vec<aws_sdk_kinesis::types::Record>, u32)> =
        VecDeque::from([(batch, 0)]);
    let exhausted = |retries: u32| {
        ctx.mapping
            .max_retry_attempts
            .is_some_and(|max| retries > max)
    };
    while let Some((records, retries)) = pending.pop_front() {
        anyhow::ensure!(
            Instant::now() < ctx.deadline,
            "gave up retrying a batch of {}: drain time limit reached",
            ctx.shard
        );
        let event = kinesis_event(ctx, &records);
        let outcome = host.invoke(&serde_json::to_value(&event)?).await?;
        report.invocations += 1;
        report.batch_sizes.push(records.len());
        let last = |rs: &[aws_sdk_kinesis::types::Record]| {
            rs.last().map(|r| r.sequence_number().to_string())
        };
        match judge(&outcome, &records, ctx.mapping.report_batch_item_failures) {
            Verdict::Success => {
                report.records_succeeded += records.len();
                if let Some(seq) = last(&records) {
                    checkpoints.set(ctx.shard, &seq)?;
                }
            }
            Verdict::PartialFrom(idx) => {
                report.records_succeeded += idx;
                if let Some(seq) = last(&records[..idx]) {
                    checkpoints.set(ctx.shard, &seq)?;
                }
                let rest = records[idx..].to_vec();
                if exhausted(retries + 1) {
                    give_up(ctx, &rest, retries + 1, None, checkpoints, report).await?;
                } else {
                    pending.push_front((rest, retries + 1));
                }
            }
            Verdict::Failed { function_error } => {
                if ctx.mapping.bisect_on_error && records.len() > 1 {
                    // Bisection does not use up a retry: it isolates the bad record instead.
                    let second = records[records.len() / 2..].to_vec();
                    let first = records[..records.len() / 2].to_vec();
                    pending.push_front((second, retries));
                    pending.push_front((first, retries));
                } else if exhausted(retries + 1) {
                    give_up(
                        ctx,
                        &records,
                        retries + 1,
                        Some(&function_error),
                        checkpoints,
                        report,
                    )
                    .await?;
                } else {
                    pending.push_front((records, retries + 1));
                }
            }
        }
    }
    Ok(())
}

/// Sends `records` to the on-failure destination (or drops them) and moves the checkpoint past them.
async fn give_up(
    ctx: &BatchCtx<'_>,
    records: &[aws_sdk_kinesis::types::Record],
    invocations: u32,
    function_error: Option<&str>,
    checkpoints: &mut Checkpoints,
    report: &mut DrainReport,
) -> anyhow::Result<()> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(());
    };
    let arrival = |r: &aws_sdk_kinesis::types::Record| {
        r.approximate_arrival_timestamp()
            .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok())
    };
    let mut response_context = serde_json::json!({"statusCode": 200, "executedVersion": "$LATEST"});
    if let Some(e) = function_error {
        response_context["functionError"] = e.into();
    }
    let record = FailureRecord {
        request_context: serde_json::json!({
            "requestId": crate::runtime_api::request_id(),
            "functionArn": ctx.mapping.function_arn,
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": invocations,
        }),
        response_context,
        version: "1.0".into(),
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        kinesis_batch_info: serde_json::json!({
            "shardId": ctx.shard,
            "startSequenceNumber": first.sequence_number(),
            "endSequenceNumber": last.sequence_number(),
            "approximateArrivalOfFirstRecord": arrival(first),
            "approximateArrivalOfLastRecord": arrival(last),
            "batchSize": records.len(),
            "streamArn": ctx.mapping.stream_arn,
        }),
        payload: serde_json::to_string(&kinesis_event(ctx, records))?,
    };
    if ctx.dest.send(&record, &ctx.mapping.uuid, ctx.shard).await? {
        report.records_to_destination += records.len();
        report.failure_records.push(record);
    } else {
        tracing::warn!(
            "discarding {} record(s) of {} after {invocations} invocation(s): the mapping has no on-failure destination",
            records.len(),
            ctx.shard
        );
        report.records_discarded += records.len();
    }
    checkpoints.set(ctx.shard, last.sequence_number())
}

/// The event Lambda sends for a batch of Kinesis records.
fn kinesis_event(ctx: &BatchCtx<'_>, records: &[aws_sdk_kinesis::types::Record]) -> KinesisEvent {
    let mut event = KinesisEvent::default();
    event.records = records.iter().map(|r| event_record(ctx, r)).collect();
    event
}

fn event_record(ctx: &BatchCtx<'_>, r: &aws_sdk_kinesis::types::Record) -> KinesisEventRecord {
    let mut rec = KinesisEventRecord::default();
    rec.aws_region = Some(ctx.region.to_string());
    rec.event_id = Some(format!("{}:{}", ctx.shard, r.sequence_number()));
    rec.event_name = Some("aws:kinesis:record".into());
    rec.event_source = Some("aws:kinesis".into());
    rec.event_source_arn = Some(ctx.mapping.stream_arn.clone());
    rec.event_version = Some("1.0".into());
    rec.kinesis.sequence_number = r.sequence_number().to_string();
    rec.kinesis.partition_key = r.partition_key().unwrap_or_default().to_string();
    rec.kinesis.kinesis_schema_version = Some("1.0".into());
    *rec.kinesis.data = r.data().as_ref().to_vec();
    if let Some(t) = r.approximate_arrival_timestamp()
        && let Some(dt) = chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
    {
        rec.kinesis.approximate_arrival_timestamp =
            aws_lambda_events::encodings::SecondTimestamp(dt);
    }
    rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::types::Record;

    fn rec(seq: &str) -> Record {
        Record::builder()
            .sequence_number(seq)
            .data(aws_smithy_types::Blob::new(b"{}".to_vec()))
            .build()
            .unwrap()
    }

    #[test]
    fn batch_item_failures_retry_from_the_lowest_failed_record() {
        let batch = [rec("10"), rec("11"), rec("12"), rec("13")];
        let resp = InvokeOutcome::Ok {
            response: serde_json::json!({"batchItemFailures": [{"itemIdentifier": "13"}, {"itemIdentifier": "11"}]}),
        };
        assert!(matches!(
            judge(&resp, &batch, true),
            Verdict::PartialFrom(1)
        ));
        assert!(
            matches!(judge(&resp, &batch, false), Verdict::Success),
            "ignored unless ReportBatchItemFailures"
        );
        let unknown = InvokeOutcome::Ok {
            response: serde_json::json!({"batchItemFailures": [{"itemIdentifier": "99"}]}),
        };
        assert!(matches!(
            judge(&unknown, &batch, true),
            Verdict::Failed { .. }
        ));
        let empty = InvokeOutcome::Ok {
            response: serde_json::json!({"batchItemFailures": []}),
        };
        assert!(matches!(judge(&empty, &batch, true), Verdict::Success));
    }

    #[test]
    fn checkpoints_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Checkpoints::load(dir.path(), "u1").unwrap();
        assert_eq!(c.get("shardId-000000000000"), None);
        c.set("shardId-000000000000", "42").unwrap();
        let c = Checkpoints::load(dir.path(), "u1").unwrap();
        assert_eq!(c.get("shardId-000000000000"), Some("42"));
    }

    #[test]
    fn stream_names_come_from_arns() {
        assert_eq!(
            stream_name("arn:aws:kinesis:us-east-1:123456789012:stream/rides"),
            "rides"
        );
    }
}
