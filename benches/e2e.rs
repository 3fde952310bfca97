//! End to end: signed Segment messages at fixed offered rates into a node with six destinations
//! on the sandbox (Meta, Google Ads, TikTok batching; GA4 one client a request; Klaviyo and a
//! webhook one event per request, Klaviyo in bulk jobs when its queue is deep), every
//! BENCH_IDENTIFY_EVERY-th message (default 5) an identify, which Klaviyo takes as a profile.
//! `cargo bench --bench e2e`
//!
//! For each rate (BENCH_RATES, default "1000,5000" messages/s; BENCH_SECS each, default 20;
//! BENCH_PER_REQUEST messages per request, default 1) it reports the ingest ack latency,
//! ingest→delivered latency p50/p99 per destination, and whether each queue stayed bounded
//! (pending at the end no more than two seconds of traffic). Targets at 1k msg/s: p50 < 50 ms and
//! p99 < 500 ms for batching destinations, p50 < 10 ms for one-event-per-request ones. At the end:
//! bytes stored per message, by table.

mod common;

use std::time::{Duration, Instant};

use common::{env_or, node_config, open_loop, percentile, Node, RemoteSandbox};
use tracklayer::store::StoreReader;

const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// (destination, batches?)
const DESTINATIONS: [(&str, bool); 6] = [
    ("meta", true),
    ("google", true),
    ("tiktok", true),
    ("ga4", false),
    ("klaviyo", false),
    ("webhook", false),
];

fn destinations(url: &str) -> String {
    format!(
        r#"
[[destinations]]
name = "meta"
kind = "meta_capi"
endpoint = "{url}"
pixel_id = "1234567890"
access_token = "EAAB_BENCH_TOKEN"

[[destinations]]
name = "google"
kind = "google_ads"
endpoint = "{url}"
customer_id = "1234567890"
conversion_actions = {{ purchase = "555000111" }}
access_token = "ya29.BENCH"

[[destinations]]
name = "tiktok"
kind = "tiktok"
endpoint = "{url}"
pixel_code = "CABCDEF1234567890XYZ"
access_token = "TT_BENCH"

[[destinations]]
name = "ga4"
kind = "ga4"
endpoint = "{url}"
measurement_id = "G-BENCH12345"
api_secret = "ga4-bench-secret"

[[destinations]]
name = "klaviyo"
kind = "klaviyo"
endpoint = "{url}"
api_key = "pk_BENCH_0123456789"

[[destinations]]
name = "webhook"
kind = "webhook"
url = "{url}/webhooks/bench"
secret = "{WEBHOOK_SECRET}"
batch_size = {webhook_batch}
"#,
        webhook_batch = env_or("BENCH_WEBHOOK_BATCH", 1)
    )
}

fn pending(reader: &StoreReader, destination: &str) -> i64 {
    let q = reader.queue_counts(destination).unwrap();
    q.pending + q.in_flight
}

