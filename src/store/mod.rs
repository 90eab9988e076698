//! The registry's storage, behind a small interface so that the engine can be swapped.
//!
//! [`Store`] is a handful of byte-level operations on named trees; [`Registry`] adds typed,
//! versioned JSON records on top. Every write is flushed to disk before it returns: anything
//! the daemon acts on after a crash must be on disk before it is acted on. Nothing here
//! touches the network, so no store operation can span a Stripe call.

pub mod binding;
mod postgres;
mod sled_store;

pub use postgres::{redact_url, PgStore};
pub use sled_store::SledStore;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a registry lives: which backend, and its place.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An embedded sled store in this directory (one machine).
    Sled(PathBuf),
    /// A PostgreSQL database, shared by several instances (its URL may hold a password).
    Postgres(String),
}

impl Location {
    /// `sled:PATH` or `postgres:URL` (a bare `postgres://…` URL too).
    pub fn parse(s: &str) -> Result<Location, String> {
        if let Some(path) = s.strip_prefix("sled:") {
            if path.is_empty() {
                return Err("sled: needs a directory, e.g. sled:/var/lib/readerd".into());
            }
            return Ok(Location::Sled(PathBuf::from(path)));
        }
        let url = s.strip_prefix("postgres:").filter(|u| !u.starts_with("//"));
        let url = url.unwrap_or(s);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") || s != url {
            url.parse::<tokio_postgres::Config>()
                .map_err(|e| format!("{}: not a PostgreSQL URL: {e}", redact_url(url)))?;
            return Ok(Location::Postgres(url.to_string()));
        }
        Err(format!(
            "{s:?}: write sled:PATH or postgres:URL (e.g. postgres://readerd@db/readerd)"
        ))
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sled(p) => write!(f, "sled:{}", p.display()),
            Location::Postgres(url) => write!(f, "postgres:{}", redact_url(url)),
        }
    }
}

/// The store's schema version. A store written by a newer readerd is refused.
///
/// - 1: the first.
/// - 2: every record time is a `clock::Timestamp`, written as RFC 3339 with milliseconds;
///   fleet records of version 1 hold Unix milliseconds, which still read, so the step from
///   1 rewrites nothing. The version says that a readerd expecting numbers must not open it.
pub const SCHEMA_VERSION: u32 = 2;

/// The format version written into every record's envelope.
pub const RECORD_FORMAT: u32 = 1;

/// The named trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tree {
    Meta,
    Merchants,
    Locations,
    Readers,
    Payments,
    /// API idempotency records (`Idempotency-Key` of POS clients).
    Idempotency,
    /// Processed webhook event ids.
    WebhookEvents,
    Refunds,
    /// Inputs collected on a reader's screen (`collect_inputs` jobs).
    InputCollections,
}

impl Tree {
    pub const ALL: [Tree; 9] = [
        Tree::Meta,
        Tree::Merchants,
        Tree::Locations,
        Tree::Readers,
        Tree::Payments,
        Tree::Idempotency,
        Tree::WebhookEvents,
        Tree::Refunds,
        Tree::InputCollections,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Merchants => "merchants",
            Tree::Locations => "locations",
            Tree::Readers => "readers",
            Tree::Payments => "payments",
            Tree::Idempotency => "idempotency",
            Tree::WebhookEvents => "webhook_events",
            Tree::Refunds => "refunds",
            Tree::InputCollections => "input_collections",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store engine: {0}")]
    Engine(String),
    #[error("the store at {path} has schema version {found}, newer than this readerd understands ({supported}); run a newer readerd or restore a backup")]
    TooNew {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("record {tree}/{key} is unreadable: {message}")]
    Corrupt {
        tree: &'static str,
        key: String,
        message: String,
    },
}

/// A lease held by one instance (a reader's worker runs where its lease is). The fencing
/// token grows with every new tenure, so a write fenced by an old tenure is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub owner: String,
    pub token: i64,
}

