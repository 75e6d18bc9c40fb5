//! Kinesis batches through real sinks: which records land where.

use std::collections::BTreeMap;

use lambda::handler::KinesisResponse;
use lambda::{Handler, Response};
use serde_json::{Value, json};

use crate::tiny_model::{self, expected};
use crate::{aws, fixture, handler, model_in_s3, sequence_numbers};

/// Indices and kinds of the bad records in `kinesis_mixed.json`.
fn bad() -> Vec<(usize, String)> {
    crate::expected_rejections()
}

/// Cold start of a function serving the tiny model from moto S3 and writing to these destinations.
async fn deployed(predictions_stream: &str, dead_letter: &str) -> Handler {
    let (bucket, run) = model_in_s3().await;
    handler(&[
        ("MODEL_BUCKET", &bucket),
        ("RUN_ID", &run),
        ("PREDICTIONS_STREAM_NAME", predictions_stream),
        ("DEAD_LETTER", dead_letter),
    ])
    .await
}

fn failures(r: Response) -> Vec<String> {
    match r {
        Response::Kinesis(KinesisResponse {
            batch_item_failures,
        }) => batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect(),
        other => panic!("expected a Kinesis response, got {other:?}"),
    }
}

/// The output stream must hold exactly the three good rides of the mixed fixture.
async fn assert_predictions(stream: &str) {
    let version = tiny_model::artifact().version;
    let mut got: Vec<(String, Value)> = aws::read_stream(stream)
        .await
        .into_iter()
        .map(|s| (s.partition_key, s.json))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let record = |id: Value, d: f64| json!({"model": "ride_duration_prediction_model", "version": version, "prediction": {"ride_duration": d, "ride_id": id}});
    assert_eq!(
        got,
        vec![
            (
                "256".to_string(),
                record(json!(256), expected(130, 205, 3.66))
            ),
            (
                "257".to_string(),
                record(json!(257), expected(130, 205, 10.0))
            ),
            (
                "trip-0001".to_string(),
                record(json!("trip-0001"), expected(1, 2, 0.0))
            ),
        ]
    );
}

/// Checks one dead letter against the input record it came from.
fn assert_dead_letter(letter: &Value, input: &Value, kind: &str) {
    assert_eq!(letter["kind"], kind, "{letter}");
    assert_eq!(
        letter["sequence_number"],
        input["kinesis"]["sequenceNumber"]
    );
    assert_eq!(letter["partition_key"], input["kinesis"]["partitionKey"]);
    assert_eq!(letter["data"], input["kinesis"]["data"]);
    assert_eq!(letter["event_source_arn"], input["eventSourceARN"]);
    assert_eq!(
        letter["model_version"],
        tiny_model::artifact().version.as_str()
    );
    let reason = letter["reason"].as_str().unwrap();
    assert!(
        reason.len() > 15 && !reason.contains('\n'),
        "reason should be a sentence: {reason}"
    );
    let at = letter["at"].as_str().unwrap();
    assert!(
        at.len() >= 20 && at.as_bytes()[10] == b'T' && at.ends_with('Z'),
        "not RFC 3339: {at}"
    );
}

#[tokio::test]
async fn each_record_lands_once_on_the_output_or_the_dead_letter_stream() {
    let (out, dlq) = (aws::stream("out", 2).await, aws::stream("dlq", 1).await);
    let dead = format!("kinesis:{dlq}");
    let h = deployed(&out, &dead).await;
    let event = fixture("kinesis_mixed.json");

    assert_eq!(
        failures(h.handle(event.clone()).await.unwrap()),
        Vec::<String>::new()
    );

    assert_predictions(&out).await;
    let records = event["Records"].as_array().unwrap();
    let letters: BTreeMap<String, (String, Value)> = aws::read_stream(&dlq)
        .await
        .into_iter()
        .map(|s| {
            (
                s.json["sequence_number"].as_str().unwrap().to_string(),
                (s.partition_key, s.json),
            )
        })
        .collect();
    assert_eq!(
        letters.len(),
        bad().len(),
        "one dead letter per bad record: {letters:?}"
    );
    for (i, kind) in bad() {
        let input = &records[i];
        let (key, letter) = &letters[input["kinesis"]["sequenceNumber"].as_str().unwrap()];
        assert_eq!(
            key,
            input["kinesis"]["partitionKey"].as_str().unwrap(),
            "the input's partition key is kept"
        );
        assert_dead_letter(letter, input, &kind);
    }
}

