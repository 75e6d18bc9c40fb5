//! What the function writes: prediction records, dead-letter records, and the sinks that write
//! them to Kinesis (PutRecords, with per-entry retries) and S3.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_smithy_types::Blob;
use serde::{Deserialize, Serialize};

use crate::config::{DeadLetter, Destinations};
use crate::error::chain;
use crate::record::{RejectKind, RideId};

/// PutRecords takes at most 500 records per call.
pub const MAX_RECORDS_PER_PUT: usize = 500;
/// PutRecords takes at most 5 MiB per call, counting data and partition keys.
pub const MAX_BYTES_PER_PUT: usize = 5 * 1024 * 1024;
/// One Kinesis record (data plus partition key) is at most 1 MiB.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// How many S3 dead-letter objects are written at once.
const S3_CONCURRENCY: usize = 16;

/// A prediction as written to the output stream and returned by direct invocations:
/// `{"model": ..., "version": ..., "prediction": {"ride_duration": ..., "ride_id": ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRecord<'a> {
    /// Always [`model::MODEL_NAME`].
    pub model: Cow<'a, str>,
    /// The model version.
    pub version: Cow<'a, str>,
    /// The prediction.
    pub prediction: Prediction,
}

/// One ride's prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Predicted duration in minutes.
    pub ride_duration: f64,
    /// The producer's ride id, with its JSON type.
    pub ride_id: RideId,
}

impl<'a> PredictionRecord<'a> {
    /// A record borrowing the model version.
    pub fn new(version: &'a str, prediction: Prediction) -> Self {
        Self {
            model: Cow::Borrowed(model::MODEL_NAME),
            version: Cow::Borrowed(version),
            prediction,
        }
    }

    /// The record with owned strings, for responses.
    pub fn into_owned(self) -> PredictionRecord<'static> {
        PredictionRecord {
            model: Cow::Owned(self.model.into_owned()),
            version: Cow::Owned(self.version.into_owned()),
            prediction: self.prediction,
        }
    }
}

/// One record to write to Kinesis.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The record's data.
    pub data: Vec<u8>,
    /// Its partition key (1 to 256 characters).
    pub partition_key: String,
}

impl Entry {
    fn put_bytes(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Serialises a prediction into an output entry keyed by its ride id.
pub fn prediction_entry(version: &str, prediction: Prediction) -> Entry {
    let partition_key = prediction.ride_id.partition_key();
    let record = PredictionRecord::new(version, prediction);
    let mut data = Vec::with_capacity(160);
    serde_json::to_writer(&mut data, &record).expect("a prediction record always serialises");
    Entry {
        data,
        partition_key,
    }
}

/// A record that can never succeed, as written to the dead-letter destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterRecord<'a> {
    /// A sentence naming the problem.
    pub reason: Cow<'a, str>,
    /// The class of problem: `bad_base64`, `not_json`, `invalid_field` or `out_of_range`.
    pub kind: Cow<'a, str>,
    /// The input record's sequence number.
    pub sequence_number: Cow<'a, str>,
    /// The input record's partition key.
    pub partition_key: Cow<'a, str>,
    /// The input stream's ARN, when the event named it.
    pub event_source_arn: Option<Cow<'a, str>>,
    /// The input record's data, base64 as received.
    pub data: Cow<'a, str>,
    /// True when `data` was cut to fit a Kinesis record (1 MiB); S3 dead letters are never cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub data_truncated: bool,
    /// The version of the model that was serving.
    pub model_version: Cow<'a, str>,
    /// RFC 3339 time the record was dead-lettered.
    pub at: Cow<'a, str>,
}

/// Where an input record came from, for dead-letter records and their S3 keys.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The record's sequence number.
    pub sequence_number: &'a str,
    /// Its partition key.
    pub partition_key: &'a str,
    /// The event's `eventID` (`shardId-...:<sequence number>`), when present.
    pub event_id: Option<&'a str>,
    /// The event's `eventSourceARN`, when present.
    pub event_source_arn: Option<&'a str>,
}

impl Origin<'_> {
    /// The S3 key of this record's dead letter: `<prefix>/<stream>/<shard>/<sequence number>.json`.
    /// Keyed by the input record, so a retried batch overwrites rather than duplicates.
    pub fn s3_key(&self, prefix: &str) -> String {
        let stream = self
            .event_source_arn
            .and_then(|a| a.rsplit_once(":stream/"))
            .map_or("unknown-stream", |(_, s)| s);
        let shard = self
            .event_id
            .and_then(|id| id.split_once(':'))
            .map_or("unknown-shard", |(s, _)| s);
        let key = format!("{stream}/{shard}/{}.json", self.sequence_number);
        if prefix.is_empty() {
            key
        } else {
            format!("{prefix}/{key}")
        }
    }
}

