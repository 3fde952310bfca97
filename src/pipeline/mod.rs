//! The pipeline's pure stages:
//! `raw message → validate → map → transform → identity → dedup → consent → route`.
//!
//! Nothing here does IO. The stateless part (map + transform) runs on the request's task as a
//! [`Draft`]; the stateful part (identity, dedup, consent with profile fallback) needs stored
//! state, so the store's single writer calls [`identity::resolve`], [`dedup::classify`] and
//! [`route`] inside the same transaction that stores the raw message.

pub mod canonical;
pub mod consent;
pub mod currency;
pub mod dedup;
pub mod diff;
pub mod identifier;
pub mod identity;
pub mod mapping;
pub mod mapping_draft;
pub mod phone;
pub mod privacy;
pub mod refund;
mod route;
pub mod transform;

use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

pub use canonical::{CanonicalEvent, Provenance, RefundedOrder};
pub use mapping::{MappingRow, MappingTable, Suggestion};
pub use route::{route, RouteDecision, RouteTarget, RouteVerdict};

use crate::segment::{MessageType, ValidMessage};

/// What the stateless stages made of one valid message.
#[derive(Debug, Clone, PartialEq)]
pub enum Draft {
    /// A track call found in the mapping table: a canonical event missing only identity
    /// enrichment (the writer adds it).
    Mapped(Box<CanonicalEvent>, Box<MappingRow>),
    /// A track call not in the table: kept, with why and what it probably meant.
    Unmapped {
        segment_event: String,
        mapping_version: u32,
        reason: String,
        suggestion: Option<Suggestion>,
    },
    /// identify, alias, page, screen, group: they update identity and never become conversions.
    IdentityOnly,
}

impl Draft {
    pub fn outcome(&self) -> &'static str {
        match self {
            Draft::Mapped(..) => "mapped",
            Draft::Unmapped { .. } => "unmapped",
            Draft::IdentityOnly => "identify",
        }
    }
}

/// Map and transform one message with the current mapping table.
pub fn draft(
    message: &ValidMessage,
    environment: &str,
    table: &MappingTable,
    received_at_ms: i64,
) -> Draft {
    if message.message_type != MessageType::Track {
        return Draft::IdentityOnly;
    }
    let Some(name) = message.event.as_deref() else {
        return Draft::IdentityOnly;
    };
    if name == identity::CONSENT_EVENT {
        return Draft::IdentityOnly;
    }
    let Some(row) = table.find(name) else {
        let suggestion = table.suggest(name);
        let reason = match &suggestion {
            Some(s) => format!(
                "`{name}` is not in mapping table v{}; did you mean `{}`? ({}). Add the name exactly as delivered or fix it at the source",
                table.version, s.segment, s.why
            ),
            None => format!(
                "`{name}` is not in mapping table v{}; add it to [[mapping.events]] exactly as delivered (names are case-sensitive)",
                table.version
            ),
        };
        return Draft::Unmapped {
            segment_event: name.to_string(),
            mapping_version: table.version,
            reason,
            suggestion,
        };
    };
    let t = transform::transform(message, row, table, received_at_ms);
    let order_id = t.properties.get("order_id").and_then(Value::as_str);
    let (event_id, event_id_basis, dedup_key) = dedup::event_id(
        environment,
        &row.canonical,
        row.dedup_key,
        order_id,
        &message.message_id,
    );
    let event_time = chrono::DateTime::from_timestamp_millis(t.event_time_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let event = CanonicalEvent {
        event_id,
        event_id_basis,
        dedup_key,
        name: row.canonical.clone(),
        segment_event: name.to_string(),
        mapping_version: table.version,
        message_id: message.message_id.clone(),
        environment: environment.to_string(),
        event_time,
        event_time_ms: t.event_time_ms,
        properties: t.properties,
        user: t.user,
        context: t.context,
        provenance: t.provenance,
        missing_required: t.missing_required,
        problems: t.problems,
        skip_destinations: test_skips(&message.body),
        test_send: is_test_send(&message.body),
        consent: consent::event_consent(&message.body).map(consent::categories),
        refunds: None,
    };
    Draft::Mapped(Box::new(event), Box::new(row.clone()))
}

/// Whether a message comes from a controlled test send (`context.tracklayer.test = true`).
pub fn is_test_send(body: &Map<String, Value>) -> bool {
    body.get("context")
        .and_then(|c| c.get("tracklayer"))
        .and_then(|tl| tl.get("test"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// Destinations a controlled test send (`context.tracklayer: {test: true, skip: [...]}`) asks
/// to leave out, because they have no test mode and would receive a live event.
pub fn test_skips(body: &Map<String, Value>) -> Vec<String> {
    if !is_test_send(body) {
        return Vec::new();
    }
    let Some(tl) = body.get("context").and_then(|c| c.get("tracklayer")) else {
        return Vec::new();
    };
    tl.get("skip")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The mapping table in force, swapped atomically on hot reload.
#[derive(Clone)]
pub struct SharedMapping(Arc<RwLock<Arc<MappingTable>>>);

impl SharedMapping {
    pub fn new(table: MappingTable) -> SharedMapping {
        SharedMapping(Arc::new(RwLock::new(Arc::new(table))))
    }

    pub fn current(&self) -> Arc<MappingTable> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swap in a reloaded table. What destinations capture comes from the destinations, which
    /// a mapping reload does not change, so the running table's list carries over.
    pub fn replace(&self, mut table: MappingTable) {
        if table.capture.is_empty() {
            table.capture = self.current().capture.clone();
        }
        match self.0.write() {
            Ok(mut guard) => *guard = Arc::new(table),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(table),
        }
    }
}
