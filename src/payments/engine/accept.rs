//! Accepting a payment: the request-level checks, the API's idempotency record (tree
//! `idempotency`), the record written before the reader's worker can see the job.

use super::{Engine, PaymentError};
use crate::clock::Timestamp;
use crate::payments::directory::{MerchantInfo, ReaderInfo};
use crate::payments::ids::new_id;
use crate::payments::machine::{CaptureMode, Failure, NewPayment, Observation, Payment, Source};
use crate::payments::machine::{ChargeType, PaymentFlow};
use crate::payments::queue::{Job, QueueFull};
use crate::payments::splits::Split;
use crate::store::Tree;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A request to take a payment (the API body, validated by [`Engine::create`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// The merchant; empty (absent) when `splits` names the merchants of a basket.
    #[serde(default)]
    pub merchant: String,
    pub reader: String,
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub capture: CaptureMode,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// `false` skips the reader's tip screen for this payment (the location's tipping
    /// otherwise applies).
    #[serde(default)]
    pub tipping: Option<bool>,
    /// `review`: the card is read and shown (`requires_confirmation`) before it is
    /// authorised; the point of sale confirms it, with a surcharge perhaps, or cancels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<PaymentFlow>,
    /// A basket: one share per merchant, every one `separate`; `amount` is their sum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splits: Option<Vec<SplitRequest>>,
    /// The merchant of the basket who receives the tip (the first split's by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tip_merchant: Option<String>,
}

/// One merchant's share of a basket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitRequest {
    pub merchant: String,
    pub amount: i64,
}

impl CreatePayment {
    /// Every merchant the request is for: its splits', or its one merchant.
    pub fn merchants(&self) -> Vec<&str> {
        match &self.splits {
            Some(s) => s.iter().map(|s| s.merchant.as_str()).collect(),
            None => vec![self.merchant.as_str()],
        }
    }

    /// The merchant whose queue the payment waits in and who is checked against the
    /// reader's allowlist first: the first split's for a basket.
    pub fn lead_merchant(&self) -> &str {
        match self.splits.as_deref() {
            Some([first, ..]) => &first.merchant,
            _ => &self.merchant,
        }
    }
}

/// What an `Idempotency-Key` leads to.
enum Claim {
    /// A payment to create, with this id.
    Fresh(String),
    /// The payment this key and body already made.
    Done(Box<Payment>),
}

/// An API idempotency record (tree `idempotency`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct IdempotencyRecord {
    body_sha256: String,
    object: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Stripe's smallest amount per currency (minor units); 50 where not listed.
fn minimum_amount(currency: &str) -> i64 {
    match currency {
        "gbp" => 30,
        "dkk" => 250,
        "nok" | "sek" => 300,
        "czk" => 1500,
        "pln" | "myr" => 200,
        "hkd" => 400,
        "mxn" => 1000,
        "huf" => 17500,
        _ => 50,
    }
}

/// Stripe's largest amount: eight digits.
pub const MAX_AMOUNT: i64 = 99_999_999;

