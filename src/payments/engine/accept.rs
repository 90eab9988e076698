//! Accepting a payment: the request-level checks, the API's idempotency record (tree
//! `idempotency`), the record written before the reader's worker can see the job.

use super::{Engine, PaymentError};
use crate::clock::Timestamp;
use crate::payments::directory::ReaderInfo;
use crate::payments::ids::new_id;
use crate::payments::machine::{CaptureMode, Failure, NewPayment, Observation, Payment, Source};
use crate::payments::queue::{Job, QueueFull};
use crate::store::Tree;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A request to take a payment (the API body, validated by [`Engine::create`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
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
        let merchant = self
            .inner
            .directory
            .merchant(&req.merchant)
            .ok_or(PaymentError::NotFound("merchant"))?;
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
                application_fee_amount: merchant.fee.map(|f| f.on(req.amount)).filter(|f| *f > 0),
                on_behalf_of: merchant.on_behalf_of(),
                intent_key: format!("readerd:pi:{id}"),
            },
            at,
        );
        if !merchant.enabled {
            // Nothing reaches Stripe: the payment is failed on arrival, and says why.
            p.apply(
                Observation::Fail(Failure::new(
                    "merchant_not_enabled",
                    format!("card payments are not active for merchant {}", merchant.id),
                )),
                Source::Api,
                at,
            )?;
            self.inner.registry.put(Tree::Payments, &id, &p)?;
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
            self.inner.registry.put(Tree::Payments, &id, &p)?;
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
        Ok(p)
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
    if let Some(owner) = reader.owner.as_ref().filter(|o| o.merchant != req.merchant) {
        return Err(PaymentError::invalid(
            "reader_not_shared",
            format!(
                "reader {} belongs to merchant {}'s account and takes its payments only",
                reader.id, owner.merchant
            ),
        ));
    }
    if !reader.allows(&req.merchant) {
        return Err(PaymentError::Forbidden {
            code: "reader_not_allowed",
            message: format!(
                "reader {} does not serve merchant {}",
                reader.id, req.merchant
            ),
        });
    }
    if let (Some(m), Some(r)) = (merchant_country, &reader.country) {
        if !m.eq_ignore_ascii_case(r) {
            return Err(PaymentError::invalid(
                "country_mismatch",
                format!(
                    "reader {} is at a location in {r}, but merchant {} is in {m}; Stripe requires the same country",
                    reader.id, req.merchant
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
        }
    }

    pub(super) fn reader(country: &str, allowed: Option<Vec<String>>) -> ReaderInfo {
        ReaderInfo {
            id: "tmr_1".into(),
            label: None,
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
