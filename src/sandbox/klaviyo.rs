//! Klaviyo: the events API (one event a request), profile-import, and the bulk jobs accepted for
//! later processing: create-events (`/api/event-bulk-create-jobs`, up to 1,000 events) and the
//! profile import (`/api/profile-bulk-import-jobs`, up to 10,000 profiles).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{checks, json_response, lock, parse_body, take_fault, Fault, Platform, SandboxState};

#[derive(Clone, Copy)]
enum Kind {
    Event,
    Profile,
    Bulk,
    ProfileBulk,
    Deletion,
}

fn klaviyo_error(status: u16, code: &str, detail: &str, pointer: Option<&str>) -> Value {
    json!({"errors": [{"id": "sandbox", "status": status, "code": code, "title": "Invalid input.", "detail": detail,
        "source": pointer.map(|p| json!({"pointer": p})).unwrap_or(json!({})), "meta": {}}]})
}

async fn klaviyo(
    state: Arc<SandboxState>,
    path: &str,
    headers: HeaderMap,
    body: Bytes,
    kind: Kind,
) -> Response {
    let parsed = parse_body(&body).unwrap_or(Value::Null);
    let fault = match take_fault(&state, Platform::Klaviyo, path, &headers, &parsed).await {
        Ok(fault) => fault,
        Err(answered) => return answered,
    };
    let key_ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Klaviyo-API-Key ") && v.len() > 16);
    let revision_ok = headers
        .get("revision")
        .and_then(|v| v.to_str().ok())
        .is_some_and(checks::klaviyo_revision);
    let result = if fault == Some(Fault::BadToken) || !key_ok {
        Err((
            401,
            klaviyo_error(
                401,
                "not_authenticated",
                "Missing or invalid private key.",
                None,
            ),
        ))
    } else if !revision_ok {
        Err((
            400,
            klaviyo_error(
                400,
                "invalid",
                "A revision header (YYYY-MM-DD) is required.",
                None,
            ),
        ))
    } else {
        let mut seen = lock(&state.klaviyo_unique);
        let verdict = match kind {
            Kind::Profile => checks::klaviyo_profile(&parsed).map(|_| 200),
            Kind::Event => checks::klaviyo_event(&parsed, &mut seen).map(|_| 202),
            Kind::Bulk => bulk_job(&parsed, body.len(), &mut seen).map(|_| 202),
            Kind::ProfileBulk => profile_import_job(&parsed, body.len()).map(|_| 202),
            Kind::Deletion => deletion_job(&parsed).map(|_| 202),
        };
        verdict.map_err(|(d, p)| (400, klaviyo_error(400, "invalid", &d, Some(&p))))
    };
    match result {
        Ok(status) => {
            let profiles = parsed
                .pointer("/data/attributes/profiles/data")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            state.record(Platform::Klaviyo, path, &headers, parsed, status, None);
            if matches!(kind, Kind::ProfileBulk) {
                json_response(
                    202,
                    json!({"data": {"type": "profile-bulk-import-job", "id": "sandbox-job",
                        "attributes": {"status": "queued", "total_count": profiles}}}),
                )
            } else if status == 202 {
                StatusCode::ACCEPTED.into_response()
            } else {
                json_response(
                    status,
                    json!({"data": {"type": "profile", "id": "sandbox"}}),
                )
            }
        }
        Err((status, body)) => {
            let detail = body
                .pointer("/errors/0/detail")
                .and_then(Value::as_str)
                .map(str::to_string);
            state.record(Platform::Klaviyo, path, &headers, parsed, status, detail);
            json_response(status, body)
        }
    }
}

pub async fn event(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    klaviyo(state, "/api/events", headers, body, Kind::Event).await
}

pub async fn profile(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    klaviyo(state, "/api/profile-import", headers, body, Kind::Profile).await
}

/// Request Profile Deletion (`POST /api/data-privacy-deletion-jobs`) as Klaviyo validates it:
/// a `data-privacy-deletion-job` naming a profile by exactly one of email, phone_number or id.
pub fn deletion_job(body: &Value) -> Result<(), checks::KlaviyoError> {
    let data = body
        .get("data")
        .ok_or(("data is required".to_string(), "/data".to_string()))?;
    if data.get("type").and_then(Value::as_str) != Some("data-privacy-deletion-job") {
        return Err((
            "data.type must be \"data-privacy-deletion-job\"".into(),
            "/data/type".into(),
        ));
    }
    let profile = data.pointer("/attributes/profile/data");
    if profile.and_then(|p| p.get("type")).and_then(Value::as_str) != Some("profile") {
        return Err((
            "profile.data.type must be \"profile\"".into(),
            "/data/attributes/profile/data/type".into(),
        ));
    }
    let pointer = "/data/attributes/profile/data/attributes";
    let attributes = profile
        .and_then(|p| p.get("attributes"))
        .and_then(Value::as_object)
        .ok_or((
            "attributes must be an object".to_string(),
            pointer.to_string(),
        ))?;
    let named: Vec<&String> = attributes
        .keys()
        .filter(|k| ["email", "phone_number", "id"].contains(&k.as_str()))
        .collect();
    if named.len() != 1 || attributes.len() != 1 {
        return Err((
            "give exactly one of email, phone_number or id".into(),
            pointer.to_string(),
        ));
    }
    match (named[0].as_str(), attributes[named[0]].as_str()) {
        ("email", Some(e)) if e.contains('@') => Ok(()),
        ("phone_number", Some(p)) if p.starts_with('+') && p.len() > 7 => Ok(()),
        ("id", Some(id)) if !id.is_empty() => Ok(()),
        (key, _) => Err((
            format!("{key} is not a valid value"),
            format!("{pointer}/{key}"),
        )),
    }
}

