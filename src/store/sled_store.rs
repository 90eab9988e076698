//! [`Store`] on sled: one sled tree per [`Tree`], flushed after every write.

use super::{Lease, Store, StoreError, Tree};
use std::collections::HashMap;
use std::path::Path;

pub struct SledStore {
    db: sled::Db,
    trees: HashMap<Tree, sled::Tree>,
}

fn engine(e: sled::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

impl SledStore {
    /// Opens the store at `path`. sled releases its file lock from a background thread
    /// after the last handle is dropped, so a reopen right after a close (a restart in the
    /// same process, or a quick service restart) retries for a short while before giving up.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match sled::open(path) {
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
        Self::from_db(sled::Config::new().temporary(true).open().map_err(engine)?)
    }

    fn from_db(db: sled::Db) -> Result<Self, StoreError> {
        let mut trees = HashMap::new();
        for t in Tree::ALL {
            trees.insert(t, db.open_tree(t.name()).map_err(engine)?);
        }
        Ok(SledStore { db, trees })
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

    fn put_fenced(
        &self,
        tree: Tree,
        key: &str,
        value: &[u8],
        _lease: &Lease,
    ) -> Result<bool, StoreError> {
        self.put(tree, key, value).map(|()| true)
    }
}
