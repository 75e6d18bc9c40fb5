//! `cargo xtask runs`: list training runs, show one, set aliases, and run the prod gate.
//!
//! The store is MLflow when `MLFLOW_TRACKING_URI` is set, else the local run store (see
//! [`crate::tracking`]).

use std::fmt;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::ctx::Ctx;
use crate::tracking::{
    self, AliasSet, GateReport, ModelSpec, PRODUCTION, RunInfo, Tracker, TrackerKind,
};

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
            return write!(
                f,
                "no runs in {} experiment `{}`: train one with `cargo xtask train`",
                self.tracker, self.experiment
            );
        }
        writeln!(f, "{} experiment `{}`", self.tracker, self.experiment)?;
        write!(
            f,
            "{:<34} {:<25} {:<9} {:<12} {:>9}  ALIASES",
            "RUN", "CREATED", "STATUS", "MODEL", "RMSE_VAL"
        )?;
        for r in &self.runs {
            let rmse = r
                .metrics
                .get("rmse_val")
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "-".into());
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

/// What a `runs` subcommand produced.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RunsOutput {
    /// `runs` / `runs list`.
    List(RunList),
    /// `runs show`.
    Show(Box<RunInfo>),
    /// `runs alias set`.
    Alias(AliasSet),
    /// `runs alias set --dry-run`: the plan.
    Plan {
        /// What would be done.
        dry_run: String,
    },
    /// `runs gate`; a refusal is an error only after the report is printed.
    Gate(GateReport),
}

impl fmt::Display for RunsOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::List(l) => l.fmt(f),
            Self::Show(r) => r.fmt(f),
            Self::Alias(a) => a.fmt(f),
            Self::Plan { dry_run } => write!(f, "dry run: would {dry_run}"),
            Self::Gate(g) => g.fmt(f),
        }
    }
}

impl RunsOutput {
    /// A refused gate as an error (after its report was printed); anything else as is.
    pub fn into_result(self) -> anyhow::Result<Self> {
        match self {
            Self::Gate(report) => Ok(Self::Gate(report.into_result()?)),
            other => Ok(other),
        }
    }
}

impl RunsArgs {
    /// Runs the command against the configured store and prints the result.
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let tracker = Tracker::from_ctx(ctx)?;
        let out = self.execute(ctx, &tracker).await?;
        ctx.emit(&out)?;
        out.into_result()?;
        Ok(())
    }

    /// Runs the command against `tracker` and returns what it would print.
    pub async fn execute(self, ctx: &Ctx, tracker: &Tracker) -> anyhow::Result<RunsOutput> {
        Ok(match self.cmd.unwrap_or(RunsCmd::List) {
            RunsCmd::List => RunsOutput::List(RunList {
                tracker: tracker.kind(),
                experiment: tracker.experiment().to_string(),
                runs: tracker.list(self.limit).await.context("list runs")?,
            }),
            RunsCmd::Show { run_id } => RunsOutput::Show(Box::new(tracker.show(&run_id).await?)),
            RunsCmd::Alias(AliasCmd::Set {
                alias,
                target,
                force,
            }) => {
                let target = ModelSpec::parse_run_or_spec(&target)?;
                if alias == PRODUCTION {
                    let candidate = tracker
                        .resolve(&target)
                        .await
                        .with_context(|| format!("resolve {target}"))?;
                    let report =
                        tracking::gate_with(tracker, &candidate, ctx.env.promotion_margin, force)
                            .await?;
                    ctx.note(&report);
                    report.into_result()?;
                }
                let plan = format!("point {} alias `{alias}` at {target}", tracker.kind());
                if ctx.dry_run {
                    return Ok(RunsOutput::Plan { dry_run: plan });
                }
                if alias == PRODUCTION {
                    ctx.confirm(&plan)?;
                }
                RunsOutput::Alias(
                    tracker
                        .set_alias(&alias, &target)
                        .await
                        .with_context(|| format!("set alias `{alias}`"))?,
                )
            }
            RunsCmd::Gate { model, force } => {
                let candidate = tracker
                    .resolve(&model)
                    .await
                    .with_context(|| format!("resolve {model}"))?;
                RunsOutput::Gate(
                    tracking::gate_with(tracker, &candidate, ctx.env.promotion_margin, force)
                        .await?,
                )
            }
        })
    }
}