/// A dead letter ready to write: its JSON and where it goes.
#[derive(Debug, Clone)]
pub struct DeadLetterOut {
    /// The full JSON (for S3).
    pub json: Vec<u8>,
    /// The JSON cut to fit one Kinesis record (equal to `json` unless the data was large).
    pub kinesis_json: Vec<u8>,
    /// The Kinesis partition key (the input record's, or its sequence number when it had none).
    pub partition_key: String,
    /// The S3 key relative to the dead-letter prefix.
    pub s3_key_suffix: String,
}

/// Builds a dead letter for an input record.
pub fn dead_letter(
    origin: Origin<'_>,
    kind: RejectKind,
    reason: &str,
    data: &str,
    model_version: &str,
    at: &str,
) -> DeadLetterOut {
    let mut record = DeadLetterRecord {
        reason: reason.into(),
        kind: kind.as_str().into(),
        sequence_number: origin.sequence_number.into(),
        partition_key: origin.partition_key.into(),
        event_source_arn: origin.event_source_arn.map(Cow::Borrowed),
        data: data.into(),
        data_truncated: false,
        model_version: model_version.into(),
        at: at.into(),
    };
    let json = serde_json::to_vec(&record).expect("a dead-letter record always serialises");
    let partition_key = if origin.partition_key.is_empty() {
        origin.sequence_number.to_string()
    } else {
        origin.partition_key.to_string()
    };
    let kinesis_json = if json.len() + partition_key.len() <= MAX_RECORD_BYTES {
        json.clone()
    } else {
        // Base64 is ASCII, so any byte index is a character boundary. 1 KiB of headroom covers
        // the `data_truncated` field and JSON escaping of the other fields is already counted.
        let keep =
            MAX_RECORD_BYTES.saturating_sub(json.len() - data.len() + partition_key.len() + 1024);
        record.data = data[..keep.min(data.len())].into();
        record.data_truncated = true;
        serde_json::to_vec(&record).expect("a dead-letter record always serialises")
    };
    DeadLetterOut {
        json,
        kinesis_json,
        partition_key,
        s3_key_suffix: origin.s3_key(""),
    }
}

/// Retries of PutRecords entries that failed (throttling, internal errors): exponential backoff
/// with full jitter, for a bounded number of attempts.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per entry, the first included.
    pub max_attempts: u32,
    /// The backoff before the second attempt; it doubles each time.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts, 50 ms doubling up to 2 s: at most about 2 s of waiting per batch, well
    /// inside a Lambda timeout, before the records are handed back to Lambda to retry.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The backoff before attempt `attempt` (1-based; the first attempt has none): a uniformly
    /// random duration up to `base * 2^(attempt-2)`, capped ("full jitter").
    pub fn backoff(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let ceiling = self
            .base_delay
            .saturating_mul(1 << (attempt - 2).min(20))
            .min(self.max_delay);
        ceiling.mul_f64(rand::random::<f64>())
    }
}

