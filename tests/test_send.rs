//! The controlled test send, walked stage by stage against the sandbox: a passing walk with
//! destinations in test mode, a 401 walk, an unmapped walk, a duplicate-order walk.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tracklayer::sandbox::{Platform, Sandbox};
use tracklayer::testsend::{self, SendResult, Stage, TestPlan, TestUser, Verdict};

fn config(sandbox: &Sandbox) -> String {
    format!(
        r#"
[[destinations]]
name = "meta"
kind = "meta_capi"
endpoint = "{url}"
retry_schedule = [1]
pixel_id = "1234567890123456"
access_token = "EAAB_TEST"
test_event_code = "TEST12345"

[[destinations]]
name = "google"
kind = "google_ads"
endpoint = "{url}"
retry_schedule = [1]
customer_id = "1234567890"
conversion_actions = {{ purchase = "555000111" }}
access_token = "ya29.TEST"

[[destinations]]
name = "ga4"
kind = "ga4"
endpoint = "{url}"
retry_schedule = [1]
measurement_id = "G-TEST12345"
api_secret = "ga4-secret-value"

[[destinations]]
name = "tiktok"
kind = "tiktok"
endpoint = "{url}"
retry_schedule = [1]
pixel_code = "CABCDEF1234567890XYZ"
access_token = "TT_TEST"
test_event_code = "TEST12345"

[[destinations]]
name = "klaviyo"
kind = "klaviyo"
endpoint = "{url}"
retry_schedule = [1]
api_key = "pk_TEST_0123456789"

[[destinations]]
name = "warehouse"
kind = "warehouse"
path = "warehouse.db"
"#,
        url = sandbox.url()
    )
}

async fn setup() -> (TestServer, Sandbox, TestPlan) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(listener).await.unwrap();
    let server = TestServer::start_with_toml(&config(&sandbox)).await;
    let plan = TestPlan::new(
        server.setup.test_modes(),
        server.setup.profile_destinations(),
        false,
    );
    (server, sandbox, plan)
}

