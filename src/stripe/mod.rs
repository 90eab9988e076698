//! Everything readerd knows about talking to Stripe: wire types shared with the emulator,
//! form encoding, typed request parameters, errors with their retry rule, webhook
//! signatures, and the client.

pub mod budget;
pub mod client;
pub mod error;
pub mod form;
pub mod params;
pub mod webhook;
pub mod wire;

pub use budget::Priority;
pub use client::{ClientConfig, RequestOptions, SecretKey, StripeClient};
pub use error::{classify, retry_allowed, Disposition, StripeError};
