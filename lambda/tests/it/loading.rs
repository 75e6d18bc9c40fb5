//! Cold start: model loading from S3 or a file, and its failures; test-run mode.

use lambda::{Error, Response};

use crate::tiny_model::{self, expected};
use crate::{aws, config, fixture, model_in_s3};

async fn init(vars: &[(&str, &str)]) -> Result<lambda::Handler, Error> {
    lambda::init(&config(vars)?, &aws::sdk().await).await
}

/// Cold start in test-run mode, with the model of training run `run` in `bucket`.
async fn test_run(bucket: &str, run: &str) -> Result<lambda::Handler, Error> {
    init(&[
        ("MODEL_BUCKET", bucket),
        ("RUN_ID", run),
        ("TEST_RUN", "true"),
    ])
    .await
}

#[tokio::test]
async fn model_loads_from_s3_by_bucket_and_run_id_or_by_location() {
    let (bucket, run) = model_in_s3().await;
    let h = test_run(&bucket, &run).await.unwrap();
    assert_eq!(h.model().version(), tiny_model::artifact().version);
    let location = format!("s3://{bucket}/models/{run}/");
    let h = init(&[("MODEL_LOCATION", &location), ("TEST_RUN", "true")])
        .await
        .unwrap();
    assert_eq!(h.model().artifact(), &tiny_model::artifact());
}

#[tokio::test]
async fn model_loads_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.json");
    std::fs::write(&path, tiny_model::bytes()).unwrap();
    let dir_location = format!("{}/", dir.path().display());
    let h = init(&[("MODEL_LOCATION", &dir_location), ("TEST_RUN", "true")])
        .await
        .unwrap();
    assert_eq!(h.model().version(), tiny_model::artifact().version);
}

#[tokio::test]
async fn missing_objects_are_clear_init_errors() {
    let (bucket, _) = model_in_s3().await;
    let err = test_run(&bucket, "no-such-run").await.unwrap_err();
    assert!(matches!(err, Error::ModelNotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("s3://{bucket}/models/no-such-run/model.json"))
            && msg.contains("RUN_ID"),
        "{msg}"
    );

    let location = format!(
        "s3://{}/m/model.json",
        crate::moto::unique("no-such-bucket")
    );
    let err = init(&[("MODEL_LOCATION", &location), ("TEST_RUN", "true")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ModelNotFound { .. }), "{err}");

    let err = init(&[
        ("MODEL_LOCATION", "/nonexistent/model.json"),
        ("TEST_RUN", "true"),
    ])
    .await
    .unwrap_err();
    assert!(matches!(err, Error::ModelNotFound { .. }), "{err}");
    assert_eq!(err.error_type(), "ModelNotFound");
}

#[tokio::test]
async fn corrupt_or_foreign_artifacts_are_refused() {
    let bucket = aws::bucket("models").await;
    let mut corrupt = tiny_model::bytes();
    let last = corrupt.len() - 5;
    corrupt[last] ^= 0x01;
    aws::put_object(&bucket, "models/corrupt/model.json", corrupt).await;
    aws::put_object(
        &bucket,
        "models/parquet/model.json",
        b"PAR1\x00\x00".to_vec(),
    )
    .await;

    let err = test_run(&bucket, "corrupt").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidModel {
                source: model::ModelError::Checksum { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("corrupted"), "{err}");
    let err = test_run(&bucket, "parquet").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidModel {
                source: model::ModelError::NotAnArtifact(_),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.error_type(), "InvalidModel");
}

#[tokio::test]
async fn test_run_returns_predictions_and_writes_nothing() {
    let (bucket, run) = model_in_s3().await;
    let out = aws::stream("out", 1).await;
    // Destinations are configured, but TEST_RUN wins: nothing may be written to them.
    let h = init(&[
        ("MODEL_BUCKET", &bucket),
        ("RUN_ID", &run),
        ("PREDICTIONS_STREAM_NAME", &out),
        ("DEAD_LETTER", &format!("kinesis:{out}")),
        ("TEST_RUN", "true"),
    ])
    .await
    .unwrap();

    let Response::Direct(d) = h.handle(fixture("kinesis_mixed.json")).await.unwrap() else {
        panic!("expected predictions")
    };

    let durations: Vec<f64> = d
        .predictions
        .iter()
        .map(|p| p.prediction.ride_duration)
        .collect();
    assert_eq!(
        durations,
        vec![
            expected(130, 205, 3.66),
            expected(1, 2, 0.0),
            expected(130, 205, 10.0)
        ]
    );
    assert_eq!(d.errors.len(), 10);
    assert!(aws::read_stream(&out).await.is_empty());
}

#[tokio::test]
async fn direct_invocations_never_write() {
    let (bucket, run) = model_in_s3().await;
    let out = aws::stream("out", 1).await;
    let h = init(&[
        ("MODEL_BUCKET", &bucket),
        ("RUN_ID", &run),
        ("PREDICTIONS_STREAM_NAME", &out),
        ("DEAD_LETTER", &format!("kinesis:{out}")),
    ])
    .await
    .unwrap();
    let Response::Direct(d) = h.handle(fixture("direct_rides.json")).await.unwrap() else {
        panic!("expected predictions")
    };
    assert_eq!(d.predictions.len(), 2);
    assert_eq!(d.errors.len(), 3);
    assert!(aws::read_stream(&out).await.is_empty());
}
