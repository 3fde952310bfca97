//! Dashboard cost on a large database: query (loader thread) and frame (UI thread) time per
//! pane, and resident memory, with BENCH_EVENTS stored events (default 1,000,000).
//! `cargo bench --bench dashboard`. The database is built once under target/ and reused.

#[path = "../tests/common/bulk.rs"]
mod bulk;

use std::path::PathBuf;
use std::time::Instant;

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use tracklayer::store::views::StreamCursor;
use tracklayer::store::StoreReader;
use tracklayer::tui::app::{load, App, Pane, Query, Seek};
use tracklayer::tui::{panes, theme};

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_string)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/bench-dashboard-{events}.db"));
    if !path.exists() {
        eprintln!("building {} with {events} messages (once)…", path.display());
        bulk::fill(&path, events, true);
    }
    // A database built by an earlier version gets this version's schema (indexes, tables).
    drop(tracklayer::store::open_for_writing(&path).unwrap());
    let mut reader = StoreReader::open(&path).unwrap();
    let (themes, _) = theme::load_all(None);
    let mut app = App::new(themes, None, "bench".into());
    let mut terminal = Terminal::new(TestBackend::new(160, 45)).unwrap();
    let destinations = vec!["warehouse".to_string()];
    println!(
        "{} stored messages ({} events); terminal 160×45",
        reader.totals().unwrap().0,
        reader.totals().unwrap().1
    );
    for (pane, filter) in [
        (Pane::Stream, ""),
        (Pane::Stream, "Product Viewed"),
        (Pane::Deliveries, ""),
        (Pane::Diff, ""),
        (Pane::Unmapped, ""),
        (Pane::Destinations, ""),
        (Pane::Collisions, ""),
        (Pane::Profiles, "u-42"),
    ] {
        app.pane = pane;
        let index = Pane::ALL.iter().position(|p| *p == pane).unwrap();
        app.filters[index] = filter.into();
        let mut query_ms = Vec::new();
        let mut frame_ms = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let snapshot = load(
                &mut reader,
                &app.query(),
                &destinations,
                chrono::Utc::now().timestamp_millis(),
            );
            query_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            app.apply(snapshot);
            let t = Instant::now();
            terminal.draw(|f| panes::draw(f, &app)).unwrap();
            frame_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        query_ms.sort_by(f64::total_cmp);
        frame_ms.sort_by(f64::total_cmp);
        println!(
            "  {:<18} {:<16} query {:>7.1} ms (median of 5)   frame {:>5.2} ms",
            pane.title(),
            if filter.is_empty() { "" } else { filter },
            query_ms[2],
            frame_ms[2]
        );
    }
    // The on-call paths through a long history: first page, a page deep in it, the oldest
    // page, and a search by each kind of key. Target: each under 50 ms; frames under 5 ms.
    let total = reader.totals().unwrap().0;
    let deep = StreamCursor {
        message: total / 2,
        refusal: 0,
    };
    let mut worst_ms: f64 = 0.0;
    let cases: Vec<(&str, Query)> = vec![
        ("stream: first page", Query::default()),
        (
            "stream: page at the middle",
            Query {
                page_top: Some(deep),
                ..Query::default()
            },
        ),
        (
            "stream: oldest page (End)",
            Query {
                page_seek: Some(Seek::Oldest),
                ..Query::default()
            },
        ),
        (
            "stream: 250 rows up from the middle",
            Query {
                page_top: Some(deep),
                page_seek: Some(Seek::Newer(deep, 250)),
                ..Query::default()
            },
        ),
        (
            "search: messageId",
            Query {
                search: Some(format!("m-{}", total / 3)),
                ..Query::default()
            },
        ),
        (
            "search: order_id",
            Query {
                search: Some(format!("O-{}", total / 9)),
                ..Query::default()
            },
        ),
        (
            "search: userId",
            Query {
                search: Some("u-4242".into()),
                ..Query::default()
            },
        ),
        (
            "search: no match",
            Query {
                search: Some("nothing-like-this".into()),
                ..Query::default()
            },
        ),
    ];
    app.pane = Pane::Stream;
    app.filters = Default::default();
    for (what, query) in cases {
        let mut query_ms = Vec::new();
        let mut found = String::new();
        for _ in 0..5 {
            let t = Instant::now();
            let snapshot = load(
                &mut reader,
                &Query {
                    pane: Some(0),
                    ..query.clone()
                },
                &destinations,
                chrono::Utc::now().timestamp_millis(),
            );
            query_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(snapshot.error, None);
            found = match &snapshot.search {
                Some((_, Some(hit))) => format!("{hit:?}"),
                Some((_, None)) => "nothing".into(),
                None => format!(
                    "{} rows, first {:?}",
                    snapshot.stream.len(),
                    snapshot.stream.first().and_then(|r| r.message_id.clone())
                ),
            };
            app.apply(snapshot);
            let t = Instant::now();
            terminal.draw(|f| panes::draw(f, &app)).unwrap();
            worst_ms = worst_ms.max(t.elapsed().as_secs_f64() * 1000.0);
        }
        query_ms.sort_by(f64::total_cmp);
        let verdict = if query_ms[2] < 50.0 {
            "ok"
        } else {
            "OVER 50 ms"
        };
        println!(
            "  {what:<36} {:>7.1} ms (median of 5) {verdict}   {found}",
            query_ms[2]
        );
    }
    println!(
        "  worst frame {worst_ms:.2} ms {}",
        if worst_ms < 5.0 { "ok" } else { "OVER 5 ms" }
    );
    println!("resident memory: {:.0} MB", rss_mb());
}
