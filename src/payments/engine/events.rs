//! Stripe's events as observations, and whether webhooks can be trusted to track payments.
//!
//! A verified event carries the object as Stripe saw it when it sent the event:
//! `terminal.reader.action_*` the reader with its action, `payment_intent.*` the
//! PaymentIntent. Events arrive late, twice and out of order, so each one goes through the
//! same monotone paths a read goes through:
//! - a reader is kept in its slot for the watch (the same `observe` of the reader a poll or
//!   a listed reader feeds, for whatever job is on that reader), and an action is never
//!   taken back: a reader showing our action in progress never replaces one that showed it
//!   over;
//! - a PaymentIntent is applied to the status machine only when its status cannot be left
//!   backwards (`succeeded`, `canceled`): the machine never leaves a final status, so a
//!   stale event can neither undo nor repeat anything. Anything else (`requires_capture`,
//!   whose authorisation deadline sits on the charge the event does not expand;
//!   `requires_payment_method` after a decline, which may belong to an earlier attempt) is a
//!   hint, and a read decides.
//!
//! Webhooks track payments once an event arrived for an action readerd started; from then
//! on the watch polls only as a safety net ([`super::EngineConfig::webhook_poll`]). When an
//! action readerd saw over by a poll gets no event within a bound readerd measures (three
//! times the slowest recent delivery, at least [`super::EngineConfig::webhook_grace`]),
//! readerd falls back to polling by itself, says so in a warning and in the
//! `readerd_webhooks_tracking` gauge, and returns to webhooks at the next event.

use super::{Engine, ReaderSlot};
use crate::payments::machine::{IntentView, Observation, Source, Status};
use crate::stripe::wire::{ActionStatus, PaymentIntent, PaymentIntentStatus, Reader};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// How many recent action events a reader remembers (to tell whether an action's event came).
const EVENTS_KEPT: usize = 8;

/// Whether webhooks track payments, and how late they come.
#[derive(Debug, Default)]
pub(crate) struct WebhookHealth {
    state: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    tracking: bool,
    /// Fell back after tracking (for the log line when they come back).
    fell_back: bool,
    /// The slowest recent delivery, decaying by 1/8 at each event.
    lag: Duration,
}

/// What a reader learnt from events, for its watch.
#[derive(Debug, Default)]
pub(crate) struct SeenReader {
    /// The freshest reader an event (or a list) delivered, not yet looked at.
    pub reader: Option<Reader>,
    /// PaymentIntents of the last actions an event reported over.
    pub over: VecDeque<String>,
    /// `reader` came from a reader list sent at this instant (see [`super::poller`]), not
    /// from an event: it stands for a read made then.
    pub listed_at: Option<tokio::time::Instant>,
}

/// What events told the watch about its action.
pub(crate) enum Seen {
    /// Nothing about our action.
    Nothing,
    /// Our action succeeded: the reader as the event carried it.
    Succeeded(Box<Reader>),
    /// Something happened to our action that a read must confirm.
    ReadIt,
    /// The reader as a reader list sent at this instant showed it: as good as a read made
    /// then, whatever its action (a list is a read; the watch checks it was sent after the
    /// dispatch, so that no earlier attempt's failure passes for this one).
    Listed(Box<Reader>, tokio::time::Instant),
}

/// The rank of an action status: an action only moves forward.
fn rank(s: &ActionStatus) -> u8 {
    match s {
        ActionStatus::InProgress => 0,
        _ => 1,
    }
}

/// `r` shows the same action as the reader kept, but less far on (a late event or list).
fn behind(seen: &SeenReader, r: &Reader) -> bool {
    match (
        r.action.as_ref(),
        seen.reader.as_ref().and_then(|o| o.action.as_ref()),
    ) {
        (Some(new), Some(old)) => {
            new.kind == old.kind
                && new.payment_intent_id() == old.payment_intent_id()
                && rank(&new.status) < rank(&old.status)
        }
        _ => false,
    }
}

impl ReaderSlot {
    /// Keeps `r` for the watch unless the reader already kept shows the same action further
    /// on (a late event).
    pub(crate) fn keep_seen(&self, r: Reader) {
        let mut seen = self.seen.lock().expect("seen reader");
        if behind(&seen, &r) {
            return;
        }
        let action = r.action.as_ref();
        if let Some(a) = action.filter(|a| a.status != ActionStatus::InProgress) {
            if let Some(pi) = a.payment_intent_id() {
                if !seen.over.iter().any(|x| x == pi) {
                    if seen.over.len() == EVENTS_KEPT {
                        seen.over.pop_front();
                    }
                    seen.over.push_back(pi.to_string());
                }
            }
        }
        seen.reader = Some(r);
        seen.listed_at = None;
    }

    /// Keeps `r`, listed by a reader list sent at `sent`, for the job on the reader, on the
    /// same terms as an event's reader (never an action taken back). A list is no event: it
    /// tells nothing about whether webhooks work.
    pub(crate) fn keep_listed(&self, r: Reader, sent: tokio::time::Instant) {
        let mut seen = self.seen.lock().expect("seen reader");
        if behind(&seen, &r) {
            return;
        }
        seen.reader = Some(r);
        seen.listed_at = Some(sent);
    }

