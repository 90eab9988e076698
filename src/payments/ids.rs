//! Random ids for readerd's own objects (`pay_…`, `rf_…`) and for the random part of
//! idempotency keys that must differ per attempt. A leaf: it imports nothing of its siblings.

use rand::Rng;

/// A random id with a prefix: `pay_` and 20 letters and digits.
pub fn new_id(prefix: &str) -> String {
    let s: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    format!("{prefix}_{s}")
}
