//! The API's error: a status, a machine-readable code and a message for the client, plus an
//! optional detail for the log only. Serialised as
//! `{"error": {"code", "message", "request_id"}}`: the response carries an [`Envelope`]
//! extension, and `request_id::layer` writes the body with the request's id.

use crate::fleet::FleetError;
use crate::store::StoreError;
use crate::stripe::error::{Disposition, StripeError};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable (`not_found`, `invalid_request`, `stripe_unavailable`, …).
    pub code: String,
    /// For the client: what went wrong and, where it helps, what to do.
    pub message: String,
    /// For the log only (never sent).
    pub internal: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            internal: None,
        }
    }

    /// 400 `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found` for an object of `kind`.
    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {kind} {id:?}"),
        )
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 503 `stripe_unavailable`.
    pub fn stripe_unavailable(detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stripe_unavailable",
            format!("Stripe could not be reached; try again later ({detail})"),
        );
        e.internal = Some(detail);
        e
    }

    /// 500 `internal`; the detail goes to the log only.
    pub fn internal(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the daemon's log",
        );
        e.internal = Some(detail.into());
        e
    }
}

/// Every error answer's body: `{"error": {...}}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Envelope {
    pub error: ErrorBody,
}

/// What went wrong, for the client.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable and machine-readable (`not_found`, `invalid_request`, `queue_full`, Stripe's
    /// own code for its definitive refusals, …).
    pub code: String,
    /// For a person: what went wrong and, where it helps, what to do.
    pub message: String,
    /// The request's id, as in its `Request-Id` header (quote it when reporting a problem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Envelope {
    /// The body, with the request's id when known.
    pub fn to_json(&self, request_id: Option<&str>) -> Value {
        let mut e = self.clone();
        if let Some(id) = request_id {
            e.error.request_id = Some(id.to_string());
        }
        serde_json::to_value(e).unwrap_or(Value::Null)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), code = %self.code, detail = self.internal.as_deref().unwrap_or(""), "{}", self.message);
        } else {
            tracing::debug!(status = self.status.as_u16(), code = %self.code, "{}", self.message);
        }
        let envelope = Envelope {
            error: ErrorBody {
                code: self.code,
                message: self.message,
                request_id: None,
            },
        };
        let mut response = (self.status, Json(envelope.to_json(None))).into_response();
        response.extensions_mut().insert(envelope);
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(format!("store: {e}"))
    }
}

impl From<StripeError> for ApiError {
    /// Stripe's definitive refusals become 400 (or 404 for a missing object) with Stripe's
    /// code and message; anything that may succeed later is 503.
    fn from(e: StripeError) -> Self {
        match e.disposition() {
            Disposition::Definitive => {}
            Disposition::RateLimited => {
                return ApiError::stripe_unavailable(format!("rate limited by Stripe: {e}"))
            }
            Disposition::Transient | Disposition::OutcomeUnknown => {
                return ApiError::stripe_unavailable(e.to_string())
            }
        }
        match &e {
            StripeError::Api { status, error, .. } => {
                let message = error
                    .message
                    .clone()
                    .unwrap_or_else(|| "(no message)".to_string());
                match *status {
                    401 => {
                        let mut err = ApiError::new(
                            StatusCode::BAD_GATEWAY,
                            "stripe_auth",
                            format!("Stripe refused the platform key: {message}"),
                        );
                        err.internal = Some(e.to_string());
                        err
                    }
                    _ => {
                        let status = if *status == 404 {
                            StatusCode::NOT_FOUND
                        } else {
                            StatusCode::BAD_REQUEST
                        };
                        let code = error
                            .code
                            .clone()
                            .unwrap_or_else(|| "stripe_refused".to_string());
                        ApiError::new(status, code, format!("Stripe refused: {message}"))
                    }
                }
            }
            StripeError::Config(m) => ApiError::internal(format!("stripe client: {m}")),
            StripeError::WrongMode { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "livemode_mismatch", e.to_string())
            }
            other => ApiError::stripe_unavailable(other.to_string()),
        }
    }
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::NotFound { kind, id } => ApiError::not_found(kind, &id),
            FleetError::Invalid(m) => ApiError::bad_request(m),
            FleetError::Conflict(m) => ApiError::conflict(m),
            e @ FleetError::CountryMismatch { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "country_mismatch", e.to_string())
            }
            FleetError::OwnerMismatch(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "location_owner_mismatch", m)
            }
            e @ FleetError::AccountUnusable { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "account_unusable", e.to_string())
            }
            FleetError::Stripe(s) => s.into(),
            FleetError::Store(s) => s.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::wire::{ApiErrorObject, ErrorType};

    fn api(status: u16, code: Option<&str>, should_retry: Option<bool>) -> StripeError {
        StripeError::Api {
            status,
            error: Box::new(ApiErrorObject::new(
                ErrorType::InvalidRequestError,
                code,
                "No such account: 'acct_x'",
            )),
            request_id: None,
            should_retry,
            rate_limited_reason: None,
        }
    }

    #[test]
    fn stripe_errors_map_to_statuses_the_client_can_act_on() {
        let cases: Vec<(StripeError, u16, &str)> = vec![
            (
                api(404, Some("resource_missing"), None),
                404,
                "resource_missing",
            ),
            (
                api(400, Some("parameter_invalid"), None),
                400,
                "parameter_invalid",
            ),
            (api(400, None, None), 400, "stripe_refused"),
            (
                api(403, Some("account_invalid"), None),
                400,
                "account_invalid",
            ),
            (api(401, None, None), 502, "stripe_auth"),
            (api(500, None, None), 503, "stripe_unavailable"),
            (api(400, None, Some(true)), 503, "stripe_unavailable"),
            (
                api(429, Some("rate_limit"), None),
                503,
                "stripe_unavailable",
            ),
            (
                StripeError::Connect("refused".into()),
                503,
                "stripe_unavailable",
            ),
            (
                StripeError::NoResponse("timeout".into()),
                503,
                "stripe_unavailable",
            ),
            (StripeError::Config("bad".into()), 500, "internal"),
        ];
        for (err, status, code) in cases {
            let shown = err.to_string();
            let e = ApiError::from(err);
            assert_eq!(
                (e.status.as_u16(), e.code.as_str()),
                (status, code),
                "{shown}"
            );
        }
        let e = ApiError::from(api(404, Some("resource_missing"), None));
        assert!(
            e.message.contains("No such account"),
            "Stripe's reason is kept"
        );
        let e = ApiError::from(StripeError::Config("secret detail".into()));
        assert!(
            !e.message.contains("secret detail"),
            "internal details stay in the log"
        );
    }
}
