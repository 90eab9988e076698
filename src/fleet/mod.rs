//! The fleet: merchants, locations and readers, kept in the registry and in step with Stripe.
//!
//! [`Fleet`] is the one place that changes these records. Every change follows the same
//! order: the Stripe call first, then the registry write. A crash in between leaves Stripe
//! ahead of the registry, which the next sync heals (it imports what it finds); the registry
//! never holds an entry that Stripe refused. No store operation spans a network call: lists
//! and reads from Stripe finish before the short, lock-protected registry updates begin.
//!
//! Live state that only the payment workers know (busy, queue depth) comes in through the
//! [`LiveState`] trait, so that this module does not depend on payments.
//!
//! Longer than 600 lines on purpose: the fleet's one writer: merchants, locations and
//! readers, each change a Stripe call then the registry write, and the owner accounts every
//! call is made on. A split by object (merchants, locations, readers) is the next step when
//! it grows again.

mod records;
mod sync;
mod tipping;
mod tokens;

pub use records::{
    AddressRecord, ChargeType, LocationRecord, MerchantRecord, ReaderRecord, Settlement,
};
pub use sync::SyncReport;
pub use tipping::{LocationTipping, TipSuggestions, TIPPING_CURRENCIES};
pub use tokens::IssuedToken;

use crate::clock::Timestamp;
use crate::store::{Registry, StoreError, Tree};
use crate::stripe::error::{Disposition, StripeError};
use crate::stripe::params::{CreateLocation, RegisterReader, UpdateReader};
use crate::stripe::wire::{self, Account};
use crate::stripe::{RequestOptions, StripeClient};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Reader metadata on Stripe that mirrors the registry's allowlist (comma-separated merchant
/// ids), written before the registry so that a crash between the two, or a lost store, is
/// healed by the next sync instead of opening the reader to every merchant.
pub const READER_MERCHANTS_KEY: &str = "readerd_merchants";

/// Location metadata on Stripe naming the merchant it is grouped under.
pub const LOCATION_MERCHANT_KEY: &str = "readerd_merchant";

/// Stripe's limit on a metadata value.
const METADATA_VALUE_MAX: usize = 500;

/// The metadata value for an allowlist (`""` removes the key on Stripe).
fn allowlist_value(list: &Option<Vec<String>>) -> Result<String, FleetError> {
    let v = list.as_ref().map(|l| l.join(",")).unwrap_or_default();
    if v.len() > METADATA_VALUE_MAX {
        return Err(FleetError::Invalid(format!(
            "the merchants list is too long to keep on Stripe ({} characters, at most {METADATA_VALUE_MAX})",
            v.len()
        )));
    }
    Ok(v)
}