impl Engine {
    /// Validates and accepts a payment. `client` and `idempotency_key` make the request
    /// repeatable: the same key and body give the same payment; another body is a conflict.
    pub fn create(
        &self,
        req: CreatePayment,
        client: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Payment, PaymentError> {
        let (merchant, splits) = self.merchants_of(&req)?;
        let reader = self
            .inner
            .directory
            .reader(&req.reader)
            .ok_or(PaymentError::NotFound("reader"))?;
        // A merchant-owned reader takes direct charges on its owner's account only, whatever
        // the merchant's charge type: Stripe lets a reader process only its own account's
        // PaymentIntents.
        let merchant = if reader.owner.is_some() {
            merchant.as_direct()
        } else {
            merchant
        };
        validate(&req, &merchant.funds_country(), &reader)?;
        for m in req.merchants() {
            if !reader.allows(m) {
                return Err(PaymentError::Forbidden {
                    code: "reader_not_allowed",
                    message: format!("reader {} does not serve merchant {m}", reader.id),
                });
            }
        }
        if let Some(c) = &merchant.currency {
            if !c.eq_ignore_ascii_case(&req.currency) {
                return Err(PaymentError::invalid(
                    "invalid_currency",
                    format!(
                        "merchant {} takes {c}: in-person payments are in the account's local currency",
                        merchant.id
                    ),
                ));
            }
        }

        let disabled = if splits.is_empty() {
            (!merchant.enabled).then(|| merchant.id.clone())
        } else {
            splits
                .iter()
                .find(|s| {
                    self.inner
                        .directory
                        .merchant(&s.merchant)
                        .is_none_or(|m| !m.enabled)
                })
                .map(|s| s.merchant.clone())
        };
        let id = match self.claim_id(&req, client, idempotency_key)? {
            Claim::Fresh(id) => id,
            Claim::Done(p) => return Ok(*p),
        };

        let at = Timestamp::now();
        let mut p = Payment::new(
            NewPayment {
                id: id.clone(),
                merchant: merchant.id.clone(),
                account: merchant.account.clone(),
                charge_type: merchant.charge_type,
                reader: reader.id.clone(),
                amount: req.amount,
                currency: req.currency.clone(),
                capture: req.capture,
                description: req.description.clone(),
                metadata: req.metadata.clone(),
                // A separate charge's fees are kept out of its transfers instead.
                application_fee_amount: (merchant.charge_type != ChargeType::Separate)
                    .then(|| merchant.fee.map(|f| f.on(req.amount)))
                    .flatten()
                    .filter(|f| *f > 0),
                on_behalf_of: merchant.on_behalf_of(),
                intent_key: format!("readerd:pi:{id}"),
                skip_tipping: req.tipping == Some(false),
            },
            at,
        );
        p.flow = req.flow.unwrap_or_default();
        p.tip_split = req
            .tip_merchant
            .as_ref()
            .and_then(|t| splits.iter().position(|s| &s.merchant == t))
            .unwrap_or(0);
        p.splits = splits;
        if let Some(off) = disabled {
            // Nothing reaches Stripe: the payment is failed on arrival, and says why.
            p.apply(
                Observation::Fail(Failure::new(
                    "merchant_not_enabled",
                    format!("card payments are not active for merchant {off}"),
                )),
                Source::Api,
                at,
            )?;
            self.insert(&p)?;
            self.track(None, &p);
            let _ = self.inner.events.send(p.clone());
            return Ok(p);
        }
        let slot = self.slot(&reader.id);
        {
            let mut q = slot.queue.lock().expect("queue lock");
            if q.len() >= q.capacity() {
                return Err(QueueFull {
                    capacity: q.capacity(),
                }
                .into());
            }
            // The record is on disk before the worker can see the job.
            self.insert(&p)?;
            self.track(None, &p);
            q.push(Job::Payment {
                id: id.clone(),
                merchant: p.merchant.clone(),
            })?;
        }
        self.inner
            .stats
            .lock()
            .expect("stats")
            .accepted(&id, std::time::Instant::now());
        let _ = self.inner.events.send(p.clone());
        slot.work.notify_one();
        self.announce(&p.reader, &p.id);
        Ok(p)
    }

    /// The payment's lead merchant and its splits: for a basket, every merchant checked
    /// (known, `separate`, one country and currency, shares that add up); for a single
    /// `separate` merchant, one split of the whole amount; none otherwise.
    fn merchants_of(
        &self,
        req: &CreatePayment,
    ) -> Result<(MerchantInfo, Vec<Split>), PaymentError> {
        let dir = &self.inner.directory;
        let Some(reqs) = &req.splits else {
            let m = dir
                .merchant(&req.merchant)
                .ok_or(PaymentError::NotFound("merchant"))?;
            if req.tip_merchant.is_some() {
                return Err(PaymentError::invalid(
                    "invalid_tip_merchant",
                    "tip_merchant applies to a basket (splits) only",
                ));
            }
            let splits = if m.charge_type == ChargeType::Separate {
                let fee = m.fee.map(|f| f.on(req.amount)).unwrap_or(0);
                vec![Split::new(m.id.clone(), m.account.clone(), req.amount, fee)]
            } else {
                Vec::new()
            };
            return Ok((m, splits));
        };
        if !req.merchant.is_empty() {
            return Err(PaymentError::invalid(
                "invalid_splits",
                "a basket names its merchants in splits, not in merchant",
            ));
        }
        if reqs.is_empty() {
            return Err(PaymentError::invalid(
                "invalid_splits",
                "splits must name at least one merchant",
            ));
        }
        let mut infos: Vec<MerchantInfo> = Vec::with_capacity(reqs.len());
        for r in reqs {
            let m = dir
                .merchant(&r.merchant)
                .ok_or(PaymentError::NotFound("merchant"))?;
            if infos.iter().any(|x| x.id == m.id) {
                return Err(PaymentError::invalid(
                    "invalid_splits",
                    format!("merchant {} appears twice in splits", m.id),
                ));
            }
            infos.push(m);
        }
        if let Some(m) = infos.iter().find(|m| m.charge_type != ChargeType::Separate) {
            return Err(PaymentError::invalid(
                "split_needs_separate_charges",
                format!(
                    "merchant {} takes {} charges; a basket needs every merchant on charge_type \"separate\"",
                    m.id,
                    match m.charge_type {
                        ChargeType::Direct => "direct",
                        ChargeType::Destination => "destination",
                        ChargeType::Separate => "separate",
                    }
                ),
            ));
        }
        let first = &infos[0];
        for m in &infos[1..] {
            let same = |a: &Option<String>, b: &Option<String>| match (a, b) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => true,
            };
            if !same(&m.country, &first.country) || !same(&m.currency, &first.currency) {
                return Err(PaymentError::invalid(
                    "split_mismatch",
                    format!(
                        "merchants {} and {} are not in the same country and currency; a basket must be",
                        first.id, m.id
                    ),
                ));
            }
        }
        if reqs.iter().any(|r| r.amount <= 0) {
            return Err(PaymentError::invalid(
                "invalid_splits",
                "every split's amount must be positive",
            ));
        }
        let sum: i64 = reqs.iter().map(|r| r.amount).sum();
        if sum != req.amount {
            return Err(PaymentError::invalid(
                "invalid_splits",
                format!("amount must be the sum of the splits' amounts ({sum})"),
            ));
        }
        if let Some(t) = &req.tip_merchant {
            if !reqs.iter().any(|r| &r.merchant == t) {
                return Err(PaymentError::invalid(
                    "invalid_tip_merchant",
                    format!("tip_merchant {t} is not one of the basket's merchants"),
                ));
            }
        }
        let splits = reqs
            .iter()
            .zip(&infos)
            .map(|(r, m)| {
                let fee = m.fee.map(|f| f.on(r.amount)).unwrap_or(0);
                Split::new(m.id.clone(), m.account.clone(), r.amount, fee)
            })
            .collect();
        Ok((infos.swap_remove(0), splits))
    }

