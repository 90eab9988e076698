//! A history that grows: the paged payment list over HTTP on a filled store (limits,
//! cursors, filters, time bounds, the `Link` header, error envelopes), the index after a
//! kill -9 of the real binary in the middle of writes, and archiving killed mid-run.

use crate::common::free_port;
use readerd::config::{ClientEntry, Config, Role, Secrets};
use readerd::daemon::Daemon;
use readerd::payments::engine::{ArchivedPayment, PENDING_KEY};
use readerd::payments::index;
use readerd::store::{Registry, Tree};
use readerd::stripe::SecretKey;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const ADMIN: &str = "history-admin";
const POS: &str = "history-pos-m1";

/// GET with the admin token (or `token`): status, `Link` header, body.
async fn get(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> (StatusCode, Option<String>, Value) {
    let r = http.get(url).bearer_auth(token).send().await.unwrap();
    let s = r.status();
    let link = r
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_string());
    (s, link, r.json().await.unwrap())
}

/// Follows `Link: rel="next"` from `path`; every id in order, and the number of pages.
async fn follow(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
) -> (Vec<Value>, usize) {
    let mut out = Vec::new();
    let mut pages = 0;
    let mut next = Some(path.to_string());
    while let Some(p) = next.take() {
        let (s, link, v) = get(http, &format!("{base}{p}"), token).await;
        assert_eq!(s, StatusCode::OK, "{p}: {v}");
        pages += 1;
        let items = v.as_array().unwrap().clone();
        if let Some(l) = link {
            let target = l
                .strip_prefix('<')
                .and_then(|r| r.split_once(">; rel=\"next\""))
                .map(|(t, _)| t.to_string())
                .unwrap_or_else(|| panic!("Link header {l:?}"));
            let last = items.last().unwrap()["id"].as_str().unwrap().to_string();
            assert!(
                target.ends_with(&format!("starting_after={last}")),
                "{target}"
            );
            next = Some(target);
        }
        out.extend(items);
    }
    (out, pages)
}

