//! `cargo xtask train`: read, clean, fit, evaluate and write a versioned model artifact.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use model::data::{CleanOptions, CleanReport};
use model::train::{TrainJob, TrainParams};
use model::{Artifact, FeatureSpec};
use serde::Serialize;

use crate::ctx::Ctx;
use crate::tracking::{RunRecord, record_artifact_file};
use crate::util::git_commit;

/// Train the ride-duration model.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training Parquet files or directories of monthly files.
    #[arg(long, num_args = 1.., required = true)]
    pub train: Vec<PathBuf>,
    /// Validation Parquet files or directories.
    #[arg(long, num_args = 1..)]
    pub val: Vec<PathBuf>,
    /// Where artifacts go: `<out>/<model version>/model.json`.
    #[arg(long, default_value = "artifacts")]
    pub out: PathBuf,
    /// Features, comma-separated: pu_do, pu, do, hour, trip_distance.
    #[arg(long, default_value = "pu_do,trip_distance")]
    pub features: String,
    /// L2 (ridge) penalty; 0 is ordinary least squares.
    #[arg(long, default_value_t = 0.0)]
    pub ridge: f64,
    /// Shortest kept ride, minutes (inclusive).
    #[arg(long, default_value_t = 1.0)]
    pub min_duration: f64,
    /// Longest kept ride, minutes (inclusive).
    #[arg(long, default_value_t = 60.0)]
    pub max_duration: f64,
}

/// What a training run reports.
#[derive(Debug, Serialize)]
pub struct TrainSummary {
    pub train_rows: usize,
    pub train_kept: usize,
    pub val_rows: usize,
    pub val_kept: usize,
    pub n_features: usize,
    pub rmse_train: f64,
    pub mae_train: f64,
    pub r2_train: f64,
    pub rmse_val: Option<f64>,
    pub mae_val: Option<f64>,
    pub r2_val: Option<f64>,
    pub version: String,
    pub artifact: PathBuf,
    pub train_cleaning: CleanReport,
    pub val_cleaning: Option<CleanReport>,
    pub seconds: f64,
    /// The tracked run (MLflow or the local run store), once recorded.
    pub run: Option<RunRecord>,
}

impl std::fmt::Display for TrainSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.train_cleaning;
        writeln!(
            f,
            "train: {} rows read, {} kept (dropped: {} null, {} too short, {} too long, {} bad zone)",
            c.rows_read,
            c.rows_kept,
            c.dropped_null,
            c.dropped_too_short,
            c.dropped_too_long,
            c.dropped_bad_zone
        )?;
        if let Some(v) = &self.val_cleaning {
            writeln!(f, "val:   {} rows read, {} kept", v.rows_read, v.rows_kept)?;
        }
        writeln!(f, "features: {}", self.n_features)?;
        writeln!(
            f,
            "train: RMSE {:.6}  MAE {:.6}  R² {:.6}",
            self.rmse_train, self.mae_train, self.r2_train
        )?;
        if let (Some(r), Some(m), Some(r2)) = (self.rmse_val, self.mae_val, self.r2_val) {
            writeln!(f, "val:   RMSE {r:.6}  MAE {m:.6}  R² {r2:.6}")?;
        }
        write!(
            f,
            "model {} written to {} ({:.2} s)",
            self.version,
            self.artifact.display(),
            self.seconds
        )?;
        if let Some(run) = &self.run {
            write!(f, "\n{run}")?;
        }
        Ok(())
    }
}

impl TrainArgs {
    /// The training job these flags describe.
    pub fn job(&self, ctx: &Ctx) -> anyhow::Result<TrainJob> {
        Ok(TrainJob {
            train: self.train.clone(),
            val: self.val.clone(),
            params: TrainParams {
                features: FeatureSpec::parse(&self.features)?,
                ridge_alpha: self.ridge,
                clean: CleanOptions {
                    min_minutes: self.min_duration,
                    max_minutes: self.max_duration,
                },
            },
            git_commit: git_commit(&ctx.root),
        })
    }

    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let (mut summary, artifact) = self.train(ctx)?;
        // Track the exact bytes on disk, so the run's artifact is the file deploy would upload.
        let run = record_artifact_file(
            ctx,
            &artifact,
            &summary.artifact,
            &self.train,
            &self.val,
            &[],
        )
        .await
        .with_context(|| {
            format!(
                "the artifact is written to {}, but tracking failed",
                summary.artifact.display()
            )
        })?;
        summary.run = Some(run);
        ctx.emit(&summary)
    }

    /// Trains and writes the artifact; returns the summary and the artifact.
    pub fn train(&self, ctx: &Ctx) -> anyhow::Result<(TrainSummary, Artifact)> {
        let started = Instant::now();
        let job = self.job(ctx)?;
        let spinner = ctx.spinner("training");
        let outcome = job.run().context("train the model")?;
        spinner.finish_and_clear();
        let artifact = outcome.artifact;
        let path = self
            .out
            .join(&artifact.version)
            .join(model::artifact::FILE_NAME);
        artifact.save(&path).context("write the model artifact")?;
        let m = &artifact.metadata;
        let val = m.val_metrics;
        let summary = TrainSummary {
            train_rows: outcome.train_report.rows_read,
            train_kept: outcome.train_report.rows_kept,
            val_rows: outcome.val_report.as_ref().map_or(0, |r| r.rows_read),
            val_kept: outcome.val_report.as_ref().map_or(0, |r| r.rows_kept),
            n_features: m.n_features,
            rmse_train: m.train_metrics.rmse,
            mae_train: m.train_metrics.mae,
            r2_train: m.train_metrics.r2,
            rmse_val: val.map(|v| v.rmse),
            mae_val: val.map(|v| v.mae),
            r2_val: val.map(|v| v.r2),
            version: artifact.version.clone(),
            artifact: path,
            train_cleaning: outcome.train_report,
            val_cleaning: outcome.val_report,
            seconds: started.elapsed().as_secs_f64(),
            run: None,
        };
        Ok((summary, artifact))
    }
}
