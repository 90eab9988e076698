//! Fleet routes: merchants (admin), locations and readers (admin to change, pos may read
//! what concerns its merchants).
//!
//! What a pos client sees: a location grouped under another merchant, or a reader whose
//! allowlist names none of its merchants, does not exist for it (404, absent from lists);
//! a reader's allowlist is shown reduced to the pos client's own merchants.
//!
//! Longer than 600 lines on purpose: the merchant, location and reader routes with their
//! typed views, each handler carrying its OpenAPI annotation (about a third of the lines);
//! one route per handler.

use super::auth::Admin;
use super::error::ApiError;
use super::error::Envelope;
use super::json::{timestamp, ApiJson};
use super::scope::{self, Object};
use super::{AppState, Caller, Routes};
use crate::fleet::{
    AddressRecord, ChargeType, LocationRecord, MerchantRecord, NewLocation, NewMerchant, NewReader,
    ReaderRecord, Settlement, SyncReport, Upsert, PLATFORM_OWNER,
};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

pub fn routes() -> Routes {
    Routes::new()
        .post("/v1/merchants", add_merchant)
        .get("/v1/merchants", list_merchants)
        .get("/v1/merchants/{id}", show_merchant)
        .post("/v1/merchants/{id}/check", check_merchant)
        .post("/v1/locations", create_location)
        .get("/v1/locations", list_locations)
        .get("/v1/locations/{id}", show_location)
        .post("/v1/readers", register_reader)
        .get("/v1/readers", list_readers)
        .post("/v1/readers/sync", sync_readers)
        .get("/v1/readers/{id}", show_reader)
        .post("/v1/readers/{id}", update_reader)
}

// Wire shapes ---------------------------------------------------------------------------

/// `POST /v1/merchants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMerchantBody {
    pub id: String,
    pub account: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default = "default_charge_type")]
    pub charge_type: ChargeType,
    /// Destination charges: `merchant` (the default, `on_behalf_of` the merchant) or
    /// `platform`.
    #[serde(default)]
    pub settlement: Settlement,
    #[serde(default)]
    pub application_fee_amount: Option<i64>,
    /// The most a reviewed payment (`"flow": "review"`) may be surcharged at its confirm,
    /// in minor units; absent: no surcharge.
    #[serde(default)]
    pub surcharge_max: Option<i64>,
}

fn default_charge_type() -> ChargeType {
    ChargeType::Direct
}

/// A merchant in API answers.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct MerchantView {
    pub id: String,
    pub account: String,
    pub display_name: String,
    pub charge_type: ChargeType,
    pub settlement: Settlement,
    pub application_fee_amount: Option<i64>,
    /// The most a reviewed payment may be surcharged at its confirm (minor units); `null`:
    /// no surcharge.
    #[serde(default)]
    pub surcharge_max: Option<i64>,
    pub country: Option<String>,
    pub default_currency: Option<String>,
    /// Stripe's `capabilities.card_payments` (`active`, `inactive`, `pending`, `none`).
    pub card_payments: String,
    pub card_payments_active: bool,
    pub charges_enabled: bool,
    /// Whether payments may be taken (card_payments active and charges enabled); when
    /// false, payments for this merchant fail with `merchant_not_enabled`.
    pub can_charge: bool,
    pub disabled_reason: Option<String>,
    pub check_error: Option<String>,
    pub checked_at: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&MerchantRecord> for MerchantView {
    fn from(m: &MerchantRecord) -> Self {
        MerchantView {
            id: m.id.clone(),
            account: m.account.clone(),
            display_name: m.display_name.clone(),
            charge_type: m.charge_type,
            settlement: m.settlement,
            application_fee_amount: m.application_fee_amount,
            surcharge_max: m.surcharge_max,
            country: m.country.clone(),
            default_currency: m.default_currency.clone(),
            card_payments: m.card_payments.clone(),
            card_payments_active: m.card_payments == "active",
            charges_enabled: m.charges_enabled,
            can_charge: m.can_charge(),
            disabled_reason: m.disabled_reason.clone(),
            check_error: m.check_error.clone(),
            checked_at: timestamp(m.checked_at),
            created_at: timestamp(m.created_at),
            updated_at: timestamp(m.updated_at),
        }
    }
}

/// An address, in requests and answers.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressBody {
    #[serde(default)]
    pub line1: Option<String>,
    #[serde(default)]
    pub line2: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub postal_code: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
}

