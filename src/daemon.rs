//! The daemon's life: start-up in a fixed order, the background loops, and shutdown.
//!
//! Start-up order (`readerd run`): tracing; config validated (exit 64 on a bad one, before
//! anything is bound or opened); secrets read; store opened; the listener bound; the
//! payment engine built and its unfinished payments reconciled; the API served; then the initial sync, in the background, so that the API is up
//! even while Stripe is unreachable.
//!
//! [`Daemon::start`] takes an already-bound listener and returns a [`DaemonHandle`] with its
//! address and a shutdown switch, so tests (and the demo) run whole daemons in-process on
//! `127.0.0.1:0`. `run` adds the signal handling (SIGTERM, SIGINT) around it.
//!
//! Longer than 600 lines on purpose: it is the daemon's whole lifecycle (start-up order,
//! background loops, drain and shutdown, signals and reload), read top to bottom.
//!
//! The payment engine is built here with everything it needs (registry, Stripe client,
//! the fleet as its directory, metrics, liveness, drain flag); its routes join the API, it
//! is the readers' live state, and its sweep is one of the background loops.

use crate::api::{self, AppState, Auth, BodyLimit};
use crate::config::{Config, ConfigError, Secrets, EX_CONFIG};
use crate::fleet::{Fleet, Idle, StripeHealth};
use crate::payments::{ClusterMembership, DaemonLinks, Engine, FleetDirectory};
use crate::store::binding::{self, Binding, BindingError, Mode};
use crate::store::{Location, Registry, StoreError};
use crate::stripe::StripeClient;
use crate::systemd::{Heartbeat, Notifier};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot bind {addr}: {message}")]
    Bind { addr: String, message: String },
    #[error("stripe client: {0}")]
    Stripe(#[from] crate::stripe::StripeError),
    #[error("payments: {0}")]
    Payments(String),
    /// The key may not drive this store (the other mode, another platform), or its mode
    /// cannot be told: exit 64, the store untouched.
    #[error(transparent)]
    Binding(#[from] BindingError),
    #[error("{0}")]
    Key(String),
    #[error(transparent)]
    Tls(#[from] api::tls::TlsError),
}

impl DaemonError {
    /// The process exit code for a start that failed this way: 64 for what the operator's
    /// configuration or key got wrong.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            DaemonError::Config(_)
            | DaemonError::Binding(_)
            | DaemonError::Key(_)
            | DaemonError::Tls(_) => ExitCode::from(EX_CONFIG),
            _ => ExitCode::FAILURE,
        }
    }
}

/// What the daemon runs as: the key's mode and the platform account (when Stripe named it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bound {
    pub mode: Mode,
    pub platform: Option<String>,
}

/// Where a store's binding lives: the directory of a sled store. A PostgreSQL store is
/// not bound yet (its binding belongs in a table of its own).
fn binding_dir(location: &Location) -> Option<&Path> {
    match location {
        Location::Sled(dir) => Some(dir),
        Location::Postgres(_) => None,
    }
}

/// How long the start-up waits for Stripe to name the platform (`GET /v1/account`) before
/// starting without it, so that the API is up even while Stripe is unreachable.
const PLATFORM_LOOKUP: Duration = Duration::from_secs(5);

