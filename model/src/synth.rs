//! Synthetic green-taxi trip records: same 20 columns and types as the real files, with
//! realistic structure, deterministic for a seed. The offline default for demos and tests.
//!
//! 265 zones with skewed popularity sit on a plane; a trip's distance is the zones' distance
//! times a lognormal detour factor (a lognormal short hop inside one zone); its duration follows
//! the distance at an hour-of-day speed, plus a zone-pair effect and noise. A few per cent are
//! outliers (zero or negative durations, day-long rides, zero distances) and a few per cent have
//! the nulls real files have (RatecodeID, passenger_count, payment_type, trip_type,
//! congestion_surcharge and store_and_fwd_flag together).

use std::path::Path;

use chrono::{Datelike, NaiveDate};
use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Normal};

use crate::{MAX_ZONE_ID, ModelError};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    /// The month, `YYYY-MM`.
    pub month: String,
    /// Rows to write.
    pub rows: usize,
    /// RNG seed: the same seed gives the same file.
    pub seed: u64,
}

/// The columns, in the real files' order.
pub const GREEN_COLUMNS: [&str; 20] = [
    "VendorID",
    "lpep_pickup_datetime",
    "lpep_dropoff_datetime",
    "store_and_fwd_flag",
    "RatecodeID",
    "PULocationID",
    "DOLocationID",
    "passenger_count",
    "trip_distance",
    "fare_amount",
    "extra",
    "mta_tax",
    "tip_amount",
    "tolls_amount",
    "ehail_fee",
    "improvement_surcharge",
    "total_amount",
    "payment_type",
    "trip_type",
    "congestion_surcharge",
];

/// Mean speed in mph by hour of day: slow at the rush hours, fast at night.
const SPEED_BY_HOUR: [f64; 24] = [
    19.0, 20.0, 21.0, 21.0, 20.0, 18.0, 15.0, 12.0, 10.5, 11.0, 12.0, 12.0, 12.0, 12.0, 11.5, 11.0,
    10.5, 10.0, 10.5, 12.0, 14.0, 15.5, 16.5, 18.0,
];

