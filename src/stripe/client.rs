//! The Stripe client: transport, retries, rate limiting and one method per endpoint.
//!
//! Every call goes through one private `execute` loop: wait for a permit from the client-side
//! rate limiter, send one attempt, classify a failure with [`super::error::classify`], and
//! retry with exponential backoff and jitter while the rule allows, always with the caller's
//! own idempotency key. The client never invents an idempotency key: a key the caller did
//! not persist could not be repeated after a crash.
//!
//! Time is read from `tokio::time` everywhere (backoff elapsed time, the limiter's clock,
//! sleeps), so tests run under tokio's paused clock.
//!
//! What a returned error means for the caller (the retries are already spent):
//! - [`Disposition::Definitive`]: Stripe decided (a decline, `terminal_reader_busy`,
//!   `terminal_reader_timeout`, `resource_missing`, …); act on the code.
//! - [`Disposition::Transient`] / [`Disposition::RateLimited`]: the request did not take
//!   effect, or may be replayed safely with the same key; try again later with the SAME key.
//!   Exception: a 5xx on a POST sent without a key is returned at once and may have taken
//!   effect: reconcile, as for an unknown outcome.
//! - [`Disposition::OutcomeUnknown`]: the request may have been carried out (timeout or
//!   connection lost after sending, or a 2xx whose body was unreadable). Reconcile by
//!   reading the object (reader action, PaymentIntent), never by sending a new key blindly.
//!
//! Longer than 600 lines on purpose: one short method per endpoint over the one `execute`
//! loop, so that every request goes through the same limiter, retry rule and logging, and
//! a reader sees all of Stripe that readerd touches on one page.

use super::budget::{Budget, Priority};
use super::error::{classify, retry_allowed, Disposition, StripeError};
use super::form::Params;
use super::params::*;
use super::wire::*;
use backoff::backoff::Backoff;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Method;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// The platform's secret key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn new(key: impl Into<String>) -> Self {
        SecretKey(key.into())
    }
    /// The key itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// The client's settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `https://api.stripe.com`, or an emulator's address.
    pub api_base: String,
    pub secret_key: SecretKey,
    /// The pinned `Stripe-Version`.
    pub stripe_version: String,
    /// The one budget of the daemon's Stripe requests, per second: by default
    /// [`default_requests_per_second`] of the key's mode.
    pub requests_per_second: u32,
    /// Attempts per logical request, the first included.
    pub max_attempts: u32,
    /// Upper bound on the time spent retrying one logical request.
    pub max_elapsed: Duration,
    pub connect_timeout: Duration,
    /// Ordinary calls.
    pub request_timeout: Duration,
    /// Reader commands (the reader acknowledges slowly).
    pub reader_timeout: Duration,
}

/// The pinned API version.
pub const DEFAULT_STRIPE_VERSION: &str = "2026-07-29.dahlia";

impl ClientConfig {
    /// Defaults for everything but the base and the key.
    pub fn new(api_base: impl Into<String>, secret_key: SecretKey) -> Self {
        let requests_per_second = default_requests_per_second(&secret_key);
        ClientConfig {
            api_base: api_base.into(),
            secret_key,
            stripe_version: DEFAULT_STRIPE_VERSION.to_string(),
            requests_per_second,
            max_attempts: 4,
            max_elapsed: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            reader_timeout: Duration::from_secs(80),
        }
    }
}

/// Per-request options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// `Stripe-Account`: act on this connected account. `None` = the platform.
    pub account: Option<String>,
    /// `Idempotency-Key` for POSTs. Supplied by the caller, who persisted it first; the
    /// client never invents one. Ignored on GET and DELETE.
    pub idempotency_key: Option<String>,
}

impl RequestOptions {
    /// The platform, no idempotency key.
    pub fn platform() -> Self {
        Self::default()
    }
    /// On a connected account.
    pub fn account(account: impl Into<String>) -> Self {
        RequestOptions {
            account: Some(account.into()),
            idempotency_key: None,
        }
    }
    /// With an idempotency key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// What one attempt looked like, for metrics. Never carries the key.
#[derive(Clone, Debug)]
pub struct AttemptRecord<'a> {
    /// `GET`, `POST` or `DELETE`.
    pub method: &'a str,
    /// The endpoint with its ids as placeholders (`/v1/terminal/readers/{id}`): a label of
    /// low cardinality.
    pub endpoint: &'static str,
    /// The path actually requested.
    pub path: &'a str,
    /// `Stripe-Account`, when sent.
    pub account: Option<&'a str>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The HTTP status, when a response came back.
    pub status: Option<u16>,
    pub latency: Duration,
    pub request_id: Option<&'a str>,
    /// `None` on success; the classification of the failure otherwise.
    pub failure: Option<Disposition>,
    /// The answer held an object of the other mode than the key's, and was refused.
    pub wrong_mode: bool,
}