/// Checks the key against the store's binding, before the store is opened, and binds an
/// unbound store: the key's mode, and the platform Stripe names for the key. A refusal
/// changes nothing on disk. `dir` is `None` for a store that lives only as long as the
/// process (the demo's), which is not bound.
pub async fn bind_store(
    config: &Config,
    secrets: &Secrets,
    dir: Option<&Path>,
) -> Result<Bound, DaemonError> {
    let mode = Mode::of_key(secrets.stripe_key.expose()).ok_or_else(|| {
        DaemonError::Key(
            "the Stripe key is neither a test key (sk_test_, rk_test_) nor a live key (sk_live_, rk_live_): its mode decides which store it may drive".into(),
        )
    })?;
    let bound = match dir {
        Some(d) => {
            let d = d.to_path_buf();
            tokio::task::spawn_blocking(move || binding::read(&d))
                .await
                .map_err(|e| DaemonError::Store(StoreError::Engine(e.to_string())))??
        }
        None => None,
    };
    if let (Some(d), Some(b)) = (dir, &bound) {
        // The mode needs no network: refused even while Stripe is unreachable.
        binding::check(d, b, mode, None)?;
    }
    let stripe = StripeClient::new(config.client_config(secrets.stripe_key.clone()))?;
    let platform = match tokio::time::timeout(PLATFORM_LOOKUP, stripe.retrieve_own_account()).await
    {
        Ok(Ok(account)) => Some(account.id),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Stripe did not name the platform account; the store's platform is checked at the next start");
            None
        }
        Err(_) => {
            tracing::warn!("Stripe did not name the platform account in time; the store's platform is checked at the next start");
            None
        }
    };
    let Some(d) = dir else {
        return Ok(Bound { mode, platform });
    };
    if let Some(b) = &bound {
        binding::check(d, b, mode, platform.as_deref())?;
    }
    let platform = platform.or_else(|| bound.as_ref().and_then(|b| b.platform.clone()));
    let wanted = Binding {
        mode,
        platform: platform.clone(),
        bound_at: bound
            .as_ref()
            .map(|b| b.bound_at)
            .unwrap_or_else(crate::clock::Timestamp::now),
    };
    if bound.as_ref() != Some(&wanted) {
        let d = d.to_path_buf();
        let w = wanted.clone();
        tokio::task::spawn_blocking(move || binding::write(&d, &w))
            .await
            .map_err(|e| DaemonError::Store(StoreError::Engine(e.to_string())))??;
        tracing::info!(mode = %mode, platform = ?platform, "store bound");
    }
    Ok(Bound { mode, platform })
}

/// A shutdown signal: cheap to clone, awaited by every long-running task.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The switch that fires a [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// A connected signal and switch.
pub fn shutdown_pair() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    pub fn fire(&self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    pub fn is_fired(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once the shutdown is fired (or its switch is dropped).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|fired| *fired).await;
    }
}

/// A daemon to start: its config and its secrets.
pub struct Daemon {
    config: Config,
    secrets: Secrets,
    /// The store's binding, when the caller checked it already ([`bind_store`]).
    bound: Option<Bound>,
}

/// A running daemon.
#[derive(Debug)]
pub struct DaemonHandle {
    /// The API's address (useful with a listener bound to port 0).
    pub addr: SocketAddr,
    /// The core services, for tests and the demo.
    pub state: AppState,
    /// Every method and path the API serves (the tenancy test walks it).
    pub routes: Vec<api::Route>,
    /// The TLS configuration in force, with `[api.tls]` (SIGHUP reloads it).
    pub tls: Option<Arc<api::tls::Tls>>,
    trigger: ShutdownTrigger,
    server: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
}

/// How long shutdown waits for open requests and tasks before abandoning them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often the drain looks for Stripe requests still under way.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// Idle loops tick their heartbeat at least this often.
const IDLE_TICK: Duration = Duration::from_secs(5);
/// The longest a fleet sync may go without a tick: a few listing pages, each bounded by the
/// client's timeouts and retries (`stripe.max_elapsed`, 60 s by default).
const SYNC_BUDGET: Duration = Duration::from_secs(600);
/// The merchant re-check reads every merchant's account in one round.
const MERCHANT_CHECK_BUDGET: Duration = Duration::from_secs(1800);
/// How often the daemon checks that its own API answers, how long one check may take, and
/// the longest it may go without a good answer.
const API_PROBE_EVERY: Duration = Duration::from_secs(10);
const API_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const API_PROBE_BUDGET: Duration = Duration::from_secs(60);
/// How often `systemctl status` gets a fresh status line.
const STATUS_EVERY: Duration = Duration::from_secs(30);

