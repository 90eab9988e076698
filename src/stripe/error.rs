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
    /// Stripe answered with an object of the other mode than the key's (`livemode`): it is
    /// neither stored nor acted on. Never retried.
    #[error("Stripe answered with a {} mode object to a {} mode key; refused", if *.livemode { "live" } else { "test" }, if *.livemode { "test" } else { "live" })]
    WrongMode {
        livemode: bool,
        request_id: Option<String>,
    },
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
            StripeError::Api { request_id, .. }
            | StripeError::Decode { request_id, .. }
            | StripeError::WrongMode { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// What to do about this error: see [`classify`].
    pub fn disposition(&self) -> Disposition {
        classify(self)
    }
}

/// The retry rule, in one place. `Stripe-Should-Retry` wins over status codes.
///
/// | failure | disposition |
/// | --- | --- |
/// | connection refused, DNS, TLS handshake (`Connect`: never sent) | transient |
/// | timeout or connection lost after sending (`NoResponse`) | outcome unknown |
/// | `Stripe-Should-Retry: true` / `false` | transient / definitive |
/// | 429 with `Stripe-Rate-Limited-Reason` (a limiter) | rate-limited |
/// | 429 `lock_timeout` (object lock contention) | transient |
/// | any other 429 (`rate_limit`) | rate-limited |
/// | 409 (same key in flight, conflict) | transient |
/// | 5xx | transient |
/// | any other status | definitive |
/// | a body that is not Stripe's: 2xx (the work was done, its result unread) | outcome unknown |
/// | a body that is not Stripe's with an error status (a proxy's page) | as its status |
/// | bad client settings | definitive |
pub fn classify(err: &StripeError) -> Disposition {
    match err {
        StripeError::Connect(_) => Disposition::Transient,
        StripeError::NoResponse(_) => Disposition::OutcomeUnknown,
        StripeError::Config(_) | StripeError::WrongMode { .. } => Disposition::Definitive,
        StripeError::Decode { status, .. } => {
            if *status < 400 {
                Disposition::OutcomeUnknown
            } else {
                by_status(*status, None, false)
            }
        }
        StripeError::Api {
            status,
            error,
            should_retry,
            rate_limited_reason,
            ..
        } => match should_retry {
            Some(true) => Disposition::Transient,
            Some(false) => Disposition::Definitive,
            None => by_status(
                *status,
                error.code.as_deref(),
                rate_limited_reason.is_some(),
            ),
        },
    }
}

fn by_status(status: u16, code: Option<&str>, rate_limited: bool) -> Disposition {
    match status {
        429 if rate_limited => Disposition::RateLimited,
        429 if code == Some("lock_timeout") => Disposition::Transient,
        429 => Disposition::RateLimited,
        409 => Disposition::Transient,
        s if s >= 500 => Disposition::Transient,
        _ => Disposition::Definitive,
    }
}

/// Whether the client may send a failed request again, with the same idempotency key.
///
/// `repeatable`: sending the request twice cannot do its work twice (a GET or DELETE, or a
/// POST carrying an idempotency key, whose stored result Stripe replays).
///
/// - transient: yes, except a 5xx (without `Stripe-Should-Retry: true`) on a request that is
///   not repeatable: Stripe may have done the work, and without a key a second send could do
///   it again, so the caller must reconcile;
/// - rate-limited: yes (nothing happened), after a longer wait;
/// - outcome unknown: only when repeatable;
/// - definitive: never.
pub fn retry_allowed(err: &StripeError, repeatable: bool) -> bool {
    match classify(err) {
        Disposition::Definitive => false,
        Disposition::RateLimited => true,
        Disposition::OutcomeUnknown => repeatable,
        Disposition::Transient => repeatable || !may_have_executed(err),
    }
}

