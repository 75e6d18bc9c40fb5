//! `cargo xtask e2e`: the whole pipeline in one command. Locally: emulator, data, training, model
//! upload, image build and push, dev stack, ride events through the real function (as a container
//! when Docker is there, else as a process) driven by our Kinesis poller, then assertions and
//! teardown. Against AWS (`TAXI_TARGET=aws`), the same flow with real Lambda doing the polling.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use clap::Args;
use model::data::{CleanOptions, read_trips};
use model::{Model, Ride};
use serde::Serialize;

use crate::config::{DeadLetter, Target};
use crate::ctx::{Ctx, LocalState};
use crate::deploy::{DeployArgs, deploy, ensure_foundation};
use crate::image::ImageOptions;
use crate::invoke::{FunctionArgs, ModelArgs};
use crate::train::TrainArgs;

/// Run the whole pipeline end to end.
#[derive(Debug, Args)]
pub struct E2eArgs {
    /// Training Parquet files (default: a synthetic month).
    #[arg(long, num_args = 1..)]
    pub train: Vec<PathBuf>,
    /// Validation Parquet files (default: a synthetic month); rides are drawn from them.
    #[arg(long, num_args = 1..)]
    pub val: Vec<PathBuf>,
    /// Ride events to put on the input stream.
    #[arg(long, default_value_t = 1000)]
    pub events: usize,
    /// Rows of each synthetic month.
    #[arg(long, default_value_t = 20_000)]
    pub synthetic_rows: usize,
    /// Keep the stack (and the emulator) after the run.
    #[arg(long)]
    pub keep: bool,
    /// Use a dev-profile bootstrap (faster to build, larger image).
    #[arg(long)]
    pub debug: bool,
    /// Run the function as a process even when Docker is present.
    #[arg(long)]
    pub no_container: bool,
}

/// One step's timing.
#[derive(Debug, Serialize)]
pub struct StepTime {
    pub step: String,
    pub seconds: f64,
    pub detail: String,
}

/// The run's summary.
#[derive(Debug, Serialize, Default)]
pub struct E2eReport {
    pub environment: String,
    pub steps: Vec<StepTime>,
    pub events_in: usize,
    pub valid_in: usize,
    pub invalid_in: usize,
    pub predictions_out: usize,
    pub dead_lettered_out: usize,
    pub max_abs_error: f64,
    pub function_mode: String,
    pub model_version: String,
    /// The tracked training run (MLflow or the local run store).
    pub run_id: String,
    /// The `staging` alias, set on the run once it passed.
    pub staged: Option<crate::tracking::AliasSet>,
    pub torn_down: bool,
    pub seconds: f64,
}

impl std::fmt::Display for E2eReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "e2e {}: passed", self.environment)?;
        writeln!(f, "{:<10} {:>8}  detail", "step", "seconds")?;
        for s in &self.steps {
            writeln!(f, "{:<10} {:>8.2}  {}", s.step, s.seconds, s.detail)?;
        }
        writeln!(
            f,
            "records in: {} ({} valid, {} invalid); out: {} predictions, {} dead-lettered",
            self.events_in,
            self.valid_in,
            self.invalid_in,
            self.predictions_out,
            self.dead_lettered_out
        )?;
        writeln!(
            f,
            "largest |prediction - offline prediction|: {:.3e}",
            self.max_abs_error
        )?;
        write!(
            f,
            "function ran as {}; model {} (run {}); total {:.1} s",
            self.function_mode, self.model_version, self.run_id, self.seconds
        )
    }
}

/// An event put on the input stream and what must become of it.
pub(crate) struct Event {
    pub(crate) partition_key: String,
    pub(crate) data: Vec<u8>,
    pub(crate) expect: Expect,
}

