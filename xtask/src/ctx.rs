//! Global flags, resolved once into a [`Ctx`] every command receives.

use std::fmt::Display;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::config::{EnvConfig, Target};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Human-readable text and tables.
    #[default]
    Text,
    /// One JSON document on stdout, for machines.
    Json,
}

/// Flags every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Environment to act on: dev, stg or prod.
    #[arg(long, global = true, env = "TAXI_ENV", default_value = "dev")]
    pub env: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Print what would be done, change nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Do not ask for confirmation of destructive or production actions.
    #[arg(long, global = true)]
    pub yes: bool,
    /// AWS endpoint to use instead of the environment's (an emulator such as moto or LocalStack).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
}

/// What a running local emulator left behind, so that other shells can find it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LocalState {
    /// The AWS endpoint, e.g. `http://127.0.0.1:4566`.
    pub endpoint: String,
    /// The emulator's process id, when we started it (None: an emulator we did not start).
    pub pid: Option<u32>,
    /// Which emulator: `moto` or `external`.
    pub kind: String,
    /// The local OCI registry, `127.0.0.1:port`, when one runs.
    pub registry: Option<String>,
    /// The registry's process id, when we started it.
    pub registry_pid: Option<u32>,
}

impl LocalState {
    /// Where the state file lives.
    pub fn path(cache: &Path) -> PathBuf {
        cache.join("local").join("state.json")
    }

    /// Reads the state file; `None` when there is none.
    pub fn read(cache: &Path) -> anyhow::Result<Option<Self>> {
        let path = Self::path(cache);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("parse {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    /// Writes the state file.
    pub fn write(&self, cache: &Path) -> anyhow::Result<()> {
        let path = Self::path(cache);
        std::fs::create_dir_all(path.parent().expect("has parent"))?;
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write {}", path.display()))
    }
}

/// Everything a command needs besides its own flags.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub env: EnvConfig,
    pub output: OutputFormat,
    pub dry_run: bool,
    pub yes: bool,
    /// Endpoint given by flag or `AWS_ENDPOINT_URL`.
    pub endpoint_override: Option<String>,
    /// The repository root (the folder holding the workspace Cargo.toml).
    pub root: PathBuf,
    /// A cache directory outside the clone: venvs, emulator state, local runs.
    pub cache: PathBuf,
    /// The local run store's directory, instead of `TAXI_RUNS_DIR` or `<root>/runs` (tests and
    /// callers that keep their own store).
    pub runs_dir: Option<PathBuf>,
    /// An MLflow server, instead of `MLFLOW_TRACKING_URI` (tests and callers with their own).
    pub tracking_uri: Option<String>,
}

impl Ctx {
    /// Resolves the global flags and loads the environment's configuration.
    pub fn new(args: &GlobalArgs) -> anyhow::Result<Self> {
        let root = repo_root();
        let env = EnvConfig::load(&root, &args.env)?;
        Ok(Self {
            env,
            output: args.output,
            dry_run: args.dry_run,
            yes: args.yes,
            endpoint_override: args.endpoint_url.clone().filter(|s| !s.is_empty()),
            root,
            cache: cache_dir(),
            runs_dir: None,
            tracking_uri: None,
        })
    }

    /// True when results should be printed as JSON.
    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }

    /// Prints a result: its Display for people, its JSON for machines.
    pub fn emit<T: Display + Serialize>(&self, value: &T) -> anyhow::Result<()> {
        if self.json() {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            println!("{value}");
        }
        Ok(())
    }

    /// A note for people, on stderr, so that JSON on stdout stays clean.
    pub fn note(&self, msg: impl Display) {
        eprintln!("{msg}");
    }

    /// The AWS endpoint to use: the flag or `AWS_ENDPOINT_URL`, else the running local emulator
    /// for a `local` environment, else none (real AWS).
    pub fn endpoint(&self) -> anyhow::Result<Option<String>> {
        if let Some(e) = &self.endpoint_override {
            return Ok(Some(e.clone()));
        }
        match self.env.target {
            Target::Aws => Ok(None),
            Target::Local => match LocalState::read(&self.cache)? {
                Some(state) => Ok(Some(state.endpoint)),
                None => bail!(
                    "environment `{}` targets the local emulator, but none is running: start it with `cargo xtask local up`, \
                     or point AWS_ENDPOINT_URL at LocalStack or another emulator",
                    self.env.name
                ),
            },
        }
    }

    /// True when the environment is served by an emulator (moto, LocalStack): the toolkit then
    /// stands in for what the emulator lacks (Lambda's poller, ECR's copy of pushed images).
    pub fn on_emulator(&self) -> anyhow::Result<bool> {
        Ok(self.endpoint()?.is_some())
    }

    /// The shared AWS configuration: the standard chain, with the environment's region and,
    /// on an emulator, its endpoint (and dummy credentials when none are set).
    pub async fn aws(&self) -> anyhow::Result<SdkConfig> {
        let endpoint = self.endpoint()?;
        aws_config_for(&self.env.region, endpoint.as_deref()).await
    }

    /// An S3 client; path-style addressing on an emulator endpoint.
    pub async fn s3(&self) -> anyhow::Result<aws_sdk_s3::Client> {
        let sdk = self.aws().await?;
        Ok(s3_client(&sdk))
    }

    /// Asks before a destructive or production action: `--yes`, or the environment's name typed
    /// on a terminal. Without either, refuses.
    pub fn confirm(&self, action: &str) -> anyhow::Result<()> {
        if self.yes || self.dry_run {
            return Ok(());
        }
        let env = &self.env.name;
        if !std::io::stdin().is_terminal() {
            bail!(
                "refusing to {action} in `{env}` without confirmation: pass --yes (or --dry-run to see the plan)"
            );
        }
        eprint!("About to {action} in `{env}`. Type the environment name to confirm: ");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if line.trim() != env {
            bail!("not confirmed: typed `{}`, expected `{env}`", line.trim());
        }
        Ok(())
    }

    /// A spinner on a terminal, nothing otherwise.
    pub fn spinner(&self, msg: impl Into<String>) -> indicatif::ProgressBar {
        if std::io::stderr().is_terminal() && !self.json() {
            let pb = indicatif::ProgressBar::new_spinner();
            pb.enable_steady_tick(std::time::Duration::from_millis(120));
            pb.set_message(msg.into());
            pb
        } else {
            indicatif::ProgressBar::hidden()
        }
    }
}

/// AWS configuration for a region and an optional emulator endpoint.
pub async fn aws_config_for(region: &str, endpoint: Option<&str>) -> anyhow::Result<SdkConfig> {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.to_string()));
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            && std::env::var_os("AWS_PROFILE").is_none()
        {
            // Emulators accept any credentials; this keeps the chain from searching for real ones.
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "emulator",
            ));
        }
    }
    Ok(loader.load().await)
}

/// An S3 client for a shared config; emulator endpoints need path-style addressing.
pub fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(sdk.endpoint_url().is_some())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// The repository root: the workspace folder above xtask's manifest.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The cache directory: `TAXI_CACHE_DIR`, else `$XDG_CACHE_HOME/taxi-duration`, else `~/.cache/taxi-duration`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TAXI_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("taxi-duration")
}
