//! Batched reader polling: while webhooks do not track payments, one fleet-wide task lists
//! the readers of every location that has a busy reader (`GET /v1/terminal/readers?location=…`,
//! 100 a page) instead of one read per busy reader.
//!
//! A listed reader is the same `Reader` a read returns, with its `action` (Stripe's list
//! returns full Reader objects), so it goes where an event's reader goes: the reader's slot
//! ([`ReaderSlot::keep_listed`]), where the job on the reader takes it instead of a read. It
//! is tagged with the instant the list was sent: a watch takes it as a read only when the
//! list was sent after its dispatch was answered.
//!
//! Readers are grouped by *place*: the account that owns them (`Stripe-Account`, the
//! platform or a merchant for the readers it owns) and their location, learnt from the
//! readers the flow saw (the `process_payment_intent` answer, reads). A place is listed
//! every `list_poll_alone / busy` (never more often than `list_poll`): one busy reader alone
//! pays no more than it would for reads at that pace, and a hundred busy readers share one
//! request. `busy` is the most readers busy there at once within the last 30 s, so that the
//! last customers of a rush are listed at the rush's pace, not at a lone reader's. A reader
//! whose place is unknown, or that a list of its place did not carry (moved, deleted), or
//! whose place's list failed, is read by its own job as before.
//!
//! Two more uses of the same lists:
//! - **The pre-flight check.** A job that does not know its reader to be free asks for
//!   [`Engine::listed_view`] before the read it would make: the next list of the place
//!   answers every reader that asked, so a thousand readers starting together cost ten
//!   lists, not a thousand reads. Only a reader the list shows free is taken from it; one
//!   showing an action in progress is read by its job, as before.
//! - **A lone reader looks at its PaymentIntent every other time.** With one busy reader in
//!   its place, a list costs what a read costs and is followed by the PaymentIntent's read
//!   once it shows the action over. So its place is listed and its PaymentIntent peeked at
//!   in turn ([`ReaderSlot::peek_intent`]): an authorised PaymentIntent is the outcome
//!   itself, and the reader's action is over when it is, so a customer who taps between a
//!   list and a peek costs one look fewer. Anything else the peek shows waits for the next
//!   list (a decline or a cancel shows on the reader).

use super::{Engine, ReaderSlot};
use crate::stripe::params::ListReaders;
use crate::stripe::wire::Reader;
use crate::stripe::{Priority, RequestOptions};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// A reader's pre-flight check waiting for the next list of its place.
type Asked = (String, oneshot::Sender<Option<Reader>>);

/// The batched poller's state: where readers are, which are watched.
#[derive(Default)]
pub(crate) struct Poller {
    state: Mutex<PollState>,
    /// The poller task was started (once, at the first watch).
    running: AtomicBool,
    /// Wakes the poller task before its tick (a pre-flight check asked).
    wake: Notify,
}

#[derive(Default)]
struct PollState {
    /// Where each reader the flow has seen stands. One entry per reader: bounded by the fleet.
    places: HashMap<String, Place>,
    /// Readers whose job follows the lists now.
    watched: HashMap<String, Watched>,
    /// When each place with a watched reader is listed next.
    due: HashMap<Place, Instant>,
    /// Places whose list is on its way (waiting for the budget, or retried): it will carry
    /// every reader there, also one watched since it was sent.
    listing: HashSet<Place>,
    /// Pre-flight checks waiting for the next list of their place.
    asked: HashMap<Place, Vec<Asked>>,
    /// Lone places whose next turn is a peek at the PaymentIntent, not a list.
    peek_next: HashSet<Place>,
    /// When each place was last listed: no place is listed more often than `list_poll`,
    /// pre-flight checks included (they wait for the next list instead). Pruned with the
    /// places nobody watches or asks about.
    last_listed: HashMap<Place, Instant>,
    /// The most readers busy at once at each watched place within [`BUSY_HELD`], and since
    /// when: a place where a rush is ending keeps the pace of the rush for its last
    /// customers instead of falling back to a lone reader's.
    busiest: HashMap<Place, (u32, Instant)>,
}

