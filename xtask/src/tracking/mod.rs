//! Experiment tracking and the model registry.
//!
//! With `MLFLOW_TRACKING_URI` set, training runs go to that MLflow server over its REST API
//! ([`mlflow`]); without it, to an embedded run store in a local directory ([`local`]). Both keep
//! the same concepts: an experiment per environment (`taxi-duration-<env>`), runs with parameters,
//! metrics, tags and the model artifact, and aliases (`staging`, `production`) that name the run a
//! deployment should use. MLflow adds registered model versions; locally an alias points at a run.
//!
//! The registry is shared by every environment on purpose: an alias names a stage in a model's
//! life (tested in staging, serving in production), and `deploy --env prod --model alias:staging`
//! moves the model that passed staging on. Experiments stay per environment.
//!
//! Settings, each from the process environment first, then the environment's `.env.<env>` file:
//! `MLFLOW_TRACKING_URI`, `MLFLOW_EXPERIMENT_NAME` (default `taxi-duration-<env>`),
//! `MLFLOW_REGISTERED_MODEL` (default [`model::MODEL_NAME`]), `MLFLOW_TRACKING_TOKEN` or
//! `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD`, and `TAXI_RUNS_DIR` (default
//! `<repo>/runs`, gitignored) for the local store.

pub mod local;
pub mod mlflow;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, bail};
use model::artifact::Artifact;
use serde::{Deserialize, Serialize};

use crate::ctx::Ctx;

/// The alias e2e sets on a model that passed the end-to-end test.
pub const STAGING: &str = "staging";
/// The alias deploy sets on the model serving in production; the prod gate compares against it.
pub const PRODUCTION: &str = "production";

/// Tag holding the artifact's content-derived version.
pub const TAG_MODEL_VERSION: &str = "taxi.model_version";
/// Tag holding the environment the run was trained for.
pub const TAG_ENV: &str = "taxi.env";
/// MLflow's own tag for the source commit.
pub const TAG_GIT_COMMIT: &str = "mlflow.source.git.commit";

/// Which store holds the runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackerKind {
    /// An MLflow tracking server.
    Mlflow,
    /// The embedded local run store.
    Local,
}

impl fmt::Display for TrackerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mlflow => "mlflow",
            Self::Local => "local",
        })
    }
}

/// What recording a training run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// MLflow's run id, or the local store's sortable id.
    pub run_id: String,
    /// The experiment's name.
    pub experiment: String,
    /// Which store holds the run.
    pub tracker: TrackerKind,
    /// Where the run's model artifact lives (an `mlflow-artifacts:` URI or a local path).
    pub artifact_uri: String,
    /// The registered model version (MLflow only).
    pub model_version: Option<String>,
}

impl fmt::Display for RunRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "run {} in {} experiment `{}`",
            self.run_id, self.tracker, self.experiment
        )?;
        if let Some(v) = &self.model_version {
            write!(f, ", registered as version {v}")?;
        }
        write!(f, "\n  artifact: {}", self.artifact_uri)
    }
}

/// Everything a training run records, derived from the artifact; the same for both stores.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInput {
    /// A readable run name, `train-<model version>`.
    pub run_name: String,
    /// The artifact's content-derived version.
    pub model_version: String,
    /// RFC 3339 time of training.
    pub created_at: String,
    /// Training parameters.
    pub params: BTreeMap<String, String>,
    /// Metrics: errors on training and validation rows, row and feature counts.
    pub metrics: BTreeMap<String, f64>,
    /// Tags: git commit, data file hashes, model version, environment.
    pub tags: BTreeMap<String, String>,
}

