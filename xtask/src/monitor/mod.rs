//! `cargo xtask monitor`: data and prediction drift between a reference period and a current
//! period of TLC trip records, with Evidently's default tests ([`stats`]), a self-contained HTML
//! report ([`report`]), metrics in PostgreSQL for Grafana ([`store`]) and an exit code for alerts.
//!
//! Exit codes: 0 when no alert fired, [`ALERT_EXIT_CODE`] (3) when at least one did, 1 for errors.

pub mod report;
pub mod stats;
pub mod store;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat};
use clap::{Args, ValueEnum};
use polars::prelude::{DataType, LazyFrame, PlRefPath, ScanArgsParquet, TimeUnit, col};
use serde::{Deserialize, Serialize};

use crate::ctx::Ctx;
use stats::{ColumnKind, Drift};

/// The process exit code when an alert fired (errors exit with 1).
pub const ALERT_EXIT_CODE: u8 = 3;

/// The monitored columns of a trip record, and how each is tested. `duration` is derived:
/// minutes from pickup to dropoff.
pub const COLUMNS: [(&str, ColumnKind); 6] = [
    ("trip_distance", ColumnKind::Numerical),
    ("duration", ColumnKind::Numerical),
    ("fare_amount", ColumnKind::Numerical),
    ("passenger_count", ColumnKind::Numerical),
    ("PULocationID", ColumnKind::Categorical),
    ("DOLocationID", ColumnKind::Categorical),
];

/// The name the prediction column gets in reports and in the database.
pub const PREDICTION: &str = "prediction";

const MICROS_PER_HOUR: i64 = 3_600_000_000;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// Compare a current period of trip records with a reference period: per-column drift,
/// prediction drift, missing values; optionally per time window, into PostgreSQL.
#[derive(Debug, Clone, Args)]
pub struct MonitorArgs {
    /// Reference period: a TLC trip-record Parquet file (green `lpep_` or yellow `tpep_`).
    #[arg(long)]
    pub reference: PathBuf,
    /// Current period, compared with the reference.
    #[arg(long)]
    pub current: PathBuf,
    /// Model artifact (model.json): adds drift of its predictions.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Folder to write report.html and summary.json to (created if missing).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Split the current period by pickup time, one row of metrics per window (a backfill).
    #[arg(long, value_enum)]
    pub window: Option<Window>,
    /// Only current trips picked up at or after this time: `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS`.
    #[arg(long)]
    pub from: Option<String>,
    /// Only current trips picked up before this time: `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS`.
    #[arg(long)]
    pub to: Option<String>,
    /// Windows with fewer current trips are listed as skipped, not tested.
    #[arg(long, default_value_t = 100)]
    pub min_window_rows: usize,
    /// Dataset drift (an alert) when at least this share of the columns drift.
    #[arg(long, default_value_t = 0.5)]
    pub drift_share: f64,
    /// Alert when more than this share of the current values (all monitored columns) is missing.
    #[arg(long, default_value_t = 0.05)]
    pub max_missing_share: f64,
    /// Threshold of the prediction's drift test, in that test's unit (p-value for K-S,
    /// distance for Wasserstein); default: the test's own (0.05 or 0.1).
    #[arg(long)]
    pub prediction_threshold: Option<f64>,
    /// PostgreSQL to write the metrics to, e.g. postgres://user:pass@127.0.0.1:5432/db.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// Window length for `--window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// Calendar hours of pickup time.
    Hour,
    /// Calendar days of pickup time.
    Day,
}

impl Window {
    fn micros(self) -> i64 {
        match self {
            Self::Hour => MICROS_PER_HOUR,
            Self::Day => MICROS_PER_DAY,
        }
    }

    /// The granularity's name in the database.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }
}

/// Raised when an alert fired; `main` turns it into exit code [`ALERT_EXIT_CODE`].
#[derive(Debug, thiserror::Error)]
#[error("{count} monitoring alert(s) fired: {kinds}; see the summary above")]
pub struct AlertFired {
    /// How many (window, alert) pairs fired.
    pub count: usize,
    /// Their kinds, comma-separated.
    pub kinds: String,
}

/// Trip records reduced to the monitored columns. Missing values are NaN.
#[derive(Debug, Clone)]
pub struct Trips {
    /// The file read.
    pub path: PathBuf,
    /// Pickup time, microseconds since the epoch of the (zone-less) TLC wall clock.
    pub pickup_us: Vec<Option<i64>>,
    /// One vector per entry of [`COLUMNS`], then the prediction when a model was given.
    pub values: Vec<Vec<f64>>,
}

