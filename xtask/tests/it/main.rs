//! xtask's integration tests: one binary, against the real Docker engine, a real registry and
//! a real moto server.

#[path = "../../../tests/support/moto.rs"]
mod moto;

mod image;
mod registry;
