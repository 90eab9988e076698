//! [`Store`] on PostgreSQL: one table per [`Tree`], shared by several readerd instances.
//!
//! The [`Store`] interface is synchronous (sled answers from memory and a local fsync), so
//! this backend runs its own small pool: one thread with a single-threaded tokio runtime
//! and [`POOL_SIZE`] `tokio-postgres` connections, each a task taking operations from one
//! queue. A caller (any thread, inside a runtime or not) sends an operation and waits for
//! its answer; the database work never runs on the caller's runtime, so a current-thread
//! runtime cannot deadlock on it.
//!
//! Every record is kept as its exact bytes (`value text`, the JSON envelope), so
//! compare-and-swap compares what the caller read. The fields operators query (a payment's
//! merchant, reader, status, amount…) are generated columns computed from that JSON by the
//! database itself, indexed where a query would filter on them: `SELECT id, status, amount
//! FROM payments WHERE merchant = 'bakery'` works, and the columns can never disagree with
//! the record. Keys use the "C" collation, so key order is byte order, as in sled.
//!
//! When the database cannot be reached (a restart, a network cut), an operation waits and
//! is tried again on a new connection for up to [`OUTAGE_WAIT`] before it fails. A write
//! whose first attempt may have landed is recognised on retry: an insert-if-absent or a
//! compare-and-swap that finds its own new value already in place reports success.
//!
//! Longer than 600 lines on purpose: one backend with its SQL, its migrations and its
//! connection pool, behind the `Store` seam; split, each part would be read only with the
//! others.

use super::pg_tls::{self, Target};
use super::{JobNotice, Lease, Store, StoreError, Tree, JOB_NOTICES_BUFFER};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, Statement};

/// Connections per instance. Store operations are short; four keep a burst of payment
/// steps from queueing behind one slow scan.
pub const POOL_SIZE: usize = 4;
/// How long an operation waits for an unreachable database before it fails.
pub const OUTAGE_WAIT: Duration = Duration::from_secs(30);
/// The channel of [`Store::notify_job`]: its payload is the reader's id.
pub const JOBS_CHANNEL: &str = "readerd_jobs";
/// The listening connection is checked this often (a `SELECT 1`), so that a connection
/// cut without a word (a network partition) is noticed and replaced.
const LISTEN_CHECK: Duration = Duration::from_secs(10);
/// The listener reconnects after this long at first, doubling up to [`LISTEN_BACKOFF_MAX`].
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(250);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The versioned schema migrations, applied in order at start, each once, in one
/// transaction under an advisory lock so that instances starting together do not race.
/// Append only: a released migration is never edited.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, MIGRATION_1),
    (2, MIGRATION_2),
    (3, MIGRATION_3),
    (4, MIGRATION_4),
    (5, MIGRATION_5),
    (6, MIGRATION_6),
    (7, MIGRATION_7),
];