impl Daemon {
    pub fn new(config: Config, secrets: Secrets) -> Self {
        Daemon {
            config,
            secrets,
            bound: None,
        }
    }

    /// A daemon whose store was bound already (by [`bind_store`], before it was opened).
    pub fn bound(mut self, bound: Bound) -> Self {
        self.bound = Some(bound);
        self
    }

    /// Opens the store, starts the payment engine and background loops, and serves the API on
    /// `listener`. The config must already be validated.
    pub async fn start(self, listener: TcpListener) -> Result<DaemonHandle, DaemonError> {
        let Daemon {
            config,
            secrets,
            bound,
        } = self;
        let location = config
            .store
            .location()
            .map_err(|e| DaemonError::Store(StoreError::Engine(e.to_string())))?;
        let bound = match bound {
            Some(b) => b,
            None => bind_store(&config, &secrets, binding_dir(&location)).await?,
        };
        let cache_mb = config.store.cache_mb;
        let registry = tokio::task::spawn_blocking(move || open_registry(&location, cache_mb))
            .await
            .map_err(|e| DaemonError::Store(StoreError::Engine(e.to_string())))??;
        Self::start_with_registry(config, secrets, bound, registry, listener).await
    }

    /// As [`Daemon::start`], on a registry that is already open: `readerd run` (which bound
    /// it first) and the demo's temporary one (never bound).
    pub async fn start_on(
        self,
        registry: Registry,
        listener: TcpListener,
    ) -> Result<DaemonHandle, DaemonError> {
        let bound = match self.bound {
            Some(b) => b,
            None => bind_store(&self.config, &self.secrets, None).await?,
        };
        Self::start_with_registry(self.config, self.secrets, bound, registry, listener).await
    }

    async fn start_with_registry(
        config: Config,
        secrets: Secrets,
        bound: Bound,
        registry: Registry,
        listener: TcpListener,
    ) -> Result<DaemonHandle, DaemonError> {
        let addr = listener.local_addr().map_err(|e| DaemonError::Bind {
            addr: "listener".into(),
            message: e.to_string(),
        })?;
        // The certificate is checked before anything starts.
        let tls = match &config.api.tls {
            Some(t) => Some(Arc::new(api::tls::Tls::new(t)?)),
            None => None,
        };
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let stripe = StripeClient::new(config.client_config(secrets.stripe_key.clone()))?
            .with_observer(metrics.clone());
        let health = Arc::new(StripeHealth::default());
        let fleet = Arc::new(
            Fleet::new(registry.clone(), stripe.clone(), health.clone())
                .with_platform(bound.platform.clone()),
        );
        let mut state = AppState {
            auth: Arc::new(Auth::new(&config.api.clients)),
            body_limit: BodyLimit(config.api.max_body_bytes),
            config: Arc::new(config),
            registry,
            stripe,
            fleet,
            health,
            live: Arc::new(Idle),
            webhook_secret: secrets.webhook_secret.clone(),
            metrics,
            liveness: crate::systemd::Liveness::new(),
            draining: Arc::default(),
            mode: bound.mode,
            platform: bound.platform.clone(),
        };
        let (trigger, shutdown) = shutdown_pair();

        let engine = start_payments(&state).await?;
        state.live = Arc::new(engine.clone());
        let mut tasks = vec![tokio::spawn(sweep_loop(engine.clone(), shutdown.clone()))];
        if let (Some(keep), Some(dir)) = (
            state.config.store.keep_final,
            state.config.store.archive_dir.clone(),
        ) {
            tasks.push(tokio::spawn(retention_loop(
                engine.clone(),
                keep.0,
                dir,
                shutdown.clone(),
            )));
        }
        {
            let (engine, shutdown) = (engine.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move {
                engine.lease_loop(shutdown.wait()).await
            }));
        }
        reader_metrics(&state);

