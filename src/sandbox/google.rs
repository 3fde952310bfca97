//! Google's two ways in: the Data Manager API's `IngestEvents` (fast-fail, a
//! google.rpc.BadRequest naming each bad field) and the legacy Ads API upload (per-row
//! partial failure, or CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE for a token that is not
//! allowlisted). Conversions are remembered by conversion action and transactionId, so an
//! adjustment is told from a new conversion as Google tells them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{checks, json_response, lock, parse_body, take_fault, Fault, Platform, SandboxState};
use crate::destinations::hashing::is_sha256_hex;

/// What the sandbox holds of each conversion it recorded: its value, and each adjustment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordedConversion {
    pub value: Option<f64>,
    pub currency: Option<String>,
    /// Values it was restated to, in order.
    pub restatements: Vec<f64>,
}

/// Recorded conversions by (conversion action, transactionId).
pub type Conversions = HashMap<(String, String), RecordedConversion>;

fn bearer(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > "Bearer ".len())
}

fn unauthenticated() -> Value {
    json!({"error": {"code": 401, "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.", "status": "UNAUTHENTICATED"}})
}

/// `POST /{version}/customers/{customer}:uploadClickConversions`, the legacy path.
pub async fn ads_api(
    State(state): State<Arc<SandboxState>>,
    Path((version, call)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/{version}/customers/{call}");
    let parsed = parse_body(&body).unwrap_or(Value::Null);
    let fault = match take_fault(&state, Platform::Google, &path, &headers, &parsed).await {
        Ok(fault) => fault,
        Err(answered) => return answered,
    };
    let authorized = headers.get("developer-token").is_some() && bearer(&headers);
    let (status, reply, refusal) = if fault == Some(Fault::BadToken) || !authorized {
        (401, unauthenticated(), Some("unauthenticated".to_string()))
    } else if fault == Some(Fault::NotAllowlisted) {
        (
            403,
            json!({"error": {"code": 403, "message": "The caller does not have permission", "status": "PERMISSION_DENIED",
                "details": [{"@type": format!("type.googleapis.com/google.ads.googleads.{version}.errors.GoogleAdsFailure"),
                    "errors": [{"errorCode": {"notAllowlistedError": "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE"},
                        "message": "Customer is not allowlisted for accessing this feature."}],
                    "requestId": "sandbox"}]}}),
            Some("CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE".to_string()),
        )
    } else {
        let mut orders = lock(&state.google_orders);
        let fail_first = match &fault {
            Some(Fault::PartialFailure { code }) => Some(code.as_str()),
            _ => None,
        };
        match checks::google(&call, &parsed, &mut orders, fail_first) {
            Ok(reply) => (200, reply, None),
            Err(message) => (
                400,
                json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}),
                Some(message),
            ),
        }
    };
    state.record(Platform::Google, &path, &headers, parsed, status, refusal);
    json_response(status, reply)
}

/// `POST /v1/events:ingest`.
pub async fn ingest(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = "/v1/events:ingest";
    let parsed = match parse_body(&body) {
        Ok(v) => v,
        Err(e) => {
            let reply = bad_request(vec![("".into(), e.clone())]);
            state.record(Platform::Google, path, &headers, Value::Null, 400, Some(e));
            return json_response(400, reply);
        }
    };
    let fault = match take_fault(&state, Platform::Google, path, &headers, &parsed).await {
        Ok(fault) => fault,
        Err(answered) => return answered,
    };
    let refused = state.google_token_refused(&headers);
    if fault == Some(Fault::BadToken) || !bearer(&headers) || refused.is_some() {
        state.record(
            Platform::Google,
            path,
            &headers,
            parsed,
            401,
            Some(refused.unwrap_or("unauthenticated").into()),
        );
        return json_response(401, unauthenticated());
    }
    let now = chrono::Utc::now().timestamp();
    let verdict = {
        let mut conversions = lock(&state.google_conversions);
        ingest_events(&parsed, now, &mut conversions)
    };
    match verdict {
        Ok(()) => {
            // Validated only: nothing was ingested, so there is no request to ask about.
            let reply = if parsed.get("validateOnly") == Some(&Value::Bool(true)) {
                json!({})
            } else {
                json!({"requestId": format!("sandbox-{}", now)})
            };
            state.record(Platform::Google, path, &headers, parsed, 200, None);
            json_response(200, reply)
        }
        Err(violations) => {
            let refusal = violations
                .iter()
                .map(|(f, d)| format!("{f}: {d}"))
                .collect::<Vec<_>>()
                .join("; ");
            state.record(Platform::Google, path, &headers, parsed, 400, Some(refusal));
            json_response(400, bad_request(violations))
        }
    }
}

fn bad_request(violations: Vec<(String, String)>) -> Value {
    let fields: Vec<Value> = violations
        .iter()
        .map(|(field, description)| json!({"field": field, "description": description}))
        .collect();
    json!({"error": {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT",
    "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "INVALID_ARGUMENT", "domain": "datamanager.googleapis.com"},
        {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": fields}
    ]}})
}

