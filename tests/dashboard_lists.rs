//! The dashboard's lists as an on-call engineer uses them: the selection stays on its row while
//! live rows arrive, Enter opens what is highlighted, and paging reaches the oldest message of
//! a long history. TestBackend renders over real stores (real HTTP where rows arrive live).

mod common;

use common::*;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use tracklayer::store::DashboardReader;
use tracklayer::tui::app::{load, App, Pane};
use tracklayer::tui::{panes, theme};

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn new_app() -> App {
    let (themes, _) = theme::load_all(None);
    App::new(themes, None, "test".into())
}

fn screen(app: &App) -> String {
    let mut terminal = Terminal::new(TestBackend::new(150, 30)).unwrap();
    terminal.draw(|f| panes::draw(f, app)).unwrap();
    terminal.backend().to_string()
}

fn selected_message_id(app: &App) -> String {
    app.snapshot.stream[app.selection()]
        .message_id
        .clone()
        .unwrap_or_default()
}

/// Load what the app asks for, as the loader thread does.
fn refresh(app: &mut App, reader: &mut dyn DashboardReader) {
    let snapshot = load(
        reader,
        &app.query(),
        &["warehouse".to_string()],
        chrono::Utc::now().timestamp_millis(),
    );
    assert_eq!(snapshot.error, None);
    app.apply(snapshot);
}

