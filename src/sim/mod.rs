//! The Stripe emulator: a stateful, in-memory imitation of the Stripe API subset readerd
//! uses (accounts, Terminal locations and readers, reader actions and test helpers,
//! PaymentIntents, refunds), with Stripe's idempotency, `Stripe-Account` scoping and error
//! shapes, fault injection and signed webhooks. It runs in-process ([`spawn`], [`serve`])
//! for tests, the demo and the benchmark, and standalone through the `readerd sim` command
//! (`cli::sim`, which sets a [`SimConfig`] from flags and calls [`serve`]).
//!
//! Layout: [`state`] holds the objects and their status machines (no I/O); `routes` maps
//! HTTP onto it and applies auth, scoping, rate limits, faults and idempotency in that
//! order; [`faults`] decides what goes wrong; [`idempotency`] stores responses per key;
//! `webhooks` delivers events. Control routes live under `/_sim/` (see docs/SIM.md).

pub mod faults;
pub mod idempotency;
mod routes;
pub mod state;
mod webhooks;

pub use faults::{FaultKind, FaultRule, Faults};
pub use state::{SimError, DEFAULT_CARD};

use crate::stripe::wire::{CapabilityStatus, Event, Reader};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Where webhook events go and the secret they are signed with.
#[derive(Clone)]
pub struct WebhookTarget {
    pub url: String,
    /// The endpoint's signing secret (`whsec_…`).
    pub secret: String,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// How an emulator behaves.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds ids and every fault draw: the same seed and requests give the same run.
    pub seed: u64,
    /// How long an authorisation takes after the card is presented (`cancel_action` is
    /// `terminal_reader_busy` meanwhile). Zero (the default, as Stripe's simulated readers
    /// behave) finishes it inside the present call.
    pub auth_delay: Duration,
    /// When set, a reader given `process_payment_intent` taps the default Visa by itself
    /// after this delay (for the demo). Simulated readers on Stripe never do this.
    pub auto_present: Option<Duration>,
    /// With `auto_present`: each customer taps after a delay drawn evenly between
    /// `auto_present` and this (seeded), like real customers who take their time.
    pub auto_present_max: Option<Duration>,
    /// Where to send webhook events; none are sent when absent.
    pub webhook: Option<WebhookTarget>,
    pub faults: Faults,
    /// Requests per second over all `/v1` calls; beyond it, 429 as Stripe's limiter answers.
    pub rate_limit: Option<u32>,
    /// Stripe's platform-owned-reader preview is enabled for the platform (the default):
    /// its readers may process its connected accounts' PaymentIntents.
    pub platform_owned_readers: bool,
    /// The platform account's country (`US` unless set; its default currency is the
    /// country's), which decides where the platform's own charges (destination charges it
    /// settles, separate charges) may be taken.
    pub platform_country: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            auth_delay: Duration::ZERO,
            auto_present: None,
            auto_present_max: None,
            webhook: None,
            faults: Faults::default(),
            rate_limit: None,
            platform_owned_readers: true,
            platform_country: "US".into(),
        }
    }
}

/// One request as the emulator saw it (`GET /_sim/requests`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RequestRecord {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The `Stripe-Account` header, if sent.
    pub account: Option<String>,
    pub idempotency_key: Option<String>,
    /// The HTTP status answered; 0 when the connection was dropped instead.
    pub status: u16,
    /// The injected fault, if any (`error`, `drop_before`, `drop_after`, `reader_timeout`,
    /// `offline_mid_action`, `rate_limit`).
    pub fault: Option<String>,
    /// True when the response was replayed from an idempotency key.
    pub replayed: bool,
    pub request_id: String,
}

/// How many `/v1` requests of one kind were answered with one status
/// (`GET /_sim/requests/counts`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RequestCount {
    pub method: String,
    /// The path with every id segment as `{id}`: `/v1/terminal/readers/{id}`.
    pub endpoint: String,
    /// As in [`RequestRecord::status`].
    pub status: u16,
    pub count: u64,
}

