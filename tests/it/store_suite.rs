//! One test suite for every store backend: what the payment engine, the fleet and the API
//! rely on from `Store` holds the same on sled and on PostgreSQL.

use crate::common::pg::pg;
use readerd::store::{JobNotice, Location, PgStore, Registry, SledStore, Store, StoreError, Tree};
use std::sync::Arc;

/// Runs `check` on a fresh sled store and on a fresh PostgreSQL database.
fn on_both(check: impl Fn(Arc<dyn Store>)) {
    check(Arc::new(SledStore::temporary().unwrap()));
    let url = pg().fresh_db();
    check(Arc::new(PgStore::connect(&url).unwrap()));
}

fn rec(n: u32) -> Vec<u8> {
    format!(r#"{{"v":1,"data":{{"n":{n}}}}}"#).into_bytes()
}

/// Writes record `n` under `p`, and an index entry beside it, fenced by `lease`.
fn fenced(s: &dyn Store, n: u32, lease: &readerd::store::Lease) -> bool {
    let mut batch = readerd::store::Batch::default();
    batch.put(Tree::Payments, "p", rec(n));
    batch.put(Tree::PaymentIndex, format!("test/{n}"), Vec::new());
    s.apply_fenced(batch, lease).unwrap()
}

#[test]
fn get_put_remove_round_trip() {
    on_both(|s| {
        let b = s.backend();
        assert_eq!(s.get(Tree::Merchants, "m1").unwrap(), None, "{b}");
        s.put(Tree::Merchants, "m1", &rec(1)).unwrap();
        assert_eq!(s.get(Tree::Merchants, "m1").unwrap(), Some(rec(1)), "{b}");
        s.put(Tree::Merchants, "m1", &rec(2)).unwrap();
        assert_eq!(s.get(Tree::Merchants, "m1").unwrap(), Some(rec(2)), "{b}");
        // Trees are separate.
        assert_eq!(s.get(Tree::Readers, "m1").unwrap(), None, "{b}");
        s.remove(Tree::Merchants, "m1").unwrap();
        assert_eq!(s.get(Tree::Merchants, "m1").unwrap(), None, "{b}");
        // Removing what is absent is not an error.
        s.remove(Tree::Merchants, "m1").unwrap();
    });
}

#[test]
fn values_come_back_byte_for_byte() {
    on_both(|s| {
        // Spacing and key order a JSON normaliser would change.
        let odd = br#"{ "v":1,  "data":{"z":1,"a":"caf\u00e9 \u2603"} }"#.to_vec();
        s.put(Tree::Payments, "pay_x", &odd).unwrap();
        assert_eq!(s.get(Tree::Payments, "pay_x").unwrap(), Some(odd.clone()));
        assert_eq!(s.scan(Tree::Payments).unwrap(), vec![("pay_x".into(), odd)]);
    });
}

#[test]
fn put_if_absent_keeps_the_first_value() {
    on_both(|s| {
        let b = s.backend();
        assert_eq!(
            s.put_if_absent(Tree::Idempotency, "k", &rec(1)).unwrap(),
            None,
            "{b}"
        );
        assert_eq!(
            s.put_if_absent(Tree::Idempotency, "k", &rec(2)).unwrap(),
            Some(rec(1)),
            "{b}"
        );
        assert_eq!(s.get(Tree::Idempotency, "k").unwrap(), Some(rec(1)), "{b}");
    });
}

#[test]
fn compare_and_swap_replaces_only_the_value_it_was_given() {
    on_both(|s| {
        let b = s.backend();
        assert!(
            s.compare_and_swap(Tree::Payments, "p", None, &rec(1))
                .unwrap(),
            "{b}: absent → first"
        );
        assert!(
            !s.compare_and_swap(Tree::Payments, "p", None, &rec(9))
                .unwrap(),
            "{b}: present is not absent"
        );
        assert!(
            !s.compare_and_swap(Tree::Payments, "p", Some(&rec(7)), &rec(9))
                .unwrap(),
            "{b}: a stale old value"
        );
        assert!(
            s.compare_and_swap(Tree::Payments, "p", Some(&rec(1)), &rec(2))
                .unwrap(),
            "{b}"
        );
        assert_eq!(s.get(Tree::Payments, "p").unwrap(), Some(rec(2)), "{b}");
        assert!(
            !s.compare_and_swap(Tree::Payments, "q", Some(&rec(1)), &rec(2))
                .unwrap(),
            "{b}: absent is not a value"
        );
        assert_eq!(s.get(Tree::Payments, "q").unwrap(), None, "{b}");
    });
}

#[test]
fn concurrent_compare_and_swap_loses_no_update() {
    on_both(|s| {
        s.put(Tree::Meta, "counter", b"0").unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        loop {
                            let old = s.get(Tree::Meta, "counter").unwrap().unwrap();
                            let n: u32 = String::from_utf8(old.clone()).unwrap().parse().unwrap();
                            let new = (n + 1).to_string();
                            if s.compare_and_swap(Tree::Meta, "counter", Some(&old), new.as_bytes())
                                .unwrap()
                            {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            s.get(Tree::Meta, "counter").unwrap(),
            Some(b"100".to_vec()),
            "{}",
            s.backend()
        );
    });
}

#[test]
fn scans_are_in_byte_order_and_a_prefix_reads_only_its_keys() {
    on_both(|s| {
        let b = s.backend();
        // Byte order, not a locale's: upper case first, `/` before letters, é last.
        let keys = [
            "pay_a/2", "pay_a/1", "pay_ab/3", "Pay_Z", "pay_b/4", "pay_é/5", "pay_%/6", "pay_/7",
        ];
        for (i, k) in keys.iter().enumerate() {
            s.put(Tree::Refunds, k, &rec(i as u32)).unwrap();
        }
        s.put(Tree::Payments, "pay_a/9", &rec(9)).unwrap();
        let all: Vec<String> = s
            .scan(Tree::Refunds)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            all,
            [
                "Pay_Z", "pay_%/6", "pay_/7", "pay_a/1", "pay_a/2", "pay_ab/3", "pay_b/4",
                "pay_é/5"
            ],
            "{b}"
        );
        let keys_under = |p: &str| -> Vec<String> {
            s.scan_prefix(Tree::Refunds, p)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(keys_under("pay_a/"), ["pay_a/1", "pay_a/2"], "{b}");
        // LIKE's wildcards are plain characters in a prefix.
        assert_eq!(keys_under("pay_%"), ["pay_%/6"], "{b}");
        assert_eq!(keys_under("pay_/"), ["pay_/7"], "{b}");
        assert_eq!(keys_under("pay_é"), ["pay_é/5"], "{b}");
        assert!(keys_under("pay_c/").is_empty(), "{b}");
        assert_eq!(keys_under("").len(), keys.len(), "{b}");
        let values = s.scan_prefix(Tree::Refunds, "pay_a/1").unwrap();
        assert_eq!(values, vec![("pay_a/1".to_string(), rec(1))], "{b}");
    });
}

#[test]
fn the_registry_writes_its_schema_version_and_refuses_a_newer_one() {
    on_both(|s| {
        let b = s.backend();
        let r = Registry::with_store(s.clone(), "test").unwrap();
        assert_eq!(
            r.store().get(Tree::Meta, "schema_version").unwrap(),
            Some(readerd::store::SCHEMA_VERSION.to_string().into_bytes()),
            "{b}"
        );
        s.put(Tree::Meta, "schema_version", b"99").unwrap();
        let err = Registry::with_store(s, "test").unwrap_err();
        assert!(
            matches!(err, StoreError::TooNew { found: 99, .. }),
            "{b}: {err}"
        );
    });
}

#[test]
fn records_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = pg().fresh_db();
    for location in [
        Location::Sled(dir.path().to_path_buf()),
        Location::Postgres(url),
    ] {
        {
            let r = Registry::open_location(&location).unwrap();
            r.put(Tree::Merchants, "bakery", &serde_json::json!({"n": 1}))
                .unwrap();
        }
        let r = Registry::open_location(&location).unwrap();
        assert_eq!(
            r.get::<serde_json::Value>(Tree::Merchants, "bakery")
                .unwrap(),
            Some(serde_json::json!({"n": 1})),
            "{location:?}"
        );
    }
}

#[test]
fn postgres_migrates_once_and_refuses_a_newer_schema() {
    let url = pg().fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    // Several instances starting at once: the migration runs once.
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgStore::connect(&url).map(|_| ()))
        })
        .collect();
    for s in starts {
        s.join().unwrap().unwrap();
    }
    assert_eq!(
        pg().psql(
            &db,
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"
        ),
        (1..=PgStore::latest_migration())
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    pg().psql(&db, "INSERT INTO schema_migrations (version) VALUES (9999)");
    let err = PgStore::connect(&url).unwrap_err();
    assert!(
        matches!(err, StoreError::TooNew { found: 9999, .. }),
        "{err}"
    );
}

