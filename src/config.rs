//! The daemon's configuration (TOML) and the secrets it points to.
//!
//! Every section denies unknown keys, and every value is checked before anything is bound
//! or opened: a bad config is exit 64 ([`EX_CONFIG`]) with the offending key named. Secrets
//! never live in the TOML itself: the Stripe key comes from `READERD_STRIPE_SECRET_KEY` or a
//! file (systemd credentials), and [`Secrets`] redacts itself in `Debug`.
//!
//! Every key and its default is documented in `config/readerd.example.toml`; keep the two in
//! step.
//!
//! Longer than 600 lines on purpose: every section with its defaults and its validation
//! side by side (the unit test that keeps the example file equal to the defaults reads
//! them all), so the file mirrors the example config section by section.

use crate::stripe::client::{ClientConfig, SecretKey, DEFAULT_STRIPE_VERSION};
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `sysexits.h` `EX_CONFIG`: the exit code for a bad configuration.
pub const EX_CONFIG: u8 = 64;

/// The environment variable that carries the Stripe secret key (it wins over
/// `stripe.secret_key_file`).
pub const SECRET_KEY_ENV: &str = "READERD_STRIPE_SECRET_KEY";

/// Why a configuration was refused. `Display` names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {message}")]
    Read { path: String, message: String },
    /// TOML syntax, unknown keys, wrong types (toml's message names the key and the line).
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    /// A value that parses but is not acceptable.
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
    /// A secret that is missing or unreadable.
    #[error("secret for `{key}`: {message}")]
    Secret { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A duration written the humantime way (`"30s"`, `"10m"`, `"1h 30m"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?} ({e}); write e.g. \"30s\", \"10m\", \"1h\""
                ))
            })
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        HumanDuration(d)
    }
}

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub stripe: StripeConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub merchants: MerchantsConfig,
    #[serde(default)]
    pub payments: PaymentsConfig,
    #[serde(default)]
    pub log: LogConfig,
}

/// `[stripe]`: where Stripe is and how to talk to it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeConfig {
    /// `https://api.stripe.com`, or a `readerd sim` address.
    pub api_base: String,
    /// A file holding the secret key (used when the environment variable is unset).
    pub secret_key_file: Option<PathBuf>,
    /// A file holding the webhook signing secret; enables `POST /webhooks/stripe`.
    pub webhook_secret_file: Option<PathBuf>,
    pub stripe_version: String,
    /// `None`: follows the key's mode ([`crate::stripe::client::default_requests_per_second`]).
    pub requests_per_second: Option<u32>,
    pub max_attempts: u32,
    pub max_elapsed: HumanDuration,
    pub connect_timeout: HumanDuration,
    pub request_timeout: HumanDuration,
    pub reader_timeout: HumanDuration,
}

impl Default for StripeConfig {
    fn default() -> Self {
        let d = ClientConfig::new("https://api.stripe.com", SecretKey::new(""));
        StripeConfig {
            api_base: d.api_base,
            secret_key_file: None,
            webhook_secret_file: None,
            stripe_version: DEFAULT_STRIPE_VERSION.to_string(),
            requests_per_second: None,
            max_attempts: d.max_attempts,
            max_elapsed: d.max_elapsed.into(),
            connect_timeout: d.connect_timeout.into(),
            request_timeout: d.request_timeout.into(),
            reader_timeout: d.reader_timeout.into(),
        }
    }
}

/// `[store]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sled` (one machine) or `postgres` (shared by several instances).
    pub backend: StoreBackend,
    /// The sled registry's directory.
    pub path: PathBuf,
    /// The PostgreSQL connection URL, when it holds no password.
    pub url: Option<DatabaseUrl>,
    /// A file holding the PostgreSQL connection URL (one that holds a password).
    pub url_file: Option<PathBuf>,
    /// sled's page cache, MiB (its own default, 1 GiB, would let the daemon's memory grow
    /// with its history). 16 keeps a store of a million payments under 200 MB through
    /// thousands of list calls (docs/BENCHMARKS.md); the pages did not slow down.
    pub cache_mb: u64,
    /// Final payments created longer ago than this are moved from the live store to a daily
    /// export file under `archive_dir`; absent = keep everything.
    pub keep_final: Option<HumanDuration>,
    /// Where archived payments go (`payments-YYYY-MM-DD.jsonl`, by creation day, UTC).
    pub archive_dir: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sled,
            path: PathBuf::from("/var/lib/readerd"),
            url: None,
            url_file: None,
            cache_mb: 16,
            keep_final: None,
            archive_dir: None,
        }
    }
}

