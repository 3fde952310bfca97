//! Klaviyo: Events API (`POST /api/events`, JSON:API) for events and profile-import
//! (`POST /api/profile-import`) for identify calls (reference/destination-apis.md §3, §8.5);
//! when the queue is deep, bulk create-events jobs (`POST /api/event-bulk-create-jobs`, up to
//! 1,000 events, reference/platforms-2026.md §5): the event API's 350 requests a second cap a
//! destination at a few thousand events a second, a job carries a thousand.
//! Identifiers go in clear text: Klaviyo matches on raw email and phone.

use chrono::{TimeZone, Utc};
use serde_json::{json, Map, Value};

use super::hashing::phone_e164;
use super::{
    classify_status, insert_some, items_of, Built, Destination, HttpRequest, HttpResponse, Outcome,
    SettingsError, SettingsReader, Subject,
};
use crate::config::Secret;

pub const DEFAULT_REVISION: &str = "2026-07-15";
/// The most events one bulk job takes.
pub const BULK_MAX_EVENTS: usize = 1000;
/// Deliveries waiting before events go as bulk jobs: below it, one request an event keeps
/// latency low (a job is processed later, asynchronously).
pub const DEFAULT_BULK_THRESHOLD: usize = 50;

#[derive(Debug, Clone)]
pub struct KlaviyoSettings {
    pub api_key: Secret,
    pub revision: String,
    /// Waiting deliveries from which events go as bulk jobs; 0 never.
    pub bulk_threshold: usize,
}

impl KlaviyoSettings {
    /// Whether `waiting` deliveries are a queue deep enough for bulk jobs.
    pub fn bulk_for(&self, waiting: usize) -> bool {
        self.bulk_threshold > 0 && waiting >= self.bulk_threshold
    }

    pub fn read(r: &SettingsReader<'_>) -> Result<KlaviyoSettings, SettingsError> {
        r.deny_unknown(&["api_key", "revision", "bulk_threshold"])?;
        let revision = r
            .optional_str("revision")?
            .unwrap_or_else(|| DEFAULT_REVISION.into());
        let valid = revision.len() >= 10
            && chrono::NaiveDate::parse_from_str(&revision[..10], "%Y-%m-%d").is_ok();
        if !valid {
            return Err(r.error(
                "revision",
                format!("`{revision}` must be a date such as {DEFAULT_REVISION}"),
            ));
        }
        let bulk_threshold = match r.optional_str("bulk_threshold")?.as_deref() {
            None => DEFAULT_BULK_THRESHOLD,
            Some(text) => text.parse().map_err(|_| {
                r.error(
                    "bulk_threshold",
                    format!(
                        "`{text}` must be a number of waiting deliveries (0: never use bulk jobs)"
                    ),
                )
            })?,
        };
        Ok(KlaviyoSettings {
            api_key: r.required_secret("api_key")?,
            revision,
            bulk_threshold,
        })
    }
}

/// Klaviyo's headers: the private key, the API revision, JSON:API content.
pub fn request_headers(settings: &KlaviyoSettings) -> Vec<(String, String)> {
    vec![
        (
            "Authorization".into(),
            format!("Klaviyo-API-Key {}", settings.api_key.expose()),
        ),
        ("revision".into(), settings.revision.clone()),
        ("Content-Type".into(), "application/vnd.api+json".into()),
        ("accept".into(), "application/vnd.api+json".into()),
    ]
}