/// The first schema: every tree, with its operator-facing columns.
const MIGRATION_1: &str = r#"
CREATE TABLE meta (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE merchants (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL,
    account text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,account}') STORED,
    display_name text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,display_name}') STORED,
    charge_type text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,charge_type}') STORED
);
CREATE TABLE locations (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL,
    display_name text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,display_name}') STORED,
    merchant text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,merchant}') STORED
);
CREATE TABLE readers (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL,
    label text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,label}') STORED,
    location text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,location}') STORED,
    status text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,status}') STORED
);
CREATE TABLE payments (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL,
    merchant text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,merchant}') STORED,
    account text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,account}') STORED,
    reader text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,reader}') STORED,
    status text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,status}') STORED,
    step text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,step}') STORED,
    amount bigint GENERATED ALWAYS AS (((value::jsonb) #>> '{data,amount}')::bigint) STORED,
    currency text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,currency}') STORED,
    amount_captured bigint GENERATED ALWAYS AS (((value::jsonb) #>> '{data,amount_captured}')::bigint) STORED,
    amount_refunded bigint GENERATED ALWAYS AS (((value::jsonb) #>> '{data,amount_refunded}')::bigint) STORED,
    payment_intent text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,payment_intent}') STORED,
    created_at text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,created_at}') STORED,
    updated_at text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,updated_at}') STORED
);
CREATE INDEX payments_merchant ON payments (merchant, created_at);
CREATE INDEX payments_reader ON payments (reader, created_at);
CREATE INDEX payments_status ON payments (status);
CREATE INDEX payments_payment_intent ON payments (payment_intent);
CREATE TABLE refunds (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL,
    payment text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,payment}') STORED,
    status text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,status}') STORED,
    amount bigint GENERATED ALWAYS AS (((value::jsonb) #>> '{data,amount}')::bigint) STORED,
    refund text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,refund}') STORED,
    created_at text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,created_at}') STORED
);
CREATE TABLE idempotency (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE webhook_events (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);
"#;

/// Leases: one row per lease, kept after release so that the token only grows. Expiry is
/// the database's clock, the one clock every instance shares.
const MIGRATION_2: &str = r#"
CREATE TABLE leases (
    name text COLLATE "C" PRIMARY KEY,
    owner text NOT NULL,
    token bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX leases_owner ON leases (owner);
"#;

/// Inputs collected on a reader's screen (tree `input_collections`), with the columns an
/// operator looks for.
const MIGRATION_3: &str = r#"
CREATE TABLE input_collections (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL,
    reader text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,reader}') STORED,
    merchant text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,merchant}') STORED,
    status text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,status}') STORED,
    created_at text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,created_at}') STORED
);
CREATE INDEX input_collections_reader ON input_collections (reader, created_at);
"#;

/// The payments' secondary indexes (`payments::index`), written in the same transaction as
/// the payment ([`Store::apply`]).
const MIGRATION_4: &str = r#"
CREATE TABLE payment_index (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);
"#;

/// Cards saved on a reader (tree `setups`), with the columns an operator looks for.
const MIGRATION_5: &str = r#"
CREATE TABLE setups (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL,
    reader text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,reader}') STORED,
    merchant text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,merchant}') STORED,
    status text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,status}') STORED,
    setup_intent text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,setup_intent}') STORED,
    created_at text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,created_at}') STORED
);
CREATE INDEX setups_reader ON setups (reader, created_at);
"#;

/// Operations forwarded to a reader's holder (tree `commands`), with the columns an
/// operator looks for when one waits.
const MIGRATION_6: &str = r#"
CREATE TABLE commands (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL,
    reader text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,reader}') STORED,
    payment text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,payment}') STORED,
    op text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,op,op}') STORED,
    created_at text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,created_at}') STORED
);
"#;

