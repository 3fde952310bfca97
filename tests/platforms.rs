//! The platforms as they are at the end of 2026, over loopback HTTP against stand-ins that
//! validate as the platforms document: Google through the Data Manager API (and the legacy
//! upload a new token is refused), GA4, refunds per platform, Klaviyo bulk jobs, and answers
//! read within bounds.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sha2::Digest;
use tracklayer::sandbox::{Fault, Platform, Sandbox};
use tracklayer::store::StoredDelivery;

async fn sandbox() -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sandbox::start(listener).await.unwrap()
}

fn google(url: &str, extra: &str) -> String {
    format!(
        r#"
[[destinations]]
name = "google"
kind = "google_ads"
endpoint = "{url}"
retry_schedule = [1, 1]
customer_id = "123-456-7890"
login_customer_id = "9876543210"
conversion_actions = {{ purchase = "555000111", lead = "555000222" }}
access_token = "ya29.DATAMANAGER"
{extra}
"#
    )
}

fn ga4(url: &str, extra: &str) -> String {
    format!(
        r#"
[[destinations]]
name = "ga4"
kind = "ga4"
endpoint = "{url}"
retry_schedule = [1, 1]
measurement_id = "G-TEST12345"
api_secret = "ga4-api-secret-value"
{extra}
"#
    )
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn track(message_id: &str, event: &str, user: &str, properties: Value) -> Value {
    json!({"type": "track", "event": event, "messageId": message_id, "userId": user,
        "anonymousId": format!("anon-{user}"), "timestamp": now(),
        "context": {"ip": "203.0.113.42", "userAgent": "Mozilla/5.0 (X11)",
            "traits": {"email": format!("{user}@Example.com"), "phone": "+1 (415) 555-0123"},
            "consent": {"categoryPreferences": {"Advertising": true, "Marketing": true}},
            "page": {"url": format!("https://shop.example.com/thanks?gclid=Cj0KCQiA{user}xyz")}},
        "properties": properties})
}

fn purchase(message_id: &str, order: &str, user: &str, revenue: f64) -> Value {
    track(
        message_id,
        "Order Completed",
        user,
        json!({"order_id": order, "revenue": revenue, "currency": "EUR",
            "products": [{"product_id": "SKU-1", "name": "Sock", "price": revenue, "quantity": 1}]}),
    )
}

async fn post(server: &TestServer, body: &Value) {
    let (status, reply) = server
        .post("production", PRODUCTION_SECRET, &body.to_string())
        .await;
    assert_eq!(status, 200, "{reply}");
}

async fn wait_for(
    server: &TestServer,
    message_id: &str,
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
            start.elapsed() < Duration::from_secs(30),
            "gave up waiting; deliveries of {message_id}: {deliveries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn settled(count: usize) -> impl Fn(&[StoredDelivery]) -> bool {
    move |d: &[StoredDelivery]| {
        d.len() == count
            && d.iter()
                .all(|d| d.status == "delivered" || d.status == "dead")
    }
}

fn of<'a>(deliveries: &'a [StoredDelivery], destination: &str) -> &'a StoredDelivery {
    deliveries
        .iter()
        .find(|d| d.destination == destination)
        .unwrap_or_else(|| panic!("no delivery to {destination}: {deliveries:#?}"))
}

