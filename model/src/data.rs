//! Reading NYC TLC trip-record Parquet and cleaning it by the course's recipe.
//!
//! Green (`lpep_*`) and yellow (`tpep_*`) schemas are detected per file; integer, float and
//! nullable variants of the columns are cast to one shape. Only the five needed columns are
//! read (projection pushdown), so a 3-million-row month stays small in memory.

use std::io::Read;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::artifact::DataFile;
use crate::{MAX_ZONE_ID, ModelError, Ride};

/// Which taxi service a file's schema belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaxiKind {
    /// Green taxis: `lpep_pickup_datetime`.
    Green,
    /// Yellow taxis: `tpep_pickup_datetime`.
    Yellow,
}

impl TaxiKind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Green => "lpep",
            Self::Yellow => "tpep",
        }
    }
}

/// Duration bounds of the cleaning recipe, in minutes, both inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CleanOptions {
    /// Shortest kept ride.
    pub min_minutes: f64,
    /// Longest kept ride.
    pub max_minutes: f64,
}

impl Default for CleanOptions {
    fn default() -> Self {
        Self {
            min_minutes: 1.0,
            max_minutes: 60.0,
        }
    }
}

/// Cleaned rides, column by column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trips {
    /// Pickup zone ids.
    pub pu: Vec<u32>,
    /// Dropoff zone ids.
    pub dol: Vec<u32>,
    /// Trip distances in miles.
    pub trip_distance: Vec<f64>,
    /// Pickup hour of day.
    pub pickup_hour: Vec<u8>,
    /// Ride durations in minutes: the target.
    pub duration: Vec<f64>,
}

impl Trips {
    /// Number of rides.
    pub fn len(&self) -> usize {
        self.duration.len()
    }

    /// True when there are no rides.
    pub fn is_empty(&self) -> bool {
        self.duration.is_empty()
    }

    /// The model's view of ride `i`.
    #[inline]
    pub fn ride(&self, i: usize) -> Ride {
        Ride {
            pu_location_id: self.pu[i],
            do_location_id: self.dol[i],
            trip_distance: self.trip_distance[i],
            pickup_hour: Some(self.pickup_hour[i]),
        }
    }

    fn push(&mut self, pu: u32, dol: u32, distance: f64, hour: u8, duration: f64) {
        self.pu.push(pu);
        self.dol.push(dol);
        self.trip_distance.push(distance);
        self.pickup_hour.push(hour);
        self.duration.push(duration);
    }
}

/// What cleaning kept and dropped, by reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CleanReport {
    /// Rows read from all files.
    pub rows_read: usize,
    /// Rows kept.
    pub rows_kept: usize,
    /// Dropped: a null in a needed column.
    pub dropped_null: usize,
    /// Dropped: duration below the minimum.
    pub dropped_too_short: usize,
    /// Dropped: duration above the maximum.
    pub dropped_too_long: usize,
    /// Dropped: a zone id outside 1..=265.
    pub dropped_bad_zone: usize,
    /// The files read, with their checksums.
    pub files: Vec<DataFile>,
}

/// Expands the inputs: a file stays itself; a directory gives its `*.parquet` files, sorted.
pub fn expand_paths(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, ModelError> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let rd = std::fs::read_dir(input).map_err(|e| ModelError::io(input, e))?;
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
                .collect();
            if files.is_empty() {
                return Err(ModelError::data(
                    input,
                    "directory holds no .parquet files: point at a folder of monthly files",
                ));
            }
            files.sort();
            out.extend(files);
        } else if input.exists() {
            out.push(input.clone());
        } else {
            return Err(ModelError::data(
                input,
                "no such file: check the path, or make synthetic data with `cargo xtask data synth`",
            ));
        }
    }
    if out.is_empty() {
        return Err(ModelError::data("<none>", "no input files given"));
    }
    Ok(out)
}

/// Reads the files (or directories of files), cleans them, and reports what was dropped.
pub fn read_trips(
    inputs: &[PathBuf],
    opts: &CleanOptions,
) -> Result<(Trips, CleanReport), ModelError> {
    let mut trips = Trips::default();
    let mut report = CleanReport::default();
    for path in expand_paths(inputs)? {
        let rows = read_file(&path, opts, &mut trips, &mut report)?;
        report.files.push(DataFile {
            path: path.display().to_string(),
            sha256: sha256_file(&path)?,
            rows,
        });
    }
    report.rows_kept = trips.len();
    Ok((trips, report))
}

/// SHA-256 of a file's bytes, in hex.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| ModelError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Checks the Parquet magic at both ends, so a CSV or a truncated download gets a clear error.
fn check_parquet_magic(path: &Path) -> Result<(), ModelError> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let len = f.metadata().map_err(|e| ModelError::io(path, e))?.len();
    let not_parquet = || {
        ModelError::data(
            path,
            "not a Parquet file (no PAR1 magic): download the month again or convert it to Parquet",
        )
    };
    if len < 12 {
        return Err(not_parquet());
    }
    let (mut head, mut tail) = ([0u8; 4], [0u8; 4]);
    f.read_exact(&mut head)
        .map_err(|e| ModelError::io(path, e))?;
    f.seek(SeekFrom::End(-4))
        .map_err(|e| ModelError::io(path, e))?;
    f.read_exact(&mut tail)
        .map_err(|e| ModelError::io(path, e))?;
    if &head != b"PAR1" || &tail != b"PAR1" {
        return Err(not_parquet());
    }
    Ok(())
}

