//! The payment engine: accepts payments, owns one worker per reader, and carries out what
//! does not need the reader (capture, cancel of an authorised or declined payment, refunds).
//!
//! Every change to a payment is a read-modify-write of its record under one short lock,
//! with no Stripe call inside it; the network calls happen between such writes, and each
//! one's idempotency key is written before the call is made. At start-up every payment that
//! is not final is reconciled against Stripe and resumed ([`Engine::start`]).
//!
//! One file per stage, each an `impl Engine` block:
//! - [`accept`]: validation and acceptance of a payment (`create`), API idempotency.
//! - [`cancel`]: cancel (queued, on the reader, or off it) and retry after a decline.
//! - [`capture`]: capture of an authorised payment, at most once.
//! - [`refund`]: refunds, never more than captured (the records: [`super::refunds`]).
//! - [`inputs`]: inputs on a reader's screen (accepted, read, canceled, resumed).
//! - [`review`]: the point of sale's confirm of a reviewed payment (surcharge checked).
//! - [`setups`]: cards saved on a reader (accepted, read, canceled, resumed).
//! - [`reader_ops`]: cart displays and the operator's force-clear of a reader.
//! - [`transfers`]: separate charges' transfers after the capture, one per split.
//! - [`reconcile`]: start-up reconcile, the periodic sweep, webhook hints.
//! - [`retention`]: final payments moved to daily archive files, crash-safe, and back.
//! - [`events`]: Stripe's events as observations, and whether webhooks track payments.
//! - [`poller`]: without webhooks, one reader list per location stands for the reads of
//!   its busy readers.
//! - [`leases`]: on a shared store, reader leases decide where each worker runs, and fence
//!   the writes of its payments.
//! - [`forward`]: on a shared store, capture, cancel, refund and retry asked of an instance
//!   that does not work the reader are carried out by the reader's holder.
//!
//! This file holds the engine itself: its tunables, errors, per-reader slots, and the
//! record access every stage shares (load, update, observe).
//!
//! Longer than 600 lines on purpose: the state and record access that every stage shares
//! (slots, the sharded write lock, `update`, `observe`); each stage is a file of its own
//! beside it.

mod accept;
mod cancel;
mod capture;
mod events;
mod forward;
mod inputs;
mod leases;
mod poller;
mod reader_ops;
mod reader_refund;
mod reconcile;
mod refund;
mod retention;
mod review;
mod setups;
mod transfers;

pub use accept::{CreatePayment, SplitRequest, MAX_AMOUNT};
pub(crate) use events::Seen;
pub use leases::reader_lease;
pub(crate) use reader_ops::DisplayRequest;
pub use retention::{restore, ArchiveReport, ArchivedPayment, PENDING_KEY};
pub use setups::{CreateSetup, SetupPage};

use super::directory::Directory;
use super::index::{self, Page, PageError, PageQuery};
use super::machine::{ChargeType, Observation, Payment, Refused, Source, Status};
use super::queue::{QueueFull, ReaderQueue};
use super::worker;
use crate::clock::Timestamp;
use crate::fleet::LiveState;
use crate::metrics::Metrics;
use crate::store::{Registry, StoreError, Tree};
use crate::stripe::wire::PaymentIntentStatus;
use crate::stripe::{RequestOptions, StripeClient, StripeError};
use crate::systemd::Liveness;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};

/// The in-memory PaymentIntent index is pruned of payments that ended when it reaches this
/// size (then twice what remains): the store's intent index knows them.
const INDEX_PRUNE_AT: usize = 4_096;
/// Per-payment operation locks nobody holds are dropped when there are this many.
const OP_LOCKS_PRUNE_AT: usize = 1_024;

