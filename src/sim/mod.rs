//! The Stripe emulator: a stateful, in-memory imitation of the Stripe API subset readerd
//! uses (accounts, Terminal locations and readers, reader actions and test helpers,
//! PaymentIntents, refunds), with Stripe's idempotency, `Stripe-Account` scoping and error
//! shapes, fault injection and signed webhooks. It runs standalone (`readerd sim`) or
//! in-process ([`spawn`], [`serve`]) for tests and the demo.
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
use std::process::ExitCode;
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
    /// Where to send webhook events; none are sent when absent.
    pub webhook: Option<WebhookTarget>,
    pub faults: Faults,
    /// Requests per second over all `/v1` calls; beyond it, 429 as Stripe's limiter answers.
    pub rate_limit: Option<u32>,
    /// Stripe's platform-owned-reader preview is enabled for the platform (the default):
    /// its readers may process its connected accounts' PaymentIntents.
    pub platform_owned_readers: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            auth_delay: Duration::ZERO,
            auto_present: None,
            webhook: None,
            faults: Faults::default(),
            rate_limit: None,
            platform_owned_readers: true,
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

/// The request log and the event list keep at most this many entries (the oldest tenth
/// goes when it is reached), so a long-running emulator does not grow without bound.
pub const MAX_LOG: usize = 100_000;

/// State shared by the server, its timers and the handle.
pub(crate) struct Shared {
    state: Mutex<state::State>,
    keys: Mutex<idempotency::Keys>,
    faults: Arc<Mutex<Faults>>,
    fault_rng: Arc<Mutex<StdRng>>,
    rate: Mutex<(Option<u32>, faults::RateWindow)>,
    log: Mutex<Vec<RequestRecord>>,
    events_tx: Option<mpsc::UnboundedSender<Event>>,
    auth_delay: Duration,
    auto_present: Option<Duration>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn new(config: SimConfig, shutdown: watch::Receiver<bool>) -> Arc<Shared> {
        let mut st = state::State::new(StdRng::seed_from_u64(config.seed));
        st.auth_delay_zero = config.auth_delay.is_zero();
        st.platform_owned_readers = config.platform_owned_readers;
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
        Arc::new(Shared {
            state: Mutex::new(st),
            keys: Mutex::new(idempotency::Keys::default()),
            faults,
            fault_rng,
            rate: Mutex::new((config.rate_limit, faults::RateWindow::new())),
            log: Mutex::new(Vec::new()),
            events_tx,
            auth_delay: config.auth_delay,
            auto_present: config.auto_present,
        })
    }

