//! What the engine does with a reader itself rather than a payment: cart displays (queued
//! like payments, never displacing one) and the operator's force-clear of a stuck action.
//!
//! On a shared store (a cluster) a display is also a record (tree `displays`, key
//! `<reader>/<display>`) from its acceptance until it is shown or dropped, and a shown one
//! stays until a payment clears it: so a display accepted by an instance that does not work
//! the reader reaches the holder (announced like a payment), one waiting on a holder that
//! dies is shown by the next, and the next holder knows that the cart on the reader is
//! ours to clear before a payment (otherwise it would wait it out as someone else's
//! action). On one machine displays live in memory only, as before.

use super::{Engine, PaymentError};
use crate::clock::Timestamp;
use crate::payments::ids::new_id;
use crate::payments::queue::Job;
use crate::store::Tree;
use crate::stripe::wire::Cart;
use serde::{Deserialize, Serialize};

/// A cart display waiting in a reader's queue.
#[derive(Clone, Debug)]
pub(crate) struct DisplayRequest {
    pub reader: String,
    pub cart: Cart,
}

/// A cart display in a shared store: waiting, or shown on the reader (ours to clear).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DisplayRecord {
    pub id: String,
    pub reader: String,
    pub merchant: String,
    pub cart: Cart,
    pub shown: bool,
    pub created_at: Timestamp,
}

fn display_key(reader: &str, id: &str) -> String {
    format!("{reader}/{id}")
}

impl Engine {
    /// Queues a cart display on a reader; it never displaces a payment.
    pub fn display(
        &self,
        reader: &str,
        merchant: &str,
        cart: Cart,
    ) -> Result<String, PaymentError> {
        let info = self
            .inner
            .directory
            .reader(reader)
            .ok_or(PaymentError::NotFound("reader"))?;
        let id = new_id("disp");
        let slot = self.slot(&info.id);
        let key = display_key(&info.id, &id);
        if self.inner.cluster.is_some() {
            let rec = DisplayRecord {
                id: id.clone(),
                reader: info.id.clone(),
                merchant: merchant.to_string(),
                cart: cart.clone(),
                shown: false,
                created_at: Timestamp::now(),
            };
            self.inner.registry.put(Tree::Displays, &key, &rec)?;
        }
        self.inner.displays.lock().expect("displays").insert(
            id.clone(),
            DisplayRequest {
                reader: info.id.clone(),
                cart,
            },
        );
        let pushed = slot.queue.lock().expect("queue lock").push(Job::Display {
            id: id.clone(),
            merchant: merchant.to_string(),
        });
        if let Err(e) = pushed {
            self.inner.displays.lock().expect("displays").remove(&id);
            if self.inner.cluster.is_some() {
                self.inner.registry.remove(Tree::Displays, &key)?;
            }
            return Err(e.into());
        }
        slot.work.notify_one();
        self.announce(&info.id, &id);
        Ok(id)
    }

    /// The display `id`, taken by the reader's worker to show it.
    pub(crate) fn take_display(&self, id: &str) -> Option<DisplayRequest> {
        self.inner.displays.lock().expect("displays").remove(id)
    }

    /// A display's worker is done with it: `shown` on the reader (it replaces any cart
    /// shown before), or dropped. Recorded on a shared store only.
    pub(crate) fn display_over(&self, reader: &str, id: &str, shown: bool) {
        if self.inner.cluster.is_none() {
            return;
        }
        let registry = &self.inner.registry;
        let key = display_key(reader, id);
        let written = if shown {
            self.cart_cleared(reader);
            match registry.get::<DisplayRecord>(Tree::Displays, &key) {
                Ok(Some(mut rec)) => {
                    rec.shown = true;
                    registry.put(Tree::Displays, &key, &rec)
                }
                other => other.map(|_| ()),
            }
        } else {
            registry.remove(Tree::Displays, &key)
        };
        if let Err(e) = written {
            tracing::warn!(reader = %reader, display = %id, error = %e, "display record not updated");
        }
    }

