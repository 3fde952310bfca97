//! The sandbox's request checks, as pure functions (reference/destination-apis.md §1.10, §2.6,
//! §3.4, §4.6). Each names the field it rejects, as the real APIs roughly do.

use std::collections::HashSet;

use axum::http::HeaderMap;
use serde_json::{json, Value};

use crate::destinations::hashing::is_sha256_hex;
use crate::destinations::meta::ACTION_SOURCES;

pub struct MetaError {
    pub subcode: i64,
    pub title: String,
    pub message: String,
}

fn meta_error(title: &str, message: String) -> MetaError {
    MetaError {
        subcode: 2804001,
        title: title.into(),
        message,
    }
}

const META_HASHED: [&str; 10] = [
    "em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country",
];

/// Meta: returns how many events were received, or why the whole request is refused
/// ("If any event you send in a batch is invalid, we reject the entire batch").
pub fn meta(pixel: &str, body: &Value, now: i64) -> Result<usize, MetaError> {
    if pixel.is_empty() || !pixel.bytes().all(|b| b.is_ascii_digit()) {
        return Err(meta_error(
            "Invalid pixel",
            format!("pixel id `{pixel}` is not numeric"),
        ));
    }
    let data = body
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| meta_error("Missing data", "`data` must be an array of events".into()))?;
    if data.is_empty() || data.len() > 1000 {
        return Err(meta_error(
            "Invalid data",
            format!("`data` has {} events; 1 to 1000 are allowed", data.len()),
        ));
    }
    for (i, e) in data.iter().enumerate() {
        let at = |f: &str| format!("data[{i}].{f}");
        if e.get("event_name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(meta_error(
                "Missing event_name",
                format!("{} is required", at("event_name")),
            ));
        }
        let Some(time) = e.get("event_time").and_then(Value::as_i64) else {
            return Err(meta_error(
                "Invalid event_time",
                format!("{} must be an integer (Unix seconds)", at("event_time")),
            ));
        };
        if now - time > 7 * 86_400 {
            return Err(MetaError {
                subcode: 2804003,
                title: "Event Timestamp Too Old".into(),
                message: "The timestamp for this event is too far in the past. Events need to be sent from your server within 7 days of when they occurred.".into(),
            });
        }
        if time > now + 60 * 60 {
            return Err(meta_error(
                "Event Timestamp In Future",
                format!("{} is in the future", at("event_time")),
            ));
        }
        let source = e.get("action_source").and_then(Value::as_str).unwrap_or("");
        if !ACTION_SOURCES.contains(&source) {
            return Err(meta_error(
                "Invalid action_source",
                format!(
                    "{} `{source}` is not a valid action source",
                    at("action_source")
                ),
            ));
        }
        let Some(user) = e.get("user_data").and_then(Value::as_object) else {
            return Err(meta_error(
                "Missing user_data",
                format!("{} is required", at("user_data")),
            ));
        };
        if user.is_empty() {
            return Err(meta_error(
                "Missing customer information",
                format!("{} has no customer information parameter", at("user_data")),
            ));
        }
        if source == "website"
            && (e.get("event_source_url").is_none() || !user.contains_key("client_user_agent"))
        {
            return Err(meta_error("Missing website parameters", format!("data[{i}]: website events need event_source_url and user_data.client_user_agent")));
        }
        for key in META_HASHED {
            if let Some(v) = user.get(key) {
                let values: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                for value in values {
                    if !value.as_str().is_some_and(is_sha256_hex) {
                        return Err(meta_error(
                            "Invalid hashed parameter",
                            format!("user_data.{key} must be SHA-256 hashed (64 lowercase hex)"),
                        ));
                    }
                }
            }
        }
        for key in ["client_ip_address", "client_user_agent", "fbc", "fbp"] {
            if let Some(v) = user.get(key).and_then(Value::as_str) {
                if is_sha256_hex(v) {
                    return Err(meta_error(
                        "Do not hash",
                        format!("user_data.{key} must not be hashed"),
                    ));
                }
            }
        }
        for key in ["fbc", "fbp"] {
            if let Some(v) = user.get(key).and_then(Value::as_str) {
                let parts: Vec<&str> = v.splitn(4, '.').collect();
                let ok = parts.len() == 4
                    && parts[0] == "fb"
                    && parts[1].bytes().all(|b| b.is_ascii_digit())
                    && parts[2].bytes().all(|b| b.is_ascii_digit())
                    && !parts[3].is_empty();
                if !ok {
                    return Err(meta_error(
                        "Invalid fbc/fbp",
                        format!("user_data.{key} `{v}` must look like fb.1.<time>.<id>"),
                    ));
                }
            }
        }
        if e.get("event_name").and_then(Value::as_str) == Some("Purchase") {
            let custom = e.get("custom_data");
            let has = |k: &str| custom.and_then(|c| c.get(k)).is_some_and(|v| !v.is_null());
            if !has("currency") || !has("value") {
                return Err(meta_error(
                    "Missing purchase parameters",
                    format!(
                        "data[{i}]: Purchase requires custom_data.currency and custom_data.value"
                    ),
                ));
            }
        }
    }
    Ok(data.len())
}