impl RunInput {
    /// Builds the record of a training run. `params` win over the artifact's own parameters;
    /// the git commit falls back to `git_commit` when the artifact does not carry one.
    pub fn new(
        artifact: &Artifact,
        params: &BTreeMap<String, String>,
        env: &str,
        git_commit: Option<String>,
    ) -> Self {
        let meta = &artifact.metadata;
        let mut all_params: BTreeMap<String, String> = meta
            .params
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect();
        all_params.extend(params.iter().map(|(k, v)| (k.clone(), v.clone())));

        let mut metrics = BTreeMap::new();
        metrics.insert("rmse_train".to_string(), meta.train_metrics.rmse);
        metrics.insert("mae_train".to_string(), meta.train_metrics.mae);
        metrics.insert("r2_train".to_string(), meta.train_metrics.r2);
        if let Some(val) = &meta.val_metrics {
            metrics.insert("rmse_val".to_string(), val.rmse);
            metrics.insert("mae_val".to_string(), val.mae);
            metrics.insert("r2_val".to_string(), val.r2);
        }
        metrics.insert("train_rows".to_string(), meta.train_rows as f64);
        metrics.insert("val_rows".to_string(), meta.val_rows as f64);
        metrics.insert("n_features".to_string(), meta.n_features as f64);
        // MLflow's JSON API cannot carry NaN or infinities (metrics of an empty split are NaN).
        metrics.retain(|_, v| v.is_finite());

        let mut tags = BTreeMap::new();
        tags.insert(TAG_MODEL_VERSION.to_string(), artifact.version.clone());
        tags.insert(TAG_ENV.to_string(), env.to_string());
        if let Some(commit) = meta.git_commit.clone().or(git_commit) {
            tags.insert(TAG_GIT_COMMIT.to_string(), commit);
        }
        for (split, files) in [("train", &meta.train_files), ("val", &meta.val_files)] {
            for file in files {
                tags.insert(
                    format!("data.{split}.{}.sha256", tag_safe(&file_name(&file.path))),
                    file.sha256.clone(),
                );
            }
        }
        let created_at = if meta.created_at.is_empty() {
            chrono::Utc::now().to_rfc3339()
        } else {
            meta.created_at.clone()
        };
        Self {
            run_name: format!("train-{}", artifact.version),
            model_version: artifact.version.clone(),
            created_at,
            params: all_params,
            metrics,
            tags,
        }
    }
}

fn file_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}

