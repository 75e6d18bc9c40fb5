//! The real-data check: TLC green taxi January 2022 as the reference, February 2022 as the
//! current data, per day. The files are `$TAXI_TLC_DIR`, by default `<repo>/../shared/data/tlc`
//! (CI clones the repository beside `shared/`).

use std::path::PathBuf;

use polars::prelude::*;
use xtask::monitor::stats::StatTest;
use xtask::monitor::{Window, report};

use crate::monitor_data::{args, write_model};

fn tlc_dir() -> PathBuf {
    let dir = std::env::var_os("TAXI_TLC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/tlc"));
    assert!(
        dir.join("green_tripdata_2022-01.parquet").is_file(),
        "the TLC files are not in {}: set TAXI_TLC_DIR to the folder holding green_tripdata_2022-01.parquet \
         (in this project: /work/shared/data/tlc)",
        dir.display()
    );
    dir
}

/// Null passenger counts, counted by polars on its own, to cross-check the missing share.
fn null_passengers(path: &std::path::Path) -> usize {
    let df = LazyFrame::scan_parquet(
        PlRefPath::new(path.to_str().unwrap()),
        ScanArgsParquet::default(),
    )
    .unwrap()
    .select([col("passenger_count").null_count()])
    .collect()
    .unwrap();
    df.column("passenger_count")
        .unwrap()
        .cast(&DataType::UInt64)
        .unwrap()
        .u64()
        .unwrap()
        .get(0)
        .unwrap() as usize
}

#[test]
fn january_against_february_2022_by_day() {
    let dir = tlc_dir();
    let (jan, feb) = (
        dir.join("green_tripdata_2022-01.parquet"),
        dir.join("green_tripdata_2022-02.parquet"),
    );
    let out = tempfile::tempdir().unwrap();
    let model = out.path().join("model.json");
    write_model(&model);
    let mut a = args(&jan, &feb);
    a.window = Some(Window::Day);
    a.from = Some("2022-02-01".into());
    a.to = Some("2022-03-01".into());
    a.model = Some(model);
    let analysis = a.analyze("dev").unwrap();
    let s = &analysis.summary;
    report::write(out.path(), s, &analysis.samples).unwrap();

    // Row counts from the data's README.
    assert_eq!(s.reference.rows, 62_495);
    assert_eq!(s.current.rows, 69_399);
    assert_eq!(s.overall.rows + s.current_rows_excluded, s.current.rows);
    assert!(
        s.current_rows_excluded < 100,
        "only stray timestamps fall outside February"
    );
    // A large reference: distances, as Evidently chooses them.
    for c in &s.overall.columns {
        let d = c
            .drift
            .unwrap_or_else(|| panic!("{} was not tested", c.column));
        let want = if c.column.ends_with("LocationID") {
            StatTest::JensenShannon
        } else {
            StatTest::Wasserstein
        };
        assert_eq!(d.test, want, "{}", c.column);
        assert!(d.score.is_finite() && d.score >= 0.0);
    }
    let pred = s
        .overall
        .prediction
        .as_ref()
        .and_then(|p| p.drift)
        .expect("prediction drift");
    assert_eq!(pred.test, StatTest::Wasserstein);
    // Every February day is a window, and together they hold every February trip.
    assert_eq!(s.windows.len(), 28);
    assert_eq!(
        s.windows.iter().map(|w| w.rows).sum::<usize>(),
        s.overall.rows
    );
    assert!(
        s.windows
            .iter()
            .all(|w| w.rows > 1000 && w.columns_tested == 6)
    );
    // The missing share agrees with polars' own null count.
    let pc = s
        .overall
        .columns
        .iter()
        .find(|c| c.column == "passenger_count")
        .unwrap();
    let nulls = null_passengers(&feb) as f64;
    assert!(
        (pc.missing_share - nulls / s.overall.rows as f64).abs() < 1e-3,
        "{} vs {nulls} nulls",
        pc.missing_share
    );
    // One month to the next is not a dataset drift.
    assert!(!s.overall.dataset_drift, "{s}");
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 7);

    eprintln!("{s}");
    let drifted_days = s.windows.iter().filter(|w| w.dataset_drift).count();
    eprintln!(
        "real data: reference {} trips, current {} ({} in February), 28 days, {} with dataset drift; prediction Wasserstein/std {:.4}",
        s.reference.rows, s.current.rows, s.overall.rows, drifted_days, pred.score
    );
}