impl From<&AddressRecord> for AddressBody {
    fn from(a: &AddressRecord) -> Self {
        AddressBody {
            line1: a.line1.clone(),
            line2: a.line2.clone(),
            city: a.city.clone(),
            state: a.state.clone(),
            postal_code: a.postal_code.clone(),
            country: a.country.clone(),
        }
    }
}

/// `POST /v1/locations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLocationBody {
    pub display_name: String,
    pub address: AddressBody,
    #[serde(default)]
    pub merchant: Option<String>,
    /// `"platform"` (the default) or the id of the merchant whose connected account owns it.
    #[serde(default)]
    pub owner: Option<String>,
}

/// `owner` as the API spells it (`"platform"` or a merchant id) → the registry's form.
fn owner_of(owner: Option<String>) -> Option<String> {
    owner.filter(|o| o != PLATFORM_OWNER)
}

/// The registry's owner → the API's spelling.
pub(super) fn owner_name(owner: &Option<String>) -> String {
    owner.clone().unwrap_or_else(|| PLATFORM_OWNER.to_string())
}

/// A location in API answers.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LocationView {
    pub id: String,
    /// `"platform"` or the merchant whose connected account owns it.
    pub owner: String,
    pub display_name: String,
    pub address: AddressBody,
    pub merchant: Option<String>,
    /// Deleted on Stripe (seen missing by a sync).
    pub gone: bool,
    /// The Terminal Configuration attached to it on Stripe (`tmc_…`), if any.
    #[serde(default)]
    pub configuration: Option<String>,
    /// That configuration's tip suggestions by currency; `null` = no tipping set.
    #[serde(default)]
    pub tipping: Option<std::collections::BTreeMap<String, super::tipping::TipSuggestionsBody>>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&LocationRecord> for LocationView {
    fn from(l: &LocationRecord) -> Self {
        LocationView {
            id: l.id.clone(),
            owner: owner_name(&l.owner),
            display_name: l.display_name.clone(),
            address: (&l.address).into(),
            merchant: l.merchant.clone(),
            gone: l.gone,
            configuration: l.configuration.clone(),
            tipping: l.tipping.as_ref().map(super::tipping::view),
            created_at: timestamp(l.created_at),
            updated_at: timestamp(l.updated_at),
        }
    }
}

/// `POST /v1/readers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterReaderBody {
    pub registration_code: String,
    #[serde(default)]
    pub label: Option<String>,
    pub location: String,
    /// The merchants it may serve; absent = every merchant.
    #[serde(default)]
    pub merchants: Option<Vec<String>>,
    /// `"platform"` (the default) or the id of the merchant whose connected account owns
    /// it; a merchant-owned reader takes its owner's payments only.
    #[serde(default)]
    pub owner: Option<String>,
}

/// `POST /v1/readers/{id}`: `{"merchants": [...]}` sets the allowlist, `{"merchants": null}`
/// clears it (the reader then serves every merchant).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateReaderBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub merchants: Option<Option<Vec<String>>>,
}

