//! The library behind `cargo xtask`: one module per command, plus the shared context.
//! It is a library so that integration tests can drive the same code the CLI runs.

pub mod bench;
pub mod build;
pub mod ci;
pub mod config;
pub mod ctx;
pub mod daemon;
pub mod data;
pub mod deploy;
pub mod e2e;
pub mod esm;
pub mod image;
pub mod invoke;
pub mod local;
pub mod monitor;
pub mod pipeline;
pub mod predict;
pub mod registry;
pub mod runs;
pub mod runtime_api;
pub mod stack;
pub mod teardown;
pub mod terraform;
pub mod tidy;
pub mod tracking;
pub mod train;
pub mod util;