/// Press a key; load at once when the app asks (a new page, a new pane).
fn press(app: &mut App, reader: &mut dyn DashboardReader, code: KeyCode) {
    if app.handle_key(key(code)) {
        refresh(app, reader);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_rows_arriving_above_the_selection_leave_it_on_its_message() {
    let server = TestServer::start().await;
    for i in 0..5 {
        let (status, _) = server
            .post(
                "production",
                PRODUCTION_SECRET,
                &track(&format!("early-{i}"), "Order Completed"),
            )
            .await;
        assert_eq!(status, 200);
    }
    let mut reader = server.reader();
    let mut app = new_app();
    refresh(&mut app, &mut reader);
    assert!(
        screen(&app).contains("● following  1 of 5"),
        "{}",
        screen(&app)
    );
    assert_eq!(selected_message_id(&app), "early-4");
    // Two rows down: the view pauses on early-2.
    press(&mut app, &mut reader, KeyCode::Char('j'));
    press(&mut app, &mut reader, KeyCode::Char('j'));
    assert_eq!(selected_message_id(&app), "early-2");
    // Seven more arrive while the engineer reads.
    for i in 0..7 {
        let (status, _) = server
            .post(
                "production",
                PRODUCTION_SECRET,
                &track(&format!("late-{i}"), "Order Completed"),
            )
            .await;
        assert_eq!(status, 200);
    }
    refresh(&mut app, &mut reader);
    let text = screen(&app);
    assert_eq!(selected_message_id(&app), "early-2", "{text}");
    assert!(
        text.contains("‖ paused · 7 new (g: newest)  10 of 12"),
        "{text}"
    );
    // The highlighted row is the one on screen, and Enter opens exactly it.
    let highlighted = text
        .lines()
        .position(|l| l.contains("early-2"))
        .expect("early-2 on screen");
    assert_eq!(
        text.lines().filter(|l| l.contains("early-")).count(),
        5,
        "the paused page does not take in the new rows: {text}"
    );
    assert!(highlighted > 0);
    press(&mut app, &mut reader, KeyCode::Enter);
    assert_eq!(app.pane, Pane::Diff);
    assert_eq!(app.trace_of.as_deref(), Some("early-2"));
    // Back on the stream, g follows the newest again and shows the new rows.
    press(&mut app, &mut reader, KeyCode::Char('1'));
    press(&mut app, &mut reader, KeyCode::Char('g'));
    assert_eq!(selected_message_id(&app), "late-6");
    assert!(screen(&app).contains("● following  1 of 12"));
    // With a filter, the same: rows matching it arrive above without moving the selection.
    app.filters[0] = "early".into();
    refresh(&mut app, &mut reader);
    press(&mut app, &mut reader, KeyCode::Char('j'));
    assert_eq!(selected_message_id(&app), "early-3");
    let (status, _) = server
        .post(
            "production",
            PRODUCTION_SECRET,
            &track("early-5", "Order Completed"),
        )
        .await;
    assert_eq!(status, 200);
    refresh(&mut app, &mut reader);
    assert_eq!(selected_message_id(&app), "early-3");
    press(&mut app, &mut reader, KeyCode::Enter);
    assert_eq!(app.trace_of.as_deref(), Some("early-3"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_attempts_list_keeps_its_row_while_attempts_arrive() {
    let sandbox = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        tracklayer::sandbox::Sandbox::start(listener).await.unwrap()
    };
    let server = TestServer::start_with_toml(&format!(
        "[[destinations]]\nname = \"meta\"\nkind = \"meta_capi\"\nendpoint = \"{}\"\npixel_id = \"1234567890123456\"\naccess_token = \"EAAB_TEST\"\n",
        sandbox.url()
    ))
    .await;
    let post = |i: usize| {
        let body = format!(
            r#"{{"type":"track","event":"Order Completed","messageId":"p-{i}","userId":"u1","context":{{"ip":"203.0.113.42","userAgent":"Mozilla/5.0"}},"properties":{{"order_id":"O-{i}","revenue":5,"currency":"EUR"}}}}"#
        );
        let server = &server;
        async move {
            let (status, _) = server.post("production", PRODUCTION_SECRET, &body).await;
            assert_eq!(status, 200);
        }
    };
    for i in 0..3 {
        post(i).await;
    }
    let mut reader = server.reader();
    let mut app = new_app();
    press(&mut app, &mut reader, KeyCode::Char('2'));
    let attempts = |reader: &mut tracklayer::store::StoreReader| {
        reader.recent_attempts(100, "").unwrap().len()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while attempts(&mut reader) < 3 {
        assert!(std::time::Instant::now() < deadline, "three attempts");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    refresh(&mut app, &mut reader);
    press(&mut app, &mut reader, KeyCode::Char('j'));
    let chosen = app.snapshot.attempts[app.selection()].attempt_row;
    for i in 3..6 {
        post(i).await;
    }
    while attempts(&mut reader) < 6 {
        assert!(std::time::Instant::now() < deadline, "six attempts");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    refresh(&mut app, &mut reader);
    assert_eq!(app.snapshot.attempts[app.selection()].attempt_row, chosen);
    assert!(
        screen(&app).contains("‖ paused · 3 new"),
        "{}",
        screen(&app)
    );
    server.stop().await;
}

#[test]
fn paging_reaches_the_oldest_of_100k_stored_messages() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tracklayer.db");
    bulk::fill(&db, 100_000, false);
    let mut reader = tracklayer::store::StoreReader::open(&db).unwrap();
    let mut app = new_app();
    refresh(&mut app, &mut reader);
    assert_eq!(selected_message_id(&app), "m-99999");
    assert!(screen(&app).contains("1 of 100,000"));
    // Sixty pages of ten: past the first loaded page, each key one step.
    for _ in 0..60 {
        press(&mut app, &mut reader, KeyCode::PageDown);
    }
    assert_eq!(selected_message_id(&app), "m-99399");
    assert!(screen(&app).contains("601 of 100,000"), "{}", screen(&app));
    // And back up the same way, across the page boundary again.
    for _ in 0..60 {
        press(&mut app, &mut reader, KeyCode::PageUp);
    }
    assert_eq!(selected_message_id(&app), "m-99999");
    // End: the oldest message there is.
    press(&mut app, &mut reader, KeyCode::End);
    assert_eq!(selected_message_id(&app), "m-0");
    assert!(
        screen(&app).contains("100,000 of 100,000"),
        "{}",
        screen(&app)
    );
    press(&mut app, &mut reader, KeyCode::Char('k'));
    assert_eq!(selected_message_id(&app), "m-1");
    // Home: the newest again, following.
    press(&mut app, &mut reader, KeyCode::Home);
    assert_eq!(selected_message_id(&app), "m-99999");
    assert!(screen(&app).contains("● following  1 of 100,000"));
}

#[test]
fn the_attempts_pane_pages_through_every_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tracklayer.db");
    bulk::fill(&db, 4_000, false);
    let attempts = bulk::deliver_all(&db) as i64;
    assert!(attempts > 2 * 500, "more than two pages: {attempts}");
    let total = format!("of {}", thousands(attempts));
    let mut reader = tracklayer::store::StoreReader::open(&db).unwrap();
    let mut app = new_app();
    press(&mut app, &mut reader, KeyCode::Char('2'));
    let row = |app: &App| app.snapshot.attempts[app.selection()].attempt_row;
    let newest = row(&app);
    assert!(
        screen(&app).contains(&format!("1 {total}")),
        "{}",
        screen(&app)
    );
    // Down past the first loaded page of 500, one key at a time by pages of ten.
    for _ in 0..60 {
        press(&mut app, &mut reader, KeyCode::PageDown);
    }
    assert_eq!(row(&app), newest - 600);
    assert!(
        screen(&app).contains(&format!("601 {total}")),
        "{}",
        screen(&app)
    );
    for _ in 0..60 {
        press(&mut app, &mut reader, KeyCode::PageUp);
    }
    assert_eq!(row(&app), newest);
    // End: the very first attempt; Home: the newest again, following.
    press(&mut app, &mut reader, KeyCode::End);
    assert_eq!(row(&app), newest - attempts + 1);
    assert!(
        screen(&app).contains(&format!("{} {total}", thousands(attempts))),
        "{}",
        screen(&app)
    );
    press(&mut app, &mut reader, KeyCode::Home);
    assert_eq!(row(&app), newest);
    assert!(screen(&app).contains(&format!("● following  1 {total}")));
}

#[test]
fn the_collisions_pane_pages_through_every_collision() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tracklayer.db");
    // Three messages share each order: the later arrivals of an order collide.
    bulk::fill(&db, 6_000, false);
    let mut reader = tracklayer::store::StoreReader::open(&db).unwrap();
    let mut app = new_app();
    press(&mut app, &mut reader, KeyCode::Char('6'));
    let row = |app: &App| app.snapshot.collisions[app.selection()].id;
    let newest = row(&app);
    let count = tracklayer::store::DashboardReader::id_range(
        &mut reader,
        tracklayer::store::views::PagedTable::Collisions,
    )
    .unwrap()
    .map_or(0, |(lo, hi)| hi - lo + 1);
    assert!(count > 500, "more than a page: {count}");
    let total = format!("of {}", thousands(count));
    assert!(
        screen(&app).contains(&format!("1 {total}")),
        "{}",
        screen(&app)
    );
    for _ in 0..55 {
        press(&mut app, &mut reader, KeyCode::PageDown);
    }
    assert_eq!(row(&app), newest - 550);
    assert!(
        screen(&app).contains(&format!("551 {total}")),
        "{}",
        screen(&app)
    );
    press(&mut app, &mut reader, KeyCode::End);
    assert_eq!(row(&app), newest - count + 1);
    // A filter by kind narrows the page in the store.
    press(&mut app, &mut reader, KeyCode::Home);
    app.filters[5] = "status:duplicate_order".into();
    refresh(&mut app, &mut reader);
    assert!(!app.snapshot.collisions.is_empty());
    assert!(app
        .snapshot
        .collisions
        .iter()
        .all(|c| c.kind == "duplicate_order"));
}

fn thousands(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Meta on the sandbox, failing the first request with a 500.
async fn failing_meta() -> (tracklayer::sandbox::Sandbox, TestServer) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = tracklayer::sandbox::Sandbox::start(listener).await.unwrap();
    sandbox.state.push_fault(
        tracklayer::sandbox::Platform::Meta,
        tracklayer::sandbox::Fault::Status { status: 500 },
    );
    let server = TestServer::start_with_toml(&format!(
        "[[destinations]]\nname = \"meta\"\nkind = \"meta_capi\"\nendpoint = \"{}\"\nretry_schedule = [60]\npixel_id = \"1234567890123456\"\naccess_token = \"EAAB_TEST_TOKEN_123\"\n",
        sandbox.url()
    ))
    .await;
    (sandbox, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detail_taller_than_the_screen_scrolls_to_the_response() {
    let (_sandbox, server) = failing_meta().await;
    let body = r#"{"type":"track","event":"Order Completed","messageId":"long-1","userId":"u1","context":{"ip":"203.0.113.42","userAgent":"Mozilla/5.0","traits":{"email":"a@b.example","phone":"+33 6 12 34 56 78"}},"properties":{"order_id":"O-1","revenue":5,"currency":"EUR","products":[{"product_id":"A","price":1,"quantity":1},{"product_id":"B","price":2,"quantity":2}]}}"#;
    let (status, _) = server.post("production", PRODUCTION_SECRET, body).await;
    assert_eq!(status, 200);
    let mut reader = server.reader();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while reader.recent_attempts(10, "").unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "an attempt");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut app = new_app();
    press(&mut app, &mut reader, KeyCode::Char('2'));
    press(&mut app, &mut reader, KeyCode::Enter);
    let first = screen(&app);
    assert!(first.contains("POST "), "{first}");
    assert!(
        !first.contains("response: failed HTTP 500"),
        "the request alone is taller than the screen: {first}"
    );
    assert!(!first.contains("EAAB_TEST_TOKEN_123"), "{first}");
    // One key to the response; the list behind does not move.
    let selected = app.selection();
    press(&mut app, &mut reader, KeyCode::Char('r'));
    let at_response = screen(&app);
    assert!(
        at_response.contains("response: failed HTTP 500"),
        "{at_response}"
    );
    press(&mut app, &mut reader, KeyCode::Char('j'));
    press(&mut app, &mut reader, KeyCode::PageDown);
    assert_eq!(app.selection(), selected);
    assert!(app.detail);
    // g back to the top, G to the end, the position in the title.
    press(&mut app, &mut reader, KeyCode::Char('g'));
    assert!(screen(&app).contains("lines 1–"), "{}", screen(&app));
    press(&mut app, &mut reader, KeyCode::Char('G'));
    let end = screen(&app);
    assert!(end.contains("sandbox fault"), "the response body: {end}");
    // y: the request as curl, secrets still redacted.
    press(&mut app, &mut reader, KeyCode::Char('y'));
    let curl = app.clipboard.take().expect("copied");
    assert!(curl.contains("curl -X POST 'http://127.0.0.1:"), "{curl}");
    assert!(
        curl.contains("REDACTED") && !curl.contains("EAAB_TEST_TOKEN_123"),
        "{curl}"
    );
    // esc closes the detail; j moves the list again.
    press(&mut app, &mut reader, KeyCode::Esc);
    assert!(!app.detail);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_opens_with_its_reason_in_full_and_the_fix() {
    let server = TestServer::start().await;
    let (status, _) = server
        .post(
            "production",
            "a-secret-someone-rotated",
            &track("r-1", "Order Completed"),
        )
        .await;
    assert_eq!(status, 401);
    let mut reader = server.reader();
    // Refusals reach the store in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut app = new_app();
    loop {
        refresh(&mut app, &mut reader);
        if !app.snapshot.stream.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the refusal stored");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    press(&mut app, &mut reader, KeyCode::Enter);
    let text = screen(&app);
    assert_eq!(app.pane, Pane::Stream);
    assert!(text.contains("refused: HTTP 401 bad_signature"), "{text}");
    let reason = app.snapshot.rejection.as_ref().unwrap().reason.clone();
    assert!(reason.len() > 20, "the full reason: {reason}");
    assert!(text.contains(&format!("reason: {reason}")), "{text}");
    assert!(
        text.contains("fix: The secret used to sign differs"),
        "{text}"
    );
    assert!(
        text.contains("peer") && text.contains("127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains("X-TrackLayer-Environment  production"),
        "{text}"
    );
    server.stop().await;
}

/// Load what the app asks for from the server's store (either kind), as the loader does.
fn refresh_from(server: &TestServer, app: &mut App) {
    let snapshot = server.dashboard(&app.query(), &[], chrono::Utc::now().timestamp_millis());
    assert_eq!(snapshot.error, None);
    app.apply(snapshot);
    if std::mem::take(&mut app.reload_now) {
        refresh_from(server, app);
    }
}

fn type_keys(app: &mut App, text: &str) {
    for c in text.chars() {
        app.handle_key(key(KeyCode::Char(c)));
    }
}

/// `:` then the text then Enter, and what it opened.
fn search(server: &TestServer, app: &mut App, text: &str) {
    app.pane = Pane::Stream;
    app.handle_key(key(KeyCode::Char(':')));
    type_keys(app, text);
    assert!(app.handle_key(key(KeyCode::Enter)));
    refresh_from(server, app);
}

async fn search_by_each_key_opens_the_right_message(store: Store) {
    let server = TestServer::start_for(store, "").await;
    let identify = r#"{"type":"identify","messageId":"s-identify","userId":"u-search","anonymousId":"anon-search","traits":{"email":"Search.Person@Example.com","phone":"+33 6 12 34 56 78"}}"#;
    let order = r#"{"type":"track","event":"Order Completed","messageId":"s-order","userId":"u-search","properties":{"order_id":"ORD-77","revenue":10,"currency":"EUR"}}"#;
    let other = r#"{"type":"track","event":"Order Completed","messageId":"s-other","userId":"u-other","properties":{"order_id":"ORD-78","revenue":10,"currency":"EUR"}}"#;
    let mut request_of_other = String::new();
    for body in [identify, order, other] {
        let (status, reply) = server.post("production", PRODUCTION_SECRET, body).await;
        assert_eq!(status, 200, "{reply}");
        request_of_other = reply["request_id"].as_str().unwrap().to_string();
    }
    let event_id = {
        let snapshot = server.dashboard(
            &tracklayer::tui::Query {
                pane: Some(2),
                trace_of: Some("s-order".into()),
                ..Default::default()
            },
            &[],
            0,
        );
        snapshot.trace.expect("traced").events[0].event_id.clone()
    };
    let mut app = new_app();
    for (text, message, matched) in [
        ("s-order", "s-order", "messageId"),
        (event_id.as_str(), "s-order", "event_id"),
        (request_of_other.as_str(), "s-other", "request id"),
        ("ORD-77", "s-order", "order_id"),
        ("ORD-78", "s-other", "order_id"),
    ] {
        search(&server, &mut app, text);
        assert_eq!(app.pane, Pane::Diff, "{text}");
        assert_eq!(app.trace_of.as_deref(), Some(message), "{text}");
        let status = app.status.shown().unwrap_or_default().to_string();
        assert!(
            status.contains(&format!("is a {matched}")),
            "{text}: {status}"
        );
        let trace = app.snapshot.trace.as_ref().expect("the trace loaded");
        assert_eq!(trace.arrivals[0].message_id.as_deref(), Some(message));
    }
    for text in [
        "u-search",
        "anon-search",
        "search.person@example.com",
        "+33612345678",
    ] {
        search(&server, &mut app, text);
        assert_eq!(app.pane, Pane::Profiles, "{text}");
        let profile = app
            .snapshot
            .profile
            .as_ref()
            .unwrap_or_else(|| panic!("{text}: no profile"));
        assert_eq!(profile.user_id.as_deref(), Some("u-search"), "{text}");
    }
    search(&server, &mut app, "nothing-like-this");
    assert!(
        app.status
            .shown()
            .unwrap_or_default()
            .starts_with("nothing matches `nothing-like-this`"),
        "{:?}",
        app.status
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_narrows_as_it_is_typed_and_says_when_nothing_matches() {
    let server = TestServer::start().await;
    for (id, event) in [("f-1", "Order Completed"), ("f-2", "Product Viewed")] {
        let (status, _) = server
            .post("production", PRODUCTION_SECRET, &track(id, event))
            .await;
        assert_eq!(status, 200);
    }
    let mut app = new_app();
    refresh_from(&server, &mut app);
    assert_eq!(app.snapshot.stream.len(), 2);
    app.handle_key(key(KeyCode::Char('/')));
    // Each key narrows at once, before Enter.
    assert!(app.handle_key(key(KeyCode::Char('V'))));
    refresh_from(&server, &mut app);
    assert!(app.handle_key(key(KeyCode::Char('i'))));
    refresh_from(&server, &mut app);
    assert_eq!(app.filter(), "Vi");
    let ids: Vec<_> = app
        .snapshot
        .stream
        .iter()
        .map(|r| r.message_id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["f-2"]);
    type_keys(&mut app, "xyz");
    refresh_from(&server, &mut app);
    assert!(
        screen(&app).contains("no matches for `Vixyz` (esc clears)"),
        "{}",
        screen(&app)
    );
    assert!(app.handle_key(key(KeyCode::Esc)));
    refresh_from(&server, &mut app);
    assert_eq!(app.filter(), "");
    assert_eq!(app.snapshot.stream.len(), 2);
    server.stop().await;
}

/// Load with the given destinations listed, performing a confirmed action first (as the
/// loader does, on a plain thread: the PostgreSQL client must not run on an async thread).
fn act_and_refresh(server: &TestServer, app: &mut App, last_action: &mut u64) {
    let location = server.store_location();
    let query = app.query();
    let snapshot = std::thread::scope(|s| {
        s.spawn(|| {
            let done = tracklayer::tui::app::act(&location, &query, last_action);
            let mut reader = location.open().unwrap();
            let mut snapshot = load(
                reader.as_mut(),
                &query,
                &["meta".to_string()],
                chrono::Utc::now().timestamp_millis(),
            );
            snapshot.action_done = done;
            snapshot
        })
        .join()
        .unwrap()
    });
    assert_eq!(snapshot.error, None);
    app.apply(snapshot);
}

fn queue_of(server: &TestServer, destination: &str) -> tracklayer::store::views::QueueCounts {
    let location = server.store_location();
    std::thread::scope(|s| {
        s.spawn(|| location.open().unwrap().queue_counts(destination).unwrap())
            .join()
            .unwrap()
    })
}

fn recorded_actions(server: &TestServer) -> Vec<tracklayer::store::model::actions::OperatorRecord> {
    match server.store_location() {
        tracklayer::store::StoreLocation::Sqlite(path) => {
            tracklayer::store::sqlite::operator_actions(&path, 10).unwrap()
        }
        tracklayer::store::StoreLocation::Postgres(url) => {
            tracklayer::store::postgres::operator_actions(&url, 10).unwrap()
        }
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn each_action_changes_the_store_as_it_says(store: Store) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = tracklayer::sandbox::Sandbox::start(listener).await.unwrap();
    let meta = tracklayer::sandbox::Platform::Meta;
    sandbox.state.set_sticky(
        meta,
        Some(tracklayer::sandbox::Fault::Status { status: 400 }),
    );
    let server = TestServer::start_for(
        store,
        &format!(
            "[[destinations]]\nname = \"meta\"\nkind = \"meta_capi\"\nendpoint = \"{}\"\nretry_schedule = [1]\npixel_id = \"1234567890123456\"\naccess_token = \"EAAB_TEST\"\n",
            sandbox.url()
        ),
    )
    .await;
    let purchase = |i: usize| {
        format!(
            r#"{{"type":"track","event":"Order Completed","messageId":"a-{i}","userId":"u1","context":{{"ip":"203.0.113.42","userAgent":"Mozilla/5.0"}},"properties":{{"order_id":"O-{i}","revenue":5,"currency":"EUR"}}}}"#
        )
    };
    for i in 0..2 {
        let (status, _) = server
            .post("production", PRODUCTION_SECRET, &purchase(i))
            .await;
        assert_eq!(status, 200);
    }
    // Meta refuses them as invalid (400): dead letters.
    wait_until("two dead letters", || queue_of(&server, "meta").dead == 2).await;
    let mut app = new_app();
    app.actions = Ok(());
    app.who = "oncall@test-host".into();
    let mut last = 0;
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('5'));
    // D asks first; anything but y cancels and changes nothing.
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('D'));
    let question = screen(&app);
    assert!(
        question.contains("put every dead delivery of meta back in the queue")
            && question.contains("y: all of them"),
        "{question}"
    );
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('n'));
    assert_eq!(app.status.shown(), Some("cancelled: nothing was changed"));
    assert_eq!(queue_of(&server, "meta").dead, 2);
    // Filtered: only what died after a moment replays (none died in the future).
    let location = server.store_location();
    let future = chrono::Utc::now().timestamp_millis() + 60_000;
    let none = std::thread::scope(|s| {
        s.spawn(|| {
            location.operate(
                &tracklayer::store::model::actions::OperatorAction::ReplayDead {
                    destination: "meta".into(),
                    since_ms: Some(future),
                },
                "test",
            )
        })
        .join()
        .unwrap()
    })
    .unwrap();
    assert_eq!(none, 0);
    assert_eq!(queue_of(&server, "meta").dead, 2);
    // The platform is fixed; replay the dead letters of the last hour (h narrows, y does it).
    sandbox.state.set_sticky(meta, None);
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('D'));
    assert!(
        screen(&app).contains("y: all of them · h: only those that died in the last hour"),
        "{}",
        screen(&app)
    );
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('h'));
    assert!(
        screen(&app).contains("put the deliveries of meta that died since"),
        "{}",
        screen(&app)
    );
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('y'));
    let done = app.status.shown().unwrap_or_default().to_string();
    assert!(
        done.starts_with("done: 2 dead deliveries of meta (died since ")
            && done.ends_with(" UTC) re-queued (recorded as oncall@test-host)"),
        "{done}"
    );
    wait_until("both delivered", || {
        queue_of(&server, "meta").delivered == 2
    })
    .await;
    // Pause: nothing is sent until resumed.
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('p'));
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('y'));
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('5'));
    assert!(app.snapshot.destinations[0].paused.is_some());
    assert!(screen(&app).contains("paused"), "{}", screen(&app));
    // Workers see a recorded pause at their next claim, within a second.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, _) = server
        .post("production", PRODUCTION_SECRET, &purchase(2))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(queue_of(&server, "meta").pending, 1, "held while paused");
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('p'));
    assert!(screen(&app).contains("resume meta?"), "{}", screen(&app));
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('y'));
    wait_until("sent after resuming", || {
        queue_of(&server, "meta").delivered == 3
    })
    .await;
    // Retry now: a dead letter, from the attempts pane.
    sandbox.state.set_sticky(
        meta,
        Some(tracklayer::sandbox::Fault::Status { status: 400 }),
    );
    let (status, _) = server
        .post("production", PRODUCTION_SECRET, &purchase(3))
        .await;
    assert_eq!(status, 200);
    wait_until("a new dead letter", || queue_of(&server, "meta").dead == 1).await;
    sandbox.state.set_sticky(meta, None);
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('2'));
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('g'));
    assert_eq!(app.snapshot.attempts[0].delivery_status, "dead");
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('R'));
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('y'));
    wait_until("retried and delivered", || {
        queue_of(&server, "meta").delivered == 4
    })
    .await;
    // A replay window for the selected row's environment.
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('1'));
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('A'));
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('y'));
    let records = recorded_actions(&server);
    let summary: Vec<(String, String, i64, String)> = records
        .iter()
        .rev()
        .map(|r| {
            (
                r.action.clone(),
                r.target.clone(),
                r.affected,
                r.who.clone(),
            )
        })
        .collect();
    let who = "oncall@test-host".to_string();
    assert_eq!(
        summary,
        [
            ("replay_dead".into(), "meta".into(), 0, "test".to_string()),
            ("replay_dead".into(), "meta".into(), 2, who.clone()),
            ("pause".into(), "meta".into(), 1, who.clone()),
            ("resume".into(), "meta".into(), 1, who.clone()),
            ("retry_now".into(), summary[4].1.clone(), 1, who.clone()),
            ("allow_replay".into(), "production".into(), 1, who.clone()),
        ]
    );
    // Attached to a fleet (or a file not writable here): refused, with the reason.
    app.actions = Err("attached to a fleet's database (read-only)".into());
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('5'));
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('D'));
    assert!(app.confirm.is_none());
    assert_eq!(
        app.status.shown(),
        Some("refused: attached to a fleet's database (read-only)")
    );
    assert_eq!(recorded_actions(&server).len(), 6);
    server.stop().await;
}

