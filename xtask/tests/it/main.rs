//! xtask's integration tests: one binary, real moto, real Docker, a real registry, real processes.

#[path = "../../../tests/support/moto.rs"]
mod moto;

mod esm;
mod image;
mod local;
mod registry;
mod runtime_api;
mod support;