    /// What events said about our action on `pi` since the watch last looked. Only a
    /// success stands for a read: the same PaymentIntent goes back to the reader after a
    /// decline, and a reader event carries nothing that tells one attempt from the next, so
    /// a late failure of the earlier attempt could pass for the new one; a failure is read.
    pub(crate) fn take_seen(&self, pi: &str) -> Seen {
        let mut seen = self.seen.lock().expect("seen reader");
        let Some(r) = seen.reader.take() else {
            return Seen::Nothing;
        };
        if let Some(at) = seen.listed_at.take() {
            return Seen::Listed(Box::new(r), at);
        }
        match r.action.as_ref() {
            Some(a) if a.payment_intent_id() == Some(pi) => {
                if a.status == ActionStatus::Succeeded {
                    Seen::Succeeded(Box::new(r))
                } else {
                    Seen::ReadIt
                }
            }
            _ => Seen::Nothing,
        }
    }

    fn event_came_for(&self, pi: &str) -> bool {
        let seen = self.seen.lock().expect("seen reader");
        seen.over.iter().any(|x| x == pi)
    }
}

impl Engine {
    /// Webhooks deliver reader events: the watch polls only as a safety net.
    pub fn webhooks_tracking(&self) -> bool {
        self.inner
            .webhooks
            .state
            .lock()
            .expect("webhook health")
            .tracking
    }

    /// A verified `terminal.reader.action_*` event: the reader as Stripe sent it. `sent` is
    /// the event's `created` (Unix seconds), to measure how late events come.
    pub fn event_reader(&self, reader: Reader, sent: i64) {
        let Some(slot) = self.existing_slot(&reader.id) else {
            return;
        };
        let ours = reader
            .action
            .as_ref()
            .and_then(|a| a.payment_intent_id())
            .is_some_and(|pi| self.is_our_intent(pi));
        if ours {
            // `created` is whole seconds: count from the end of that second.
            let lag_ms = (crate::clock::now_ms() - sent * 1000 - 999).max(0) as u64;
            self.webhooks_arrive(Duration::from_millis(lag_ms));
        }
        slot.keep_seen(reader);
        slot.hint.notify_one();
    }

    /// A verified `payment_intent.*` event: the PaymentIntent as Stripe sent it; `account`
    /// is the event's connected account.
    pub fn event_intent(&self, pi: &PaymentIntent, account: Option<&str>) {
        let Some(p) = self.payment_for_intent(&pi.id) else {
            return;
        };
        // The event comes from the account the PaymentIntent lives on (the connected
        // account for a direct charge, the platform otherwise).
        let from_its_account = account == Self::intent_options(&p).account.as_deref();
        let settled = matches!(
            pi.status,
            PaymentIntentStatus::Succeeded | PaymentIntentStatus::Canceled
        );
        if !(from_its_account && settled) {
            self.hint_intent(&pi.id);
            return;
        }
        let obs = Observation::Intent {
            view: IntentView::from(pi),
            reader_done: false,
        };
        if let Err(e) = self.observe(&p.id, obs, Source::Webhook) {
            tracing::warn!(payment = %p.id, error = %e, "event not recorded; re-reading");
            self.hint_intent(&pi.id);
            return;
        }
        if matches!(
            p.status,
            Status::Queued | Status::Processing | Status::RequiresConfirmation
        ) {
            self.hint_reader(&p.reader);
        }
    }

    fn webhooks_arrive(&self, lag: Duration) {
        let mut st = self.inner.webhooks.state.lock().expect("webhook health");
        st.lag = lag.max(st.lag * 7 / 8);
        if !st.tracking {
            st.tracking = true;
            if std::mem::take(&mut st.fell_back) {
                tracing::info!(
                    "webhooks deliver reader events again: polling only as a safety net"
                );
            } else {
                tracing::info!("webhooks deliver reader events: polling only as a safety net");
            }
            self.inner.links.metrics.set_webhooks_tracking(true);
        }
    }

    /// How long an action's event may take before webhooks count as down.
    fn event_bound(&self) -> Duration {
        let lag = self
            .inner
            .webhooks
            .state
            .lock()
            .expect("webhook health")
            .lag;
        (lag * 3).max(self.inner.config.webhook_grace)
    }

    /// A poll saw our action on `pi` over while webhooks track payments: unless its event
    /// comes within the bound, fall back to polling.
    pub(crate) fn expect_event(&self, slot: &std::sync::Arc<ReaderSlot>, pi: &str) {
        if !self.webhooks_tracking() || slot.event_came_for(pi) {
            return;
        }
        let (engine, slot, pi) = (self.clone(), slot.clone(), pi.to_string());
        let bound = self.event_bound();
        tokio::spawn(async move {
            tokio::time::sleep(bound).await;
            if slot.event_came_for(&pi) {
                return;
            }
            let mut st = engine.inner.webhooks.state.lock().expect("webhook health");
            if st.tracking {
                st.tracking = false;
                st.fell_back = true;
                tracing::warn!(
                    reader = %slot.id,
                    payment_intent = %pi,
                    bound_s = bound.as_secs_f64(),
                    "no webhook event for a finished reader action: falling back to polling"
                );
                engine.inner.links.metrics.set_webhooks_tracking(false);
            }
        });
    }
}
