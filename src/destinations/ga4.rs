//! GA4 Measurement Protocol: `POST {endpoint}/mp/collect?measurement_id=…&api_secret=…`
//! (reference/platforms-2026.md §2). One request carries one client's events (at most 25, under
//! 130 kB). The live endpoint answers 2xx whatever it thinks of a hit, so the test mode sends to
//! `/debug/mp/collect`, whose `validationMessages` are the only way to see a mistake.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{
    classify_status, items_of, Built, Destination, HttpRequest, HttpResponse, Outcome,
    SettingsError, SettingsReader, Subject,
};
use crate::config::Secret;
use crate::pipeline::CanonicalEvent;

pub const DEFAULT_BASE: &str = "https://www.google-analytics.com";
/// GA4's limits per request.
pub const MAX_EVENTS: usize = 25;
pub const MAX_BODY_BYTES: usize = 130_000;
/// Events older than this are dropped by GA4 (`timestamp_micros` up to 72 hours back).
pub const MAX_AGE_SECS: u64 = 72 * 3600;
/// A session when the source sends none: the event's half hour (GA4's own session timeout),
/// so a client's events close together share one, as a browser session would.
const SESSION_WINDOW_SECS: i64 = 30 * 60;

#[derive(Debug, Clone)]
pub struct Ga4Settings {
    pub measurement_id: String,
    pub api_secret: Secret,
    /// Send to `/debug/mp/collect` (validate, record nothing): the test mode.
    pub validate_only: bool,
    /// Raw message path of the GA client id (the `_ga` cookie's id); else the anonymousId, as
    /// Segment's GA4 action does.
    pub client_id_path: Option<String>,
    /// Raw message path of the GA session id (from gtag on the page); else one per half hour.
    pub session_id_path: String,
    pub ad_user_data_category: String,
    pub ad_personalization_category: String,
}

impl Ga4Settings {
    pub fn read(r: &SettingsReader<'_>) -> Result<Ga4Settings, SettingsError> {
        r.deny_unknown(&[
            "measurement_id",
            "api_secret",
            "validate_only",
            "client_id_path",
            "session_id_path",
            "ad_user_data_consent",
            "ad_personalization_consent",
        ])?;
        let measurement_id = r.required_str("measurement_id")?.trim().to_string();
        let valid_id = measurement_id.len() > 2
            && measurement_id.starts_with("G-")
            && measurement_id[2..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric());
        if !valid_id {
            return Err(r.error(
                "measurement_id",
                format!("`{measurement_id}` must be a GA4 measurement id such as G-ABC123XYZ (Admin → Data streams)"),
            ));
        }
        let api_secret = r.optional_secret("api_secret")?.ok_or_else(|| {
            r.error(
                "api_secret",
                "is required: create one in GA4 under Admin → Data streams → (stream) → Measurement Protocol API secrets, and give it as env:VAR",
            )
        })?;
        let path = |key: &str| -> Result<Option<String>, SettingsError> {
            match r.optional_str(key)? {
                Some(p) if p.split('.').count() < 2 || p.split('.').any(str::is_empty) => Err(r.error(
                    key,
                    format!("`{p}` must be a path into the Segment message, such as properties.ga_client_id or context.ga.client_id"),
                )),
                other => Ok(other),
            }
        };
        Ok(Ga4Settings {
            measurement_id,
            api_secret,
            validate_only: r.optional_bool("validate_only")?.unwrap_or(false),
            client_id_path: path("client_id_path")?,
            session_id_path: path("session_id_path")?
                .unwrap_or_else(|| "properties.session_id".into()),
            ad_user_data_category: r
                .optional_str("ad_user_data_consent")?
                .unwrap_or_else(|| "Advertising".into()),
            ad_personalization_category: r
                .optional_str("ad_personalization_consent")?
                .unwrap_or_else(|| "Advertising".into()),
        })
    }

