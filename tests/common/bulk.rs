//! A store filled fast: synthetic track calls written through the store writer in batches of
//! 1,000 (no HTTP), for tests and benches that need a long history. Message `i` has messageId
//! `m-{i}`, userId `u-{i % 5000}`, email `user{i % 5000}@example.com`, order `O-{i / 3}`.

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use tracklayer::pipeline::{MappingTable, RouteTarget};
use tracklayer::store::{IngestBatch, RequestReceipt, StoreWriter};

pub fn message(i: usize) -> String {
    let event = match i % 10 {
        0 => "Product Viewed",
        1..=3 => "Order Completed",
        4 => "order completed",
        _ => "Product Added",
    };
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!(
        r#"{{"type":"track","event":"{event}","messageId":"m-{i}","userId":"u-{u}","anonymousId":"a-{}","timestamp":"{ts}","context":{{"ip":"203.0.113.42","userAgent":"Mozilla/5.0","traits":{{"email":"user{u}@example.com"}}}},"properties":{{"order_id":"O-{}","revenue":12.5,"currency":"EUR","product_id":"SKU-{i}","price":12.5}}}}"#,
        i % 7000,
        i / 3,
        u = i % 5000,
    )
}

/// Store `count` messages in the database at `path` (created if missing). `log` prints
/// progress every 100,000.
#[allow(dead_code)]
pub fn fill(path: &Path, count: usize, log: bool) {
    fill_with(path, "bulk", 0..count, message, log)
}

/// Store the messages `make(i)` for each `i` of `range`, in requests named after `label`.
pub fn fill_with(
    path: &Path,
    label: &str,
    range: std::ops::Range<usize>,
    make: impl Fn(usize) -> String,
    log: bool,
) {
    let first = range.start;
    let count = range.len();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let targets = vec![RouteTarget {
            name: "warehouse".into(),
            kind: "warehouse".into(),
            environments: vec![],
            consent: vec![],
            supported_events: None,
            takes_profiles: false,
            unsupported: Vec::new(),
        }];
        let (writer, thread) =
            StoreWriter::spawn(path, Default::default(), targets, Default::default()).unwrap();
        let table = MappingTable::default();
        let started = Instant::now();
        for chunk in 0..count.div_ceil(1000) {
            let now = chrono::Utc::now().timestamp_millis();
            let messages = (chunk * 1000..((chunk + 1) * 1000).min(count))
                .enumerate()
                .map(|(pos, i)| {
                    tracklayer::ingest::message_record(
                        pos,
                        Bytes::from(make(first + i)),
                        &tracklayer::ingest::MessageContext {
                            implied_type: None,
                            environment: "production",
                            mapping: &table,
                            received_at_ms: now,
                            limits: &Default::default(),
                            default_country: None,
                        },
                    )
                })
                .collect();
            let batch = IngestBatch {
                receipt: RequestReceipt {
                    request_id: format!("req_{label}_{first}_{chunk}"),
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
            if log && chunk % 100 == 99 {
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

/// Deliver every pending warehouse delivery of the store at `path` as a worker would, one
/// attempt each (claimed, then completed as delivered): a long attempts history.
#[allow(dead_code)]
pub fn deliver_all(path: &Path) -> usize {
    use tracklayer::store::model::delivery::{AttemptOutcome, Completion, ItemResult, RequestRef};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (writer, thread) =
            StoreWriter::spawn(path, Default::default(), Vec::new(), Default::default()).unwrap();
        let mut delivered = 0;
        loop {
            let now = chrono::Utc::now().timestamp_millis();
            let claim = writer
                .claim(
                    "warehouse",
                    now,
                    1000,
                    60_000,
                    tracklayer::store::ClaimToken::fresh(),
                )
                .await
                .unwrap();
            if claim.items.is_empty() {
                break;
            }
            delivered += claim.items.len();
            let items = claim
                .items
                .iter()
                .map(|d| ItemResult {
                    delivery_id: d.id,
                    attempt: d.attempt,
                    outcome: AttemptOutcome::Delivered,
                    reason: None,
                    next_attempt_ms: None,
                    solo: false,
                    free_retry: false,
                })
                .collect();
            writer
                .complete(vec![Completion {
                    destination: "warehouse".into(),
                    request: RequestRef::None,
                    items,
                    at_ms: now,
                }])
                .await
                .unwrap();
        }
        drop(writer);
        thread.join();
        delivered
    })
}
