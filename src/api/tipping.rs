//! Tipping per location (admin): `POST /v1/locations/{id}` `{"tipping": {...} | null}`.
//! The fleet keeps a Terminal Configuration on Stripe for the location (`fleet::tipping`);
//! the location's answer shows the configuration and its tipping.

use super::auth::Admin;
use super::error::{ApiError, Envelope};
use super::fleet::{caller_key, present, LocationView};
use super::json::ApiJson;
use super::{AppState, Routes};
use crate::fleet::{LocationTipping, TipSuggestions};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

pub fn routes() -> Routes {
    Routes::new().post("/v1/locations/{id}", update_location)
}

/// One currency's tip suggestions: at most three percentages and three fixed amounts
/// (minor units); `smart_tip_threshold` (minor units) shows the fixed amounts below it and
/// the percentages from it, so it needs both.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TipSuggestionsBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentages: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_amounts: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smart_tip_threshold: Option<i64>,
}

/// `POST /v1/locations/{id}`: `{"tipping": {"usd": {...}}}` sets the location's tipping,
/// `{"tipping": null}` removes it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateLocationBody {
    /// Tip suggestions by lowercase currency code (`usd`, `eur`, `gbp`, `cad`, `aud`, …); the
    /// same keys for every currency, as Stripe requires.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<BTreeMap<String, TipSuggestionsBody>>)]
    pub tipping: Option<Option<BTreeMap<String, TipSuggestionsBody>>>,
}

/// The record's tipping in API answers.
pub(super) fn view(t: &LocationTipping) -> BTreeMap<String, TipSuggestionsBody> {
    t.iter()
        .map(|(c, s)| {
            (
                c.clone(),
                TipSuggestionsBody {
                    percentages: s.percentages.clone(),
                    fixed_amounts: s.fixed_amounts.clone(),
                    smart_tip_threshold: s.smart_tip_threshold,
                },
            )
        })
        .collect()
}

fn to_record(t: BTreeMap<String, TipSuggestionsBody>) -> LocationTipping {
    t.into_iter()
        .map(|(c, s)| {
            (
                c,
                TipSuggestions {
                    percentages: s.percentages,
                    fixed_amounts: s.fixed_amounts,
                    smart_tip_threshold: s.smart_tip_threshold,
                },
            )
        })
        .collect()
}

#[utoipa::path(
    post,
    path = "/v1/locations/{id}",
    tag = "locations",
    summary = "Set or remove a location's tipping (a Terminal Configuration on Stripe, attached to the location)",
    params(("id" = String, Path, description = "The location's id (`tml_…`)"), ("Idempotency-Key" = Option<String>, Header, description = "Repeats the Stripe calls this request causes safely when sent again (1 to 200 characters, scoped to the client)")),
    request_body = UpdateLocationBody,
    responses((status = 200, description = "The location with its configuration and tipping", body = LocationView), (status = 400, description = "Bad input (the message names it), or Stripe refused the request for good", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 403, description = "The caller is not an admin", body = Envelope), (status = 404, description = "No such location", body = Envelope), (status = 409, description = "The location is gone from Stripe, or its configuration is shared with another location", body = Envelope), (status = 503, description = "Stripe cannot be reached right now, or readerd is shutting down", body = Envelope)),
    security(("bearer" = []))
)]
pub(super) async fn update_location(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateLocationBody>,
) -> Result<Json<LocationView>, ApiError> {
    let key = caller_key(&caller, &headers)?;
    let Some(tipping) = body.tipping else {
        return Err(ApiError::bad_request(
            "nothing to update: give `tipping` (suggestions by currency, or null to remove them)",
        ));
    };
    let record = state
        .fleet
        .set_tipping(&id, tipping.map(to_record), key.as_deref())
        .await?;
    Ok(Json((&record).into()))
}