const EVENT_KEYS: [&str; 14] = [
    "destinationReferences",
    "transactionId",
    "eventTimestamp",
    "lastUpdatedTimestamp",
    "userData",
    "consent",
    "adIdentifiers",
    "currency",
    "conversionValue",
    "eventSource",
    "eventDeviceInfo",
    "cartData",
    "customVariables",
    "userProperties",
];
const EVENT_SOURCES: [&str; 5] = ["WEB", "APP", "IN_STORE", "PHONE", "OTHER"];
const CONSENT: [&str; 2] = ["CONSENT_GRANTED", "CONSENT_DENIED"];

/// A gclid is URL-safe base64: anything else cannot be decoded by Google.
fn decodable_click_id(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn account_ok(account: Option<&Value>) -> bool {
    account.is_some_and(|a| {
        a.get("accountType").and_then(Value::as_str) == Some("GOOGLE_ADS")
            && a.get("accountId")
                .and_then(Value::as_str)
                .is_some_and(|id| id.len() == 10 && id.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Validate an `IngestEventsRequest` as the Data Manager API does (fast-fail: every problem is
/// reported and nothing is recorded when there is one); on success, record its conversions.
pub fn ingest_events(
    body: &Value,
    now: i64,
    conversions: &mut Conversions,
) -> Result<(), Vec<(String, String)>> {
    let mut problems: Vec<(String, String)> = Vec::new();
    let mut bad = |field: String, description: &str| problems.push((field, description.into()));
    let destinations = body
        .get("destinations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if destinations.is_empty() {
        bad(
            "destinations".into(),
            "At least one destination is required.",
        );
    }
    let mut references: HashMap<String, String> = HashMap::new();
    for (i, d) in destinations.iter().enumerate() {
        if !account_ok(d.get("operatingAccount")) {
            bad(
                format!("destinations[{i}].operating_account"),
                "Must be {accountType: GOOGLE_ADS, accountId: 10 digits}.",
            );
        }
        if d.get("loginAccount").is_some() && !account_ok(d.get("loginAccount")) {
            bad(
                format!("destinations[{i}].login_account"),
                "Must be {accountType: GOOGLE_ADS, accountId: 10 digits}.",
            );
        }
        let product = d
            .get("productDestinationId")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if product.is_none() {
            bad(
                format!("destinations[{i}].product_destination_id"),
                "The conversion action id is required.",
            );
        }
        let reference = d.get("reference").and_then(Value::as_str);
        if destinations.len() > 1 && reference.is_none() {
            bad(
                format!("destinations[{i}].reference"),
                "Required when the request has several destinations.",
            );
        }
        if let (Some(r), Some(p)) = (reference, product) {
            if references.insert(r.to_string(), p.to_string()).is_some() {
                bad(
                    format!("destinations[{i}].reference"),
                    "References must be unique.",
                );
            }
        }
    }
    let events = body
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if events.is_empty() || events.len() > 2000 {
        bad(
            "events".into(),
            "Between 1 and 2000 events are allowed in a request.",
        );
    }
    let encoding = body.get("encoding").and_then(Value::as_str);
    if encoding.is_some_and(|e| e != "HEX" && e != "BASE64") {
        bad("encoding".into(), "Must be HEX or BASE64.");
    }
    let mut accepted: Vec<((String, String), Map<String, Value>)> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let f = |name: &str| format!("events[{i}].{name}");
        let Some(e) = event.as_object() else {
            bad(f(""), "An event must be an object.");
            continue;
        };
        if let Some(key) = e.keys().find(|k| !EVENT_KEYS.contains(&k.as_str())) {
            bad(f(key), "Unknown field.");
        }
        let refs: Vec<&str> = e
            .get("destinationReferences")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if destinations.len() > 1 && refs.is_empty() {
            bad(
                f("destination_references"),
                "Required when the request has several destinations.",
            );
        }
        if refs.iter().any(|r| !references.contains_key(*r)) {
            bad(
                f("destination_references"),
                "Names no destination of the request.",
            );
        }
        let time = e
            .get("eventTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        match time {
            None => bad(f("event_timestamp"), "Required, in RFC 3339."),
            Some(t) if t.timestamp() > now + 3600 => {
                bad(f("event_timestamp"), "The event is in the future.")
            }
            Some(t) if t.timestamp() < now - 90 * 86_400 => bad(
                f("event_timestamp"),
                "The event is older than the 90-day import window.",
            ),
            Some(_) => {}
        }
        if let Some(t) = e.get("lastUpdatedTimestamp") {
            if t.as_str()
                .is_none_or(|t| chrono::DateTime::parse_from_rfc3339(t).is_err())
            {
                bad(f("last_updated_timestamp"), "Must be RFC 3339.");
            }
        }
        let transaction = e
            .get("transactionId")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && t.len() <= 256);
        if transaction.is_none() {
            bad(f("transaction_id"), "Required for offline conversions.");
        }
        if !e
            .get("eventSource")
            .and_then(Value::as_str)
            .is_some_and(|s| EVENT_SOURCES.contains(&s))
        {
            bad(
                f("event_source"),
                "Required for offline conversions: WEB, APP, IN_STORE, PHONE or OTHER.",
            );
        }
        let ad = e.get("adIdentifiers").and_then(Value::as_object);
        let clicks: Vec<&str> = ["gclid", "gbraid", "wbraid"]
            .into_iter()
            .filter(|k| ad.is_some_and(|a| a.contains_key(*k)))
            .collect();
        for key in &clicks {
            let value = ad.and_then(|a| a.get(*key)).and_then(Value::as_str);
            if !value.is_some_and(decodable_click_id) {
                bad(
                    f(&format!("ad_identifiers.{key}")),
                    "The click identifier could not be decoded.",
                );
            }
        }
        let identifiers = e
            .get("userData")
            .and_then(|u| u.get("userIdentifiers"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if e.get("userData").is_some() && encoding.is_none() {
            bad("encoding".into(), "Required when events carry user data.");
        }
        if identifiers.len() > 10 {
            bad(f("user_data.user_identifiers"), "At most 10 identifiers.");
        }
        for (j, id) in identifiers.iter().enumerate() {
            let path = f(&format!("user_data.user_identifiers[{j}]"));
            let Some(obj) = id.as_object().filter(|o| o.len() == 1) else {
                bad(
                    path,
                    "Exactly one of email_address, phone_number or address.",
                );
                continue;
            };
            let hashed = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(is_sha256_hex);
            let ok = match obj.keys().next().map(String::as_str) {
                Some("emailAddress") | Some("phoneNumber") => hashed(obj.values().next()),
                Some("address") => {
                    let a = &obj["address"];
                    hashed(a.get("givenName"))
                        && hashed(a.get("familyName"))
                        && a.get("regionCode")
                            .and_then(Value::as_str)
                            .is_some_and(|r| {
                                r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase())
                            })
                        && a.get("postalCode")
                            .and_then(Value::as_str)
                            .is_some_and(|p| !p.is_empty())
                }
                _ => false,
            };
            if !ok {
                bad(
                    path,
                    "Identifiers are SHA-256 of the normalised value in the request's encoding; an address needs hashed names, regionCode and postalCode.",
                );
            }
        }
        if clicks.is_empty() && identifiers.is_empty() {
            bad(
                f("ad_identifiers"),
                "An offline conversion needs a gclid, gbraid or wbraid, or user identifiers.",
            );
        }
        if let Some(c) = e.get("consent") {
            for key in ["adUserData", "adPersonalization"] {
                if c.get(key)
                    .is_some_and(|v| !v.as_str().is_some_and(|s| CONSENT.contains(&s)))
                {
                    bad(
                        f(&format!("consent.{key}")),
                        "Must be CONSENT_GRANTED or CONSENT_DENIED.",
                    );
                }
            }
        }
        if let Some(v) = e.get("conversionValue") {
            if !v.as_f64().is_some_and(|v| v >= 0.0 && v.is_finite()) {
                bad(f("conversion_value"), "Must be a number, 0 or more.");
            }
        }
        if let Some(c) = e.get("currency") {
            if !c
                .as_str()
                .is_some_and(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
            {
                bad(f("currency"), "Must be an ISO 4217 code.");
            }
        }
        let product = match (refs.first(), references.len()) {
            (Some(r), _) => references.get(*r).cloned(),
            (None, _) => destinations
                .first()
                .and_then(|d| d.get("productDestinationId"))
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        if let (Some(p), Some(t)) = (product, transaction) {
            accepted.push(((p, t.to_string()), e.clone()));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if body.get("validateOnly") == Some(&Value::Bool(true)) {
        return Ok(());
    }
    for (key, event) in accepted {
        let value = event.get("conversionValue").and_then(Value::as_f64);
        let currency = event
            .get("currency")
            .and_then(Value::as_str)
            .map(str::to_string);
        match conversions.get_mut(&key) {
            // The same transactionId for the same conversion action: an adjustment.
            Some(recorded) => {
                if let Some(v) = value {
                    recorded.restatements.push(v);
                }
            }
            None => {
                conversions.insert(
                    key,
                    RecordedConversion {
                        value,
                        currency,
                        restatements: Vec::new(),
                    },
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_request_passes_and_a_bad_gclid_is_named() {
        let mut body: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/destinations/google_data_manager_purchase.json"
        ))
        .unwrap();
        let when = chrono::DateTime::parse_from_rfc3339("2026-01-16T00:00:00Z")
            .unwrap()
            .timestamp();
        let mut conversions = Conversions::new();
        ingest_events(&body, when, &mut conversions).unwrap();
        let key = ("555000111".to_string(), "ORD-10042".to_string());
        assert_eq!(conversions[&key].value, Some(129.98));
        body["events"][0]["conversionValue"] = json!(50.0);
        ingest_events(&body, when, &mut conversions).unwrap();
        assert_eq!(conversions[&key].restatements, vec![50.0]);

        body["events"][0]["adIdentifiers"]["gclid"] = json!("not a gclid!");
        body["events"][0]["userData"]["userIdentifiers"][0]["emailAddress"] = json!("Jane@x.com");
        let problems = ingest_events(&body, when, &mut conversions).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "events[0].ad_identifiers.gclid",
                "events[0].user_data.user_identifiers[0]"
            ]
        );
    }
}
