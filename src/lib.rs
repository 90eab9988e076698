//! readerd: run shared, platform-owned Stripe Terminal smart readers for many Connect
//! merchants. See `docs/ARCHITECTURE.md` for the map.
#![forbid(unsafe_code)]

pub mod cli;
pub mod sim;
pub mod store;
pub mod stripe;