fn parse_month(month: &str) -> Result<(NaiveDate, NaiveDate), ModelError> {
    let bad = || {
        ModelError::Training(format!(
            "month `{month}` is not YYYY-MM (for example 2021-01)"
        ))
    };
    let start = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").map_err(|_| bad())?;
    let next = if start.month() == 12 {
        NaiveDate::from_ymd_opt(start.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(start.year(), start.month() + 1, 1)
    }
    .ok_or_else(bad)?;
    Ok((start, next))
}

/// Generates the frame.
pub fn generate(spec: &SynthSpec) -> Result<DataFrame, ModelError> {
    let (start, next) = parse_month(&spec.month)?;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let zones = MAX_ZONE_ID as usize;
    // Zone positions (miles) and popularity (Zipf-like weights, shuffled over zone ids).
    let pos: Vec<(f64, f64)> = (0..zones)
        .map(|_| (rng.random_range(0.0..14.0), rng.random_range(0.0..14.0)))
        .collect();
    let mut weight: Vec<f64> = (0..zones)
        .map(|r| 1.0 / (r as f64 + 1.0).powf(1.1))
        .collect();
    for i in (1..zones).rev() {
        weight.swap(i, rng.random_range(0..=i));
    }
    let cumulative: Vec<f64> = weight
        .iter()
        .scan(0.0, |acc, w| {
            *acc += w;
            Some(*acc)
        })
        .collect();
    let total = *cumulative.last().expect("zones");
    let pick_zone = |rng: &mut ChaCha8Rng| -> usize {
        let u = rng.random_range(0.0..total);
        cumulative.partition_point(|&c| c < u).min(zones - 1)
    };
    // A pair effect (minutes) fixed per zone pair: some routes are slower than their distance.
    let pair_seed: u64 = rng.random();
    let pair_effect = |pu: usize, dol: usize| -> f64 {
        let mut h =
            pair_seed ^ ((pu as u64) << 32 | dol as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 31;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 29;
        ((h >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 6.0
    };
    let detour = LogNormal::new(0.25, 0.2).expect("valid");
    let hop = LogNormal::new(-0.3, 0.6).expect("valid");
    let noise = Normal::new(0.0, 2.5).expect("valid");

    let n = spec.rows;
    let month_us = (next - start).num_seconds() * 1_000_000;
    let start_us = start
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_micros();
    let mut c = Columns::with_capacity(n);
    for _ in 0..n {
        let pu = pick_zone(&mut rng);
        // Most rides are short: a dropoff zone is accepted with a probability falling with distance.
        let dol = if rng.random::<f64>() < 0.08 {
            pu
        } else {
            let mut dol = pick_zone(&mut rng);
            for _ in 0..24 {
                let (dx, dy) = (pos[pu].0 - pos[dol].0, pos[pu].1 - pos[dol].1);
                if rng.random::<f64>() < (-(dx * dx + dy * dy).sqrt() / 2.5).exp() {
                    break;
                }
                dol = pick_zone(&mut rng);
            }
            dol
        };
        let pickup = start_us + rng.random_range(0..month_us);
        let hour = (pickup.div_euclid(3_600_000_000)).rem_euclid(24) as usize;
        let (dx, dy) = (pos[pu].0 - pos[dol].0, pos[pu].1 - pos[dol].1);
        let straight = (dx * dx + dy * dy).sqrt();
        let mut distance = if pu == dol {
            hop.sample(&mut rng)
        } else {
            straight * detour.sample(&mut rng)
        };
        let speed = SPEED_BY_HOUR[hour] * rng.random_range(0.85..1.15);
        let mut minutes =
            (2.0 + distance / speed * 60.0 + pair_effect(pu, dol) + noise.sample(&mut rng))
                .max(0.5);
        // Outliers as in the real files.
        let u: f64 = rng.random();
        if u < 0.006 {
            minutes = rng.random_range(-2.0..0.9); // clock errors and cancelled rides
        } else if u < 0.012 {
            minutes = rng.random_range(61.0..1500.0); // meters left running
        } else if u < 0.02 {
            distance = 0.0;
        }
        let dropoff = pickup + (minutes * 60e6) as i64;
        let missing = rng.random::<f64>() < 0.04;
        let distance = (distance * 100.0).round() / 100.0;
        let fare = ((2.5 + 2.5 * distance + 0.5 * minutes.max(0.0)) * 2.0).round() / 2.0;
        let tip = if rng.random::<f64>() < 0.4 {
            (fare * rng.random_range(0.1..0.25) * 100.0).round() / 100.0
        } else {
            0.0
        };
        let tolls = if rng.random::<f64>() < 0.03 {
            6.55
        } else {
            0.0
        };
        let congestion = if rng.random::<f64>() < 0.3 { 2.75 } else { 0.0 };
        let extra = if !(6..20).contains(&hour) { 1.0 } else { 0.0 };
        c.vendor.push(if rng.random::<f64>() < 0.2 { 1 } else { 2 });
        c.pickup.push(pickup);
        c.dropoff.push(dropoff);
        c.flag.push((!missing).then_some("N"));
        c.ratecode
            .push((!missing).then_some(if rng.random::<f64>() < 0.97 { 1.0 } else { 5.0 }));
        c.pu.push(pu as i64 + 1);
        c.dol.push(dol as i64 + 1);
        c.passengers
            .push((!missing).then(|| f64::from(rng.random_range(1..=3u8))));
        c.distance.push(distance);
        c.fare.push(fare);
        c.extra.push(extra);
        c.mta.push(0.5);
        c.tip.push(tip);
        c.tolls.push(tolls);
        c.improvement.push(0.3);
        c.total
            .push(((fare + extra + 0.5 + tip + tolls + 0.3 + congestion) * 100.0).round() / 100.0);
        c.payment
            .push((!missing).then_some(if tip > 0.0 { 1.0 } else { 2.0 }));
        c.trip_type.push((!missing).then_some(1.0));
        c.congestion.push((!missing).then_some(congestion));
    }
    c.into_frame(n)
}

/// Generates and writes a Parquet file.
pub fn write(spec: &SynthSpec, out: &Path) -> Result<DataFrame, ModelError> {
    let mut df = generate(spec)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    }
    let file = std::fs::File::create(out).map_err(|e| ModelError::io(out, e))?;
    ParquetWriter::new(file)
        .finish(&mut df)
        .map_err(|e| ModelError::data(out, format!("cannot write Parquet: {e}")))?;
    Ok(df)
}

#[derive(Default)]
struct Columns {
    vendor: Vec<i64>,
    pickup: Vec<i64>,
    dropoff: Vec<i64>,
    flag: Vec<Option<&'static str>>,
    ratecode: Vec<Option<f64>>,
    pu: Vec<i64>,
    dol: Vec<i64>,
    passengers: Vec<Option<f64>>,
    distance: Vec<f64>,
    fare: Vec<f64>,
    extra: Vec<f64>,
    mta: Vec<f64>,
    tip: Vec<f64>,
    tolls: Vec<f64>,
    improvement: Vec<f64>,
    total: Vec<f64>,
    payment: Vec<Option<f64>>,
    trip_type: Vec<Option<f64>>,
    congestion: Vec<Option<f64>>,
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        let mut c = Self::default();
        c.vendor.reserve(n);
        c.pickup.reserve(n);
        c.dropoff.reserve(n);
        c
    }

    fn into_frame(self, n: usize) -> Result<DataFrame, ModelError> {
        let ts = |name: &str, v: Vec<i64>| -> PolarsResult<Column> {
            Series::new(name.into(), v)
                .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
                .map(Column::from)
        };
        let build = || -> PolarsResult<DataFrame> {
            DataFrame::new(
                n,
                vec![
                    Column::new("VendorID".into(), self.vendor),
                    ts("lpep_pickup_datetime", self.pickup)?,
                    ts("lpep_dropoff_datetime", self.dropoff)?,
                    Column::new("store_and_fwd_flag".into(), self.flag),
                    Column::new("RatecodeID".into(), self.ratecode),
                    Column::new("PULocationID".into(), self.pu),
                    Column::new("DOLocationID".into(), self.dol),
                    Column::new("passenger_count".into(), self.passengers),
                    Column::new("trip_distance".into(), self.distance),
                    Column::new("fare_amount".into(), self.fare),
                    Column::new("extra".into(), self.extra),
                    Column::new("mta_tax".into(), self.mta),
                    Column::new("tip_amount".into(), self.tip),
                    Column::new("tolls_amount".into(), self.tolls),
                    Column::full_null("ehail_fee".into(), n, &DataType::Null),
                    Column::new("improvement_surcharge".into(), self.improvement),
                    Column::new("total_amount".into(), self.total),
                    Column::new("payment_type".into(), self.payment),
                    Column::new("trip_type".into(), self.trip_type),
                    Column::new("congestion_surcharge".into(), self.congestion),
                ],
            )
        };
        build().map_err(|e| ModelError::Training(format!("cannot assemble synthetic frame: {e}")))
    }
}
