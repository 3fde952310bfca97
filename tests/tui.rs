//! The dashboard rendered with ratatui's TestBackend over data from a real pipeline run (real
//! HTTP, real SQLite, the sandbox APIs). Times and latencies are pinned so the snapshots are
//! stable; everything else is what the pipeline produced.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::style::Color;
use ratatui::Terminal;
use tracklayer::sandbox::{Fault, Platform, Sandbox};
use tracklayer::tui::app::{App, Pane, Snapshot};
use tracklayer::tui::{panes, theme, Loader};

const NOW: i64 = 1_776_939_400_000; // 2026-04-23T10:16:40Z

fn config(sandbox: &Sandbox) -> String {
    format!(
        r#"
[[destinations]]
name = "meta"
kind = "meta_capi"
endpoint = "{url}"
retry_schedule = [1, 1]
consent = ["Advertising"]
pixel_id = "1234567890123456"
access_token = "EAAB_TEST"

[[destinations]]
name = "warehouse"
kind = "warehouse"
retry_schedule = [1]
path = "warehouse.db"
"#,
        url = sandbox.url()
    )
}

/// Event time of the scenario: recent (Meta refuses events older than 7 days), whole minutes,
/// and fixed once per run, so a scenario that crosses a minute still matches its placeholder.
fn event_time() -> chrono::DateTime<chrono::Utc> {
    static AT: std::sync::OnceLock<chrono::DateTime<chrono::Utc>> = std::sync::OnceLock::new();
    *AT.get_or_init(|| {
        let now = chrono::Utc::now().timestamp();
        chrono::DateTime::from_timestamp(now - now % 60, 0).unwrap()
    })
}

/// Replace the scenario's event time (in the forms the panes show it) with a placeholder.
fn stable(text: String) -> String {
    let t = event_time();
    let text = text
        .replace(
            &t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "<event time ms>",
        )
        .replace(
            &t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "<event time>",
        )
        .replace(&t.timestamp().to_string(), "<unix s>");
    cut_times(&text, &t.format("%Y-%m-%dT").to_string())
}

/// A narrow column cuts the event time anywhere ("2026-12-01T15:40:0"), so the full-string
/// replacements above miss it: any remaining run starting with the event's date is masked.
fn cut_times(text: &str, date: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(date) {
        out.push_str(&rest[..at]);
        let tail = &rest[at + date.len()..];
        let run = tail
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, ':' | '.' | 'Z')))
            .unwrap_or(tail.len());
        out.push_str(&"~".repeat(date.len() + tail[..run].chars().count()));
        rest = &tail[run..];
    }
    out.push_str(rest);
    out
}

fn track(id: &str, event: &str, order: &str, revenue: &str, consent: &str) -> String {
    let ts = event_time().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!(
        r#"{{"type":"track","event":"{event}","messageId":"{id}","anonymousId":"anon_8dca","timestamp":"{ts}",
        "context":{{"ip":"203.0.113.42","userAgent":"Mozilla/5.0","page":{{"url":"https://shop.example/thanks?gclid=Cj0KCQ"}}{consent}}},
        "properties":{{"order_id":"{order}","revenue":{revenue},"currency":"EUR","products":[{{"product_id":"SKU-481","name":"Sock","price":89.95}}]}}}}"#
    )
}

/// A scripted morning: an identify, a purchase Meta first refuses with a 500, a near-miss name,
/// the same order sent twice, a consent denial, an invalid message and a bad signature.
async fn scenario() -> (TestServer, Sandbox) {
    scenario_on(Store::Sqlite).await
}

