//! Step 4: watching. The reader is polled, faster at first, while our action is in
//! progress; while webhooks track payments, their events stand for the polls (the reader an
//! event carried is looked at instead of a read; a PaymentIntent event that settles the
//! payment ends the watch) and the poll is a safety net. Once the action is over the
//! PaymentIntent decides. A reader that shows no sign of life after the dispatch is reported as not
//! having picked the payment up; an action past its deadline is cancelled and, again, the
//! PaymentIntent decides. A cancel refused during authorisation waits for the result.

use super::{is_our_action, Flow, R};
use crate::clock::now_ms;
use crate::payments::engine::Seen;
use crate::payments::machine::{Failure, IntentView, Observation, Payment, Source, Status};
use crate::stripe::wire::{ActionStatus, PaymentIntentStatus, Reader, ReaderStatus};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// How long a reader event that shows our action succeeded waits for the PaymentIntent's
/// own event before the PaymentIntent is read.
const PI_EVENT_WAIT: Duration = Duration::from_secs(2);

/// What the watch knows between two looks.
struct Watch {
    pi: String,
    dispatched: Instant,
    /// The dispatch on the wall clock, to compare with the reader's `last_seen_at`.
    dispatched_ms: i64,
    interval: Duration,
    deadline: Instant,
    cancel_sent: bool,
    pickup_noted: bool,
    /// Set once the deadline passed: the failure to report if the PaymentIntent carries
    /// no money in the end.
    deadline_failure: Option<Failure>,
    source: Source,
}

/// After a look: keep watching, or the watch is over.
enum Look {
    Again,
    Done,
}

impl Flow {
    pub(super) async fn watch(&self, mut p: Payment, dispatched: Instant, first: Source) -> R<()> {
        let mut w = Watch {
            pi: p.payment_intent.clone().unwrap_or_default(),
            dispatched,
            dispatched_ms: now_ms(),
            interval: self.cfg.poll_min,
            deadline: dispatched + self.cfg.action_deadline,
            cancel_sent: false,
            pickup_noted: false,
            deadline_failure: None,
            source: first,
        };
        // A resumed payment looks at once; otherwise every look follows a wait.
        let mut look_now = first == Source::Reconcile;
        // Without webhooks, the reader list of its location stands for this reader's polls.
        self.slot.peek_intent.store(false, Ordering::SeqCst);
        let _listed = self.e.list_watch(&self.slot);
        loop {
            if !look_now {
                // While webhooks track payments, their events wake the watch; while the
                // reader list covers the reader, the lists do; either way the poll is a
                // safety net.
                let interval = if self.e.webhooks_tracking() {
                    w.interval.max(self.cfg.webhook_poll)
                } else if self.e.list_covers(&self.slot.id) {
                    w.interval.max(self.cfg.list_poll_alone * 2)
                } else {
                    w.interval
                };
                let woke = tokio::select! {
                    _ = sleep(interval) => false,
                    _ = self.slot.hint.notified() => true,
                };
                w.source = if woke { Source::Webhook } else { Source::Poll };
            }
            look_now = false;
            p = self.load()?;
            if !matches!(p.status, Status::Queued | Status::Processing) {
                // Settled while we waited (an event carried the PaymentIntent). Authorised
                // means the reader's action is over; after anything else it is read again.
                let authorised = matches!(p.status, Status::Succeeded | Status::RequiresCapture);
                self.slot.known_free.store(authorised, Ordering::SeqCst);
                return self.after(p).await;
            }
            if self.slot.peek_intent.swap(false, Ordering::SeqCst) && !p.cancel_requested {
                if let Some(p) = self.peek_intent(&p).await? {
                    return self.after(p).await;
                }
            }
            let mut canceled_now = false;
            if p.cancel_requested && !w.cancel_sent {
                w.cancel_sent = true;
                canceled_now = true;
                self.cancel_on_reader().await?;
            }
            // What an event or a list delivered since the last look, else a read. A listed
            // reader is a read made when the list was sent, so it counts only if that was
            // after the dispatch. A wake-up with nothing for our action (another job's
            // event, a PaymentIntent event that settled nothing, a list from before the
            // dispatch) is no reason to read while webhooks track payments, nor is anything
            // while the lists cover the reader (its own read would wait in the same line as
            // their next one); a cancel just sent is (Stripe sends no event for
            // `cancel_action`, and its answer may predate the cancel's outcome).
            let (reader, from_event) = match self.slot.take_seen(&w.pi) {
                Seen::Succeeded(r) => (Some(*r), true),
                Seen::Listed(r, sent) if sent >= w.dispatched && !canceled_now => {
                    w.source = Source::Poll;
                    (Some(*r), false)
                }
                Seen::Nothing | Seen::Listed(..)
                    if !canceled_now
                        && ((w.source == Source::Webhook && self.e.webhooks_tracking())
                            || self.e.list_covers(&self.slot.id)) =>
                {
                    continue;
                }
                Seen::Nothing | Seen::Listed(..) | Seen::ReadIt => {
                    (self.read_reader().await, false)
                }
            };
            let ours = reader.as_ref().and_then(|r| is_our_action(r, &w.pi));
            if ours == Some(ActionStatus::InProgress) {
                let r = reader.as_ref().expect("ours implies a reader");
                if !self.in_progress(r, &mut w).await? {
                    continue;
                }
            } else if ours.is_some() {
                self.slot.known_free.store(true, Ordering::SeqCst);
                if !from_event {
                    self.e.expect_event(&self.slot, &w.pi);
                }
            }
            let collected = reader
                .as_ref()
                .and_then(|r| super::review::collected_card(r, &w.pi));
            if from_event && ours == Some(ActionStatus::Succeeded) && collected.is_none() {
                // The PaymentIntent's own event usually follows at once and spares a read.
                if let Some(p) = self.pi_event(PI_EVENT_WAIT).await? {
                    self.reader_done_mark();
                    return self.after(p).await;
                }
            }
            if let Some(card) = collected {
                // A reviewed payment's card was read: the point of sale sees it.
                p = self.e.update(&self.id, |p| {
                    p.card = Some(card);
                    Ok(())
                })?;
            }
            match self.decide(&p, reader.as_ref(), ours, &mut w).await? {
                Look::Again => {}
                Look::Done => return Ok(()),
            }
        }
    }

