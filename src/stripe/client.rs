//! The Stripe client: transport, retries, rate limiting and one method per endpoint.
//! (Interface fixed here; the transport is filled in by the foundation work.)

use super::error::StripeError;
use super::params::*;
use super::wire::*;
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
    /// Client-side limit, requests per second (Stripe allows 25/s in test mode).
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
        ClientConfig {
            api_base: api_base.into(),
            secret_key,
            stripe_version: DEFAULT_STRIPE_VERSION.to_string(),
            requests_per_second: 20,
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

/// A Stripe API client. Cheap to clone; clones share the connection pool and rate limiter.
#[derive(Clone, Debug)]
pub struct StripeClient {
    config: std::sync::Arc<ClientConfig>,
}

type Result<T> = std::result::Result<T, StripeError>;

#[allow(unused_variables)]
impl StripeClient {
    pub fn new(config: ClientConfig) -> Result<Self> {
        Ok(StripeClient {
            config: std::sync::Arc::new(config),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    // Accounts ------------------------------------------------------------------------
    pub async fn retrieve_account(&self, id: &str) -> Result<Account> {
        todo!()
    }

    // Locations (platform) --------------------------------------------------------------
    pub async fn create_location(
        &self,
        p: &CreateLocation,
        o: &RequestOptions,
    ) -> Result<Location> {
        todo!()
    }
    pub async fn retrieve_location(&self, id: &str) -> Result<Location> {
        todo!()
    }
    pub async fn update_location(
        &self,
        id: &str,
        p: &UpdateLocation,
        o: &RequestOptions,
    ) -> Result<Location> {
        todo!()
    }
    /// Every location, all pages.
    pub async fn list_locations(&self) -> Result<Vec<Location>> {
        todo!()
    }
    pub async fn delete_location(&self, id: &str) -> Result<Deleted> {
        todo!()
    }

    // Readers (platform) ----------------------------------------------------------------
    pub async fn register_reader(&self, p: &RegisterReader, o: &RequestOptions) -> Result<Reader> {
        todo!()
    }
    pub async fn retrieve_reader(&self, id: &str) -> Result<Reader> {
        todo!()
    }
    pub async fn update_reader(
        &self,
        id: &str,
        p: &UpdateReader,
        o: &RequestOptions,
    ) -> Result<Reader> {
        todo!()
    }
    /// Every reader matching the filter, all pages.
    pub async fn list_readers(&self, filter: &ListReaders) -> Result<Vec<Reader>> {
        todo!()
    }
    pub async fn delete_reader(&self, id: &str) -> Result<Deleted> {
        todo!()
    }
    /// Reader command (long timeout).
    pub async fn process_payment_intent(
        &self,
        reader: &str,
        p: &ProcessPaymentIntent,
        o: &RequestOptions,
    ) -> Result<Reader> {
        todo!()
    }
    /// Reader command (long timeout).
    pub async fn cancel_action(&self, reader: &str, o: &RequestOptions) -> Result<Reader> {
        todo!()
    }
    /// Reader command (long timeout).
    pub async fn set_reader_display(
        &self,
        reader: &str,
        p: &SetReaderDisplay,
        o: &RequestOptions,
    ) -> Result<Reader> {
        todo!()
    }
    /// Test helper: the customer taps a card.
    pub async fn present_payment_method(
        &self,
        reader: &str,
        p: &PresentPaymentMethod,
        o: &RequestOptions,
    ) -> Result<Reader> {
        todo!()
    }

    // PaymentIntents (o.account = the connected account for direct charges) ------------
    pub async fn create_payment_intent(
        &self,
        p: &CreatePaymentIntent,
        o: &RequestOptions,
    ) -> Result<PaymentIntent> {
        todo!()
    }
    /// `expand` such as `["latest_charge"]`.
    pub async fn retrieve_payment_intent(
        &self,
        id: &str,
        expand: &[&str],
        o: &RequestOptions,
    ) -> Result<PaymentIntent> {
        todo!()
    }
    pub async fn update_payment_intent(
        &self,
        id: &str,
        p: &UpdatePaymentIntent,
        o: &RequestOptions,
    ) -> Result<PaymentIntent> {
        todo!()
    }
    /// Every PaymentIntent of the account, all pages.
    pub async fn list_payment_intents(&self, o: &RequestOptions) -> Result<Vec<PaymentIntent>> {
        todo!()
    }
    pub async fn capture_payment_intent(
        &self,
        id: &str,
        p: &CapturePaymentIntent,
        o: &RequestOptions,
    ) -> Result<PaymentIntent> {
        todo!()
    }
    pub async fn cancel_payment_intent(
        &self,
        id: &str,
        p: &CancelPaymentIntent,
        o: &RequestOptions,
    ) -> Result<PaymentIntent> {
        todo!()
    }

    // Refunds ---------------------------------------------------------------------------
    pub async fn create_refund(&self, p: &CreateRefund, o: &RequestOptions) -> Result<Refund> {
        todo!()
    }
}
