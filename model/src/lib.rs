//! The ride-duration model: NYC TLC trip records in, a versioned model artifact out, and
//! allocation-free prediction.
//!
//! The inference path ([`Model`], [`Ride`], [`artifact`]) has no heavy dependencies, so the Lambda
//! stays small. Reading Parquet, cleaning, training and synthetic data sit behind the `train`
//! feature, which pulls in polars and linfa.
#![warn(missing_docs)]

pub mod artifact;
mod error;
pub mod features;
pub mod metrics;
mod predict;

#[cfg(feature = "train")]
pub mod data;
#[cfg(feature = "train")]
pub mod synth;
#[cfg(feature = "train")]
pub mod train;

pub use artifact::{Artifact, TrainingMetadata};
pub use error::ModelError;
pub use features::{Categorical, FeatureSpec, Numeric, Ride};
pub use metrics::Metrics;
pub use predict::Model;

/// The model name written into every prediction record.
pub const MODEL_NAME: &str = "ride_duration_prediction_model";

/// Taxi zone ids run from 1 to 265 (264 and 265 are "unknown"); anything else is out of range.
pub const MAX_ZONE_ID: u32 = 265;
