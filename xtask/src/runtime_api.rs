//! A local Lambda execution environment: the Runtime API (`/2018-06-01/runtime/...`) served on a
//! loopback port, and the function run against it, either as its `bootstrap` process or as its
//! container image through Docker with host networking.
//!
//! [`FunctionHost`] behaves like one Lambda execution environment: one invocation at a time, a
//! cold start on first use, the function's timeout enforced by killing the environment (the next
//! invocation starts a fresh one, as Lambda does after a timeout), and init failures reported as
//! such. Each environment gets its own Runtime API server, so a killed environment's leftover
//! requests can never take the next environment's invocations.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bollard::Docker;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc, watch};

/// The Runtime API version prefix every runtime client uses.
pub const API_PREFIX: &str = "/2018-06-01/runtime";

/// How long Lambda lets a function initialise before it gives up (on-demand functions).
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the function runs.
#[derive(Debug, Clone)]
pub enum FunctionMode {
    /// The `bootstrap` executable, run as a local process.
    Process {
        /// Path to the executable.
        bootstrap: PathBuf,
    },
    /// A container image whose entrypoint is the runtime (`/bootstrap`), run with host networking.
    Container {
        /// Image reference known to the local Docker engine.
        image: String,
    },
}

/// Everything needed to run a function locally.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// Process or container.
    pub mode: FunctionMode,
    /// The function's own environment variables (they win over the ones Lambda sets).
    pub env: BTreeMap<String, String>,
    /// The function timeout.
    pub timeout: Duration,
    /// How long initialisation may take before the environment is killed.
    pub init_timeout: Duration,
    /// Memory size, reported to the function (and a hard limit in container mode).
    pub memory_mb: u32,
    /// The function name.
    pub function_name: String,
    /// The function ARN, sent as `Lambda-Runtime-Invoked-Function-Arn`.
    pub arn: String,
    /// The region the function believes it runs in.
    pub region: String,
    /// The AWS endpoint the function's SDK clients should use (an emulator), if any.
    pub endpoint: Option<String>,
}

impl FunctionSpec {
    /// A spec with Lambda's defaults: 3 s timeout, 128 MB, 10 s init timeout, no extra variables.
    pub fn new(function_name: &str, arn: &str, region: &str, mode: FunctionMode) -> Self {
        Self {
            mode,
            env: BTreeMap::new(),
            timeout: Duration::from_secs(3),
            init_timeout: DEFAULT_INIT_TIMEOUT,
            memory_mb: 128,
            function_name: function_name.to_string(),
            arn: arn.to_string(),
            region: region.to_string(),
            endpoint: None,
        }
    }
}

/// The result of one invocation, as Lambda reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum InvokeOutcome {
    /// The function returned this response.
    Ok {
        /// The response document (a JSON string when the body was not JSON).
        response: serde_json::Value,
    },
    /// The function reported an error (or its process died while handling the event).
    FunctionError {
        /// `errorType`, e.g. `&alloc::string::String` or `Runtime.ExitError`.
        error_type: String,
        /// `errorMessage`.
        error_message: String,
    },
    /// The function did not answer within its timeout; its environment was killed.
    Timeout {
        /// The timeout that was exceeded, in milliseconds.
        after_ms: u64,
    },
    /// The function failed to initialise (posted `/init/error`, exited, or timed out during init).
    InitError {
        /// `errorType`.
        error_type: String,
        /// `errorMessage`.
        error_message: String,
    },
}

impl InvokeOutcome {
    /// True for a successful invocation.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok { .. })
    }
}

impl std::fmt::Display for InvokeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok { response } => {
                write!(
                    f,
                    "{}",
                    serde_json::to_string_pretty(response).map_err(|_| std::fmt::Error)?
                )
            }
            Self::FunctionError {
                error_type,
                error_message,
            } => {
                write!(f, "function error ({error_type}): {error_message}")
            }
            Self::Timeout { after_ms } => {
                write!(f, "timed out after {:.1} s", *after_ms as f64 / 1000.0)
            }
            Self::InitError {
                error_type,
                error_message,
            } => write!(f, "init error ({error_type}): {error_message}"),
        }
    }
}

/// The error document runtimes post to `/error` and `/init/error`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    #[serde(default)]
    error_type: String,
    #[serde(default)]
    error_message: String,
}