/// Tunables of the flow. Defaults suit real readers; tests shorten them.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Waiting jobs per reader before `429`.
    pub queue_capacity: usize,
    /// Reader polling while an action is in progress starts here...
    pub poll_min: Duration,
    /// ...and slows down to this.
    pub poll_max: Duration,
    /// A reader that has not shown a sign of life this long after a dispatch has probably not
    /// picked the action up: say so.
    pub pickup_timeout: Duration,
    /// An action still in progress after this long is cancelled (the PaymentIntent decides).
    pub action_deadline: Duration,
    /// How long to wait for someone else's action on the reader to finish.
    pub busy_wait: Duration,
    /// How long to wait for an offline reader to come back before failing.
    pub offline_wait: Duration,
    /// How long to keep replaying a PaymentIntent creation whose outcome is unknown.
    pub create_window: Duration,
    /// `process_payment_intent` re-sends after `terminal_reader_timeout` (each with a new key).
    pub dispatch_attempts: u32,
    /// A reviewed payment not confirmed this long after its card was read is canceled.
    pub review_timeout: Duration,
    /// While webhooks track payments, the watch polls only this often (a safety net).
    pub webhook_poll: Duration,
    /// The least time an action's event may take before webhooks count as down (the bound
    /// grows with the delivery delays measured).
    pub webhook_grace: Duration,
    /// Without webhooks, a location with busy readers is listed (one request for up to 100
    /// readers) at most this often...
    pub list_poll: Duration,
    /// ...and this often when one busy reader is alone there (`list_poll_alone / busy`
    /// with more).
    pub list_poll_alone: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            queue_capacity: 32,
            poll_min: Duration::from_millis(300),
            poll_max: Duration::from_secs(2),
            pickup_timeout: Duration::from_secs(15),
            action_deadline: Duration::from_secs(180),
            busy_wait: Duration::from_secs(60),
            offline_wait: Duration::from_secs(30),
            create_window: Duration::from_secs(120),
            dispatch_attempts: 3,
            review_timeout: Duration::from_secs(120),
            webhook_poll: Duration::from_secs(30),
            webhook_grace: Duration::from_secs(10),
            list_poll: Duration::from_secs(1),
            list_poll_alone: Duration::from_secs(5),
        }
    }
}

/// Why a request about payments was refused. The API maps each to a status and code.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// 400.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// 403.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// 404.
    #[error("no such {0}")]
    NotFound(&'static str),
    /// 409.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 429.
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
    /// Stripe refused or could not be reached.
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PaymentError {
    fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        PaymentError::Invalid {
            code,
            message: message.into(),
        }
    }
    fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        PaymentError::Conflict {
            code,
            message: message.into(),
        }
    }
}

impl From<Refused> for PaymentError {
    fn from(r: Refused) -> Self {
        PaymentError::conflict("invalid_state", r.to_string())
    }
}

/// Filters and position of a page of the payment list.
pub type PaymentFilter = PageQuery;

/// The most payments one page answers, and how many when the caller does not say.
pub const MAX_PAGE: usize = 1000;
pub const DEFAULT_PAGE: usize = 100;

/// A reader's live state, as the fleet API shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReaderLive {
    pub busy: bool,
    pub queue_depth: usize,
    /// The payment the reader is working on.
    pub current: Option<String>,
}

/// One reader's queue and worker handles.
pub(crate) struct ReaderSlot {
    pub id: String,
    /// The options of every call about the reader ([`super::directory::ReaderInfo::options`]),
    /// fixed when the slot is made: a reader never changes account.
    on_reader: RequestOptions,
    pub queue: Mutex<ReaderQueue>,
    /// Wakes the worker when a job arrives.
    pub work: Notify,
    /// Wakes a worker that is watching: a webhook arrived or a cancel was asked for.
    pub hint: Notify,
    /// The payment (or display) being worked on.
    pub current: Mutex<Option<String>>,
    /// The reader shows a cart we sent (ours to clear before a payment).
    pub shows_our_cart: Mutex<bool>,
    /// What events (or a list) said about the reader since the watch last looked.
    pub seen: Mutex<events::SeenReader>,
    /// The last job ended with the reader showing its action over: the next payment is
    /// sent without a pre-flight read (a busy reader still refuses it, and is read then).
    pub known_free: AtomicBool,
    /// The batched poller asks the watch of a lone busy reader to look at its
    /// PaymentIntent instead of a list (see [`poller`]).
    pub peek_intent: AtomicBool,
}

