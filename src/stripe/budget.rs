//! The daemon's one Stripe request budget: `requests_per_second`, shared by every request
//! of the process, handed out in priority order.
//!
//! Stripe limits a platform as a whole (about 100 requests per second live, 25 in test
//! mode), whatever the request is for, so a sync or a re-check spends the same budget as a
//! payment. Permits are spaced `1/rps` apart with no burst beyond one (any one-second window
//! holds at most `rps + 1` requests). When several requests wait, the permit goes to the
//! highest [`Priority`], first come first served within one priority: a payment write never
//! waits behind a sync, and a poll that waits simply happens later (a reader has at most one
//! poll waiting, so polls stretch out rather than pile up).
//!
//! One exception keeps customers from being starved by a rush: while payment writes and
//! reads for customers at a reader both wait, they take turns, three customers' reads for
//! each write. Strictly writes-first, a thousand new payments submitted together hold
//! every permit for as long as their creates and dispatches last (tens of seconds at 100
//! per second), and the customers who tapped meanwhile wait that long to see their outcome
//! recorded; a reader whose outcome is not recorded takes no next payment either. Taking
//! one turn in two still left the customers' reads of a rush waiting up to 2.5 s for their
//! permits (a list shows a dozen taps at once); three in four cut that to under 1 s, while
//! writes keep a quarter of the budget however many reads wait (customers' reads are
//! bounded by the busy readers anyway: one list per place and one PaymentIntent read per
//! tap). Background requests never get a turn while either waits.
//!
//! Time is tokio's, so tests drive it with the paused clock.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Whose request it is, most urgent first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// A payment write: create, process, capture, cancel, refund (and the reader commands
    /// of a job at the reader).
    Write = 0,
    /// A read for a payment whose customer is at the reader.
    Customer = 1,
    /// Everything else: fleet sync, merchant re-check, reader refresh, sweep.
    Background = 2,
}

#[derive(Debug)]
struct State {
    /// The earliest instant the next permit may be handed out.
    next: Instant,
    /// Waiting requests, `(priority, ticket)`: the first is served next, but for the
    /// customers' turn (see [`State::head`]).
    waiting: BTreeSet<(Priority, u64)>,
    tickets: u64,
    /// Permits handed to customers' reads in a row while payment writes waited.
    customer_run: u32,
}

/// While payment writes and customers' reads both wait, customers take this many permits
/// for each write (see the module documentation).
const CUSTOMERS_PER_WRITE: u32 = 3;

impl State {
    /// The waiter the next permit goes to: the first in priority order, except that
    /// customers' reads waiting behind payment writes take [`CUSTOMERS_PER_WRITE`] permits
    /// for each write.
    fn head(&self) -> Option<(Priority, u64)> {
        let first = *self.waiting.first()?;
        if first.0 == Priority::Write && self.customer_run < CUSTOMERS_PER_WRITE {
            if let Some(c) = self.first_customer() {
                return Some(c);
            }
        }
        Some(first)
    }

    fn first_customer(&self) -> Option<(Priority, u64)> {
        self.waiting
            .range((Priority::Customer, 0)..)
            .next()
            .filter(|k| k.0 == Priority::Customer)
            .copied()
    }

    /// Hands the permit to `key`, keeping the turns.
    fn grant(&mut self, key: (Priority, u64)) {
        self.waiting.remove(&key);
        let writes_wait = self.waiting.first().is_some_and(|k| k.0 == Priority::Write);
        match key.0 {
            Priority::Write => self.customer_run = 0,
            Priority::Customer if writes_wait => self.customer_run += 1,
            _ => {}
        }
    }
}

/// A shared request budget. See the module documentation.
#[derive(Debug)]
pub struct Budget {
    period: Duration,
    state: Mutex<State>,
    /// Wakes the waiters when the head of the line changes.
    changed: Notify,
}

/// Takes a waiter out of the line however its future ends (a dropped request included).
struct Ticket<'a> {
    budget: &'a Budget,
    key: (Priority, u64),
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let removed = self
            .budget
            .state
            .lock()
            .expect("budget lock")
            .waiting
            .remove(&self.key);
        if removed {
            self.budget.changed.notify_waiters();
        }
    }
}

