//! The destinations pane's windows are time, on both stores: an outage and a dead letter are
//! still in "the last hour" fifty minutes later, however much traffic came after them (they
//! used to be the newest 5,000 requests and 100,000 attempts, which heavy traffic pushed them
//! out of within minutes), and the table, the chart and the error kinds say the same.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tracklayer::sandbox::{Fault, Platform, Sandbox};

const HOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn purchase(id: &str) -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"{id}","userId":"u-{id}","timestamp":"{now}","properties":{{"order_id":"O-{id}","revenue":10,"currency":"EUR"}}}}"#
    )
}

async fn post_batch(server: &TestServer, prefix: &str, n: usize) {
    let body = format!(
        "[{}]",
        (0..n)
            .map(|i| purchase(&format!("{prefix}-{i}")))
            .collect::<Vec<_>>()
            .join(",")
    );
    let (status, reply) = server.post("production", PRODUCTION_SECRET, &body).await;
    assert_eq!(status, 200, "{reply}");
}

fn stats(server: &TestServer, now_ms: i64) -> tracklayer::store::views::DestinationStats {
    let location = server.store_location();
    std::thread::spawn(move || {
        let mut reader = location.open().unwrap();
        reader
            .destination_stats(&["hooks".to_string()], now_ms)
            .unwrap()
            .remove(0)
    })
    .join()
    .unwrap()
}

async fn wait_drained(server: &TestServer) {
    let started = Instant::now();
    loop {
        let location = server.store_location();
        let waiting = std::thread::spawn(move || {
            let q = location.open().unwrap().queue_counts("hooks").unwrap();
            q.pending + q.in_flight
        })
        .join()
        .unwrap();
        if waiting == 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{waiting} still queued"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn an_outage_fifty_minutes_ago_is_still_in_the_last_hour(store: Store) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(listener).await.unwrap();
    sandbox.state.webhook_key(
        "hooks",
        tracklayer::destinations::webhook::decode_secret(HOOK_SECRET).unwrap(),
    );
    // One request per event: heavy traffic is many requests and attempts.
    let server = TestServer::start_for(
        store,
        &format!(
            "[[destinations]]\nname = \"hooks\"\nkind = \"webhook\"\nurl = \"{}/webhooks/hooks\"\nsecret = \"{HOOK_SECRET}\"\nretry_schedule = [1]\nconcurrency = 16\n",
            sandbox.url()
        ),
    )
    .await;
    // The outage: every request refused twice (one retry each), so each of these deliveries
    // is dead once its schedule runs out.
    sandbox
        .state
        .set_sticky(Platform::Webhook, Some(Fault::Status { status: 503 }));
    post_batch(&server, "outage", 3).await;
    let outage_at = chrono::Utc::now().timestamp_millis();
    wait_drained(&server).await;
    sandbox.state.set_sticky(Platform::Webhook, None);
    // Then more traffic than the old row windows held: over 5,000 requests.
    for round in 0..12 {
        post_batch(&server, &format!("busy{round}"), 500).await;
    }
    wait_drained(&server).await;

    // Read as the dashboard would, 50 minutes after the outage.
    let later = outage_at + 50 * 60_000;
    let d = stats(&server, later);
    assert!(
        d.last_1h.requests >= 6_000 + 6,
        "every request of the hour: {:?}",
        d.last_1h
    );
    assert_eq!(
        d.last_1h.requests - d.last_1h.succeeded,
        6,
        "the outage's six refused requests: {:?}",
        d.last_1h
    );
    let (delivered, retried, dead) = d.per_minute.total();
    assert_eq!((delivered, retried, dead), (6_000, 3, 3), "the chart");
    assert_eq!(d.dead, 3, "the table's dead letters are the chart's");
    assert!(
        d.error_kinds
            .iter()
            .any(|(kind, n)| kind.contains("503") && *n == 6),
        "{:?}",
        d.error_kinds
    );
    assert!(
        d.last_error
            .as_ref()
            .is_some_and(|(_, e)| e.contains("503")),
        "{:?}",
        d.last_error
    );
    // Its last 5 minutes are quiet: nothing was sent then.
    assert_eq!(d.last_5m.requests, 0);
    // An hour and more after it, the outage has left the window, and says so.
    let d = stats(&server, outage_at + 62 * 60_000);
    assert_eq!(d.per_minute.total().2, 0);
    assert!(d.error_kinds.is_empty(), "{:?}", d.error_kinds);
    assert!(
        d.last_error.is_some(),
        "the last error is still named, with its time"
    );
    server.stop().await;
}

on_both_stores!(an_outage_fifty_minutes_ago_is_still_in_the_last_hour);
