//! The registry's records for the fleet: readerd's own domain types, not Stripe's wire
//! types. They carry what readerd decides with (who a merchant is and whether it may be
//! charged; which reader serves whom) plus `synced_at`, the last time Stripe confirmed the
//! object, which is how a sync tells "gone from Stripe" from "written while I was listing".
//!
//! Times are Unix milliseconds. Fields added later must be `#[serde(default)]` so that
//! older records still read.

use serde::{Deserialize, Serialize};

/// How a merchant's payments are created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChargeType {
    /// The PaymentIntent lives on the connected account (`Stripe-Account`).
    Direct,
    /// The PaymentIntent lives on the platform with `transfer_data[destination]`.
    Destination,
}

impl ChargeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChargeType::Direct => "direct",
            ChargeType::Destination => "destination",
        }
    }
}

/// A merchant: a Connect account readerd may charge for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MerchantRecord {
    /// readerd's own name for it (`bakery`), used in the API and in tokens' scopes.
    pub id: String,
    /// The connected account (`acct_…`).
    pub account: String,
    pub display_name: String,
    pub charge_type: ChargeType,
    /// A fixed platform fee per payment, in minor units.
    #[serde(default)]
    pub application_fee_amount: Option<i64>,
    /// ISO country of the account: locations serving it must be in the same country.
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub default_currency: Option<String>,
    /// `capabilities.card_payments` as Stripe last reported it (`active`, `inactive`,
    /// `pending`, or `none` when the capability is absent).
    pub card_payments: String,
    pub charges_enabled: bool,
    /// `requirements.disabled_reason`, when Stripe gives one.
    #[serde(default)]
    pub disabled_reason: Option<String>,
    /// Why the last re-check failed, when it did (the status above is then the older one).
    #[serde(default)]
    pub check_error: Option<String>,
    /// When Stripe last confirmed the account.
    pub checked_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl MerchantRecord {
    /// Whether payments may be taken for it: `card_payments` active and charges enabled.
    pub fn can_charge(&self) -> bool {
        self.card_payments == "active" && self.charges_enabled
    }
}

/// A postal address, as readerd keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressRecord {
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

/// A Terminal location, owned by the platform.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocationRecord {
    /// `tml_…`.
    pub id: String,
    pub display_name: String,
    pub address: AddressRecord,
    /// The merchant it mainly serves (grouping only: it does not fence readers in). Kept
    /// in Stripe as `metadata[readerd_merchant]` too, so a sync restores it.
    #[serde(default)]
    pub merchant: Option<String>,
    /// No longer on Stripe (seen missing by a sync).
    #[serde(default)]
    pub gone: bool,
    pub synced_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A smart reader, owned by the platform.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReaderRecord {
    /// `tmr_…`.
    pub id: String,
    pub label: String,
    #[serde(default)]
    pub location: Option<String>,
    pub serial_number: String,
    pub device_type: String,
    /// `online` or `offline`, as Stripe last reported it.
    pub status: String,
    /// Stripe's `last_seen_at` (milliseconds).
    #[serde(default)]
    pub last_seen_at: Option<i64>,
    /// The merchants it may serve; `None` = every merchant.
    #[serde(default)]
    pub merchants: Option<Vec<String>>,
    /// No longer on Stripe (seen missing by a sync).
    #[serde(default)]
    pub gone: bool,
    pub synced_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ReaderRecord {
    /// Whether the reader may take payments for `merchant` (its allowlist permits it).
    pub fn serves(&self, merchant: &str) -> bool {
        match &self.merchants {
            None => true,
            Some(list) => list.iter().any(|m| m == merchant),
        }
    }
}
