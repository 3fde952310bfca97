//! A draft mapping table seen against stored traffic before it ships (`tracklayer mapping
//! preview`), then put in force (`tracklayer mapping activate`), from a shell against a running
//! node's store.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tracklayer::destinations::Setup;
use tracklayer::sandbox::{Platform, Sandbox};

const MAPPING_V1: &str = r#"
version = 1
[[events]]
segment = "Order Completed"
canonical = "purchase"
destinations = { meta_capi = "Purchase" }
dedup_key = "order_id"

[[events]]
segment = "Product Viewed"
canonical = "view_content"
destinations = { meta_capi = "ViewContent" }
"#;

/// Maps a near-miss name, adds a new name and re-maps a mapped one.
const DRAFT_V2: &str = r#"
[mapping]
version = 2
[[mapping.events]]
segment = "Order Completed"
canonical = "purchase"
destinations = { meta_capi = "Purchase" }
dedup_key = "order_id"

[[mapping.events]]
segment = "order completed"
canonical = "purchase"
destinations = { meta_capi = "Purchase" }
dedup_key = "order_id"

[[mapping.events]]
segment = "Wishlist Added"
canonical = "wishlist"
destinations = { meta_capi = "AddToWishlist" }

[[mapping.events]]
segment = "Product Viewed"
canonical = "add_to_cart"
destinations = { meta_capi = "AddToCart" }

[[mapping.events]]
segment = "Coupon Applied"
canonical = "coupon_applied"
destinations = { meta_capi = "CouponApplied" }
required = ["coupon"]
"#;

fn track(id: &str, event: &str) -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!(
        r#"{{"type":"track","event":"{event}","messageId":"{id}","userId":"u-{id}","timestamp":"{now}",
        "context":{{"ip":"203.0.113.42","userAgent":"Mozilla/5.0","traits":{{"email":"{id}@example.com"}}}},
        "properties":{{"order_id":"O-{id}","revenue":12,"currency":"EUR","product_id":"SKU-1"}}}}"#
    )
}

