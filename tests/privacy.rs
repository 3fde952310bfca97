//! Forgetting a person, end to end over loopback on both stores: two people's traffic delivered
//! to the sandbox's platforms, one of them forgotten over `POST /privacy/forget`; then the
//! database, its WAL and the warehouse are read byte by byte for anything of them, the other
//! person is checked intact, the platforms' stand-ins are checked for the forwarded deletions,
//! and a later message of the forgotten person is followed until `--undo` lets it through.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sha2::Digest;
use tracklayer::sandbox::{Platform, Sandbox};
use tracklayer::store::StoredDelivery;
use tracklayer::tui::Pane;

const HOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// The forgotten person's identifiers: distinctive, so a byte search cannot match anything else.
const ANN_USER: &str = "user-ann-7731";
const ANN_ANON: &str = "anon-ann-7731";
const ANN_EMAIL: &str = "ann.7731@example.com";
const ANN_PHONE: &str = "+14155550199";
const BOB_USER: &str = "user-bob-4402";
const BOB_EMAIL: &str = "bob.4402@example.com";

async fn sandbox() -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(listener).await.unwrap();
    sandbox.state.webhook_key(
        "hooks",
        tracklayer::destinations::webhook::decode_secret(HOOK_SECRET).unwrap(),
    );
    sandbox
}

