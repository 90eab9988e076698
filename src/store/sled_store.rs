//! [`Store`] on sled: one sled tree per [`Tree`], flushed after every write.

use super::{Store, StoreError, Tree};
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
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::from_db(sled::open(path).map_err(engine)?)
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
}
