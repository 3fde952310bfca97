//! Delivery against the sandbox APIs over real HTTP: retries with the same event_id, Retry-After,
//! dead letters, Google partial failures, TikTok codes, isolation between destinations, restart
//! in the middle of a retry schedule, replay, profile-import, signed webhooks, the warehouse.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tracklayer::sandbox::{Fault, Platform, Sandbox};
use tracklayer::store::StoredDelivery;

const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

async fn sandbox() -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(listener).await.unwrap();
    sandbox.state.webhook_key(
        "orders",
        tracklayer::destinations::webhook::decode_secret(WEBHOOK_SECRET).unwrap(),
    );
    sandbox
}

fn destinations(sandbox: &Sandbox, schedule: &str) -> String {
    let url = sandbox.url();
    format!(
        r#"
[[destinations]]
name = "meta"
kind = "meta_capi"
endpoint = "{url}"
retry_schedule = {schedule}
pixel_id = "1234567890123456"
access_token = "EAAB_TEST"
test_event_code = "TEST12345"

[[destinations]]
name = "google"
kind = "google_ads"
endpoint = "{url}"
retry_schedule = {schedule}
customer_id = "1234567890"
conversion_actions = {{ purchase = "555000111" }}
access_token = "ya29.TEST"
validate_only = false

[[destinations]]
name = "klaviyo"
kind = "klaviyo"
endpoint = "{url}"
retry_schedule = {schedule}
api_key = "pk_TEST_0123456789"

[[destinations]]
name = "tiktok"
kind = "tiktok"
endpoint = "{url}"
retry_schedule = {schedule}
pixel_code = "CABCDEF1234567890XYZ"
access_token = "TT_TEST"

[[destinations]]
name = "orders"
kind = "webhook"
retry_schedule = {schedule}
url = "{url}/webhooks/orders"
secret = "{WEBHOOK_SECRET}"

[[destinations]]
name = "warehouse"
kind = "warehouse"
retry_schedule = {schedule}
path = "warehouse.db"
"#
    )
}

fn purchase(message_id: &str, order: &str, revenue: f64) -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"{message_id}","userId":"user_8f3a2c","anonymousId":"anon-1","timestamp":"{now}",
        "context":{{"ip":"203.0.113.42","userAgent":"Mozilla/5.0 (Macintosh)","traits":{{"email":"Jane.Doe@Gmail.com","phone":"+1 (415) 555-0123"}},
            "page":{{"url":"https://shop.example.com/thanks?gclid=Cj0KCQiA{order}"}}}},
        "properties":{{"order_id":"{order}","revenue":{revenue},"currency":"USD","products":[{{"product_id":"SKU-123","name":"Sock","price":{revenue},"quantity":1}}]}}}}"#
    )
}

async fn post(server: &TestServer, body: &str) {
    let (status, reply) = server.post("production", PRODUCTION_SECRET, body).await;
    assert_eq!(status, 200, "{reply}");
}

