//! The payment engine: accepts payments, owns one worker per reader, and carries out what
//! does not need the reader (capture, cancel of an authorised or declined payment, refunds).
//!
//! Every change to a payment is a read-modify-write of its record under one short lock,
//! with no Stripe call inside it; the network calls happen between such writes, and each
//! one's idempotency key is written before the call is made. At start-up every payment that
//! is not final is reconciled against Stripe and resumed ([`Engine::start`]).

use super::directory::{Directory, ReaderInfo};
use super::machine::{
    CaptureMode, CaptureRequest, ChargeType, Failure, IntentView, NewPayment, Observation, Payment,
    Refused, Source, Status,
};
use super::queue::{Job, QueueFull, ReaderQueue};
use super::worker;
use crate::store::{Registry, StoreError, Tree};
use crate::stripe::params::{CancelPaymentIntent, CapturePaymentIntent, CreateRefund};
use crate::stripe::wire::{Cart, PaymentIntentStatus};
use crate::stripe::{Disposition, RequestOptions, StripeClient, StripeError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};

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

/// A request to take a payment (the API body, validated by [`Engine::create`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    pub merchant: String,
    pub reader: String,
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub capture: CaptureMode,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Filters of the payment list.
#[derive(Clone, Debug, Default)]
pub struct PaymentFilter {
    pub merchant: Option<String>,
    pub reader: Option<String>,
    pub status: Option<Status>,
    /// Only these merchants (a pos client's scope); `None` = all.
    pub scope: Option<Vec<String>>,
}

/// A refund of a payment (tree `refunds`, key `<payment>/<key>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefundRecord {
    pub id: String,
    pub payment: String,
    pub amount: i64,
    /// Stripe idempotency key, on disk before the request.
    pub stripe_key: String,
    /// `pending` until Stripe answers, then Stripe's status; `failed` excludes it from totals.
    pub status: String,
    pub refund: Option<String>,
    pub created_at: String,
}

/// A cart display waiting in a reader's queue.
#[derive(Clone, Debug)]
pub(crate) struct DisplayRequest {
    pub reader: String,
    pub cart: Cart,
}

/// An API idempotency record (tree `idempotency`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct IdempotencyRecord {
    body_sha256: String,
    object: String,
}

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
    pub queue: Mutex<ReaderQueue>,
    /// Wakes the worker when a job arrives.
    pub work: Notify,
    /// Wakes a worker that is watching: a webhook arrived or a cancel was asked for.
    pub hint: Notify,
    /// The payment (or display) being worked on.
    pub current: Mutex<Option<String>>,
    /// The reader shows a cart we sent (ours to clear before a payment).
    pub shows_our_cart: Mutex<bool>,
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
    /// PaymentIntent id → payment id, for webhook hints.
    by_intent: Mutex<HashMap<String, String>>,
    pub(crate) displays: Mutex<HashMap<String, DisplayRequest>>,
    events: broadcast::Sender<Payment>,
    pub(crate) stats: Mutex<super::stats::Stats>,
    /// The daemon's metrics, once the plugin hands them over (absent in bare engines).
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
    /// The daemon's loop registry: each reader worker keeps a heartbeat in it.
    pub(crate) liveness: std::sync::OnceLock<crate::systemd::Liveness>,
    /// Set when the daemon drains for shutdown: workers take no new job from their queues.
    pub(crate) draining: std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>>,
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

/// The current time, RFC 3339 with milliseconds.
/// Refund metadata naming readerd's refund record, so a refund whose answer was lost
/// can be found on Stripe.
pub const REFUND_METADATA: &str = "readerd_refund";

/// A server error (5xx, possibly stored under the key): the request may or may not have
/// been carried out.
fn server_side(e: &StripeError) -> bool {
    e.status().is_some_and(|s| s >= 500)
}

/// A PaymentIntent that a cancel can still end.
fn cancelable(s: &PaymentIntentStatus) -> bool {
    matches!(
        s,
        PaymentIntentStatus::RequiresPaymentMethod
            | PaymentIntentStatus::RequiresConfirmation
            | PaymentIntentStatus::RequiresAction
            | PaymentIntentStatus::RequiresCapture
    )
}

pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// A random id with a prefix (`pay_…`).
pub fn new_id(prefix: &str) -> String {
    use rand::Rng;
    let s: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    format!("{prefix}_{s}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Stripe's smallest amount per currency (minor units); 50 where not listed.
fn minimum_amount(currency: &str) -> i64 {
    match currency {
        "gbp" => 30,
        "dkk" => 250,
        "nok" | "sek" => 300,
        "czk" => 1500,
        "pln" | "myr" => 200,
        "hkd" => 400,
        "mxn" => 1000,
        "huf" => 17500,
        _ => 50,
    }
}

/// Stripe's largest amount: eight digits.
pub const MAX_AMOUNT: i64 = 99_999_999;

impl Engine {
    pub fn new(
        registry: Registry,
        stripe: StripeClient,
        directory: Arc<dyn Directory>,
        config: EngineConfig,
    ) -> Engine {
        let (events, _) = broadcast::channel(1024);
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
                displays: Mutex::new(HashMap::new()),
                events,
                stats: Mutex::new(Default::default()),
                metrics: std::sync::OnceLock::new(),
                liveness: std::sync::OnceLock::new(),
                draining: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn stripe(&self) -> &StripeClient {
        &self.inner.stripe
    }

    /// Records payment statuses into `metrics` from now on (call before [`Engine::start`]).
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.inner.metrics.set(metrics);
    }

    /// Gives every reader worker a heartbeat in `liveness` (call before [`Engine::start`]),
    /// so that a stuck or dead worker stops the systemd watchdog.
    pub fn set_liveness(&self, liveness: crate::systemd::Liveness) {
        let _ = self.inner.liveness.set(liveness);
    }

    /// The daemon's drain flag: once it is set, no worker starts another job (queued
    /// payments keep their place and start after the restart).
    pub fn set_drain_flag(&self, flag: Arc<std::sync::atomic::AtomicBool>) {
        let _ = self.inner.draining.set(flag);
    }

    /// Whether the daemon is draining for shutdown.
    pub(crate) fn is_draining(&self) -> bool {
        self.inner
            .draining
            .get()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Tells the metrics about a written payment (`before`: its status before the write).
    fn track(&self, before: Option<Status>, p: &Payment) {
        if let Some(m) = self.inner.metrics.get() {
            m.payment_written(
                &p.id,
                &p.merchant,
                before.map(Status::as_str),
                p.status.as_str(),
                p.status.is_final(),
                p.capture_before,
            );
        }
    }

    /// Every change to any payment, as it is written.
    pub fn subscribe(&self) -> broadcast::Receiver<Payment> {
        self.inner.events.subscribe()
    }

    /// Reconciles and resumes every payment that is not final. Call once, at start-up,
    /// inside the runtime.
    pub async fn start(&self) -> Result<usize, PaymentError> {
        let payments: Vec<Payment> = self.inner.registry.list(Tree::Payments)?;
        let mut resumed = 0;
        for p in &payments {
            if let Some(pi) = &p.payment_intent {
                self.index_intent(pi, &p.id);
            }
        }
        let mut open: Vec<Payment> = payments
            .into_iter()
            .filter(|p| !p.status.is_final())
            .collect();
        open.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        for p in open {
            if let Some(pi) = &p.payment_intent {
                self.index_intent(pi, &p.id);
            }
            if let Some(m) = self.inner.metrics.get() {
                m.payment_open(
                    &p.id,
                    &p.merchant,
                    p.status.as_str(),
                    false,
                    p.capture_before,
                );
            }
            resumed += 1;
            match p.status {
                Status::Queued | Status::Processing => {
                    let slot = self.slot(&p.reader);
                    slot.queue
                        .lock()
                        .expect("queue lock")
                        .push_resumed(Job::Payment {
                            id: p.id.clone(),
                            merchant: p.merchant.clone(),
                        });
                    slot.work.notify_one();
                }
                Status::RequiresCapture | Status::Declined => {
                    let engine = self.clone();
                    let id = p.id.clone();
                    tokio::spawn(async move {
                        if let Err(e) = engine.resume_off_reader(&id).await {
                            tracing::warn!(payment = %id, error = %e, "reconcile failed");
                        }
                    });
                }
                _ => {}
            }
        }
        // Refunds left pending by a crash are re-sent with their own keys.
        let refunds: Vec<RefundRecord> = self.inner.registry.list(Tree::Refunds)?;
        for r in refunds.into_iter().filter(|r| r.status == "pending") {
            let engine = self.clone();
            tokio::spawn(async move {
                let _ = engine.send_refund(r).await;
            });
        }
        Ok(resumed)
    }

    // ------------------------------------------------------------------------------------
    // Records

    pub fn get(&self, id: &str) -> Result<Option<Payment>, PaymentError> {
        Ok(self.inner.registry.get(Tree::Payments, id)?)
    }

    pub(crate) fn load(&self, id: &str) -> Result<Payment, PaymentError> {
        self.get(id)?.ok_or(PaymentError::NotFound("payment"))
    }

    pub fn list(&self, f: &PaymentFilter) -> Result<Vec<Payment>, PaymentError> {
        let all: Vec<Payment> = self.inner.registry.list(Tree::Payments)?;
        let mut out: Vec<Payment> = all
            .into_iter()
            .filter(|p| f.merchant.as_ref().is_none_or(|m| &p.merchant == m))
            .filter(|p| f.reader.as_ref().is_none_or(|r| &p.reader == r))
            .filter(|p| f.status.is_none_or(|s| p.status == s))
            .filter(|p| f.scope.as_ref().is_none_or(|s| s.contains(&p.merchant)))
            .collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(out)
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
            let before = p.status;
            f(&mut p)?;
            self.inner.registry.put(Tree::Payments, id, &p)?;
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
        let at = now();
        let mut refused = None;
        let mut changed = None;
        let p = self.update(id, |p| {
            match p.apply(obs, source, &at) {
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
        self.inner
            .by_intent
            .lock()
            .expect("intent index")
            .insert(pi.to_string(), payment.to_string());
    }

    /// Our payment of a PaymentIntent, if it is one of ours.
    pub(crate) fn payment_for_intent(&self, pi: &str) -> Option<Payment> {
        let id = self
            .inner
            .by_intent
            .lock()
            .expect("intent index")
            .get(pi)
            .cloned()?;
        self.get(&id).ok().flatten()
    }

    pub(crate) fn slot(&self, reader: &str) -> Arc<ReaderSlot> {
        let mut readers = self.inner.readers.lock().expect("readers");
        if let Some(s) = readers.get(reader) {
            return s.clone();
        }
        let slot = Arc::new(ReaderSlot {
            id: reader.to_string(),
            queue: Mutex::new(ReaderQueue::new(self.inner.config.queue_capacity)),
            work: Notify::new(),
            hint: Notify::new(),
            current: Mutex::new(None),
            shows_our_cart: Mutex::new(false),
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

    fn op_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .op_locks
            .lock()
            .expect("op locks")
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// `RequestOptions` for the payment's PaymentIntent: the connected account for direct
    /// charges, the platform for destination charges.
    pub(crate) fn intent_options(p: &Payment) -> RequestOptions {
        match p.charge_type {
            ChargeType::Direct => RequestOptions::account(&p.account),
            ChargeType::Destination => RequestOptions::platform(),
        }
    }

    // ------------------------------------------------------------------------------------
    // Create

    /// Validates and accepts a payment. `client` and `idempotency_key` make the request
    /// repeatable: the same key and body give the same payment; another body is a conflict.
    pub fn create(
        &self,
        req: CreatePayment,
        client: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Payment, PaymentError> {
        let merchant = self
            .inner
            .directory
            .merchant(&req.merchant)
            .ok_or(PaymentError::NotFound("merchant"))?;
        let reader = self
            .inner
            .directory
            .reader(&req.reader)
            .ok_or(PaymentError::NotFound("reader"))?;
        validate(&req, &merchant.country, &reader)?;
        if let Some(c) = &merchant.currency {
            if !c.eq_ignore_ascii_case(&req.currency) {
                return Err(PaymentError::invalid(
                    "invalid_currency",
                    format!(
                        "merchant {} takes {c}: in-person payments are in the account's local currency",
                        merchant.id
                    ),
                ));
            }
        }

        let id = new_id("pay");
        let id = match idempotency_key {
            None => id,
            Some(key) => {
                if key.is_empty() || key.len() > 255 {
                    return Err(PaymentError::invalid(
                        "invalid_idempotency_key",
                        "Idempotency-Key must be 1 to 255 characters",
                    ));
                }
                let body = serde_json::to_vec(&req).expect("request serialises");
                let rec = IdempotencyRecord {
                    body_sha256: sha256_hex(&body),
                    object: id.clone(),
                };
                let rkey = format!("payments/{client}/{key}");
                match self
                    .inner
                    .registry
                    .put_if_absent(Tree::Idempotency, &rkey, &rec)?
                {
                    None => id,
                    Some(prev) if prev.body_sha256 == rec.body_sha256 => {
                        if let Some(p) = self.get(&prev.object)? {
                            return Ok(p);
                        }
                        // Accepted key, payment not yet written (a crash in between).
                        prev.object
                    }
                    Some(_) => {
                        return Err(PaymentError::conflict(
                            "idempotency_conflict",
                            "this Idempotency-Key was used with a different request body",
                        ))
                    }
                }
            }
        };

        let at = now();
        let mut p = Payment::new(
            NewPayment {
                id: id.clone(),
                merchant: merchant.id.clone(),
                account: merchant.account.clone(),
                charge_type: merchant.charge_type,
                reader: reader.id.clone(),
                amount: req.amount,
                currency: req.currency.clone(),
                capture: req.capture,
                description: req.description.clone(),
                metadata: req.metadata.clone(),
                application_fee_amount: merchant.fee.map(|f| f.on(req.amount)).filter(|f| *f > 0),
                intent_key: format!("readerd:pi:{id}"),
            },
            &at,
        );
        if !merchant.enabled {
            // Nothing reaches Stripe: the payment is failed on arrival, and says why.
            p.apply(
                Observation::Fail(Failure::new(
                    "merchant_not_enabled",
                    format!("card payments are not active for merchant {}", merchant.id),
                )),
                Source::Api,
                &at,
            )?;
            self.inner.registry.put(Tree::Payments, &id, &p)?;
            self.track(None, &p);
            let _ = self.inner.events.send(p.clone());
            return Ok(p);
        }
        let slot = self.slot(&reader.id);
        {
            let mut q = slot.queue.lock().expect("queue lock");
            if q.len() >= q.capacity() {
                return Err(QueueFull {
                    capacity: q.capacity(),
                }
                .into());
            }
            // The record is on disk before the worker can see the job.
            self.inner.registry.put(Tree::Payments, &id, &p)?;
            self.track(None, &p);
            q.push(Job::Payment {
                id: id.clone(),
                merchant: p.merchant.clone(),
            })?;
        }
        self.inner
            .stats
            .lock()
            .expect("stats")
            .accepted(&id, std::time::Instant::now());
        let _ = self.inner.events.send(p.clone());
        slot.work.notify_one();
        Ok(p)
    }

    // ------------------------------------------------------------------------------------
    // Cancel, retry, capture, refund

    /// Cancels a payment. A queued payment that never reached Stripe is canceled at once; an
    /// authorised or declined one by canceling its PaymentIntent; one on the reader by asking
    /// the worker, which reports what really happens (`canceled` only once Stripe confirms).
    pub async fn cancel(&self, id: &str) -> Result<Payment, PaymentError> {
        let lock = self.op_lock(id);
        let _g = lock.lock().await;
        let p = self.load(id)?;
        match p.status {
            Status::Canceled => return Ok(p),
            s if s.is_final() => {
                return Err(PaymentError::conflict(
                    "invalid_state",
                    format!("payment is already {s}"),
                ))
            }
            _ => {}
        }
        let slot = self.slot(&p.reader);
        let removed = slot.queue.lock().expect("queue lock").remove(id);
        if removed && p.payment_intent.is_none() {
            return self.observe(id, Observation::CanceledBeforeStripe, Source::Api);
        }
        let p = self.update(id, |p| {
            p.cancel_requested = true;
            Ok(())
        })?;
        let p = self.observe(
            &p.id,
            Observation::Note("cancel requested".into()),
            Source::Api,
        )?;
        if removed || matches!(p.status, Status::Declined | Status::RequiresCapture) {
            // Off the reader: the PaymentIntent alone decides.
            return self.cancel_intent(&p, Source::Api).await;
        }
        // On (or about to be on) the reader: the worker handles it.
        slot.hint.notify_one();
        Ok(p)
    }

    /// Cancels the payment's PaymentIntent on Stripe and records what Stripe says. Used for
    /// user cancels and for failures (with `failing` set beforehand).
    pub(crate) async fn cancel_intent(
        &self,
        p: &Payment,
        source: Source,
    ) -> Result<Payment, PaymentError> {
        let Some(pi) = p.payment_intent.clone() else {
            // Nothing on Stripe.
            if let Some(f) = p.failing.clone() {
                return self.observe(&p.id, Observation::Fail(f), source);
            }
            return self.observe(&p.id, Observation::CanceledBeforeStripe, source);
        };
        // A fresh key per attempt: a cancel refused now (the PaymentIntent was authorising)
        // must be sendable again later, and Stripe would replay a stored refusal for an old
        // key. Its outcome is always read back, so it never needs replaying.
        let opts = Self::intent_options(p).key(format!("readerd:cancel:{pi}:{}", new_id("k")));
        let params = CancelPaymentIntent {
            cancellation_reason: Some(if p.failing.is_some() {
                "abandoned".into()
            } else {
                "requested_by_customer".into()
            }),
        };
        self.count("cancel_payment_intent");
        let res = self
            .inner
            .stripe
            .cancel_payment_intent(&pi, &params, &opts)
            .await;
        let view = match res {
            Ok(intent) => IntentView::from(&intent),
            Err(e) => {
                // Refused (already authorised, captured, or canceled): read what is true.
                tracing::info!(payment = %p.id, error = %e, "cancel of PaymentIntent refused; reading it");
                let mut intent = self.read_intent(p).await?;
                let unknown = server_side(&e) || e.disposition() != Disposition::Definitive;
                if unknown && cancelable(&intent.status) {
                    // A 5xx (perhaps stored under the key) or no answer, and nothing was
                    // canceled: once more, with a fresh key.
                    self.count("cancel_payment_intent");
                    let again =
                        Self::intent_options(p).key(format!("readerd:cancel:{pi}:{}", new_id("k")));
                    intent = match self
                        .inner
                        .stripe
                        .cancel_payment_intent(&pi, &params, &again)
                        .await
                    {
                        Ok(i) => i,
                        Err(_) => self.read_intent(p).await?,
                    };
                }
                IntentView::from(&intent)
            }
        };
        self.observe(
            &p.id,
            Observation::Intent {
                view,
                reader_done: true,
            },
            source,
        )
    }

    pub(crate) async fn read_intent(
        &self,
        p: &Payment,
    ) -> Result<crate::stripe::wire::PaymentIntent, PaymentError> {
        let pi = p
            .payment_intent
            .as_deref()
            .ok_or(PaymentError::NotFound("payment_intent"))?;
        self.count("retrieve_payment_intent");
        Ok(self
            .inner
            .stripe
            .retrieve_payment_intent(pi, &["latest_charge"], &Self::intent_options(p))
            .await?)
    }

    /// After a decline: the same PaymentIntent goes back to the reader.
    pub async fn retry(&self, id: &str) -> Result<Payment, PaymentError> {
        let lock = self.op_lock(id);
        let _g = lock.lock().await;
        let p = self.load(id)?;
        if p.status != Status::Declined {
            return Err(PaymentError::conflict(
                "invalid_state",
                format!(
                    "only a declined payment can be retried; this one is {}",
                    p.status
                ),
            ));
        }
        let slot = self.slot(&p.reader);
        let p = {
            let mut q = slot.queue.lock().expect("queue lock");
            if q.len() >= q.capacity() {
                return Err(QueueFull {
                    capacity: q.capacity(),
                }
                .into());
            }
            let p = self.observe(id, Observation::Retry, Source::Api)?;
            q.push(Job::Payment {
                id: p.id.clone(),
                merchant: p.merchant.clone(),
            })?;
            p
        };
        slot.work.notify_one();
        Ok(p)
    }

    /// Captures an authorised payment, fully or partially. At most one capture: its key is
    /// written first and replayed on a retry.
    pub async fn capture(&self, id: &str, amount: Option<i64>) -> Result<Payment, PaymentError> {
        let lock = self.op_lock(id);
        let _g = lock.lock().await;
        let p = self.load(id)?;
        if p.status == Status::Succeeded && p.capture_request.is_some() {
            return Ok(p);
        }
        if p.status != Status::RequiresCapture {
            return Err(PaymentError::conflict(
                "invalid_state",
                format!(
                    "only an authorised payment can be captured; this one is {}",
                    p.status
                ),
            ));
        }
        if let Some(a) = amount {
            if a <= 0 || a > p.amount + p.tip.unwrap_or(0) {
                return Err(PaymentError::invalid(
                    "invalid_amount",
                    "the capture amount must be positive and at most the authorised amount",
                ));
            }
        }
        let pi = p
            .payment_intent
            .clone()
            .ok_or(PaymentError::NotFound("payment_intent"))?;
        let p = self.update(id, |p| {
            if p.capture_request.is_none() {
                p.capture_request = Some(CaptureRequest {
                    key: format!("readerd:capture:{pi}"),
                    amount,
                });
            }
            Ok(())
        })?;
        super::worker::failpoint("before_capture");
        self.send_capture(&p).await
    }

    async fn send_capture(&self, p: &Payment) -> Result<Payment, PaymentError> {
        match self.send_capture_once(p).await {
            Err(PaymentError::Stripe(e))
                if e.disposition() == Disposition::Definitive && server_side(&e) =>
            {
                // Stripe stored a 5xx under the capture key and would replay it forever.
                // Only when the PaymentIntent still waits for its capture does a new key,
                // written before it is used, let the capture run (Stripe captures a
                // PaymentIntent at most once anyway).
                let intent = self.read_intent(p).await?;
                if intent.status != PaymentIntentStatus::RequiresCapture {
                    return Err(e.into());
                }
                let p = self.update(&p.id, |p| {
                    if let Some(c) = p.capture_request.as_mut() {
                        c.key = format!(
                            "readerd:capture:{}:{}",
                            p.payment_intent.clone().unwrap_or_default(),
                            new_id("k")
                        );
                    }
                    Ok(())
                })?;
                self.send_capture_once(&p).await
            }
            r => r,
        }
    }

    async fn send_capture_once(&self, p: &Payment) -> Result<Payment, PaymentError> {
        let req = p
            .capture_request
            .clone()
            .ok_or(PaymentError::NotFound("capture"))?;
        let pi = p
            .payment_intent
            .clone()
            .ok_or(PaymentError::NotFound("payment_intent"))?;
        // A partial capture restates the fee, never above what is captured (Stripe caps
        // the fee at the captured amount); a full capture keeps the one set at creation.
        let params = CapturePaymentIntent {
            amount_to_capture: req.amount,
            application_fee_amount: req
                .amount
                .and_then(|a| p.application_fee_amount.map(|f| f.min(a))),
        };
        self.count("capture_payment_intent");
        let res = self
            .inner
            .stripe
            .capture_payment_intent(&pi, &params, &Self::intent_options(p).key(req.key))
            .await;
        match res {
            Ok(intent) => {
                super::worker::failpoint("after_capture");
                self.observe(&p.id, Observation::intent_read(&intent), Source::Api)
            }
            Err(e) => {
                // Whatever happened, the PaymentIntent says what is true now.
                if let Ok(intent) = self.read_intent(p).await {
                    let after =
                        self.observe(&p.id, Observation::intent_read(&intent), Source::Api)?;
                    if after.status == Status::Succeeded {
                        return Ok(after);
                    }
                }
                Err(e.into())
            }
        }
    }

    /// Refunds a succeeded payment, fully (`None`) or partially; refunds never add up to more
    /// than was captured. `key` makes the request repeatable.
    pub async fn refund(
        &self,
        id: &str,
        amount: Option<i64>,
        client: &str,
        key: Option<&str>,
    ) -> Result<(Payment, RefundRecord), PaymentError> {
        let lock = self.op_lock(id);
        let _g = lock.lock().await;
        let p = self.load(id)?;
        let rkey = key.map(|k| format!("{id}/{client}/{k}"));
        if let Some(k) = &rkey {
            if let Some(prev) = self.inner.registry.get::<RefundRecord>(Tree::Refunds, k)? {
                if amount.is_some_and(|a| a != prev.amount) {
                    return Err(PaymentError::conflict(
                        "idempotency_conflict",
                        "this Idempotency-Key was used for a refund of another amount",
                    ));
                }
                let rec = if prev.status == "pending" {
                    self.send_refund(prev).await?
                } else {
                    prev
                };
                return Ok((self.load(id)?, rec));
            }
        }
        if p.status != Status::Succeeded {
            return Err(PaymentError::conflict(
                "invalid_state",
                format!(
                    "only a succeeded payment can be refunded; this one is {}",
                    p.status
                ),
            ));
        }
        let committed: i64 = self
            .refunds_of(id)?
            .iter()
            .filter(|r| r.status != "failed" && r.status != "canceled")
            .map(|r| r.amount)
            .sum();
        let left = p.amount_captured - committed;
        let amount = amount.unwrap_or(left);
        if amount <= 0 || amount > left {
            return Err(PaymentError::invalid(
                "refund_too_large",
                format!("at most {left} can still be refunded"),
            ));
        }
        let rid = new_id("rf");
        let rec = RefundRecord {
            id: rid.clone(),
            payment: id.to_string(),
            amount,
            stripe_key: format!("readerd:refund:{id}:{rid}"),
            status: "pending".into(),
            refund: None,
            created_at: now(),
        };
        let k = rkey.unwrap_or_else(|| format!("{id}/{rid}"));
        self.inner.registry.put(Tree::Refunds, &k, &rec)?;
        super::worker::failpoint("before_refund");
        let rec = self.send_refund(rec).await?;
        Ok((self.load(id)?, rec))
    }

    /// Gives a pending refund a new Stripe key, written before it is used.
    fn rekey_refund(&self, rec: &RefundRecord) -> Result<RefundRecord, PaymentError> {
        let _g = self.write_lock(&rec.payment);
        let mut updated = rec.clone();
        updated.stripe_key = format!("readerd:refund:{}:{}:{}", rec.payment, rec.id, new_id("k"));
        let all: Vec<(String, Vec<u8>)> = self.inner.registry.store().scan(Tree::Refunds)?;
        for (k, _) in all {
            if let Some(r) = self.inner.registry.get::<RefundRecord>(Tree::Refunds, &k)? {
                if r.id == rec.id {
                    self.inner.registry.put(Tree::Refunds, &k, &updated)?;
                }
            }
        }
        Ok(updated)
    }

    fn refunds_of(&self, id: &str) -> Result<Vec<RefundRecord>, PaymentError> {
        let all: Vec<RefundRecord> = self.inner.registry.list(Tree::Refunds)?;
        Ok(all.into_iter().filter(|r| r.payment == id).collect())
    }

    async fn send_refund(&self, rec: RefundRecord) -> Result<RefundRecord, PaymentError> {
        let p = self.load(&rec.payment)?;
        let pi = p
            .payment_intent
            .clone()
            .ok_or(PaymentError::NotFound("payment_intent"))?;
        let params = CreateRefund {
            payment_intent: pi,
            amount: Some(rec.amount),
            reason: Some("requested_by_customer".into()),
            metadata: BTreeMap::from([
                ("readerd_payment".to_string(), p.id.clone()),
                (REFUND_METADATA.to_string(), rec.id.clone()),
            ]),
        };
        self.count("create_refund");
        let mut res = self
            .inner
            .stripe
            .create_refund(
                &params,
                &Self::intent_options(&p).key(rec.stripe_key.clone()),
            )
            .await;
        if let Err(e) = &res {
            if e.disposition() == Disposition::Definitive && server_side(e) {
                // A 5xx stored under the key: the refund may or may not exist. Look for
                // it by its metadata; only when it is not there, a new key (on disk first).
                self.count("list_refunds");
                let found = self
                    .inner
                    .stripe
                    .list_refunds(&params.payment_intent, &Self::intent_options(&p))
                    .await?
                    .into_iter()
                    .find(|r| r.metadata.get(REFUND_METADATA) == Some(&rec.id));
                res = match found {
                    Some(r) => Ok(r),
                    None => {
                        let rec = self.rekey_refund(&rec)?;
                        self.count("create_refund");
                        self.inner
                            .stripe
                            .create_refund(
                                &params,
                                &Self::intent_options(&p).key(rec.stripe_key.clone()),
                            )
                            .await
                    }
                };
            }
        }
        if res.is_ok() {
            super::worker::failpoint("after_refund");
        }
        let (status, refund, err) = match res {
            Ok(r) => (
                r.status.unwrap_or_else(|| "succeeded".into()),
                Some(r.id),
                None,
            ),
            // A 5xx is never taken for a refusal: the refund may exist, so it stays
            // pending (counted against what can still be refunded).
            Err(e) if e.disposition() == Disposition::Definitive && !server_side(&e) => {
                ("failed".to_string(), None, Some(e))
            }
            Err(e) => return Err(e.into()),
        };
        let rec = {
            let _g = self.write_lock(&rec.payment);
            let all: Vec<(String, Vec<u8>)> = self.inner.registry.store().scan(Tree::Refunds)?;
            let mut updated = rec.clone();
            updated.status = status;
            updated.refund = refund;
            for (k, _) in all {
                if let Some(r) = self.inner.registry.get::<RefundRecord>(Tree::Refunds, &k)? {
                    if r.id == rec.id {
                        self.inner.registry.put(Tree::Refunds, &k, &updated)?;
                    }
                }
            }
            updated
        };
        let total: i64 = self
            .refunds_of(&rec.payment)?
            .iter()
            .filter(|r| r.refund.is_some() && r.status != "failed" && r.status != "canceled")
            .map(|r| r.amount)
            .sum();
        self.observe(&rec.payment, Observation::Refunded { total }, Source::Api)?;
        match err {
            Some(e) => Err(e.into()),
            None => Ok(rec),
        }
    }

    // ------------------------------------------------------------------------------------
    // Display, hints, reconcile

    /// Queues a cart display on a reader; it never displaces a payment.
    pub fn display(
        &self,
        reader: &str,
        merchant: &str,
        cart: Cart,
    ) -> Result<String, PaymentError> {
        let info = self
            .inner
            .directory
            .reader(reader)
            .ok_or(PaymentError::NotFound("reader"))?;
        let id = new_id("disp");
        let slot = self.slot(&info.id);
        self.inner.displays.lock().expect("displays").insert(
            id.clone(),
            DisplayRequest {
                reader: info.id.clone(),
                cart,
            },
        );
        let pushed = slot.queue.lock().expect("queue lock").push(Job::Display {
            id: id.clone(),
            merchant: merchant.to_string(),
        });
        if let Err(e) = pushed {
            self.inner.displays.lock().expect("displays").remove(&id);
            return Err(e.into());
        }
        slot.work.notify_one();
        Ok(id)
    }

    /// An operator's force-clear: cancels the reader's action only if it still holds the
    /// PaymentIntent the operator named (compare, then cancel), so that a customer's payment
    /// that replaced it in the meantime is never killed. Returns the reader as it is after.
    pub async fn clear_reader(
        &self,
        reader: &str,
        payment_intent: &str,
    ) -> Result<crate::stripe::wire::Reader, PaymentError> {
        let info = self
            .inner
            .directory
            .reader(reader)
            .ok_or(PaymentError::NotFound("reader"))?;
        self.count("retrieve_reader");
        let r = self.inner.stripe.retrieve_reader(&info.id).await?;
        let holds = r.action.as_ref().filter(|a| {
            a.status == crate::stripe::wire::ActionStatus::InProgress
                && a.payment_intent_id() == Some(payment_intent)
        });
        if holds.is_none() {
            let what = match &r.action {
                Some(a) if a.status == crate::stripe::wire::ActionStatus::InProgress => format!(
                    "an in-progress {} action{}",
                    a.kind,
                    a.payment_intent_id()
                        .map(|p| format!(" for {p}"))
                        .unwrap_or_default()
                ),
                _ => "no action in progress".to_string(),
            };
            return Err(PaymentError::conflict(
                "reader_action_mismatch",
                format!(
                    "reader {} holds {what}, not {payment_intent}; nothing was canceled",
                    info.id
                ),
            ));
        }
        tracing::warn!(reader = %info.id, payment_intent, "operator force-clear of the reader's action");
        self.count("cancel_action");
        let key = format!("readerd:clear:{}:{payment_intent}:{}", info.id, new_id("k"));
        Ok(self
            .inner
            .stripe
            .cancel_action(&info.id, &RequestOptions::platform().key(key))
            .await?)
    }

    /// Re-reads the PaymentIntent of every payment that waits off the reader (authorised or
    /// declined), so that what Stripe decided on its own (an authorisation expired after
    /// `capture_before`, a cancel from the Dashboard) is recorded even without webhooks; and
    /// puts back in line any payment on its way whose flow stopped.
    pub async fn sweep(&self) -> usize {
        let Ok(all) = self.list(&PaymentFilter::default()) else {
            return 0;
        };
        let mut n = 0;
        // A payment on its way whose flow stopped (an error it could not get past) goes back
        // to its reader's queue, first in line.
        for p in all
            .iter()
            .filter(|p| matches!(p.status, Status::Queued | Status::Processing))
        {
            let slot = self.slot(&p.reader);
            let current = slot.current.lock().expect("current").clone();
            let mut q = slot.queue.lock().expect("queue lock");
            if current.as_deref() != Some(p.id.as_str()) && !q.contains(&p.id) {
                tracing::warn!(payment = %p.id, "resuming a payment whose flow had stopped");
                q.push_resumed(Job::Payment {
                    id: p.id.clone(),
                    merchant: p.merchant.clone(),
                });
                drop(q);
                slot.work.notify_one();
            }
        }
        for p in all
            .into_iter()
            .filter(|p| matches!(p.status, Status::RequiresCapture | Status::Declined))
        {
            let lock = self.op_lock(&p.id);
            let _g = lock.lock().await;
            if let Ok(intent) = self.read_intent(&p).await {
                n += 1;
                let _ = self.observe(&p.id, Observation::intent_read(&intent), Source::Poll);
            }
        }
        // Refunds whose outcome stayed unknown (Stripe unreachable, or a stored 5xx not yet
        // resolved) are sent again with their own keys.
        let pending: Vec<RefundRecord> = self
            .inner
            .registry
            .list(Tree::Refunds)
            .unwrap_or_default()
            .into_iter()
            .filter(|r: &RefundRecord| r.status == "pending")
            .collect();
        for r in pending {
            let lock = self.op_lock(&r.payment);
            let _g = lock.lock().await;
            let still = self
                .refunds_of(&r.payment)
                .ok()
                .and_then(|all| all.into_iter().find(|x| x.id == r.id))
                .filter(|x| x.status == "pending");
            if let Some(rec) = still {
                n += 1;
                if let Err(e) = self.send_refund(rec).await {
                    tracing::info!(payment = %r.payment, refund = %r.id, error = %e, "pending refund still unresolved");
                }
            }
        }
        n
    }

    /// A webhook said something about a reader: wake its worker to re-read.
    pub fn hint_reader(&self, reader: &str) {
        let slot = self.existing_slot(reader);
        if let Some(s) = slot {
            s.hint.notify_one();
        }
    }

    /// A webhook said something about a PaymentIntent: re-read it (through the worker when
    /// the payment is on the reader).
    pub fn hint_intent(&self, pi: &str) {
        let Some(p) = self.payment_for_intent(pi) else {
            return;
        };
        match p.status {
            Status::Queued | Status::Processing => self.hint_reader(&p.reader),
            Status::RequiresCapture | Status::Declined | Status::Succeeded => {
                let id = p.id.clone();
                let engine = self.clone();
                tokio::spawn(async move {
                    let lock = engine.op_lock(&id);
                    let _g = lock.lock().await;
                    if let Ok(p) = engine.load(&id) {
                        if let Ok(intent) = engine.read_intent(&p).await {
                            let _ = engine.observe(
                                &id,
                                Observation::Intent {
                                    view: IntentView::from(&intent),
                                    reader_done: p.status != Status::Processing,
                                },
                                Source::Webhook,
                            );
                        }
                    }
                });
            }
            _ => {}
        }
    }

    /// Start-up reconcile of a payment that is off the reader (authorised or declined):
    /// read its PaymentIntent, then finish a capture or cancel that was under way.
    async fn resume_off_reader(&self, id: &str) -> Result<(), PaymentError> {
        let lock = self.op_lock(id);
        let _g = lock.lock().await;
        let p = self.load(id)?;
        let intent = self.read_intent(&p).await?;
        let p = self.observe(id, Observation::intent_read(&intent), Source::Reconcile)?;
        if p.status == Status::RequiresCapture && p.capture_request.is_some() {
            self.send_capture(&p).await?;
        } else if !p.status.is_final() && (p.cancel_requested || p.failing.is_some()) {
            self.cancel_intent(&p, Source::Reconcile).await?;
        }
        Ok(())
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

/// The request-level checks that need no I/O.
fn validate(
    req: &CreatePayment,
    merchant_country: &Option<String>,
    reader: &ReaderInfo,
) -> Result<(), PaymentError> {
    let c = &req.currency;
    if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(PaymentError::invalid(
            "invalid_currency",
            "currency must be a lower-case ISO 4217 code such as \"eur\"",
        ));
    }
    let min = minimum_amount(c);
    if req.amount < min || req.amount > MAX_AMOUNT {
        return Err(PaymentError::invalid(
            "invalid_amount",
            format!("amount must be an integer from {min} to {MAX_AMOUNT} minor units of {c}"),
        ));
    }
    if !reader.allows(&req.merchant) {
        return Err(PaymentError::Forbidden {
            code: "reader_not_allowed",
            message: format!(
                "reader {} does not serve merchant {}",
                reader.id, req.merchant
            ),
        });
    }
    if let (Some(m), Some(r)) = (merchant_country, &reader.country) {
        if !m.eq_ignore_ascii_case(r) {
            return Err(PaymentError::invalid(
                "country_mismatch",
                format!(
                    "reader {} is at a location in {r}, but merchant {} is in {m}; Stripe requires the same country",
                    reader.id, req.merchant
                ),
            ));
        }
    }
    if let Some(d) = &req.description {
        if d.len() > 1000 {
            return Err(PaymentError::invalid(
                "invalid_description",
                "description is too long",
            ));
        }
    }
    if req.metadata.len() > 49
        || req
            .metadata
            .iter()
            .any(|(k, v)| k.len() > 40 || v.len() > 500 || k == "readerd_payment")
    {
        return Err(PaymentError::invalid(
            "invalid_metadata",
            "metadata: at most 49 keys of up to 40 characters, values up to 500; readerd_payment is reserved",
        ));
    }
    Ok(())
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

    fn req(amount: i64, currency: &str) -> CreatePayment {
        CreatePayment {
            merchant: "bakery".into(),
            reader: "tmr_1".into(),
            amount,
            currency: currency.into(),
            capture: CaptureMode::Automatic,
            description: None,
            metadata: BTreeMap::new(),
        }
    }

    fn reader(country: &str, allowed: Option<Vec<String>>) -> ReaderInfo {
        ReaderInfo {
            id: "tmr_1".into(),
            label: None,
            country: Some(country.into()),
            allowed_merchants: allowed,
        }
    }

    #[test]
    fn validation_rules() {
        let fr = Some("FR".to_string());
        let ok = reader("FR", None);
        assert!(validate(&req(1250, "eur"), &fr, &ok).is_ok());
        for (a, c, code) in [
            (0, "eur", "invalid_amount"),
            (-5, "eur", "invalid_amount"),
            (49, "eur", "invalid_amount"),
            (100_000_000, "eur", "invalid_amount"),
            (1250, "EUR", "invalid_currency"),
            (1250, "euro", "invalid_currency"),
            (1250, "", "invalid_currency"),
        ] {
            match validate(&req(a, c), &fr, &ok) {
                Err(PaymentError::Invalid { code: got, .. }) => assert_eq!(got, code, "{a} {c}"),
                other => panic!("{a} {c}: {other:?}"),
            }
        }
        assert!(matches!(
            validate(&req(1250, "eur"), &Some("DE".into()), &ok),
            Err(PaymentError::Invalid {
                code: "country_mismatch",
                ..
            })
        ));
        assert!(matches!(
            validate(
                &req(1250, "eur"),
                &fr,
                &reader("FR", Some(vec!["florist".into()]))
            ),
            Err(PaymentError::Forbidden { .. })
        ));
        let mut r = req(1250, "eur");
        r.metadata.insert("readerd_payment".into(), "x".into());
        assert!(validate(&r, &fr, &ok).is_err());
    }
}
