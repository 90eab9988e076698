//! What the payment flow needs to know about merchants and readers, behind a small trait.
//!
//! The fleet registry owns merchants, locations and readers; the payment flow only asks a
//! few questions of it (which account, which charge type, is it enabled, which country,
//! which reader is meant by this id or label, may this merchant use it). [`Directory`] is
//! that seam, with two implementations: [`FleetDirectory`], the fleet registry the daemon
//! uses, and [`StaticDirectory`] for tests and the benchmark.

use super::machine::ChargeType;
use crate::fleet::{self, Fleet};
use crate::stripe::wire::Reader;
use crate::stripe::RequestOptions;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A platform fee taken on each payment of a merchant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fee {
    /// Fixed part, minor units.
    pub fixed: i64,
    /// Proportional part, in basis points of the amount.
    pub basis_points: i64,
}

impl Fee {
    /// The fee on `amount`, never more than the amount.
    pub fn on(&self, amount: i64) -> i64 {
        (self.fixed + amount * self.basis_points / 10_000).clamp(0, amount)
    }
}

/// A merchant as the payment flow sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerchantInfo {
    pub id: String,
    /// The connected account (`acct_…`).
    pub account: String,
    pub charge_type: ChargeType,
    /// Card payments are active on the account (and the merchant is not disabled).
    pub enabled: bool,
    /// The account's country (ISO 3166-1 alpha-2, upper case), when known.
    pub country: Option<String>,
    /// The account's currency (Terminal takes the local currency only), when known.
    pub currency: Option<String>,
    pub fee: Option<Fee>,
    /// The platform, not the merchant, settles its destination charges (no `on_behalf_of`).
    pub platform_settles: bool,
}

impl MerchantInfo {
    /// The account named `on_behalf_of` on its PaymentIntents: its own, on a destination
    /// charge that settles on the merchant. A direct charge is on the account already.
    pub fn on_behalf_of(&self) -> Option<String> {
        (self.charge_type == ChargeType::Destination && !self.platform_settles)
            .then(|| self.account.clone())
    }

    /// The merchant as a direct charge sees it: what its payments on a reader it owns are,
    /// whatever its own charge type.
    pub fn as_direct(mut self) -> MerchantInfo {
        self.charge_type = ChargeType::Direct;
        self.platform_settles = false;
        self
    }

    /// The country of the account that receives the funds, which the reader's location must
    /// be in, when known: the merchant's, except when the platform settles (a destination
    /// charge settled by the platform, or a separate charge: its country is then Stripe's
    /// to check).
    pub fn funds_country(&self) -> Option<String> {
        match (self.charge_type, self.platform_settles) {
            (ChargeType::Destination, true) | (ChargeType::Separate, _) => None,
            _ => self.country.clone(),
        }
    }
}

/// The merchant that owns a reader, and its connected account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderOwner {
    pub merchant: String,
    /// `acct_…`: every call about the reader carries it as `Stripe-Account`.
    pub account: String,
}

/// A reader as the payment flow sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderInfo {
    /// `tmr_…`.
    pub id: String,
    pub label: Option<String>,
    /// The reader's location (`tml_…`), when known: where the batched poller lists it.
    pub location: Option<String>,
    /// The country of the reader's location, when known.
    pub country: Option<String>,
    /// When set, only these merchants may use the reader.
    pub allowed_merchants: Option<Vec<String>>,
    /// The merchant whose connected account owns the reader; `None` = the platform.
    pub owner: Option<ReaderOwner>,
}

impl ReaderInfo {
    pub fn allows(&self, merchant: &str) -> bool {
        if let Some(o) = &self.owner {
            return o.merchant == merchant;
        }
        self.allowed_merchants
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == merchant))
    }

    /// The options of every read and command about the reader: its owner's account
    /// (`Stripe-Account`), or the platform. The one place this is decided for the payment
    /// flow; the reader's worker keeps it for the reader's life (a reader never changes
    /// account).
    pub fn options(&self) -> RequestOptions {
        match &self.owner {
            Some(o) => RequestOptions::account(&o.account),
            None => RequestOptions::platform(),
        }
    }
}

/// Lookups the payment flow needs. Implementations read their own registry; they are
/// called outside any Stripe request.
pub trait Directory: Send + Sync + 'static {
    fn merchant(&self, id: &str) -> Option<MerchantInfo>;
    /// By `tmr_…` id or by label.
    fn reader(&self, id_or_label: &str) -> Option<ReaderInfo>;
    /// Every reader id known (for start-up).
    fn reader_ids(&self) -> Vec<String> {
        Vec::new()
    }
    /// A fresh read of a reader that the payment flow made anyway: the registry may keep
    /// its status and heartbeat from it, at no extra Stripe read.
    fn observe_reader(&self, _reader: &Reader) {}
    /// Stripe answered 404 for a reader the directory knows: it was deleted there.
    fn reader_missing(&self, _id: &str) {}
    /// The most a reviewed payment of the merchant may be surcharged at its confirm, in
    /// minor units; `None`: no surcharge.
    fn surcharge_max(&self, _merchant: &str) -> Option<i64> {
        None
    }
}

/// An in-memory directory, for tests, benchmarks and the demo.
#[derive(Debug, Default)]
pub struct StaticDirectory {
    merchants: RwLock<HashMap<String, MerchantInfo>>,
    readers: RwLock<HashMap<String, ReaderInfo>>,
    surcharge_max: RwLock<HashMap<String, i64>>,
}