/// `store.backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Sled,
    Postgres,
}

/// A PostgreSQL URL; its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", crate::store::redact_url(&self.0))
    }
}

impl StoreConfig {
    /// Where the registry lives; reads `url_file` for PostgreSQL.
    pub fn location(&self) -> Result<crate::store::Location, ConfigError> {
        match self.backend {
            StoreBackend::Sled => Ok(crate::store::Location::Sled(self.path.clone())),
            StoreBackend::Postgres => {
                let url = match (&self.url, &self.url_file) {
                    (Some(u), None) => u.0.clone(),
                    (None, Some(file)) => std::fs::read_to_string(file)
                        .map_err(|e| {
                            ConfigError::invalid(
                                "store.url_file",
                                format!("cannot read {}: {e}", file.display()),
                            )
                        })?
                        .trim()
                        .to_string(),
                    _ => {
                        return Err(ConfigError::invalid(
                            "store.url",
                            "backend \"postgres\" needs exactly one of url and url_file",
                        ))
                    }
                };
                if let Err(e) = crate::store::check_url(&url) {
                    let key = if self.url.is_some() {
                        "store.url"
                    } else {
                        "store.url_file"
                    };
                    return Err(ConfigError::invalid(
                        key,
                        format!("not a PostgreSQL connection URL: {e}"),
                    ));
                }
                Ok(crate::store::Location::Postgres(url))
            }
        }
    }
}

/// `[cluster]`: several instances on one PostgreSQL store.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This instance's name among those sharing the store; unset = the host name.
    pub instance: Option<String>,
    /// How long a reader's lease lasts without renewal: the longest a reader waits for a
    /// new owner after its instance dies (plus one renewal).
    pub lease_ttl: HumanDuration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            instance: None,
            lease_ttl: Duration::from_secs(10).into(),
        }
    }
}

impl ClusterConfig {
    /// The instance name: the configured one, or the host name.
    pub fn instance_name(&self) -> String {
        if let Some(i) = &self.instance {
            return i.clone();
        }
        static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        HOST.get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "readerd".to_string())
        })
        .clone()
    }
}

/// `[api]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Larger request bodies are refused with 400.
    pub max_body_bytes: usize,
    pub clients: Vec<ClientEntry>,
    /// `[api.tls]`: HTTPS on `listen` (plain HTTP without it).
    pub tls: Option<ApiTls>,
}

/// `[api.tls]`: the API's certificate and key (PEM) and, optionally, the CA that signs the
/// certificates clients must present (in addition to their bearer token). The files are
/// checked when the config is (`check-config`, start, reload): see `api::tls`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiTls {
    /// The certificate chain, the server's own certificate first.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Client certificates must be signed by one of these CAs.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// The default API address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            max_body_bytes: 64 * 1024,
            clients: Vec::new(),
            tls: None,
        }
    }
}

/// What an API client may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A point of sale: charges and sees its own merchants only.
    Pos,
    /// An operator: everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Pos => "pos",
            Role::Admin => "admin",
        }
    }
}

/// `[[api.clients]]`: one bearer token.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    pub name: String,
    /// Lowercase hex SHA-256 of the bearer token (the token itself is never configured).
    pub token_sha256: String,
    pub role: Role,
    /// pos: the merchants this client may charge and see. Ignored for admin.
    #[serde(default)]
    pub merchants: Vec<String>,
}

/// `[sync]`: the background pull of locations and readers from Stripe.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Time between two syncs (each costs two list reads, more with over 100 objects).
    pub interval: HumanDuration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            interval: Duration::from_secs(600).into(),
        }
    }
}

/// `[merchants]`: periodic re-check of the connected accounts.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MerchantsConfig {
    /// Time between two re-checks of every merchant's account (one read per merchant).
    pub recheck_interval: HumanDuration,
}

