//! systemd integration: the `sd_notify` protocol and a watchdog that vouches only for loops
//! that are actually alive.
//!
//! Under `Type=notify`, systemd waits for `READY=1` before it counts the service as started,
//! shows `STATUS=` lines in `systemctl status`, expects `STOPPING=1` when a shutdown begins,
//! and, with `WatchdogSec=`, restarts the service when `WATCHDOG=1` stops arriving. The
//! protocol is one datagram per message to the socket named by `$NOTIFY_SOCKET` (a path, or
//! an abstract name written with a leading `@`), so it is done here with std alone. Outside
//! systemd (no `$NOTIFY_SOCKET`) every call is a no-op.
//!
//! A watchdog ping must mean "the daemon is doing its work", not "the runtime can still run
//! a timer task". So each long-running loop holds a [`Heartbeat`] from the daemon's
//! [`Liveness`] and ticks it every round (idle loops wake periodically to do so). Each loop
//! declares its budget: the longest it may legitimately go without a tick, which for a loop
//! that calls Stripe includes Stripe's own timeouts and retries (a Stripe stall must not
//! restart the daemon). [`run_watchdog`] pings only while every registered
//! loop is within its budget. A loop that panics leaves its heartbeat behind, stale for
//! good, so a dead worker ends in a watchdog restart instead of a daemon that answers
//! `/healthz` and never finishes a payment.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A connection to systemd's notification socket, or nothing outside systemd.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Arc<Target>>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// For log messages only.
    name: String,
}

impl Notifier {
    /// The notifier described by `$NOTIFY_SOCKET`; a no-op notifier when it is unset, empty
    /// or unusable (the last is logged: the service would otherwise hang in "activating").
    pub fn from_env() -> Self {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => match Self::connect(&v.to_string_lossy()) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(socket = %v.to_string_lossy(), error = %e, "NOTIFY_SOCKET unusable; systemd notifications disabled");
                    Self::disabled()
                }
            },
            _ => Self::disabled(),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Notifier { target: None }
    }

    /// A notifier for the socket `name`: a filesystem path, or `@name` for an abstract
    /// socket (Linux).
    pub fn connect(name: &str) -> io::Result<Self> {
        let addr = if let Some(abstract_name) = name.strip_prefix('@') {
            abstract_addr(abstract_name.as_bytes())?
        } else if name.starts_with('/') {
            SocketAddr::from_pathname(name)?
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither an absolute path nor an abstract name",
            ));
        };
        let socket = UnixDatagram::unbound()?;
        // A full socket buffer must never stall the daemon; a lost STATUS line is harmless.
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            target: Some(Arc::new(Target {
                socket,
                addr,
                name: name.to_string(),
            })),
        })
    }

    /// Whether messages go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` assignments) as one datagram.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        match &self.target {
            Some(t) => t.socket.send_to_addr(state.as_bytes(), &t.addr).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Like [`Notifier::notify`], but failures are logged, not returned: a service manager
    /// that cannot be told is no reason to stop serving.
    fn send(&self, state: &str) {
        if let Err(e) = self.notify(state) {
            if let Some(t) = &self.target {
                tracing::warn!(socket = %t.name, error = %e, "sd_notify failed");
            }
        }
    }

    /// `READY=1`: the store is open and the listeners are bound.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STOPPING=1`: a graceful shutdown has begun.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// `RELOADING=1`: a reload (SIGHUP) has begun; follow with [`Notifier::ready`].
    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }

    /// `STATUS=…`: one line for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`: the daemon is alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist on Linux only",
    ))
}