impl Trips {
    /// Number of trips.
    pub fn len(&self) -> usize {
        self.pickup_us.len()
    }

    /// True when there are no trips.
    pub fn is_empty(&self) -> bool {
        self.pickup_us.is_empty()
    }
}

/// Reads a TLC trip-record Parquet file, and predicts each trip's duration when a model is given.
pub fn read_trips(path: &Path, model: Option<&model::Model>) -> anyhow::Result<Trips> {
    if !path.is_file() {
        bail!(
            "{} does not exist or is not a file: pass a TLC trip-record Parquet file",
            path.display()
        );
    }
    let p = path
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", path.display()))?;
    let lf = LazyFrame::scan_parquet(PlRefPath::new(p), ScanArgsParquet::default())
        .with_context(|| format!("open {} as Parquet", path.display()))?;
    let schema = lf
        .clone()
        .collect_schema()
        .with_context(|| format!("read the schema of {}", path.display()))?;
    let names: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
    let prefix = ["lpep", "tpep"]
        .into_iter()
        .find(|p| names.iter().any(|n| n == &format!("{p}_pickup_datetime")))
        .with_context(|| {
            format!(
                "{} is not a TLC trip-record file: no lpep_/tpep_pickup_datetime column (columns: {})",
                path.display(),
                names.join(", ")
            )
        })?;
    let needed = [
        format!("{prefix}_pickup_datetime"),
        format!("{prefix}_dropoff_datetime"),
        "trip_distance".into(),
        "fare_amount".into(),
        "passenger_count".into(),
        "PULocationID".into(),
        "DOLocationID".into(),
    ];
    let missing: Vec<&String> = needed.iter().filter(|c| !names.contains(c)).collect();
    if !missing.is_empty() {
        bail!(
            "{} lacks the monitored column(s) {:?}: monitoring needs TLC yellow or green trip records (columns found: {})",
            path.display(),
            missing,
            names.join(", ")
        );
    }
    // Timestamps may be stored in ns, us or ms, and ids as integers or doubles.
    let micros = |name: &str| {
        col(name)
            .cast(DataType::Datetime(TimeUnit::Microseconds, None))
            .cast(DataType::Int64)
    };
    let float = |name: &str| col(name).cast(DataType::Float64);
    let df = lf
        .select([
            micros(&needed[0]).alias("pickup"),
            micros(&needed[1]).alias("dropoff"),
            float("trip_distance"),
            float("fare_amount"),
            float("passenger_count"),
            float("PULocationID"),
            float("DOLocationID"),
        ])
        .collect()
        .with_context(|| format!("read {}", path.display()))?;
    let ints = |name: &str| -> anyhow::Result<Vec<Option<i64>>> {
        Ok(df.column(name)?.i64()?.iter().collect())
    };
    let floats = |name: &str| -> anyhow::Result<Vec<f64>> {
        Ok(df
            .column(name)?
            .f64()?
            .iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect())
    };
    let pickup = ints("pickup")?;
    let dropoff = ints("dropoff")?;
    let duration: Vec<f64> = pickup
        .iter()
        .zip(&dropoff)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => (b - a) as f64 / 60e6,
            _ => f64::NAN,
        })
        .collect();
    let mut values = vec![
        floats("trip_distance")?,
        duration,
        floats("fare_amount")?,
        floats("passenger_count")?,
        floats("PULocationID")?,
        floats("DOLocationID")?,
    ];
    if let Some(model) = model {
        values.push(predict_all(
            model, &pickup, &values[4], &values[5], &values[0],
        ));
    }
    Ok(Trips {
        path: path.to_path_buf(),
        pickup_us: pickup,
        values,
    })
}

/// The model's prediction for each trip; NaN when an input is missing or not a zone id.
fn predict_all(
    model: &model::Model,
    pickup: &[Option<i64>],
    pu: &[f64],
    dol: &[f64],
    distance: &[f64],
) -> Vec<f64> {
    let zone = |z: f64| {
        (z.is_finite() && z >= 0.0 && z.fract() == 0.0 && z <= f64::from(u32::MAX))
            .then_some(z as u32)
    };
    (0..pu.len())
        .map(|i| {
            let (Some(pu), Some(dol)) = (zone(pu[i]), zone(dol[i])) else {
                return f64::NAN;
            };
            if !distance[i].is_finite() {
                return f64::NAN;
            }
            let pickup_hour = pickup[i].map(|t| t.div_euclid(MICROS_PER_HOUR).rem_euclid(24) as u8);
            model.predict(&model::Ride {
                pu_location_id: pu,
                do_location_id: dol,
                trip_distance: distance[i],
                pickup_hour,
            })
        })
        .collect()
}