/// How long a place keeps the list pace of its busiest moment.
const BUSY_HELD: Duration = Duration::from_secs(30);

impl PollState {
    /// How busy `place` counts as: its busy readers now, or more if it had more within
    /// [`BUSY_HELD`].
    fn busy_lately(&mut self, place: &Place, now_busy: u32, now: Instant) -> u32 {
        let e = self.busiest.entry(place.clone()).or_insert((now_busy, now));
        if now_busy >= e.0 || now.saturating_duration_since(e.1) > BUSY_HELD {
            *e = (now_busy, now);
        }
        e.0.max(now_busy).max(1)
    }
}

/// An account and a location: what one list call covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Place {
    /// `Stripe-Account`; `None`: the platform.
    account: Option<String>,
    location: String,
}

struct Watched {
    slot: Arc<ReaderSlot>,
    /// How many watches hold it (a job's watch; never more than one in practice).
    holders: usize,
    /// The last list of its place did not carry it (or failed): its job reads it itself.
    missing: bool,
    /// When a list that carried it last came back (or when it started being watched).
    since: Instant,
}

/// While it lives, the reader's job follows the lists (see [`Engine::list_watch`]).
pub(crate) struct ListWatch {
    engine: Engine,
    reader: String,
}

impl Drop for ListWatch {
    fn drop(&mut self) {
        let mut st = self.engine.inner.poller.state.lock().expect("poller");
        if let Some(w) = st.watched.get_mut(&self.reader) {
            w.holders -= 1;
            if w.holders == 0 {
                st.watched.remove(&self.reader);
            }
        }
    }
}

impl Engine {
    /// Notes where a reader the flow saw stands (its location, on its account), so that
    /// its place can be listed.
    pub(crate) fn learn_place(&self, slot: &ReaderSlot, r: &crate::stripe::wire::Reader) {
        let Some(location) = r.location.as_ref().map(|l| l.id().to_string()) else {
            return;
        };
        let place = Place {
            account: slot.options().account,
            location,
        };
        let mut st = self.inner.poller.state.lock().expect("poller");
        if st.places.get(&slot.id) != Some(&place) {
            st.places.insert(slot.id.clone(), place);
        }
    }

    /// The job on `slot`'s reader follows the lists until the guard is dropped. Starts the
    /// poller task at the first call.
    pub(crate) fn list_watch(&self, slot: &Arc<ReaderSlot>) -> ListWatch {
        {
            let mut st = self.inner.poller.state.lock().expect("poller");
            let w = st.watched.entry(slot.id.clone()).or_insert(Watched {
                slot: slot.clone(),
                holders: 0,
                missing: false,
                since: Instant::now(),
            });
            w.holders += 1;
            w.missing = false;
            w.since = Instant::now();
            if let Some(place) = st.places.get(&slot.id).cloned() {
                // A place that nobody watched is listed first after a lone reader's interval.
                st.due
                    .entry(place)
                    .or_insert_with(|| Instant::now() + self.inner.config.list_poll_alone);
            }
        }
        self.start_poller();
        ListWatch {
            engine: self.clone(),
            reader: slot.id.clone(),
        }
    }

    fn start_poller(&self) {
        if !self.inner.poller.running.swap(true, Ordering::SeqCst) {
            tokio::spawn(run(self.clone()));
        }
    }