/// A breaker's pause that has ended while nothing was left to probe keeps its row, but holds
/// nothing back: the destinations pane neither reads it as paused nor offers to resume it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_past_its_end_is_not_shown_as_paused() {
    let server = TestServer::start_with_toml(
        "[[destinations]]\nname = \"meta\"\nkind = \"meta_capi\"\nendpoint = \"http://127.0.0.1:9\"\npixel_id = \"1234567890123456\"\naccess_token = \"EAAB_TEST\"\n",
    )
    .await;
    let pause_until = |until_ms: i64| {
        let conn = rusqlite::Connection::open(&server.db).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        conn.execute(
            "INSERT INTO destination_state (destination, paused_until_ms, reason, updated_at_ms)
             VALUES ('meta', ?1, '8 of the last 8 requests failed; paused for 1 s, then one probe', ?1)
             ON CONFLICT (destination) DO UPDATE SET paused_until_ms = excluded.paused_until_ms",
            [until_ms],
        )
        .unwrap();
    };
    // The first message creates the database.
    let (status, _) = server
        .post(
            "production",
            PRODUCTION_SECRET,
            r#"{"type":"identify","messageId":"i-1","userId":"u1"}"#,
        )
        .await;
    assert_eq!(status, 200);
    let now = chrono::Utc::now().timestamp_millis();
    let mut app = new_app();
    app.actions = Ok(());
    let mut last = 0;
    pause_until(now - 60_000);
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('5'));
    assert!(app.snapshot.destinations[0].paused.is_none());
    assert!(!screen(&app).contains("paused"), "{}", screen(&app));
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('p'));
    assert!(screen(&app).contains("pause meta"), "{}", screen(&app));
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('n'));
    // The same row while the pause lasts reads as paused.
    pause_until(now + 600_000);
    press_loaded(&server, &mut app, &mut last, KeyCode::Char('5'));
    assert!(app.snapshot.destinations[0].paused.is_some());
    assert!(screen(&app).contains("paused"), "{}", screen(&app));
    server.stop().await;
}

fn press_loaded(server: &TestServer, app: &mut App, last: &mut u64, code: KeyCode) {
    app.handle_key(key(code));
    act_and_refresh(server, app, last);
}

on_both_stores!(
    search_by_each_key_opens_the_right_message,
    each_action_changes_the_store_as_it_says,
);