/// Counts a request as under way until dropped (also when the request's future is dropped).
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a std::sync::atomic::AtomicUsize) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A hook told about every attempt (for metrics). Must not block.
pub trait RequestObserver: Send + Sync + 'static {
    fn on_attempt(&self, record: &AttemptRecord<'_>);
    /// A request waited `waited` for the client-side rate limiter before its attempt.
    fn on_rate_limit_wait(&self, _waited: Duration) {}
}

/// The backoff's clock: tokio's, for the same reason.
#[derive(Clone, Debug, Default)]
struct TokioBackoffClock;

impl backoff::Clock for TokioBackoffClock {
    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// First retry waits about this long (±50 % jitter), doubling up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// A limiter said no: wait at least this long before trying again.
const RATE_LIMITED_MIN_WAIT: Duration = Duration::from_secs(1);
/// Items per page when listing (Stripe's maximum).
const PAGE_SIZE: u32 = 100;

/// A Stripe API client. Cheap to clone; clones share the connection pool and rate limiter.
#[derive(Clone)]
pub struct StripeClient {
    config: Arc<ClientConfig>,
    http: reqwest::Client,
    /// `Bearer <key>`, marked sensitive so that no `Debug` of a request shows it.
    auth: HeaderValue,
    /// `api_base` without a trailing slash.
    base: Arc<str>,
    /// The one request budget, shared by every clone.
    budget: Arc<Budget>,
    /// The priority of this handle's reads (set with [`StripeClient::at`]); writes of a
    /// payment always go first.
    priority: Option<Priority>,
    observer: Option<Arc<dyn RequestObserver>>,
    /// Logical requests under way (retries included), shared by clones: a graceful
    /// shutdown waits for this to reach zero.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// The `livemode` of the key's objects (`sk_live_`/`rk_live_` true, `sk_test_`/
    /// `rk_test_` false); an answer holding an object of the other mode is refused.
    livemode: Option<bool>,
}

/// The `livemode` of an answer: the object's own, or, for a list, its items'.
#[derive(serde::Deserialize)]
struct ModeProbe {
    #[serde(default)]
    livemode: Option<bool>,
    #[serde(default)]
    data: Option<Vec<ModeProbe>>,
}

impl ModeProbe {
    /// The first `livemode` that differs from `expected`.
    fn other_than(&self, expected: bool) -> Option<bool> {
        if let Some(l) = self.livemode.filter(|l| *l != expected) {
            return Some(l);
        }
        self.data
            .iter()
            .flatten()
            .find_map(|item| item.other_than(expected))
    }
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("config", &self.config)
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

type Result<T> = std::result::Result<T, StripeError>;

/// One logical request, as sent on every attempt.
struct Call<'a> {
    method: Method,
    endpoint: &'static str,
    path: String,
    /// The form body of a POST, the query string of a GET or DELETE.
    params: Params,
    account: Option<&'a str>,
    /// Sent on POST only.
    idempotency_key: Option<&'a str>,
    timeout: Duration,
    priority: Priority,
}

impl Call<'_> {
    /// Sending it again cannot do the work twice: reads and deletes by nature, POSTs
    /// because Stripe replays the stored result for the same key.
    fn repeatable(&self) -> bool {
        self.method != Method::POST || self.idempotency_key.is_some()
    }
}

/// A write that belongs to a payment or a job at the reader: it goes before any read.
fn is_payment_write(endpoint: &str) -> bool {
    endpoint.starts_with("/v1/payment_intents")
        || endpoint.starts_with("/v1/refunds")
        || endpoint.starts_with("/v1/transfers")
        || endpoint.starts_with("/v1/setup_intents")
        || (endpoint.starts_with("/v1/terminal/readers/{id}/")
            && endpoint != "/v1/terminal/readers/{id}")
}

/// The default `requests_per_second` for a key: Stripe allows a platform 100 requests per
/// second in live mode and 25 in test mode; readerd stays under both with a margin for
/// other software on the same account and for Stripe's own rounding.
pub fn default_requests_per_second(key: &SecretKey) -> u32 {
    let k = key.expose();
    if k.starts_with("sk_live_") || k.starts_with("rk_live_") {
        90
    } else {
        20
    }
}