pub async fn deletion(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    klaviyo(
        state,
        "/api/data-privacy-deletion-jobs",
        headers,
        body,
        Kind::Deletion,
    )
    .await
}

/// The most events one bulk job carries, and its largest payload.
const BULK_EVENTS: usize = 1000;
const BULK_BYTES: usize = 5 * 1024 * 1024;

/// A bulk create-events job as Klaviyo validates it; the events it carries on success.
pub fn bulk_job(
    body: &Value,
    raw_len: usize,
    seen: &mut std::collections::HashSet<String>,
) -> Result<usize, checks::KlaviyoError> {
    if raw_len > BULK_BYTES {
        return Err(("the payload is over 5 MB".into(), "/data".into()));
    }
    let data = body
        .get("data")
        .ok_or(("data is required".to_string(), "/data".to_string()))?;
    if data.get("type").and_then(Value::as_str) != Some("event-bulk-create-job") {
        return Err((
            "data.type must be \"event-bulk-create-job\"".into(),
            "/data/type".into(),
        ));
    }
    let profiles = data
        .pointer("/attributes/events-bulk-create/data")
        .and_then(Value::as_array)
        .ok_or((
            "attributes.events-bulk-create.data must be an array".to_string(),
            "/data/attributes/events-bulk-create/data".to_string(),
        ))?;
    let mut total = 0;
    for (i, entry) in profiles.iter().enumerate() {
        let at = format!("/data/attributes/events-bulk-create/data/{i}");
        if entry.get("type").and_then(Value::as_str) != Some("event-bulk-create") {
            return Err((
                "each entry's type must be \"event-bulk-create\"".into(),
                format!("{at}/type"),
            ));
        }
        let profile = entry.pointer("/attributes/profile/data");
        if profile.and_then(|p| p.get("type")).and_then(Value::as_str) != Some("profile") {
            return Err((
                "profile.data.type must be \"profile\"".into(),
                format!("{at}/attributes/profile/data/type"),
            ));
        }
        checks::check_profile_attributes(
            profile
                .and_then(|p| p.get("attributes"))
                .unwrap_or(&Value::Null),
            &format!("{at}/attributes/profile/data/attributes"),
        )?;
        let events = entry
            .pointer("/attributes/events/data")
            .and_then(Value::as_array)
            .filter(|e| !e.is_empty())
            .ok_or((
                "events.data must be a non-empty array".to_string(),
                format!("{at}/attributes/events/data"),
            ))?;
        for (j, event) in events.iter().enumerate() {
            let pointer = format!("{at}/attributes/events/data/{j}");
            if event.get("type").and_then(Value::as_str) != Some("event") {
                return Err(("type must be \"event\"".into(), format!("{pointer}/type")));
            }
            let attributes = event.get("attributes").unwrap_or(&Value::Null);
            checks::check_event_attributes(attributes, &format!("{pointer}/attributes"))?;
        }
        total += events.len();
    }
    if total == 0 || total > BULK_EVENTS {
        return Err((
            format!("a job carries 1 to {BULK_EVENTS} events, not {total}"),
            "/data/attributes/events-bulk-create/data".into(),
        ));
    }
    for entry in profiles {
        let profile = entry.pointer("/attributes/profile/data");
        for event in entry
            .pointer("/attributes/events/data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            checks::remember_unique(
                event.get("attributes").unwrap_or(&Value::Null),
                profile,
                seen,
            );
        }
    }
    Ok(total)
}

pub async fn bulk(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    klaviyo(
        state,
        "/api/event-bulk-create-jobs",
        headers,
        body,
        Kind::Bulk,
    )
    .await
}

/// The most profiles one import job carries, and the most one profile may weigh.
const IMPORT_PROFILES: usize = 10_000;
const IMPORT_PROFILE_BYTES: usize = 100 * 1024;

/// A bulk profile import job as Klaviyo validates it; the profiles it carries on success.
pub fn profile_import_job(body: &Value, raw_len: usize) -> Result<usize, checks::KlaviyoError> {
    if raw_len > BULK_BYTES {
        return Err(("the payload is over 5 MB".into(), "/data".into()));
    }
    let data = body
        .get("data")
        .ok_or(("data is required".to_string(), "/data".to_string()))?;
    if data.get("type").and_then(Value::as_str) != Some("profile-bulk-import-job") {
        return Err((
            "data.type must be \"profile-bulk-import-job\"".into(),
            "/data/type".into(),
        ));
    }
    let at = "/data/attributes/profiles/data";
    let profiles = data
        .pointer("/attributes/profiles/data")
        .and_then(Value::as_array)
        .ok_or((
            "attributes.profiles.data must be an array".to_string(),
            at.to_string(),
        ))?;
    if profiles.is_empty() || profiles.len() > IMPORT_PROFILES {
        return Err((
            format!(
                "a job carries 1 to {IMPORT_PROFILES} profiles, not {}",
                profiles.len()
            ),
            at.into(),
        ));
    }
    for (i, profile) in profiles.iter().enumerate() {
        let pointer = format!("{at}/{i}");
        if profile.get("type").and_then(Value::as_str) != Some("profile") {
            return Err(("type must be \"profile\"".into(), format!("{pointer}/type")));
        }
        if profile.to_string().len() > IMPORT_PROFILE_BYTES {
            return Err(("a profile may not pass 100 KB".into(), pointer));
        }
        checks::check_profile_attributes(
            profile.get("attributes").unwrap_or(&Value::Null),
            &format!("{pointer}/attributes"),
        )?;
    }
    Ok(profiles.len())
}

pub async fn profile_bulk(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    klaviyo(
        state,
        "/api/profile-bulk-import-jobs",
        headers,
        body,
        Kind::ProfileBulk,
    )
    .await
}