    /// Raw paths the transform must capture for this destination.
    pub fn captured_paths(&self) -> Vec<String> {
        self.client_id_path
            .iter()
            .cloned()
            .chain(std::iter::once(self.session_id_path.clone()))
            .collect()
    }

    fn client_id(&self, event: &CanonicalEvent) -> Option<String> {
        self.client_id_path
            .as_ref()
            .and_then(|p| event.context.captured.get(p).cloned())
            .or_else(|| event.user.anonymous_id.clone())
    }
}

/// Names GA4 reserves or that break its rules, with why; None when the name is usable.
pub fn name_problem(name: &str) -> Option<String> {
    const RESERVED: [&str; 16] = [
        "ad_activeview",
        "ad_click",
        "ad_exposure",
        "ad_query",
        "ad_reward",
        "adunit_exposure",
        "app_background",
        "app_clear_data",
        "app_exception",
        "app_remove",
        "app_store_refund",
        "error",
        "first_open",
        "first_visit",
        "session_start",
        "user_engagement",
    ];
    const PREFIXES: [&str; 5] = ["_", "firebase_", "ga_", "google_", "gtag."];
    if name.is_empty() || name.chars().count() > 40 {
        return Some(format!("`{name}` must be 1 to 40 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Some(format!(
            "`{name}` must start with a letter and hold only letters, digits and _"
        ));
    }
    if RESERVED.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Some(format!("`{name}` is reserved by GA4"));
    }
    None
}

/// GA4 string parameters hold at most 100 characters.
fn short(value: &Value) -> Value {
    match value {
        Value::String(s) if s.chars().count() > 100 => Value::String(s.chars().take(100).collect()),
        other => other.clone(),
    }
}

fn params(settings: &Ga4Settings, event: &CanonicalEvent) -> Map<String, Value> {
    let p = &event.properties;
    let mut out = Map::new();
    let copy = |out: &mut Map<String, Value>, from: &str, to: &str| {
        if let Some(v) = p.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), short(v));
        }
    };
    copy(&mut out, "order_id", "transaction_id");
    copy(&mut out, "value", "value");
    copy(&mut out, "currency", "currency");
    copy(&mut out, "coupon", "coupon");
    copy(&mut out, "shipping", "shipping");
    copy(&mut out, "tax", "tax");
    copy(&mut out, "affiliation", "affiliation");
    copy(&mut out, "search_string", "search_term");
    let items: Vec<Value> = items_of(event)
        .into_iter()
        .take(200)
        .map(|item| {
            let mut row = Map::new();
            for (from, to) in [
                ("item_id", "item_id"),
                ("name", "item_name"),
                ("price", "price"),
                ("quantity", "quantity"),
                ("category", "item_category"),
            ] {
                if let Some(v) = item.get(from) {
                    row.insert(to.into(), short(v));
                }
            }
            if !row.contains_key("item_id") {
                if let Some(sku) = item.get("sku") {
                    row.insert("item_id".into(), short(sku));
                }
            }
            Value::Object(row)
        })
        .collect();
    if !items.is_empty() {
        out.insert("items".into(), Value::Array(items));
    }
    // Without both, GA4 keeps the event out of its session-based reports.
    let session = event
        .context
        .captured
        .get(&settings.session_id_path)
        .cloned()
        .unwrap_or_else(|| {
            (event.event_time_ms / 1000 / SESSION_WINDOW_SECS * SESSION_WINDOW_SECS).to_string()
        });
    out.insert("session_id".into(), json!(session));
    out.insert("engagement_time_msec".into(), json!(1));
    out
}

fn consent(settings: &Ga4Settings, event: &CanonicalEvent) -> Option<Value> {
    let given: &BTreeMap<String, bool> = event.consent.as_ref()?;
    let word = |category: &str| {
        if given.get(category).copied().unwrap_or(false) {
            "GRANTED"
        } else {
            "DENIED"
        }
    };
    Some(json!({
        "ad_user_data": word(&settings.ad_user_data_category),
        "ad_personalization": word(&settings.ad_personalization_category),
    }))
}