impl ErrorBody {
    fn parse(headers: &HeaderMap, body: &[u8]) -> Self {
        let mut err: ErrorBody = serde_json::from_slice(body).unwrap_or_else(|_| ErrorBody {
            error_type: String::new(),
            error_message: String::from_utf8_lossy(body).into(),
        });
        if err.error_type.is_empty() {
            err.error_type = headers
                .get("Lambda-Runtime-Function-Error-Type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("Unhandled")
                .to_string();
        }
        err
    }
}

/// One queued invocation.
struct Invocation {
    id: String,
    payload: Vec<u8>,
}

/// What the Runtime API server tells the invoking side.
enum Event {
    /// The runtime received an invocation; its deadline starts now.
    Dispatched {
        id: String,
        deadline: Instant,
    },
    Response {
        id: String,
        body: Bytes,
    },
    Error {
        id: String,
        err: ErrorBody,
    },
    InitError(ErrorBody),
}

/// The Runtime API server's state for one execution environment.
struct Api {
    queue: Mutex<mpsc::Receiver<Invocation>>,
    events: mpsc::UnboundedSender<Event>,
    /// Invocations handed out and not yet answered: the only ids `/response` and `/error` accept.
    open: std::sync::Mutex<HashSet<String>>,
    arn: String,
    timeout: Duration,
}

/// A running function process or container.
enum Runner {
    Process { pid: u32 },
    Container { docker: Docker, id: String },
}

impl Runner {
    async fn kill(&self) {
        match self {
            Runner::Process { pid } => {
                // The function runs in its own process group: kill everything it started too.
                // SAFETY: kill(2) on a negative pid signals exactly that process group.
                unsafe {
                    libc::kill(-(*pid as libc::pid_t), libc::SIGKILL);
                }
            }
            Runner::Container { docker, id } => {
                let opts = bollard::query_parameters::RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                };
                if let Err(e) = docker.remove_container(id, Some(opts)).await {
                    tracing::warn!("remove function container {id}: {e}");
                }
            }
        }
    }
}

/// One execution environment: a Runtime API server and the function attached to it.
struct Instance {
    api: Arc<Api>,
    queue: mpsc::Sender<Invocation>,
    events: mpsc::UnboundedReceiver<Event>,
    server: tokio::task::JoinHandle<()>,
    runner: Runner,
    /// Set to a description once the function process or container has exited.
    exited: watch::Receiver<Option<String>>,
    /// Whether the runtime has finished initialising (received an invocation) at least once.
    initialised: bool,
}

impl Instance {
    fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    async fn shutdown(self) {
        self.runner.kill().await;
        self.server.abort();
        drop(self.api);
    }
}

/// A local Lambda execution environment for one function. Invocations are serialised, like a
/// single Lambda environment (reserved concurrency 1).
pub struct FunctionHost {
    spec: FunctionSpec,
    docker: Option<Docker>,
    slot: Mutex<Option<Instance>>,
    cold_starts: std::sync::atomic::AtomicU32,
}

impl FunctionHost {
    /// Checks that the function can run (the executable exists, or Docker answers and has the
    /// image). The environment itself starts on the first invocation (a cold start).
    pub async fn start(spec: FunctionSpec) -> anyhow::Result<Self> {
        let docker = match &spec.mode {
            FunctionMode::Process { bootstrap } => {
                let meta = std::fs::metadata(bootstrap).with_context(|| {
                    format!("function executable {} not found: build it with `cargo xtask build lambda`", bootstrap.display())
                })?;
                anyhow::ensure!(meta.is_file(), "{} is not a file", bootstrap.display());
                None
            }
            FunctionMode::Container { image } => {
                let docker = Docker::connect_with_local_defaults()
                    .context("connect to Docker: start the Docker engine or use process mode")?;
                docker.ping().await.context(
                    "Docker does not answer: start the Docker engine or use process mode",
                )?;
                docker
                    .inspect_image(image)
                    .await
                    .with_context(|| format!("image {image} is not in the local Docker engine: build it with `cargo xtask image build`"))?;
                Some(docker)
            }
        };
        Ok(Self {
            spec,
            docker,
            slot: Mutex::new(None),
            cold_starts: Default::default(),
        })
    }

    /// The spec this host runs.
    pub fn spec(&self) -> &FunctionSpec {
        &self.spec
    }

