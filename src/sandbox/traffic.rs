//! Realistic Segment traffic for the demo: identify-then-track journeys, anonymous users who
//! become known, near-miss event names, Segment retries, duplicate orders, consent denials,
//! staging traffic, invalid messages, bad signatures and batched deliveries — signed as
//! Segment's webhook destinations sign them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::Secret;
use crate::ingest::auth;

/// A small xorshift generator: reproducible traffic without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Default)]
pub struct TrafficStats {
    pub requests: AtomicU64,
    pub messages: AtomicU64,
    pub refused: AtomicU64,
}

/// Where and how to post.
pub struct Target {
    pub url: String,
    pub account: String,
    pub production_secret: Secret,
    pub staging_secret: Secret,
}

struct User {
    n: u64,
    stage: u8,
    consent_denied: bool,
    order: u64,
}

pub struct Traffic {
    target: Target,
    client: reqwest::Client,
    rng: Rng,
    users: Vec<User>,
    next_user: u64,
    next_message: u64,
    sent: Vec<Value>,
    last_order: Option<Value>,
    /// Special cases sent first, so even a short run shows each of them.
    script: Vec<&'static str>,
}

const NEAR_MISSES: [&str; 5] = [
    "order completed",
    "Completed Order",
    "Prodct Added",
    "Product viewed",
    "Newsletter Signup",
];
const PRODUCTS: [(&str, &str, f64); 5] = [
    ("SKU-123", "Trail Runner Sock", 49.99),
    ("SKU-456", "Merino Beanie", 30.0),
    ("SKU-481", "Wool Glove", 89.95),
    ("SKU-812", "Rain Shell", 129.0),
    ("SKU-903", "Gaiter", 19.5),
];

impl Traffic {
    pub fn new(target: Target, seed: u64) -> Traffic {
        Traffic {
            target,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            rng: Rng(seed | 1),
            users: Vec::new(),
            next_user: 1,
            next_message: 1,
            sent: Vec::new(),
            last_order: None,
            script: vec![
                "near_miss",
                "consent_denied",
                "retry",
                "duplicate_order",
                "invalid",
                "bad_signature",
                "staging",
                "batch",
            ],
        }
    }

    fn message_id(&mut self) -> String {
        let n = self.next_message;
        self.next_message += 1;
        format!("demo-{n:06}")
    }

    fn base(&mut self, kind: &str, user: &User, known: bool) -> Value {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut m = json!({
            "type": kind,
            "messageId": self.message_id(),
            "anonymousId": format!("anon-{:05}", user.n),
            "timestamp": now,
            "context": {
                "ip": format!("203.0.113.{}", user.n % 250 + 1),
                "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 Chrome/126.0",
                "locale": "en-US",
                "library": {"name": "analytics.js", "version": "next-1.70.0"},
                "page": {"url": format!("https://shop.example/p/{}?gclid=Cj0KCQ{}", user.n, user.n), "referrer": "https://www.google.com/"},
                "consent": {"categoryPreferences": {"Advertising": !user.consent_denied, "Analytics": true, "DataSharing": true, "Marketing": true}},
            },
        });
        if known {
            m["userId"] = json!(format!("cust_{:05}", user.n));
        }
        m
    }

    fn track(&mut self, user: &User, event: &str, properties: Value) -> Value {
        let known = user.stage >= 2;
        let mut m = self.base("track", user, known);
        m["event"] = json!(event);
        m["properties"] = properties;
        m
    }

    fn product(&mut self) -> Value {
        let (id, name, price) = PRODUCTS[self.rng.below(PRODUCTS.len() as u64) as usize];
        json!({"product_id": id, "sku": id, "name": name, "price": price, "quantity": 1 + self.rng.below(2), "category": "Outdoor"})
    }

    /// The next step of a journey: view (anonymous) → identify → add → checkout → purchase.
    fn journey_step(&mut self) -> Value {
        if self.users.len() < 8 || self.rng.chance(15) {
            let n = self.next_user;
            self.next_user += 1;
            let consent_denied = self.rng.chance(15);
            self.users.push(User {
                n,
                stage: 0,
                consent_denied,
                order: 0,
            });
        }
        let i = self.rng.below(self.users.len() as u64) as usize;
        let mut user = self.users.swap_remove(i);
        let message = match user.stage {
            0 => {
                let p = self.product();
                self.track(&user, "Product Viewed", p)
            }
            1 => {
                let mut m = self.base("identify", &user, true);
                m["traits"] = json!({
                    "email": format!("Customer.{:05}@Example.com", user.n),
                    "phone": format!("+1 (415) 555-{:04}", user.n % 10000),
                    "firstName": "Alex", "lastName": format!("Tester{}", user.n),
                    "address": {"city": "San Francisco", "state": "CA", "postalCode": "94107", "country": "US"},
                });
                m
            }
            2 => {
                let p = self.product();
                let price = p["price"].clone();
                let mut props = p;
                props["currency"] = json!("USD");
                props["price"] = price;
                self.track(&user, "Product Added", props)
            }
            3 => {
                user.order = self.next_message;
                let p = self.product();
                self.track(&user, "Checkout Started", json!({"order_id": format!("ORD-{}", user.order), "value": p["price"], "currency": "USD", "products": [p]}))
            }
            4 => {
                let p = self.product();
                let revenue = if self.rng.chance(30) {
                    json!(format!("${}", p["price"]))
                } else {
                    p["price"].clone()
                };
                let m = self.track(&user, "Order Completed", json!({"order_id": format!("ORD-{}", user.order), "revenue": revenue, "currency": "USD", "products": [p]}));
                self.last_order = Some(m.clone());
                m
            }
            _ => self.track(&user, "Lead Submitted", json!({"form": "newsletter"})),
        };
        user.stage += 1;
        if user.stage <= 5 {
            self.users.push(user);
        }
        message
    }

