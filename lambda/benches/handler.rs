//! Benchmarks of the function, printed as plain numbers:
//!
//! 1. throughput of the handler logic for a 500-record Kinesis batch without the network
//!    (payload JSON, base64, validation, prediction, output serialisation);
//! 2. cold start in-process: configuration, AWS clients and the model fetched from moto's S3;
//! 3. cold start of the real `bootstrap` process, from spawn until it asks the (loopback)
//!    Runtime API for its first event, fetching the model from moto's S3.
//!
//! The model has a realistic size: 20,000 pickup/dropoff pairs, about what a month of TLC
//! trips yields. Run with `cargo bench -p lambda --bench handler`; compare with
//! `benches/python_reference.py`, which times the course's Python prediction per record.

// The shared harness is formatted with the workspace, not as part of this crate.
#[rustfmt::skip]
#[path = "../../tests/support/moto.rs"]
mod moto;
#[path = "../tests/common/runtime_api.rs"]
mod runtime_api;
#[path = "../tests/common/synthetic.rs"]
mod synthetic;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::Credentials;
use lambda::handler::{KinesisEvent, Outcome, predict_records};
use lambda::output::prediction_entry;
use model::artifact::{Artifact, CategoricalBlock, NumericCoef, TrainingMetadata};
use model::{Categorical, FeatureSpec, Model, Numeric, Ride};
use serde::Deserialize;

/// Counts heap allocations, to show what the per-ride path allocates.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f`.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    f();
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

const PAIRS: usize = 20_000;
const BATCH: usize = 500;

/// A model the size of one trained on a month of trips, with deterministic pseudo-random pairs.
fn realistic_artifact() -> Artifact {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < PAIRS {
        seen.insert((1 + next() % 265, 1 + next() % 265));
    }
    let vocabulary: Vec<String> = seen.iter().map(|(pu, dol)| format!("{pu}_{dol}")).collect();
    let coef = (0..PAIRS)
        .map(|_| (next() % 2000) as f64 / 100.0 - 10.0)
        .collect();
    let mut a = Artifact {
        version: String::new(),
        features: FeatureSpec::default(),
        intercept: 9.5,
        numeric: vec![NumericCoef {
            term: Numeric::TripDistance,
            coef: 2.1,
        }],
        categorical: vec![CategoricalBlock {
            term: Categorical::PuDo,
            vocabulary,
            coef,
        }],
        metadata: TrainingMetadata::default(),
    };
    a.version = a.content_version();
    a
}

/// Runs `f` repeatedly for about `budget` and returns the mean time per call.
fn time_per_call(budget: Duration, mut f: impl FnMut()) -> Duration {
    for _ in 0..3 {
        f();
    }
    let started = Instant::now();
    let mut calls = 0u32;
    while started.elapsed() < budget {
        f();
        calls += 1;
    }
    started.elapsed() / calls
}