/// Percent-encodes an id for use as one path segment.
fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl StripeClient {
    pub fn new(config: ClientConfig) -> Result<Self> {
        if config.requests_per_second == 0 {
            return Err(StripeError::Config(
                "requests_per_second must be at least 1".into(),
            ));
        }
        if config.max_attempts == 0 {
            return Err(StripeError::Config(
                "max_attempts must be at least 1".into(),
            ));
        }
        let base = config.api_base.trim_end_matches('/');
        let parsed = reqwest::Url::parse(base)
            .map_err(|e| StripeError::Config(format!("api_base `{base}`: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(StripeError::Config(format!(
                "api_base `{base}`: scheme must be http or https"
            )));
        }
        let key = config.secret_key.expose();
        let livemode = if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
            Some(true)
        } else if key.starts_with("sk_test_") || key.starts_with("rk_test_") {
            Some(false)
        } else {
            None
        };
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", config.secret_key.expose()))
            .map_err(|_| {
                StripeError::Config("the secret key is not a valid header value".into())
            })?;
        auth.set_sensitive(true);
        let version = HeaderValue::from_str(&config.stripe_version).map_err(|_| {
            StripeError::Config(format!("stripe_version `{}`", config.stripe_version))
        })?;
        let mut headers = HeaderMap::new();
        headers.insert("Stripe-Version", version);
        let http = reqwest::Client::builder()
            .user_agent(concat!("readerd/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| StripeError::Config(format!("http client: {e}")))?;
        // One permit every 1/rps seconds, no burst beyond that: any one-second window holds
        // at most rps + 1 requests, which keeps a fleet-wide burst under Stripe's limits.
        let budget = Budget::new(config.requests_per_second);
        Ok(StripeClient {
            base: Arc::from(base),
            config: Arc::new(config),
            http,
            auth,
            budget: Arc::new(budget),
            priority: None,
            observer: None,
            in_flight: Arc::default(),
            livemode,
        })
    }

    /// Tells `observer` about every attempt (for metrics).
    pub fn with_observer(mut self, observer: Arc<dyn RequestObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// A handle whose requests (reads included) are paid at `priority`; it shares the
    /// budget, the pool and the in-flight count with `self`. Payment writes keep
    /// [`Priority::Write`] whatever the handle says.
    pub fn at(&self, priority: Priority) -> Self {
        let mut c = self.clone();
        c.priority = Some(priority);
        c
    }

    /// How many requests are under way right now (a request that is retrying counts once).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    // Transport -------------------------------------------------------------------------

    fn call<'a>(
        &self,
        method: Method,
        endpoint: &'static str,
        path: String,
        params: Params,
        o: Option<&'a RequestOptions>,
    ) -> Call<'a> {
        let write = method == Method::POST && is_payment_write(endpoint);
        let priority = if write {
            Priority::Write
        } else {
            self.priority.unwrap_or(Priority::Background)
        };
        Call {
            priority,
            idempotency_key: if method == Method::POST {
                o.and_then(|o| o.idempotency_key.as_deref())
            } else {
                None
            },
            method,
            endpoint,
            path,
            params,
            account: o.and_then(|o| o.account.as_deref()),
            timeout: self.config.request_timeout,
        }
    }

    /// A reader command: the reader acknowledges slowly, so the long timeout applies.
    fn reader_command<'a>(
        &self,
        endpoint: &'static str,
        path: String,
        params: Params,
        o: &'a RequestOptions,
    ) -> Call<'a> {
        let mut c = self.call(Method::POST, endpoint, path, params, Some(o));
        c.timeout = self.config.reader_timeout;
        c
    }

    /// Waits for a permit from the request budget.
    async fn acquire_permit(&self, priority: Priority) {
        let waited = self.budget.acquire(priority).await;
        if !waited.is_zero() {
            if let Some(observer) = &self.observer {
                observer.on_rate_limit_wait(waited);
            }
        }
    }

    fn new_backoff(&self) -> backoff::exponential::ExponentialBackoff<TokioBackoffClock> {
        let clock = TokioBackoffClock;
        backoff::exponential::ExponentialBackoff {
            current_interval: INITIAL_BACKOFF,
            initial_interval: INITIAL_BACKOFF,
            randomization_factor: 0.5,
            multiplier: 2.0,
            max_interval: MAX_BACKOFF,
            start_time: backoff::Clock::now(&clock),
            max_elapsed_time: Some(self.config.max_elapsed),
            clock,
        }
    }

    /// Sends `call` until it succeeds or the retry rule says stop.
    async fn execute<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T> {
        let _in_flight = InFlight::enter(&self.in_flight);
        let started = tokio::time::Instant::now();
        let mut backoff = self.new_backoff();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.acquire_permit(call.priority).await;
            let err = match self.attempt(&call, attempt).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let disposition = classify(&err);
            if !retry_allowed(&err, call.repeatable()) || attempt >= self.config.max_attempts {
                return Err(err);
            }
            let Some(mut wait) = backoff.next_backoff() else {
                return Err(err);
            };
            if disposition == Disposition::RateLimited {
                wait = (wait * 2).max(RATE_LIMITED_MIN_WAIT);
            }
            if started.elapsed() + wait > self.config.max_elapsed {
                return Err(err);
            }
            tracing::debug!(
                method = %call.method,
                path = %call.path,
                attempt,
                wait_ms = wait.as_millis() as u64,
                disposition = ?disposition,
                "stripe request will be retried"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One HTTP exchange.
    async fn attempt<T: DeserializeOwned>(&self, call: &Call<'_>, attempt: u32) -> Result<T> {
        let sent = tokio::time::Instant::now();
        let outcome = self.exchange(call).await;
        let latency = sent.elapsed();
        let (status, request_id) = match &outcome {
            Ok((status, request_id, _)) => (Some(*status), request_id.clone()),
            Err(e) => (e.status(), e.request_id().map(str::to_string)),
        };
        let result = match outcome {
            Ok((status, request_id, body)) => {
                let wrong = self.livemode.and_then(|expected| {
                    serde_json::from_slice::<ModeProbe>(&body)
                        .ok()?
                        .other_than(expected)
                });
                match wrong {
                    Some(livemode) => Err(StripeError::WrongMode {
                        livemode,
                        request_id,
                    }),
                    None => serde_json::from_slice::<T>(&body).map_err(|e| StripeError::Decode {
                        status,
                        message: self.scrub(e.to_string()),
                        request_id,
                    }),
                }
            }
            Err(e) => Err(e),
        };
        let failure = result.as_ref().err().map(classify);
        let wrong_mode = matches!(result, Err(StripeError::WrongMode { .. }));
        self.record(
            call,
            attempt,
            (status, latency),
            request_id.as_deref(),
            failure,
            wrong_mode,
        );
        result
    }

    fn record(
        &self,
        call: &Call<'_>,
        attempt: u32,
        (status, latency): (Option<u16>, Duration),
        request_id: Option<&str>,
        failure: Option<Disposition>,
        wrong_mode: bool,
    ) {
        let latency_ms = latency.as_millis() as u64;
        let account = call.account.unwrap_or("");
        let request_id_field = request_id.unwrap_or("");
        let status_field = status.unwrap_or(0);
        match failure {
            None if call.method == Method::POST => tracing::info!(
                method = %call.method, path = %call.path, account, status = status_field,
                attempt, latency_ms, request_id = request_id_field,
                idempotency_key = call.idempotency_key.unwrap_or(""),
                "stripe request"
            ),
            None => tracing::debug!(
                method = %call.method, path = %call.path, account, status = status_field,
                attempt, latency_ms, request_id = request_id_field,
                "stripe request"
            ),
            Some(d) => tracing::warn!(
                method = %call.method, path = %call.path, account, status = status_field,
                attempt, latency_ms, request_id = request_id_field,
                idempotency_key = call.idempotency_key.unwrap_or(""),
                disposition = ?d,
                "stripe request failed"
            ),
        }
        if let Some(observer) = &self.observer {
            observer.on_attempt(&AttemptRecord {
                method: call.method.as_str(),
                endpoint: call.endpoint,
                path: &call.path,
                account: call.account,
                attempt,
                status,
                latency,
                request_id,
                failure,
                wrong_mode,
            });
        }
    }

    /// Sends once; returns the status, request id and body of a 2xx, or the error.
    async fn exchange(&self, call: &Call<'_>) -> Result<(u16, Option<String>, Vec<u8>)> {
        let mut url = format!("{}{}", self.base, call.path);
        let mut req = if call.method == Method::POST {
            self.http
                .post(&url)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(call.params.encode())
        } else {
            if !call.params.is_empty() {
                url.push('?');
                url.push_str(&call.params.encode());
            }
            self.http.request(call.method.clone(), &url)
        };
        req = req
            .header(reqwest::header::AUTHORIZATION, self.auth.clone())
            .timeout(call.timeout);
        if let Some(account) = call.account {
            req = req.header("Stripe-Account", account);
        }
        if let Some(key) = call.idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let request_id = header_str(&headers, "request-id");
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?
            .to_vec();
        if (200..300).contains(&status) {
            return Ok((status, request_id, body));
        }
        let should_retry = header_str(&headers, "stripe-should-retry").and_then(|v| {
            match v.trim().to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            }
        });
        let rate_limited_reason = header_str(&headers, "stripe-rate-limited-reason");
        match serde_json::from_slice::<ErrorEnvelope>(&body) {
            Ok(mut env) => Err(StripeError::Api {
                status,
                error: {
                    env.error.message = env.error.message.map(|m| self.scrub(m));
                    Box::new(env.error)
                },
                request_id,
                should_retry,
                rate_limited_reason,
            }),
            Err(e) => Err(StripeError::Decode {
                status,
                message: self.scrub(format!("error body is not a Stripe error object: {e}")),
                request_id,
            }),
        }
    }

    /// Maps a transport failure: no connection means the request never left; anything
    /// later means it may have reached Stripe.
    fn transport_error(&self, e: reqwest::Error) -> StripeError {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        let text = self.scrub(text);
        if e.is_builder() {
            StripeError::Config(text)
        } else if e.is_connect() {
            StripeError::Connect(text)
        } else {
            StripeError::NoResponse(text)
        }
    }

    /// Removes the secret key from text that leaves the client (errors, logs): belt and
    /// braces against a library, a proxy or a server that echoes it.
    fn scrub(&self, text: String) -> String {
        let key = self.config.secret_key.expose();
        if !key.is_empty() && text.contains(key) {
            text.replace(key, "<redacted>")
        } else {
            text
        }
    }

    /// Every item of a list endpoint, following `has_more` with `starting_after`.
    async fn list_all<T: DeserializeOwned + HasId>(
        &self,
        endpoint: &'static str,
        path: &str,
        filter: Params,
        o: Option<&RequestOptions>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut params = filter.clone();
            params.push("limit", PAGE_SIZE);
            params.push_opt("starting_after", after.as_ref());
            let page: List<T> = self
                .execute(self.call(Method::GET, endpoint, path.to_string(), params, o))
                .await?;
            let more = page.has_more;
            out.extend(page.data);
            let last = out.last().map(|t| t.object_id().to_string());
            match (more, last) {
                (true, Some(last)) if after.as_deref() != Some(last.as_str()) => after = Some(last),
                _ => return Ok(out),
            }
        }
    }
}