/// The scripted morning on either store.
async fn scenario_on(store: Store) -> (TestServer, Sandbox) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(listener).await.unwrap();
    sandbox
        .state
        .push_fault(Platform::Meta, Fault::Status { status: 500 });
    let server = TestServer::start_for(store, &config(&sandbox)).await;
    let url = server.url("/segment/events");
    let denied = r#","consent":{"categoryPreferences":{"Advertising":false}}"#;
    let messages = [
        r#"{"type":"identify","messageId":"seg_test_480","userId":"cust_34982","anonymousId":"anon_8dca","traits":{"email":"test.user@example.com","phone":"+31612345678","firstName":"Test"}}"#.to_string(),
        track("seg_test_481", "Order Completed", "ORD-10492", "\"$129.95\"", ""),
        track("seg_test_482", "order completed", "ORD-10493", "10", ""),
        track("seg_test_483", "Order Completed", "ORD-10492", "\"$129.95\"", ""),
        track("seg_test_484", "Order Completed", "ORD-10494", "20", denied),
        r#"{"type":"track","messageId":"seg_test_485","userId":"cust_34982","properties":{}}"#.to_string(),
    ];
    for m in &messages {
        let (status, _) = server.post("production", PRODUCTION_SECRET, m).await;
        assert_eq!(status, 200);
    }
    // The refusal comes last in the stream: a later millisecond than the last message.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let bad = signed(
        &client(),
        &url,
        "production",
        "not-the-secret-0123",
        &messages[0],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(bad.status(), 401);
    // Wait until Meta retried and delivered, and the warehouse has its rows.
    let start = Instant::now();
    let reader = server.store_reader();
    loop {
        let destinations = server
            .dashboard(
                &tracklayer::tui::Query {
                    pane: Some(4),
                    ..Default::default()
                },
                &["meta".into(), "warehouse".into()],
                NOW,
            )
            .destinations;
        let delivered: i64 = destinations.iter().map(|d| d.delivered).sum();
        // Refusals reach the store with the next flush (every second).
        let refusal_stored = !reader.recent_rejections(1).unwrap().is_empty();
        if delivered == 3 && refusal_stored {
            break;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let trace = reader.trace("seg_test_481").unwrap().unwrap();
            panic!("{destinations:?}\n{}", tracklayer::inspect::to_text(&trace));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (server, sandbox)
}

/// When a test's dashboard loads: now, since the windows it shows are the minutes the writer
/// added up as the scenario ran (their times are pinned afterwards).
fn loaded_now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Pin every clock-dependent value so the render is stable.
fn pin(snapshot: &mut Snapshot) {
    snapshot.loaded_at_ms = NOW;
    for (i, r) in snapshot.stream.iter_mut().enumerate() {
        r.received_at_ms = NOW - 1000 * i as i64;
        if r.status == "rejected" {
            r.environment = "production".into();
        }
    }
    // Attempts to different destinations race; a fixed order keeps snapshots stable.
    snapshot.attempts.sort_by(|a, b| {
        (&a.destination, &a.event_id, -a.attempt).cmp(&(&b.destination, &b.event_id, -b.attempt))
    });
    for (i, a) in snapshot.attempts.iter_mut().enumerate() {
        a.at_ms = NOW - 1000 * i as i64;
        a.latency_ms = Some(42);
        a.next_attempt_ms = a.next_attempt_ms.map(|_| NOW + 700);
    }
    for g in &mut snapshot.unmapped {
        g.first_seen_ms = NOW - 60_000;
        g.last_seen_ms = NOW;
    }
    for d in &mut snapshot.destinations {
        for w in [&mut d.last_5m, &mut d.last_1h] {
            w.p50_ms = w.p50_ms.map(|_| 40);
            w.p95_ms = w.p95_ms.map(|_| 90);
        }
        if let Some(e) = &mut d.last_error {
            e.0 = NOW - 5000;
        }
    }
    for c in &mut snapshot.collisions {
        c.detected_at_ms = NOW;
    }
    if let Some(p) = &mut snapshot.profile {
        p.first_seen_ms = NOW - 90_000;
        p.last_seen_ms = NOW;
    }
}

fn render(app: &App) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(150, 32)).unwrap();
    terminal.draw(|f| panes::draw(f, app)).unwrap();
    terminal
}

fn app_on(server: &TestServer, pane: Pane, filter: &str) -> App {
    let (themes, problems) = theme::load_all(None);
    assert!(problems.is_empty());
    let mut app = App::new(themes, None, "127.0.0.1:8787 (test)".into());
    app.pane = pane;
    let index = Pane::ALL.iter().position(|p| *p == pane).unwrap();
    app.filters[index] = filter.to_string();
    let mut snapshot = server.dashboard(
        &app.query(),
        &["meta".into(), "warehouse".into()],
        loaded_now(),
    );
    assert_eq!(snapshot.error, None);
    pin(&mut snapshot);
    app.apply(snapshot);
    app
}

/// The text of a rendered row that contains `needle`, and the colour of `word` in it.
fn colour_of(terminal: &Terminal<TestBackend>, needle: &str, word: &str) -> Option<Color> {
    let buffer = terminal.backend().buffer();
    let width = buffer.area.width as usize;
    for y in 0..buffer.area.height {
        let line: String = (0..width)
            .map(|x| buffer[(x as u16, y)].symbol().to_string())
            .collect();
        if line.contains(needle) {
            let col = line.find(word)?;
            let x = line[..col].chars().count() as u16;
            return Some(buffer[(x, y)].fg);
        }
    }
    None
}

#[tokio::test]
async fn every_pane_renders_the_pipeline_state() {
    let (server, _sandbox) = scenario().await;

    let mut stream = app_on(&server, Pane::Stream, "");
    // Select the oldest row (the identify), so the rows checked below are not highlighted.
    stream.selected[0] = stream.snapshot.stream.len() - 1;
    let terminal = render(&stream);
    insta::assert_snapshot!("stream", terminal.backend());
    // Meaning carries colour: failures do not look like successes.
    let theme = stream.theme().clone();
    assert_eq!(
        colour_of(&terminal, "seg_test_485", "invalid"),
        Some(theme.failed)
    );
    assert_eq!(
        colour_of(&terminal, "seg_test_481", "mapped"),
        Some(theme.ok)
    );
    assert_eq!(
        colour_of(&terminal, "seg_test_482", "unmapped"),
        Some(theme.unmapped)
    );
    assert_eq!(
        colour_of(&terminal, "bad_signature", "rejected"),
        Some(theme.failed)
    );
    assert_ne!(theme.failed, theme.ok);

    let mut deliveries = app_on(&server, Pane::Deliveries, "meta");
    let terminal = render(&deliveries);
    insta::assert_snapshot!("deliveries", terminal.backend());
    assert_eq!(colour_of(&terminal, "#1", "retry"), Some(theme.retrying));
    deliveries.selected[1] = 1;
    assert_eq!(
        colour_of(&render(&deliveries), "#2", "delivered"),
        Some(theme.ok)
    );

    let mut diff = app_on(&server, Pane::Diff, "");
    diff.trace_of = Some("seg_test_481".into());
    let mut snapshot = server.dashboard(&diff.query(), &[], loaded_now());
    pin(&mut snapshot);
    diff.apply(snapshot);
    insta::assert_snapshot!("diff", stable(render(&diff).backend().to_string()));
    diff.diff_tab = 1;
    insta::assert_snapshot!(
        "diff_meta_payload",
        stable(render(&diff).backend().to_string())
    );

    insta::assert_snapshot!(
        "unmapped",
        render(&app_on(&server, Pane::Unmapped, "")).backend()
    );
    insta::assert_snapshot!(
        "destinations",
        render(&app_on(&server, Pane::Destinations, "")).backend()
    );
    let collisions = render(&app_on(&server, Pane::Collisions, ""));
    insta::assert_snapshot!("collisions", stable(collisions.backend().to_string()));
    // The lines where the two arrivals differ are marked, in the "changed" colour on both
    // sides: the winner is not drawn as an error.
    let winner_line = colour_of(&collisions, "seg_test_481\",", "≠");
    assert_eq!(winner_line, Some(theme.diff_changed));
    assert_ne!(winner_line, Some(theme.failed));
    assert_ne!(winner_line, Some(theme.diff_removed));
    insta::assert_snapshot!(
        "profiles",
        stable(
            render(&app_on(&server, Pane::Profiles, "test.user@example.com"))
                .backend()
                .to_string()
        )
    );

    let mut help = app_on(&server, Pane::Stream, "");
    help.handle_key(KeyEvent::new(KeyCode::Char('?'), KeyModifiers::NONE));
    insta::assert_snapshot!("help", render(&help).backend());
    server.stop().await;
}

