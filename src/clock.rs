//! The daemon's one wall clock: every record time, age and signature tolerance reads it here.
//!
//! A leaf: it imports nothing of the crate. (The emulator in `sim/` keeps a clock of its own:
//! it stands for Stripe's servers, whose clock is not readerd's.)

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Whole seconds since the Unix epoch (Stripe's timestamps, webhook signatures).
pub fn now_secs() -> i64 {
    now_ms().div_euclid(1000)
}

/// The current time, RFC 3339 UTC with milliseconds (`2026-11-29T20:14:06.123Z`).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
