//! A reader's queue: bounded, fair across merchants, and the only way to reach the reader.
//!
//! Each merchant has its own sub-queue (first come, first served within a merchant); the
//! reader serves the merchants in turn, round-robin, so one merchant's burst waits behind
//! its own payments and never starves another merchant sharing the reader. Payments, cart
//! displays, input collections and setups wait in the same queue because a reader has a single
//! action slot: a display can never displace a payment in flight. Payments resumed after a
//! restart go first: they were already in flight when the daemon stopped.

use std::collections::VecDeque;

/// What a reader can be asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// Take the payment (by id) through the flow from wherever it stands.
    Payment { id: String, merchant: String },
    /// Show a cart (by display request id).
    Display { id: String, merchant: String },
    /// Collect inputs on the screen (by input collection id).
    Inputs { id: String, merchant: String },
    /// Save a card for later (by setup id).
    Setup { id: String, merchant: String },
    /// A refund that waits for the customer's card on the reader (by refund id, with its
    /// payment's id, which leads to the record).
    Refund {
        id: String,
        payment: String,
        merchant: String,
    },
}

impl Job {
    pub fn id(&self) -> &str {
        match self {
            Job::Payment { id, .. }
            | Job::Display { id, .. }
            | Job::Inputs { id, .. }
            | Job::Setup { id, .. }
            | Job::Refund { id, .. } => id,
        }
    }
    pub fn merchant(&self) -> &str {
        match self {
            Job::Payment { merchant, .. }
            | Job::Display { merchant, .. }
            | Job::Inputs { merchant, .. }
            | Job::Setup { merchant, .. }
            | Job::Refund { merchant, .. } => merchant,
        }
    }
}

/// The queue is at capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the reader's queue is full ({capacity} waiting)")]
pub struct QueueFull {
    pub capacity: usize,
}

/// A bounded, merchant-fair queue.
#[derive(Debug)]
pub struct ReaderQueue {
    capacity: usize,
    /// Resumed work, served before anything else and not counted against the capacity.
    resumed: VecDeque<Job>,
    /// Merchants in serving order, each with its own FIFO. A merchant is present only while
    /// it has something waiting.
    merchants: VecDeque<(String, VecDeque<Job>)>,
    len: usize,
}

impl ReaderQueue {
    pub fn new(capacity: usize) -> Self {
        ReaderQueue {
            capacity,
            resumed: VecDeque::new(),
            merchants: VecDeque::new(),
            len: 0,
        }
    }