/// Groups entries (by index) into PutRecords calls of at most 500 records and 5 MiB.
pub fn put_chunks(pending: &[usize], entries: &[Entry]) -> Vec<Vec<usize>> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for &i in pending {
        let size = entries[i].put_bytes();
        if !chunk.is_empty()
            && (chunk.len() == MAX_RECORDS_PER_PUT || bytes + size > MAX_BYTES_PER_PUT)
        {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        chunk.push(i);
        bytes += size;
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// What a write achieved, entry by entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// `written[i]` is true when entry `i` is durably stored.
    pub written: Vec<bool>,
    /// Entries sent again after a failure (summed over attempts).
    pub resent: usize,
}

/// Writes entries to a stream with PutRecords. Entries that fail individually are retried with
/// backoff; a call that fails as a whole (after the SDK's own retries of transient errors) marks
/// its entries failed without further attempts, since throttling and network blips have already
/// been retried and the rest (missing stream, no permission) will not heal within this batch.
pub async fn put_records(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    entries: &[Entry],
    policy: RetryPolicy,
) -> WriteReport {
    let mut report = WriteReport {
        written: vec![false; entries.len()],
        resent: 0,
    };
    let mut pending: Vec<usize> = (0..entries.len()).collect();
    let mut attempt = 0;
    while !pending.is_empty() && attempt < policy.max_attempts {
        attempt += 1;
        if attempt > 1 {
            report.resent += pending.len();
            tokio::time::sleep(policy.backoff(attempt)).await;
        }
        let mut failed = Vec::new();
        let mut call_failed = false;
        for chunk in put_chunks(&pending, entries) {
            let records: Vec<PutRecordsRequestEntry> = chunk
                .iter()
                .map(|&i| {
                    PutRecordsRequestEntry::builder()
                        .data(Blob::new(entries[i].data.clone()))
                        .partition_key(&entries[i].partition_key)
                        .build()
                        .expect("data and partition key are set")
                })
                .collect();
            match client
                .put_records()
                .stream_name(stream)
                .set_records(Some(records))
                .send()
                .await
            {
                Ok(out) => {
                    let results = out.records();
                    for (n, &i) in chunk.iter().enumerate() {
                        match results.get(n) {
                            Some(r) if r.error_code().is_none() => report.written[i] = true,
                            Some(r) => {
                                tracing::debug!(
                                    stream,
                                    code = r.error_code(),
                                    message = r.error_message(),
                                    "put entry failed"
                                );
                                failed.push(i);
                            }
                            None => failed.push(i),
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(stream, records = chunk.len(), error = %chain(&e), "PutRecords call failed");
                    call_failed = true;
                    failed.extend(chunk);
                }
            }
        }
        pending = failed;
        if call_failed {
            break;
        }
    }
    if !pending.is_empty() {
        tracing::warn!(
            stream,
            records = pending.len(),
            attempts = attempt,
            "records not written; handing them back to Lambda"
        );
    }
    report
}

/// The writers of a non-test deployment: the prediction stream and the dead-letter destination.
#[derive(Debug, Clone)]
pub struct Sinks {
    kinesis: aws_sdk_kinesis::Client,
    s3: aws_sdk_s3::Client,
    destinations: Destinations,
    retry: RetryPolicy,
}

impl Sinks {
    /// Sinks writing to `destinations`.
    pub fn new(
        kinesis: aws_sdk_kinesis::Client,
        s3: aws_sdk_s3::Client,
        destinations: Destinations,
    ) -> Self {
        Self {
            kinesis,
            s3,
            destinations,
            retry: RetryPolicy::default(),
        }
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Where the sinks write.
    pub fn destinations(&self) -> &Destinations {
        &self.destinations
    }

    /// Writes prediction entries to the output stream.
    pub async fn write_predictions(&self, entries: &[Entry]) -> WriteReport {
        put_records(
            &self.kinesis,
            &self.destinations.predictions_stream,
            entries,
            self.retry,
        )
        .await
    }

    /// Writes dead letters: PutRecords to a stream, or one S3 object per record.
    pub async fn write_dead_letters(&self, letters: Vec<DeadLetterOut>) -> WriteReport {
        if letters.is_empty() {
            return WriteReport::default();
        }
        match &self.destinations.dead_letter {
            DeadLetter::Kinesis(stream) => {
                let entries: Vec<Entry> = letters
                    .into_iter()
                    .map(|l| Entry {
                        data: l.kinesis_json,
                        partition_key: l.partition_key,
                    })
                    .collect();
                put_records(&self.kinesis, stream, &entries, self.retry).await
            }
            DeadLetter::S3 { bucket, prefix } => self.put_s3(bucket, prefix, letters).await,
        }
    }

    async fn put_s3(&self, bucket: &str, prefix: &str, letters: Vec<DeadLetterOut>) -> WriteReport {
        let limit = Arc::new(tokio::sync::Semaphore::new(S3_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        let n = letters.len();
        for (i, letter) in letters.into_iter().enumerate() {
            let (s3, limit, bucket) = (self.s3.clone(), limit.clone(), bucket.to_string());
            let key = if prefix.is_empty() {
                letter.s3_key_suffix
            } else {
                format!("{prefix}/{}", letter.s3_key_suffix)
            };
            let body = letter.json;
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await.expect("semaphore is never closed");
                let put = s3
                    .put_object()
                    .bucket(&bucket)
                    .key(&key)
                    .content_type("application/json")
                    .body(body.into())
                    .send()
                    .await;
                if let Err(e) = &put {
                    tracing::warn!(bucket = %bucket, key = %key, error = %chain(e), "dead letter not written to S3");
                }
                (i, put.is_ok())
            });
        }
        let mut report = WriteReport {
            written: vec![false; n],
            resent: 0,
        };
        while let Some(done) = tasks.join_next().await {
            if let Ok((i, ok)) = done {
                report.written[i] = ok;
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: usize) -> Entry {
        Entry {
            data: vec![b'x'; bytes],
            partition_key: "k".into(),
        }
    }

    #[test]
    fn chunks_respect_record_and_byte_limits() {
        let entries: Vec<Entry> = (0..1201).map(|_| entry(10)).collect();
        let all: Vec<usize> = (0..entries.len()).collect();
        let sizes: Vec<usize> = put_chunks(&all, &entries).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![500, 500, 201]);

        // Six records just under 1 MiB each: five fit in 5 MiB, the sixth starts a new call.
        let big: Vec<Entry> = (0..6).map(|_| entry(MAX_RECORD_BYTES - 1)).collect();
        let chunks = put_chunks(&[0, 1, 2, 3, 4, 5], &big);
        assert_eq!(chunks, vec![vec![0, 1, 2, 3, 4], vec![5]]);
        for c in &chunks {
            assert!(c.iter().map(|&i| big[i].put_bytes()).sum::<usize>() <= MAX_BYTES_PER_PUT);
        }
        // Retries send only the pending subset, in order.
        assert_eq!(put_chunks(&[7, 3], &entries), vec![vec![7, 3]]);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(250),
        };
        assert_eq!(p.backoff(1), Duration::ZERO);
        for _ in 0..100 {
            assert!(p.backoff(2) <= Duration::from_millis(100));
            assert!(p.backoff(3) <= Duration::from_millis(200));
            assert!(p.backoff(9) <= Duration::from_millis(250));
        }
        // Full jitter: the waits are spread, not all equal to the ceiling.
        let waits: std::collections::HashSet<Duration> = (0..20).map(|_| p.backoff(4)).collect();
        assert!(waits.len() > 1);
    }

    #[test]
    fn prediction_record_has_the_course_shape() {
        let e = prediction_entry(
            "abc123",
            Prediction {
                ride_duration: 12.5,
                ride_id: RideId::Str("r-1".into()),
            },
        );
        assert_eq!(e.partition_key, "r-1");
        assert_eq!(
            String::from_utf8(e.data).unwrap(),
            r#"{"model":"ride_duration_prediction_model","version":"abc123","prediction":{"ride_duration":12.5,"ride_id":"r-1"}}"#
        );
    }

    fn origin() -> Origin<'static> {
        Origin {
            sequence_number: "4963",
            partition_key: "",
            event_id: Some("shardId-000000000003:4963"),
            event_source_arn: Some("arn:aws:kinesis:eu-west-1:123:stream/ride_events"),
        }
    }

    #[test]
    fn dead_letter_is_keyed_by_input_record() {
        let d = dead_letter(
            origin(),
            RejectKind::NotJson,
            "record data is not JSON",
            "eA==",
            "v1",
            "2024-01-01T00:00:00Z",
        );
        assert_eq!(
            d.s3_key_suffix,
            "ride_events/shardId-000000000003/4963.json"
        );
        assert_eq!(
            origin().s3_key("dead/x"),
            "dead/x/ride_events/shardId-000000000003/4963.json"
        );
        assert_eq!(
            d.partition_key, "4963",
            "an empty partition key falls back to the sequence number"
        );
        let v: serde_json::Value = serde_json::from_slice(&d.json).unwrap();
        assert_eq!(v["kind"], "not_json");
        assert_eq!(v["data"], "eA==");
        assert_eq!(
            v["event_source_arn"],
            "arn:aws:kinesis:eu-west-1:123:stream/ride_events"
        );
        assert!(v.get("data_truncated").is_none());
        assert_eq!(d.kinesis_json, d.json);
    }

    #[test]
    fn oversized_dead_letter_is_cut_for_kinesis_only() {
        let data = "A".repeat(1_400_000);
        let d = dead_letter(origin(), RejectKind::NotJson, "r", &data, "v1", "t");
        assert!(d.json.len() > MAX_RECORD_BYTES);
        assert!(d.kinesis_json.len() + d.partition_key.len() <= MAX_RECORD_BYTES);
        let v: DeadLetterRecord = serde_json::from_slice(&d.kinesis_json).unwrap();
        assert!(v.data_truncated);
        assert!(data.starts_with(v.data.as_ref()));
    }
}
