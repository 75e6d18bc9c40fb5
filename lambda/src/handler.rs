//! The invocation handler: Kinesis batches and direct invocations.

use std::borrow::Cow;
use std::time::Instant;

use model::Model;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;
use crate::output::{self, DeadLetterOut, Entry, Origin, Prediction, PredictionRecord, Sinks};
use crate::record::{self, Rejection};

/// The parts of a Kinesis event the handler reads, borrowed from the payload. The record data is
/// kept as base64 text (not decoded by the event type, as `aws_lambda_events` does) so that one
/// record with bad base64 is dead-lettered instead of failing the whole batch.
#[derive(Debug, Deserialize)]
pub struct KinesisEvent<'a> {
    /// The records, oldest first (one shard per batch).
    #[serde(rename = "Records", borrow)]
    pub records: Vec<KinesisEventRecord<'a>>,
}

/// One record of a Kinesis event.
#[derive(Debug, Deserialize)]
pub struct KinesisEventRecord<'a> {
    /// `shardId-...:<sequence number>`.
    #[serde(rename = "eventID", default, borrow)]
    pub event_id: Option<Cow<'a, str>>,
    /// The input stream's ARN.
    #[serde(rename = "eventSourceARN", default, borrow)]
    pub event_source_arn: Option<Cow<'a, str>>,
    /// The Kinesis record.
    #[serde(borrow)]
    pub kinesis: KinesisData<'a>,
}

/// The Kinesis part of an event record.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KinesisData<'a> {
    /// Base64 data as Lambda delivers it.
    #[serde(borrow)]
    pub data: Cow<'a, str>,
    /// The producer's partition key.
    #[serde(default, borrow)]
    pub partition_key: Cow<'a, str>,
    /// The record's sequence number: the `itemIdentifier` of a batch item failure.
    #[serde(borrow)]
    pub sequence_number: Cow<'a, str>,
}

impl KinesisEventRecord<'_> {
    fn origin(&self) -> Origin<'_> {
        Origin {
            sequence_number: &self.kinesis.sequence_number,
            partition_key: &self.kinesis.partition_key,
            event_id: self.event_id.as_deref(),
            event_source_arn: self.event_source_arn.as_deref(),
        }
    }
}

/// The response to a Kinesis batch with ReportBatchItemFailures: the records Lambda must retry.
/// Same wire shape as `aws_lambda_events::streams::KinesisEventResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KinesisResponse {
    /// One entry per record that is neither written nor dead-lettered.
    pub batch_item_failures: Vec<BatchItemFailure>,
}

/// A record Lambda must retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemFailure {
    /// The record's sequence number.
    pub item_identifier: String,
}

/// The response to a direct invocation or a test-run batch: predictions and rejected rides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DirectResponse {
    /// One prediction per valid ride, in input order.
    pub predictions: Vec<PredictionRecord<'static>>,
    /// One entry per ride that could not be predicted.
    pub errors: Vec<RideError>,
}

/// A ride that could not be predicted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RideError {
    /// Its position in the input (0-based).
    pub index: usize,
    /// `bad_base64`, `not_json`, `invalid_field` or `out_of_range`.
    pub kind: String,
    /// A sentence naming the problem.
    pub reason: String,
    /// The Kinesis sequence number, for test-run batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<String>,
}

/// What the function returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Response {
    /// For a Kinesis batch: the records to retry.
    Kinesis(KinesisResponse),
    /// For a direct invocation or a test run: the predictions.
    Direct(DirectResponse),
}

/// Counts of one batch. Every input record is exactly one of predicted, dead-lettered or retried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Records in the event.
    pub records_in: usize,
    /// Predictions written (or returned, in a test run).
    pub predicted: usize,
    /// Records written to the dead-letter destination (or rejected, in a test run).
    pub dead_lettered: usize,
    /// Records reported in `batchItemFailures` for Lambda to retry.
    pub retried: usize,
}

/// The outcome of decoding and predicting one input record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A prediction.
    Predicted(Prediction),
    /// A record that can never succeed.
    Rejected(Rejection),
}

