//! Dashboard cost on a large database: query (loader thread) and frame (UI thread) time per
//! pane, and resident memory, with BENCH_EVENTS stored events (default 1,000,000).
//! `cargo bench --bench dashboard`. The database is built once under target/ and reused.

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use tracklayer::pipeline::{MappingTable, RouteTarget};
use tracklayer::store::{IngestBatch, RequestReceipt, StoreReader, StoreWriter};
use tracklayer::tui::app::{load, App, Pane};
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

fn message(i: usize) -> String {
    let event = match i % 10 {
        0 => "Product Viewed",
        1..=3 => "Order Completed",
        4 => "order completed",
        _ => "Product Added",
    };
    format!(
        r#"{{"type":"track","event":"{event}","messageId":"m-{i}","userId":"u-{}","anonymousId":"a-{}","timestamp":"2026-04-23T10:15:30Z","context":{{"ip":"203.0.113.42","userAgent":"Mozilla/5.0"}},"properties":{{"order_id":"O-{}","revenue":12.5,"currency":"EUR","product_id":"SKU-{i}","price":12.5}}}}"#,
        i % 5000,
        i % 7000,
        i / 3
    )
}

fn build(path: &std::path::Path, events: usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let targets = vec![RouteTarget {
            name: "warehouse".into(),
            kind: "warehouse".into(),
            environments: vec![],
            consent: vec![],
            supported_events: None,
            takes_profiles: false,
        }];
        let (writer, thread) =
            StoreWriter::spawn(path, Default::default(), targets, Default::default()).unwrap();
        let table = MappingTable::default();
        let started = Instant::now();
        for chunk in 0..events.div_ceil(1000) {
            let now = chrono::Utc::now().timestamp_millis();
            let messages = (chunk * 1000..((chunk + 1) * 1000).min(events))
                .enumerate()
                .map(|(pos, i)| {
                    tracklayer::ingest::message_record(
                        pos,
                        Bytes::from(message(i)),
                        &tracklayer::ingest::MessageContext {
                            implied_type: None,
                            environment: "production",
                            mapping: &table,
                            received_at_ms: now,
                            limits: &Default::default(),
                        },
                    )
                })
                .collect();
            let batch = IngestBatch {
                receipt: RequestReceipt {
                    request_id: format!("req_bench_{chunk}"),
                    received_at_ms: now,
                    environment: "production".into(),
                    path: "/segment/events".into(),
                    remote_addr: None,
                    user_agent: None,
                    auth_scheme: "tracklayer",
                    body_shape: "array",
                    body_bytes: 0,
                    body_sha256: [0; 32],
                },
                messages,
                dedup_since_ms: now - 48 * 3_600_000,
                replay_guard: None,
            };
            writer.ingest(batch).await.unwrap();
            if chunk % 100 == 99 {
                eprintln!(
                    "  {} messages stored ({:.0}/s)",
                    (chunk + 1) * 1000,
                    ((chunk + 1) * 1000) as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
        drop(writer);
        thread.join();
    });
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
        build(&path, events);
    }
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
    println!("resident memory: {:.0} MB", rss_mb());
}
