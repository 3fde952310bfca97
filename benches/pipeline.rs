//! The pure pipeline alone, on one core: validate → map → transform → identity → dedup id →
//! consent → route, over a realistic mix of Segment calls. `cargo bench --bench pipeline`.

use std::hint::black_box;
use std::time::Instant;

use tracklayer::pipeline::{self, consent, identity, MappingTable, RouteTarget};
use tracklayer::segment::validate_message;

fn mix() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..1000 {
        let user = format!("cust_{}", i % 97);
        let anon = format!("anon_{}", i % 131);
        let ctx = r#""context":{"ip":"203.0.113.42","userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36","page":{"url":"https://shop.example/p?gclid=Cj0KCQ&fbclid=IwAR2x"},"consent":{"categoryPreferences":{"Advertising":true,"Analytics":true,"DataSharing":false}}}"#;
        let message = match i % 20 {
            0..=3 => format!(
                r#"{{"type":"identify","messageId":"m-{i}","userId":"{user}","anonymousId":"{anon}",{ctx},"traits":{{"email":"User{i}@Example.com","phone":"+1 (415) 555-{:04}","firstName":"Jane","lastName":"Doe","address":{{"city":"San Francisco","state":"CA","postalCode":"94107","country":"US"}}}}}}"#,
                i % 10000
            ),
            4..=11 => format!(
                r#"{{"type":"track","event":"Product Viewed","messageId":"m-{i}","anonymousId":"{anon}",{ctx},"timestamp":"2026-04-23T10:15:30Z","properties":{{"product_id":"SKU-{i}","sku":"SKU-{i}","name":"Trail Runner Sock","price":"$49.99","currency":"usd","category":"Apparel"}}}}"#
            ),
            12..=14 => format!(
                r#"{{"type":"track","event":"Product Added","messageId":"m-{i}","userId":"{user}",{ctx},"timestamp":"2026-04-23T10:15:30Z","properties":{{"product_id":"SKU-{i}","price":49.99,"quantity":2,"currency":"USD"}}}}"#
            ),
            15..=16 => format!(
                r#"{{"type":"track","event":"Checkout Started","messageId":"m-{i}","userId":"{user}",{ctx},"timestamp":"2026-04-23T10:15:30Z","properties":{{"order_id":"ORD-{i}","value":129.98,"currency":"USD","products":[{{"product_id":"SKU-123","price":49.99,"quantity":2}},{{"product_id":"SKU-456","price":30}}]}}}}"#
            ),
            17..=18 => format!(
                r#"{{"type":"track","event":"Order Completed","messageId":"m-{i}","userId":"{user}","anonymousId":"{anon}",{ctx},"timestamp":"2026-04-23T10:15:30Z","properties":{{"order_id":"ORD-{i}","revenue":129.98,"total":139.98,"shipping":5,"tax":5,"currency":"USD","coupon":"WINTER","products":[{{"product_id":"SKU-123","sku":"SKU-123","name":"Trail Runner Sock","price":49.99,"quantity":2,"category":"Apparel"}},{{"product_id":"SKU-456","sku":"SKU-456","name":"Merino Beanie","price":30,"quantity":1,"category":"Apparel"}}]}}}}"#
            ),
            _ => format!(
                r#"{{"type":"track","event":"order completed","messageId":"m-{i}","userId":"{user}",{ctx},"properties":{{"order_id":"ORD-{i}","revenue":10}}}}"#
            ),
        };
        out.push(message.into_bytes());
    }
    out
}

fn main() {
    let messages = mix();
    let table = MappingTable::default();
    let targets: Vec<RouteTarget> = [
        ("meta", "meta_capi", vec!["Advertising"]),
        ("tiktok", "tiktok", vec!["Advertising", "DataSharing"]),
        ("warehouse", "warehouse", vec![]),
    ]
    .into_iter()
    .map(|(name, kind, consent)| RouteTarget {
        name: name.into(),
        kind: kind.into(),
        environments: vec![],
        consent: consent.into_iter().map(String::from).collect(),
        supported_events: None,
        takes_profiles: false,
        unsupported: Vec::new(),
    })
    .collect();
    // A warm identity graph: the profile each identifier would find, kept in memory.
    let known: Vec<identity::Profile> = Vec::new();

    let rounds = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let started = Instant::now();
    let mut events = 0usize;
    for _ in 0..rounds {
        for raw in &messages {
            let Ok(message) = validate_message(raw, None, &Default::default()) else {
                continue;
            };
            let draft = pipeline::draft(&message, "production", &table, 1_776_939_330_000);
            let observation = identity::observe(&message, 1_776_939_330_000, None);
            let resolution = identity::resolve(&observation, &known);
            if let pipeline::Draft::Mapped(event, row) = &draft {
                let mut event = (**event).clone();
                let mut provenance = std::mem::take(&mut event.provenance);
                identity::enrich(&mut event.user, &resolution.profile, &mut provenance);
                event.provenance = provenance;
                let fingerprint = event.payload_fingerprint();
                let routes = pipeline::route(
                    &event,
                    row,
                    &targets,
                    consent::event_consent(&message.body),
                    None,
                );
                black_box((fingerprint, routes));
            }
            black_box(&draft);
            events += 1;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "pure pipeline, one core: {:.0} messages/s ({} messages in {:.2} s; mix: 20% identify, 40% Product Viewed, 15% Product Added, 10% Checkout Started, 10% Order Completed, 5% unmapped)",
        events as f64 / elapsed.as_secs_f64(),
        events,
        elapsed.as_secs_f64()
    );
}