/// Cart displays waiting for, or shown on, a reader (tree `displays`).
const MIGRATION_7: &str = r#"
CREATE TABLE displays (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL,
    reader text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,reader}') STORED,
    shown boolean GENERATED ALWAYS AS (((value::jsonb) #>> '{data,shown}')::boolean) STORED,
    created_at text GENERATED ALWAYS AS ((value::jsonb) #>> '{data,created_at}') STORED
);
"#;

/// An arbitrary constant naming readerd's migration lock among the database's advisory
/// locks.
const MIGRATION_LOCK: i64 = 0x7265_6164_6572_6431;

#[derive(Clone, Debug)]
enum Op {
    Migrate,
    Get(Tree, String),
    Put(Tree, String, String),
    PutIfAbsent(Tree, String, String),
    Cas(Tree, String, Option<String>, String),
    Remove(Tree, String),
    /// Every key (None) or the keys under a prefix.
    Scan(Tree, Option<String>),
    /// name, owner, ttl in milliseconds.
    Acquire(String, String, i64),
    Renew(Lease, i64),
    Release(Lease),
    Holders,
    ApplyFenced(Vec<(Tree, String, Option<String>)>, Lease),
    /// Puts (`Some`) and removes (`None`), in order, in one transaction.
    Apply(Vec<(Tree, String, Option<String>)>),
    /// prefix, start after, limit, reverse.
    ScanRange(Tree, String, Option<String>, i64, bool),
    /// `NOTIFY readerd_jobs, '<reader> <job>'`.
    Notify(String),
}

enum Reply {
    Done,
    Value(Option<Vec<u8>>),
    Swapped(bool),
    Rows(Vec<(String, Vec<u8>)>),
    Token(Option<i64>),
    Holders(Vec<(String, String)>),
}

struct Job {
    op: Op,
    reply: std::sync::mpsc::SyncSender<Result<Reply, StoreError>>,
}

/// The PostgreSQL store. Dropping it closes its connections.
pub struct PgStore {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    config: Target,
    /// The pool's runtime, where the listener runs once someone asks for notices.
    pool: tokio::runtime::Handle,
    notices: tokio::sync::broadcast::Sender<JobNotice>,
    listening: std::sync::Once,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgStore")
    }
}

/// Whether `url` is a PostgreSQL URL readerd can use (its TLS settings included: a root
/// certificate file named must be readable).
pub fn check_url(url: &str) -> Result<(), String> {
    pg_tls::parse(url).map(|_| ()).map_err(|e| e.to_string())
}

/// A database URL with its password hidden, for messages.
pub fn redact_url(url: &str) -> String {
    // postgres://user:password@host/db → postgres://user:***@host/db
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.rsplit_once('@') {
            if let Some((user, _)) = auth.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    // Key-value form: password=…
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl PgStore {
    /// Connects to the database at `url` (a `postgres://` URL or a key-value connection
    /// string) and brings its schema up to date.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let config = pg_tls::parse(url)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
        let pool_config = config.clone();
        std::thread::Builder::new()
            .name("readerd-postgres".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the PostgreSQL pool");
                let _ = handle_tx.send(rt.handle().clone());
                rt.block_on(async move {
                    let tasks: Vec<_> = (0..POOL_SIZE)
                        .map(|_| tokio::spawn(connection_task(pool_config.clone(), rx.clone())))
                        .collect();
                    for t in tasks {
                        let _ = t.await;
                    }
                });
            })
            .map_err(|e| StoreError::Engine(format!("cannot start the PostgreSQL pool: {e}")))?;
        let pool = handle_rx
            .recv()
            .map_err(|_| StoreError::Engine("the PostgreSQL pool did not start".into()))?;
        let (notices, _) = tokio::sync::broadcast::channel(JOB_NOTICES_BUFFER);
        let store = PgStore {
            jobs: tx,
            config,
            pool,
            notices,
            listening: std::sync::Once::new(),
        };
        store.call(Op::Migrate)?;
        Ok(store)
    }

    fn call(&self, op: Op) -> Result<Reply, StoreError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.jobs
            .send(Job { op, reply })
            .map_err(|_| StoreError::Engine("the PostgreSQL pool has stopped".into()))?;
        let wait = move || {
            answer
                .recv()
                .map_err(|_| StoreError::Engine("the PostgreSQL pool has stopped".into()))?
        };
        // On a multi-threaded runtime, hand this worker's other tasks to another thread
        // while we wait for the database, so that one payment's write does not stall the
        // rest. (A current-thread runtime cannot; its callers wait, as with sled's fsync.)
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    /// The highest schema migration this readerd knows.
    pub fn latest_migration() -> i32 {
        MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
    }
}

fn text(value: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(value.to_vec())
        .map_err(|_| StoreError::Engine("PostgreSQL records must be UTF-8".into()))
}

fn unexpected(reply: Reply) -> StoreError {
    let what = match reply {
        Reply::Done => "done",
        Reply::Value(_) => "a value",
        Reply::Swapped(_) => "a swap",
        Reply::Rows(_) => "rows",
        Reply::Token(_) => "a lease",
        Reply::Holders(_) => "lease holders",
    };
    StoreError::Engine(format!("the PostgreSQL pool answered {what} out of turn"))
}

impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn get(&self, tree: Tree, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.call(Op::Get(tree, key.to_string()))? {
            Reply::Value(v) => Ok(v),
            r => Err(unexpected(r)),
        }
    }

    fn put(&self, tree: Tree, key: &str, value: &[u8]) -> Result<(), StoreError> {
        match self.call(Op::Put(tree, key.to_string(), text(value)?))? {
            Reply::Done => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    fn put_if_absent(
        &self,
        tree: Tree,
        key: &str,
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self.call(Op::PutIfAbsent(tree, key.to_string(), text(value)?))? {
            Reply::Value(v) => Ok(v),
            r => Err(unexpected(r)),
        }
    }

    fn compare_and_swap(
        &self,
        tree: Tree,
        key: &str,
        old: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let old = old.map(text).transpose()?;
        match self.call(Op::Cas(tree, key.to_string(), old, text(new)?))? {
            Reply::Swapped(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }

    fn remove(&self, tree: Tree, key: &str) -> Result<(), StoreError> {
        match self.call(Op::Remove(tree, key.to_string()))? {
            Reply::Done => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    fn scan(&self, tree: Tree) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        match self.call(Op::Scan(tree, None))? {
            Reply::Rows(r) => Ok(r),
            r => Err(unexpected(r)),
        }
    }

    fn scan_prefix(&self, tree: Tree, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        match self.call(Op::Scan(tree, Some(prefix.to_string())))? {
            Reply::Rows(r) => Ok(r),
            r => Err(unexpected(r)),
        }
    }

    fn apply(&self, batch: super::Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut ops = Vec::with_capacity(batch.len());
        for op in batch.ops {
            ops.push(match op {
                super::Op::Put { tree, key, value } => (tree, key, Some(text(&value)?)),
                super::Op::Remove { tree, key } => (tree, key, None),
            });
        }
        match self.call(Op::Apply(ops))? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
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
        let op = Op::ScanRange(
            tree,
            prefix.to_string(),
            start_after.map(str::to_string),
            limit.min(i64::MAX as usize) as i64,
            reverse,
        );
        match self.call(op)? {
            Reply::Rows(rows) => Ok(rows),
            other => Err(unexpected(other)),
        }
    }

    fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let op = Op::Acquire(name.to_string(), owner.to_string(), millis(ttl));
        match self.call(op)? {
            Reply::Token(t) => Ok(t.map(|token| Lease {
                name: name.to_string(),
                owner: owner.to_string(),
                token,
            })),
            r => Err(unexpected(r)),
        }
    }

    fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        match self.call(Op::Renew(lease.clone(), millis(ttl)))? {
            Reply::Swapped(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }

    fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        match self.call(Op::Release(lease.clone()))? {
            Reply::Done => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    fn lease_holders(&self) -> Result<Vec<(String, String)>, StoreError> {
        match self.call(Op::Holders)? {
            Reply::Holders(h) => Ok(h),
            r => Err(unexpected(r)),
        }
    }

    fn apply_fenced(&self, batch: super::Batch, lease: &Lease) -> Result<bool, StoreError> {
        let mut ops = Vec::with_capacity(batch.len());
        for op in batch.ops {
            ops.push(match op {
                super::Op::Put { tree, key, value } => (tree, key, Some(text(&value)?)),
                super::Op::Remove { tree, key } => (tree, key, None),
            });
        }
        match self.call(Op::ApplyFenced(ops, lease.clone()))? {
            Reply::Swapped(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }

    fn notify_job(&self, reader: &str, job: &str) -> Result<(), StoreError> {
        match self.call(Op::Notify(JobNotice::payload(reader, job)))? {
            Reply::Done => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    fn job_notifications(&self) -> tokio::sync::broadcast::Receiver<JobNotice> {
        let receiver = self.notices.subscribe();
        // One listening connection per store, opened for the first listener (a store that
        // only copies or tests opens none).
        self.listening.call_once(|| {
            self.pool
                .spawn(listen(self.config.clone(), self.notices.clone()));
        });
        receiver
    }
}

/// The listening connection: `LISTEN readerd_jobs`, each notification passed on as a
/// [`JobNotice`]. A lost connection is replaced (with backoff); once it is back, listeners
/// are told [`JobNotice::Missed`], since notifications sent meanwhile went to nobody.
async fn listen(config: Target, notices: tokio::sync::broadcast::Sender<JobNotice>) {
    let mut backoff = LISTEN_BACKOFF_MIN;
    let mut lost = false;
    // It runs as long as the store's pool (dropping the store ends it).
    loop {
        let e = listen_once(&config, &notices, &mut lost, &mut backoff).await;
        if !lost {
            tracing::warn!(error = %e, "PostgreSQL job notifications lost; reconnecting");
        }
        lost = true;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
    }
}

/// One listening connection, until it fails; returns why.
async fn listen_once(
    config: &Target,
    notices: &tokio::sync::broadcast::Sender<JobNotice>,
    lost: &mut bool,
    backoff: &mut Duration,
) -> String {
    match listen_on(config, notices, lost, backoff).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn listen_on(
    config: &Target,
    notices: &tokio::sync::broadcast::Sender<JobNotice>,
    lost: &mut bool,
    backoff: &mut Duration,
) -> Result<std::convert::Infallible, String> {
    let (client, mut connection) = config
        .config
        .connect(config.tls.clone())
        .await
        .map_err(|e| e.to_string())?;
    let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<String>();
    let forward = notices.clone();
    tokio::spawn(async move {
        let why = loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if n.channel() == JOBS_CHANNEL {
                        let _ = forward.send(JobNotice::from_payload(n.payload()));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break e.to_string(),
                None => break "closed".to_string(),
            }
        };
        let _ = closed_tx.send(why);
    });
    client
        .batch_execute(&format!("LISTEN {JOBS_CHANNEL}"))
        .await
        .map_err(|e| e.to_string())?;
    *backoff = LISTEN_BACKOFF_MIN;
    if std::mem::take(lost) {
        tracing::info!("PostgreSQL job notifications back");
        let _ = notices.send(JobNotice::Missed);
    }
    loop {
        tokio::select! {
            why = &mut closed => return Err(why.unwrap_or_else(|_| "closed".into())),
            _ = tokio::time::sleep(LISTEN_CHECK) => {
                match tokio::time::timeout(LISTEN_CHECK / 2, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err("no answer to a check".into()),
                }
            }
        }
    }
}

/// The puts and removes of a batch, inside `tx`.
async fn apply_ops(
    tx: &tokio_postgres::Transaction<'_>,
    ops: &[(Tree, String, Option<String>)],
) -> Result<(), tokio_postgres::Error> {
    for (tree, key, value) in ops {
        match value {
            Some(v) => {
                tx.execute(
                    &format!(
                        "INSERT INTO {} (key, value) VALUES ($1, $2) \
                         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                        tree.name()
                    ),
                    &[key, v],
                )
                .await?;
            }
            None => {
                tx.execute(
                    &format!("DELETE FROM {} WHERE key = $1", tree.name()),
                    &[key],
                )
                .await?;
            }
        }
    }
    Ok(())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One connection with its prepared statements.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    async fn statement(&mut self, sql: String) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.statements.get(&sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(&sql).await?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }
}

async fn connect(config: &Target) -> Result<Conn, tokio_postgres::Error> {
    let (client, connection) = config.config.connect(config.tls.clone()).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
    // A transaction's statements follow each other at once; one left open longer belongs to
    // a process that stopped (paused, swapped out) between them. Its session is ended, so
    // that the row lock of a fenced write cannot hold another instance's takeover (and with
    // it that instance's lease renewals) for as long as the pause lasts.
    client
        .batch_execute("SET idle_in_transaction_session_timeout = '1s'")
        .await?;
    Ok(Conn {
        client,
        statements: HashMap::new(),
    })
}

/// Whether an error means "the database could not be reached", after which the operation
/// is tried again on a new connection (as opposed to an error of the operation itself).
fn is_unreachable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Class 08: connection exception; class 57P: the server is shutting down or
        // starting (admin_shutdown, crash_shutdown, cannot_connect_now).
        Some(code) => code.code().starts_with("08") || code.code().starts_with("57P"),
        // No SQL state: unreachable only for an I/O error (refused, reset, timed out), not
        // for a parameter that cannot be encoded or a TLS setting that cannot be met.
        // A certificate refused (or a name that cannot be one) is an I/O error too, from the
        // TLS handshake: no wait will change it.
        None => std::error::Error::source(e).is_some_and(|s| {
            s.downcast_ref::<std::io::Error>().is_some_and(|io| {
                io.kind() != std::io::ErrorKind::InvalidInput
                    && io
                        .get_ref()
                        .is_none_or(|inner| inner.downcast_ref::<rustls::Error>().is_none())
            })
        }),
    }
}

async fn connection_task(
    config: Target,
    jobs: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Job>>>,
) {
    let mut conn: Option<Conn> = None;
    loop {
        let job = { jobs.lock().await.recv().await };
        let Some(job) = job else { return };
        let deadline = Instant::now() + OUTAGE_WAIT;
        let mut retried = false;
        let result = loop {
            if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
                match connect(&config).await {
                    Ok(c) => conn = Some(c),
                    Err(e) if is_unreachable(&e) && Instant::now() < deadline => {
                        conn = None;
                        tracing::warn!(error = %e, "PostgreSQL unreachable; waiting");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                    Err(e) => {
                        break Err(StoreError::Engine(format!("PostgreSQL: {}", describe(&e))))
                    }
                }
            }
            let c = conn.as_mut().expect("connected above");
            match execute(c, &job.op, retried).await {
                Ok(r) => break Ok(r),
                Err(Failure::Db(e)) if is_unreachable(&e) && Instant::now() < deadline => {
                    conn = None;
                    retried = true;
                    tracing::warn!(error = %e, "PostgreSQL unreachable; waiting");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(Failure::Db(e)) => {
                    if c.client.is_closed() {
                        conn = None;
                    }
                    break Err(StoreError::Engine(format!("PostgreSQL: {}", describe(&e))));
                }
                Err(Failure::Store(e)) => break Err(e),
            }
        };
        let _ = job.reply.send(result);
    }
}

/// A database error with the server's message, when there is one.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        // With its cause: "error performing TLS handshake" alone does not say what to fix.
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

enum Failure {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Db(e)
    }
}

/// The smallest string greater than every string that starts with `prefix` (in code
/// point order, which is the "C" collation's byte order for UTF-8), or `None` when there is
/// none.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

async fn execute(c: &mut Conn, op: &Op, retried: bool) -> Result<Reply, Failure> {
    match op {
        Op::Acquire(name, owner, ttl) => {
            // Free, expired or ours: take it. A new tenure (another owner, or ours after
            // expiry) bumps the token; a renewal of our live tenure keeps it.
            let s = c
                .statement(
                    "INSERT INTO leases (name, owner, token, expires_at) \
                     VALUES ($1, $2, 1, now() + $3::bigint * interval '1 millisecond') \
                     ON CONFLICT (name) DO UPDATE SET \
                       token = CASE WHEN leases.owner = EXCLUDED.owner AND leases.expires_at > now() \
                               THEN leases.token ELSE leases.token + 1 END, \
                       owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at \
                     WHERE leases.owner = EXCLUDED.owner OR leases.expires_at <= now() \
                     RETURNING token"
                        .into(),
                )
                .await?;
            let row = c.client.query_opt(&s, &[name, owner, ttl]).await?;
            Ok(Reply::Token(row.map(|r| r.get(0))))
        }
        Op::Renew(l, ttl) => {
            let s = c
                .statement(
                    "UPDATE leases SET expires_at = now() + $4::bigint * interval '1 millisecond' \
                     WHERE name = $1 AND owner = $2 AND token = $3 AND expires_at > now()"
                        .into(),
                )
                .await?;
            let n = c
                .client
                .execute(&s, &[&l.name, &l.owner, &l.token, ttl])
                .await?;
            Ok(Reply::Swapped(n == 1))
        }
        Op::Release(l) => {
            let s = c
                .statement(
                    "UPDATE leases SET expires_at = now() \
                     WHERE name = $1 AND owner = $2 AND token = $3 AND expires_at > now()"
                        .into(),
                )
                .await?;
            c.client.execute(&s, &[&l.name, &l.owner, &l.token]).await?;
            Ok(Reply::Done)
        }
        Op::Holders => {
            let s = c
                .statement(
                    "SELECT name, owner FROM leases WHERE expires_at > now() ORDER BY name".into(),
                )
                .await?;
            let rows = c.client.query(&s, &[]).await?;
            Ok(Reply::Holders(
                rows.into_iter().map(|r| (r.get(0), r.get(1))).collect(),
            ))
        }
        Op::ApplyFenced(ops, l) => {
            let check = c
                .statement(
                    "SELECT 1 FROM leases WHERE name = $1 AND owner = $2 AND token = $3 \
                     AND expires_at > now() FOR SHARE"
                        .into(),
                )
                .await?;
            // The row lock taken by the check holds off a new tenure until the writes are
            // committed: a takeover sees them, or they see the takeover.
            let tx = c.client.transaction().await?;
            if tx
                .query_opt(&check, &[&l.name, &l.owner, &l.token])
                .await?
                .is_none()
            {
                tx.rollback().await?;
                return Ok(Reply::Swapped(false));
            }
            apply_ops(&tx, ops).await?;
            tx.commit().await?;
            Ok(Reply::Swapped(true))
        }
        Op::Migrate => migrate(c).await.map(|()| Reply::Done),
        Op::Notify(payload) => {
            // Outside any transaction: delivered at once. A retry may deliver it twice,
            // which only wakes a listener twice.
            let s = c
                .statement(format!("SELECT pg_notify('{JOBS_CHANNEL}', $1)"))
                .await?;
            c.client.execute(&s, &[payload]).await?;
            Ok(Reply::Done)
        }
        Op::Apply(ops) => {
            // Idempotent as a whole (puts and removes of given values), so a retry after a
            // lost commit answer writes the same.
            let tx = c.client.transaction().await?;
            apply_ops(&tx, ops).await?;
            tx.commit().await?;
            Ok(Reply::Done)
        }
        Op::ScanRange(tree, prefix, after, limit, reverse) => {
            let t = tree.name();
            let (cmp, order) = if *reverse {
                ("<", "DESC")
            } else {
                (">", "ASC")
            };
            let end = prefix_end(prefix).unwrap_or_else(|| "\u{10FFFF}".repeat(2));
            let after = after.clone().unwrap_or_default();
            // `$3 = ''`: no start; else strictly after it in the scan's order.
            let sql = format!(
                "SELECT key, value FROM {t} WHERE key >= $1 AND key < $2 \
                 AND ($3 = '' OR key {cmp} $3) ORDER BY key {order} LIMIT $4"
            );
            let s = c.statement(sql).await?;
            let rows = c.client.query(&s, &[prefix, &end, &after, limit]).await?;
            Ok(Reply::Rows(
                rows.into_iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1).into_bytes()))
                    .collect(),
            ))
        }
        Op::Get(tree, key) => {
            let s = c
                .statement(format!("SELECT value FROM {} WHERE key = $1", tree.name()))
                .await?;
            let row = c.client.query_opt(&s, &[key]).await?;
            Ok(Reply::Value(
                row.map(|r| r.get::<_, String>(0).into_bytes()),
            ))
        }
        Op::Put(tree, key, value) => {
            let s = c
                .statement(format!(
                    "INSERT INTO {} (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    tree.name()
                ))
                .await?;
            c.client.execute(&s, &[key, value]).await?;
            Ok(Reply::Done)
        }
        Op::PutIfAbsent(tree, key, value) => {
            let existing = insert_if_absent(c, *tree, key, value).await?;
            // A retry that finds its own value: the first attempt landed.
            Ok(Reply::Value(match existing {
                Some(v) if retried && &v == value => None,
                other => other.map(String::into_bytes),
            }))
        }
        Op::Cas(tree, key, None, new) => {
            let existing = insert_if_absent(c, *tree, key, new).await?;
            Ok(Reply::Swapped(match existing {
                None => true,
                Some(v) => retried && &v == new,
            }))
        }
        Op::Cas(tree, key, Some(old), new) => {
            let s = c
                .statement(format!(
                    "UPDATE {} SET value = $3 WHERE key = $1 AND value = $2",
                    tree.name()
                ))
                .await?;
            let n = c.client.execute(&s, &[key, old, new]).await?;
            if n == 1 {
                return Ok(Reply::Swapped(true));
            }
            if retried {
                let s = c
                    .statement(format!("SELECT value FROM {} WHERE key = $1", tree.name()))
                    .await?;
                let now = c.client.query_opt(&s, &[key]).await?;
                return Ok(Reply::Swapped(
                    now.is_some_and(|r| &r.get::<_, String>(0) == new),
                ));
            }
            Ok(Reply::Swapped(false))
        }
        Op::Remove(tree, key) => {
            let s = c
                .statement(format!("DELETE FROM {} WHERE key = $1", tree.name()))
                .await?;
            c.client.execute(&s, &[key]).await?;
            Ok(Reply::Done)
        }
        Op::Scan(tree, prefix) => {
            let t = tree.name();
            let rows = match prefix.as_deref() {
                None | Some("") => {
                    let s = c
                        .statement(format!("SELECT key, value FROM {t} ORDER BY key"))
                        .await?;
                    c.client.query(&s, &[]).await?
                }
                Some(p) => match prefix_end(p) {
                    Some(end) => {
                        let s = c
                            .statement(format!(
                                "SELECT key, value FROM {t} WHERE key >= $1 AND key < $2 ORDER BY key"
                            ))
                            .await?;
                        c.client.query(&s, &[&p, &end]).await?
                    }
                    None => {
                        let s = c
                            .statement(format!(
                                "SELECT key, value FROM {t} WHERE key >= $1 ORDER BY key"
                            ))
                            .await?;
                        c.client.query(&s, &[&p]).await?
                    }
                },
            };
            Ok(Reply::Rows(
                rows.into_iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1).into_bytes()))
                    .collect(),
            ))
        }
    }
}

/// Inserts unless the key exists; returns the existing value otherwise. The insert and
/// the read are two statements: a row removed between them is inserted again.
async fn insert_if_absent(
    c: &mut Conn,
    tree: Tree,
    key: &str,
    value: &str,
) -> Result<Option<String>, Failure> {
    let insert = c
        .statement(format!(
            "INSERT INTO {} (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            tree.name()
        ))
        .await?;
    let read = c
        .statement(format!("SELECT value FROM {} WHERE key = $1", tree.name()))
        .await?;
    loop {
        if c.client.execute(&insert, &[&key, &value]).await? == 1 {
            return Ok(None);
        }
        if let Some(r) = c.client.query_opt(&read, &[&key]).await? {
            return Ok(Some(r.get(0)));
        }
    }
}

async fn migrate(c: &mut Conn) -> Result<(), Failure> {
    let tx = c.client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let done: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let latest = PgStore::latest_migration();
    if done > latest {
        return Err(Failure::Store(StoreError::TooNew {
            path: "PostgreSQL (schema_migrations)".into(),
            found: done as u32,
            supported: latest as u32,
        }));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > done) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await?;
        tracing::info!(version, "PostgreSQL schema migrated");
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_prefix_range_follows_every_key_under_it() {
        assert_eq!(prefix_end("pay_a/").as_deref(), Some("pay_a0"));
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://readerd:s3cret@db.example:5432/readerd"),
            "postgres://readerd:***@db.example:5432/readerd"
        );
        assert_eq!(
            redact_url("host=db user=readerd password=s3cret dbname=readerd"),
            "host=db user=readerd password=*** dbname=readerd"
        );
        assert_eq!(
            redact_url("postgres://db.example/readerd"),
            "postgres://db.example/readerd"
        );
    }
}