/// The path `/v1/<prefix>/<id><suffix>` with the id escaped.
fn path(prefix: &str, id: &str, suffix: &str) -> String {
    format!("{prefix}/{}{suffix}", segment(id))
}

impl StripeClient {
    // Accounts ------------------------------------------------------------------------
    /// The account the key belongs to (the platform).
    pub async fn retrieve_own_account(&self) -> Result<Account> {
        self.execute(self.call(
            Method::GET,
            "/v1/account",
            "/v1/account".into(),
            Params::new(),
            None,
        ))
        .await
    }
    pub async fn retrieve_account(&self, id: &str) -> Result<Account> {
        self.execute(self.call(
            Method::GET,
            "/v1/accounts/{id}",
            path("/v1/accounts", id, ""),
            Params::new(),
            None,
        ))
        .await
    }

    // Locations (the platform's, or a merchant's with `Stripe-Account`) --------------------------------------------------------------
    pub async fn create_location(
        &self,
        p: &CreateLocation,
        o: &RequestOptions,
    ) -> Result<Location> {
        self.execute(self.call(
            Method::POST,
            "/v1/terminal/locations",
            "/v1/terminal/locations".into(),
            p.to_params(),
            Some(o),
        ))
        .await
    }
    pub async fn retrieve_location(&self, id: &str) -> Result<Location> {
        self.retrieve_location_on(id, &RequestOptions::platform())
            .await
    }
    /// A location of the account `o` names (a merchant-owned one with `Stripe-Account`).
    pub async fn retrieve_location_on(&self, id: &str, o: &RequestOptions) -> Result<Location> {
        self.execute(self.call(
            Method::GET,
            "/v1/terminal/locations/{id}",
            path("/v1/terminal/locations", id, ""),
            Params::new(),
            Some(o),
        ))
        .await
    }
    pub async fn update_location(
        &self,
        id: &str,
        p: &UpdateLocation,
        o: &RequestOptions,
    ) -> Result<Location> {
        self.execute(self.call(
            Method::POST,
            "/v1/terminal/locations/{id}",
            path("/v1/terminal/locations", id, ""),
            p.to_params(),
            Some(o),
        ))
        .await
    }
    /// Every platform location, all pages.
    pub async fn list_locations(&self) -> Result<Vec<Location>> {
        self.list_locations_on(&RequestOptions::platform()).await
    }
    /// Every location of the account `o` names, all pages.
    pub async fn list_locations_on(&self, o: &RequestOptions) -> Result<Vec<Location>> {
        self.list_all(
            "/v1/terminal/locations",
            "/v1/terminal/locations",
            Params::new(),
            Some(o),
        )
        .await
    }
    pub async fn delete_location(&self, id: &str) -> Result<Deleted> {
        self.execute(self.call(
            Method::DELETE,
            "/v1/terminal/locations/{id}",
            path("/v1/terminal/locations", id, ""),
            Params::new(),
            None,
        ))
        .await
    }