/// Event properties in Klaviyo's conventions (OrderId, Items[], ItemNames) plus the rest of the
/// canonical properties as they are.
fn event_properties(
    properties: &Map<String, Value>,
    items: &[&Map<String, Value>],
) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(order) = properties.get("order_id") {
        out.insert("OrderId".into(), order.clone());
    }
    if !items.is_empty() {
        let names: Vec<Value> = items
            .iter()
            .filter_map(|i| i.get("name").cloned())
            .collect();
        if !names.is_empty() {
            out.insert("ItemNames".into(), Value::Array(names));
        }
        let rows: Vec<Value> = items
            .iter()
            .map(|i| {
                let mut row = Map::new();
                let get = |k: &str| i.get(k).cloned();
                if let Some(v) = get("item_id") {
                    row.insert("ProductID".into(), v);
                }
                if let Some(v) = get("sku") {
                    row.insert("SKU".into(), v);
                }
                if let Some(v) = get("name") {
                    row.insert("ProductName".into(), v);
                }
                let quantity = i.get("quantity").and_then(Value::as_f64).unwrap_or(1.0);
                row.insert(
                    "Quantity".into(),
                    i.get("quantity").cloned().unwrap_or(json!(1)),
                );
                if let Some(price) = i.get("price").and_then(Value::as_f64) {
                    row.insert("ItemPrice".into(), json!(price));
                    let total = (price * quantity * 100.0).round() / 100.0;
                    row.insert("RowTotal".into(), json!(total));
                }
                if let Some(v) = get("category") {
                    row.insert("Categories".into(), json!([v]));
                }
                Value::Object(row)
            })
            .collect();
        out.insert("Items".into(), Value::Array(rows));
    }
    for (key, value) in properties {
        if !["order_id", "items", "value", "currency", "num_items"].contains(&key.as_str()) {
            out.insert(key.clone(), value.clone());
        }
    }
    out
}

/// An event's profile (what Klaviyo finds or creates it by) and its own attributes.
type EventParts = (Map<String, Value>, Map<String, Value>);

fn event_parts(item: &Subject) -> Result<EventParts, String> {
    let Subject::Event {
        event,
        destination_event,
        ..
    } = item
    else {
        return Err("not an event".into());
    };
    let user = &event.user;
    let mut profile = Map::new();
    insert_some(
        &mut profile,
        "email",
        user.email.as_ref().map(|e| e.trim().to_lowercase()),
    );
    insert_some(
        &mut profile,
        "phone_number",
        user.phone
            .as_deref()
            .and_then(|p| phone_e164(p, user.country.as_deref())),
    );
    insert_some(&mut profile, "external_id", user.user_id.clone());
    if profile.is_empty() {
        insert_some(&mut profile, "anonymous_id", user.anonymous_id.clone());
    }
    if profile.is_empty() {
        return Err(
            "no email, phone, userId or anonymousId: Klaviyo needs one to find the profile".into(),
        );
    }
    insert_some(&mut profile, "first_name", user.first_name.clone());
    insert_some(&mut profile, "last_name", user.last_name.clone());

    let items = items_of(event);
    let time = Utc
        .timestamp_millis_opt(event.event_time_ms)
        .single()
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string();
    let mut attributes = Map::new();
    attributes.insert(
        "properties".into(),
        Value::Object(event_properties(&event.properties, &items)),
    );
    attributes.insert("time".into(), json!(time));
    if let Some(v) = event.properties.get("value") {
        attributes.insert("value".into(), v.clone());
    }
    if let Some(c) = event.properties.get("currency") {
        attributes.insert("value_currency".into(), c.clone());
    }
    // One event per (profile, metric, unique_id): the order id for orders, else the messageId.
    attributes.insert("unique_id".into(), json!(event.dedup_key));
    attributes.insert(
        "metric".into(),
        json!({"data": {"type": "metric", "attributes": {"name": destination_event}}}),
    );
    Ok((profile, attributes))
}

fn event_body(item: &Subject) -> Result<Value, String> {
    let (profile, mut attributes) = event_parts(item)?;
    attributes.insert(
        "profile".into(),
        json!({"data": {"type": "profile", "attributes": profile}}),
    );
    Ok(json!({"data": {"type": "event", "attributes": attributes}}))
}

