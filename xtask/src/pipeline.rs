//! `cargo xtask pipeline`: the retraining flow in one resumable command, in place of the Prefect
//! flow of the project we replace. validate → train → evaluate (against the model the
//! environment runs, on this validation data, with the promotion margin as a quality gate) →
//! register (MLflow or the local run store) → deploy → smoke (rides through the real input
//! stream, compared with offline predictions) → promote (the environment's alias).
//!
//! Every step is recorded in `<runs dir>/pipelines/<id>.json` (and attached to the run in MLflow
//! once it is registered there): start, end, outcome, attempts, a fingerprint of its inputs, and
//! its outputs. `--resume <id>` runs a pipeline again, reusing each step that succeeded with
//! the same fingerprint. Transient failures (network, throttling) are retried with backoff.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use model::data::{CleanOptions, Trips, expand_paths, read_trips, sha256_file};
use model::{Artifact, Model, Ride};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::DeadLetter;
use crate::ctx::Ctx;
use crate::deploy::{DeployArgs, alias_for_env, deploy};
use crate::e2e::{Event, Expect, put_events, read_stream_since};
use crate::invoke::{FunctionArgs, ModelArgs};
use crate::monitor::DriftCheck;
use crate::stack::ServiceOutputs;
use crate::tracking::{self, GateError, ModelSpec, Tracker};
use crate::train::TrainArgs;

/// The steps, in order.
pub const STEPS: [&str; 7] = [
    "validate", "train", "evaluate", "register", "deploy", "smoke", "promote",
];

const DEFAULT_FEATURES: &str = "pu_do,trip_distance";
const TRAINING: &str = "training";
const VALIDATION: &str = "validation";
const DEFAULT_MIN_ROWS: usize = 1000;
const DEFAULT_SMOKE_RIDES: usize = 5;

/// Retrain, gate, deploy, smoke-test and promote, as one resumable run.
#[derive(Debug, Clone, Default, Args)]
pub struct PipelineArgs {
    /// Training Parquet files or directories (on `--resume`: the recorded ones unless given).
    #[arg(long, num_args = 1..)]
    pub train: Vec<PathBuf>,
    /// Validation Parquet files or directories: the candidate and the current model are both
    /// evaluated on them.
    #[arg(long, num_args = 1..)]
    pub val: Vec<PathBuf>,
    /// Features, comma-separated (default pu_do,trip_distance).
    #[arg(long)]
    pub features: Option<String>,
    /// L2 (ridge) penalty (default 0).
    #[arg(long)]
    pub ridge: Option<f64>,
    /// Shortest kept ride, minutes (default 1).
    #[arg(long)]
    pub min_duration: Option<f64>,
    /// Longest kept ride, minutes (default 60).
    #[arg(long)]
    pub max_duration: Option<f64>,
    /// Fewest usable training rows the validate step accepts (default 1000).
    #[arg(long)]
    pub min_rows: Option<usize>,
    /// Rides the smoke test sends through the input stream (default 5).
    #[arg(long)]
    pub smoke_rides: Option<usize>,
    /// Deploy this image (in the environment's repository) instead of building one.
    #[arg(long, conflicts_with = "keep_image")]
    pub image_uri: Option<String>,
    /// Keep the image the function runs now.
    #[arg(long)]
    pub keep_image: bool,
    /// Build a dev-profile bootstrap (faster to build, larger image).
    #[arg(long)]
    pub debug_image: bool,
    /// Smoke-test the function as a process even when Docker is present.
    #[arg(long)]
    pub no_container: bool,
    /// Deploy even when the candidate is worse than the current model by more than the margin.
    #[arg(long)]
    pub force: bool,
    /// Resume this pipeline: reuse the steps that succeeded with unchanged inputs.
    #[arg(long, value_name = "PIPELINE_ID")]
    pub resume: Option<String>,
    /// Run only when this `cargo xtask monitor --output json` summary (or its --report
    /// summary.json) says that drift fired (a dataset- or prediction-drift alert).
    #[arg(long, value_name = "REPORT.json")]
    pub if_drift: Option<PathBuf>,
    /// Retries per step for transient failures (network, throttling).
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// The first retry's delay, doubled for each further one.
    #[arg(long, default_value_t = 1000, hide = true)]
    pub retry_base_ms: u64,
}

/// What a pipeline runs on: the flags, completed with the recorded ones on `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub train: Vec<PathBuf>,
    pub val: Vec<PathBuf>,
    pub features: String,
    pub ridge: f64,
    pub min_duration: f64,
    pub max_duration: f64,
    pub min_rows: usize,
    pub smoke_rides: usize,
    pub image_uri: Option<String>,
    pub keep_image: bool,
    pub debug_image: bool,
    pub no_container: bool,
    pub force: bool,
}

impl Inputs {
    /// The deploy flags these inputs give; the model is the caller's.
    fn deploy_args(&self) -> DeployArgs {
        DeployArgs {
            image_uri: self.image_uri.clone(),
            keep_image: self.keep_image,
            debug_image: self.debug_image,
            force: self.force,
            // The pipeline promotes after the smoke test, not deploy.
            no_promote: true,
            ..Default::default()
        }
    }
}