    /// Number of waiting jobs (resumed ones included).
    pub fn len(&self) -> usize {
        self.len + self.resumed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds a job at the back of its merchant's sub-queue.
    pub fn push(&mut self, job: Job) -> Result<(), QueueFull> {
        if self.len >= self.capacity {
            return Err(QueueFull {
                capacity: self.capacity,
            });
        }
        match self
            .merchants
            .iter_mut()
            .find(|(m, _)| m.as_str() == job.merchant())
        {
            Some((_, q)) => q.push_back(job),
            None => {
                let m = job.merchant().to_string();
                self.merchants.push_back((m, VecDeque::from([job])));
            }
        }
        self.len += 1;
        Ok(())
    }

    /// Adds a job that was in flight before a restart (or is being resumed): it goes first.
    pub fn push_resumed(&mut self, job: Job) {
        if !self.contains(job.id()) {
            self.resumed.push_back(job);
        }
    }

    /// The next job: resumed work first, then the next merchant in turn.
    pub fn pop(&mut self) -> Option<Job> {
        if let Some(j) = self.resumed.pop_front() {
            return Some(j);
        }
        let (merchant, mut q) = self.merchants.pop_front()?;
        let job = q.pop_front();
        if !q.is_empty() {
            self.merchants.push_back((merchant, q));
        }
        if job.is_some() {
            self.len -= 1;
        }
        job
    }

    /// Removes a waiting job by id; `true` if it was waiting.
    pub fn remove(&mut self, id: &str) -> bool {
        if let Some(i) = self.resumed.iter().position(|j| j.id() == id) {
            self.resumed.remove(i);
            return true;
        }
        for idx in 0..self.merchants.len() {
            let q = &mut self.merchants[idx].1;
            if let Some(i) = q.iter().position(|j| j.id() == id) {
                q.remove(i);
                self.len -= 1;
                if q.is_empty() {
                    self.merchants.remove(idx);
                }
                return true;
            }
        }
        false
    }

    pub fn contains(&self, id: &str) -> bool {
        self.resumed.iter().any(|j| j.id() == id)
            || self
                .merchants
                .iter()
                .any(|(_, q)| q.iter().any(|j| j.id() == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pay(id: &str, m: &str) -> Job {
        Job::Payment {
            id: id.into(),
            merchant: m.into(),
        }
    }

    fn drain(q: &mut ReaderQueue) -> Vec<String> {
        std::iter::from_fn(|| q.pop().map(|j| j.id().to_string())).collect()
    }

    #[test]
    fn one_merchants_burst_does_not_starve_another() {
        let mut q = ReaderQueue::new(100);
        for i in 0..5 {
            q.push(pay(&format!("a{i}"), "a")).unwrap();
        }
        q.push(pay("b0", "b")).unwrap();
        q.push(pay("b1", "b")).unwrap();
        q.push(pay("c0", "c")).unwrap();
        assert_eq!(q.len(), 8);
        assert_eq!(
            drain(&mut q),
            ["a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn a_merchant_that_comes_back_waits_for_its_turn() {
        let mut q = ReaderQueue::new(100);
        q.push(pay("a0", "a")).unwrap();
        q.push(pay("a1", "a")).unwrap();
        q.push(pay("b0", "b")).unwrap();
        assert_eq!(q.pop().unwrap().id(), "a0");
        q.push(pay("c0", "c")).unwrap();
        assert_eq!(drain(&mut q), ["b0", "a1", "c0"]);
    }

    #[test]
    fn bounded() {
        let mut q = ReaderQueue::new(2);
        q.push(pay("a0", "a")).unwrap();
        q.push(pay("b0", "b")).unwrap();
        assert_eq!(q.push(pay("c0", "c")), Err(QueueFull { capacity: 2 }));
        // Resumed work is never refused.
        q.push_resumed(pay("r0", "c"));
        assert_eq!(q.len(), 3);
        q.pop();
        q.pop();
        q.push(pay("c1", "c")).unwrap();
    }

    #[test]
    fn remove_a_waiting_job_keeps_the_order_of_the_rest() {
        let mut q = ReaderQueue::new(10);
        q.push(pay("a0", "a")).unwrap();
        q.push(pay("b0", "b")).unwrap();
        q.push(pay("a1", "a")).unwrap();
        q.push_resumed(pay("r0", "a"));
        assert!(q.remove("b0"));
        assert!(!q.remove("b0"));
        assert!(q.remove("r0"));
        assert!(!q.contains("b0"));
        assert_eq!(q.len(), 2);
        assert_eq!(drain(&mut q), ["a0", "a1"]);
    }

    #[test]
    fn resumed_work_goes_first_and_is_not_duplicated() {
        let mut q = ReaderQueue::new(10);
        q.push(pay("a0", "a")).unwrap();
        q.push_resumed(pay("r0", "b"));
        q.push_resumed(pay("r0", "b"));
        assert_eq!(drain(&mut q), ["r0", "a0"]);
    }

    #[test]
    fn displays_wait_in_the_same_queue() {
        let mut q = ReaderQueue::new(10);
        q.push(pay("a0", "a")).unwrap();
        q.push(Job::Display {
            id: "d0".into(),
            merchant: "a".into(),
        })
        .unwrap();
        q.push(pay("b0", "b")).unwrap();
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order[0], pay("a0", "a"));
        assert_eq!(order[1], pay("b0", "b"));
        assert!(matches!(&order[2], Job::Display { id, .. } if id == "d0"));
    }
}
