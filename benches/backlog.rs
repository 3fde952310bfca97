//! Ingest with a platform outage's backlog waiting, then the drain when the platform recovers.
//! `cargo bench --bench backlog` (BENCH_BACKLOG deliveries, default 1,000,000; BENCH_SECS per
//! measurement, default 10; BENCH_DRAIN_SECS of ingest while draining, default 30).
//!
//! 1. A node whose Meta and webhook destinations refuse connections, on a fresh database: the
//!    ingest bench's load (closed loop, one ~1 KB message per request).
//! 2. The same node configuration holding BENCH_BACKLOG pending deliveries for those two
//!    destinations (filled through its own endpoint): the same load. Target ≥ 0.8× of (1),
//!    p99 ack < 20 ms.
//! 3. The platform comes back (the sandbox starts listening on the refused port): the same load
//!    again while the backlog drains; drain rate per destination (target ≥ 5,000 events/s for
//!    Meta) and ingest during the drain (target ≥ 0.8× of (1)). Then the load stops and the
//!    rest of the backlog drains.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{closed_loop, env_or, fill, node_config, refused_port, Node, RemoteSandbox, Report};
use tracklayer::store::{QueueCounts, StoreReader};

const DESTINATIONS: [&str; 2] = ["meta", "webhook"];

fn destinations(platform: SocketAddr) -> String {
    format!(
        r#"
[[destinations]]
name = "meta"
kind = "meta_capi"
endpoint = "http://{platform}"
pixel_id = "1234567890"
access_token = "EAAB_BENCH_TOKEN"
batch_size = 1000
retry_schedule = [1, 5, 30, 300, 1800, 7200, 14400]

[[destinations]]
name = "webhook"
kind = "webhook"
url = "http://{platform}/webhooks/bench"
secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
retry_schedule = [1, 5, 30, 300, 1800, 7200, 14400]
"#
    )
}

fn counts(reader: &StoreReader) -> BTreeMap<&'static str, QueueCounts> {
    DESTINATIONS
        .iter()
        .map(|d| (*d, reader.queue_counts(d).unwrap()))
        .collect()
}

fn pending(counts: &BTreeMap<&'static str, QueueCounts>) -> i64 {
    counts.values().map(|c| c.pending + c.in_flight).sum()
}

fn main() {
    let secs = Duration::from_secs(env_or("BENCH_SECS", 10));
    let drain_secs = Duration::from_secs(env_or("BENCH_DRAIN_SECS", 30));
    let backlog = env_or("BENCH_BACKLOG", 1_000_000) as usize;
    let connections = env_or("BENCH_CONNECTIONS", 32) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let platform = refused_port();
        println!(
            "Meta (batches of up to 1,000) and a webhook (one event per request) at {platform}, refusing connections; \
             {connections} keep-alive connections, ~1 KB signed messages, one per request"
        );

        // 1. No backlog.
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = Node::start(node_config(fresh_dir.path(), &destinations(platform))).await;
        closed_loop(fresh.addr, connections, Duration::from_millis(500), "warm").await;
        let baseline = closed_loop(fresh.addr, connections, secs, "fresh").await;
        println!("{}", baseline.line("1. no backlog"));
        fresh.stop().await;
        drop(fresh_dir);

        // 2. The same, holding the backlog.
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(node_config(dir.path(), &destinations(platform))).await;
        let started = Instant::now();
        fill(node.addr, backlog / DESTINATIONS.len(), 500, 4).await;
        let reader = StoreReader::open(&node.db).unwrap();
        let before = counts(&reader);
        println!(
            "   filled {} pending deliveries in {:.0} s",
            pending(&before),
            started.elapsed().as_secs_f64()
        );
        closed_loop(node.addr, connections, Duration::from_millis(500), "warm").await;
        let loaded = closed_loop(node.addr, connections, secs, "backlog").await;
        println!(
            "{}   = {:.2}× (target ≥ 0.8×, p99 < 20 ms)",
            loaded.line(&format!("2. with {} waiting", pending(&counts(&reader)))),
            loaded.rate() / baseline.rate()
        );

        // 3. The platform recovers.
        let listener = std::net::TcpListener::bind(platform).unwrap();
        let remote = tokio::task::block_in_place(|| RemoteSandbox::start(listener));
        let sandbox = &remote.sandbox;
        sandbox.state.webhook_key(
            "bench",
            tracklayer::destinations::webhook::decode_secret(
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            )
            .unwrap(),
        );
        let recovered = Instant::now();
        let at_recovery = counts(&reader);
        // Each destination resumes at its next probe (a paused destination waits up to a minute
        // between probes); the ingest load keeps running meanwhile, as Segment's would.
        let mut resumed: BTreeMap<&'static str, Duration> = BTreeMap::new();
        while resumed.len() < DESTINATIONS.len() && recovered.elapsed() < Duration::from_secs(180) {
            closed_loop(node.addr, connections, Duration::from_secs(1), "wait").await;
            let now = counts(&reader);
            for d in DESTINATIONS {
                if now[d].delivered > at_recovery[d].delivered {
                    resumed.entry(d).or_insert_with(|| recovered.elapsed());
                }
            }
        }
        for (d, after) in &resumed {
            println!("   {d:<8} resumed {:.1} s after the platform came back (its next probe)", after.as_secs_f64());
        }
        // Both draining: the same load again, measured.
        let start = counts(&reader);
        let started = Instant::now();
        let during: Report = closed_loop(node.addr, connections, drain_secs, "drain").await;
        let elapsed = started.elapsed().as_secs_f64();
        let end = counts(&reader);
        println!(
            "{}   = {:.2}× (target ≥ 0.8×)",
            during.line("3. while draining"),
            during.rate() / baseline.rate()
        );
        for d in DESTINATIONS {
            let delivered = end[d].delivered - start[d].delivered;
            let backlog_change = (start[d].pending + start[d].in_flight) - (end[d].pending + end[d].in_flight);
            println!(
                "   {d:<8} delivered {delivered} in {elapsed:.0} s = {:.0} events/s (backlog down {:.0}/s while ingest adds to it); {} still pending",
                delivered as f64 / elapsed,
                backlog_change as f64 / elapsed,
                end[d].pending + end[d].in_flight
            );
        }

        // The rest of the backlog, without ingest load.
        let quiet = Instant::now();
        let limit = Duration::from_secs(env_or("BENCH_DRAIN_LIMIT_SECS", 600));
        let left = pending(&end);
        loop {
            let now = counts(&reader);
            if pending(&now) == 0 || quiet.elapsed() > limit {
                println!(
                    "   without load: {} deliveries drained in {:.0} s ({:.0} events/s), {} left; dead letters {}",
                    left - pending(&now),
                    quiet.elapsed().as_secs_f64(),
                    (left - pending(&now)) as f64 / quiet.elapsed().as_secs_f64().max(1.0),
                    pending(&now),
                    now.values().map(|c| c.dead).sum::<i64>()
                );
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let (meta_requests, meta_events) = sandbox.state.accepted(tracklayer::sandbox::Platform::Meta);
        println!(
            "   sandbox accepted {meta_events} Meta events in {meta_requests} requests, {} webhook events",
            sandbox.state.accepted(tracklayer::sandbox::Platform::Webhook).1
        );
        node.stop().await;
        tokio::task::block_in_place(move || drop(remote));
    });
}