impl Budget {
    /// `rps` permits per second (at least 1).
    pub fn new(rps: u32) -> Self {
        Budget {
            period: Duration::from_secs(1) / rps.max(1),
            state: Mutex::new(State {
                next: Instant::now(),
                waiting: BTreeSet::new(),
                tickets: 0,
                customer_run: 0,
            }),
            changed: Notify::new(),
        }
    }

    /// Waits for a permit at `priority`; returns how long it waited.
    pub async fn acquire(&self, priority: Priority) -> Duration {
        let started = Instant::now();
        let key = {
            let mut st = self.state.lock().expect("budget lock");
            st.tickets += 1;
            let key = (priority, st.tickets);
            st.waiting.insert(key);
            key
        };
        let ticket = Ticket { budget: self, key };
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait = {
                let mut st = self.state.lock().expect("budget lock");
                if st.head() == Some(key) {
                    let now = Instant::now();
                    if now >= st.next {
                        st.next = now + self.period;
                        st.grant(key);
                        drop(st);
                        std::mem::forget(ticket);
                        self.changed.notify_waiters();
                        return started.elapsed();
                    }
                    Some(st.next - now)
                } else {
                    None
                }
            };
            match wait {
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = &mut changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn permits_are_spaced_by_the_rate() {
        let b = Budget::new(10);
        let t0 = Instant::now();
        for _ in 0..5 {
            b.acquire(Priority::Background).await;
        }
        // The first is free, the next four are 100 ms apart.
        assert_eq!(t0.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn a_payment_write_never_waits_behind_a_sync() {
        let b = Arc::new(Budget::new(10));
        // A sync of 50 reads already queued up…
        let mut sync = Vec::new();
        for _ in 0..50 {
            let b = b.clone();
            sync.push(tokio::spawn(async move {
                b.acquire(Priority::Background).await;
                Instant::now()
            }));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        // …then a payment write and a customer read arrive.
        let asked = Instant::now();
        let (wb, rb) = (b.clone(), b.clone());
        let write = tokio::spawn(async move { wb.acquire(Priority::Write).await });
        let read = tokio::spawn(async move { rb.acquire(Priority::Customer).await });
        let waited_write = write.await.unwrap();
        let waited_read = read.await.unwrap();
        // Each waits at most the permits of the other and the one already promised, never
        // the sync's line.
        assert!(
            waited_write <= Duration::from_millis(200),
            "{waited_write:?}"
        );
        assert!(waited_read <= Duration::from_millis(200), "{waited_read:?}");
        let mut last = asked;
        for s in sync {
            last = last.max(s.await.unwrap());
        }
        // The sync still ran through, at the budget's pace, after them.
        assert!(
            last - asked >= Duration::from_millis(4_500),
            "{:?}",
            last - asked
        );
    }

    #[tokio::test(start_paused = true)]
    async fn customers_take_three_permits_for_each_write_while_both_wait() {
        let b = Arc::new(Budget::new(10));
        b.acquire(Priority::Background).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // A rush of payment writes, customer reads and a sync, all waiting at once.
        for (p, n) in [
            (Priority::Background, 3),
            (Priority::Write, 4),
            (Priority::Customer, 8),
        ] {
            for _ in 0..n {
                let (b, order) = (b.clone(), order.clone());
                tasks.push(tokio::spawn(async move {
                    b.acquire(p).await;
                    order.lock().unwrap().push(p);
                }));
                tokio::task::yield_now().await;
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        use Priority::*;
        assert_eq!(
            *order.lock().unwrap(),
            vec![
                Customer, Customer, Customer, Write, Customer, Customer, Customer, Write, Customer,
                Customer, Write, Write, Background, Background, Background
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_waiter_leaves_the_line() {
        let b = Arc::new(Budget::new(1));
        b.acquire(Priority::Write).await;
        let b2 = b.clone();
        let first = tokio::spawn(async move { b2.acquire(Priority::Write).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.abort();
        let _ = first.await;
        let waited = b.acquire(Priority::Background).await;
        assert!(waited <= Duration::from_secs(1), "{waited:?}");
    }
}
