//! An MLflow tracking server, over its REST API (`/api/2.0/mlflow/...`) and the artifact proxy
//! (`/api/2.0/mlflow-artifacts/artifacts/...`, served by `mlflow server --serve-artifacts`, the
//! default since MLflow 2.0). Checked against `mlflow server` 3.18.
//!
//! A training run becomes an MLflow run (params, metrics, tags, `model/model.json` artifact) plus
//! a version of the registered model whose source is the run's `model/` folder. Aliases are
//! registered-model aliases, so they point at versions; each version knows its run.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{
    AliasSet, ModelSpec, ResolvedModel, RunInfo, RunInput, RunRecord, TAG_GIT_COMMIT, TrackerKind,
};

/// The folder inside a run's artifacts that holds the model, and the registered version's source.
const MODEL_DIR: &str = "model";
/// MLflow's `log-batch` takes at most 100 params and 100 tags (and 1000 metrics) per call.
const BATCH: usize = 100;
/// MLflow's limit on a param value's length.
const PARAM_MAX_CHARS: usize = 6000;

/// Credentials for a server behind authentication.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// No credentials.
    None,
    /// `MLFLOW_TRACKING_TOKEN`.
    Bearer(String),
    /// `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`.
    Basic(String, String),
}

/// What went wrong talking to MLflow.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MlflowError {
    /// No answer from the server.
    #[error(
        "cannot reach MLflow at {uri} ({source}): start the server (`mlflow server`, installed by tools/setup.sh), \
         fix MLFLOW_TRACKING_URI, or unset it to use the local run store"
    )]
    Unreachable {
        /// The tracking URI.
        uri: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("MLflow {endpoint} answered {status}: {code}: {message}")]
    Api {
        /// The endpoint called.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// MLflow's error code, e.g. `RESOURCE_DOES_NOT_EXIST`.
        code: String,
        /// MLflow's message.
        message: String,
    },
    /// The answer was not what the API documents.
    #[error("MLflow {endpoint} answered with unexpected content: {message}")]
    Decode {
        /// The endpoint called.
        endpoint: String,
        /// What did not parse.
        message: String,
    },
}

impl MlflowError {
    /// True when MLflow reported this error code.
    pub fn is(&self, error_code: &str) -> bool {
        matches!(self, Self::Api { code, .. } if code == error_code)
    }
}

/// A thin client for the MLflow REST API.
#[derive(Debug, Clone)]
pub struct MlflowClient {
    base: String,
    http: reqwest::Client,
    auth: Auth,
}