/// Standard profile attributes Klaviyo knows, from Segment trait names. Unknown traits go to
/// `properties`; missing ones are omitted (a null would clear the field in Klaviyo).
fn profile_body(snapshot: &super::ProfileSnapshot) -> Result<Value, String> {
    let traits = &snapshot.traits;
    let text = |names: &[&str]| -> Option<String> {
        names
            .iter()
            .find_map(|n| {
                traits
                    .get(*n)
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
            })
            .map(str::to_string)
    };
    let address = traits.get("address").and_then(Value::as_object);
    let country = address
        .and_then(|a| a.get("country"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut attributes = Map::new();
    insert_some(
        &mut attributes,
        "email",
        text(&["email"]).map(|e| e.to_lowercase()),
    );
    insert_some(
        &mut attributes,
        "phone_number",
        text(&["phone"]).and_then(|p| phone_e164(&p, country.as_deref())),
    );
    insert_some(&mut attributes, "external_id", snapshot.user_id.clone());
    if attributes.is_empty() {
        insert_some(
            &mut attributes,
            "anonymous_id",
            snapshot.anonymous_id.clone(),
        );
    }
    if attributes.is_empty() {
        return Err("the identify call has no email, phone or userId for Klaviyo".into());
    }
    insert_some(
        &mut attributes,
        "first_name",
        text(&["firstName", "first_name"]),
    );
    insert_some(
        &mut attributes,
        "last_name",
        text(&["lastName", "last_name"]),
    );
    insert_some(
        &mut attributes,
        "organization",
        traits
            .get("company")
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string),
    );
    insert_some(&mut attributes, "title", text(&["title"]));
    insert_some(&mut attributes, "locale", text(&["locale"]));
    if let Some(a) = address {
        let mut location = Map::new();
        let field = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
        insert_some(&mut location, "address1", field("street"));
        insert_some(&mut location, "city", field("city"));
        insert_some(&mut location, "region", field("state"));
        insert_some(
            &mut location,
            "zip",
            field("postalCode").or_else(|| field("postal_code")),
        );
        insert_some(&mut location, "country", field("country"));
        if !location.is_empty() {
            attributes.insert("location".into(), Value::Object(location));
        }
    }
    const STANDARD: [&str; 13] = [
        "email",
        "phone",
        "firstName",
        "first_name",
        "lastName",
        "last_name",
        "company",
        "title",
        "locale",
        "address",
        "consent",
        "id",
        "userId",
    ];
    let extra: Map<String, Value> = traits
        .iter()
        .filter(|(k, v)| !STANDARD.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !extra.is_empty() {
        attributes.insert("properties".into(), Value::Object(extra));
    }
    Ok(json!({"data": {"type": "profile", "attributes": attributes}}))
}

/// A bulk job's body may not pass 5 MB; room is kept for its envelope.
const BULK_MAX_BYTES: usize = 5_000_000 - 10_000;
/// A bulk profile import takes up to 10,000 profiles a job.
pub const BULK_MAX_PROFILES: usize = 10_000;

/// A bulk job of one kind of item: create-events (one entry per event: its profile, then the
/// event, so an error's pointer `…/events-bulk-create/data/{n}/…` names the event) or a profile
/// import (`…/profiles/data/{n}/…`). Items of the other kind, and those past `limit` or the 5 MB
/// a job may carry, wait for a later request.
fn bulk_job(items: &[Subject], limit: usize) -> (Option<(&'static str, Value)>, Built) {
    let profiles = matches!(items.first(), Some(Subject::Profile(_)));
    let mut data = Vec::new();
    let mut size = 0usize;
    let mut built = Built::default();
    for (i, item) in items.iter().enumerate() {
        if matches!(item, Subject::Profile(_)) != profiles || data.len() >= limit {
            built.deferred.push(i);
            continue;
        }
        let entry = match item {
            Subject::Profile(snapshot) => {
                profile_body(snapshot).map(|mut body| body["data"].take())
            }
            Subject::Event { .. } => event_parts(item).map(|(profile, attributes)| {
                json!({"type": "event-bulk-create", "attributes": {
                    "profile": {"data": {"type": "profile", "attributes": profile}},
                    "events": {"data": [{"type": "event", "attributes": attributes}]},
                }})
            }),
        };
        match entry {
            Ok(entry) => {
                let bytes = entry.to_string().len() + 1;
                if !data.is_empty() && size + bytes > BULK_MAX_BYTES {
                    built.deferred.push(i);
                    continue;
                }
                size += bytes;
                data.push(entry);
                built.included.push(i);
            }
            Err(reason) => built.rejected.push((i, reason)),
        }
    }
    if data.is_empty() {
        return (None, built);
    }
    let job = if profiles {
        (
            "/api/profile-bulk-import-jobs",
            json!({"data": {"type": "profile-bulk-import-job", "attributes": {
                "profiles": {"data": data}
            }}}),
        )
    } else {
        (
            "/api/event-bulk-create-jobs",
            json!({"data": {"type": "event-bulk-create-job", "attributes": {
                "events-bulk-create": {"data": data}
            }}}),
        )
    };
    (Some(job), built)
}

/// The bulk entry an error pointer names.
fn bulk_entry(pointer: &str) -> Option<usize> {
    let rest = ["events-bulk-create/data/", "profiles/data/"]
        .iter()
        .find_map(|marker| Some(&pointer[pointer.find(marker)? + marker.len()..]))?;
    rest.split('/').next()?.parse().ok()
}

pub fn build(dest: &Destination, settings: &KlaviyoSettings, items: &[Subject]) -> Built {
    let Some(item) = items.first() else {
        return Built::default();
    };
    // More than one item means the worker found a deep queue (Destination::items_per_request).
    if items.len() > 1 {
        let limit = match item {
            Subject::Profile(_) => dest.batch_size.min(BULK_MAX_PROFILES),
            Subject::Event { .. } => dest.batch_size,
        };
        let (job, built) = bulk_job(items, limit);
        return Built {
            request: job.map(|(path, body)| {
                HttpRequest::json(
                    format!("{}{path}", dest.base_url),
                    request_headers(settings),
                    &body,
                )
            }),
            ..built
        };
    }
    let (path, body) = match item {
        Subject::Event { .. } => ("/api/events", event_body(item)),
        Subject::Profile(snapshot) => ("/api/profile-import", profile_body(snapshot)),
    };
    // One item per request; anything else waits for the next.
    match body {
        Ok(body) => Built::first_of(
            HttpRequest::json(
                format!("{}{path}", dest.base_url),
                request_headers(settings),
                &body,
            ),
            items.len(),
        ),
        Err(reason) => Built {
            rejected: vec![(0, reason)],
            deferred: (1..items.len()).collect(),
            ..Built::default()
        },
    }
}

/// 202 (events) / 200 / 201 (profiles) succeed; 429 and 5xx retry after Retry-After; other 4xx
/// carry the field in `errors[].source.pointer`. A request of several items is a bulk job: a
/// pointer into one entry refuses that event, and the others are sent again.
pub fn classify(count: usize, response: &HttpResponse) -> Vec<Outcome> {
    if count > 1 && (200..300).contains(&response.status) {
        return vec![
            Outcome::Delivered {
                note: Some(format!(
                    "HTTP {}: accepted in a bulk job of {count} (Klaviyo processes it asynchronously)",
                    response.status
                )),
            };
            count
        ];
    }
    if count > 1 && response.status == 400 {
        let errors: Vec<(usize, String)> = serde_json::from_str::<Value>(&response.body)
            .ok()
            .and_then(|v| v.get("errors").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| {
                let pointer = e.pointer("/source/pointer").and_then(Value::as_str)?;
                let detail = e.get("detail").and_then(Value::as_str).unwrap_or("");
                Some((bulk_entry(pointer)?, format!("{detail} at {pointer}")))
            })
            .filter(|(entry, _)| *entry < count)
            .collect();
        if !errors.is_empty() {
            return (0..count)
                .map(|i| match errors.iter().find(|(entry, _)| *entry == i) {
                    Some((_, why)) => Outcome::permanent(format!("Klaviyo HTTP 400: {why}")),
                    None => Outcome::Resend {
                        reason: "the bulk job was refused for another event; sent again without it"
                            .into(),
                    },
                })
                .collect();
        }
    }
    let outcome = match response.status {
        200..=299 => Outcome::Delivered {
            note: Some(format!("HTTP {}", response.status)),
        },
        400..=499 if response.status != 429 && response.status != 408 => {
            let detail = serde_json::from_str::<Value>(&response.body)
                .ok()
                .and_then(|v| {
                    let e = v.get("errors")?.get(0)?.clone();
                    let detail = e
                        .get("detail")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let pointer = e
                        .pointer("/source/pointer")
                        .and_then(Value::as_str)
                        .map(|p| format!(" at {p}"));
                    Some(format!("{detail}{}", pointer.unwrap_or_default()))
                });
            match detail {
                Some(d) => Outcome::permanent(format!("Klaviyo HTTP {}: {d}", response.status)),
                None => classify_status(response, "Klaviyo"),
            }
        }
        _ => classify_status(response, "Klaviyo"),
    };
    vec![outcome; count]
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;
    use crate::config::DestinationKind;

    fn dest() -> Destination {
        fixture::destination(
            DestinationKind::Klaviyo,
            "api_key = \"pk_TEST\"\nrevision = \"2026-07-15\"",
        )
    }

    #[test]
    fn a_deep_queue_goes_as_bulk_jobs_and_a_refused_event_is_named() {
        let d = dest();
        assert_eq!(
            d.items_per_request(3),
            1,
            "a short queue: one event a request"
        );
        assert_eq!(d.items_per_request(DEFAULT_BULK_THRESHOLD), 1000);
        let mut second = fixture::purchase();
        second.user.email = Some("other@example.com".into());
        second.dedup_key = "ORD-2".into();
        let profile = Subject::Profile(super::super::ProfileSnapshot {
            profile_id: 1,
            message_id: "m".into(),
            user_id: Some("u".into()),
            anonymous_id: None,
            traits: Map::new(),
            problems: Vec::new(),
        });
        let items = [
            fixture::subject(fixture::purchase(), "Placed Order"),
            profile,
            fixture::subject(second, "Placed Order"),
        ];
        let built = super::super::build(&d, &items, 0);
        assert_eq!(built.included, [0, 2]);
        assert_eq!(built.deferred, [1], "profiles go in a job of their own");
        let request = built.request.unwrap();
        assert_eq!(
            request.url,
            "https://a.klaviyo.com/api/event-bulk-create-jobs"
        );
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let entries = body
            .pointer("/data/attributes/events-bulk-create/data")
            .and_then(Value::as_array)
            .unwrap();
        assert_eq!(entries.len(), 2);
        // The same event as the single-event API would carry, under its own profile.
        let single: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/destinations/klaviyo_purchase.json"
        ))
        .unwrap();
        let mut expected_event = single["data"]["attributes"].clone();
        let expected_profile = expected_event["profile"]["data"].clone();
        expected_event.as_object_mut().unwrap().remove("profile");
        assert_eq!(
            entries[0]["attributes"]["profile"]["data"],
            expected_profile
        );
        assert_eq!(
            entries[0]["attributes"]["events"]["data"][0]["attributes"],
            expected_event
        );
        assert_eq!(
            entries[1]["attributes"]["profile"]["data"]["attributes"]["email"],
            "other@example.com"
        );

        let refused = r#"{"errors":[{"status":400,"code":"invalid","detail":"Invalid phone number format","source":{"pointer":"/data/attributes/events-bulk-create/data/1/attributes/profile/data/attributes/phone_number"}}]}"#;
        let out = classify(3, &HttpResponse::new(400, refused));
        assert!(
            matches!(&out[1], Outcome::Permanent { reason } if reason.contains("Invalid phone number"))
        );
        assert!(matches!(&out[0], Outcome::Resend { .. }));
        assert!(matches!(&out[2], Outcome::Resend { .. }));
        let accepted = classify(2, &HttpResponse::new(202, ""));
        assert!(
            matches!(&accepted[0], Outcome::Delivered { note: Some(n) } if n.contains("bulk job"))
        );
    }

    #[test]
    fn a_deep_queue_of_profiles_goes_as_a_bulk_import_job() {
        let d = dest();
        let profile = |n: usize, email: &str| {
            let mut traits = Map::new();
            traits.insert("email".into(), json!(email));
            traits.insert("first_name".into(), json!("Jo"));
            traits.insert("plan".into(), json!("team"));
            Subject::Profile(super::super::ProfileSnapshot {
                profile_id: n as i64,
                message_id: format!("m{n}"),
                user_id: Some(format!("u{n}")),
                anonymous_id: None,
                traits,
                problems: Vec::new(),
            })
        };
        let items = [
            profile(1, "one@example.com"),
            profile(2, "two@example.com"),
            fixture::subject(fixture::purchase(), "Placed Order"),
        ];
        let built = super::super::build(&d, &items, 0);
        assert_eq!((built.included, built.deferred), (vec![0, 1], vec![2]));
        let request = built.request.unwrap();
        assert_eq!(
            request.url,
            "https://a.klaviyo.com/api/profile-bulk-import-jobs"
        );
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["data"]["type"], "profile-bulk-import-job");
        let profiles = body
            .pointer("/data/attributes/profiles/data")
            .and_then(Value::as_array)
            .unwrap();
        // Each entry is what profile-import would carry for that profile.
        let single = super::super::build(&d, &items[1..2], 0).request.unwrap();
        let single: Value = serde_json::from_slice(&single.body).unwrap();
        assert_eq!(profiles[1], single["data"]);
        assert_eq!(profiles[0]["attributes"]["email"], "one@example.com");

        let refused = r#"{"errors":[{"status":400,"code":"invalid","detail":"Invalid email address","source":{"pointer":"/data/attributes/profiles/data/1/attributes/email"}}]}"#;
        let out = classify(2, &HttpResponse::new(400, refused));
        assert!(matches!(&out[0], Outcome::Resend { .. }));
        assert!(
            matches!(&out[1], Outcome::Permanent { reason } if reason.contains("Invalid email"))
        );
    }

    #[test]
    fn reference_fixture_purchase() {
        let built = super::super::build(
            &dest(),
            &[fixture::subject(fixture::purchase(), "Placed Order")],
            0,
        );
        let request = built.request.unwrap();
        assert_eq!(request.url, "https://a.klaviyo.com/api/events");
        assert_eq!(
            request.headers[0],
            ("Authorization".into(), "Klaviyo-API-Key pk_TEST".into())
        );
        assert!(request
            .headers
            .contains(&("revision".into(), "2026-07-15".into())));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let expected: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/destinations/klaviyo_purchase.json"
        ))
        .unwrap();
        assert_eq!(body, expected);
    }

    #[test]
    fn identify_becomes_profile_import_without_nulls() {
        let snapshot = super::super::ProfileSnapshot {
            profile_id: 1,
            message_id: "m".into(),
            user_id: Some("user_8f3a2c".into()),
            anonymous_id: None,
            traits: json!({"email": "Jane.Doe@Gmail.com", "phone": "+1 (415) 555-0123", "firstName": "Jane", "plan": "premium", "nickname": null,
                           "address": {"city": "San Francisco", "country": "US"}}).as_object().unwrap().clone(),
            problems: Vec::new(),
        };
        let built = super::super::build(&dest(), &[super::super::Subject::Profile(snapshot)], 0);
        let request = built.request.unwrap();
        assert_eq!(request.url, "https://a.klaviyo.com/api/profile-import");
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body,
            json!({"data": {"type": "profile", "attributes": {
                "email": "jane.doe@gmail.com", "phone_number": "+14155550123", "external_id": "user_8f3a2c",
                "first_name": "Jane", "location": {"city": "San Francisco", "country": "US"},
                "properties": {"plan": "premium"}}}})
        );
    }

    #[test]
    fn classifies() {
        let r = |status, body: &str| HttpResponse {
            status,
            retry_after: None,
            body: body.into(),
            cut: false,
            rate_limit_wait: None,
        };
        assert!(matches!(
            classify(1, &r(202, ""))[0],
            Outcome::Delivered { .. }
        ));
        let bad_phone = r(
            400,
            r#"{"errors":[{"id":"x","status":400,"code":"invalid","title":"Invalid input.","detail":"Invalid phone number format (Example of a valid format: +12345678901)","source":{"pointer":"/data/attributes/profile/data/attributes/phone_number"}}]}"#,
        );
        assert_eq!(classify(1, &bad_phone)[0], Outcome::permanent("Klaviyo HTTP 400: Invalid phone number format (Example of a valid format: +12345678901) at /data/attributes/profile/data/attributes/phone_number"));
        let throttled = HttpResponse {
            status: 429,
            retry_after: Some(std::time::Duration::from_secs(2)),
            body: "{}".into(),
            cut: false,
            rate_limit_wait: None,
        };
        assert!(
            matches!(classify(1, &throttled)[0], Outcome::Retry { after: Some(d), .. } if d.as_secs() == 2)
        );
    }
}
