//! The command line as a well-made Unix tool: stdout holds results alone (JSON with `--json`),
//! a closed pipe ends a command quietly, colour never reaches a file, `TRACKLAYER_CONFIG`
//! reaches every command, completions and a man page come from the command definitions, a
//! bare start without a terminal leaves a usable workspace, and PUT/PATCH are accepted.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use common::{client, json_of, signed, PRODUCTION_SECRET};

fn tracklayer() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tracklayer"));
    command
        .env("TRACKLAYER_LOG", "warn")
        .env_remove("TRACKLAYER_CONFIG")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .stdin(Stdio::null());
    command
}

fn run(dir: &Path, args: &[&str]) -> Output {
    tracklayer()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run tracklayer")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A started server, its address, and its stderr lines up to the last banner line: the
/// environments line of a config file's banner, the credentials line of the embedded default's.
fn wait_for_banner(mut child: Child) -> (Child, String, Vec<String>) {
    let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let mut banner: Vec<String> = Vec::new();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.expect("stderr line");
        if let Some(rest) = line.strip_prefix("TrackLayer listening on http://") {
            addr = Some(rest.trim_end_matches("/segment/events").to_string());
        }
        let from_file = banner.iter().any(|l| l.starts_with("  config "));
        let last =
            line.starts_with("  credentials") || (from_file && line.starts_with("  environments"));
        banner.push(line);
        if last {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let addr = addr.unwrap_or_else(|| panic!("no listening line in {banner:?}"));
    (child, addr, banner)
}

/// A config at a path no command would find by itself, with one destination, a literal
/// production secret and an unrelated environment whose secret variable is unset.
fn config_elsewhere(dir: &Path) -> std::path::PathBuf {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let text = common::config_text_with(
        &dir.join("var").join("fleet-a.db"),
        "",
        r#"
[[environments]]
name = "sandbox"
secret = "env:TRACKLAYER_TEST_UNSET_SECRET"

[[destinations]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:9/never"
environments = ["production"]
consent = []
secret = "whsec_dGhpcyBpcyBhIHRlc3Qgc2VjcmV0IGtleQ=="
"#,
    );
    std::fs::create_dir_all(dir.join("var")).unwrap();
    let path = etc.join("tracklayer-a.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `serve` on that config, on a free port (with the sandbox environment's variable set: serve
/// reads every secret).
fn serve(config: &Path) -> (Child, String) {
    let child = tracklayer()
        .env("TRACKLAYER_TEST_UNSET_SECRET", "sandbox-secret-0123456789")
        .arg("--config")
        .arg(config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (child, addr, _) = wait_for_banner(child);
    (child, addr)
}

fn order(message_id: &str) -> String {
    // No timestamp: the event happens when it is sent, whatever the day.
    format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"{message_id}","userId":"cust_1","properties":{{"order_id":"{message_id}-order","revenue":12.5,"currency":"EUR"}}}}"#
    )
}

#[test]
fn tracklayer_config_reaches_every_command_and_unused_secrets_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_elsewhere(dir.path());
    // Commands run from a directory with no tracklayer.toml: only the variable can lead them.
    let cwd = dir.path().join("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let with_env = |args: &[&str]| {
        tracklayer()
            .current_dir(&cwd)
            .env("TRACKLAYER_CONFIG", &config)
            .args(args)
            .output()
            .unwrap()
    };

    // check: every secret matters to it, so the unset variable is named.
    let out = with_env(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "environments[2].secret: environment variable TRACKLAYER_TEST_UNSET_SECRET is not set"
        ),
        "{}",
        stderr(&out)
    );
    let out = tracklayer()
        .current_dir(&cwd)
        .env("TRACKLAYER_CONFIG", &config)
        .env("TRACKLAYER_TEST_UNSET_SECRET", "sandbox-secret-0123456789")
        .args(["check", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check --json");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["config"], config.display().to_string());
    assert_eq!(report["destinations"], serde_json::json!(["hook"]));

    // serve: the database of the config, not ./tracklayer.db.
    let child = tracklayer()
        .current_dir(&cwd)
        .env("TRACKLAYER_CONFIG", &config)
        .env("TRACKLAYER_TEST_UNSET_SECRET", "sandbox-secret-0123456789")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut server, addr, banner) = wait_for_banner(child);
    let banner = banner.join("\n");
    assert!(
        banner.contains(&format!("config       {}", config.display())),
        "{banner}"
    );
    assert!(banner.contains("fleet-a.db"), "{banner}");
    assert!(
        !banner.contains('\x1b'),
        "no colour into a pipe: {banner:?}"
    );
    let url = format!("http://{addr}/segment/events");

    // send: only production's secret is read; sandbox's unset variable does not matter.
    std::fs::write(cwd.join("order.json"), order("env-cfg-1")).unwrap();
    let out = with_env(&["send", "--env", "production", "--url", &url, "order.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // ...but the environment it signs for must resolve.
    let out = with_env(&["send", "--env", "sandbox", "--url", &url, "order.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("TRACKLAYER_TEST_UNSET_SECRET is not set"),
        "{}",
        stderr(&out)
    );

    // inspect, allow-replay, replay: the same store.
    let out = with_env(&["inspect", "env-cfg-1", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trace: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(trace["status"], "mapped");
    let out = with_env(&[
        "allow-replay",
        "--env",
        "production",
        "--minutes",
        "5",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let window: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(window["environment"], "production");
    let out = with_env(&["replay", "--destination", "hook", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let replayed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(replayed["destination"], "hook");
    assert!(replayed["requeued"].is_u64(), "{replayed}");

    // init writes where the variable points (and refuses to overwrite it).
    let out = with_env(&["init"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("{} already exists", config.display())),
        "{}",
        stderr(&out)
    );

    // The flag works before the subcommand too, and wins over the variable.
    let out = tracklayer()
        .current_dir(&cwd)
        .env("TRACKLAYER_CONFIG", "/nonexistent/tracklayer.toml")
        .arg("--config")
        .arg(&config)
        .args(["inspect", "env-cfg-1", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // Nothing was created where the commands ran.
    assert!(!cwd.join("tracklayer.db").exists());
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test]
async fn send_json_is_parsed_from_stdout_alone_and_put_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_elsewhere(dir.path());
    let (mut server, addr) = serve(&config);
    let url = format!("http://{addr}/segment/events");
    std::fs::write(dir.path().join("order.json"), order("json-1")).unwrap();
    let config_arg = config.display().to_string();
    let send = |extra: &[&str]| {
        let mut args = vec![
            "--config",
            &config_arg,
            "send",
            "--env",
            "production",
            "--url",
            &url,
        ];
        args.extend_from_slice(extra);
        run(dir.path(), &args)
    };

    // As `| jq` reads it: stdout alone is one JSON document.
    let out = send(&["--json", "order.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(sent["status"], 200);
    assert_eq!(sent["reply"]["accepted"], 1);
    assert!(stderr(&out).contains("HTTP 200 OK"), "{}", stderr(&out));

    // Without --json the reply itself is the output.
    let out = send(&["order.json"]);
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(reply["duplicates"], 1, "the same messageId again");

    // A refused request: still JSON on stdout, exit 1.
    let out = run(
        dir.path(),
        &[
            "--config",
            &config_arg,
            "send",
            "--json",
            "--env",
            "production",
            "--url",
            &format!("http://{addr}/segment/nope"),
            "order.json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let refused: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(refused["status"], 404);

    // The controlled test as JSON: every stage of every call, and the verdict.
    let out = send(&["--trace", "--json", "--scenario", "identify"]);
    let walk: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(
        walk["steps"][0]["stages"][0]["name"], "authenticated",
        "{walk}"
    );
    assert_eq!(walk["steps"][0]["stages"][0]["verdict"], "pass", "{walk}");
    assert_eq!(
        walk["passed"], true,
        "an identify with no destination to take it: {walk}"
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(walk["stopped"].is_null(), "{walk}");

    // PUT and PATCH, as Segment's Webhooks (Actions) destination may send them.
    let client = client();
    for (method, id) in [
        (reqwest::Method::PUT, "put-1"),
        (reqwest::Method::PATCH, "patch-1"),
    ] {
        let body = order(id);
        let request = signed(&client, &url, "production", PRODUCTION_SECRET, &body)
            .build()
            .unwrap();
        let mut request = request;
        *request.method_mut() = method.clone();
        let (status, reply) = json_of(client.execute(request).await.unwrap()).await;
        assert_eq!(status, 200, "{method}: {reply}");
        assert_eq!(reply["accepted"], 1, "{method}: {reply}");
    }
    let out = run(
        dir.path(),
        &["--config", &config_arg, "inspect", "put-1", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Other methods still get 405.
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);

    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn inspect_into_a_closed_pipe_ends_quietly_and_files_get_no_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_elsewhere(dir.path());
    let (mut server, addr) = serve(&config);
    let config_arg = config.display().to_string();
    std::fs::write(dir.path().join("order.json"), order("pipe-1")).unwrap();
    let url = format!("http://{addr}/segment/events");
    let out = run(
        dir.path(),
        &[
            "--config",
            &config_arg,
            "send",
            "--env",
            "production",
            "--url",
            &url,
            "order.json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // `inspect … | head` where head has already gone: the reader end is closed before a
    // byte is written. The command ends quietly with the shell's status for a closed pipe.
    for args in [
        vec!["inspect", "pipe-1"],
        vec!["inspect", "--json", "pipe-1"],
        vec!["completions", "bash"],
        vec!["man"],
    ] {
        let mut child = tracklayer()
            .current_dir(dir.path())
            .args(["--config", &config_arg])
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(CLOSED_PIPE),
            "{args:?}: status {:?}, stderr {}",
            out.status,
            stderr(&out)
        );
        assert_eq!(
            stderr(&out),
            "",
            "{args:?}: a closed pipe is not an error to report"
        );
    }

    // Into a file (here a pipe read to the end): no escape codes, on stdout or stderr.
    let out = run(dir.path(), &["--config", &config_arg, "inspect", "pipe-1"]);
    assert!(stdout(&out).contains("  mapped"), "{}", stdout(&out));
    assert!(!out.stdout.contains(&0x1b), "{}", stdout(&out));
    let file = dir.path().join("inspect.txt");
    let status = tracklayer()
        .current_dir(dir.path())
        .args(["--config", &config_arg, "inspect", "pipe-1"])
        .stdout(std::fs::File::create(&file).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(!std::fs::read(&file).unwrap().contains(&0x1b));
    // --color always puts colour in anyway; --color never and NO_COLOR keep it out of a
    // terminal (a pseudo-terminal from script(1)).
    let out = run(
        dir.path(),
        &[
            "--config",
            &config_arg,
            "--color",
            "always",
            "inspect",
            "pipe-1",
        ],
    );
    assert!(
        out.stdout.contains(&0x1b),
        "--color always: {}",
        stdout(&out)
    );
    let on_terminal = |extra_env: Option<(&str, &str)>, color: &str| {
        let command = format!(
            "{} --config {} --color {color} inspect pipe-1",
            env!("CARGO_BIN_EXE_tracklayer"),
            config_arg
        );
        let mut script = Command::new("script");
        script
            .args(["-qec", &command, "/dev/null"])
            .env_remove("NO_COLOR")
            .env("TERM", "xterm-256color")
            .current_dir(dir.path());
        if let Some((k, v)) = extra_env {
            script.env(k, v);
        }
        let out = script
            .output()
            .expect("script(1) from util-linux is needed for this test");
        assert!(out.status.success(), "{}", stderr(&out));
        out.stdout.contains(&0x1b)
    };
    assert!(on_terminal(None, "auto"), "a terminal gets colour");
    assert!(!on_terminal(Some(("NO_COLOR", "1")), "auto"), "NO_COLOR");
    assert!(!on_terminal(None, "never"), "--color never");

    // A headless demo (logs on stderr, the summary on stdout), both to files.
    let out = run(
        dir.path(),
        &["demo", "--headless", "--duration", "2", "--rate", "20"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!out.stdout.contains(&0x1b) && !out.stderr.contains(&0x1b));
    assert!(
        stdout(&out).contains("messages received"),
        "{}",
        stdout(&out)
    );
    let out = run(
        dir.path(),
        &[
            "demo",
            "--headless",
            "--json",
            "--duration",
            "2",
            "--rate",
            "20",
        ],
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("demo --json");
    assert!(summary["received"].as_i64().unwrap() > 0, "{summary}");

    server.kill().unwrap();
    server.wait().unwrap();
}

/// What a shell reports for a command that wrote into a closed pipe: 128 + SIGPIPE.
const CLOSED_PIPE: i32 = 141;

fn assert_nothing_created(dir: &Path) {
    let created: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(created.is_empty(), "nothing created, found {created:?}");
}

#[test]
fn completions_and_man_page_come_from_the_command_definitions() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker, flags) in [
        ("bash", "complete -F", ["--config", "--json"]),
        ("zsh", "#compdef tracklayer", ["--config", "--json"]),
        ("fish", "complete -c tracklayer", ["-l config", "-l json"]),
    ] {
        let out = run(dir.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        for word in ["inspect", "allow-replay", "completions"]
            .iter()
            .chain(&flags)
        {
            assert!(script.contains(word), "{shell} completes {word}");
        }
    }
    // bash loads its script and completes the subcommands and their flags.
    let bash = dir.path().join("tracklayer.bash");
    std::fs::write(&bash, run(dir.path(), &["completions", "bash"]).stdout).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            r#"source {}; COMP_WORDS=(tracklayer ins); COMP_CWORD=1; _tracklayer tracklayer ins tracklayer; echo "${{COMPREPLY[@]}}"
COMP_WORDS=(tracklayer send --sch); COMP_CWORD=2; _tracklayer tracklayer --sch send; echo "${{COMPREPLY[@]}}""#,
            bash.display()
        ))
        .output()
        .unwrap();
    let completed = stdout(&out);
    assert!(
        completed.lines().next().unwrap_or("").contains("inspect"),
        "{completed} {}",
        stderr(&out)
    );
    assert!(completed.contains("--scheme"), "{completed}");

    let out = run(dir.path(), &["man"]);
    let page = stdout(&out);
    assert!(
        page.starts_with(".ie") || page.contains(".TH tracklayer 1"),
        "{page}"
    );
    assert!(
        page.contains("TRACKLAYER_CONFIG"),
        "the page documents the variable"
    );
    let out = run(dir.path(), &["man", "--dir", "man1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for page in ["tracklayer.1", "tracklayer-send.1", "tracklayer-inspect.1"] {
        assert!(dir.path().join("man1").join(page).exists(), "{page}");
    }
}

/// A bare `tracklayer` from a script or a service manager: no terminal, so no dashboard. It
/// runs headless on the embedded default, writes the secret to an owner-only file next to the
/// database, names the file (never the secret) on stderr, and that secret signs a request.
#[tokio::test]
async fn a_bare_start_without_a_terminal_leaves_a_usable_workspace() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let child = tracklayer()
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut server, addr, banner) = wait_for_banner(child);
    let banner = banner.join("\n");
    assert_eq!(
        addr, "127.0.0.1:8787",
        "the embedded default's port (this test needs it free): {banner}"
    );
    assert!(banner.contains("no terminal: running headless"), "{banner}");
    assert!(
        banner.contains("credentials  tracklayer.secret"),
        "{banner}"
    );
    assert!(
        !banner.contains("tls_"),
        "the secret never goes to a log: {banner}"
    );

    let secret_file = dir.path().join("tracklayer.secret");
    let mode = std::fs::metadata(&secret_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "owner-only");
    let text = std::fs::read_to_string(&secret_file).unwrap();
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("TRACKLAYER_SECRET_DEVELOPMENT="))
        .expect("the secret, as a shell variable");
    assert!(secret.starts_with("tls_"), "{text}");
    assert!(
        text.contains("TRACKLAYER_WRITE_KEY_DEVELOPMENT=wk_"),
        "{text}"
    );

    // Signed by hand with the file's secret, as a script sourcing the file would.
    let body = order("bare-1");
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signature = tracklayer::ingest::auth::sign_tracklayer(
        &tracklayer::config::Secret::new(secret),
        &timestamp,
        body.as_bytes(),
    );
    let response = client()
        .post(format!("http://{addr}/segment/events"))
        .header("content-type", "application/json")
        .header("x-tracklayer-account", "acct_local")
        .header("x-tracklayer-environment", "development")
        .header("x-tracklayer-timestamp", timestamp)
        .header("x-tracklayer-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, reply) = json_of(response).await;
    assert_eq!(status, 200, "{reply}");
    server.kill().unwrap();
    server.wait().unwrap();

    // An explicit `tui` without a terminal fails before creating anything.
    let empty = tempfile::tempdir().unwrap();
    let out = run(empty.path(), &["tui"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("needs a terminal"),
        "{}",
        stderr(&out)
    );
    assert_nothing_created(empty.path());
    // And `check` without a config checks the embedded default, creating nothing either.
    let out = run(empty.path(), &["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("embedded default"),
        "{}",
        stdout(&out)
    );
    assert_nothing_created(empty.path());
}

/// Commands over what a node stored, run where nothing is stored, say so and create nothing
/// (they used to create an empty database and answer "0 re-queued", exit 0).
#[test]
fn commands_over_stored_data_refuse_a_folder_without_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_elsewhere(dir.path());
    let db = dir.path().join("var").join("fleet-a.db");
    for args in [
        vec!["replay", "--destination", "hook"],
        vec!["allow-replay", "--env", "production"],
        vec!["inspect", "some-message-id"],
    ] {
        let mut full = vec!["--config", config.to_str().unwrap()];
        full.extend(args.iter().copied());
        let output = run(dir.path(), &full);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(&format!("no database at {}", db.display())),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty());
        assert!(!db.exists(), "{args:?} created {}", db.display());
    }
    // The embedded default in an empty folder: the same.
    let empty = tempfile::tempdir().unwrap();
    let output = run(empty.path(), &["replay", "--destination", "webhook"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_nothing_created(empty.path());
}
