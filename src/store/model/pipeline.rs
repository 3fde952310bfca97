//! Reading what the stateful stage stored.

use serde_json::{Map, Value};

/// A JSON object stored as text (traits, consent); an unreadable one reads as empty.
pub fn json_map(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}