        let routes = api::payments::routes(engine.clone())
            .merge(api::inputs::routes(engine.clone()))
            .merge(api::setups::routes(engine.clone()))
            .merge(api::reader_refunds::routes(engine.clone()))
            .merge(api::events::routes(engine.clone()))
            .merge(api::webhooks::routes(engine));
        let (app, route_table) = api::router(state.clone(), vec![routes]);
        let serve_shutdown = shutdown.clone();
        let (server, probe) = match &tls {
            None => {
                let server = tokio::spawn(async move {
                    let result = axum::serve(listener, app)
                        .with_graceful_shutdown(async move { serve_shutdown.wait().await })
                        .await;
                    if let Err(e) = result {
                        tracing::error!(error = %e, "API server stopped");
                    }
                });
                (server, Probe::Tcp(addr))
            }
            Some(tls) => {
                let (listener, local) =
                    api::tls::listen(listener, tls.clone()).map_err(|e| DaemonError::Bind {
                        addr: addr.to_string(),
                        message: e.to_string(),
                    })?;
                let server = tokio::spawn(async move {
                    let result = axum::serve(listener, app)
                        .with_graceful_shutdown(async move { serve_shutdown.wait().await })
                        .await;
                    if let Err(e) = result {
                        tracing::error!(error = %e, "API server stopped");
                    }
                });
                (server, Probe::Local(local))
            }
        };
        tracing::info!(%addr, tls = tls.is_some(), "API listening");
        tasks.push(tokio::spawn(api_probe(
            probe,
            state.liveness.register("API server", API_PROBE_BUDGET),
            shutdown.clone(),
        )));

        tasks.push(tokio::spawn(sync_loop(
            state.fleet.clone(),
            state.config.sync.interval.0,
            state.liveness.register("fleet sync", SYNC_BUDGET),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(merchant_loop(
            state.fleet.clone(),
            state.config.merchants.recheck_interval.0,
            state
                .liveness
                .register("merchant re-check", MERCHANT_CHECK_BUDGET),
            shutdown.clone(),
        )));

        Ok(DaemonHandle {
            addr,
            state,
            routes: route_table,
            tls,
            trigger,
            server,
            tasks,
        })
    }
}

impl DaemonHandle {
    /// Asks everything to stop (returns at once; see [`DaemonHandle::join`]).
    pub fn shutdown(&self) {
        self.trigger.fire();
    }

    /// Waits for the API and every task to stop, abandoning them after [`SHUTDOWN_GRACE`].
    pub async fn join(self) {
        let all = async {
            let _ = self.server.await;
            for t in self.tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            tracing::warn!("shutdown grace period over; abandoning open connections and tasks");
        }
    }

