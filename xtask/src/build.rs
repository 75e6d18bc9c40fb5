//! `cargo xtask build lambda`: the static, stripped `bootstrap` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::ctx::Ctx;
use crate::util::run_cmd;

/// The host target the static binary is built for (`+crt-static` on the gnu target).
pub const LAMBDA_TARGET: &str = "x86_64-unknown-linux-gnu";

/// What to build.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BuildWhat {
    /// The Lambda `bootstrap` binary.
    Lambda,
}

/// Build an artifact.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// What to build.
    #[arg(value_enum)]
    what: BuildWhat,
    /// Build with the dev profile (faster to build, larger binary).
    #[arg(long)]
    debug: bool,
}

/// A built bootstrap binary.
#[derive(Debug, Serialize)]
pub struct BuiltBinary {
    /// The binary's path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The profile it was built with.
    pub profile: String,
}

impl std::fmt::Display for BuiltBinary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bootstrap: {} ({:.1} MB, {}, static)",
            self.path.display(),
            self.bytes as f64 / 1e6,
            self.profile
        )
    }
}

impl BuildArgs {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self.what {
            BuildWhat::Lambda => {
                let built = build_lambda(&ctx.root, !self.debug)?;
                ctx.emit(&built)
            }
        }
    }
}

/// The cargo target directory the workspace builds into.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Where [`build_lambda`] leaves the binary: the size-optimised `lambda` profile writes to its own
/// folder.
pub fn bootstrap_path(root: &Path, release: bool) -> PathBuf {
    let dir = if release { "lambda" } else { "debug" };
    target_dir(root)
        .join(LAMBDA_TARGET)
        .join(dir)
        .join("bootstrap")
}

/// Builds the static `bootstrap` binary and returns where it is. `release` selects the size-optimised
/// `lambda` profile (reported as "release"), else the dev profile.
pub fn build_lambda(root: &Path, release: bool) -> anyhow::Result<BuiltBinary> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args([
        "build",
        "--package",
        "lambda",
        "--bin",
        "bootstrap",
        "--target",
        LAMBDA_TARGET,
    ]);
    if release {
        cmd.args(["--profile", "lambda"]);
    }
    // Only target artifacts get crt-static; build scripts and proc macros stay dynamic.
    cmd.env(
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
        "-C target-feature=+crt-static",
    );
    run_cmd(&mut cmd).context("build the lambda bootstrap binary")?;
    let profile = if release { "release" } else { "debug" };
    let path = bootstrap_path(root, release);
    let bytes = std::fs::metadata(&path)
        .with_context(|| format!("built binary missing at {}", path.display()))?
        .len();
    if bytes == 0 {
        bail!("{} is empty", path.display());
    }
    Ok(BuiltBinary {
        path,
        bytes,
        profile: profile.to_string(),
    })
}
