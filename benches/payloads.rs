//! Payload building per destination (pure: normalise, hash, serialise), events/s on one core,
//! for single events and for full batches. `cargo bench --bench payloads`.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use tracklayer::destinations::Setup;
use tracklayer::destinations::{self, Subject};
use tracklayer::pipeline::CanonicalEvent;

const CONFIG: &str = r#"
[workspace]
account = "acct_bench"
[[environments]]
name = "production"
secret = "bench-secret-0123456789"
[[destinations]]
name = "meta"
kind = "meta_capi"
pixel_id = "1234567890123456"
access_token = "EAAB"
[[destinations]]
name = "google"
kind = "google_ads"
customer_id = "1234567890"
conversion_actions = { purchase = "555000111" }
access_token = "ya29"
[[destinations]]
name = "klaviyo"
kind = "klaviyo"
api_key = "pk_bench"
[[destinations]]
name = "tiktok"
kind = "tiktok"
pixel_code = "CABCDEF"
access_token = "TT"
[[destinations]]
name = "webhook"
kind = "webhook"
url = "http://127.0.0.1:1/hook"
secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
"#;

fn event(i: usize) -> CanonicalEvent {
    serde_json::from_value(serde_json::json!({
        "event_id": format!("ev_purchase_{i:024}"), "event_id_basis": "purchase + order_id", "dedup_key": format!("ORD-{i}"),
        "name": "purchase", "segment_event": "Order Completed", "mapping_version": 1, "message_id": format!("m-{i}"),
        "environment": "production", "event_time": "2026-01-15T18:30:00.000Z", "event_time_ms": 1_768_501_800_000i64,
        "properties": {"order_id": format!("ORD-{i}"), "value": 129.98, "currency": "USD", "num_items": 3,
            "items": [{"item_id": "SKU-123", "sku": "SKU-123", "name": "Trail Runner Sock", "price": 49.99, "quantity": 2},
                      {"item_id": "SKU-456", "sku": "SKU-456", "name": "Merino Beanie", "price": 30.0, "quantity": 1}]},
        "user": {"profile_id": 1, "user_id": "user_8f3a2c", "email": "Jane.Doe@Gmail.com", "phone": "+1 (415) 555-0123",
            "first_name": "Jane", "last_name": "Doe", "city": "San Francisco", "state": "CA", "postal_code": "94107-1234", "country": "US"},
        "context": {"ip": "203.0.113.42", "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5)", "page_url": "https://shop.example.com/thanks",
            "click_ids": {"gclid": "Cj0KCQiA", "fbc": "fb.1.1768500000000.IwAR2x", "fbp": "fb.1.1768400000000.1098115397", "ttclid": "E.C.P.x"}},
        "provenance": {}
    }))
    .unwrap()
}

fn main() {
    let setup = Setup::parse(CONFIG, Path::new("bench.toml"), &|_| None).unwrap();
    let subjects: Vec<Subject> = (0..1000)
        .map(|i| Subject::Event {
            event: std::sync::Arc::new(event(i)),
            destination_event: "Purchase".into(),
            consent_source: "event".into(),
        })
        .collect();
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!("payload building, one core ({rounds} × 1000 purchase events with full user data)");
    for dest in &setup.destinations {
        let batch = dest.batch_size;
        let started = Instant::now();
        let mut built_events = 0usize;
        for _ in 0..rounds {
            for chunk in subjects.chunks(batch) {
                let built = destinations::build(dest, chunk, 1_768_501_800);
                built_events += built.included.len();
                black_box(built);
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "  {:<8} batch {:>4}: {:>9.0} events/s",
            dest.name,
            batch,
            built_events as f64 / secs
        );
    }
}