fn config(url: &str) -> String {
    format!(
        r#"
[[destinations]]
name = "meta"
kind = "meta_capi"
endpoint = "{url}"
retry_schedule = [1]
pixel_id = "1234567890123456"
access_token = "EAAB_TEST"

[[destinations]]
name = "klaviyo"
kind = "klaviyo"
endpoint = "{url}"
retry_schedule = [1]
api_key = "pk_TEST_0123456789"

[[destinations]]
name = "hooks"
kind = "webhook"
retry_schedule = [1]
url = "{url}/webhooks/hooks"
secret = "{HOOK_SECRET}"

[[destinations]]
name = "warehouse"
kind = "warehouse"
retry_schedule = [1]
path = "warehouse.db"
"#
    )
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn identify(message_id: &str, user: &str, anon: &str, email: &str, phone: &str) -> Value {
    json!({"type": "identify", "messageId": message_id, "userId": user, "anonymousId": anon,
        "timestamp": now(), "context": {"ip": "203.0.113.42"},
        "traits": {"email": email, "phone": phone, "first_name": "Ann"}})
}

fn purchase(message_id: &str, anon: &str, email: &str, order: &str) -> Value {
    json!({"type": "track", "event": "Order Completed", "messageId": message_id,
        "anonymousId": anon, "timestamp": now(),
        "context": {"ip": "203.0.113.42", "userAgent": "Mozilla/5.0 (X11)",
            "traits": {"email": email},
            "consent": {"categoryPreferences": {"Advertising": true, "Marketing": true}}},
        "properties": {"order_id": order, "revenue": 42.0, "currency": "EUR"}})
}

async fn post(server: &TestServer, body: &Value) -> Value {
    let (status, reply) = server
        .post("production", PRODUCTION_SECRET, &body.to_string())
        .await;
    assert_eq!(status, 200, "{reply}");
    reply
}

async fn forget(server: &TestServer, body: &Value) -> (u16, Value) {
    let request = signed(
        &client(),
        &server.url("/privacy/forget"),
        "production",
        PRODUCTION_SECRET,
        &body.to_string(),
    );
    json_of(request.send().await.unwrap()).await
}

async fn wait_for(server: &TestServer, message_id: &str, count: usize) -> Vec<StoredDelivery> {
    let start = Instant::now();
    loop {
        let deliveries = server
            .trace(message_id)
            .await
            .map(|t| t.deliveries)
            .unwrap_or_default();
        if deliveries.len() == count && deliveries.iter().all(|d| d.status == "delivered") {
            return deliveries;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "gave up waiting; deliveries of {message_id}: {deliveries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sha256(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Every file of an SQLite database (the file, its WAL and shared memory), read whole.
fn files_of(db: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let path = format!("{}{suffix}", db.display());
            std::fs::read(&path).ok().map(|bytes| (path, bytes))
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// What of the person could still be read: in the SQLite files byte by byte, on a fleet's
/// database in every text and byte column of its tables, and in every stored message as it
/// arrived (raw messages are kept packed, so the bytes of a file do not show their text).
fn traces_left(server: &TestServer, store: Store, needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let location = server.store_location();
    let lowered: Vec<String> = needles.iter().map(|n| n.to_lowercase()).collect();
    found.extend(
        std::thread::spawn(move || {
            let mut found = Vec::new();
            location
                .each_message(0, None, &mut |m| {
                    let text = String::from_utf8_lossy(m.raw).to_lowercase();
                    for needle in &lowered {
                        if text.contains(needle.as_str()) {
                            found.push(format!("{needle} in message {:?}", m.message_id));
                        }
                    }
                })
                .unwrap();
            found
        })
        .join()
        .unwrap(),
    );
    let warehouse = server.db.parent().unwrap().join("warehouse.db");
    let mut files = files_of(&warehouse);
    if store == Store::Sqlite {
        files.extend(files_of(&server.db));
    }
    for (path, bytes) in &files {
        for needle in needles {
            if contains(bytes, needle) {
                found.push(format!("{needle} in {path}"));
            }
        }
    }
    if store == Store::Postgres {
        let url = server
            .setup
            .config
            .storage
            .url
            .as_ref()
            .unwrap()
            .expose()
            .to_string();
        let needles: Vec<String> = needles.iter().map(|n| n.to_lowercase()).collect();
        found.extend(
            std::thread::spawn(move || {
                let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
                // Every column of every table, as text: the whole database's readable content.
                let tables: Vec<String> = client
                    .query(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
                        &[],
                    )
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let mut found = Vec::new();
                for table in tables {
                    for needle in &needles {
                        let sql = format!(
                            "SELECT count(*) FROM {table} t WHERE lower(t::text) LIKE '%' || $1 || '%'"
                        );
                        let n: i64 = client.query_one(&sql, &[needle]).unwrap().get(0);
                        if n > 0 {
                            found.push(format!("{needle} in {n} row(s) of {table}"));
                        }
                    }
                }
                found
            })
            .join()
            .unwrap(),
        );
    }
    found
}

async fn forget_everything_of_one_person(store: Store) {
    let sandbox = sandbox().await;
    let server = TestServer::start_for(store, &config(&sandbox.url())).await;
    post(
        &server,
        &identify("ann-who", ANN_USER, ANN_ANON, ANN_EMAIL, ANN_PHONE),
    )
    .await;
    post(
        &server,
        &purchase("ann-buy", ANN_ANON, ANN_EMAIL, "ORD-ANN-1"),
    )
    .await;
    // A Segment retry and a name the table does not know: kept as duplicate and unmapped.
    post(
        &server,
        &purchase("ann-buy", ANN_ANON, ANN_EMAIL, "ORD-ANN-1"),
    )
    .await;
    post(
        &server,
        &json!({"type": "track", "event": "Wishlist Viewed", "messageId": "ann-odd",
            "anonymousId": ANN_ANON, "timestamp": now(), "properties": {"note": ANN_EMAIL}}),
    )
    .await;
    post(
        &server,
        &identify(
            "bob-who",
            BOB_USER,
            "anon-bob-4402",
            BOB_EMAIL,
            "+14155550100",
        ),
    )
    .await;
    post(
        &server,
        &purchase("bob-buy", "anon-bob-4402", BOB_EMAIL, "ORD-BOB-1"),
    )
    .await;
    wait_for(&server, "ann-buy", 4).await;
    wait_for(&server, "bob-buy", 4).await;
    let needles = [ANN_USER, ANN_ANON, ANN_EMAIL, ANN_PHONE];
    let hashed_email = sha256(ANN_EMAIL);
    let before = traces_left(&server, store, &needles);
    assert!(!before.is_empty(), "the search must see the person before");

    let (status, reply) = forget(&server, &json!({"email": "  Ann.7731@EXAMPLE.com "})).await;
    assert_eq!(status, 200, "{reply}");
    let report = &reply["report"];
    assert_eq!(report["status"], "done", "{reply:#}");
    let deleted = &report["deleted"];
    for table in [
        "messages",
        "events",
        "profiles",
        "identities",
        "deliveries",
        "unmapped",
    ] {
        assert!(
            deleted[table].as_i64().unwrap_or(0) > 0,
            "{table}: {reply:#}"
        );
    }
    assert!(report["warehouse_rows"].as_i64().unwrap() >= 1, "{reply:#}");
    let not_forwarded: Vec<&str> = report["not_forwarded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["destination"].as_str().unwrap())
        .collect();
    assert!(
        not_forwarded.contains(&"meta"),
        "Meta takes no deletion: {reply:#}"
    );
    // The audit: who, what, the forwards' outcome, and no personal value at all.
    let audit = &reply["audit"];
    assert!(
        audit["who"].as_str().unwrap().starts_with("http:req_"),
        "{audit:#}"
    );
    let audit_text = audit.to_string().to_lowercase();
    for needle in needles.iter().chain([&hashed_email.as_str()]) {
        assert!(
            !audit_text.contains(&needle.to_lowercase()),
            "{needle} in {audit:#}"
        );
    }
    let forwards = audit["forwards"].as_array().unwrap();
    assert!(
        forwards
            .iter()
            .any(|f| f["destination"] == "klaviyo" && f["status"] == "delivered"),
        "{audit:#}"
    );
    assert!(
        forwards
            .iter()
            .any(|f| f["destination"] == "hooks" && f["status"] == "delivered"),
        "{audit:#}"
    );

    // Klaviyo's stand-in took a deletion job for the email (and one for the phone).
    let jobs: Vec<Value> = sandbox
        .state
        .received(Platform::Klaviyo)
        .into_iter()
        .filter(|r| r.path == "/api/data-privacy-deletion-jobs" && r.status == 202)
        .map(|r| r.body)
        .collect();
    let named: Vec<&str> = jobs
        .iter()
        .filter_map(|j| {
            let a = &j["data"]["attributes"]["profile"]["data"]["attributes"];
            a["email"].as_str().or(a["phone_number"].as_str())
        })
        .collect();
    assert!(
        named.contains(&ANN_EMAIL) && named.contains(&ANN_PHONE),
        "{jobs:#?}"
    );
    // The webhook got the signed event with hashes only.
    let hooks: Vec<Value> = sandbox
        .state
        .received(Platform::Webhook)
        .into_iter()
        .filter(|r| r.body["type"] == "tracklayer.forget")
        .map(|r| r.body)
        .collect();
    assert_eq!(hooks.len(), 1, "{hooks:#?}");
    let text = hooks[0].to_string();
    assert!(
        text.contains(&hashed_email) && !text.contains(ANN_EMAIL),
        "{text}"
    );

    // Nothing of the person is left to read: not in the database, its WAL or the warehouse,
    // not even the hashed email the platforms were sent.
    let left = traces_left(
        &server,
        store,
        &[ANN_USER, ANN_ANON, ANN_EMAIL, ANN_PHONE, &hashed_email],
    );
    assert!(
        left.is_empty(),
        "still readable after the forget: {left:#?}"
    );
    assert!(server.trace("ann-buy").await.is_none());
    assert!(server.trace("ann-who").await.is_none());
    // The dashboard: the audit next to the alerts, and nothing of the person in any list.
    let request_id = report["request_id"].as_str().unwrap();
    let alerts = server.dashboard_text(Pane::Alerts, 160, 40);
    assert!(
        alerts.contains("forget done") && alerts.contains(&request_id[..20]),
        "{alerts}"
    );
    for pane in [Pane::Alerts, Pane::Stream, Pane::Profiles, Pane::Unmapped] {
        let text = server.dashboard_text(pane, 160, 40);
        for needle in [ANN_USER, ANN_ANON, ANN_EMAIL, "ann-buy", "Wishlist"] {
            assert!(!text.contains(needle), "{needle} on {pane:?}:\n{text}");
        }
    }
    // The other person is intact.
    assert_eq!(wait_for(&server, "bob-buy", 4).await.len(), 4);
    let bob = traces_left(&server, store, &[BOB_EMAIL]);
    assert!(!bob.is_empty(), "the other person's data must stay");

    // A later message of the forgotten person: not stored, sent nowhere, counted.
    let meta_before = sandbox.state.received(Platform::Meta).len();
    let reply = post(
        &server,
        &purchase("ann-later", ANN_ANON, ANN_EMAIL, "ORD-ANN-2"),
    )
    .await;
    assert_eq!(reply["suppressed"], 1, "{reply:#}");
    assert_eq!(reply["accepted"], 0, "{reply:#}");
    let by_user = json!({"type": "track", "event": "Order Completed", "messageId": "ann-later-2",
        "userId": ANN_USER, "timestamp": now(), "properties": {"order_id": "X", "revenue": 1.0, "currency": "EUR"}});
    assert_eq!(post(&server, &by_user).await["suppressed"], 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(server.trace("ann-later").await.is_none());
    assert_eq!(sandbox.state.received(Platform::Meta).len(), meta_before);
    assert!(traces_left(&server, store, &needles).is_empty());
    let (_, again) = forget(&server, &json!({"user_id": ANN_USER})).await;
    assert_eq!(again["report"]["status"], "already_forgotten", "{again:#}");

    // --undo (over HTTP: "undo": true) lets the person's next message through again.
    let (status, undo) = forget(&server, &json!({"email": ANN_EMAIL, "undo": true})).await;
    assert_eq!(
        (status, undo["report"]["status"].as_str()),
        (200, Some("lifted")),
        "{undo:#}"
    );
    post(
        &server,
        &purchase("ann-back", ANN_ANON, ANN_EMAIL, "ORD-ANN-3"),
    )
    .await;
    wait_for(&server, "ann-back", 4).await;
    server.stop().await;
}

async fn a_forget_of_an_unknown_person_or_a_bad_request_changes_nothing(store: Store) {
    let sandbox = sandbox().await;
    let server = TestServer::start_for(store, &config(&sandbox.url())).await;
    post(
        &server,
        &identify(
            "bob-who",
            BOB_USER,
            "anon-bob-4402",
            BOB_EMAIL,
            "+14155550100",
        ),
    )
    .await;
    post(
        &server,
        &identify("ann-who", ANN_USER, ANN_ANON, ANN_EMAIL, ANN_PHONE),
    )
    .await;
    wait_for(&server, "bob-who", 1).await;

    let (status, reply) = forget(&server, &json!({"email": "nobody@example.com"})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["report"]["status"], "unknown_person", "{reply:#}");
    assert_eq!(reply["report"]["deleted"], json!({}));

    let refused = [
        (json!({}), 400, "name the person"),
        (json!({"email": "not-an-email"}), 400, "email:"),
        (
            json!({"email": BOB_EMAIL, "user_id": ANN_USER}),
            400,
            "different people",
        ),
        (json!({"mail": BOB_EMAIL}), 400, "unknown field"),
    ];
    for (body, want, why) in refused {
        let (status, reply) = forget(&server, &body).await;
        assert_eq!(status, want, "{body}: {reply}");
        assert!(reply.to_string().contains(why), "{body}: {reply}");
    }
    // Unsigned, and signed for an environment that does not exist.
    let unsigned = client()
        .post(server.url("/privacy/forget"))
        .header("content-type", "application/json")
        .header("x-tracklayer-account", ACCOUNT)
        .header("x-tracklayer-environment", "production")
        .body(json!({"email": BOB_EMAIL}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let wrong_env = signed(
        &client(),
        &server.url("/privacy/forget"),
        "nowhere",
        PRODUCTION_SECRET,
        &json!({"email": BOB_EMAIL}).to_string(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(wrong_env.status(), 401);
    // Everyone is still there.
    assert!(server.trace("bob-who").await.is_some());
    assert!(server.trace("ann-who").await.is_some());
    server.stop().await;
}

on_both_stores!(
    forget_everything_of_one_person,
    a_forget_of_an_unknown_person_or_a_bad_request_changes_nothing,
);

/// Two nodes of a fleet given the same request at once: one forgets, the other finds it done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_given_the_same_forget_delete_once() {
    let Some(_) = common::postgres::server_url() else {
        return;
    };
    let sandbox = sandbox().await;
    let db = common::postgres::TestDatabase::create().expect("a PostgreSQL server");
    let one = TestServer::start_on_postgres(&db.url, &config(&sandbox.url())).await;
    let two = TestServer::start_on_postgres(&db.url, &config(&sandbox.url())).await;
    post(
        &one,
        &identify("ann-who", ANN_USER, ANN_ANON, ANN_EMAIL, ANN_PHONE),
    )
    .await;
    post(&two, &purchase("ann-buy", ANN_ANON, ANN_EMAIL, "ORD-ANN-1")).await;
    wait_for(&one, "ann-buy", 4).await;
    // Named differently: two byte-identical signed requests are one request (the second a
    // replay), so the nodes are given the same person, not the same bytes.
    let (by_user, by_email) = (json!({"user_id": ANN_USER}), json!({"email": ANN_EMAIL}));
    let (a, b) = tokio::join!(forget(&one, &by_user), forget(&two, &by_email));
    let mut statuses = vec![
        a.1["report"]["status"].as_str().unwrap().to_string(),
        b.1["report"]["status"].as_str().unwrap().to_string(),
    ];
    statuses.sort();
    assert_eq!(statuses, ["already_forgotten", "done"], "{a:?} {b:?}");
    let jobs = sandbox
        .state
        .received(Platform::Klaviyo)
        .into_iter()
        .filter(|r| r.path == "/api/data-privacy-deletion-jobs")
        .count();
    assert_eq!(
        jobs, 2,
        "one job for the email, one for the phone: sent once"
    );
    one.stop().await;
    two.stop().await;
    std::thread::spawn(move || drop(db)).join().unwrap();
}

/// `tracklayer forget` from a shell, against what a stopped node left in its SQLite file: the
/// report on stdout, the audit in `--list` and `inspect`, a bad request refused with its field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forget_command_forgets_lists_and_explains() {
    let sandbox = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tracklayer.db");
    let text = config_text_with(&db, "", &config(&sandbox.url()));
    let config_path = dir.path().join("tracklayer.toml");
    std::fs::write(&config_path, &text).unwrap();
    let server = TestServer::start_text(&db, &text).await;
    post(
        &server,
        &identify("ann-who", ANN_USER, ANN_ANON, ANN_EMAIL, ANN_PHONE),
    )
    .await;
    post(
        &server,
        &purchase("ann-buy", ANN_ANON, ANN_EMAIL, "ORD-ANN-1"),
    )
    .await;
    wait_for(&server, "ann-buy", 4).await;
    server.stop().await;

    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracklayer"))
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stdout, stderr) = run(&[
        "forget",
        "--env",
        "production",
        "--user-id",
        ANN_USER,
        "--json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["report"]["status"], "done", "{answer:#}");
    assert!(
        answer["audit"]["who"].as_str().unwrap().starts_with("cli:"),
        "{answer:#}"
    );
    assert!(!answer["audit"]["who"]
        .as_str()
        .unwrap()
        .contains("unknown@"));
    // The CLI forwarded at once: Klaviyo's stand-in has the jobs.
    let jobs = sandbox
        .state
        .received(Platform::Klaviyo)
        .into_iter()
        .filter(|r| r.path == "/api/data-privacy-deletion-jobs" && r.status == 202)
        .count();
    assert_eq!(jobs, 2);
    let left: Vec<String> = files_of(&db)
        .iter()
        .flat_map(|(path, bytes)| {
            [ANN_USER, ANN_ANON, ANN_EMAIL, ANN_PHONE]
                .iter()
                .filter(|n| contains(bytes, n))
                .map(move |n| format!("{n} in {path}"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(left.is_empty(), "{left:#?}");

    let request_id = answer["report"]["request_id"].as_str().unwrap().to_string();
    let (code, listed, _) = run(&["forget", "--list"]);
    assert_eq!(code, Some(0));
    assert!(
        listed.contains(&request_id) && listed.contains("forget done"),
        "{listed}"
    );
    let (code, inspected, _) = run(&["inspect", &request_id]);
    assert_eq!(code, Some(0));
    assert!(
        inspected.contains("forwarded to klaviyo (klaviyo): delivered"),
        "{inspected}"
    );

    let (code, _, stderr) = run(&["forget", "--env", "production", "--email", "nope"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("email: `nope` is not an email address"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["forget", "--env", "staging-x", "--email", ANN_EMAIL]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("unknown environment `staging-x`"),
        "{stderr}"
    );
    let (code, stdout, _) = run(&[
        "forget",
        "--env",
        "production",
        "--email",
        "nobody@example.com",
    ]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("unknown_person"), "{stdout}");
}

/// Klaviyo down when a forget is forwarded: the deletion job stays queued (its payload kept
/// only until then), the node's forwarder sends it again on the destination's schedule, and
/// once Klaviyo took it the payload is gone from the database and its WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_klaviyo_refuses_is_sent_again_and_then_forgotten() {
    let sandbox = sandbox().await;
    let server = TestServer::start_for(Store::Sqlite, &config(&sandbox.url())).await;
    post(
        &server,
        &identify("ann-who", ANN_USER, ANN_ANON, ANN_EMAIL, ANN_PHONE),
    )
    .await;
    wait_for(&server, "ann-who", 1).await;
    // Klaviyo answers 503 for a while: the two deletion jobs (email, phone) are refused.
    sandbox.state.set_sticky(
        Platform::Klaviyo,
        Some(tracklayer::sandbox::Fault::Status { status: 503 }),
    );
    let (status, reply) = forget(&server, &json!({"user_id": ANN_USER})).await;
    assert_eq!(status, 200, "{reply}");
    let klaviyo: Vec<&Value> = reply["audit"]["forwards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["destination"] == "klaviyo")
        .collect();
    assert_eq!(klaviyo.len(), 2, "{reply:#}");
    assert!(
        klaviyo
            .iter()
            .all(|f| f["status"] == "pending" && f["status_code"] == 503),
        "{reply:#}"
    );
    sandbox.state.set_sticky(Platform::Klaviyo, None);
    let request_id = reply["report"]["request_id"].as_str().unwrap().to_string();
    let location = tracklayer::store::StoreLocation::of(&server.setup.config.storage);
    let start = std::time::Instant::now();
    loop {
        let (location, id) = (location.clone(), request_id.clone());
        let record = std::thread::spawn(move || tracklayer::privacy::record(&location, &id))
            .join()
            .unwrap()
            .unwrap()
            .unwrap();
        let statuses: Vec<&str> = record
            .forwards
            .iter()
            .filter(|f| f.destination == "klaviyo")
            .map(|f| f.status.as_str())
            .collect();
        if statuses.iter().all(|s| *s == "delivered") {
            assert!(record.forwards.iter().all(|f| f.attempts >= 1));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{record:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = traces_left(&server, Store::Sqlite, &[ANN_EMAIL, ANN_PHONE]);
    assert!(
        left.is_empty(),
        "the forward's payload must go once sent: {left:#?}"
    );
    server.stop().await;
}