fn run(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracklayer"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("NO_COLOR", "1")
        .env("TRACKLAYER_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn group<'a>(report: &'a Value, segment: &str) -> &'a Value {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["segment_event"] == segment)
        .unwrap_or_else(|| panic!("no group {segment}: {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_is_previewed_against_stored_traffic_and_then_put_in_force() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(listener).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tracklayer.db");
    std::fs::write(dir.path().join("mapping.toml"), MAPPING_V1).unwrap();
    let config_path = dir.path().join("tracklayer.toml");
    let destinations = format!(
        r#"
[mapping]
file = "mapping.toml"

[[destinations]]
name = "meta"
kind = "meta_capi"
endpoint = "{}"
retry_schedule = [1]
pixel_id = "1234567890123456"
access_token = "EAAB_TEST"
"#,
        sandbox.url()
    );
    std::fs::write(&config_path, config_text_with(&db, "", &destinations)).unwrap();
    let setup = Setup::load(&config_path).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/segment/events", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tracklayer::run(setup, listener, async {
        let _ = stopped.await;
    }));
    let post = |body: String| {
        let url = url.clone();
        async move {
            let (status, reply) = json_of(
                signed(&client(), &url, "production", PRODUCTION_SECRET, &body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 200, "{reply}");
            reply
        }
    };
    for (id, event) in [
        ("oc-1", "Order Completed"),
        ("oc-2", "Order Completed"),
        ("oc-3", "Order Completed"),
        ("nm-1", "order completed"),
        ("nm-2", "order completed"),
        ("wl-1", "Wishlist Added"),
        ("pv-1", "Product Viewed"),
        ("pv-2", "Product Viewed"),
        ("ca-1", "Coupon Applied"),
    ] {
        post(track(id, event)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reader = tracklayer::store::StoreReader::open(&db).unwrap();
    let totals_before = reader.totals().unwrap();
    let meta_before = sandbox.state.received(Platform::Meta).len();

    let draft = dir.path().join("draft.toml");
    std::fs::write(&draft, DRAFT_V2).unwrap();
    let (code, stdout, stderr) = run(
        &config_path,
        &[
            "mapping",
            "preview",
            "--draft",
            draft.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["replayed"], 9, "{report:#}");
    assert_eq!(report["changed"], 5, "{report:#}");
    let near_miss = group(&report, "order completed");
    assert_eq!(
        (
            &near_miss["before"],
            &near_miss["after"],
            &near_miss["count"]
        ),
        (
            &Value::from("unmapped"),
            &Value::from("purchase"),
            &Value::from(2)
        )
    );
    assert_eq!(
        near_miss["example_message_ids"],
        serde_json::json!(["nm-1", "nm-2"])
    );
    let added = group(&report, "Wishlist Added");
    assert_eq!(
        (&added["before"], &added["after"], &added["count"]),
        (
            &Value::from("unmapped"),
            &Value::from("wishlist"),
            &Value::from(1)
        )
    );
    // Mapped by the draft, yet sent nowhere: the preview says which route refuses it and why.
    let refused = group(&report, "Coupon Applied");
    assert_eq!(refused["after"], "coupon_applied");
    assert_eq!(refused["not_sent"][0]["destination"], "meta", "{refused:#}");
    assert_eq!(refused["not_sent"][0]["verdict"], "missing_required");
    assert_eq!(refused["not_sent"][0]["count"], 1);
    assert!(
        refused["not_sent"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("coupon"),
        "{refused:#}"
    );
    let remapped = group(&report, "Product Viewed");
    assert_eq!(
        (&remapped["before"], &remapped["after"], &remapped["count"]),
        (
            &Value::from("view_content"),
            &Value::from("add_to_cart"),
            &Value::from(2)
        )
    );
    let same = group(&report, "Order Completed");
    assert_eq!(
        (&same["before"], &same["after"], &same["count"]),
        (
            &Value::from("purchase"),
            &Value::from("purchase"),
            &Value::from(3)
        )
    );
    let meta = &report["destinations"][0];
    assert_eq!(meta["name"], "meta");
    assert_eq!(meta["payloads_changed"], 5, "{meta:#}");
    let diff = meta["examples"][0]["diff"].as_array().unwrap();
    assert!(!diff.is_empty(), "{meta:#}");
    // Nothing written, nothing sent.
    assert_eq!(reader.totals().unwrap(), totals_before);
    assert_eq!(sandbox.state.received(Platform::Meta).len(), meta_before);
    // The text report names the changed groups.
    let (code, text, _) = run(
        &config_path,
        &["mapping", "preview", "--draft", draft.to_str().unwrap()],
    );
    assert_eq!(code, Some(0));
    assert!(text.contains("~ order completed"), "{text}");
    assert!(text.contains("meta: 5 payload(s) would change"), "{text}");

    // Bad input: a draft with a key that does not exist, a window with nothing in it.
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        "version = 3\n[[events]]\nsegment = \"X\"\ncanonical = \"y\"\ndestinaton = 1\n",
    )
    .unwrap();
    let (code, _, stderr) = run(
        &config_path,
        &["mapping", "preview", "--draft", broken.to_str().unwrap()],
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("unknown field `destinaton`"), "{stderr}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, _, stderr) = run(
        &config_path,
        &[
            "mapping",
            "preview",
            "--draft",
            draft.to_str().unwrap(),
            "--since",
            "1s",
        ],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("no stored message in the last 1s"),
        "{stderr}"
    );

    // Activate: the running node reloads it; who and when are recorded.
    let (code, stdout, stderr) = run(
        &config_path,
        &["mapping", "activate", "--draft", draft.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("mapping version 2 written to"), "{stdout}");
    let mut mapped = false;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let reply = post(track(&format!("nm-after-{i}"), "order completed")).await;
        if reply["mapped"] == 1 {
            mapped = true;
            break;
        }
    }
    assert!(mapped, "the node never reloaded the activated table");
    let actions = tracklayer::store::sqlite::operator_actions(&db, 5).unwrap();
    let activation = actions
        .iter()
        .find(|a| a.action == "activate_mapping")
        .expect("recorded");
    assert!(!activation.who.starts_with("unknown@"), "{activation:?}");
    let (code, _, stderr) = run(
        &config_path,
        &["mapping", "activate", "--draft", draft.to_str().unwrap()],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("mapping.version: the draft is version 2 and version 2 is in force"),
        "{stderr}"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// The same in the dashboard (pane 4): `m` opens a draft, its groups and a payload diff show
/// under the unmapped names at 160×45 and 80×24, `a` asks before putting it in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_previews_a_draft_and_activates_it() {
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(listener).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tracklayer.db");
    std::fs::write(dir.path().join("mapping.toml"), MAPPING_V1).unwrap();
    let config_path = dir.path().join("tracklayer.toml");
    let destinations = format!(
        "[mapping]\nfile = \"mapping.toml\"\n\n[[destinations]]\nname = \"meta\"\nkind = \"meta_capi\"\nendpoint = \"{}\"\npixel_id = \"1234567890123456\"\naccess_token = \"EAAB_TEST\"\n",
        sandbox.url()
    );
    std::fs::write(&config_path, config_text_with(&db, "", &destinations)).unwrap();
    let setup = Setup::load(&config_path).unwrap();
    let server = TestServer::start_text(&db, &std::fs::read_to_string(&config_path).unwrap()).await;
    for (id, event) in [
        ("oc-1", "Order Completed"),
        ("nm-1", "order completed"),
        ("pv-1", "Product Viewed"),
    ] {
        let (status, _) = server
            .post("production", PRODUCTION_SECRET, &track(id, event))
            .await;
        assert_eq!(status, 200);
    }
    let draft = dir.path().join("draft.toml");
    std::fs::write(&draft, DRAFT_V2).unwrap();
    let context = tracklayer::preview::PreviewContext {
        location: tracklayer::store::StoreLocation::of(&setup.config.storage),
        mapping: setup.config.mapping.clone(),
        targets: setup.route_targets(),
        destinations: setup.destinations.clone(),
    };

    let (themes, _) = tracklayer::tui::theme::load_all(None);
    let mut app = tracklayer::tui::App::new(themes, None, "test".into());
    app.pane = tracklayer::tui::Pane::Unmapped;
    app.drafts = true;
    let key = |c| KeyEvent::new(c, KeyModifiers::NONE);
    app.handle_key(key(KeyCode::Char('m')));
    assert_eq!(app.editing_draft.as_deref(), Some("draft.toml"));
    for _ in 0.."draft.toml".len() {
        app.handle_key(key(KeyCode::Backspace));
    }
    for c in draft.to_str().unwrap().chars() {
        app.handle_key(key(KeyCode::Char(c)));
    }
    app.handle_key(key(KeyCode::Enter));
    let asked = app
        .pending_preview
        .take()
        .expect("the event loop is asked to preview");
    assert_eq!(asked.path, draft);
    // What the drafts thread does, here on a plain thread.
    let (ctx, path) = (context.clone(), asked.path.clone());
    let report = std::thread::spawn(move || ctx.preview(&path, 0, "all", None))
        .join()
        .unwrap()
        .unwrap();
    app.preview.running = false;
    app.preview.report = Some(report);
    for (width, height) in [(160u16, 45u16), (80, 24)] {
        let mut terminal =
            ratatui::Terminal::new(ratatui::backend::TestBackend::new(width, height)).unwrap();
        terminal
            .draw(|f| tracklayer::tui::panes::draw(f, &app))
            .unwrap();
        let text = terminal.backend().to_string();
        assert!(text.contains("~ order completed"), "{text}");
        assert!(text.contains("meta: 2 payload(s) would change"), "{text}");
        assert!(text.contains("a activate"), "{text}");
    }
    app.handle_key(key(KeyCode::Char('J')));
    assert_eq!(app.preview.selected, 1);
    app.actions = Ok(());
    app.handle_key(key(KeyCode::Char('a')));
    let question = app.confirm.as_ref().expect("asked first").question();
    assert!(
        question.starts_with("put mapping version 2 in force"),
        "{question}"
    );
    app.handle_key(key(KeyCode::Char('y')));
    assert_eq!(app.pending_activation.take(), Some(draft.clone()));
    let done = std::thread::spawn(move || context.activate(&asked.path, "tester@host"))
        .join()
        .unwrap()
        .unwrap();
    assert!(done.contains("mapping version 2 written to"), "{done}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("mapping.toml")).unwrap(),
        DRAFT_V2
    );
    server.stop().await;
}

/// No draft yet: `m` on an unmapped name and enter on a path with no file there writes one
/// (the table in force one version up, that name mapped like the row it resembles), previews
/// it, and `a` puts it in force. The engineer never writes a table by hand to map one name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_starts_a_draft_that_maps_the_selected_unmapped_name() {
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(listener).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tracklayer.db");
    std::fs::write(dir.path().join("mapping.toml"), MAPPING_V1).unwrap();
    let config_path = dir.path().join("tracklayer.toml");
    let destinations = format!(
        "[mapping]\nfile = \"mapping.toml\"\n\n[[destinations]]\nname = \"meta\"\nkind = \"meta_capi\"\nendpoint = \"{}\"\npixel_id = \"1234567890123456\"\naccess_token = \"EAAB_TEST\"\n",
        sandbox.url()
    );
    std::fs::write(&config_path, config_text_with(&db, "", &destinations)).unwrap();
    let setup = Setup::load(&config_path).unwrap();
    let server = TestServer::start_text(&db, &std::fs::read_to_string(&config_path).unwrap()).await;
    let (status, _) = server
        .post(
            "production",
            PRODUCTION_SECRET,
            &track("nm-1", "order completed"),
        )
        .await;
    assert_eq!(status, 200);
    let context = tracklayer::preview::PreviewContext {
        location: tracklayer::store::StoreLocation::of(&setup.config.storage),
        mapping: setup.config.mapping.clone(),
        targets: setup.route_targets(),
        destinations: setup.destinations.clone(),
    };
    let draft = dir.path().join("draft.toml");
    assert_eq!(
        context.default_draft(),
        draft,
        "beside the mapping file in force"
    );

    let (themes, _) = tracklayer::tui::theme::load_all(None);
    let mut app = tracklayer::tui::App::new(themes, None, "test".into());
    app.pane = tracklayer::tui::Pane::Unmapped;
    app.drafts = true;
    app.preview.draft = context.default_draft().display().to_string();
    let start = std::time::Instant::now();
    let groups = loop {
        let groups = server.reader().unmapped_groups(10, "").unwrap();
        if !groups.is_empty() || start.elapsed() > Duration::from_secs(10) {
            break groups;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0].suggestion.as_deref(), Some("Order Completed"));
    app.snapshot.unmapped = groups;
    let key = |c| KeyEvent::new(c, KeyModifiers::NONE);
    app.handle_key(key(KeyCode::Char('m')));
    assert_eq!(
        app.editing_draft.as_deref(),
        Some(draft.to_str().unwrap()),
        "the path offered is beside the mapping file"
    );
    app.handle_key(key(KeyCode::Enter));
    let tracklayer::tui::app::DraftAsk { path, adding } =
        app.pending_preview.take().expect("asked to preview");
    assert_eq!(path, draft);
    assert_eq!(
        adding,
        Some((
            "order completed".to_string(),
            Some("Order Completed".to_string())
        ))
    );
    let ctx = context.clone();
    let (wrote, report) = std::thread::spawn(move || {
        let adding = adding
            .as_ref()
            .map(|(segment, like)| (segment.as_str(), like.as_deref()));
        let wrote = ctx.start_draft(&path, adding).unwrap();
        (wrote, ctx.preview(&path, 0, "all", None).unwrap())
    })
    .join()
    .unwrap();
    let wrote = wrote.expect("no file was there, so one is written");
    assert!(
        wrote.contains("as version 2, with `order completed` → purchase"),
        "{wrote}"
    );
    let text = std::fs::read_to_string(&draft).unwrap();
    assert!(text.contains("version = 2"), "{text}");
    assert!(
        text.contains("segment = \"Product Viewed\""),
        "kept: {text}"
    );
    assert_eq!(report.after_version, 2);
    app.preview.running = false;
    app.preview.report = Some(report);
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(80, 24)).unwrap();
    terminal
        .draw(|f| tracklayer::tui::panes::draw(f, &app))
        .unwrap();
    let screen = terminal.backend().to_string();
    assert!(screen.contains("~ order completed"), "{screen}");

    // A second `m`, enter keeps the engineer's edits: the file is there, it is previewed as is.
    std::fs::write(&draft, text.replace("version = 2", "version = 2 # edited")).unwrap();
    let again = context
        .start_draft(&draft, Some(("order completed", None)))
        .unwrap();
    assert_eq!(again, None);
    assert!(std::fs::read_to_string(&draft)
        .unwrap()
        .contains("# edited"));

    app.actions = Ok(());
    app.handle_key(key(KeyCode::Char('a')));
    app.handle_key(key(KeyCode::Char('y')));
    let to_activate = app.pending_activation.take().expect("confirmed");
    let done = std::thread::spawn(move || context.activate(&to_activate, "tester@host"))
        .join()
        .unwrap()
        .unwrap();
    assert!(done.contains("mapping version 2 written to"), "{done}");
    let in_force = tracklayer::pipeline::mapping::MappingTable::from_file_text(
        &std::fs::read_to_string(dir.path().join("mapping.toml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        in_force
            .find("order completed")
            .map(|r| r.canonical.as_str()),
        Some("purchase")
    );
    server.stop().await;
}

/// The preview reads a fleet's database too (a portal streams the rows), with the same answer.
async fn the_preview_reads_either_store(store: Store) {
    let server = TestServer::start_for(store, "").await;
    for (id, event) in [
        ("oc-1", "Order Completed"),
        ("nm-1", "order completed"),
        ("nm-2", "order completed"),
    ] {
        let (status, _) = server
            .post("production", PRODUCTION_SECRET, &track(id, event))
            .await;
        assert_eq!(status, 200);
    }
    let dir = tempfile::tempdir().unwrap();
    let draft = dir.path().join("draft.toml");
    std::fs::write(&draft, DRAFT_V2).unwrap();
    let context = tracklayer::preview::PreviewContext {
        location: tracklayer::store::StoreLocation::of(&server.setup.config.storage),
        mapping: server.setup.config.mapping.clone(),
        targets: server.setup.route_targets(),
        destinations: server.setup.destinations.clone(),
    };
    let report = std::thread::spawn(move || context.preview(&draft, 0, "all", Some("production")))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(report.replayed, 3);
    let near_miss = report
        .groups
        .iter()
        .find(|g| g.segment_event == "order completed")
        .unwrap();
    assert_eq!(
        (
            near_miss.before.as_str(),
            near_miss.after.as_str(),
            near_miss.count
        ),
        ("unmapped", "purchase", 2)
    );
    server.stop().await;
}

on_both_stores!(the_preview_reads_either_store);
