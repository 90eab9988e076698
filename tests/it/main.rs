//! readerd's integration tests: one binary, one module per boundary.

mod common;
mod sim_client;
mod sim_conformance;