impl Default for MerchantsConfig {
    fn default() -> Self {
        MerchantsConfig {
            recheck_interval: Duration::from_secs(3600).into(),
        }
    }
}

/// `[payments]`: the per-reader queues and the flow's waits and deadlines.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsConfig {
    /// Payments and displays that may wait for one reader; more are refused with 429.
    pub queue_capacity: usize,
    /// Fastest reader poll while an action is in progress (it slows to `poll_max`).
    pub poll_min: HumanDuration,
    pub poll_max: HumanDuration,
    /// No sign of life from the reader this long after a dispatch: reported as not
    /// picked up.
    pub pickup_timeout: HumanDuration,
    /// An action still in progress after this long is cancelled; the PaymentIntent decides.
    pub action_deadline: HumanDuration,
    /// How long to wait for someone else's action on a reader before failing `reader_busy`.
    pub busy_wait: HumanDuration,
    /// How long to wait for an offline reader before failing `reader_offline`.
    pub offline_wait: HumanDuration,
    /// A reviewed payment not confirmed this long after its card was read is canceled,
    /// and its reader freed.
    pub review_timeout: HumanDuration,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        let e = crate::payments::EngineConfig::default();
        PaymentsConfig {
            queue_capacity: e.queue_capacity,
            poll_min: e.poll_min.into(),
            poll_max: e.poll_max.into(),
            pickup_timeout: e.pickup_timeout.into(),
            action_deadline: e.action_deadline.into(),
            busy_wait: e.busy_wait.into(),
            offline_wait: e.offline_wait.into(),
            review_timeout: e.review_timeout.into(),
        }
    }
}