/// Send one call and walk it until every stage has its final verdict.
async fn walk(server: &TestServer, secret: &str, message: &Value, plan: &TestPlan) -> Vec<Stage> {
    let body = message.to_string();
    let (status, reply) = server.post("production", secret, &body).await;
    let sent = SendResult { status, reply };
    let id = message["messageId"].as_str().unwrap();
    let start = Instant::now();
    loop {
        let trace = server.reader().trace(id).unwrap();
        let stages = testsend::stages(&sent, trace.as_ref(), plan);
        // A payload is never passed before it is built.
        if let Some(payload) = stages.iter().find(|s| s.name == "payload") {
            assert!(
                payload.verdict != Verdict::Pass
                    || !payload.detail.iter().any(|d| d.contains("queued")),
                "{payload:?}"
            );
        }
        if testsend::settled(&stages) {
            return stages;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "never settled: {stages:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn verdicts(stages: &[Stage]) -> Vec<(&'static str, Verdict)> {
    stages.iter().map(|s| (s.name, s.verdict)).collect()
}

fn stage<'a>(stages: &'a [Stage], name: &str) -> &'a Stage {
    stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stage {name}: {stages:#?}"))
}

#[tokio::test]
async fn the_scripted_test_send_passes_stage_by_stage() {
    let (server, sandbox, modes) = setup().await;
    // Klaviyo and the warehouse have no test mode: the walk skips them.
    assert_eq!(modes.skip, ["klaviyo", "warehouse"]);
    assert!(modes.live().is_empty());
    let steps = testsend::scenario(&TestUser::default(), "run1", &[], &modes.skip);
    let labels: Vec<&str> = steps.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "identify",
            "Product Added",
            "Checkout Started",
            "Order Completed",
            "Lead Submitted"
        ]
    );

    use Verdict::*;
    let identify = walk(&server, PRODUCTION_SECRET, &steps[0].message, &modes).await;
    assert_eq!(
        verdicts(&identify),
        [
            ("authenticated", Pass),
            ("parsed", Pass),
            ("mapped", Skip),
            ("identity", Pass),
            ("dedup", Skip),
            ("consent", Skip),
            ("payload", Skip)
        ]
    );
    assert!(stage(&identify, "identity").detail[0].contains("email=test.user@example.com"));
    // Klaviyo takes profiles; the run leaves it out, and says so.
    assert_eq!(
        stage(&identify, "consent").detail,
        ["klaviyo: takes profiles; skipped: no test mode, would be a live event"]
    );

    let added = walk(&server, PRODUCTION_SECRET, &steps[1].message, &modes).await;
    assert_eq!(
        stage(&added, "mapped").detail[0],
        "Product Added → add_to_cart (mapping table v1)"
    );
    // Google sends only purchases: visible, not a stop.
    assert_eq!(stage(&added, "consent").verdict, Warn);
    assert!(stage(&added, "consent")
        .detail
        .iter()
        .any(|d| d.starts_with("google: not_configured")));

    let order = walk(&server, PRODUCTION_SECRET, &steps[3].message, &modes).await;
    assert_eq!(
        verdicts(&order),
        [
            ("authenticated", Pass),
            ("parsed", Pass),
            ("mapped", Pass),
            ("transformed", Pass),
            ("identity", Pass),
            ("dedup", Pass),
            ("consent", Pass),
            ("payload", Pass),
            ("reply", Pass)
        ]
    );
    assert!(stage(&order, "transformed")
        .detail
        .iter()
        .any(|d| d.starts_with("properties.value = 89.95 ← properties.revenue")));
    let payload = &stage(&order, "payload").detail;
    assert!(
        payload
            .iter()
            .any(|p| p.starts_with("meta as Purchase [test mode]")),
        "{payload:?}"
    );
    assert!(
        payload
            .iter()
            .any(|p| p.starts_with("google as purchase [test mode]")),
        "{payload:?}"
    );
    assert!(
        !payload.iter().any(|p| p.starts_with("klaviyo")),
        "skipped: {payload:?}"
    );
    let reply = &stage(&order, "reply").detail;
    assert!(
        reply
            .iter()
            .any(|r| r.starts_with("meta: delivered HTTP 200")),
        "{reply:?}"
    );
    // What the platforms saw was in test mode.
    let meta = sandbox.state.received(Platform::Meta);
    assert!(meta
        .iter()
        .all(|r| r.body["test_event_code"] == "TEST12345"));
    // Google and GA4 validate a test send whatever their settings: nothing is recorded there.
    let google = sandbox.state.received(Platform::Google);
    assert_eq!(google.len(), 1);
    assert_eq!(google[0].path, "/v1/events:ingest");
    assert_eq!(google[0].body["validateOnly"], true);
    assert!(sandbox.state.google_conversions().is_empty());
    let ga4 = sandbox.state.received(Platform::Ga4);
    assert!(!ga4.is_empty());
    assert!(
        ga4.iter().all(|r| r.path == "/debug/mp/collect"),
        "{ga4:#?}"
    );
    assert!(
        reply
            .iter()
            .any(|r| r.starts_with("ga4: delivered HTTP 200")),
        "{reply:?}"
    );
    assert!(sandbox.state.received(Platform::Klaviyo).is_empty());
    server.stop().await;
}

#[tokio::test]
async fn ga4_validation_messages_show_in_the_test_send() {
    let (server, sandbox, modes) = setup().await;
    let steps = testsend::scenario(&TestUser::default(), "runga4", &[], &modes.skip);
    let mut order = steps[3].message.clone();
    // A product with neither id nor name: GA4's debug endpoint says the item is unusable.
    order["properties"]["products"] = serde_json::json!([{"price": 12.5, "quantity": 1}]);
    let stages = walk(&server, PRODUCTION_SECRET, &order, &modes).await;
    let reply = stage(&stages, "reply");
    assert_eq!(reply.verdict, Verdict::Fail, "{reply:#?}");
    let ga4 = reply
        .detail
        .iter()
        .find(|r| r.starts_with("ga4: dead"))
        .unwrap_or_else(|| panic!("{reply:#?}"));
    assert!(
        ga4.contains("GA4 validation: events[0].params.items[0]: An item needs item_id or item_name. (ITEM_AT_LEAST_ONE_OF)"),
        "{ga4}"
    );
    assert!(
        reply
            .fix
            .as_deref()
            .unwrap_or("")
            .contains("GA4 validation"),
        "{reply:#?}"
    );
    assert!(sandbox
        .state
        .received(Platform::Ga4)
        .iter()
        .all(|r| r.path == "/debug/mp/collect"));
    server.stop().await;
}