impl PipelineArgs {
    /// The inputs: these flags over `recorded` (a resumed pipeline's), over the defaults.
    pub fn inputs(&self, recorded: Option<&Inputs>) -> anyhow::Result<Inputs> {
        let base = recorded.cloned().unwrap_or(Inputs {
            train: Vec::new(),
            val: Vec::new(),
            features: DEFAULT_FEATURES.into(),
            ridge: 0.0,
            min_duration: 1.0,
            max_duration: 60.0,
            min_rows: DEFAULT_MIN_ROWS,
            smoke_rides: DEFAULT_SMOKE_RIDES,
            image_uri: None,
            keep_image: false,
            debug_image: false,
            no_container: false,
            force: false,
        });
        let pick = |given: &[PathBuf], had: Vec<PathBuf>| {
            if given.is_empty() {
                had
            } else {
                given.to_vec()
            }
        };
        // A new image choice replaces the recorded one.
        let (image_uri, keep_image) = match (&self.image_uri, self.keep_image) {
            (Some(uri), _) => (Some(uri.clone()), false),
            (None, true) => (None, true),
            (None, false) => (base.image_uri, base.keep_image),
        };
        let inputs = Inputs {
            train: pick(&self.train, base.train),
            val: pick(&self.val, base.val),
            features: self.features.clone().unwrap_or(base.features),
            ridge: self.ridge.unwrap_or(base.ridge),
            min_duration: self.min_duration.unwrap_or(base.min_duration),
            max_duration: self.max_duration.unwrap_or(base.max_duration),
            min_rows: self.min_rows.unwrap_or(base.min_rows),
            smoke_rides: self.smoke_rides.unwrap_or(base.smoke_rides),
            image_uri,
            keep_image,
            debug_image: self.debug_image || base.debug_image,
            no_container: self.no_container || base.no_container,
            // An override is given for the run it is typed for, never inherited.
            force: self.force,
        };
        ensure!(
            !inputs.train.is_empty(),
            "no training data: pass --train <files or folders> (or --resume a pipeline that had them)"
        );
        ensure!(
            !inputs.val.is_empty(),
            "no validation data: pass --val <files or folders>; the quality gate compares the new and the current model on it"
        );
        ensure!(inputs.smoke_rides > 0, "--smoke-rides must be at least 1");
        Ok(inputs)
    }

    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let record = self.execute(ctx).await?;
        ctx.emit(&record)?;
        match record.status {
            PipelineStatus::Succeeded | PipelineStatus::NoDrift => Ok(()),
            _ => bail!(
                "pipeline {} {}: {}; fix the cause and resume with `cargo xtask pipeline --env {} --resume {}`",
                record.id,
                record.status,
                record.error.as_deref().unwrap_or("see the steps above"),
                record.env,
                record.id
            ),
        }
    }

    /// Runs (or resumes) the pipeline and returns its record, whatever the outcome; an error
    /// only when the pipeline could not start (bad flags, an unknown `--resume` id).
    pub async fn execute(&self, ctx: &Ctx) -> anyhow::Result<PipelineRecord> {
        let dir = pipelines_dir(ctx)?;
        let previous = match &self.resume {
            Some(id) => Some(PipelineRecord::load(&dir, id)?),
            None => None,
        };
        if let Some(p) = &previous {
            ensure!(
                p.env == ctx.env.name,
                "pipeline {} ran in `{}`, not `{}`: resume it with --env {}",
                p.id,
                p.env,
                ctx.env.name,
                p.env
            );
        }
        let inputs = self.inputs(previous.as_ref().map(|p| &p.inputs))?;
        // Prod is confirmed once, up front, not after training (deploy would ask again).
        let confirmed;
        let ctx = if ctx.env.name == "prod" && !ctx.dry_run {
            ctx.confirm("retrain and deploy the service")?;
            confirmed = Ctx {
                yes: true,
                ..ctx.clone()
            };
            &confirmed
        } else {
            ctx
        };
        let now = now();
        let mut record = match &previous {
            Some(p) => PipelineRecord {
                attempts: p.attempts + 1,
                updated: now.clone(),
                status: PipelineStatus::Running,
                inputs,
                steps: Vec::new(),
                error: None,
                dry_run: ctx.dry_run,
                ..p.clone()
            },
            None => PipelineRecord {
                id: new_id(),
                env: ctx.env.name.clone(),
                created: now.clone(),
                updated: now,
                attempts: 1,
                status: PipelineStatus::Running,
                inputs,
                steps: Vec::new(),
                run_id: None,
                error: None,
                drift: None,
                path: None,
                seconds: 0.0,
                dry_run: ctx.dry_run,
            },
        };
        if let Some(report) = &self.if_drift {
            let drift = crate::monitor::drift_in_summary(report)?;
            record.drift = Some(drift.clone());
            if !drift.fired {
                ctx.note(format!(
                    "no drift in {}: nothing to retrain",
                    report.display()
                ));
                record.status = PipelineStatus::NoDrift;
                return Ok(record);
            }
            ctx.note(format!(
                "drift fired in {}: {}",
                report.display(),
                drift.detail
            ));
        }
        let mut runner = Runner {
            ctx,
            dir,
            record,
            previous: previous
                .map(|p| p.steps.into_iter().map(|s| (s.name.clone(), s)).collect())
                .unwrap_or_default(),
            retries: self.retries,
            base: Duration::from_millis(self.retry_base_ms),
            started: Instant::now(),
        };
        let outcome = runner.steps().await;
        Ok(runner.finish(outcome).await)
    }
}

/// How a pipeline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineStatus {
    Running,
    Succeeded,
    Failed,
    /// The quality gate refused the candidate: nothing was deployed.
    StoppedByGate,
    /// `--if-drift` found no drift: nothing ran.
    NoDrift,
}

