//! The real TLC files: rows kept, features and RMSE against the exact least-squares optimum.

use model::train::{TrainJob, TrainParams};

struct Expect {
    year: &'static str,
    train_kept: usize,
    val_kept: usize,
    features: usize,
    rmse_train: f64,
    rmse_val: f64,
}

fn check(e: &Expect) {
    let dir = super::tlc_dir();
    let job = TrainJob {
        train: vec![dir.join(format!("green_tripdata_{}-01.parquet", e.year))],
        val: vec![dir.join(format!("green_tripdata_{}-02.parquet", e.year))],
        params: TrainParams::default(),
        git_commit: None,
    };
    let out = job.run().unwrap();
    let m = &out.artifact.metadata;
    assert_eq!(
        out.train_report.rows_kept, e.train_kept,
        "{} train rows kept",
        e.year
    );
    assert_eq!(
        out.val_report.as_ref().unwrap().rows_kept,
        e.val_kept,
        "{} val rows kept",
        e.year
    );
    assert_eq!(m.n_features, e.features, "{} features", e.year);
    let (train, val) = (m.train_metrics.rmse, m.val_metrics.unwrap().rmse);
    assert!(
        (train - e.rmse_train).abs() < 1e-4,
        "{} train RMSE {train} vs optimum {}",
        e.year,
        e.rmse_train
    );
    assert!(
        val <= e.rmse_val + 1e-4,
        "{} val RMSE {val} vs minimum-norm optimum {}",
        e.year,
        e.rmse_val
    );
    // The artifact survives a round trip and predicts the same.
    let bytes = out.artifact.to_bytes().unwrap();
    let model = model::Model::from_bytes(&bytes).unwrap();
    assert_eq!(model.version(), out.artifact.version);
}

#[test]
fn green_2021_meets_the_exact_optimum() {
    check(&Expect {
        year: "2021",
        train_kept: 73_908,
        val_kept: 61_921,
        features: 13_221,
        rmse_train: 4.640696,
        rmse_val: 7.480949,
    });
}

#[test]
fn green_2022_meets_the_exact_optimum() {
    check(&Expect {
        year: "2022",
        train_kept: 59_603,
        val_kept: 66_097,
        features: 6_683,
        rmse_train: 4.998263,
        rmse_val: 6.772891,
    });
}

#[test]
fn green_2023_meets_the_exact_optimum() {
    check(&Expect {
        year: "2023",
        train_kept: 65_946,
        val_kept: 62_574,
        features: 5_702,
        rmse_train: 4.754268,
        rmse_val: 6.033984,
    });
}
