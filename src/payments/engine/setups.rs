//! Saving a card on a reader: accepting a setup (checked, on disk with its SetupIntent's
//! creation key, then queued like a payment), reading it, listing, canceling it, and
//! resuming the unfinished ones at start-up. The reader's part is
//! [`crate::payments::worker`]'s.
//!
//! The SetupIntent lives where the merchant's payments live, decided here once, the way a
//! payment decides it: on the merchant's connected account (`Stripe-Account`) for a direct
//! charge merchant or on a reader the merchant owns, on the platform otherwise (with
//! `on_behalf_of` when the merchant settles its destination charges).

use super::forward::CommandOp;
use super::{Engine, PaymentError};
use crate::clock::Timestamp;
use crate::payments::ids::new_id;
use crate::payments::machine::{ChargeType, Source};
use crate::payments::queue::Job;
use crate::payments::setups::{AllowRedisplay, NewSetup, Setup, SetupObservation, SetupStep};
use crate::store::Tree;
use crate::stripe::RequestOptions;
use tokio::sync::broadcast;

/// A request to save a card.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateSetup {
    pub merchant: String,
    /// The reader's id or label.
    pub reader: String,
    /// `cus_…`, on the account the SetupIntent is made on.
    pub customer: Option<String>,
    pub allow_redisplay: AllowRedisplay,
}

/// A page of setups, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct SetupPage {
    pub items: Vec<Setup>,
    pub has_more: bool,
}

impl Engine {
    /// The options of every call about the setup's SetupIntent.
    pub(crate) fn setup_options(s: &Setup) -> RequestOptions {
        match &s.account {
            Some(a) => RequestOptions::account(a),
            None => RequestOptions::platform(),
        }
    }