/// Thresholds that decide drift and alerts.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Thresholds {
    /// Dataset drift when at least this share of the tested columns drift.
    pub drift_share: f64,
    /// Alert when the current missing share exceeds this.
    pub max_missing_share: f64,
    /// Threshold of the prediction's test; `None`: the test's default.
    pub prediction_threshold: Option<f64>,
}

/// What fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// At least the configured share of columns drifted.
    DatasetDrift,
    /// Too many missing values.
    MissingValues,
    /// The predictions drifted.
    PredictionDrift,
}

impl AlertKind {
    /// The name stored in the database.
    pub fn name(self) -> &'static str {
        match self {
            Self::DatasetDrift => "dataset_drift",
            Self::MissingValues => "missing_values",
            Self::PredictionDrift => "prediction_drift",
        }
    }
}

/// One column's metrics in one window.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnMetrics {
    /// Column name.
    pub column: String,
    /// How it is tested.
    pub kind: ColumnKind,
    /// The test's outcome; `None` when one side had no values.
    pub drift: Option<Drift>,
    /// Share of the window's current rows where the value is missing.
    pub missing_share: f64,
    /// Share of the reference rows where it is missing.
    pub reference_missing_share: f64,
    /// Current values tested.
    pub current_values: usize,
    /// Mean of the tested current values (NaN without values).
    pub current_mean: f64,
    /// Mean of the tested reference values.
    pub reference_mean: f64,
}

impl ColumnMetrics {
    /// True when the column was tested and drifted.
    pub fn drifted(&self) -> bool {
        self.drift.is_some_and(|d| d.drifted)
    }
}

/// The metrics of one window (or of the whole current period).
#[derive(Debug, Clone, Serialize)]
pub struct WindowMetrics {
    /// `day`, `hour`, or `period` for the whole current period.
    pub granularity: String,
    /// Window start (inclusive), RFC 3339, TLC wall-clock time labelled UTC.
    pub start: String,
    /// Window end (exclusive).
    pub end: String,
    /// Start in microseconds since the epoch.
    #[serde(skip)]
    pub start_us: i64,
    /// End in microseconds since the epoch.
    #[serde(skip)]
    pub end_us: i64,
    /// Current trips in the window.
    pub rows: usize,
    /// Per feature column.
    pub columns: Vec<ColumnMetrics>,
    /// The prediction's drift, with `--model`.
    pub prediction: Option<ColumnMetrics>,
    /// Feature columns tested.
    pub columns_tested: usize,
    /// Feature columns that drifted.
    pub columns_drifted: usize,
    /// `columns_drifted / columns_tested`.
    pub share_drifted_columns: f64,
    /// At least `drift_share` of the columns drifted.
    pub dataset_drift: bool,
    /// Missing cells / all cells, over the monitored feature columns.
    pub missing_share: f64,
    /// Alerts that fired in this window.
    pub alerts: Vec<AlertKind>,
}

/// A window with too few trips to test.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedWindow {
    /// Window start.
    pub start: String,
    /// Current trips in it.
    pub rows: usize,
}

/// A data file's identity in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct DataInfo {
    /// The path given.
    pub path: String,
    /// Trips read.
    pub rows: usize,
}

/// Everything one run found: printed as text, or as JSON with `--output json`, and written to
/// `summary.json` with `--report`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Environment the metrics belong to.
    pub env: String,
    /// The reference file.
    pub reference: DataInfo,
    /// The current file.
    pub current: DataInfo,
    /// Current trips outside `--from`/`--to` or without a pickup time.
    pub current_rows_excluded: usize,
    /// The model's version, with `--model`.
    pub model_version: Option<String>,
    /// The thresholds applied.
    pub thresholds: Thresholds,
    /// The window length, with `--window`.
    pub window: Option<Window>,
    /// The whole current period against the reference.
    pub overall: WindowMetrics,
    /// One entry per window, with `--window`.
    pub windows: Vec<WindowMetrics>,
    /// Windows with fewer than `--min-window-rows` trips.
    pub skipped_windows: Vec<SkippedWindow>,
    /// True when any alert fired (exit code 3).
    pub alert: bool,
    /// Where the report was written.
    pub report: Option<String>,
    /// Windows written to PostgreSQL.
    pub database_windows_written: Option<usize>,
}