/// At 80×24 every pane still shows what identifies a row and its state; tabs collapse to
/// numbers with the current one named.
#[tokio::test]
async fn at_80_by_24_every_pane_shows_what_identifies_a_row_and_its_state() {
    let (server, _sandbox) = scenario().await;
    let narrow = |app: &App| {
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        terminal.draw(|f| panes::draw(f, app)).unwrap();
        stable(terminal.backend().to_string())
    };
    let cases: [(Pane, &str, &[&str]); 8] = [
        (
            Pane::Stream,
            "",
            &[
                "time",
                "status",
                "event",
                "messageId",
                "seg_test_481",
                "mapped",
                "rejected",
            ],
        ),
        (
            Pane::Deliveries,
            "",
            &[
                "destination",
                "event_id",
                "outcome",
                "http",
                "meta",
                "retry",
                "500",
            ],
        ),
        (Pane::Diff, "", &["seg_test_481"]),
        (
            Pane::Unmapped,
            "",
            &[
                "Segment event",
                "count",
                "order completed",
                "Order Completed",
            ],
        ),
        (
            Pane::Destinations,
            "",
            &[
                "destination",
                "health",
                "dead",
                "queue",
                "meta",
                "warehouse",
            ],
        ),
        (
            Pane::Collisions,
            "",
            &[
                "kind",
                "winner (first)",
                "collapsed",
                "duplicate_order",
                "seg_test_481",
                "seg_test_483",
            ],
        ),
        (Pane::Profiles, "test.user@example.com", &["cust_34982"]),
        (Pane::Alerts, "", &["Alerts"]),
    ];
    for (pane, filter, must_show) in cases {
        let mut app = app_on(&server, pane, filter);
        if pane == Pane::Diff {
            app.trace_of = Some("seg_test_481".into());
            let mut snapshot = server.dashboard(&app.query(), &[], loaded_now());
            pin(&mut snapshot);
            app.apply(snapshot);
        }
        let text = narrow(&app);
        let index = Pane::ALL.iter().position(|p| *p == pane).unwrap();
        assert!(
            text.contains(&format!("{} {}", index + 1, pane.title())),
            "{pane:?}: the current tab is named\n{text}"
        );
        for word in must_show {
            assert!(
                text.contains(word),
                "{pane:?} at 80×24 lacks `{word}`:\n{text}"
            );
        }
        insta::assert_snapshot!(
            format!("narrow_{}", pane.title().to_lowercase().replace(' ', "_")),
            text
        );
    }
}

#[tokio::test]
async fn keys_move_between_panes_and_follow_a_message() {
    let (server, _sandbox) = scenario().await;
    let mut app = app_on(&server, Pane::Stream, "");
    let key = |c| KeyEvent::new(c, KeyModifiers::NONE);
    // Select the purchase and press enter: the diff pane traces it.
    let row = app
        .snapshot
        .stream
        .iter()
        .position(|r| r.message_id.as_deref() == Some("seg_test_481"))
        .unwrap();
    for _ in 0..row {
        app.handle_key(key(KeyCode::Char('j')));
    }
    assert!(app.handle_key(key(KeyCode::Enter)));
    assert_eq!(app.pane, Pane::Diff);
    assert_eq!(app.query().trace_of.as_deref(), Some("seg_test_481"));
    // `c` copies the raw message as Segment sent it.
    let snapshot = server.dashboard(&app.query(), &[], loaded_now());
    app.apply(snapshot);
    app.handle_key(key(KeyCode::Char('c')));
    let copied: serde_json::Value =
        serde_json::from_str(app.clipboard.as_deref().expect("copied")).unwrap();
    assert_eq!(copied["messageId"], "seg_test_481");
    assert_eq!(
        copied["properties"]["revenue"], "$129.95",
        "as sent, not as mapped"
    );
    app.clipboard = None;
    // Filter typing does not leak into pane switching.
    app.handle_key(key(KeyCode::Char('1')));
    app.handle_key(key(KeyCode::Char('/')));
    app.handle_key(key(KeyCode::Char('2')));
    assert_eq!(app.pane, Pane::Stream);
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.filter(), "2");
    // Freeze keeps the stream still while data arrives.
    app.handle_key(key(KeyCode::Char('f')));
    let before = app.snapshot.stream.len();
    app.apply(Snapshot::default());
    assert_eq!(app.snapshot.stream.len(), before);
    app.handle_key(key(KeyCode::Char('t')));
    assert_eq!(app.theme().name, "light");
    server.stop().await;
}