    /// Hands queued events to the webhook sender and schedules queued timers.
    fn flush(self: &Arc<Self>, st: &mut state::State) {
        for event in st.outbox.drain(..) {
            if let Some(tx) = &self.events_tx {
                let _ = tx.send(event);
            }
        }
        for timer in st.timers.drain(..) {
            let shared = self.clone();
            let delay = match &timer {
                state::Timer::Authorize { .. } => self.auth_delay,
                state::Timer::Present { .. } => self.auto_present.unwrap_or_default(),
            };
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut st = lock(&shared.state);
                st.request = None;
                match timer {
                    state::Timer::Authorize { reader, generation } => {
                        st.authorize(&reader, generation)
                    }
                    state::Timer::Present { reader, generation } => {
                        st.auto_present(&reader, generation)
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

    pub fn reset_requests(&self) {
        lock(&self.shared.log).clear();
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

// ---------------------------------------------------------------------------------------
// The command

/// `readerd sim`: the emulator as a standalone server.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:12111")]
    pub listen: SocketAddr,
    /// Seed for ids and fault draws (same seed + same requests = same run).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long an authorisation takes after a card is presented (e.g. `2s`, `500ms`);
    /// `cancel_action` is terminal_reader_busy meanwhile. 0s = inside the present call, as
    /// Stripe's simulated readers do.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub auth_delay: Duration,
    /// Tap the default Visa by itself this long after `process_payment_intent` (demo mode).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub auto_present: Option<Duration>,
    /// Send webhook events to this URL.
    #[arg(long, requires = "webhook_secret")]
    pub webhook_url: Option<String>,
    /// Signing secret for webhook events (`whsec_…`).
    #[arg(long, env = "READERD_SIM_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Requests per second over all /v1 calls before answering 429.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Latency added to every /v1 request (e.g. `50ms`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub latency: Option<Duration>,
    /// Share (0..1) of /v1 requests answered 500 before doing any work.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Share of /v1 requests whose connection is dropped before the work is done.
    #[arg(long, default_value_t = 0.0)]
    pub drop_before_rate: f64,
    /// Share of /v1 requests whose connection is dropped after the work was done.
    #[arg(long, default_value_t = 0.0)]
    pub drop_after_rate: f64,
    /// Share of reader commands that take the action but answer terminal_reader_timeout.
    #[arg(long, default_value_t = 0.0)]
    pub reader_timeout_rate: f64,
    /// Share of process_payment_intent calls after which the reader goes offline.
    #[arg(long, default_value_t = 0.0)]
    pub offline_mid_action_rate: f64,
    /// Share of webhook events delivered twice.
    #[arg(long, default_value_t = 0.0)]
    pub webhook_duplicate_rate: f64,
    /// Delay before each webhook delivery (e.g. `1s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub webhook_delay: Option<Duration>,
    /// Shuffle webhook events queued during the delay.
    #[arg(long)]
    pub webhook_reorder: bool,
    /// Act as a platform without Stripe's platform-owned-reader preview: a platform reader
    /// finds no PaymentIntent of a connected account (direct charges fail).
    #[arg(long)]
    pub no_platform_owned_readers: bool,
}

impl SimArgs {
    /// The configuration these flags describe.
    pub fn config(&self) -> SimConfig {
        SimConfig {
            seed: self.seed,
            auth_delay: self.auth_delay,
            auto_present: self.auto_present,
            webhook: match (&self.webhook_url, &self.webhook_secret) {
                (Some(url), Some(secret)) => Some(WebhookTarget {
                    url: url.clone(),
                    secret: secret.clone(),
                }),
                _ => None,
            },
            faults: Faults {
                latency_ms: self.latency.map(|d| d.as_millis() as u64).unwrap_or(0),
                error_rate: self.error_rate,
                drop_before_rate: self.drop_before_rate,
                drop_after_rate: self.drop_after_rate,
                reader_timeout_rate: self.reader_timeout_rate,
                offline_mid_action_rate: self.offline_mid_action_rate,
                webhook_duplicate_rate: self.webhook_duplicate_rate,
                webhook_delay_ms: self
                    .webhook_delay
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                webhook_reorder: self.webhook_reorder,
                rules: Vec::new(),
            },
            rate_limit: self.rate_limit,
            platform_owned_readers: !self.no_platform_owned_readers,
        }
    }
}

/// Runs `readerd sim` until Ctrl-C.
pub fn run(args: SimArgs) -> ExitCode {
    let rates = [
        args.error_rate,
        args.drop_before_rate,
        args.drop_after_rate,
        args.reader_timeout_rate,
        args.offline_mid_action_rate,
        args.webhook_duplicate_rate,
    ];
    if rates.iter().any(|r| !(0.0..=1.0).contains(r)) {
        eprintln!("readerd sim: fault rates must be between 0 and 1");
        return ExitCode::from(64);
    }
    let Some(runtime) = crate::cli::runtime("readerd sim", true) else {
        return ExitCode::FAILURE;
    };
    crate::telemetry::init_default();
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("readerd sim: cannot listen on {}: {e}", args.listen);
                return ExitCode::from(69);
            }
        };
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        println!("readerd sim: Stripe emulator listening on http://{addr} (any sk_test_ key; control routes under /_sim/)");
        serve(listener, args.config(), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::SimArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn the_preview_is_on_unless_switched_off() {
        let on = Cli::try_parse_from(["sim"]).unwrap().sim.config();
        assert!(on.platform_owned_readers);
        let off = Cli::try_parse_from(["sim", "--no-platform-owned-readers"])
            .unwrap()
            .sim
            .config();
        assert!(!off.platform_owned_readers);
    }
}