fn throughput(model: &Model) {
    let payload = serde_json::to_vec(&synthetic::kinesis_event(BATCH)).unwrap();
    let full = time_per_call(Duration::from_secs(3), || {
        let value: serde_json::Value = serde_json::from_slice(black_box(&payload)).unwrap();
        let event = KinesisEvent::deserialize(&value).unwrap();
        let mut bytes = 0;
        for outcome in predict_records(model, &event.records) {
            if let Outcome::Predicted(p) = outcome {
                bytes += prediction_entry(model.version(), p).data.len();
            }
        }
        black_box(bytes);
    });
    let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    let event = KinesisEvent::deserialize(&value).unwrap();
    let records = time_per_call(Duration::from_secs(3), || {
        let mut bytes = 0;
        for outcome in predict_records(model, black_box(&event.records)) {
            if let Outcome::Predicted(p) = outcome {
                bytes += prediction_entry(model.version(), p).data.len();
            }
        }
        black_box(bytes);
    });
    let rides: Vec<Ride> = (0..BATCH)
        .map(|i| Ride {
            pu_location_id: 1 + (i % 265) as u32,
            do_location_id: 1 + (i * 7 % 265) as u32,
            trip_distance: (i % 40) as f64 * 0.37,
            pickup_hour: None,
        })
        .collect();
    let predict = time_per_call(Duration::from_secs(2), || {
        let mut sum = 0.0;
        for r in black_box(&rides) {
            sum += model.predict(r);
        }
        black_box(sum);
    });
    let decode_predict = allocations(|| {
        black_box(predict_records(model, &event.records));
    });
    let with_output = allocations(|| {
        for outcome in predict_records(model, &event.records) {
            if let Outcome::Predicted(p) = outcome {
                black_box(prediction_entry(model.version(), p));
            }
        }
    });
    let per_sec = |d: Duration| BATCH as f64 / d.as_secs_f64();
    let per_rec = |d: Duration| d.as_nanos() as f64 / BATCH as f64;
    println!("handler logic, {BATCH}-record batch, no network:");
    println!(
        "  payload JSON + base64 + validate + predict + serialise: {:>9.0} predictions/s ({:.0} ns/record, {:.3} ms/batch)",
        per_sec(full),
        per_rec(full),
        full.as_secs_f64() * 1e3
    );
    println!(
        "  base64 + validate + predict + serialise (event parsed):  {:>9.0} predictions/s ({:.0} ns/record)",
        per_sec(records),
        per_rec(records)
    );
    println!(
        "  heap allocations per {BATCH}-record batch: decode + validate + predict {decode_predict}, with output serialisation {with_output}"
    );
    println!(
        "  Model::predict alone:                                    {:>9.0} predictions/s ({:.1} ns/ride)",
        per_sec(predict),
        per_rec(predict)
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn cold_start_in_process(endpoint: &str, bucket: &str, run_id: &str) {
    let vars: HashMap<&str, &str> = [
        ("MODEL_BUCKET", bucket),
        ("RUN_ID", run_id),
        ("TEST_RUN", "true"),
    ]
    .into();
    let mut times = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        let config = lambda::Config::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap();
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .load()
            .await;
        let handler = lambda::init(&config, &sdk).await.unwrap();
        times.push(started.elapsed());
        black_box(handler);
    }
    println!(
        "cold start in process (config + AWS clients + model fetch from moto S3 + parse), 7 runs:"
    );
    println!(
        "  first {:?}, median {:?}, min {:?}",
        times[0],
        median(times.clone()),
        times.iter().min().unwrap()
    );
}

fn cold_start_process(endpoint: &str, bucket: &str, run_id: &str) {
    let mut times = Vec::new();
    for _ in 0..5 {
        let api = runtime_api::start(vec![]);
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_bootstrap"))
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", &api.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("MODEL_BUCKET", bucket)
            .env("RUN_ID", run_id)
            .env("TEST_RUN", "true")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        match api.calls.recv_timeout(Duration::from_secs(60)).unwrap() {
            runtime_api::Call::Next(ready) => times.push(ready - started),
            other => panic!("bootstrap did not become ready: {other:?}"),
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    println!(
        "cold start of the bootstrap process (spawn to first /next, model from moto S3), 5 runs:"
    );
    println!(
        "  first {:?}, median {:?}, min {:?}",
        times[0],
        median(times.clone()),
        times.iter().min().unwrap()
    );
}

fn main() {
    let artifact = realistic_artifact();
    let bytes = artifact.to_bytes().unwrap();
    println!(
        "model: {} pickup/dropoff pairs, artifact {:.2} MB",
        PAIRS,
        bytes.len() as f64 / 1e6
    );
    let model = Model::from_artifact(artifact).unwrap();
    throughput(&model);

    let endpoint = moto::moto().endpoint.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (bucket, run_id) = (moto::unique("bench-models"), "bench-run".to_string());
    rt.block_on(async {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .load()
            .await;
        let s3 = lambda::s3_client(&sdk);
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let key = format!("models/{run_id}/{}", model::artifact::FILE_NAME);
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .unwrap();
        cold_start_in_process(&endpoint, &bucket, &run_id).await;
    });
    cold_start_process(&endpoint, &bucket, &run_id);
}
