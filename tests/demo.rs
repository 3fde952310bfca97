//! `tracklayer demo --headless --duration 10` on a fresh folder: no config, no credentials, no
//! network beyond loopback; every category the demo is meant to show happens.

use std::process::Command;

#[test]
fn headless_demo_shows_every_kind_of_event() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tracklayer"))
        .current_dir(dir.path())
        .args(["demo", "--headless", "--duration", "10"])
        .env("TRACKLAYER_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let count = |label: &str| -> i64 {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.trim_start()[label.len()..].split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no `{label}` in the summary:\n{stdout}"))
    };
    for label in [
        "accepted",
        "mapped",
        "unmapped",
        "consent-blocked",
        "delivered",
        "retried",
        "dead-lettered",
        "requests rejected",
    ] {
        assert!(count(label) > 0, "{label} is 0:\n{stdout}");
    }
    assert!(count("duplicates") + count("collisions") > 0, "{stdout}");
    // The demo cleans up after itself: nothing is left in the working folder.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