#[tokio::test]
async fn the_dashboard_follows_a_running_pipeline() {
    let server = TestServer::start().await;
    let loader = Loader::spawn(
        server.store_location(),
        tracklayer::tui::Destinations::Discovered,
    );
    let (themes, _) = theme::load_all(None);
    let mut app = App::new(themes, None, "test".into());
    loader.request(app.query());
    let first = loader
        .snapshots
        .recv_timeout(Duration::from_secs(5))
        .unwrap();
    app.apply(first);
    assert!(app.snapshot.stream.is_empty());

    let body = track("live-1", "Order Completed", "ORD-1", "5", "");
    let response = signed(
        &client(),
        &server.url("/segment/events"),
        "production",
        PRODUCTION_SECRET,
        &body,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200);

    let start = Instant::now();
    loop {
        loader.request(app.query());
        app.apply(
            loader
                .snapshots
                .recv_timeout(Duration::from_secs(5))
                .unwrap(),
        );
        if app
            .snapshot
            .stream
            .iter()
            .any(|r| r.message_id.as_deref() == Some("live-1"))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the stream never showed the message"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = render(&app).backend().to_string();
    assert!(text.contains("live-1") && text.contains("mapped"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn the_test_send_pane_walks_a_call_stage_by_stage() {
    let (server, _sandbox) = scenario().await;
    let modes = tracklayer::testsend::TestPlan::new(
        server.setup.test_modes(),
        server.setup.profile_destinations(),
        false,
    );
    let mut app = app_on(&server, Pane::TestSend, "");
    app.test = tracklayer::tui::app::TestSendState::new(modes, true);
    let key = |c| KeyEvent::new(c, KeyModifiers::NONE);
    // `s` asks the event loop to send the first call (identify); here the test posts it.
    app.handle_key(key(KeyCode::Char('s')));
    assert_eq!(app.pending_send.take(), Some(0));
    let message = app.test.steps[0].message.clone();
    let (status, reply) = server
        .post("production", PRODUCTION_SECRET, &message.to_string())
        .await;
    app.test.sent[0] = Some(tracklayer::testsend::SendResult { status, reply });
    let snapshot = server.dashboard(&app.query(), &[], loaded_now());
    app.apply(snapshot);
    // One stage shows; each space reveals the next.
    let text = render(&app).backend().to_string();
    assert!(text.contains("✔ pass  authenticated"), "{text}");
    assert!(!text.contains("parsed"), "{text}");
    for _ in 0..10 {
        app.handle_key(key(KeyCode::Char(' ')));
    }
    let terminal = render(&app);
    let text = terminal.backend().to_string();
    assert!(text.contains("✔ pass  parsed"), "{text}");
    assert!(
        text.contains("· skip  mapped        identify: updates the profile"),
        "{text}"
    );
    assert!(text.contains("✔ pass  identity      profile"), "{text}");
    assert!(
        text.contains("warehouse   skipped (no test mode)"),
        "{text}"
    );
    assert!(
        text.contains("meta        skipped (test mode off)"),
        "{text}"
    );
    assert_eq!(
        colour_of(&terminal, "authenticated", "✔ pass"),
        Some(app.theme().ok)
    );
    server.stop().await;
}

#[tokio::test]
async fn terminal_control_characters_in_messages_are_shown_escaped() {
    let server = TestServer::start().await;
    // An unmapped name and a messageId as a hostile browser could send them.
    let hostile = "m-\u{1b}]0;pwned\u{7}";
    let body = serde_json::json!({
        "type": "track", "event": "Clicked\u{1b}[2J\r\nNow", "userId": "u-1",
        "messageId": hostile, "timestamp": chrono::Utc::now().to_rfc3339()
    })
    .to_string();
    let (status, reply) = server.post("production", PRODUCTION_SECRET, &body).await;
    assert_eq!(status, 200, "{reply}");
    for pane in [Pane::Stream, Pane::Unmapped, Pane::Diff] {
        let mut app = app_on(&server, pane, "");
        if pane == Pane::Diff {
            app.snapshot.trace = server.reader().trace(hostile).unwrap();
        }
        let terminal = render(&app);
        let buffer = terminal.backend().buffer();
        let cells: String = buffer.content().iter().map(|c| c.symbol()).collect();
        assert!(
            !cells.contains(|c: char| c.is_control()),
            "{pane:?} put a control character on the terminal"
        );
        assert!(
            cells.contains("Clicked\\e[2J\\r\\nNow") || cells.contains("m-\\e]0;pwned\\u{7}"),
            "{pane:?} does not show the escaped text:\n{}",
            terminal.backend()
        );
    }
    server.stop().await;
}

/// What a pane shows, without what legitimately differs between stores: row numbers, clocks
/// and the node (which only the fleet has).
fn comparable(server: &TestServer, pane: Pane, filter: &str, trace_of: Option<&str>) -> String {
    let query = tracklayer::tui::Query {
        pane: Pane::ALL.iter().position(|p| *p == pane),
        filter: filter.into(),
        trace_of: trace_of.map(String::from),
        ..Default::default()
    };
    let s = server.dashboard(&query, &["meta".into(), "warehouse".into()], loaded_now());
    assert_eq!(s.error, None);
    let mut out: Vec<String> = Vec::new();
    for r in &s.stream {
        out.push(format!(
            "{} {} {:?} {:?} {:?} {:?} {:?}",
            r.environment, r.status, r.outcome, r.message_type, r.event, r.message_id, r.reason
        ));
    }
    // Destinations deliver concurrently and a worker may batch two events or send them one
    // after the other, by timing: compare each event's own sequence of attempts.
    let mut attempts = s.attempts.clone();
    attempts.sort_by(|a, b| {
        (&a.destination, &a.message_id, a.attempt).cmp(&(&b.destination, &b.message_id, b.attempt))
    });
    for a in &attempts {
        out.push(format!(
            "{} {} {} {:?} #{} {} {:?} {:?} {} sent={}",
            a.destination,
            a.destination_event,
            a.event_id,
            a.message_id,
            a.attempt,
            a.outcome,
            a.status_code,
            a.reason,
            a.delivery_status,
            a.request_row.is_some()
        ));
    }
    for g in &s.unmapped {
        out.push(format!(
            "{} ×{} {} {:?} {} {:?}",
            g.segment_event, g.count, g.environments, g.suggestion, g.reason, g.example_message_id
        ));
    }
    for d in &s.destinations {
        out.push(format!(
            "{} delivered={} retrying={} in_flight={} dead={} blocked={} paused={} failed_5m={} failed_1h={} last={:?} kinds={:?} coverage={:?}",
            d.destination,
            d.delivered,
            d.retrying,
            d.in_flight,
            d.dead,
            d.blocked_consent,
            d.paused.is_some(),
            // Failed requests, not totals: how many events shared a batch request
            // depends on timing, and a batch-friendly destination may use one or two.
            d.last_5m.requests - d.last_5m.succeeded,
            d.last_1h.requests - d.last_1h.succeeded,
            d.last_error.as_ref().map(|e| &e.1),
            d.error_kinds,
            d.coverage
        ));
    }
    for c in &s.collisions {
        out.push(format!(
            "{} {} {:?} {:?} {}",
            c.event_id, c.kind, c.winner_message_id, c.message_id, c.canonical
        ));
    }
    if let Some(p) = &s.profile {
        out.push(format!(
            "{:?} {} {:?} {:?}",
            p.user_id,
            p.traits,
            p.consent,
            p.identities_line()
        ));
    }
    for e in &s.profile_events {
        out.push(format!("{} {} {}", e.event_id, e.name, e.message_id));
    }
    if let Some(t) = &s.trace {
        for e in &t.events {
            out.push(format!(
                "{} {}",
                e.event_id,
                serde_json::to_string(&e.canonical).unwrap()
            ));
        }
    }
    out.join("\n")
}

/// `tracklayer tui --attach postgres://…`: the fleet's dashboard reads what the embedded one
/// reads. The same scripted morning on SQLite and on PostgreSQL loads the same rows in every
/// pane; on PostgreSQL each message and attempt also names the node that handled it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_dashboard_shows_what_the_embedded_one_shows() {
    if common::postgres::server_url().is_none() {
        return;
    }
    let (embedded, _a) = scenario_on(Store::Sqlite).await;
    let (fleet, _b) = scenario_on(Store::Postgres).await;
    let panes = [
        (Pane::Stream, "", None),
        (Pane::Stream, "ORD", None),
        (Pane::Stream, "bad_sig", None),
        (Pane::Deliveries, "", None),
        (Pane::Deliveries, "meta", None),
        (Pane::Deliveries, "dest:meta status:retry", None),
        (Pane::Deliveries, "http:500", None),
        (Pane::Stream, "status:rejected", None),
        (Pane::Stream, "status:mapped env:production", None),
        (Pane::Stream, "id:seg_test_482", None),
        (Pane::Diff, "", Some("seg_test_481")),
        (Pane::Unmapped, "", None),
        (Pane::Destinations, "", None),
        (Pane::Collisions, "", None),
        (Pane::Profiles, "test.user@example.com", None),
        (Pane::Profiles, "cust_34982", None),
    ];
    for (pane, filter, trace_of) in panes {
        let expected = comparable(&embedded, pane, filter, trace_of);
        assert!(!expected.is_empty(), "{pane:?} {filter:?} shows nothing");
        assert_eq!(
            comparable(&fleet, pane, filter, trace_of),
            expected,
            "{pane:?} filter {filter:?}"
        );
    }
    // The fleet's own columns: the node that received each message and made each attempt.
    let mut stream = app_on(&fleet, Pane::Stream, "");
    stream.selected[0] = stream.snapshot.stream.len() - 1;
    let node = stream
        .snapshot
        .stream
        .iter()
        .find_map(|r| r.node.clone())
        .expect("messages name their node");
    // Refused requests never reached a node's storage decision: no node.
    assert!(stream
        .snapshot
        .stream
        .iter()
        .all(|r| r.node.is_none() == (r.status == "rejected")));
    let label = tracklayer::store::views::node_label(&node).to_string();
    assert!(label.contains(':') && !label.ends_with(':'), "{label}");
    let text = render(&stream).backend().to_string();
    assert!(text.contains(" node ") && text.contains(&label), "{text}");
    assert!(text.contains("fleet 1 node"), "{text}");
    let deliveries = app_on(&fleet, Pane::Deliveries, "meta");
    assert!(deliveries
        .snapshot
        .attempts
        .iter()
        .all(|a| a.node.as_deref() == Some(node.as_str())));
    let text = render(&deliveries).backend().to_string();
    assert!(text.contains(&label), "{text}");
    // Meta's failure names the node that saw it.
    let destinations = app_on(&fleet, Pane::Destinations, "");
    let text = render(&destinations).backend().to_string();
    assert!(text.contains(&format!("on {label}")), "{text}");
    // The embedded dashboard has no node column.
    let text = render(&app_on(&embedded, Pane::Stream, ""))
        .backend()
        .to_string();
    assert!(!text.contains(" node "), "{text}");
    embedded.stop().await;
    fleet.stop().await;
}

/// Where `needle` is drawn: (column, row) of its first character.
fn position_of(terminal: &Terminal<TestBackend>, needle: &str) -> Option<(u16, u16)> {
    let buffer = terminal.backend().buffer();
    let width = buffer.area.width as usize;
    (0..buffer.area.height).find_map(|y| {
        let line: String = (0..width)
            .map(|x| buffer[(x as u16, y)].symbol().to_string())
            .collect();
        let col = line.find(needle)?;
        Some((line[..col].chars().count() as u16, y))
    })
}

fn mouse(kind: MouseEventKind, (column, row): (u16, u16)) -> MouseEvent {
    MouseEvent {
        kind,
        column,
        row,
        modifiers: KeyModifiers::NONE,
    }
}

/// `field:value` terms narrow a list to rows whose column of that kind is exactly the value;
/// free text still matches any column; a term a list lacks (a destination on a refused
/// request) leaves those rows out.
#[tokio::test]
async fn field_filters_narrow_lists_by_column() {
    let (server, _sandbox) = scenario().await;
    let app = app_on(&server, Pane::Deliveries, "dest:meta status:retry");
    let rows = &app.snapshot.attempts;
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|a| a.destination == "meta" && a.outcome == "retry"),
        "{rows:#?}"
    );
    let all = app_on(&server, Pane::Deliveries, "");
    assert!(all.snapshot.attempts.len() > rows.len());
    // `status:` on the stream: the word the pane shows (an accepted message's outcome).
    let stream = app_on(&server, Pane::Stream, "status:rejected");
    assert!(!stream.snapshot.stream.is_empty());
    assert!(stream
        .snapshot
        .stream
        .iter()
        .all(|r| r.status == "rejected"));
    let mapped = app_on(&server, Pane::Stream, "STATUS:mapped");
    assert!(!mapped.snapshot.stream.is_empty());
    assert!(mapped
        .snapshot
        .stream
        .iter()
        .all(|r| r.outcome.as_deref() == Some("mapped")));
    // Exact, not a substring: `status:map` matches nothing.
    let partial = app_on(&server, Pane::Stream, "status:map");
    assert!(partial.snapshot.stream.is_empty());
    assert!(render(&partial)
        .backend()
        .to_string()
        .contains("no matches for `status:map`"));
    // A messageId with `_` is matched as typed, not as a wildcard.
    let one = app_on(&server, Pane::Stream, "id:seg_test_482");
    assert_eq!(one.snapshot.stream.len(), 1);
    server.stop().await;
}

/// The mouse acts on what was drawn under the pointer: a tab, a row (a second click opens it),
/// the wheel moving the selection, or scrolling an open detail.
#[tokio::test]
async fn a_click_selects_what_is_under_the_pointer_and_the_wheel_scrolls() {
    let (server, _sandbox) = scenario().await;
    let mut app = app_on(&server, Pane::Stream, "");
    let click = MouseEventKind::Down(MouseButton::Left);
    // A tab.
    let terminal = render(&app);
    let tab = position_of(&terminal, "5 Destinations").unwrap();
    assert!(app.handle_mouse(mouse(click, (tab.0 + 3, tab.1))));
    assert_eq!(app.pane, Pane::Destinations);
    let terminal = render(&app);
    let tab = position_of(&terminal, "1 Live stream").unwrap();
    app.handle_mouse(mouse(click, tab));
    assert_eq!(app.pane, Pane::Stream);
    // A row: it is selected, and the list pauses on it.
    let terminal = render(&app);
    let at = position_of(&terminal, "seg_test_481").unwrap();
    app.handle_mouse(mouse(click, at));
    let selected = &app.snapshot.stream[app.selection()];
    assert_eq!(selected.message_id.as_deref(), Some("seg_test_481"));
    assert!(!app.follow[0], "a clicked row is held while rows arrive");
    // A second click on it opens its trace.
    render(&app);
    assert!(app.handle_mouse(mouse(click, at)));
    assert_eq!(app.pane, Pane::Diff);
    assert_eq!(app.query().trace_of.as_deref(), Some("seg_test_481"));
    // Below the last row nothing happens.
    let mut app = app_on(&server, Pane::Stream, "");
    let terminal = render(&app);
    let rows = app.rows() as u16;
    let header = position_of(&terminal, "messageId").unwrap();
    assert!(!app.handle_mouse(mouse(click, (header.0, header.1 + rows + 2))));
    assert_eq!(app.selection(), 0);
    // The wheel moves the selection three rows at a time.
    app.handle_mouse(mouse(MouseEventKind::ScrollDown, (header.0, header.1 + 1)));
    assert_eq!(app.selection(), 3.min(app.rows() - 1));
    app.handle_mouse(mouse(MouseEventKind::ScrollUp, (header.0, header.1 + 1)));
    assert_eq!(app.selection(), 0);

    // In an open detail the wheel scrolls the detail, never the list behind it.
    let mut app = app_on(&server, Pane::Deliveries, "");
    let key = |c| KeyEvent::new(c, KeyModifiers::NONE);
    app.handle_key(key(KeyCode::Enter));
    let snapshot = server.dashboard(&app.query(), &["meta".into()], loaded_now());
    app.apply(snapshot);
    assert!(app.detail && app.snapshot.request.is_some());
    let mut small = Terminal::new(TestBackend::new(100, 20)).unwrap();
    small.draw(|f| panes::draw(f, &app)).unwrap();
    let (w, h) = (100, 20);
    let middle = (w / 2, h / 2);
    let before = app.selection();
    app.handle_mouse(mouse(MouseEventKind::ScrollDown, middle));
    assert_eq!(app.viewport.scroll, 3, "the detail scrolled");
    assert_eq!(app.selection(), before, "the list behind did not move");
    // A click outside the detail closes it.
    app.handle_mouse(mouse(click, (0, h - 2)));
    assert!(!app.detail);
    server.stop().await;
}

/// The dashboard's test send after a pause longer than the server keeps an idle connection: the
/// next step still reaches it (a pooled connection the server had closed used to be reused,
/// and the step failed with "cannot reach").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_step_after_an_idle_pause_still_reaches_the_server() {
    let server = TestServer::start_with("header_timeout_secs = 1").await;
    let sender = tracklayer::tui::TestSender::spawn(tracklayer::tui::TestSendTarget {
        url: server.url("/segment/events"),
        account: ACCOUNT.into(),
        environment: "production".into(),
        secret: tracklayer::config::Secret::new(PRODUCTION_SECRET),
    });
    let steps = tracklayer::testsend::scenario(
        &Default::default(),
        "idle",
        &["identify".into(), "order_completed".into()],
        &[],
    );
    for (i, step) in steps.iter().enumerate() {
        sender.send(i, step.message.clone());
        let (index, answer) =
            tokio::task::block_in_place(|| sender.answer(std::time::Duration::from_secs(10)))
                .expect("an answer");
        assert_eq!((index, answer.status), (i, 200), "{:?}", answer.reply);
        // Longer than the server's keep-alive (header_timeout_secs = 1).
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    }
    server.stop().await;
}