    // Terminal configurations (the platform's, or a merchant's with `Stripe-Account`) -----
    pub async fn create_configuration(
        &self,
        p: &CreateConfiguration,
        o: &RequestOptions,
    ) -> Result<TerminalConfiguration> {
        self.execute(self.call(
            Method::POST,
            "/v1/terminal/configurations",
            "/v1/terminal/configurations".into(),
            p.to_params(),
            Some(o),
        ))
        .await
    }
    pub async fn retrieve_configuration(
        &self,
        id: &str,
        o: &RequestOptions,
    ) -> Result<TerminalConfiguration> {
        self.execute(self.call(
            Method::GET,
            "/v1/terminal/configurations/{id}",
            path("/v1/terminal/configurations", id, ""),
            Params::new(),
            Some(o),
        ))
        .await
    }
    pub async fn update_configuration(
        &self,
        id: &str,
        p: &UpdateConfiguration,
        o: &RequestOptions,
    ) -> Result<TerminalConfiguration> {
        self.execute(self.call(
            Method::POST,
            "/v1/terminal/configurations/{id}",
            path("/v1/terminal/configurations", id, ""),
            p.to_params(),
            Some(o),
        ))
        .await
    }
    /// Every configuration of the account `o` names, all pages.
    pub async fn list_configurations_on(
        &self,
        o: &RequestOptions,
    ) -> Result<Vec<TerminalConfiguration>> {
        self.list_all(
            "/v1/terminal/configurations",
            "/v1/terminal/configurations",
            Params::new(),
            Some(o),
        )
        .await
    }