impl PaymentsConfig {
    /// The engine's settings.
    pub fn engine(&self) -> crate::payments::EngineConfig {
        crate::payments::EngineConfig {
            queue_capacity: self.queue_capacity,
            poll_min: self.poll_min.0,
            poll_max: self.poll_max.0,
            pickup_timeout: self.pickup_timeout.0,
            action_deadline: self.action_deadline.0,
            busy_wait: self.busy_wait.0,
            offline_wait: self.offline_wait.0,
            // The batched reader poll follows the poll settings: a lone reader's list every
            // 2.5 × poll_max (5 s by default), never faster than poll_max (at most 1 s).
            list_poll: self.poll_max.0.min(std::time::Duration::from_secs(1)),
            list_poll_alone: (self.poll_max.0 * 5 / 2).min(std::time::Duration::from_secs(5)),
            review_timeout: self.review_timeout.0,
            ..crate::payments::EngineConfig::default()
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `readerd=debug,info`. `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_string(),
        }
    }
}

impl Config {
    /// The sections (or keys) that differ between `self`, the config in force, and `new`,
    /// other than `[[api.clients]]`, which a reload applies: these need a restart.
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        // Every section derives `Debug` and holds no secret (only paths to them), so
        // comparing their `Debug` forms compares their values.
        let same =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
        let mut out = Vec::new();
        if !same(&self.stripe, &new.stripe) {
            out.push("stripe");
        }
        if !same(&self.store, &new.store) {
            out.push("store");
        }
        if !same(&self.cluster, &new.cluster) {
            out.push("cluster");
        }
        if self.api.listen != new.api.listen {
            out.push("api.listen");
        }
        if self.api.max_body_bytes != new.api.max_body_bytes {
            out.push("api.max_body_bytes");
        }
        // A reload re-reads the TLS files (and takes new paths); only turning TLS on or
        // off needs a new listener.
        if self.api.tls.is_some() != new.api.tls.is_some() {
            out.push("api.tls");
        }
        if !same(&self.sync, &new.sync) {
            out.push("sync");
        }
        if !same(&self.merchants, &new.merchants) {
            out.push("merchants");
        }
        if !same(&self.payments, &new.payments) {
            out.push("payments");
        }
        if !same(&self.log, &new.log) {
            out.push("log");
        }
        out
    }

    /// Warnings about secret files that others can read (group or world bits set): a
    /// Stripe key readable by any local user is a key anyone on the machine can use.
    pub fn secret_warnings(&self) -> Vec<String> {
        let files = [
            ("stripe.secret_key_file", &self.stripe.secret_key_file),
            (
                "stripe.webhook_secret_file",
                &self.stripe.webhook_secret_file,
            ),
        ];
        files
            .into_iter()
            .filter_map(|(key, path)| {
                let path = path.as_ref()?;
                let mode = secret_file_mode(path)?;
                (mode & 0o044 != 0).then(|| {
                    format!(
                        "warning: {key} {} is readable by others (mode {:o}); chmod 600 it, or use systemd credentials",
                        path.display(),
                        mode & 0o777
                    )
                })
            })
            .collect()
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".into(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that parse but may still be wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.stripe;
        let base = s.api_base.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) || base.len() < 9 {
            return Err(ConfigError::invalid(
                "stripe.api_base",
                format!("{:?} is not an http(s) URL", s.api_base),
            ));
        }
        if s.stripe_version.trim().is_empty() {
            return Err(ConfigError::invalid(
                "stripe.stripe_version",
                "must not be empty",
            ));
        }
        if s.requests_per_second == Some(0) {
            return Err(ConfigError::invalid(
                "stripe.requests_per_second",
                "must be at least 1",
            ));
        }
        if s.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "stripe.max_attempts",
                "must be at least 1",
            ));
        }
        for (key, d) in [
            ("stripe.max_elapsed", s.max_elapsed),
            ("stripe.connect_timeout", s.connect_timeout),
            ("stripe.request_timeout", s.request_timeout),
            ("stripe.reader_timeout", s.reader_timeout),
            ("sync.interval", self.sync.interval),
            (
                "merchants.recheck_interval",
                self.merchants.recheck_interval,
            ),
        ] {
            if d.0.is_zero() {
                return Err(ConfigError::invalid(key, "must be longer than zero"));
            }
        }
        if self.store.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("store.path", "must not be empty"));
        }
        if self.store.backend == StoreBackend::Postgres {
            self.store.location()?;
        } else if self.store.url.is_some() || self.store.url_file.is_some() {
            return Err(ConfigError::invalid(
                "store.backend",
                "url and url_file are for backend = \"postgres\"",
            ));
        }
        if let Some(name) = &self.cluster.instance {
            let ok = !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                return Err(ConfigError::invalid(
                    "cluster.instance",
                    "1 to 63 letters, digits, '-', '_' or '.'",
                ));
            }
        }
        if self.cluster.lease_ttl.0 < Duration::from_secs(2) {
            return Err(ConfigError::invalid(
                "cluster.lease_ttl",
                "must be at least 2s",
            ));
        }
        if self.store.cache_mb < 8 {
            return Err(ConfigError::invalid("store.cache_mb", "must be at least 8"));
        }
        if let Some(k) = self.store.keep_final {
            if k.0 < Duration::from_secs(86_400) {
                return Err(ConfigError::invalid(
                    "store.keep_final",
                    "must be at least one day (\"1d\")",
                ));
            }
            if self.store.archive_dir.is_none() {
                return Err(ConfigError::invalid(
                    "store.archive_dir",
                    "must be set when store.keep_final is: archived payments are written there",
                ));
            }
        }
        if self.api.max_body_bytes < 256 {
            return Err(ConfigError::invalid(
                "api.max_body_bytes",
                "must be at least 256",
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut hashes = std::collections::HashSet::new();
        for (i, c) in self.api.clients.iter().enumerate() {
            let key = |k: &str| format!("api.clients[{i}].{k}");
            if c.name.trim().is_empty() {
                return Err(ConfigError::invalid(key("name"), "must not be empty"));
            }
            if !names.insert(c.name.as_str()) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!("{:?} is used by two clients", c.name),
                ));
            }
            let h = &c.token_sha256;
            if h.len() != 64 || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(ConfigError::invalid(
                    key("token_sha256"),
                    "must be 64 lowercase hex digits (sha256 of the token, e.g. `printf %s TOKEN | sha256sum`)",
                ));
            }
            if !hashes.insert(h.as_str()) {
                return Err(ConfigError::invalid(
                    key("token_sha256"),
                    "the same token is configured for two clients",
                ));
            }
            match c.role {
                Role::Pos if c.merchants.is_empty() => {
                    return Err(ConfigError::invalid(
                        key("merchants"),
                        "a pos client needs at least one merchant",
                    ))
                }
                Role::Admin if !c.merchants.is_empty() => {
                    return Err(ConfigError::invalid(
                        key("merchants"),
                        "an admin client sees every merchant; remove `merchants`",
                    ))
                }
                _ => {}
            }
            if let Some(m) = c
                .merchants
                .iter()
                .find(|m| crate::fleet::validate_merchant_id(m).is_err())
            {
                return Err(ConfigError::invalid(
                    key("merchants"),
                    format!("{m:?} is not a merchant id (letters, digits, '-', '_'; at most 64)"),
                ));
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::invalid(
                "log.level",
                format!("{:?}: {e}", self.log.level),
            ));
        }
        Ok(())
    }

    /// Reads the secrets this config points to (environment or files). Under systemd, when
    /// neither the environment variable nor `stripe.secret_key_file` is set, the credential
    /// `stripe-secret-key` (`LoadCredential=`, in `$CREDENTIALS_DIRECTORY`) is used.
    pub fn load_secrets(&self) -> Result<Secrets, ConfigError> {
        let env_key = std::env::var(SECRET_KEY_ENV).ok();
        if env_key.is_none() && self.stripe.secret_key_file.is_none() {
            if let Some(file) = credential_file("stripe-secret-key") {
                let mut with_credential = self.clone();
                with_credential.stripe.secret_key_file = Some(file);
                return with_credential.load_secrets_with(None);
            }
        }
        self.load_secrets_with(env_key)
    }

    /// As [`Config::load_secrets`], with the environment variable's value given.
    pub fn load_secrets_with(&self, env_key: Option<String>) -> Result<Secrets, ConfigError> {
        let from_file = match &self.stripe.secret_key_file {
            Some(p) => Some(read_secret_file("stripe.secret_key_file", p)?),
            None => None,
        };
        let key = match (env_key.filter(|k| !k.trim().is_empty()), from_file) {
            (Some(k), _) => (k.trim().to_string(), SECRET_KEY_ENV.to_string()),
            (None, Some(k)) => (k, "stripe.secret_key_file".to_string()),
            (None, None) => {
                return Err(ConfigError::Secret {
                    key: "stripe.secret_key_file".into(),
                    message: format!(
                        "no Stripe secret key: set {SECRET_KEY_ENV} or stripe.secret_key_file"
                    ),
                })
            }
        };
        if !(key.0.starts_with("sk_") || key.0.starts_with("rk_")) {
            return Err(ConfigError::Secret {
                key: key.1,
                message: "does not look like a Stripe secret key (sk_… or rk_…)".into(),
            });
        }
        let webhook_secret = match &self.stripe.webhook_secret_file {
            Some(p) => Some(WebhookSecret::from_lines(&read_secret_file(
                "stripe.webhook_secret_file",
                p,
            )?)),
            None => None,
        };
        Ok(Secrets {
            stripe_key: SecretKey::new(key.0),
            webhook_secret,
        })
    }

    /// The Stripe client's settings.
    pub fn client_config(&self, key: SecretKey) -> ClientConfig {
        let s = &self.stripe;
        let mut c = ClientConfig::new(s.api_base.trim_end_matches('/'), key);
        c.stripe_version = s.stripe_version.clone();
        if let Some(rps) = s.requests_per_second {
            c.requests_per_second = rps;
        }
        c.max_attempts = s.max_attempts;
        c.max_elapsed = s.max_elapsed.0;
        c.connect_timeout = s.connect_timeout.0;
        c.request_timeout = s.request_timeout.0;
        c.reader_timeout = s.reader_timeout.0;
        c
    }
}

/// A systemd credential of this unit, when it has one by that name.
fn credential_file(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let file = Path::new(&dir).join(name);
    file.is_file().then_some(file)
}

#[cfg(unix)]
fn secret_file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).ok().map(|m| m.permissions().mode())
}

#[cfg(not(unix))]
fn secret_file_mode(_path: &Path) -> Option<u32> {
    None
}

fn read_secret_file(key: &str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Secret {
        key: key.to_string(),
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(ConfigError::Secret {
            key: key.to_string(),
            message: format!("{} is empty", path.display()),
        });
    }
    Ok(text)
}

/// The webhook signing secrets (`whsec_…`). `Debug` never shows them.
///
/// Stripe signs each webhook endpoint with its own secret, and a platform usually has two
/// endpoints: its account endpoint (the platform's `terminal.reader.*` events) and its
/// Connect endpoint (`payment_intent.*` events of connected accounts). The secret file
/// therefore holds one secret per line; an event signed with any of them is accepted.
#[derive(Clone)]
pub struct WebhookSecret(Vec<String>);

impl WebhookSecret {
    /// One secret.
    pub fn new(s: impl Into<String>) -> Self {
        WebhookSecret(vec![s.into()])
    }
    /// Every non-empty line of a secret file, trimmed.
    pub fn from_lines(text: &str) -> Self {
        WebhookSecret(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }
    /// The secrets themselves, for signature verification only.
    pub fn expose(&self) -> &[String] {
        &self.0
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The secrets read at start-up.
#[derive(Clone, Debug)]
pub struct Secrets {
    pub stripe_key: SecretKey,
    pub webhook_secret: Option<WebhookSecret>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn webhook_secret_file_holds_one_secret_per_line() {
        let s = WebhookSecret::from_lines("whsec_account\n\n  whsec_connect  \n");
        assert_eq!(s.expose(), ["whsec_account", "whsec_connect"]);
        assert!(!format!("{s:?}").contains("whsec"));
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.api.listen.to_string(), "127.0.0.1:7700");
        assert_eq!(c.stripe.api_base, "https://api.stripe.com");
        assert_eq!(c.store.path, PathBuf::from("/var/lib/readerd"));
        assert_eq!(c.sync.interval.0, Duration::from_secs(600));
        assert_eq!(c.merchants.recheck_interval.0, Duration::from_secs(3600));
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.api.max_body_bytes, 65536);
    }

    #[test]
    fn the_request_budget_follows_the_key_mode_unless_set() {
        let c = Config::default();
        let live = c.client_config(SecretKey::new("sk_live_x"));
        let test = c.client_config(SecretKey::new("sk_test_x"));
        // Under Stripe's 100/s live and 25/s test, with a margin.
        assert_eq!(live.requests_per_second, 90);
        assert_eq!(test.requests_per_second, 20);
        let set = Config::parse("[stripe]\nrequests_per_second = 7\n").unwrap();
        assert_eq!(
            set.client_config(SecretKey::new("sk_live_x"))
                .requests_per_second,
            7
        );
    }

    #[test]
    fn example_file_states_the_defaults() {
        let example = Config::parse(include_str!("../config/readerd.example.toml")).unwrap();
        assert_eq!(format!("{example:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn full_file_parses() {
        let c = Config::parse(&format!(
            r#"
            [stripe]
            api_base = "http://127.0.0.1:12111"
            secret_key_file = "/run/k"
            request_timeout = "10s"
            [store]
            path = "/tmp/x"
            [api]
            listen = "0.0.0.0:8000"
            [[api.clients]]
            name = "front-desk"
            token_sha256 = "{HASH}"
            role = "pos"
            merchants = ["bakery"]
            [[api.clients]]
            name = "ops"
            token_sha256 = "{}"
            role = "admin"
            [sync]
            interval = "5m"
            [log]
            format = "json"
            level = "readerd=debug,info"
            "#,
            "a".repeat(64)
        ))
        .unwrap();
        assert_eq!(c.api.clients.len(), 2);
        assert_eq!(c.api.clients[0].role, Role::Pos);
        assert_eq!(c.stripe.request_timeout.0, Duration::from_secs(10));
        assert_eq!(c.sync.interval.0, Duration::from_secs(300));
        assert_eq!(
            c.client_config(SecretKey::new("sk_test_x")).api_base,
            "http://127.0.0.1:12111"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        assert!(err("[api]\nlisen = \"1.2.3.4:5\"").contains("lisen"));
        assert!(err("[nope]\n").contains("nope"));
        assert!(err("[stripe]\nsecret_key = \"sk_test_x\"").contains("secret_key"));
        let e = err(&format!(
            "[[api.clients]]\nname=\"a\"\ntoken_sha256=\"{HASH}\"\nrole=\"admin\"\ncolour=1"
        ));
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        assert!(err("[api]\nlisten = \"nowhere\"").contains("listen"));
        assert!(err("[sync]\ninterval = \"soon\"").contains("interval"));
        assert!(err("[sync]\ninterval = \"0s\"").contains("sync.interval"));
        assert!(err("[stripe]\napi_base = \"ftp://x\"").contains("stripe.api_base"));
        assert!(err("[log]\nformat = \"xml\"").contains("format"));
        let e = err("[[api.clients]]\nname=\"a\"\ntoken_sha256=\"ABC\"\nrole=\"admin\"");
        assert!(e.contains("api.clients[0].token_sha256"), "{e}");
        let e = err(&format!(
            "[[api.clients]]\nname=\"a\"\ntoken_sha256=\"{}\"\nrole=\"admin\"",
            HASH.to_uppercase()
        ));
        assert!(e.contains("lowercase"), "{e}");
        let e = err(&format!(
            "[[api.clients]]\nname=\"a\"\ntoken_sha256=\"{HASH}\"\nrole=\"root\""
        ));
        assert!(e.contains("role"), "{e}");
        let e = err(&format!(
            "[[api.clients]]\nname=\"a\"\ntoken_sha256=\"{HASH}\"\nrole=\"pos\""
        ));
        assert!(e.contains("api.clients[0].merchants"), "{e}");
        let e = err(&format!(
            "[[api.clients]]\nname=\"a\"\ntoken_sha256=\"{HASH}\"\nrole=\"admin\"\n[[api.clients]]\nname=\"b\"\ntoken_sha256=\"{HASH}\"\nrole=\"admin\""
        ));
        assert!(e.contains("api.clients[1].token_sha256"), "{e}");
    }

    #[test]
    fn a_reload_names_what_needs_a_restart_but_not_the_clients() {
        let old = Config::parse("").unwrap();
        let new = Config::parse(&format!(
            "[api]\nlisten = \"127.0.0.1:7800\"\n[[api.clients]]\nname = \"a\"\ntoken_sha256 = \"{HASH}\"\nrole = \"admin\"\n[log]\nformat = \"json\"\n"
        ))
        .unwrap();
        assert_eq!(old.restart_needed(&new), vec!["api.listen", "log"]);
        let clients_only = Config::parse(&format!(
            "[[api.clients]]\nname = \"a\"\ntoken_sha256 = \"{HASH}\"\nrole = \"admin\"\n"
        ))
        .unwrap();
        assert!(old.restart_needed(&clients_only).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_readable_by_others_are_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "sk_test_x").unwrap();
        let mut c = Config::default();
        c.stripe.secret_key_file = Some(key.clone());
        for (mode, warned) in [(0o600, false), (0o400, false), (0o640, true), (0o604, true)] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let w = c.secret_warnings();
            assert_eq!(w.len(), usize::from(warned), "mode {mode:o}: {w:?}");
            if warned {
                assert!(w[0].contains("stripe.secret_key_file") && !w[0].contains("sk_test"));
            }
        }
    }

    #[test]
    fn secrets_come_from_env_or_file_and_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "sk_test_fromfile\n").unwrap();
        let mut c = Config::default();
        assert!(c.load_secrets_with(None).is_err());
        c.stripe.secret_key_file = Some(key.clone());
        let s = c.load_secrets_with(None).unwrap();
        assert_eq!(s.stripe_key.expose(), "sk_test_fromfile");
        let s = c.load_secrets_with(Some("sk_test_env".into())).unwrap();
        assert_eq!(s.stripe_key.expose(), "sk_test_env");
        assert!(!format!("{s:?}").contains("sk_test"));
        c.stripe.webhook_secret_file = Some(dir.path().join("missing"));
        let e = c.load_secrets_with(None).unwrap_err().to_string();
        assert!(e.contains("stripe.webhook_secret_file"), "{e}");
        std::fs::write(&key, "pk_test_wrong").unwrap();
        c.stripe.webhook_secret_file = None;
        assert!(c.load_secrets_with(None).is_err());
    }
}
