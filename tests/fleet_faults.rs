//! A fleet on real PostgreSQL, through its faults: the database restarts under a running node,
//! a node is stopped (SIGTERM) or killed (SIGKILL) holding deliveries, two nodes see the same
//! outage and page once.

mod common;

use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::postgres::{PrivateServer, TestDatabase};
use common::*;
use serde_json::Value;
use tracklayer::sandbox::{Fault, Platform, Sandbox};

const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn purchase(message_id: &str) -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"{message_id}","userId":"u-{message_id}","timestamp":"{now}","properties":{{"order_id":"O-{message_id}","revenue":10,"currency":"EUR"}}}}"#
    )
}

async fn sandbox() -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(listener).await.unwrap();
    sandbox.state.webhook_key(
        "fleet",
        tracklayer::destinations::webhook::decode_secret(WEBHOOK_SECRET).unwrap(),
    );
    sandbox
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

async fn readyz(addr: &str) -> (u16, Value) {
    json_of(
        client()
            .get(format!("http://{addr}/readyz"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// The database goes away under a running node and comes back: requests are refused with 503
/// meanwhile (nothing acknowledged), readiness says why, and afterwards the node delivers again
/// — what waited through the outage and what arrives after — without being restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_resume_after_the_database_restarts_and_readiness_says_so() {
    let Some(pg) = PrivateServer::start() else {
        return;
    };
    let sandbox = sandbox().await;
    let hook = format!(
        "[[destinations]]\nname = \"hooks\"\nkind = \"webhook\"\nurl = \"{}/webhooks/fleet\"\nsecret = \"{WEBHOOK_SECRET}\"\nretry_schedule = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n",
        sandbox.url()
    );
    let server = TestServer::start_on_postgres(&pg.url(), &hook).await;
    let addr = server.addr.to_string();
    let delivered = |id: &str| {
        let db = pg.url();
        let id = id.to_string();
        std::thread::spawn(move || {
            let mut c = ::postgres::Client::connect(&db, ::postgres::NoTls).ok()?;
            c.query_opt(
                "SELECT d.status FROM deliveries d JOIN messages m ON m.id = d.message_row
                 WHERE m.message_id = $1",
                &[&id],
            )
            .ok()
            .flatten()
            .map(|r| r.get::<_, String>(0))
        })
        .join()
        .unwrap()
    };
    // A delivery that keeps failing until after the outage: it waits through it.
    sandbox
        .state
        .set_sticky(Platform::Webhook, Some(Fault::Status { status: 503 }));
    let (status, reply) = server
        .post("production", PRODUCTION_SECRET, &purchase("before"))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(readyz(&addr).await.0, 200);

    pg.stop();
    let (status, _) = server
        .post("production", PRODUCTION_SECRET, &purchase("during"))
        .await;
    assert_eq!(
        status, 503,
        "nothing is acknowledged while the database is away"
    );
    let (status, body) = readyz(&addr).await;
    assert_eq!(status, 503, "{body:#}");
    assert_eq!(body["checks"]["store_write"]["ok"], false, "{body:#}");
    // The worker's claims fail too, and readiness names the destination.
    wait_until(
        "the deliveries check to fail",
        Duration::from_secs(15),
        || {
            let body = futures_block(readyz(&addr)).1;
            body["checks"]["deliveries"]["ok"] == false
                && body["checks"]["deliveries"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("hooks: cannot claim or record deliveries"))
        },
    )
    .await;

    pg.start_again();
    sandbox.state.set_sticky(Platform::Webhook, None);
    let back = wait_until("readiness to return", Duration::from_secs(30), || {
        futures_block(readyz(&addr)).0 == 200
    })
    .await;
    let (status, reply) = server
        .post("production", PRODUCTION_SECRET, &purchase("after"))
        .await;
    assert_eq!(status, 200, "{reply}");
    for id in ["before", "after"] {
        wait_until(
            &format!("{id} to be delivered without restarting the node"),
            Duration::from_secs(30),
            || delivered(id).as_deref() == Some("delivered"),
        )
        .await;
    }
    assert_eq!(
        delivered("during"),
        None,
        "never acknowledged, never stored"
    );
    eprintln!("ready again {back:?} after the database came back");
    server.stop().await;
}

/// A forget's deletion job still queued when the database restarts: the node's forwarder, which
/// keeps its connection between polls, opens a new one and sends the job once Klaviyo takes it —
/// without a node restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_deletion_is_sent_after_the_database_restarts() {
    let Some(pg) = PrivateServer::start() else {
        return;
    };
    let sandbox = sandbox().await;
    let klaviyo = format!(
        "[[destinations]]\nname = \"klaviyo\"\nkind = \"klaviyo\"\nendpoint = \"{}\"\napi_key = \"pk_TEST_0123456789\"\nretry_schedule = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n",
        sandbox.url()
    );
    let server = TestServer::start_on_postgres(&pg.url(), &klaviyo).await;
    let identify = r#"{"type":"identify","messageId":"ann-who","userId":"user-ann-5120","traits":{"email":"ann.5120@example.com"}}"#;
    let (status, reply) = server.post("production", PRODUCTION_SECRET, identify).await;
    assert_eq!(status, 200, "{reply}");
    let deletions = || {
        sandbox
            .state
            .received(Platform::Klaviyo)
            .into_iter()
            .filter(|r| r.path.contains("data-privacy-deletion-jobs"))
            .map(|r| r.status)
            .collect::<Vec<u16>>()
    };
    // Klaviyo refuses the deletion at first: it stays queued.
    sandbox
        .state
        .set_sticky(Platform::Klaviyo, Some(Fault::Status { status: 503 }));
    let forget = signed(
        &client(),
        &server.url("/privacy/forget"),
        "production",
        PRODUCTION_SECRET,
        r#"{"email":"ann.5120@example.com"}"#,
    );
    let (status, reply) = json_of(forget.send().await.unwrap()).await;
    assert_eq!(status, 200, "{reply}");
    assert!(!deletions().is_empty(), "tried once at the forget");
    // The database goes away for a few of the forwarder's polls, then comes back with Klaviyo.
    pg.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    sandbox.state.set_sticky(Platform::Klaviyo, None);
    pg.start_again();
    wait_until(
        "the deletion job to be sent after the restart",
        Duration::from_secs(30),
        || deletions().contains(&202),
    )
    .await;
    server.stop().await;
}

/// Run a small future to completion from a sync closure (the waits above poll in closures).
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// A webhook receiver whose first request is held for `hold`; the others are answered at once.
/// Returns its URL and the event ids it answered, in order.
async fn holding_receiver(hold: Duration) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let answered = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (answered, first) = (answered.clone(), first.clone());
            async move {
                if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(hold).await;
                }
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if let Some(id) = v.pointer("/event/event_id").and_then(Value::as_str) {
                    answered.lock().unwrap().push(id.to_string());
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), seen)
}