    /// The pre-flight view of `slot`'s reader from the next list of its place (see the
    /// module documentation), or `None`: its place is not known, the list failed or did not
    /// carry it, or none came within `wait`. Only a list answered after the ask is taken.
    pub(crate) async fn listed_view(&self, slot: &ReaderSlot, wait: Duration) -> Option<Reader> {
        let rx = {
            let mut st = self.inner.poller.state.lock().expect("poller");
            let place = match st.places.get(&slot.id) {
                Some(p) => p.clone(),
                None => {
                    let location = self.inner.directory.reader(&slot.id)?.location?;
                    let place = Place {
                        account: slot.options().account,
                        location,
                    };
                    st.places.insert(slot.id.clone(), place.clone());
                    place
                }
            };
            let (tx, rx) = oneshot::channel();
            st.asked
                .entry(place)
                .or_default()
                .push((slot.id.clone(), tx));
            rx
        };
        self.start_poller();
        self.inner.poller.wake.notify_one();
        tokio::time::timeout(wait, rx).await.ok()?.ok()?
    }

    /// The lists stand for this reader's reads: webhooks do not track payments, the reader
    /// is watched, its place is known, and the last list of its place carried it within
    /// two lone-reader intervals, or a list of its place is on its way. A list waiting for
    /// the budget is not overtaken by a read, which would wait in the same line (when
    /// payment writes fill the budget, a thousand reads would otherwise queue behind the
    /// list and be spent after it); a list the client gives up on (its bounded retries)
    /// ends, and leaves its readers to their own reads.
    pub(crate) fn list_covers(&self, reader: &str) -> bool {
        if self.webhooks_tracking() {
            return false;
        }
        let fresh = self.inner.config.list_poll_alone * 2;
        let st = self.inner.poller.state.lock().expect("poller");
        let Some(place) = st.places.get(reader) else {
            return false;
        };
        let listing = st.listing.contains(place);
        st.watched
            .get(reader)
            .is_some_and(|w| !w.missing && (listing || w.since.elapsed() <= fresh))
    }

    /// Marks `place` as having a list on its way, or not.
    fn listing(&self, place: &Place, on: bool) {
        let mut st = self.inner.poller.state.lock().expect("poller");
        if on {
            st.listing.insert(place.clone());
        } else {
            st.listing.remove(place);
        }
    }

    /// The places due for a list now, and the lone readers due for a peek at their
    /// PaymentIntent instead. The next due time of each place is set by how many busy
    /// readers share it; a place with a pre-flight check waiting is due at once. While
    /// webhooks track payments, only the pre-flight checks are listed for.
    fn due_places(&self) -> (Vec<Place>, Vec<Arc<ReaderSlot>>) {
        let cfg = &self.inner.config;
        let now = Instant::now();
        let tracking = self.webhooks_tracking();
        let mut st = self.inner.poller.state.lock().expect("poller");
        let mut by_place: HashMap<Place, Vec<Arc<ReaderSlot>>> = HashMap::new();
        if !tracking {
            for (id, w) in &st.watched {
                if let Some(place) = st.places.get(id) {
                    by_place
                        .entry(place.clone())
                        .or_default()
                        .push(w.slot.clone());
                }
            }
        }
        // Places nobody watches any more are forgotten.
        st.due.retain(|p, _| by_place.contains_key(p));
        st.peek_next.retain(|p| by_place.contains_key(p));
        st.busiest.retain(|p, _| by_place.contains_key(p));
        st.last_listed.retain(|p, at| {
            by_place.contains_key(p) || now.saturating_duration_since(*at) < cfg.list_poll
        });
        let mut out: Vec<Place> = st
            .asked
            .keys()
            .filter(|p| {
                !st.listing.contains(*p)
                    && st
                        .last_listed
                        .get(*p)
                        .is_none_or(|at| now.saturating_duration_since(*at) >= cfg.list_poll)
            })
            .cloned()
            .collect();
        let mut peeks = Vec::new();
        for (place, slots) in by_place {
            let busy = st.busy_lately(&place, slots.len() as u32, now);
            let every = (cfg.list_poll_alone / busy).max(cfg.list_poll);
            if st.listing.contains(&place) {
                continue;
            }
            let due = st
                .due
                .entry(place.clone())
                .or_insert_with(|| now + cfg.list_poll_alone);
            if *due > now {
                continue;
            }
            *due = now + every;
            if out.contains(&place) {
                continue;
            }
            if busy == 1 && st.peek_next.remove(&place) {
                peeks.extend(slots);
                continue;
            }
            if busy == 1 {
                st.peek_next.insert(place.clone());
            }
            out.push(place);
        }
        (out, peeks)
    }