impl MlflowClient {
    /// A client for the server at `uri` (`http://` or `https://`).
    pub fn new(uri: &str, auth: Auth) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(uri)
            .with_context(|| format!("MLFLOW_TRACKING_URI `{uri}` is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!(
                "MLFLOW_TRACKING_URI `{uri}` is not an http(s) server: point it at `mlflow server` (e.g. http://127.0.0.1:5000), \
                 or unset it to use the local run store"
            );
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Self {
            base: uri.trim_end_matches('/').to_string(),
            http,
            auth,
        })
    }

    /// The tracking URI.
    pub fn uri(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, url);
        match &self.auth {
            Auth::None => rb,
            Auth::Bearer(token) => rb.bearer_auth(token),
            Auth::Basic(user, password) => rb.basic_auth(user, Some(password)),
        }
    }

    async fn send(
        &self,
        rb: reqwest::RequestBuilder,
        endpoint: &str,
    ) -> Result<reqwest::Response, MlflowError> {
        let resp = rb.send().await.map_err(|source| MlflowError::Unreachable {
            uri: self.base.clone(),
            source,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_str(&body).ok();
        let field = |k: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Err(MlflowError::Api {
            endpoint: endpoint.to_string(),
            status: status.as_u16(),
            code: field("error_code")
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string()),
            message: field("message").unwrap_or_else(|| body.chars().take(300).collect()),
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
        endpoint: &str,
    ) -> Result<T, MlflowError> {
        let bytes = self
            .send(rb, endpoint)
            .await?
            .bytes()
            .await
            .map_err(|source| MlflowError::Unreachable {
                uri: self.base.clone(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|e| MlflowError::Decode {
            endpoint: endpoint.to_string(),
            message: e.to_string(),
        })
    }

    fn api_url(&self, endpoint: &str) -> String {
        format!("{}/api/2.0/mlflow/{endpoint}", self.base)
    }

    /// `GET /api/2.0/mlflow/<endpoint>?<query>`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        query: &[(&str, &str)],
    ) -> Result<T, MlflowError> {
        let mut url = reqwest::Url::parse(&self.api_url(endpoint)).expect("base was validated");
        url.query_pairs_mut().extend_pairs(query);
        self.json(self.request(Method::GET, url.as_str()), endpoint)
            .await
    }

    /// `POST /api/2.0/mlflow/<endpoint>` with a JSON body.
    pub async fn post<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: &Value,
    ) -> Result<T, MlflowError> {
        self.json(
            self.request(Method::POST, &self.api_url(endpoint))
                .json(body),
            endpoint,
        )
        .await
    }

    /// The artifact proxy's URL for `rel` under an `mlflow-artifacts:` root.
    fn artifact_url(&self, root: &str, rel: &str) -> anyhow::Result<String> {
        let Some(rest) = root.strip_prefix("mlflow-artifacts:") else {
            bail!(
                "artifact location `{root}` is not served by the MLflow server, so this client cannot reach it: start \
                 `mlflow server` with --serve-artifacts (the default) and --artifacts-destination, and use a new experiment"
            );
        };
        // `mlflow-artifacts://host:port/path` names the server; `mlflow-artifacts:/path` is this one.
        let path = match rest.strip_prefix("//") {
            Some(with_host) => with_host.split_once('/').map(|(_, p)| p).unwrap_or(""),
            None => rest.trim_start_matches('/'),
        };
        Ok(format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{}/{rel}",
            self.base,
            path.trim_end_matches('/')
        ))
    }

    /// Uploads `bytes` as `rel` under an `mlflow-artifacts:` root.
    pub async fn upload_artifact(&self, root: &str, rel: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let url = self.artifact_url(root, rel)?;
        let rb = self
            .request(Method::PUT, &url)
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec());
        self.send(rb, "mlflow-artifacts upload").await?;
        Ok(())
    }

    /// Downloads `rel` under an artifact root: `mlflow-artifacts:` or `runs:/<run id>/<path>`.
    pub async fn download_artifact(&self, root: &str, rel: &str) -> anyhow::Result<Vec<u8>> {
        let root = match root.strip_prefix("runs:/") {
            Some(rest) => {
                let (run_id, path) = rest.split_once('/').unwrap_or((rest, ""));
                let run = self.get_run(run_id).await?;
                format!("{}/{path}", run.info.artifact_uri.trim_end_matches('/'))
            }
            None => root.to_string(),
        };
        let url = self.artifact_url(root.trim_end_matches('/'), rel)?;
        let resp = self
            .send(self.request(Method::GET, &url), "mlflow-artifacts download")
            .await?;
        Ok(resp
            .bytes()
            .await
            .map_err(|source| MlflowError::Unreachable {
                uri: self.base.clone(),
                source,
            })?
            .to_vec())
    }

    /// `runs/get`.
    pub async fn get_run(&self, run_id: &str) -> anyhow::Result<Run> {
        #[derive(Deserialize)]
        struct Resp {
            run: Run,
        }
        match self.get::<Resp>("runs/get", &[("run_id", run_id)]).await {
            Ok(r) => Ok(r.run),
            Err(e) if e.is("RESOURCE_DOES_NOT_EXIST") => {
                bail!(
                    "MLflow at {} has no run `{run_id}`: list runs with `cargo xtask runs`",
                    self.base
                )
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// An MLflow run as `runs/get` and `runs/search` return it.
#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    /// Identity, status and times.
    pub info: RunMeta,
    /// Params, metrics and tags.
    #[serde(default)]
    pub data: RunData,
}

/// A run's `info`.
#[derive(Debug, Clone, Deserialize)]
pub struct RunMeta {
    /// The run id.
    pub run_id: String,
    /// The experiment's id.
    pub experiment_id: String,
    /// The run's name.
    #[serde(default)]
    pub run_name: String,
    /// RUNNING, FINISHED, FAILED, ...
    pub status: String,
    /// Start time in milliseconds since the epoch.
    #[serde(default)]
    pub start_time: Option<i64>,
    /// The run's artifact root, `mlflow-artifacts:/<experiment>/<run>/artifacts`.
    pub artifact_uri: String,
}

/// A run's `data`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunData {
    /// Latest value of each metric.
    #[serde(default)]
    pub metrics: Vec<MetricValue>,
    /// Parameters.
    #[serde(default)]
    pub params: Vec<KeyValue>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<KeyValue>,
}

/// A metric's value.
#[derive(Debug, Clone, Deserialize)]
pub struct MetricValue {
    /// Name.
    pub key: String,
    /// Value.
    pub value: f64,
}

/// A param or tag.
#[derive(Debug, Clone, Deserialize)]
pub struct KeyValue {
    /// Name.
    pub key: String,
    /// Value.
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
struct ModelVersion {
    version: String,
    source: String,
    #[serde(default)]
    run_id: String,
}

#[derive(Debug, Clone, Deserialize)]
struct AliasEntry {
    alias: String,
    version: String,
}

/// The MLflow side of a [`super::Tracker`]: a client, an experiment and a registered model.
#[derive(Debug, Clone)]
pub struct MlflowTracker {
    /// The REST client.
    pub client: MlflowClient,
    /// The experiment's name.
    pub experiment: String,
    /// The registered model's name.
    pub registered_model: String,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn kv(map: &BTreeMap<String, String>) -> Vec<Value> {
    map.iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect()
}

impl MlflowTracker {
    /// A tracker for an experiment and a registered model on a server.
    pub fn new(client: MlflowClient, experiment: &str, registered_model: &str) -> Self {
        Self {
            client,
            experiment: experiment.to_string(),
            registered_model: registered_model.to_string(),
        }
    }

    /// The experiment's id, when it exists.
    async fn experiment_id(&self) -> anyhow::Result<Option<String>> {
        #[derive(Deserialize)]
        struct Exp {
            experiment_id: String,
        }
        #[derive(Deserialize)]
        struct Resp {
            experiment: Exp,
        }
        match self
            .client
            .get::<Resp>(
                "experiments/get-by-name",
                &[("experiment_name", &self.experiment)],
            )
            .await
        {
            Ok(r) => Ok(Some(r.experiment.experiment_id)),
            Err(e) if e.is("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The experiment's id, creating the experiment when it is missing.
    async fn ensure_experiment(&self) -> anyhow::Result<String> {
        if let Some(id) = self.experiment_id().await? {
            return Ok(id);
        }
        #[derive(Deserialize)]
        struct Resp {
            experiment_id: String,
        }
        match self
            .client
            .post::<Resp>("experiments/create", &json!({"name": self.experiment}))
            .await
        {
            Ok(r) => Ok(r.experiment_id),
            // Another process created it between our lookup and our create.
            Err(e) if e.is("RESOURCE_ALREADY_EXISTS") => self
                .experiment_id()
                .await?
                .context("experiment vanished right after it was created"),
            Err(e) => Err(e).with_context(|| format!("create experiment `{}`", self.experiment)),
        }
    }

    async fn ensure_registered_model(&self) -> anyhow::Result<()> {
        match self
            .client
            .post::<Value>(
                "registered-models/create",
                &json!({"name": self.registered_model}),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is("RESOURCE_ALREADY_EXISTS") => Ok(()),
            Err(e) => Err(e)
                .with_context(|| format!("create registered model `{}`", self.registered_model)),
        }
    }

    /// Records a run: experiment, run with tags, params and metrics, the artifact, a registered
    /// version. A run that fails half-way is marked FAILED, so it is not mistaken for a good one.
    pub async fn record(
        &self,
        input: &RunInput,
        artifact_bytes: &[u8],
    ) -> anyhow::Result<RunRecord> {
        let experiment_id = self.ensure_experiment().await?;
        #[derive(Deserialize)]
        struct Resp {
            run: Run,
        }
        let created: Resp = self
            .client
            .post(
                "runs/create",
                &json!({
                    "experiment_id": experiment_id,
                    "run_name": input.run_name,
                    "start_time": now_ms(),
                    "tags": kv(&input.tags),
                }),
            )
            .await
            .context("create the run")?;
        let run = created.run.info;
        match self.fill_run(&run, input, artifact_bytes).await {
            Ok(model_version) => Ok(RunRecord {
                run_id: run.run_id,
                experiment: self.experiment.clone(),
                tracker: TrackerKind::Mlflow,
                artifact_uri: format!(
                    "{}/{MODEL_DIR}/{}",
                    run.artifact_uri,
                    model::artifact::FILE_NAME
                ),
                model_version: Some(model_version),
            }),
            Err(e) => {
                let _ = self.end_run(&run.run_id, "FAILED").await;
                Err(e)
            }
        }
    }

    async fn end_run(&self, run_id: &str, status: &str) -> anyhow::Result<()> {
        self.client
            .post::<Value>(
                "runs/update",
                &json!({"run_id": run_id, "status": status, "end_time": now_ms()}),
            )
            .await
            .with_context(|| format!("mark run {run_id} {status}"))?;
        Ok(())
    }

    /// Logs params and metrics, uploads the artifact, registers a version, ends the run.
    async fn fill_run(
        &self,
        run: &RunMeta,
        input: &RunInput,
        artifact_bytes: &[u8],
    ) -> anyhow::Result<String> {
        let ts = now_ms();
        // MLflow refuses param values over 6000 characters (a long list of data files, say).
        let params: BTreeMap<String, String> = input
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.chars().take(PARAM_MAX_CHARS).collect()))
            .collect();
        let params = kv(&params);
        let metrics: Vec<Value> = input
            .metrics
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v, "timestamp": ts, "step": 0}))
            .collect();
        for (i, chunk) in params.chunks(BATCH).enumerate() {
            let metrics = if i == 0 { metrics.clone() } else { Vec::new() };
            self.client
                .post::<Value>(
                    "runs/log-batch",
                    &json!({"run_id": run.run_id, "params": chunk, "metrics": metrics}),
                )
                .await
                .context("log params and metrics")?;
        }
        if params.is_empty() {
            self.client
                .post::<Value>(
                    "runs/log-batch",
                    &json!({"run_id": run.run_id, "metrics": metrics}),
                )
                .await
                .context("log metrics")?;
        }
        self.client
            .upload_artifact(
                &run.artifact_uri,
                &format!("{MODEL_DIR}/{}", model::artifact::FILE_NAME),
                artifact_bytes,
            )
            .await
            .context("upload the model artifact")?;
        let version = self.create_version(run).await?;
        self.end_run(&run.run_id, "FINISHED").await?;
        Ok(version.version)
    }

    async fn create_version(&self, run: &RunMeta) -> anyhow::Result<ModelVersion> {
        self.ensure_registered_model().await?;
        #[derive(Deserialize)]
        struct Resp {
            model_version: ModelVersion,
        }
        let source = format!("{}/{MODEL_DIR}", run.artifact_uri.trim_end_matches('/'));
        let r: Resp = self
            .client
            .post(
                "model-versions/create",
                &json!({"name": self.registered_model, "source": source, "run_id": run.run_id}),
            )
            .await
            .with_context(|| {
                format!(
                    "register run {} as a version of `{}`",
                    run.run_id, self.registered_model
                )
            })?;
        Ok(r.model_version)
    }

    async fn get_version(&self, version: &str) -> anyhow::Result<ModelVersion> {
        #[derive(Deserialize)]
        struct Resp {
            model_version: ModelVersion,
        }
        match self
            .client
            .get::<Resp>(
                "model-versions/get",
                &[("name", &self.registered_model), ("version", version)],
            )
            .await
        {
            Ok(r) => Ok(r.model_version),
            Err(e) if e.is("RESOURCE_DOES_NOT_EXIST") => bail!(
                "registered model `{}` has no version {version} on {}: list runs with `cargo xtask runs`",
                self.registered_model,
                self.client.uri()
            ),
            Err(e) => Err(e.into()),
        }
    }

    /// The newest registered version of a run, registering the run when it has none yet (a run
    /// recorded by another tool, or registered under another model name).
    async fn version_of_run(&self, run_id: &str) -> anyhow::Result<ModelVersion> {
        if !run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("`{run_id}` is not an MLflow run id: list runs with `cargo xtask runs`");
        }
        let run = self.client.get_run(run_id).await?;
        #[derive(Deserialize)]
        struct Resp {
            #[serde(default)]
            model_versions: Vec<ModelVersion>,
        }
        let filter = format!(
            "name='{}' and run_id='{run_id}'",
            self.registered_model.replace('\'', "\\'")
        );
        let found = match self
            .client
            .get::<Resp>("model-versions/search", &[("filter", &filter)])
            .await
        {
            Ok(r) => r.model_versions,
            Err(e) if e.is("RESOURCE_DOES_NOT_EXIST") => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        match found
            .into_iter()
            .max_by_key(|v| v.version.parse::<u64>().unwrap_or(0))
        {
            Some(v) => Ok(v),
            None => self.create_version(&run.info).await,
        }
    }

    /// The registered model's aliases, alias → version; empty when the model does not exist yet.
    async fn aliases(&self) -> anyhow::Result<BTreeMap<String, String>> {
        #[derive(Deserialize)]
        struct Model {
            #[serde(default)]
            aliases: Vec<AliasEntry>,
        }
        #[derive(Deserialize)]
        struct Resp {
            registered_model: Model,
        }
        match self
            .client
            .get::<Resp>("registered-models/get", &[("name", &self.registered_model)])
            .await
        {
            Ok(r) => Ok(r
                .registered_model
                .aliases
                .into_iter()
                .map(|a| (a.alias, a.version))
                .collect()),
            Err(e) if e.is("RESOURCE_DOES_NOT_EXIST") => Ok(BTreeMap::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Run id → aliases pointing at it through its versions.
    async fn aliases_by_run(&self) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (alias, version) in self.aliases().await? {
            let v = self.get_version(&version).await?;
            out.entry(v.run_id).or_default().push(alias);
        }
        Ok(out)
    }

    /// Points `alias` at the version `target` names, registering a run first when needed.
    pub async fn set_alias(&self, alias: &str, target: &ModelSpec) -> anyhow::Result<AliasSet> {
        let version = match target {
            ModelSpec::Run(run_id) => self.version_of_run(run_id).await?,
            ModelSpec::Version(v) => self.get_version(v).await?,
            ModelSpec::Alias(other) => {
                let v = self.aliases().await?.get(other).cloned().with_context(|| {
                    format!(
                        "registered model `{}` has no alias `{other}`",
                        self.registered_model
                    )
                })?;
                self.get_version(&v).await?
            }
            ModelSpec::File(_) => {
                bail!(
                    "a file is not in the registry: record it as a run with `cargo xtask train`, then alias the run"
                )
            }
        };
        self.client
            .post::<Value>(
                "registered-models/alias",
                &json!({"name": self.registered_model, "alias": alias, "version": version.version}),
            )
            .await?;
        Ok(AliasSet {
            alias: alias.to_string(),
            run_id: version.run_id,
            model_version: Some(version.version),
            tracker: TrackerKind::Mlflow,
        })
    }

    async fn resolve_version(
        &self,
        v: ModelVersion,
        label: String,
    ) -> anyhow::Result<ResolvedModel> {
        let bytes = self
            .client
            .download_artifact(&v.source, model::artifact::FILE_NAME)
            .await
            .with_context(|| format!("download {label} from {}", v.source))?;
        let run_id = Some(v.run_id.clone()).filter(|r| !r.is_empty());
        let source = format!("mlflow {label} (version {}, run {})", v.version, v.run_id);
        ResolvedModel::from_bytes(bytes, run_id, Some(v.version), source)
    }

    /// Finds the model a run, version or alias names.
    pub async fn resolve(&self, spec: &ModelSpec) -> anyhow::Result<ResolvedModel> {
        match spec {
            ModelSpec::Run(run_id) => {
                let run = self.client.get_run(run_id).await?;
                let rel = format!("{MODEL_DIR}/{}", model::artifact::FILE_NAME);
                let bytes = self.client.download_artifact(&run.info.artifact_uri, &rel).await?;
                ResolvedModel::from_bytes(bytes, Some(run_id.clone()), None, format!("mlflow run {run_id}"))
            }
            ModelSpec::Version(v) => {
                let mv = self.get_version(v).await?;
                self.resolve_version(mv, format!("models:/{}/{v}", self.registered_model)).await
            }
            ModelSpec::Alias(alias) => self.resolve_alias(alias).await?.with_context(|| {
                format!(
                    "registered model `{}` on {} has no alias `{alias}`: set it with `cargo xtask runs alias set {alias} <run>`",
                    self.registered_model,
                    self.client.uri()
                )
            }),
            ModelSpec::File(_) => unreachable!("files are resolved without a store"),
        }
    }

    /// The model an alias points at, or `None` when it is not set.
    pub async fn resolve_alias(&self, alias: &str) -> anyhow::Result<Option<ResolvedModel>> {
        let Some(version) = self.aliases().await?.get(alias).cloned() else {
            return Ok(None);
        };
        let mv = self.get_version(&version).await?;
        self.resolve_version(mv, format!("models:/{}@{alias}", self.registered_model))
            .await
            .map(Some)
    }

    fn info(&self, run: Run, aliases: &BTreeMap<String, Vec<String>>, experiment: &str) -> RunInfo {
        let created_at = run
            .info
            .start_time
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        RunInfo {
            aliases: aliases.get(&run.info.run_id).cloned().unwrap_or_default(),
            experiment: experiment.to_string(),
            run_name: run.info.run_name,
            status: run.info.status,
            created_at,
            params: run
                .data
                .params
                .into_iter()
                .map(|p| (p.key, p.value))
                .collect(),
            metrics: run
                .data
                .metrics
                .into_iter()
                .map(|m| (m.key, m.value))
                .collect(),
            tags: run
                .data
                .tags
                .into_iter()
                .filter(|t| !t.key.starts_with("mlflow.") || t.key == TAG_GIT_COMMIT)
                .map(|t| (t.key, t.value))
                .collect(),
            artifact_uri: run.info.artifact_uri,
            run_id: run.info.run_id,
        }
    }

    /// The newest `limit` runs of the experiment, newest first.
    pub async fn list(&self, limit: usize) -> anyhow::Result<Vec<RunInfo>> {
        let Some(experiment_id) = self.experiment_id().await? else {
            return Ok(Vec::new());
        };
        #[derive(Deserialize)]
        struct Resp {
            #[serde(default)]
            runs: Vec<Run>,
        }
        let r: Resp = self
            .client
            .post(
                "runs/search",
                &json!({
                    "experiment_ids": [experiment_id],
                    "max_results": limit.clamp(1, 1000),
                    "order_by": ["attributes.start_time DESC"],
                }),
            )
            .await?;
        let aliases = self.aliases_by_run().await?;
        Ok(r.runs
            .into_iter()
            .map(|run| self.info(run, &aliases, &self.experiment))
            .collect())
    }

    /// One run, by id, whatever its experiment.
    pub async fn show(&self, run_id: &str) -> anyhow::Result<RunInfo> {
        let run = self.client.get_run(run_id).await?;
        #[derive(Deserialize)]
        struct Exp {
            name: String,
        }
        #[derive(Deserialize)]
        struct Resp {
            experiment: Exp,
        }
        let exp: Resp = self
            .client
            .get(
                "experiments/get",
                &[("experiment_id", &run.info.experiment_id)],
            )
            .await?;
        Ok(self.info(run, &self.aliases_by_run().await?, &exp.experiment.name))
    }
}

/// True when an error from this module means "the server is not there".
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<MlflowError>(),
            Some(MlflowError::Unreachable { .. })
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_roots_map_onto_the_proxy() {
        let c = MlflowClient::new("http://127.0.0.1:5000/", Auth::None).unwrap();
        assert_eq!(
            c.artifact_url("mlflow-artifacts:/1/abc/artifacts", "model/model.json")
                .unwrap(),
            "http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model/model.json"
        );
        assert_eq!(
            c.artifact_url("mlflow-artifacts://other:5000/1/abc/artifacts/", "m")
                .unwrap(),
            "http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/m"
        );
        let err = c
            .artifact_url("s3://bucket/1/abc", "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--serve-artifacts"), "{err}");
    }

    #[test]
    fn only_http_servers_are_accepted() {
        assert!(MlflowClient::new("https://mlflow.example.com/prefix", Auth::None).is_ok());
        let err = MlflowClient::new("file:///tmp/mlruns", Auth::None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unset it"), "{err}");
        assert!(MlflowClient::new("not a url", Auth::None).is_err());
    }

    #[tokio::test]
    async fn an_absent_server_is_reported_with_the_fix() {
        // A port nobody listens on: bind, read the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = MlflowTracker::new(
            MlflowClient::new(&format!("http://127.0.0.1:{port}"), Auth::None).unwrap(),
            "e",
            "m",
        );
        let err = t.list(5).await.unwrap_err();
        assert!(is_unreachable(&err), "{err:#}");
        assert!(
            format!("{err:#}").contains("unset it to use the local run store"),
            "{err:#}"
        );
    }
}
