//! Reader leases: on a store shared by several instances (PostgreSQL), each reader's worker
//! runs only where that reader's lease is held, and every write of a payment step of that
//! reader is fenced by the lease's token.
//!
//! An instance announces itself with a lease of its own (`instance:<name>`), so that every
//! instance can count the live ones and take no more than a fair share of the readers
//! (`reader:<id>` leases): free or expired ones first; beyond its share it gives idle readers
//! up, so that an instance that joins gets readers. Leases are renewed every third of
//! `lease_ttl`. A renewal refused, or a fenced write refused (an instance paused past its
//! lease), means the lease is lost: the reader's worker stops taking jobs at once, and its
//! flow in progress stops at its next write. A reader taken over is reconciled as at
//! start-up: its unfinished payments are put back in line from the store.
//!
//! On one machine (sled) there is no [`Cluster`]: the engine works every reader.

use super::{Engine, PaymentError};
use crate::fleet::ReaderRecord;
use crate::payments::machine::{Payment, Status};
use crate::payments::queue::Job;
use crate::store::{Lease, Tree};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// This instance's part in a cluster: its name, the lease length and the leases it holds.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub instance: String,
    pub ttl: Duration,
    /// Reader id → the lease this instance holds for it.
    held: Mutex<HashMap<String, Lease>>,
}

impl Cluster {
    pub(super) fn new(m: super::ClusterMembership) -> Self {
        Cluster {
            instance: m.instance,
            ttl: m.lease_ttl,
            held: Mutex::new(HashMap::new()),
        }
    }
}

const INSTANCE_PREFIX: &str = "instance:";
const READER_PREFIX: &str = "reader:";

/// The lease name of a reader's worker.
pub fn reader_lease(reader: &str) -> String {
    format!("{READER_PREFIX}{reader}")
}

/// How often the payments of held readers are looked for in the store, so that a payment
/// accepted by another instance starts promptly here.
const PICKUP_INTERVAL: Duration = Duration::from_millis(500);

impl Engine {
    /// Whether this instance works `reader` now (always, outside a cluster).
    pub(crate) fn works(&self, reader: &str) -> bool {
        match self.inner.cluster.as_ref() {
            None => true,
            Some(c) => c.held.lock().expect("leases").contains_key(reader),
        }
    }

    /// The lease a write about `reader` must be fenced by, if this instance holds one.
    fn fence(&self, reader: &str) -> Option<Lease> {
        let c = self.inner.cluster.as_ref()?;
        c.held.lock().expect("leases").get(reader).cloned()
    }

    /// Writes a payment record: fenced by its reader's lease when this instance holds it,
    /// so that an instance that lost the lease (and does not know yet) cannot write.
    pub(super) fn write_payment(
        &self,
        old: Option<&Payment>,
        p: &Payment,
    ) -> Result<(), PaymentError> {
        // The record and its index entries go in one batch, fenced when this instance
        // holds the reader's lease.
        let mut batch = crate::store::Batch::default();
        crate::payments::index::stage(&mut batch, old, p);
        match self.fence(&p.reader) {
            None if self.inner.cluster.as_ref().is_some() && self.in_flow_here(p) => {
                // The lease was lost while this payment's flow ran here: its new owner
                // resumes it.
                Err(Self::not_ours(p))
            }
            None => Ok(self.inner.registry.apply(batch)?),
            Some(lease) => {
                if self.inner.registry.apply_fenced(batch, &lease)? {
                    return Ok(());
                }
                self.lease_lost(&p.reader, "a fenced write was refused");
                Err(Self::not_ours(p))
            }
        }
    }

    /// Whether `p` is the job this instance's worker of its reader is on.
    fn in_flow_here(&self, p: &Payment) -> bool {
        self.existing_slot(&p.reader)
            .is_some_and(|s| s.current.lock().expect("current").as_deref() == Some(p.id.as_str()))
    }

    fn not_ours(p: &Payment) -> PaymentError {
        PaymentError::conflict(
            "lease_lost",
            format!(
                "this instance no longer holds reader {}'s lease; its new owner resumes the payment",
                p.reader
            ),
        )
    }