/// Tells a field that is present but `null` (`Some(None)`) from an absent one (`None`).
pub(super) fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A reader in API answers: the registry entry with its live state.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ReaderView {
    pub id: String,
    /// `"platform"` or the merchant whose connected account owns it.
    pub owner: String,
    pub label: String,
    pub location: Option<String>,
    pub serial_number: String,
    pub device_type: String,
    /// `online` or `offline`, as Stripe last reported it.
    pub status: String,
    /// When the reader last reported to Stripe (as of `checked_at`).
    pub last_seen_at: Option<String>,
    /// When readerd last read this reader's state from Stripe (sync, registration, a
    /// payment's reader read, or `?refresh=true`).
    pub checked_at: String,
    /// An action of ours is in flight on it.
    pub busy: bool,
    /// Commands waiting for it.
    pub queue_depth: usize,
    /// The readerd instance (`cluster.instance`) whose worker runs it; `null` for a reader
    /// gone from Stripe.
    #[serde(default)]
    pub worker: Option<String>,
    /// The merchants it may serve; `null` = every merchant.
    pub merchants: Option<Vec<String>>,
    /// Deleted on Stripe (seen missing by a sync).
    pub gone: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// Which instance works each reader: this one on one machine; on a shared store, the
/// holder of the reader's lease (none while no instance holds it).
enum Workers {
    ThisInstance(String),
    Leases(std::collections::HashMap<String, String>),
}

impl Workers {
    fn read(state: &AppState) -> Workers {
        let store = state.registry.store();
        if store.backend() != "postgres" {
            return Workers::ThisInstance(state.config.cluster.instance_name());
        }
        match store.lease_holders() {
            Ok(holders) => Workers::Leases(holders.into_iter().collect()),
            Err(e) => {
                tracing::warn!(error = %e, "lease holders unreadable");
                Workers::Leases(Default::default())
            }
        }
    }

    fn of(&self, reader: &str) -> Option<String> {
        match self {
            Workers::ThisInstance(name) => Some(name.clone()),
            Workers::Leases(l) => l.get(&crate::payments::reader_lease(reader)).cloned(),
        }
    }
}

fn reader_view(
    state: &AppState,
    caller: &Caller,
    r: &ReaderRecord,
    workers: &Workers,
) -> ReaderView {
    let live = state.live.reader(&r.id);
    ReaderView {
        id: r.id.clone(),
        owner: owner_name(&r.owner),
        label: r.label.clone(),
        location: r.location.clone(),
        serial_number: r.serial_number.clone(),
        device_type: r.device_type.clone(),
        status: r.status.clone(),
        last_seen_at: r.last_seen_at.map(timestamp),
        checked_at: timestamp(r.synced_at),
        busy: live.busy,
        queue_depth: live.queue_depth,
        worker: if r.gone { None } else { workers.of(&r.id) },
        merchants: r.merchants.as_ref().map(|list| {
            list.iter()
                .filter(|m| scope::allows(caller, Object::Merchant(m)))
                .cloned()
                .collect()
        }),
        gone: r.gone,
        created_at: timestamp(r.created_at),
        updated_at: timestamp(r.updated_at),
    }
}

/// The caller's `Idempotency-Key`, scoped to the caller, for Stripe calls it causes.
pub(super) fn caller_key(caller: &Caller, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|k| !k.is_empty() && k.len() <= 200)
                .ok_or_else(|| {
                    ApiError::bad_request("Idempotency-Key must be 1 to 200 visible characters")
                })?;
            Ok(Some(format!("{}:{k}", caller.name)))
        }
    }
}

// Merchants -----------------------------------------------------------------------------

#[utoipa::path(
    post,
    path = "/v1/merchants",
    tag = "merchants",
    summary = "Add a merchant (its connected account is checked on Stripe), or update it",
    request_body = AddMerchantBody,
    responses((status = 201, description = "Added", body = MerchantView), (status = 200, description = "Already known: updated", body = MerchantView), (status = 400, description = "Bad input (the message names it), or Stripe refused the request for good", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 403, description = "The caller is not an admin", body = Envelope), (status = 503, description = "Stripe cannot be reached right now, or readerd is shutting down", body = Envelope)),
    security(("bearer" = []))
)]
async fn add_merchant(
    State(state): State<AppState>,
    Admin(_): Admin,
    ApiJson(body): ApiJson<AddMerchantBody>,
) -> Result<Response, ApiError> {
    let (record, how) = state
        .fleet
        .add_merchant(NewMerchant {
            id: body.id,
            account: body.account,
            display_name: body.display_name,
            charge_type: body.charge_type,
            settlement: body.settlement,
            application_fee_amount: body.application_fee_amount,
            surcharge_max: body.surcharge_max,
        })
        .await?;
    let status = match how {
        Upsert::Created => StatusCode::CREATED,
        Upsert::Updated => StatusCode::OK,
    };
    Ok((status, Json(MerchantView::from(&record))).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/merchants",
    tag = "merchants",
    summary = "Every merchant",
    responses((status = 200, description = "The merchants", body = Vec<MerchantView>), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 403, description = "The caller is not an admin", body = Envelope)),
    security(("bearer" = []))
)]
async fn list_merchants(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Json<Vec<MerchantView>>, ApiError> {
    Ok(Json(
        state
            .fleet
            .merchants()?
            .iter()
            .map(MerchantView::from)
            .collect(),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/merchants/{id}",
    tag = "merchants",
    summary = "One merchant",
    params(("id" = String, Path, description = "The merchant's id")),
    responses((status = 200, description = "The merchant", body = MerchantView), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 403, description = "The caller is not an admin", body = Envelope), (status = 404, description = "No such merchant, or not the caller's to see", body = Envelope)),
    security(("bearer" = []))
)]
async fn show_merchant(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<String>,
) -> Result<Json<MerchantView>, ApiError> {
    let m = state
        .fleet
        .merchant(&id)?
        .ok_or_else(|| ApiError::not_found("merchant", &id))?;
    Ok(Json((&m).into()))
}

#[utoipa::path(
    post,
    path = "/v1/merchants/{id}/check",
    tag = "merchants",
    summary = "Read the merchant's account on Stripe again",
    params(("id" = String, Path, description = "The merchant's id")),
    responses((status = 200, description = "The merchant as Stripe now shows it", body = MerchantView), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 403, description = "The caller is not an admin", body = Envelope), (status = 404, description = "No such merchant, or not the caller's to see", body = Envelope), (status = 503, description = "Stripe cannot be reached right now, or readerd is shutting down", body = Envelope)),
    security(("bearer" = []))
)]
async fn check_merchant(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<String>,
) -> Result<Json<MerchantView>, ApiError> {
    let m = state.fleet.check_merchant(&id).await?;
    Ok(Json((&m).into()))
}

