//! readerd's integration tests: one binary, one module per boundary.

mod common;
mod fleet_config;
mod stripe_client;
mod stripe_openapi_params;
mod stripe_wire_fixtures;
