//! A fleet: three `tracklayer serve` processes on one PostgreSQL database, a client spreading
//! signed messages over them — the same messageId and the same order to two nodes at once, one
//! person's identify and track split across nodes — and one node killed with SIGKILL mid-stream
//! and restarted. Afterwards every acknowledged message is stored once, each order is one
//! event, each person one profile, every event reached the webhook receiver (a repeat only ever
//! with the same event_id), and no client saw a 5xx other than a 503 with Retry-After.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::postgres::TestDatabase;
use common::*;
use tracklayer::sandbox::{Fault, Platform, Sandbox};

const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn fleet_config(db: &TestDatabase, dir: &std::path::Path, sandbox_url: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[storage]
url = "{url}"
retention_days = 0

[workspace]
account = "{ACCOUNT}"

[[environments]]
name = "production"
secret = "{PRODUCTION_SECRET}"

[[destinations]]
name = "hooks"
kind = "webhook"
url = "{sandbox_url}/webhooks/fleet"
secret = "{WEBHOOK_SECRET}"
retry_schedule = [1, 1, 2]
# Batches, and a lease of about a minute (two rounds of requests at their 15 s timeout plus
# 30 s): what a dead node held is sent by another node after that.
batch_size = 20
concurrency = 16
"#,
        url = db.url
    );
    let path = dir.join("fleet.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn purchase(message_id: &str, order: &str, user: &str) -> String {
    format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"{message_id}","userId":"{user}","timestamp":"{now}","properties":{{"order_id":"{order}","revenue":10,"currency":"EUR"}}}}"#,
        now = at()
    )
}

fn identify(message_id: &str, user: &str, anonymous: &str) -> String {
    format!(
        r#"{{"type":"identify","messageId":"{message_id}","userId":"{user}","anonymousId":"{anonymous}","timestamp":"{now}","traits":{{"email":"{user}@example.com"}}}}"#,
        now = at()
    )
}

fn anonymous_track(message_id: &str, order: &str, user: &str, anonymous: &str) -> String {
    format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"{message_id}","userId":"{user}","anonymousId":"{anonymous}","timestamp":"{now}","properties":{{"order_id":"{order}","revenue":5,"currency":"EUR"}}}}"#,
        now = at()
    )
}