/// Who an event belongs to: a request carries one client's (and user's) events.
fn owner(settings: &Ga4Settings, item: &Subject) -> Result<(String, Option<String>), String> {
    let Subject::Event { event, .. } = item else {
        return Err("GA4 receives events, not profiles".into());
    };
    let client = settings.client_id(event).ok_or_else(|| {
        "no client_id: GA4 needs one for web events; send Segment's anonymousId (or set client_id_path to where the page puts the _ga client id)".to_string()
    })?;
    Ok((client, event.user.user_id.clone()))
}

/// Which client an item's request is for, as a number (a request carries one client's
/// events); items GA4 cannot take share group 0, and are refused when built.
pub fn client_group(settings: &Ga4Settings, item: &Subject) -> u64 {
    use std::hash::{Hash, Hasher};
    let Ok(who) = owner(settings, item) else {
        return 0;
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    who.hash(&mut hasher);
    hasher.finish()
}

fn ga4_event(item: &Subject, settings: &Ga4Settings) -> Result<Value, String> {
    let Subject::Event {
        event,
        destination_event,
        ..
    } = item
    else {
        return Err("GA4 receives events, not profiles".into());
    };
    if let Some(problem) = name_problem(destination_event) {
        return Err(format!(
            "{problem}; give the mapping row a GA4 name (destinations = {{ ga4 = \"…\" }})"
        ));
    }
    Ok(json!({
        "name": destination_event,
        "timestamp_micros": event.event_time_ms * 1000,
        "params": params(settings, event),
    }))
}

pub fn build(dest: &Destination, settings: &Ga4Settings, items: &[Subject]) -> Built {
    let mut built = Built::default();
    let mut events: Vec<Value> = Vec::new();
    let mut request_owner: Option<(String, Option<String>)> = None;
    // A controlled test's events go to the debug endpoint, live ones to the live one: never
    // both in one request.
    let mut test_request: Option<bool> = None;
    let mut first: Option<&CanonicalEvent> = None;
    let mut size = 0usize;
    for (i, item) in items.iter().enumerate() {
        let who = match owner(settings, item) {
            Ok(who) => who,
            Err(reason) => {
                built.rejected.push((i, reason));
                continue;
            }
        };
        let is_test = matches!(item, Subject::Event { event, .. } if event.test_send);
        if request_owner.as_ref().is_some_and(|o| o != &who)
            || test_request.is_some_and(|t| t != is_test)
            || events.len() >= MAX_EVENTS
        {
            built.deferred.push(i);
            continue;
        }
        match ga4_event(item, settings) {
            Ok(event) => {
                let bytes = event.to_string().len();
                // Room for the envelope (client, user, consent) under GA4's 130 kB.
                if !events.is_empty() && size + bytes > MAX_BODY_BYTES - 2_000 {
                    built.deferred.push(i);
                    continue;
                }
                size += bytes;
                if let Subject::Event { event, .. } = item {
                    first.get_or_insert(event);
                }
                request_owner.get_or_insert(who);
                test_request.get_or_insert(is_test);
                events.push(event);
                built.included.push(i);
            }
            Err(reason) => built.rejected.push((i, reason)),
        }
    }
    let (Some((client_id, user_id)), Some(first)) = (request_owner, first) else {
        return built;
    };
    let mut body = Map::new();
    body.insert("client_id".into(), json!(client_id));
    if let Some(user) = user_id {
        body.insert("user_id".into(), json!(user));
    }
    body.insert("timestamp_micros".into(), json!(first.event_time_ms * 1000));
    if let Some(c) = consent(settings, first) {
        body.insert("consent".into(), c);
    }
    body.insert("events".into(), Value::Array(events));
    let path = if settings.validate_only || test_request == Some(true) {
        "/debug/mp/collect"
    } else {
        "/mp/collect"
    };
    let mut url = url::Url::parse(&format!("{}{path}", dest.base_url))
        .unwrap_or_else(|_| url::Url::parse(&format!("{DEFAULT_BASE}{path}")).expect("GA4 URL"));
    url.query_pairs_mut()
        .append_pair("measurement_id", &settings.measurement_id)
        .append_pair("api_secret", settings.api_secret.expose());
    built.request = Some(HttpRequest::json(
        url.to_string(),
        vec![("Content-Type".into(), "application/json".into())],
        &Value::Object(body),
    ));
    built
}

/// The event a validation message's field path names (`events[1].params.items`).
fn event_index(field: &str) -> Option<usize> {
    let at = field.find("events[")? + "events[".len();
    let rest = &field[at..];
    rest[..rest.find(']')?].parse().ok()
}

pub fn classify(settings: &Ga4Settings, count: usize, response: &HttpResponse) -> Vec<Outcome> {
    if !(200..300).contains(&response.status) {
        return vec![classify_status(response, "GA4"); count];
    }
    // Only the debug endpoint answers with validationMessages (the live one: 204, no body).
    let debug = serde_json::from_str::<Value>(&response.body)
        .ok()
        .and_then(|v| {
            v.get("validationMessages")
                .and_then(Value::as_array)
                .cloned()
        });
    let Some(messages) = debug else {
        let note = if settings.validate_only {
            "2xx without validationMessages: is `endpoint` GA4's?"
        } else {
            "accepted (GA4 answers 2xx to any hit; a test send validates through /debug/mp/collect)"
        };
        return vec![
            Outcome::Delivered {
                note: Some(note.into())
            };
            count
        ];
    };
    let mut named: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut general = Vec::new();
    for m in &messages {
        let text = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let line = format!(
            "{}: {} ({})",
            text("fieldPath"),
            text("description"),
            text("validationCode")
        );
        match event_index(&text("fieldPath")).filter(|i| *i < count) {
            Some(i) => named.entry(i).or_default().push(line),
            None => general.push(line),
        }
    }
    (0..count)
        .map(|i| {
            let mut problems = general.clone();
            problems.extend(named.get(&i).cloned().unwrap_or_default());
            if problems.is_empty() {
                Outcome::Delivered {
                    note: Some("validated by /debug/mp/collect: no validation messages (the test mode records nothing)".into()),
                }
            } else {
                Outcome::permanent(format!("GA4 validation: {}", problems.join("; ")))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DestinationKind;
    use crate::destinations::{fixture, Settings};

    fn dest(extra: &str) -> Destination {
        fixture::destination(
            DestinationKind::Ga4,
            &format!("measurement_id = \"G-TEST123\"\napi_secret = \"ga4_secret_value\"\n{extra}"),
        )
    }

    fn settings(d: &Destination) -> &Ga4Settings {
        match &d.settings {
            Settings::Ga4(s) => s,
            _ => panic!("not ga4"),
        }
    }

    fn with_client(mut event: CanonicalEvent, client: &str) -> CanonicalEvent {
        event.user.anonymous_id = Some(client.into());
        event
    }

    fn body_of(built: &Built) -> Value {
        serde_json::from_slice(&built.request.as_ref().expect("a request").body).expect("json")
    }

    #[test]
    fn a_purchase_with_ga4_parameters_and_the_secret_kept_out_of_records() {
        let mut event = with_client(fixture::purchase(), "anon-1");
        event.consent = Some([("Advertising".to_string(), true)].into_iter().collect());
        let d = dest("");
        let built = crate::destinations::build(&d, &[fixture::subject(event, "purchase")], 0);
        let request = built.request.as_ref().unwrap();
        assert_eq!(
            request.url,
            "https://www.google-analytics.com/mp/collect?measurement_id=G-TEST123&api_secret=ga4_secret_value"
        );
        assert!(!request.redacted_url().contains("ga4_secret_value"));
        let body = body_of(&built);
        assert_eq!(body["client_id"], "anon-1");
        assert_eq!(body["user_id"], "user_8f3a2c");
        assert_eq!(body["timestamp_micros"], json!(1_768_501_800_000_000i64));
        assert_eq!(
            body["consent"],
            json!({"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"})
        );
        let event = &body["events"][0];
        assert_eq!(event["name"], "purchase");
        let params = &event["params"];
        assert_eq!(params["transaction_id"], "ORD-10042");
        assert_eq!(params["value"], json!(129.98));
        assert_eq!(params["currency"], "USD");
        assert_eq!(
            params["items"][0],
            json!({"item_id": "SKU-123", "item_name": "Trail Runner Sock", "price": 49.99, "quantity": 2})
        );
        assert_eq!(params["engagement_time_msec"], json!(1));
        // No session from the page: the event's half hour.
        assert_eq!(params["session_id"], json!("1768501800"));
    }

    #[test]
    fn one_client_per_request_and_at_most_25_events() {
        let d = dest("");
        let mut items: Vec<Subject> = (0..30)
            .map(|_| fixture::subject(with_client(fixture::purchase(), "a"), "purchase"))
            .collect();
        items.insert(
            1,
            fixture::subject(with_client(fixture::purchase(), "b"), "purchase"),
        );
        let built = crate::destinations::build(&d, &items, 0);
        assert_eq!(built.included.len(), 25);
        assert!(!built.included.contains(&1), "another client's event waits");
        assert_eq!(built.deferred.len(), 6);
        assert_eq!(body_of(&built)["events"].as_array().unwrap().len(), 25);
    }

    #[test]
    fn a_configured_client_id_path_and_names_ga4_refuses() {
        let d = dest(
            "client_id_path = \"properties.ga_cid\"\nsession_id_path = \"context.ga.session\"",
        );
        assert_eq!(
            settings(&d).captured_paths(),
            ["properties.ga_cid", "context.ga.session"]
        );
        let mut event = with_client(fixture::purchase(), "anon-1");
        event
            .context
            .captured
            .insert("properties.ga_cid".into(), "1234.5678".into());
        event
            .context
            .captured
            .insert("context.ga.session".into(), "1768500123".into());
        let body = body_of(&crate::destinations::build(
            &d,
            &[fixture::subject(event.clone(), "purchase")],
            0,
        ));
        assert_eq!(body["client_id"], "1234.5678");
        assert_eq!(body["events"][0]["params"]["session_id"], "1768500123");

        let reserved =
            crate::destinations::build(&d, &[fixture::subject(event.clone(), "session_start")], 0);
        assert!(
            reserved.rejected[0].1.contains("reserved"),
            "{:?}",
            reserved.rejected
        );
        let mut anonymous = fixture::purchase();
        anonymous.user.anonymous_id = None;
        let built =
            crate::destinations::build(&dest(""), &[fixture::subject(anonymous, "purchase")], 0);
        assert!(
            built.rejected[0].1.starts_with("no client_id"),
            "{:?}",
            built.rejected
        );
    }

    #[test]
    fn the_test_mode_validates_and_names_what_ga4_says() {
        let d = dest("validate_only = true");
        let built = crate::destinations::build(
            &d,
            &[fixture::subject(
                with_client(fixture::purchase(), "a"),
                "purchase",
            )],
            0,
        );
        assert!(built.request.unwrap().url.contains("/debug/mp/collect?"));
        let answer = r#"{"validationMessages":[{"fieldPath":"events[1].params.currency","description":"Currency must be ISO 4217.","validationCode":"VALUE_INVALID"}]}"#;
        let out = classify(settings(&d), 2, &HttpResponse::new(200, answer));
        assert!(matches!(&out[0], Outcome::Delivered { note: Some(n) } if n.contains("validated")));
        assert_eq!(
            out[1],
            Outcome::permanent("GA4 validation: events[1].params.currency: Currency must be ISO 4217. (VALUE_INVALID)")
        );
        let live = classify(settings(&dest("")), 1, &HttpResponse::new(204, ""));
        assert!(matches!(&live[0], Outcome::Delivered { .. }));
    }
}
