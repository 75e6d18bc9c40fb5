//! Reading edge cases: schemas, types, nulls, broken and foreign files.

use std::path::{Path, PathBuf};

use model::ModelError;
use model::data::{CleanOptions, read_trips};
use polars::prelude::*;

fn write(path: &Path, mut df: DataFrame) {
    ParquetWriter::new(std::fs::File::create(path).unwrap())
        .finish(&mut df)
        .unwrap();
}

const MIN: i64 = 60_000_000;

/// A frame with the needed columns under a prefix, times in microseconds from 2021-01-01.
fn trips(prefix: &str, minutes: &[i64], pu: Column, dol: Column, distance: Column) -> DataFrame {
    let t0 = 1_609_459_200_000_000i64;
    let pickup: Vec<i64> = (0..minutes.len() as i64)
        .map(|i| t0 + i * 3_600_000_000)
        .collect();
    let dropoff: Vec<i64> = pickup
        .iter()
        .zip(minutes)
        .map(|(p, m)| p + m * MIN)
        .collect();
    let ts = |name: String, v: Vec<i64>| {
        Column::from(
            Series::new(name.into(), v)
                .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
                .unwrap(),
        )
    };
    DataFrame::new(
        minutes.len(),
        vec![
            ts(format!("{prefix}_pickup_datetime"), pickup),
            ts(format!("{prefix}_dropoff_datetime"), dropoff),
            pu,
            dol,
            distance,
        ],
    )
    .unwrap()
}

fn ints(name: &str, v: &[i64]) -> Column {
    Column::new(name.into(), v)
}

#[test]
fn yellow_schema_is_detected_and_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("yellow.parquet");
    let df = trips(
        "tpep",
        &[10, 0, 75, 30],
        ints("PULocationID", &[1, 2, 3, 4]),
        ints("DOLocationID", &[5, 6, 7, 8]),
        Column::new("trip_distance".into(), [1.0, 2.0, 3.0, 4.0]),
    );
    write(&p, df);
    let (t, r) = read_trips(&[p], &CleanOptions::default()).unwrap();
    assert_eq!(
        (
            r.rows_read,
            r.rows_kept,
            r.dropped_too_short,
            r.dropped_too_long
        ),
        (4, 2, 1, 1)
    );
    assert_eq!(t.pu, vec![1, 4]);
    assert_eq!(t.duration, vec![10.0, 30.0]);
    assert_eq!(t.pickup_hour, vec![0, 3]);
}

#[test]
fn float_and_int32_zone_ids_and_nulls_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("green.parquet");
    let pu = Column::new("PULocationID".into(), [Some(130.0), None, Some(7.0)]);
    let dol = Column::new("DOLocationID".into(), [205i32, 1, 300]);
    let df = trips(
        "lpep",
        &[12, 12, 12],
        pu,
        dol,
        Column::new("trip_distance".into(), [Some(3.66), Some(1.0), Some(2.0)]),
    );
    write(&p, df);
    let (t, r) = read_trips(&[p], &CleanOptions::default()).unwrap();
    assert_eq!((t.pu[0], t.dol[0]), (130, 205));
    assert_eq!((r.rows_kept, r.dropped_null, r.dropped_bad_zone), (1, 1, 1));
}

#[test]
fn duration_bounds_are_inclusive_and_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("b.parquet");
    let df = trips(
        "lpep",
        &[1, 60, 61, 5],
        ints("PULocationID", &[1; 4]),
        ints("DOLocationID", &[1; 4]),
        Column::new("trip_distance".into(), [1.0; 4]),
    );
    write(&p, df);
    let (_, r) = read_trips(std::slice::from_ref(&p), &CleanOptions::default()).unwrap();
    assert_eq!(r.rows_kept, 3);
    let (_, r) = read_trips(
        &[p],
        &CleanOptions {
            min_minutes: 2.0,
            max_minutes: 61.0,
        },
    )
    .unwrap();
    assert_eq!((r.rows_kept, r.dropped_too_short), (3, 1));
}