fn google_failure(index: usize, code: &str, message: &str) -> Value {
    json!({
        "errorCode": {"conversionUploadError": code},
        "message": message,
        "location": {"fieldPathElements": [{"fieldName": "conversions", "index": index}]}
    })
}

fn is_conversion_time(text: &str) -> bool {
    chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%:z").is_ok()
        && text.len() == "2026-01-15 18:30:00+00:00".len()
}

/// Google: a response with per-row results and a partialFailureError, or an RPC-level error.
pub fn google(
    call: &str,
    body: &Value,
    orders: &mut HashSet<String>,
    fail_first_row: Option<&str>,
) -> Result<Value, String> {
    let (customer, method) = call.split_once(':').ok_or("unknown method")?;
    if method != "uploadClickConversions"
        || customer.is_empty()
        || !customer.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("unknown method `{call}`"));
    }
    if body.get("partialFailure") != Some(&Value::Bool(true)) {
        return Err("PARTIAL_FAILURE_MODE_REQUIRED: partialFailure must be true".into());
    }
    let validate_only = body.get("validateOnly") == Some(&Value::Bool(true));
    let rows = body
        .get("conversions")
        .and_then(Value::as_array)
        .ok_or("conversions is required")?;
    if rows.is_empty() || rows.len() > 2000 {
        return Err(format!(
            "TOO_MANY_CONVERSIONS_IN_REQUEST: {} conversions; 1 to 2000 allowed",
            rows.len()
        ));
    }
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let fail = |code: &str, message: &str| Some(google_failure(i, code, message));
        let clicks = ["gclid", "gbraid", "wbraid"]
            .iter()
            .filter(|k| row.get(**k).is_some())
            .count();
        let identifiers = row.get("userIdentifiers").and_then(Value::as_array);
        let error = if let (Some(code), 0) = (fail_first_row, i) {
            fail(code, "Sandbox partial failure of the first row.")
        } else if row.get("gbraid").is_some() && row.get("wbraid").is_some() {
            fail("GBRAID_WBRAID_BOTH_SET", "Both gbraid and wbraid are set.")
        } else if clicks == 0 && identifiers.is_none_or(|ids| ids.is_empty()) {
            fail(
                "INVALID_USER_IDENTIFIER",
                "Set a click id or at least one user identifier.",
            )
        } else if !row
            .get("conversionDateTime")
            .and_then(Value::as_str)
            .is_some_and(is_conversion_time)
        {
            fail(
                "INVALID_CONVERSION_DATE_TIME",
                "conversionDateTime must be yyyy-mm-dd hh:mm:ss+|-hh:mm.",
            )
        } else if !row
            .get("conversionAction")
            .and_then(Value::as_str)
            .is_some_and(|a| {
                let parts: Vec<&str> = a.split('/').collect();
                parts.len() == 4
                    && parts[0] == "customers"
                    && parts[2] == "conversionActions"
                    && parts[1].bytes().all(|b| b.is_ascii_digit())
                    && parts[3].bytes().all(|b| b.is_ascii_digit())
                    && !parts[3].is_empty()
            })
        {
            fail(
                "NO_CONVERSION_ACTION_FOUND",
                "conversionAction must be customers/{cid}/conversionActions/{id}.",
            )
        } else if identifiers.is_some_and(|ids| {
            ids.len() > 5
                || ids.iter().any(|id| {
                    let Some(obj) = id.as_object() else {
                        return true;
                    };
                    let keys: Vec<&String> = obj
                        .keys()
                        .filter(|k| k.as_str() != "userIdentifierSource")
                        .collect();
                    keys.len() != 1
                        || !["hashedEmail", "hashedPhoneNumber"].contains(&keys[0].as_str())
                        || !obj[keys[0]].as_str().is_some_and(is_sha256_hex)
                })
        }) {
            fail(
                "INVALID_USER_IDENTIFIER",
                "At most 5 identifiers, one SHA-256 key each.",
            )
        } else if row.pointer("/consent/adPersonalization").is_some() {
            fail(
                "INVALID_CONSENT",
                "adPersonalization cannot be set on click conversions.",
            )
        } else if let Some(order) = row.get("orderId").and_then(Value::as_str) {
            if orders.contains(order) {
                fail(
                    "ORDER_ID_ALREADY_IN_USE",
                    "The order id was already used for this conversion action.",
                )
            } else {
                if !validate_only {
                    orders.insert(order.to_string());
                }
                None
            }
        } else {
            None
        };
        match error {
            Some(e) => {
                errors.push(e);
                results.push(json!({}));
            }
            None => results.push(json!({
                "gclid": row.get("gclid"),
                "conversionAction": row.get("conversionAction"),
                "conversionDateTime": row.get("conversionDateTime"),
            })),
        }
    }
    let mut reply = serde_json::Map::new();
    if !errors.is_empty() {
        reply.insert("partialFailureError".into(), json!({
            "code": 3,
            "message": errors[0]["message"],
            "details": [{"@type": "type.googleapis.com/google.ads.googleads.v21.errors.GoogleAdsFailure", "errors": errors, "requestId": "sandbox"}]
        }));
    }
    if !validate_only {
        reply.insert("results".into(), Value::Array(results));
        reply.insert("jobId".into(), json!("2150000123"));
    }
    Ok(Value::Object(reply))
}