    /// Our cart left the reader (a payment replaced it): no shown display is left to clear.
    pub(crate) fn cart_cleared(&self, reader: &str) {
        if self.inner.cluster.is_none() {
            return;
        }
        for (key, rec) in self.displays_of(reader) {
            if rec.shown {
                let _ = self.inner.registry.remove(Tree::Displays, &key);
            }
        }
    }

    /// The display records of `reader`, with their keys (empty outside a cluster).
    pub(super) fn displays_of(&self, reader: &str) -> Vec<(String, DisplayRecord)> {
        if self.inner.cluster.is_none() {
            return Vec::new();
        }
        self.inner
            .registry
            .scan_prefix(Tree::Displays, &format!("{reader}/"))
            .unwrap_or_default()
    }

    /// The display record `id` of `reader`, if there is one.
    pub(super) fn display_record(&self, reader: &str, id: &str) -> Option<DisplayRecord> {
        self.inner
            .registry
            .get(Tree::Displays, &display_key(reader, id))
            .ok()
            .flatten()
    }

    /// Puts a display found in the store in its reader's line (this instance works the
    /// reader); a shown one tells the worker that the cart on the reader is ours.
    pub(super) fn resume_display(&self, rec: DisplayRecord) {
        let slot = self.slot(&rec.reader);
        if rec.shown {
            *slot.shows_our_cart.lock().expect("display flag") = true;
            return;
        }
        let current = slot.current.lock().expect("current").clone();
        let mut q = slot.queue.lock().expect("queue lock");
        if current.as_deref() == Some(rec.id.as_str()) || q.contains(&rec.id) {
            return;
        }
        self.inner.displays.lock().expect("displays").insert(
            rec.id.clone(),
            DisplayRequest {
                reader: rec.reader.clone(),
                cart: rec.cart,
            },
        );
        q.push_resumed(Job::Display {
            id: rec.id,
            merchant: rec.merchant,
        });
        drop(q);
        slot.work.notify_one();
    }

    /// An operator's force-clear: cancels the reader's action only if it still holds the
    /// PaymentIntent the operator named (compare, then cancel), so that a customer's payment
    /// that replaced it in the meantime is never killed. Returns the reader as it is after.
    pub async fn clear_reader(
        &self,
        reader: &str,
        payment_intent: &str,
    ) -> Result<crate::stripe::wire::Reader, PaymentError> {
        let info = self
            .inner
            .directory
            .reader(reader)
            .ok_or(PaymentError::NotFound("reader"))?;
        let on_reader = info.options();
        self.count("retrieve_reader");
        let r = self
            .inner
            .stripe
            .retrieve_reader_on(&info.id, &on_reader)
            .await?;
        let holds = r.action.as_ref().filter(|a| {
            a.status == crate::stripe::wire::ActionStatus::InProgress
                && a.payment_intent_id() == Some(payment_intent)
        });
        if holds.is_none() {
            let what = match &r.action {
                Some(a) if a.status == crate::stripe::wire::ActionStatus::InProgress => format!(
                    "an in-progress {} action{}",
                    a.kind,
                    a.payment_intent_id()
                        .map(|p| format!(" for {p}"))
                        .unwrap_or_default()
                ),
                _ => "no action in progress".to_string(),
            };
            return Err(PaymentError::conflict(
                "reader_action_mismatch",
                format!(
                    "reader {} holds {what}, not {payment_intent}; nothing was canceled",
                    info.id
                ),
            ));
        }
        tracing::warn!(reader = %info.id, payment_intent, "operator force-clear of the reader's action");
        self.count("cancel_action");
        let key = format!("readerd:clear:{}:{payment_intent}:{}", info.id, new_id("k"));
        Ok(self
            .inner
            .stripe
            .cancel_action(&info.id, &on_reader.key(key))
            .await?)
    }
}
