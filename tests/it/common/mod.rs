//! Helpers shared by the integration tests.
#![allow(dead_code)]

mod env;
pub mod pg;
pub mod sim_client;
mod stripe;
pub use env::*;
pub use stripe::*;

use std::path::PathBuf;

/// `../shared/stripe-fixtures`, or `None` (with the reason printed) when it is absent, so
/// that tests using Stripe's own objects skip instead of failing on a machine without them.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/stripe-fixtures");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: Stripe fixtures not found at {} (expected ../shared beside the repository)",
            dir.display()
        );
        None
    }
}

/// Everything the test binary logs through `tracing`, for tests that check what is (and is
/// never) logged. It is the binary's one global subscriber: a thread-scoped one
/// (`set_default`) can miss events whose callsites other tests registered first, and a
/// second global one cannot be installed, so tests read their logs here.
pub fn captured_logs() -> CapturedLogs {
    static LOGS: std::sync::OnceLock<CapturedLogs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = CapturedLogs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(logs.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("the test binary's only global subscriber");
        logs
    })
    .clone()
}

/// The captured log text (see [`captured_logs`]).
#[derive(Clone, Default)]
pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> CapturedLogs {
        self.clone()
    }
}

/// GET `url` and read the answer as JSON (any status; the tests check the body).
pub async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
) -> T {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// A port nobody listens on right now, for a child process to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The config file of a real `readerd run` that the process tests start (crash, inputs,
/// cluster): the emulator at `sim_url`, the `[store]` section's body `store`, the API on
/// loopback `api_port`, an admin client with token `admin` and a pos client `desk` with
/// token `pos` for `merchants`, fast polls, quiet logs, and any `extra` sections.
pub fn daemon_toml(
    sim_url: &str,
    store: &str,
    api_port: u16,
    (admin, pos): (&str, &str),
    merchants: &[&str],
    extra: &str,
) -> String {
    format!(
        r#"
[stripe]
api_base = "{sim_url}"
max_elapsed = "5s"

[store]
{store}

[api]
listen = "127.0.0.1:{api_port}"

[[api.clients]]
name = "admin"
token_sha256 = "{admin}"
role = "admin"

[[api.clients]]
name = "desk"
token_sha256 = "{pos}"
role = "pos"
merchants = {merchants:?}

[sync]
interval = "1h"

[payments]
poll_min = "20ms"
poll_max = "100ms"

[log]
level = "warn"
{extra}"#,
        admin = readerd::api::auth::token_sha256(admin),
        pos = readerd::api::auth::token_sha256(pos),
    )
}