fn sha256(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_manager_request_field_by_field() {
    let sandbox = sandbox().await;
    let server = TestServer::start_with_toml(&google(&sandbox.url(), "")).await;
    let mut order = purchase("dm-1", "ORD-DM1", "janedoe", 129.5);
    order["context"]["consent"]["categoryPreferences"] = json!({"Advertising": true});
    order["context"]["traits"]["email"] = json!(" Jane.Doe+shop@GMail.com ");
    post(&server, &order).await;
    let deliveries = wait_for(&server, "dm-1", settled(1)).await;
    let google = of(&deliveries, "google");
    assert_eq!(google.status, "delivered", "{google:#?}");
    let received = sandbox.state.received(Platform::Google);
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.path, "/v1/events:ingest");
    assert_eq!(request.refusal, None, "{request:#?}");
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header("authorization").as_deref(),
        Some("Bearer ya29.DATAMANAGER")
    );
    assert_eq!(header("developer-token"), None, "no developer token");
    let body = &request.body;
    assert_eq!(
        body["destinations"],
        json!([{"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
            "loginAccount": {"accountType": "GOOGLE_ADS", "accountId": "9876543210"},
            "productDestinationId": "555000111"}])
    );
    assert_eq!(body["encoding"], "HEX");
    assert_eq!(body["validateOnly"], false);
    let event = &body["events"][0];
    assert_eq!(event["transactionId"], "ORD-DM1");
    assert_eq!(event["conversionValue"], json!(129.5));
    assert_eq!(event["currency"], "EUR");
    assert_eq!(event["eventSource"], "WEB");
    assert_eq!(
        event["adIdentifiers"],
        json!({"gclid": "Cj0KCQiAjanedoexyz"})
    );
    let time = chrono::DateTime::parse_from_rfc3339(event["eventTimestamp"].as_str().unwrap())
        .expect("eventTimestamp is RFC 3339");
    assert!((chrono::Utc::now().timestamp() - time.timestamp()).abs() < 60);
    // Google's normalisation (gmail: dots and +suffix dropped), SHA-256 in lowercase hex.
    assert_eq!(
        event["userData"]["userIdentifiers"],
        json!([{"emailAddress": sha256("janedoe@gmail.com")}, {"phoneNumber": sha256("+14155550123")}])
    );
    // Personalization was not granted: the event's own categories, not a guess.
    assert_eq!(
        event["consent"],
        json!({"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_GRANTED"})
    );
    assert_eq!(
        event["eventDeviceInfo"],
        json!({"userAgent": "Mozilla/5.0 (X11)", "ipAddress": "203.0.113.42"})
    );
    // What TrackLayer keeps of it has the token redacted.
    let kept = google.history[0].request.clone().unwrap();
    let headers = kept.headers.unwrap().to_string();
    assert!(
        headers.contains("Bearer REDACTED") && !headers.contains("ya29"),
        "{headers}"
    );
    assert!(
        google.history[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("requestId sandbox-")),
        "{:?}",
        google.history[0]
    );
    server.stop().await;
}

/// One event Google refuses, among many in one fast-failing request: it is named and dead, the
/// others go again at once without counting a failure, and reach Google.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_event_in_a_batch_is_isolated_and_the_rest_delivered() {
    // First the request itself: 2,000 events built as the worker builds them, one with a gclid
    // that cannot be decoded, sent over loopback to the stand-in.
    let sandbox = sandbox().await;
    let setup = tracklayer::destinations::Setup::parse(
        &config_text_with(
            std::path::Path::new("/tmp/unused.db"),
            "",
            &google(&sandbox.url(), ""),
        ),
        std::path::Path::new("/tmp/tracklayer.toml"),
        &|_| None,
    )
    .unwrap();
    let dest = &setup.destinations[0];
    let table = tracklayer::pipeline::MappingTable::default();
    let subjects: Vec<tracklayer::destinations::Subject> = (0..2000)
        .map(|i| {
            let mut message = purchase(&format!("b-{i}"), &format!("ORD-B{i}"), "u", 10.0);
            if i == 1234 {
                message["properties"]["gclid"] = json!("not a gclid!");
            }
            let valid = tracklayer::segment::validate_message(
                message.to_string().as_bytes(),
                None,
                &Default::default(),
            )
            .unwrap();
            let tracklayer::pipeline::Draft::Mapped(event, row) = tracklayer::pipeline::draft(
                &valid,
                "production",
                &table,
                chrono::Utc::now().timestamp_millis(),
            ) else {
                panic!("mapped")
            };
            tracklayer::destinations::Subject::Event {
                event: std::sync::Arc::new(*event),
                destination_event: row.destination_name("google", "google_ads").to_string(),
                consent_source: "event".into(),
            }
        })
        .collect();
    let built = tracklayer::destinations::build(dest, &subjects, 0);
    assert_eq!(built.included.len(), 2000, "one request carries 2,000");
    let client = tracklayer::delivery::http_client();
    let (answer, _) =
        tracklayer::delivery::sender::send(&client, dest, built.request.as_ref().unwrap(), 2000, 0)
            .await;
    let answer = answer.unwrap();
    assert_eq!(answer.status, 400, "{}", answer.body);
    let outcomes = tracklayer::destinations::classify(dest, 2000, &answer);
    use tracklayer::destinations::Outcome;
    assert!(
        matches!(&outcomes[1234], Outcome::Permanent { reason } if reason.contains("events[1234].ad_identifiers.gclid")),
        "{:?}",
        outcomes[1234]
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Resend { .. }))
            .count(),
        1999
    );
    let rest: Vec<_> = subjects
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1234)
        .map(|(_, s)| s.clone())
        .collect();
    let again = tracklayer::destinations::build(dest, &rest, 0);
    let (answer, _) =
        tracklayer::delivery::sender::send(&client, dest, again.request.as_ref().unwrap(), 1999, 0)
            .await;
    assert_eq!(answer.unwrap().status, 200);
    assert_eq!(sandbox.state.google_conversions().len(), 1999);

    // Then through TrackLayer: a Segment batch of 40 with one bad click id.
    let sandbox = self::sandbox().await;
    let server = TestServer::start_with_toml(&google(&sandbox.url(), "")).await;
    let batch: Vec<Value> = (0..40)
        .map(|i| {
            let mut m = purchase(&format!("e-{i}"), &format!("ORD-E{i}"), "w", 5.0);
            if i == 17 {
                m["properties"]["gclid"] = json!("%%%");
            }
            m
        })
        .collect();
    post(&server, &Value::Array(batch)).await;
    for i in 0..40 {
        let deliveries = wait_for(&server, &format!("e-{i}"), settled(1)).await;
        let google = of(&deliveries, "google");
        if i == 17 {
            assert_eq!(google.status, "dead", "{google:#?}");
            assert!(
                google
                    .last_error
                    .as_deref()
                    .unwrap()
                    .contains("ad_identifiers.gclid"),
                "{google:#?}"
            );
        } else {
            assert_eq!(google.status, "delivered", "{google:#?}");
        }
    }
    assert!(sandbox
        .state
        .received(Platform::Google)
        .iter()
        .any(|r| r.status == 400));
    assert_eq!(sandbox.state.google_conversions().len(), 39);
    server.stop().await;
}