pub(crate) enum Expect {
    Prediction { ride_id: String, offline: f64 },
    DeadLetter { kind: &'static str },
}

/// Invalid events, a few per hundred: each names the dead-letter kind it must get.
fn invalid_event(i: usize) -> (Vec<u8>, &'static str) {
    match i % 5 {
        0 => (b"this is not json".to_vec(), "not_json"),
        1 => (br#"{"ride": {"PULocationID": 130, "DOLocationID": 205}, "ride_id": "x"}"#.to_vec(), "invalid_field"),
        2 => (br#"{"ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": -3.0}, "ride_id": 1}"#.to_vec(), "out_of_range"),
        3 => (br#"{"ride": {"PULocationID": 999, "DOLocationID": 1, "trip_distance": 2.0}, "ride_id": 2}"#.to_vec(), "out_of_range"),
        _ => (br#"{"ride": {"PULocationID": "far", "DOLocationID": 1, "trip_distance": 2.0}, "ride_id": 3}"#.to_vec(), "invalid_field"),
    }
}

struct Timer<'a> {
    report: &'a mut E2eReport,
    ctx: &'a Ctx,
}

impl Timer<'_> {
    /// Runs a step, timing it; a failure names the step.
    async fn step<T, F>(&mut self, name: &str, fut: F) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = anyhow::Result<(T, String)>>,
    {
        self.ctx.note(format!("==> e2e step {name}"));
        let started = Instant::now();
        let (value, detail) = fut
            .await
            .with_context(|| format!("e2e step `{name}` failed"))?;
        self.report.steps.push(StepTime {
            step: name.into(),
            seconds: started.elapsed().as_secs_f64(),
            detail,
        });
        Ok(value)
    }
}

impl E2eArgs {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let report = self.execute(ctx).await?;
        ctx.emit(&report)
    }

    /// Runs the flow and returns the summary; any failure names its step.
    pub async fn execute(&self, ctx: &Ctx) -> anyhow::Result<E2eReport> {
        let started = Instant::now();
        let mut report = E2eReport {
            environment: ctx.env.name.clone(),
            ..Default::default()
        };
        let work = ctx.cache.join("e2e").join(&ctx.env.name);
        std::fs::create_dir_all(&work)?;
        let local = ctx.env.target == Target::Local && ctx.endpoint_override.is_none();
        let mut t = Timer {
            report: &mut report,
            ctx,
        };

        // 1. The emulator.
        let started_emulator = if local {
            t.step("local up", async {
                let was_running = LocalState::read(&ctx.cache)?.is_some();
                let opts = crate::local::UpOptions {
                    cache: ctx.cache.clone(),
                    root: ctx.root.clone(),
                    port: std::env::var("TAXI_LOCAL_PORT")
                        .ok()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(4566),
                    endpoint: None,
                    registry: true,
                    registry_port: None,
                    moto_bin: None,
                };
                let r = crate::local::up(&opts).await?;
                Ok((!was_running, r.action))
            })
            .await?
        } else {
            false
        };

        // 2. Data.
        let (train, val) = t
            .step("data", async {
                if !self.train.is_empty() && !self.val.is_empty() {
                    return Ok((
                        (self.train.clone(), self.val.clone()),
                        "given files".to_string(),
                    ));
                }
                let mk = |month: &str, seed: u64| -> anyhow::Result<PathBuf> {
                    let out = work.join(format!(
                        "synthetic-{month}-{}-{seed}.parquet",
                        self.synthetic_rows
                    ));
                    if !out.exists() {
                        let spec = model::synth::SynthSpec {
                            month: month.into(),
                            rows: self.synthetic_rows,
                            seed,
                        };
                        model::synth::write(&spec, &out)?;
                    }
                    Ok(out)
                };
                Ok((
                    (vec![mk("2021-01", 1)?], vec![mk("2021-02", 2)?]),
                    format!("synthetic, {} rows a month", self.synthetic_rows),
                ))
            })
            .await?;

        // 3. Training.
        let train_args = TrainArgs {
            train: train.clone(),
            val: val.clone(),
            out: work.join("artifacts"),
            features: "pu_do,trip_distance".into(),
            ridge: 0.0,
            min_duration: 1.0,
            max_duration: 60.0,
        };
        let (run, model) = t
            .step("train", async {
                let (summary, artifact) = train_args.train(ctx)?;
                // Recorded like `cargo xtask train` records it (MLflow or the local run store):
                // deploy takes the model from there, and e2e stages it once it passed.
                let run = crate::tracking::record_artifact_file(
                    ctx,
                    &artifact,
                    &summary.artifact,
                    &train,
                    &val,
                    &[("source", "e2e")],
                )
                .await?;
                let detail = format!(
                    "{} rows, {} features, val RMSE {:.4}, run {} ({})",
                    summary.train_kept,
                    summary.n_features,
                    summary.rmse_val.unwrap_or(f64::NAN),
                    run.run_id,
                    run.tracker
                );
                Ok(((run, Model::from_artifact(artifact)?), detail))
            })
            .await?;
        t.report.model_version = model.version().to_string();
        t.report.run_id = run.run_id.clone();

        // 4-6. Foundation (bucket, repository), image, deploy with the model upload.
        let outputs = t
            .step("stack base", async {
                let (outputs, _) = ensure_foundation(ctx).await?;
                let detail = format!(
                    "bucket {}, repository {}",
                    outputs.model_bucket, outputs.repository_name
                );
                Ok((outputs, detail))
            })
            .await?;
        let published = t
            .step("image", async {
                let opts = ImageOptions {
                    debug: self.debug,
                    model_version: Some(model.version().to_string()),
                    ..Default::default()
                };
                let p = crate::image::publish(
                    ctx,
                    &outputs.repository_name,
                    &outputs.repository_uri,
                    &opts,
                )
                .await?;
                let detail = format!("{} ({:.1} MB)", p.built.tag, p.built.size as f64 / 1e6);
                Ok((p, detail))
            })
            .await?;
        let (image_uri, local_image) = (published.uri.clone(), published.local_ref.clone());
        // 7. Ride events, put before the function and its mapping exist: the mapping starts at
        // TRIM_HORIZON, so they wait in the stream (and moto, which would try to run an image
        // function itself on every put to a mapped stream, never sees a put after the mapping).
        let events = t
            .step("put events", async {
                let events = make_events(&val, self.events, &model)?;
                put_events(ctx, &outputs.input_stream, &events).await?;
                let invalid = events
                    .iter()
                    .filter(|e| matches!(e.expect, Expect::DeadLetter { .. }))
                    .count();
                Ok((events, format!("{} events, {invalid} invalid", self.events)))
            })
            .await?;
        t.report.events_in = events.len();
        t.report.invalid_in = events
            .iter()
            .filter(|e| matches!(e.expect, Expect::DeadLetter { .. }))
            .count();
        t.report.valid_in = events.len() - t.report.invalid_in;

        let deployed = t
            .step("deploy", async {
                let args = DeployArgs {
                    image_uri: Some(image_uri.clone()),
                    model: Some(format!("run:{}", run.run_id)),
                    ..Default::default()
                };
                let r = deploy(ctx, &args).await?;
                let mut outputs = r.outputs.clone().context("deploy returned no outputs")?;
                if let Some(m) = &r.model {
                    outputs
                        .model_location
                        .get_or_insert_with(|| format!("s3://{}/{}", m.bucket, m.key));
                }
                Ok((outputs, format!("{:?}", r.status).to_lowercase()))
            })
            .await?;

        // 8. The function, driven by the event-source emulator (locally) or by Lambda (AWS).
        if local {
            let container = !self.no_container && crate::image::docker().await.is_ok();
            t.report.function_mode = if container { "container" } else { "process" }.into();
            t.step("function", async {
                let model_location = deployed
                    .model_location
                    .clone()
                    .context("the stack sets no MODEL_LOCATION")?;
                let args = FunctionArgs {
                    model: ModelArgs {
                        model_location: Some(model_location),
                        ..Default::default()
                    },
                    image: container.then(|| local_image.clone()),
                    bootstrap: None,
                };
                let drained = crate::esm::drain_with_local_function(ctx, &args).await?;
                Ok(((), drained.to_string()))
            })
            .await?;
        } else {
            t.report.function_mode = "AWS Lambda".into();
        }

        // 9-10. Read the outputs and check them.
        let wait = if local {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(300)
        };
        let (max_err, predictions, dead) = t
            .step("verify", async {
                let r = verify(ctx, &deployed, &events, wait).await?;
                let detail = format!(
                    "{} predictions, {} dead letters, max error {:.1e}",
                    r.1, r.2, r.0
                );
                Ok((r, detail))
            })
            .await?;
        t.report.max_abs_error = max_err;
        t.report.predictions_out = predictions;
        t.report.dead_lettered_out = dead;

        // 10b. The model passed end to end: `staging` points at its run, read back to be sure.
        let staged = t
            .step("stage", async {
                let spec = crate::tracking::ModelSpec::Run(run.run_id.clone());
                let set = crate::tracking::set_alias(ctx, crate::tracking::STAGING, &spec).await?;
                let back = crate::tracking::resolve_model(
                    ctx,
                    &crate::tracking::ModelSpec::Alias(crate::tracking::STAGING.into()),
                )
                .await?;
                ensure!(
                    back.run_id.as_deref() == Some(run.run_id.as_str())
                        && back.artifact.version == model.version(),
                    "alias `{}` resolves to run {:?} (model {}), not the e2e run {} (model {})",
                    crate::tracking::STAGING,
                    back.run_id,
                    back.artifact.version,
                    run.run_id,
                    model.version()
                );
                let detail = set.to_string();
                Ok((set, detail))
            })
            .await?;
        t.report.staged = Some(staged);

        // 11. Teardown (e2e's own stack: no confirmation needed).
        if !self.keep {
            t.step("teardown", async {
                let mut own = ctx.clone();
                own.yes = true;
                let r = crate::teardown::teardown(&own).await?;
                let _ = r;
                if started_emulator {
                    crate::local::down(&ctx.cache)?;
                }
                Ok((
                    (),
                    if started_emulator {
                        "stack deleted, nothing left; emulator stopped"
                    } else {
                        "stack deleted, nothing left"
                    }
                    .to_string(),
                ))
            })
            .await?;
            t.report.torn_down = true;
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
}

/// Valid rides drawn from the validation data, with a few invalid events mixed in (1 in 50).
fn make_events(val: &[PathBuf], n: usize, model: &Model) -> anyhow::Result<Vec<Event>> {
    let (trips, _) = read_trips(val, &CleanOptions::default())?;
    ensure!(
        !trips.is_empty(),
        "the validation data has no rides to send"
    );
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        if i % 50 == 49 {
            let (data, kind) = invalid_event(i / 50);
            events.push(Event {
                partition_key: format!("bad-{i}"),
                data,
                expect: Expect::DeadLetter { kind },
            });
            continue;
        }
        let t = i % trips.len();
        let ride = Ride {
            pickup_hour: None,
            ..trips.ride(t)
        };
        // Ride ids are numbers, and every seventh a string, as producers send both.
        let ride_id = if i % 7 == 0 {
            serde_json::json!(format!("ride-{i}"))
        } else {
            serde_json::json!(i)
        };
        let data = serde_json::to_vec(&serde_json::json!({
            "ride": {"PULocationID": ride.pu_location_id, "DOLocationID": ride.do_location_id, "trip_distance": ride.trip_distance},
            "ride_id": ride_id,
            "source": "e2e",
        }))?;
        let key = id_key(&ride_id);
        events.push(Event {
            partition_key: key.clone(),
            data,
            expect: Expect::Prediction {
                ride_id: key,
                offline: model.predict(&ride),
            },
        });
    }
    Ok(events)
}

/// A ride id as a comparable string: numbers and strings alike.
fn id_key(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) async fn put_events(ctx: &Ctx, stream: &str, events: &[Event]) -> anyhow::Result<()> {
    let kinesis = aws_sdk_kinesis::Client::new(&ctx.aws().await?);
    for chunk in events.chunks(500) {
        let mut pending: Vec<PutRecordsRequestEntry> = chunk
            .iter()
            .map(|e| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(e.data.clone()))
                    .partition_key(&e.partition_key)
                    .build()
            })
            .collect::<Result<_, _>>()?;
        for attempt in 0..5 {
            let out = kinesis
                .put_records()
                .stream_name(stream)
                .set_records(Some(pending.clone()))
                .send()
                .await?;
            if out.failed_record_count().unwrap_or(0) == 0 {
                pending.clear();
                break;
            }
            pending = pending
                .into_iter()
                .zip(out.records())
                .filter(|(_, r)| r.error_code().is_some())
                .map(|(e, _)| e)
                .collect();
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        ensure!(
            pending.is_empty(),
            "{} events could not be put on {stream}",
            pending.len()
        );
    }
    Ok(())
}

/// Every record of a stream, from the start.
pub async fn read_stream(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    read_stream_since(kinesis, stream, None).await
}

/// The records of every shard of `stream` that arrived at `since` or later (`None`: all the
/// stream holds), as (partition key, data).
pub async fn read_stream_since(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    since: Option<aws_smithy_types::DateTime>,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let shards = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .with_context(|| format!("list shards of {stream}"))?;
    let mut out = Vec::new();
    for shard in shards.shards() {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(match since {
                Some(_) => ShardIteratorType::AtTimestamp,
                None => ShardIteratorType::TrimHorizon,
            })
            .set_timestamp(since)
            .send()
            .await?
            .shard_iterator()
            .map(String::from);
        while let Some(it) = iterator {
            let page = kinesis
                .get_records()
                .shard_iterator(it)
                .limit(10_000)
                .send()
                .await?;
            for r in page.records() {
                out.push((
                    r.partition_key().unwrap_or_default().to_string(),
                    r.data().as_ref().to_vec(),
                ));
            }
            if page.records().is_empty()
                || page.millis_behind_latest() == Some(0) && page.records().len() < 10_000
            {
                break;
            }
            iterator = page.next_shard_iterator().map(String::from);
        }
    }
    Ok(out)
}

/// Reads predictions and dead letters until every event is accounted for (or `wait` passes),
/// then checks them: one prediction per valid ride id, equal to the offline prediction; each
/// invalid event dead-lettered with its reason; nothing lost, nothing extra.
async fn verify(
    ctx: &Ctx,
    outputs: &crate::stack::ServiceOutputs,
    events: &[Event],
    wait: Duration,
) -> anyhow::Result<(f64, usize, usize)> {
    let sdk = ctx.aws().await?;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let deadline = Instant::now() + wait;
    let (predictions, dead) = loop {
        let predictions = read_stream(&kinesis, &outputs.output_stream).await?;
        let dead = match DeadLetter::parse(&outputs.dead_letter)? {
            DeadLetter::Kinesis(stream) => read_stream(&kinesis, &stream).await?,
            DeadLetter::S3 { bucket, prefix } => {
                read_s3_dead_letters(ctx, &bucket, &prefix).await?
            }
        };
        if predictions.len() + dead.len() >= events.len() || Instant::now() >= deadline {
            break (predictions, dead);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    let mut expected_dead: BTreeMap<String, &str> = BTreeMap::new();
    for e in events {
        match &e.expect {
            Expect::Prediction { ride_id, offline } => {
                expected.insert(ride_id.clone(), *offline);
            }
            Expect::DeadLetter { kind } => {
                expected_dead.insert(e.partition_key.clone(), kind);
            }
        }
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut max_err: f64 = 0.0;
    for (key, data) in &predictions {
        let v: serde_json::Value =
            serde_json::from_slice(data).context("a prediction record is not JSON")?;
        ensure!(
            v["model"] == model::MODEL_NAME,
            "prediction record names model {}",
            v["model"]
        );
        let id = id_key(&v["prediction"]["ride_id"]);
        ensure!(
            &id == key,
            "prediction for ride {id} has partition key {key}"
        );
        let got = v["prediction"]["ride_duration"]
            .as_f64()
            .context("ride_duration is not a number")?;
        let Some(offline) = expected.get(&id) else {
            bail!("a prediction for ride {id}, which was never sent")
        };
        max_err = max_err.max((got - offline).abs());
        ensure!(
            (got - offline).abs() <= 1e-9,
            "ride {id}: the function predicted {got}, the model offline {offline}"
        );
        *seen.entry(id).or_default() += 1;
    }
    let missing: Vec<&String> = expected.keys().filter(|k| !seen.contains_key(*k)).collect();
    ensure!(
        missing.is_empty(),
        "{} valid rides got no prediction, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let dupes: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(
        dupes.is_empty(),
        "rides predicted more than once: {:?}",
        &dupes[..dupes.len().min(5)]
    );

    let mut dead_seen = BTreeSet::new();
    for (key, data) in &dead {
        let v: serde_json::Value =
            serde_json::from_slice(data).context("a dead-letter record is not JSON")?;
        let pk = v["partition_key"].as_str().unwrap_or(key).to_string();
        let Some(kind) = expected_dead.get(&pk) else {
            bail!("an unexpected dead letter for {pk}: {v}")
        };
        ensure!(
            v["kind"] == *kind,
            "event {pk} dead-lettered as {} instead of {kind}",
            v["kind"]
        );
        ensure!(
            v["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "event {pk} dead-lettered without a reason"
        );
        ensure!(
            dead_seen.insert(pk.clone()),
            "event {pk} dead-lettered twice"
        );
    }
    ensure!(
        dead_seen.len() == expected_dead.len(),
        "{} of {} invalid events were dead-lettered",
        dead_seen.len(),
        expected_dead.len()
    );
    Ok((max_err, predictions.len(), dead.len()))
}

async fn read_s3_dead_letters(
    ctx: &Ctx,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let s3 = ctx.s3().await?;
    let mut out = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for obj in page?.contents() {
            let key = obj.key().unwrap_or_default().to_string();
            let body = s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await?
                .body
                .collect()
                .await?
                .into_bytes()
                .to_vec();
            out.push((key, body));
        }
    }
    Ok(out)
}