/// One time for the whole run: arrivals of one order carry the same time.
fn at() -> &'static str {
    static NOW: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NOW.get_or_init(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

#[derive(Default)]
struct Tally {
    acked: BTreeSet<String>,
    /// Status codes a client must never see: a 5xx other than 503 with Retry-After.
    bad: Vec<String>,
}

async fn post(addr: &str, body: &str, id: &str, tally: &Mutex<Tally>) {
    let url = format!("http://{addr}/segment/events");
    let response = signed(&client(), &url, "production", PRODUCTION_SECRET, body)
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    let mut tally = tally.lock().unwrap();
    match response {
        Ok(r) if r.status().is_success() => {
            tally.acked.insert(id.to_string());
        }
        Ok(r) if r.status() == 503 && r.headers().contains_key("retry-after") => {}
        Ok(r) if r.status().is_server_error() => {
            tally.bad.push(format!("{} from {addr}", r.status()))
        }
        // A refused connection (the killed node) is what a load balancer routes around.
        _ => {}
    }
}

fn query_i64(db: &TestDatabase, sql: &str) -> i64 {
    let mut c = ::postgres::Client::connect(&db.url, ::postgres::NoTls).unwrap();
    c.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn three_nodes_one_database_one_killed_nothing_lost_nothing_doubled() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let config_path = dir.path().join("fleet.toml");
    let (received, rounds) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sandbox = Sandbox::start(listener).await.unwrap();
        sandbox.state.webhook_key(
            "fleet",
            tracklayer::destinations::webhook::decode_secret(WEBHOOK_SECRET).unwrap(),
        );
        let config = fleet_config(&db, dir.path(), &sandbox.url());
        let mut nodes: Vec<(Child, String)> = (0..3).map(|_| start_serve(&config)).collect();
        let rounds = 45;
        for round in 0..rounds {
            if round == 14 {
                // The receiver stalls, so every node has deliveries in flight...
                sandbox
                    .state
                    .set_sticky(Platform::Webhook, Some(Fault::Timeout { millis: 3_000 }));
            }
            if round == 15 {
                // ...when node 2 dies, holding leases on what it had claimed or was sending.
                tokio::time::sleep(Duration::from_millis(500)).await;
                nodes[2].0.kill().unwrap();
                nodes[2].0.wait().unwrap();
                sandbox.state.set_sticky(Platform::Webhook, None);
            }
            if round == 30 {
                nodes[2] = start_serve(&config);
            }
            let addr: Vec<String> = nodes.iter().map(|(_, a)| a.clone()).collect();
            let (dup, oa, ob) = (
                format!("dup-{round}"),
                format!("oa-{round}"),
                format!("ob-{round}"),
            );
            let (pi, pt) = (format!("pi-{round}"), format!("pt-{round}"));
            let same_message = purchase(&dup, &format!("O-{round}"), &format!("u-{round}"));
            let order_a = purchase(&oa, &format!("SAME-{round}"), &format!("v-{round}"));
            let order_b = purchase(&ob, &format!("SAME-{round}"), &format!("v-{round}"));
            let person_id = identify(&pi, &format!("fp-{round}"), &format!("fa-{round}"));
            let person_track = anonymous_track(
                &pt,
                &format!("P-{round}"),
                &format!("fp-{round}"),
                &format!("fa-{round}"),
            );
            let spread: Vec<(String, String)> = (0..3)
                .map(|i| {
                    let id = format!("s-{round}-{i}");
                    (
                        id.clone(),
                        purchase(&id, &format!("S-{round}-{i}"), &format!("w-{round}-{i}")),
                    )
                })
                .collect();
            let t = &tally;
            tokio::join!(
                // The same message to two nodes at once (a retry racing the original).
                post(&addr[0], &same_message, &dup, t),
                post(&addr[1], &same_message, &dup, t),
                // The same order under two messageIds, to two nodes at once.
                post(&addr[1], &order_a, &oa, t),
                post(&addr[2], &order_b, &ob, t),
                // One person's identify and track on different nodes at once.
                post(&addr[2], &person_id, &pi, t),
                post(&addr[0], &person_track, &pt, t),
                post(&addr[0], &spread[0].1, &spread[0].0, t),
                post(&addr[1], &spread[1].1, &spread[1].0, t),
                post(&addr[2], &spread[2].1, &spread[2].0, t),
            );
        }
        // Every delivery done: the killed node's leases run out and another node sends them.
        let deadline = Instant::now() + Duration::from_secs(240);
        let url = db.url.clone();
        loop {
            let url = url.clone();
            let open: i64 = tokio::task::spawn_blocking(move || {
                let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
                c.query_one(
                    "SELECT COUNT(*) FROM deliveries WHERE status IN ('pending', 'in_flight')",
                    &[],
                )
                .unwrap()
                .get(0)
            })
            .await
            .unwrap();
            if open == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{open} deliveries still open after 4 minutes"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // The controlled test send walks its stages against the fleet's database.
        let (config, url) = (
            config.clone(),
            format!("http://{}/segment/events", nodes[1].1),
        );
        let walk = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_tracklayer"))
                .args([
                    "send",
                    "--trace",
                    "--no-pause",
                    "--env",
                    "production",
                    "--url",
                ])
                .arg(&url)
                // The receiver has no test mode: sent to it as a live event, confirmed.
                .args(["--live", "--yes"])
                .args(["--scenario", "identify,order_completed", "--config"])
                .arg(&config)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&walk.stdout);
        assert!(
            walk.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&walk.stderr)
        );
        assert!(stdout.contains("✔ mapped"), "{stdout}");
        assert!(stdout.contains("controlled test passed"), "{stdout}");
        for (mut child, _) in nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        (sandbox.state.received(Platform::Webhook), rounds)
    });

    let tally = tally.lock().unwrap();
    assert!(tally.bad.is_empty(), "clients saw 5xx: {:?}", tally.bad);
    assert!(
        tally.acked.len() > 200,
        "too few acknowledged to mean anything: {}",
        tally.acked.len()
    );
    // Every acknowledged message is stored, accepted exactly once.
    let mut client = ::postgres::Client::connect(&db.url, ::postgres::NoTls).unwrap();
    let accepted: BTreeMap<String, i64> = client
        .query(
            "SELECT message_id, COUNT(*) FROM messages WHERE status = 'accepted' GROUP BY message_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for id in &tally.acked {
        assert_eq!(
            accepted.get(id),
            Some(&1),
            "{id}: accepted {:?} times",
            accepted.get(id)
        );
    }
    assert!(accepted.values().all(|n| *n == 1));
    // One event per order: the second arrival of a shared order is a collision.
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM (SELECT event_id FROM events GROUP BY event_id HAVING COUNT(*) > 1) d"),
        0
    );
    let shared_orders = query_i64(
        &db,
        "SELECT COUNT(DISTINCT e.event_id) FROM events e WHERE e.message_id LIKE 'oa-%' OR e.message_id LIKE 'ob-%'",
    );
    let both_acked = (0..rounds)
        .filter(|r| {
            tally.acked.contains(&format!("oa-{r}")) && tally.acked.contains(&format!("ob-{r}"))
        })
        .count() as i64;
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM collisions WHERE kind = 'duplicate_order'"
        ),
        both_acked,
        "one collision for each order both of whose arrivals were acknowledged"
    );
    assert!(shared_orders <= rounds as i64);
    // One profile per person, however the identify and track were split.
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM (SELECT user_id FROM profiles WHERE user_id LIKE 'fp-%' AND merged_into IS NULL
             GROUP BY user_id HAVING COUNT(*) > 1) d"
        ),
        0,
        "a person with two live profiles"
    );
    // Every event reached the receiver, and every request carried a stored event_id.
    let events: BTreeSet<String> = client
        .query("SELECT event_id FROM events", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM deliveries WHERE status <> 'delivered'"
        ),
        0
    );
    let sent: BTreeSet<String> = received
        .iter()
        .filter(|r| r.status == 204)
        .flat_map(|r| match r.body["items"].as_array() {
            Some(items) => items.clone(),
            None => vec![r.body.clone()],
        })
        .filter_map(|item| item["event"]["event_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(sent, events, "the receiver got exactly the stored events");
    assert!(
        received.iter().all(|r| r.status == 204 || r.status == 504),
        "the receiver refused a request (a bad signature or body)"
    );
    assert!(
        received.iter().any(|r| r.status == 504),
        "the stall never happened: nothing was in flight when the node died"
    );
    // Which node did what is on record.
    assert!(query_i64(&db, "SELECT COUNT(DISTINCT node_id) FROM messages") >= 3);
    assert!(
        query_i64(&db, "SELECT COUNT(*) FROM nodes") >= 4,
        "three nodes and the restart"
    );

    // `inspect` reads the fleet's database: a messageId sent to two nodes at once is one
    // accepted arrival (and a duplicate when both were answered), mapped, its event delivered.
    let traced = (0..rounds)
        .map(|r| format!("dup-{r}"))
        .find(|id| tally.acked.contains(id))
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracklayer"))
        .args(["inspect", &traced, "--json", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["message_id"], traced.as_str());
    assert_eq!(json["status"], "mapped", "{json:#}");
    let statuses: Vec<&str> = json["arrivals"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["status"].as_str())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "accepted").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(json["deliveries"][0]["status"], "delivered", "{json:#}");
    assert!(json["dedup"]["event_id"]
        .as_str()
        .is_some_and(|e| e.starts_with("ev_purchase_")));
}
