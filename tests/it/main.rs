//! readerd's integration tests: one binary, one module per boundary.

mod common;
mod fleet_config;