/// Status texts are single lines in the protocol.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The watchdog interval systemd expects pings within, from `$WATCHDOG_USEC` (and
/// `$WATCHDOG_PID`, which when set must name this process). `None` when no watchdog is
/// configured.
pub fn watchdog_interval() -> Option<Duration> {
    parse_watchdog(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// The daemon's long-running loops, each with the time it last made progress.
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    inner: Arc<LivenessInner>,
}

#[derive(Debug, Default)]
struct LivenessInner {
    next_id: AtomicU64,
    loops: Mutex<BTreeMap<u64, Arc<Beat>>>,
}

#[derive(Debug)]
struct Beat {
    name: String,
    /// Milliseconds since `origin` at the last tick.
    last_ms: AtomicU64,
    origin: Instant,
    /// The longest silence that still counts as alive.
    budget: Duration,
    /// The loop panicked: stale at once, whatever its budget.
    dead: std::sync::atomic::AtomicBool,
}

impl Beat {
    fn age(&self, now: Instant) -> Duration {
        let at = self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(at)
    }
}

/// A loop's proof of life. Tick it every round. Dropping it on a normal exit deregisters the
/// loop; dropping it while panicking leaves it registered and stale at once, which stops
/// the watchdog pings.
#[derive(Debug)]
pub struct Heartbeat {
    id: u64,
    beat: Arc<Beat>,
    owner: Arc<LivenessInner>,
}

impl Heartbeat {
    pub fn tick(&self) {
        let ms = Instant::now()
            .saturating_duration_since(self.beat.origin)
            .as_millis();
        self.beat
            .last_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn name(&self) -> &str {
        &self.beat.name
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.beat.dead.store(true, Ordering::Relaxed);
            return;
        }
        if let Ok(mut loops) = self.owner.loops.lock() {
            loops.remove(&self.id);
        }
    }
}

impl Liveness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a loop (ticked now) that ticks at least once every `budget`.
    pub fn register(&self, name: impl Into<String>, budget: Duration) -> Heartbeat {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let beat = Arc::new(Beat {
            name: name.into(),
            last_ms: AtomicU64::new(0),
            origin: Instant::now(),
            budget,
            dead: std::sync::atomic::AtomicBool::new(false),
        });
        self.inner
            .loops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, beat.clone());
        Heartbeat {
            id,
            beat,
            owner: self.inner.clone(),
        }
    }

    /// The loops that have not ticked within their budget, by name.
    pub fn stale(&self) -> Vec<String> {
        let now = Instant::now();
        self.inner
            .loops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|b| b.dead.load(Ordering::Relaxed) || b.age(now) > b.budget)
            .map(|b| b.name.clone())
            .collect()
    }

    /// How many loops are registered.
    pub fn len(&self) -> usize {
        self.inner
            .loops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Pings systemd's watchdog every `interval / 2` while every loop in `liveness` is within
/// its budget, and stays silent (with a warning naming the stale loops) otherwise, so that
/// systemd restarts a daemon whose loops have stopped. Runs until `shutdown` resolves.
pub async fn run_watchdog(
    notifier: Notifier,
    interval: Duration,
    liveness: Liveness,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let period = interval / 2;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut was_stale = false;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        let stale = liveness.stale();
        if stale.is_empty() {
            if was_stale {
                tracing::info!("all loops alive again; watchdog pings resumed");
                was_stale = false;
            }
            notifier.watchdog();
        } else {
            tracing::warn!(loops = ?stale, "loops stalled; withholding the watchdog ping");
            was_stale = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(dir: &tempfile::TempDir) -> (UnixDatagram, String) {
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (sock, path.display().to_string())
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_protocol_messages_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, path) = listener(&dir);
        let n = Notifier::connect(&path).unwrap();
        assert!(n.is_enabled());
        n.ready("serving on 127.0.0.1:7700");
        assert_eq!(recv(&sock), "READY=1\nSTATUS=serving on 127.0.0.1:7700");
        n.status("two\nlines");
        assert_eq!(recv(&sock), "STATUS=two lines");
        n.watchdog();
        assert_eq!(recv(&sock), "WATCHDOG=1");
        n.reloading();
        assert_eq!(recv(&sock), "RELOADING=1");
        n.stopping("draining");
        assert_eq!(recv(&sock), "STOPPING=1\nSTATUS=draining");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "readerd-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::connect(&format!("@{name}")).unwrap();
        n.watchdog();
        assert_eq!(recv(&sock), "WATCHDOG=1");
    }

    #[test]
    fn disabled_notifier_sends_nothing_and_succeeds() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        n.notify("READY=1").unwrap();
    }

    #[test]
    fn relative_socket_names_are_refused() {
        assert!(Notifier::connect("notify.sock").is_err());
    }

    #[test]
    fn a_vanished_socket_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, path) = listener(&dir);
        let n = Notifier::connect(&path).unwrap();
        drop(sock);
        std::fs::remove_file(&path).unwrap();
        assert!(n.notify("WATCHDOG=1").is_err());
        n.watchdog(); // logged, no panic
    }

    #[test]
    fn watchdog_interval_parsing() {
        assert_eq!(
            parse_watchdog(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_watchdog(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_watchdog(Some("30000000"), Some("8"), 7), None);
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(Some("soon"), None, 7), None);
        assert_eq!(parse_watchdog(None, Some("7"), 7), None);
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_reports_loops_that_stopped_ticking() {
        let live = Liveness::new();
        let a = live.register("reader-worker tmr_1", Duration::from_secs(5));
        let b = live.register("poller", Duration::from_secs(5));
        let slow = live.register("sync", Duration::from_secs(300));
        tokio::time::advance(Duration::from_secs(10)).await;
        a.tick();
        assert_eq!(live.stale(), vec!["poller".to_string()]);
        b.tick();
        assert!(live.stale().is_empty());
        tokio::time::advance(Duration::from_secs(300)).await;
        a.tick();
        b.tick();
        assert_eq!(live.stale(), vec!["sync".to_string()]);
        slow.tick();
        drop(b);
        assert_eq!(live.len(), 2);
        assert_eq!(a.name(), "reader-worker tmr_1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicked_loop_stays_stale() {
        let live = Liveness::new();
        let l2 = live.clone();
        let task = tokio::spawn(async move {
            let _hb = l2.register("doomed", Duration::from_secs(3600));
            panic!("loop failed");
        });
        assert!(task.await.is_err());
        // Stale at once, long before its budget runs out.
        assert_eq!(live.stale(), vec!["doomed".to_string()]);
    }

    /// The watchdog pings while loops tick and falls silent once one stops.
    #[tokio::test(start_paused = true)]
    async fn watchdog_pings_only_while_loops_are_alive() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, path) = listener(&dir);
        sock.set_nonblocking(true).unwrap();
        let n = Notifier::connect(&path).unwrap();
        let live = Liveness::new();
        let hb = live.register("worker", Duration::from_secs(5));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let wd = tokio::spawn(run_watchdog(
            n,
            Duration::from_secs(10),
            live.clone(),
            async move {
                let _ = stop_rx.await;
            },
        ));
        let count = |sock: &UnixDatagram| {
            let mut buf = [0u8; 64];
            let mut pings = 0;
            while let Ok(k) = sock.recv(&mut buf) {
                assert_eq!(&buf[..k], b"WATCHDOG=1");
                pings += 1;
            }
            pings
        };
        // Alive: the loop ticks every second; pings every 5 s.
        for _ in 0..20 {
            hb.tick();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let alive_pings = count(&sock);
        assert!(alive_pings >= 3, "{alive_pings} pings while alive");
        // Stalled: no ticks for 30 s; at most the ping already due goes out.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(count(&sock) <= 1);
        // Back: pings resume.
        for _ in 0..12 {
            hb.tick();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(count(&sock) >= 1);
        stop_tx.send(()).unwrap();
        wd.await.unwrap();
    }
}
