//! xtask's integration tests: one binary, real moto (tests/support/moto.rs), real Docker, real processes.

#[path = "../../../tests/support/moto.rs"]
mod moto;

mod deploy;
mod esm;
mod local;
mod runtime_api;
mod stacks;
mod support;