// Locations -----------------------------------------------------------------------------

#[utoipa::path(
    post,
    path = "/v1/locations",
    tag = "locations",
    summary = "Create a location on Stripe",
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeats the Stripe calls this request causes safely when sent again (1 to 200 characters, scoped to the client)")),
    request_body = CreateLocationBody,
    responses((status = 201, description = "Created", body = LocationView), (status = 400, description = "Bad input (the message names it), or Stripe refused the request for good", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 403, description = "The caller is not an admin", body = Envelope), (status = 503, description = "Stripe cannot be reached right now, or readerd is shutting down", body = Envelope)),
    security(("bearer" = []))
)]
async fn create_location(
    State(state): State<AppState>,
    Admin(caller): Admin,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateLocationBody>,
) -> Result<(StatusCode, Json<LocationView>), ApiError> {
    let key = caller_key(&caller, &headers)?;
    let a = body.address;
    let record = state
        .fleet
        .create_location(
            NewLocation {
                display_name: body.display_name,
                address: AddressRecord {
                    line1: a.line1,
                    line2: a.line2,
                    city: a.city,
                    state: a.state,
                    postal_code: a.postal_code,
                    country: a.country,
                },
                merchant: body.merchant,
                owner: owner_of(body.owner),
            },
            key.as_deref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json((&record).into())))
}

#[utoipa::path(
    get,
    path = "/v1/locations",
    tag = "locations",
    summary = "The locations the caller may see",
    responses((status = 200, description = "The locations", body = Vec<LocationView>), (status = 401, description = "No token, or an unknown one", body = Envelope)),
    security(("bearer" = []))
)]
async fn list_locations(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<LocationView>>, ApiError> {
    Ok(Json(
        state
            .fleet
            .locations()?
            .iter()
            .filter(|l| scope::allows(&caller, Object::Location(l)))
            .map(LocationView::from)
            .collect(),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/locations/{id}",
    tag = "locations",
    summary = "One location",
    params(("id" = String, Path, description = "The location's id (`tml_…`)")),
    responses((status = 200, description = "The location", body = LocationView), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such location, or not the caller's to see", body = Envelope)),
    security(("bearer" = []))
)]
async fn show_location(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LocationView>, ApiError> {
    let l = state
        .fleet
        .location(&id)?
        .filter(|l| scope::allows(&caller, Object::Location(l)))
        .ok_or_else(|| ApiError::not_found("location", &id))?;
    Ok(Json((&l).into()))
}

// Readers -------------------------------------------------------------------------------

#[utoipa::path(
    post,
    path = "/v1/readers",
    tag = "readers",
    summary = "Register a reader with its registration code",
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeats the Stripe calls this request causes safely when sent again (1 to 200 characters, scoped to the client)")),
    request_body = RegisterReaderBody,
    responses((status = 201, description = "Registered", body = ReaderView), (status = 400, description = "Bad input (the message names it), or Stripe refused the request for good", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 403, description = "The caller is not an admin", body = Envelope), (status = 503, description = "Stripe cannot be reached right now, or readerd is shutting down", body = Envelope)),
    security(("bearer" = []))
)]
async fn register_reader(
    State(state): State<AppState>,
    Admin(caller): Admin,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RegisterReaderBody>,
) -> Result<(StatusCode, Json<ReaderView>), ApiError> {
    let key = caller_key(&caller, &headers)?;
    let record = state
        .fleet
        .register_reader(
            NewReader {
                registration_code: body.registration_code,
                label: body.label,
                location: body.location,
                merchants: body.merchants,
                owner: owner_of(body.owner),
            },
            key.as_deref(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(reader_view(
            &state,
            &caller,
            &record,
            &Workers::read(&state),
        )),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/readers",
    tag = "readers",
    summary = "The readers the caller may see",
    responses((status = 200, description = "The readers", body = Vec<ReaderView>), (status = 401, description = "No token, or an unknown one", body = Envelope)),
    security(("bearer" = []))
)]
async fn list_readers(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ReaderView>>, ApiError> {
    let workers = Workers::read(&state);
    Ok(Json(
        state
            .fleet
            .readers()?
            .iter()
            .filter(|r| scope::allows(&caller, Object::Reader(r)))
            .map(|r| reader_view(&state, &caller, r, &workers))
            .collect(),
    ))
}

/// `?refresh=true` reads the reader from Stripe first (one read); otherwise the registry's
/// state is shown.
fn wants_refresh(query: Option<&str>) -> Result<bool, ApiError> {
    let mut refresh = false;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match (k.as_ref(), v.as_ref()) {
            ("refresh", "true" | "1" | "") => refresh = true,
            ("refresh", "false" | "0") => refresh = false,
            ("refresh", other) => {
                return Err(ApiError::bad_request(format!(
                    "refresh must be true or false, not {other:?}"
                )))
            }
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?} (only `refresh`)"
                )))
            }
        }
    }
    Ok(refresh)
}

