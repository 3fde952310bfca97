//! The README's examples, run exactly as written against a live `tracklayer serve` on the
//! embedded default, so they cannot rot: every `sh` block after the marker comment, in order,
//! in one directory, with `tracklayer` on the PATH and HOME pointing at that directory.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const MARKER: &str = "<!-- tests/readme.rs runs every sh block below";

/// The `sh` blocks after the marker, with the line each starts on.
fn runnable_blocks(readme: &str) -> Vec<(usize, String)> {
    let start = readme
        .find(MARKER)
        .expect("README.md has the marker that says which blocks tests/readme.rs runs");
    let line_of = |at: usize| readme[..at].matches('\n').count() + 1;
    let mut blocks = Vec::new();
    let mut rest = &readme[start..];
    let mut offset = start;
    while let Some(open) = rest.find("\n```") {
        let info_start = open + 4;
        let info_end = info_start + rest[info_start..].find('\n').unwrap_or(0);
        let info = rest[info_start..info_end].trim();
        let body_start = info_end + 1;
        let Some(close) = rest[body_start..].find("\n```") else {
            break;
        };
        let body = &rest[body_start..body_start + close + 1];
        if info == "sh" {
            blocks.push((line_of(offset + body_start), body.to_string()));
        }
        let after = body_start + close + 4;
        offset += after;
        rest = &rest[after..];
    }
    blocks
}

#[test]
fn the_readme_examples_run_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let blocks = runnable_blocks(&readme);
    assert!(blocks.len() >= 4, "found {} runnable blocks", blocks.len());
    // Relative times only: a date written into an example goes stale (Meta refuses events
    // more than 7 days old).
    for (line, block) in &blocks {
        assert!(
            !block.contains("\"timestamp\""),
            "README.md:{line}: an example with a fixed timestamp"
        );
    }
    for tool in ["curl", "openssl", "jq"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "the README's examples use {tool}: `eval \"$(tests/prepare.sh)\"` installs it (as root with apt)"
        );
    }
    // The examples talk to 127.0.0.1:8787, the embedded default's address, as a reader's do.
    if let Err(e) = std::net::TcpListener::bind("127.0.0.1:8787") {
        panic!("the README's examples need 127.0.0.1:8787 free: {e}");
    }

    let dir = tempfile::tempdir().unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_tracklayer"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut server = Command::new(env!("CARGO_BIN_EXE_tracklayer"))
        .arg("serve")
        .current_dir(dir.path())
        .env("TRACKLAYER_LOG", "warn")
        .env_remove("TRACKLAYER_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut banner = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let last = line.starts_with("  credentials");
        banner.push(line);
        if last {
            break;
        }
    }
    assert!(
        banner.iter().any(|l| l.starts_with("  credentials")),
        "serve did not start: {banner:?}"
    );
    std::thread::spawn(move || for _ in lines {});

    for (line, block) in &blocks {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", block])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("HOME", dir.path())
            .env("TRACKLAYER_LOG", "warn")
            .env_remove("TRACKLAYER_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README.md:{line} failed ({:?}):\n{block}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The sample order happened today, as the reader's would: within Meta's 7 days.
    let out = Command::new(env!("CARGO_BIN_EXE_tracklayer"))
        .args(["inspect", "--json", "seg_test_481"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let trace: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect --json");
    assert_eq!(trace["status"], "mapped", "{trace}");
    let event_time = trace["canonical"]["event_time"]
        .as_str()
        .unwrap_or_default();
    let at = chrono::DateTime::parse_from_rfc3339(event_time)
        .unwrap_or_else(|e| panic!("event_time {event_time:?}: {e}"));
    let age = chrono::Utc::now().signed_duration_since(at);
    assert!(age.num_minutes().abs() < 10, "event time {event_time}");
    // The man pages and the completion script landed where the README put them.
    assert!(dir
        .path()
        .join(".local/share/man/man1/tracklayer-send.1")
        .exists());
    assert!(dir
        .path()
        .join(".local/share/bash-completion/completions/tracklayer")
        .exists());

    server.kill().unwrap();
    server.wait().unwrap();
}