    /// The id of a new payment, or, when the same `Idempotency-Key` came with the same body
    /// before, that payment (or its id, if a crash came between the key and the record).
    /// Another body under a used key is a conflict.
    fn claim_id(
        &self,
        req: &CreatePayment,
        client: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Claim, PaymentError> {
        let id = new_id("pay");
        Ok(Claim::Fresh(match idempotency_key {
            None => id,
            Some(key) => {
                if key.is_empty() || key.len() > 255 {
                    return Err(PaymentError::invalid(
                        "invalid_idempotency_key",
                        "Idempotency-Key must be 1 to 255 characters",
                    ));
                }
                let body = serde_json::to_vec(req).expect("request serialises");
                let rec = IdempotencyRecord {
                    body_sha256: sha256_hex(&body),
                    object: id.clone(),
                };
                let rkey = format!("payments/{client}/{key}");
                match self
                    .inner
                    .registry
                    .put_if_absent(Tree::Idempotency, &rkey, &rec)?
                {
                    None => id,
                    Some(prev) if prev.body_sha256 == rec.body_sha256 => {
                        if let Some(p) = self.get(&prev.object)? {
                            return Ok(Claim::Done(Box::new(p)));
                        }
                        // Accepted key, payment not yet written (a crash in between).
                        prev.object
                    }
                    Some(_) => {
                        return Err(PaymentError::conflict(
                            "idempotency_conflict",
                            "this Idempotency-Key was used with a different request body",
                        ))
                    }
                }
            }
        }))
    }
}

/// The request-level checks that need no I/O.
fn validate(
    req: &CreatePayment,
    merchant_country: &Option<String>,
    reader: &ReaderInfo,
) -> Result<(), PaymentError> {
    let c = &req.currency;
    if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(PaymentError::invalid(
            "invalid_currency",
            "currency must be a lower-case ISO 4217 code such as \"eur\"",
        ));
    }
    let min = minimum_amount(c);
    if req.amount < min || req.amount > MAX_AMOUNT {
        return Err(PaymentError::invalid(
            "invalid_amount",
            format!("amount must be an integer from {min} to {MAX_AMOUNT} minor units of {c}"),
        ));
    }
    if let Some(owner) = &reader.owner {
        // A merchant-owned reader takes direct charges of its owner: no other merchant's,
        // and no basket (whose transfers need a charge on the platform).
        if req.splits.is_some() || req.merchant != owner.merchant {
            return Err(PaymentError::invalid(
                "reader_not_shared",
                format!(
                    "reader {} belongs to merchant {}'s account and takes its direct charges only",
                    reader.id, owner.merchant
                ),
            ));
        }
    }
    if !reader.allows(req.lead_merchant()) {
        return Err(PaymentError::Forbidden {
            code: "reader_not_allowed",
            message: format!(
                "reader {} does not serve merchant {}",
                reader.id,
                req.lead_merchant()
            ),
        });
    }
    if let (Some(m), Some(r)) = (merchant_country, &reader.country) {
        if !m.eq_ignore_ascii_case(r) {
            return Err(PaymentError::invalid(
                "country_mismatch",
                format!(
                    "reader {} is at a location in {r}, but merchant {} is in {m}; Stripe requires the same country",
                    reader.id,
                    req.lead_merchant()
                ),
            ));
        }
    }
    if let Some(d) = &req.description {
        if d.len() > 1000 {
            return Err(PaymentError::invalid(
                "invalid_description",
                "description is too long",
            ));
        }
    }
    if req.metadata.len() > 49
        || req
            .metadata
            .iter()
            .any(|(k, v)| k.len() > 40 || v.len() > 500 || k == "readerd_payment")
    {
        return Err(PaymentError::invalid(
            "invalid_metadata",
            "metadata: at most 49 keys of up to 40 characters, values up to 500; readerd_payment is reserved",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn req(amount: i64, currency: &str) -> CreatePayment {
        CreatePayment {
            merchant: "bakery".into(),
            reader: "tmr_1".into(),
            amount,
            currency: currency.into(),
            capture: CaptureMode::Automatic,
            description: None,
            metadata: BTreeMap::new(),
            tipping: None,
            flow: None,
            splits: None,
            tip_merchant: None,
        }
    }

    pub(super) fn reader(country: &str, allowed: Option<Vec<String>>) -> ReaderInfo {
        ReaderInfo {
            id: "tmr_1".into(),
            label: None,
            location: None,
            country: Some(country.into()),
            allowed_merchants: allowed,
            owner: None,
        }
    }

    #[test]
    pub(super) fn validation_rules() {
        let fr = Some("FR".to_string());
        let ok = reader("FR", None);
        assert!(validate(&req(1250, "eur"), &fr, &ok).is_ok());
        for (a, c, code) in [
            (0, "eur", "invalid_amount"),
            (-5, "eur", "invalid_amount"),
            (49, "eur", "invalid_amount"),
            (100_000_000, "eur", "invalid_amount"),
            (1250, "EUR", "invalid_currency"),
            (1250, "euro", "invalid_currency"),
            (1250, "", "invalid_currency"),
        ] {
            match validate(&req(a, c), &fr, &ok) {
                Err(PaymentError::Invalid { code: got, .. }) => assert_eq!(got, code, "{a} {c}"),
                other => panic!("{a} {c}: {other:?}"),
            }
        }
        assert!(matches!(
            validate(&req(1250, "eur"), &Some("DE".into()), &ok),
            Err(PaymentError::Invalid {
                code: "country_mismatch",
                ..
            })
        ));
        assert!(matches!(
            validate(
                &req(1250, "eur"),
                &fr,
                &reader("FR", Some(vec!["florist".into()]))
            ),
            Err(PaymentError::Forbidden { .. })
        ));
        let mut r = req(1250, "eur");
        r.metadata.insert("readerd_payment".into(), "x".into());
        assert!(validate(&r, &fr, &ok).is_err());
    }
}