#[test]
fn operators_can_query_payments_with_sql() {
    let url = pg().fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    let r = Registry::open_location(&Location::Postgres(url)).unwrap();
    r.put(
        Tree::Payments,
        "pay_1",
        &serde_json::json!({
            "id": "pay_1", "merchant": "bakery", "reader": "tmr_1", "status": "succeeded",
            "amount": 1250, "currency": "eur", "payment_intent": "pi_1",
            "created_at": "2026-11-29T10:00:00.000Z"
        }),
    )
    .unwrap();
    assert_eq!(
        pg().psql(
            &db,
            "SELECT key, merchant, reader, status, amount, currency, payment_intent \
             FROM payments WHERE merchant = 'bakery' AND amount > 1000"
        ),
        "pay_1|bakery|tmr_1|succeeded|1250|eur|pi_1"
    );
    // The columns follow the record.
    r.put(
        Tree::Payments,
        "pay_1",
        &serde_json::json!({"id": "pay_1", "merchant": "bakery", "status": "refunded", "amount": 1250}),
    )
    .unwrap();
    assert_eq!(
        pg().psql(&db, "SELECT status FROM payments WHERE key = 'pay_1'"),
        "refunded"
    );
}

#[test]
fn a_store_opened_inside_an_async_runtime_works_there() {
    // The engine calls the store from async code on a current-thread runtime in tests.
    let url = pg().fresh_db();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let s = PgStore::connect(&url).unwrap();
        s.put(Tree::Readers, "tmr_1", &rec(1)).unwrap();
        assert_eq!(s.get(Tree::Readers, "tmr_1").unwrap(), Some(rec(1)));
    });
}