    /// The first half of a graceful shutdown: from now on the API refuses new work with
    /// 503 (the listener stays open, so POS clients get an answer rather than a refused
    /// connection), and this waits, for at most [`SHUTDOWN_GRACE`], until no Stripe request
    /// is under way. Whatever a worker does next is already on disk and resumes at the next
    /// start; a payment on a reader stays as it is (never canceled by a shutdown).
    pub async fn drain(&self) {
        self.state.draining.store(true, Ordering::SeqCst);
        let stripe = &self.state.stripe;
        let quiet = async {
            while stripe.in_flight() > 0 {
                tokio::time::sleep(DRAIN_POLL).await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, quiet).await.is_err() {
            tracing::warn!(
                in_flight = stripe.in_flight(),
                "Stripe requests still under way after the grace period; they are abandoned and reconciled at the next start"
            );
        }
    }

    /// [`DaemonHandle::drain`], [`DaemonHandle::shutdown`], then [`DaemonHandle::join`].
    pub async fn stop(self) {
        self.drain().await;
        self.shutdown();
        self.join().await;
    }
}

/// The payment engine on the daemon's services (`[payments]` of the config), its
/// unfinished payments reconciled and resumed.
async fn start_payments(state: &AppState) -> Result<Engine, DaemonError> {
    // A shared store: each reader's worker runs where its lease is held.
    let cluster = (state.registry.store().backend() == "postgres").then(|| ClusterMembership {
        instance: state.config.cluster.instance_name(),
        lease_ttl: state.config.cluster.lease_ttl.0,
    });
    let engine = Engine::new(
        state.registry.clone(),
        state.stripe.clone(),
        Arc::new(FleetDirectory(state.fleet.clone())),
        state.config.payments.engine(),
        DaemonLinks {
            metrics: state.metrics.clone(),
            liveness: state.liveness.clone(),
            draining: state.draining.clone(),
            cluster,
        },
    );
    let resumed = engine
        .start()
        .await
        .map_err(|e| DaemonError::Payments(e.to_string()))?;
    if resumed > 0 {
        tracing::info!(resumed, "unfinished payments reconciled and resumed");
    }
    Ok(engine)
}

/// How often authorised and declined payments are re-read (webhooks make it sooner).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// Re-reads payments that wait off the reader every [`SWEEP_INTERVAL`] until shutdown.
async fn sweep_loop(engine: Engine, shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
        let n = engine.sweep().await;
        tracing::debug!(payments = n, "authorised and declined payments re-read");
    }
}

/// How often final payments older than `[store] keep_final` are archived.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Archives final payments older than `keep` into `dir` a minute after start, then every
/// [`RETENTION_INTERVAL`], until shutdown.
async fn retention_loop(engine: Engine, keep: Duration, dir: PathBuf, shutdown: Shutdown) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = RETENTION_INTERVAL;
        let before = crate::clock::Timestamp::now() - keep;
        match engine.archive_final(&dir, before, None).await {
            Ok(r) if r.archived > 0 || r.held > 0 => {
                tracing::info!(archived = r.archived, held = r.held, dir = %dir.display(), "final payments archived")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "archiving final payments failed; retrying later"),
        }
    }
}

/// Opens the store at `location` (sled's page cache bounded by `[store] cache_mb`), building
/// its indexes if it is older, and warns when it was filled for measurement.
fn open_registry(location: &crate::store::Location, cache_mb: u64) -> Result<Registry, StoreError> {
    let registry = match location {
        crate::store::Location::Sled(path) => {
            Registry::open_with_cache(path, cache_mb.saturating_mul(1024 * 1024))?
        }
        other => Registry::open_location(other)?,
    };
    if registry.is_test_store().unwrap_or(false) {
        tracing::warn!(
            store = ?location,
            "this store was filled for measurement (readerd bench --fill-store): its payments never were on Stripe; do not use it for real payments"
        );
    }
    Ok(registry)
}

/// Syncs at once, then every `interval`; after a failure, again within a minute.
async fn sync_loop(fleet: Arc<Fleet>, interval: Duration, beat: Heartbeat, shutdown: Shutdown) {
    let retry = interval.min(Duration::from_secs(60));
    loop {
        let next = match fleet.sync().await {
            Ok(_) => interval,
            Err(e) => {
                tracing::warn!(error = %e, "fleet sync failed; retrying in {} s", retry.as_secs());
                retry
            }
        };
        beat.tick();
        if !idle(next, &beat, &shutdown).await {
            return;
        }
    }
}

/// Sleeps `period` while ticking `beat`; `false` when the shutdown came first.
async fn idle(period: Duration, beat: &Heartbeat, shutdown: &Shutdown) -> bool {
    let until = tokio::time::Instant::now() + period;
    loop {
        beat.tick();
        let now = tokio::time::Instant::now();
        if now >= until {
            return true;
        }
        tokio::select! {
            _ = shutdown.wait() => return false,
            _ = tokio::time::sleep((until - now).min(IDLE_TICK)) => {}
        }
    }
}

/// Re-checks every merchant's account every `interval`; at start-up only those whose last
/// check is older than that (a long stop), not those just added.
async fn merchant_loop(fleet: Arc<Fleet>, interval: Duration, beat: Heartbeat, shutdown: Shutdown) {
    fleet.check_merchants_older_than(interval).await;
    loop {
        if !idle(interval, &beat, &shutdown).await {
            return;
        }
        fleet.check_all_merchants().await;
    }
}