pub fn klaviyo_revision(value: &str) -> bool {
    value.len() >= 10 && chrono::NaiveDate::parse_from_str(&value[..10], "%Y-%m-%d").is_ok()
}

fn e164(value: &str) -> bool {
    value.len() >= 8
        && value.len() <= 16
        && value.starts_with('+')
        && value[1..].bytes().all(|b| b.is_ascii_digit())
        && !value[1..].starts_with('0')
}

pub type KlaviyoError = (String, String);

pub fn check_profile_attributes(attributes: &Value, pointer: &str) -> Result<(), KlaviyoError> {
    let Some(a) = attributes.as_object() else {
        return Err(("profile attributes are required".into(), pointer.into()));
    };
    if ![
        "email",
        "phone_number",
        "external_id",
        "anonymous_id",
        "_kx",
    ]
    .iter()
    .any(|k| a.get(*k).is_some_and(|v| v.is_string()))
    {
        return Err((
            "a profile needs an email, phone_number, external_id or anonymous_id".into(),
            pointer.into(),
        ));
    }
    if let Some(phone) = a.get("phone_number") {
        if !phone.as_str().is_some_and(e164) {
            return Err((
                "Invalid phone number format (Example of a valid format: +12345678901)".into(),
                format!("{pointer}/phone_number"),
            ));
        }
    }
    if let Some((key, _)) = a.iter().find(|(_, v)| v.is_null()) {
        return Err((
            format!("`{key}` is null, which clears it in Klaviyo; omit unknown fields"),
            format!("{pointer}/{key}"),
        ));
    }
    Ok(())
}

/// An event's own attributes (properties, metric, time), wherever the event sits.
pub fn check_event_attributes(attributes: &Value, pointer: &str) -> Result<(), KlaviyoError> {
    if !attributes.get("properties").is_some_and(Value::is_object) {
        return Err((
            "properties must be an object".into(),
            format!("{pointer}/properties"),
        ));
    }
    let metric = attributes.pointer("/metric/data");
    let name_ok = metric
        .and_then(|m| m.pointer("/attributes/name"))
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty() && n.chars().count() < 128);
    if metric.and_then(|m| m.get("type")).and_then(Value::as_str) != Some("metric") || !name_ok {
        return Err(("metric.data must be {type: metric, attributes: {name}} with a name under 128 characters".into(), format!("{pointer}/metric")));
    }
    if let Some(time) = attributes.get("time") {
        let t = time
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let ok = t.is_some_and(|t| {
            let year = chrono::Datelike::year(&t);
            year >= 2000 && t.timestamp() <= chrono::Utc::now().timestamp() + 365 * 86_400
        });
        if !ok {
            return Err((
                "time must be ISO 8601, after 2000 and at most a year ahead".into(),
                format!("{pointer}/time"),
            ));
        }
    }
    Ok(())
}