    /// A lone reader's turn to look at its PaymentIntent instead of a list (see the
    /// poller). An authorised PaymentIntent settles the payment: the reader's action is over
    /// once the PaymentIntent it processes is authorised. Anything else waits for the next
    /// list: a decline or a cancel shows on the reader, and the PaymentIntent decides then.
    async fn peek_intent(&self, p: &Payment) -> R<Option<Payment>> {
        let intent = self.read_intent(p).await?;
        if !matches!(
            intent.status,
            PaymentIntentStatus::RequiresCapture | PaymentIntentStatus::Succeeded
        ) {
            return Ok(None);
        }
        self.reader_done_mark();
        let p = self.observe(
            Observation::Intent {
                view: IntentView::from(&intent),
                reader_done: true,
            },
            Source::Poll,
        )?;
        if matches!(p.status, Status::Queued | Status::Processing) {
            return Ok(None);
        }
        self.slot.known_free.store(true, Ordering::SeqCst);
        Ok(Some(p))
    }

    /// Waits up to `wait` for an event to settle the payment; the payment once settled.
    async fn pi_event(&self, wait: Duration) -> R<Option<Payment>> {
        let until = Instant::now() + wait;
        loop {
            let p = self.load()?;
            if !matches!(p.status, Status::Queued | Status::Processing) {
                return Ok(Some(p));
            }
            if tokio::time::timeout_at(until, self.slot.hint.notified())
                .await
                .is_err()
            {
                return Ok(None);
            }
        }
    }

    fn reader_done_mark(&self) {
        self.e
            .inner
            .stats
            .lock()
            .expect("stats")
            .reader_done(&self.id, std::time::Instant::now());
    }

    /// Asks the reader to cancel our action (the customer's or the POS's cancel); what
    /// happened is noted, the PaymentIntent still decides.
    async fn cancel_on_reader(&self) -> R<()> {
        match self.cancel_action().await {
            Ok(_) => {
                self.observe(
                    Observation::Note("cancel sent to the reader".into()),
                    Source::Api,
                )?;
            }
            Err(e) if e.code() == Some("terminal_reader_busy") => {
                self.note(
                    "cancel refused by the reader: the card is being authorised; waiting for the result",
                    Some("authorisation".into()),
                )?;
            }
            Err(e) => {
                self.observe(
                    Observation::Note(format!("cancel on the reader failed: {e}")),
                    Source::Api,
                )?;
            }
        }
        Ok(())
    }