#[utoipa::path(
    get,
    path = "/v1/readers/{id}",
    tag = "readers",
    summary = "One reader, by id or label",
    params(("id" = String, Path, description = "The reader's id (`tmr_…`) or label"), ("refresh" = Option<bool>, Query, description = "Read the reader from Stripe first (one read)")),
    responses((status = 200, description = "The reader", body = ReaderView), (status = 400, description = "A bad query parameter", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such reader, or not the caller's to see", body = Envelope)),
    security(("bearer" = []))
)]
async fn show_reader(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<ReaderView>, ApiError> {
    let refresh = wants_refresh(query.as_deref())?;
    let mut r = state
        .fleet
        .find_reader(&id)?
        .filter(|r| scope::allows(&caller, Object::Reader(r)))
        .ok_or_else(|| ApiError::not_found("reader", &id))?;
    if refresh {
        r = state.fleet.refresh_reader(&r.id).await?;
    }
    Ok(Json(reader_view(
        &state,
        &caller,
        &r,
        &Workers::read(&state),
    )))
}

#[utoipa::path(
    post,
    path = "/v1/readers/{id}",
    tag = "readers",
    summary = "Set or clear a reader's merchant allowlist",
    params(("id" = String, Path, description = "The reader's id or label"), ("Idempotency-Key" = Option<String>, Header, description = "Repeats the Stripe calls this request causes safely when sent again (1 to 200 characters, scoped to the client)")),
    request_body = UpdateReaderBody,
    responses((status = 200, description = "The reader", body = ReaderView), (status = 400, description = "Bad input (the message names it), or Stripe refused the request for good", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 403, description = "The caller is not an admin", body = Envelope), (status = 404, description = "No such reader, or not the caller's to see", body = Envelope), (status = 503, description = "Stripe cannot be reached right now, or readerd is shutting down", body = Envelope)),
    security(("bearer" = []))
)]
async fn update_reader(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateReaderBody>,
) -> Result<Json<ReaderView>, ApiError> {
    let key = caller_key(&caller, &headers)?;
    let Some(merchants) = body.merchants else {
        return Err(ApiError::bad_request(
            "nothing to update: give `merchants` (a list, or null to serve every merchant)",
        ));
    };
    let r = state
        .fleet
        .find_reader(&id)?
        .ok_or_else(|| ApiError::not_found("reader", &id))?;
    let r = state
        .fleet
        .set_reader_merchants(&r.id, merchants, key.as_deref())
        .await?;
    Ok(Json(reader_view(
        &state,
        &caller,
        &r,
        &Workers::read(&state),
    )))
}

#[utoipa::path(
    post,
    path = "/v1/readers/sync",
    tag = "readers",
    summary = "Sync locations and readers with Stripe now",
    responses((status = 200, description = "What changed", body = SyncReport), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 403, description = "The caller is not an admin", body = Envelope), (status = 503, description = "Stripe cannot be reached right now, or readerd is shutting down", body = Envelope)),
    security(("bearer" = []))
)]
async fn sync_readers(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Json<SyncReport>, ApiError> {
    Ok(Json(state.fleet.sync().await?))
}