    /// Accepts a card to save on `reader` for `merchant`: the record (with the SetupIntent's
    /// creation key) is on disk before the job enters the reader's queue.
    pub fn create_setup(&self, req: CreateSetup) -> Result<Setup, PaymentError> {
        if let Some(c) = &req.customer {
            let ok = c.len() > 4
                && c.len() <= 255
                && c.starts_with("cus_")
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(PaymentError::invalid(
                    "invalid_customer",
                    "customer must be a Stripe customer id (cus_…)",
                ));
            }
        }
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
        if !reader.allows(&merchant.id) {
            return Err(PaymentError::Forbidden {
                code: "reader_not_allowed",
                message: format!(
                    "reader {} does not serve merchant {}",
                    reader.id, merchant.id
                ),
            });
        }
        if !merchant.enabled {
            return Err(PaymentError::invalid(
                "merchant_not_enabled",
                format!("card payments are not active for merchant {}", merchant.id),
            ));
        }
        // A merchant-owned reader works for its owner's account only: the SetupIntent is a
        // direct one there, whatever the merchant's charge type (as for its payments).
        let merchant = if reader.owner.is_some() {
            merchant.as_direct()
        } else {
            merchant
        };
        let account =
            (merchant.charge_type == ChargeType::Direct).then(|| merchant.account.clone());
        let s = Setup::new(
            NewSetup {
                id: new_id("set"),
                reader: reader.id.clone(),
                merchant: merchant.id.clone(),
                account,
                on_behalf_of: merchant.on_behalf_of(),
                customer: req.customer,
                allow_redisplay: req.allow_redisplay,
            },
            Timestamp::now(),
        );
        let slot = self.slot(&reader.id);
        // Holding the queue lock across the write keeps a full queue from leaving a record
        // that no worker will ever take.
        let mut q = slot.queue.lock().expect("queue lock");
        if q.len() >= q.capacity() {
            return Err(crate::payments::queue::QueueFull {
                capacity: q.capacity(),
            }
            .into());
        }
        self.inner.registry.put(Tree::Setups, &s.id, &s)?;
        q.push(Job::Setup {
            id: s.id.clone(),
            merchant: s.merchant.clone(),
        })?;
        drop(q);
        slot.work.notify_one();
        self.announce(&s.reader, &s.id);
        let _ = self.inner.setup_events.send(s.clone());
        Ok(s)
    }

    pub fn setup(&self, id: &str) -> Result<Option<Setup>, PaymentError> {
        Ok(self.inner.registry.get(Tree::Setups, id)?)
    }

    /// A page of the setups `visible` lets through, newest first, after `starting_after`
    /// (a setup id). A scan of the whole tree, like the input collections' list.
    pub fn list_setups(
        &self,
        visible: impl Fn(&Setup) -> bool,
        starting_after: Option<&str>,
        limit: usize,
    ) -> Result<SetupPage, PaymentError> {
        let all: Vec<Setup> = self.inner.registry.list(Tree::Setups)?;
        let mut all: Vec<Setup> = all.into_iter().filter(|s| visible(s)).collect();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        let start = match starting_after {
            None => 0,
            Some(after) => match all.iter().position(|s| s.id == after) {
                Some(i) => i + 1,
                None => {
                    return Err(PaymentError::invalid(
                        "invalid_request",
                        format!("starting_after names no setup the caller can see: {after}"),
                    ))
                }
            },
        };
        let rest = &all[start..];
        Ok(SetupPage {
            has_more: rest.len() > limit,
            items: rest.iter().take(limit).cloned().collect(),
        })
    }

    /// Every change to any setup, as it is written.
    pub fn subscribe_setups(&self) -> broadcast::Receiver<Setup> {
        self.inner.setup_events.subscribe()
    }

    /// Read-modify-write of one setup; publishes the result.
    pub(crate) fn update_setup<F>(&self, id: &str, f: F) -> Result<Setup, PaymentError>
    where
        F: FnOnce(&mut Setup) -> Result<(), PaymentError>,
    {
        let s = {
            let _g = self.write_lock(id);
            let mut s: Setup = self
                .inner
                .registry
                .get(Tree::Setups, id)?
                .ok_or(PaymentError::NotFound("setup"))?;
            f(&mut s)?;
            // Fenced by the reader's lease on a shared store, as a payment's steps are.
            let mut batch = crate::store::Batch::default();
            batch.put_record(Tree::Setups, id, &s);
            self.write_job(&s.reader, id, batch)?;
            s
        };
        let _ = self.inner.setup_events.send(s.clone());
        Ok(s)
    }

    /// Applies an observation and persists it; a refused one is logged and changes nothing.
    pub(crate) fn observe_setup(
        &self,
        id: &str,
        obs: SetupObservation,
        source: Source,
    ) -> Result<Setup, PaymentError> {
        let at = Timestamp::now();
        self.update_setup(id, |s| {
            match s.apply(obs, source, at) {
                Ok(Some((from, to))) => {
                    tracing::info!(setup = %id, %from, %to, source = ?source, "setup status")
                }
                Ok(None) => {}
                Err(r) => tracing::debug!(setup = %id, reason = %r, "observation not applied"),
            }
            Ok(())
        })
    }

    /// The point of sale cancels: a setup still waiting in the queue is canceled at once
    /// (nothing reached Stripe); one further on is canceled by its worker (our own
    /// `cancel_action`, then the SetupIntent canceled). A final one is `409`. On a cluster,
    /// the holder of the setup's reader cancels it.
    pub async fn cancel_setup(&self, id: &str) -> Result<Setup, PaymentError> {
        let s = self.setup(id)?.ok_or(PaymentError::NotFound("setup"))?;
        if let Some(done) = self.forwarded(&s.reader, id, CommandOp::CancelSetup).await {
            done?;
            return self.setup(id)?.ok_or(PaymentError::NotFound("setup"));
        }
        if s.status.is_final() {
            return Err(PaymentError::conflict(
                "invalid_state",
                format!("setup is {}, which is final", s.status),
            ));
        }
        let slot = self.slot(&s.reader);
        let removed =
            s.step == SetupStep::Accepted && slot.queue.lock().expect("queue lock").remove(id);
        if removed {
            return self.observe_setup(id, SetupObservation::Canceled, Source::Api);
        }
        let s = self.observe_setup(id, SetupObservation::CancelRequested, Source::Api)?;
        slot.hint.notify_one();
        Ok(s)
    }

    /// Start-up (and a reader taken over): every setup that is not final goes back to the
    /// front of its reader's queue; its worker replays the SetupIntent's creation key and
    /// reads the reader before it sends anything.
    pub(super) fn resume_setups(&self) -> Result<usize, PaymentError> {
        self.resume_setups_of(None)
    }

    /// [`Engine::resume_setups`] for one reader (one taken over), or all.
    pub(super) fn resume_setups_of(&self, reader: Option<&str>) -> Result<usize, PaymentError> {
        let all: Vec<Setup> = self.inner.registry.list(Tree::Setups)?;
        let mut open: Vec<Setup> = all
            .into_iter()
            .filter(|s| !s.status.is_final() && reader.is_none_or(|r| s.reader == r))
            .collect();
        open.sort_by_key(|s| s.created_at);
        for s in &open {
            let slot = self.slot(&s.reader);
            slot.queue
                .lock()
                .expect("queue lock")
                .push_resumed(Job::Setup {
                    id: s.id.clone(),
                    merchant: s.merchant.clone(),
                });
            slot.work.notify_one();
        }
        Ok(open.len())
    }
}