/// A Google destination given a refresh token instead of an hour's access token.
fn google_refreshing(url: &str, refresh_token: &str) -> String {
    google(url, "").replace(
        "access_token = \"ya29.DATAMANAGER\"",
        &format!(
            "refresh_token = \"{refresh_token}\"\nclient_id = \"123-abc.apps.googleusercontent.com\"\nclient_secret = \"GOCSPX-client-secret-value\"\ntoken_url = \"{url}/token\""
        ),
    )
}

/// Google's access tokens run out after an hour: with a refresh token TrackLayer exchanges it
/// for a new one as the old one nears its end, and again when Google refuses one; the tokens
/// and the grant are never stored. A revoked refresh token is dead at once with the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_access_tokens_are_refreshed_as_they_run_out() {
    let sandbox = sandbox().await;
    // Tokens that live 4 s: replaced at half their life (Google's hour-long ones a minute
    // before their end).
    sandbox.state.google_token_lifetime(Duration::from_secs(4));
    let server = TestServer::start_with_toml(&google_refreshing(
        &sandbox.url(),
        "1//0refresh-token-value",
    ))
    .await;
    let bearers = || {
        sandbox
            .state
            .received(Platform::Google)
            .into_iter()
            .filter(|r| r.path == "/v1/events:ingest")
            .map(|r| {
                let auth = r
                    .headers
                    .iter()
                    .find(|(k, _)| k == "authorization")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                (auth, r.status)
            })
            .collect::<Vec<_>>()
    };
    post(&server, &purchase("tok-1", "ORD-T1", "tok", 10.0)).await;
    let first = wait_for(&server, "tok-1", settled(1)).await;
    assert_eq!(of(&first, "google").status, "delivered");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    post(&server, &purchase("tok-2", "ORD-T2", "tok", 10.0)).await;
    wait_for(&server, "tok-2", settled(1)).await;
    assert_eq!(
        bearers(),
        [
            ("Bearer ya29.sandbox.1".to_string(), 200),
            ("Bearer ya29.sandbox.2".to_string(), 200)
        ]
    );
    // Google refuses a token it issued (revoked early): the attempt is retried with a new one.
    sandbox.state.push_fault(Platform::Google, Fault::BadToken);
    post(&server, &purchase("tok-3", "ORD-T3", "tok", 10.0)).await;
    let third = wait_for(&server, "tok-3", settled(1)).await;
    let google = of(&third, "google");
    assert_eq!((google.status.as_str(), google.attempts), ("delivered", 2));
    assert!(
        google.history[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("refused the access token (HTTP 401)")),
        "{google:#?}"
    );
    // The refused token was not offered again.
    let last: Vec<_> = bearers().into_iter().skip(2).collect();
    assert_eq!(last.len(), 2, "{last:?}");
    assert_eq!((last[0].1, last[1].1), (401, 200), "{last:?}");
    assert_ne!(last[0].0, last[1].0, "{last:?}");
    assert!(sandbox.state.google_tokens_issued() >= 3);
    // What TrackLayer kept of its requests shows no token, no grant and no client secret.
    let kept = serde_json::to_string(&third).unwrap() + &serde_json::to_string(&first).unwrap();
    for secret in [
        "ya29.sandbox",
        "1//0refresh-token-value",
        "GOCSPX-client-secret-value",
    ] {
        assert!(!kept.contains(secret), "{secret} kept: {kept}");
    }
    assert!(kept.contains("Bearer REDACTED"), "{kept}");
    server.stop().await;

    // A refresh token Google revoked: nothing can be sent until someone authorises again.
    let server =
        TestServer::start_with_toml(&google_refreshing(&sandbox.url(), "revoked-1//0refresh"))
            .await;
    post(&server, &purchase("tok-4", "ORD-T4", "tok", 10.0)).await;
    let revoked = wait_for(&server, "tok-4", settled(1)).await;
    let google = of(&revoked, "google");
    assert_eq!((google.status.as_str(), google.attempts), ("dead", 1));
    let why = google.last_error.as_deref().unwrap_or_default();
    assert!(
        why.contains("invalid_grant: Token has been expired or revoked.")
            && why.contains("authorise again"),
        "{why}"
    );
    server.stop().await;

    // Google's token endpoint unreachable: retried on the schedule, not dead at once.
    let unreachable = google_refreshing(&sandbox.url(), "1//0refresh-token-value").replace(
        &format!("token_url = \"{}/token\"", sandbox.url()),
        "token_url = \"http://127.0.0.1:9/token\"",
    );
    let server = TestServer::start_with_toml(&unreachable).await;
    post(&server, &purchase("tok-5", "ORD-T5", "tok", 10.0)).await;
    let down = wait_for(&server, "tok-5", settled(1)).await;
    let google = of(&down, "google");
    assert_eq!(
        (google.status.as_str(), google.attempts),
        ("dead", 3),
        "{google:#?}"
    );
    let why = google.last_error.as_deref().unwrap_or_default();
    assert!(
        why.contains("retry_schedule exhausted")
            && why.contains("could not reach Google's token endpoint"),
        "{why}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_not_allowlisted_is_dead_once_with_the_switch_to_make() {
    let sandbox = sandbox().await;
    sandbox
        .state
        .set_sticky(Platform::Google, Some(Fault::NotAllowlisted));
    let legacy = google(
        &sandbox.url(),
        "api = \"google_ads_api\"\ndeveloper_token = \"DEV_NEW_ADOPTER\"",
    );
    let server = TestServer::start_with_toml(&legacy).await;
    let batch: Vec<Value> = (0..3)
        .map(|i| purchase(&format!("na-{i}"), &format!("ORD-NA{i}"), "n", 1.0))
        .collect();
    post(&server, &Value::Array(batch)).await;
    for i in 0..3 {
        let deliveries = wait_for(&server, &format!("na-{i}"), settled(1)).await;
        let google = of(&deliveries, "google");
        assert_eq!((google.status.as_str(), google.attempts), ("dead", 1));
        let why = google.last_error.as_deref().unwrap();
        assert!(
            why.contains("CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE")
                && why.contains("Data Manager API")
                && why.contains("datamanager"),
            "{why}"
        );
    }
    // Dead once: no retries and no resending each alone.
    let requests = sandbox.state.received(Platform::Google);
    assert!(requests.len() <= 3, "{} requests", requests.len());
    assert!(requests
        .iter()
        .all(|r| r.path.ends_with(":uploadClickConversions")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ga4_gets_its_recommended_events_and_parameters() {
    let sandbox = sandbox().await;
    let server = TestServer::start_with_toml(&ga4(&sandbox.url(), "")).await;
    let calls = [
        (
            "Product Viewed",
            "view_item",
            json!({"product_id": "SKU-1", "name": "Sock", "price": 9.5}),
        ),
        (
            "Product Added",
            "add_to_cart",
            json!({"product_id": "SKU-1", "name": "Sock", "price": 9.5, "quantity": 2}),
        ),
        (
            "Checkout Started",
            "begin_checkout",
            json!({"order_id": "ORD-G4", "value": 19.0, "currency": "EUR"}),
        ),
        (
            "Order Completed",
            "purchase",
            json!({"order_id": "ORD-G4", "revenue": 19.0, "currency": "EUR", "products": [{"product_id": "SKU-1", "name": "Sock", "price": 9.5, "quantity": 2}]}),
        ),
        (
            "Lead Submitted",
            "generate_lead",
            json!({"value": 50, "currency": "EUR"}),
        ),
        ("Signed Up", "sign_up", json!({})),
        (
            "Products Searched",
            "search",
            json!({"query": "wool socks"}),
        ),
        (
            "Order Refunded",
            "refund",
            json!({"order_id": "ORD-G4", "revenue": 19.0, "currency": "EUR"}),
        ),
    ];
    for (i, (event, _, properties)) in calls.iter().enumerate() {
        post(
            &server,
            &track(&format!("g4-{i}"), event, "ga", properties.clone()),
        )
        .await;
        wait_for(&server, &format!("g4-{i}"), settled(1)).await;
    }
    let received = sandbox.state.received(Platform::Ga4);
    assert_eq!(received.len(), calls.len());
    for (request, (_, name, _)) in received.iter().zip(&calls) {
        assert_eq!(request.path, "/mp/collect");
        assert_eq!(
            request.refusal, None,
            "GA4 would have dropped it: {request:#?}"
        );
        assert_eq!(request.body["client_id"], "anon-ga");
        assert_eq!(request.body["user_id"], "ga");
        let event = &request.body["events"][0];
        assert_eq!(event["name"], *name);
        assert!(event["params"]["session_id"].is_string());
        assert_eq!(event["params"]["engagement_time_msec"], 1);
        assert!(event["timestamp_micros"].as_i64().unwrap() > 1_700_000_000_000_000);
        assert_eq!(
            request.body["consent"],
            json!({"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"})
        );
    }
    let purchase = &received[3].body["events"][0]["params"];
    assert_eq!(purchase["transaction_id"], "ORD-G4");
    assert_eq!(purchase["value"], json!(19.0));
    assert_eq!(purchase["currency"], "EUR");
    assert_eq!(
        purchase["items"],
        json!([{"item_id": "SKU-1", "item_name": "Sock", "price": 9.5, "quantity": 2}])
    );
    assert_eq!(
        received[6].body["events"][0]["params"]["search_term"],
        "wool socks"
    );
    assert_eq!(
        received[7].body["events"][0]["params"]["transaction_id"],
        "ORD-G4"
    );
    // The secret goes in the query, and never into what TrackLayer keeps.
    let trace = server.trace("g4-3").await.unwrap();
    let url = trace.deliveries[0].history[0]
        .request
        .clone()
        .unwrap()
        .url
        .unwrap();
    assert!(
        url.contains("api_secret=REDACTED") && !url.contains("ga4-api-secret-value"),
        "{url}"
    );

    // No client id (a server-side call with a userId only): dead with GA4's reason, not sent.
    let mut known_only = track("g4-x", "Signed Up", "ga", json!({}));
    known_only.as_object_mut().unwrap().remove("anonymousId");
    post(&server, &known_only).await;
    let deliveries = wait_for(&server, "g4-x", settled(1)).await;
    let ga4 = of(&deliveries, "ga4");
    assert_eq!(ga4.status, "dead");
    assert!(
        ga4.last_error.as_deref().unwrap().contains("no client_id"),
        "{ga4:#?}"
    );
    assert_eq!(sandbox.state.received(Platform::Ga4).len(), calls.len());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ga4_past_its_72_hour_window_is_dead_with_that_reason() {
    let sandbox = sandbox().await;
    let server = TestServer::start_with_toml(&ga4(&sandbox.url(), "")).await;
    let mut old = track("g4-old", "Signed Up", "old", json!({}));
    old["timestamp"] = json!((chrono::Utc::now() - chrono::Duration::hours(80))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    post(&server, &old).await;
    let deliveries = wait_for(&server, "g4-old", settled(1)).await;
    let ga4 = of(&deliveries, "ga4");
    assert_eq!((ga4.status.as_str(), ga4.attempts), ("dead", 1));
    assert!(
        ga4.last_error
            .as_deref()
            .unwrap()
            .contains("ga4 accepts events up to 3 days old"),
        "{ga4:#?}"
    );
    assert!(sandbox.state.received(Platform::Ga4).is_empty());
    server.stop().await;
}

/// A refund goes where the platform can adjust, and nowhere it would add a conversion.
async fn a_refund_per_platform(store: Store) {
    let sandbox = sandbox().await;
    sandbox.state.webhook_key(
        "orders",
        tracklayer::destinations::webhook::decode_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
            .unwrap(),
    );
    let url = sandbox.url();
    let config = format!(
        r#"{google}{ga4}
[[destinations]]
name = "meta"
kind = "meta_capi"
endpoint = "{url}"
retry_schedule = [1]
pixel_id = "1234567890123456"
access_token = "EAAB_TEST"

[[destinations]]
name = "tiktok"
kind = "tiktok"
endpoint = "{url}"
retry_schedule = [1]
pixel_code = "CABCDEF1234567890XYZ"
access_token = "TT_TEST"

[[destinations]]
name = "klaviyo"
kind = "klaviyo"
endpoint = "{url}"
retry_schedule = [1]
api_key = "pk_TEST_0123456789"

[[destinations]]
name = "orders"
kind = "webhook"
retry_schedule = [1]
url = "{url}/webhooks/orders"
secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"

[[destinations]]
name = "warehouse"
kind = "warehouse"
retry_schedule = [1]
path = "warehouse.db"
"#,
        google = google(&url, ""),
        ga4 = ga4(&url, ""),
    );
    let server = TestServer::start_for(store, &config).await;
    post(&server, &purchase("rf-buy", "ORD-RF", "rita", 100.0)).await;
    wait_for(&server, "rf-buy", settled(7)).await;
    let refund = track(
        "rf-back",
        "Order Refunded",
        "rita",
        json!({"order_id": "ORD-RF", "revenue": 30.0, "currency": "EUR"}),
    );
    post(&server, &refund).await;
    // Meta and TikTok get no delivery at all: the route says why.
    let deliveries = wait_for(&server, "rf-back", settled(5)).await;
    for d in &deliveries {
        assert_eq!(d.status, "delivered", "{d:#?}");
    }
    let trace = server.trace("rf-back").await.unwrap();
    let routes = &trace.events[0].routes;
    for platform in ["meta", "tiktok"] {
        let route = routes.iter().find(|r| r.destination == platform).unwrap();
        assert_eq!(route.verdict, "unsupported", "{route:?}");
        assert!(route.reason.contains("takes no refunds"), "{route:?}");
    }
    // Google: the purchase's conversion restated to what is left, matched on its order.
    let conversions = sandbox.state.google_conversions();
    let order = &conversions[&("555000111".to_string(), "ORD-RF".to_string())];
    assert_eq!(order.value, Some(100.0));
    assert_eq!(order.restatements, vec![70.0]);
    let restated = sandbox
        .state
        .received(Platform::Google)
        .last()
        .unwrap()
        .clone();
    assert_eq!(restated.body["events"][0]["transactionId"], "ORD-RF");
    assert!(restated.body["events"][0]["lastUpdatedTimestamp"].is_string());
    // GA4: its refund event; Klaviyo: its own metric; the webhook and warehouse: the canonical.
    let ga4 = sandbox.state.received(Platform::Ga4);
    let ga4_refund = &ga4.last().unwrap().body["events"][0];
    assert_eq!(ga4_refund["name"], "refund");
    assert_eq!(ga4_refund["params"]["transaction_id"], "ORD-RF");
    let klaviyo = sandbox.state.received(Platform::Klaviyo);
    assert_eq!(
        klaviyo.last().unwrap().body["data"]["attributes"]["metric"]["data"]["attributes"]["name"],
        "Refunded Order"
    );
    let webhook = sandbox.state.received(Platform::Webhook);
    let envelope = &webhook.last().unwrap().body;
    assert_eq!(envelope["type"], "tracklayer.event");
    assert_eq!(envelope["event"]["name"], "refund");
    assert_eq!(envelope["event"]["refunds"]["order_id"], "ORD-RF");
    let rows =
        tracklayer::store::warehouse::read_rows(&server.db.parent().unwrap().join("warehouse.db"))
            .unwrap();
    assert_eq!(rows.iter().filter(|r| r.1 == "refund").count(), 1);
    // Nothing reached Meta or TikTok after the purchase.
    assert_eq!(sandbox.state.received(Platform::Meta).len(), 1);
    assert_eq!(sandbox.state.received(Platform::Tiktok).len(), 1);

    // A refund for an order never recorded: Google would count it as a new conversion.
    post(
        &server,
        &track(
            "rf-ghost",
            "Order Refunded",
            "rita",
            json!({"order_id": "ORD-NEVER", "revenue": 5.0, "currency": "EUR"}),
        ),
    )
    .await;
    let deliveries = wait_for(&server, "rf-ghost", settled(5)).await;
    let google = of(&deliveries, "google");
    assert_eq!(google.status, "dead");
    assert!(
        google
            .last_error
            .as_deref()
            .unwrap()
            .contains("no purchase with order_id ORD-NEVER"),
        "{google:#?}"
    );
    server.stop().await;
}

on_both_stores!(a_refund_per_platform);

/// One answer of a receiver: status, headers, and how many bytes of body.
type Answer = (u16, Vec<(&'static str, String)>, usize);

/// A receiver answering each request with the next of `answers` (the last one repeats), its
/// body streamed.
async fn receiver(
    answers: Vec<Answer>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Instant>>>) {
    use axum::body::Body;
    use axum::response::Response;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let answers = std::sync::Arc::new(std::sync::Mutex::new(answers));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let answers = answers.clone();
            let log = log.clone();
            async move {
                log.lock().unwrap().push(Instant::now());
                let (status, headers, size) = {
                    let mut a = answers.lock().unwrap();
                    if a.len() > 1 {
                        a.remove(0)
                    } else {
                        a[0].clone()
                    }
                };
                // Streamed in 64 KiB chunks: the receiver never holds the whole answer either.
                let mut response = Response::builder().status(status);
                for (k, v) in headers {
                    response = response.header(k, v);
                }
                response.body(Body::new(Chunks::of(size))).unwrap()
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), seen)
}

/// A body of `left` bytes of `x`, made 64 KiB at a time as it is read.
struct Chunks {
    chunk: bytes::Bytes,
    left: usize,
}

impl Chunks {
    fn of(size: usize) -> Chunks {
        Chunks {
            chunk: bytes::Bytes::from(vec![b'x'; 64 * 1024]),
            left: size,
        }
    }
}

type Frame = Option<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>;

impl hyper::body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Frame> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len());
        self.left -= n;
        let data = self.chunk.slice(..n);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
    }
}

fn webhook(url: &str, extra: &str) -> String {
    format!(
        r#"
[[destinations]]
name = "hook"
kind = "webhook"
retry_schedule = [1, 1, 1]
url = "{url}"
secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
{extra}
"#
    )
}

fn peak_resident_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A node of its own (`tracklayer serve`), so its peak memory is its own: first a delivery
/// answered briefly (the node's warm-up), then one answered with 200 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mb_answer_is_read_within_bounds() {
    let (url, seen) = receiver(vec![(200, vec![], 2), (200, vec![], 200 * 1024 * 1024)]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tracklayer.toml");
    std::fs::write(
        &config,
        config_text_with(&dir.path().join("t.db"), "", &webhook(&url, "")),
    )
    .unwrap();
    let (mut node, addr) = start_serve(&config);
    let db = dir.path().join("t.db");
    let deliver = |id: &'static str, order: &'static str| {
        let (addr, db) = (addr.clone(), db.clone());
        async move {
            let body = purchase(id, order, "b", 1.0).to_string();
            let (status, reply) = json_of(
                signed(
                    &client(),
                    &format!("http://{addr}/segment/events"),
                    "production",
                    PRODUCTION_SECRET,
                    &body,
                )
                .send()
                .await
                .unwrap(),
            )
            .await;
            assert_eq!(status, 200, "{reply}");
            let reader = tracklayer::store::StoreReader::open(&db).unwrap();
            let start = Instant::now();
            loop {
                let trace = reader.trace(id).unwrap();
                if let Some(d) = trace
                    .and_then(|t| t.deliveries.into_iter().next())
                    .filter(|d| d.status == "delivered" || d.status == "dead")
                {
                    break d;
                }
                assert!(start.elapsed() < Duration::from_secs(30), "never settled");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    deliver("warm-1", "ORD-WARM").await;
    let before = peak_resident_kb(node.id());
    let hook = deliver("big-1", "ORD-BIG").await;
    let after = peak_resident_kb(node.id());
    let _ = node.kill();
    let _ = node.wait();
    assert_eq!((hook.status.as_str(), hook.attempts), ("delivered", 1));
    assert_eq!(seen.lock().unwrap().len(), 2);
    let kept = hook.history[0]
        .request
        .clone()
        .unwrap()
        .response_body
        .unwrap();
    assert!(
        kept.contains("answer cut: only its first 1048576 bytes were read"),
        "{}",
        &kept[kept.len().saturating_sub(200)..]
    );
    // Reading the whole answer would have cost the node 200 MB or more (twice that as text); the
    // bound costs the 1 MiB read and a few buffers around it (a few MB measured here; more on a
    // busy machine, where a second worker thread's allocator warms up too).
    assert!(
        after.saturating_sub(before) < 48 * 1024,
        "the node's peak resident memory grew by {} KB",
        after - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_date_is_honoured() {
    let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(4));
    let (url, seen) = receiver(vec![
        (503, vec![("retry-after", later)], 10),
        (200, vec![], 2),
    ])
    .await;
    let server = TestServer::start_with_toml(&webhook(&url, "")).await;
    post(&server, &purchase("ra-1", "ORD-RA", "r", 1.0)).await;
    let deliveries = wait_for(&server, "ra-1", settled(1)).await;
    let hook = of(&deliveries, "hook");
    assert_eq!((hook.status.as_str(), hook.attempts), ("delivered", 2));
    let seen = seen.lock().unwrap().clone();
    let waited = seen[1] - seen[0];
    // The date was 4 s ahead (whole seconds): honoured, not read as 60 s or as nothing.
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(10),
        "waited {waited:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_klaviyo_queue_goes_as_bulk_jobs() {
    let sandbox = sandbox().await;
    let url = sandbox.url();
    let config = format!(
        r#"
[[destinations]]
name = "klaviyo"
kind = "klaviyo"
endpoint = "{url}"
retry_schedule = [1]
api_key = "pk_TEST_0123456789"
"#
    );
    let server = TestServer::start_with_toml(&config).await;
    let batch: Vec<Value> = (0..300)
        .map(|i| {
            purchase(
                &format!("k-{i}"),
                &format!("ORD-K{i}"),
                &format!("k{i}"),
                3.0,
            )
        })
        .collect();
    post(&server, &Value::Array(batch)).await;
    for i in 0..300 {
        let deliveries = wait_for(&server, &format!("k-{i}"), settled(1)).await;
        assert_eq!(of(&deliveries, "klaviyo").status, "delivered");
    }
    let received = sandbox.state.received(Platform::Klaviyo);
    assert!(received.iter().all(|r| r.refusal.is_none()));
    let bulk: usize = received
        .iter()
        .filter(|r| r.path == "/api/event-bulk-create-jobs")
        .map(|r| {
            r.body["data"]["attributes"]["events-bulk-create"]["data"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert!(
        bulk >= 200,
        "most of a 300-deep queue goes in bulk jobs, not one request each ({bulk} did)"
    );
    assert_eq!(sandbox.state.accepted(Platform::Klaviyo).1, 300);
    server.stop().await;
}

fn check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tracklayer.toml");
    std::fs::write(
        &path,
        config_text_with(&dir.path().join("t.db"), "", config),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracklayer"))
        .args(["check", "--config"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_names_each_google_and_ga4_mistake_with_its_fix_and_says_which_path_is_used() {
    let url = "http://127.0.0.1:9";
    let (ok, text) = check(&format!(
        "{}{}",
        google(url, ""),
        ga4(url, "validate_only = true")
    ));
    assert!(ok, "{text}");
    assert!(
        text.contains("google: Google Ads through the Data Manager API (POST /v1/events:ingest, operatingAccount 1234567890, 2 conversion action(s))"),
        "{text}"
    );
    assert!(
        text.contains(
            "ga4: GA4 Measurement Protocol (/debug/mp/collect, validation only for G-TEST12345)"
        ),
        "{text}"
    );
    let (ok, text) = check(&google(
        url,
        "api = \"google_ads_api\"\ndeveloper_token = \"DEV\"",
    ));
    assert!(ok, "{text}");
    assert!(
        text.contains("google: Google Ads API uploadClickConversions"),
        "{text}"
    );

    let (ok, text) = check(&format!(
        "{}{}{}",
        google(url, "api = \"google_ads_api\"").replace("name = \"google\"", "name = \"legacy\""),
        google(url, "api = \"adwords\""),
        ga4(url, "").replace("api_secret = \"ga4-api-secret-value\"\n", ""),
    ));
    assert!(!ok, "{text}");
    assert!(
        text.contains("destinations[0].developer_token: is required with api = \"google_ads_api\"")
            && text.contains("leave `api` out to use the Data Manager API"),
        "{text}"
    );
    assert!(
        text.contains("destinations[1].api: `adwords` is not a Google API TrackLayer speaks"),
        "{text}"
    );
    assert!(
        text.contains("destinations[2].api_secret: is required")
            && text.contains("Measurement Protocol API secrets"),
        "{text}"
    );
}
