//! `cargo xtask bench train`: our release training binary and the Python reference
//! (../shared/reference/zoomcamp_reference.py --no-exact) on the same files, in one run,
//! reported as whole-process wall-time ratios and peak memories.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::ctx::Ctx;
use crate::util::run_cmd;

/// Benchmarks, side by side with the Python baseline.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    cmd: BenchCmd,
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Training end to end: read, clean, vectorise, fit, evaluate.
    Train(BenchTrainArgs),
}

/// Training benchmark flags.
#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// Real-data pairs to run, by year (train on YYYY-01, validate on YYYY-02).
    #[arg(long, value_delimiter = ',', default_value = "2021")]
    pub years: Vec<String>,
    /// Rows of the synthetic month case (0 skips it).
    #[arg(long, default_value_t = 3_000_000)]
    pub synthetic_rows: usize,
    /// Runs of each program per case; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Benchmark this training binary instead of building `taxi-train` in release.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// The TLC data directory (default: ../shared/data/tlc beside the repository).
    #[arg(long, env = "TAXI_TLC_DIR")]
    pub tlc_dir: Option<PathBuf>,
}

/// One program's measurement on one case.
#[derive(Debug, Serialize, Clone)]
pub struct Run {
    pub wall_s: f64,
    pub peak_rss_mb: f64,
    pub rmse_val: Option<f64>,
}

/// One case: both programs on the same files.
#[derive(Debug, Serialize)]
pub struct Case {
    pub name: String,
    pub ours: Run,
    pub reference: Run,
    /// reference wall / ours wall.
    pub speedup: f64,
    /// reference peak / ours peak.
    pub memory_ratio: f64,
}

/// The benchmark report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub cases: Vec<Case>,
    pub repeat: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "training, whole process, median of {} runs each",
            self.repeat
        )?;
        writeln!(
            f,
            "{:<22} {:>10} {:>10} {:>8} {:>11} {:>11} {:>8} {:>10} {:>10}",
            "case",
            "ours s",
            "python s",
            "speedup",
            "ours MB",
            "python MB",
            "mem x",
            "ours rmse",
            "py rmse"
        )?;
        for c in &self.cases {
            let r = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.6}"));
            writeln!(
                f,
                "{:<22} {:>10.3} {:>10.3} {:>7.1}x {:>11.1} {:>11.1} {:>7.1}x {:>10} {:>10}",
                c.name,
                c.ours.wall_s,
                c.reference.wall_s,
                c.speedup,
                c.ours.peak_rss_mb,
                c.reference.peak_rss_mb,
                c.memory_ratio,
                r(c.ours.rmse_val),
                r(c.reference.rmse_val)
            )?;
        }
        Ok(())
    }
}

/// Runs a command, returning wall time, peak RSS of the child and its stdout.
fn measure(cmd: &mut Command) -> anyhow::Result<(f64, f64, String)> {
    let shown = format!("{cmd:?}");
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {shown}"))?;
    let pid = child.id() as libc::pid_t;
    // Peak memory: the child's own VmHWM, polled until it exits. (wait4's ru_maxrss would count
    // the RSS of this process, which the child shares between fork and exec.)
    let hwm = std::thread::spawn(move || {
        let mut peak_kb = 0u64;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let kb = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
            match kb {
                Some(kb) => peak_kb = peak_kb.max(kb),
                None => break,
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        peak_kb
    });
    let mut stdout = child.stdout.expect("piped");
    let mut stderr = child.stderr.expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out)?;
    let mut status = 0;
    // SAFETY: rusage is plain data, and pid is our own child, reaped exactly once here.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed().as_secs_f64();
    if r != pid {
        bail!("wait for {shown}: {}", std::io::Error::last_os_error());
    }
    let status = std::process::ExitStatus::from_raw(status);
    let err = err_thread.join().unwrap_or_default();
    if !status.success() {
        bail!("{shown} failed with {status}: {err}");
    }
    let peak_kb = hwm.join().unwrap_or(0);
    Ok((wall, peak_kb as f64 / 1024.0, out))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rmse_of(stdout: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(stdout).ok()?;
    v.get("rmse_val")?.as_f64()
}

/// The default TLC directory: `../shared/data/tlc` beside the repository.
pub fn default_tlc_dir(root: &Path) -> PathBuf {
    root.join("../shared/data/tlc")
}

impl BenchArgs {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self.cmd {
            BenchCmd::Train(args) => {
                let report = args.run(ctx)?;
                ctx.emit(&report)
            }
        }
    }
}

