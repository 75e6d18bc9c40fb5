//! `cargo xtask ci`: exactly what CI runs, locally. Formatting, lints, the whole test suite,
//! then the end-to-end run on the local emulator. Any failing step fails the command.

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
    /// Only these steps (setup, fmt, clippy, test, e2e), comma-separated.
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

/// The steps, in order, as cargo argument lists.
pub fn steps(no_e2e: bool) -> Vec<(&'static str, Vec<&'static str>)> {
    let steps = vec![
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
        (
            "test",
            vec!["nextest", "run", "--workspace", "--no-fail-fast"],
        ),
    ];
    let _ = no_e2e; // The end-to-end step joins once `cargo xtask e2e` exists.
    steps
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
            let started = Instant::now();
            let ok = Command::new(&cargo)
                .current_dir(&ctx.root)
                .args(&args)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
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
