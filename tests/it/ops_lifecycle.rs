//! The daemon as systemd runs it: the real binary, a notify socket, signals. READY=1 once it
//! serves, STOPPING=1 and exit 0 on SIGTERM, SIGHUP re-reads the API clients' tokens, and
//! secret files readable by others are warned about.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Generous bound for a debug build on a loaded 2-core machine; tests wait for events, this
/// only keeps a broken daemon from hanging the suite.
const PATIENCE: Duration = Duration::from_secs(60);

fn sha256_hex(s: &str) -> String {
    readerd::api::auth::token_sha256(s)
}

/// systemd's side of the notify protocol: a datagram socket in a temp dir.
pub(crate) struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    pub(crate) fn new(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket { sock, path }
    }

    /// Reads messages until one carries the assignment `want` (e.g. `READY=1`); returns that
    /// whole message. Panics when `child` exits first or after [`PATIENCE`].
    pub(crate) fn expect(&self, want: &str, child: &mut Child) -> String {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                    if msg.lines().any(|l| l == want) {
                        return msg;
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("notify socket: {e}"),
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("readerd exited ({status}) before sending {want}");
            }
            assert!(start.elapsed() < PATIENCE, "no {want} from readerd");
        }
    }
}

/// A config file, the secret key file and a store in a temp dir.
pub(crate) struct Setup {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
    key_file: PathBuf,
}

impl Setup {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("stripe-secret-key");
        std::fs::write(&key_file, "sk_test_ops_lifecycle\n").unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = dir.path().join("readerd.toml");
        let s = Setup {
            dir,
            config,
            key_file,
        };
        s.write_clients(&[("front-desk", "token-one")]);
        s
    }

    /// Rewrites the config with these API clients (admin role).
    fn write_clients(&self, clients: &[(&str, &str)]) {
        let mut text = format!(
            "[stripe]\n\
             # nothing listens here: these tests need no Stripe\n\
             api_base = \"http://127.0.0.1:9\"\n\
             secret_key_file = \"{}\"\n\
             [store]\npath = \"{}\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\n",
            self.key_file.display(),
            self.dir.path().join("store").display()
        );
        for (name, token) in clients {
            text.push_str(&format!(
                "[[api.clients]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\nrole = \"admin\"\n",
                sha256_hex(token)
            ));
        }
        std::fs::write(&self.config, text).unwrap();
    }

    pub(crate) fn spawn(&self, notify: &NotifySocket) -> Child {
        self.spawn_with(notify, &[])
    }

    fn spawn_with(&self, notify: &NotifySocket, env: &[(&str, &str)]) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_readerd"));
        cmd.env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(env.iter().copied());
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env("NOTIFY_SOCKET", &notify.path)
            .env_remove("READERD_STRIPE_SECRET_KEY")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// The API address from READY's `STATUS=… on ADDR` line.
pub(crate) fn api_addr(ready: &str) -> String {
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("READY without STATUS: {ready:?}"));
    status
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {status:?}"))
        .trim_end_matches([',', ';'])
        .to_string()
}

pub(crate) fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

/// SIGTERM, then the clean exit (status 0) that must follow; returns what it logged.
pub(crate) fn terminate(child: Child) -> String {
    signal(&child, "-TERM");
    let (status, logs) = finish(child);
    assert_eq!(status.code(), Some(0), "logs:\n{logs}");
    logs
}