fn ids(v: &[Value]) -> Vec<String> {
    v.iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_list_pages_through_a_filled_store_with_filters_and_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // 250 final payments on m0/m1 over 10 days; one in 20 is canceled.
    readerd::cli::history::fill_store(&store, 250, 2, 3, 10).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = Config::default();
    config.stripe.api_base = format!("http://127.0.0.1:{}", free_port());
    config.store.path = store;
    config.api.listen = listener.local_addr().unwrap();
    config.sync.interval = Duration::from_secs(3600).into();
    for (name, token, role, merchants) in [
        ("admin", ADMIN, Role::Admin, vec![]),
        ("desk", POS, Role::Pos, vec!["m1".to_string()]),
    ] {
        config.api.clients.push(ClientEntry {
            name: name.into(),
            token_sha256: readerd::api::auth::token_sha256(token),
            role,
            merchants,
        });
    }
    config.validate().unwrap();
    let secrets = Secrets {
        stripe_key: SecretKey::new("sk_test_history"),
        webhook_secret: None,
    };
    let daemon = Daemon::new(config, secrets).start(listener).await.unwrap();
    let base = format!("http://{}", daemon.addr);
    let http = reqwest::Client::new();

    // The default page is 100, newest first; the Link header leads to the last page.
    let (all, pages) = follow(&http, &base, "/v1/payments", ADMIN).await;
    assert_eq!((all.len(), pages), (250, 3));
    let all_ids = ids(&all);
    assert_eq!(all_ids.iter().collect::<BTreeSet<_>>().len(), 250);
    let created: Vec<&str> = all
        .iter()
        .map(|p| p["created_at"].as_str().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first");
    // The exact last page has no Link; a page that holds everything neither.
    let (s, link, v) = get(&http, &format!("{base}/v1/payments?limit=1000"), ADMIN).await;
    assert_eq!(
        (s, link, v.as_array().unwrap().len()),
        (StatusCode::OK, None, 250)
    );
    let (by50, pages) = follow(&http, &base, "/v1/payments?limit=50", ADMIN).await;
    assert_eq!((ids(&by50), pages), (all_ids.clone(), 5));
    // Past the oldest: an empty page.
    let oldest = all_ids.last().unwrap();
    let (s, link, v) = get(
        &http,
        &format!("{base}/v1/payments?starting_after={oldest}"),
        ADMIN,
    )
    .await;
    assert_eq!((s, link, v), (StatusCode::OK, None, Value::Array(vec![])));

    // Filters keep paging, and the Link keeps them.
    let (m1, _) = follow(&http, &base, "/v1/payments?merchant=m1&limit=40", ADMIN).await;
    assert_eq!(m1.len(), 125);
    assert!(m1.iter().all(|p| p["merchant"] == "m1"));
    let (mine, _) = follow(&http, &base, "/v1/payments?limit=30", POS).await;
    assert_eq!(
        ids(&mine),
        ids(&m1),
        "a pos client pages through its merchants only"
    );
    let (s, _, v) = get(&http, &format!("{base}/v1/payments?merchant=m0"), POS).await;
    assert_eq!((s, v), (StatusCode::OK, Value::Array(vec![])));
    let (canceled, _) = follow(&http, &base, "/v1/payments?status=canceled&limit=5", ADMIN).await;
    assert_eq!(canceled.len(), 13);
    assert!(canceled.iter().all(|p| p["status"] == "canceled"));
    let (r1, _) = follow(
        &http,
        &base,
        "/v1/payments?reader=tmr_fill1&status=succeeded",
        ADMIN,
    )
    .await;
    assert!(r1
        .iter()
        .all(|p| p["reader"] == "tmr_fill1" && p["status"] == "succeeded"));
    assert_eq!(
        r1.len(),
        all.iter()
            .filter(|p| p["reader"] == "tmr_fill1" && p["status"] == "succeeded")
            .count()
    );
    // Time bounds: created_gte included, created_lt excluded.
    let (gte, lt) = (created[200], created[100]);
    let (window, _) = follow(
        &http,
        &base,
        &format!("/v1/payments?created_gte={gte}&created_lt={lt}&limit=7"),
        ADMIN,
    )
    .await;
    assert_eq!(ids(&window), all_ids[101..=200].to_vec());

    // Every refusal is the JSON envelope.
    for q in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "created_gte=yesterday",
        "starting_after=pay_nothing",
        "status=paid",
        "colour=blue",
    ] {
        let (s, _, v) = get(&http, &format!("{base}/v1/payments?{q}"), ADMIN).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert!(v["error"]["message"].is_string(), "{q}: {v}");
    }
    daemon.stop().await;
}

fn readerd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_readerd"))
}

/// Ids of the live payments.
fn live(registry: &Registry) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    registry
        .for_each::<Value>(Tree::Payments, "", 1000, |k, _| {
            out.insert(k);
            Ok(())
        })
        .unwrap();
    out
}

/// Every payment id in the archive files, with how many lines name it; a file named by a
/// pending chunk is read only up to the length marked before the chunk (what the next run
/// keeps of it).
fn archived(registry: &Registry, dir: &Path) -> BTreeMap<String, usize> {
    let pending: Option<(PathBuf, u64)> = registry
        .store()
        .get(Tree::Meta, PENDING_KEY)
        .unwrap()
        .map(|b| {
            let v: Value = serde_json::from_slice(&b).unwrap();
            (
                PathBuf::from(v["file"].as_str().unwrap()),
                v["len"].as_u64().unwrap(),
            )
        });
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let path = e.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some((f, len)) = &pending {
            if f == &path {
                bytes.truncate(*len as usize);
            }
        }
        let text = String::from_utf8(bytes).unwrap();
        for line in text.lines() {
            let a: ArchivedPayment = serde_json::from_str(line).unwrap();
            *out.entry(a.payment.id).or_insert(0) += 1;
        }
    }
    out
}

