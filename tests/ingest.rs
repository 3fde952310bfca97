//! Ingest over real HTTP on loopback with a real SQLite file.

mod common;

use base64::Engine;
use common::*;
use serde_json::json;

async fn accepts_a_single_message_and_stores_it_byte_for_byte(store: Store) {
    let server = TestServer::start_for(store, "").await;
    // Odd whitespace on purpose: the stored raw message must be exactly these bytes.
    let body = track("m-single", "Order Completed").replace(",\"userId\"", ",  \"userId\"");
    let (status, reply) = server.post("production", PRODUCTION_SECRET, &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 1);
    assert_eq!(reply["environment"], "production");

    let stored = server
        .store_reader()
        .messages_by_message_id("m-single")
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status, "accepted");
    assert_eq!(stored[0].raw, body.as_bytes());
    assert_eq!(stored[0].event.as_deref(), Some("Order Completed"));
    assert_eq!(stored[0].user_id.as_deref(), Some("cust_34982"));
    let request = server
        .store_reader()
        .request(&stored[0].request_id)
        .unwrap()
        .unwrap();
    assert_eq!(request.auth_scheme, "tracklayer");
    assert_eq!(request.body_shape, "single");
    assert_eq!(request.environment, "production");
    server.stop().await;
}

async fn accepts_a_bare_array_and_a_batch_object(store: Store) {
    let server = TestServer::start_for(store, "").await;
    let array = format!(
        "[{},{}]",
        track("m-a1", "Product Added"),
        track("m-a2", "Order Completed")
    );
    let (status, reply) = server.post("production", PRODUCTION_SECRET, &array).await;
    assert_eq!(
        (status, reply["accepted"].clone()),
        (200, json!(2)),
        "{reply}"
    );

    let batch = format!(
        r#"{{"batch":[{},{}],"sentAt":"2026-04-23T10:15:31Z"}}"#,
        track("m-b1", "Product Viewed"),
        track("m-b2", "Lead Submitted")
    );
    let (status, reply) = server.post("production", PRODUCTION_SECRET, &batch).await;
    assert_eq!(
        (status, reply["accepted"].clone()),
        (200, json!(2)),
        "{reply}"
    );

    let reader = server.store_reader();
    let b2 = &reader.messages_by_message_id("m-b2").unwrap()[0];
    assert_eq!(b2.position, 1);
    assert_eq!(b2.raw, track("m-b2", "Lead Submitted").as_bytes());
    assert_eq!(
        reader.request(&b2.request_id).unwrap().unwrap().body_shape,
        "batch"
    );
    assert_eq!(reader.message_counts().unwrap(), (4, 0, 0));
    server.stop().await;
}

/// Post to /segment/events with the given headers (no signing) and return status + message.
async fn post_raw(server: &TestServer, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut request = client()
        .post(server.url("/segment/events"))
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (status, reply) = json_of(request.send().await.unwrap()).await;
    (
        status,
        reply["message"].as_str().unwrap_or_default().to_string(),
    )
}