/// Decodes, validates and predicts every record of a batch. Pure and allocation-free per ride
/// except for string ride ids: one decode buffer serves the whole batch.
pub fn predict_records(model: &Model, records: &[KinesisEventRecord<'_>]) -> Vec<Outcome> {
    let mut buf = Vec::with_capacity(256);
    records
        .iter()
        .map(
            |r| match record::decode_kinesis_data(&r.kinesis.data, &mut buf) {
                Ok(ev) => Outcome::Predicted(Prediction {
                    ride_duration: model.predict(&ev.ride),
                    ride_id: ev.ride_id,
                }),
                Err(rejection) => Outcome::Rejected(rejection),
            },
        )
        .collect()
}

/// The function: a loaded model and, unless in test-run mode, where to write.
#[derive(Debug)]
pub struct Handler {
    model: Model,
    sinks: Option<Sinks>,
}

impl Handler {
    /// A handler that writes to `sinks`, or only returns predictions when `sinks` is `None`
    /// (`TEST_RUN=true`).
    pub fn new(model: Model, sinks: Option<Sinks>) -> Self {
        Self { model, sinks }
    }

    /// The served model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Handles one invocation. A payload with a top-level `Records` array is a Kinesis batch;
    /// anything else is a direct invocation with one ride or a list of rides, which never writes.
    pub async fn handle(&self, payload: Value) -> Result<Response, Error> {
        if payload.get("Records").is_some_and(Value::is_array) {
            let event = KinesisEvent::deserialize(&payload)
                .map_err(|e| Error::InvalidEvent(e.to_string()))?;
            return Ok(self.handle_kinesis(&event).await);
        }
        Ok(Response::Direct(self.handle_direct(&payload)))
    }

    /// Predicts rides given directly (one object or an array). Never writes anything.
    pub fn handle_direct(&self, payload: &Value) -> DirectResponse {
        let started = Instant::now();
        let rides: Vec<&Value> = match payload {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        let mut response = DirectResponse {
            predictions: Vec::with_capacity(rides.len()),
            errors: Vec::new(),
        };
        for (index, ride) in rides.iter().enumerate() {
            let parsed = match ride {
                Value::Object(_) => record::parse_ride_value(ride),
                Value::Array(_) => Err(Rejection::not_a_ride("a nested list")),
                Value::String(_) => Err(Rejection::not_a_ride("a string")),
                Value::Number(_) => Err(Rejection::not_a_ride("a number")),
                Value::Bool(_) => Err(Rejection::not_a_ride("a boolean")),
                Value::Null => Err(Rejection::not_a_ride("null")),
            };
            match parsed {
                Ok(ev) => response.predictions.push(
                    PredictionRecord::new(
                        self.model.version(),
                        Prediction {
                            ride_duration: self.model.predict(&ev.ride),
                            ride_id: ev.ride_id,
                        },
                    )
                    .into_owned(),
                ),
                Err(r) => response.errors.push(RideError {
                    index,
                    kind: r.kind.as_str().into(),
                    reason: r.reason,
                    sequence_number: None,
                }),
            }
        }
        tracing::info!(
            mode = "direct",
            records_in = rides.len(),
            predicted = response.predictions.len(),
            rejected = response.errors.len(),
            elapsed_ms = elapsed_ms(started),
            "direct invocation"
        );
        response
    }

    /// Handles a Kinesis batch: predictions to the output stream, records that can never succeed
    /// to the dead-letter destination, and everything not durably done back to Lambda.
    pub async fn handle_kinesis(&self, event: &KinesisEvent<'_>) -> Response {
        let started = Instant::now();
        let outcomes = predict_records(&self.model, &event.records);
        let Some(sinks) = &self.sinks else {
            let response = self.test_run_response(event, outcomes);
            tracing::info!(
                mode = "test_run",
                records_in = event.records.len(),
                predicted = response.predictions.len(),
                dead_lettered = 0,
                rejected = response.errors.len(),
                retried = 0,
                elapsed_ms = elapsed_ms(started),
                "kinesis batch (test run, nothing written)"
            );
            return Response::Direct(response);
        };
        let (response, counts) = self.deliver(sinks, event, outcomes).await;
        debug_assert_eq!(
            counts.records_in,
            counts.predicted + counts.dead_lettered + counts.retried
        );
        tracing::info!(
            mode = "kinesis",
            records_in = counts.records_in,
            predicted = counts.predicted,
            dead_lettered = counts.dead_lettered,
            retried = counts.retried,
            elapsed_ms = elapsed_ms(started),
            "kinesis batch"
        );
        Response::Kinesis(response)
    }

    fn test_run_response(
        &self,
        event: &KinesisEvent<'_>,
        outcomes: Vec<Outcome>,
    ) -> DirectResponse {
        let mut response = DirectResponse::default();
        for (index, (outcome, rec)) in outcomes.into_iter().zip(&event.records).enumerate() {
            match outcome {
                Outcome::Predicted(p) => response
                    .predictions
                    .push(PredictionRecord::new(self.model.version(), p).into_owned()),
                Outcome::Rejected(r) => response.errors.push(RideError {
                    index,
                    kind: r.kind.as_str().into(),
                    reason: r.reason,
                    sequence_number: Some(rec.kinesis.sequence_number.to_string()),
                }),
            }
        }
        response
    }

    /// Writes predictions and dead letters concurrently, then reports every record that is
    /// neither in the output stream nor in the dead-letter destination.
    ///
    /// Lambda resumes a shard from the lowest reported sequence number, so the records after it
    /// that did succeed are delivered again: output is at least once (consumers de-duplicate on
    /// `ride_id`; S3 dead letters are keyed by sequence number and simply overwritten). Reporting
    /// exactly the records that are not done, rather than everything after the first failure,
    /// keeps the response honest per record and is equivalent for Lambda.
    async fn deliver(
        &self,
        sinks: &Sinks,
        event: &KinesisEvent<'_>,
        outcomes: Vec<Outcome>,
    ) -> (KinesisResponse, BatchCounts) {
        let version = self.model.version();
        let at = now_rfc3339();
        let mut entries: Vec<Entry> = Vec::with_capacity(outcomes.len());
        let mut entry_of: Vec<usize> = Vec::with_capacity(outcomes.len());
        let mut letters: Vec<DeadLetterOut> = Vec::new();
        let mut letter_of: Vec<usize> = Vec::new();
        for (i, (outcome, rec)) in outcomes.into_iter().zip(&event.records).enumerate() {
            match outcome {
                Outcome::Predicted(p) => {
                    entries.push(output::prediction_entry(version, p));
                    entry_of.push(i);
                }
                Outcome::Rejected(r) => {
                    tracing::warn!(
                        sequence_number = %rec.kinesis.sequence_number,
                        kind = r.kind.as_str(),
                        reason = %r.reason,
                        "record can never succeed; dead-lettering it"
                    );
                    letters.push(output::dead_letter(
                        rec.origin(),
                        r.kind,
                        &r.reason,
                        &rec.kinesis.data,
                        version,
                        &at,
                    ));
                    letter_of.push(i);
                }
            }
        }
        let (written, dead) = tokio::join!(
            sinks.write_predictions(&entries),
            sinks.write_dead_letters(letters)
        );
        let mut done = vec![false; event.records.len()];
        let mut counts = BatchCounts {
            records_in: event.records.len(),
            ..BatchCounts::default()
        };
        for (&i, &ok) in entry_of.iter().zip(&written.written) {
            done[i] = ok;
            counts.predicted += usize::from(ok);
        }
        for (&i, &ok) in letter_of.iter().zip(&dead.written) {
            done[i] = ok;
            counts.dead_lettered += usize::from(ok);
        }
        let batch_item_failures: Vec<BatchItemFailure> = event
            .records
            .iter()
            .zip(&done)
            .filter(|(_, done)| !**done)
            .map(|(r, _)| BatchItemFailure {
                item_identifier: r.kinesis.sequence_number.to_string(),
            })
            .collect();
        counts.retried = batch_item_failures.len();
        if written.resent + dead.resent > 0 {
            tracing::info!(
                resent = written.resent + dead.resent,
                "PutRecords entries retried"
            );
        }
        (
            KinesisResponse {
                batch_item_failures,
            },
            counts,
        )
    }
}

fn elapsed_ms(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

fn now_rfc3339() -> String {
    aws_smithy_types::DateTime::from(std::time::SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::record::RideId;
    use crate::tiny_model::{expected, model};

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../tests/fixtures/lambda/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn test_run() -> Handler {
        Handler::new(model(), None)
    }

    async fn direct(h: &Handler, payload: Value) -> DirectResponse {
        match h.handle(payload).await.unwrap() {
            Response::Direct(d) => d,
            other => panic!("expected predictions, got {other:?}"),
        }
    }

    fn ids_and_durations(d: &DirectResponse) -> Vec<(RideId, f64)> {
        d.predictions
            .iter()
            .map(|p| (p.prediction.ride_id.clone(), p.prediction.ride_duration))
            .collect()
    }

    fn kinds(d: &DirectResponse) -> Vec<(usize, &str)> {
        d.errors
            .iter()
            .map(|e| (e.index, e.kind.as_str()))
            .collect()
    }

    #[test]
    fn fixtures_are_genuine_kinesis_events() {
        // The official event type reads the course's event, which proves the fixture's shape...
        let official: aws_lambda_events::kinesis::KinesisEvent =
            serde_json::from_value(fixture("event.json")).unwrap();
        assert_eq!(official.records.len(), 1);
        // ...but it decodes base64 eagerly, so one bad record would fail the whole batch: the
        // reason the handler reads the data as text and decodes each record itself.
        assert!(
            serde_json::from_value::<aws_lambda_events::kinesis::KinesisEvent>(fixture(
                "kinesis_mixed.json"
            ))
            .is_err()
        );
        let mixed = fixture("kinesis_mixed.json");
        let ours = KinesisEvent::deserialize(&mixed).unwrap();
        assert_eq!(ours.records.len(), 13);
    }

    #[tokio::test]
    async fn course_event_is_predicted_in_a_test_run() {
        let d = direct(&test_run(), fixture("event.json")).await;
        assert_eq!(
            ids_and_durations(&d),
            vec![(RideId::Int(256), expected(130, 205, 3.66))]
        );
        assert!(d.errors.is_empty());
        let p = serde_json::to_value(&d.predictions[0]).unwrap();
        assert_eq!(
            p,
            json!({"model": "ride_duration_prediction_model", "version": model().version(),
                   "prediction": {"ride_duration": expected(130, 205, 3.66), "ride_id": 256}})
        );
    }

    #[tokio::test]
    async fn every_bad_record_kind_is_rejected_and_good_ones_predicted() {
        let d = direct(&test_run(), fixture("kinesis_mixed.json")).await;
        assert_eq!(
            ids_and_durations(&d),
            vec![
                (RideId::Int(256), expected(130, 205, 3.66)),
                (RideId::Str("trip-0001".into()), expected(1, 2, 0.0)),
                (RideId::Int(257), expected(130, 205, 10.0)),
            ]
        );
        let expected: Vec<(usize, String)> =
            serde_json::from_value(fixture("kinesis_mixed.expected.json")["rejected"].clone())
                .unwrap();
        let got: Vec<(usize, String)> = kinds(&d)
            .into_iter()
            .map(|(i, k)| (i, k.to_string()))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(
            d.errors[0].sequence_number.as_deref(),
            Some("49630081666084879290581185630324770398608704880802529284")
        );
        assert!(
            d.errors[2].reason.contains("ride_id"),
            "{}",
            d.errors[2].reason
        );
        assert!(
            d.errors[7].reason.contains("1000"),
            "{}",
            d.errors[7].reason
        );
    }

    #[tokio::test]
    async fn direct_invocation_takes_one_ride_or_a_list() {
        let h = test_run();
        let one = direct(&h, fixture("direct_ride.json")).await;
        assert_eq!(
            ids_and_durations(&one),
            vec![(RideId::Int(256), expected(130, 205, 3.66))]
        );
        let many = direct(&h, fixture("direct_rides.json")).await;
        assert_eq!(
            ids_and_durations(&many),
            vec![
                (RideId::Int(256), expected(130, 205, 3.66)),
                (RideId::Str("abc".into()), expected(1, 2, 2.0))
            ]
        );
        assert_eq!(
            kinds(&many),
            vec![
                (1, "out_of_range"),
                (3, "invalid_field"),
                (4, "invalid_field")
            ]
        );
        assert!(
            many.errors[1].reason.contains("a string"),
            "{}",
            many.errors[1].reason
        );
        let empty = direct(&h, json!([])).await;
        assert_eq!(empty, DirectResponse::default());
        let scalar = direct(&h, json!(42)).await;
        assert_eq!(kinds(&scalar), vec![(0, "invalid_field")]);
    }

    #[tokio::test]
    async fn a_broken_kinesis_envelope_fails_the_invocation() {
        let err = test_run()
            .handle(json!({"Records": [{"kinesis": {"data": "eA=="}}]}))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidEvent(_)), "{err}");
        assert!(err.to_string().contains("sequenceNumber"), "{err}");
        // A `Records` field that is not an array is not a Kinesis event: it is read as a ride.
        let d = direct(&test_run(), json!({"Records": 1})).await;
        assert_eq!(kinds(&d), vec![(0, "invalid_field")]);
    }

    #[test]
    fn responses_have_lambdas_wire_shape() {
        let r = Response::Kinesis(KinesisResponse {
            batch_item_failures: vec![BatchItemFailure {
                item_identifier: "49".into(),
            }],
        });
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"batchItemFailures": [{"itemIdentifier": "49"}]})
        );
        let official: aws_lambda_events::kinesis::KinesisEvent =
            serde_json::from_value(fixture("event.json")).unwrap();
        assert_eq!(
            official.records[0].kinesis.sequence_number,
            "49630081666084879290581185630324770398608704880802529282"
        );
    }

    #[test]
    fn predicting_a_batch_keeps_record_order() {
        let payload = fixture("kinesis_mixed.json");
        let event = KinesisEvent::deserialize(&payload).unwrap();
        let outcomes = predict_records(&model(), &event.records);
        assert_eq!(outcomes.len(), event.records.len());
        let predicted: Vec<usize> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, Outcome::Predicted(_)))
            .map(|(i, _)| i)
            .collect();
        let expected: Vec<usize> =
            serde_json::from_value(fixture("kinesis_mixed.expected.json")["predicted"].clone())
                .unwrap();
        assert_eq!(predicted, expected);
    }
}
