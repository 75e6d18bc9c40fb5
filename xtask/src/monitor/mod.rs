//! `cargo xtask monitor`: data and prediction drift between a reference and a current period.

pub mod stats;
