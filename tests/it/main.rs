//! readerd's integration tests: one binary, one module per boundary.

mod api_tenancy;
mod common;
mod connect_modes;
mod connect_owned;
mod connect_tokens;
mod console;
mod fleet_api;
mod fleet_auth;
mod fleet_cli;
mod fleet_config;
mod fleet_daemon;
mod layering;
mod ops_lifecycle;
mod ops_metrics;
mod payments_api;
mod payments_crash;
mod payments_destination;
mod payments_faults;
mod payments_flow;
mod sim_cli;
mod sim_conformance;
mod sim_faults;
mod sim_webhooks;
mod stripe_client;
mod stripe_openapi_params;
mod stripe_wire_fixtures;