#[test]
fn one_machine_holds_every_lease() {
    let s = SledStore::temporary().unwrap();
    let ttl = std::time::Duration::from_millis(1);
    let a = s.acquire_lease("reader:tmr_1", "a", ttl).unwrap().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(s.renew_lease(&a, ttl).unwrap());
    assert!(fenced(&s, 1, &a));
    assert_eq!(s.get(Tree::Payments, "p").unwrap(), Some(rec(1)));
}

#[test]
fn a_lease_has_one_holder_and_a_stale_holder_cannot_write() {
    use std::time::Duration;
    let s = PgStore::connect(&pg().fresh_db()).unwrap();
    let ttl = Duration::from_millis(400);
    let name = "reader:tmr_1";
    let a = s.acquire_lease(name, "a", ttl).unwrap().expect("free");
    assert_eq!(s.acquire_lease(name, "b", ttl).unwrap(), None, "held by a");
    assert!(s.renew_lease(&a, ttl).unwrap());
    // Acquiring again while holding is a renewal: same tenure, same token.
    assert_eq!(s.acquire_lease(name, "a", ttl).unwrap(), Some(a.clone()));
    assert!(fenced(&s, 1, &a));
    assert_eq!(
        s.lease_holders().unwrap(),
        vec![(name.to_string(), "a".to_string())]
    );

    // a is paused past its lease; b takes over with a greater token.
    std::thread::sleep(ttl + Duration::from_millis(150));
    assert!(s.lease_holders().unwrap().is_empty(), "expired");
    let b = s.acquire_lease(name, "b", ttl).unwrap().expect("expired");
    assert!(b.token > a.token, "{b:?} after {a:?}");
    // a wakes up: it can neither renew nor write.
    assert!(!s.renew_lease(&a, ttl).unwrap());
    assert!(!fenced(&s, 2, &a));
    assert!(
        s.get(Tree::PaymentIndex, "test/2").unwrap().is_none(),
        "a refused fenced batch writes none of its entries"
    );
    assert_eq!(s.get(Tree::Payments, "p").unwrap(), Some(rec(1)));
    assert!(fenced(&s, 3, &b));
    assert_eq!(s.get(Tree::Payments, "p").unwrap(), Some(rec(3)));

    // A release hands over at once, and the token keeps growing.
    s.release_lease(&b).unwrap();
    assert!(!fenced(&s, 4, &b));
    let a2 = s.acquire_lease(name, "a", ttl).unwrap().expect("released");
    assert!(a2.token > b.token);
    // Other leases are independent.
    let other = s.acquire_lease("reader:tmr_2", "b", ttl).unwrap().unwrap();
    assert_eq!(other.token, 1);
}