/// MLflow tag keys allow letters, digits, `_ - . / ` and spaces; anything else becomes `_`.
fn tag_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-./ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Which model to use: `alias:<name>`, `run:<id>`, `version:<n>` (MLflow) or `file:<path>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelSpec {
    /// The run (local) or registered version (MLflow) an alias points at.
    Alias(String),
    /// A run's model artifact.
    Run(String),
    /// A registered model version (MLflow only).
    Version(String),
    /// An artifact file.
    File(PathBuf),
}

impl ModelSpec {
    /// Parses `alias:<name>`, `run:<id>`, `version:<n>` or `file:<path>`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let Some((kind, value)) = s.split_once(':') else {
            bail!(
                "model `{s}` has no kind: write alias:production, run:<id>, version:<n> or file:<path>"
            );
        };
        if value.is_empty() {
            bail!("model `{s}` names nothing after `{kind}:`");
        }
        Ok(match kind {
            "alias" => Self::Alias(value.to_string()),
            "run" => Self::Run(value.to_string()),
            "version" => Self::Version(value.to_string()),
            "file" => Self::File(PathBuf::from(value)),
            _ => bail!(
                "model kind `{kind}` in `{s}` is unknown: use alias:, run:, version: or file:"
            ),
        })
    }

    /// Like [`ModelSpec::parse`], but a bare word is a run id (for `runs alias set <alias> <run>`).
    pub fn parse_run_or_spec(s: &str) -> anyhow::Result<Self> {
        if s.contains(':') {
            Self::parse(s)
        } else {
            Self::parse(&format!("run:{s}"))
        }
    }
}

impl std::str::FromStr for ModelSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Alias(a) => write!(f, "alias:{a}"),
            Self::Run(r) => write!(f, "run:{r}"),
            Self::Version(v) => write!(f, "version:{v}"),
            Self::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// A model found by a [`ModelSpec`], verified (format, checksum, coefficients).
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// The artifact file's bytes, as stored.
    pub bytes: Vec<u8>,
    /// The parsed artifact.
    pub artifact: Artifact,
    /// The run it belongs to (none for a plain file).
    pub run_id: Option<String>,
    /// The registered model version, when MLflow has one.
    pub model_version: Option<String>,
    /// Where it came from, for people: `mlflow models:/<name>@production (version 3, run ...)`.
    pub source: String,
}

impl ResolvedModel {
    /// Parses and verifies artifact bytes.
    pub fn from_bytes(
        bytes: Vec<u8>,
        run_id: Option<String>,
        model_version: Option<String>,
        source: String,
    ) -> anyhow::Result<Self> {
        let artifact = Artifact::from_bytes(&bytes)
            .with_context(|| format!("model from {source} is not a valid artifact"))?;
        Ok(Self {
            bytes,
            artifact,
            run_id,
            model_version,
            source,
        })
    }

    /// The validation RMSE, when the model has validation metrics.
    pub fn rmse_val(&self) -> Option<f64> {
        self.artifact.metadata.val_metrics.map(|m| m.rmse)
    }
}

/// One run as a store reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The run id.
    pub run_id: String,
    /// The experiment's name.
    pub experiment: String,
    /// The run's name.
    pub run_name: String,
    /// RUNNING, FINISHED or FAILED (always FINISHED locally).
    pub status: String,
    /// RFC 3339 start time.
    pub created_at: String,
    /// Parameters.
    pub params: BTreeMap<String, String>,
    /// Latest value of each metric.
    pub metrics: BTreeMap<String, f64>,
    /// Tags (MLflow's internal `mlflow.*` tags other than the git commit are left out).
    pub tags: BTreeMap<String, String>,
    /// Where the run's artifacts live.
    pub artifact_uri: String,
    /// Aliases pointing at this run (through its registered version on MLflow).
    pub aliases: Vec<String>,
}

impl RunInfo {
    /// The artifact's content-derived version, from the tag training sets.
    pub fn model_version(&self) -> &str {
        self.tags
            .get(TAG_MODEL_VERSION)
            .map(String::as_str)
            .unwrap_or("-")
    }
}

impl fmt::Display for RunInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "run        {}", self.run_id)?;
        writeln!(f, "name       {}", self.run_name)?;
        writeln!(f, "experiment {}", self.experiment)?;
        writeln!(f, "status     {}", self.status)?;
        writeln!(f, "created    {}", self.created_at)?;
        writeln!(f, "artifacts  {}", self.artifact_uri)?;
        writeln!(
            f,
            "aliases    {}",
            if self.aliases.is_empty() {
                "-".to_string()
            } else {
                self.aliases.join(", ")
            }
        )?;
        for (title, map) in [("params", &self.params), ("tags", &self.tags)] {
            writeln!(f, "{title}:")?;
            for (k, v) in map {
                writeln!(f, "  {k} = {v}")?;
            }
        }
        writeln!(f, "metrics:")?;
        for (k, v) in &self.metrics {
            writeln!(f, "  {k} = {v}")?;
        }
        Ok(())
    }
}

/// Tracker settings, resolved from the process environment and the `.env.<env>` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `MLFLOW_TRACKING_URI`; none selects the local store.
    pub tracking_uri: Option<String>,
    /// The experiment's name.
    pub experiment: String,
    /// The registered model's name.
    pub registered_model: String,
    /// The local store's directory.
    pub runs_dir: PathBuf,
    /// Credentials for an MLflow server behind authentication.
    pub auth: mlflow::Auth,
}

impl Settings {
    /// Reads the settings for `ctx`'s environment.
    pub fn from_ctx(ctx: &Ctx) -> anyhow::Result<Self> {
        let dotenv: BTreeMap<String, String> =
            crate::config::read_dotenv(&ctx.root.join(format!(".env.{}", ctx.env.name)))?
                .into_iter()
                .collect();
        let get = |key: &str| {
            std::env::var(key)
                .ok()
                .or_else(|| dotenv.get(key).cloned())
                .filter(|v| !v.is_empty())
        };
        let mut s = Self::from_lookup(&ctx.env.name, &ctx.root, get);
        if let Some(dir) = &ctx.runs_dir {
            s.runs_dir = dir.clone();
        }
        if let Some(uri) = &ctx.tracking_uri {
            s.tracking_uri = Some(uri.clone());
        }
        Ok(s)
    }

    /// Builds the settings from a variable lookup; `root` is the repository root.
    pub fn from_lookup(
        env: &str,
        root: &std::path::Path,
        get: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let auth = match (
            get("MLFLOW_TRACKING_TOKEN"),
            get("MLFLOW_TRACKING_USERNAME"),
        ) {
            (Some(token), _) => mlflow::Auth::Bearer(token),
            (None, Some(user)) => {
                mlflow::Auth::Basic(user, get("MLFLOW_TRACKING_PASSWORD").unwrap_or_default())
            }
            (None, None) => mlflow::Auth::None,
        };
        Self {
            tracking_uri: get("MLFLOW_TRACKING_URI"),
            experiment: get("MLFLOW_EXPERIMENT_NAME")
                .unwrap_or_else(|| format!("taxi-duration-{env}")),
            registered_model: get("MLFLOW_REGISTERED_MODEL")
                .unwrap_or_else(|| model::MODEL_NAME.to_string()),
            runs_dir: get("TAXI_RUNS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("runs")),
            auth,
        }
    }
}

/// The store runs go to: an MLflow server or the local directory.
#[derive(Debug, Clone)]
pub enum Tracker {
    /// An MLflow tracking server.
    Mlflow(mlflow::MlflowTracker),
    /// The embedded local run store.
    Local(local::LocalStore),
}

impl Tracker {
    /// The tracker `ctx`'s settings select.
    pub fn from_ctx(ctx: &Ctx) -> anyhow::Result<Self> {
        Self::from_settings(&Settings::from_ctx(ctx)?)
    }

    /// The tracker the settings select: MLflow when a tracking URI is set, else the local store.
    pub fn from_settings(s: &Settings) -> anyhow::Result<Self> {
        Ok(match &s.tracking_uri {
            Some(uri) => Self::Mlflow(mlflow::MlflowTracker::new(
                mlflow::MlflowClient::new(uri, s.auth.clone())?,
                &s.experiment,
                &s.registered_model,
            )),
            None => Self::Local(local::LocalStore::new(&s.runs_dir, &s.experiment)),
        })
    }

    /// Attaches a file to a run: an MLflow artifact at `rel`; the local store keeps the files
    /// beside its runs itself, so there it does nothing and returns false.
    pub async fn attach(&self, run_id: &str, rel: &str, bytes: &[u8]) -> anyhow::Result<bool> {
        match self {
            Self::Mlflow(t) => {
                let run = t.client.get_run(run_id).await?;
                t.client
                    .upload_artifact(&run.info.artifact_uri, rel, bytes)
                    .await
                    .with_context(|| format!("attach {rel} to MLflow run {run_id}"))?;
                Ok(true)
            }
            Self::Local(_) => Ok(false),
        }
    }

    /// Which store this is.
    pub fn kind(&self) -> TrackerKind {
        match self {
            Self::Mlflow(_) => TrackerKind::Mlflow,
            Self::Local(_) => TrackerKind::Local,
        }
    }

    /// The experiment runs are recorded in and listed from.
    pub fn experiment(&self) -> &str {
        match self {
            Self::Mlflow(t) => &t.experiment,
            Self::Local(s) => &s.experiment,
        }
    }

    /// Records a training run with its artifact.
    pub async fn record(
        &self,
        input: &RunInput,
        artifact_bytes: &[u8],
    ) -> anyhow::Result<RunRecord> {
        match self {
            Self::Mlflow(t) => t.record(input, artifact_bytes).await,
            Self::Local(s) => s.record(input, artifact_bytes),
        }
    }

    /// Points `alias` at the model `target` names (a run, a version or another alias).
    pub async fn set_alias(&self, alias: &str, target: &ModelSpec) -> anyhow::Result<AliasSet> {
        check_alias_name(alias)?;
        match self {
            Self::Mlflow(t) => t.set_alias(alias, target).await,
            Self::Local(s) => s.set_alias(alias, target),
        }
    }

    /// Finds and verifies the model `spec` names.
    pub async fn resolve(&self, spec: &ModelSpec) -> anyhow::Result<ResolvedModel> {
        match spec {
            ModelSpec::File(path) => resolve_file(path),
            _ => match self {
                Self::Mlflow(t) => t.resolve(spec).await,
                Self::Local(s) => s.resolve(spec),
            },
        }
    }

    /// The model an alias points at, or `None` when the alias is not set.
    pub async fn resolve_alias(&self, alias: &str) -> anyhow::Result<Option<ResolvedModel>> {
        match self {
            Self::Mlflow(t) => t.resolve_alias(alias).await,
            Self::Local(s) => s.resolve_alias(alias),
        }
    }

    /// The newest runs of the experiment, newest first.
    pub async fn list(&self, limit: usize) -> anyhow::Result<Vec<RunInfo>> {
        match self {
            Self::Mlflow(t) => t.list(limit).await,
            Self::Local(s) => s.list(limit),
        }
    }

    /// One run, by id.
    pub async fn show(&self, run_id: &str) -> anyhow::Result<RunInfo> {
        match self {
            Self::Mlflow(t) => t.show(run_id).await,
            Self::Local(s) => s.show(run_id),
        }
    }
}

/// What `set_alias` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasSet {
    /// The alias.
    pub alias: String,
    /// The run it now points at.
    pub run_id: String,
    /// The registered version it points at (MLflow only).
    pub model_version: Option<String>,
    /// Which store holds it.
    pub tracker: TrackerKind,
}

impl fmt::Display for AliasSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} alias `{}` -> run {}",
            self.tracker, self.alias, self.run_id
        )?;
        if let Some(v) = &self.model_version {
            write!(f, " (registered version {v})")?;
        }
        Ok(())
    }
}

fn check_alias_name(alias: &str) -> anyhow::Result<()> {
    let ok = !alias.is_empty()
        && alias.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        // MLflow reserves `latest` and `v<n>` for its own lookups.
        && alias != "latest"
        && !(alias.starts_with('v') && alias.len() > 1 && alias[1..].chars().all(|c| c.is_ascii_digit()));
    if !ok {
        bail!(
            "alias `{alias}` is not allowed: use letters, digits, `_` or `-` (not `latest` or `v<number>`), e.g. staging"
        );
    }
    Ok(())
}

fn resolve_file(path: &std::path::Path) -> anyhow::Result<ResolvedModel> {
    let bytes =
        std::fs::read(path).with_context(|| format!("read model file {}", path.display()))?;
    ResolvedModel::from_bytes(bytes, None, None, format!("file {}", path.display()))
}

/// Records a training run in the configured store: `cargo xtask train` calls this after the
/// artifact is written.
pub async fn record_training_run(
    ctx: &Ctx,
    artifact: &Artifact,
    artifact_bytes: &[u8],
    params: &BTreeMap<String, String>,
) -> anyhow::Result<RunRecord> {
    let tracker = Tracker::from_ctx(ctx)?;
    let input = RunInput::new(
        artifact,
        params,
        &ctx.env.name,
        crate::util::git_commit(&ctx.root),
    );
    tracker
        .record(&input, artifact_bytes)
        .await
        .with_context(|| format!("record the training run in the {} store", tracker.kind()))
}

/// Records the artifact file `path` (the exact bytes deploy would upload) as a training run,
/// with the data it was trained and validated on and `extra` parameters. `cargo xtask train`,
/// e2e and the pipeline call this.
pub async fn record_artifact_file(
    ctx: &Ctx,
    artifact: &Artifact,
    path: &std::path::Path,
    train: &[PathBuf],
    val: &[PathBuf],
    extra: &[(&str, &str)],
) -> anyhow::Result<RunRecord> {
    let bytes = std::fs::read(path).with_context(|| format!("read back {}", path.display()))?;
    let paths = |p: &[PathBuf]| {
        p.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut params = BTreeMap::from([
        ("train_paths".to_string(), paths(train)),
        ("val_paths".to_string(), paths(val)),
    ]);
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    record_training_run(ctx, artifact, &bytes, &params).await
}

/// Points `alias` (e.g. [`STAGING`], [`PRODUCTION`]) at a run or registered version.
pub async fn set_alias(ctx: &Ctx, alias: &str, target: &ModelSpec) -> anyhow::Result<AliasSet> {
    Tracker::from_ctx(ctx)?
        .set_alias(alias, target)
        .await
        .with_context(|| format!("set alias `{alias}` to {target}"))
}

/// Finds and verifies the model `spec` names; `file:` needs no store.
pub async fn resolve_model(ctx: &Ctx, spec: &ModelSpec) -> anyhow::Result<ResolvedModel> {
    if let ModelSpec::File(path) = spec {
        return resolve_file(path);
    }
    Tracker::from_ctx(ctx)?
        .resolve(spec)
        .await
        .with_context(|| format!("resolve model {spec}"))
}

/// Why the prod gate refuses a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GateError {
    /// The candidate is worse than production by more than the margin.
    #[error(
        "candidate model {candidate_version} has validation RMSE {candidate_rmse:.4}, worse than the current model \
         {current_version}'s {current_rmse:.4} by more than {:.1} % (limit {limit:.4}): train a better model, or pass \
         --force to promote it anyway", margin * 100.0
    )]
    Worse {
        /// The candidate's version.
        candidate_version: String,
        /// The candidate's validation RMSE.
        candidate_rmse: f64,
        /// Production's version.
        current_version: String,
        /// Production's validation RMSE.
        current_rmse: f64,
        /// The allowed relative margin.
        margin: f64,
        /// The largest RMSE that passes.
        limit: f64,
    },
    /// The candidate carries no usable validation RMSE, so it cannot be compared.
    #[error(
        "candidate model {0} has no finite validation RMSE, so it cannot be compared with production: train it with \
         validation data, or pass --force"
    )]
    NoValidation(String),
    /// The margin is not a usable number.
    #[error(
        "promotion margin {0} is invalid: set promotion_margin (or TAXI_PROMOTION_MARGIN) to a number >= 0, e.g. 0.02"
    )]
    BadMargin(f64),
}

/// The prod gate: refuses `candidate` when its validation RMSE exceeds the current production
/// model's by more than `margin` (relative, 0.02 = 2 %). No production model, or one without
/// validation metrics, leaves nothing to compare with, so the candidate passes.
pub fn check_promotion(
    candidate: &Artifact,
    current: Option<&Artifact>,
    margin: f64,
) -> Result<(), GateError> {
    if !(margin.is_finite() && margin >= 0.0) {
        return Err(GateError::BadMargin(margin));
    }
    let candidate_rmse = match candidate.metadata.val_metrics {
        Some(m) if m.rmse.is_finite() => m.rmse,
        _ => return Err(GateError::NoValidation(candidate.version.clone())),
    };
    let Some((current, current_rmse)) = current
        .and_then(|c| c.metadata.val_metrics.map(|m| (c, m.rmse)))
        .filter(|(_, r)| r.is_finite())
    else {
        return Ok(());
    };
    let limit = current_rmse * (1.0 + margin);
    if candidate_rmse > limit {
        return Err(GateError::Worse {
            candidate_version: candidate.version.clone(),
            candidate_rmse,
            current_version: current.version.clone(),
            current_rmse,
            margin,
            limit,
        });
    }
    Ok(())
}

/// The outcome of the prod gate for one candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateReport {
    /// `pass`, `refused` or `forced` (refused, but `--force` given).
    pub decision: GateDecision,
    /// Where the candidate came from.
    pub candidate: String,
    /// The candidate's artifact version.
    pub candidate_version: String,
    /// The candidate's validation RMSE.
    pub candidate_rmse: Option<f64>,
    /// Where the production model came from; none when no production alias is set.
    pub production: Option<String>,
    /// The production model's artifact version.
    pub production_version: Option<String>,
    /// The production model's validation RMSE.
    pub production_rmse: Option<f64>,
    /// The relative margin.
    pub margin: f64,
    /// Why the gate refused, when it did.
    pub reason: Option<String>,
    #[serde(skip)]
    error: Option<GateError>,
}

/// The gate's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GateDecision {
    /// Within the margin, or nothing to compare with.
    Pass,
    /// Worse than production by more than the margin.
    Refused,
    /// Refused, but overridden with `--force`.
    Forced,
}

impl GateReport {
    /// The refusal as an error, when the gate refused and was not forced.
    pub fn into_result(self) -> Result<Self, GateError> {
        match (&self.decision, &self.error) {
            (GateDecision::Refused, Some(e)) => Err(e.clone()),
            _ => Ok(self),
        }
    }
}

impl fmt::Display for GateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rmse = |r: Option<f64>| r.map(|r| format!("{r:.4}")).unwrap_or_else(|| "-".into());
        let decision = match self.decision {
            GateDecision::Pass => "pass",
            GateDecision::Refused => "REFUSED",
            GateDecision::Forced => "forced (refused, overridden by --force)",
        };
        writeln!(
            f,
            "gate       {decision} (margin {:.1} %)",
            self.margin * 100.0
        )?;
        writeln!(
            f,
            "candidate  {} {} rmse_val {}",
            self.candidate_version,
            self.candidate,
            rmse(self.candidate_rmse)
        )?;
        match &self.production {
            Some(p) => write!(
                f,
                "production {} {} rmse_val {}",
                self.production_version.as_deref().unwrap_or("-"),
                p,
                rmse(self.production_rmse)
            )?,
            None => write!(f, "production none (no `{PRODUCTION}` alias yet)")?,
        }
        if let Some(r) = &self.reason {
            write!(f, "\nreason     {r}")?;
        }
        Ok(())
    }
}

/// Runs the prod gate for `candidate` against the model the `production` alias points at, with the
/// environment's margin. `force` turns a refusal into `forced`. Callers stop on
/// [`GateReport::into_result`] errors.
pub async fn gate(ctx: &Ctx, candidate: &ResolvedModel, force: bool) -> anyhow::Result<GateReport> {
    gate_with(
        &Tracker::from_ctx(ctx)?,
        candidate,
        ctx.env.promotion_margin,
        force,
    )
    .await
}

/// [`gate`] with an explicit store and margin.
pub async fn gate_with(
    tracker: &Tracker,
    candidate: &ResolvedModel,
    margin: f64,
    force: bool,
) -> anyhow::Result<GateReport> {
    let current = tracker
        .resolve_alias(PRODUCTION)
        .await
        .context("find the current production model")?;
    Ok(gate_report(candidate, current.as_ref(), margin, force))
}

/// The gate's report for a candidate and the current production model.
pub fn gate_report(
    candidate: &ResolvedModel,
    current: Option<&ResolvedModel>,
    margin: f64,
    force: bool,
) -> GateReport {
    let error = check_promotion(&candidate.artifact, current.map(|c| &c.artifact), margin).err();
    let decision = match (&error, force) {
        (None, _) => GateDecision::Pass,
        (Some(_), true) => GateDecision::Forced,
        (Some(_), false) => GateDecision::Refused,
    };
    GateReport {
        decision,
        candidate: candidate.source.clone(),
        candidate_version: candidate.artifact.version.clone(),
        candidate_rmse: candidate.rmse_val(),
        production: current.map(|c| c.source.clone()),
        production_version: current.map(|c| c.artifact.version.clone()),
        production_rmse: current.and_then(ResolvedModel::rmse_val),
        margin,
        reason: error.as_ref().map(ToString::to_string),
        error,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use model::artifact::{CategoricalBlock, DataFile, NumericCoef, TrainingMetadata};
    use model::{Categorical, FeatureSpec, Metrics, Numeric};

    /// A small valid artifact whose validation RMSE is `rmse_val`; `intercept` makes versions differ.
    pub(crate) fn artifact(intercept: f64, rmse_val: Option<f64>) -> Artifact {
        let mut a = Artifact {
            version: String::new(),
            features: FeatureSpec::default(),
            intercept,
            numeric: vec![NumericCoef {
                term: Numeric::TripDistance,
                coef: 3.0,
            }],
            categorical: vec![CategoricalBlock {
                term: Categorical::PuDo,
                vocabulary: vec!["1_2".into(), "130_205".into()],
                coef: vec![-1.0, 5.0],
            }],
            metadata: TrainingMetadata {
                created_at: "2026-01-02T03:04:05Z".into(),
                git_commit: Some("0123abcd".into()),
                train_files: vec![DataFile {
                    path: "data/green_tripdata_2021-01.parquet".into(),
                    sha256: "aa".repeat(32),
                    rows: 76518,
                }],
                val_files: vec![DataFile {
                    path: "data/green_tripdata_2021-02.parquet".into(),
                    sha256: "bb".repeat(32),
                    rows: 64572,
                }],
                train_rows: 73908,
                val_rows: 61921,
                n_features: 3,
                train_metrics: Metrics {
                    rmse: 5.5,
                    mae: 4.0,
                    r2: 0.5,
                    rows: 73908,
                },
                val_metrics: rmse_val.map(|rmse| Metrics {
                    rmse,
                    mae: 4.5,
                    r2: 0.4,
                    rows: 61921,
                }),
                params: BTreeMap::from([("solver".to_string(), serde_json::json!("exact"))]),
            },
        };
        a.version = a.content_version();
        a
    }

    #[test]
    fn model_specs_parse_and_print_back() {
        for s in [
            "alias:production",
            "run:abc123",
            "version:3",
            "file:models/model.json",
        ] {
            assert_eq!(ModelSpec::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            ModelSpec::parse("alias:staging").unwrap(),
            ModelSpec::Alias("staging".into())
        );
        assert_eq!(
            ModelSpec::parse("file:/a:b").unwrap(),
            ModelSpec::File("/a:b".into())
        );
        assert!(
            ModelSpec::parse("production")
                .unwrap_err()
                .to_string()
                .contains("alias:production")
        );
        assert!(ModelSpec::parse("s3:bucket").is_err());
        assert!(ModelSpec::parse("run:").is_err());
        assert_eq!(
            ModelSpec::parse_run_or_spec("abc").unwrap(),
            ModelSpec::Run("abc".into())
        );
        assert_eq!(
            ModelSpec::parse_run_or_spec("version:2").unwrap(),
            ModelSpec::Version("2".into())
        );
    }

    #[test]
    fn gate_allows_up_to_the_margin_and_refuses_beyond() {
        let current = artifact(1.0, Some(5.0));
        // 5.0 * 1.02 = 5.1: equal to the limit passes, just above refuses.
        assert_eq!(
            check_promotion(&artifact(2.0, Some(5.1)), Some(&current), 0.02),
            Ok(())
        );
        assert_eq!(
            check_promotion(&artifact(2.0, Some(4.0)), Some(&current), 0.02),
            Ok(())
        );
        let err = check_promotion(&artifact(2.0, Some(5.11)), Some(&current), 0.02).unwrap_err();
        assert!(
            matches!(err, GateError::Worse { limit, .. } if (limit - 5.1).abs() < 1e-12),
            "{err:?}"
        );
        assert!(err.to_string().contains("--force"), "{err}");
        // A zero margin refuses anything worse at all.
        assert!(check_promotion(&artifact(2.0, Some(5.0001)), Some(&current), 0.0).is_err());
    }

    #[test]
    fn gate_passes_without_a_baseline_and_refuses_an_unmeasured_candidate() {
        assert_eq!(
            check_promotion(&artifact(2.0, Some(50.0)), None, 0.02),
            Ok(())
        );
        assert_eq!(
            check_promotion(&artifact(2.0, Some(50.0)), Some(&artifact(1.0, None)), 0.02),
            Ok(())
        );
        let unmeasured = artifact(2.0, None);
        assert_eq!(
            check_promotion(&unmeasured, Some(&artifact(1.0, Some(5.0))), 0.02),
            Err(GateError::NoValidation(unmeasured.version.clone()))
        );
        assert!(matches!(
            check_promotion(&artifact(2.0, Some(f64::NAN)), None, 0.02),
            Err(GateError::NoValidation(_))
        ));
        assert_eq!(
            check_promotion(&artifact(2.0, Some(5.0)), None, -0.1),
            Err(GateError::BadMargin(-0.1))
        );
    }

    #[test]
    fn gate_report_marks_forced_refusals() {
        let resolved = |a: Artifact, src: &str| {
            let bytes = a.to_bytes().unwrap();
            ResolvedModel::from_bytes(bytes, None, None, src.into()).unwrap()
        };
        let current = resolved(artifact(1.0, Some(5.0)), "prod");
        let worse = resolved(artifact(2.0, Some(6.0)), "cand");
        let refused = gate_report(&worse, Some(&current), 0.02, false);
        assert_eq!(refused.decision, GateDecision::Refused);
        assert_eq!(refused.production_rmse, Some(5.0));
        assert!(refused.clone().into_result().is_err());
        let forced = gate_report(&worse, Some(&current), 0.02, true);
        assert_eq!(forced.decision, GateDecision::Forced);
        assert!(forced.reason.is_some());
        assert!(forced.into_result().is_ok());
        assert_eq!(
            gate_report(&worse, None, 0.02, false).decision,
            GateDecision::Pass
        );
    }

    #[test]
    fn run_input_carries_metrics_hashes_and_commit() {
        let a = artifact(1.0, Some(6.25));
        let params = BTreeMap::from([
            ("alpha".to_string(), "0.5".to_string()),
            ("solver".to_string(), "qr".to_string()),
        ]);
        let input = RunInput::new(&a, &params, "dev", Some("fallback".into()));
        assert_eq!(input.metrics["rmse_val"], 6.25);
        assert_eq!(input.metrics["rmse_train"], 5.5);
        assert_eq!(input.metrics["mae_val"], 4.5);
        assert_eq!(input.metrics["r2_val"], 0.4);
        assert_eq!(input.metrics["train_rows"], 73908.0);
        assert_eq!(input.metrics["val_rows"], 61921.0);
        assert_eq!(input.metrics["n_features"], 3.0);
        // Given params win over the artifact's own.
        assert_eq!(input.params["solver"], "qr");
        assert_eq!(input.params["alpha"], "0.5");
        assert_eq!(input.tags[TAG_GIT_COMMIT], "0123abcd");
        assert_eq!(
            input.tags["data.train.green_tripdata_2021-01.parquet.sha256"],
            "aa".repeat(32)
        );
        assert_eq!(
            input.tags["data.val.green_tripdata_2021-02.parquet.sha256"],
            "bb".repeat(32)
        );
        assert_eq!(input.tags[TAG_MODEL_VERSION], a.version);
        assert_eq!(input.run_name, format!("train-{}", a.version));
    }

    #[test]
    fn run_input_drops_non_finite_metrics_and_falls_back_to_the_given_commit() {
        let mut a = artifact(1.0, Some(f64::NAN));
        a.metadata.git_commit = None;
        let input = RunInput::new(&a, &BTreeMap::new(), "dev", Some("fallback".into()));
        assert!(!input.metrics.contains_key("rmse_val"));
        assert!(input.metrics.contains_key("rmse_train"));
        assert_eq!(input.tags[TAG_GIT_COMMIT], "fallback");
    }

    #[test]
    fn settings_default_to_the_local_store_per_environment() {
        let root = std::path::Path::new("/repo");
        let s = Settings::from_lookup("stg", root, |_| None);
        assert_eq!(s.tracking_uri, None);
        assert_eq!(s.experiment, "taxi-duration-stg");
        assert_eq!(s.runs_dir, root.join("runs"));
        assert!(matches!(
            Tracker::from_settings(&s).unwrap(),
            Tracker::Local(_)
        ));
        let vars = BTreeMap::from([
            ("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"),
            ("MLFLOW_EXPERIMENT_NAME", "x"),
        ]);
        let s = Settings::from_lookup("stg", root, |k| vars.get(k).map(|v| v.to_string()));
        assert_eq!(s.experiment, "x");
        assert!(matches!(
            Tracker::from_settings(&s).unwrap(),
            Tracker::Mlflow(_)
        ));
    }

    #[test]
    fn reserved_and_odd_alias_names_are_refused() {
        for bad in ["", "latest", "v3", "a b", "prod/1"] {
            assert!(check_alias_name(bad).is_err(), "{bad}");
        }
        for good in ["staging", "production", "canary-2", "v", "vx"] {
            assert!(check_alias_name(good).is_ok(), "{good}");
        }
    }
}
