//! `POST /v1/connection_tokens`: connection tokens for points of sale that use a Terminal
//! SDK. A pos client may ask for its own merchants; the location, when given, must be one it
//! sees ([`super::scope`]) and belong to the account the token is made on (the fleet
//! decides, `location_owner_mismatch`). The answer carries `Cache-Control: no-store`; the
//! secret is in the answer only.

use super::error::{ApiError, Envelope};
use super::json::ApiJson;
use super::scope::{self, Object};
use super::{AppState, Caller, Routes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn routes() -> Routes {
    Routes::new().post("/v1/connection_tokens", create)
}

/// `POST /v1/connection_tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionTokenBody {
    pub merchant: String,
    /// Restricts the token to the readers of this location (`tml_…`).
    #[serde(default)]
    pub location: Option<String>,
}

/// A connection token in the API's answer.
#[derive(Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ConnectionTokenView {
    /// `pst_…`, for the SDK's token provider.
    pub secret: String,
    pub merchant: String,
    pub location: Option<String>,
    /// The account the token was made on: the merchant's (`direct`), or the platform's
    /// (`acct_…` when readerd knows it).
    pub account: Option<String>,
}

impl std::fmt::Debug for ConnectionTokenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionTokenView")
            .field("secret", &"<redacted>")
            .field("merchant", &self.merchant)
            .field("location", &self.location)
            .field("account", &self.account)
            .finish()
    }
}

#[utoipa::path(
    post,
    path = "/v1/connection_tokens",
    tag = "connection tokens",
    summary = "A connection token for a Terminal SDK, on the account that owns the merchant's SDK payments",
    request_body = ConnectionTokenBody,
    responses((status = 201, description = "The token (answered with Cache-Control: no-store; readerd keeps no copy)", body = ConnectionTokenView), (status = 400, description = "Bad input, or the location belongs to another account than the token's (location_owner_mismatch)", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such merchant or location, or not the caller's to see", body = Envelope), (status = 503, description = "Stripe cannot be reached right now, or readerd is shutting down", body = Envelope)),
    security(("bearer" = []))
)]
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ConnectionTokenBody>,
) -> Result<Response, ApiError> {
    scope::check(&caller, Object::Merchant(&body.merchant))?;
    if let Some(id) = &body.location {
        let l = state
            .fleet
            .location(id)?
            .ok_or_else(|| ApiError::not_found("location", id))?;
        scope::check(&caller, Object::Location(&l))?;
    }
    let issued = state
        .fleet
        .connection_token(&body.merchant, body.location.as_deref())
        .await?;
    let view = ConnectionTokenView {
        secret: issued.token.secret,
        merchant: body.merchant,
        location: issued.token.location.or(body.location),
        account: issued.account.or_else(|| state.fleet.platform_account()),
    };
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(view),
    )
        .into_response())
}