    /// Forgets a lost lease and stops the reader's worker here.
    fn lease_lost(&self, reader: &str, why: &str) {
        let Some(c) = self.inner.cluster.as_ref() else {
            return;
        };
        let removed = c.held.lock().expect("leases").remove(reader).is_some();
        if removed {
            tracing::warn!(reader = %reader, reason = why, "reader lease lost; its worker stops here");
            self.inner.links.metrics.lease_losses.inc(&[]);
            self.drop_queue(reader);
            self.publish_held(c);
        }
    }

    /// Takes the payments out of the in-memory queue of a reader this instance does not
    /// work: they are in the store, where the reader's holder finds them. (Cart displays
    /// and input collections stay: they run here once this instance holds the reader.)
    fn drop_queue(&self, reader: &str) {
        if let Some(slot) = self.existing_slot(reader) {
            let mut q = slot.queue.lock().expect("queue lock");
            let mut kept = Vec::new();
            while let Some(job) = q.pop() {
                if !matches!(job, Job::Payment { .. }) {
                    kept.push(job);
                }
            }
            for job in kept {
                q.push_resumed(job);
            }
        }
    }

    fn publish_held(&self, c: &Cluster) {
        let n = c.held.lock().expect("leases").len();
        self.inner.links.metrics.leases_held.set(&[], n as f64);
    }

