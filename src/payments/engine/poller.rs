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
//! request. A reader whose place is unknown, or that a list of its place did not carry (moved,
//! deleted), or whose place's list failed, is read by its own job as before.

use super::{Engine, ReaderSlot};
use crate::stripe::params::ListReaders;
use crate::stripe::{Priority, RequestOptions};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// The batched poller's state: where readers are, which are watched.
#[derive(Default)]
pub(crate) struct Poller {
    state: Mutex<PollState>,
    /// The poller task was started (once, at the first watch).
    running: AtomicBool,
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
    listing: std::collections::HashSet<Place>,
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
        if !self.inner.poller.running.swap(true, Ordering::SeqCst) {
            tokio::spawn(run(self.clone()));
        }
        ListWatch {
            engine: self.clone(),
            reader: slot.id.clone(),
        }
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

    /// The places due for a list now; the next due time of each is set by how many busy
    /// readers share it.
    fn due_places(&self) -> Vec<Place> {
        let cfg = &self.inner.config;
        let now = Instant::now();
        let mut st = self.inner.poller.state.lock().expect("poller");
        let mut by_place: HashMap<Place, Vec<Arc<ReaderSlot>>> = HashMap::new();
        for (id, w) in &st.watched {
            if let Some(place) = st.places.get(id) {
                by_place
                    .entry(place.clone())
                    .or_default()
                    .push(w.slot.clone());
            }
        }
        // Places nobody watches any more are forgotten.
        st.due.retain(|p, _| by_place.contains_key(p));
        let mut out = Vec::new();
        for (place, slots) in by_place {
            let busy = slots.len() as u32;
            let every = (cfg.list_poll_alone / busy).max(cfg.list_poll);
            let due = st
                .due
                .entry(place.clone())
                .or_insert_with(|| now + cfg.list_poll_alone);
            if *due <= now {
                *due = now + every;
                out.push(place);
            }
        }
        out
    }

    /// Lists one place and hands each watched reader what the list said.
    async fn list_place(&self, place: &Place) {
        let sent = Instant::now();
        let filter = ListReaders {
            location: Some(place.location.clone()),
            ..ListReaders::default()
        };
        let o = RequestOptions {
            account: place.account.clone(),
            ..RequestOptions::default()
        };
        self.listing(place, true);
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
        let mut by_id: HashMap<&str, &crate::stripe::wire::Reader> =
            listed.iter().map(|r| (r.id.as_str(), r)).collect();
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

/// The poller task: every `list_poll`, while webhooks do not track payments, the places due.
async fn run(engine: Engine) {
    loop {
        tokio::time::sleep(engine.inner.config.list_poll).await;
        if engine.webhooks_tracking() {
            continue;
        }
        for place in engine.due_places() {
            engine.list_place(&place).await;
        }
    }
}
