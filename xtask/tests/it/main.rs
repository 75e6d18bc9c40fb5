//! xtask's integration tests: one binary, one module per area.

mod monitor_cli;
mod monitor_data;
mod monitor_golden;
mod monitor_pg;
mod monitor_real;
