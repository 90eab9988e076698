//! readerd: run shared, platform-owned Stripe Terminal smart readers for many Connect
//! merchants. See `docs/ARCHITECTURE.md` for the map.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod fleet;
pub mod metrics;
pub mod payments;
pub mod sim;
pub mod store;
pub mod stripe;
pub mod systemd;
pub mod telemetry;
