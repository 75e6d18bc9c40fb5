//! Integration tests of the model crate: Parquet edge cases, real TLC data, synthetic data.
#![cfg(feature = "train")]

mod parquet;
mod real_data;
mod synthetic;

use std::path::PathBuf;

/// The real TLC files: `TAXI_TLC_DIR`, else `../shared/data/tlc` beside the repository.
pub fn tlc_dir() -> PathBuf {
    let dir = std::env::var_os("TAXI_TLC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/tlc"));
    assert!(
        dir.join("green_tripdata_2021-01.parquet").exists(),
        "the real TLC files are missing from {}: set TAXI_TLC_DIR to the folder holding green_tripdata_2021-01.parquet",
        dir.display()
    );
    dir
}