    fn near_miss(&mut self) -> Value {
        let name = NEAR_MISSES[self.rng.below(NEAR_MISSES.len() as u64) as usize];
        let user = User {
            n: 90_000 + self.rng.below(100),
            stage: 2,
            consent_denied: false,
            order: 0,
        };
        let p = self.product();
        self.track(&user, name, p)
    }

    /// Post one body; `scheme_segment` signs like Segment (X-Signature), else TrackLayer's.
    async fn post(
        &mut self,
        body: Vec<u8>,
        environment: &str,
        good_signature: bool,
        messages: u64,
    ) {
        let secret = if environment == "staging" {
            &self.target.staging_secret
        } else {
            &self.target.production_secret
        };
        let wrong = Secret::new("not-the-secret-0000");
        let secret = if good_signature { secret } else { &wrong };
        let mut request = self
            .client
            .post(&self.target.url)
            .header("content-type", "application/json")
            .header(auth::HEADER_ACCOUNT, &self.target.account)
            .header(auth::HEADER_ENVIRONMENT, environment);
        if body.first() == Some(&b'[') {
            // Batches come from Webhooks (Actions): X-Signature over element 0.
            let bytes = bytes::Bytes::from(body.clone());
            if let Ok(split) = crate::segment::split_body(&bytes, usize::MAX) {
                request = request.header(
                    auth::HEADER_SEGMENT_SIGNATURE,
                    auth::sign_segment(secret, &split.messages[0]),
                );
            }
        } else {
            let ts = chrono::Utc::now().timestamp().to_string();
            request = request.header(auth::HEADER_TIMESTAMP, &ts).header(
                auth::HEADER_SIGNATURE,
                auth::sign_tracklayer(secret, &ts, &body),
            );
        }
        if let Ok(response) = request.body(body).send().await {
            let _ = response.status();
        }
        let _ = messages;
    }

    /// Send one request's worth of traffic; returns how many messages it carried.
    pub async fn tick(&mut self, stats: &TrafficStats) {
        let special = if self.script.is_empty() {
            match self.rng.below(100) {
                0..=4 => "near_miss",
                5..=9 => "retry",
                10..=12 => "duplicate_order",
                13..=15 => "staging",
                16..=17 => "invalid",
                18 => "bad_signature",
                19..=33 => "batch",
                _ => "journey",
            }
        } else {
            self.script.remove(0)
        };
        let (body, env, good, count): (Value, &str, bool, u64) = match special {
            "near_miss" => (self.near_miss(), "production", true, 1),
            "consent_denied" => {
                let user = User {
                    n: 80_000 + self.rng.below(100),
                    stage: 4,
                    consent_denied: true,
                    order: self.next_message,
                };
                let p = self.product();
                (self.track(&user, "Order Completed", json!({"order_id": format!("ORD-C{}", user.order), "revenue": p["price"], "currency": "USD", "products": [p]})), "production", true, 1)
            }
            "retry" if !self.sent.is_empty() => {
                let i = self.rng.below(self.sent.len() as u64) as usize;
                (self.sent[i].clone(), "production", true, 1)
            }
            "duplicate_order" if self.last_order.is_some() => {
                let mut again = self.last_order.clone().unwrap_or_default();
                again["messageId"] = json!(self.message_id());
                (again, "production", true, 1)
            }
            "staging" => {
                let m = self.journey_step();
                (m, "staging", true, 1)
            }
            "invalid" => {
                let user = User {
                    n: 70_000,
                    stage: 2,
                    consent_denied: false,
                    order: 0,
                };
                let mut m = self.track(&user, "Order Completed", json!({"revenue": 10}));
                m.as_object_mut().map(|o| o.remove("event"));
                (m, "production", true, 1)
            }
            "bad_signature" => {
                let m = self.journey_step();
                (m, "production", false, 1)
            }
            "batch" => {
                let n = 2 + self.rng.below(4);
                let items: Vec<Value> = (0..n).map(|_| self.journey_step()).collect();
                for item in &items {
                    self.sent.push(item.clone());
                }
                (Value::Array(items), "production", true, n)
            }
            _ => (self.journey_step(), "production", true, 1),
        };
        if good && env == "production" && !body.is_array() {
            self.sent.push(body.clone());
            if self.sent.len() > 500 {
                self.sent.remove(0);
            }
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        self.post(bytes, env, good, count).await;
        stats.requests.fetch_add(1, Ordering::Relaxed);
        stats.messages.fetch_add(count, Ordering::Relaxed);
        if !good {
            stats.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Send at `rate` requests per second until `until`.
    pub async fn run(mut self, rate: f64, until: Instant, stats: Arc<TrafficStats>) {
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
        let mut next = Instant::now();
        while Instant::now() < until {
            self.tick(&stats).await;
            next += interval;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}