/// Every payment is live or in exactly one archive line, never both, and none is lost.
fn check_archive(store: &Path, archive: &Path, total: usize) -> (usize, usize) {
    let registry = Registry::open(store).unwrap();
    let live = live(&registry);
    let arch = archived(&registry, archive);
    assert!(arch.values().all(|n| *n == 1), "a payment archived twice");
    assert!(
        live.iter().all(|id| !arch.contains_key(id)),
        "live and archived"
    );
    assert_eq!(live.len() + arch.len(), total, "a payment lost");
    assert_eq!(index::verify(&registry).unwrap(), Vec::<String>::new());
    (live.len(), arch.len())
}

#[tokio::test]
async fn archiving_killed_mid_run_neither_loses_nor_duplicates_a_payment() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let archive = dir.path().join("archive");
    const N: usize = 3000;
    let out = readerd()
        .args(["bench", "--fill-store"])
        .arg(&store)
        .args(["--payments", &N.to_string(), "--days", "20"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let config = dir.path().join("readerd.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\nkeep_final = \"1d\"\narchive_dir = \"{}\"\n",
            store.display(),
            archive.display()
        ),
    )
    .unwrap();
    let archive_cmd = |failpoint: Option<&str>| {
        let mut c = readerd();
        c.args(["archive", "--config"])
            .arg(&config)
            .args(["now", "--before", "2100-01-01"])
            .env_remove("READERD_FAILPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(f) = failpoint {
            c.env("READERD_FAILPOINT", f);
        }
        c
    };
    // Killed at each step of a chunk: before any line, half-way through the lines, and
    // after the file is durable but before the store forgets the payments.
    for step in [
        "archive_marked",
        "archive_half_written",
        "archive_file_synced",
    ] {
        let status = archive_cmd(Some(step)).status().unwrap();
        assert!(!status.success(), "{step}: the run did not stop");
        check_archive(&store, &archive, N);
    }
    // SIGKILL at arbitrary moments, then a run to the end.
    for wait_ms in [150, 400] {
        let mut child = archive_cmd(None).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        let _ = child.kill();
        let _ = child.wait();
        check_archive(&store, &archive, N);
    }
    assert!(archive_cmd(None).status().unwrap().success());
    assert_eq!(check_archive(&store, &archive, N), (0, N));
    // One day's file goes back into the live store, and pages again.
    let day = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let status = readerd()
        .args(["archive", "--config"])
        .arg(&config)
        .arg("restore")
        .arg(&day)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let registry = Registry::open(&store).unwrap();
    let lines = std::fs::read_to_string(&day).unwrap().lines().count();
    assert!(lines > 0);
    assert_eq!(live(&registry).len(), lines);
    assert_eq!(index::verify(&registry).unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn a_fill_killed_mid_write_leaves_every_record_in_exactly_its_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut child = readerd()
        .args(["bench", "--fill-store"])
        .arg(&store)
        .args(["--payments", "1000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed in the middle of the batches, far from their end: once the fill says it has
    // written its first 10,000, and after sled's background flush (every 500 ms) has had
    // time to put some of them on disk. A fixed sleep from the start was not enough on a
    // loaded machine, where the fill had not written anything yet.
    let stderr = child.stderr.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr).lines().next()
    })
    .await
    .unwrap();
    assert!(
        first
            .as_ref()
            .is_some_and(|l| l.as_ref().is_ok_and(|l| l.contains("payments written"))),
        "the fill said {first:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let registry = Registry::open(&store).unwrap();
    assert!(registry.is_test_store().unwrap());
    let n = live(&registry).len();
    assert!(
        n > 0 && n < 1_000_000,
        "{n} payments written before the kill"
    );
    assert_eq!(index::verify(&registry).unwrap(), Vec::<String>::new());
}