/// Emulate Klaviyo's dedup: the same unique_id for a profile and metric is recorded once.
pub fn remember_unique(attributes: &Value, profile: Option<&Value>, seen: &mut HashSet<String>) {
    if let Some(unique) = attributes.get("unique_id").and_then(Value::as_str) {
        let key = format!(
            "{}|{}|{unique}",
            profile.map(|p| p.to_string()).unwrap_or_default(),
            attributes
                .pointer("/metric/data")
                .map(|m| m.to_string())
                .unwrap_or_default()
        );
        seen.insert(key);
    }
}

pub fn klaviyo_event(body: &Value, seen: &mut HashSet<String>) -> Result<(), KlaviyoError> {
    let data = body
        .get("data")
        .ok_or(("data is required".to_string(), "/data".to_string()))?;
    if data.get("type").and_then(Value::as_str) != Some("event") {
        return Err(("data.type must be \"event\"".into(), "/data/type".into()));
    }
    let attributes = data.get("attributes").ok_or((
        "attributes are required".to_string(),
        "/data/attributes".to_string(),
    ))?;
    check_event_attributes(attributes, "/data/attributes")?;
    let profile = attributes.pointer("/profile/data");
    if profile.and_then(|p| p.get("type")).and_then(Value::as_str) != Some("profile") {
        return Err((
            "profile.data.type must be \"profile\"".into(),
            "/data/attributes/profile/data/type".into(),
        ));
    }
    check_profile_attributes(
        profile
            .and_then(|p| p.get("attributes"))
            .unwrap_or(&Value::Null),
        "/data/attributes/profile/data/attributes",
    )?;
    remember_unique(attributes, profile, seen);
    Ok(())
}

pub fn klaviyo_profile(body: &Value) -> Result<(), KlaviyoError> {
    let data = body
        .get("data")
        .ok_or(("data is required".to_string(), "/data".to_string()))?;
    if data.get("type").and_then(Value::as_str) != Some("profile") {
        return Err(("data.type must be \"profile\"".into(), "/data/type".into()));
    }
    check_profile_attributes(
        data.get("attributes").unwrap_or(&Value::Null),
        "/data/attributes",
    )
}

pub fn tiktok(body: &Value) -> Result<(), String> {
    let source = body
        .get("event_source")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !["web", "app", "offline", "crm"].contains(&source) {
        return Err(format!(
            "event_source: `{source}` is not one of web, app, offline, crm"
        ));
    }
    if body
        .get("event_source_id")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("event_source_id: Missing data for required field.".into());
    }
    let data = body
        .get("data")
        .and_then(Value::as_array)
        .ok_or("data: Missing data for required field.")?;
    if data.is_empty() || data.len() > 1000 {
        return Err(format!(
            "data: {} events; 1 to 1000 are allowed",
            data.len()
        ));
    }
    for (i, e) in data.iter().enumerate() {
        if e.get("event")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(format!("Batch.{i}.event: Missing data for required field."));
        }
        if !e
            .get("event_time")
            .is_some_and(|t| t.is_i64() || t.is_u64())
        {
            return Err(format!("Batch.{i}.event_time: Not a valid integer."));
        }
        if e.get("event_id").is_some_and(|id| !id.is_string()) {
            return Err(format!("Batch.{i}.event_id: Not a valid string."));
        }
        let user = e.get("user").and_then(Value::as_object);
        for key in ["email", "phone", "external_id"] {
            if let Some(v) = user.and_then(|u| u.get(key)) {
                if !v.as_str().is_some_and(is_sha256_hex) {
                    return Err(format!("Batch.{i}.user.{key}: must be SHA-256 hashed."));
                }
            }
        }
        for key in ["ip", "user_agent"] {
            if user
                .and_then(|u| u.get(key))
                .and_then(Value::as_str)
                .is_some_and(is_sha256_hex)
            {
                return Err(format!("Batch.{i}.user.{key}: must not be hashed."));
            }
        }
        let props = e.get("properties");
        if let Some(contents) = props
            .and_then(|p| p.get("contents"))
            .and_then(Value::as_array)
        {
            for (j, c) in contents.iter().enumerate() {
                if c.get("content_id").is_some_and(|id| !id.is_string()) {
                    return Err(format!(
                        "Batch.{i}.properties.contents.{j}.content_id: Not a valid string"
                    ));
                }
            }
        }
        if props
            .and_then(|p| p.get("value"))
            .is_some_and(|v| !v.is_number())
        {
            return Err(format!("Batch.{i}.properties.value: Not a valid number."));
        }
        if let Some(c) = props.and_then(|p| p.get("currency")) {
            if !c
                .as_str()
                .is_some_and(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return Err(format!(
                    "Batch.{i}.properties.currency: Not a valid currency."
                ));
            }
        }
    }
    Ok(())
}