/// Waits for the exit (bounded) and returns the status with everything it logged.
fn finish(mut child: Child) -> (ExitStatus, String) {
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("readerd did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    (status, logs)
}

async fn get_status(addr: &str, path: &str, token: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new().get(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn notifies_ready_when_serving_and_stopping_on_sigterm_then_exits_0() {
    let setup = Setup::new();
    let notify = NotifySocket::new(setup.dir.path());
    let mut child = setup.spawn(&notify);
    let ready = notify.expect("READY=1", &mut child);
    let addr = api_addr(&ready);
    // READY means the listener is bound and the store open: the API answers at once.
    assert_eq!(get_status(&addr, "/healthz", None).await, 200);
    assert_eq!(
        get_status(&addr, "/v1/readers", Some("token-one")).await,
        200
    );

    signal(&child, "-TERM");
    notify.expect("STOPPING=1", &mut child);
    let (status, logs) = finish(child);
    assert_eq!(status.code(), Some(0), "exit status; logs:\n{logs}");
    // journald-friendly: no colour codes when stderr is not a terminal.
    assert!(!logs.contains('\u{1b}'), "ANSI escapes in logs:\n{logs}");
    // The store was closed cleanly: a second daemon opens it.
    let mut again = setup.spawn(&notify);
    notify.expect("READY=1", &mut again);
    terminate(again);
}

#[tokio::test]
async fn sighup_reloads_api_tokens_without_a_restart() {
    let setup = Setup::new();
    setup.write_clients(&[("front-desk", "token-one"), ("back-office", "token-two")]);
    let notify = NotifySocket::new(setup.dir.path());
    let mut child = setup.spawn(&notify);
    let addr = api_addr(&notify.expect("READY=1", &mut child));
    assert_eq!(
        get_status(&addr, "/v1/readers", Some("token-one")).await,
        200
    );
    assert_eq!(
        get_status(&addr, "/v1/readers", Some("token-three")).await,
        401
    );

    // front-desk gets a new token, back-office leaves, kiosk arrives.
    setup.write_clients(&[
        ("front-desk", "token-one-rotated"),
        ("kiosk", "token-three"),
    ]);
    signal(&child, "-HUP");
    notify.expect("RELOADING=1", &mut child);
    notify.expect("READY=1", &mut child);

    assert_eq!(
        get_status(&addr, "/v1/readers", Some("token-three")).await,
        200
    );
    assert_eq!(
        get_status(&addr, "/v1/readers", Some("token-one-rotated")).await,
        200
    );
    assert_eq!(
        get_status(&addr, "/v1/readers", Some("token-one")).await,
        401
    );
    assert_eq!(
        get_status(&addr, "/v1/readers", Some("token-two")).await,
        401
    );

    // A config that no longer validates is refused; the clients in force stay.
    std::fs::write(&setup.config, "[api]\nlisen = 1\n").unwrap();
    signal(&child, "-HUP");
    notify.expect("RELOADING=1", &mut child);
    notify.expect("READY=1", &mut child);
    assert_eq!(
        get_status(&addr, "/v1/readers", Some("token-three")).await,
        200
    );

    let logs = terminate(child);
    // The log names what changed, never a token or its hash.
    let reload_line = logs
        .lines()
        .find(|l| l.contains("API clients reloaded"))
        .unwrap_or_else(|| panic!("no reload line in:\n{logs}"));
    for name in ["kiosk", "back-office", "front-desk"] {
        assert!(reload_line.contains(name), "{name} not in {reload_line}");
    }
    for secret in ["token-one", "token-two", "token-three"] {
        assert!(!logs.contains(secret), "{secret} logged");
        assert!(
            !logs.contains(&sha256_hex(secret)),
            "hash of {secret} logged"
        );
    }
    let refusal = logs
        .find("reload refused")
        .unwrap_or_else(|| panic!("no refusal in:\n{logs}"));
    assert!(
        logs[refusal..].contains("lisen"),
        "the refusal does not name the bad key:\n{logs}"
    );
}

#[tokio::test]
async fn a_secret_file_readable_by_others_is_warned_about() {
    let setup = Setup::new();
    std::fs::set_permissions(&setup.key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_readerd"))
        .args(["check-config", "--config"])
        .arg(&setup.config)
        .env_remove("READERD_STRIPE_SECRET_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains("readable by others") && stderr.contains("stripe-secret-key"),
        "no warning in: {stderr}"
    );
    std::fs::set_permissions(&setup.key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_readerd"))
        .args(["check-config", "--config"])
        .arg(&setup.config)
        .env_remove("READERD_STRIPE_SECRET_KEY")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("readable by others"));
}

/// SIGTERM while a payment is on the reader: the daemon drains and exits 0 without touching
/// the payment; the customer taps while it is down; the next start finds the authorisation
/// and finishes the payment once, on its one PaymentIntent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_payment_then_restart_finishes_it_once() {
    use readerd::stripe::wire::CapabilityStatus;
    use serde_json::{json, Value};

    let sim = readerd::sim::spawn(readerd::sim::SimConfig {
        auth_delay: Duration::ZERO,
        ..readerd::sim::SimConfig::default()
    })
    .await
    .unwrap();
    let account = sim.create_account("FR", "eur", CapabilityStatus::Active);
    let setup = Setup::new();
    std::fs::write(
        &setup.config,
        format!(
            "[stripe]\napi_base = \"{}\"\nsecret_key_file = \"{}\"\nmax_elapsed = \"5s\"\n\
             [store]\npath = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
             [[api.clients]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\nrole = \"admin\"\n\
             [[api.clients]]\nname = \"desk\"\ntoken_sha256 = \"{}\"\nrole = \"pos\"\nmerchants = [\"bakery\"]\n\
             [sync]\ninterval = \"1h\"\n\
             [payments]\npoll_min = \"20ms\"\npoll_max = \"100ms\"\n",
            sim.base_url(),
            setup.key_file.display(),
            setup.dir.path().join("store").display(),
            sha256_hex("admin-token"),
            sha256_hex("desk-token"),
        ),
    )
    .unwrap();
    let http = reqwest::Client::new();
    let call = |req: reqwest::RequestBuilder| async move {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    };
    let notify = NotifySocket::new(setup.dir.path());

    let mut first = setup.spawn(&notify);
    let addr = api_addr(&notify.expect("READY=1", &mut first));
    let admin_post = |path: &str, body: Value| {
        http.post(format!("http://{addr}{path}"))
            .bearer_auth("admin-token")
            .json(&body)
    };
    let (s, m) = call(admin_post(
        "/v1/merchants",
        json!({"id": "bakery", "account": account}),
    ))
    .await;
    assert_eq!(s, 201, "{m}");
    let (s, loc) = call(admin_post(
        "/v1/locations",
        json!({"display_name": "Shop", "address": {"line1": "1 rue", "city": "Paris", "postal_code": "75001", "country": "FR"}}),
    ))
    .await;
    assert_eq!(s, 201, "{loc}");
    let (s, reader) = call(admin_post(
        "/v1/readers",
        json!({"registration_code": "simulated-wpe", "label": "till", "location": loc["id"]}),
    ))
    .await;
    assert_eq!(s, 201, "{reader}");
    let reader = reader["id"].as_str().unwrap().to_string();
    let (s, p) = call(
        http.post(format!("http://{addr}/v1/payments"))
            .bearer_auth("desk-token")
            .header("Idempotency-Key", "order-1")
            .json(
                &json!({"merchant": "bakery", "reader": "till", "amount": 2500, "currency": "eur"}),
            ),
    )
    .await;
    assert_eq!(s, 201, "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    let wait = |addr: String, what: &'static str, f: fn(&Value) -> bool| {
        let http = http.clone();
        let id = id.clone();
        async move {
            let mut last = Value::Null;
            for _ in 0..1500 {
                let resp = http
                    .get(format!("http://{addr}/v1/payments/{id}"))
                    .bearer_auth("desk-token")
                    .send()
                    .await
                    .unwrap();
                let p: Value = resp.json().await.unwrap();
                if f(&p) {
                    return p;
                }
                last = p;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("payment never {what}: {last:#}");
        }
    };
    wait(addr.clone(), "on the reader", |p| {
        p["status"] == "processing" && p["waiting_for"] == "card"
    })
    .await;

    signal(&first, "-TERM");
    notify.expect("STOPPING=1", &mut first);
    let (status, logs) = finish(first);
    assert_eq!(status.code(), Some(0), "logs:\n{logs}");
    // The shutdown left the reader's action alone: the card dialogue is still up.
    sim.present_card(&reader, None)
        .expect("the reader still holds the payment after the shutdown");

    let mut second = setup.spawn(&notify);
    let addr = api_addr(&notify.expect("READY=1", &mut second));
    let done = wait(addr.clone(), "succeeded after the restart", |p| {
        p["status"] == "succeeded"
    })
    .await;
    assert_eq!(done["amount_captured"], 2500, "{done:#}");
    assert_eq!(sim.payment_intent_count(Some(&account)), 1);
    let statuses: Vec<&str> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "succeeded").count(),
        1,
        "{done:#}"
    );
    terminate(second);
}

/// Under `WatchdogSec=`, the real binary pings while its loops live; and `[log] format =
/// "json"` makes every log line a JSON object.
#[tokio::test]
async fn watchdog_pings_arrive_and_json_logs_are_json() {
    let setup = Setup::new();
    let mut text = std::fs::read_to_string(&setup.config).unwrap();
    text.push_str("[log]\nformat = \"json\"\n");
    std::fs::write(&setup.config, text).unwrap();
    let notify = NotifySocket::new(setup.dir.path());
    // systemd's WatchdogSec=1s: pings every half second.
    let mut child = setup.spawn_with(&notify, &[("WATCHDOG_USEC", "1000000")]);
    notify.expect("READY=1", &mut child);
    notify.expect("WATCHDOG=1", &mut child);
    notify.expect("WATCHDOG=1", &mut child);
    let logs = terminate(child);
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
}

/// Under systemd, a config without `secret_key_file` finds the key among the unit's
/// credentials (`LoadCredential=stripe-secret-key:…`).
#[test]
fn the_stripe_key_credential_is_found_without_a_path_in_the_config() {
    let setup = Setup::new();
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let without_path: String = text
        .lines()
        .filter(|l| !l.starts_with("secret_key_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&setup.config, without_path).unwrap();
    let check = |creds: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_readerd"));
        cmd.args(["check-config", "--config"])
            .arg(&setup.config)
            .env_remove("READERD_STRIPE_SECRET_KEY")
            .env_remove("CREDENTIALS_DIRECTORY");
        if let Some(dir) = creds {
            cmd.env("CREDENTIALS_DIRECTORY", dir);
        }
        cmd.output().unwrap()
    };
    assert_eq!(check(None).status.code(), Some(64));
    let creds = setup.dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::copy(&setup.key_file, creds.join("stripe-secret-key")).unwrap();
    let out = check(Some(&creds));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