impl Summary {
    /// The windows alerts are judged on: the `--window` windows, or the whole period.
    pub fn judged(&self) -> Vec<&WindowMetrics> {
        match self.window {
            None => vec![&self.overall],
            Some(_) => self.windows.iter().collect(),
        }
    }
}

/// Whether a written summary says that drift fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftCheck {
    /// The summary read.
    pub report: String,
    /// A dataset- or prediction-drift alert fired in a window alerts are judged on.
    pub fired: bool,
    /// Which windows drifted, in words.
    pub detail: String,
}

/// Reads a summary `cargo xtask monitor` wrote (`--output json`, or `--report`'s summary.json)
/// and says whether drift fired, judged as the run judged it ([`Summary::judged`]): a
/// dataset- or prediction-drift alert in the whole period, or with `--window` in any window.
/// Missing values alone are not drift.
pub fn drift_in_summary(path: &Path) -> anyhow::Result<DriftCheck> {
    /// The part of a [`Summary`] that says what fired.
    #[derive(Deserialize)]
    struct Written {
        window: Option<Window>,
        overall: Judged,
        #[serde(default)]
        windows: Vec<Judged>,
    }
    #[derive(Deserialize)]
    struct Judged {
        start: String,
        alerts: Vec<AlertKind>,
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the monitoring summary {}", path.display()))?;
    let s: Written = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a monitoring summary: write one with `cargo xtask monitor ... --output json` (or --report DIR)",
            path.display()
        )
    })?;
    let drifted = |w: &&Judged| {
        w.alerts
            .iter()
            .any(|a| matches!(a, AlertKind::DatasetDrift | AlertKind::PredictionDrift))
    };
    let (fired, detail) = match s.window {
        None => {
            let fired = drifted(&&s.overall);
            (fired, format!("the whole period: drift {fired}"))
        }
        Some(w) => {
            let hit: Vec<&Judged> = s.windows.iter().filter(drifted).collect();
            let first = hit
                .first()
                .map(|j| format!(", the first from {}", j.start))
                .unwrap_or_default();
            (
                !hit.is_empty(),
                format!(
                    "{} of {} windows drifted (by {}){first}",
                    hit.len(),
                    s.windows.len(),
                    w.name()
                ),
            )
        }
    };
    Ok(DriftCheck {
        report: path.display().to_string(),
        fired,
        detail,
    })
}

/// Formats microseconds since the epoch as RFC 3339.
pub fn rfc3339(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{us}us"))
}

/// Parses `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM[:SS]` into microseconds since the epoch.
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    let t = s.trim().trim_end_matches('Z');
    let dt = if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0).expect("midnight exists")
    } else {
        ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
            .with_context(|| {
                format!("`{s}` is not a time: write YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS")
            })?
    };
    Ok(dt.and_utc().timestamp_micros())
}

/// The reference side, cleaned once.
struct Reference {
    finite: Vec<Vec<f64>>,
    missing: Vec<f64>,
    means: Vec<f64>,
}

impl Reference {
    fn new(trips: &Trips) -> Self {
        let finite: Vec<Vec<f64>> = trips.values.iter().map(|v| stats::finite(v)).collect();
        let rows = trips.len();
        let missing = trips
            .values
            .iter()
            .map(|v| share(v.iter().filter(|x| x.is_nan()).count(), rows))
            .collect();
        let means = finite.iter().map(|v| mean(v)).collect();
        Self {
            finite,
            missing,
            means,
        }
    }
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        stats::pairwise_sum(v) / v.len() as f64
    }
}

