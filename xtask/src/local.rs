//! `cargo xtask local up|down|status|reset|poll`: the local AWS emulator (moto server by default,
//! or any running emulator given by `AWS_ENDPOINT_URL`), the local OCI registry, and the Kinesis
//! event-source poller that feeds the function.
//!
//! State lives in `<cache>/local/state.json` ([`LocalState`]) so that every shell finds the
//! running emulator; `down` stops only processes `up` started, after checking they still are ours.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::ctx::{Ctx, LocalState};
use crate::{daemon, esm, invoke, registry};

/// What identifies the moto server in `/proc/<pid>/cmdline`.
const MOTO_NEEDLE: &str = "moto_server";

/// Manage the local AWS emulator.
#[derive(Debug, Args)]
pub struct LocalArgs {
    #[command(subcommand)]
    cmd: LocalCmd,
}

#[derive(Debug, Subcommand)]
enum LocalCmd {
    /// Start moto (installing it on first use) and a local OCI registry, or adopt a running
    /// emulator given by --endpoint-url / AWS_ENDPOINT_URL.
    Up(UpArgs),
    /// Stop what `up` started and forget the state.
    Down,
    /// Show the emulator and registry, and whether they answer.
    Status,
    /// Wipe every resource in the emulator (moto only) and the event-source checkpoints.
    Reset,
    /// Feed the function from its Kinesis event-source mappings, like Lambda's pollers.
    Poll(PollArgs),
}

/// Options of `local up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Port for moto on 127.0.0.1.
    #[arg(long, env = "TAXI_LOCAL_PORT", default_value_t = 4566)]
    port: u16,
    /// Do not start the local OCI registry.
    #[arg(long)]
    no_registry: bool,
    /// Port for the registry (default: a free one).
    #[arg(long, env = "TAXI_REGISTRY_PORT")]
    registry_port: Option<u16>,
}

/// Options of `local poll`.
#[derive(Debug, Args)]
pub struct PollArgs {
    /// Stop once every shard is drained, instead of polling forever.
    #[arg(long)]
    until_idle: bool,
    /// Pause between polling rounds, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Give up a drain after this many seconds (a batch retried forever never drains).
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    #[command(flatten)]
    function: invoke::FunctionArgs,
}

/// Everything `up` needs, resolved; tests build one directly.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The cache directory (state, venv, registry storage, logs).
    pub cache: PathBuf,
    /// The repository root (for `tools/venv.sh`).
    pub root: PathBuf,
    /// moto's port.
    pub port: u16,
    /// An emulator to adopt instead of starting moto.
    pub endpoint: Option<String>,
    /// Start the registry when Docker is present.
    pub registry: bool,
    /// The registry's port; a free one when `None`.
    pub registry_port: Option<u16>,
    /// The moto server executable; `None`: `MOTO_SERVER_BIN`, else the venv (created on demand).
    pub moto_bin: Option<PathBuf>,
}

/// The result of `up`, `status` or `down`.
#[derive(Debug, Serialize)]
pub struct LocalReport {
    /// What happened: `started`, `already running`, `adopted`, `stopped`, `not running`, `status`.
    pub action: String,
    /// The recorded state, if any.
    pub state: Option<LocalState>,
    /// Whether the emulator answers.
    pub emulator_healthy: bool,
    /// Whether the registry answers (None: no registry).
    pub registry_healthy: Option<bool>,
    /// Things the user should know (e.g. why no registry runs).
    pub notes: Vec<String>,
}

impl std::fmt::Display for LocalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            None => write!(f, "local emulator: {}", self.action)?,
            Some(s) => {
                let pid = s.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
                let health = if self.emulator_healthy {
                    "answering"
                } else {
                    "NOT answering"
                };
                write!(
                    f,
                    "local emulator {}: {} {}{pid} ({health})",
                    self.action, s.kind, s.endpoint
                )?;
                if let Some(reg) = &s.registry {
                    let health = if self.registry_healthy == Some(true) {
                        "answering"
                    } else {
                        "NOT answering"
                    };
                    write!(f, "\nregistry: {reg} ({health})")?;
                }
                if self.emulator_healthy {
                    write!(f, "\nuse it: export AWS_ENDPOINT_URL={}", s.endpoint)?;
                }
            }
        }
        for n in &self.notes {
            write!(f, "\nnote: {n}")?;
        }
        Ok(())
    }
}

