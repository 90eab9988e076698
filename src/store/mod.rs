//! The registry's storage, behind a small interface so that the engine can be swapped.
//!
//! [`Store`] is a handful of byte-level operations on named trees; [`Registry`] adds typed,
//! versioned JSON records on top. Every write is flushed to disk before it returns: anything
//! the daemon acts on after a crash must be on disk before it is acted on. Nothing here
//! touches the network, so no store operation can span a Stripe call.
//!
//! Longer than 600 lines on purpose: the whole storage contract sits in one place: the seam
//! both backends implement (records, batches, ranges, leases), the typed registry over it
//! and the schema migrations that go with it.

pub mod binding;
mod pg_tls;
mod postgres;
mod sled_store;

pub use postgres::{check_url, redact_url, PgStore, JOBS_CHANNEL};
pub use sled_store::{SledStore, DEFAULT_CACHE_BYTES};

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
            check_url(url)
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
/// - 3: payments have secondary indexes (tree `payment_index`: by creation time, merchant,
///   reader, status, merchant and status, PaymentIntent), written in the same batch as the
///   payment. The step from 2 builds them from the payments, in chunks, then writes the
///   version: an interrupted step is started again at the next open (rebuilding is
///   idempotent). A readerd of version 2 would write payments without their index entries,
///   so it must not open a store of version 3.
pub const SCHEMA_VERSION: u32 = 3;

/// The meta key that marks a store filled for measurement (`readerd bench --fill-store`):
/// its payments were never on Stripe. `readerd run` warns when it opens one.
pub const TEST_STORE_KEY: &str = "test_store";

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
    /// Secondary indexes of payments (keys laid out by `payments::index`), written in the
    /// same [`Batch`] as the payment they point to.
    PaymentIndex,
    /// Inputs collected on a reader's screen (`collect_inputs` jobs).
    InputCollections,
    /// Cards saved on a reader (`process_setup_intent` jobs).
    Setups,
    /// Operations forwarded to a reader's holder (`payments::engine::forward`), keyed
    /// `<reader>/<command>`, removed once answered.
    Commands,
    /// Cart displays on a shared store, waiting or shown (`payments::engine::reader_ops`),
    /// keyed `<reader>/<display>`.
    Displays,
}

impl Tree {
    pub const ALL: [Tree; 13] = [
        Tree::Meta,
        Tree::Merchants,
        Tree::Locations,
        Tree::Readers,
        Tree::Payments,
        Tree::Idempotency,
        Tree::WebhookEvents,
        Tree::Refunds,
        Tree::PaymentIndex,
        Tree::InputCollections,
        Tree::Setups,
        Tree::Commands,
        Tree::Displays,
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
            Tree::PaymentIndex => "payment_index",
            Tree::InputCollections => "input_collections",
            Tree::Setups => "setups",
            Tree::Commands => "commands",
            Tree::Displays => "displays",
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

/// What [`Store::job_notifications`] tells a listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobNotice {
    /// A job (a payment, an input collection: its id) was written for this reader.
    Job { reader: String, job: String },
    /// Notices may have been missed (the listening connection was lost and is back, or the
    /// listener fell behind): look at every reader.
    Missed,
}

impl JobNotice {
    /// The notice a payload of [`Store::notify_job`] carries (`<reader> <job>`); one that
    /// cannot be read means that something was missed.
    pub fn from_payload(payload: &str) -> JobNotice {
        match payload.split_once(' ') {
            Some((reader, job)) if !reader.is_empty() && !job.is_empty() => JobNotice::Job {
                reader: reader.to_string(),
                job: job.to_string(),
            },
            _ => JobNotice::Missed,
        }
    }

    /// The payload that [`JobNotice::from_payload`] reads.
    pub fn payload(reader: &str, job: &str) -> String {
        format!("{reader} {job}")
    }
}

/// How many notices a listener may fall behind before it is told [`JobNotice::Missed`].
pub const JOB_NOTICES_BUFFER: usize = 1024;

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
    /// Writes every put and remove of `batch`, across trees, all or none (a crash leaves
    /// either the whole batch or nothing of it), and flushes. An empty batch is a no-op.
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;
    /// At most `limit` entries whose key starts with `prefix`, in key order (descending when
    /// `reverse`), beginning strictly after `start_after` in that order (a whole key, not a
    /// suffix of the prefix; `None` = from the prefix's first, or last, key). Reads only what
    /// it returns: this is what makes a page cost O(page).
    fn scan_range(
        &self,
        tree: Tree,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

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
    /// Applies `batch` (all or none) only while `lease` is held, checked in the same
    /// transaction as the writes; `Ok(false)` (nothing written) when it is not.
    fn apply_fenced(&self, batch: Batch, lease: &Lease) -> Result<bool, StoreError>;

    /// Tells every process on this store, this one included, that `reader` has a new job
    /// `job` in the store (called right after the job's write). One machine (sled): an
    /// in-process wakeup; PostgreSQL: `NOTIFY readerd_jobs, '<reader> <job>'`, heard by
    /// every instance's listener. Ids hold no space.
    fn notify_job(&self, reader: &str, job: &str) -> Result<(), StoreError>;
    /// The notices of [`Store::notify_job`], from now on. A receiver that falls behind sees
    /// `Lagged`, which means the same as [`JobNotice::Missed`].
    fn job_notifications(&self) -> tokio::sync::broadcast::Receiver<JobNotice>;
}

/// One write of a [`Batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        tree: Tree,
        key: String,
        value: Vec<u8>,
    },
    Remove {
        tree: Tree,
        key: String,
    },
}

