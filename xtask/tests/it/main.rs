//! xtask's integration tests: one binary, one module per area.

mod monitor_golden;