async fn each_authentication_failure_names_its_reason_and_is_recorded(store: Store) {
    let server = TestServer::start_for(store, "").await;
    let body = track("m-auth", "Order Completed");
    let now = chrono::Utc::now().timestamp().to_string();
    let good_sig = tracklayer::ingest::auth::sign_tracklayer(
        &tracklayer::config::Secret::new(PRODUCTION_SECRET),
        &now,
        body.as_bytes(),
    );
    let base = [
        ("content-type", "application/json"),
        ("x-tracklayer-account", ACCOUNT),
        ("x-tracklayer-environment", "production"),
        ("x-tracklayer-timestamp", now.as_str()),
        ("x-tracklayer-signature", good_sig.as_str()),
    ];
    let without = |name: &str| -> Vec<(&str, &str)> {
        base.iter().copied().filter(|(n, _)| *n != name).collect()
    };
    let replacing = |name: &str, value: &'static str| -> Vec<(&str, &str)> {
        base.iter()
            .copied()
            .map(|(n, v)| if n == name { (n, value) } else { (n, v) })
            .collect()
    };

    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (without("x-tracklayer-account"), "missing X-TrackLayer-Account header"),
        (replacing("x-tracklayer-account", "acct_other"), "unknown account `acct_other` in X-TrackLayer-Account"),
        (without("x-tracklayer-environment"), "missing X-TrackLayer-Environment header"),
        (replacing("x-tracklayer-environment", "prod"), "unknown environment `prod` in X-TrackLayer-Environment"),
        (without("x-tracklayer-timestamp"), "missing X-TrackLayer-Timestamp header"),
        (replacing("x-tracklayer-timestamp", "last tuesday"), "X-TrackLayer-Timestamp `last tuesday` is neither RFC 3339 nor Unix seconds"),
        (
            without("x-tracklayer-signature"),
            "missing X-TrackLayer-Signature (with X-TrackLayer-Timestamp) or Segment's X-Signature header",
        ),
        (
            replacing("x-tracklayer-signature", "sha256=00000000000000000000000000000000000000000000000000000000000000aa"),
            "bad signature: X-TrackLayer-Signature does not match HMAC-SHA256(secret, timestamp + \".\" + body) for environment `production`",
        ),
        // Staging's secret never authenticates production.
        (replacing("x-tracklayer-environment", "staging"), "bad signature: X-TrackLayer-Signature does not match HMAC-SHA256(secret, timestamp + \".\" + body) for environment `staging`"),
    ];
    for (headers, expected) in &cases {
        let (status, message) = post_raw(&server, headers, &body).await;
        assert_eq!((status, message.as_str()), (401, *expected));
    }

    // The good request still passes, so the cases above failed for their stated reason only.
    let (status, _) = post_raw(&server, &base, &body).await;
    assert_eq!(status, 200);
    let stopped = server.stop().await;

    // Every refusal is counted; the first three of each reason in a minute are kept whole.
    let reader = stopped.store_reader();
    let mut tallies: Vec<(String, String, i64, i64)> = reader
        .rejection_counts(0)
        .unwrap()
        .into_iter()
        .map(|t| (t.reason_code, t.environment, t.status_code, t.count))
        .collect();
    tallies.sort();
    assert_eq!(
        tallies,
        [
            ("bad_signature".into(), "production".into(), 401, 1),
            ("bad_signature".into(), "staging".into(), 401, 1),
            ("bad_timestamp".into(), "production".into(), 401, 1),
            ("missing_header".into(), "".into(), 401, 1),
            ("missing_header".into(), "production".into(), 401, 3),
            ("unknown_account".into(), "production".into(), 401, 1),
            ("unknown_environment".into(), "prod".into(), 401, 1),
        ]
    );
    let total: i64 = tallies.iter().map(|t| t.3).sum();
    assert_eq!(total, cases.len() as i64);
    let rejections = reader.recent_rejections(100).unwrap();
    let mut kept: std::collections::BTreeMap<(i64, &str), usize> = Default::default();
    for r in &rejections {
        *kept
            .entry((r.received_at_ms / 60_000, r.reason_code.as_str()))
            .or_default() += 1;
    }
    assert!(
        kept.values().all(|n| *n <= 3),
        "at most three examples per minute and reason: {kept:?}"
    );
    let reasons: std::collections::BTreeSet<&str> = kept.keys().map(|(_, code)| *code).collect();
    assert_eq!(reasons.len(), 5, "an example of every reason: {kept:?}");
}