impl StaticDirectory {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn add_merchant(&self, m: MerchantInfo) {
        self.merchants
            .write()
            .expect("directory lock")
            .insert(m.id.clone(), m);
    }
    /// The merchant's surcharge limit (see [`Directory::surcharge_max`]).
    pub fn set_surcharge_max(&self, merchant: &str, max: i64) {
        self.surcharge_max
            .write()
            .expect("directory lock")
            .insert(merchant.to_string(), max);
    }
    pub fn add_reader(&self, r: ReaderInfo) {
        self.readers
            .write()
            .expect("directory lock")
            .insert(r.id.clone(), r);
    }
}

impl Directory for StaticDirectory {
    fn surcharge_max(&self, merchant: &str) -> Option<i64> {
        self.surcharge_max
            .read()
            .expect("directory lock")
            .get(merchant)
            .copied()
    }
    fn merchant(&self, id: &str) -> Option<MerchantInfo> {
        self.merchants
            .read()
            .expect("directory lock")
            .get(id)
            .cloned()
    }
    fn reader(&self, id_or_label: &str) -> Option<ReaderInfo> {
        let readers = self.readers.read().expect("directory lock");
        readers.get(id_or_label).cloned().or_else(|| {
            readers
                .values()
                .find(|r| r.label.as_deref() == Some(id_or_label))
                .cloned()
        })
    }
    fn reader_ids(&self) -> Vec<String> {
        self.readers
            .read()
            .expect("directory lock")
            .keys()
            .cloned()
            .collect()
    }
}

/// The fleet registry seen through the payment flow's questions.
pub struct FleetDirectory(pub Arc<Fleet>);

impl Directory for FleetDirectory {
    fn surcharge_max(&self, merchant: &str) -> Option<i64> {
        self.0.merchant(merchant).ok()??.surcharge_max
    }
    fn merchant(&self, id: &str) -> Option<MerchantInfo> {
        let m = self.0.merchant(id).ok()??;
        Some(MerchantInfo {
            id: m.id.clone(),
            account: m.account.clone(),
            charge_type: match m.charge_type {
                fleet::ChargeType::Direct => ChargeType::Direct,
                fleet::ChargeType::Destination => ChargeType::Destination,
                fleet::ChargeType::Separate => ChargeType::Separate,
            },
            enabled: m.can_charge(),
            country: m.country.clone(),
            currency: m.default_currency.clone(),
            fee: m.application_fee_amount.map(|fixed| Fee {
                fixed,
                basis_points: 0,
            }),
            platform_settles: m.settlement == fleet::Settlement::Platform,
        })
    }

    fn reader(&self, id_or_label: &str) -> Option<ReaderInfo> {
        let r = self.0.find_reader(id_or_label).ok()??;
        if r.gone {
            return None;
        }
        let country = r
            .location
            .as_deref()
            .and_then(|l| self.0.location(l).ok().flatten())
            .and_then(|l| l.address.country);
        let owner = match r.owner {
            None => None,
            Some(merchant) => {
                // A reader whose owner is no longer a merchant cannot be addressed.
                let account = self.0.owner_account(Some(&merchant)).ok()??;
                Some(ReaderOwner { merchant, account })
            }
        };
        Some(ReaderInfo {
            id: r.id,
            label: Some(r.label),
            location: r.location,
            country,
            allowed_merchants: r.merchants,
            owner,
        })
    }

    fn reader_ids(&self) -> Vec<String> {
        self.0
            .readers()
            .map(|rs| rs.into_iter().map(|r| r.id).collect())
            .unwrap_or_default()
    }

    fn reader_missing(&self, id: &str) {
        // One read by the fleet confirms it and marks the reader gone, so that no new
        // payment is accepted for it before the next sync.
        let fleet = self.0.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Err(e) = fleet.refresh_reader(&id).await {
                tracing::warn!(reader = %id, error = %e, "missing reader not recorded");
            }
        });
    }

    fn observe_reader(&self, reader: &crate::stripe::wire::Reader) {
        if let Err(e) = self.0.observe_reader(reader) {
            tracing::warn!(reader = %reader.id, error = %e, "reader state not recorded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_is_bounded_by_the_amount() {
        let f = Fee {
            fixed: 10,
            basis_points: 150,
        };
        assert_eq!(f.on(1000), 25);
        assert_eq!(f.on(5), 5);
    }

    #[test]
    fn destination_charges_settle_on_the_merchant_unless_the_platform_does() {
        let m = |charge_type, platform_settles| MerchantInfo {
            id: "florist".into(),
            account: "acct_1".into(),
            charge_type,
            enabled: true,
            country: Some("FR".into()),
            currency: Some("eur".into()),
            fee: None,
            platform_settles,
        };
        let d = m(ChargeType::Destination, false);
        assert_eq!(d.on_behalf_of().as_deref(), Some("acct_1"));
        assert_eq!(d.funds_country().as_deref(), Some("FR"));
        let p = m(ChargeType::Destination, true);
        assert_eq!((p.on_behalf_of(), p.funds_country()), (None, None));
        let direct = m(ChargeType::Direct, false);
        assert_eq!(direct.on_behalf_of(), None);
        assert_eq!(direct.funds_country().as_deref(), Some("FR"));
    }

    #[test]
    fn readers_by_id_or_label_and_allowlists() {
        let d = StaticDirectory::new();
        d.add_reader(ReaderInfo {
            id: "tmr_1".into(),
            label: Some("front".into()),
            location: None,
            country: Some("FR".into()),
            allowed_merchants: Some(vec!["bakery".into()]),
            owner: None,
        });
        assert_eq!(d.reader("front").unwrap().id, "tmr_1");
        assert!(d.reader("tmr_1").unwrap().allows("bakery"));
        assert!(!d.reader("tmr_1").unwrap().allows("florist"));
        assert!(d.reader("back").is_none());
    }
}
