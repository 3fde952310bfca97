//! The warehouse destination: rows written straight into a table, no HTTP.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::now_ms;
use super::worker::Worker;
use crate::destinations::{Settings, Subject};
use crate::store::codec::Packed;
use crate::store::delivery::{ItemResult, RequestRecord};
use crate::store::warehouse::WarehouseSink;
use crate::store::LeasedDelivery;

impl Worker {
    pub(super) async fn deliver_to_warehouse(
        &self,
        items: Vec<LeasedDelivery>,
        sink: Arc<Mutex<Option<Box<dyn WarehouseSink>>>>,
    ) {
        let started = now_ms();
        let clock = Instant::now();
        let outcome: Result<usize, String> = match &self.dest.settings {
            Settings::Warehouse(target) => {
                let target = target.clone();
                let events: Vec<crate::pipeline::CanonicalEvent> = items
                    .iter()
                    .filter_map(|i| match &i.subject {
                        Subject::Event { event, .. } => Some((**event).clone()),
                        Subject::Profile(_) => None,
                    })
                    .collect();
                tokio::task::spawn_blocking(move || {
                    let refs: Vec<&crate::pipeline::CanonicalEvent> = events.iter().collect();
                    let Ok(mut sink) = sink.lock() else {
                        return Err("the warehouse writer panicked".to_string());
                    };
                    if sink.is_none() {
                        *sink = Some(crate::store::warehouse::open(&target)?);
                    }
                    match sink.as_mut() {
                        Some(open) => open.write(&refs),
                        None => Err("the warehouse could not be opened".to_string()),
                    }
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            }
            _ => Err("not a warehouse destination".to_string()),
        };
        let now = now_ms();
        let record = RequestRecord {
            started_at_ms: started,
            latency_ms: Some(clock.elapsed().as_millis() as i64),
            item_count: items.len(),
            url: match &self.dest.settings {
                Settings::Warehouse(target) => Some(target.describe()),
                _ => None,
            },
            error: outcome.as_ref().err().map(|e| self.dest.redact(e)),
            response_body: outcome
                .as_ref()
                .ok()
                .map(|n| Packed::text(&format!("{n} new row(s)"))),
            ..RequestRecord::default()
        };
        let results = items
            .iter()
            .map(|item| match &outcome {
                Ok(_) => ItemResult::delivered(item, None),
                Err(e) => self.retry_or_dead(
                    item,
                    format!("warehouse write failed: {}", self.dest.redact(e)),
                    None,
                    now,
                ),
            })
            .collect();
        let change = self.breaker().record(outcome.is_ok(), now);
        self.report_breaker(change, now).await;
        self.record(Some(record), results, now).await;
    }
}