/// Press a key and, when it asks for data, load it as the loader would.
fn press(server: &TestServer, app: &mut App, code: KeyCode) {
    if app.handle_key(KeyEvent::new(code, KeyModifiers::NONE)) {
        let mut snapshot = server.dashboard(
            &app.query(),
            &["meta".into(), "warehouse".into()],
            loaded_now(),
        );
        assert_eq!(snapshot.error, None);
        pin(&mut snapshot);
        app.apply(snapshot);
    }
}

fn screen(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| panes::draw(f, app)).unwrap();
    stable(terminal.backend().to_string())
}

/// The newcomer's paths (issue 26, items 2–4) at 80×24 and 160×45: a message opened from the
/// stream scrolls to its end in pane 3 and esc goes back to the same row; a collision opens as
/// a collision; the collision side-by-side scrolls.
#[tokio::test]
async fn pane_3_scrolls_and_esc_returns_to_the_row_enter_came_from() {
    let (server, _sandbox) = scenario().await;
    for (width, height) in [(80, 24), (160, 45)] {
        let mut app = app_on(&server, Pane::Stream, "");
        let row = app
            .snapshot
            .stream
            .iter()
            .position(|r| r.message_id.as_deref() == Some("seg_test_481"))
            .unwrap();
        for _ in 0..row {
            press(&server, &mut app, KeyCode::Char('j'));
        }
        press(&server, &mut app, KeyCode::Enter);
        assert_eq!(app.pane, Pane::Diff);
        let top = screen(&app, width, height);
        if height == 24 {
            assert!(top.contains("raw 1–"), "{top}");
            assert!(
                !top.contains("\"currency\": \"EUR\""),
                "the end is below at first:\n{top}"
            );
        } else {
            assert!(
                top.contains("\"currency\": \"EUR\""),
                "160×45 shows it whole:\n{top}"
            );
        }
        // To the end: the raw properties come into view; j/k move a line.
        press(&server, &mut app, KeyCode::End);
        let end = screen(&app, width, height);
        assert!(end.contains("\"currency\": \"EUR\""), "{end}");
        press(&server, &mut app, KeyCode::Char('k'));
        press(&server, &mut app, KeyCode::PageDown);
        assert_eq!(
            screen(&app, width, height),
            end,
            "PgDn at the end stays there"
        );
        // esc: back to the stream, on the same message.
        press(&server, &mut app, KeyCode::Esc);
        assert_eq!(app.pane, Pane::Stream);
        assert_eq!(
            app.snapshot.stream[app.selection()].message_id.as_deref(),
            Some("seg_test_481"),
            "{}",
            screen(&app, width, height)
        );

        // A collision opens as what it is.
        let mut app = app_on(&server, Pane::Collisions, "");
        let side = screen(&app, width, height);
        if height == 24 {
            assert!(side.contains("first arrival (kept) 1–"), "{side}");
            press(&server, &mut app, KeyCode::Char('J'));
            assert_ne!(
                screen(&app, width, height),
                side,
                "J scrolls the side-by-side"
            );
            // The end of both messages (their properties) is reachable.
            for _ in 0..6 {
                press(&server, &mut app, KeyCode::Char('J'));
            }
            let scrolled = screen(&app, width, height);
            assert!(
                scrolled.contains("\"product_id\": \"SKU-481\"") && scrolled.contains("/26 "),
                "{scrolled}"
            );
        }
        press(&server, &mut app, KeyCode::Enter);
        assert_eq!(app.pane, Pane::Diff);
        let text = screen(&app, width, height);
        assert!(
            text.contains("collapsed onto") && text.contains("(duplicate_order)"),
            "{text}"
        );
        assert!(!text.contains("identity only"), "{text}");
        press(&server, &mut app, KeyCode::Esc);
        assert_eq!(app.pane, Pane::Collisions);
    }
    server.stop().await;
}

