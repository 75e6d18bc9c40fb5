//! Synthetic data: the real files' schema, determinism, and learnable structure.

use model::data::{CleanOptions, read_trips, scan};
use model::synth::{GREEN_COLUMNS, SynthSpec, generate, write};
use model::train::{TrainJob, TrainParams};
use polars::prelude::{DataType, TimeUnit};

#[test]
fn synthetic_schema_matches_the_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.parquet");
    write(
        &SynthSpec {
            month: "2021-01".into(),
            rows: 500,
            seed: 7,
        },
        &p,
    )
    .unwrap();
    let ours = scan(&p).unwrap().collect_schema().unwrap();
    let real = scan(&super::tlc_dir().join("green_tripdata_2021-01.parquet"))
        .unwrap()
        .collect_schema()
        .unwrap();
    let names: Vec<String> = ours.iter_names().map(|n| n.to_string()).collect();
    assert_eq!(names, GREEN_COLUMNS.map(String::from).to_vec());
    // Both files store TIMESTAMP(MICROS) in Parquet; polars reports the pandas-written real file
    // in ns and ours in us, so compare units-blind.
    let norm = |d: &DataType| match d {
        DataType::Datetime(_, tz) => DataType::Datetime(TimeUnit::Microseconds, tz.clone()),
        other => other.clone(),
    };
    for (name, dtype) in real.iter() {
        assert_eq!(ours.get(name).map(norm), Some(norm(dtype)), "column {name}");
    }
    assert_eq!(ours.len(), real.len());
}

#[test]
fn the_same_seed_gives_the_same_data_and_another_seed_does_not() {
    let spec = |seed| SynthSpec {
        month: "2022-02".into(),
        rows: 2_000,
        seed,
    };
    let (a, b, c) = (
        generate(&spec(1)).unwrap(),
        generate(&spec(1)).unwrap(),
        generate(&spec(2)).unwrap(),
    );
    assert!(a.equals_missing(&b));
    assert!(!a.equals_missing(&c));
}

#[test]
fn synthetic_months_have_outliers_nulls_and_a_learnable_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (t, v) = (dir.path().join("t.parquet"), dir.path().join("v.parquet"));
    write(
        &SynthSpec {
            month: "2021-01".into(),
            rows: 40_000,
            seed: 1,
        },
        &t,
    )
    .unwrap();
    write(
        &SynthSpec {
            month: "2021-02".into(),
            rows: 20_000,
            seed: 2,
        },
        &v,
    )
    .unwrap();
    let (_, report) = read_trips(std::slice::from_ref(&t), &CleanOptions::default()).unwrap();
    let dropped = report.rows_read - report.rows_kept;
    assert!(
        report.dropped_too_short > 0 && report.dropped_too_long > 0,
        "{report:?}"
    );
    assert!(
        (800..=4_800).contains(&dropped),
        "a few per cent are dropped, as in the real files: {dropped}"
    );
    let nulls = scan(&t)
        .unwrap()
        .collect()
        .unwrap()
        .column("passenger_count")
        .unwrap()
        .null_count();
    assert!(
        (800..=2_400).contains(&nulls),
        "a few per cent have nulls: {nulls}"
    );
    let out = TrainJob {
        train: vec![t],
        val: vec![v],
        params: TrainParams::default(),
        git_commit: None,
    }
    .run()
    .unwrap();
    let val = out.artifact.metadata.val_metrics.unwrap();
    assert!(
        val.r2 > 0.6,
        "duration follows distance and zones: R² {}",
        val.r2
    );
    assert!(
        val.rmse < 8.0,
        "noise is bounded, as in the real files (2021: 7.48): RMSE {}",
        val.rmse
    );
}

#[test]
fn a_bad_month_is_refused() {
    let err = generate(&SynthSpec {
        month: "2021-13".into(),
        rows: 1,
        seed: 1,
    })
    .unwrap_err();
    assert!(err.to_string().contains("YYYY-MM"), "{err}");
}
