//! Step 1: the PaymentIntent. Created with the idempotency key written at acceptance and
//! replayed on 5xx and dropped connections, so exactly one PaymentIntent exists; only a 5xx
//! that Stripe stored under the key (replayed forever) leads to a new key, and only after a
//! search by `metadata[readerd_payment]` found none.

use super::{backoff, Flow, R};
use crate::payments::engine::Engine;
use crate::payments::failpoint::failpoint;
use crate::payments::machine::{CaptureMode, ChargeType, Failure, Payment, Step};
use crate::stripe::params::CreatePaymentIntent;
use crate::stripe::wire::CaptureMethod;
use crate::stripe::{Disposition, StripeError};
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// How far Stripe's clock may be behind ours when looking for a PaymentIntent by the time
/// it was created.
const CLOCK_MARGIN: Duration = Duration::from_secs(15 * 60);

/// What a failed creation led to.
enum AfterFailure {
    /// The payment has its PaymentIntent after all (`Some`), or was given up (`None`).
    Settled(Option<Box<Payment>>),
    /// Send again (with the key as it now is).
    Replay,
}

/// The creation parameters: the payment's own fields, its id in the metadata (so that a
/// lost answer can be found), and the money's destination for a destination charge.
fn create_params(p: &Payment) -> CreatePaymentIntent {
    let mut metadata = p.metadata.clone();
    metadata.insert("readerd_payment".into(), p.id.clone());
    CreatePaymentIntent {
        amount: p.amount,
        currency: p.currency.clone(),
        payment_method_types: vec!["card_present".into()],
        capture_method: match p.capture {
            CaptureMode::Automatic => CaptureMethod::Automatic,
            CaptureMode::Manual => CaptureMethod::Manual,
        },
        application_fee_amount: p.application_fee_amount,
        description: p.description.clone(),
        metadata,
        transfer_destination: match p.charge_type {
            ChargeType::Direct | ChargeType::Separate => None,
            ChargeType::Destination => Some(p.account.clone()),
        },
        on_behalf_of: p.on_behalf_of.clone(),
        // Separate charges: the transfers made after the capture share the payment's id.
        transfer_group: (p.charge_type == ChargeType::Separate).then(|| p.id.clone()),
    }
}

impl Flow {
    /// The payment with its PaymentIntent, created if it has none yet; `None` when the
    /// payment was given up instead.
    pub(super) async fn ensure_intent(&self, p: Payment) -> R<Option<Payment>> {
        if p.payment_intent.is_some() {
            return Ok(Some(p));
        }
        let p = self.e.update(&self.id, |p| {
            p.step = Step::CreatingIntent;
            Ok(())
        })?;
        failpoint("before_pi_create");
        let params = create_params(&p);
        let started = Instant::now();
        let mut key = p.intent_key.clone();
        let mut n = 0u32;
        loop {
            self.e.count("create_payment_intent");
            let res = self
                .e
                .stripe()
                .create_payment_intent(&params, &Engine::intent_options(&p).key(key.clone()))
                .await;
            let e = match res {
                Ok(pi) => {
                    failpoint("after_pi_created");
                    self.e.index_intent(&pi.id, &self.id);
                    let p = self.record_intent(&pi.id)?;
                    failpoint("after_pi_persisted");
                    return Ok(Some(p));
                }
                Err(e) => e,
            };
            match self
                .after_create_failure(&p, &e, started, &mut key, &mut n)
                .await?
            {
                AfterFailure::Settled(p) => return Ok(p.map(|p| *p)),
                AfterFailure::Replay => {}
            }
            tracing::info!(payment = %self.id, error = %e, "PaymentIntent creation failed; replaying");
            sleep(backoff(n.max(1))).await;
            n += 1;
        }
    }

    /// Writes the PaymentIntent's id into the payment.
    fn record_intent(&self, pi: &str) -> R<Payment> {
        self.e.update(&self.id, |p| {
            p.payment_intent = Some(pi.to_string());
            p.step = Step::IntentCreated;
            Ok(())
        })
    }

    /// A definitive refusal gives up; a stored 5xx (or a creation window run out) searches
    /// for a PaymentIntent carrying the payment's id before anything else, and only when the
    /// search proves there is none writes a fresh key (before it is used); anything else
    /// replays the same key.
    async fn after_create_failure(
        &self,
        p: &Payment,
        e: &StripeError,
        started: Instant,
        key: &mut String,
        n: &mut u32,
    ) -> R<AfterFailure> {
        let disp = e.disposition();
        let stored_5xx = disp == Disposition::Definitive && e.status().is_some_and(|s| s >= 500);
        if disp == Disposition::Definitive && !stored_5xx {
            let code = e.code().unwrap_or("stripe_error").to_string();
            let code = match code.as_str() {
                "capability_not_active" | "account_invalid" | "payment_method_unactivated" => {
                    "merchant_not_enabled".to_string()
                }
                _ => code,
            };
            self.give_up(Failure::new(code, e.to_string())).await?;
            return Ok(AfterFailure::Settled(None));
        }
        if stored_5xx || started.elapsed() >= self.cfg.create_window {
            // Stripe stored a failure for this key (or will not answer): look for a
            // PaymentIntent carrying our id before anything else.
            let found = self.find_intent(p).await;
            if let Ok(Some(pi)) = found {
                let p = self.record_intent(&pi)?;
                self.e.index_intent(&pi, &self.id);
                return Ok(AfterFailure::Settled(Some(Box::new(p))));
            }
            if started.elapsed() >= self.cfg.create_window {
                self.give_up(Failure::new(
                    "stripe_unavailable",
                    format!("could not create the PaymentIntent: {e}"),
                ))
                .await?;
                return Ok(AfterFailure::Settled(None));
            }
            if found.is_ok() {
                // None exists: a fresh key, written before it is used.
                *n += 1;
                *key = format!("{}:r{n}", p.intent_key);
                let k = key.clone();
                self.e.update(&self.id, |p| {
                    p.intent_key = k;
                    Ok(())
                })?;
            }
            // A failed search proves nothing: the key stays, and the search is made again
            // after the next (replayed) failure.
        }
        Ok(AfterFailure::Replay)
    }

    /// A PaymentIntent of this payment on Stripe, found by its metadata among those created
    /// since the payment was accepted (less a margin for clocks that disagree), so that the
    /// search costs a page or two whatever the account's history.
    async fn find_intent(&self, p: &Payment) -> Result<Option<String>, StripeError> {
        self.e.count("list_payment_intents");
        let opts = Engine::intent_options(p);
        let since = (p.created_at - CLOCK_MARGIN).as_secs();
        let list = self
            .e
            .stripe()
            .list_payment_intents_created_since(since, &opts)
            .await?;
        Ok(list
            .into_iter()
            .find(|pi| pi.metadata.get("readerd_payment") == Some(&p.id))
            .map(|pi| pi.id))
    }
}