impl fmt::Display for PipelineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::StoppedByGate => "stopped by the quality gate",
            Self::NoDrift => "skipped (no drift)",
        })
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Succeeded,
    /// Succeeded in an earlier attempt with the same inputs; not run again.
    Reused,
    Failed,
    /// Nothing to do: promote in dev (no alias), or what a dry run leaves out.
    Skipped,
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Succeeded => "succeeded",
            Self::Reused => "reused",
            Self::Failed => "FAILED",
            Self::Skipped => "skipped",
        })
    }
}

/// One step of one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub status: StepStatus,
    pub started: String,
    pub ended: String,
    pub seconds: f64,
    /// Tries in this attempt (retries of transient failures included); 0 when reused.
    pub attempts: u32,
    /// SHA-256 of the step's inputs (data checksums, parameters, earlier steps' outputs).
    pub fingerprint: String,
    pub outputs: Value,
    pub detail: String,
    pub error: Option<String>,
}

/// A pipeline's record, kept at `<runs dir>/pipelines/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRecord {
    pub id: String,
    pub env: String,
    pub created: String,
    pub updated: String,
    /// 1, then one more for each `--resume`.
    pub attempts: u32,
    pub status: PipelineStatus,
    pub inputs: Inputs,
    /// This attempt's steps.
    pub steps: Vec<StepRecord>,
    /// The registered training run, once the register step ran.
    pub run_id: Option<String>,
    pub error: Option<String>,
    pub drift: Option<DriftCheck>,
    /// Where the record is kept.
    pub path: Option<PathBuf>,
    pub seconds: f64,
    /// `--dry-run`: validated, trained and evaluated; the deploy's change set shown; nothing
    /// recorded or changed. Resuming it runs the rest for real.
    #[serde(default)]
    pub dry_run: bool,
}

impl PipelineRecord {
    /// The record of pipeline `id`.
    pub fn load(dir: &Path, id: &str) -> anyhow::Result<Self> {
        ensure!(
            !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "`{id}` is not a pipeline id (like p-20261204t101500-1a2b3c)"
        );
        let path = dir.join(format!("{id}.json"));
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no pipeline `{id}` in {}: pass an id a pipeline printed, or start a new one without --resume",
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    /// The step named `name` of this attempt.
    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The outputs of step `name`, parsed.
    pub fn outputs<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        self.step(name)
            .and_then(|s| serde_json::from_value(s.outputs.clone()).ok())
    }
}

impl fmt::Display for PipelineRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pipeline {} ({}, attempt {}): {}{} in {:.1} s",
            self.id,
            self.env,
            self.attempts,
            self.status,
            if self.dry_run { " (dry run)" } else { "" },
            self.seconds
        )?;
        if let Some(run) = &self.run_id {
            writeln!(f, "run       {run}")?;
        }
        if let Some(d) = &self.drift {
            writeln!(f, "drift     {} ({})", d.fired, d.detail)?;
        }
        writeln!(
            f,
            "{:<9} {:<10} {:>8} {:>8}  detail",
            "step", "status", "attempts", "seconds"
        )?;
        for s in &self.steps {
            let detail = match &s.error {
                Some(e) => e.as_str(),
                None => s.detail.as_str(),
            };
            writeln!(
                f,
                "{:<9} {:<10} {:>8} {:>8.1}  {detail}",
                s.name, s.status, s.attempts, s.seconds
            )?;
        }
        for name in STEPS.iter().filter(|n| self.step(n).is_none()) {
            writeln!(f, "{name:<9} {:<10} {:>8} {:>8}  -", "not run", "-", "-")?;
        }
        if let Some(p) = &self.path {
            write!(f, "record    {}", p.display())?;
        }
        Ok(())
    }
}

/// `<runs dir>/pipelines`: beside the local run store's runs.
pub fn pipelines_dir(ctx: &Ctx) -> anyhow::Result<PathBuf> {
    Ok(tracking::Settings::from_ctx(ctx)?
        .runs_dir
        .join("pipelines"))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn new_id() -> String {
    format!(
        "p-{}-{:06x}",
        chrono::Utc::now().format("%Y%m%dt%H%M%S"),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// SHA-256 of a value's canonical JSON (serde_json sorts object keys).
pub fn fingerprint(inputs: &Value) -> String {
    hex::encode(Sha256::digest(inputs.to_string().as_bytes()))
}

/// Files with their checksums, for fingerprints: a changed month changes the fingerprint.
fn file_checksums(inputs: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    expand_paths(inputs)?
        .into_iter()
        .map(|p| Ok((p.display().to_string(), sha256_file(&p)?)))
        .collect()
}

/// Runs CPU- and file-bound work (polars) off the async threads, on any runtime flavour.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a pipeline task panicked")?
}

/// True for failures worth retrying: the network (connection refused or reset, timeouts,
/// dispatch failures, an unreachable MLflow) and throttling or a busy service.
pub fn is_transient(e: &anyhow::Error) -> bool {
    const MARKERS: [&str; 16] = [
        "dispatch failure",
        "DispatchFailure",
        "TimeoutError",
        "timed out",
        "connection refused",
        "Connection refused",
        "connection reset",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
        "SlowDown",
        "ServiceUnavailable",
        "InternalFailure",
        "is unreachable",
    ];
    if e.chain().any(|c| c.downcast_ref::<GateError>().is_some()) {
        return false;
    }
    e.chain().any(|c| {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | ConnectionReset | ConnectionAborted | TimedOut | BrokenPipe
            ) {
                return true;
            }
        }
        if let Some(r) = c.downcast_ref::<reqwest::Error>()
            && (r.is_connect() || r.is_timeout())
        {
            return true;
        }
        let text = format!("{c} {c:?}");
        MARKERS.iter().any(|m| text.contains(m))
    })
}

