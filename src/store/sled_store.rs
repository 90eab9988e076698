//! [`Store`] on sled: one sled tree per [`Tree`], flushed after every write.

use super::{Batch, JobNotice, Lease, Op, Store, StoreError, Tree, JOB_NOTICES_BUFFER};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::collections::HashMap;
use std::path::Path;

/// sled's page cache when the config says nothing: 16 MiB (`[store] cache_mb`). sled's own
/// default is 1 GiB, which a store of a million payments fills as lists and migrations
/// read it, so the daemon's memory would grow with its history. sled's own bookkeeping
/// (its page table) still grows with the store's size on top of the cache, about 20 bytes
/// a key with the fixes of `vendor/sled` (measured in docs/BENCHMARKS.md).
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

pub struct SledStore {
    db: sled::Db,
    trees: HashMap<Tree, sled::Tree>,
    /// Job notices: one machine, so they never leave the process.
    notices: tokio::sync::broadcast::Sender<JobNotice>,
}

fn engine(e: sled::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

impl SledStore {
    /// Opens the store at `path`. sled releases its file lock from a background thread
    /// after the last handle is dropped, so a reopen right after a close (a restart in the
    /// same process, or a quick service restart) retries for a short while before giving up.
    ///
    /// `cache_bytes` bounds sled's page cache (see [`DEFAULT_CACHE_BYTES`]).
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match sled::Config::new()
                .path(path)
                .cache_capacity(cache_bytes)
                .open()
            {
                Ok(db) => return Self::from_db(db),
                // sled reports a held lock as an `Other` I/O error with this text.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(engine(e)),
            }
        }
    }

    pub fn temporary() -> Result<Self, StoreError> {
        Self::from_db(
            sled::Config::new()
                .temporary(true)
                .cache_capacity(DEFAULT_CACHE_BYTES)
                .open()
                .map_err(engine)?,
        )
    }

    fn from_db(db: sled::Db) -> Result<Self, StoreError> {
        let mut trees = HashMap::new();
        for t in Tree::ALL {
            trees.insert(t, db.open_tree(t.name()).map_err(engine)?);
        }
        let (notices, _) = tokio::sync::broadcast::channel(JOB_NOTICES_BUFFER);
        Ok(SledStore { db, trees, notices })
    }

    fn tree(&self, t: Tree) -> &sled::Tree {
        &self.trees[&t]
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(engine)
    }
}