pub(crate) struct Inner {
    pub registry: Registry,
    pub stripe: StripeClient,
    pub directory: Arc<dyn Directory>,
    pub config: EngineConfig,
    /// Serialise read-modify-write of payment and refund records, per payment (never held
    /// across a network call).
    write_locks: Vec<Mutex<()>>,
    /// Serialises capture/cancel/refund requests per payment (held across Stripe calls, but
    /// no store lock is).
    op_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    readers: Mutex<HashMap<String, Arc<ReaderSlot>>>,
    /// PaymentIntent id → payment id, for webhook events: open payments and those that
    /// ended since the last pruning (at `index_prune_at`); the store's intent index
    /// answers for the others.
    by_intent: Mutex<HashMap<String, String>>,
    index_prune_at: std::sync::atomic::AtomicUsize,
    pub(crate) displays: Mutex<HashMap<String, DisplayRequest>>,
    events: broadcast::Sender<Payment>,
    input_events: broadcast::Sender<super::inputs::InputCollection>,
    setup_events: broadcast::Sender<super::setups::Setup>,
    /// Every change of a refund made on a reader, as it is written.
    refund_events: broadcast::Sender<super::refunds::RefundRecord>,
    pub(crate) stats: Mutex<super::stats::Stats>,
    /// Whether webhooks track payments.
    pub(crate) webhooks: events::WebhookHealth,
    /// The batched reader poller (see [`poller`]).
    pub(crate) poller: poller::Poller,
    /// The daemon's metrics, liveness and drain flag.
    pub(crate) links: DaemonLinks,
    /// Set when the store is shared with other instances (see [`leases`]).
    /// Set on a shared (PostgreSQL) store: the reader leases this instance works under.
    cluster: Option<leases::Cluster>,
}

/// What ties an engine to the daemon around it. An engine on its own (the benchmark, tests)
/// takes [`DaemonLinks::default`]: metrics and heartbeats nobody reads, a drain flag never
/// set.
#[derive(Clone, Debug, Default)]
pub struct DaemonLinks {
    /// Payment statuses are recorded here as they are written.
    pub metrics: Arc<Metrics>,
    /// The daemon's loop registry: each reader worker keeps a heartbeat in it, so that a
    /// stuck or dead worker stops the systemd watchdog.
    pub liveness: Liveness,
    /// Set when the daemon drains for shutdown: from then on no worker starts another job
    /// (queued payments keep their place and start after the restart).
    pub draining: Arc<AtomicBool>,
    /// On a store shared by several daemons: this instance's name and the lease time; each
    /// reader's worker then runs only while this instance holds the reader's lease.
    pub cluster: Option<ClusterMembership>,
}

/// Who this instance is among the daemons that share a store.
#[derive(Clone, Debug)]
pub struct ClusterMembership {
    pub instance: String,
    pub lease_ttl: std::time::Duration,
}

impl ReaderSlot {
    /// The options of every call about this reader (reads, `process_payment_intent`,
    /// `cancel_action`, `set_reader_display`): its own account's `Stripe-Account`.
    pub(crate) fn options(&self) -> RequestOptions {
        self.on_reader.clone()
    }
}

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Engine")
    }
}

/// A server error (5xx, possibly stored under the key): the request may or may not have
/// been carried out.
fn server_side(e: &StripeError) -> bool {
    e.status().is_some_and(|s| s >= 500)
}

