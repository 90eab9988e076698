//! `readerd bench` as a user runs it: the emulator in a process of its own, and the memory
//! of the daemon and of the emulator reported apart.

use std::process::Command;

#[test]
fn a_bench_with_more_readers_registered_than_busy_reports_both_memories() {
    let out = Command::new(env!("CARGO_BIN_EXE_readerd"))
        .args([
            "bench",
            "--readers",
            "3",
            "--registered",
            "7",
            "--per-location",
            "2",
            "--payments",
            "6",
            "--merchants",
            "2",
            "--webhooks",
        ])
        .output()
        .expect("readerd runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("6 payments on 3 readers of 7 registered at 4 locations: 6 succeeded"),
        "{stdout}"
    );
    assert!(
        stdout.contains("POST /v1/terminal/readers/{id}/process_payment_intent"),
        "{stdout}"
    );
    for line in [
        "daemon memory (this process",
        "emulator memory (its own process",
    ] {
        let l = stdout
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("no `{line}` line: {stdout}"));
        assert!(l.contains("peak VmHWM") && l.contains(" MiB"), "{l}");
        assert!(!l.contains(" -"), "a memory figure is missing: {l}");
    }
    // Fewer than 20,000 payments: no long-run line.
    assert!(!stdout.contains("after the first 10000"), "{stdout}");
}

#[test]
fn fewer_readers_registered_than_busy_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_readerd"))
        .args([
            "bench",
            "--readers",
            "3",
            "--registered",
            "2",
            "--payments",
            "1",
        ])
        .output()
        .expect("readerd runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--registered 2 is fewer than the 3 --readers"),
        "{stderr}"
    );
}