#[tokio::test]
async fn a_bad_secret_stops_at_authenticated_with_the_fix() {
    let (server, _sandbox, modes) = setup().await;
    let steps = testsend::scenario(&TestUser::default(), "run401", &["identify".into()], &[]);
    let stages = walk(&server, "a-copied-wrong-secret", &steps[0].message, &modes).await;
    assert_eq!(verdicts(&stages), [("authenticated", Verdict::Fail)]);
    assert!(
        stages[0].detail[0].starts_with("HTTP 401: bad signature"),
        "{:?}",
        stages[0]
    );
    assert_eq!(stages[0].fix.as_deref(), Some(testsend::FIX_401));
    server.stop().await;
}

#[tokio::test]
async fn an_unmapped_name_stops_at_mapped_with_the_name_to_add() {
    let (server, _sandbox, modes) = setup().await;
    let steps = testsend::scenario(
        &TestUser::default(),
        "rununm",
        &["order_completed".into()],
        &[],
    );
    let mut message = steps[0].message.clone();
    message["event"] = Value::from("order completed");
    let stages = walk(&server, PRODUCTION_SECRET, &message, &modes).await;
    assert_eq!(
        verdicts(&stages),
        [
            ("authenticated", Verdict::Pass),
            ("parsed", Verdict::Pass),
            ("mapped", Verdict::Fail)
        ]
    );
    let fix = stages[2].fix.as_deref().unwrap();
    assert!(fix.starts_with("events accepted but unmapped: add the Segment event name to the mapping table exactly as delivered: `order completed` (did you mean `Order Completed`?)"), "{fix}");
    server.stop().await;
}

#[tokio::test]
async fn the_same_order_twice_stops_at_dedup() {
    let (server, _sandbox, modes) = setup().await;
    let steps = testsend::scenario(
        &TestUser::default(),
        "rundup",
        &["order_completed".into()],
        &[],
    );
    let first = walk(&server, PRODUCTION_SECRET, &steps[0].message, &modes).await;
    assert_eq!(stage(&first, "dedup").verdict, Verdict::Pass);
    let mut again = steps[0].message.clone();
    again["messageId"] = Value::from("tl_test_rundup_again");
    let stages = walk(&server, PRODUCTION_SECRET, &again, &modes).await;
    assert_eq!(
        stage(&stages, "mapped").detail[0],
        "Order Completed → purchase (collapsed onto an earlier event; see dedup)"
    );
    let dedup = stage(&stages, "dedup");
    assert_eq!(dedup.verdict, Verdict::Fail);
    assert!(dedup.detail[0].starts_with("collision duplicate_order: collapsed onto ev_purchase_"));
    assert!(dedup.fix.as_deref().unwrap().starts_with("duplicate purchases: use Segment messageId plus order_id as the dedup foundation. order_id TEST-rundup"));
    server.stop().await;
}

