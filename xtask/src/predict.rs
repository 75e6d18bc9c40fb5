//! `cargo xtask predict`: one prediction from a model file.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use model::{Model, Ride};
use serde::Serialize;

use crate::ctx::Ctx;

/// Predict one ride's duration with a model artifact.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The model artifact (`model.json`).
    #[arg(long)]
    pub model: PathBuf,
    /// The ride, e.g. '{"PULocationID":130,"DOLocationID":205,"trip_distance":3.66}'.
    #[arg(long)]
    pub ride: String,
}

/// A prediction.
#[derive(Debug, Serialize)]
pub struct Prediction {
    pub ride_duration: f64,
    pub model_version: String,
}

impl std::fmt::Display for Prediction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.4} minutes (model {})",
            self.ride_duration, self.model_version
        )
    }
}

impl PredictArgs {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let model = Model::load(&self.model)
            .with_context(|| format!("load model {}", self.model.display()))?;
        let ride: Ride = serde_json::from_str(&self.ride).with_context(|| {
            format!(
                "--ride `{}` is not a ride: expected {{\"PULocationID\": <int>, \"DOLocationID\": <int>, \"trip_distance\": <miles>}}",
                self.ride
            )
        })?;
        ctx.emit(&Prediction {
            ride_duration: model.predict(&ride),
            model_version: model.version().to_string(),
        })
    }
}
