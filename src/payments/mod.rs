//! Payments: from a POS request to a final state, one reader at a time.
//!
//! - [`machine`]: the payment record and its status machine (pure transitions, no I/O).
//! - [`queue`]: a reader's bounded queue, fair across merchants.
//! - [`directory`]: what the flow asks of the fleet registry (merchants, readers), and
//!   its answer from the fleet.
//! - [`engine`]: accepting payments, capture/cancel/refund, start-up reconcile (a file per
//!   stage).
//! - [`worker`]: one task per reader carrying each payment through the reader (a file per
//!   step: intent, dispatch, watch).
//! - [`ids`], [`failpoint`]: leaves both use (random ids; the crash tests' abort points).
//! - [`index`]: the payments' secondary indexes (time, merchant, reader, status,
//!   PaymentIntent), written in the same batch as each payment, and the paged list.
//! - [`inputs`]: input collections on a reader's screen: the record and its status
//!   machine (pure transitions, no I/O).
//! - [`setups`]: cards saved on a reader for later: the record and its status machine
//!   (pure transitions, no I/O).
//! - [`refunds`]: refund records, their typed status and their keys (by payment).
//! - [`splits`]: separate charges' splits (one per merchant of a basket) and the pure
//!   arithmetic of their shares, transfers and reversals.
//! - [`report`]: the settlement report, from readerd's own records.
//! - [`stats`]: request counts and the daemon's own latencies.

pub mod directory;
pub mod engine;
pub mod failpoint;
pub mod ids;
pub mod index;
pub mod inputs;
pub mod machine;
pub mod queue;
pub mod reader_refunds;
pub mod refunds;
pub mod report;
pub mod setups;
pub mod splits;
pub mod stats;
pub mod worker;

pub use directory::{
    Directory, Fee, FleetDirectory, MerchantInfo, ReaderInfo, ReaderOwner, StaticDirectory,
};
pub use engine::{
    reader_lease, ClusterMembership, CreatePayment, DaemonLinks, Engine, EngineConfig,
    PaymentError, PaymentFilter, ReaderLive,
};
pub use ids::new_id;
pub use inputs::{InputCollection, InputStatus};
pub use machine::{CaptureMode, ChargeType, Failure, Payment, Source, Status};
pub use refunds::{RefundRecord, RefundStatus};
pub use setups::{AllowRedisplay, Setup, SetupStatus};
