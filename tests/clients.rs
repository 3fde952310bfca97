//! Reading real clients right, over real HTTP: gzip bodies (analytics-python `gzip=True`,
//! analytics-android), Segment's clock-skew rule for `/v1`, messageIds SDKs leave out, phones
//! without a country code, terminal control characters in message fields, `inspect --json`'s
//! exact bytes, and values outside sane bounds.

mod common;

use std::io::Write;

use base64::Engine;
use common::*;
use serde_json::{json, Value};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn basic(write_key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"))
    )
}

async fn post_v1(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = client()
        .post(server.url(path))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    json_of(request.body(body).send().await.unwrap()).await
}

fn canonical_of(server: &TestServer, message_id: &str) -> tracklayer::pipeline::CanonicalEvent {
    let trace = server
        .reader()
        .trace(message_id)
        .unwrap()
        .unwrap_or_else(|| panic!("{message_id} not stored"));
    trace
        .events
        .first()
        .unwrap_or_else(|| panic!("{message_id} made no event"))
        .canonical
        .clone()
}

#[tokio::test]
async fn gzip_bodies_are_read_on_both_endpoints_and_a_bomb_is_refused() {
    let server = TestServer::start().await;

    // A TrackLayer-signed body, gzipped on the wire: the signature covers the JSON as sent.
    let body = track("gz-webhook-1", "Order Completed");
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signature = tracklayer::ingest::auth::sign_tracklayer(
        &tracklayer::config::Secret::new(PRODUCTION_SECRET),
        &timestamp,
        body.as_bytes(),
    );
    let (status, reply) = json_of(
        client()
            .post(server.url("/segment/events"))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .header("x-tracklayer-account", ACCOUNT)
            .header("x-tracklayer-environment", "production")
            .header("x-tracklayer-timestamp", &timestamp)
            .header("x-tracklayer-signature", signature)
            .body(gzip(body.as_bytes()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, reply["accepted"].clone()),
        (200, json!(1)),
        "{reply}"
    );
    let stored = &server
        .reader()
        .messages_by_message_id("gz-webhook-1")
        .unwrap()[0];
    assert_eq!(
        stored.raw,
        body.as_bytes(),
        "stored as the sender serialised it"
    );

    // analytics-python with gzip=True: {"batch": [...], "sentAt": ...}, gzipped, Basic auth.
    let batch = json!({
        "batch": [
            {"type": "identify", "userId": "py-1", "traits": {"email": "py@example.com"},
             "messageId": "py-gzip-1", "timestamp": chrono::Utc::now().to_rfc3339(),
             "context": {"library": {"name": "analytics-python", "version": "2.3.3"}}},
            {"type": "track", "event": "Order Completed", "userId": "py-1",
             "properties": {"order_id": "PY-1", "revenue": 12.5, "currency": "EUR"},
             "messageId": "py-gzip-2", "timestamp": chrono::Utc::now().to_rfc3339(),
             "context": {"library": {"name": "analytics-python", "version": "2.3.3"}}}
        ],
        "sentAt": chrono::Utc::now().to_rfc3339(),
    })
    .to_string();
    let auth = basic(WRITE_KEY);
    let (status, reply) = post_v1(
        &server,
        "/v1/batch",
        &[("authorization", &auth), ("content-encoding", "gzip")],
        gzip(batch.as_bytes()),
    )
    .await;
    assert_eq!(
        (status, reply["accepted"].clone()),
        (200, json!(2)),
        "{reply}"
    );
    assert_eq!(reply["mapped"], 1, "{reply}");

    // A bomb: 100 KB on the wire that would be 20 MB decompressed.
    let mut bomb = b"[".to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 20_000_000));
    bomb.push(b']');
    let bomb = gzip(&bomb);
    assert!(bomb.len() < 100_000);
    let (status, reply) = post_v1(
        &server,
        "/v1/batch",
        &[("authorization", &auth), ("content-encoding", "gzip")],
        bomb,
    )
    .await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["code"], "payload_too_large");
    assert!(
        reply["message"].as_str().unwrap().contains("decompressed"),
        "{reply}"
    );

    // Not gzip at all, and a coding nobody sends.
    let (status, reply) = post_v1(
        &server,
        "/v1/batch",
        &[("authorization", &auth), ("content-encoding", "gzip")],
        batch.clone().into_bytes(),
    )
    .await;
    assert_eq!(
        (status, reply["code"].clone()),
        (400, json!("bad_encoding"))
    );
    let (status, reply) = post_v1(
        &server,
        "/v1/batch",
        &[("authorization", &auth), ("content-encoding", "br")],
        batch.into_bytes(),
    )
    .await;
    assert_eq!(
        (status, reply["code"].clone()),
        (415, json!("unsupported_encoding"))
    );
    server.stop().await;
}