#[test]
fn several_files_and_directories_are_read_in_order() {
    let dir = tempfile::tempdir().unwrap();
    for (name, pu) in [("b.parquet", 2), ("a.parquet", 1)] {
        let df = trips(
            "lpep",
            &[10],
            ints("PULocationID", &[pu]),
            ints("DOLocationID", &[1]),
            Column::new("trip_distance".into(), [1.0]),
        );
        write(&dir.path().join(name), df);
    }
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let (t, r) = read_trips(&[dir.path().to_path_buf()], &CleanOptions::default()).unwrap();
    assert_eq!(t.pu, vec![1, 2]);
    assert_eq!(r.files.len(), 2);
    assert!(r.files[0].path.ends_with("a.parquet"));
    assert_eq!(r.files[0].sha256.len(), 64);
}

#[test]
fn an_empty_file_reads_as_no_rows_and_training_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.parquet");
    let df = trips(
        "lpep",
        &[],
        ints("PULocationID", &[]),
        ints("DOLocationID", &[]),
        Column::new("trip_distance".into(), Vec::<f64>::new()),
    );
    write(&p, df);
    let (t, r) = read_trips(std::slice::from_ref(&p), &CleanOptions::default()).unwrap();
    assert_eq!((t.len(), r.rows_read), (0, 0));
    let err = model::train::fit(&t, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("no training rows"), "{err}");
}

#[test]
fn a_file_that_is_not_parquet_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("trips.parquet");
    std::fs::write(&p, "VendorID,lpep_pickup_datetime\n1,2021-01-01\n").unwrap();
    let err = read_trips(std::slice::from_ref(&p), &CleanOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::Data { .. }));
    assert!(
        msg.contains("trips.parquet") && msg.contains("not a Parquet file"),
        "{msg}"
    );
    let zero = dir.path().join("zero.parquet");
    std::fs::write(&zero, "").unwrap();
    assert!(
        read_trips(&[zero], &CleanOptions::default())
            .unwrap_err()
            .to_string()
            .contains("not a Parquet file")
    );
}

#[test]
fn missing_columns_are_listed_with_the_columns_found() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fhv.parquet");
    let df = trips(
        "lpep",
        &[10],
        ints("PUlocationID", &[1]),
        ints("DOLocationID", &[1]),
        Column::new("miles".into(), [1.0]),
    );
    write(&p, df);
    let msg = read_trips(&[p], &CleanOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("fhv.parquet"), "{msg}");
    assert!(msg.contains("lacks PULocationID, trip_distance"), "{msg}");
    assert!(
        msg.contains("PUlocationID") && msg.contains("miles"),
        "found columns listed: {msg}"
    );

    let p = dir.path().join("nodates.parquet");
    write(
        &p,
        DataFrame::new(1, vec![ints("PULocationID", &[1])]).unwrap(),
    );
    let msg = read_trips(&[p], &CleanOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("lpep_ or tpep_") && msg.contains("[PULocationID]"),
        "{msg}"
    );
}

#[test]
fn a_missing_file_says_how_to_get_data() {
    let msg = read_trips(
        &[PathBuf::from("/nonexistent/green.parquet")],
        &CleanOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("/nonexistent/green.parquet") && msg.contains("data synth"),
        "{msg}"
    );
}

#[test]
fn nanosecond_timestamps_and_string_distances_are_cast() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ns.parquet");
    let t0 = 1_609_459_200_000_000_000i64;
    let ts = |name: &str, v: Vec<i64>| {
        Column::from(
            Series::new(name.into(), v)
                .cast(&DataType::Datetime(TimeUnit::Nanoseconds, None))
                .unwrap(),
        )
    };
    let df = DataFrame::new(
        2,
        vec![
            ts("lpep_pickup_datetime", vec![t0, t0]),
            ts(
                "lpep_dropoff_datetime",
                vec![t0 + 90 * 1_000_000_000, t0 + 600 * 1_000_000_000],
            ),
            ints("PULocationID", &[1, 2]),
            ints("DOLocationID", &[3, 4]),
            Column::new("trip_distance".into(), ["1.5", "n/a"]),
        ],
    )
    .unwrap();
    write(&p, df);
    let (t, r) = read_trips(&[p], &CleanOptions::default()).unwrap();
    assert_eq!(t.duration, vec![1.5]);
    assert_eq!(t.trip_distance, vec![1.5]);
    assert_eq!(
        r.dropped_null, 1,
        "an unparseable distance counts as missing"
    );
}