/// Detects the taxi kind from a file's column names.
pub fn detect_kind(path: &Path, columns: &[String]) -> Result<TaxiKind, ModelError> {
    for kind in [TaxiKind::Green, TaxiKind::Yellow] {
        let p = kind.prefix();
        if columns.iter().any(|c| *c == format!("{p}_pickup_datetime"))
            && columns
                .iter()
                .any(|c| *c == format!("{p}_dropoff_datetime"))
        {
            return Ok(kind);
        }
    }
    Err(missing_columns(
        path,
        "lpep_ or tpep_ pickup and dropoff datetime columns",
        columns,
    ))
}

fn missing_columns(path: &Path, what: &str, found: &[String]) -> ModelError {
    ModelError::data(
        path,
        format!(
            "is not a TLC trip-record file: it lacks {what}; columns found: [{}]",
            found.join(", ")
        ),
    )
}

fn polars_err(path: &Path, e: PolarsError) -> ModelError {
    ModelError::data(path, format!("cannot read as trip records: {e}"))
}

/// The lazy scan of one file.
pub fn scan(path: &Path) -> Result<LazyFrame, ModelError> {
    check_parquet_magic(path)?;
    let p = path
        .to_str()
        .ok_or_else(|| ModelError::data(path, "path is not valid UTF-8"))?;
    LazyFrame::scan_parquet(PlRefPath::new(p), ScanArgsParquet::default())
        .map_err(|e| polars_err(path, e))
}

/// Reads one file into `trips`; returns the rows it had.
fn read_file(
    path: &Path,
    opts: &CleanOptions,
    trips: &mut Trips,
    report: &mut CleanReport,
) -> Result<usize, ModelError> {
    let lf = scan(path)?;
    let schema = lf
        .clone()
        .collect_schema()
        .map_err(|e| polars_err(path, e))?;
    let columns: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
    let kind = detect_kind(path, &columns)?;
    let (pickup, dropoff) = (
        format!("{}_pickup_datetime", kind.prefix()),
        format!("{}_dropoff_datetime", kind.prefix()),
    );
    let missing: Vec<&str> = ["PULocationID", "DOLocationID", "trip_distance"]
        .into_iter()
        .filter(|c| !columns.iter().any(|f| f == c))
        .collect();
    if !missing.is_empty() {
        return Err(missing_columns(path, &missing.join(", "), &columns));
    }
    // Timestamps may be stored in ns, us or ms; zone ids as int32, int64 or double.
    let micros = |name: &str| {
        col(name)
            .cast(DataType::Datetime(TimeUnit::Microseconds, None))
            .cast(DataType::Int64)
    };
    let df = lf
        .select([
            micros(&pickup).alias("pickup"),
            micros(&dropoff).alias("dropoff"),
            col("PULocationID").cast(DataType::Int64).alias("pu"),
            col("DOLocationID").cast(DataType::Int64).alias("do"),
            col("trip_distance")
                .cast(DataType::Float64)
                .alias("distance"),
        ])
        .collect()
        .map_err(|e| polars_err(path, e))?;
    let get_i64 = |name: &str| -> Result<Int64Chunked, ModelError> {
        Ok(df
            .column(name)
            .map_err(|e| polars_err(path, e))?
            .i64()
            .map_err(|e| polars_err(path, e))?
            .clone())
    };
    let (pickup, dropoff, pu, dol) = (
        get_i64("pickup")?,
        get_i64("dropoff")?,
        get_i64("pu")?,
        get_i64("do")?,
    );
    let distance = df
        .column("distance")
        .map_err(|e| polars_err(path, e))?
        .f64()
        .map_err(|e| polars_err(path, e))?
        .clone();
    let rows = df.height();
    report.rows_read += rows;
    let zone = |z: i64| {
        (1..=i64::from(MAX_ZONE_ID))
            .contains(&z)
            .then_some(z as u32)
    };
    let iter = pickup
        .iter()
        .zip(dropoff.iter())
        .zip(pu.iter().zip(dol.iter()))
        .zip(distance.iter());
    for (((t0, t1), (pu, dol)), d) in iter {
        let (Some(t0), Some(t1), Some(pu), Some(dol), Some(d)) = (t0, t1, pu, dol, d) else {
            report.dropped_null += 1;
            continue;
        };
        if d.is_nan() {
            report.dropped_null += 1;
            continue;
        }
        let minutes = (t1 - t0) as f64 / 60e6;
        if minutes < opts.min_minutes {
            report.dropped_too_short += 1;
            continue;
        }
        if minutes > opts.max_minutes {
            report.dropped_too_long += 1;
            continue;
        }
        let (Some(pu), Some(dol)) = (zone(pu), zone(dol)) else {
            report.dropped_bad_zone += 1;
            continue;
        };
        let hour = t0.div_euclid(3_600_000_000).rem_euclid(24) as u8;
        trips.push(pu, dol, d, hour, minutes);
    }
    Ok(rows)
}
