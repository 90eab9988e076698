//! [`TestEnv`]: the emulator and a whole daemon in-process, on loopback, with a temporary
//! store; plus helpers to call the daemon's API.
//!
//! ```ignore
//! let env = TestEnv::start().await;                       // admin + one pos per merchant
//! let acct = env.sim.create_account("FR", "eur", CapabilityStatus::Active);
//! let (status, body) = env.post(&env.admin_token, "/v1/merchants", json!({...})).await;
//! let env = TestEnv::builder().pos("desk", &["bakery", "florist"])
//!     .configure(|c| c.sync.interval = Duration::from_secs(5).into())
//!     .start().await;
//! ```

use readerd::config::{ClientEntry, Config, Role, Secrets, WebhookSecret};
use readerd::daemon::{Daemon, DaemonHandle};
use readerd::sim::{self, SimConfig, SimHandle};
use readerd::stripe::wire::CapabilityStatus;
use readerd::stripe::{ClientConfig, SecretKey, StripeClient};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The platform key the daemon uses against the emulator (any `sk_test_…` is the platform).
pub const SECRET_KEY: &str = "sk_test_readerd_tests";
/// The webhook signing secret configured for the daemon.
pub const WEBHOOK_SECRET: &str = "whsec_readerd_tests";
/// The admin client's token.
pub const ADMIN_TOKEN: &str = "admin-token";

type Configure = Box<dyn FnOnce(&mut Config) + Send>;

/// How to build a [`TestEnv`].
#[derive(Default)]
pub struct TestEnvBuilder {
    pos: Vec<(String, Vec<String>)>,
    configure: Vec<Configure>,
    sim_config: SimConfig,
}

impl TestEnvBuilder {
    /// Adds a pos client `name` (token `pos-<name>-token`) scoped to `merchants`. Without
    /// any, the env has `bakery` and `florist`, one client each, named after the merchant.
    pub fn pos(mut self, name: &str, merchants: &[&str]) -> Self {
        self.pos.push((
            name.to_string(),
            merchants.iter().map(|m| m.to_string()).collect(),
        ));
        self
    }

    /// Changes the daemon's config before it starts (also applied on every restart).
    pub fn configure(mut self, f: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.configure.push(Box::new(f));
        self
    }

    /// The emulator's settings.
    pub fn sim(mut self, config: SimConfig) -> Self {
        self.sim_config = config;
        self
    }

    pub async fn start(self) -> TestEnv {
        let sim = sim::spawn(self.sim_config).await.expect("emulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let store_path = dir.path().join("store");
        let pos = if self.pos.is_empty() {
            vec![
                ("bakery".to_string(), vec!["bakery".to_string()]),
                ("florist".to_string(), vec!["florist".to_string()]),
            ]
        } else {
            self.pos
        };
        let mut config = Config::default();
        config.stripe.api_base = sim.base_url();
        // Tests must not wait a minute for an unreachable Stripe.
        config.stripe.max_elapsed = Duration::from_secs(5).into();
        config.stripe.request_timeout = Duration::from_secs(10).into();
        config.store.path = store_path.clone();
        config.api.listen = "127.0.0.1:0".parse().unwrap();
        config.sync.interval = Duration::from_secs(3600).into();
        config.api.clients.push(ClientEntry {
            name: "admin".into(),
            token_sha256: readerd::api::auth::token_sha256(ADMIN_TOKEN),
            role: Role::Admin,
            merchants: vec![],
        });
        let mut pos_tokens = BTreeMap::new();
        for (name, merchants) in &pos {
            let token = format!("pos-{name}-token");
            config.api.clients.push(ClientEntry {
                name: name.clone(),
                token_sha256: readerd::api::auth::token_sha256(&token),
                role: Role::Pos,
                merchants: merchants.clone(),
            });
            pos_tokens.insert(name.clone(), token);
        }
        for f in self.configure {
            f(&mut config);
        }
        config.validate().expect("test config is valid");
        let mut env = TestEnv {
            sim,
            api_url: String::new(),
            admin_token: ADMIN_TOKEN.to_string(),
            pos_tokens,
            store_path,
            config,
            daemon: None,
            http: reqwest::Client::new(),
            _dir: dir,
        };
        env.start_daemon().await;
        env
    }
}

/// The emulator and a daemon, in-process.
pub struct TestEnv {
    pub sim: SimHandle,
    /// `http://127.0.0.1:PORT` of the daemon's API (changes on restart).
    pub api_url: String,
    pub admin_token: String,
    /// pos client name → token.
    pub pos_tokens: BTreeMap<String, String>,
    /// The registry's directory (kept across restarts).
    pub store_path: PathBuf,
    /// The daemon's config as started.
    pub config: Config,
    pub daemon: Option<DaemonHandle>,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl TestEnv {
    /// The emulator, a daemon with an admin client and pos clients `bakery` and `florist`.
    pub async fn start() -> TestEnv {
        TestEnvBuilder::default().start().await
    }

    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder::default()
    }