/// The delay before retry `n` (1-based): `base`, doubled each time.
pub fn backoff(base: Duration, n: u32) -> Duration {
    base * 2u32.saturating_pow(n.saturating_sub(1).min(10))
}

/// Runs `f` up to `1 + retries` times while it fails transiently, with backoff; returns the
/// result and the number of tries.
pub async fn with_retries<T>(
    ctx: &Ctx,
    what: &str,
    retries: u32,
    base: Duration,
    mut f: impl AsyncFnMut() -> anyhow::Result<T>,
) -> (anyhow::Result<T>, u32) {
    let mut tries = 0;
    loop {
        tries += 1;
        match f().await {
            Err(e) if tries <= retries && is_transient(&e) => {
                let delay = backoff(base, tries);
                ctx.note(format!(
                    "{what}: transient failure ({e:#}); retry {tries} of {retries} in {delay:?}"
                ));
                tokio::time::sleep(delay).await;
            }
            other => return (other, tries),
        }
    }
}

struct Runner<'a> {
    ctx: &'a Ctx,
    dir: PathBuf,
    record: PipelineRecord,
    previous: BTreeMap<String, StepRecord>,
    retries: u32,
    base: Duration,
    started: Instant,
}

/// What the validate step found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validated {
    pub files: Vec<FileCheck>,
}

impl Validated {
    /// Rows kept after cleaning in the `training` or `validation` files.
    pub fn kept(&self, set: &str) -> usize {
        self.files
            .iter()
            .filter(|f| f.set == set)
            .map(|f| f.kept)
            .sum()
    }

    /// The checksums of the `training` or `validation` files.
    fn checksums(&self, set: &str) -> Vec<&str> {
        self.files
            .iter()
            .filter(|f| f.set == set)
            .map(|f| f.sha256.as_str())
            .collect()
    }
}

/// One data file as the validate step read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileCheck {
    /// `training` or `validation`.
    pub set: String,
    pub path: String,
    pub sha256: String,
    pub rows: usize,
    pub kept: usize,
}

/// The trained candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trained {
    pub version: String,
    pub artifact: PathBuf,
    pub rmse_train: f64,
    pub rmse_val: Option<f64>,
    pub train_kept: usize,
}

/// The candidate against the current model, on the same validation rides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluated {
    pub candidate_version: String,
    pub candidate_rmse: f64,
    pub current_version: Option<String>,
    pub current_source: Option<String>,
    pub current_rmse: Option<f64>,
    pub rides: usize,
    pub margin: f64,
    /// `pass`, `forced` or `first` (no current model).
    pub decision: String,
}

/// The deployed service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployed {
    pub status: String,
    pub outputs: ServiceOutputs,
    /// The image as the local Docker engine knows it, when deploy built it.
    pub local_image: Option<String>,
}

/// What the smoke test saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Smoked {
    pub rides: usize,
    pub predicted: usize,
    pub max_abs_error: f64,
    pub ride_id_prefix: String,
    pub function_mode: String,
}