#[tokio::test]
async fn s3_dead_letters_are_one_object_per_record_and_redelivery_overwrites() {
    let out = aws::stream("out", 1).await;
    let dead_bucket = aws::bucket("dead").await;
    let dead = format!("s3://{dead_bucket}/dead/letters/");
    let h = deployed(&out, &dead).await;
    let event = fixture("kinesis_mixed.json");
    let seqs = sequence_numbers(&event);

    assert!(failures(h.handle(event.clone()).await.unwrap()).is_empty());
    assert_predictions(&out).await;
    let objects = aws::read_prefix(&dead_bucket, "dead/letters/").await;
    let mut expected_keys: Vec<String> = bad()
        .iter()
        .map(|(i, _)| {
            format!(
                "dead/letters/ride_events/shardId-000000000000/{}.json",
                seqs[*i]
            )
        })
        .collect();
    expected_keys.sort();
    assert_eq!(
        objects.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        expected_keys
    );
    for (i, kind) in bad() {
        let (_, letter) = objects
            .iter()
            .find(|(k, _)| k.ends_with(&format!("/{}.json", seqs[i])))
            .unwrap();
        assert_dead_letter(letter, &event["Records"][i], &kind);
    }

    // Lambda redelivers a batch after a partial failure: S3 dead letters are overwritten, not
    // duplicated, while predictions are at least once (the consumer de-duplicates on ride_id).
    assert!(failures(h.handle(event).await.unwrap()).is_empty());
    assert_eq!(
        aws::read_prefix(&dead_bucket, "dead/").await.len(),
        bad().len()
    );
    assert_eq!(aws::read_stream(&out).await.len(), 6);
}

#[tokio::test]
async fn unwritable_output_hands_the_good_records_back_to_lambda() {
    let dlq = aws::stream("dlq", 1).await;
    let dead = format!("kinesis:{dlq}");
    let missing = crate::moto::unique("no-such-stream");
    let h = deployed(&missing, &dead).await;
    let event = fixture("kinesis_mixed.json");
    let seqs = sequence_numbers(&event);

    let retried = failures(h.handle(event).await.unwrap());

    assert_eq!(
        retried,
        vec![seqs[0].clone(), seqs[1].clone(), seqs[10].clone()]
    );
    assert_eq!(
        aws::read_stream(&dlq).await.len(),
        bad().len(),
        "bad records are still dead-lettered"
    );
}

#[tokio::test]
async fn unwritable_dead_letters_are_handed_back_to_lambda() {
    let out = aws::stream("out", 1).await;
    let dead = format!("s3://{}/x", crate::moto::unique("no-such-bucket"));
    let h = deployed(&out, &dead).await;
    let event = fixture("kinesis_mixed.json");
    let seqs = sequence_numbers(&event);

    let retried = failures(h.handle(event).await.unwrap());

    assert_eq!(
        retried,
        bad()
            .iter()
            .map(|(i, _)| seqs[*i].clone())
            .collect::<Vec<_>>()
    );
    assert_predictions(&out).await;
}

#[tokio::test]
async fn a_large_batch_is_split_into_put_records_calls_and_fully_written() {
    let (out, dlq) = (aws::stream("out", 4).await, aws::stream("dlq", 1).await);
    let dead = format!("kinesis:{dlq}");
    let h = deployed(&out, &dead).await;
    let n = 1234;
    let event = crate::synthetic::kinesis_event(n);

    assert!(failures(h.handle(event).await.unwrap()).is_empty());

    let got = aws::read_stream(&out).await;
    assert_eq!(got.len(), n);
    let mut ids: Vec<i64> = got
        .iter()
        .map(|s| s.json["prediction"]["ride_id"].as_i64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (0..n as i64).collect::<Vec<_>>());
    assert!(aws::read_stream(&dlq).await.is_empty());
}
