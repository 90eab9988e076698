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
//! A job accepted by an instance that does not work its reader (a payment, an input
//! collection) is written to the store and announced ([`Store::notify_job`]: `NOTIFY` on
//! PostgreSQL); the reader's holder hears it on its listening connection and puts the job
//! in line at once. A slow safety poll ([`SAFETY_POLL`]), and a full look whenever notices
//! may have been missed (the listening connection was lost), catch what a lost notice would
//! leave behind.
//!
//! [`Store::notify_job`]: crate::store::Store::notify_job
//!
//! On one machine (sled) there is no [`Cluster`]: the engine works every reader.

use super::{Engine, PaymentError};
use crate::fleet::ReaderRecord;
use crate::payments::inputs::InputCollection;
use crate::payments::machine::{Payment, Status};
use crate::payments::queue::Job;
use crate::payments::setups::Setup;
use crate::store::{JobNotice, Lease, Tree};
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
    /// The forwarded commands being carried out here (heard of twice, run once).
    pub(super) running: Mutex<std::collections::HashSet<String>>,
}

impl Cluster {
    pub(super) fn new(m: super::ClusterMembership) -> Self {
        Cluster {
            instance: m.instance,
            ttl: m.lease_ttl,
            held: Mutex::new(HashMap::new()),
            running: Mutex::new(Default::default()),
        }
    }
}

const INSTANCE_PREFIX: &str = "instance:";
const READER_PREFIX: &str = "reader:";

/// The lease name of a reader's worker.
pub fn reader_lease(reader: &str) -> String {
    format!("{READER_PREFIX}{reader}")
}

