//! xtask's integration tests: one binary, real moto, real MLflow, real Docker, real processes.

#[path = "../../../tests/support/mlflow.rs"]
mod mlflow;
#[path = "../../../tests/support/moto.rs"]
mod moto;

mod esm;
mod local;
mod runtime_api;
mod support;
mod tracking;
