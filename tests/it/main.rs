//! readerd's integration tests: one binary, one module per boundary.

mod common;
mod fleet_config;
mod ops_lifecycle;
mod payments_api;
mod payments_crash;
mod payments_flow;
mod sim_client;
mod sim_conformance;
mod sim_faults;
mod sim_webhooks;
mod stripe_client;
mod stripe_openapi_params;
mod stripe_wire_fixtures;
