//! The mapping preview over a large store: time and peak memory to replay BENCH_MESSAGES stored
//! messages (default 1,000,000) through the table in force and a draft that maps the bulk
//! history's near-miss name. The database is built once under target/ (shared with the forget
//! bench's size when it exists). `cargo bench --bench preview`.

#[path = "../tests/common/bulk.rs"]
mod bulk;

use std::path::PathBuf;
use std::time::Instant;

use tracklayer::pipeline::MappingTable;
use tracklayer::stage::preview::Preview;
use tracklayer::store::StoreLocation;

fn peak_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The default table plus the bulk history's near-miss name ("order completed").
const DRAFT: &str = r#"
version = 2
[[events]]
segment = "Order Completed"
canonical = "purchase"
dedup_key = "order_id"
[[events]]
segment = "order completed"
canonical = "purchase"
dedup_key = "order_id"
[[events]]
segment = "Product Viewed"
canonical = "view_content"
[[events]]
segment = "Product Added"
canonical = "add_to_cart"
"#;

const DESTINATIONS: &str = r#"
[workspace]
account = "acct_bench"
[[environments]]
name = "production"
secret = "tls_0123456789abcdef0123456789abcdef"
[[destinations]]
name = "meta"
kind = "meta_capi"
pixel_id = "1234567890123456"
access_token = "EAAB_BENCH"
[[destinations]]
name = "tiktok"
kind = "tiktok"
pixel_code = "CABCDEF1234567890XYZ"
access_token = "TT_BENCH"
[[destinations]]
name = "klaviyo"
kind = "klaviyo"
api_key = "pk_BENCH_0123456789"
"#;

fn main() {
    let messages: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/bench-preview-{messages}.db"));
    if !path.exists() {
        eprintln!("building {} (once)…", path.display());
        let building = path.with_extension("building");
        let _ = std::fs::remove_file(&building);
        bulk::fill(&building, messages, true);
        std::fs::rename(&building, &path).unwrap();
    }
    drop(tracklayer::store::open_for_writing(&path).unwrap());
    let before = MappingTable::default();
    let after = MappingTable::from_file_text(DRAFT).unwrap();
    // Payloads are built for what changes, by the real builders of three destinations.
    let setup = tracklayer::destinations::Setup::parse(
        DESTINATIONS,
        std::path::Path::new("bench.toml"),
        &|_| None,
    )
    .unwrap();
    let targets = setup.route_targets();
    let location = StoreLocation::Sqlite(path.clone());
    let started = Instant::now();
    let mut preview = Preview::new(&before, &after, &targets, &setup.destinations);
    location
        .each_message(0, None, &mut |m| {
            preview.add(m.raw, m.environment, m.received_at_ms)
        })
        .unwrap();
    let report = preview.finish();
    let took = started.elapsed();
    println!(
        "preview of {} stored messages: {:.1} s ({:.0} messages/s), {} would change, peak memory {:.0} MB",
        report.replayed,
        took.as_secs_f64(),
        report.replayed as f64 / took.as_secs_f64(),
        report.changed,
        peak_mb()
    );
    for g in report.groups.iter().filter(|g| g.before != g.after) {
        println!(
            "  {} {} → {}: {}",
            g.segment_event, g.before, g.after, g.count
        );
    }
    for d in &report.destinations {
        println!("  {}: {} payloads would change", d.name, d.payloads_changed);
    }
}
