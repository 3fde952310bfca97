//! `/metrics`: counters and histograms updated where things happen (ingest, delivery, the
//! writer), gauges refreshed from the store by the ops task. Encoded by the `prometheus` crate
//! in the text format Prometheus scrapes. Every label is bounded: paths are route patterns,
//! reasons and outcomes are fixed words, destinations and environments come from the config;
//! event names are never labels.

use prometheus::{
    exponential_buckets, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// path, status, reason
    pub requests: IntCounterVec,
    /// outcome
    pub messages: IntCounterVec,
    /// kind
    pub collisions: IntCounterVec,
    /// destination
    pub consent_blocked: IntCounterVec,
    /// destination, outcome
    pub deliveries: IntCounterVec,
    /// destination
    pub attempt_seconds: HistogramVec,
    /// destination: the match quality (0–10) of each delivered event
    pub match_quality: HistogramVec,
    /// destination
    pub queue_depth: IntGaugeVec,
    /// destination
    pub oldest_pending_seconds: GaugeVec,
    /// destination
    pub breaker_open: IntGaugeVec,
    pub writer_queue_depth: IntGauge,
    pub commit_seconds: Histogram,
    pub database_bytes: IntGauge,
    pub wal_bytes: IntGauge,
    /// rule
    pub alerts_firing: IntGaugeVec,
    pub up: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

impl Metrics {
    pub fn new() -> Metrics {
        let latency = || exponential_buckets(0.001, 2.0, 16).expect("valid buckets");
        let m = Metrics {
            registry: Registry::new_custom(Some("tracklayer".into()), None)
                .expect("a valid prefix"),
            requests: counter(
                "http_requests_total",
                "HTTP requests answered, by route, status and refusal reason",
                &["path", "status", "reason"],
            ),
            messages: counter(
                "messages_total",
                "Segment messages stored, by outcome (accepted, duplicate, invalid, mapped, unmapped, identify, collision, replayed)",
                &["outcome"],
            ),
            collisions: counter(
                "collisions_total",
                "Events that collapsed onto an existing event_id, by kind",
                &["kind"],
            ),
            consent_blocked: counter(
                "consent_blocked_total",
                "Events consent kept from a destination",
                &["destination"],
            ),
            deliveries: counter(
                "deliveries_total",
                "Delivery outcomes by destination: delivered, retry, dead, skipped",
                &["destination", "outcome"],
            ),
            attempt_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "attempt_duration_seconds",
                    "Time one request to a destination took",
                )
                .buckets(latency()),
                &["destination"],
            )
            .expect("valid metric definition"),
            match_quality: HistogramVec::new(
                HistogramOpts::new(
                    "match_quality",
                    "Match quality (0-10) of each delivered event, from the identifiers sent: an estimate, not the platform's own score",
                )
                .buckets(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]),
                &["destination"],
            )
            .expect("valid metric definition"),
            queue_depth: gauge(
                "queue_depth",
                "Deliveries waiting or in flight, per destination",
                &["destination"],
            ),
            oldest_pending_seconds: GaugeVec::new(
                Opts::new(
                    "queue_oldest_pending_age_seconds",
                    "How long the longest-waiting pending delivery has waited",
                ),
                &["destination"],
            )
            .expect("valid metric definition"),
            breaker_open: gauge(
                "breaker_open",
                "1 while a destination is paused by its circuit breaker (fleet-wide on PostgreSQL)",
                &["destination"],
            ),
            writer_queue_depth: IntGauge::new(
                "writer_queue_depth",
                "Ingest requests waiting for the database writer",
            )
            .expect("valid metric definition"),
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "commit_duration_seconds",
                    "Time one group commit of the database writer took",
                )
                .buckets(exponential_buckets(0.0001, 2.0, 16).expect("valid buckets")),
            )
            .expect("valid metric definition"),
            database_bytes: IntGauge::new(
                "database_size_bytes",
                "Bytes the database takes on disk",
            )
            .expect("valid metric definition"),
            wal_bytes: IntGauge::new(
                "wal_size_bytes",
                "Bytes of SQLite's write-ahead log (0 on PostgreSQL)",
            )
            .expect("valid metric definition"),
            alerts_firing: gauge("alerts_firing", "Alerts firing now, by rule", &["rule"]),
            up: Gauge::new("up_since_seconds", "When this process started (Unix seconds)")
                .expect("valid metric definition"),
        };
        m.up.set(chrono::Utc::now().timestamp() as f64);
        let collectors: [Box<dyn prometheus::core::Collector>; 16] = [
            Box::new(m.requests.clone()),
            Box::new(m.messages.clone()),
            Box::new(m.collisions.clone()),
            Box::new(m.consent_blocked.clone()),
            Box::new(m.deliveries.clone()),
            Box::new(m.attempt_seconds.clone()),
            Box::new(m.match_quality.clone()),
            Box::new(m.queue_depth.clone()),
            Box::new(m.oldest_pending_seconds.clone()),
            Box::new(m.breaker_open.clone()),
            Box::new(m.writer_queue_depth.clone()),
            Box::new(m.commit_seconds.clone()),
            Box::new(m.database_bytes.clone()),
            Box::new(m.wal_bytes.clone()),
            Box::new(m.alerts_firing.clone()),
            Box::new(m.up.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("each metric registered once");
        }
        m
    }

    /// The exposition, in Prometheus's text format.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            out.clear();
        }
        String::from_utf8(out).unwrap_or_default()
    }

    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";
}

/// A request path as a bounded label: the route it matched.
pub fn route_label(path: &str) -> &'static str {
    match path {
        "/segment/events" => "/segment/events",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        p if p.starts_with("/v1/") => "/v1/{call}",
        _ => "other",
    }
}
