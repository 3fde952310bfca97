//! The ops task: every `[alerts] interval_secs`, refresh the store-backed gauges, evaluate the
//! rules, store what starts and ends, and notify. Reads run on a blocking thread (the store
//! readers are synchronous).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::notify::{BadSecret, Notice, Notifier};
use super::rules::{self, Condition, DestinationView, Rule};
use super::Ops;
use crate::config::AlertsConfig;
use crate::store::model::alerts::{AlertChange, AlertNotice};
use crate::store::{now_ms, DashboardReader, StoreLocation, StoreWriter};

/// An alert this node knows to be open.
#[derive(Debug, Clone)]
struct Open {
    started_at_ms: i64,
    summary: String,
    evidence: Value,
    /// The node that fired it (`None` on SQLite): on a fleet, rates are per node, so only the
    /// node that saw a rate-based problem may call it over.
    node: Option<String>,
}

pub struct OpsTask {
    handle: tokio::task::JoinHandle<()>,
}

impl OpsTask {
    pub async fn stop(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

struct Evaluator {
    ops: Arc<Ops>,
    config: AlertsConfig,
    store: StoreLocation,
    writer: StoreWriter,
    destinations: Vec<String>,
    node: Option<String>,
    notifier: Notifier,
    reader: Option<Box<dyn DashboardReader>>,
    open: BTreeMap<(Rule, String), Open>,
}

/// What one read of the store gave.
struct StoreView {
    destinations: Vec<DestinationView>,
    sizes: Option<(u64, u64)>,
    open: Vec<crate::store::model::alerts::StoredAlert>,
}

pub fn spawn(
    ops: Arc<Ops>,
    config: AlertsConfig,
    store: StoreLocation,
    writer: StoreWriter,
    destinations: Vec<String>,
    node: Option<String>,
) -> Result<OpsTask, BadSecret> {
    let notifier = Notifier::new(&config)?;
    let evaluator = Evaluator {
        ops,
        config,
        store,
        writer,
        destinations,
        node,
        notifier,
        reader: None,
        open: BTreeMap::new(),
    };
    Ok(OpsTask {
        handle: tokio::spawn(evaluator.run()),
    })
}

impl Evaluator {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(self.config.interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tick.tick().await;
            let Some(view) = self.read_store(first).await else {
                continue;
            };
            if first {
                // Alerts left open by an earlier run (or, on a fleet, another node) are ours
                // to resolve when their condition is gone.
                for a in &view.open {
                    if let Some(rule) = Rule::parse(&a.rule) {
                        self.open.insert(
                            (rule, a.subject.clone()),
                            Open {
                                started_at_ms: a.started_at_ms,
                                summary: a.evidence["summary"].as_str().unwrap_or_default().into(),
                                evidence: a.evidence.clone(),
                                node: a.node_id.clone(),
                            },
                        );
                    }
                }
                first = false;
            }
            self.refresh_gauges(&view);
            self.evaluate(&view.destinations).await;
        }
    }

    async fn read_store(&mut self, with_open_alerts: bool) -> Option<StoreView> {
        let mut reader = self.reader.take();
        let store = self.store.clone();
        let names = self.destinations.clone();
        let result = tokio::task::spawn_blocking(move || {
            if reader.is_none() {
                reader = Some(store.open()?);
            }
            let r = reader.as_mut().expect("opened above");
            let mut destinations = Vec::with_capacity(names.len());
            for name in names {
                destinations.push(DestinationView {
                    queue: r.queue_counts(&name)?,
                    paused: r.destination_pause(&name)?,
                    name,
                });
            }
            let sizes = r.storage_bytes().ok();
            let open = if with_open_alerts {
                r.alerts(500)?
                    .into_iter()
                    .filter(|a| a.is_firing())
                    .collect()
            } else {
                Vec::new()
            };
            Ok::<_, crate::store::StoreError>((
                reader,
                StoreView {
                    destinations,
                    sizes,
                    open,
                },
            ))
        })
        .await;
        match result {
            Ok(Ok((reader, view))) => {
                self.reader = reader;
                Some(view)
            }
            Ok(Err(e)) => {
                // Opened afresh next time (PostgreSQL may have restarted).
                tracing::warn!(error = %e, "alerts: could not read the store; trying again next interval");
                None
            }
            Err(_) => None,
        }
    }

    fn refresh_gauges(&self, view: &StoreView) {
        let m = &self.ops.metrics;
        let now = now_ms();
        for d in &view.destinations {
            let labels = [d.name.as_str()];
            m.queue_depth
                .with_label_values(&labels)
                .set(d.queue.pending + d.queue.in_flight);
            let age = d
                .queue
                .oldest_pending_ms
                .map_or(0.0, |at| ((now - at).max(0) as f64) / 1000.0);
            m.oldest_pending_seconds.with_label_values(&labels).set(age);
            m.breaker_open.with_label_values(&labels).set(i64::from(
                d.paused.as_ref().is_some_and(|p| p.in_force(now)),
            ));
        }
        m.writer_queue_depth.set(self.writer.queue_depth() as i64);
        if let Some((db, wal)) = view.sizes {
            m.database_bytes.set(db as i64);
            m.wal_bytes.set(wal as i64);
        }
    }

    async fn evaluate(&mut self, destinations: &[DestinationView]) {
        let now = now_ms();
        let holding: Vec<Condition> = {
            let mut signals = self.ops.signals();
            let longest = [
                self.config.error_rate_window_secs,
                self.config.auth_failures_window_secs,
                self.config.unmapped_window_secs,
                self.config.dead_letters_window_secs,
            ]
            .into_iter()
            .max()
            .unwrap_or(600);
            signals.trim(now - (longest as i64) * 1000);
            rules::evaluate(now, &self.config, &signals, destinations)
        };
        for condition in &holding {
            let key = (condition.rule, condition.subject.clone());
            if let Some(open) = self.open.get_mut(&key) {
                open.evidence = with_summary(&condition.evidence, &condition.summary);
                continue;
            }
            self.fire(condition, now).await;
        }
        let gone: Vec<(Rule, String)> = self
            .open
            .keys()
            .filter(|key| {
                !holding
                    .iter()
                    .any(|c| (c.rule, &c.subject) == (key.0, &key.1))
            })
            .cloned()
            .collect();
        for key in gone {
            let Some(open) = self.open.get(&key).cloned() else {
                continue;
            };
            let store_based = matches!(key.0, Rule::QueueBacklog);
            if open.node.is_some() && open.node != self.node && !store_based {
                // Another node's rate-based alert: that node calls it over.
                continue;
            }
            self.resolve(key, open, now).await;
        }
        for rule in Rule::ALL {
            let n = self.open.keys().filter(|(r, _)| *r == rule).count();
            self.ops
                .metrics
                .alerts_firing
                .with_label_values(&[rule.as_str()])
                .set(n as i64);
        }
    }

    async fn fire(&mut self, condition: &Condition, now: i64) {
        let evidence = with_summary(&condition.evidence, &condition.summary);
        let change = AlertChange {
            rule: condition.rule.as_str().into(),
            subject: condition.subject.clone(),
            firing: true,
            at_ms: now,
            evidence: evidence.to_string(),
            node_id: self.node.clone(),
            cooldown_since_ms: now - (self.config.cooldown_secs as i64) * 1000,
        };
        let write = match self.writer.record_alert(change).await {
            Ok(write) => write,
            Err(e) => {
                tracing::warn!(error = %e, rule = condition.rule.as_str(), "alert not stored; evaluated again next interval");
                return;
            }
        };
        tracing::warn!(rule = condition.rule.as_str(), subject = %condition.subject, summary = %condition.summary, "alert firing");
        self.open.insert(
            (condition.rule, condition.subject.clone()),
            Open {
                started_at_ms: now,
                summary: condition.summary.clone(),
                evidence: evidence.clone(),
                node: self.node.clone(),
            },
        );
        if write.notify {
            let outcome = self
                .notifier
                .send(&Notice {
                    rule: condition.rule.as_str(),
                    subject: condition.subject.clone(),
                    state: "firing",
                    started_at_ms: now,
                    resolved_at_ms: None,
                    summary: condition.summary.clone(),
                    evidence,
                    node: self.node.clone(),
                })
                .await;
            self.store_notice(condition.rule, &condition.subject, now, outcome)
                .await;
        }
    }

    async fn store_notice(
        &mut self,
        rule: Rule,
        subject: &str,
        started_at_ms: i64,
        notice: String,
    ) {
        // `&mut self`: the evaluator is Send but not Sync (its reader), so no shared borrow may
        // be held across an await.
        self.writer
            .record_alert_notice(AlertNotice {
                rule: rule.as_str().into(),
                subject: subject.into(),
                started_at_ms,
                notice,
            })
            .await;
    }

    async fn resolve(&mut self, key: (Rule, String), open: Open, now: i64) {
        let change = AlertChange {
            rule: key.0.as_str().into(),
            subject: key.1.clone(),
            firing: false,
            at_ms: now,
            evidence: open.evidence.to_string(),
            node_id: self.node.clone(),
            cooldown_since_ms: now,
        };
        let write = match self.writer.record_alert(change).await {
            Ok(write) => write,
            Err(e) => {
                tracing::warn!(error = %e, rule = key.0.as_str(), "alert resolution not stored; evaluated again next interval");
                return;
            }
        };
        self.open.remove(&key);
        tracing::info!(rule = key.0.as_str(), subject = %key.1, "alert resolved");
        if write.changed && write.notify {
            let started_at_ms = write.started_at_ms.unwrap_or(open.started_at_ms);
            let outcome = self
                .notifier
                .send(&Notice {
                    rule: key.0.as_str(),
                    subject: key.1.clone(),
                    state: "resolved",
                    started_at_ms,
                    resolved_at_ms: Some(now),
                    summary: format!("no longer holds; it was: {}", open.summary),
                    evidence: open.evidence,
                    node: self.node.clone(),
                })
                .await;
            self.store_notice(key.0, &key.1, started_at_ms, outcome)
                .await;
        }
    }
}

impl Drop for Evaluator {
    fn drop(&mut self) {
        // The PostgreSQL client must not be dropped on an async thread.
        if let Some(reader) = self.reader.take() {
            std::thread::spawn(move || drop(reader));
        }
    }
}

fn with_summary(evidence: &Value, summary: &str) -> Value {
    let mut v = evidence.clone();
    if let Value::Object(map) = &mut v {
        map.insert("summary".into(), Value::String(summary.into()));
    }
    v
}