/// How the liveness probe reaches the API: over TCP, or (with TLS, where it has no client
/// certificate to offer) through an in-memory connection the server accepts like any other.
enum Probe {
    Tcp(SocketAddr),
    Local(api::tls::LocalConnector),
}

/// Proves that the API still answers: `GET /healthz` on the daemon's own listener every
/// [`API_PROBE_EVERY`], ticking `beat` on each 200, so that a wedged server stops the
/// watchdog pings like any other stuck loop.
async fn api_probe(probe: Probe, beat: Heartbeat, shutdown: Shutdown) {
    let probe = match probe {
        Probe::Tcp(addr) if addr.ip().is_unspecified() => {
            let lo: std::net::IpAddr = if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            Probe::Tcp(SocketAddr::new(lo, addr.port()))
        }
        other => other,
    };
    loop {
        let answers = match &probe {
            Probe::Tcp(addr) => {
                let connect = tokio::net::TcpStream::connect(*addr);
                match tokio::time::timeout(API_PROBE_TIMEOUT, connect).await {
                    Ok(Ok(s)) => healthz_answers(s).await,
                    _ => false,
                }
            }
            Probe::Local(local) => match local.connect().await {
                Some(s) => healthz_answers(s).await,
                None => false,
            },
        };
        if answers {
            beat.tick();
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(API_PROBE_EVERY) => {}
        }
    }
}

async fn healthz_answers(mut s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: readerd\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(API_PROBE_TIMEOUT, exchange).await,
        Ok(Some(true))
    )
}

/// Fills the reader gauges from the registry and the workers' live state at each scrape.
/// The collector holds them weakly: the metrics are reachable from the Stripe client they
/// observe, and a strong hold would keep a stopped daemon's store open.
fn reader_metrics(state: &AppState) {
    let fleet = Arc::downgrade(&state.fleet);
    let live = Arc::downgrade(&state.live);
    state.metrics.add_collector(move |m| {
        let (Some(fleet), Some(live)) = (fleet.upgrade(), live.upgrade()) else {
            return;
        };
        let Ok(readers) = fleet.readers() else {
            return;
        };
        let now = crate::clock::Timestamp::now();
        let readers: Vec<_> = readers.into_iter().filter(|r| !r.gone).collect();
        let lives: Vec<_> = readers.iter().map(|r| live.reader(&r.id)).collect();
        let gauge = |f: &dyn Fn(usize) -> f64| -> Vec<(Vec<&str>, f64)> {
            (0..readers.len())
                .map(|i| (vec![readers[i].id.as_str()], f(i)))
                .collect()
        };
        m.reader_online.replace_all(gauge(&|i| {
            f64::from(u8::from(readers[i].status == "online"))
        }));
        m.reader_busy
            .replace_all(gauge(&|i| f64::from(u8::from(lives[i].busy))));
        m.reader_queue_depth
            .replace_all(gauge(&|i| lives[i].queue_depth as f64));
        m.reader_last_seen_age.replace_all(
            (0..readers.len())
                .filter_map(|i| {
                    let seen = readers[i].last_seen_at?;
                    Some((
                        vec![readers[i].id.as_str()],
                        ((now - seen).max(0) as f64) / 1000.0,
                    ))
                })
                .collect::<Vec<_>>(),
        );
    });
}

