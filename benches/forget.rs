//! Forgetting one person in a large store: how long a forget takes, and what it costs the ingest
//! running beside it. BENCH_MESSAGES stored messages (default 1,000,000), BENCH_PERSON of them
//! the forgotten person's (default 10,000). The database is built once under target/ and copied
//! for each run. `cargo bench --bench forget`.
//!
//! Ingest runs through the store's writer the whole time (requests of 100 messages, one after
//! the other): its rate before and during the forget, and the longest wait between two of its
//! commits while the forget runs — the promise is at most about one group.

#[path = "../tests/common/bulk.rs"]
mod bulk;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracklayer::pipeline::privacy::ForgetRequest;
use tracklayer::pipeline::MappingTable;
use tracklayer::privacy::{self, Order};
use tracklayer::store::{IngestBatch, RequestReceipt, StoreLocation, StoreWriter};

fn person_message(i: usize) -> String {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"p-{i}","userId":"person-7","anonymousId":"anon-person-7","timestamp":"{ts}","context":{{"ip":"198.51.100.7","traits":{{"email":"person7@example.com"}}}},"properties":{{"order_id":"P-{i}","revenue":20.0,"currency":"EUR"}}}}"#
    )
}

fn rss_mb() -> f64 {
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

fn batch(n: usize, table: &MappingTable) -> IngestBatch {
    let now = chrono::Utc::now().timestamp_millis();
    let messages = (0..100)
        .map(|pos| {
            tracklayer::stage::message_record(
                pos,
                Bytes::from(bulk::message(5_000_000 + n * 100 + pos)),
                &tracklayer::stage::MessageContext {
                    implied_type: None,
                    environment: "production",
                    mapping: table,
                    received_at_ms: now,
                    limits: &Default::default(),
                    default_country: None,
                },
            )
        })
        .collect();
    IngestBatch {
        receipt: RequestReceipt {
            request_id: format!("req_load_{n}"),
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
    }
}

fn main() {
    let total = bulk_env("BENCH_MESSAGES", 1_000_000);
    let person = bulk_env("BENCH_PERSON", 10_000);
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/bench-forget-{total}-{person}.db"));
    if !base.exists() {
        eprintln!("building {} (once)…", base.display());
        let building = base.with_extension("building");
        let _ = std::fs::remove_file(&building);
        bulk::fill_with(&building, "bulk", 0..total - person, bulk::message, true);
        // The person's messages spread over the history's last part, as a regular customer's.
        bulk::fill_with(&building, "person", 0..person, person_message, false);
        std::fs::rename(&building, &base).unwrap();
    }
    let work = base.with_extension("run.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", work.display()));
    }
    std::fs::copy(&base, &work).unwrap();
    drop(tracklayer::store::open_for_writing(&work).unwrap());
    println!("{total} stored messages, {person} of them the forgotten person's");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (writer, thread) =
        StoreWriter::spawn(&work, Default::default(), Vec::new(), Default::default()).unwrap();
    let acks: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (writer, acks, stop) = (writer.clone(), acks.clone(), stop.clone());
        runtime.spawn(async move {
            let table = MappingTable::default();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = writer.ingest(batch(n, &table)).await {
                    eprintln!("ingest refused during the forget: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                acks.lock().unwrap().push(Instant::now());
                n += 1;
            }
        })
    };
    let rate = |from: Instant, to: Instant| {
        let acked = acks
            .lock()
            .unwrap()
            .iter()
            .filter(|t| **t >= from && **t < to)
            .count();
        acked as f64 * 100.0 / (to - from).as_secs_f64()
    };
    std::thread::sleep(Duration::from_secs(2));
    let baseline_from = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let baseline_to = Instant::now();
    let baseline = rate(baseline_from, baseline_to);
    let longest_gap = |from: Instant, to: Instant| {
        let acks = acks.lock().unwrap();
        let inside: Vec<&Instant> = acks.iter().filter(|t| **t >= from && **t <= to).collect();
        inside
            .windows(2)
            .map(|w| *w[1] - *w[0])
            .max()
            .unwrap_or(to - from)
    };
    let baseline_gap = longest_gap(baseline_from, baseline_to);

    let order = Order {
        once: None,
        request: ForgetRequest {
            user_id: Some("person-7".into()),
            ..Default::default()
        },
        environment: "production".into(),
        who: "bench".into(),
        request_id: privacy::new_request_id(),
        undo: false,
    };
    let location = StoreLocation::Sqlite(work.clone());
    let started = Instant::now();
    let report = std::thread::spawn(move || privacy::run(&location, &order, &[], None))
        .join()
        .unwrap()
        .unwrap();
    let ended = Instant::now();
    let during = rate(started, ended);
    let longest_wait = {
        let acks = acks.lock().unwrap();
        let inside: Vec<&Instant> = acks
            .iter()
            .filter(|t| **t >= started && **t <= ended)
            .collect();
        inside
            .windows(2)
            .map(|w| *w[1] - *w[0])
            .max()
            .unwrap_or(ended - started)
    };
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(load).unwrap();
    drop(writer);
    thread.join();
    println!(
        "forget: {:.2} s (longest transaction {} ms), {} rows deleted ({} messages), status {}",
        (ended - started).as_secs_f64(),
        report.longest_step_ms,
        report.deleted.total(),
        report.deleted.0.get("messages").copied().unwrap_or(0),
        report.status
    );
    println!(
        "ingest beside it: {baseline:.0} msg/s before, {during:.0} msg/s during ({:.2}x); longest wait between two commits {:.0} ms before, {:.0} ms during the forget",
        during / baseline.max(1.0),
        baseline_gap.as_secs_f64() * 1000.0,
        longest_wait.as_secs_f64() * 1000.0
    );
    println!("peak memory {:.0} MB", rss_mb());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", work.display()));
    }
}

fn bulk_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
