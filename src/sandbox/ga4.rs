//! GA4's Measurement Protocol: `/mp/collect` answers 204 whatever it thinks of a hit (as
//! Google's does), `/debug/mp/collect` answers its `validationMessages`. Both validate the same
//! way, so a test can see what the live endpoint silently dropped.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{json_response, parse_body, take_fault, Platform, SandboxState};

const RESERVED_PARAMS: [&str; 4] = ["firebase_conversion", "gclid", "dclid", "srsltid"];

/// One validation message, as the debug endpoint writes it.
fn message(path: String, description: &str, code: &str) -> Value {
    json!({"fieldPath": path, "description": description, "validationCode": code})
}

/// GA4's checks (sending-events "Limitations", validating-events): what the debug endpoint
/// would say of this hit, given its query and the time now.
pub fn validate(
    query: &HashMap<String, String>,
    body: &Value,
    raw_len: usize,
    now_micros: i64,
) -> Vec<Value> {
    let mut out = Vec::new();
    if !query
        .get("measurement_id")
        .is_some_and(|m| m.starts_with("G-") && m.len() > 2)
    {
        out.push(message(
            "measurement_id".into(),
            "A measurement_id (G-…) is required in the query.",
            "VALUE_REQUIRED",
        ));
    }
    if query.get("api_secret").is_none_or(|s| s.is_empty()) {
        out.push(message(
            "api_secret".into(),
            "An api_secret is required in the query.",
            "VALUE_REQUIRED",
        ));
    }
    if raw_len > 130_000 {
        out.push(message(
            "".into(),
            "The request body is over 130 kB.",
            "EXCEEDED_MAX_ENTITIES",
        ));
    }
    let Some(obj) = body.as_object() else {
        out.push(message(
            "".into(),
            "The body must be a JSON object.",
            "VALUE_INVALID",
        ));
        return out;
    };
    if obj
        .get("client_id")
        .or_else(|| obj.get("app_instance_id"))
        .and_then(Value::as_str)
        .is_none_or(|c| c.is_empty())
    {
        out.push(message(
            "client_id".into(),
            "client_id is required for web streams.",
            "VALUE_REQUIRED",
        ));
    }
    let window = 72 * 3600 * 1_000_000i64;
    let time_ok = |t: &Value| {
        t.as_i64()
            .is_some_and(|t| t <= now_micros + 15 * 60 * 1_000_000 && t >= now_micros - window)
    };
    if let Some(t) = obj.get("timestamp_micros") {
        if !time_ok(t) {
            out.push(message(
                "timestamp_micros".into(),
                "Must be within the last 72 hours.",
                "VALUE_OUT_OF_BOUNDS",
            ));
        }
    }
    if let Some(c) = obj.get("consent") {
        for key in ["ad_user_data", "ad_personalization"] {
            if c.get(key).is_some_and(|v| v != "GRANTED" && v != "DENIED") {
                out.push(message(
                    format!("consent.{key}"),
                    "Must be GRANTED or DENIED.",
                    "VALUE_INVALID",
                ));
            }
        }
    }
    let events = obj
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if events.is_empty() || events.len() > 25 {
        out.push(message(
            "events".into(),
            "A request carries 1 to 25 events.",
            "EXCEEDED_MAX_ENTITIES",
        ));
    }
    for (i, event) in events.iter().enumerate() {
        let name = event.get("name").and_then(Value::as_str).unwrap_or("");
        if let Some(problem) = crate::destinations::ga4::name_problem(name) {
            out.push(message(
                format!("events[{i}].name"),
                &problem,
                "NAME_INVALID",
            ));
        }
        if let Some(t) = event.get("timestamp_micros") {
            if !time_ok(t) {
                out.push(message(
                    format!("events[{i}].timestamp_micros"),
                    "Must be within the last 72 hours.",
                    "VALUE_OUT_OF_BOUNDS",
                ));
            }
        }
        let params = event.get("params").and_then(Value::as_object);
        if params.is_some_and(|p| p.len() > 25) {
            out.push(message(
                format!("events[{i}].params"),
                "At most 25 parameters.",
                "EXCEEDED_MAX_ENTITIES",
            ));
        }
        for (key, value) in params.into_iter().flatten() {
            let path = format!("events[{i}].params.{key}");
            if key.chars().count() > 40 || RESERVED_PARAMS.contains(&key.as_str()) {
                out.push(message(
                    path.clone(),
                    "The parameter name is reserved or over 40 characters.",
                    "NAME_INVALID",
                ));
            }
            if value.as_str().is_some_and(|s| s.chars().count() > 100) {
                out.push(message(
                    path.clone(),
                    "String values hold at most 100 characters.",
                    "VALUE_INVALID",
                ));
            }
            if key == "currency"
                && !value
                    .as_str()
                    .is_some_and(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
            {
                out.push(message(
                    path.clone(),
                    "currency must be an ISO 4217 code.",
                    "VALUE_INVALID",
                ));
            }
            if key == "items" {
                let items = value.as_array().cloned().unwrap_or_default();
                if items.len() > 200 {
                    out.push(message(
                        path.clone(),
                        "At most 200 items.",
                        "EXCEEDED_MAX_ENTITIES",
                    ));
                }
                for (j, item) in items.iter().enumerate() {
                    if item.get("item_id").is_none() && item.get("item_name").is_none() {
                        out.push(message(
                            format!("{path}[{j}]"),
                            "An item needs item_id or item_name.",
                            "ITEM_AT_LEAST_ONE_OF",
                        ));
                    }
                }
            }
        }
        // A purchase or refund with a value must say in which currency.
        if ["purchase", "refund"].contains(&name)
            && params.is_some_and(|p| p.contains_key("value") && !p.contains_key("currency"))
        {
            out.push(message(
                format!("events[{i}].params.currency"),
                "currency is required when value is set.",
                "VALUE_REQUIRED",
            ));
        }
    }
    out
}

async fn collect(
    state: Arc<SandboxState>,
    path: &str,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
    debug: bool,
) -> Response {
    let parsed = parse_body(&body).unwrap_or(Value::Null);
    if let Err(answered) = take_fault(&state, Platform::Ga4, path, &headers, &parsed).await {
        return answered;
    }
    let messages = validate(
        &query,
        &parsed,
        body.len(),
        chrono::Utc::now().timestamp_micros(),
    );
    let refusal = (!messages.is_empty()).then(|| {
        messages
            .iter()
            .map(|m| {
                format!(
                    "{}: {}",
                    m["fieldPath"].as_str().unwrap_or(""),
                    m["description"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    });
    if debug {
        state.record(Platform::Ga4, path, &headers, parsed, 200, refusal);
        json_response(200, json!({"validationMessages": messages}))
    } else {
        // The live endpoint says nothing either way; the sandbox records what it dropped.
        state.record(Platform::Ga4, path, &headers, parsed, 204, refusal);
        StatusCode::NO_CONTENT.into_response()
    }
}

pub async fn live(
    State(state): State<Arc<SandboxState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    collect(state, "/mp/collect", query, headers, body, false).await
}

pub async fn debug(
    State(state): State<Arc<SandboxState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    collect(state, "/debug/mp/collect", query, headers, body, true).await
}