impl Runner<'_> {
    /// Saves the record locally (after every step: what `--resume` reads).
    async fn save(&mut self) -> anyhow::Result<Vec<u8>> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("create {}", self.dir.display()))?;
        let path = self.dir.join(format!("{}.json", self.record.id));
        self.record.path = Some(path.clone());
        self.record.updated = now();
        self.record.seconds = self.started.elapsed().as_secs_f64();
        let bytes = serde_json::to_vec_pretty(&self.record)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, &bytes).with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))?;
        Ok(bytes)
    }

    /// Runs one step: reused when it succeeded before with the same fingerprint (and `still_valid`
    /// holds for its outputs), else run with retries. The record is saved after each step.
    async fn step<T: Serialize + DeserializeOwned>(
        &mut self,
        name: &str,
        inputs: anyhow::Result<Value>,
        still_valid: impl Fn(&T) -> bool,
        f: impl AsyncFnMut() -> anyhow::Result<(T, String)>,
    ) -> anyhow::Result<T> {
        let started = now();
        let clock = Instant::now();
        let (result, fingerprint, attempts) = match inputs {
            Err(e) => (Err(e), String::new(), 0),
            Ok(inputs) => {
                let fp = fingerprint(&inputs);
                let reusable = self.previous.get(name).filter(|p| {
                    matches!(p.status, StepStatus::Succeeded | StepStatus::Reused)
                        && p.fingerprint == fp
                });
                if let Some(prev) = reusable
                    && let Ok(value) = serde_json::from_value::<T>(prev.outputs.clone())
                    && still_valid(&value)
                {
                    self.ctx.note(format!(
                        "==> pipeline step {name}: reused (succeeded before with the same inputs)"
                    ));
                    let mut reused = prev.clone();
                    reused.status = StepStatus::Reused;
                    reused.attempts = 0;
                    self.record.steps.push(reused);
                    self.save().await?;
                    return Ok(value);
                }
                self.ctx.note(format!("==> pipeline step {name}"));
                let what = format!("step {name}");
                let (r, tries) = with_retries(self.ctx, &what, self.retries, self.base, f).await;
                (r, fp, tries)
            }
        };
        let mut record = StepRecord {
            name: name.into(),
            status: StepStatus::Succeeded,
            started,
            ended: now(),
            seconds: clock.elapsed().as_secs_f64(),
            attempts,
            fingerprint,
            outputs: Value::Null,
            detail: String::new(),
            error: None,
        };
        let result = match result {
            Ok((value, detail)) => {
                record.outputs = serde_json::to_value(&value)?;
                record.detail = detail;
                Ok(value)
            }
            Err(e) => {
                record.status = StepStatus::Failed;
                record.error = Some(format!("{e:#}"));
                Err(e.context(format!("pipeline step `{name}` failed")))
            }
        };
        self.record.steps.push(record);
        self.save().await?;
        result
    }

    /// Records a step that has nothing to do.
    async fn skip(&mut self, name: &str, detail: String) -> anyhow::Result<()> {
        let at = now();
        self.record.steps.push(StepRecord {
            name: name.into(),
            status: StepStatus::Skipped,
            started: at.clone(),
            ended: at,
            seconds: 0.0,
            attempts: 0,
            fingerprint: String::new(),
            outputs: Value::Null,
            detail,
            error: None,
        });
        self.save().await.map(drop)
    }

    /// Ends the run: the status from the outcome, the record saved.
    async fn finish(&mut self, outcome: anyhow::Result<()>) -> PipelineRecord {
        self.record.status = match &outcome {
            Ok(()) => PipelineStatus::Succeeded,
            Err(e) if e.chain().any(|c| c.downcast_ref::<GateError>().is_some()) => {
                PipelineStatus::StoppedByGate
            }
            Err(_) => PipelineStatus::Failed,
        };
        if let Err(e) = &outcome {
            self.record.error = Some(format!("{e:#}"));
        }
        match self.save().await {
            Err(e) => self.ctx.note(format!(
                "warning: the pipeline record could not be saved: {e:#}"
            )),
            // The final record goes to the MLflow run too, once there is one (a no-op for the
            // local store, which keeps it beside its runs).
            Ok(bytes) => {
                if let Some(run) = &self.record.run_id {
                    let rel = format!("pipeline/{}.json", self.record.id);
                    let attached = match Tracker::from_ctx(self.ctx) {
                        Ok(tracker) => tracker.attach(run, &rel, &bytes).await.map(|_| ()),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = attached {
                        self.ctx.note(format!(
                            "warning: the pipeline record is kept locally, but not in MLflow: {e:#}"
                        ));
                    }
                }
            }
        }
        self.record.clone()
    }

    async fn steps(&mut self) -> anyhow::Result<()> {
        let ctx = self.ctx;
        let id = self.record.id.clone();
        let inputs = self.record.inputs.clone();
        let clean = CleanOptions {
            min_minutes: inputs.min_duration,
            max_minutes: inputs.max_duration,
        };

        // 1. Validate: every file readable as trip records, with rows that survive cleaning.
        let validate_inputs = (|| -> anyhow::Result<Value> {
            Ok(json!({
                "train": file_checksums(&inputs.train)?,
                "val": file_checksums(&inputs.val)?,
                "min_rows": inputs.min_rows,
                "clean": [inputs.min_duration, inputs.max_duration],
            }))
        })();
        let validated: Validated = self
            .step(
                "validate",
                validate_inputs,
                |_| true,
                async || {
                    let (i, c) = (inputs.clone(), clean);
                    let v = blocking(move || validate(&i, &c)).await?;
                    let detail = format!(
                        "{} files; {} training rows, {} validation rows usable",
                        v.files.len(),
                        v.kept(TRAINING),
                        v.kept(VALIDATION)
                    );
                    Ok((v, detail))
                },
            )
            .await?;

        // 2. Train.
        let out_dir = self.dir.join(&self.record.id).join("artifacts");
        let train_inputs = json!({
            "files": validated.files.iter().map(|f| [&f.path, &f.sha256]).collect::<Vec<_>>(),
            "features": inputs.features,
            "ridge": inputs.ridge,
            "clean": [inputs.min_duration, inputs.max_duration],
        });
        let trained: Trained = self
            .step(
                "train",
                Ok(train_inputs),
                |t: &Trained| t.artifact.is_file(),
                async || {
                    let args = TrainArgs {
                        train: inputs.train.clone(),
                        val: inputs.val.clone(),
                        out: out_dir.clone(),
                        features: inputs.features.clone(),
                        ridge: inputs.ridge,
                        min_duration: inputs.min_duration,
                        max_duration: inputs.max_duration,
                    };
                    let own = ctx.clone();
                    let (s, _) = blocking(move || args.train(&own)).await?;
                    let detail = format!(
                        "model {}, {} rows, {} features, val RMSE {:.4}",
                        s.version,
                        s.train_kept,
                        s.n_features,
                        s.rmse_val.unwrap_or(f64::NAN)
                    );
                    Ok((
                        Trained {
                            version: s.version,
                            artifact: s.artifact,
                            rmse_train: s.rmse_train,
                            rmse_val: s.rmse_val,
                            train_kept: s.train_kept,
                        },
                        detail,
                    ))
                },
            )
            .await?;
        let candidate = Artifact::load(&trained.artifact)
            .with_context(|| format!("load the candidate {}", trained.artifact.display()))?;

        // 3. Evaluate against what the environment runs now, on the same validation rides.
        let (current, tries) = with_retries(
            ctx,
            "read the current model",
            self.retries,
            self.base,
            async || crate::deploy::current_model(ctx).await,
        )
        .await;
        let margin = ctx.env.promotion_margin;
        let (eval_inputs, current) = match current {
            Ok(current) => (
                Ok(json!({
                    "candidate": trained.version,
                    "current": current.as_ref().map(|c| c.artifact.version.clone()),
                    "val": validated.checksums(VALIDATION),
                    "margin": margin,
                    "force": inputs.force,
                })),
                current,
            ),
            Err(e) => (
                Err(e.context(format!(
                    "read the model `{}` runs now ({tries} tries)",
                    ctx.env.name
                ))),
                None,
            ),
        };
        // The validation rides, read once for evaluate and smoke (when either runs).
        let val_trips = tokio::sync::OnceCell::<Arc<Trips>>::new();
        let load_val = || {
            val_trips.get_or_try_init(|| async {
                let (val, c) = (inputs.val.clone(), clean);
                blocking(move || Ok(Arc::new(read_trips(&val, &c)?.0))).await
            })
        };
        let _evaluated: Evaluated = self
            .step(
                "evaluate",
                eval_inputs,
                |_| true,
                async || {
                    let trips = Arc::clone(load_val().await?);
                    let (a, c, force) = (candidate.clone(), current.clone(), inputs.force);
                    blocking(move || evaluate(&a, c.as_ref(), &trips, force, margin)).await
                },
            )
            .await?;

        // A dry run stops here: nothing is recorded, the deploy only shows its change set.
        if ctx.dry_run {
            let plan = deploy(
                ctx,
                &DeployArgs {
                    model_file: Some(trained.artifact.clone()),
                    ..inputs.deploy_args()
                },
            )
            .await
            .context("dry run of the deploy")?;
            for name in ["register", "deploy", "smoke", "promote"] {
                let detail = match name {
                    "deploy" => format!(
                        "dry run: {} change set(s) shown, nothing changed",
                        plan.plans.len()
                    ),
                    _ => "dry run".to_string(),
                };
                self.skip(name, detail).await?;
            }
            return Ok(());
        }

        // 4. Register the run and its model.
        // The artifact's bytes, metrics included: the same coefficients validated on other rides
        // are another run.
        let register_inputs = sha256_file(&trained.artifact)
            .map(|sha| json!({"model": trained.version, "artifact_sha256": sha, "env": ctx.env.name}))
            .map_err(anyhow::Error::from);
        let run: tracking::RunRecord = self
            .step(
                "register",
                register_inputs,
                |_| true,
                async || {
                    let run = tracking::record_artifact_file(
                        ctx,
                        &candidate,
                        &trained.artifact,
                        &inputs.train,
                        &inputs.val,
                        &[("pipeline", &id)],
                    )
                    .await?;
                    let detail = run.to_string().replace('\n', ";");
                    Ok((run, detail))
                },
            )
            .await?;
        self.record.run_id = Some(run.run_id.clone());

        // 5. Deploy that run.
        let deploy_args = DeployArgs {
            model: Some(format!("run:{}", run.run_id)),
            ..inputs.deploy_args()
        };
        let deploy_inputs = json!({
            "run": run.run_id,
            "image_uri": inputs.image_uri,
            "keep_image": inputs.keep_image,
            "debug_image": inputs.debug_image,
            "force": inputs.force,
            "config": serde_json::to_value(&ctx.env)?,
        });
        let deployed: Deployed = self
            .step(
                "deploy",
                Ok(deploy_inputs),
                |_| true,
                async || {
                    let r = deploy(ctx, &deploy_args).await?;
                    let outputs = r.outputs.clone().context("deploy returned no outputs")?;
                    let detail = format!(
                        "{}; image {}",
                        format!("{:?}", r.status).to_lowercase(),
                        outputs.image_uri.as_deref().unwrap_or("-")
                    );
                    Ok((
                        Deployed {
                            status: format!("{:?}", r.status).to_lowercase(),
                            outputs,
                            local_image: r.image.as_ref().map(|i| i.local_ref.clone()),
                        },
                        detail,
                    ))
                },
            )
            .await?;

        // 6. Smoke: rides through the real input stream, compared with offline predictions.
        let smoke_inputs = json!({
            "run": run.run_id,
            "deployed": serde_json::to_value(&deployed)?,
            "rides": inputs.smoke_rides,
        });
        let model = Model::from_artifact(candidate.clone())?;
        let _smoked: Smoked = self
            .step(
                "smoke",
                Ok(smoke_inputs),
                |_| true,
                async || {
                    let trips = load_val().await?;
                    let s = smoke(ctx, &id, &inputs, trips, &model, &deployed).await?;
                    let detail = format!(
                        "{} of {} rides predicted as offline (max error {:.1e}), function as {}",
                        s.predicted, s.rides, s.max_abs_error, s.function_mode
                    );
                    Ok((s, detail))
                },
            )
            .await?;

        // 7. Promote: the environment's alias moves to the run.
        match alias_for_env(&ctx.env.name) {
            None => {
                self.skip(
                    "promote",
                    format!("`{}` has no alias to move", ctx.env.name),
                )
                .await?;
            }
            Some(alias) => {
                let promote_inputs = json!({"alias": alias, "run": run.run_id});
                let spec = ModelSpec::Run(run.run_id.clone());
                self.step(
                    "promote",
                    Ok(promote_inputs),
                    |_| true,
                    async || {
                        let set = tracking::set_alias(ctx, alias, &spec).await?;
                        let detail = set.to_string();
                        Ok((set, detail))
                    },
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// Reads every file on its own, so an error names the file.
fn validate(inputs: &Inputs, clean: &CleanOptions) -> anyhow::Result<Validated> {
    let mut out = Validated { files: Vec::new() };
    for (set, paths) in [(TRAINING, &inputs.train), (VALIDATION, &inputs.val)] {
        for path in expand_paths(paths)? {
            let (_, mut report) = read_trips(std::slice::from_ref(&path), clean)?;
            ensure!(
                report.rows_read > 0,
                "{set} file {} has no rows: download the month again, or leave it out",
                path.display()
            );
            ensure!(
                report.rows_kept > 0,
                "{set} file {}: none of its {} rows survive cleaning (durations {}-{} min, zones 1-265): \
                 check that it is a TLC trip-record month",
                path.display(),
                report.rows_read,
                clean.min_minutes,
                clean.max_minutes
            );
            // read_trips checksummed the file it read.
            let read = report
                .files
                .pop()
                .context("read_trips reports the file it read")?;
            out.files.push(FileCheck {
                set: set.into(),
                path: path.display().to_string(),
                sha256: read.sha256,
                rows: report.rows_read,
                kept: report.rows_kept,
            });
        }
    }
    ensure!(
        out.kept(TRAINING) >= inputs.min_rows,
        "the training files have {} usable rows, fewer than --min-rows {}: add months, or lower --min-rows",
        out.kept(TRAINING),
        inputs.min_rows
    );
    Ok(out)
}

/// Both models on the same validation rides; the gate refuses a candidate worse than the
/// current model by more than the margin, unless forced.
fn evaluate(
    candidate: &Artifact,
    current: Option<&tracking::ResolvedModel>,
    trips: &Trips,
    force: bool,
    margin: f64,
) -> anyhow::Result<(Evaluated, String)> {
    let metrics = |a: &Artifact| -> anyhow::Result<model::Metrics> {
        Ok(model::train::evaluate(
            &Model::from_artifact(a.clone())?,
            trips,
        ))
    };
    let on_these = |a: &Artifact, m: model::Metrics| {
        let mut a = a.clone();
        a.metadata.val_metrics = Some(m);
        a
    };
    let cand = metrics(candidate)?;
    let cur = current.map(|c| metrics(&c.artifact)).transpose()?;
    let decision = match (current, cur) {
        (Some(c), Some(m)) => {
            let gate = tracking::check_promotion(
                &on_these(candidate, cand),
                Some(&on_these(&c.artifact, m)),
                margin,
            );
            match gate {
                Ok(()) => "pass",
                Err(e) if force => {
                    tracing::warn!("quality gate overridden by --force: {e}");
                    "forced"
                }
                Err(e) => return Err(e.into()),
            }
        }
        _ => "first",
    };
    let e = Evaluated {
        candidate_version: candidate.version.clone(),
        candidate_rmse: cand.rmse,
        current_version: current.map(|c| c.artifact.version.clone()),
        current_source: current.map(|c| c.source.clone()),
        current_rmse: cur.map(|m| m.rmse),
        rides: trips.len(),
        margin,
        decision: decision.into(),
    };
    let detail = match (&e.current_version, e.current_rmse) {
        (Some(v), Some(r)) => format!(
            "{decision}: RMSE {:.4} against {r:.4} of the current model {v} on {} rides (margin {:.1} %)",
            e.candidate_rmse,
            e.rides,
            margin * 100.0
        ),
        _ => format!(
            "{decision}: RMSE {:.4} on {} rides; no model deployed to compare with",
            e.candidate_rmse, e.rides
        ),
    };
    Ok((e, detail))
}

/// A few validation rides through the deployed service: put on the input stream, run by the
/// function (locally: our event-source emulator and the function as a container or a process;
/// on AWS: Lambda), read back from the output stream and compared with offline predictions.
async fn smoke(
    ctx: &Ctx,
    pipeline: &str,
    inputs: &Inputs,
    trips: &Trips,
    model: &Model,
    deployed: &Deployed,
) -> anyhow::Result<Smoked> {
    ensure!(
        !trips.is_empty(),
        "the validation data has no rides to send"
    );
    let prefix = format!("smoke-{pipeline}-{:04x}", rand::random::<u16>());
    let n = inputs.smoke_rides;
    let step = (trips.len() / n).max(1);
    let mut expected = BTreeMap::new();
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        let ride = Ride {
            pickup_hour: None,
            ..trips.ride((i * step) % trips.len())
        };
        let ride_id = format!("{prefix}-{i}");
        let offline = model.predict(&ride);
        expected.insert(ride_id.clone(), offline);
        events.push(Event {
            partition_key: ride_id.clone(),
            data: serde_json::to_vec(&json!({
                "ride": {"PULocationID": ride.pu_location_id, "DOLocationID": ride.do_location_id, "trip_distance": ride.trip_distance},
                "ride_id": ride_id,
                "source": "pipeline-smoke",
            }))?,
            expect: Expect::Prediction { ride_id, offline },
        });
    }
    let out = &deployed.outputs;
    // Predictions are read from a little before the put on (clocks differ), not from the start
    // of a stream that may hold a day of traffic.
    let since = aws_smithy_types::DateTime::from_secs(chrono::Utc::now().timestamp() - 60);
    put_events(ctx, &out.input_stream, &events).await?;

    // On an emulator the toolkit is Lambda's poller and runs the function; on AWS, Lambda does.
    let hosted = ctx.on_emulator()?;
    let mut mode = "AWS Lambda".to_string();
    if hosted {
        let container = !inputs.no_container
            && deployed.local_image.is_some()
            && crate::image::docker().await.is_ok();
        mode = if container { "container" } else { "process" }.into();
        let args = FunctionArgs {
            model: ModelArgs {
                // As deployed: MODEL_LOCATION when the stack sets one, else bucket and RUN_ID.
                model_location: out.model_location.clone(),
                run_id: out.run_id.clone(),
                model_bucket: Some(out.model_bucket.clone()),
            },
            image: deployed.local_image.clone().filter(|_| container),
            bootstrap: None,
        };
        crate::esm::drain_with_local_function(ctx, &args)
            .await
            .context("run the smoke rides through the function")?;
    }

    let kinesis = aws_sdk_kinesis::Client::new(&ctx.aws().await?);
    let deadline = Instant::now()
        + if hosted {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(300)
        };
    let mut got: BTreeMap<String, f64> = BTreeMap::new();
    loop {
        for (_, data) in read_stream_since(&kinesis, &out.output_stream, Some(since)).await? {
            let Ok(v) = serde_json::from_slice::<Value>(&data) else {
                continue;
            };
            if let (Some(id), Some(d)) = (
                v["prediction"]["ride_id"].as_str(),
                v["prediction"]["ride_duration"].as_f64(),
            ) && expected.contains_key(id)
            {
                got.insert(id.to_string(), d);
            }
        }
        if got.len() == expected.len() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if got.len() < expected.len() {
        let reasons = dead_letter_reasons(&kinesis, &out.dead_letter, &prefix, since).await;
        bail!(
            "{} of {n} smoke rides got no prediction on {}{}: check the function's logs",
            n - got.len(),
            out.output_stream,
            if reasons.is_empty() {
                String::new()
            } else {
                format!("; dead-lettered: {}", reasons.join("; "))
            }
        );
    }
    let mut max_err: f64 = 0.0;
    for (id, offline) in &expected {
        let online = got[id];
        max_err = max_err.max((online - offline).abs());
        ensure!(
            (online - offline).abs() <= 1e-9,
            "smoke ride {id}: the deployed function predicted {online}, the candidate offline {offline}: \
             the function does not run the model this pipeline trained"
        );
    }
    Ok(Smoked {
        rides: n,
        predicted: got.len(),
        max_abs_error: max_err,
        ride_id_prefix: prefix,
        function_mode: mode,
    })
}

/// The dead-letter reasons of smoke rides, to name why they got no prediction.
async fn dead_letter_reasons(
    kinesis: &aws_sdk_kinesis::Client,
    dead_letter: &str,
    prefix: &str,
    since: aws_smithy_types::DateTime,
) -> Vec<String> {
    let Ok(DeadLetter::Kinesis(stream)) = DeadLetter::parse(dead_letter) else {
        return Vec::new();
    };
    let Ok(records) = read_stream_since(kinesis, &stream, Some(since)).await else {
        return Vec::new();
    };
    records
        .iter()
        .filter(|(key, _)| key.starts_with(prefix))
        .filter_map(|(key, data)| {
            let v: Value = serde_json::from_slice(data).ok()?;
            Some(format!(
                "{key}: {}",
                v["reason"].as_str().unwrap_or("no reason")
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumed_inputs_keep_the_record_and_take_new_flags() {
        let first = PipelineArgs {
            train: vec!["a.parquet".into()],
            val: vec!["b.parquet".into()],
            image_uri: Some("repo:bad".into()),
            force: true,
            ..Default::default()
        }
        .inputs(None)
        .unwrap();
        assert_eq!(first.features, DEFAULT_FEATURES);
        assert_eq!(first.min_rows, DEFAULT_MIN_ROWS);
        let resumed = PipelineArgs {
            image_uri: Some("repo:good".into()),
            ridge: Some(2.0),
            ..Default::default()
        }
        .inputs(Some(&first))
        .unwrap();
        assert_eq!(resumed.train, first.train);
        assert_eq!(resumed.image_uri.as_deref(), Some("repo:good"));
        assert_eq!(resumed.ridge, 2.0);
        assert!(!resumed.force, "--force is not inherited");
        let keep = PipelineArgs {
            keep_image: true,
            ..Default::default()
        }
        .inputs(Some(&first))
        .unwrap();
        assert_eq!((keep.image_uri, keep.keep_image), (None, true));

        let err = PipelineArgs::default().inputs(None).unwrap_err();
        assert!(err.to_string().contains("--train"), "{err}");
        let err = PipelineArgs {
            train: vec!["a.parquet".into()],
            ..Default::default()
        }
        .inputs(None)
        .unwrap_err();
        assert!(err.to_string().contains("--val"), "{err}");
    }

    #[test]
    fn fingerprints_follow_the_inputs_not_their_order() {
        let a = json!({"x": 1, "y": [1, 2]});
        let b: Value = serde_json::from_str(r#"{"y": [1, 2], "x": 1}"#).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&json!({"x": 2, "y": [1, 2]})));
    }

    #[test]
    fn backoff_doubles() {
        let b = Duration::from_millis(100);
        let got: Vec<_> = (1..=4).map(|n| backoff(b, n).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800]);
    }

    #[test]
    fn gate_refusals_and_bad_input_are_not_transient() {
        let gate = anyhow::Error::new(GateError::BadMargin(-1.0)).context("evaluate");
        assert!(!is_transient(&gate));
        assert!(!is_transient(&anyhow::anyhow!("no such file: x.parquet")));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(is_transient(
            &anyhow::Error::new(refused).context("put records")
        ));
    }
}