/// How often the jobs of held readers are looked for in the store although no notice came:
/// a safety net for a notice lost with its connection (jobs normally arrive by notice).
const SAFETY_POLL: Duration = Duration::from_secs(5);

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
        self.write_job(&p.reader, &p.id, batch)
    }

    /// Writes `batch`, the record of `job` (a payment, an input collection) on `reader`:
    /// fenced by the reader's lease when this instance holds it; refused when the lease was
    /// lost while the job's flow ran here (its new holder resumes it).
    pub(super) fn write_job(
        &self,
        reader: &str,
        job: &str,
        batch: crate::store::Batch,
    ) -> Result<(), PaymentError> {
        match self.fence(reader) {
            None if self.inner.cluster.as_ref().is_some() && self.in_flow_here(reader, job) => {
                Err(Self::not_ours(reader))
            }
            None => Ok(self.inner.registry.apply(batch)?),
            Some(lease) => {
                if self.inner.registry.apply_fenced(batch, &lease)? {
                    return Ok(());
                }
                self.lease_lost(reader, "a fenced write was refused");
                Err(Self::not_ours(reader))
            }
        }
    }

    /// Whether `job` is the one this instance's worker of `reader` is on.
    fn in_flow_here(&self, reader: &str, job: &str) -> bool {
        self.existing_slot(reader)
            .is_some_and(|s| s.current.lock().expect("current").as_deref() == Some(job))
    }

    fn not_ours(reader: &str) -> PaymentError {
        PaymentError::conflict(
            "lease_lost",
            format!(
                "this instance no longer holds reader {reader}'s lease; its new owner resumes the job"
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

    /// Tells the reader's holder, wherever it is, that `job` waits in the store for
    /// `reader`. Nothing to do outside a cluster, or when this instance works the reader
    /// (the job is in its queue already). A notice that cannot be sent is caught by the
    /// holder's safety poll.
    pub(super) fn announce(&self, reader: &str, job: &str) {
        if self.inner.cluster.is_none() || self.works(reader) {
            return;
        }
        if let Err(e) = self.inner.registry.store().notify_job(reader, job) {
            tracing::warn!(reader = %reader, job = %job, error = %e, "job notice not sent; the reader's holder finds the job at its next look");
        }
    }

    /// Empties the in-memory queue of a reader this instance does not work: its payments,
    /// input collections and cart displays are in the store, where the reader's holder
    /// finds them.
    fn drop_queue(&self, reader: &str) {
        if let Some(slot) = self.existing_slot(reader) {
            let mut q = slot.queue.lock().expect("queue lock");
            while let Some(job) = q.pop() {
                if let Job::Display { id, .. } = &job {
                    self.take_display(id);
                }
            }
            // Whoever holds the reader next learns from the store whether our cart is on it.
            *slot.shows_our_cart.lock().expect("display flag") = false;
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
        let mut notices = self.inner.registry.store().job_notifications();
        let mut last_round = None::<tokio::time::Instant>;
        let mut last_look = tokio::time::Instant::now();
        loop {
            let due = last_round.is_none_or(|t| t.elapsed() >= renew_every);
            if due {
                last_round = Some(tokio::time::Instant::now());
                if let Err(e) = self.lease_round(c) {
                    tracing::warn!(error = %e, "lease round failed; retrying");
                }
            }
            if last_look.elapsed() >= SAFETY_POLL {
                last_look = tokio::time::Instant::now();
                self.pick_up(c);
            }
            let next_round =
                last_round.map_or(renew_every, |t| renew_every.saturating_sub(t.elapsed()));
            let next_look = SAFETY_POLL.saturating_sub(last_look.elapsed());
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(next_round.min(next_look)) => {}
                notice = notices.recv() => match notice {
                    Ok(JobNotice::Job { reader, job }) => self.pick_up_job(c, &reader, &job),
                    Ok(JobNotice::Missed) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Some notices went to nobody: look at everything now.
                        last_look = tokio::time::Instant::now();
                        self.pick_up(c);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        // The store stopped notifying: the safety poll alone remains.
                        notices = tokio::sync::broadcast::channel(1).1;
                    }
                },
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
                // Operations forwarded to its former holder and not carried out.
                for cmd in self.commands_of(&reader) {
                    self.carry_out(c, cmd);
                }
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
        // Its cart displays (waiting ones shown, a shown one known to be ours), its input
        // collections and card setups on their way (a queued one is not put in twice).
        for (_, rec) in self.displays_of(reader) {
            self.resume_display(rec);
        }
        self.resume_inputs_of(Some(reader))?;
        self.resume_setups_of(Some(reader))?;
        self.resume_reader_refunds()?;
        slot.work.notify_one();
        Ok(())
    }

    /// Puts in line a job that another instance accepted for `reader`, if this instance
    /// works the reader and the job still waits for it.
    fn pick_up_job(&self, c: &Cluster, reader: &str, job: &str) {
        if !self.works(reader) {
            return;
        }
        if let Some(cmd) = self.command(reader, job) {
            self.carry_out(c, cmd);
            return;
        }
        if let Some(rec) = self.display_record(reader, job) {
            self.resume_display(rec);
            return;
        }
        if let Ok(Some(p)) = self.inner.registry.get::<Payment>(Tree::Payments, job) {
            if p.reader == reader && p.status == Status::Queued {
                self.queue_picked(
                    reader,
                    Job::Payment {
                        id: p.id.clone(),
                        merchant: p.merchant.clone(),
                    },
                    p.payment_intent.as_deref(),
                );
            }
            return;
        }
        if let Ok(Some(st)) = self.inner.registry.get::<Setup>(Tree::Setups, job) {
            if st.reader == reader && !st.status.is_final() {
                self.queue_picked(
                    reader,
                    Job::Setup {
                        id: st.id.clone(),
                        merchant: st.merchant.clone(),
                    },
                    None,
                );
            }
            return;
        }
        if job.starts_with("rf_") {
            // A refund on the reader: found through the pending refunds' index.
            self.pick_up_reader_refunds();
            return;
        }
        if let Ok(Some(c)) = self
            .inner
            .registry
            .get::<InputCollection>(Tree::InputCollections, job)
        {
            if c.reader == reader && !c.status.is_final() {
                self.queue_picked(
                    reader,
                    Job::Inputs {
                        id: c.id.clone(),
                        merchant: c.merchant.clone(),
                    },
                    None,
                );
            }
        }
    }

    /// Puts in line every job of held readers that waits in the store: the queued payments
    /// (through the status index) and the open input collections; and carries out the
    /// commands forwarded to them.
    fn pick_up(&self, c: &Cluster) {
        let readers: Vec<String> = c.held.lock().expect("leases").keys().cloned().collect();
        if readers.is_empty() {
            return;
        }
        for reader in &readers {
            for cmd in self.commands_of(reader) {
                self.carry_out(c, cmd);
            }
            for (_, rec) in self.displays_of(reader) {
                self.resume_display(rec);
            }
        }
        let mut waiting: Vec<Payment> = Vec::new();
        let read = crate::payments::index::for_each_in_status(
            &self.inner.registry,
            Status::Queued,
            |id| {
                if let Some(p) = self.inner.registry.get::<Payment>(Tree::Payments, &id)? {
                    if p.status == Status::Queued && readers.contains(&p.reader) {
                        waiting.push(p);
                    }
                }
                Ok(())
            },
        );
        if let Err(e) = read {
            tracing::warn!(error = %e, "queued payments unreadable; looking again later");
            return;
        }
        for p in waiting {
            self.queue_picked(
                &p.reader,
                Job::Payment {
                    id: p.id.clone(),
                    merchant: p.merchant.clone(),
                },
                p.payment_intent.as_deref(),
            );
        }
        self.pick_up_reader_refunds();
        if let Ok(setups) = self.inner.registry.list::<Setup>(Tree::Setups) {
            let mut open: Vec<Setup> = setups
                .into_iter()
                .filter(|s| !s.status.is_final() && readers.contains(&s.reader))
                .collect();
            open.sort_by_key(|s| s.created_at);
            for st in open {
                self.queue_picked(
                    &st.reader,
                    Job::Setup {
                        id: st.id.clone(),
                        merchant: st.merchant.clone(),
                    },
                    None,
                );
            }
        }
        let Ok(inputs) = self
            .inner
            .registry
            .list::<InputCollection>(Tree::InputCollections)
        else {
            return;
        };
        let mut open: Vec<InputCollection> = inputs
            .into_iter()
            .filter(|c| !c.status.is_final() && readers.contains(&c.reader))
            .collect();
        open.sort_by_key(|c| c.created_at);
        for c in open {
            self.queue_picked(
                &c.reader,
                Job::Inputs {
                    id: c.id.clone(),
                    merchant: c.merchant.clone(),
                },
                None,
            );
        }
    }

    /// Puts in line the pending refunds on readers this instance works.
    fn pick_up_reader_refunds(&self) {
        match crate::payments::refunds::pending(&self.inner.registry) {
            Ok(pending) => {
                self.requeue_reader_refunds(&pending);
            }
            Err(e) => tracing::warn!(error = %e, "pending refunds unreadable; looking again later"),
        }
    }

    /// Puts a job found in the store in its reader's line, unless it is there already or on
    /// the reader now.
    fn queue_picked(&self, reader: &str, job: Job, payment_intent: Option<&str>) {
        let slot = self.slot(reader);
        let current = slot.current.lock().expect("current").clone();
        let mut q = slot.queue.lock().expect("queue lock");
        if current.as_deref() == Some(job.id()) || q.contains(job.id()) {
            return;
        }
        if let Some(pi) = payment_intent {
            self.index_intent(pi, job.id());
        }
        q.push_resumed(job);
        drop(q);
        slot.work.notify_one();
    }
}
