//! Payments: from a POS request to a final state, one reader at a time.
//!
//! - [`machine`]: the payment record and its status machine (pure transitions, no I/O).
//! - [`queue`]: a reader's bounded queue, fair across merchants.

pub mod machine;
pub mod queue;