impl Store for SledStore {
    fn backend(&self) -> &'static str {
        "sled"
    }

    fn get(&self, tree: Tree, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree(tree)
            .get(key)
            .map_err(engine)?
            .map(|v| v.to_vec()))
    }

    fn put(&self, tree: Tree, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.tree(tree).insert(key, value).map_err(engine)?;
        self.flush()
    }

    fn put_if_absent(
        &self,
        tree: Tree,
        key: &str,
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let res = self
            .tree(tree)
            .compare_and_swap(key, None as Option<&[u8]>, Some(value))
            .map_err(engine)?;
        match res {
            Ok(()) => {
                self.flush()?;
                Ok(None)
            }
            Err(cas) => Ok(cas.current.map(|v| v.to_vec())),
        }
    }

    fn compare_and_swap(
        &self,
        tree: Tree,
        key: &str,
        old: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let res = self
            .tree(tree)
            .compare_and_swap(key, old, Some(new))
            .map_err(engine)?;
        if res.is_ok() {
            self.flush()?;
        }
        Ok(res.is_ok())
    }

    fn remove(&self, tree: Tree, key: &str) -> Result<(), StoreError> {
        self.tree(tree).remove(key).map_err(engine)?;
        self.flush()
    }

    fn scan(&self, tree: Tree) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.tree(tree)
            .iter()
            .map(|r| {
                let (k, v) = r.map_err(engine)?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    fn scan_prefix(&self, tree: Tree, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.tree(tree)
            .scan_prefix(prefix)
            .map(|r| {
                let (k, v) = r.map_err(engine)?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // One sled transaction over the trees the batch touches: sled writes it to its log
        // as one unit, so a crash keeps all of it or none.
        let mut names: Vec<Tree> = Vec::new();
        for op in &batch.ops {
            let t = match op {
                Op::Put { tree, .. } | Op::Remove { tree, .. } => *tree,
            };
            if !names.contains(&t) {
                names.push(t);
            }
        }
        let trees: Vec<&sled::Tree> = names.iter().map(|t| self.tree(*t)).collect();
        let res: Result<(), TransactionError<()>> = trees[..].transaction(|views| {
            for op in &batch.ops {
                match op {
                    Op::Put { tree, key, value } => {
                        let i = names.iter().position(|t| t == tree).expect("tree");
                        views[i].insert(key.as_bytes(), value.as_slice())?;
                    }
                    Op::Remove { tree, key } => {
                        let i = names.iter().position(|t| t == tree).expect("tree");
                        views[i].remove(key.as_bytes())?;
                    }
                }
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        match res {
            Ok(()) => self.flush(),
            Err(TransactionError::Storage(e)) => Err(engine(e)),
            Err(TransactionError::Abort(())) => Err(StoreError::Engine("batch aborted".into())),
        }
    }

    fn scan_range(
        &self,
        tree: Tree,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        use std::ops::Bound;
        let t = self.tree(tree);
        let lo: Bound<Vec<u8>> = Bound::Included(prefix.as_bytes().to_vec());
        // The first key after every key that starts with `prefix`, if there is one.
        let hi: Bound<Vec<u8>> = match prefix_end(prefix.as_bytes()) {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        let (lo, hi) = match (start_after, reverse) {
            (None, _) => (lo, hi),
            (Some(s), false) => (max_lo(lo, s.as_bytes()), hi),
            (Some(s), true) => (lo, min_hi(hi, s.as_bytes())),
        };
        if bounds_empty(&lo, &hi) {
            return Ok(Vec::new());
        }
        let iter = t.range::<Vec<u8>, _>((lo, hi));
        let decode = |r: Result<(sled::IVec, sled::IVec), sled::Error>| {
            let (k, v) = r.map_err(engine)?;
            Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
        };
        if reverse {
            iter.rev().take(limit).map(decode).collect()
        } else {
            iter.take(limit).map(decode).collect()
        }
    }
    // One machine: this instance is the only one, and holds every lease.
    fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        _ttl: std::time::Duration,
    ) -> Result<Option<Lease>, StoreError> {
        Ok(Some(Lease {
            name: name.to_string(),
            owner: owner.to_string(),
            token: 1,
        }))
    }

    fn renew_lease(&self, _lease: &Lease, _ttl: std::time::Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    fn release_lease(&self, _lease: &Lease) -> Result<(), StoreError> {
        Ok(())
    }

    fn lease_holders(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(Vec::new())
    }

    fn apply_fenced(&self, batch: Batch, _lease: &Lease) -> Result<bool, StoreError> {
        // One machine: this instance holds every lease.
        self.apply(batch).map(|()| true)
    }

    fn notify_job(&self, reader: &str, job: &str) -> Result<(), StoreError> {
        // Nobody listening is not an error.
        let _ = self.notices.send(JobNotice::Job {
            reader: reader.to_string(),
            job: job.to_string(),
        });
        Ok(())
    }

    fn job_notifications(&self) -> tokio::sync::broadcast::Receiver<JobNotice> {
        self.notices.subscribe()
    }
}

/// The smallest byte string greater than every string that starts with `prefix`, or
/// `None` when there is none (an empty prefix, or only 0xff bytes).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn max_lo(lo: std::ops::Bound<Vec<u8>>, after: &[u8]) -> std::ops::Bound<Vec<u8>> {
    use std::ops::Bound;
    match lo {
        Bound::Included(l) if l.as_slice() > after => Bound::Included(l),
        _ => Bound::Excluded(after.to_vec()),
    }
}

fn min_hi(hi: std::ops::Bound<Vec<u8>>, before: &[u8]) -> std::ops::Bound<Vec<u8>> {
    use std::ops::Bound;
    match hi {
        Bound::Excluded(h) if h.as_slice() <= before => Bound::Excluded(h),
        _ => Bound::Excluded(before.to_vec()),
    }
}

/// sled panics on a range whose start is after its end: such a range is empty.
fn bounds_empty(lo: &std::ops::Bound<Vec<u8>>, hi: &std::ops::Bound<Vec<u8>>) -> bool {
    use std::ops::Bound;
    let l = match lo {
        Bound::Included(l) | Bound::Excluded(l) => l,
        Bound::Unbounded => return false,
    };
    match hi {
        Bound::Excluded(h) => l >= h,
        Bound::Included(h) => l > h,
        Bound::Unbounded => false,
    }
}