impl LocalArgs {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self.cmd {
            LocalCmd::Up(a) => {
                let opts = UpOptions {
                    cache: ctx.cache.clone(),
                    root: ctx.root.clone(),
                    port: a.port,
                    endpoint: ctx.endpoint_override.clone(),
                    registry: !a.no_registry,
                    registry_port: a.registry_port,
                    moto_bin: None,
                };
                if ctx.dry_run {
                    ctx.note(format!(
                        "would start moto on 127.0.0.1:{} (state in {})",
                        a.port,
                        LocalState::path(&ctx.cache).display()
                    ));
                    return Ok(());
                }
                let _spin = ctx.spinner("starting the local emulator");
                ctx.emit(&up(&opts).await?)
            }
            LocalCmd::Down => {
                if ctx.dry_run {
                    ctx.note(format!(
                        "would stop what {} records",
                        LocalState::path(&ctx.cache).display()
                    ));
                    return Ok(());
                }
                ctx.emit(&down(&ctx.cache)?)
            }
            LocalCmd::Status => ctx.emit(&status(&ctx.cache).await?),
            LocalCmd::Reset => {
                let endpoint = ctx
                    .endpoint()?
                    .context("no emulator endpoint: start one with `cargo xtask local up`")?;
                if ctx.dry_run {
                    ctx.note(format!(
                        "would wipe every resource in the emulator at {endpoint}"
                    ));
                    return Ok(());
                }
                ctx.confirm(&format!(
                    "wipe every resource in the emulator at {endpoint}"
                ))?;
                reset(&ctx.cache, &endpoint).await?;
                ctx.note(format!("emulator at {endpoint} reset"));
                Ok(())
            }
            LocalCmd::Poll(a) => a.run(ctx).await,
        }
    }
}

impl PollArgs {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let sdk = ctx.aws().await?;
        let host = invoke::local_host(ctx, &self.function).await?;
        let mut opts = esm::DrainOptions::new(checkpoint_dir(&ctx.cache));
        opts.timeout = Duration::from_secs(self.timeout_s);
        let mut total = esm::DrainReport::default();
        loop {
            let round = esm::drain(&sdk, &host, &opts).await;
            let round = match round {
                Ok(r) => r,
                Err(e) => {
                    host.shutdown().await;
                    return Err(e);
                }
            };
            anyhow::ensure!(
                round.mappings > 0,
                "function {} has no enabled Kinesis event-source mapping in the emulator: deploy the stack first (`cargo xtask deploy --env {}`)",
                ctx.env.function_name,
                ctx.env.name
            );
            if round.invocations > 0 && !self.until_idle && !ctx.json() {
                ctx.note(&round);
            }
            let idle = round.invocations == 0;
            total.mappings = round.mappings;
            total.invocations += round.invocations;
            total.records_succeeded += round.records_succeeded;
            total.records_to_destination += round.records_to_destination;
            total.records_discarded += round.records_discarded;
            total.batch_sizes.extend(round.batch_sizes);
            total.failure_records.extend(round.failure_records);
            if self.until_idle && idle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(self.interval_ms)).await;
        }
        host.shutdown().await;
        ctx.emit(&total)
    }
}

/// Where event-source checkpoints live: they describe the emulator's streams, so they go with it.
pub fn checkpoint_dir(cache: &Path) -> PathBuf {
    cache.join("local").join("esm")
}