    // Readers (the platform's, or a merchant's with `Stripe-Account`) ----------------------------------------------------------------
    pub async fn register_reader(&self, p: &RegisterReader, o: &RequestOptions) -> Result<Reader> {
        self.execute(self.call(
            Method::POST,
            "/v1/terminal/readers",
            "/v1/terminal/readers".into(),
            p.to_params(),
            Some(o),
        ))
        .await
    }
    pub async fn retrieve_reader(&self, id: &str) -> Result<Reader> {
        self.retrieve_reader_on(id, &RequestOptions::platform())
            .await
    }
    /// A reader of the account `o` names (a merchant-owned one with `Stripe-Account`).
    pub async fn retrieve_reader_on(&self, id: &str, o: &RequestOptions) -> Result<Reader> {
        self.execute(self.call(
            Method::GET,
            "/v1/terminal/readers/{id}",
            path("/v1/terminal/readers", id, ""),
            Params::new(),
            Some(o),
        ))
        .await
    }
    pub async fn update_reader(
        &self,
        id: &str,
        p: &UpdateReader,
        o: &RequestOptions,
    ) -> Result<Reader> {
        self.execute(self.call(
            Method::POST,
            "/v1/terminal/readers/{id}",
            path("/v1/terminal/readers", id, ""),
            p.to_params(),
            Some(o),
        ))
        .await
    }
    /// Every platform reader matching the filter, all pages.
    pub async fn list_readers(&self, filter: &ListReaders) -> Result<Vec<Reader>> {
        self.list_readers_on(filter, &RequestOptions::platform())
            .await
    }
    /// Every reader of the account `o` names matching the filter, all pages.
    pub async fn list_readers_on(
        &self,
        filter: &ListReaders,
        o: &RequestOptions,
    ) -> Result<Vec<Reader>> {
        self.list_all(
            "/v1/terminal/readers",
            "/v1/terminal/readers",
            filter.to_params(),
            Some(o),
        )
        .await
    }
    pub async fn delete_reader(&self, id: &str) -> Result<Deleted> {
        self.execute(self.call(
            Method::DELETE,
            "/v1/terminal/readers/{id}",
            path("/v1/terminal/readers", id, ""),
            Params::new(),
            None,
        ))
        .await
    }
    /// A connection token for a Terminal SDK, on the account `o` names (a key per call:
    /// making two is harmless, and the secret is never kept).
    pub async fn create_connection_token(
        &self,
        p: &CreateConnectionToken,
        o: &RequestOptions,
    ) -> Result<ConnectionToken> {
        self.execute(self.call(
            Method::POST,
            "/v1/terminal/connection_tokens",
            "/v1/terminal/connection_tokens".into(),
            p.to_params(),
            Some(o),
        ))
        .await
    }
    /// Reader command (long timeout).
    pub async fn process_payment_intent(
        &self,
        reader: &str,
        p: &ProcessPaymentIntent,
        o: &RequestOptions,
    ) -> Result<Reader> {
        self.execute(self.reader_command(
            "/v1/terminal/readers/{id}/process_payment_intent",
            path("/v1/terminal/readers", reader, "/process_payment_intent"),
            p.to_params(),
            o,
        ))
        .await
    }
    /// Reader command (long timeout): the card is read, not authorised.
    pub async fn collect_payment_method(
        &self,
        reader: &str,
        p: &CollectPaymentMethod,
        o: &RequestOptions,
    ) -> Result<Reader> {
        self.execute(self.reader_command(
            "/v1/terminal/readers/{id}/collect_payment_method",
            path("/v1/terminal/readers", reader, "/collect_payment_method"),
            p.to_params(),
            o,
        ))
        .await
    }
    /// Reader command (long timeout): the collected card is authorised.
    pub async fn confirm_payment_intent(
        &self,
        reader: &str,
        p: &ConfirmPaymentIntent,
        o: &RequestOptions,
    ) -> Result<Reader> {
        self.execute(self.reader_command(
            "/v1/terminal/readers/{id}/confirm_payment_intent",
            path("/v1/terminal/readers", reader, "/confirm_payment_intent"),
            p.to_params(),
            o,
        ))
        .await
    }
    /// Reader command (long timeout).
    pub async fn cancel_action(&self, reader: &str, o: &RequestOptions) -> Result<Reader> {
        self.execute(self.reader_command(
            "/v1/terminal/readers/{id}/cancel_action",
            path("/v1/terminal/readers", reader, "/cancel_action"),
            Params::new(),
            o,
        ))
        .await
    }
    /// Reader command (long timeout).
    pub async fn set_reader_display(
        &self,
        reader: &str,
        p: &SetReaderDisplay,
        o: &RequestOptions,
    ) -> Result<Reader> {
        self.execute(self.reader_command(
            "/v1/terminal/readers/{id}/set_reader_display",
            path("/v1/terminal/readers", reader, "/set_reader_display"),
            p.to_params(),
            o,
        ))
        .await
    }
    /// Reader command (long timeout): inputs on the reader's screen.
    pub async fn collect_inputs(
        &self,
        reader: &str,
        p: &CollectInputs,
        o: &RequestOptions,
    ) -> Result<Reader> {
        self.execute(self.reader_command(
            "/v1/terminal/readers/{id}/collect_inputs",
            path("/v1/terminal/readers", reader, "/collect_inputs"),
            p.to_params(),
            o,
        ))
        .await
    }
    /// Reader command (long timeout): the customer's card is saved on the SetupIntent.
    pub async fn process_setup_intent(
        &self,
        reader: &str,
        p: &ProcessSetupIntent,
        o: &RequestOptions,
    ) -> Result<Reader> {
        self.execute(self.reader_command(
            "/v1/terminal/readers/{id}/process_setup_intent",
            path("/v1/terminal/readers", reader, "/process_setup_intent"),
            p.to_params(),
            o,
        ))
        .await
    }
    /// A refund that waits for the customer's card on the reader.
    pub async fn refund_payment(
        &self,
        reader: &str,
        p: &RefundPayment,
        o: &RequestOptions,
    ) -> Result<Reader> {
        self.execute(self.reader_command(
            "/v1/terminal/readers/{id}/refund_payment",
            path("/v1/terminal/readers", reader, "/refund_payment"),
            p.to_params(),
            o,
        ))
        .await
    }