/// Puts and removes over any trees that [`Store::apply`] writes atomically: a record and
/// the index entries that point to it, or an archived record's removal and its tombstone.
/// Applied in order, so a later op on the same key wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn put(&mut self, tree: Tree, key: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put {
            tree,
            key: key.into(),
            value: value.into(),
        });
    }

    /// Puts a typed record in its versioned envelope (as [`Registry::put`] writes it).
    pub fn put_record<T: Serialize>(&mut self, tree: Tree, key: impl Into<String>, value: &T) {
        self.put(tree, key, Registry::encode(value));
    }

    pub fn remove(&mut self, tree: Tree, key: impl Into<String>) {
        self.ops.push(Op::Remove {
            tree,
            key: key.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
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
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Registry::open`] with sled's page cache bounded to `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let store = SledStore::open(path, cache_bytes)?;
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
        // Migrations from older schemas, one step at a time (see [`SCHEMA_VERSION`]).
        // Version 0 is an empty (new) store, which needs none; 1 → 2 needs none either.
        let registry = Registry { store };
        if (1..3).contains(&found) {
            tracing::info!("store schema {found} → 3: building the payment indexes");
            let n = crate::payments::index::rebuild(&registry)?;
            tracing::info!(payments = n, "payment indexes built");
        }
        if found < SCHEMA_VERSION {
            registry.store.put(
                Tree::Meta,
                "schema_version",
                SCHEMA_VERSION.to_string().as_bytes(),
            )?;
        }
        Ok(registry)
    }

    /// Whether the store was filled for measurement ([`TEST_STORE_KEY`]).
    pub fn is_test_store(&self) -> Result<bool, StoreError> {
        Ok(self.store.get(Tree::Meta, TEST_STORE_KEY)?.is_some())
    }

    /// Marks the store as filled for measurement.
    pub fn mark_test_store(&self, why: &str) -> Result<(), StoreError> {
        self.store.put(Tree::Meta, TEST_STORE_KEY, why.as_bytes())
    }

    /// Writes a [`Batch`] atomically.
    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        self.store.apply(batch)
    }

    /// Calls `f` with every record of `tree` whose key starts with `prefix`, in key order,
    /// reading `chunk` records at a time: a walk of a large tree that never holds it whole.
    pub fn for_each<T: DeserializeOwned>(
        &self,
        tree: Tree,
        prefix: &str,
        chunk: usize,
        mut f: impl FnMut(String, T) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut after: Option<String> = None;
        loop {
            let rows =
                self.store
                    .scan_range(tree, prefix, after.as_deref(), chunk.max(1), false)?;
            let done = rows.len() < chunk.max(1);
            for (k, b) in rows {
                let v = Self::decode(tree, &k, &b)?;
                after = Some(k.clone());
                f(k, v)?;
            }
            if done {
                return Ok(());
            }
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        serde_json::to_vec(&Envelope {
            v: RECORD_FORMAT,
            data: value,
        })
        .expect("records serialise")
    }

    pub(crate) fn decode<T: DeserializeOwned>(
        tree: Tree,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
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
        let mut batch = Batch::default();
        batch.put_record(tree, key, value);
        self.store.apply_fenced(batch, lease)
    }

    /// Applies `batch` only while `lease` is held (checked with the writes); `Ok(false)`,
    /// nothing written, when not.
    pub fn apply_fenced(&self, batch: Batch, lease: &Lease) -> Result<bool, StoreError> {
        self.store.apply_fenced(batch, lease)
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

    #[test]
    fn a_range_scan_pages_either_way_from_a_key_within_its_prefix() {
        let r = Registry::temporary().unwrap();
        let s = r.store();
        for k in ["a/1", "a/2", "a/3", "a/4", "b/1", "a"] {
            s.put(Tree::PaymentIndex, k, b"").unwrap();
        }
        let keys = |v: Vec<(String, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        let scan = |after: Option<&str>, limit, rev| {
            keys(
                s.scan_range(Tree::PaymentIndex, "a/", after, limit, rev)
                    .unwrap(),
            )
        };
        assert_eq!(scan(None, 10, false), ["a/1", "a/2", "a/3", "a/4"]);
        assert_eq!(scan(None, 2, true), ["a/4", "a/3"]);
        assert_eq!(scan(Some("a/2"), 10, false), ["a/3", "a/4"]);
        assert_eq!(scan(Some("a/3"), 10, true), ["a/2", "a/1"]);
        assert_eq!(scan(Some("a/1"), 10, true), Vec::<String>::new());
        assert_eq!(scan(Some("a/4"), 10, false), Vec::<String>::new());
        // A start outside the prefix clamps to it.
        assert_eq!(scan(Some("z"), 1, true), ["a/4"]);
        assert_eq!(scan(Some(""), 1, false), ["a/1"]);
    }

    #[test]
    fn a_batch_writes_across_trees_all_at_once_in_order() {
        let r = Registry::temporary().unwrap();
        let s = r.store();
        s.put(Tree::Refunds, "old", b"x").unwrap();
        let mut b = Batch::default();
        b.put_record(Tree::Payments, "p1", &Rec { n: 1 });
        b.put(Tree::PaymentIndex, "t/p1", "");
        b.remove(Tree::Refunds, "old");
        b.put(Tree::PaymentIndex, "k", "1");
        b.put(Tree::PaymentIndex, "k", "2");
        assert_eq!(b.len(), 5);
        s.apply(b).unwrap();
        assert_eq!(
            r.get::<Rec>(Tree::Payments, "p1").unwrap(),
            Some(Rec { n: 1 })
        );
        assert_eq!(s.get(Tree::PaymentIndex, "t/p1").unwrap(), Some(vec![]));
        assert_eq!(s.get(Tree::Refunds, "old").unwrap(), None);
        assert_eq!(s.get(Tree::PaymentIndex, "k").unwrap(), Some(b"2".to_vec()));
        s.apply(Batch::default()).unwrap();
    }
}