/// Starts the emulator (or adopts one) and the registry; idempotent.
pub async fn up(opts: &UpOptions) -> anyhow::Result<LocalReport> {
    let mut notes = Vec::new();
    if let Some(state) = LocalState::read(&opts.cache)? {
        let alive = match state.pid {
            Some(pid) => daemon::is_running(pid, MOTO_NEEDLE),
            None => true,
        };
        if alive && answers(&state.endpoint).await {
            let mut state = state;
            ensure_registry(opts, &mut state, &mut notes).await?;
            state.write(&opts.cache)?;
            return report("already running", Some(state), notes).await;
        }
        notes.push(format!(
            "the emulator recorded at {} is gone; starting afresh",
            state.endpoint
        ));
        stop_recorded(&state)?;
        std::fs::remove_file(LocalState::path(&opts.cache)).ok();
        std::fs::remove_dir_all(checkpoint_dir(&opts.cache)).ok();
    }

    let (mut state, action) = if let Some(endpoint) = &opts.endpoint {
        if !answers(endpoint).await {
            bail!(
                "the emulator at {endpoint} (--endpoint-url / AWS_ENDPOINT_URL) does not answer: start it \
                 (e.g. `docker compose -f docker-compose.local.yaml up -d` for LocalStack), or unset AWS_ENDPOINT_URL to start moto"
            );
        }
        let state = LocalState {
            endpoint: endpoint.clone(),
            pid: None,
            kind: "external".into(),
            registry: None,
            registry_pid: None,
        };
        (state, "adopted")
    } else {
        let endpoint = format!("http://127.0.0.1:{}", opts.port);
        if daemon::port_in_use(opts.port) {
            bail!(
                "port {} is taken by something that is not our emulator: stop it, choose another port with TAXI_LOCAL_PORT, \
                 or adopt it with AWS_ENDPOINT_URL={endpoint}",
                opts.port
            );
        }
        let bin = moto_bin(opts)?;
        let pid = start_moto(
            &opts.root,
            &bin,
            opts.port,
            &opts.cache.join("local").join("moto.log"),
        )?;
        let ready = daemon::wait_until(
            &format!("moto on {endpoint}"),
            Duration::from_secs(60),
            || daemon::is_running(pid, MOTO_NEEDLE),
            || moto_healthy(&endpoint),
        )
        .await;
        if let Err(e) = ready {
            daemon::stop(pid, MOTO_NEEDLE, Duration::from_secs(2)).ok();
            return Err(e.context(format!(
                "see {}",
                opts.cache.join("local/moto.log").display()
            )));
        }
        (
            LocalState {
                endpoint,
                pid: Some(pid),
                kind: "moto".into(),
                registry: None,
                registry_pid: None,
            },
            "started",
        )
    };
    // Written before the registry starts, so that a failing registry still leaves moto findable.
    state.write(&opts.cache)?;
    ensure_registry(opts, &mut state, &mut notes).await?;
    state.write(&opts.cache)?;
    report(action, Some(state), notes).await
}

/// Starts the registry when wanted, Docker is present and none of ours runs.
async fn ensure_registry(
    opts: &UpOptions,
    state: &mut LocalState,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    if !opts.registry {
        return Ok(());
    }
    if let (Some(pid), Some(addr)) = (state.registry_pid, &state.registry)
        && registry::is_running(pid)
        && registry::healthy(addr).await
    {
        return Ok(());
    }
    state.registry = None;
    state.registry_pid = None;
    if !docker_present().await {
        notes.push("Docker is not running: no local registry started (images are only needed for container-mode runs)".into());
        return Ok(());
    }
    if registry::binary().is_none() {
        notes.push(format!("no local OCI registry: {}", registry::INSTALL_HINT));
        return Ok(());
    }
    let port = match opts.registry_port {
        Some(p) => p,
        None => daemon::free_port()?,
    };
    let handle = registry::start(&opts.cache.join("local").join("registry"), port).await?;
    state.registry = Some(handle.addr);
    state.registry_pid = Some(handle.pid);
    Ok(())
}

async fn docker_present() -> bool {
    match bollard::Docker::connect_with_local_defaults() {
        Ok(d) => tokio::time::timeout(Duration::from_secs(3), d.ping())
            .await
            .is_ok_and(|r| r.is_ok()),
        Err(_) => false,
    }
}

/// Stops what `up` started (only processes that still are ours) and removes the state.
pub fn down(cache: &Path) -> anyhow::Result<LocalReport> {
    let Some(state) = LocalState::read(cache)? else {
        return Ok(LocalReport {
            action: "not running".into(),
            state: None,
            emulator_healthy: false,
            registry_healthy: None,
            notes: vec![],
        });
    };
    let notes = stop_recorded(&state)?;
    std::fs::remove_file(LocalState::path(cache))
        .with_context(|| format!("remove {}", LocalState::path(cache).display()))?;
    // Checkpoints name sequence numbers of streams that died with the emulator.
    std::fs::remove_dir_all(checkpoint_dir(cache)).ok();
    Ok(LocalReport {
        action: "stopped".into(),
        state: Some(state),
        emulator_healthy: false,
        registry_healthy: None,
        notes,
    })
}

fn stop_recorded(state: &LocalState) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    if let Some(pid) = state.pid
        && !daemon::stop(pid, MOTO_NEEDLE, Duration::from_secs(5))?
    {
        notes.push(format!("moto (pid {pid}) was no longer running"));
    }
    if let Some(pid) = state.registry_pid {
        if !registry::is_running(pid) {
            notes.push(format!("registry (pid {pid}) was no longer running"));
        }
        registry::stop(pid)?;
    }
    Ok(notes)
}