#[tokio::test]
async fn a_queued_payload_waits_and_says_so_instead_of_passing() {
    let (server, _sandbox, plan) = setup().await;
    // Meta paused: its delivery stays queued, so its payload is not built yet.
    tracklayer::store::sqlite::operate(
        &server.db,
        &tracklayer::store::model::actions::OperatorAction::Pause {
            destination: "meta".into(),
        },
        "test",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let steps = testsend::scenario(
        &TestUser::default(),
        "runq",
        &["order_completed".into()],
        &plan.skip,
    );
    let message = &steps[0].message;
    let (status, reply) = server
        .post("production", PRODUCTION_SECRET, &message.to_string())
        .await;
    let sent = SendResult { status, reply };
    let id = message["messageId"].as_str().unwrap();
    let start = Instant::now();
    let stages = loop {
        let trace = server.reader().trace(id).unwrap();
        let stages = testsend::stages(&sent, trace.as_ref(), &plan);
        let others_sent = trace.as_ref().is_some_and(|t| {
            t.deliveries
                .iter()
                .filter(|d| d.destination != "meta")
                .all(|d| d.status == "delivered")
        });
        if stages.iter().any(|s| s.name == "payload") && others_sent {
            break stages;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{stages:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let payload = stage(&stages, "payload");
    assert_eq!(payload.verdict, Verdict::Wait, "{payload:?}");
    assert!(
        payload.detail.iter().any(|d| d
            .starts_with("meta as Purchase [test mode] · match quality ")
            && d.ends_with(": queued: the payload is built at the first attempt")),
        "{payload:?}"
    );
    assert!(!testsend::settled(&stages));
    server.stop().await;
}

#[test]
fn the_test_user_is_what_was_typed_and_nothing_else() {
    // An email alone is a guest with that email, not tl_test_user with another email.
    let guest = TestUser::parse("ana@example.com").unwrap();
    assert_eq!(guest.user_id, None);
    assert_eq!(guest.email.as_deref(), Some("ana@example.com"));
    assert_eq!(guest.phone, None);
    assert_ne!(guest.anonymous_id, TestUser::default().anonymous_id);
    let steps = testsend::scenario(&guest, "r", &["identify".into()], &[]);
    let identify = &steps[0].message;
    assert!(identify.get("userId").is_none(), "{identify}");
    assert_eq!(identify["traits"]["email"], "ana@example.com");
    assert!(identify["traits"].get("phone").is_none());
    // A userId alone keeps no default email; both together are one user.
    let by_id = TestUser::parse("cust_1").unwrap();
    assert_eq!(
        (by_id.user_id.as_deref(), by_id.email),
        (Some("cust_1"), None)
    );
    let both = TestUser::parse("cust_1 ana@example.com").unwrap();
    assert_eq!(both.label(), "cust_1 ana@example.com");
    assert_ne!(both.anonymous_id, by_id.anonymous_id);
    assert_eq!(TestUser::parse("   "), None);
}

#[test]
fn live_destinations_are_left_out_unless_asked_for() {
    let modes = [
        ("meta".to_string(), Some(true)),
        ("tiktok".to_string(), Some(false)),
        ("klaviyo".to_string(), None),
    ]
    .into_iter()
    .collect::<std::collections::BTreeMap<_, _>>();
    let safe = TestPlan::new(modes.clone(), vec!["klaviyo".into()], false);
    assert_eq!(safe.skip, ["klaviyo", "tiktok"]);
    assert!(safe.live().is_empty());
    assert_eq!(
        safe.describe("tiktok"),
        "skipped: test mode off, would be a live event"
    );
    let live = TestPlan::new(modes, vec!["klaviyo".into()], true);
    assert_eq!(live.live(), ["klaviyo", "tiktok"]);
    assert_eq!(
        live.describe("klaviyo"),
        "LIVE: no test mode, receives the test events"
    );
    assert_eq!(live.describe("meta"), "test mode");
}

#[test]
fn a_file_re_sent_gets_fresh_message_ids_unless_kept() {
    let message: Value =
        serde_json::json!({"type": "track", "event": "Order Completed", "messageId": "m-1"});
    let first = testsend::file_step(message.clone(), "run1", 1, false, &["klaviyo".into()]);
    let second = testsend::file_step(message.clone(), "run2", 1, false, &[]);
    assert_eq!(first.message["messageId"], "m-1~run1_1");
    assert_ne!(first.message["messageId"], second.message["messageId"]);
    assert_eq!(first.message["context"]["tracklayer"]["skip"][0], "klaviyo");
    assert_eq!(first.label, "Order Completed");
    let kept = testsend::file_step(message, "run3", 1, true, &[]);
    assert_eq!(kept.message["messageId"], "m-1");
}

/// A purchase that consent lets reach no destination was not tested end to end: the walk
/// stops at consent and says so, instead of "passed: widen the allowlist".
#[tokio::test]
async fn a_call_no_destination_may_receive_stops_at_consent() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(listener).await.unwrap();
    let server = TestServer::start_with_toml(&format!(
        r#"
[[destinations]]
name = "meta"
kind = "meta_capi"
endpoint = "{url}"
consent = ["Advertising"]
pixel_id = "1234567890123456"
access_token = "EAAB_TEST"
test_event_code = "TEST12345"
"#,
        url = sandbox.url()
    ))
    .await;
    let plan = TestPlan::new(
        server.setup.test_modes(),
        server.setup.profile_destinations(),
        false,
    );
    let mut steps = testsend::scenario(
        &TestUser::default(),
        "runconsent",
        &["order_completed".into()],
        &[],
    );
    let message = &mut steps[0].message;
    message["context"]["consent"] =
        serde_json::json!({"categoryPreferences": {"Advertising": false}});
    let stages = walk(&server, PRODUCTION_SECRET, message, &plan).await;
    let consent = stage(&stages, "consent");
    assert_eq!(consent.verdict, Verdict::Fail, "{stages:#?}");
    assert!(
        consent.detail[0].starts_with("meta: blocked_consent"),
        "{consent:?}"
    );
    assert!(consent
        .fix
        .as_deref()
        .unwrap()
        .starts_with("no destination may receive this event, so nothing was delivered"));
    assert!(testsend::failed(&stages));
    assert!(
        stages.iter().all(|s| s.name != "payload"),
        "the walk stops at consent"
    );
    server.stop().await;
}