/// Verify Standard Webhooks headers against `key`, with ±5 minutes of tolerance.
pub fn standard_webhook(
    key: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let id = get("webhook-id").ok_or("missing webhook-id")?;
    let timestamp = get("webhook-timestamp").ok_or("missing webhook-timestamp")?;
    let signatures = get("webhook-signature").ok_or("missing webhook-signature")?;
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| "webhook-timestamp is not an integer")?;
    if (now - ts).abs() > 300 {
        return Err("webhook-timestamp outside the 5-minute tolerance".into());
    }
    let expected = crate::destinations::webhook::sign(key, id, ts, body);
    if signatures.split(' ').any(|s| s == expected) {
        Ok(())
    } else {
        Err("no webhook-signature matches".into())
    }
}

/// A TrackLayer webhook body: one `tracklayer.event` / `tracklayer.profile` envelope, or a
/// `tracklayer.batch` of them. Returns how many items it carries.
pub fn webhook_body(body: &Value) -> Result<usize, String> {
    if body.get("type").and_then(Value::as_str) == Some("tracklayer.alert") {
        return alert_body(body).map(|()| 1);
    }
    if body.get("type").and_then(Value::as_str) == Some("tracklayer.forget") {
        return forget_body(body).map(|()| 1);
    }
    let item = |v: &Value, at: &str| -> Result<(), String> {
        match v.get("type").and_then(Value::as_str) {
            Some("tracklayer.event") if v.get("event").is_some_and(Value::is_object) => Ok(()),
            Some("tracklayer.profile") if v.get("profile").is_some_and(Value::is_object) => Ok(()),
            other => Err(format!(
                "{at}: expected a tracklayer.event or tracklayer.profile envelope, found type {other:?}"
            )),
        }
    };
    match body.get("type").and_then(Value::as_str) {
        Some("tracklayer.batch") => {
            let items = body
                .get("items")
                .and_then(Value::as_array)
                .ok_or("tracklayer.batch without an items array")?;
            if items.is_empty() {
                return Err("tracklayer.batch with no items".into());
            }
            for (i, v) in items.iter().enumerate() {
                item(v, &format!("items[{i}]"))?;
            }
            Ok(items.len())
        }
        _ => item(body, "body").map(|()| 1),
    }
}

/// A forget forwarded to internal systems: its request, and identifiers as SHA-256 hex only.
pub fn forget_body(body: &Value) -> Result<(), String> {
    for key in ["request_id", "environment", "requested_at"] {
        if !body.get(key).is_some_and(Value::is_string) {
            return Err(format!("tracklayer.forget: {key} must be a string"));
        }
    }
    let ids = body
        .get("identifiers")
        .and_then(Value::as_array)
        .filter(|ids| !ids.is_empty())
        .ok_or("tracklayer.forget: identifiers must be a non-empty array")?;
    for (i, id) in ids.iter().enumerate() {
        let hash = id.get("sha256").and_then(Value::as_str).unwrap_or_default();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("identifiers[{i}].sha256 must be 64 hex digits"));
        }
        if !id.get("kind").is_some_and(Value::is_string) {
            return Err(format!("identifiers[{i}].kind must be a string"));
        }
    }
    Ok(())
}

/// A TrackLayer alert notification: the alert with its rule, subject, state and evidence.
pub fn alert_body(body: &Value) -> Result<(), String> {
    let alert = body
        .get("alert")
        .and_then(Value::as_object)
        .ok_or("tracklayer.alert without an alert object")?;
    for key in ["rule", "subject", "state", "summary"] {
        if !alert.get(key).is_some_and(Value::is_string) {
            return Err(format!("alert.{key} must be a string"));
        }
    }
    if !matches!(alert["state"].as_str(), Some("firing" | "resolved")) {
        return Err("alert.state must be firing or resolved".into());
    }
    if !alert.get("started_at_ms").is_some_and(Value::is_i64) {
        return Err("alert.started_at_ms must be a number".into());
    }
    if !alert.get("evidence").is_some_and(Value::is_object) {
        return Err("alert.evidence must be an object".into());
    }
    Ok(())
}

/// A Slack incoming webhook accepts `{"text": "…"}` (blocks are optional); anything else is
/// refused with `400 invalid_payload` / `no_text`, as Slack does.
pub fn slack_body(body: &Value) -> Result<(), String> {
    match body.get("text") {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(()),
        Some(_) => Err("invalid_payload: text must be a non-empty string".into()),
        None => Err("no_text".into()),
    }
}
