//! `readerd check-config` and `readerd run` on bad configs, through the real binary: exit 0
//! for a usable config, 64 with the offending key named otherwise.

use std::path::Path;
use std::process::{Command, Output};

const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn readerd(args: &[&str], env_key: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_readerd"));
    cmd.args(args).env_remove("READERD_STRIPE_SECRET_KEY");
    if let Some(k) = env_key {
        cmd.env("READERD_STRIPE_SECRET_KEY", k);
    }
    cmd.output().expect("runs readerd")
}

fn check(dir: &Path, toml: &str, env_key: Option<&str>) -> (i32, String) {
    let path = dir.join("readerd.toml");
    std::fs::write(&path, toml).unwrap();
    let out = readerd(
        &["check-config", "--config", path.to_str().unwrap()],
        env_key,
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_a_usable_config_and_its_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk_test_123\n").unwrap();
    let toml = format!(
        "[stripe]\napi_base = \"http://127.0.0.1:12111\"\nsecret_key_file = {:?}\n[store]\npath = {:?}\n[[api.clients]]\nname = \"desk\"\ntoken_sha256 = \"{HASH}\"\nrole = \"pos\"\nmerchants = [\"bakery\"]\n",
        key.display().to_string(),
        dir.path().join("store").display().to_string()
    );
    let (code, err) = check(dir.path(), &toml, None);
    assert_eq!(code, 0, "{err}");
    // The environment variable alone is enough too.
    let (code, err) = check(dir.path(), "", Some("sk_test_env"));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn check_config_refuses_with_64_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "[api]\nlisten = \"127.0.0.1:7700\"\nbacklog = 5\n",
            "backlog",
        ),
        ("[api]\nlisten = \"localhost\"\n", "listen"),
        ("[sync]\ninterval = \"often\"\n", "interval"),
        ("[stripe]\nsecret_key = \"sk_test_inline\"\n", "secret_key"),
        (
            "[[api.clients]]\nname = \"x\"\ntoken_sha256 = \"abc\"\nrole = \"admin\"\n",
            "api.clients[0].token_sha256",
        ),
        (
            "[stripe]\nsecret_key_file = \"/nonexistent/readerd-key\"\n",
            "stripe.secret_key_file",
        ),
        (
            "[stripe]\nwebhook_secret_file = \"/nonexistent/whsec\"\n",
            "stripe.webhook_secret_file",
        ),
        ("this is not toml", "TOML"),
        ("[store]\nbackend = \"mysql\"\n", "backend"),
        ("[store]\nbackend = \"postgres\"\n", "store.url"),
        (
            "[store]\nbackend = \"postgres\"\nurl = \"postgres://a@b/c\"\nurl_file = \"/x\"\n",
            "store.url",
        ),
        (
            "[store]\nbackend = \"postgres\"\nurl = \"postgres://a@b:notaport/c\"\n",
            "store.url",
        ),
        (
            "[store]\nbackend = \"postgres\"\nurl_file = \"/nonexistent/readerd-db-url\"\n",
            "store.url_file",
        ),
        ("[store]\nurl = \"postgres://a@b/c\"\n", "store.backend"),
        ("[cluster]\nlease_ttl = \"1s\"\n", "cluster.lease_ttl"),
        ("[cluster]\ninstance = \"two words\"\n", "cluster.instance"),
        ("[cluster]\nleader = true\n", "leader"),
    ];
    for (toml, needle) in cases {
        let (code, err) = check(dir.path(), toml, Some("sk_test_env"));
        assert_eq!(code, 64, "{toml:?}: {err}");
        assert!(err.contains(needle), "{toml:?}: {err:?} lacks {needle:?}");
    }
    // No secret at all.
    let (code, err) = check(dir.path(), "", None);
    assert_eq!(code, 64);
    assert!(err.contains("READERD_STRIPE_SECRET_KEY"), "{err}");
    // A missing config file.
    let out = readerd(
        &["check-config", "--config", "/nonexistent/readerd.toml"],
        Some("sk_test_env"),
    );
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn run_refuses_a_bad_config_before_binding_anything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readerd.toml");
    let store = dir.path().join("store");
    std::fs::write(
        &path,
        format!(
            "[store]\npath = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 1\n",
            store.display().to_string()
        ),
    )
    .unwrap();
    let out = readerd(
        &["run", "--config", path.to_str().unwrap()],
        Some("sk_test_env"),
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("api.max_body_bytes"));
    assert!(
        !store.exists(),
        "the store must not be created for a refused config"
    );
}
