//! Operating TrackLayer, over real HTTP with the sandbox: `/metrics` against what the store
//! holds (and Prometheus's own checker), alerts that page once and resolve once, 401 bursts
//! named by environment.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tracklayer::sandbox::{Fault, Platform, Sandbox};
use tracklayer::tui::Pane;

const ALERT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn purchase(message_id: &str, order: &str) -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"{message_id}","userId":"user_{order}","timestamp":"{now}",
        "context":{{"ip":"203.0.113.42","userAgent":"Mozilla/5.0"}},
        "properties":{{"order_id":"{order}","revenue":10,"currency":"EUR"}}}}"#
    )
}

async fn sandbox() -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(listener).await.unwrap();
    let key = tracklayer::destinations::webhook::decode_secret(ALERT_SECRET).unwrap();
    sandbox.state.webhook_key("alerts", key);
    sandbox
}

/// Meta (on the sandbox) plus alerting to the sandbox's Slack and signed webhook receivers.
fn config(sandbox: &Sandbox, alerts: &str) -> String {
    format!(
        r#"
[[destinations]]
name = "meta"
kind = "meta_capi"
endpoint = "{url}"
# A minute of one-second retries: on a loaded machine the outage test's
# deliveries must still be retrying (not dead) when Meta comes back.
retry_schedule = [{retries}]
pixel_id = "1234567890123456"
access_token = "EAAB_TEST"

[[destinations]]
name = "shop_hook"
kind = "webhook"
url = "{url}/webhooks/shop"
secret = "{ALERT_SECRET}"
consent = ["Advertising"]
retry_schedule = [1]

[alerts]
interval_secs = 1
slack_webhook_url = "{url}/slack/ops"
webhook_url = "{url}/webhooks/alerts"
webhook_secret = "{ALERT_SECRET}"
{alerts}
"#,
        url = sandbox.url(),
        retries = vec!["1"; 60].join(", "),
    )
}