/// Counts and empty texts that tell the truth (items 6 and 7).
#[tokio::test]
async fn filtered_and_empty_views_say_what_is_true() {
    let (server, _sandbox) = scenario().await;
    // A filter matching no collision while collisions exist.
    let app = app_on(&server, Pane::Collisions, "nothing-like-this");
    let text = screen(&app, 160, 45);
    assert!(
        text.contains("No collision matches `nothing-like-this`"),
        "{text}"
    );
    assert!(!text.contains("every event_id arrived once"), "{text}");
    assert!(!text.contains("null"), "{text}");
    // A paused stream given a new filter starts over at its newest match, with no count of
    // unfiltered rows beside it.
    let mut app = app_on(&server, Pane::Stream, "");
    press(&server, &mut app, KeyCode::Char('f'));
    press(&server, &mut app, KeyCode::Char('/'));
    for c in "status:collision".chars() {
        press(&server, &mut app, KeyCode::Char(c));
    }
    press(&server, &mut app, KeyCode::Enter);
    let text = screen(&app, 160, 45);
    assert!(
        text.contains("● following  1 of 1  filter: status:collision"),
        "{text}"
    );
    assert!(!text.contains(" new "), "{text}");
    // What status:collision lists reads as a collision, with why.
    let row = text
        .lines()
        .find(|l| l.contains("seg_test_483"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("collision"), "{row}");
    assert!(
        row.contains("collision duplicate_order: collapsed onto ev_purchase_"),
        "{row}"
    );
    server.stop().await;
}

/// Each pane's footer names that pane's keys from the key table; at 80×24 the help scrolls to
/// its end (detail keys and the filter syntax included) and a question's choices are whole.
#[tokio::test]
async fn the_footer_names_the_focused_panes_keys_and_nothing_is_cut_at_80_by_24() {
    let (server, _sandbox) = scenario().await;
    for (pane, own) in [
        (Pane::Stream, "A allow replay"),
        (Pane::Deliveries, "R retry now"),
        (Pane::Diff, "j scroll"),
        (Pane::Destinations, "D replay dead"),
        (Pane::Collisions, "J scroll"),
        (Pane::TestSend, "s send"),
    ] {
        let app = app_on(&server, pane, "");
        let text = screen(&app, 160, 45);
        let footer = text.lines().last().unwrap();
        assert!(footer.contains(own), "{pane:?}: {footer}");
        assert!(footer.contains("? help · q quit"), "{pane:?}: {footer}");
        let narrow = screen(&app, 80, 24);
        assert!(narrow.contains("? help · q quit"), "{pane:?}:\n{narrow}");
    }
    // An open detail's footer: its own keys.
    let mut app = app_on(&server, Pane::Deliveries, "");
    press(&server, &mut app, KeyCode::Enter);
    let footer = screen(&app, 160, 45);
    let footer = footer.lines().last().unwrap();
    for key in ["r response", "w wrap", "y curl", "esc close"] {
        assert!(footer.contains(key), "{footer}");
    }

    // The help at 80×24: longer than the screen, scrolled to its end.
    let mut app = app_on(&server, Pane::Stream, "");
    press(&server, &mut app, KeyCode::Char('?'));
    let first = screen(&app, 80, 24);
    assert!(first.contains("Keys 1–"), "{first}");
    let mut seen = first.clone();
    for _ in 0..10 {
        press(&server, &mut app, KeyCode::PageDown);
        seen.push_str(&screen(&app, 80, 24));
    }
    for must in [
        "in a detail",
        "jump to the response",
        "copy the request as a curl",
        "filter syntax",
        "dest:meta",
        "status:dead",
    ] {
        assert!(
            seen.contains(must),
            "the help never shows `{must}`:\n{seen}"
        );
    }
    press(&server, &mut app, KeyCode::Char('x'));
    assert!(!app.help, "any other key closes the help");

    // A question's choices whole at 80 columns.
    let mut app = app_on(&server, Pane::Destinations, "");
    app.actions = Ok(());
    press(&server, &mut app, KeyCode::Char('D'));
    // Wrapped lines joined again, as a reader reads them.
    let text = screen(&app, 80, 24)
        .replace('"', "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for must in [
        "h: only those that died in the last hour",
        "any other key: cancel",
    ] {
        assert!(text.contains(must), "{text}");
    }
    server.stop().await;
}

/// The destinations pane charts the selected destination's last hour: delivered, retried and
/// dead per minute, beside the success rate (Meta failed once with a 500, then delivered).
#[tokio::test]
async fn the_destinations_pane_charts_the_last_hour() {
    let (server, _sandbox) = scenario().await;
    let (themes, _) = theme::load_all(None);
    let mut app = App::new(themes, None, "test".into());
    app.pane = Pane::Destinations;
    let now = chrono::Utc::now().timestamp_millis();
    let snapshot = server.dashboard(&app.query(), &["meta".into(), "warehouse".into()], now);
    let meta = snapshot
        .destinations
        .iter()
        .find(|d| d.destination == "meta")
        .unwrap();
    let (delivered, retried, dead) = meta.per_minute.total();
    assert_eq!(
        (delivered, retried, dead),
        (1, 1, 0),
        "{:?}",
        meta.per_minute
    );
    assert_eq!(
        meta.per_minute.delivered[59], 1,
        "this minute is the last bucket"
    );
    app.apply(snapshot);
    for (width, height) in [(160, 45), (80, 24)] {
        let text = screen(&app, width, height);
        assert!(
            text.contains("meta · last hour per minute · ok 5m 50%"),
            "{text}"
        );
        assert!(
            text.contains("delivered 1") && text.contains("retried 1") && text.contains("dead 0"),
            "{text}"
        );
        assert!(text.contains('█'), "a bar for this minute:\n{text}");
    }
    server.stop().await;
}