#[tokio::test]
async fn v1_reads_sdk_posts_as_segments_api_does() {
    let server = TestServer::start().await;
    let auth = basic(WRITE_KEY);

    // A device clock ten years behind: Segment's rule gives receivedAt − (sentAt − timestamp).
    let before = chrono::Utc::now().timestamp_millis();
    let body = json!({
        "batch": [{"type": "track", "event": "Order Completed", "userId": "skew-1",
                   "properties": {"order_id": "SKEW-1", "revenue": 5},
                   "messageId": "skewed-1", "timestamp": "2016-05-01T12:00:00.000Z"}],
        "sentAt": "2016-05-01T12:00:30.000Z",
        "writeKey": WRITE_KEY,
    })
    .to_string();
    let (status, reply) = post_v1(
        &server,
        "/v1/batch",
        &[("authorization", &auth)],
        body.into(),
    )
    .await;
    let after = chrono::Utc::now().timestamp_millis();
    assert_eq!(status, 200, "{reply}");
    let event = canonical_of(&server, "skewed-1");
    assert!(
        (before - 30_000..=after - 30_000).contains(&event.event_time_ms),
        "event time {} not 30 s before receipt ({before}..{after})",
        event.event_time
    );
    // The write key never reaches the store.
    let stored = &server.reader().messages_by_message_id("skewed-1").unwrap()[0];
    let raw = String::from_utf8_lossy(&stored.raw);
    assert!(
        !raw.contains(WRITE_KEY) && !raw.contains("writeKey"),
        "{raw}"
    );
    assert!(raw.contains("receivedAt"), "{raw}");

    // No messageId: one derived from the content, so the SDK's retry is a duplicate.
    let call = r#"{"event":"Lead Submitted","userId":"u-no-id","timestamp":"2026-11-30T10:00:00Z","properties":{"plan":"pro"}}"#;
    let (status, first) = post_v1(
        &server,
        "/v1/track",
        &[("authorization", &auth)],
        call.into(),
    )
    .await;
    assert_eq!(
        (status, first["accepted"].clone()),
        (200, json!(1)),
        "{first}"
    );
    let (status, retry) = post_v1(
        &server,
        "/v1/track",
        &[("authorization", &auth)],
        call.into(),
    )
    .await;
    assert_eq!(
        (status, retry["duplicates"].clone()),
        (200, json!(1)),
        "{retry}"
    );
    let derived = retry["problems"][0]["messageId"].as_str().unwrap();
    assert!(derived.starts_with("tl-"), "{retry}");

    // `basic` in lower case is the same scheme.
    let lower = auth.replacen("Basic", "basic", 1);
    let (status, reply) = post_v1(
        &server,
        "/v1/track",
        &[("authorization", &lower)],
        br#"{"event":"Lead Submitted","userId":"u-2","messageId":"lower-basic"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");

    // A wrong key with a broken body is an authentication failure, with a code to act on.
    let (status, reply) = post_v1(
        &server,
        "/v1/batch",
        &[("authorization", &basic("not-a-key"))],
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(
        (status, reply["code"].clone()),
        (401, json!("unknown_write_key")),
        "{reply}"
    );

    // A time that cannot be read is a problem on the event, not a silent fallback.
    let (status, reply) = post_v1(
        &server,
        "/v1/track",
        &[("authorization", &auth)],
        br#"{"event":"Order Completed","userId":"u-3","messageId":"bad-time","timestamp":"yesterday","properties":{"order_id":"T-1","revenue":1}}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let event = canonical_of(&server, "bad-time");
    assert!(
        event.problems.iter().any(|p| p.contains("timestamp")),
        "{:?}",
        event.problems
    );
    server.stop().await;
}

fn config_with_country(db: &std::path::Path, country: Option<&str>) -> String {
    let text = config_text(db, "");
    match country {
        Some(c) => text.replace(
            &format!("account = \"{ACCOUNT}\""),
            &format!("account = \"{ACCOUNT}\"\ndefault_country = \"{c}\""),
        ),
        None => text,
    }
}

#[tokio::test]
async fn a_phone_without_country_code_needs_a_country() {
    for (country, expected) in [(None, None), (Some("NL"), Some("+31612345678"))] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tracklayer.db");
        let server = TestServer::start_text(&db, &config_with_country(&db, country)).await;
        let body = json!({
            "type": "track", "event": "Order Completed", "userId": "p-1",
            "messageId": "phone-1", "timestamp": chrono::Utc::now().to_rfc3339(),
            "properties": {"order_id": "PH-1", "revenue": 10},
            "context": {"traits": {"phone": "0612345678"}}
        })
        .to_string();
        let (status, reply) = server.post("production", PRODUCTION_SECRET, &body).await;
        assert_eq!(status, 200, "{reply}");
        let event = canonical_of(&server, "phone-1");
        assert_eq!(event.user.phone.as_deref(), expected, "country {country:?}");
        let said_why = event
            .problems
            .iter()
            .any(|p| p.contains("0612345678") && p.contains("default_country"));
        assert_eq!(said_why, expected.is_none(), "{:?}", event.problems);

        // The person's own country wins over the default.
        let body = json!({
            "type": "track", "event": "Order Completed", "userId": "p-2",
            "messageId": "phone-2", "timestamp": chrono::Utc::now().to_rfc3339(),
            "properties": {"order_id": "PH-2", "revenue": 10},
            "context": {"traits": {"phone": "020 7946 0958", "address": {"country": "GB"}}}
        })
        .to_string();
        server.post("production", PRODUCTION_SECRET, &body).await;
        let event = canonical_of(&server, "phone-2");
        assert_eq!(event.user.phone.as_deref(), Some("+442079460958"));
        server.stop().await;
    }
}

#[tokio::test]
async fn terminal_control_characters_arrive_escaped() {
    let server = TestServer::start().await;
    let hostile_id = "m-\u{1b}]0;pwned\u{7}-\r\n-\u{202e}";
    let body = json!({
        "type": "track", "event": "Order\u{1b}[2J Completed", "userId": "u\u{1b}[31m",
        "messageId": hostile_id, "timestamp": chrono::Utc::now().to_rfc3339(),
        "properties": {"order_id": "CTRL-1"}
    })
    .to_string();
    let (status, reply) = server.post("production", PRODUCTION_SECRET, &body).await;
    assert_eq!(status, 200, "{reply}");
    let trace = server.reader().trace(hostile_id).unwrap().unwrap();
    let text = tracklayer::inspect::to_text(&trace);
    for control in ['\u{1b}', '\u{7}', '\r', '\u{202e}'] {
        assert!(
            !text.contains(control),
            "{control:?} reached the terminal:\n{text}"
        );
    }
    assert!(text.contains("Order\\e[2J Completed"), "{text}");
    assert!(
        text.contains("m-\\e]0;pwned\\u{7}-\\r\\n-\\u{202e}"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn inspect_json_shows_the_stored_bytes_and_absurd_values_are_problems() {
    let server = TestServer::start().await;
    let body = r#"{"type":"track","event":"Order Completed","userId":"u-big","messageId":"exact-1","timestamp":"2026-11-30T10:00:00Z","properties":{"order_id":"BIG-1","revenue":1e300,"tax":1.10,"ref":12345678901234567890,"products":[{"product_id":"P1","price":1.5,"quantity":1e308}]}}"#;
    let (status, reply) = server.post("production", PRODUCTION_SECRET, body).await;
    assert_eq!(status, 200, "{reply}");
    let trace = server.reader().trace("exact-1").unwrap().unwrap();
    let printed = serde_json::to_string(&tracklayer::inspect::to_json_exact(&trace)).unwrap();
    let parsed: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(parsed["message_id"], "exact-1");
    assert!(
        printed.contains(body),
        "raw is not the stored bytes:\n{printed}"
    );

    let event = &trace.events[0].canonical;
    assert!(!event.properties.contains_key("value"), "{event:?}");
    let problems = event.problems.join("\n");
    assert!(
        problems.contains("properties.revenue") && problems.contains("sane bounds"),
        "{problems}"
    );
    assert!(
        problems.contains("properties.products[0].quantity"),
        "{problems}"
    );
    assert_eq!(event.properties["items"][0]["quantity"], 1);
    // And inspect says so.
    let text = tracklayer::inspect::to_text(&trace);
    assert!(text.contains("sane bounds"), "{text}");
    server.stop().await;
}
