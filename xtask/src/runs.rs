//! `cargo xtask runs`: list training runs, show one, set aliases, and run the prod gate.
//!
//! The store is MLflow when `MLFLOW_TRACKING_URI` is set, else the local run store (see
//! [`crate::tracking`]).

use std::fmt;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::ctx::Ctx;
use crate::tracking::{self, ModelSpec, PRODUCTION, RunInfo, Tracker, TrackerKind};

/// List training runs (newest first), or show, alias or gate one.
#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    cmd: Option<RunsCmd>,
    /// How many runs to list.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

#[derive(Debug, Subcommand)]
enum RunsCmd {
    /// List the environment's runs, newest first (the default).
    List,
    /// Show one run: params, metrics, tags, artifact and aliases.
    Show {
        /// The run id.
        run_id: String,
    },
    /// Manage aliases (`staging`, `production`, ...).
    #[command(subcommand)]
    Alias(AliasCmd),
    /// The prod gate: refuse a model whose validation RMSE is worse than production's by more
    /// than the environment's promotion_margin. Exits non-zero on refusal.
    Gate {
        /// The candidate: alias:<name>, run:<id>, version:<n> or file:<path>.
        #[arg(long)]
        model: ModelSpec,
        /// Pass even when the gate refuses.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AliasCmd {
    /// Point an alias at a run (or `version:<n>`, or `alias:<other>`). Setting `production` runs
    /// the prod gate first and asks for confirmation.
    Set {
        /// The alias, e.g. staging or production.
        alias: String,
        /// A run id, run:<id>, version:<n> or alias:<other>.
        target: String,
        /// Set `production` even when the gate refuses.
        #[arg(long)]
        force: bool,
    },
}

/// The result of `cargo xtask runs`.
#[derive(Debug, Serialize)]
pub struct RunList {
    /// Which store.
    pub tracker: TrackerKind,
    /// The experiment listed.
    pub experiment: String,
    /// The runs, newest first.
    pub runs: Vec<RunInfo>,
}

impl fmt::Display for RunList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.runs.is_empty() {
            return write!(f, "no runs in {} experiment `{}`: train one with `cargo xtask train`", self.tracker, self.experiment);
        }
        writeln!(f, "{} experiment `{}`", self.tracker, self.experiment)?;
        write!(f, "{:<34} {:<25} {:<9} {:<12} {:>9}  ALIASES", "RUN", "CREATED", "STATUS", "MODEL", "RMSE_VAL")?;
        for r in &self.runs {
            let rmse = r.metrics.get("rmse_val").map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
            let created: String = r.created_at.chars().take(25).collect();
            write!(
                f,
                "\n{:<34} {:<25} {:<9} {:<12} {:>9}  {}",
                r.run_id,
                created,
                r.status,
                r.model_version(),
                rmse,
                r.aliases.join(",")
            )?;
        }
        Ok(())
    }
}

impl RunsArgs {
    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let tracker = Tracker::from_ctx(ctx)?;
        match self.cmd.unwrap_or(RunsCmd::List) {
            RunsCmd::List => {
                let runs = tracker.list(self.limit).await.context("list runs")?;
                ctx.emit(&RunList { tracker: tracker.kind(), experiment: tracker.experiment().to_string(), runs })
            }
            RunsCmd::Show { run_id } => ctx.emit(&tracker.show(&run_id).await?),
            RunsCmd::Alias(AliasCmd::Set { alias, target, force }) => {
                let target = ModelSpec::parse_run_or_spec(&target)?;
                if alias == PRODUCTION {
                    let candidate = tracker.resolve(&target).await.with_context(|| format!("resolve {target}"))?;
                    let report = tracking::gate(ctx, &candidate, force).await?;
                    ctx.note(&report);
                    report.into_result()?;
                }
                if ctx.dry_run {
                    ctx.note(format!("dry run: would point {} alias `{alias}` at {target}", tracker.kind()));
                    return Ok(());
                }
                if alias == PRODUCTION {
                    ctx.confirm(&format!("point alias `{alias}` at {target}"))?;
                }
                ctx.emit(&tracker.set_alias(&alias, &target).await.with_context(|| format!("set alias `{alias}`"))?)
            }
            RunsCmd::Gate { model, force } => {
                let candidate = tracker.resolve(&model).await.with_context(|| format!("resolve {model}"))?;
                let report = tracking::gate(ctx, &candidate, force).await?;
                ctx.emit(&report)?;
                report.into_result()?;
                Ok(())
            }
        }
    }
}