impl Engine {
    pub fn new(
        registry: Registry,
        stripe: StripeClient,
        directory: Arc<dyn Directory>,
        config: EngineConfig,
        links: DaemonLinks,
    ) -> Engine {
        let (events, _) = broadcast::channel(1024);
        let (input_events, _) = broadcast::channel(256);
        let (setup_events, _) = broadcast::channel(256);
        let (refund_events, _) = broadcast::channel(256);
        Engine {
            inner: Arc::new(Inner {
                registry,
                stripe,
                directory,
                config,
                write_locks: (0..64).map(|_| Mutex::new(())).collect(),
                op_locks: Mutex::new(HashMap::new()),
                readers: Mutex::new(HashMap::new()),
                by_intent: Mutex::new(HashMap::new()),
                index_prune_at: INDEX_PRUNE_AT.into(),
                displays: Mutex::new(HashMap::new()),
                events,
                input_events,
                setup_events,
                refund_events,
                stats: Mutex::new(Default::default()),
                webhooks: Default::default(),
                poller: Default::default(),
                cluster: links.cluster.clone().map(leases::Cluster::new),
                links,
            }),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn stripe(&self) -> &StripeClient {
        &self.inner.stripe
    }

    /// Whether the daemon is draining for shutdown.
    pub(crate) fn is_draining(&self) -> bool {
        self.inner.links.draining.load(Ordering::SeqCst)
    }

    /// Tells the metrics about a written payment (`before`: its status before the write).
    fn track(&self, before: Option<Status>, p: &Payment) {
        self.inner.links.metrics.payment_written(
            &p.id,
            &p.merchant,
            before.map(Status::as_str),
            p.status.as_str(),
            p.status.is_final(),
            p.capture_before,
        );
    }

    /// Every change to any payment, as it is written.
    pub fn subscribe(&self) -> broadcast::Receiver<Payment> {
        self.inner.events.subscribe()
    }

    pub fn get(&self, id: &str) -> Result<Option<Payment>, PaymentError> {
        Ok(self.inner.registry.get(Tree::Payments, id)?)
    }

    pub(crate) fn load(&self, id: &str) -> Result<Payment, PaymentError> {
        self.get(id)?.ok_or(PaymentError::NotFound("payment"))
    }

    /// One page of the payments that pass `f`, newest first, read through the indexes
    /// ([`index::page`]): it costs O(page), whatever the history's size. `f.limit` is
    /// clamped to 1..=[`MAX_PAGE`].
    pub fn list(&self, f: &PaymentFilter) -> Result<Page, PaymentError> {
        let mut q = f.clone();
        q.limit = q.limit.clamp(1, MAX_PAGE);
        index::page(&self.inner.registry, &q).map_err(|e| match e {
            PageError::UnknownCursor(id) => PaymentError::invalid(
                "invalid_request",
                format!("starting_after: no such payment {id}"),
            ),
            PageError::Store(s) => s.into(),
        })
    }

    /// The settlement report over readerd's records (see [`crate::payments::report`]).
    pub fn settlement_report(
        &self,
        q: &crate::payments::report::Query,
    ) -> Result<Vec<crate::payments::report::Row>, PaymentError> {
        // Only the period's succeeded payments are read (the report counts no other), through
        // the status index, with each one's refunds (a prefix range).
        let payments = index::created_in(&self.inner.registry, Status::Succeeded, q.from, q.to)?;
        let mut refunds: Vec<super::refunds::RefundRecord> = Vec::new();
        for p in &payments {
            refunds.extend(
                super::refunds::of_payment(&self.inner.registry, &p.id)?
                    .into_iter()
                    .map(|(_, r)| r),
            );
        }
        Ok(crate::payments::report::settlement(&payments, &refunds, q))
    }

    /// The lock for read-modify-write of one payment's records (sharded by id, so that
    /// payments on different readers never wait for each other's disk flushes).
    fn write_lock(&self, id: &str) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        let i = (h.finish() as usize) % self.inner.write_locks.len();
        self.inner.write_locks[i].lock().expect("write lock")
    }

    /// Writes a new payment with its index entries. Under the payment's write lock and over
    /// whatever the store holds for its id (two identical requests racing on one
    /// idempotency key), so that no index entry outlives the record it was written for.
    pub(crate) fn insert(&self, p: &Payment) -> Result<(), PaymentError> {
        let _g = self.write_lock(&p.id);
        let old: Option<Payment> = self.inner.registry.get(Tree::Payments, &p.id)?;
        index::write(&self.inner.registry, old.as_ref(), p)?;
        Ok(())
    }

    /// Read-modify-write of one payment; publishes the result.
    pub(crate) fn update<F>(&self, id: &str, f: F) -> Result<Payment, PaymentError>
    where
        F: FnOnce(&mut Payment) -> Result<(), PaymentError>,
    {
        let p = {
            let _g = self.write_lock(id);
            let mut p: Payment = self
                .inner
                .registry
                .get(Tree::Payments, id)?
                .ok_or(PaymentError::NotFound("payment"))?;
            let old = p.clone();
            let before = p.status;
            f(&mut p)?;
            self.write_payment(Some(&old), &p)?;
            self.track(Some(before), &p);
            p
        };
        let _ = self.inner.events.send(p.clone());
        Ok(p)
    }

    /// Applies an observation and persists it. A refused observation is logged and leaves
    /// the record as it was.
    pub(crate) fn observe(
        &self,
        id: &str,
        obs: Observation,
        source: Source,
    ) -> Result<Payment, PaymentError> {
        let at = Timestamp::now();
        let mut refused = None;
        let mut changed = None;
        let p = self.update(id, |p| {
            match p.apply(obs, source, at) {
                Ok(ch) => changed = ch,
                Err(r) => refused = Some(r),
            }
            Ok(())
        })?;
        if let Some(r) = refused {
            tracing::debug!(payment = %id, reason = %r, "observation not applied");
        }
        if let Some(ch) = changed {
            tracing::info!(payment = %id, from = %ch.from, to = %ch.to, source = ?source, "payment status");
            if ch.to == Status::Succeeded {
                // Separate charges: the transfers follow the capture, off the reader.
                self.spawn_transfers(&p);
            }
            if ch.to.is_final() || matches!(ch.to, Status::RequiresCapture | Status::Declined) {
                self.inner
                    .stats
                    .lock()
                    .expect("stats")
                    .outcome(id, std::time::Instant::now());
            }
        }
        Ok(p)
    }

    pub(crate) fn index_intent(&self, pi: &str, payment: &str) {
        let mut index = self.inner.by_intent.lock().expect("intent index");
        index.insert(pi.to_string(), payment.to_string());
        if index.len() >= self.inner.index_prune_at.load(Ordering::Relaxed) {
            // Bounded by the open payments, not by a time: at a stadium's pace an hour is
            // a hundred thousand payments. An ended payment's late events still find it
            // through the store's intent index (`payment_for_intent`, `is_our_intent`).
            index.retain(|_, id| matches!(self.get(id), Ok(Some(p)) if !p.status.is_final()));
            self.inner
                .index_prune_at
                .store((index.len() * 2).max(INDEX_PRUNE_AT), Ordering::Relaxed);
        }
    }

    /// The PaymentIntent is one of our payments' (open, or of the history).
    pub(crate) fn is_our_intent(&self, pi: &str) -> bool {
        if self
            .inner
            .by_intent
            .lock()
            .expect("intent index")
            .contains_key(pi)
        {
            return true;
        }
        matches!(index::by_intent(&self.inner.registry, pi), Ok(Some(_)))
    }

    /// Our payment of a PaymentIntent, if it is one of ours: the in-memory map of recent
    /// payments first, then the store's intent index (written with the record that names
    /// the PaymentIntent), which knows every payment of the history.
    pub(crate) fn payment_for_intent(&self, pi: &str) -> Option<Payment> {
        let known = self
            .inner
            .by_intent
            .lock()
            .expect("intent index")
            .get(pi)
            .cloned();
        let id = match known {
            Some(id) => id,
            None => index::by_intent(&self.inner.registry, pi).ok().flatten()?,
        };
        self.get(&id).ok().flatten()
    }

    pub(crate) fn slot(&self, reader: &str) -> Arc<ReaderSlot> {
        let mut readers = self.inner.readers.lock().expect("readers");
        if let Some(s) = readers.get(reader) {
            return s.clone();
        }
        let on_reader = self
            .inner
            .directory
            .reader(reader)
            .map(|r| r.options())
            .unwrap_or_default();
        let slot = Arc::new(ReaderSlot {
            id: reader.to_string(),
            on_reader,
            queue: Mutex::new(ReaderQueue::new(self.inner.config.queue_capacity)),
            work: Notify::new(),
            hint: Notify::new(),
            current: Mutex::new(None),
            shows_our_cart: Mutex::new(false),
            seen: Mutex::default(),
            known_free: AtomicBool::new(false),
            peek_intent: AtomicBool::new(false),
        });
        readers.insert(reader.to_string(), slot.clone());
        tokio::spawn(worker::run(self.clone(), slot.clone()));
        slot
    }

    /// The reader's slot if its worker was ever started (never starts one).
    fn existing_slot(&self, reader: &str) -> Option<Arc<ReaderSlot>> {
        self.inner
            .readers
            .lock()
            .expect("readers")
            .get(reader)
            .cloned()
    }

    /// Busy flag and queue depth of a reader (for the fleet API).
    pub fn reader_live(&self, reader: &str) -> ReaderLive {
        let slot = self.existing_slot(reader);
        match slot {
            None => ReaderLive::default(),
            Some(s) => {
                let current = s.current.lock().expect("current").clone();
                ReaderLive {
                    busy: current.is_some(),
                    queue_depth: s.queue.lock().expect("queue").len(),
                    current,
                }
            }
        }
    }

    /// The operation lock of one payment. Entries nobody holds are dropped once the map
    /// grows, so that it never keeps one per payment of the history.
    fn op_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.op_locks.lock().expect("op locks");
        if locks.len() >= OP_LOCKS_PRUNE_AT {
            // Locks nobody holds or waits for are only memory.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(id.to_string()).or_default().clone()
    }

    /// `RequestOptions` for the payment's PaymentIntent: the connected account for direct
    /// charges, the platform for destination charges.
    pub(crate) fn intent_options(p: &Payment) -> RequestOptions {
        match p.charge_type {
            ChargeType::Direct => RequestOptions::account(&p.account),
            ChargeType::Destination | ChargeType::Separate => RequestOptions::platform(),
        }
    }

    /// Reads the payment's PaymentIntent at the priority of a payment whose customer may be
    /// at the reader.
    pub(crate) async fn read_intent(
        &self,
        p: &Payment,
    ) -> Result<crate::stripe::wire::PaymentIntent, PaymentError> {
        self.read_intent_at(p, crate::stripe::Priority::Customer)
            .await
    }

    /// Reads the payment's PaymentIntent, paid from the budget at `priority`.
    pub(crate) async fn read_intent_at(
        &self,
        p: &Payment,
        priority: crate::stripe::Priority,
    ) -> Result<crate::stripe::wire::PaymentIntent, PaymentError> {
        let pi = p
            .payment_intent
            .as_deref()
            .ok_or(PaymentError::NotFound("payment_intent"))?;
        self.count("retrieve_payment_intent");
        Ok(self
            .inner
            .stripe
            .at(priority)
            .retrieve_payment_intent(pi, &["latest_charge"], &Self::intent_options(p))
            .await?)
    }

    pub(crate) fn count(&self, kind: &'static str) {
        self.inner.stats.lock().expect("stats").request(kind);
    }

    /// How many payments reached an outcome so far (final, declined or authorised).
    pub fn settled_count(&self) -> u64 {
        self.inner.stats.lock().expect("stats").settled
    }

    /// Request counts and latency samples (for the benchmark).
    pub fn stats(&self) -> super::stats::Stats {
        self.inner.stats.lock().expect("stats").clone()
    }
}

/// The engine is the fleet API's source of reader live state.
impl LiveState for Engine {
    fn reader(&self, reader_id: &str) -> crate::fleet::ReaderLive {
        let l = self.reader_live(reader_id);
        crate::fleet::ReaderLive {
            busy: l.busy,
            queue_depth: l.queue_depth,
        }
    }
}

/// A PaymentIntent is carrying (or has carried) money.
pub(crate) fn has_money(s: &PaymentIntentStatus) -> bool {
    matches!(
        s,
        PaymentIntentStatus::RequiresCapture | PaymentIntentStatus::Succeeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payments::directory::StaticDirectory;
    use crate::stripe::{ClientConfig, SecretKey};

    #[tokio::test]
    async fn the_engine_maps_do_not_grow_with_the_payments_ever_made() {
        let cc = ClientConfig::new("http://127.0.0.1:9", SecretKey::new("sk_test_maps"));
        let engine = Engine::new(
            Registry::temporary().unwrap(),
            StripeClient::new(cc).unwrap(),
            Arc::new(StaticDirectory::new()),
            EngineConfig::default(),
            DaemonLinks::default(),
        );
        // Payments of the history (no longer open: their records are archived) pass
        // through the PaymentIntent index and the operation locks.
        let mut largest = (0, 0);
        for i in 0..60_000 {
            engine.index_intent(&format!("pi_{i}"), &format!("pay_{i}"));
            drop(engine.op_lock(&format!("pay_{i}")));
            largest.0 = largest.0.max(engine.inner.by_intent.lock().unwrap().len());
            largest.1 = largest.1.max(engine.inner.op_locks.lock().unwrap().len());
        }
        assert!(largest.0 <= INDEX_PRUNE_AT, "intent index: {}", largest.0);
        // Payments that just ended leave the in-memory index too (it once kept them an hour,
        // a hundred thousand payments at a stadium's pace), and are still found.
        let mut largest_final = 0;
        for i in 0..INDEX_PRUNE_AT + 100 {
            let mut p = crate::payments::machine::Payment::new(
                crate::payments::machine::NewPayment {
                    id: format!("pay_f{i}"),
                    merchant: "m".into(),
                    account: "acct_1".into(),
                    charge_type: crate::payments::machine::ChargeType::Direct,
                    reader: "tmr_1".into(),
                    amount: 100,
                    currency: "eur".into(),
                    capture: crate::payments::machine::CaptureMode::Automatic,
                    description: None,
                    metadata: Default::default(),
                    application_fee_amount: None,
                    on_behalf_of: None,
                    intent_key: format!("k:{i}"),
                    skip_tipping: false,
                },
                Timestamp::now(),
            );
            p.payment_intent = Some(format!("pi_f{i}"));
            p.status = Status::Succeeded;
            index::write(&engine.inner.registry, None, &p).unwrap();
            engine.index_intent(&format!("pi_f{i}"), &p.id);
            largest_final = largest_final.max(engine.inner.by_intent.lock().unwrap().len());
        }
        assert!(largest_final <= INDEX_PRUNE_AT, "{largest_final}");
        assert!(!engine.inner.by_intent.lock().unwrap().contains_key("pi_f0"));
        assert!(engine.is_our_intent("pi_f0"));
        assert_eq!(engine.payment_for_intent("pi_f0").unwrap().id, "pay_f0");
        assert!(!engine.is_our_intent("pi_someone_elses"));
        assert!(largest.1 <= OP_LOCKS_PRUNE_AT, "op locks: {}", largest.1);
        // A lock someone holds survives the pruning.
        let held = engine.op_lock("pay_held");
        for i in 0..2 * OP_LOCKS_PRUNE_AT {
            drop(engine.op_lock(&format!("pay_more_{i}")));
        }
        assert!(Arc::ptr_eq(&held, &engine.op_lock("pay_held")));
    }
}