    /// Our action is in progress: note a reader that has not picked it up, and past the
    /// deadline cancel it. `true` when the PaymentIntent should decide now.
    async fn in_progress(&self, r: &Reader, w: &mut Watch) -> R<bool> {
        let offline = r.status == Some(ReaderStatus::Offline);
        if !w.pickup_noted && w.dispatched.elapsed() >= self.cfg.pickup_timeout {
            let seen = r.last_seen_at.is_some_and(|ms| ms >= w.dispatched_ms);
            if !seen || offline {
                w.pickup_noted = true;
                self.note(
                    format!(
                        "the reader has not picked the payment up after {} s (last seen {})",
                        self.cfg.pickup_timeout.as_secs(),
                        r.last_seen_at
                            .map(|ms| format!(
                                "{} s before the dispatch",
                                (w.dispatched_ms - ms) / 1000
                            ))
                            .unwrap_or_else(|| "never".into())
                    ),
                    Some("reader_not_picked_up".into()),
                )?;
            }
        }
        if Instant::now() < w.deadline || w.deadline_failure.is_some() {
            w.interval = (w.interval * 3 / 2).min(self.cfg.poll_max);
            w.source = Source::Poll;
            return Ok(false);
        }
        let failure = if offline {
            Failure::new(
                "reader_offline",
                "the reader went offline during the payment",
            )
        } else {
            Failure::new("timeout", "the reader did not finish the payment in time")
        };
        match self.cancel_action().await {
            Ok(_) => {
                self.observe(
                    Observation::Note(format!(
                        "deadline passed ({}); reader action canceled",
                        failure.code
                    )),
                    Source::Poll,
                )?;
                w.deadline_failure = Some(failure);
                Ok(true)
            }
            Err(e) => {
                // Authorising (busy) or unreachable: look again a bit later.
                self.observe(
                    Observation::Note(format!(
                        "deadline passed but the reader action could not be canceled: {e}"
                    )),
                    Source::Poll,
                )?;
                w.deadline = Instant::now() + self.cfg.poll_max * 5;
                if offline {
                    // An unreachable reader cannot be cancelled; the deadline still
                    // stands, and the PaymentIntent decides.
                    w.deadline_failure = Some(failure);
                    Ok(true)
                } else {
                    w.interval = (w.interval * 3 / 2).min(self.cfg.poll_max);
                    Ok(false)
                }
            }
        }
    }

    /// Our action is over (or gone, or past its deadline): the PaymentIntent decides.
    async fn decide(
        &self,
        p: &Payment,
        reader: Option<&Reader>,
        ours: Option<ActionStatus>,
        w: &mut Watch,
    ) -> R<Look> {
        self.reader_done_mark();
        let action_failure = reader.and_then(|r| {
            let a = r.action.as_ref()?;
            (ours == Some(ActionStatus::Failed)).then(|| {
                Failure::new(
                    a.failure_code
                        .clone()
                        .unwrap_or_else(|| "reader_action_failed".into()),
                    a.failure_message
                        .clone()
                        .unwrap_or_else(|| "the reader action failed".into()),
                )
            })
        });
        let intent = self.read_intent(p).await?;
        let reader_done = ours != Some(ActionStatus::InProgress) || w.deadline_failure.is_some();
        let p = self.observe(
            Observation::Intent {
                view: IntentView::from(&intent),
                reader_done,
            },
            w.source,
        )?;
        if !matches!(p.status, Status::Processing | Status::Queued) {
            self.after(p).await?;
            return Ok(Look::Done);
        }
        match intent.status {
            PaymentIntentStatus::RequiresPaymentMethod
                if intent.last_payment_error.is_none() || w.deadline_failure.is_some() =>
            {
                self.ended_without_payment(p, action_failure, w).await?;
                Ok(Look::Done)
            }
            _ => {
                // Collected or authorising: the PaymentIntent has not decided yet.
                if w.deadline_failure.is_some()
                    && Instant::now() >= w.deadline + self.cfg.action_deadline
                {
                    let f = w
                        .deadline_failure
                        .clone()
                        .unwrap_or_else(|| Failure::new("timeout", "no result in time"));
                    self.give_up(f).await?;
                    return Ok(Look::Done);
                }
                w.interval = self.cfg.poll_min;
                w.source = Source::Poll;
                Ok(Look::Again)
            }
        }
    }

    /// The action is over and the PaymentIntent still waits for a card with no decline on
    /// it: the customer canceled on the reader, a cancel was asked for, or the payment
    /// failed on the reader's side; the PaymentIntent is canceled in every case.
    async fn ended_without_payment(
        &self,
        p: Payment,
        action_failure: Option<Failure>,
        w: &Watch,
    ) -> R<()> {
        let customer = action_failure
            .as_ref()
            .is_some_and(|f| f.code == "customer_canceled");
        if customer {
            // The customer pressed cancel on the reader: a cancel, which Stripe confirms by
            // canceling the PaymentIntent.
            let f = action_failure.clone();
            let p = self.e.update(&self.id, |p| {
                p.cancel_requested = true;
                p.failure = f;
                Ok(())
            })?;
            self.note("the customer canceled on the reader", None)?;
            self.e.cancel_intent(&p, Source::Poll).await?;
            return Ok(());
        }
        if p.cancel_requested {
            self.e.cancel_intent(&p, Source::Api).await?;
            return Ok(());
        }
        let f = w
            .deadline_failure
            .clone()
            .or(action_failure)
            .unwrap_or_else(|| {
                if self.reader_missing.load(Ordering::SeqCst) {
                    self.reader_gone("404 while the payment was on it")
                } else {
                    Failure::new(
                        "reader_action_lost",
                        "the reader's action ended without a result",
                    )
                }
            });
        self.give_up(f).await
    }
}