    /// How many execution environments have been started so far (cold starts).
    pub fn cold_starts(&self) -> u32 {
        self.cold_starts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Invokes the function with `payload` and waits for its outcome. `Err` means the emulator
    /// itself failed (e.g. the process could not be started), not the function.
    pub async fn invoke(&self, payload: &serde_json::Value) -> anyhow::Result<InvokeOutcome> {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(Instance::has_exited) {
            slot.take().expect("checked").shutdown().await;
        }
        if slot.is_none() {
            *slot = Some(self.spawn_instance().await?);
        }
        let inst = slot.as_mut().expect("just filled");
        let id = request_id();
        let payload = serde_json::to_vec(payload)?;
        inst.queue
            .send(Invocation {
                id: id.clone(),
                payload,
            })
            .await
            .context("the Runtime API server stopped")?;

        // Until the runtime picks the invocation up it is initialising (on a cold start) or
        // finishing the previous one; after that, the function's own deadline applies.
        let mut deadline: Option<Instant> = None;
        let init_deadline = Instant::now() + self.spec.init_timeout + self.spec.timeout;
        let (outcome, keep) = loop {
            let wake = deadline.unwrap_or(init_deadline);
            tokio::select! {
                ev = inst.events.recv() => match ev {
                    Some(Event::Dispatched { id: d, deadline: at }) if d == id => {
                        inst.initialised = true;
                        deadline = Some(at);
                    }
                    Some(Event::Response { id: r, body }) if r == id => {
                        let response = serde_json::from_slice(&body)
                            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
                        break (InvokeOutcome::Ok { response }, true);
                    }
                    Some(Event::Error { id: r, err }) if r == id => {
                        break (InvokeOutcome::FunctionError { error_type: err.error_type, error_message: err.error_message }, true);
                    }
                    Some(Event::InitError(err)) => {
                        break (InvokeOutcome::InitError { error_type: err.error_type, error_message: err.error_message }, false);
                    }
                    Some(_) => continue,
                    None => bail!("the Runtime API server stopped"),
                },
                _ = tokio::time::sleep_until(wake.into()) => {
                    if deadline.is_some() {
                        break (InvokeOutcome::Timeout { after_ms: self.spec.timeout.as_millis() as u64 }, false);
                    }
                    let error_message = format!("the function did not finish initialising within {} s", self.spec.init_timeout.as_secs_f64());
                    break (InvokeOutcome::InitError { error_type: "Runtime.InitTimeout".into(), error_message }, false);
                }
                status = inst.exited.wait_for(Option::is_some) => {
                    let how = status.map(|s| s.clone().unwrap_or_default()).unwrap_or_default();
                    let error_type = "Runtime.ExitError".to_string();
                    if deadline.is_some() {
                        let error_message = format!("the function exited while handling the event: {how}");
                        break (InvokeOutcome::FunctionError { error_type, error_message }, false);
                    }
                    let error_message = format!("the function exited before it asked for an event: {how}");
                    break (InvokeOutcome::InitError { error_type, error_message }, false);
                }
            }
        };
        if !keep {
            slot.take().expect("present").shutdown().await;
        }
        Ok(outcome)
    }

    /// Stops the execution environment, if one runs.
    pub async fn shutdown(&self) {
        if let Some(inst) = self.slot.lock().await.take() {
            inst.shutdown().await;
        }
    }

    async fn spawn_instance(&self) -> anyhow::Result<Instance> {
        let (queue_tx, queue_rx) = mpsc::channel(1);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let api = Arc::new(Api {
            queue: Mutex::new(queue_rx),
            events: events_tx,
            open: Default::default(),
            arn: self.spec.arn.clone(),
            timeout: self.spec.timeout,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the Runtime API port")?;
        let addr = listener.local_addr()?;
        let app = router(api.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("runtime API server: {e}");
            }
        });
        let env = self.environment(addr);
        let (exit_tx, exit_rx) = watch::channel(None);
        let runner = match &self.spec.mode {
            FunctionMode::Process { bootstrap } => spawn_process(bootstrap, &env, exit_tx)?,
            FunctionMode::Container { image } => {
                let docker = self.docker.clone().expect("checked in start");
                spawn_container(docker, image, &env, self.spec.memory_mb, exit_tx).await?
            }
        };
        self.cold_starts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Instance {
            api,
            queue: queue_tx,
            events: events_rx,
            server,
            runner,
            exited: exit_rx,
            initialised: false,
        })
    }