fn migrate_store(from: &str, to: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_readerd"))
        .args(["migrate-store", "--from", from, "--to", to])
        .output()
        .unwrap()
}

#[test]
fn migrate_store_copies_everything_and_refuses_a_held_store_or_a_full_target() {
    let dir = tempfile::tempdir().unwrap();
    let sled = dir.path().join("store");
    let url = pg().fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    let from = format!("sled:{}", sled.display());
    let to = format!("postgres:{url}");
    {
        let r = Registry::open(&sled).unwrap();
        r.put(
            Tree::Merchants,
            "bakery",
            &serde_json::json!({"id": "bakery"}),
        )
        .unwrap();
        r.put(
            Tree::Payments,
            "pay_1",
            &serde_json::json!({"id": "pay_1", "merchant": "bakery", "amount": 500}),
        )
        .unwrap();
        r.put(
            Tree::Refunds,
            "pay_1/rf_1",
            &serde_json::json!({"payment": "pay_1"}),
        )
        .unwrap();
        r.put(
            Tree::Idempotency,
            "pos/k1",
            &serde_json::json!({"p": "pay_1"}),
        )
        .unwrap();
        // A daemon holding the store: refused, and nothing copied.
        let out = migrate_store(&from, &to);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("in use"), "{err}");
        assert_eq!(
            pg().psql(&db, "SELECT to_regclass('payments') IS NULL"),
            "t"
        );
    }
    let out = migrate_store(&from, &to);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let source = Registry::open(&sled).unwrap();
    let target = Registry::open_location(&Location::Postgres(url.clone())).unwrap();
    for tree in Tree::ALL.into_iter().filter(|t| *t != Tree::Meta) {
        assert_eq!(
            source.store().scan(tree).unwrap(),
            target.store().scan(tree).unwrap(),
            "{}",
            tree.name()
        );
    }
    assert_eq!(
        pg().psql(&db, "SELECT merchant, amount FROM payments"),
        "bakery|500"
    );
    drop(source);
    // A second run would merge: refused.
    let out = migrate_store(&from, &to);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
    // Bad locations are usage errors.
    let out = migrate_store("/just/a/path", &to);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn an_operation_waits_for_a_database_that_comes_back() {
    let server = crate::common::pg::PgServer::private();
    let s = Arc::new(PgStore::connect(&server.fresh_db()).unwrap());
    s.put(Tree::Payments, "p", &rec(1)).unwrap();
    server.stop();
    let started = std::time::Instant::now();
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || s.put(Tree::Payments, "p", &rec(2)))
    };
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!writer.is_finished(), "the write waits for the database");
    server.restart();
    writer
        .join()
        .unwrap()
        .expect("written once the database is back");
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));
    assert_eq!(s.get(Tree::Payments, "p").unwrap(), Some(rec(2)));
    // A conditional write after the outage still compares.
    assert!(!s
        .compare_and_swap(Tree::Payments, "p", Some(&rec(1)), &rec(3))
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_postgres_keeps_its_records_across_a_restart() {
    use crate::common::TestEnv;
    use readerd::config::{DatabaseUrl, StoreBackend};
    let url = pg().fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    let mut env = TestEnv::builder()
        .configure(move |c| {
            c.store.backend = StoreBackend::Postgres;
            c.store.url = Some(DatabaseUrl(url));
            c.cluster.instance = Some("venue-a-1".into());
        })
        .start()
        .await;
    env.add_merchant("bakery", "FR", "eur").await;
    let (s, ready) = env.get("", "/readyz").await;
    assert_eq!(s, reqwest::StatusCode::OK, "{ready}");
    assert_eq!(ready["store"], "postgres", "{ready}");
    assert_eq!(ready["instance"], "venue-a-1", "{ready}");
    env.restart().await;
    let admin = env.admin_token.clone();
    let (s, m) = env.get(&admin, "/v1/merchants/bakery").await;
    assert_eq!(s, reqwest::StatusCode::OK, "{m}");
    let merchants = pg().psql(&db, "SELECT key FROM merchants");
    assert_eq!(merchants, "bakery");
    env.stop().await;
}

#[test]
fn a_setting_that_cannot_be_met_fails_at_once_instead_of_waiting() {
    // TLS asked of a server without it is an error, not an outage.
    let url = format!("{}?sslmode=require", pg().fresh_db());
    let started = std::time::Instant::now();
    let err = PgStore::connect(&url).unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{err}"
    );
    assert!(err.to_string().to_lowercase().contains("tls"), "{err}");
}