/// Alert notifications the receivers got: (Slack texts, webhook alert objects).
fn notifications(sandbox: &Sandbox) -> (Vec<String>, Vec<Value>) {
    let received = sandbox.state.received(Platform::Webhook);
    let slack = received
        .iter()
        .filter(|r| r.path == "/slack/ops")
        .map(|r| {
            assert_eq!(r.status, 200, "Slack refused: {:?}", r.refusal);
            r.body["text"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    let hooks = received
        .iter()
        .filter(|r| r.path == "/webhooks/alerts")
        .map(|r| {
            // The sandbox checks the Standard Webhooks signature and the envelope.
            assert_eq!(r.status, 204, "alert webhook refused: {:?}", r.refusal);
            r.body["alert"].clone()
        })
        .collect();
    (slack, hooks)
}

async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn of_rule<'a>(hooks: &'a [Value], rule: &str, state: &str) -> Vec<&'a Value> {
    hooks
        .iter()
        .filter(|a| a["rule"] == rule && a["state"] == state)
        .collect()
}

/// Samples of a Prometheus text exposition: name{labels} → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Sum of every sample of `name` whose labels contain all of `labels`.
fn sum(samples: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> i64 {
    samples
        .iter()
        .filter(|(k, _)| k.split('{').next() == Some(name) && labels.iter().all(|l| k.contains(l)))
        .map(|(_, v)| *v as i64)
        .sum()
}

fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is needed: `eval \"$(tests/prepare.sh)\"` installs it (apt-get install -y prometheus): {e}")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_store_holds_and_pass_promtool() {
    let sandbox = sandbox().await;
    // Meta fails twice before it recovers: retries show up as such.
    for _ in 0..2 {
        sandbox
            .state
            .push_fault(Platform::Meta, Fault::Status { status: 500 });
    }
    let server = TestServer::start_with_toml(&config(&sandbox, "")).await;
    let denied = r#"{"type":"track","event":"Order Completed","messageId":"m-denied","userId":"u9","context":{"consent":{"categoryPreferences":{"Advertising":false}}},"properties":{"order_id":"O-9","revenue":5,"currency":"EUR"}}"#;
    let bodies = [
        purchase("m-1", "O-1"),
        purchase("m-2", "O-2"),
        purchase("m-2", "O-2"), // a Segment retry: duplicate messageId
        purchase("m-3", "O-1"), // the same order again: a collision
        denied.to_string(),
        r#"{"type":"track","event":"Checkout Step Viewed","messageId":"m-un","userId":"u1"}"#
            .into(),
        r#"{"type":"identify","messageId":"m-id","userId":"u1","traits":{"email":"a@b.example"}}"#
            .into(),
        r#"{"type":"track","messageId":"m-bad","userId":"u1"}"#.into(), // no event: invalid
    ];
    for body in &bodies {
        let (status, reply) = server.post("production", PRODUCTION_SECRET, body).await;
        assert_eq!(status, 200, "{reply}");
    }
    for _ in 0..2 {
        let (status, _) = server
            .post("staging", "not-the-staging-secret", &bodies[0])
            .await;
        assert_eq!(status, 401);
    }
    // Everything settles: nothing pending, and refusals flushed to the store.
    let reader = server.reader();
    wait_for("deliveries to settle", 20, || {
        let s = reader.demo_summary().unwrap();
        s.pending == 0 && s.rejected == 2 && s.delivered >= 3
    })
    .await;
    // Gauges come from the ops task's next pass.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    promtool_check(&text);
    let m = samples(&text);
    let s = reader.demo_summary().unwrap();
    let messages = |outcome: &str| {
        sum(
            &m,
            "tracklayer_messages_total",
            &[&format!("outcome=\"{outcome}\"")],
        )
    };
    assert_eq!(messages("accepted"), s.accepted, "{text}");
    assert_eq!(messages("duplicate"), s.duplicates);
    assert_eq!(messages("invalid"), s.invalid);
    assert_eq!(messages("mapped") + messages("replayed"), s.mapped);
    assert_eq!(messages("unmapped"), s.unmapped);
    assert_eq!(messages("identify"), s.identify);
    assert_eq!(messages("collision"), s.collisions);
    assert_eq!(
        sum(
            &m,
            "tracklayer_collisions_total",
            &["kind=\"duplicate_order\""]
        ),
        1
    );
    assert_eq!(
        sum(&m, "tracklayer_consent_blocked_total", &[]),
        s.consent_blocked
    );
    assert_eq!(
        sum(
            &m,
            "tracklayer_deliveries_total",
            &["outcome=\"delivered\""]
        ),
        s.delivered
    );
    assert_eq!(
        sum(&m, "tracklayer_deliveries_total", &["outcome=\"retry\""]),
        s.retried
    );
    // Meta's two 500s; a loaded machine may add a timeout retry, which the
    // equality above still has to account for.
    assert!(s.retried >= 2, "Meta's two 500s: {}", s.retried);
    assert_eq!(
        sum(&m, "tracklayer_deliveries_total", &["outcome=\"dead\""]),
        s.dead_lettered
    );
    assert_eq!(
        sum(
            &m,
            "tracklayer_http_requests_total",
            &["status=\"401\"", "reason=\"bad_signature\""]
        ),
        s.rejected
    );
    assert_eq!(
        sum(
            &m,
            "tracklayer_http_requests_total",
            &["path=\"/segment/events\"", "status=\"200\""]
        ),
        bodies.len() as i64
    );
    // Attempt latency: one observation per request Meta got.
    let meta_requests = sandbox.state.received(Platform::Meta).len() as i64;
    assert_eq!(
        sum(
            &m,
            "tracklayer_attempt_duration_seconds_count",
            &["destination=\"meta\""]
        ),
        meta_requests
    );
    assert_eq!(
        sum(&m, "tracklayer_queue_depth", &["destination=\"meta\""]),
        0
    );
    assert_eq!(
        sum(&m, "tracklayer_breaker_open", &["destination=\"meta\""]),
        0
    );
    assert!(sum(&m, "tracklayer_database_size_bytes", &[]) > 0);
    assert!(sum(&m, "tracklayer_commit_duration_seconds_count", &[]) > 0);
    // Event names are never labels.
    assert!(!text.contains("Checkout Step Viewed"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_that_fails_and_recovers_pages_once_and_resolves_once() {
    let sandbox = sandbox().await;
    sandbox
        .state
        .set_sticky(Platform::Meta, Some(Fault::Status { status: 500 }));
    let alerts = "platform_down_failures = 2\nqueue_backlog_secs = 2\nerror_rate_min_requests = 100000\ndead_letters = 100000";
    let server = TestServer::start_with_toml(&config(&sandbox, alerts)).await;
    for i in 0..3 {
        let (status, _) = server
            .post(
                "production",
                PRODUCTION_SECRET,
                &purchase(&format!("p-{i}"), &format!("O-{i}")),
            )
            .await;
        assert_eq!(status, 200);
    }
    // Meta keeps failing: it is down, and its queue backs up past 2 s.
    wait_for("platform_down and queue_backlog to fire", 40, || {
        let (_, hooks) = notifications(&sandbox);
        !of_rule(&hooks, "platform_down", "firing").is_empty()
            && !of_rule(&hooks, "queue_backlog", "firing").is_empty()
    })
    .await;
    // Still failing for a while: no second page.
    tokio::time::sleep(Duration::from_secs(3)).await;
    sandbox.state.set_sticky(Platform::Meta, None);
    // The breaker's pauses double while Meta is down (1, 2, 4, 8 s…), so the
    // first successful probe may come a while after recovery on a slow machine.
    wait_for("both to resolve", 60, || {
        let (_, hooks) = notifications(&sandbox);
        !of_rule(&hooks, "platform_down", "resolved").is_empty()
            && !of_rule(&hooks, "queue_backlog", "resolved").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (slack, hooks) = notifications(&sandbox);
    for rule in ["platform_down", "queue_backlog"] {
        let fired = of_rule(&hooks, rule, "firing");
        let resolved = of_rule(&hooks, rule, "resolved");
        assert_eq!((fired.len(), resolved.len()), (1, 1), "{rule}: {hooks:#?}");
        assert_eq!(fired[0]["subject"], "meta");
        assert_eq!(resolved[0]["started_at_ms"], fired[0]["started_at_ms"]);
        assert!(resolved[0]["resolved_at_ms"].as_i64() > fired[0]["started_at_ms"].as_i64());
    }
    let down = of_rule(&hooks, "platform_down", "firing")[0];
    assert!(
        down["evidence"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{down:#}"
    );
    // The alerts pane keeps the history; nothing firing, so no banner.
    let text = server.dashboard_text(Pane::Alerts, 150, 30);
    assert!(!text.contains("▲ ALERT"), "{text}");
    for rule in ["platform_down", "queue_backlog"] {
        let row = text
            .lines()
            .find(|l| l.contains(rule) && l.contains("resolved"))
            .unwrap_or_else(|| panic!("no resolved {rule} row: {text}"));
        assert!(row.contains("meta"), "{row}");
    }
    let backlog = of_rule(&hooks, "queue_backlog", "firing")[0];
    assert!(
        backlog["evidence"]["pending"].as_i64() >= Some(1),
        "{backlog:#}"
    );
    assert_eq!(
        slack
            .iter()
            .filter(|t| t.contains("*platform_down* firing for"))
            .count(),
        1,
        "{slack:#?}"
    );
    assert_eq!(
        slack
            .iter()
            .filter(|t| t.contains("*platform_down* resolved for"))
            .count(),
        1,
        "{slack:#?}"
    );
    // Stored with its history.
    let stored = server.reader().alerts(10).unwrap();
    let down: Vec<_> = stored
        .iter()
        .filter(|a| a.rule == "platform_down")
        .collect();
    assert_eq!(down.len(), 1);
    assert_eq!(down[0].state, "resolved");
    assert!(down[0].notified);
    // What became of the pages is on the row: the last one, the resolve, reached both.
    assert_eq!(
        down[0].notice.as_deref(),
        Some("resolved: sent to Slack, alert webhook")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_401s_pages_naming_the_environment() {
    let sandbox = sandbox().await;
    let server = TestServer::start_with_toml(&config(
        &sandbox,
        "auth_failures = 3\nauth_failures_window_secs = 60",
    ))
    .await;
    for i in 0..3 {
        let (status, _) = server
            .post(
                "staging",
                "a-rotated-secret-nobody-updated",
                &purchase(&format!("s-{i}"), "O-1"),
            )
            .await;
        assert_eq!(status, 401);
    }
    // A request naming no known environment counts as `unknown`, never as a new label.
    wait_for("auth_failures to fire", 10, || {
        let (_, hooks) = notifications(&sandbox);
        !of_rule(&hooks, "auth_failures", "firing").is_empty()
    })
    .await;
    let (slack, hooks) = notifications(&sandbox);
    let fired = of_rule(&hooks, "auth_failures", "firing");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["subject"], "staging");
    assert_eq!(fired[0]["evidence"]["count"], 3);
    assert_eq!(fired[0]["evidence"]["reasons"]["bad_signature"], 3);
    assert!(
        slack
            .iter()
            .any(|t| t.contains("auth_failures") && t.contains("staging")),
        "{slack:#?}"
    );
    // Production is not blamed.
    assert!(hooks.iter().all(|a| a["subject"] != "production"));
    let reader = server.reader();
    wait_for("the notice to be stored", 10, || {
        reader
            .alerts(10)
            .unwrap()
            .iter()
            .any(|a| a.notice.as_deref() == Some("firing: sent to Slack, alert webhook"))
    })
    .await;
    // The dashboard: a banner on every pane while it fires, and the alerts pane with evidence.
    for pane in [Pane::Stream, Pane::Alerts] {
        let text = server.dashboard_text(pane, 150, 30);
        assert!(
            text.contains("▲ ALERT: 1 firing auth_failures staging since"),
            "{text}"
        );
        if pane == Pane::Alerts {
            let row = text
                .lines()
                .find(|l| l.contains("auth_failures") && l.contains("ongoing"))
                .unwrap_or_else(|| panic!("no alert row: {text}"));
            assert!(row.contains("firing") && row.contains("staging"), "{row}");
            assert!(text.contains("\"bad_signature\": 3"), "{text}");
            assert!(text.contains("ongoing") && text.contains("sent"), "{text}");
        }
    }
    server.stop().await;
}

fn purchase_with_traits(message_id: &str, order: &str) -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"{message_id}","userId":"user_{order}","timestamp":"{now}",
        "context":{{"ip":"203.0.113.42","userAgent":"Mozilla/5.0","traits":{{"email":"buyer.{order}@example.com","phone":"+14155550123"}}}},
        "properties":{{"order_id":"{order}","revenue":10,"currency":"EUR"}}}}"#
    )
}

/// Match quality: each delivery's score in inspect and /metrics (a histogram per destination,
/// valid for promtool), and an alert when a destination's events lose identifiers against its
/// own recent past (a frontend release that dropped the email and phone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_quality_is_scored_measured_and_pages_when_it_drops() {
    let sandbox = sandbox().await;
    let alerts = "match_quality_drop = 2\nmatch_quality_window_secs = 3\nmatch_quality_min_events = 3\ndead_letters = 100000\nerror_rate_min_requests = 100000";
    let server = TestServer::start_with_toml(&config(&sandbox, alerts)).await;
    let post = |body: String| {
        let server = &server;
        async move {
            let (status, reply) = server.post("production", PRODUCTION_SECRET, &body).await;
            assert_eq!(status, 200, "{reply}");
        }
    };
    for i in 0..4 {
        post(purchase_with_traits(
            &format!("mq-good-{i}"),
            &format!("MQ-G{i}"),
        ))
        .await;
    }
    let delivered = |id: &str| {
        let trace = server.reader().trace(id).unwrap();
        trace.is_some_and(|t| {
            t.deliveries
                .iter()
                .any(|d| d.destination == "meta" && d.status == "delivered")
        })
    };
    wait_for("the good purchases delivered", 20, || {
        (0..4).all(|i| delivered(&format!("mq-good-{i}")))
    })
    .await;
    // inspect --json: the score, what was sent, what was missing.
    let trace = server.reader().trace("mq-good-0").unwrap().unwrap();
    let json = tracklayer::inspect::to_json(&trace);
    let meta = json["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == "meta")
        .unwrap();
    let quality = &meta["match_quality"];
    assert_eq!(
        quality["identifiers"],
        serde_json::json!(["email", "phone", "external_id", "ip+user_agent"])
    );
    assert_eq!(quality["missing"][0], "fbc");
    let good = quality["score"].as_f64().unwrap();
    assert!(good > 7.0, "{quality}");
    // Past the 3-second window, the same shop sends purchases without email or phone.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for i in 0..4 {
        post(purchase(&format!("mq-bad-{i}"), &format!("MQ-B{i}"))).await;
    }
    wait_for("match_quality_drop to fire", 30, || {
        let (_, hooks) = notifications(&sandbox);
        !of_rule(&hooks, "match_quality_drop", "firing").is_empty()
    })
    .await;
    let (slack, hooks) = notifications(&sandbox);
    let fired = of_rule(&hooks, "match_quality_drop", "firing")[0].clone();
    assert_eq!(fired["subject"], "meta");
    assert!(
        fired["evidence"]["day"].as_f64().unwrap() > 7.0,
        "{fired:#}"
    );
    assert!(
        fired["evidence"]["recent"].as_f64().unwrap() < 3.0,
        "{fired:#}"
    );
    assert!(
        slack.iter().any(|t| t.contains("match quality")),
        "{slack:?}"
    );
    // /metrics: a histogram per destination, accepted by promtool.
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    promtool_check(&text);
    let counted = samples(&text)
        .into_iter()
        .find(|(k, _)| {
            k.starts_with("tracklayer_match_quality_count") && k.contains("destination=\"meta\"")
        })
        .map(|(_, v)| v)
        .unwrap_or(0.0);
    assert_eq!(counted, 8.0, "{text}");
    server.stop().await;
}