/// A server error that Stripe did not mark as safe to retry: the work may have been done.
fn may_have_executed(err: &StripeError) -> bool {
    match err {
        StripeError::Api {
            status,
            should_retry,
            ..
        } => *status >= 500 && *should_retry != Some(true),
        StripeError::Decode { status, .. } => *status >= 500,
        StripeError::NoResponse(_) => true,
        StripeError::Connect(_) | StripeError::Config(_) => false,
        // The request was carried out, in the other world.
        StripeError::WrongMode { .. } => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::wire::{ApiErrorObject, ErrorType};
    use Disposition::*;

    fn api(
        status: u16,
        code: Option<&str>,
        retry: Option<bool>,
        reason: Option<&str>,
    ) -> StripeError {
        StripeError::Api {
            status,
            error: Box::new(ApiErrorObject::new(
                ErrorType::InvalidRequestError,
                code,
                "m",
            )),
            request_id: Some("req_1".into()),
            should_retry: retry,
            rate_limited_reason: reason.map(str::to_string),
        }
    }

    fn decode(status: u16) -> StripeError {
        StripeError::Decode {
            status,
            message: "not json".into(),
            request_id: None,
        }
    }

    /// Every row of the rule: (error, disposition, retried when repeatable, retried when not).
    #[test]
    fn classify_table() {
        let rows: Vec<(&str, StripeError, Disposition, bool, bool)> = vec![
            (
                "connect",
                StripeError::Connect("refused".into()),
                Transient,
                true,
                true,
            ),
            (
                "no response",
                StripeError::NoResponse("timeout".into()),
                OutcomeUnknown,
                true,
                false,
            ),
            (
                "config",
                StripeError::Config("bad".into()),
                Definitive,
                false,
                false,
            ),
            (
                "400",
                api(400, Some("parameter_missing"), None, None),
                Definitive,
                false,
                false,
            ),
            (
                "400 reader busy",
                api(400, Some("terminal_reader_busy"), None, None),
                Definitive,
                false,
                false,
            ),
            ("401", api(401, None, None, None), Definitive, false, false),
            (
                "402 card",
                api(402, Some("card_declined"), None, None),
                Definitive,
                false,
                false,
            ),
            (
                "404",
                api(404, Some("resource_missing"), None, None),
                Definitive,
                false,
                false,
            ),
            (
                "409",
                api(409, Some("idempotency_key_in_use"), None, None),
                Transient,
                true,
                true,
            ),
            ("424", api(424, None, None, None), Definitive, false, false),
            (
                "429 lock_timeout",
                api(429, Some("lock_timeout"), None, None),
                Transient,
                true,
                true,
            ),
            (
                "429 rate_limit",
                api(429, Some("rate_limit"), None, None),
                RateLimited,
                true,
                true,
            ),
            (
                "429 limiter",
                api(429, Some("rate_limit"), None, Some("global-rate")),
                RateLimited,
                true,
                true,
            ),
            (
                "429 limiter wins over lock",
                api(
                    429,
                    Some("lock_timeout"),
                    None,
                    Some("endpoint-concurrency"),
                ),
                RateLimited,
                true,
                true,
            ),
            ("500", api(500, None, None, None), Transient, true, false),
            ("503", api(503, None, None, None), Transient, true, false),
            (
                "should-retry true on 400",
                api(400, None, Some(true), None),
                Transient,
                true,
                true,
            ),
            (
                "should-retry true on 500",
                api(500, None, Some(true), None),
                Transient,
                true,
                true,
            ),
            (
                "should-retry false on 500",
                api(500, None, Some(false), None),
                Definitive,
                false,
                false,
            ),
            (
                "should-retry false on 409",
                api(409, None, Some(false), None),
                Definitive,
                false,
                false,
            ),
            (
                "should-retry false on 429 lock",
                api(429, Some("lock_timeout"), Some(false), None),
                Definitive,
                false,
                false,
            ),
            ("unreadable 200", decode(200), OutcomeUnknown, true, false),
            ("unreadable 404", decode(404), Definitive, false, false),
            ("unreadable 409", decode(409), Transient, true, true),
            ("unreadable 429", decode(429), RateLimited, true, true),
            ("unreadable 502", decode(502), Transient, true, false),
        ];
        for (name, err, want, repeatable, not_repeatable) in rows {
            assert_eq!(classify(&err), want, "{name}");
            assert_eq!(err.disposition(), want, "{name}");
            assert_eq!(retry_allowed(&err, true), repeatable, "{name} (repeatable)");
            assert_eq!(
                retry_allowed(&err, false),
                not_repeatable,
                "{name} (not repeatable)"
            );
        }
    }
}