    /// The variables Lambda sets, then the function's own.
    fn environment(&self, api: SocketAddr) -> BTreeMap<String, String> {
        let s = &self.spec;
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("PATH", "/usr/local/bin:/usr/bin:/bin".into());
        set("TZ", ":UTC".into());
        set("LANG", "C.UTF-8".into());
        set("_HANDLER", "bootstrap".into());
        set("AWS_LAMBDA_RUNTIME_API", api.to_string());
        set("AWS_LAMBDA_FUNCTION_NAME", s.function_name.clone());
        set("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", s.memory_mb.to_string());
        set("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into());
        set("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into());
        set(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", s.function_name),
        );
        set("AWS_LAMBDA_LOG_STREAM_NAME", log_stream_name());
        set("AWS_REGION", s.region.clone());
        set("AWS_DEFAULT_REGION", s.region.clone());
        // Lambda hands the function its role's temporary credentials. An emulator takes any;
        // against real AWS the developer's own credentials stand in for the role.
        if let Some(endpoint) = &s.endpoint {
            set("AWS_ENDPOINT_URL", endpoint.clone());
            set("AWS_ACCESS_KEY_ID", "test".into());
            set("AWS_SECRET_ACCESS_KEY", "test".into());
            set("AWS_SESSION_TOKEN", "test".into());
        } else {
            for var in [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_PROFILE",
                "HOME",
            ] {
                if let Ok(v) = std::env::var(var) {
                    set(var, v);
                }
            }
        }
        if let FunctionMode::Process { bootstrap } = &s.mode {
            let root = bootstrap
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            set("LAMBDA_TASK_ROOT", root);
        } else {
            set("LAMBDA_TASK_ROOT", "/var/task".into());
        }
        // Logging and TLS roots are the developer's business, not Lambda's: pass them through.
        for var in ["RUST_LOG", "RUST_BACKTRACE", "SSL_CERT_FILE"] {
            if let Ok(v) = std::env::var(var) {
                set(var, v);
            }
        }
        env.extend(s.env.clone());
        env
    }
}

impl Drop for FunctionHost {
    fn drop(&mut self) {
        // Best effort without an async context: processes die with their group; containers are
        // removed by a detached task when a runtime is still around.
        if let Ok(mut slot) = self.slot.try_lock()
            && let Some(inst) = slot.take()
        {
            inst.server.abort();
            match inst.runner {
                Runner::Process { pid } => unsafe {
                    // SAFETY: signals the function's own process group.
                    libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
                },
                Runner::Container { docker, id } => {
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        rt.spawn(async move {
                            let opts = bollard::query_parameters::RemoveContainerOptions {
                                force: true,
                                ..Default::default()
                            };
                            let _ = docker.remove_container(&id, Some(opts)).await;
                        });
                    }
                }
            }
        }
    }
}

fn spawn_process(
    bootstrap: &std::path::Path,
    env: &BTreeMap<String, String>,
    exited: watch::Sender<Option<String>>,
) -> anyhow::Result<Runner> {
    let mut cmd = tokio::process::Command::new(bootstrap);
    // The function's stdout is its log, like CloudWatch: keep it off our stdout, which carries results.
    let log = std::io::stderr().as_fd().try_clone_to_owned()?;
    cmd.env_clear()
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(log))
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    if let Some(dir) = bootstrap.parent() {
        cmd.current_dir(dir);
    }
    // SAFETY: setpgid and prctl are async-signal-safe. The own process group lets a timeout kill
    // everything the function started; PDEATHSIG stops it if we die without cleaning up.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("start {}", bootstrap.display()))?;
    let pid = child.id().context("the function process exited at once")?;
    tokio::spawn(async move {
        let status = child
            .wait()
            .await
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        let _ = exited.send(Some(status));
    });
    Ok(Runner::Process { pid })
}

