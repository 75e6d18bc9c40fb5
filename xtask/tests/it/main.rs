//! xtask's integration tests: one binary, real moto (tests/support/moto.rs), real MLflow, real
//! Docker, a real registry, real PostgreSQL, real processes.

#[path = "../../../tests/support/mlflow.rs"]
mod mlflow;
#[path = "../../../tests/support/moto.rs"]
mod moto;

mod deploy;
mod esm;
mod image;
mod local;
mod registry;
mod runtime_api;
mod stacks;
mod support;

mod monitor_cli;
mod monitor_data;
mod monitor_golden;
mod monitor_pg;
mod monitor_real;
mod pipeline;
mod tracking;
