//! Operating TrackLayer: `/metrics`, readiness, and alerts evaluated in the pipeline (so they
//! fire headless too). The ingest and delivery paths report what happens through `Ops`; the
//! ops task refreshes gauges from the store, evaluates the rules and notifies.

pub mod metrics;
pub mod notify;
pub mod rules;
pub mod signals;
mod task;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::pipeline::RouteVerdict;
use crate::stage::PipelineOutcome;
use crate::store::model::delivery::{AttemptOutcome, ItemResult};
use crate::store::{MessageOutcome, StoredOutcome};

pub use metrics::Metrics;
pub use task::{spawn, OpsTask};

/// What the node's parts report to; shared by ingest, delivery and the ops task.
pub struct Ops {
    pub metrics: Metrics,
    signals: Mutex<signals::Signals>,
    /// Configured environments: a 401 naming anything else counts as `unknown` (bounded).
    environments: Vec<String>,
    shutting_down: AtomicBool,
    /// Destinations whose worker cannot claim or record deliveries now (the store fails it):
    /// since when, and why. Readiness fails while any is here.
    delivery_store: Mutex<std::collections::BTreeMap<String, (i64, String)>>,
}

impl Ops {
    pub fn new(environments: Vec<String>) -> Arc<Ops> {
        Arc::new(Ops {
            metrics: Metrics::new(),
            signals: Mutex::new(signals::Signals::default()),
            environments,
            shutting_down: AtomicBool::new(false),
            delivery_store: Mutex::new(Default::default()),
        })
    }

    fn signals(&self) -> MutexGuard<'_, signals::Signals> {
        self.signals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An HTTP request answered.
    pub fn http(&self, path: &str, status: u16, reason: &'static str) {
        self.metrics
            .requests
            .with_label_values(&[metrics::route_label(path), &status.to_string(), reason])
            .inc();
    }

    /// A request refused; 401s count toward `auth_failures` of the environment they named.
    pub fn refused(&self, environment: Option<&str>, status: u16, code: &'static str, at_ms: i64) {
        if status != 401 {
            return;
        }
        let environment = environment
            .filter(|e| self.environments.iter().any(|known| known == e))
            .unwrap_or("unknown")
            .to_string();
        self.signals().auth_failure(environment, at_ms, code);
    }

    /// A request's messages are stored: count their outcomes. `events` are the messages'
    /// event names, in order (unmapped names feed `unmapped_spike`, never a label).
    pub fn ingested(
        &self,
        environment: &str,
        at_ms: i64,
        outcomes: &[StoredOutcome],
        events: &[Option<String>],
    ) {
        let count = |outcome: &'static str| {
            self.metrics.messages.with_label_values(&[outcome]).inc();
        };
        let mut signals = None;
        for (i, stored) in outcomes.iter().enumerate() {
            count(match stored.message {
                MessageOutcome::Accepted { .. } => "accepted",
                MessageOutcome::Duplicate { .. } => "duplicate",
                MessageOutcome::Invalid { .. } => "invalid",
                MessageOutcome::Suppressed => "suppressed",
            });
            let Some(pipeline) = &stored.pipeline else {
                continue;
            };
            count(pipeline.label());
            match pipeline {
                PipelineOutcome::Collision { kind, .. } => {
                    self.metrics
                        .collisions
                        .with_label_values(&[kind.as_str()])
                        .inc();
                }
                PipelineOutcome::Mapped { routes, .. } => {
                    for (destination, verdict) in routes {
                        match verdict {
                            RouteVerdict::Ready => {}
                            RouteVerdict::BlockedConsent => {
                                self.metrics
                                    .consent_blocked
                                    .with_label_values(&[destination])
                                    .inc();
                            }
                            _ => {
                                self.metrics
                                    .deliveries
                                    .with_label_values(&[destination.as_str(), "skipped"])
                                    .inc();
                            }
                        }
                    }
                }
                PipelineOutcome::Unmapped { .. }
                    if matches!(stored.message, MessageOutcome::Accepted { .. }) =>
                {
                    if let Some(Some(name)) = events.get(i) {
                        signals.get_or_insert_with(|| self.signals()).unmapped(
                            name,
                            environment,
                            at_ms,
                        );
                    }
                }
                _ => {}
            }
        }
    }

    /// A destination's worker decided some deliveries (after a request, or without one):
    /// `request` is (latency ms, succeeded, failure reason) when a request was made.
    pub fn delivered(
        &self,
        destination: &str,
        at_ms: i64,
        request: Option<(Option<i64>, bool, Option<String>)>,
        items: &[ItemResult],
    ) {
        let mut signals = self.signals();
        for item in items {
            let outcome = match item.outcome {
                AttemptOutcome::Delivered => "delivered",
                AttemptOutcome::Retry => "retry",
                AttemptOutcome::Dead => {
                    signals.dead_letter(
                        destination,
                        at_ms,
                        item.reason.clone().unwrap_or_default(),
                    );
                    "dead"
                }
            };
            self.metrics
                .deliveries
                .with_label_values(&[destination, outcome])
                .inc();
        }
        if let Some((latency_ms, ok, reason)) = request {
            if let Some(ms) = latency_ms {
                self.metrics
                    .attempt_seconds
                    .with_label_values(&[destination])
                    .observe(ms as f64 / 1000.0);
            }
            signals.request(destination, at_ms, ok, reason);
        }
    }

    /// The match quality of an event a destination took (0–10): the metric, and the signal the
    /// `match_quality_drop` rule compares with the destination's own last day.
    pub fn match_quality(&self, destination: &str, at_ms: i64, score: f64) {
        self.metrics
            .match_quality
            .with_label_values(&[destination])
            .observe(score);
        self.signals().match_quality(destination, at_ms, score);
    }

    /// A destination's worker could not claim or record deliveries: the store failed it.
    pub fn delivery_store_failed(&self, destination: &str, at_ms: i64, reason: &str) {
        let mut failing = self
            .delivery_store
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        failing
            .entry(destination.to_string())
            .and_modify(|(_, why)| *why = reason.to_string())
            .or_insert_with(|| (at_ms, reason.to_string()));
    }

    /// The store took a destination's claim or outcomes again.
    pub fn delivery_store_ok(&self, destination: &str) {
        let mut failing = self
            .delivery_store
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if failing.remove(destination).is_some() {
            tracing::info!(%destination, "deliveries are claimed and recorded again");
        }
    }

    /// Destinations whose deliveries the store fails now: (destination, since, why).
    pub fn delivery_store_problems(&self) -> Vec<(String, i64, String)> {
        self.delivery_store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(d, (since, why))| (d.clone(), *since, why.clone()))
            .collect()
    }

    /// The node stops: `/readyz` says so from now on.
    pub fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}
