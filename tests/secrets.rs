//! Credentials never reach the store, the log or what `inspect` prints. These tests read the log,
//! so they are a test binary of their own.

mod common;

use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "EAAB_LEAK_CHECK_TOKEN_0123456789";

/// A "platform" that accepts connections and drops them at once: the request fails with a
/// transport error, the kind whose text quotes the request's URL.
async fn dropping_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        }
    });
    addr
}

#[tokio::test]
async fn a_token_never_appears_in_the_store_the_log_or_inspect_after_a_dropped_connection() {
    capture_log();
    let platform = dropping_server().await;
    let server = TestServer::start_with_toml(&format!(
        r#"
[[destinations]]
name = "meta"
kind = "meta_capi"
endpoint = "http://{platform}"
pixel_id = "1234567890"
access_token = "{TOKEN}"
retry_schedule = [60]
"#
    ))
    .await;
    let body = track("m-leak", "Order Completed")
        .replace("2026-04-23T10:15:30Z", &chrono::Utc::now().to_rfc3339());
    let (status, _) = server.post("production", PRODUCTION_SECRET, &body).await;
    assert_eq!(status, 200);

    // Wait for the failed attempt to be recorded.
    let started = Instant::now();
    let trace = loop {
        let trace = server.reader().trace("m-leak").unwrap().unwrap();
        if trace.deliveries.iter().any(|d| !d.history.is_empty()) {
            break trace;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let attempt = &trace.deliveries[0].history[0];
    let error = attempt.request.as_ref().unwrap().error.clone().unwrap();
    assert!(
        error.contains(&format!("http://{platform}")),
        "the error names the endpoint: {error}"
    );

    let shown = format!(
        "{}\n{}",
        tracklayer::inspect::to_text(&trace),
        serde_json::to_string(&tracklayer::inspect::to_json(&trace)).unwrap()
    );
    assert!(shown.contains("meta"), "{shown}");
    assert!(!shown.contains(TOKEN), "inspect shows the token:\n{shown}");
    let stopped = server.stop().await;
    // Every byte of the database and its log, compressed columns included (LZ4 keeps a
    // token of this length as literal bytes).
    for file in ["tracklayer.db", "tracklayer.db-wal"] {
        let path = stopped.db.parent().unwrap().join(file);
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(
                !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
                "{file} holds the token"
            );
        }
    }
    let log = logged();
    assert!(!log.contains(TOKEN), "the log holds the token");
}