/// `readerd check-config --config PATH`: 0 when the config and its secrets are usable,
/// 64 with the reason otherwise. It also says which mode and platform the store is bound
/// to, and refuses a key of the other mode (no network, nothing written).
pub fn check_config(path: &Path) -> ExitCode {
    let result = Config::load(path).and_then(|c| c.load_secrets().map(|s| (c, s)));
    if let Ok((c, _)) = &result {
        if let Some(Err(e)) = c.api.tls.as_ref().map(api::tls::load) {
            eprintln!("readerd: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    }
    match result {
        Ok((c, s)) => {
            for w in c.secret_warnings() {
                eprintln!("readerd: {w}");
            }
            let Some(mode) = Mode::of_key(s.stripe_key.expose()) else {
                eprintln!("readerd: the Stripe key is neither a test key (sk_test_, rk_test_) nor a live key (sk_live_, rk_live_)");
                return ExitCode::from(EX_CONFIG);
            };
            let dir = match c.store.location() {
                Ok(Location::Sled(dir)) => Some(dir),
                Ok(Location::Postgres(_)) => {
                    println!("store: PostgreSQL; not bound to a mode (the binding is kept for sled stores)");
                    None
                }
                Err(e) => {
                    eprintln!("readerd: {e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            if let Some(dir) = dir {
                match binding::read(&dir) {
                    Ok(Some(b)) => {
                        let platform = b.platform.as_deref().unwrap_or("not yet named by Stripe");
                        println!(
                            "store {} is bound to {} mode, platform {platform}",
                            dir.display(),
                            b.mode
                        );
                        if let Err(e) = binding::check(&dir, &b, mode, None) {
                            eprintln!("readerd: {e}");
                            return ExitCode::from(EX_CONFIG);
                        }
                    }
                    Ok(None) => println!(
                        "store {} is not bound yet: the first start binds it to {mode} mode and the key's platform",
                        dir.display()
                    ),
                    Err(e) => {
                        eprintln!("readerd: {e}");
                        return ExitCode::from(EX_CONFIG);
                    }
                }
            }
            println!(
                "{}: OK (api {}{} with {} client(s), store {}, stripe {}{})",
                path.display(),
                if c.api.tls.is_some() { "https " } else { "" },
                c.api.listen,
                c.api.clients.len(),
                c.store.path.display(),
                c.stripe.api_base,
                if s.webhook_secret.is_some() {
                    ", webhooks on"
                } else {
                    ""
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("readerd: {e}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// `readerd run --config PATH`.
pub fn run(path: &Path) -> ExitCode {
    let config_path = path;
    // The config is read first only to learn the log settings; a bad one is reported on
    // stderr before any tracing is set up.
    let config = match Config::load(path) {
        Ok(c) => {
            crate::telemetry::init(&c.log);
            c
        }
        Err(e) => {
            eprintln!("readerd: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let secrets = match config.load_secrets() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    for w in config.secret_warnings() {
        tracing::warn!("{w}");
    }
    if let Some(Err(e)) = config.api.tls.as_ref().map(api::tls::load) {
        tracing::error!("{e}");
        return ExitCode::from(EX_CONFIG);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        // Before anything else: a signal during start-up is handled, not fatal.
        let mut signals = Signals::install();
        let listen = config.api.listen;
        let cache_mb = config.store.cache_mb;
        let location = match config.store.location() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(EX_CONFIG);
            }
        };
        let bound = match bind_store(&config, &secrets, binding_dir(&location)).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("readerd: {e}");
                return e.exit_code();
            }
        };
        let registry =
            match tokio::task::spawn_blocking(move || open_registry(&location, cache_mb)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::error!("cannot open the store: {e}");
                    return ExitCode::FAILURE;
                }
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            };
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot bind {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let handle = match Daemon::new(config, secrets)
            .bound(bound)
            .start_on(registry, listener)
            .await
        {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("{e}");
                return e.exit_code();
            }
        };
        let notifier = Notifier::from_env();
        let (watchdog_stop, watchdog_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some(interval) = crate::systemd::watchdog_interval() {
            tokio::spawn(crate::systemd::run_watchdog(
                notifier.clone(),
                interval,
                handle.state.liveness.clone(),
                async move {
                    let _ = watchdog_stopped.await;
                },
            ));
        }
        notifier.ready(&format!("serving the API on {}", handle.addr));
        if notifier.is_enabled() {
            tokio::spawn(status_loop(
                handle.state.clone(),
                handle.addr,
                notifier.clone(),
            ));
        }
        loop {
            match signals.next().await {
                Signal::Stop => break,
                Signal::Reload => reload(config_path, &handle, &notifier),
            }
        }
        tracing::info!("stopping: new work is refused while Stripe requests under way finish");
        notifier.stopping("draining");
        handle.stop().await;
        let _ = watchdog_stop.send(());
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Keeps `systemctl status readerd` current: one line on readers, open payments and Stripe.
async fn status_loop(state: AppState, addr: SocketAddr, notifier: Notifier) {
    loop {
        tokio::time::sleep(STATUS_EVERY).await;
        if state.draining.load(Ordering::SeqCst) {
            return;
        }
        notifier.status(&status_line(&state, addr));
    }
}

/// The status line (`STATUS=`) for `systemctl status`.
pub fn status_line(state: &AppState, addr: SocketAddr) -> String {
    let (online, readers) = state
        .fleet
        .readers()
        .map(|rs| {
            let rs: Vec<_> = rs.into_iter().filter(|r| !r.gone).collect();
            (rs.iter().filter(|r| r.status == "online").count(), rs.len())
        })
        .unwrap_or((0, 0));
    let stripe = if state.metrics.stripe_is_degraded() {
        "degraded".to_string()
    } else {
        match state.health.status() {
            Some(Ok(())) => "ok".to_string(),
            Some(Err(_)) => "unreachable".to_string(),
            None => "not contacted yet".to_string(),
        }
    };
    format!(
        "serving on {addr}; {online}/{readers} readers online; {} payments open; Stripe {stripe}",
        state.metrics.open_payment_count()
    )
}

/// Re-reads the config file on SIGHUP and applies what can change without a restart: the
/// API clients and their tokens, and the TLS certificate files. A config that does not
/// validate changes nothing; unusable TLS files leave the certificates in force.
fn reload(path: &Path, handle: &DaemonHandle, notifier: &Notifier) {
    let (state, addr) = (&handle.state, handle.addr);
    notifier.reloading();
    match Config::load(path) {
        Ok(new) => {
            if let (Some(tls), Some(files)) = (&handle.tls, &new.api.tls) {
                match tls.reload(files) {
                    Ok(()) => tracing::info!("TLS certificates reloaded; new connections use them"),
                    Err(e) => {
                        tracing::error!(error = %e, "TLS reload refused; the certificates in force stay")
                    }
                }
            }
            let diff = state.auth.reload(&new.api.clients);
            tracing::info!(
                added = ?diff.added,
                removed = ?diff.removed,
                changed = ?diff.changed,
                clients = new.api.clients.len(),
                "API clients reloaded"
            );
            let pending = state.config.restart_needed(&new);
            if !pending.is_empty() {
                tracing::warn!(
                    sections = ?pending,
                    "these settings changed in the file but apply only after a restart"
                );
            }
            for w in new.secret_warnings() {
                tracing::warn!("{w}");
            }
            state.metrics.config_reload(true);
        }
        Err(e) => {
            tracing::error!(error = %e, "reload refused; the API clients in force stay");
            state.metrics.config_reload(false);
        }
    }
    notifier.ready(&format!("serving the API on {addr}"));
}

/// What the signal handler saw.
enum Signal {
    /// SIGTERM or SIGINT: shut down.
    Stop,
    /// SIGHUP: reload.
    Reload,
}

/// SIGTERM, SIGINT and SIGHUP, installed before the daemon announces itself, so that a
/// signal sent right after `READY=1` is never met by the default action.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    /// SIGINT as its own stream, installed with the others: `tokio::signal::ctrl_c()` only
    /// takes over SIGINT when first polled, which left a window at start-up in which a
    /// SIGINT killed the daemon instead of stopping it.
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
                hup: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            let term = async {
                match &mut self.term {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let int = async {
                match &mut self.int {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let hup = async {
                match &mut self.hup {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = term => Signal::Stop,
                _ = int => Signal::Stop,
                _ = hup => Signal::Reload,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}

/// SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