/// Reports the recorded state and whether its parts answer.
pub async fn status(cache: &Path) -> anyhow::Result<LocalReport> {
    let state = LocalState::read(cache)?;
    let action = if state.is_some() {
        "status"
    } else {
        "not running"
    };
    report(action, state, vec![]).await
}

async fn report(
    action: &str,
    state: Option<LocalState>,
    notes: Vec<String>,
) -> anyhow::Result<LocalReport> {
    let (emulator_healthy, registry_healthy) = match &state {
        None => (false, None),
        Some(s) => {
            let emu = if s.kind == "moto" {
                moto_healthy(&s.endpoint).await
            } else {
                answers(&s.endpoint).await
            };
            let reg = match &s.registry {
                Some(addr) => Some(registry::healthy(addr).await),
                None => None,
            };
            (emu, reg)
        }
    };
    Ok(LocalReport {
        action: action.into(),
        state,
        emulator_healthy,
        registry_healthy,
        notes,
    })
}

/// Wipes every resource in the moto server at `endpoint`, and the checkpoints that referred to them.
pub async fn reset(cache: &Path, endpoint: &str) -> anyhow::Result<()> {
    let client = http();
    let url = format!("{}/moto-api/reset", endpoint.trim_end_matches('/'));
    let resp = client
        .post(&url)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    if !resp.status().is_success() {
        bail!(
            "{url} answered {}: reset works on moto only; restart other emulators to wipe them",
            resp.status()
        );
    }
    std::fs::remove_dir_all(checkpoint_dir(cache)).ok();
    Ok(())
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("static client config")
}

/// True when moto's own API answers with 200.
pub async fn moto_healthy(endpoint: &str) -> bool {
    let url = format!("{}/moto-api/", endpoint.trim_end_matches('/'));
    matches!(http().get(url).send().await, Ok(r) if r.status().is_success())
}

/// The folder of Python start-up patches for moto, put on the server's PYTHONPATH.
pub fn moto_patches(root: &Path) -> PathBuf {
    root.join("tools").join("moto-patches")
}

/// True when anything answers HTTP at `endpoint`.
async fn answers(endpoint: &str) -> bool {
    http().get(endpoint).send().await.is_ok()
}

/// The moto server executable: given, `MOTO_SERVER_BIN`, or the venv (created on first use).
fn moto_bin(opts: &UpOptions) -> anyhow::Result<PathBuf> {
    if let Some(bin) = opts
        .moto_bin
        .clone()
        .or_else(|| std::env::var_os("MOTO_SERVER_BIN").map(PathBuf::from))
    {
        return Ok(bin);
    }
    // tools/venv.sh is a no-op when the venv matches tools/requirements-moto.txt.
    let mut cmd = Command::new("bash");
    cmd.arg(opts.root.join("tools/venv.sh"))
        .arg("moto")
        .env("TAXI_CACHE_DIR", &opts.cache);
    crate::util::run_cmd(&mut cmd)
        .context("install moto into its venv (needs python3 with venv and PyPI access)")?;
    let bin = opts.cache.join("venvs/moto/bin/moto_server");
    anyhow::ensure!(
        bin.is_file(),
        "{} missing after installing moto",
        bin.display()
    );
    Ok(bin)
}

fn start_moto(root: &Path, bin: &Path, port: u16, log: &Path) -> anyhow::Result<u32> {
    let mut cmd = Command::new(bin);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    // The toolkit polls Kinesis for the function itself (crate::esm): moto stores the records of
    // a mapped stream and runs no function on them (tools/moto-patches/sitecustomize.py).
    cmd.env("PYTHONPATH", moto_patches(root));
    // Other triggers would make moto's own Lambda executor pull images through Docker: pointed
    // at a socket that does not exist, it fails those attempts at once.
    cmd.env(
        "DOCKER_HOST",
        "unix:///nonexistent/taxi-duration-no-docker.sock",
    );
    // Like AWS, refuse a function whose image is not in the (emulated) ECR repository: by default
    // moto takes any ImageUri, and a deploy of a missing image would look like it worked.
    cmd.env("MOTO_LAMBDA_STUB_ECR", "false");
    daemon::spawn_detached(&mut cmd, log).with_context(|| format!("start {}", bin.display()))
}
