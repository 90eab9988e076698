//! The registry's records for the fleet: readerd's own domain types, not Stripe's wire
//! types. They carry what readerd decides with (who a merchant is and whether it may be
//! charged; which reader serves whom) plus `synced_at`, the last time Stripe confirmed the
//! object, which is how a sync tells "gone from Stripe" from "written while I was listing".
//!
//! Times are [`Timestamp`]s (stored as RFC 3339 with milliseconds; records written when
//! they were stored as Unix milliseconds read as they are). Fields added later must be
//! `#[serde(default)]` so that older records still read.

use crate::clock::Timestamp;
use serde::{Deserialize, Serialize};

/// How a merchant's payments are created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChargeType {
    /// The PaymentIntent lives on the connected account (`Stripe-Account`).
    Direct,
    /// The PaymentIntent lives on the platform with `transfer_data[destination]`.
    Destination,
    /// The PaymentIntent lives on the platform with a `transfer_group`; readerd transfers
    /// the merchant's share after the capture (and may put several merchants in a basket).
    Separate,
}

impl ChargeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChargeType::Direct => "direct",
            ChargeType::Destination => "destination",
            ChargeType::Separate => "separate",
        }
    }
}

/// Which account settles a merchant's destination charges (Stripe's settlement merchant).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Settlement {
    /// The merchant's own account: the PaymentIntent carries `on_behalf_of`, so the charge
    /// settles in the merchant's country and currency, and the reader's location must be
    /// in the merchant's country.
    #[default]
    Merchant,
    /// The platform: no `on_behalf_of`; the location rule then applies to the platform's
    /// country, which Stripe checks when the payment reaches the reader.
    Platform,
}

impl Settlement {
    pub fn as_str(self) -> &'static str {
        match self {
            Settlement::Merchant => "merchant",
            Settlement::Platform => "platform",
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
    /// Who settles its destination charges (only `merchant` for direct charges).
    #[serde(default)]
    pub settlement: Settlement,
    /// A fixed platform fee per payment, in minor units.
    #[serde(default)]
    pub application_fee_amount: Option<i64>,
    /// The most a reviewed payment may be surcharged at its confirm, in minor units
    /// (`None`: no surcharge).
    #[serde(default)]
    pub surcharge_max: Option<i64>,
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
    pub checked_at: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl MerchantRecord {
    /// Whether payments may be taken for it: `card_payments` active and charges enabled.
    pub fn can_charge(&self) -> bool {
        self.card_payments == "active" && self.charges_enabled
    }

    /// The country of the account its payments settle on, when readerd knows it: the
    /// merchant's, unless the platform settles its destination charges, or its charges are
    /// separate (the platform's charge).
    pub fn settlement_country(&self) -> Option<String> {
        match (self.charge_type, self.settlement) {
            (ChargeType::Destination, Settlement::Platform) | (ChargeType::Separate, _) => None,
            _ => self.country.clone(),
        }
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

/// A Terminal location, owned by the platform or by one merchant's connected account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocationRecord {
    /// `tml_…`.
    pub id: String,
    /// The merchant whose connected account owns it (every call about it carries that
    /// account's `Stripe-Account`); `None` = the platform.
    #[serde(default)]
    pub owner: Option<String>,
    pub display_name: String,
    pub address: AddressRecord,
    /// The merchant it mainly serves (grouping only: it does not fence readers in). Kept
    /// in Stripe as `metadata[readerd_merchant]` too, so a sync restores it.
    #[serde(default)]
    pub merchant: Option<String>,
    /// No longer on Stripe (seen missing by a sync).
    #[serde(default)]
    pub gone: bool,
    /// The Terminal Configuration attached on Stripe (`configuration_overrides`, `tmc_…`).
    #[serde(default)]
    pub configuration: Option<String>,
    /// That configuration's tipping, by currency, as the last write or sync saw it.
    #[serde(default)]
    pub tipping: Option<super::tipping::LocationTipping>,
    /// A tipping write not known to have finished: its step and the idempotency key that
    /// was on disk before the step was sent (see `fleet::tipping`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tipping_write: Option<super::tipping::TippingWrite>,
    pub synced_at: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A smart reader, owned by the platform (shared by merchants) or by one merchant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReaderRecord {
    /// `tmr_…`.
    pub id: String,
    /// The merchant whose connected account owns it: it takes that merchant's payments
    /// only, always as direct charges, and every call about it carries that account's
    /// `Stripe-Account`. `None` = the platform.
    #[serde(default)]
    pub owner: Option<String>,
    pub label: String,
    #[serde(default)]
    pub location: Option<String>,
    pub serial_number: String,
    pub device_type: String,
    /// `online` or `offline`, as Stripe last reported it.
    pub status: String,
    /// Stripe's `last_seen_at`.
    #[serde(default)]
    pub last_seen_at: Option<Timestamp>,
    /// The merchants it may serve; `None` = every merchant.
    #[serde(default)]
    pub merchants: Option<Vec<String>>,
    /// No longer on Stripe (seen missing by a sync).
    #[serde(default)]
    pub gone: bool,
    pub synced_at: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl ReaderRecord {
    /// Whether the reader may take payments for `merchant`: its owner's only, for a
    /// merchant-owned reader; otherwise as its allowlist permits.
    pub fn serves(&self, merchant: &str) -> bool {
        if let Some(owner) = &self.owner {
            return owner == merchant;
        }
        match &self.merchants {
            None => true,
            Some(list) => list.iter().any(|m| m == merchant),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Registry, SledStore, Tree, SCHEMA_VERSION};

    /// A store of schema 1 (fleet times as Unix milliseconds) opens as schema 2 and its
    /// records read with the same times; they are written back in the new form.
    #[test]
    fn a_schema_1_store_opens_and_its_millisecond_times_still_read() {
        let dir = tempfile::tempdir().unwrap();
        {
            let raw = SledStore::open(dir.path(), crate::store::DEFAULT_CACHE_BYTES).unwrap();
            use crate::store::Store;
            raw.put(Tree::Meta, "schema_version", b"1").unwrap();
            let v1 = r#"{"v":1,"data":{"id":"tmr_1","label":"front","location":"tml_1",
                "serial_number":"s-1","device_type":"simulated_wisepos_e","status":"online",
                "last_seen_at":1700000000123,"merchants":null,"gone":false,
                "synced_at":1700000000456,"created_at":1600000000000,"updated_at":1700000000456}}"#;
            raw.put(Tree::Readers, "tmr_1", v1.as_bytes()).unwrap();
        }
        let reg = Registry::open(dir.path()).unwrap();
        let version = reg
            .store()
            .get(Tree::Meta, "schema_version")
            .unwrap()
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION.to_string().as_bytes());
        assert_eq!(SCHEMA_VERSION, 4);
        let r: ReaderRecord = reg.get(Tree::Readers, "tmr_1").unwrap().unwrap();
        assert_eq!(r.last_seen_at, Some(Timestamp::from_ms(1_700_000_000_123)));
        assert_eq!(r.synced_at, Timestamp::from_ms(1_700_000_000_456));
        assert_eq!(r.created_at, Timestamp::from_ms(1_600_000_000_000));
        reg.put(Tree::Readers, "tmr_1", &r).unwrap();
        let bytes = reg.store().get(Tree::Readers, "tmr_1").unwrap().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.contains(r#""synced_at":"2023-11-14T22:13:20.456Z""#),
            "{text}"
        );
        let again: ReaderRecord = reg.get(Tree::Readers, "tmr_1").unwrap().unwrap();
        assert_eq!(again, r);
    }
}