impl BenchTrainArgs {
    fn run(&self, ctx: &Ctx) -> anyhow::Result<Report> {
        let python = ctx.cache.join("venvs/reference/bin/python");
        let script = ctx.root.join("../shared/reference/zoomcamp_reference.py");
        if !python.exists() || !script.exists() {
            bail!(
                "the Python reference is not set up: need {} and {} (run `bash tools/setup.sh`, which creates the reference venv when ../shared is present)",
                python.display(),
                script.display()
            );
        }
        let ours = match &self.binary {
            Some(path) => path.clone(),
            None => {
                ctx.note("building the release training binary (cargo build --release -p taxi-duration-model --bin taxi-train)");
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                run_cmd(Command::new(cargo).current_dir(&ctx.root).args([
                    "build",
                    "--release",
                    "--quiet",
                    "--package",
                    "taxi-duration-model",
                    "--features",
                    "train",
                    "--bin",
                    "taxi-train",
                ]))?;
                crate::build::target_dir(&ctx.root).join("release/taxi-train")
            }
        };

        let tlc = self
            .tlc_dir
            .clone()
            .unwrap_or_else(|| default_tlc_dir(&ctx.root));
        let mut cases: Vec<(String, PathBuf, PathBuf)> = Vec::new();
        for year in &self.years {
            let (t, v) = (
                tlc.join(format!("green_tripdata_{year}-01.parquet")),
                tlc.join(format!("green_tripdata_{year}-02.parquet")),
            );
            if !t.exists() || !v.exists() {
                bail!(
                    "missing TLC files {} / {}: set --tlc-dir or TAXI_TLC_DIR",
                    t.display(),
                    v.display()
                );
            }
            cases.push((format!("tlc green {year}"), t, v));
        }
        if self.synthetic_rows > 0 {
            let dir = ctx.cache.join("bench");
            let mk = |month: &str, seed: u64| -> anyhow::Result<PathBuf> {
                let out = dir.join(format!(
                    "synthetic-{month}-{}-{seed}.parquet",
                    self.synthetic_rows
                ));
                if !out.exists() {
                    ctx.note(format!(
                        "generating {} synthetic rows for {month}",
                        self.synthetic_rows
                    ));
                    let spec = model::synth::SynthSpec {
                        month: month.into(),
                        rows: self.synthetic_rows,
                        seed,
                    };
                    model::synth::write(&spec, &out)?;
                }
                Ok(out)
            };
            cases.push((
                format!("synthetic {}k rows", self.synthetic_rows / 1000),
                mk("2021-01", 1)?,
                mk("2021-02", 2)?,
            ));
        }

        let mut out = Vec::new();
        for (name, train, val) in cases {
            let (mut ours_runs, mut ref_runs) = (Vec::new(), Vec::new());
            for i in 0..self.repeat.max(1) {
                ctx.note(format!("{name}: run {} of {}", i + 1, self.repeat));
                // Alternate the order so neither side always runs with a warmer page cache.
                let run_ours = || {
                    measure(
                        Command::new(&ours)
                            .arg("--train")
                            .arg(&train)
                            .arg("--val")
                            .arg(&val),
                    )
                };
                let run_ref = || {
                    measure(
                        Command::new(&python)
                            .arg(&script)
                            .arg(&train)
                            .arg(&val)
                            .arg("--no-exact"),
                    )
                };
                if i % 2 == 0 {
                    ours_runs.push(run_ours()?);
                    ref_runs.push(run_ref()?);
                } else {
                    ref_runs.push(run_ref()?);
                    ours_runs.push(run_ours()?);
                }
            }
            let summarize = |runs: &[(f64, f64, String)]| Run {
                wall_s: median(runs.iter().map(|r| r.0).collect()),
                peak_rss_mb: median(runs.iter().map(|r| r.1).collect()),
                rmse_val: rmse_of(&runs[0].2),
            };
            let (o, r) = (summarize(&ours_runs), summarize(&ref_runs));
            out.push(Case {
                name,
                speedup: r.wall_s / o.wall_s,
                memory_ratio: r.peak_rss_mb / o.peak_rss_mb,
                ours: o,
                reference: r,
            });
        }
        Ok(Report {
            cases: out,
            repeat: self.repeat,
        })
    }
}