    // SetupIntents (o.account = the connected account for direct charges) --------------
    pub async fn create_setup_intent(
        &self,
        p: &CreateSetupIntent,
        o: &RequestOptions,
    ) -> Result<SetupIntent> {
        self.execute(self.call(
            Method::POST,
            "/v1/setup_intents",
            "/v1/setup_intents".into(),
            p.to_params(),
            Some(o),
        ))
        .await
    }
    /// `expand` such as `["latest_attempt"]`.
    pub async fn retrieve_setup_intent(
        &self,
        id: &str,
        expand: &[&str],
        o: &RequestOptions,
    ) -> Result<SetupIntent> {
        let mut params = Params::new();
        params.push_list("expand", expand);
        self.execute(self.call(
            Method::GET,
            "/v1/setup_intents/{id}",
            path("/v1/setup_intents", id, ""),
            params,
            Some(o),
        ))
        .await
    }
    pub async fn cancel_setup_intent(
        &self,
        id: &str,
        p: &CancelSetupIntent,
        o: &RequestOptions,
    ) -> Result<SetupIntent> {
        self.execute(self.call(
            Method::POST,
            "/v1/setup_intents/{id}/cancel",
            path("/v1/setup_intents", id, "/cancel"),
            p.to_params(),
            Some(o),
        ))
        .await
    }

    /// Test helper: the customer answers the inputs on the screen.
    pub async fn succeed_input_collection(
        &self,
        reader: &str,
        p: &SucceedInputCollection,
        o: &RequestOptions,
    ) -> Result<Reader> {
        self.execute(self.reader_command(
            "/v1/test_helpers/terminal/readers/{id}/succeed_input_collection",
            path(
                "/v1/test_helpers/terminal/readers",
                reader,
                "/succeed_input_collection",
            ),
            p.to_params(),
            o,
        ))
        .await
    }
    /// Test helper: the customer walks away from the inputs on the screen.
    pub async fn timeout_input_collection(
        &self,
        reader: &str,
        o: &RequestOptions,
    ) -> Result<Reader> {
        self.execute(self.reader_command(
            "/v1/test_helpers/terminal/readers/{id}/timeout_input_collection",
            path(
                "/v1/test_helpers/terminal/readers",
                reader,
                "/timeout_input_collection",
            ),
            Params::new(),
            o,
        ))
        .await
    }
    /// Test helper: the customer taps a card.
    pub async fn present_payment_method(
        &self,
        reader: &str,
        p: &PresentPaymentMethod,
        o: &RequestOptions,
    ) -> Result<Reader> {
        self.execute(self.reader_command(
            "/v1/test_helpers/terminal/readers/{id}/present_payment_method",
            path(
                "/v1/test_helpers/terminal/readers",
                reader,
                "/present_payment_method",
            ),
            p.to_params(),
            o,
        ))
        .await
    }

