//! The command line as a user runs it: init, check, the embedded default, send and inspect.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

fn tracklayer(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracklayer"))
        .current_dir(dir)
        .args(args)
        .env("TRACKLAYER_LOG", "warn")
        .output()
        .expect("run tracklayer")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Start `tracklayer serve` in `dir` (no config: the embedded default) on a free port.
/// Returns the child, the address and the banner lines.
fn serve_embedded(dir: &Path) -> (Child, String, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracklayer"))
        .current_dir(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TRACKLAYER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut banner = Vec::new();
    let mut addr = None;
    // The embedded default's banner ends with where its credentials are.
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("TrackLayer listening on http://") {
            addr = Some(rest.trim_end_matches("/segment/events").to_string());
        }
        let done = line.starts_with("  credentials");
        banner.push(line);
        if done {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, addr.expect("listening line"), banner)
}

#[test]
fn init_writes_a_config_that_check_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = tracklayer(dir.path(), &["init"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(dir.path().join("tracklayer.toml").exists());

    // Refuses to overwrite without --force.
    let out = tracklayer(dir.path(), &["init"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("already exists"));

    // The example names its secrets as env: references; check reports the first missing one.
    let out = tracklayer(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains(
            "environments[0].secret: environment variable TRACKLAYER_SECRET_PRODUCTION is not set"
        ),
        "{:?}",
        text(&out)
    );

    let out = Command::new(env!("CARGO_BIN_EXE_tracklayer"))
        .current_dir(dir.path())
        .arg("check")
        .env("TRACKLAYER_SECRET_PRODUCTION", "prod-secret-0123456789")
        .env("TRACKLAYER_SECRET_STAGING", "staging-secret-0123456789")
        .env("META_ACCESS_TOKEN", "EAAB_TEST")
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out)
        .0
        .contains("ok (2 environment(s), 1 destination(s)"));
}

#[test]
fn check_names_the_key_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[workspace]\naccount = \"a\"\n[[environments]]\nname = \"production\"\nsecret = \"0123456789abcdef\"\n[[destinations]]\nname = \"m\"\nkind = \"facebook\"\n",
    )
    .unwrap();
    let out = tracklayer(dir.path(), &["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out)
            .1
            .contains("destinations[0].kind: `facebook` is not a destination kind"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn embedded_default_send_and_inspect() {
    let dir = tempfile::tempdir().unwrap();

    let (mut server, addr, banner) = serve_embedded(dir.path());
    let banner = banner.join("\n");
    assert!(banner.contains("environments development"), "{banner}");
    // stderr is a pipe (a log), not a person: the secret goes to a file, never into the log.
    assert!(!banner.contains("tls_"), "{banner}");
    assert!(
        banner.contains("credentials  tracklayer.secret"),
        "{banner}"
    );
    assert!(dir.path().join("tracklayer.db").exists());
    let credentials = std::fs::read_to_string(dir.path().join("tracklayer.secret")).unwrap();
    server.kill().unwrap();
    server.wait().unwrap();

    // Second start: the same secret, the file untouched.
    let (mut server, addr2, banner) = serve_embedded(dir.path());
    let banner = banner.join("\n");
    assert!(!banner.contains("tls_"), "{banner}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tracklayer.secret")).unwrap(),
        credentials
    );
    assert!(!addr.is_empty());

    let message = r#"{"type":"track","event":"Order Completed","messageId":"cli-msg-1","userId":"cust_34982","properties":{"order_id":"ORD-1","revenue":"$39.95"}}"#;
    std::fs::write(dir.path().join("order.json"), message).unwrap();
    let url = format!("http://{addr2}/segment/events");
    for scheme in ["tracklayer", "segment"] {
        let out = tracklayer(
            dir.path(),
            &[
                "send",
                "--env",
                "development",
                "--url",
                &url,
                "--scheme",
                scheme,
                "order.json",
            ],
        );
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{scheme}: {stdout} {stderr}");
        // The status is for people (stderr); stdout is the reply alone, for `| jq`.
        assert!(stderr.contains("HTTP 200 OK"), "{stderr}");
        let reply: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is JSON");
        assert_eq!(reply["success"], true, "{stdout}");
    }
    // The second send was a duplicate of the first.
    let out = tracklayer(dir.path(), &["inspect", "cli-msg-1", "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout} {stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["message_id"], "cli-msg-1");
    assert_eq!(json["type"], "track");
    assert_eq!(json["status"], "mapped");
    assert_eq!(json["canonical"]["name"], "purchase");
    assert_eq!(json["canonical"]["properties"]["value"], 39.95);
    assert_eq!(
        json["canonical"]["properties"]["currency"], "USD",
        "Segment's default currency"
    );
    assert_eq!(json["dedup"]["collisions"][0]["kind"], "segment_retry");
    assert_eq!(json["environment"], "development");
    assert_eq!(json["raw"]["properties"]["revenue"], "$39.95");
    let statuses: Vec<&str> = json["arrivals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["accepted", "duplicate"]);

    let out = tracklayer(dir.path(), &["inspect", "cli-msg-1"]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("  mapped"), "{stdout}");
    assert!(
        stdout.contains("Order Completed → purchase (mapping v1)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("revenue → value (parsed \"$39.95\")"),
        "{stdout}"
    );
    assert!(stdout.contains("arrival #2: duplicate"), "{stdout}");
    assert!(stdout.contains("\"revenue\": \"$39.95\""), "{stdout}");

    // The same order under a new messageId: the word is the dashboard's, "collision", with
    // its kind; "duplicate" stays the word for a repeated messageId.
    std::fs::write(
        dir.path().join("again.json"),
        message.replace("cli-msg-1", "cli-msg-2"),
    )
    .unwrap();
    let out = tracklayer(
        dir.path(),
        &["send", "--env", "development", "--url", &url, "again.json"],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let out = tracklayer(dir.path(), &["inspect", "cli-msg-2", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["status"], "collision", "{json}");
    assert_eq!(json["dedup"]["collision_kind"], "duplicate_order", "{json}");
    let out = tracklayer(dir.path(), &["inspect", "cli-msg-2"]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.lines().next().unwrap().ends_with("  collision"),
        "{stdout}"
    );
    assert!(
        stdout.contains(" 6 dedup        collision duplicate_order: collapsed onto"),
        "{stdout}"
    );

    let out = tracklayer(dir.path(), &["inspect", "no-such-id"]);
    assert_eq!(out.status.code(), Some(1));

    // A wrong environment is a clear error before anything is sent.
    let out = tracklayer(
        dir.path(),
        &["send", "--env", "production", "--url", &url, "order.json"],
    );
    assert!(!out.status.success());
    assert!(text(&out)
        .1
        .contains("unknown environment `production`; configured: development"));

    // The controlled test send, walked stage by stage without pauses.
    let out = tracklayer(
        dir.path(),
        &[
            "send",
            "--trace",
            "--no-pause",
            "--env",
            "development",
            "--url",
            &url,
            "--scenario",
            "identify,order_completed",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("✔ authenticated"), "{stdout}");
    assert!(
        stdout.contains("✔ mapped         Order Completed → purchase (mapping table v1)"),
        "{stdout}"
    );
    // The embedded default has no destination: the purchase was stored and traced, and
    // nothing was delivered, which is not a passed end-to-end test.
    assert_eq!(out.status.code(), Some(1), "{stdout} {stderr}");
    assert!(
        stdout.contains("✘ consent        no destinations configured"),
        "{stdout}"
    );
    assert!(!stdout.contains("controlled test passed"), "{stdout}");
    // An unmapped name stops the walk with the name to add.
    std::fs::write(
        dir.path().join("typo.json"),
        r#"{"type":"track","event":"order completed","messageId":"cli-typo-1","userId":"u","properties":{"order_id":"T-1","revenue":1}}"#,
    )
    .unwrap();
    let out = tracklayer(
        dir.path(),
        &[
            "send",
            "--trace",
            "--no-pause",
            "--env",
            "development",
            "--url",
            &url,
            "typo.json",
        ],
    );
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("✘ mapped"), "{stdout}");
    assert!(
        stdout
            .contains("exactly as delivered: `order completed` (did you mean `Order Completed`?)"),
        "{stdout}"
    );

    // Fixed at the source and traced again: a new call (fresh messageId), not a Segment retry
    // of the unmapped one graded again.
    std::fs::write(
        dir.path().join("typo.json"),
        r#"{"type":"track","event":"Order Completed","messageId":"cli-typo-1","userId":"u","properties":{"order_id":"T-1","revenue":1}}"#,
    )
    .unwrap();
    let trace_file = |extra: &[&str]| {
        let mut args = vec![
            "send",
            "--trace",
            "--no-pause",
            "--env",
            "development",
            "--url",
            &url,
            "typo.json",
        ];
        args.extend_from_slice(extra);
        tracklayer(dir.path(), &args)
    };
    let out = trace_file(&[]);
    let (stdout, stderr) = text(&out);
    // Mapped now; it stops at consent only because the embedded default has no destination.
    assert!(
        stdout.contains("✘ consent        no destinations configured"),
        "{stdout} {stderr}"
    );
    assert!(stdout.contains("messageId cli-typo-1~"), "{stdout}");
    assert!(
        stdout.contains("✔ mapped         Order Completed → purchase"),
        "{stdout}"
    );
    // --keep-ids sends the messageId as written; the order it carries was just traced, so the
    // walk stops at dedup naming the run that sent it first.
    let out = trace_file(&["--keep-ids"]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("messageId cli-typo-1\n"), "{stdout}");
    assert!(stdout.contains("✘ dedup"), "{stdout}");
    assert!(
        stdout.contains("first sent as messageId cli-typo-1~"),
        "{stdout}"
    );

    server.kill().unwrap();
    server.wait().unwrap();
}

/// Destinations without a test mode would take a controlled test as a live event: the CLI
/// leaves them out unless `--live` is given, and a live send is confirmed (`--yes` without a
/// terminal), before anything is sent.
#[test]
fn a_live_test_send_is_asked_for_and_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tracklayer.toml");
    std::fs::write(
        &path,
        "[workspace]\naccount = \"a\"\n[[environments]]\nname = \"production\"\nsecret = \"0123456789abcdef0123\"\n[[destinations]]\nname = \"warehouse\"\nkind = \"warehouse\"\npath = \"warehouse.db\"\n",
    )
    .unwrap();
    let config = path.to_str().unwrap();
    // Nothing listens on port 9: a send that gets that far fails to connect.
    let url = "http://127.0.0.1:9/segment/events";
    let base = [
        "send",
        "--trace",
        "--no-pause",
        "--env",
        "production",
        "--url",
        url,
        "--config",
        config,
    ];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        tracklayer(dir.path(), &args)
    };
    let out = run(&[]);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("destination warehouse: skipped: no test mode, would be a live event"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cannot reach http://127.0.0.1:9"),
        "{stderr}"
    );

    let out = run(&["--live"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "--live would send the test to warehouse as live events: add --yes to confirm without a terminal"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("cannot reach"),
        "asked before sending: {stderr}"
    );

    let out = run(&["--live", "--yes"]);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("destination warehouse: LIVE: no test mode, receives the test events"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cannot reach http://127.0.0.1:9"),
        "{stderr}"
    );
}