fn node_config(dir: &std::path::Path, name: &str, db: &str, extra: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[storage]
url = "{db}"
retention_days = 0

[workspace]
account = "{ACCOUNT}"

[[environments]]
name = "production"
secret = "{PRODUCTION_SECRET}"

{extra}
"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// One request out at a time, one event per request: a node holds many claimed deliveries
/// behind the one its receiver is slow to answer.
fn slow_hook(url: &str) -> String {
    format!(
        "[[destinations]]\nname = \"hooks\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{WEBHOOK_SECRET}\"\nretry_schedule = [1, 1, 1]\nconcurrency = 1\n"
    )
}

fn status_counts(db: &str) -> (i64, i64) {
    let db = db.to_string();
    std::thread::spawn(move || {
        let mut c = ::postgres::Client::connect(&db, ::postgres::NoTls).unwrap();
        let r = c
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'delivered'), count(*) FROM deliveries",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    })
    .join()
    .unwrap()
}

async fn post_batch(addr: &str, prefix: &str, n: usize) {
    let batch = format!(
        "[{}]",
        (0..n)
            .map(|i| purchase(&format!("{prefix}-{i}")))
            .collect::<Vec<_>>()
            .join(",")
    );
    let (status, reply) = json_of(
        signed(
            &client(),
            &format!("http://{addr}/segment/events"),
            "production",
            PRODUCTION_SECRET,
            &batch,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill with a child's pid and a signal number.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

/// SIGTERM to a node whose receiver is slow: what it claimed and had not sent goes back in
/// line at once and the other node sends it; the request it had out is answered and recorded
/// before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_back_what_a_node_claimed_and_another_delivers_it() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let (url, seen) = holding_receiver(Duration::from_secs(6)).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut a, a_addr) = start_serve(&node_config(dir.path(), "a", &db.url, &slow_hook(&url)));
    let (mut b, _) = start_serve(&node_config(dir.path(), "b", &db.url, &slow_hook(&url)));
    post_batch(&a_addr, "t", 30).await;
    wait_until(
        "the first request to reach the receiver",
        Duration::from_secs(10),
        || status_counts(&db.url).1 == 30 && seen.lock().unwrap().is_empty(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = Instant::now();
    signal(&a, libc::SIGTERM);
    let took = wait_until("every delivery", Duration::from_secs(15), || {
        status_counts(&db.url).0 == 30
    })
    .await;
    let exit = a.wait().unwrap();
    assert!(exit.success(), "node a stopped with {exit}");
    assert!(
        stopped.elapsed() < Duration::from_secs(15),
        "a stopped node waits only for the request it had out"
    );
    // Node b sent what node a gave back.
    let by_node: Vec<(String, i64)> = {
        let db = db.url.clone();
        std::thread::spawn(move || {
            let mut c = ::postgres::Client::connect(&db, ::postgres::NoTls).unwrap();
            c.query(
                "SELECT node_id, sum(item_count)::bigint FROM delivery_requests
                 WHERE status_code = 204 GROUP BY node_id ORDER BY node_id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
        })
        .join()
        .unwrap()
    };
    assert_eq!(by_node.len(), 2, "{by_node:?}");
    eprintln!("all delivered {took:?} after SIGTERM: {by_node:?}");
    let _ = b.kill();
    let _ = b.wait();
}

/// SIGKILL to a node holding claimed deliveries: it beats no more, and after the silence
/// timeout (15 s) the other node releases and sends what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_deliveries_go_out_within_30_s() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let (url, _seen) = holding_receiver(Duration::from_secs(120)).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut a, a_addr) = start_serve(&node_config(dir.path(), "a", &db.url, &slow_hook(&url)));
    let (mut b, _) = start_serve(&node_config(dir.path(), "b", &db.url, &slow_hook(&url)));
    post_batch(&a_addr, "k", 20).await;
    wait_until(
        "node a to hold the deliveries",
        Duration::from_secs(10),
        || status_counts(&db.url).1 == 20,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&a, libc::SIGKILL);
    let _ = a.wait();
    let took = wait_until("every delivery", Duration::from_secs(30), || {
        status_counts(&db.url).0 == 20
    })
    .await;
    eprintln!("all delivered {took:?} after SIGKILL");
    let _ = b.kill();
    let _ = b.wait();
}

/// Two nodes see Meta fail: the alert is stored once and sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_on_a_two_node_fleet_is_stored_once_and_sent_once() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let sandbox = sandbox().await;
    sandbox
        .state
        .set_sticky(Platform::Meta, Some(Fault::Status { status: 500 }));
    let extra = format!(
        r#"
[[destinations]]
name = "meta"
kind = "meta_capi"
endpoint = "{url}"
retry_schedule = [{retries}]
pixel_id = "1234567890123456"
access_token = "EAAB_TEST"

[alerts]
interval_secs = 1
slack_webhook_url = "{url}/slack/ops"
platform_down_failures = 2
queue_backlog_secs = 100000
error_rate_min_requests = 100000
dead_letters = 100000
"#,
        url = sandbox.url(),
        retries = vec!["1"; 60].join(", ")
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut a, a_addr) = start_serve(&node_config(dir.path(), "a", &db.url, &extra));
    let (mut b, b_addr) = start_serve(&node_config(dir.path(), "b", &db.url, &extra));
    post_batch(&a_addr, "aa", 3).await;
    post_batch(&b_addr, "bb", 3).await;
    let firing = |sandbox: &Sandbox| {
        sandbox
            .state
            .received(Platform::Webhook)
            .iter()
            .filter(|r| r.path == "/slack/ops")
            .filter(|r| {
                r.body["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("*platform_down* firing for"))
            })
            .count()
    };
    wait_until("platform_down to fire", Duration::from_secs(40), || {
        firing(&sandbox) > 0
    })
    .await;
    // Both nodes keep seeing the failure for a while: still one page, one row.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(firing(&sandbox), 1);
    let rows: i64 = {
        let db = db.url.clone();
        std::thread::spawn(move || {
            let mut c = ::postgres::Client::connect(&db, ::postgres::NoTls).unwrap();
            c.query_one(
                "SELECT count(*) FROM alerts WHERE rule = 'platform_down' AND subject = 'meta'",
                &[],
            )
            .unwrap()
            .get(0)
        })
        .join()
        .unwrap()
    };
    assert_eq!(rows, 1);
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A TCP proxy in front of PostgreSQL that, while armed, cuts the connection carrying the
/// server's answer to a COMMIT instead of passing that answer on: the transaction is committed,
/// and the node never learns it (as when the database restarts between commit and reply).
struct CommitAnswerCutter {
    url: String,
    armed: Arc<std::sync::atomic::AtomicUsize>,
    cut: Arc<std::sync::atomic::AtomicUsize>,
}

impl CommitAnswerCutter {
    /// On a thread and runtime of its own: the node's synchronous PostgreSQL client may hold
    /// the test's runtime threads while it connects through the proxy.
    fn start(db_url: &str) -> CommitAnswerCutter {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = {
            let u = url::Url::parse(db_url).unwrap();
            format!("{}:{}", u.host_str().unwrap(), u.port().unwrap_or(5432))
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut url = url::Url::parse(db_url).unwrap();
        url.set_port(Some(listener.local_addr().unwrap().port()))
            .unwrap();
        let armed = Arc::new(AtomicUsize::new(0));
        let cut = Arc::new(AtomicUsize::new(0));
        let (armed_in, cut_in) = (armed.clone(), cut.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    });
                    let (armed, cut) = (armed_in.clone(), cut_in.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match server_read.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            // CommandComplete with the tag COMMIT.
                            let commits = buf[..n].windows(7).any(|w| w == b"COMMIT\0");
                            if commits
                                && armed
                                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |a| {
                                        a.checked_sub(1)
                                    })
                                    .is_ok()
                            {
                                cut.fetch_add(1, Ordering::SeqCst);
                                let _ = client_write.shutdown().await;
                                return;
                            }
                            if client_write.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            })
        });
        CommitAnswerCutter {
            url: url.to_string(),
            armed,
            cut,
        }
    }

    fn arm(&self, answers: usize) {
        self.armed
            .store(answers, std::sync::atomic::Ordering::SeqCst);
    }

    fn cut(&self) -> usize {
        self.cut.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Claims and outcomes whose COMMIT PostgreSQL made but whose answer never reached the node:
/// the node finds what such a claim took when it asks again (by the claim's token) and sends
/// it at once, instead of leaving it in flight until its lease runs out (90 s here); an outcome
/// asked again lands once. Every delivery goes out within seconds, each with one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_commit_answer_was_lost_is_sent_by_its_node() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let cutter = CommitAnswerCutter::start(&db.url);
    let sandbox = sandbox().await;
    let hook = format!(
        "[[destinations]]\nname = \"hooks\"\nkind = \"webhook\"\nurl = \"{}/webhooks/fleet\"\nsecret = \"{WEBHOOK_SECRET}\"\nretry_schedule = [1, 1, 1, 1, 1, 1]\n",
        sandbox.url()
    );
    let server = TestServer::start_on_postgres(&cutter.url, &hook).await;
    let addr = server.addr.to_string();
    wait_until("the node to be ready", Duration::from_secs(30), || {
        futures_block(readyz(&addr)).0 == 200
    })
    .await;
    // Paused for the fleet: the deliveries wait in the queue, to be claimed (not handed over).
    let pause = |until: Option<i64>| {
        let url = db.url.clone();
        std::thread::spawn(move || {
            let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
            c.execute(
                "INSERT INTO destination_state (destination, paused_until_ms, reason, updated_at_ms)
                 VALUES ('hooks', $1, 'test', 0)
                 ON CONFLICT (destination) DO UPDATE SET paused_until_ms = EXCLUDED.paused_until_ms",
                &[&until],
            )
            .unwrap();
        })
        .join()
        .unwrap()
    };
    pause(Some(chrono::Utc::now().timestamp_millis() + 3_600_000));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    post_batch(&server.addr.to_string(), "lost", 300).await;
    assert_eq!(status_counts(&db.url), (0, 300));
    // From here, the answers to the next few COMMITs are cut: claims and outcomes among them.
    cutter.arm(6);
    pause(None);
    let took = wait_until(
        "every delivery to go out despite the lost answers",
        Duration::from_secs(45),
        || status_counts(&db.url) == (300, 300),
    )
    .await;
    assert_eq!(cutter.cut(), 6, "six COMMIT answers were cut");
    let attempts = {
        let url = db.url.clone();
        std::thread::spawn(move || {
            let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
            let r = c
                .query_one(
                    "SELECT count(*), count(DISTINCT delivery_id), max(attempts)
                     FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id",
                    &[],
                )
                .unwrap();
            (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i32>(2))
        })
        .join()
        .unwrap()
    };
    assert_eq!(
        attempts,
        (300, 300, 1),
        "one attempt row per delivery, attempts = 1"
    );
    assert!(
        took < Duration::from_secs(30),
        "sent within {took:?}, well before a 90 s lease would have run out"
    );
    server.stop().await;
    std::thread::spawn(move || drop(db)).join().unwrap();
}