    /// The secrets the daemon runs with.
    pub fn secrets() -> Secrets {
        Secrets {
            stripe_key: SecretKey::new(SECRET_KEY),
            webhook_secret: Some(WebhookSecret::new(WEBHOOK_SECRET)),
        }
    }

    async fn start_daemon(&mut self) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let daemon = Daemon::new(self.config.clone(), Self::secrets());
        let handle = daemon.start(listener).await.expect("daemon starts");
        self.api_url = format!("http://{}", handle.addr);
        self.daemon = Some(handle);
        self.settle_start_up_sync().await;
    }

    /// Waits (bounded) until the daemon's start-up sync is over: it lists the platform and
    /// then every merchant's account, and tests that count Stripe requests must not see its
    /// tail.
    async fn settle_start_up_sync(&self) {
        let lists = |env: &TestEnv| {
            env.sim
                .requests()
                .iter()
                .filter(|q| q.method == "GET" && q.path == "/v1/terminal/readers")
                .count()
        };
        let before = lists(self);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        // The platform's list first...
        while lists(self) == before && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // ...then each merchant's, until the emulator goes quiet.
        let mut last = self.sim.requests().len();
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(40)).await;
            let now = self.sim.requests().len();
            if now == last {
                return;
            }
            last = now;
        }
    }

    /// Stops the daemon and starts a new one on the same store and config.
    pub async fn restart(&mut self) {
        self.stop_daemon().await;
        self.start_daemon().await;
    }

    /// Stops the daemon (the emulator keeps running).
    pub async fn stop_daemon(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop().await;
        }
    }

    /// The daemon's core services.
    pub fn state(&self) -> &readerd::api::AppState {
        &self.daemon.as_ref().expect("daemon running").state
    }

    /// The token of pos client `name`.
    pub fn pos(&self, name: &str) -> &str {
        self.pos_tokens
            .get(name)
            .unwrap_or_else(|| panic!("no pos client {name}"))
    }

    /// A Stripe client of the platform talking to the emulator directly (to act "on Stripe"
    /// behind the daemon's back).
    pub fn stripe(&self) -> StripeClient {
        StripeClient::new(ClientConfig::new(
            self.sim.base_url(),
            SecretKey::new(SECRET_KEY),
        ))
        .expect("client")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.api_url, path)
    }

    async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("API answers");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("API body is not JSON ({e}): {text}"))
        };
        (status, body)
    }

    /// `GET path` with a bearer token (`""` = none).
    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let mut req = self.http.get(self.url(path));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        Self::send(req).await
    }

    /// `POST path` with a JSON body and a bearer token (`""` = none).
    pub async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let mut req = self.http.post(self.url(path)).json(&body);
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        Self::send(req).await
    }

    /// `POST path` with raw bytes as `application/json`.
    pub async fn post_raw(
        &self,
        token: &str,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        Self::send(req).await
    }

    /// Creates an account on the emulator and adds it as merchant `id`; returns the account.
    pub async fn add_merchant(&self, id: &str, country: &str, currency: &str) -> String {
        let account = self
            .sim
            .create_account(country, currency, CapabilityStatus::Active);
        let (status, body) = self
            .post(
                &self.admin_token,
                "/v1/merchants",
                serde_json::json!({"id": id, "account": account, "display_name": id, "charge_type": "direct"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        account
    }

    /// Creates a location (optionally for a merchant) through the daemon; returns its id.
    pub async fn add_location(&self, name: &str, country: &str, merchant: Option<&str>) -> String {
        let mut body = serde_json::json!({
            "display_name": name,
            "address": {"line1": "1 Main St", "city": "Town", "postal_code": "10000", "country": country},
        });
        if let Some(m) = merchant {
            body["merchant"] = m.into();
        }
        let (status, body) = self.post(&self.admin_token, "/v1/locations", body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("location id").to_string()
    }

    /// Registers a simulated reader through the daemon; returns its id.
    pub async fn add_reader(&self, label: &str, location: &str) -> String {
        let (status, body) = self
            .post(
                &self.admin_token,
                "/v1/readers",
                serde_json::json!({"registration_code": "simulated-wpe", "label": label, "location": location}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("reader id").to_string()
    }

    /// Stops the daemon, then the emulator.
    pub async fn stop(mut self) {
        self.stop_daemon().await;
        self.sim.shutdown().await;
    }
}
