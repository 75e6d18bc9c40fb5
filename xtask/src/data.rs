//! `cargo xtask data synth`: synthetic green-taxi Parquet for demos and tests.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use model::synth::{SynthSpec, write};
use serde::Serialize;

use crate::ctx::Ctx;

/// Data preparation.
#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    cmd: DataCmd,
}

#[derive(Debug, Subcommand)]
enum DataCmd {
    /// Write synthetic green-taxi trip records (all 20 columns, real types), deterministic per seed.
    Synth(SynthArgs),
}

/// Synthetic data flags.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// The month, YYYY-MM.
    #[arg(long, default_value = "2021-01")]
    pub month: String,
    /// Rows to write.
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    /// RNG seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output Parquet file.
    #[arg(long)]
    pub out: PathBuf,
}

/// What was written.
#[derive(Debug, Serialize)]
pub struct SynthSummary {
    pub path: PathBuf,
    pub rows: usize,
    pub month: String,
    pub seed: u64,
    pub bytes: u64,
}

impl std::fmt::Display for SynthSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrote {} synthetic rows for {} (seed {}) to {} ({} bytes)",
            self.rows,
            self.month,
            self.seed,
            self.path.display(),
            self.bytes
        )
    }
}

impl SynthArgs {
    /// Writes the file and returns what was written.
    pub fn write(&self) -> anyhow::Result<SynthSummary> {
        let spec = SynthSpec {
            month: self.month.clone(),
            rows: self.rows,
            seed: self.seed,
        };
        write(&spec, &self.out).context("write synthetic data")?;
        Ok(SynthSummary {
            path: self.out.clone(),
            rows: self.rows,
            month: self.month.clone(),
            seed: self.seed,
            bytes: std::fs::metadata(&self.out)?.len(),
        })
    }
}

impl DataArgs {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self.cmd {
            DataCmd::Synth(args) => {
                let spinner = ctx.spinner(format!("generating {} rows", args.rows));
                let summary = args.write()?;
                spinner.finish_and_clear();
                ctx.emit(&summary)
            }
        }
    }
}