    // PaymentIntents (o.account = the connected account for direct charges) ------------
    pub async fn create_payment_intent(
        &self,
        p: &CreatePaymentIntent,
        o: &RequestOptions,
    ) -> Result<PaymentIntent> {
        self.execute(self.call(
            Method::POST,
            "/v1/payment_intents",
            "/v1/payment_intents".into(),
            p.to_params(),
            Some(o),
        ))
        .await
    }
    /// `expand` such as `["latest_charge"]`.
    pub async fn retrieve_payment_intent(
        &self,
        id: &str,
        expand: &[&str],
        o: &RequestOptions,
    ) -> Result<PaymentIntent> {
        let mut params = Params::new();
        params.push_list("expand", expand);
        self.execute(self.call(
            Method::GET,
            "/v1/payment_intents/{id}",
            path("/v1/payment_intents", id, ""),
            params,
            Some(o),
        ))
        .await
    }
    pub async fn update_payment_intent(
        &self,
        id: &str,
        p: &UpdatePaymentIntent,
        o: &RequestOptions,
    ) -> Result<PaymentIntent> {
        self.execute(self.call(
            Method::POST,
            "/v1/payment_intents/{id}",
            path("/v1/payment_intents", id, ""),
            p.to_params(),
            Some(o),
        ))
        .await
    }
    /// Every PaymentIntent of the account, all pages.
    pub async fn list_payment_intents(&self, o: &RequestOptions) -> Result<Vec<PaymentIntent>> {
        self.list_all(
            "/v1/payment_intents",
            "/v1/payment_intents",
            Params::new(),
            Some(o),
        )
        .await
    }
    /// The account's PaymentIntents created at or after `since` (Unix seconds), all pages.
    pub async fn list_payment_intents_created_since(
        &self,
        since: i64,
        o: &RequestOptions,
    ) -> Result<Vec<PaymentIntent>> {
        let mut filter = Params::new();
        filter.push("created[gte]", since);
        self.list_all(
            "/v1/payment_intents",
            "/v1/payment_intents",
            filter,
            Some(o),
        )
        .await
    }
    pub async fn capture_payment_intent(
        &self,
        id: &str,
        p: &CapturePaymentIntent,
        o: &RequestOptions,
    ) -> Result<PaymentIntent> {
        self.execute(self.call(
            Method::POST,
            "/v1/payment_intents/{id}/capture",
            path("/v1/payment_intents", id, "/capture"),
            p.to_params(),
            Some(o),
        ))
        .await
    }
    pub async fn cancel_payment_intent(
        &self,
        id: &str,
        p: &CancelPaymentIntent,
        o: &RequestOptions,
    ) -> Result<PaymentIntent> {
        self.execute(self.call(
            Method::POST,
            "/v1/payment_intents/{id}/cancel",
            path("/v1/payment_intents", id, "/cancel"),
            p.to_params(),
            Some(o),
        ))
        .await
    }

    // Refunds ---------------------------------------------------------------------------
    pub async fn create_refund(&self, p: &CreateRefund, o: &RequestOptions) -> Result<Refund> {
        self.execute(self.call(
            Method::POST,
            "/v1/refunds",
            "/v1/refunds".into(),
            p.to_params(),
            Some(o),
        ))
        .await
    }
    /// Every refund of a PaymentIntent, all pages.
    pub async fn list_refunds(
        &self,
        payment_intent: &str,
        o: &RequestOptions,
    ) -> Result<Vec<Refund>> {
        let mut filter = Params::new();
        filter.push("payment_intent", payment_intent);
        self.list_all("/v1/refunds", "/v1/refunds", filter, Some(o))
            .await
    }

    // Transfers (separate charges and transfers) -------------------------------------------
    pub async fn create_transfer(
        &self,
        p: &CreateTransfer,
        o: &RequestOptions,
    ) -> Result<Transfer> {
        self.execute(self.call(
            Method::POST,
            "/v1/transfers",
            "/v1/transfers".into(),
            p.to_params(),
            Some(o),
        ))
        .await
    }
    /// Every transfer of a `transfer_group`, all pages.
    pub async fn list_transfers(
        &self,
        transfer_group: &str,
        o: &RequestOptions,
    ) -> Result<Vec<Transfer>> {
        let mut filter = Params::new();
        filter.push("transfer_group", transfer_group);
        self.list_all("/v1/transfers", "/v1/transfers", filter, Some(o))
            .await
    }
    pub async fn retrieve_transfer(&self, id: &str, o: &RequestOptions) -> Result<Transfer> {
        self.execute(self.call(
            Method::GET,
            "/v1/transfers/{id}",
            path("/v1/transfers", id, ""),
            Params::new(),
            Some(o),
        ))
        .await
    }
    /// Every reversal of a transfer, all pages.
    pub async fn list_transfer_reversals(
        &self,
        transfer: &str,
        o: &RequestOptions,
    ) -> Result<Vec<TransferReversal>> {
        self.list_all(
            "/v1/transfers/{id}/reversals",
            &path("/v1/transfers", transfer, "/reversals"),
            Params::new(),
            Some(o),
        )
        .await
    }
    pub async fn create_transfer_reversal(
        &self,
        transfer: &str,
        p: &CreateTransferReversal,
        o: &RequestOptions,
    ) -> Result<TransferReversal> {
        self.execute(self.call(
            Method::POST,
            "/v1/transfers/{id}/reversals",
            path("/v1/transfers", transfer, "/reversals"),
            p.to_params(),
            Some(o),
        ))
        .await
    }
}