    /// Lists one place and hands each watched reader what the list said.
    async fn list_place(&self, place: &Place) {
        let sent = Instant::now();
        self.inner
            .poller
            .state
            .lock()
            .expect("poller")
            .last_listed
            .insert(place.clone(), sent);
        let filter = ListReaders {
            location: Some(place.location.clone()),
            ..ListReaders::default()
        };
        let o = RequestOptions {
            account: place.account.clone(),
            ..RequestOptions::default()
        };
        self.listing(place, true);
        // The pre-flight checks this list answers: those that asked before it was sent.
        let asked = self
            .inner
            .poller
            .state
            .lock()
            .expect("poller")
            .asked
            .remove(place)
            .unwrap_or_default();
        let res = self
            .inner
            .stripe
            .at(Priority::Customer)
            .list_readers_on(&filter, &o)
            .await;
        self.listing(place, false);
        let listed = match res {
            Ok(readers) => {
                for _ in 0..readers.len().div_ceil(100).max(1) {
                    self.count("list_readers");
                }
                readers
            }
            Err(e) => {
                tracing::info!(location = %place.location, error = %e, "reader list failed; its busy readers are read one by one");
                self.count("list_readers");
                Vec::new()
            }
        };
        let mut by_id: HashMap<&str, &Reader> = listed.iter().map(|r| (r.id.as_str(), r)).collect();
        for (reader, tx) in asked {
            let found = by_id.get(reader.as_str()).map(|r| (*r).clone());
            if let Some(r) = &found {
                self.inner.directory.observe_reader(r);
            } else {
                self.inner
                    .poller
                    .state
                    .lock()
                    .expect("poller")
                    .places
                    .remove(&reader);
            }
            let _ = tx.send(found);
        }
        // Every reader watched there now: one that started being watched while the list was
        // on its way is carried too (its watch ignores what was listed before its dispatch).
        let slots: Vec<Arc<ReaderSlot>> = {
            let st = self.inner.poller.state.lock().expect("poller");
            st.watched
                .iter()
                .filter(|(id, _)| st.places.get(*id) == Some(place))
                .map(|(_, w)| w.slot.clone())
                .collect()
        };
        for slot in &slots {
            let found = by_id.remove(slot.id.as_str());
            if let Some(r) = found {
                self.inner.directory.observe_reader(r);
                slot.keep_listed(r.clone(), sent);
            }
            {
                let mut st = self.inner.poller.state.lock().expect("poller");
                if let Some(w) = st.watched.get_mut(&slot.id) {
                    w.missing = found.is_none();
                    if found.is_some() {
                        // Fresh from the answer's arrival: a list that waited for the
                        // budget still covers its readers for the next interval.
                        w.since = Instant::now();
                    }
                }
                if found.is_none() {
                    // Moved or gone: its own read finds out, and teaches us its place.
                    st.places.remove(&slot.id);
                }
            }
            slot.hint.notify_one();
        }
    }
}

/// The poller task: every `list_poll` (sooner when a pre-flight check asks), the places
/// due and the peeks due. Lists run side by side (each waits for the budget), so that one
/// place waiting for its permit does not hold the others' back.
async fn run(engine: Engine) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(engine.inner.config.list_poll) => {}
            _ = engine.inner.poller.wake.notified() => {
                // Gather the pre-flight checks of readers starting together into one list.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let (places, peeks) = engine.due_places();
        for slot in peeks {
            slot.peek_intent.store(true, Ordering::SeqCst);
            slot.hint.notify_one();
        }
        for place in places {
            engine.listing(&place, true);
            let engine = engine.clone();
            tokio::spawn(async move { engine.list_place(&place).await });
        }
    }
}