async fn spawn_container(
    docker: Docker,
    image: &str,
    env: &BTreeMap<String, String>,
    memory_mb: u32,
    exited: watch::Sender<Option<String>>,
) -> anyhow::Result<Runner> {
    use bollard::models::{ContainerCreateBody, HostConfig};
    // Inside the image the developer's PATH and task root do not apply.
    let env: Vec<String> = env
        .iter()
        .filter(|(k, _)| k.as_str() != "SSL_CERT_FILE")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        env: Some(env),
        host_config: Some(HostConfig {
            network_mode: Some("host".into()),
            memory: Some(i64::from(memory_mb) * 1024 * 1024),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .with_context(|| format!("create a container from {image}"))?;
    let id = created.id;
    docker
        .start_container(
            &id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .with_context(|| format!("start the function container from {image}"))?;
    // Forward the container's output as the function's log.
    let logs_opts = bollard::query_parameters::LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let mut logs = docker.logs(&id, Some(logs_opts));
    tokio::spawn(async move {
        while let Some(Ok(line)) = logs.next().await {
            eprint!("{line}");
        }
    });
    let waiter = docker.clone();
    let wait_id = id.clone();
    tokio::spawn(async move {
        let mut wait = waiter.wait_container(
            &wait_id,
            None::<bollard::query_parameters::WaitContainerOptions>,
        );
        let how = match wait.next().await {
            Some(Ok(r)) => format!("container exit status {}", r.status_code),
            Some(Err(e)) => format!("container stopped: {e}"),
            None => "container gone".to_string(),
        };
        let _ = exited.send(Some(how));
    });
    Ok(Runner::Container { docker, id })
}

fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route(&format!("{API_PREFIX}/invocation/next"), get(next))
        .route(
            &format!("{API_PREFIX}/invocation/{{id}}/response"),
            post(response),
        )
        .route(
            &format!("{API_PREFIX}/invocation/{{id}}/error"),
            post(error),
        )
        .route(&format!("{API_PREFIX}/init/error"), post(init_error))
        .with_state(api)
}

/// Long-polls for the next invocation, then hands it out with Lambda's headers.
async fn next(State(api): State<Arc<Api>>) -> Response {
    let inv = api.queue.lock().await.recv().await;
    let Some(inv) = inv else {
        return (StatusCode::GONE, "environment shutting down").into_response();
    };
    let deadline_ms = epoch_ms() + api.timeout.as_millis() as u64;
    api.open
        .lock()
        .expect("not poisoned")
        .insert(inv.id.clone());
    let _ = api.events.send(Event::Dispatched {
        id: inv.id.clone(),
        deadline: Instant::now() + api.timeout,
    });
    let mut headers = HeaderMap::new();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    };
    put("Lambda-Runtime-Aws-Request-Id", inv.id);
    put("Lambda-Runtime-Deadline-Ms", deadline_ms.to_string());
    put("Lambda-Runtime-Invoked-Function-Arn", api.arn.clone());
    put("Lambda-Runtime-Trace-Id", trace_id());
    put("Content-Type", "application/json".into());
    (StatusCode::OK, headers, inv.payload).into_response()
}

/// Takes an open request id; for an unknown one, the answer Lambda gives.
fn claim(api: &Api, id: &str) -> Option<Response> {
    if api.open.lock().expect("not poisoned").remove(id) {
        return None;
    }
    let body = serde_json::json!({"errorMessage": format!("Invalid request ID: {id}"), "errorType": "InvalidRequestID"});
    Some((StatusCode::BAD_REQUEST, axum::Json(body)).into_response())
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"status": "OK"})),
    )
        .into_response()
}

async fn response(
    State(api): State<Arc<Api>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = claim(&api, &id) {
        return r;
    }
    let _ = api.events.send(Event::Response { id, body });
    accepted()
}

async fn error(
    State(api): State<Arc<Api>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = claim(&api, &id) {
        return r;
    }
    let _ = api.events.send(Event::Error {
        id,
        err: ErrorBody::parse(&headers, &body),
    });
    accepted()
}

async fn init_error(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Response {
    let _ = api
        .events
        .send(Event::InitError(ErrorBody::parse(&headers, &body)));
    accepted()
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A request id in Lambda's UUID form.
pub fn request_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// An X-Ray trace header: `Root=1-<epoch seconds hex>-<24 hex>;Parent=<16 hex>;Sampled=0`.
fn trace_id() -> String {
    let root: [u8; 12] = rand::random();
    let parent: [u8; 8] = rand::random();
    format!(
        "Root=1-{:08x}-{};Parent={};Sampled=0",
        epoch_ms() / 1000,
        hex::encode(root),
        hex::encode(parent)
    )
}

/// Lambda's log stream name form: `YYYY/MM/DD/[$LATEST]<32 hex>`.
fn log_stream_name() -> String {
    let id: [u8; 16] = rand::random();
    format!(
        "{}/[$LATEST]{}",
        chrono::Utc::now().format("%Y/%m/%d"),
        hex::encode(id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_lambda_shapes() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        let trace = trace_id();
        assert!(
            trace.starts_with("Root=1-")
                && trace.contains(";Parent=")
                && trace.ends_with(";Sampled=0"),
            "{trace}"
        );
        assert!(log_stream_name().contains("/[$LATEST]"));
    }

    #[test]
    fn error_type_falls_back_to_the_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Lambda-Runtime-Function-Error-Type",
            HeaderValue::from_static("Runtime.Custom"),
        );
        let err = ErrorBody::parse(&headers, br#"{"errorMessage":"boom"}"#);
        assert_eq!(
            (err.error_type.as_str(), err.error_message.as_str()),
            ("Runtime.Custom", "boom")
        );
        let err = ErrorBody::parse(&HeaderMap::new(), b"not json");
        assert_eq!(
            (err.error_type.as_str(), err.error_message.as_str()),
            ("Unhandled", "not json")
        );
    }
}
