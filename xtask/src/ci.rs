//! `cargo xtask ci`: exactly what CI runs, locally. Formatting, lints, cargo-deny (licenses,
//! bans, sources), the whole test suite, then the end-to-end run on the local emulator. Any
//! failing step fails the command.
//!
//! cargo-deny's advisories check needs the RustSec database, which is fetched from GitHub; it
//! runs in the workflow's `deny` job, not here, so that `cargo xtask ci` works offline.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use crate::ctx::Ctx;

/// Run the checks CI runs.
#[derive(Debug, Args)]
pub struct CiArgs {
    /// Skip the end-to-end run.
    #[arg(long)]
    pub no_e2e: bool,
    /// Only these steps (setup, fmt, clippy, deny, test, e2e), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// One step's outcome.
#[derive(Debug, Serialize)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub seconds: f64,
}

/// All steps.
#[derive(Debug, Serialize)]
pub struct CiReport {
    pub steps: Vec<Step>,
    pub ok: bool,
}

impl std::fmt::Display for CiReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{:<8} {:>6} {:>9}", "step", "result", "seconds")?;
        for s in &self.steps {
            writeln!(
                f,
                "{:<8} {:>6} {:>9.1}",
                s.name,
                if s.ok { "ok" } else { "FAILED" },
                s.seconds
            )?;
        }
        write!(
            f,
            "ci: {}",
            if self.ok {
                "all steps passed"
            } else {
                "FAILED"
            }
        )
    }
}

/// What the `deny` step checks: everything but advisories (the RustSec database comes from
/// GitHub; the workflow's deny job checks advisories as well).
pub const DENY_CHECKS: [&str; 3] = ["licenses", "bans", "sources"];

/// The steps, in order, as cargo argument lists.
pub fn steps(no_e2e: bool) -> Vec<(&'static str, Vec<&'static str>)> {
    // Offline: the crate graph from the crates tools/setup.sh fetched (`cargo fetch --locked`).
    // Duplicate versions are listed without their inclusion graphs (thousands of lines).
    let mut deny = vec![
        "deny",
        "--offline",
        "--locked",
        "check",
        "--hide-inclusion-graph",
    ];
    deny.extend(DENY_CHECKS);
    let mut steps = vec![
        ("fmt", vec!["fmt", "--all", "--check"]),
        (
            "clippy",
            vec![
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        ("deny", deny),
        (
            "test",
            vec!["nextest", "run", "--workspace", "--no-fail-fast"],
        ),
    ];
    if !no_e2e {
        steps.push(("e2e", vec!["xtask", "e2e"]));
    }
    steps
}

/// `path` (the `PATH` value) with `<cache>/tools/bin` (where tools/setup.sh installs cargo-deny)
/// first, or an error naming the fix when no `cargo-deny` is found on it.
pub fn deny_path(cache: &Path, path: Option<OsString>) -> anyhow::Result<OsString> {
    let mut dirs = vec![cache.join("tools").join("bin")];
    dirs.extend(std::env::split_paths(&path.unwrap_or_default()));
    let found = dirs
        .iter()
        .map(|d| d.join("cargo-deny"))
        .any(|p: PathBuf| p.is_file());
    anyhow::ensure!(
        found,
        "cargo-deny is not installed (looked in {} and PATH); run `bash tools/setup.sh`, \
         which installs it there",
        dirs[0].display()
    );
    Ok(std::env::join_paths(dirs)?)
}

impl CiArgs {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut report = CiReport {
            steps: Vec::new(),
            ok: true,
        };
        if self.only.is_empty() || self.only.iter().any(|o| o == "setup") {
            // Services and venvs the tests need; idempotent and cached outside the clone.
            ctx.note("==> ci step setup: bash tools/setup.sh");
            let started = Instant::now();
            let ok = Command::new("bash")
                .current_dir(&ctx.root)
                // The same cache as xtask's (TAXI_CACHE_DIR, else XDG_CACHE_HOME, else ~/.cache).
                .env("TAXI_CACHE_DIR", &ctx.cache)
                .arg("tools/setup.sh")
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            report.steps.push(Step {
                name: "setup".into(),
                ok,
                seconds: started.elapsed().as_secs_f64(),
            });
            anyhow::ensure!(
                ok,
                "ci failed: tools/setup.sh could not install what the tests need"
            );
        }
        for (name, args) in steps(self.no_e2e) {
            if !self.only.is_empty() && !self.only.iter().any(|o| o == name) {
                continue;
            }
            ctx.note(format!("==> ci step {name}: cargo {}", args.join(" ")));
            if name == "deny" {
                ctx.note(
                    "    (advisories need the RustSec database from GitHub: \
                     checked by the workflow's deny job only)",
                );
            }
            let started = Instant::now();
            let mut cmd = Command::new(&cargo);
            cmd.current_dir(&ctx.root).args(&args);
            let ok = if name == "deny" {
                match deny_path(&ctx.cache, std::env::var_os("PATH")) {
                    Ok(path) => {
                        let ok = cmd.env("PATH", path).status().is_ok_and(|s| s.success());
                        if !ok {
                            ctx.note(
                                "ci step deny failed; if cargo metadata could not download a \
                                 crate offline, `bash tools/setup.sh` fetches them (cargo fetch)",
                            );
                        }
                        ok
                    }
                    Err(e) => {
                        ctx.note(format!("ci step deny: {e:#}"));
                        false
                    }
                }
            } else {
                cmd.status().is_ok_and(|s| s.success())
            };
            report.steps.push(Step {
                name: name.to_string(),
                ok,
                seconds: started.elapsed().as_secs_f64(),
            });
            report.ok &= ok;
        }
        ctx.emit(&report)?;
        anyhow::ensure!(
            report.ok,
            "ci failed: {}",
            report
                .steps
                .iter()
                .filter(|s| !s.ok)
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_runs_after_clippy_and_checks_all_but_advisories() {
        let names: Vec<_> = steps(true).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["fmt", "clippy", "deny", "test"]);
        let deny = steps(true)
            .into_iter()
            .find(|(n, _)| *n == "deny")
            .unwrap()
            .1;
        assert!(deny.contains(&"--offline"), "{deny:?}");
        assert!(deny.ends_with(&DENY_CHECKS), "{deny:?}");
        assert!(!deny.contains(&"advisories"), "{deny:?}");
    }

    #[test]
    fn deny_path_puts_the_cache_first_and_names_the_fix_when_missing() {
        let cache = tempfile::tempdir().unwrap();
        let err = deny_path(cache.path(), Some("".into())).unwrap_err();
        assert!(err.to_string().contains("bash tools/setup.sh"), "{err}");

        let bin = cache.path().join("tools/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("cargo-deny"), "").unwrap();
        let path = deny_path(cache.path(), Some("/usr/bin".into())).unwrap();
        let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        assert_eq!(dirs, [bin, PathBuf::from("/usr/bin")]);
    }
}