/// Computes one window's metrics over the current rows `idx`.
fn evaluate(
    reference: &Reference,
    current: &Trips,
    idx: &[usize],
    (granularity, start_us, end_us): (&str, i64, i64),
    thresholds: &Thresholds,
) -> WindowMetrics {
    let n_features = COLUMNS.len();
    let mut columns = Vec::new();
    let mut prediction = None;
    let mut missing_cells = 0usize;
    for (c, values) in current.values.iter().enumerate() {
        let window: Vec<f64> = idx.iter().map(|&i| values[i]).collect();
        let missing = window.iter().filter(|v| v.is_nan()).count();
        let cur = stats::finite(&window);
        let (name, kind) = if c < n_features {
            COLUMNS[c]
        } else {
            (PREDICTION, ColumnKind::Numerical)
        };
        let threshold = if c < n_features {
            None
        } else {
            thresholds.prediction_threshold
        };
        let drift = (!cur.is_empty() && !reference.finite[c].is_empty())
            .then(|| stats::column_drift(kind, &reference.finite[c], &cur, threshold));
        let m = ColumnMetrics {
            column: name.to_string(),
            kind,
            drift,
            missing_share: share(missing, idx.len()),
            reference_missing_share: reference.missing[c],
            current_values: cur.len(),
            current_mean: mean(&cur),
            reference_mean: reference.means[c],
        };
        if c < n_features {
            missing_cells += missing;
            columns.push(m);
        } else {
            prediction = Some(m);
        }
    }
    let columns_tested = columns.iter().filter(|c| c.drift.is_some()).count();
    let columns_drifted = columns.iter().filter(|c| c.drifted()).count();
    let share_drifted_columns = share(columns_drifted, columns_tested);
    let dataset_drift = columns_tested > 0 && share_drifted_columns >= thresholds.drift_share;
    let missing_share = share(missing_cells, idx.len() * n_features);
    let mut alerts = Vec::new();
    if dataset_drift {
        alerts.push(AlertKind::DatasetDrift);
    }
    if missing_share > thresholds.max_missing_share {
        alerts.push(AlertKind::MissingValues);
    }
    if prediction.as_ref().is_some_and(ColumnMetrics::drifted) {
        alerts.push(AlertKind::PredictionDrift);
    }
    WindowMetrics {
        granularity: granularity.to_string(),
        start: rfc3339(start_us),
        end: rfc3339(end_us),
        start_us,
        end_us,
        rows: idx.len(),
        columns,
        prediction,
        columns_tested,
        columns_drifted,
        share_drifted_columns,
        dataset_drift,
        missing_share,
        alerts,
    }
}

/// The outcome of [`analyze`]: the summary and the samples the report plots.
pub struct Analysis {
    /// Metrics.
    pub summary: Summary,
    /// Per column (features, then prediction): reference and current values, missing dropped.
    pub samples: Vec<(String, ColumnKind, Vec<f64>, Vec<f64>)>,
}

impl MonitorArgs {
    fn thresholds(&self) -> Thresholds {
        Thresholds {
            drift_share: self.drift_share,
            max_missing_share: self.max_missing_share,
            prediction_threshold: self.prediction_threshold,
        }
    }