/// Byte-level storage. Implementations flush every write before returning.
pub trait Store: Send + Sync + 'static {
    /// The backend's name: `sled` or `postgres`.
    fn backend(&self) -> &'static str;
    fn get(&self, tree: Tree, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes (replacing) and flushes.
    fn put(&self, tree: Tree, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Writes only if the key is absent, atomically; returns the existing value otherwise.
    fn put_if_absent(
        &self,
        tree: Tree,
        key: &str,
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces `old` by `new` atomically if the current value is `old` (`None` = absent).
    /// Returns `Ok(false)` when the current value differs.
    fn compare_and_swap(
        &self,
        tree: Tree,
        key: &str,
        old: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError>;
    fn remove(&self, tree: Tree, key: &str) -> Result<(), StoreError>;
    /// Every entry of a tree, in key order.
    fn scan(&self, tree: Tree) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// The entries whose key starts with `prefix`, in key order; reads only those.
    fn scan_prefix(&self, tree: Tree, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Takes the lease `name` for `owner` for `ttl` if it is free, expired or already
    /// `owner`'s (then it is renewed, same token); `None` while another owner holds it. A
    /// new tenure (a new owner, or the same one after expiry) has a greater token. One
    /// machine (sled): this instance holds every lease, always.
    fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Lease>, StoreError>;
    /// Extends a held lease; `false` when it was lost (expired, or taken): the holder must
    /// stop what the lease guards.
    fn renew_lease(&self, lease: &Lease, ttl: std::time::Duration) -> Result<bool, StoreError>;
    /// Gives a held lease up at once (a graceful stop), keeping its token history.
    fn release_lease(&self, lease: &Lease) -> Result<(), StoreError>;
    /// The unexpired leases: (name, owner).
    fn lease_holders(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Writes (replacing) only while `lease` is held, checked in the same transaction as
    /// the write; `Ok(false)` (nothing written) when it is not.
    fn put_fenced(
        &self,
        tree: Tree,
        key: &str,
        value: &[u8],
        lease: &Lease,
    ) -> Result<bool, StoreError>;
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    /// Record format version.
    v: u32,
    data: T,
}

/// Typed, versioned records over a [`Store`]. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

impl Registry {
    /// Opens (creating if needed) the sled store at `path`, checks and migrates its schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let store = SledStore::open(path)?;
        Self::with_store(Arc::new(store), &path.display().to_string())
    }

    /// Opens the registry at `location` (connecting, for PostgreSQL, and migrating).
    pub fn open_location(location: &Location) -> Result<Self, StoreError> {
        match location {
            Location::Sled(path) => Self::open(path),
            Location::Postgres(url) => {
                let store = PgStore::connect(url)?;
                Self::with_store(Arc::new(store), &format!("postgres:{}", redact_url(url)))
            }
        }
    }

    /// A throw-away store for tests and the demo.
    pub fn temporary() -> Result<Self, StoreError> {
        Self::with_store(Arc::new(SledStore::temporary()?), "<temporary>")
    }

    /// Wraps any engine; checks and migrates the schema version.
    pub fn with_store(store: Arc<dyn Store>, path: &str) -> Result<Self, StoreError> {
        let found = match store.get(Tree::Meta, "schema_version")? {
            Some(bytes) => String::from_utf8_lossy(&bytes)
                .parse::<u32>()
                .map_err(|e| StoreError::Corrupt {
                    tree: Tree::Meta.name(),
                    key: "schema_version".into(),
                    message: e.to_string(),
                })?,
            None => 0,
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        // Migrations from older schemas go here, one step at a time. Version 0 is an empty
        // (new) store, which needs none; 1 → 2 needs none either (see [`SCHEMA_VERSION`]).
        if found < SCHEMA_VERSION {
            store.put(
                Tree::Meta,
                "schema_version",
                SCHEMA_VERSION.to_string().as_bytes(),
            )?;
        }
        Ok(Registry { store })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        serde_json::to_vec(&Envelope {
            v: RECORD_FORMAT,
            data: value,
        })
        .expect("records serialise")
    }

    fn decode<T: DeserializeOwned>(tree: Tree, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
        let env: Envelope<T> = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            tree: tree.name(),
            key: key.to_string(),
            message: e.to_string(),
        })?;
        if env.v > RECORD_FORMAT {
            return Err(StoreError::Corrupt {
                tree: tree.name(),
                key: key.to_string(),
                message: format!("record format {} is newer than {}", env.v, RECORD_FORMAT),
            });
        }
        Ok(env.data)
    }

    pub fn get<T: DeserializeOwned>(&self, tree: Tree, key: &str) -> Result<Option<T>, StoreError> {
        match self.store.get(tree, key)? {
            Some(b) => Ok(Some(Self::decode(tree, key, &b)?)),
            None => Ok(None),
        }
    }

    /// Writes and flushes.
    pub fn put<T: Serialize>(&self, tree: Tree, key: &str, value: &T) -> Result<(), StoreError> {
        self.store.put(tree, key, &Self::encode(value))
    }

    /// Writes only while `lease` is held (checked with the write); `Ok(false)` when not.
    pub fn put_fenced<T: Serialize>(
        &self,
        tree: Tree,
        key: &str,
        value: &T,
        lease: &Lease,
    ) -> Result<bool, StoreError> {
        self.store
            .put_fenced(tree, key, &Self::encode(value), lease)
    }

    /// Writes only if absent; returns the existing record otherwise.
    pub fn put_if_absent<T: Serialize + DeserializeOwned>(
        &self,
        tree: Tree,
        key: &str,
        value: &T,
    ) -> Result<Option<T>, StoreError> {
        match self.store.put_if_absent(tree, key, &Self::encode(value))? {
            Some(b) => Ok(Some(Self::decode(tree, key, &b)?)),
            None => Ok(None),
        }
    }

    pub fn remove(&self, tree: Tree, key: &str) -> Result<(), StoreError> {
        self.store.remove(tree, key)
    }

    /// The records whose key starts with `prefix`, with their keys, in key order. Reads
    /// only those: a key laid out as `<owner>/<id>` makes "every record of one owner" a
    /// range, not a scan of the tree.
    pub fn scan_prefix<T: DeserializeOwned>(
        &self,
        tree: Tree,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        self.store
            .scan_prefix(tree, prefix)?
            .into_iter()
            .map(|(k, b)| Self::decode(tree, &k, &b).map(|v| (k, v)))
            .collect()
    }

    /// Every record of a tree, in key order.
    pub fn list<T: DeserializeOwned>(&self, tree: Tree) -> Result<Vec<T>, StoreError> {
        self.store
            .scan(tree)?
            .into_iter()
            .map(|(k, b)| Self::decode(tree, &k, &b))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        n: u32,
    }

    #[test]
    fn records_survive_reopen_and_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let r = Registry::open(dir.path()).unwrap();
            r.put(Tree::Merchants, "m1", &Rec { n: 1 }).unwrap();
            assert_eq!(
                r.put_if_absent(Tree::Merchants, "m1", &Rec { n: 2 })
                    .unwrap(),
                Some(Rec { n: 1 })
            );
        }
        {
            let r = Registry::open(dir.path()).unwrap();
            assert_eq!(
                r.get::<Rec>(Tree::Merchants, "m1").unwrap(),
                Some(Rec { n: 1 })
            );
            assert_eq!(r.list::<Rec>(Tree::Merchants).unwrap().len(), 1);
            r.store().put(Tree::Meta, "schema_version", b"99").unwrap();
        }
        let err = Registry::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    }

    #[test]
    fn a_prefix_scan_reads_exactly_the_keys_under_the_prefix() {
        let r = Registry::temporary().unwrap();
        for (k, n) in [
            ("pay_a/1", 1),
            ("pay_a/2", 2),
            ("pay_ab/3", 3),
            ("pay_b/4", 4),
        ] {
            r.put(Tree::Refunds, k, &Rec { n }).unwrap();
        }
        let got: Vec<(String, Rec)> = r.scan_prefix(Tree::Refunds, "pay_a/").unwrap();
        assert_eq!(
            got,
            vec![
                ("pay_a/1".to_string(), Rec { n: 1 }),
                ("pay_a/2".to_string(), Rec { n: 2 })
            ]
        );
        assert!(r
            .scan_prefix::<Rec>(Tree::Refunds, "pay_c/")
            .unwrap()
            .is_empty());
        // Another tree with the same keys is not read.
        assert!(r
            .scan_prefix::<Rec>(Tree::Payments, "pay_a/")
            .unwrap()
            .is_empty());
    }
}