async fn rejected_requests_are_recorded_without_body_or_secret(store: Store) {
    let server = TestServer::start_for(store, "").await;
    let body = track("m-rej", "Order Completed");
    let (status, _) = json_of(
        signed(
            &client(),
            &server.url("/segment/events"),
            "production",
            "wrong-secret-0123456789",
            &body,
        )
        .header("user-agent", "Segment (Actions)")
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    let stopped = server.stop().await;
    let reader = stopped.store_reader();
    let rejections = reader.recent_rejections(10).unwrap();
    assert_eq!(rejections.len(), 1);
    let r = &rejections[0];
    assert_eq!(r.status_code, 401);
    assert_eq!(r.reason_code, "bad_signature");
    assert_eq!(r.environment_header.as_deref(), Some("production"));
    assert_eq!(r.account_header.as_deref(), Some(ACCOUNT));
    assert_eq!(r.user_agent.as_deref(), Some("Segment (Actions)"));
    assert_eq!(r.body_bytes, Some(body.len() as i64));
    let everything = format!("{r:?}");
    assert!(
        !everything.contains("m-rej"),
        "the body must not be stored: {everything}"
    );
    assert!(!everything.contains(PRODUCTION_SECRET));
    assert!(reader.messages_by_message_id("m-rej").unwrap().is_empty());
}

async fn timestamp_window_is_five_minutes_both_ways(store: Store) {
    let server = TestServer::start_for(store, "").await;
    let url = server.url("/segment/events");
    let now = chrono::Utc::now();
    let cases = [
        (now - chrono::Duration::seconds(240), 200, "m-past-ok"),
        (now + chrono::Duration::seconds(240), 200, "m-future-ok"),
        (now - chrono::Duration::seconds(360), 401, "m-past-stale"),
        (now + chrono::Duration::seconds(360), 401, "m-future-stale"),
    ];
    for (at, expected, id) in cases {
        // Both accepted formats: RFC 3339 for the past, Unix seconds for the future.
        let timestamp = if at < now {
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        } else {
            at.timestamp().to_string()
        };
        let body = track(id, "Order Completed");
        let (status, reply) = json_of(
            signed_at(
                &client(),
                &url,
                "production",
                PRODUCTION_SECRET,
                &body,
                &timestamp,
            )
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(status, expected, "{id}: {reply}");
        if expected == 401 {
            let message = reply["message"].as_str().unwrap();
            assert!(message.starts_with("stale timestamp"), "{message}");
            let direction = if at < now { "behind" } else { "ahead of" };
            assert!(message.contains(direction), "{message}");
        }
    }
    server.stop().await;
}

async fn previous_secret_is_accepted_during_rotation(store: Store) {
    let server = TestServer::start_for(store, "").await;
    for (secret, id) in [
        (PRODUCTION_SECRET, "m-rot-new"),
        (PREVIOUS_SECRET, "m-rot-old"),
    ] {
        let body = track(id, "Order Completed");
        let (status, _) = server.post("production", secret, &body).await;
        assert_eq!(status, 200, "{id}");
    }
    // Staging has no previous secret: production's old secret does not open it.
    let body = track("m-rot-staging", "Order Completed");
    let (status, _) = server.post("staging", PREVIOUS_SECRET, &body).await;
    assert_eq!(status, 401);
    server.stop().await;
}

async fn post_segment_signed(
    server: &TestServer,
    body: &str,
    signature: &str,
) -> (u16, serde_json::Value) {
    json_of(
        client()
            .post(server.url("/segment/events"))
            .header("content-type", "application/json")
            .header("x-tracklayer-account", ACCOUNT)
            .header("x-tracklayer-environment", "staging")
            .header("x-signature", signature)
            .body(body.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Segment's X-Signature for `signed` with the staging secret (the reference vectors are
/// checked in `ingest::auth`).
fn segment_signature(signed: &str) -> String {
    tracklayer::ingest::auth::sign_segment(
        &tracklayer::config::Secret::new(STAGING_SECRET),
        signed.as_bytes(),
    )
}

/// A message as Segment delivers it: with its times.
fn segment_message(message_id: &str, revenue: f64) -> String {
    let now = chrono::Utc::now().to_rfc3339();
    format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"{message_id}","userId":"u-1","timestamp":"{now}","receivedAt":"{now}","properties":{{"order_id":"o-{message_id}","revenue":{revenue}}}}}"#
    )
}

async fn segment_signatures_single_and_element_0_of_a_batch(store: Store) {
    let server = TestServer::start_for(store, "").await;
    let single = segment_message("m-1", 25.0);
    let (status, reply) = post_segment_signed(&server, &single, &segment_signature(&single)).await;
    assert_eq!(status, 200, "{reply}");

    // What Segment sends for a batch: the HMAC of element 0 only.
    let element0 = segment_message("m-10", 25.0);
    let batch = format!(r#"[{element0},{}]"#, segment_message("m-11", 30.0));
    let (status, reply) = post_segment_signed(&server, &batch, &segment_signature(&element0)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 2);
    // Segment retries the same request: the same bytes are a genuine retry, answered 2xx and
    // stored as duplicates.
    let (status, reply) = post_segment_signed(&server, &batch, &segment_signature(&element0)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["duplicates"], 2);

    // A whole-body HMAC covers strictly more, so it is accepted too (Classic webhooks, proxies).
    let other = format!(
        r#"[{},{}]"#,
        segment_message("m-20", 1.0),
        segment_message("m-21", 2.0)
    );
    let (status, reply) = post_segment_signed(&server, &other, &segment_signature(&other)).await;
    assert_eq!(status, 200, "{reply}");
    // A tampered element 0 fails.
    let tampered = batch.replace("\"revenue\":25", "\"revenue\":2500");
    let (status, reply) =
        post_segment_signed(&server, &tampered, &segment_signature(&element0)).await;
    assert_eq!(status, 401);
    assert_eq!(
        reply["message"],
        "bad signature: X-Signature does not match HMAC-SHA1(secret, element 0 of the batch) for environment `staging`"
    );
    let (status, reply) = post_segment_signed(&server, &single, "00").await;
    assert_eq!(status, 401);
    assert_eq!(
        reply["message"],
        "bad signature: X-Signature does not match HMAC-SHA1(secret, the raw body) for environment `staging`"
    );

    let request_id = &server
        .store_reader()
        .messages_by_message_id("m-11")
        .unwrap()[0]
        .request_id;
    let request = server.store_reader().request(request_id).unwrap().unwrap();
    assert_eq!(
        (request.auth_scheme.as_str(), request.body_shape.as_str()),
        ("segment", "array")
    );
    server.stop().await;
}

/// A captured signature of one message must not carry a forged batch: Segment signs only
/// element 0, so `[<a message seen before>, <forged purchase>]` verifies.
async fn a_captured_segment_signature_cannot_carry_a_forged_batch(store: Store) {
    let server = TestServer::start_for(store, "").await;
    let captured = segment_message("m-seen", 25.0);
    let signature = segment_signature(&captured);
    let (status, _) = post_segment_signed(&server, &captured, &signature).await;
    assert_eq!(status, 200);

    let forged = format!(r#"[{captured},{}]"#, segment_message("m-forged", 99_999.0));
    let (status, reply) = post_segment_signed(&server, &forged, &signature).await;
    assert_eq!(status, 401, "{reply}");
    let reason = reply["message"].as_str().unwrap();
    assert!(
        reason.contains("element 0 (messageId m-seen) was first delivered in request")
            && reason.contains("a re-used signature"),
        "{reason}"
    );
    let stopped = server.stop().await;
    let reader = stopped.store_reader();
    assert!(
        reader
            .messages_by_message_id("m-forged")
            .unwrap()
            .is_empty(),
        "the forged purchase never reaches the pipeline"
    );
    let refused = reader.rejection_counts(0).unwrap();
    assert!(refused.iter().any(|r| r.reason_code == "reused_signature"));
}

async fn an_old_signed_message_is_a_replay_unless_a_replay_window_is_open(store: Store) {
    let server = TestServer::start_for(store, "").await;
    let old = segment_message("m-old", 25.0).replace(
        &chrono::Utc::now().format("%Y-%m-%d").to_string(),
        &(chrono::Utc::now() - chrono::Duration::days(5))
            .format("%Y-%m-%d")
            .to_string(),
    );
    let (status, reply) = post_segment_signed(&server, &old, &segment_signature(&old)).await;
    assert_eq!(status, 401, "{reply}");
    assert!(reply["message"]
        .as_str()
        .unwrap()
        .contains("older than the dedup window: refused as a replay"));
    // An operator lets a Segment Replay through.
    server.allow_replay("staging").await;
    let (status, reply) = post_segment_signed(&server, &old, &segment_signature(&old)).await;
    assert_eq!(status, 200, "{reply}");

    // A signed message without any time cannot be judged: refused.
    let timeless = r#"{"type":"track","event":"x","messageId":"m-t","userId":"u"}"#;
    let (status, reply) =
        post_segment_signed(&server, timeless, &segment_signature(timeless)).await;
    assert_eq!(status, 401, "{reply}");
    server.stop().await;
}

async fn an_environment_can_refuse_segment_signed_batches(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&dir.path().join("t.db"), "").replace(
        "secret = \"tl_test_secret\"",
        "secret = \"tl_test_secret\"\nsegment_batches = false",
    );
    let server = TestServer::start_text_for(store, &dir.path().join("t.db"), &text).await;
    let element0 = segment_message("m-b0", 1.0);
    let batch = format!(r#"[{element0},{}]"#, segment_message("m-b1", 2.0));
    let (status, reply) = post_segment_signed(&server, &batch, &segment_signature(&element0)).await;
    assert_eq!(status, 401);
    assert!(reply["message"]
        .as_str()
        .unwrap()
        .contains("segment_batches = false"));
    // A single signed message still passes.
    let (status, _) = post_segment_signed(&server, &element0, &segment_signature(&element0)).await;
    assert_eq!(status, 200);
    server.stop().await;
}

async fn duplicate_message_id_is_acknowledged_and_stored_once(store: Store) {
    let server = TestServer::start_for(store, "").await;
    let body = track("m-dup", "Order Completed");
    for _ in 0..2 {
        let (status, _) = server.post("production", PRODUCTION_SECRET, &body).await;
        assert_eq!(status, 200);
    }
    // Same messageId with a different payload: still 2xx, kept whole for the analyst.
    let changed = body.replace("129.95", "139.95");
    let (status, reply) = server.post("production", PRODUCTION_SECRET, &changed).await;
    assert_eq!(status, 200);
    assert_eq!(reply["duplicates"], 1);
    assert_eq!(reply["problems"][0]["status"], "duplicate");

    let arrivals = server
        .store_reader()
        .messages_by_message_id("m-dup")
        .unwrap();
    let summary: Vec<(&str, bool)> = arrivals
        .iter()
        .map(|m| (m.status.as_str(), m.raw_stored))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("accepted", true),
            ("duplicate", false),
            ("duplicate", true)
        ]
    );
    assert_eq!(arrivals[1].duplicate_of, Some(arrivals[0].row_id));
    assert_eq!(
        arrivals[1].raw,
        body.as_bytes(),
        "an identical duplicate reads back the original bytes"
    );
    assert_eq!(arrivals[2].raw, changed.as_bytes());
    assert_eq!(server.store_reader().message_counts().unwrap(), (1, 2, 0));
    server.stop().await;
}

async fn one_invalid_message_does_not_fail_its_batch(store: Store) {
    let server = TestServer::start_for(store, "").await;
    let bad = r#"{"type":"track","messageId":"m-bad","userId":"u","properties":{"revenue":1}}"#;
    let batch = format!(
        "[{},{bad},{}]",
        track("m-ok1", "Order Completed"),
        track("m-ok2", "Product Added")
    );
    let (status, reply) = server.post("production", PRODUCTION_SECRET, &batch).await;
    assert_eq!(status, 200);
    assert_eq!(
        (reply["accepted"].clone(), reply["invalid"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(
        reply["problems"][0],
        json!({"index": 1, "messageId": "m-bad", "status": "invalid", "reason": "event is missing on a track call"})
    );
    let stored = server
        .store_reader()
        .messages_by_message_id("m-bad")
        .unwrap();
    assert_eq!(stored[0].status, "invalid");
    assert_eq!(
        stored[0].reason.as_deref(),
        Some("event is missing on a track call")
    );
    assert_eq!(stored[0].raw, bad.as_bytes());
    server.stop().await;
}

async fn unparseable_oversized_and_wrong_content_type(store: Store) {
    let server = TestServer::start_for_with(store, "max_body_bytes = 2048").await;
    let url = server.url("/segment/events");

    let (status, reply) = json_of(
        signed(
            &client(),
            &url,
            "production",
            PRODUCTION_SECRET,
            "{\"type\": tra",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .starts_with("body is not valid JSON"),
        "{reply}"
    );

    let big = format!(
        "[{}]",
        vec![track("m-big", "Order Completed"); 20].join(",")
    );
    let (status, reply) = server.post("production", PRODUCTION_SECRET, &big).await;
    assert_eq!(status, 413);
    assert_eq!(
        reply["message"],
        "body exceeds the 2048-byte limit (server.max_body_bytes); lower the webhook's batch_size"
    );

    let body = track("m-ct", "Order Completed");
    let with_content_type = |content_type: &str| {
        let request = signed(&client(), &url, "production", PRODUCTION_SECRET, &body)
            .build()
            .unwrap();
        let mut request = request;
        request
            .headers_mut()
            .insert("content-type", content_type.parse().unwrap());
        client().execute(request)
    };
    let (status, reply) = json_of(with_content_type("text/plain").await.unwrap()).await;
    assert_eq!(status, 415);
    assert_eq!(
        reply["message"],
        "Content-Type must be application/json, got `text/plain`"
    );

    // With a charset parameter the content type is fine.
    let response = with_content_type("application/json; charset=utf-8")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

async fn analytics_node_shaped_v1_batch(store: Store) {
    let server = TestServer::start_for(store, "").await;
    // The body @segment/analytics-node posts: {batch, writeKey, sentAt}, with Basic auth.
    let body = json!({
        "batch": [
            {
                "type": "identify", "userId": "cust_34982", "traits": {"email": "peter@example.com"},
                "messageId": "node-next-1700000000000-aaaa", "timestamp": "2026-04-23T10:15:29.000Z",
                "context": {"library": {"name": "@segment/analytics-node", "version": "2.1.0"}},
                "integrations": {}, "_metadata": {"jsRuntime": "node"}
            },
            {
                "type": "track", "event": "Order Completed", "userId": "cust_34982",
                "properties": {"order_id": "ORD-1", "revenue": 10},
                "messageId": "node-next-1700000000001-bbbb", "timestamp": "2026-04-23T10:15:30.000Z",
                "context": {"library": {"name": "@segment/analytics-node", "version": "2.1.0"}},
                "integrations": {}, "_metadata": {"jsRuntime": "node"}
            }
        ],
        "writeKey": WRITE_KEY,
        "sentAt": "2026-04-23T10:15:31.000Z"
    })
    .to_string();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"))
    );
    let (status, reply) = json_of(
        client()
            .post(server.url("/v1/batch"))
            .header("content-type", "application/json")
            .header("authorization", &basic)
            .header("user-agent", "analytics-node-next/latest")
            .body(body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 2);
    let stored = &server
        .store_reader()
        .messages_by_message_id("node-next-1700000000001-bbbb")
        .unwrap()[0];
    assert_eq!(stored.environment, "production");
    let request = server
        .store_reader()
        .request(&stored.request_id)
        .unwrap()
        .unwrap();
    assert_eq!(
        (request.auth_scheme.as_str(), request.path.as_str()),
        ("write_key", "/v1/batch")
    );

    // /v1/track may leave `type` out: the path implies it.
    let (status, reply) = json_of(
        client()
            .post(server.url("/v1/track"))
            .header("content-type", "application/json")
            .header("authorization", &basic)
            .body(r#"{"event":"Lead Submitted","userId":"u-9","messageId":"v1-track-1"}"#)
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
        .store_reader()
        .messages_by_message_id("v1-track-1")
        .unwrap()[0];
    assert_eq!(stored.message_type.as_deref(), Some("track"));

    // A wrong or missing write key is refused.
    let (status, reply) = json_of(
        client()
            .post(server.url("/v1/batch"))
            .header("content-type", "application/json")
            .header("authorization", "Basic d3Jvbmc6")
            .body(body.replace(WRITE_KEY, "wrong"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, reply["message"].clone()),
        (401, json!("unknown write key"))
    );
    let (status, _) = json_of(
        client()
            .post(server.url("/v1/track"))
            .header("content-type", "application/json")
            .body(r#"{"event":"x","userId":"u","messageId":"v1-nokey"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    // The body's writeKey alone (older SDKs) is accepted.
    let (status, _) = json_of(
        client()
            .post(server.url("/v1/batch"))
            .header("content-type", "application/json")
            .body(body.replace("node-next-", "body-key-"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    server.stop().await;
}

async fn healthz_answers(store: Store) {
    let server = TestServer::start_for(store, "").await;
    let response = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

on_both_stores!(
    an_environment_can_refuse_segment_signed_batches,
    accepts_a_single_message_and_stores_it_byte_for_byte,
    accepts_a_bare_array_and_a_batch_object,
    each_authentication_failure_names_its_reason_and_is_recorded,
    rejected_requests_are_recorded_without_body_or_secret,
    timestamp_window_is_five_minutes_both_ways,
    previous_secret_is_accepted_during_rotation,
    segment_signatures_single_and_element_0_of_a_batch,
    a_captured_segment_signature_cannot_carry_a_forged_batch,
    an_old_signed_message_is_a_replay_unless_a_replay_window_is_open,
    duplicate_message_id_is_acknowledged_and_stored_once,
    one_invalid_message_does_not_fail_its_batch,
    unparseable_oversized_and_wrong_content_type,
    analytics_node_shaped_v1_batch,
    healthz_answers,
);