    /// Reads both files and computes every metric; writes nothing.
    pub fn analyze(&self, env: &str) -> anyhow::Result<Analysis> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.drift_share)
                && (0.0..=1.0).contains(&self.max_missing_share),
            "--drift-share and --max-missing-share are shares: give values between 0 and 1"
        );
        let model = match &self.model {
            Some(p) => {
                Some(model::Model::load(p).with_context(|| format!("load model {}", p.display()))?)
            }
            None => None,
        };
        let reference = read_trips(&self.reference, model.as_ref())?;
        let current = read_trips(&self.current, model.as_ref())?;
        if reference.is_empty() || current.is_empty() {
            bail!(
                "nothing to compare: {} has {} trips and {} has {}; pass files with trips",
                reference.path.display(),
                reference.len(),
                current.path.display(),
                current.len()
            );
        }
        let from = self.from.as_deref().map(parse_time).transpose()?;
        let to = self.to.as_deref().map(parse_time).transpose()?;
        if let (Some(f), Some(t)) = (from, to) {
            anyhow::ensure!(f < t, "--from must be before --to");
        }
        let in_range = |t: i64| from.is_none_or(|f| t >= f) && to.is_none_or(|e| t < e);
        let kept: Vec<usize> = (0..current.len())
            .filter(|&i| current.pickup_us[i].is_some_and(in_range))
            .collect();
        if kept.is_empty() {
            bail!("no current trips were picked up in the chosen time range: widen --from/--to");
        }
        let times: Vec<i64> = kept
            .iter()
            .map(|&i| current.pickup_us[i].expect("kept rows have a time"))
            .collect();
        let (tmin, tmax) = (
            *times.iter().min().expect("non-empty"),
            *times.iter().max().expect("non-empty"),
        );
        let start = from.unwrap_or(tmin.div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY);
        let end = to.unwrap_or((tmax.div_euclid(MICROS_PER_DAY) + 1) * MICROS_PER_DAY);
        let thresholds = self.thresholds();
        let refs = Reference::new(&reference);
        let overall = evaluate(&refs, &current, &kept, ("period", start, end), &thresholds);

        let mut windows = Vec::new();
        let mut skipped_windows = Vec::new();
        if let Some(w) = self.window {
            let len = w.micros();
            let mut groups: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
            for (&i, &t) in kept.iter().zip(&times) {
                groups.entry(t.div_euclid(len) * len).or_default().push(i);
            }
            for (wstart, idx) in groups {
                if idx.len() < self.min_window_rows {
                    skipped_windows.push(SkippedWindow {
                        start: rfc3339(wstart),
                        rows: idx.len(),
                    });
                } else {
                    windows.push(evaluate(
                        &refs,
                        &current,
                        &idx,
                        (w.name(), wstart, wstart + len),
                        &thresholds,
                    ));
                }
            }
        }
        let samples = reference
            .values
            .iter()
            .enumerate()
            .map(|(c, _)| {
                let (name, kind) = if c < COLUMNS.len() {
                    COLUMNS[c]
                } else {
                    (PREDICTION, ColumnKind::Numerical)
                };
                let cur = stats::finite(
                    &kept
                        .iter()
                        .map(|&i| current.values[c][i])
                        .collect::<Vec<_>>(),
                );
                (name.to_string(), kind, refs.finite[c].clone(), cur)
            })
            .collect();
        let mut summary = Summary {
            env: env.to_string(),
            reference: DataInfo {
                path: self.reference.display().to_string(),
                rows: reference.len(),
            },
            current: DataInfo {
                path: self.current.display().to_string(),
                rows: current.len(),
            },
            current_rows_excluded: current.len() - kept.len(),
            model_version: model.as_ref().map(|m| m.version().to_string()),
            thresholds,
            window: self.window,
            overall,
            windows,
            skipped_windows,
            alert: false,
            report: None,
            database_windows_written: None,
        };
        summary.alert = summary.judged().iter().any(|w| !w.alerts.is_empty());
        Ok(Analysis { summary, samples })
    }

    /// Runs the command: analyze, write the report and the database rows, print the summary,
    /// and fail with [`AlertFired`] when an alert fired.
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let spinner = ctx.spinner("reading trips and computing drift");
        let Analysis {
            mut summary,
            samples,
        } = self.analyze(&ctx.env.name)?;
        spinner.finish_and_clear();
        if let Some(dir) = &self.report {
            summary.report = Some(dir.display().to_string());
            report::write(dir, &summary, &samples)?;
        }
        if let Some(url) = self.database_url.as_deref().filter(|u| !u.is_empty()) {
            if ctx.dry_run {
                ctx.note(format!(
                    "dry run: would write {} window(s) to PostgreSQL",
                    summary.judged().len()
                ));
            } else {
                let n = store::write(url, &summary).await?;
                summary.database_windows_written = Some(n);
            }
        }
        if let Some(dir) = &self.report {
            // Written again so that it records the database outcome too.
            report::write_summary(dir, &summary)?;
        }
        ctx.emit(&summary)?;
        alert_result(&summary)
    }
}

/// `Err(AlertFired)` when the summary says an alert fired.
pub fn alert_result(summary: &Summary) -> anyhow::Result<()> {
    let fired: Vec<&'static str> = summary
        .judged()
        .iter()
        .flat_map(|w| w.alerts.iter().map(|a| a.name()))
        .collect();
    if fired.is_empty() {
        return Ok(());
    }
    let mut kinds: Vec<&str> = fired.clone();
    kinds.sort_unstable();
    kinds.dedup();
    Err(AlertFired {
        count: fired.len(),
        kinds: kinds.join(", "),
    }
    .into())
}