    /// Takes, renews and gives up reader leases until `stop` resolves; then gives every
    /// lease up. Does nothing outside a cluster.
    pub async fn lease_loop(&self, stop: impl std::future::Future<Output = ()>) {
        let Some(c) = self.inner.cluster.as_ref() else {
            return;
        };
        tokio::pin!(stop);
        let renew_every = c.ttl / 3;
        let mut last_round = None::<tokio::time::Instant>;
        loop {
            let due = last_round.is_none_or(|t| t.elapsed() >= renew_every);
            if due {
                last_round = Some(tokio::time::Instant::now());
                if let Err(e) = self.lease_round(c) {
                    tracing::warn!(error = %e, "lease round failed; retrying");
                }
            }
            self.pick_up(c);
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(PICKUP_INTERVAL.min(renew_every)) => {}
            }
        }
        let held: Vec<Lease> = c
            .held
            .lock()
            .expect("leases")
            .drain()
            .map(|(_, l)| l)
            .collect();
        let store = self.inner.registry.store();
        for l in held {
            let _ = store.release_lease(&l);
        }
        let _ = store.release_lease(&Lease {
            name: format!("{INSTANCE_PREFIX}{}", c.instance),
            owner: c.instance.clone(),
            token: 0,
        });
        self.publish_held(c);
    }

    /// One round: renew what is held, then take or give up readers toward a fair share.
    fn lease_round(&self, c: &Cluster) -> Result<(), PaymentError> {
        let store = self.inner.registry.store().clone();
        store.acquire_lease(
            &format!("{INSTANCE_PREFIX}{}", c.instance),
            &c.instance,
            c.ttl,
        )?;
        let held: Vec<(String, Lease)> = c
            .held
            .lock()
            .expect("leases")
            .iter()
            .map(|(r, l)| (r.clone(), l.clone()))
            .collect();
        for (reader, lease) in held {
            match store.renew_lease(&lease, c.ttl) {
                Ok(true) => {}
                Ok(false) => self.lease_lost(&reader, "its renewal was refused"),
                Err(e) => return Err(e.into()),
            }
        }
        let holders = store.lease_holders()?;
        let instances = holders
            .iter()
            .filter(|(name, _)| name.starts_with(INSTANCE_PREFIX))
            .count()
            .max(1);
        let taken: HashMap<&str, &str> = holders
            .iter()
            .filter_map(|(n, o)| Some((n.strip_prefix(READER_PREFIX)?, o.as_str())))
            .collect();
        let mut readers: Vec<String> = self
            .inner
            .registry
            .list::<ReaderRecord>(Tree::Readers)?
            .into_iter()
            .filter(|r| !r.gone)
            .map(|r| r.id)
            .collect();
        readers.sort();
        let share = readers.len().div_ceil(instances);
        let mine = c.held.lock().expect("leases").len();
        if mine > share {
            // Beyond the fair share (an instance joined): give one idle reader up per round.
            let idle = c
                .held
                .lock()
                .expect("leases")
                .iter()
                .find(|(r, _)| !self.reader_live(r).busy)
                .map(|(r, l)| (r.clone(), l.clone()));
            if let Some((reader, lease)) = idle {
                c.held.lock().expect("leases").remove(&reader);
                self.drop_queue(&reader);
                store.release_lease(&lease)?;
                tracing::info!(reader = %reader, "reader given up to even the load");
            }
        }
        // Payments accepted here for readers worked elsewhere do not wait in line here.
        for reader in &readers {
            if !self.works(reader) {
                self.drop_queue(reader);
            }
        }
        let mut mine = c.held.lock().expect("leases").len();
        for reader in readers {
            if mine >= share {
                break;
            }
            // Held by another instance: not free. Held under this instance's name (by this
            // process before a restart): taken back at once.
            if self.works(&reader)
                || taken
                    .get(reader.as_str())
                    .is_some_and(|owner| *owner != c.instance)
            {
                continue;
            }
            if let Some(lease) = store.acquire_lease(&reader_lease(&reader), &c.instance, c.ttl)? {
                if lease.token > 1 {
                    self.inner.links.metrics.lease_handovers.inc(&[]);
                }
                tracing::info!(reader = %reader, token = lease.token, "reader lease taken");
                c.held.lock().expect("leases").insert(reader.clone(), lease);
                mine += 1;
                self.take_over(&reader)?;
            }
        }
        self.publish_held(c);
        Ok(())
    }

    /// A reader just taken: its unfinished payments are reconciled from the store, as at
    /// start-up, and its worker starts.
    fn take_over(&self, reader: &str) -> Result<(), PaymentError> {
        let slot = self.slot(reader);
        let mut open: Vec<Payment> = self
            .inner
            .registry
            .list::<Payment>(Tree::Payments)?
            .into_iter()
            .filter(|p| p.reader == reader && !p.status.is_final())
            .collect();
        open.sort_by_key(|p| p.created_at);
        for p in open {
            if let Some(pi) = &p.payment_intent {
                self.index_intent(pi, &p.id);
            }
            match p.status {
                Status::Queued | Status::Processing | Status::RequiresConfirmation => {
                    slot.queue
                        .lock()
                        .expect("queue lock")
                        .push_resumed(Job::Payment {
                            id: p.id.clone(),
                            merchant: p.merchant.clone(),
                        });
                }
                Status::RequiresCapture | Status::Declined => {
                    let engine = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = engine.resume_off_reader(&p.id).await {
                            tracing::warn!(payment = %p.id, error = %e, "reconcile failed");
                        }
                    });
                }
                _ => {}
            }
        }
        // Its input collections on their way too (a queued one is not put in twice).
        self.resume_inputs()?;
        self.resume_setups()?;
        self.resume_reader_refunds()?;
        slot.work.notify_one();
        Ok(())
    }

    /// Puts in line the payments of held readers that another instance accepted.
    fn pick_up(&self, c: &Cluster) {
        let readers: Vec<String> = c.held.lock().expect("leases").keys().cloned().collect();
        if readers.is_empty() {
            return;
        }
        let Ok(all) = self.inner.registry.list::<Payment>(Tree::Payments) else {
            return;
        };
        let mut waiting: Vec<&Payment> = all
            .iter()
            .filter(|p| p.status == Status::Queued && readers.contains(&p.reader))
            .collect();
        waiting.sort_by_key(|p| p.created_at);
        for p in waiting {
            let slot = self.slot(&p.reader);
            let current = slot.current.lock().expect("current").clone();
            let mut q = slot.queue.lock().expect("queue lock");
            if current.as_deref() != Some(p.id.as_str()) && !q.contains(&p.id) {
                if let Some(pi) = &p.payment_intent {
                    self.index_intent(pi, &p.id);
                }
                q.push_resumed(Job::Payment {
                    id: p.id.clone(),
                    merchant: p.merchant.clone(),
                });
                drop(q);
                slot.work.notify_one();
            }
        }
    }
}
