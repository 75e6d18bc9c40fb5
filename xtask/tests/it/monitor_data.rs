//! Fixtures for the monitor tests: synthetic TLC-shaped Parquet files and a small model artifact.

use std::path::Path;

use model::artifact::{Artifact, CategoricalBlock, NumericCoef, TrainingMetadata};
use model::{Categorical, FeatureSpec, Numeric};
use polars::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use xtask::monitor::{MonitorArgs, parse_time};

/// How a synthetic day of trips is drawn.
#[derive(Clone, Copy)]
pub struct Regime {
    /// Mean trip distance in miles.
    pub mean_distance: f64,
    /// First pickup zone id; zones are `zone0..zone0 + 40`.
    pub zone0: i64,
    /// Share of trips without passenger_count.
    pub missing_passengers: f64,
}

/// The regime of the reference and of days without drift.
pub const NORMAL: Regime = Regime {
    mean_distance: 3.0,
    zone0: 1,
    missing_passengers: 0.02,
};
/// Longer trips between other zones, and many missing passenger counts.
pub const DRIFTED: Regime = Regime {
    mean_distance: 9.0,
    zone0: 100,
    missing_passengers: 0.4,
};

/// Writes a green-taxi-shaped Parquet file: for each `(day, trips, regime)` that many trips
/// picked up on that day (`YYYY-MM-DD`).
pub fn write_trips(path: &Path, days: &[(&str, usize, Regime)], seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut pickup, mut dropoff, mut distance, mut fare, mut passengers, mut pu, mut dol) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for &(day, n, r) in days {
        let t0 = parse_time(day).unwrap();
        for _ in 0..n {
            let t = t0 + rng.random_range(0..86_400_000_000i64);
            let d: f64 = -r.mean_distance * (1.0 - rng.random::<f64>()).ln();
            let minutes = 3.0 + 4.0 * d + rng.random_range(0.0..5.0);
            pickup.push(t);
            dropoff.push(t + (minutes * 60e6) as i64);
            distance.push((d * 100.0).round() / 100.0);
            fare.push(((3.0 + 2.5 * d) * 100.0).round() / 100.0);
            passengers.push(
                (rng.random::<f64>() >= r.missing_passengers)
                    .then(|| f64::from(rng.random_range(1..=4u8))),
            );
            // Skewed zone choice: low ids more often.
            let z = |rng: &mut StdRng| r.zone0 + (rng.random::<f64>().powi(2) * 40.0) as i64;
            pu.push(z(&mut rng));
            dol.push(z(&mut rng));
        }
    }
    let time = |name: &str, v: Vec<i64>| {
        Column::from(
            Series::new(name.into(), v)
                .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
                .unwrap(),
        )
    };
    let mut df = DataFrame::new_infer_height(vec![
        Column::from(Series::new("VendorID".into(), vec![2i64; pickup.len()])),
        time("lpep_pickup_datetime", pickup),
        time("lpep_dropoff_datetime", dropoff),
        Column::from(Series::new("PULocationID".into(), pu)),
        Column::from(Series::new("DOLocationID".into(), dol)),
        Column::from(Series::new("passenger_count".into(), passengers)),
        Column::from(Series::new("trip_distance".into(), distance)),
        Column::from(Series::new("fare_amount".into(), fare)),
    ])
    .unwrap();
    ParquetWriter::new(std::fs::File::create(path).unwrap())
        .finish(&mut df)
        .unwrap();
}

/// A model with a pickup-zone term and trip distance, saved to `path`.
pub fn write_model(path: &Path) {
    let zones: Vec<String> = (1..=model::MAX_ZONE_ID).map(|z| z.to_string()).collect();
    let coef: Vec<f64> = (1..=model::MAX_ZONE_ID)
        .map(|z| f64::from(z % 7) - 3.0)
        .collect();
    let mut artifact = Artifact {
        version: String::new(),
        features: FeatureSpec {
            categorical: vec![Categorical::Pu],
            numeric: vec![Numeric::TripDistance],
        },
        intercept: 6.0,
        numeric: vec![NumericCoef {
            term: Numeric::TripDistance,
            coef: 3.5,
        }],
        categorical: vec![CategoricalBlock {
            term: Categorical::Pu,
            vocabulary: zones,
            coef,
        }],
        metadata: TrainingMetadata::default(),
    };
    artifact.version = artifact.content_version();
    artifact.save(path).unwrap();
}

/// Monitor arguments with the command's defaults.
pub fn args(reference: &Path, current: &Path) -> MonitorArgs {
    MonitorArgs {
        reference: reference.to_path_buf(),
        current: current.to_path_buf(),
        model: None,
        report: None,
        window: None,
        from: None,
        to: None,
        min_window_rows: 100,
        drift_share: 0.5,
        max_missing_share: 0.05,
        prediction_threshold: None,
        database_url: None,
    }
}

/// Reference (January, normal) and two current files: `steady` (three normal days) and
/// `drifting` (two normal days, then a drifted one, plus a stray trip in 2009).
pub struct Files {
    pub dir: tempfile::TempDir,
    pub reference: std::path::PathBuf,
    pub steady: std::path::PathBuf,
    pub drifting: std::path::PathBuf,
    pub model: std::path::PathBuf,
}

pub fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let days: Vec<String> = (1..=28).map(|d| format!("2022-01-{d:02}")).collect();
    let reference: Vec<(&str, usize, Regime)> =
        days.iter().map(|d| (d.as_str(), 100, NORMAL)).collect();
    write_trips(&p("reference.parquet"), &reference, 1);
    write_trips(
        &p("steady.parquet"),
        &[
            ("2022-02-01", 600, NORMAL),
            ("2022-02-02", 600, NORMAL),
            ("2022-02-03", 600, NORMAL),
        ],
        2,
    );
    write_trips(
        &p("drifting.parquet"),
        &[
            ("2009-01-01", 1, NORMAL),
            ("2022-02-01", 600, NORMAL),
            ("2022-02-02", 600, NORMAL),
            ("2022-02-03", 600, DRIFTED),
        ],
        3,
    );
    write_model(&p("model.json"));
    Files {
        reference: p("reference.parquet"),
        steady: p("steady.parquet"),
        drifting: p("drifting.parquet"),
        model: p("model.json"),
        dir,
    }
}