fn main() {
    let secs = Duration::from_secs(env_or("BENCH_SECS", 20));
    let per_request = env_or("BENCH_PER_REQUEST", 1) as usize;
    let connections = env_or("BENCH_CONNECTIONS", 64) as usize;
    let rates: Vec<u64> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "1000,5000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let remote = tokio::task::block_in_place(|| RemoteSandbox::start(listener));
        let sandbox = &remote.sandbox;
        sandbox.state.webhook_key(
            "bench",
            tracklayer::destinations::webhook::decode_secret(WEBHOOK_SECRET).unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        // BENCH_DESTINATIONS=0: the same load with no destinations, to see what delivery adds.
        let with_destinations = env_or("BENCH_DESTINATIONS", 1) == 1;
        let configured = if with_destinations {
            destinations(&sandbox.url())
        } else {
            String::new()
        };
        let node = Node::start(node_config(dir.path(), &configured)).await;
        let reader = StoreReader::open(&node.db).unwrap();
        println!(
            "six destinations on the sandbox; ~1 KB signed Order Completed (every {}th message an identify), {per_request} per request, {connections} connections, {} s per rate",
            env_or("BENCH_IDENTIFY_EVERY", 5),
            secs.as_secs()
        );
        for rate in rates {
            let mark = reader.last_attempt_row().unwrap();
            // Each rate its own messageIds: a reused one would be a Segment retry, not new work.
            let label: &'static str = Box::leak(format!("e2e{rate}").into_boxed_str());
            let identify_every = env_or("BENCH_IDENTIFY_EVERY", 5) as usize;
            let load = tokio::spawn(open_loop(
                node.addr,
                rate,
                per_request,
                connections,
                secs,
                label,
                identify_every,
            ));
            let mut depth: Vec<(&str, Vec<i64>)> =
                DESTINATIONS.iter().map(|(d, _)| (*d, Vec::new())).collect();
            while !load.is_finished() {
                tokio::time::sleep(Duration::from_secs(1)).await;
                for (d, samples) in &mut depth {
                    samples.push(pending(&reader, d));
                }
            }
            let report = load.await.unwrap();
            println!(
                "\n{rate} msg/s offered: {}",
                report.line("ingest (ack)").trim_start()
            );
            // Every queue must drain once the load stops (two minutes at most).
            let settle = Instant::now();
            while settle.elapsed() < Duration::from_secs(120)
                && DESTINATIONS.iter().any(|(d, _)| pending(&reader, d) > 0)
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let left: i64 = DESTINATIONS.iter().map(|(d, _)| pending(&reader, d)).sum();
            println!(
                "  {}",
                if left == 0 {
                    format!("every queue drained {:.1} s after the load stopped", settle.elapsed().as_secs_f64())
                } else {
                    format!("NOT drained: {left} deliveries still waiting 120 s after the load stopped")
                }
            );
            for ((destination, batches), (_, samples)) in DESTINATIONS
                .iter()
                .zip(&depth)
                .filter(|_| with_destinations)
            {
                let batches =
                    &(*batches || (*destination == "webhook" && env_or("BENCH_WEBHOOK_BATCH", 1) > 1));
                let mut latencies: Vec<u64> = reader
                    .delivered_latencies(destination, mark)
                    .unwrap()
                    .into_iter()
                    .map(|ms| ms.max(0) as u64)
                    .collect();
                latencies.sort_unstable();
                let peak = samples.iter().copied().max().unwrap_or(0);
                let last = samples.last().copied().unwrap_or(0);
                let bounded = last <= 2 * rate as i64;
                let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
                let target = if *batches {
                    p50 < 50 && p99 < 500
                } else {
                    p50 < 10
                };
                println!(
                    "  {destination:<8} {:<22} delivered {:>7}   ingest→delivered p50 {p50:>5} ms  p99 {p99:>6} ms   queue peak {peak:>6}, at end {last:>6} ({})   {}",
                    if *batches { "(batches)" } else { "(one per request)" },
                    latencies.len(),
                    if bounded { "bounded" } else { "GROWING" },
                    if rate == 1000 {
                        if target { "meets the 1k target" } else { "misses the 1k target" }
                    } else {
                        ""
                    }
                );
            }
        }
        let messages = reader.message_counts().unwrap();
        let total = (messages.0 + messages.1 + messages.2).max(1);
        let tables = reader.storage_by_table().unwrap();
        let bytes: i64 = tables.iter().map(|(_, b)| b).sum();
        println!(
            "\nstorage: {} bytes per message ({} messages, {:.1} MB)",
            bytes / total,
            total,
            bytes as f64 / 1e6
        );
        for (table, b) in tables.iter().take(8) {
            println!("  {table:<20} {:>6} bytes per message", b / total);
        }
        let (_, meta_events) = sandbox.state.accepted(tracklayer::sandbox::Platform::Meta);
        println!("sandbox accepted {meta_events} Meta events");
        node.stop().await;
        tokio::task::block_in_place(move || drop(remote));
    });
}
