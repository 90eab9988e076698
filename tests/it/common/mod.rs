//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/stripe-fixtures`, or `None` (with the reason printed) when it is absent, so
/// that tests using Stripe's own objects skip instead of failing on a machine without them.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/stripe-fixtures");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: Stripe fixtures not found at {} (expected ../shared beside the repository)",
            dir.display()
        );
        None
    }
}
