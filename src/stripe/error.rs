//! Errors from Stripe calls, and the one rule that decides what to do about them.

use super::wire::ApiErrorObject;

/// What the caller should do about a failed request. Decided by [`classify`] alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Safe to send again with the same idempotency key (connection refused, 409, 5xx,
    /// `Stripe-Should-Retry: true`, 429 `lock_timeout`).
    Transient,
    /// A limiter said no (429 with `Stripe-Rate-Limited-Reason`, or 429 `rate_limit`):
    /// nothing happened; wait longer, then send again.
    RateLimited,
    /// Stripe decided; sending the same request again gives the same answer.
    Definitive,
    /// The request may have reached Stripe and been carried out (timeout or connection lost
    /// after sending). The caller must reconcile by reading state, not guess.
    OutcomeUnknown,
}

/// A failed Stripe call. Never carries the secret key.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe answered with an error object.
    #[error("stripe {status} {}: {}", .error.code.as_deref().unwrap_or(.error.kind.as_str()), .error.message.as_deref().unwrap_or(""))]
    Api {
        status: u16,
        error: Box<ApiErrorObject>,
        request_id: Option<String>,
        /// The `Stripe-Should-Retry` header, when present.
        should_retry: Option<bool>,
        /// The `Stripe-Rate-Limited-Reason` header, when present.
        rate_limited_reason: Option<String>,
    },
    /// The connection could not be made: the request never left.
    #[error("could not connect to Stripe: {0}")]
    Connect(String),
    /// The request was (or may have been) sent, but no complete response came back.
    #[error("no response from Stripe: {0}")]
    NoResponse(String),
    /// A response came back that is not what Stripe sends.
    #[error("unreadable response from Stripe (status {status}): {message}")]
    Decode {
        status: u16,
        message: String,
        request_id: Option<String>,
    },
    /// The client was built with a bad setting.
    #[error("stripe client configuration: {0}")]
    Config(String),
}

impl StripeError {
    /// The error code (`terminal_reader_busy`, `resource_missing`, …) of an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            StripeError::Api { error, .. } => error.code.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            StripeError::Api { status, .. } | StripeError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error object of an API error.
    pub fn api_error(&self) -> Option<&ApiErrorObject> {
        match self {
            StripeError::Api { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The `Request-Id` of the response, when there was one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            StripeError::Api { request_id, .. } | StripeError::Decode { request_id, .. } => {
                request_id.as_deref()
            }
            _ => None,
        }
    }

    /// What to do about this error: see [`classify`].
    pub fn disposition(&self) -> Disposition {
        classify(self)
    }
}

/// The retry rule, in one place. `Stripe-Should-Retry` wins over status codes.
pub fn classify(err: &StripeError) -> Disposition {
    match err {
        StripeError::Connect(_) => Disposition::Transient,
        StripeError::NoResponse(_) => Disposition::OutcomeUnknown,
        StripeError::Config(_) => Disposition::Definitive,
        StripeError::Decode { status, .. } => {
            if *status >= 500 {
                Disposition::Transient
            } else {
                Disposition::OutcomeUnknown
            }
        }
        StripeError::Api {
            status,
            error,
            should_retry,
            rate_limited_reason,
            ..
        } => {
            match should_retry {
                Some(true) => return Disposition::Transient,
                Some(false) => return Disposition::Definitive,
                None => {}
            }
            match *status {
                409 => Disposition::Transient,
                429 if error.code.as_deref() == Some("lock_timeout") => Disposition::Transient,
                429 if rate_limited_reason.is_some() => Disposition::RateLimited,
                429 => Disposition::RateLimited,
                s if s >= 500 => Disposition::Transient,
                _ => Disposition::Definitive,
            }
        }
    }
}
