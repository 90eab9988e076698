//! The fleet commands of the command-line client, run as the real binary against an
//! in-process daemon.

use crate::common::TestEnv;
use readerd::stripe::wire::CapabilityStatus;
use serde_json::Value;
use tokio::process::Command;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn readerd(env: &TestEnv, token: &str, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_readerd"))
        .args(args)
        .env("READERD_API", &env.api_url)
        .env("READERD_TOKEN", token)
        .output()
        .await
        .expect("runs readerd");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(r: &Run) -> &str {
    assert_eq!(r.code, 0, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    &r.stdout
}

#[tokio::test]
async fn the_fleet_commands_drive_the_api() {
    let env = TestEnv::start().await;
    let admin = env.admin_token.clone();
    let acct = env
        .sim
        .create_account("FR", "eur", CapabilityStatus::Active);

    let out = readerd(
        &env,
        &admin,
        &[
            "merchants",
            "add",
            "bakery",
            &acct,
            "--display-name",
            "La Boulangerie",
        ],
    )
    .await;
    let table = ok(&out);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("bakery") && table.contains(&acct) && table.contains("active"),
        "{table}"
    );

    let other = env
        .sim
        .create_account("FR", "eur", CapabilityStatus::Inactive);
    let out = readerd(
        &env,
        &admin,
        &[
            "merchants",
            "add",
            "--id",
            "florist",
            "--account",
            &other,
            "--json",
        ],
    )
    .await;
    let m: Value = serde_json::from_str(ok(&out)).unwrap();
    assert_eq!(m["can_charge"], false);
    let out = readerd(&env, &admin, &["merchants", "list", "--json"]).await;
    let list: Value = serde_json::from_str(ok(&out)).unwrap();
    assert_eq!(list[0]["id"], "bakery");
    assert_eq!(list[0]["can_charge"], true);
    let out = readerd(&env, &admin, &["merchants", "check", "bakery"]).await;
    assert!(ok(&out).contains("yes"));

    let out = readerd(
        &env,
        &admin,
        &[
            "locations",
            "create",
            "--display-name",
            "Shop",
            "--country",
            "FR",
            "--city",
            "Paris",
            "--merchant",
            "bakery",
            "--json",
        ],
    )
    .await;
    let loc: Value = serde_json::from_str(ok(&out)).unwrap();
    let loc_id = loc["id"].as_str().unwrap().to_string();
    let out = readerd(&env, &admin, &["locations", "list"]).await;
    assert!(ok(&out).contains(&loc_id));

    let out = readerd(
        &env,
        &admin,
        &[
            "readers",
            "register",
            "--code",
            "simulated-wpe",
            "--label",
            "front",
            "--location",
            &loc_id,
            "--json",
        ],
    )
    .await;
    let reader: Value = serde_json::from_str(ok(&out)).unwrap();
    let reader_id = reader["id"].as_str().unwrap().to_string();
    let out = readerd(&env, &admin, &["readers", "list"]).await;
    let table = ok(&out);
    assert!(
        table.contains(&reader_id) && table.contains("online") && table.contains("(all)"),
        "{table}"
    );
    let out = readerd(
        &env,
        &admin,
        &["readers", "allow", "front", "--merchant", "bakery"],
    )
    .await;
    assert!(ok(&out).contains("bakery"));
    let out = readerd(&env, &admin, &["readers", "show", &reader_id, "--json"]).await;
    let shown: Value = serde_json::from_str(ok(&out)).unwrap();
    assert_eq!(shown["merchants"], serde_json::json!(["bakery"]));
    let out = readerd(&env, &admin, &["readers", "sync"]).await;
    assert!(ok(&out).contains("readers"));

    // A merchant-owned location and reader, on the bakery's account.
    let out = readerd(
        &env,
        &admin,
        &[
            "locations",
            "create",
            "--display-name",
            "Back room",
            "--country",
            "FR",
            "--owner",
            "bakery",
            "--json",
        ],
    )
    .await;
    let own_loc: Value = serde_json::from_str(ok(&out)).unwrap();
    assert_eq!(own_loc["owner"], "bakery");
    let out = readerd(
        &env,
        &admin,
        &[
            "readers",
            "register",
            "--code",
            "simulated-wpe",
            "--location",
            own_loc["id"].as_str().unwrap(),
            "--owner",
            "bakery",
            "--json",
        ],
    )
    .await;
    let own: Value = serde_json::from_str(ok(&out)).unwrap();
    assert_eq!(own["owner"], "bakery");

    // API errors are shown plainly, with a non-zero exit.
    let out = readerd(&env, env.pos("bakery"), &["merchants", "list"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("403 forbidden"), "{}", out.stderr);
    let out = readerd(&env, "wrong", &["readers", "list"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("401 unauthorized"), "{}", out.stderr);
    let out = readerd(&env, &admin, &["readers", "show", "tmr_nope"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("404 not_found"), "{}", out.stderr);
    let out = readerd(
        &env,
        &admin,
        &[
            "readers",
            "register",
            "--code",
            "bad-code",
            "--location",
            &loc_id,
        ],
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("bad-code"), "{}", out.stderr);

    // Nobody listening.
    let out = Command::new(env!("CARGO_BIN_EXE_readerd"))
        .args([
            "readers",
            "list",
            "--api",
            "http://127.0.0.1:9",
            "--token",
            "x",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
    env.stop().await;
}

/// Mistakes a newcomer makes with the client's options get a message that names them,
/// not a transport library's "builder error".
#[tokio::test]
async fn client_option_mistakes_are_named() {
    let env = TestEnv::start().await;
    let admin = env.admin_token.clone();
    let run = |args: &'static [&'static str], api: String, token: Option<String>| async move {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_readerd"));
        cmd.args(args)
            .env("READERD_API", api)
            .env_remove("READERD_TOKEN");
        if let Some(t) = token {
            cmd.env("READERD_TOKEN", t);
        }
        let out = cmd.output().await.unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, err) = run(
        &["readers", "list"],
        "127.0.0.1:7700".into(),
        Some(admin.clone()),
    )
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("is not a URL") && err.contains("http://"),
        "{err}"
    );

    let (code, err) = run(
        &["readers", "list"],
        env.api_url.clone(),
        Some(format!("{admin}\nx")),
    )
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("token"), "{err}");

    // A pasted token with a trailing line break still works.
    let (code, err) = run(
        &["readers", "list"],
        env.api_url.clone(),
        Some(format!("{admin}\n")),
    )
    .await;
    assert_eq!(code, Some(0), "{err}");

    let (code, err) = run(&["readers", "list"], env.api_url.clone(), None).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("401") && err.contains("READERD_TOKEN"),
        "{err}"
    );

    let (code, err) = run(
        &["readers", "list"],
        "http://127.0.0.1:9".into(),
        Some(admin),
    )
    .await;
    assert_eq!(code, Some(69), "{err}");
    assert!(
        err.contains("refused") && err.contains("readerd run"),
        "{err}"
    );
    env.stop().await;
}

#[tokio::test]
async fn locations_tipping_sets_and_removes_a_locations_tip_suggestions() {
    let env = TestEnv::start().await;
    let admin = env.admin_token.clone();
    let bar = env.add_location("Bar", "US", None).await;
    let args = [
        "locations",
        "tipping",
        &bar,
        "--percentages",
        "10,15,20",
        "--fixed-amounts",
        "100,200",
        "--smart-tip-threshold",
        "1000",
    ];
    let out = readerd(&env, &admin, &args).await;
    let table = ok(&out);
    assert!(table.starts_with("LOCATION"), "{table}");
    assert!(
        table.contains("usd") && table.contains("10,15,20") && table.contains("100,200"),
        "{table}"
    );
    let (_, l) = env.get(&admin, &format!("/v1/locations/{bar}")).await;
    assert_eq!(
        l["tipping"],
        serde_json::json!({"usd": {"percentages": [10, 15, 20], "fixed_amounts": [100, 200], "smart_tip_threshold": 1000}})
    );
    assert!(
        table.contains(l["configuration"].as_str().unwrap()),
        "{table}"
    );

    // Stripe's limit, named by the daemon; nothing changes.
    let out = readerd(
        &env,
        &admin,
        &["locations", "tipping", &bar, "--percentages", "5,10,15,20"],
    )
    .await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("percentages"), "{}", out.stderr);

    let out = readerd(
        &env,
        &admin,
        &["locations", "tipping", &bar, "--remove", "--json"],
    )
    .await;
    let v: Value = serde_json::from_str(ok(&out)).unwrap();
    assert_eq!(v["tipping"], Value::Null);
    assert_eq!(v["configuration"], l["configuration"]);
    env.stop().await;
}