/// An allowlist read back from reader metadata.
fn allowlist_from(metadata: &wire::Metadata) -> Option<Vec<String>> {
    metadata.get(READER_MERCHANTS_KEY).map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// The least time between two writes of a reader's unchanged state by
/// [`Fleet::observe_reader`].
pub const OBSERVE_WRITE_EVERY_MS: i64 = 10_000;

/// The `owner` of a platform-owned location or reader, in the API.
pub const PLATFORM_OWNER: &str = "platform";

/// Merchant ids: 1 to 64 of `A-Z a-z 0-9 - _`, and not `platform` (the owner of what no
/// merchant owns).
pub fn validate_merchant_id(id: &str) -> Result<(), FleetError> {
    if id == PLATFORM_OWNER {
        return Err(FleetError::Invalid(format!(
            "merchant id {id:?} is reserved: it names the platform as an owner"
        )));
    }
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(FleetError::Invalid(format!(
            "merchant id {id:?} must be 1 to 64 letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

/// Why a fleet operation failed. The API turns each into a status and a code.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// No such object (or, for a pos client, not one it may see).
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    /// Bad input caught before Stripe was asked.
    #[error("{0}")]
    Invalid(String),
    /// The request contradicts what the registry already holds.
    #[error("{0}")]
    Conflict(String),
    /// A location in one country for a merchant whose account is in another.
    #[error("location country {location} does not match merchant {merchant}'s account country {account}: Stripe requires the location of a reader to be in the country of the account that receives the funds")]
    CountryMismatch {
        location: String,
        merchant: String,
        account: String,
    },
    /// A merchant-owned object and the location it needs belong to different owners.
    #[error("{0}")]
    OwnerMismatch(String),
    /// The account exists but can never take payments (Stripe rejected it).
    #[error("account {account} is unusable: {reason}")]
    AccountUnusable { account: String, reason: String },
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What only the payment workers know about a reader right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderLive {
    /// An action of ours is in flight on it.
    pub busy: bool,
    /// Commands waiting for it (the one in flight excluded).
    pub queue_depth: usize,
}

/// A source of [`ReaderLive`]; the payment workers provide one.
pub trait LiveState: Send + Sync + 'static {
    fn reader(&self, reader_id: &str) -> ReaderLive;
}

/// The live state when nothing runs on the readers: idle, empty queues.
#[derive(Clone, Copy, Debug, Default)]
pub struct Idle;

impl LiveState for Idle {
    fn reader(&self, _reader_id: &str) -> ReaderLive {
        ReaderLive::default()
    }
}

/// Whether Stripe answered lately, as seen by every call the daemon makes (`/readyz`).
#[derive(Debug, Default)]
pub struct StripeHealth {
    last: Mutex<Option<Observation>>,
}

#[derive(Clone, Debug)]
struct Observation {
    reachable: bool,
    at: Instant,
    detail: String,
}

impl StripeHealth {
    /// Records a call's outcome. Any answer from Stripe below 500 counts as reachable.
    pub fn observe<T>(&self, result: &Result<T, StripeError>) {
        let (reachable, detail) = match result {
            Ok(_) => (true, String::new()),
            Err(e) => match e {
                StripeError::Api { status, .. } if *status < 500 => (true, String::new()),
                other => (false, other.to_string()),
            },
        };
        if let Ok(mut g) = self.last.lock() {
            *g = Some(Observation {
                reachable,
                at: Instant::now(),
                detail,
            });
        }
    }

    /// `Some(true)` when the last call reached Stripe, `Some(false)` with the reason when it
    /// did not, `None` before any call.
    pub fn status(&self) -> Option<Result<(), String>> {
        let g = self.last.lock().ok()?;
        g.as_ref().map(|o| {
            if o.reachable {
                Ok(())
            } else {
                Err(o.detail.clone())
            }
        })
    }

    /// How long ago the last call was, if any.
    pub fn age(&self) -> Option<Duration> {
        let g = self.last.lock().ok()?;
        g.as_ref().map(|o| o.at.elapsed())
    }
}

/// A new merchant, as the operator describes it.
#[derive(Clone, Debug)]
pub struct NewMerchant {
    pub id: String,
    pub account: String,
    pub display_name: Option<String>,
    pub charge_type: ChargeType,
    pub settlement: Settlement,
    pub application_fee_amount: Option<i64>,
    /// The most a reviewed payment may be surcharged (minor units); `None`: none.
    pub surcharge_max: Option<i64>,
}

/// A new location.
#[derive(Clone, Debug)]
pub struct NewLocation {
    pub display_name: String,
    pub address: AddressRecord,
    pub merchant: Option<String>,
    /// The merchant whose account owns it; `None` = the platform.
    pub owner: Option<String>,
}

/// A reader to register.
#[derive(Clone, Debug)]
pub struct NewReader {
    pub registration_code: String,
    pub label: Option<String>,
    pub location: String,
    pub merchants: Option<Vec<String>>,
    /// The merchant whose account owns it; `None` = the platform.
    pub owner: Option<String>,
}

/// Whether an add created the merchant or updated an existing entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upsert {
    Created,
    Updated,
}

/// The fleet service. Shared by the API handlers, the background loops and the payment
/// workers (which read merchants and readers through it).
pub struct Fleet {
    registry: Registry,
    stripe: StripeClient,
    health: Arc<StripeHealth>,
    /// One sync at a time (manual and periodic).
    sync_lock: tokio::sync::Mutex<()>,
    /// Serialises read-modify-write of registry records; never held across an await.
    write_lock: Mutex<()>,
    /// The platform's own account (`acct_…`), when the daemon knows it (the store's
    /// binding).
    platform: Option<String>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fleet")
    }
}

/// A fresh idempotency key for a fleet POST to Stripe. When the API caller supplied its own
/// `Idempotency-Key`, the Stripe key is derived from it so that the caller's retry of a
/// timed-out request creates nothing twice.
fn stripe_key(op: &str, caller_key: Option<&str>) -> String {
    match caller_key {
        Some(k) => format!("readerd:{op}:{k}"),
        None => {
            let bytes: [u8; 16] = rand::random();
            format!("readerd:{op}:{}", hex::encode(bytes))
        }
    }
}

impl Fleet {
    pub fn new(registry: Registry, stripe: StripeClient, health: Arc<StripeHealth>) -> Self {
        Fleet {
            registry,
            stripe,
            health,
            sync_lock: tokio::sync::Mutex::new(()),
            write_lock: Mutex::new(()),
            platform: None,
        }
    }

    /// The fleet of the platform `account` (known once the store is bound to it).
    pub fn with_platform(mut self, account: Option<String>) -> Self {
        self.platform = account;
        self
    }

    /// The platform's own account, when known.
    pub fn platform_account(&self) -> Option<String> {
        self.platform.clone()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn stripe(&self) -> &StripeClient {
        &self.stripe
    }

    pub fn health(&self) -> &Arc<StripeHealth> {
        &self.health
    }

    fn writing(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding the lock leaves no half-written record (each write is one
        // put), so a poisoned lock is safe to take over.
        self.write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn observed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StripeError>>,
    ) -> Result<T, StripeError> {
        let r = fut.await;
        self.health.observe(&r);
        r
    }

    /// The `Stripe-Account` of every call about an object of `owner`: the owning
    /// merchant's connected account, or the platform. The one place that turns an owner
    /// into an account, for the fleet and (through the payment directory) for the payment
    /// flow's reader commands.
    pub fn owner_account(&self, owner: Option<&str>) -> Result<Option<String>, FleetError> {
        let Some(owner) = owner else {
            return Ok(None);
        };
        let m = self.merchant(owner)?.ok_or_else(|| FleetError::NotFound {
            kind: "merchant",
            id: owner.to_string(),
        })?;
        Ok(Some(m.account))
    }

    fn owner_options(&self, owner: Option<&str>) -> Result<RequestOptions, FleetError> {
        Ok(match self.owner_account(owner)? {
            Some(acct) => RequestOptions::account(acct),
            None => RequestOptions::platform(),
        })
    }

    // Merchants -------------------------------------------------------------------------

    pub fn merchants(&self) -> Result<Vec<MerchantRecord>, FleetError> {
        Ok(self.registry.list(Tree::Merchants)?)
    }

    pub fn merchant(&self, id: &str) -> Result<Option<MerchantRecord>, FleetError> {
        Ok(self.registry.get(Tree::Merchants, id)?)
    }

    /// Adds a merchant after looking its account up on Stripe. Adding an existing id again
    /// with the same account updates its settings; with another account it is a conflict.
    pub async fn add_merchant(
        &self,
        new: NewMerchant,
    ) -> Result<(MerchantRecord, Upsert), FleetError> {
        validate_merchant_id(&new.id)?;
        if !new.account.starts_with("acct_") {
            return Err(FleetError::Invalid(format!(
                "account {:?} is not a Stripe account id (acct_…)",
                new.account
            )));
        }
        if new.settlement == Settlement::Platform && new.charge_type != ChargeType::Destination {
            return Err(FleetError::Invalid(
                "settlement \"platform\" applies to destination charges only: a direct charge settles on the merchant's account".into(),
            ));
        }
        if matches!(new.surcharge_max, Some(a) if a < 0) {
            return Err(FleetError::Invalid(
                "surcharge_max must not be negative".into(),
            ));
        }
        if matches!(new.application_fee_amount, Some(a) if a < 0) {
            return Err(FleetError::Invalid(
                "application_fee_amount must not be negative".into(),
            ));
        }
        if let Some(existing) = self.merchant(&new.id)? {
            if existing.account != new.account {
                return Err(FleetError::Conflict(format!(
                    "merchant {:?} already exists with account {}",
                    new.id, existing.account
                )));
            }
        }
        let account = self
            .observed(self.stripe.retrieve_account(&new.account))
            .await?;
        if let Some(reason) = account
            .requirements
            .as_ref()
            .and_then(|r| r.disabled_reason.as_deref())
            .filter(|r| r.starts_with("rejected"))
        {
            return Err(FleetError::AccountUnusable {
                account: new.account,
                reason: format!("Stripe rejected it ({reason})"),
            });
        }
        let now = Timestamp::now();
        let _w = self.writing();
        let existing = self.merchant(&new.id)?;
        let display_name = new
            .display_name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .or_else(|| existing.as_ref().map(|e| e.display_name.clone()))
            .or_else(|| {
                account
                    .business_profile
                    .as_ref()
                    .and_then(|b| b.name.clone())
            })
            .unwrap_or_else(|| new.id.clone());
        let mut record = MerchantRecord {
            id: new.id.clone(),
            account: new.account.clone(),
            display_name,
            charge_type: new.charge_type,
            settlement: new.settlement,
            application_fee_amount: new.application_fee_amount,
            surcharge_max: new.surcharge_max,
            country: None,
            default_currency: None,
            card_payments: String::new(),
            charges_enabled: false,
            disabled_reason: None,
            check_error: None,
            checked_at: now,
            created_at: existing.as_ref().map(|e| e.created_at).unwrap_or(now),
            updated_at: now,
        };
        apply_account(&mut record, &account, now);
        if let Some(e) = &existing {
            if e.account != record.account {
                // Another add won the race with a different account.
                return Err(FleetError::Conflict(format!(
                    "merchant {:?} already exists with account {}",
                    new.id, e.account
                )));
            }
        }
        self.registry.put(Tree::Merchants, &record.id, &record)?;
        let how = if existing.is_some() {
            Upsert::Updated
        } else {
            Upsert::Created
        };
        tracing::info!(merchant = %record.id, account = %record.account, card_payments = %record.card_payments, charges_enabled = record.charges_enabled, "merchant {}", if how == Upsert::Created { "added" } else { "updated" });
        Ok((record, how))
    }

    /// Re-reads a merchant's account from Stripe and records what it says. A definitive
    /// refusal (the account is gone or no longer connected) is recorded and flags the
    /// merchant as unable to charge; an unreachable Stripe changes nothing and is returned.
    pub async fn check_merchant(&self, id: &str) -> Result<MerchantRecord, FleetError> {
        let m = self.merchant(id)?.ok_or_else(|| FleetError::NotFound {
            kind: "merchant",
            id: id.to_string(),
        })?;
        let result = self
            .observed(self.stripe.retrieve_account(&m.account))
            .await;
        let now = Timestamp::now();
        let _w = self.writing();
        let mut record = self.merchant(id)?.ok_or_else(|| FleetError::NotFound {
            kind: "merchant",
            id: id.to_string(),
        })?;
        match result {
            Ok(account) => {
                let before = record.clone();
                apply_account(&mut record, &account, now);
                if before.can_charge() != record.can_charge() {
                    tracing::warn!(merchant = %record.id, card_payments = %record.card_payments, charges_enabled = record.charges_enabled, "merchant can_charge changed to {}", record.can_charge());
                }
            }
            Err(e) if e.disposition() == Disposition::Definitive => {
                tracing::warn!(merchant = %record.id, error = %e, "merchant account refused by Stripe");
                record.check_error = Some(e.to_string());
                record.charges_enabled = false;
                record.updated_at = now;
            }
            Err(e) => return Err(e.into()),
        }
        self.registry.put(Tree::Merchants, &record.id, &record)?;
        Ok(record)
    }

    /// Re-checks every merchant; failures are logged and do not stop the others. Returns
    /// how many were checked.
    pub async fn check_all_merchants(&self) -> usize {
        self.check_merchants_older_than(Duration::ZERO).await
    }

    /// Re-checks the merchants whose last check is at least `max_age` old (one read each):
    /// at start-up, what a long stop left stale.
    pub async fn check_merchants_older_than(&self, max_age: Duration) -> usize {
        let cutoff = Timestamp::now() - max_age;
        let ids: Vec<String> = match self.merchants() {
            Ok(list) => list
                .into_iter()
                .filter(|m| m.checked_at <= cutoff)
                .map(|m| m.id)
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot list merchants for the re-check");
                return 0;
            }
        };
        let mut ok = 0;
        for id in ids {
            match self.check_merchant(&id).await {
                Ok(_) => ok += 1,
                Err(e) => tracing::warn!(merchant = %id, error = %e, "merchant re-check failed"),
            }
        }
        ok
    }

    // Locations -------------------------------------------------------------------------

    pub fn locations(&self) -> Result<Vec<LocationRecord>, FleetError> {
        Ok(self.registry.list(Tree::Locations)?)
    }

    pub fn location(&self, id: &str) -> Result<Option<LocationRecord>, FleetError> {
        Ok(self.registry.get(Tree::Locations, id)?)
    }

    /// Creates a location on Stripe (on the platform, or on its owner's connected account),
    /// then records it.
    pub async fn create_location(
        &self,
        mut new: NewLocation,
        caller_key: Option<&str>,
    ) -> Result<LocationRecord, FleetError> {
        if let Some(owner) = &new.owner {
            // A merchant's own location serves that merchant: it is grouped under it.
            match &new.merchant {
                None => new.merchant = Some(owner.clone()),
                Some(m) if m == owner => {}
                Some(m) => {
                    return Err(FleetError::Invalid(format!(
                    "a location owned by merchant {owner:?} is grouped under its owner, not {m:?}"
                )))
                }
            }
        }
        if new.display_name.trim().is_empty() {
            return Err(FleetError::Invalid("display_name must not be empty".into()));
        }
        let country = match new.address.country.as_deref().map(str::trim) {
            Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
                c.to_ascii_uppercase()
            }
            Some(c) => {
                return Err(FleetError::Invalid(format!(
                    "address.country {c:?} is not a two-letter ISO country code"
                )))
            }
            None => return Err(FleetError::Invalid("address.country is required".into())),
        };
        let mut address = new.address.clone();
        address.country = Some(country.clone());
        let mut metadata = wire::Metadata::new();
        if let Some(mid) = &new.merchant {
            let m = self.merchant(mid)?.ok_or_else(|| FleetError::NotFound {
                kind: "merchant",
                id: mid.clone(),
            })?;
            // A merchant whose destination charges the platform settles is not bound to
            // its own country here; the platform's is Stripe's to check. A merchant's own
            // location takes direct charges only, which settle on the merchant.
            let funds_country = if new.owner.is_some() {
                m.country.clone()
            } else {
                m.settlement_country()
            };
            if let Some(mc) = funds_country {
                if !mc.eq_ignore_ascii_case(&country) {
                    return Err(FleetError::CountryMismatch {
                        location: country,
                        merchant: m.id,
                        account: mc.to_ascii_uppercase(),
                    });
                }
            }
            metadata.insert(LOCATION_MERCHANT_KEY.into(), mid.clone());
        }
        let params = CreateLocation {
            display_name: new.display_name.clone(),
            address: to_wire_address(&address),
            metadata,
        };
        let opts = self
            .owner_options(new.owner.as_deref())?
            .key(stripe_key("location", caller_key));
        let loc = self
            .observed(self.stripe.create_location(&params, &opts))
            .await?;
        let now = Timestamp::now();
        let _w = self.writing();
        let existing = self.location(&loc.id)?;
        let (mut record, _) = location_record(&loc, existing.as_ref(), new.owner.clone(), now);
        if record.merchant.is_none() {
            record.merchant = new.merchant.clone();
        }
        self.registry.put(Tree::Locations, &record.id, &record)?;
        tracing::info!(location = %record.id, merchant = ?record.merchant, owner = ?record.owner, "location created");
        Ok(record)
    }

    // Readers ---------------------------------------------------------------------------

    pub fn readers(&self) -> Result<Vec<ReaderRecord>, FleetError> {
        Ok(self.registry.list(Tree::Readers)?)
    }

    pub fn reader(&self, id: &str) -> Result<Option<ReaderRecord>, FleetError> {
        Ok(self.registry.get(Tree::Readers, id)?)
    }

    /// A reader by id (`tmr_…`) or, failing that, by its label (present readers first).
    pub fn find_reader(&self, id_or_label: &str) -> Result<Option<ReaderRecord>, FleetError> {
        if let Some(r) = self.reader(id_or_label)? {
            return Ok(Some(r));
        }
        let mut matches: Vec<ReaderRecord> = self
            .readers()?
            .into_iter()
            .filter(|r| r.label == id_or_label)
            .collect();
        matches.sort_by_key(|r| (r.gone, std::cmp::Reverse(r.updated_at)));
        Ok(matches.into_iter().next())
    }

    /// Checks an allowlist for a reader at `location`: every merchant exists and, where both
    /// countries are known, is in the location's country (Stripe's rule for who a reader may
    /// take payments for).
    fn check_merchant_list(
        &self,
        list: &Option<Vec<String>>,
        location: Option<&str>,
    ) -> Result<(), FleetError> {
        let Some(list) = list else {
            return Ok(());
        };
        if list.is_empty() {
            return Err(FleetError::Invalid(
                "merchants must name at least one merchant; null serves every merchant".into(),
            ));
        }
        let location_country = match location {
            Some(l) => self.location(l)?.and_then(|l| l.address.country),
            None => None,
        };
        for m in list {
            let Some(merchant) = self.merchant(m)? else {
                return Err(FleetError::NotFound {
                    kind: "merchant",
                    id: m.clone(),
                });
            };
            if let (Some(lc), Some(mc)) = (&location_country, merchant.settlement_country()) {
                if !lc.eq_ignore_ascii_case(&mc) {
                    return Err(FleetError::CountryMismatch {
                        location: lc.to_ascii_uppercase(),
                        merchant: merchant.id,
                        account: mc.to_ascii_uppercase(),
                    });
                }
            }
        }
        Ok(())
    }

    /// A reader sits in a location of its own owner (Stripe keeps a connected account's
    /// readers in that account's locations), and a merchant-owned reader serves its owner
    /// only, so an allowlist can only name that owner.
    fn check_reader_owner(&self, new: &NewReader) -> Result<(), FleetError> {
        if let Some(owner) = &new.owner {
            if self.merchant(owner)?.is_none() {
                return Err(FleetError::NotFound {
                    kind: "merchant",
                    id: owner.clone(),
                });
            }
            if let Some(list) = &new.merchants {
                if list.iter().any(|m| m != owner) {
                    return Err(FleetError::Invalid(format!(
                        "a reader owned by merchant {owner:?} serves its owner only; leave merchants out"
                    )));
                }
            }
        }
        let Some(location) = self.location(&new.location)? else {
            // Unknown to the registry (not synced yet): Stripe decides.
            return Ok(());
        };
        if location.owner != new.owner {
            let name = |o: &Option<String>| match o {
                Some(m) => format!("merchant {m:?}"),
                None => "the platform".to_string(),
            };
            return Err(FleetError::OwnerMismatch(format!(
                "location {} is owned by {}, but the reader would be owned by {}: a reader must sit in a location of its own owner",
                location.id,
                name(&location.owner),
                name(&new.owner)
            )));
        }
        Ok(())
    }

    /// Registers a reader on Stripe (on the platform, or on its owner's connected account,
    /// in a location of the same owner), then records it.
    pub async fn register_reader(
        &self,
        new: NewReader,
        caller_key: Option<&str>,
    ) -> Result<ReaderRecord, FleetError> {
        self.check_reader_owner(&new)?;
        if new.registration_code.trim().is_empty() {
            return Err(FleetError::Invalid(
                "registration_code must not be empty".into(),
            ));
        }
        if new.location.trim().is_empty() {
            return Err(FleetError::Invalid("location must not be empty".into()));
        }
        self.check_merchant_list(&new.merchants, Some(&new.location))?;
        let mut metadata = wire::Metadata::new();
        if new.merchants.is_some() {
            metadata.insert(
                READER_MERCHANTS_KEY.into(),
                allowlist_value(&new.merchants)?,
            );
        }
        let params = RegisterReader {
            registration_code: new.registration_code.clone(),
            label: new.label.clone().filter(|l| !l.is_empty()),
            location: Some(new.location.clone()),
            metadata,
        };
        let opts = self
            .owner_options(new.owner.as_deref())?
            .key(stripe_key("reader", caller_key));
        let reader = self
            .observed(self.stripe.register_reader(&params, &opts))
            .await?;
        let now = Timestamp::now();
        let _w = self.writing();
        let existing = self.reader(&reader.id)?;
        let (mut record, _) = reader_record(&reader, existing.as_ref(), new.owner.clone(), now);
        if existing.is_none() || new.merchants.is_some() {
            record.merchants = new.merchants.clone();
        }
        self.registry.put(Tree::Readers, &record.id, &record)?;
        tracing::info!(reader = %record.id, label = %record.label, location = ?record.location, owner = ?record.owner, "reader registered");
        Ok(record)
    }

    /// Sets (or, with `None`, clears) a reader's allowlist of merchants: on Stripe (reader
    /// metadata) first, then in the registry.
    pub async fn set_reader_merchants(
        &self,
        id: &str,
        merchants: Option<Vec<String>>,
        caller_key: Option<&str>,
    ) -> Result<ReaderRecord, FleetError> {
        let Some(current) = self.reader(id)? else {
            return Err(FleetError::NotFound {
                kind: "reader",
                id: id.to_string(),
            });
        };
        if let Some(owner) = &current.owner {
            return Err(FleetError::Invalid(format!(
                "reader {id} is owned by merchant {owner:?} and serves its owner only: it has no allowlist"
            )));
        }
        self.check_merchant_list(&merchants, current.location.as_deref())?;
        let mut metadata = wire::Metadata::new();
        metadata.insert(READER_MERCHANTS_KEY.into(), allowlist_value(&merchants)?);
        let params = UpdateReader {
            label: None,
            metadata,
        };
        let opts = self
            .owner_options(current.owner.as_deref())?
            .key(stripe_key("reader-merchants", caller_key));
        let reader = self
            .observed(self.stripe.update_reader(id, &params, &opts))
            .await?;
        let now = Timestamp::now();
        let _w = self.writing();
        let existing = self.reader(id)?;
        let (mut r, _) = reader_record(&reader, existing.as_ref(), current.owner.clone(), now);
        r.merchants = merchants;
        r.updated_at = now;
        self.registry.put(Tree::Readers, &r.id, &r)?;
        tracing::info!(reader = %r.id, merchants = ?r.merchants, "reader allowlist set");
        Ok(r)
    }

    /// Records what a fresh read of a reader says (status, last seen, label, location). The
    /// payment workers may call this with the readers they retrieve anyway, so that the
    /// listed state stays fresh without any extra Stripe read. A heartbeat alone is written
    /// at most every [`OBSERVE_WRITE_EVERY_MS`], to spare the disk during fast polling.
    pub fn observe_reader(&self, reader: &wire::Reader) -> Result<ReaderRecord, FleetError> {
        let now = Timestamp::now();
        let _w = self.writing();
        let existing = self.reader(&reader.id)?;
        let owner = existing.as_ref().and_then(|e| e.owner.clone());
        let (record, changed) = reader_record(reader, existing.as_ref(), owner, now);
        let stale = existing
            .as_ref()
            .is_none_or(|e| now - e.synced_at >= OBSERVE_WRITE_EVERY_MS);
        if changed || stale {
            self.registry.put(Tree::Readers, &record.id, &record)?;
        }
        Ok(record)
    }

    /// Reads one reader from Stripe now (one read) and records it. A reader Stripe no
    /// longer has is marked gone.
    pub async fn refresh_reader(&self, id: &str) -> Result<ReaderRecord, FleetError> {
        let owner = self.reader(id)?.and_then(|r| r.owner);
        let opts = self.owner_options(owner.as_deref())?;
        let result = self
            .observed(self.stripe.retrieve_reader_on(id, &opts))
            .await;
        match result {
            Ok(r) => self.observe_reader(&r),
            Err(e) if e.status() == Some(404) => {
                let _w = self.writing();
                let mut r = self.reader(id)?.ok_or_else(|| FleetError::NotFound {
                    kind: "reader",
                    id: id.to_string(),
                })?;
                if !r.gone {
                    r.gone = true;
                    r.status = "offline".to_string();
                    r.updated_at = Timestamp::now();
                    self.registry.put(Tree::Readers, &r.id, &r)?;
                }
                Ok(r)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Pulls every platform location and reader from Stripe into the registry. The
    /// registry writes (one flushed write per reader) run on a blocking thread, so a large
    /// fleet does not hold up the API's workers.
    pub async fn sync(self: &Arc<Self>) -> Result<SyncReport, FleetError> {
        sync::run(self).await
    }
}

/// Copies what readerd keeps of an account into a merchant record.
fn apply_account(record: &mut MerchantRecord, account: &Account, now: Timestamp) {
    record.country = account.country.as_ref().map(|c| c.to_ascii_uppercase());
    record.default_currency = account.default_currency.clone();
    record.card_payments = account
        .capabilities
        .as_ref()
        .and_then(|c| c.card_payments.as_ref())
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| "none".to_string());
    record.charges_enabled = account.charges_enabled.unwrap_or(false);
    record.disabled_reason = account
        .requirements
        .as_ref()
        .and_then(|r| r.disabled_reason.clone());
    record.check_error = None;
    record.checked_at = now;
    record.updated_at = now;
}

fn to_wire_address(a: &AddressRecord) -> wire::Address {
    wire::Address {
        city: a.city.clone(),
        country: a.country.clone(),
        line1: a.line1.clone(),
        line2: a.line2.clone(),
        postal_code: a.postal_code.clone(),
        state: a.state.clone(),
    }
}

fn from_wire_address(a: &wire::Address) -> AddressRecord {
    AddressRecord {
        line1: a.line1.clone(),
        line2: a.line2.clone(),
        city: a.city.clone(),
        state: a.state.clone(),
        postal_code: a.postal_code.clone(),
        country: a.country.clone(),
    }
}

/// A location record from Stripe's object, keeping what only the registry knows. The flag
/// says whether it is new or changed.
pub(crate) fn location_record(
    loc: &wire::Location,
    existing: Option<&LocationRecord>,
    owner: Option<String>,
    now: Timestamp,
) -> (LocationRecord, bool) {
    let rec = LocationRecord {
        id: loc.id.clone(),
        display_name: loc.display_name.clone(),
        address: from_wire_address(&loc.address),
        merchant: loc
            .metadata
            .get(LOCATION_MERCHANT_KEY)
            .filter(|m| !m.is_empty())
            .cloned()
            .or_else(|| existing.and_then(|e| e.merchant.clone()))
            // A merchant's own location is grouped under it.
            .or_else(|| owner.clone()),
        owner,
        gone: false,
        configuration: loc.configuration_overrides.clone(),
        // The configuration's tipping is not in the location: a sync reads it with the
        // account's configurations (`tipping::synced`).
        tipping: existing.and_then(|e| e.tipping.clone()),
        tipping_write: existing.and_then(|e| e.tipping_write.clone()),
        synced_at: now,
        created_at: existing.map(|e| e.created_at).unwrap_or(now),
        updated_at: now,
    };
    settle(
        rec,
        existing,
        |same, e| {
            same.synced_at = e.synced_at;
            same.updated_at = e.updated_at;
        },
        |rec, e| rec.updated_at = e.updated_at,
    )
}

/// `rec` against the stored `existing`: changed when new, or when it differs in more than
/// what `bookkeeping` copies over from the stored record (sync times, heartbeat). An
/// unchanged record keeps the stored `updated_at` through `keep_updated_at`.
fn settle<R: Clone + PartialEq>(
    mut rec: R,
    existing: Option<&R>,
    bookkeeping: impl Fn(&mut R, &R),
    keep_updated_at: impl Fn(&mut R, &R),
) -> (R, bool) {
    let Some(e) = existing else {
        return (rec, true);
    };
    let mut same = rec.clone();
    bookkeeping(&mut same, e);
    if same != *e {
        return (rec, true);
    }
    keep_updated_at(&mut rec, e);
    (rec, false)
}

/// Stripe counts a reader offline after two minutes without a signal; readerd applies the
/// same rule to what Stripe reported, so a reader whose `status` still says online while its
/// `last_seen_at` is older is shown offline.
pub const OFFLINE_AFTER_MS: i64 = 120_000;

/// A reader record from Stripe's object, keeping what only the registry knows (the
/// allowlist, first-seen time). The flag says whether anything but the reader's heartbeat
/// (`last_seen_at`) changed, or the record is new.
pub(crate) fn reader_record(
    r: &wire::Reader,
    existing: Option<&ReaderRecord>,
    owner: Option<String>,
    now: Timestamp,
) -> (ReaderRecord, bool) {
    let last_seen_at = r
        .last_seen_at
        .map(Timestamp::from_ms)
        .or(existing.and_then(|e| e.last_seen_at));
    let stripe_online = matches!(r.status, Some(wire::ReaderStatus::Online));
    let fresh = last_seen_at.is_none_or(|seen| now - seen <= OFFLINE_AFTER_MS);
    let rec = ReaderRecord {
        id: r.id.clone(),
        owner,
        label: r.label.clone(),
        location: r.location.as_ref().map(|l| l.id().to_string()),
        serial_number: r.serial_number.clone(),
        device_type: r.device_type.as_str().to_string(),
        status: if stripe_online && fresh {
            "online"
        } else {
            "offline"
        }
        .to_string(),
        last_seen_at,
        // Stripe's copy wins when present (it is written first); otherwise the registry's.
        merchants: match allowlist_from(&r.metadata) {
            Some(list) => Some(list),
            None => existing.and_then(|e| e.merchants.clone()),
        },
        gone: false,
        synced_at: now,
        created_at: existing.map(|e| e.created_at).unwrap_or(now),
        updated_at: now,
    };
    settle(
        rec,
        existing,
        |same, e| {
            same.synced_at = e.synced_at;
            same.updated_at = e.updated_at;
            same.last_seen_at = e.last_seen_at;
        },
        |rec, e| rec.updated_at = e.updated_at,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_ms(ms)
    }

    fn wire_reader(status: &str, last_seen_at: Option<i64>) -> wire::Reader {
        serde_json::from_value(serde_json::json!({
            "id": "tmr_1", "object": "terminal.reader", "device_type": "simulated_wisepos_e",
            "label": "front", "livemode": false, "serial_number": "s-1",
            "status": status, "last_seen_at": last_seen_at, "location": "tml_1"
        }))
        .unwrap()
    }

    #[test]
    fn a_stale_heartbeat_is_offline_whatever_the_status_says() {
        let now = 1_800_000_000_000;
        let (r, _) = reader_record(
            &wire_reader("online", Some(now - 1_000)),
            None,
            None,
            at(now),
        );
        assert_eq!(r.status, "online");
        let (r, _) = reader_record(
            &wire_reader("online", Some(now - OFFLINE_AFTER_MS - 1)),
            None,
            None,
            at(now),
        );
        assert_eq!(r.status, "offline");
        let (r, _) = reader_record(&wire_reader("offline", Some(now)), None, None, at(now));
        assert_eq!(r.status, "offline");
    }

    #[test]
    fn a_heartbeat_alone_is_no_change_and_the_allowlist_is_kept() {
        let now = 1_800_000_000_000;
        let (mut first, new) =
            reader_record(&wire_reader("online", Some(now)), None, None, at(now));
        assert!(new);
        first.merchants = Some(vec!["bakery".into()]);
        let later = now + 5_000;
        let (second, changed) = reader_record(
            &wire_reader("online", Some(later)),
            Some(&first),
            None,
            at(later),
        );
        assert!(!changed);
        assert_eq!(second.last_seen_at, Some(at(later)));
        assert_eq!(second.updated_at, first.updated_at);
        assert_eq!(second.merchants, first.merchants);
        let (third, changed) = reader_record(
            &wire_reader("offline", Some(later)),
            Some(&second),
            None,
            at(later),
        );
        assert!(changed);
        assert_eq!(third.updated_at, at(later));
        assert_eq!(third.created_at, at(now));
    }
}