/// Wait until the deliveries of `message_id` satisfy `done`; returns them.
async fn wait_for(
    server: &TestServer,
    message_id: &str,
    timeout: Duration,
    done: impl Fn(&[StoredDelivery]) -> bool,
) -> Vec<StoredDelivery> {
    let start = Instant::now();
    loop {
        let deliveries = server
            .trace(message_id)
            .await
            .map(|t| t.deliveries)
            .unwrap_or_default();
        if done(&deliveries) {
            return deliveries;
        }
        assert!(
            start.elapsed() < timeout,
            "gave up waiting; deliveries of {message_id}: {deliveries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn of<'a>(deliveries: &'a [StoredDelivery], destination: &str) -> &'a StoredDelivery {
    deliveries
        .iter()
        .find(|d| d.destination == destination)
        .unwrap_or_else(|| panic!("no delivery to {destination}: {deliveries:#?}"))
}

fn settled(deliveries: &[StoredDelivery]) -> bool {
    deliveries.len() == 6
        && deliveries
            .iter()
            .all(|d| d.status == "delivered" || d.status == "dead")
}

async fn every_destination_receives_a_valid_purchase(store: Store) {
    let sandbox = sandbox().await;
    let server = TestServer::start_for(store, &destinations(&sandbox, "[1, 1]")).await;
    post(&server, &purchase("m-all", "ORD-1", 129.98)).await;
    let deliveries = wait_for(&server, "m-all", Duration::from_secs(15), settled).await;
    for d in &deliveries {
        assert_eq!(d.status, "delivered", "{d:#?}");
        assert_eq!(d.attempts, 1);
    }
    // What each platform saw passed its checks.
    for platform in [
        Platform::Meta,
        Platform::Google,
        Platform::Klaviyo,
        Platform::Tiktok,
        Platform::Webhook,
    ] {
        let received = sandbox.state.received(platform);
        assert_eq!(received.len(), 1, "{platform:?}");
        assert_eq!(received[0].refusal, None, "{platform:?}: {:?}", received[0]);
    }
    let meta = &sandbox.state.received(Platform::Meta)[0];
    assert_eq!(meta.body["data"][0]["event_id"], "ORD-1");
    assert_eq!(meta.body["test_event_code"], "TEST12345");
    // Credentials are redacted in what TrackLayer keeps.
    let attempt = of(&deliveries, "meta").history[0].request.clone().unwrap();
    assert!(!attempt.url.unwrap().contains("access_token"));
    let kept = attempt.body.unwrap();
    assert!(
        kept.contains(r#""access_token":"REDACTED""#) && !kept.contains("EAAB_TEST"),
        "{kept}"
    );
    let google = of(&deliveries, "google").history[0]
        .request
        .clone()
        .unwrap();
    let headers = google.headers.unwrap().to_string();
    assert!(
        headers.contains("Bearer REDACTED") && !headers.contains("ya29.TEST"),
        "{headers}"
    );
    // The warehouse has one row for the event.
    let rows =
        tracklayer::store::warehouse::read_rows(&server.db.parent().unwrap().join("warehouse.db"))
            .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1, "purchase");
    assert_eq!(rows[0].2, Some(129.98));
    // The inspect trace carries the deliveries.
    let json = tracklayer::inspect::to_json(&server.trace("m-all").await.unwrap());
    let meta_delivery = json["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == "meta")
        .unwrap();
    assert_eq!(meta_delivery["status"], "delivered");
    assert_eq!(meta_delivery["last_status_code"], 200);
    assert_eq!(
        meta_delivery["request_body"]["data"][0]["event_name"],
        "Purchase"
    );
    server.stop().await;
}

async fn server_errors_retry_with_the_same_event_id(store: Store) {
    let sandbox = sandbox().await;
    sandbox
        .state
        .push_fault(Platform::Meta, Fault::Status { status: 500 });
    sandbox
        .state
        .push_fault(Platform::Meta, Fault::Status { status: 500 });
    let server = TestServer::start_for(store, &destinations(&sandbox, "[1, 1, 1]")).await;
    post(&server, &purchase("m-500", "ORD-500", 10.0)).await;
    let deliveries = wait_for(&server, "m-500", Duration::from_secs(15), settled).await;
    let meta = of(&deliveries, "meta");
    assert_eq!((meta.status.as_str(), meta.attempts), ("delivered", 3));
    let outcomes: Vec<&str> = meta.history.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["retry", "retry", "delivered"]);
    let codes: Vec<Option<i64>> = meta
        .history
        .iter()
        .map(|a| a.request.as_ref().and_then(|r| r.status_code))
        .collect();
    assert_eq!(codes, [Some(500), Some(500), Some(200)]);
    let ids: Vec<Value> = sandbox
        .state
        .received(Platform::Meta)
        .iter()
        .map(|r| r.body["data"][0]["event_id"].clone())
        .collect();
    assert_eq!(
        ids,
        [
            Value::from("ORD-500"),
            Value::from("ORD-500"),
            Value::from("ORD-500")
        ]
    );
    // The other destinations were not held up.
    assert_eq!(of(&deliveries, "tiktok").attempts, 1);
    server.stop().await;
}

async fn retry_after_is_honoured(store: Store) {
    let sandbox = sandbox().await;
    sandbox.state.push_fault(
        Platform::Klaviyo,
        Fault::RateLimit {
            retry_after_secs: 2,
        },
    );
    let server = TestServer::start_for(store, &destinations(&sandbox, "[1, 1]")).await;
    post(&server, &purchase("m-429", "ORD-429", 10.0)).await;
    let deliveries = wait_for(&server, "m-429", Duration::from_secs(15), settled).await;
    let klaviyo = of(&deliveries, "klaviyo");
    assert_eq!(
        (klaviyo.status.as_str(), klaviyo.attempts),
        ("delivered", 2)
    );
    let first = &klaviyo.history[0];
    let second = &klaviyo.history[1];
    assert_eq!(first.request.as_ref().unwrap().status_code, Some(429));
    assert!(
        first.next_attempt_ms.unwrap() - first.at_ms >= 2000,
        "{first:?}"
    );
    assert!(
        second.at_ms - first.at_ms >= 2000,
        "retried after {} ms",
        second.at_ms - first.at_ms
    );
    server.stop().await;
}

async fn permanent_errors_dead_letter_at_once(store: Store) {
    let sandbox = sandbox().await;
    sandbox.state.push_fault(Platform::Meta, Fault::BadToken);
    let server = TestServer::start_for(store, &destinations(&sandbox, "[1, 1]")).await;
    post(&server, &purchase("m-400", "ORD-400", 10.0)).await;
    let deliveries = wait_for(&server, "m-400", Duration::from_secs(15), settled).await;
    let meta = of(&deliveries, "meta");
    assert_eq!((meta.status.as_str(), meta.attempts), ("dead", 1));
    assert_eq!(meta.last_status_code, Some(400));
    assert!(
        meta.last_error
            .as_deref()
            .unwrap()
            .contains("Meta error 190"),
        "{meta:?}"
    );
    let response = meta.history[0]
        .request
        .as_ref()
        .unwrap()
        .response_body
        .clone()
        .unwrap();
    assert!(
        response.contains("could not be decrypted"),
        "the response is kept: {response}"
    );
    server.stop().await;
}

/// A token Meta rejects (error 190) fails every event of the batch the same way: each goes dead
/// at its first attempt with the same reason, none is retried or split off alone.
async fn a_bad_token_kills_a_whole_batch_the_same_way(store: Store) {
    let sandbox = sandbox().await;
    sandbox
        .state
        .set_sticky(Platform::Meta, Some(Fault::BadToken));
    let server = TestServer::start_for(store, &destinations(&sandbox, "[1, 1]")).await;
    let batch = format!(
        "[{}]",
        (0..6)
            .map(|i| purchase(&format!("m-190-{i}"), &format!("ORD-190-{i}"), 10.0))
            .collect::<Vec<_>>()
            .join(",")
    );
    post(&server, &batch).await;
    for i in 0..6 {
        let deliveries = wait_for(
            &server,
            &format!("m-190-{i}"),
            Duration::from_secs(15),
            settled,
        )
        .await;
        let meta = of(&deliveries, "meta");
        assert_eq!(
            (meta.status.as_str(), meta.attempts),
            ("dead", 1),
            "{meta:?}"
        );
        assert!(
            meta.last_error
                .as_deref()
                .unwrap()
                .contains("Meta error 190"),
            "{meta:?}"
        );
        assert!(meta.history.iter().all(|a| a.outcome == "dead"), "{meta:?}");
    }
    server.stop().await;
}

/// The same destinations with Google on the legacy Ads API path (an allowlisted token).
fn destinations_with_legacy_google(sandbox: &Sandbox, schedule: &str) -> String {
    destinations(sandbox, schedule).replace(
        "customer_id = \"1234567890\"",
        "api = \"google_ads_api\"\ndeveloper_token = \"DEV\"\ncustomer_id = \"1234567890\"",
    )
}

async fn google_partial_failure_retries_only_the_failed_row(store: Store) {
    let sandbox = sandbox().await;
    sandbox.state.push_fault(
        Platform::Google,
        Fault::PartialFailure {
            code: "TRANSIENT_ERROR".into(),
        },
    );
    let server =
        TestServer::start_for(store, &destinations_with_legacy_google(&sandbox, "[1, 1]")).await;
    // Both orders in one Segment batch: one commit, one Google request.
    post(
        &server,
        &format!(
            "[{},{}]",
            purchase("m-g1", "ORD-G1", 10.0),
            purchase("m-g2", "ORD-G2", 20.0)
        ),
    )
    .await;
    let first = wait_for(&server, "m-g1", Duration::from_secs(15), settled).await;
    let second = wait_for(&server, "m-g2", Duration::from_secs(15), settled).await;
    let (g1, g2) = (of(&first, "google"), of(&second, "google"));
    assert_eq!((g1.status.as_str(), g1.attempts), ("delivered", 2));
    assert_eq!((g2.status.as_str(), g2.attempts), ("delivered", 1));
    let requests = sandbox.state.received(Platform::Google);
    let rows: Vec<Vec<Value>> = requests
        .iter()
        .map(|r| {
            r.body["conversions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["orderId"].clone())
                .collect()
        })
        .collect();
    assert_eq!(
        rows,
        [
            vec![Value::from("ORD-G1"), Value::from("ORD-G2")],
            vec![Value::from("ORD-G1")]
        ]
    );
    server.stop().await;
}

async fn tiktok_codes_in_a_200(store: Store) {
    let sandbox = sandbox().await;
    sandbox
        .state
        .push_fault(Platform::Tiktok, Fault::TiktokCode { code: 40100 });
    let server = TestServer::start_for(store, &destinations(&sandbox, "[1, 1]")).await;
    post(&server, &purchase("m-tt1", "ORD-TT1", 10.0)).await;
    let deliveries = wait_for(&server, "m-tt1", Duration::from_secs(15), settled).await;
    let tiktok = of(&deliveries, "tiktok");
    assert_eq!((tiktok.status.as_str(), tiktok.attempts), ("delivered", 2));

    sandbox
        .state
        .push_fault(Platform::Tiktok, Fault::TiktokCode { code: 40002 });
    post(&server, &purchase("m-tt2", "ORD-TT2", 10.0)).await;
    let deliveries = wait_for(&server, "m-tt2", Duration::from_secs(15), settled).await;
    let tiktok = of(&deliveries, "tiktok");
    assert_eq!((tiktok.status.as_str(), tiktok.attempts), ("dead", 1));
    assert!(tiktok
        .last_error
        .as_deref()
        .unwrap()
        .starts_with("TikTok 40002"));
    server.stop().await;
}

async fn one_destination_down_does_not_slow_another(store: Store) {
    let sandbox = sandbox().await;
    // Meta hangs past its 5 s timeout on every request.
    sandbox
        .state
        .set_sticky(Platform::Meta, Some(Fault::Timeout { millis: 8000 }));
    let server = TestServer::start_for(store, &destinations(&sandbox, "[30]")).await;
    for i in 0..3 {
        post(
            &server,
            &purchase(&format!("m-iso{i}"), &format!("ORD-ISO{i}"), 10.0),
        )
        .await;
    }
    for i in 0..3 {
        let id = format!("m-iso{i}");
        let deliveries = wait_for(&server, &id, Duration::from_secs(4), |ds| {
            ds.len() == 6
                && ds
                    .iter()
                    .filter(|d| d.destination != "meta")
                    .all(|d| d.status == "delivered")
        })
        .await;
        // Meta has not even answered its first request yet.
        assert_ne!(of(&deliveries, "meta").status, "delivered");
    }
    sandbox.state.set_sticky(Platform::Meta, None);
    server.stop().await;
}

async fn restart_in_the_middle_of_a_retry_schedule_loses_nothing(store: Store) {
    let sandbox = sandbox().await;
    sandbox
        .state
        .set_sticky(Platform::Meta, Some(Fault::Status { status: 503 }));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let config = destinations(&sandbox, "[3, 3]");
    // The same store across the restart: the file, or the database.
    let pg = (store == Store::Postgres).then(|| common::postgres::TestDatabase::create().unwrap());
    let start = || async {
        match &pg {
            Some(pg) => TestServer::start_on_postgres(&pg.url, &config).await,
            None => TestServer::start_configured(&db, "", &config).await,
        }
    };
    let server = start().await;
    post(&server, &purchase("m-restart", "ORD-R", 10.0)).await;
    // Stopped with Meta between its attempts and every other destination done: what this
    // test is about is the retry schedule surviving the restart (a delivery still in flight at
    // a stop waits out its lease instead, about a minute).
    wait_for(&server, "m-restart", Duration::from_secs(10), |ds| {
        ds.len() == 6
            && ds.iter().all(|d| {
                if d.destination == "meta" {
                    d.attempts == 1 && d.status == "pending"
                } else {
                    d.status == "delivered"
                }
            })
    })
    .await;
    server.stop().await;

    sandbox.state.set_sticky(Platform::Meta, None);
    let server = start().await;
    let deliveries = wait_for(&server, "m-restart", Duration::from_secs(15), settled).await;
    let meta = of(&deliveries, "meta");
    assert_eq!((meta.status.as_str(), meta.attempts), ("delivered", 2));
    let ids: Vec<Value> = sandbox
        .state
        .received(Platform::Meta)
        .iter()
        .map(|r| r.body["data"][0]["event_id"].clone())
        .collect();
    assert_eq!(ids, [Value::from("ORD-R"), Value::from("ORD-R")]);
    server.stop().await;
}

async fn dead_deliveries_can_be_replayed(store: Store) {
    let sandbox = sandbox().await;
    sandbox.state.push_fault(Platform::Meta, Fault::BadToken);
    let server = TestServer::start_for(store, &destinations(&sandbox, "[1]")).await;
    post(&server, &purchase("m-replay", "ORD-RP", 10.0)).await;
    wait_for(&server, "m-replay", Duration::from_secs(15), |ds| {
        ds.iter()
            .any(|d| d.destination == "meta" && d.status == "dead")
    })
    .await;
    let requeued = server.requeue("meta", "dead").await;
    assert_eq!(requeued, 1);
    let deliveries = wait_for(&server, "m-replay", Duration::from_secs(15), |ds| {
        ds.iter()
            .any(|d| d.destination == "meta" && d.status == "delivered")
    })
    .await;
    assert_eq!(of(&deliveries, "meta").attempts, 2);
    server.stop().await;
}

async fn identify_goes_to_klaviyo_profile_import(store: Store) {
    let sandbox = sandbox().await;
    let server = TestServer::start_for(store, &destinations(&sandbox, "[1]")).await;
    post(
        &server,
        r#"{"type":"identify","messageId":"m-ident","userId":"user_8f3a2c","traits":{"email":"Jane.Doe@Gmail.com","phone":"+1 (415) 555-0123","firstName":"Jane","plan":"premium"}}"#,
    )
    .await;
    let deliveries = wait_for(&server, "m-ident", Duration::from_secs(15), |ds| {
        ds.len() == 1 && ds[0].status == "delivered"
    })
    .await;
    assert_eq!(deliveries[0].destination, "klaviyo");
    let received = sandbox.state.received(Platform::Klaviyo);
    assert_eq!(received[0].path, "/api/profile-import");
    assert_eq!(
        received[0].body["data"]["attributes"]["email"],
        "jane.doe@gmail.com"
    );
    assert_eq!(
        received[0].body["data"]["attributes"]["properties"]["plan"],
        "premium"
    );
    server.stop().await;
}

async fn events_too_old_for_meta_dead_letter_without_a_request(store: Store) {
    let sandbox = sandbox().await;
    let server = TestServer::start_for(store, &destinations(&sandbox, "[1]")).await;
    let old = (chrono::Utc::now() - chrono::Duration::days(8))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let body = purchase("m-old", "ORD-OLD", 10.0).replace(
        &chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        &old,
    );
    assert!(body.contains(&old));
    post(&server, &body).await;
    let deliveries = wait_for(&server, "m-old", Duration::from_secs(15), settled).await;
    let meta = of(&deliveries, "meta");
    assert_eq!(meta.status, "dead");
    assert!(
        meta.last_error
            .as_deref()
            .unwrap()
            .contains("accepts events up to 7 days old"),
        "{meta:?}"
    );
    assert!(meta.history[0].request.is_none(), "nothing was sent");
    assert_eq!(
        of(&deliveries, "klaviyo").status,
        "delivered",
        "Klaviyo has no such window"
    );
    server.stop().await;
}

async fn a_failing_destination_pauses_itself_and_resumes_by_probe(store: Store) {
    let sandbox = sandbox().await;
    sandbox
        .state
        .set_sticky(Platform::Tiktok, Some(Fault::Status { status: 503 }));
    let config = format!(
        r#"
[[destinations]]
name = "tiktok"
kind = "tiktok"
endpoint = "{}"
retry_schedule = [1, 1, 1, 1, 1, 1, 1, 1]
pixel_code = "CABCDEF1234567890XYZ"
access_token = "TT_TEST"
batch_size = 1
concurrency = 4
"#,
        sandbox.url()
    );
    let server = TestServer::start_for(store, &config).await;
    let batch: Vec<String> = (0..10)
        .map(|i| purchase(&format!("m-cb{i}"), &format!("ORD-CB{i}"), 1.0))
        .collect();
    post(&server, &format!("[{}]", batch.join(","))).await;

    let start = Instant::now();
    let pause = loop {
        if let Some(p) = server.destination_pause("tiktok").await {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the destination never paused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        pause.reason.contains("of the last") && pause.reason.contains("paused for"),
        "{pause:?}"
    );
    let during = sandbox.state.received(Platform::Tiktok).len();

    // The API recovers: a probe goes through, the destination resumes and drains its queue.
    sandbox.state.set_sticky(Platform::Tiktok, None);
    for i in 0..10 {
        wait_for(
            &server,
            &format!("m-cb{i}"),
            Duration::from_secs(20),
            |ds| ds.len() == 1 && ds[0].status == "delivered",
        )
        .await;
    }
    assert!(
        server.destination_pause("tiktok").await.is_none(),
        "resumed"
    );
    assert!(sandbox.state.received(Platform::Tiktok).len() > during);
    server.stop().await;
}

async fn a_batching_webhook_carries_many_events_per_signed_request(store: Store) {
    let sandbox = sandbox().await;
    let url = sandbox.url();
    let server = TestServer::start_for(
        store,
        &format!(
            r#"
[[destinations]]
name = "orders"
kind = "webhook"
url = "{url}/webhooks/orders"
secret = "{WEBHOOK_SECRET}"
batch_size = 100
"#
        ),
    )
    .await;
    // One request with 40 orders: the worker sends them together, not 40 requests.
    let batch: Vec<String> = (0..40)
        .map(|i| purchase(&format!("wb-{i}"), &format!("WB-{i}"), 10.0 + i as f64))
        .collect();
    post(&server, &format!("[{}]", batch.join(","))).await;
    for i in 0..40 {
        wait_for(&server, &format!("wb-{i}"), Duration::from_secs(20), |d| {
            d.len() == 1 && d[0].status == "delivered"
        })
        .await;
    }
    let received = sandbox.state.received(Platform::Webhook);
    assert!(
        received.iter().all(|r| r.status == 204),
        "the receiver refused a request: {received:#?}"
    );
    let items: usize = received
        .iter()
        .map(|r| r.body["items"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(items, 40, "every event in a tracklayer.batch body");
    assert!(
        received.len() < 40,
        "{} requests for 40 events: not batched",
        received.len()
    );
    let first = &received[0];
    assert_eq!(first.body["type"], "tracklayer.batch");
    assert_eq!(first.body["items"][0]["type"], "tracklayer.event");
    assert!(first.body["items"][0]["event"]["event_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("ev_purchase_")));
    server.stop().await;
}

on_both_stores!(
    every_destination_receives_a_valid_purchase,
    server_errors_retry_with_the_same_event_id,
    retry_after_is_honoured,
    permanent_errors_dead_letter_at_once,
    a_bad_token_kills_a_whole_batch_the_same_way,
    google_partial_failure_retries_only_the_failed_row,
    tiktok_codes_in_a_200,
    one_destination_down_does_not_slow_another,
    restart_in_the_middle_of_a_retry_schedule_loses_nothing,
    dead_deliveries_can_be_replayed,
    identify_goes_to_klaviyo_profile_import,
    events_too_old_for_meta_dead_letter_without_a_request,
    a_failing_destination_pauses_itself_and_resumes_by_probe,
    a_batching_webhook_carries_many_events_per_signed_request,
);

/// A platform that sends its status line at once and then drips its answer a byte a second:
/// the deadline cuts it, and nobody can say which events it took, so the delivery is retried
/// (the platform dedups on event_id), never counted delivered on the status alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cut_at_the_deadline_is_a_timeout_and_retried() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 64\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for byte in br#"{"events_received":1,"fbtrace_id":"drip"}"#.iter() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if socket.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let server = TestServer::start_with_toml(&format!(
        r#"
[[destinations]]
name = "meta"
kind = "meta_capi"
endpoint = "{url}"
retry_schedule = [600]
pixel_id = "1234567890123456"
access_token = "EAAB_TEST"
"#
    ))
    .await;
    post(&server, &purchase("drip-1", "ORD-DRIP-1", 10.0)).await;
    let deliveries = wait_for(&server, "drip-1", Duration::from_secs(30), |d| {
        d.len() == 1 && !d[0].history.is_empty()
    })
    .await;
    let meta = of(&deliveries, "meta");
    assert_eq!(meta.status, "pending", "{meta:#?}");
    let error = meta.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("broke off after its status line (HTTP 200)") && error.contains("timeout"),
        "{meta:#?}"
    );
    server.stop().await;
}

fn ga4_and_klaviyo(url: &str) -> String {
    format!(
        r#"
[[destinations]]
name = "ga4"
kind = "ga4"
endpoint = "{url}"
retry_schedule = [1, 1, 1]
measurement_id = "G-TEST12345"
api_secret = "ga4-api-secret-value"

[[destinations]]
name = "klaviyo"
kind = "klaviyo"
endpoint = "{url}"
retry_schedule = [1, 1, 1]
api_key = "pk_TEST_0123456789"
"#
    )
}

/// Every attempt row of the store's deliveries, and the deliveries' attempt counts, via traces.
async fn settled_everywhere(
    server: &TestServer,
    ids: &[String],
    timeout: Duration,
) -> Vec<StoredDelivery> {
    let start = Instant::now();
    loop {
        let mut all = Vec::new();
        for id in ids {
            all.extend(
                server
                    .trace(id)
                    .await
                    .map(|t| t.deliveries)
                    .unwrap_or_default(),
            );
        }
        if all.len() >= ids.len() && all.iter().all(|d| d.status == "delivered") {
            return all;
        }
        assert!(
            start.elapsed() < timeout,
            "gave up: {} of {} deliveries delivered",
            all.iter().filter(|d| d.status == "delivered").count(),
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A GA4 queue of many clients (one request each) and a Klaviyo queue of profiles drain with
/// one attempt per delivery: what a worker claimed is sent, never handed back for not fitting
/// a request. A client's several events share one request; a deep profile queue goes to
/// Klaviyo as bulk import jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_and_many_profiles_drain_with_one_attempt_each() {
    let sandbox = sandbox().await;
    let server = TestServer::start_with_toml(&ga4_and_klaviyo(&sandbox.url())).await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // 200 clients with one purchase each, and one client with three.
    let mut messages: Vec<String> = (0..200)
        .map(|n| {
            format!(
                r#"{{"type":"track","event":"Order Completed","messageId":"c-{n}","anonymousId":"client-{n}","timestamp":"{now}","properties":{{"order_id":"O-{n}","revenue":5,"currency":"EUR"}}}}"#
            )
        })
        .collect();
    messages.extend((0..3).map(|n| {
        format!(
            r#"{{"type":"track","event":"Order Completed","messageId":"same-{n}","anonymousId":"one-client","timestamp":"{now}","properties":{{"order_id":"S-{n}","revenue":5,"currency":"EUR"}}}}"#
        )
    }));
    // 200 people identified: profiles for Klaviyo.
    messages.extend((0..200).map(|n| {
        format!(
            r#"{{"type":"identify","messageId":"p-{n}","userId":"person-{n}","timestamp":"{now}","traits":{{"email":"person{n}@example.com","first_name":"P{n}"}}}}"#
        )
    }));
    post(&server, &format!("[{}]", messages.join(","))).await;

    let tracks: Vec<String> = (0..200)
        .map(|n| format!("c-{n}"))
        .chain((0..3).map(|n| format!("same-{n}")))
        .collect();
    let profiles: Vec<String> = (0..200).map(|n| format!("p-{n}")).collect();
    let mut deliveries = settled_everywhere(&server, &tracks, Duration::from_secs(60)).await;
    deliveries.extend(settled_everywhere(&server, &profiles, Duration::from_secs(60)).await);
    let ga4: Vec<&StoredDelivery> = deliveries
        .iter()
        .filter(|d| d.destination == "ga4")
        .collect();
    let klaviyo_profiles: Vec<&StoredDelivery> = deliveries
        .iter()
        .filter(|d| {
            d.destination == "klaviyo" && d.kind == "klaviyo" && d.destination_event == "profile"
        })
        .collect();
    assert_eq!(ga4.len(), 203);
    assert_eq!(klaviyo_profiles.len(), 200, "{:#?}", &deliveries[..2]);
    for d in &deliveries {
        assert_eq!(
            (d.attempts, d.history.len()),
            (1, 1),
            "one send, one row: {d:#?}"
        );
    }
    // One request per client; the client with three events sent them together.
    let ga4_requests = sandbox.state.received(Platform::Ga4);
    assert_eq!(ga4_requests.len(), 201, "one request per client");
    assert!(ga4_requests
        .iter()
        .any(|r| r.body["client_id"] == "one-client"
            && r.body["events"].as_array().unwrap().len() == 3));
    let bulk_imports = sandbox
        .state
        .received(Platform::Klaviyo)
        .into_iter()
        .filter(|r| r.path == "/api/profile-bulk-import-jobs" && r.status == 202)
        .count();
    assert!(
        bulk_imports >= 1,
        "a deep profile queue goes as bulk import jobs"
    );
    server.stop().await;
}

/// A platform that answers 429 with Retry-After while the worker holds what it claimed: the
/// rest wait in the worker until the time given instead of each meeting the same answer, and
/// then all go out. Only the requests that went out leave attempt rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_holds_the_endpoint_and_nothing_spins() {
    let sandbox = sandbox().await;
    let server = TestServer::start_with_toml(&ga4_and_klaviyo(&sandbox.url())).await;
    // Rate-limited for 2.5 s: every request meets a 429 meanwhile.
    sandbox.state.set_sticky(
        Platform::Ga4,
        Some(Fault::RateLimit {
            retry_after_secs: 2,
        }),
    );
    let state = sandbox.state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        state.set_sticky(Platform::Ga4, None);
    });
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let messages: Vec<String> = (0..40)
        .map(|n| {
            format!(
                r#"{{"type":"track","event":"Order Completed","messageId":"r-{n}","anonymousId":"rl-client-{n}","timestamp":"{now}","properties":{{"order_id":"R-{n}","revenue":5,"currency":"EUR"}}}}"#
            )
        })
        .collect();
    let started = Instant::now();
    post(&server, &format!("[{}]", messages.join(","))).await;
    let ids: Vec<String> = (0..40).map(|n| format!("r-{n}")).collect();
    let deliveries = settled_everywhere(&server, &ids, Duration::from_secs(30)).await;
    let ga4: Vec<&StoredDelivery> = deliveries
        .iter()
        .filter(|d| d.destination == "ga4")
        .collect();
    let rate_limited = sandbox
        .state
        .received(Platform::Ga4)
        .iter()
        .filter(|r| r.status == 429)
        .count();
    let attempt_rows: usize = ga4.iter().map(|d| d.history.len()).sum();
    // Two requests at once when the first 429 came back, two more when its 2 s were up: not
    // the 40 items each (nor each again on every retry, until the breaker stops them).
    assert!(
        (1..=4).contains(&rate_limited),
        "{rate_limited} requests met the 429; the rest waited in the worker"
    );
    assert_eq!(
        attempt_rows,
        40 + rate_limited,
        "a row per request that carried an item"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "nothing went through while the platform refused"
    );
    server.stop().await;
}
