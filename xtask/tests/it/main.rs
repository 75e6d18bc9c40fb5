//! xtask's integration tests: one binary, one module per command, against real services.

#[path = "../../../tests/support/mlflow.rs"]
mod mlflow;
#[path = "../../../tests/support/moto.rs"]
mod moto;

mod tracking;