/// A request path with its id segments (any with a digit or a capital letter, as every
/// Stripe id has) replaced by `{id}`.
pub fn endpoint_of(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg
                .chars()
                .any(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
                && seg != "v1"
            {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The request log and the event list keep at most this many entries (the oldest tenth
/// goes when it is reached), so a long-running emulator does not grow without bound.
pub const MAX_LOG: usize = 100_000;

/// State shared by the server, its timers and the handle.
pub(crate) struct Shared {
    /// The test world (`sk_test_…` keys), which the control routes and the handle act on.
    state: Mutex<state::State>,
    keys: Mutex<idempotency::Keys>,
    /// The live world (`sk_live_…` keys): the same platform and accounts, its own objects
    /// (`livemode: true`) and idempotency keys. Locked after the test world, never before.
    live_state: Mutex<state::State>,
    live_keys: Mutex<idempotency::Keys>,
    faults: Arc<Mutex<Faults>>,
    fault_rng: Arc<Mutex<StdRng>>,
    rate: Mutex<(Option<u32>, faults::RateWindow)>,
    log: Mutex<Vec<RequestRecord>>,
    events_tx: Option<mpsc::UnboundedSender<Event>>,
    auth_delay: Duration,
    auto_present: Option<Duration>,
    auto_present_max: Option<Duration>,
    /// When each auto-present tapped, by PaymentIntent (kept only with `auto_present`).
    taps: Mutex<Vec<(String, std::time::SystemTime)>>,
    /// Requests by method, endpoint (ids as `{id}`) and status, never trimmed, unlike
    /// `log`: what a long run cost, for a reader of `GET /_sim/requests/counts`.
    counts: Mutex<BTreeMap<(String, String, u16), u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn new(config: SimConfig, shutdown: watch::Receiver<bool>) -> Arc<Shared> {
        let mut st = state::State::new(StdRng::seed_from_u64(config.seed));
        st.auth_delay_zero = config.auth_delay.is_zero();
        st.platform_owned_readers = config.platform_owned_readers;
        let country = config.platform_country.to_ascii_uppercase();
        st.platform.default_currency = Some(state::currency_of(&country).to_string());
        st.platform.country = Some(country);
        let faults = Arc::new(Mutex::new(config.faults));
        let fault_rng = Arc::new(Mutex::new(StdRng::seed_from_u64(
            config.seed.wrapping_add(0x5eed),
        )));
        let events_tx = config.webhook.map(|target| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(webhooks::run(
                target,
                rx,
                faults.clone(),
                fault_rng.clone(),
                shutdown,
            ));
            tx
        });
        let live = st.live_twin(StdRng::seed_from_u64(config.seed.wrapping_add(0x11fe)));
        Arc::new(Shared {
            state: Mutex::new(st),
            keys: Mutex::new(idempotency::Keys::default()),
            live_state: Mutex::new(live),
            live_keys: Mutex::new(idempotency::Keys::default()),
            faults,
            fault_rng,
            rate: Mutex::new((config.rate_limit, faults::RateWindow::new())),
            log: Mutex::new(Vec::new()),
            events_tx,
            auth_delay: config.auth_delay,
            auto_present: config.auto_present,
            auto_present_max: config.auto_present_max,
            taps: Mutex::new(Vec::new()),
            counts: Mutex::new(BTreeMap::new()),
        })
    }

    /// Logs and counts one answered (or dropped) `/v1` request.
    fn record_request(&self, record: RequestRecord) {
        *lock(&self.counts)
            .entry((
                record.method.clone(),
                endpoint_of(&record.path),
                record.status,
            ))
            .or_default() += 1;
        let mut log = lock(&self.log);
        if log.len() >= MAX_LOG {
            log.drain(..MAX_LOG / 10);
        }
        log.push(record);
    }

    fn request_counts(&self) -> Vec<RequestCount> {
        lock(&self.counts)
            .iter()
            .map(|((method, endpoint, status), count)| RequestCount {
                method: method.clone(),
                endpoint: endpoint.clone(),
                status: *status,
                count: *count,
            })
            .collect()
    }

    /// Empties the request log and its counts; returns how many entries the log had.
    fn reset_requests(&self) -> usize {
        lock(&self.counts).clear();
        let mut log = lock(&self.log);
        let n = log.len();
        log.clear();
        n
    }

    /// The world of a test (`false`) or live (`true`) key, and its idempotency keys.
    fn world(&self, live: bool) -> (&Mutex<state::State>, &Mutex<idempotency::Keys>) {
        if live {
            (&self.live_state, &self.live_keys)
        } else {
            (&self.state, &self.keys)
        }
    }

    /// Hands queued events to the webhook sender and schedules queued timers.
    fn flush(self: &Arc<Self>, st: &mut state::State) {
        if !st.livemode {
            // Accounts are the same in both modes: the live world follows the test world's.
            lock(&self.live_state).accounts = st.accounts.clone();
        }
        let live = st.livemode;
        for event in st.outbox.drain(..) {
            if let Some(tx) = &self.events_tx {
                let _ = tx.send(event);
            }
        }
        for timer in st.timers.drain(..) {
            let shared = self.clone();
            let delay = match &timer {
                state::Timer::Authorize { .. } => self.auth_delay,
                state::Timer::Present { .. } | state::Timer::Answer { .. } => {
                    let min = self.auto_present.unwrap_or_default();
                    match self.auto_present_max.filter(|max| *max > min) {
                        Some(max) => {
                            let span = (max - min).as_millis() as u64;
                            min + Duration::from_millis(rand::Rng::gen_range(
                                &mut *lock(&self.fault_rng),
                                0..=span,
                            ))
                        }
                        None => min,
                    }
                }
            };
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut st = lock(shared.world(live).0);
                st.request = None;
                match timer {
                    state::Timer::Authorize { reader, generation } => {
                        st.authorize(&reader, generation)
                    }
                    state::Timer::Present { reader, generation } => {
                        if let Some(pi) = st.auto_present(&reader, generation) {
                            lock(&shared.taps).push((pi, std::time::SystemTime::now()));
                        }
                    }
                    state::Timer::Answer { reader, generation } => {
                        st.auto_answer(&reader, generation)
                    }
                }
                shared.flush(&mut st);
            });
        }
    }
}

/// A running in-process emulator. Dropping it stops the server.
pub struct SimHandle {
    /// The address it listens on.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Starts an emulator on `127.0.0.1:0`.
pub async fn spawn(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let shared = Shared::new(config, rx.clone());
    let task = tokio::spawn(routes::run(listener, shared.clone(), rx));
    Ok(SimHandle {
        addr,
        shared,
        shutdown: tx,
        task: Mutex::new(Some(task)),
    })
}

/// Serves the emulator on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = watch::channel(false);
    let shared = Shared::new(config, rx.clone());
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    routes::run(listener, shared, rx).await;
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`, the `api_base` for a client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let task = lock(&self.task).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut state::State) -> R) -> R {
        let mut st = lock(&self.shared.state);
        st.request = None;
        let r = f(&mut st);
        self.shared.flush(&mut st);
        r
    }

    /// The platform's own account id.
    pub fn platform_account(&self) -> String {
        self.with_state(|st| st.platform.id.clone())
    }

    /// Creates a connected account of this platform; returns its id.
    pub fn create_account(
        &self,
        country: &str,
        default_currency: &str,
        card_payments: CapabilityStatus,
    ) -> String {
        self.with_state(|st| {
            st.add_account(country, default_currency, Some(card_payments))
                .id
        })
    }

    /// Turns Stripe's platform-owned-reader preview on (the default) or off for the
    /// platform: when off, a platform reader finds no PaymentIntent of a connected account.
    pub fn set_platform_owned_readers(&self, enabled: bool) {
        self.with_state(|st| st.platform_owned_readers = enabled)
    }

    /// Sets an account's `card_payments` capability; false when the account is unknown.
    pub fn set_capability(&self, account: &str, status: CapabilityStatus) -> bool {
        self.with_state(|st| st.set_capability(account, status).is_some())
    }

    /// Sets an account's `transfers` capability (what a Transfer to it needs); false when
    /// the account is unknown.
    pub fn set_transfers_capability(&self, account: &str, status: CapabilityStatus) -> bool {
        self.with_state(|st| st.set_transfers_capability(account, status).is_some())
    }

    /// Brings a reader's link up or down; false when the reader is unknown.
    pub fn set_reader_online(&self, reader: &str, online: bool) -> bool {
        self.with_state(|st| st.set_online(reader, online).is_some())
    }

    /// The customer taps card `number` (the default Visa when `None`) on `reader`.
    pub fn present_card(&self, reader: &str, number: Option<&str>) -> Result<Reader, SimError> {
        self.present_card_with_tip(reader, number, 0)
    }

    /// As [`Self::present_card`], with an on-reader tip.
    pub fn present_card_with_tip(
        &self,
        reader: &str,
        number: Option<&str>,
        tip: i64,
    ) -> Result<Reader, SimError> {
        self.with_state(|st| {
            let owner = st
                .readers
                .get(reader)
                .map(|r| r.owner.clone())
                .ok_or_else(|| SimError::no_such("terminal.reader", reader, None))?;
            let card = state::TestCard::from_number(number.unwrap_or(DEFAULT_CARD))?;
            st.present(&owner, reader, card, tip)?;
            serde_json::from_value(st.reader_view(reader, &[]))
                .map_err(|e| SimError::api(500, e.to_string()))
        })
    }

    pub fn faults(&self) -> Faults {
        lock(&self.shared.faults).clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
    }

    /// Requests per second over `/v1`; `None` lifts the limit.
    pub fn set_rate_limit(&self, per_second: Option<u32>) {
        lock(&self.shared.rate).0 = per_second;
    }

    /// Every `/v1` request seen so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).clone()
    }

    /// When each auto-present customer tapped: (PaymentIntent, wall-clock time).
    pub fn taps(&self) -> Vec<(String, std::time::SystemTime)> {
        lock(&self.shared.taps).clone()
    }

    /// Every `/v1` request since the start (or the last reset) counted by method, endpoint
    /// and status, as `GET /_sim/requests/counts` shows them; unlike [`Self::requests`],
    /// never trimmed.
    pub fn request_counts(&self) -> Vec<RequestCount> {
        self.shared.request_counts()
    }

    /// Empties the request log and its counts.
    pub fn reset_requests(&self) {
        self.shared.reset_requests();
    }

    /// PaymentIntents on `account` (`None` = the platform's own).
    pub fn payment_intent_count(&self, account: Option<&str>) -> usize {
        self.with_state(|st| st.intent_count(account))
    }

    /// PaymentIntents per account (`platform` for the platform's own).
    pub fn stats(&self) -> BTreeMap<String, usize> {
        self.with_state(|st| st.stats())
    }

    /// The customer presses cancel on `reader` while it waits for a card: the action fails
    /// with `customer_canceled`.
    pub fn customer_cancel(&self, reader: &str) -> Result<Reader, SimError> {
        self.with_state(|st| {
            let v = st.customer_cancel(reader)?;
            serde_json::from_value(v).map_err(|e| SimError::api(500, e.to_string()))
        })
    }

    /// Every event created so far (whether or not a webhook endpoint is configured).
    pub fn events(&self) -> Vec<Event> {
        self.with_state(|st| st.events.clone())
    }

    /// Who holds what: every account's money movements per currency (`platform` for the
    /// platform), as `GET /_sim/balances` shows them.
    pub fn balances(&self) -> state::Books {
        self.with_state(|st| st.balances())
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