fn fmt_score(d: &Option<Drift>) -> String {
    match d {
        Some(d) => format!(
            "{:<13} {:>10.4e} {}",
            d.test.name(),
            d.score,
            if d.drifted { "DRIFT" } else { "ok" }
        ),
        None => "not tested (no values)".into(),
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "reference {} ({} trips)",
            self.reference.path, self.reference.rows
        )?;
        writeln!(
            f,
            "current   {} ({} trips, {} outside the time range or without pickup time)",
            self.current.path, self.current.rows, self.current_rows_excluded
        )?;
        if let Some(v) = &self.model_version {
            writeln!(f, "model     {v}")?;
        }
        let o = &self.overall;
        writeln!(
            f,
            "\nwhole period {} .. {} ({} trips)",
            o.start, o.end, o.rows
        )?;
        writeln!(
            f,
            "  {:<16} {:<13} {:>10} {:<6} {:>8}",
            "column", "test", "score", "", "missing"
        )?;
        for c in o.columns.iter().chain(&o.prediction) {
            writeln!(
                f,
                "  {:<16} {} {:>7.2}%",
                c.column,
                fmt_score(&c.drift),
                100.0 * c.missing_share
            )?;
        }
        writeln!(
            f,
            "  drifted columns {}/{} ({:.0}%), dataset drift: {}, missing values {:.2}%",
            o.columns_drifted,
            o.columns_tested,
            100.0 * o.share_drifted_columns,
            if o.dataset_drift { "YES" } else { "no" },
            100.0 * o.missing_share
        )?;
        if !self.windows.is_empty() {
            writeln!(
                f,
                "\n{:<22} {:>7} {:>8} {:>8} {:>14}  alerts",
                "window", "trips", "drifted", "missing", "prediction"
            )?;
            for w in &self.windows {
                let pred = w
                    .prediction
                    .as_ref()
                    .and_then(|p| p.drift)
                    .map(|d| format!("{:.4e}", d.score))
                    .unwrap_or("-".into());
                let alerts: Vec<&str> = w.alerts.iter().map(|a| a.name()).collect();
                writeln!(
                    f,
                    "{:<22} {:>7} {:>4}/{:<3} {:>7.2}% {:>14}  {}",
                    w.start,
                    w.rows,
                    w.columns_drifted,
                    w.columns_tested,
                    100.0 * w.missing_share,
                    pred,
                    alerts.join(",")
                )?;
            }
        }
        if !self.skipped_windows.is_empty() {
            writeln!(
                f,
                "skipped {} window(s) with too few trips",
                self.skipped_windows.len()
            )?;
        }
        if let Some(r) = &self.report {
            writeln!(f, "report: {r}/report.html")?;
        }
        if let Some(n) = self.database_windows_written {
            writeln!(f, "PostgreSQL: {n} window(s) written")?;
        }
        write!(
            f,
            "alert: {}",
            if self.alert {
                "YES (exit code 3)"
            } else {
                "no"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn drift_is_read_from_a_monitoring_summary() {
        use serde_json::{Value, json};
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, v: Value| {
            let p = dir.path().join(name);
            std::fs::write(&p, v.to_string()).unwrap();
            p
        };
        let window = |start: &str, alerts: Value| json!({"start": start, "alerts": alerts});
        let calm = write(
            "calm.json",
            json!({"window": null, "overall": window("2022-02-01T00:00:00Z", json!([])), "windows": []}),
        );
        assert!(!drift_in_summary(&calm).unwrap().fired);
        // Judged per window with --window; missing values alone are not drift.
        let windows = write(
            "window.json",
            json!({"window": "day", "overall": window("2022-02-01T00:00:00Z", json!([])),
                   "windows": [window("2022-02-01T00:00:00Z", json!(["missing_values"])),
                               window("2022-02-02T00:00:00Z", json!(["dataset_drift"]))]}),
        );
        let d = drift_in_summary(&windows).unwrap();
        assert!(d.fired);
        assert!(d.detail.contains("1 of 2 windows"), "{}", d.detail);
        let other = write("other.json", json!({"rmse": 3.0}));
        let err = drift_in_summary(&other).unwrap_err().to_string();
        assert!(err.contains("not a monitoring summary"), "{err}");
    }

    use super::*;

    #[test]
    fn parses_dates_and_times() {
        assert_eq!(parse_time("1970-01-02").unwrap(), MICROS_PER_DAY);
        assert_eq!(parse_time("1970-01-01T01:00:00").unwrap(), MICROS_PER_HOUR);
        assert_eq!(
            parse_time("1970-01-01T01:30").unwrap(),
            MICROS_PER_HOUR * 3 / 2
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(rfc3339(MICROS_PER_DAY), "1970-01-02T00:00:00Z");
    }
}
