//! The library behind `cargo xtask`: one module per command, plus the shared context.
//! It is a library so that integration tests can drive the same code the CLI runs.

pub mod bench;
pub mod build;
pub mod config;
pub mod data;
pub mod ctx;
pub mod predict;
pub mod runs;
pub mod tracking;
pub mod train;
pub mod util;
