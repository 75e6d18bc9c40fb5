//! xtask's integration tests: one binary, one real moto server (tests/support/moto.rs).

#[path = "../../../tests/support/moto.rs"]
mod moto;

mod deploy;
mod stacks;