#[test]
fn a_batch_is_all_or_nothing_across_trees_and_a_range_pages_both_ways() {
    on_both(|s| {
        let b = s.backend();
        s.put(Tree::Refunds, "old", &rec(0)).unwrap();
        let mut batch = readerd::store::Batch::default();
        batch.put(Tree::Payments, "p1", rec(1));
        for k in ["a/1", "a/2", "a/3", "a/4", "b/1", "a"] {
            batch.put(Tree::PaymentIndex, k, Vec::new());
        }
        batch.remove(Tree::Refunds, "old");
        batch.put(Tree::Meta, "k", rec(1));
        batch.put(Tree::Meta, "k", rec(2));
        s.apply(batch).unwrap();
        assert_eq!(s.get(Tree::Payments, "p1").unwrap(), Some(rec(1)), "{b}");
        assert_eq!(s.get(Tree::Refunds, "old").unwrap(), None, "{b}");
        assert_eq!(
            s.get(Tree::Meta, "k").unwrap(),
            Some(rec(2)),
            "{b}: later op wins"
        );
        s.apply(readerd::store::Batch::default()).unwrap();
        let scan = |after: Option<&str>, limit, rev| -> Vec<String> {
            s.scan_range(Tree::PaymentIndex, "a/", after, limit, rev)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(scan(None, 10, false), ["a/1", "a/2", "a/3", "a/4"], "{b}");
        assert_eq!(scan(None, 2, true), ["a/4", "a/3"], "{b}");
        assert_eq!(scan(Some("a/2"), 10, false), ["a/3", "a/4"], "{b}");
        assert_eq!(scan(Some("a/3"), 10, true), ["a/2", "a/1"], "{b}");
        assert!(scan(Some("a/1"), 10, true).is_empty(), "{b}");
        assert_eq!(scan(Some("z"), 1, true), ["a/4"], "{b}");
        let all: Vec<String> = s
            .scan_range(Tree::PaymentIndex, "", None, 100, false)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(all, ["a", "a/1", "a/2", "a/3", "a/4", "b/1"], "{b}");
    });
}

/// Waits up to `within` for the next notice about a job (skipping `Missed`).
fn next_job(
    rx: &mut tokio::sync::broadcast::Receiver<JobNotice>,
    within: std::time::Duration,
) -> Option<(String, String)> {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        match rx.try_recv() {
            Ok(JobNotice::Job { reader, job }) => return Some((reader, job)),
            Ok(JobNotice::Missed) => {}
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    None
}

/// Sends notices until one arrives (a listener may still be connecting); returns it.
fn notify_until_heard(
    from: &dyn Store,
    rx: &mut tokio::sync::broadcast::Receiver<JobNotice>,
    reader: &str,
    job: &str,
) -> (String, String) {
    for _ in 0..50 {
        from.notify_job(reader, job).unwrap();
        if let Some(got) = next_job(rx, std::time::Duration::from_millis(200)) {
            return got;
        }
    }
    panic!("no notice of {job} on {reader} heard");
}

#[test]
fn a_job_notice_reaches_every_listener_on_the_store() {
    on_both(|s| {
        let b = s.backend();
        let mut rx = s.job_notifications();
        let got = notify_until_heard(&*s, &mut rx, "tmr_1", "pay_1");
        assert_eq!(got, ("tmr_1".into(), "pay_1".into()), "{b}");
        // Notices come in order, each once.
        s.notify_job("tmr_2", "inp_2").unwrap();
        s.notify_job("tmr_1", "pay_3").unwrap();
        let within = std::time::Duration::from_secs(5);
        assert_eq!(
            next_job(&mut rx, within),
            Some(("tmr_2".into(), "inp_2".into())),
            "{b}"
        );
        assert_eq!(
            next_job(&mut rx, within),
            Some(("tmr_1".into(), "pay_3".into())),
            "{b}"
        );
    });
}

#[test]
fn job_notices_cross_instances_and_survive_a_lost_listening_connection() {
    let url = pg().fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    let owner = PgStore::connect(&url).unwrap();
    let other = PgStore::connect(&url).unwrap();
    let mut rx = owner.job_notifications();
    let got = notify_until_heard(&other, &mut rx, "tmr_a", "pay_a");
    assert_eq!(got, ("tmr_a".into(), "pay_a".into()));
    // The listening connection is cut (a network partition, a database restart): the
    // listener reconnects, says that notices may have been missed, and hears again.
    let killed = pg().psql(
        &db,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = '{db}' AND query = 'LISTEN {}'",
            readerd::store::JOBS_CHANNEL
        ),
    );
    assert_eq!(killed, "1", "one listening connection");
    let start = std::time::Instant::now();
    loop {
        match rx.try_recv() {
            Ok(JobNotice::Missed) => break,
            Ok(other) => panic!("{other:?} before the reconnect"),
            Err(_) => {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(10),
                    "the listener never came back"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    let got = notify_until_heard(&other, &mut rx, "tmr_b", "inp_b");
    assert_eq!(got, ("tmr_b".into(), "inp_b".into()));
}

#[test]
fn a_job_notice_payload_reads_back_and_garbage_means_missed() {
    assert_eq!(
        JobNotice::from_payload(&JobNotice::payload("tmr_1", "pay_1")),
        JobNotice::Job {
            reader: "tmr_1".into(),
            job: "pay_1".into()
        }
    );
    for bad in ["", "tmr_1", " pay_1", "tmr_1 "] {
        assert_eq!(JobNotice::from_payload(bad), JobNotice::Missed, "{bad:?}");
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it (PEM: CA, certificate, key).
fn tls_files(name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let ca = p.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn tls_to_postgres_is_encrypted_and_verified_against_the_urls_root_certificate() {
    let server = crate::common::pg::PgServer::private();
    let (ca, cert, key) = tls_files("readerd test database CA");
    server.enable_tls(&cert, &key);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let (other_ca, _, _) = tls_files("someone else's CA");
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, other_ca).unwrap();
    let url = server.fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();

    for mode in ["require", "verify-full"] {
        let s = PgStore::connect(&format!(
            "{url}?sslmode={mode}&sslrootcert={}",
            ca_file.display()
        ))
        .unwrap();
        s.put(Tree::Merchants, "m", &rec(1)).unwrap();
        assert_eq!(s.get(Tree::Merchants, "m").unwrap(), Some(rec(1)), "{mode}");
        let encrypted = server.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                 WHERE ssl AND datname = '{db}'"
            ),
        );
        assert_ne!(encrypted, "0", "{mode}: the store's sessions are encrypted");
    }
    // A server whose certificate the root does not vouch for is refused at once (not
    // waited for as an outage), and says why.
    let started = std::time::Instant::now();
    let err = PgStore::connect(&format!(
        "{url}?sslmode=require&sslrootcert={}",
        other_file.display()
    ))
    .unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{err}"
    );
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // A root file that cannot be read is a bad URL.
    assert!(readerd::store::check_url(&format!("{url}?sslrootcert=/nonexistent.pem")).is_err());
    // No sslmode (prefer), or disable: plain text, as before (a server's self-signed
    // certificate does not break a URL that worked).
    for url in [url.clone(), format!("{url}?sslmode=disable")] {
        let plain = PgStore::connect(&url).unwrap();
        plain.put(Tree::Merchants, "m", &rec(2)).unwrap();
    }
}
