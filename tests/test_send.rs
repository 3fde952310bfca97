//! The controlled test send, walked stage by stage against the sandbox: a passing walk with
//! destinations in test mode, a 401 walk, an unmapped walk, a duplicate-order walk.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tracklayer::sandbox::{Platform, Sandbox};
use tracklayer::testsend::{self, SendResult, Stage, TestUser, Verdict};

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
developer_token = "DEV"
access_token = "ya29.TEST"
validate_only = true

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

async fn setup() -> (TestServer, Sandbox, BTreeMap<String, Option<bool>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(listener).await.unwrap();
    let server = TestServer::start_with_toml(&config(&sandbox)).await;
    let modes = server.setup.test_modes();
    (server, sandbox, modes)
}

/// Send one call and walk it until every stage has its final verdict.
async fn walk(
    server: &TestServer,
    secret: &str,
    message: &Value,
    modes: &BTreeMap<String, Option<bool>>,
) -> Vec<Stage> {
    let body = message.to_string();
    let (status, reply) = server.post("production", secret, &body).await;
    let sent = SendResult { status, reply };
    let id = message["messageId"].as_str().unwrap();
    let start = Instant::now();
    loop {
        let trace = server.reader().trace(id).unwrap();
        let stages = testsend::stages(&sent, trace.as_ref(), modes);
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
    let skip: Vec<String> = modes
        .iter()
        .filter(|(_, m)| m.is_none())
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(skip, ["klaviyo", "warehouse"]);
    let steps = testsend::scenario(&TestUser::default(), "run1", &[], &skip);
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
    let google = sandbox.state.received(Platform::Google);
    assert_eq!(google.len(), 1);
    assert_eq!(google[0].body["validateOnly"], true);
    assert!(sandbox.state.received(Platform::Klaviyo).is_empty());
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
    assert!(dedup.detail[0].starts_with("duplicate_order: collapsed onto ev_purchase_"));
    assert!(dedup.fix.as_deref().unwrap().starts_with("duplicate purchases: use Segment messageId plus order_id as the dedup foundation. order_id TEST-rundup"));
    server.stop().await;
}
