//! Google Ads through the Data Manager API: `POST {endpoint}/v1/events:ingest`
//! (`IngestEventsRequest`, reference/platforms-2026.md §1). Conversion actions are
//! `productDestinationId`s of the account that owns them; identifiers are SHA-256 in hex;
//! up to 2,000 events a request. The API fails fast (one bad event refuses the request), so the
//! classifier names the bad event from the error's field path and the rest are sent again.
//! Refunds restate the purchase's conversion, matched on its `transactionId`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::{json, Map, Value};

use super::GoogleSettings;
use crate::destinations::hashing::google as h;
use crate::destinations::{
    classify_status, excerpt, Built, Destination, HttpRequest, HttpResponse, Outcome, Subject,
};
use crate::pipeline::CanonicalEvent;

/// The most events one `IngestEventsRequest` takes.
pub const MAX_EVENTS: usize = 2000;

/// RFC 3339 in UTC, as `eventTimestamp` takes it.
pub fn timestamp(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn consent_value(granted: bool) -> &'static str {
    if granted {
        "CONSENT_GRANTED"
    } else {
        "CONSENT_DENIED"
    }
}

/// The hashed identifiers Google matches on: email, phone, and a name + address when all four
/// parts it needs are known.
fn user_identifiers(event: &CanonicalEvent) -> Vec<Value> {
    let user = &event.user;
    let mut ids = Vec::new();
    if let Some(email) = user.email.as_deref().and_then(h::email) {
        ids.push(json!({ "emailAddress": email }));
    }
    if let Some(phone) = user
        .phone
        .as_deref()
        .and_then(|p| h::phone(p, user.country.as_deref()))
    {
        ids.push(json!({ "phoneNumber": phone }));
    }
    let address = (|| {
        let given = h::name(user.first_name.as_deref()?)?;
        let family = h::name(user.last_name.as_deref()?)?;
        let region = crate::destinations::hashing::country_code(user.country.as_deref()?);
        let postal = user.postal_code.as_deref()?.trim().to_string();
        (region.len() == 2 && !postal.is_empty()).then(|| {
            json!({"address": {"givenName": given, "familyName": family, "regionCode": region.to_ascii_uppercase(), "postalCode": postal}})
        })
    })();
    ids.extend(address);
    ids
}

/// What one event becomes: the conversion action it counts for, and the `Event` object.
fn ingest_event(
    dest: &Destination,
    settings: &GoogleSettings,
    item: &Subject,
) -> Result<(String, Value), String> {
    let Subject::Event { event, .. } = item else {
        return Err("Google Ads receives conversions, not profiles".into());
    };
    let mut row = Map::new();
    // A refund restates the purchase it refunds: same conversion action and transactionId,
    // the value that is left (0 for a whole refund). Sent only where the purchase went, since
    // an adjustment that matches nothing is recorded as a new conversion.
    let (action_name, transaction_id, value, currency, event_ms) = if event.name == "refund" {
        let Some(order) = &event.refunds else {
            let order = event
                .properties
                .get("order_id")
                .and_then(Value::as_str)
                .unwrap_or("(none)");
            return Err(format!(
                "no purchase with order_id {order} was recorded here, so there is no conversion to adjust; Google would record an unmatched adjustment as a new conversion"
            ));
        };
        if !order.routed_to.iter().any(|d| d == &dest.name) {
            return Err(format!(
                "the purchase of order {} was not sent to {} ({}), so there is no conversion to adjust",
                order.order_id,
                dest.name,
                if order.routed_to.is_empty() {
                    "it went nowhere".to_string()
                } else {
                    format!("it went to {}", order.routed_to.join(", "))
                }
            ));
        }
        let refunded = event.properties.get("value").and_then(Value::as_f64);
        row.insert(
            "lastUpdatedTimestamp".into(),
            json!(timestamp(event.event_time_ms)),
        );
        (
            "purchase".to_string(),
            order.order_id.clone(),
            Some(json!(order.remaining_value(refunded))),
            order.currency.clone().or_else(|| {
                event
                    .properties
                    .get("currency")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }),
            order.event_time_ms,
        )
    } else {
        (
            event.name.clone(),
            event.dedup_key.clone(),
            event.properties.get("value").cloned(),
            event
                .properties
                .get("currency")
                .and_then(Value::as_str)
                .map(str::to_string),
            event.event_time_ms,
        )
    };
    settings
        .conversion_actions
        .get(&action_name)
        .ok_or_else(|| format!("no conversion action for `{action_name}` in conversion_actions"))?;
    row.insert("transactionId".into(), json!(transaction_id));
    row.insert("eventTimestamp".into(), json!(timestamp(event_ms)));
    row.insert("eventSource".into(), json!(settings.event_source));
    if let Some(v) = value {
        row.insert("conversionValue".into(), v);
    }
    if let Some(c) = currency {
        row.insert("currency".into(), json!(c));
    }
    let click = ["gclid", "gbraid", "wbraid"]
        .into_iter()
        .find_map(|k| event.context.click_ids.get(k).map(|v| (k, v)));
    if let Some((key, value)) = click {
        row.insert("adIdentifiers".into(), json!({ key: value }));
    }
    let identifiers = user_identifiers(event);
    if click.is_none() && identifiers.is_empty() {
        return Err("no gclid, gbraid or wbraid and no email, phone or name and address: Google cannot attribute it; forward the click id (context.page.url or properties.gclid) or identify the user".into());
    }
    if !identifiers.is_empty() {
        row.insert("userData".into(), json!({ "userIdentifiers": identifiers }));
    }
    let consent = event.consent.as_ref();
    let mut signals = Map::new();
    if let Some(granted) = settings.consent_signal(consent, &settings.ad_user_data_category) {
        signals.insert("adUserData".into(), json!(consent_value(granted)));
    }
    if let Some(granted) = settings.consent_signal(consent, &settings.ad_personalization_category) {
        signals.insert("adPersonalization".into(), json!(consent_value(granted)));
    }
    if !signals.is_empty() {
        row.insert("consent".into(), Value::Object(signals));
    }
    let mut device = Map::new();
    crate::destinations::insert_some(&mut device, "userAgent", event.context.user_agent.clone());
    crate::destinations::insert_some(&mut device, "ipAddress", event.context.ip.clone());
    if !device.is_empty() {
        row.insert("eventDeviceInfo".into(), Value::Object(device));
    }
    Ok((action_name, Value::Object(row)))
}

pub fn build(dest: &Destination, settings: &GoogleSettings, items: &[Subject]) -> Built {
    let mut built = Built::default();
    let mut events: Vec<(String, Value)> = Vec::new();
    // A controlled test's events are validated only (never recorded): not mixed with live ones.
    let mut test_request: Option<bool> = None;
    for (i, item) in items.iter().enumerate() {
        let is_test = matches!(item, Subject::Event { event, .. } if event.test_send);
        if events.len() >= MAX_EVENTS || test_request.is_some_and(|t| t != is_test) {
            built.deferred.push(i);
            continue;
        }
        match ingest_event(dest, settings, item) {
            Ok((action, row)) => {
                // Two events with one transactionId for one conversion action in a request
                // are for Google to reconcile in order, not at once: the second waits.
                let transaction = row.get("transactionId");
                if events
                    .iter()
                    .any(|(a, r)| a == &action && r.get("transactionId") == transaction)
                {
                    built.deferred.push(i);
                    continue;
                }
                events.push((action, row));
                test_request.get_or_insert(is_test);
                built.included.push(i);
            }
            Err(reason) => built.rejected.push((i, reason)),
        }
    }
    if events.is_empty() {
        return built;
    }
    // One Destination per conversion action used; references only when there are several.
    let mut used: Vec<&str> = events.iter().map(|(a, _)| a.as_str()).collect();
    used.sort_unstable();
    used.dedup();
    let several = used.len() > 1;
    let destinations: Vec<Value> = used
        .iter()
        .map(|action| {
            let mut d = Map::new();
            if several {
                d.insert("reference".into(), json!(action));
            }
            d.insert(
                "operatingAccount".into(),
                json!({"accountType": "GOOGLE_ADS", "accountId": settings.customer_id}),
            );
            if let Some(login) = &settings.login_customer_id {
                d.insert(
                    "loginAccount".into(),
                    json!({"accountType": "GOOGLE_ADS", "accountId": login}),
                );
            }
            d.insert(
                "productDestinationId".into(),
                json!(settings.conversion_actions.get(*action)),
            );
            Value::Object(d)
        })
        .collect();
    let has_user_data = events.iter().any(|(_, r)| r.get("userData").is_some());
    let events: Vec<Value> = events
        .into_iter()
        .map(|(action, mut row)| {
            if several {
                row["destinationReferences"] = json!([action]);
            }
            row
        })
        .collect();
    let mut body = json!({
        "destinations": destinations,
        "events": events,
        "validateOnly": settings.validate_only || test_request == Some(true),
    });
    if has_user_data {
        body["encoding"] = json!("HEX");
    }
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    // With a refresh token, the sender adds the access token it holds at sending time.
    if let Some(token) = settings.auth.static_token() {
        headers.push((
            "Authorization".to_string(),
            format!("Bearer {}", token.expose()),
        ));
    }
    built.request = Some(HttpRequest::json(
        format!("{}/v1/events:ingest", dest.base_url),
        headers,
        &body,
    ));
    built
}

/// The event index a field path names (`events[12].conversion_value`, `events.events[3]`).
fn event_index(field: &str) -> Option<usize> {
    let at = field.find("events[")? + "events[".len();
    let rest = &field[at..];
    rest[..rest.find(']')?].parse().ok()
}

/// The field violations of a google.rpc.BadRequest detail: (field, description).
fn violations(error: &Value) -> Vec<(String, String)> {
    error
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("fieldViolations").and_then(Value::as_array))
        .flatten()
        .map(|v| {
            let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (text("field"), text("description"))
        })
        .collect()
}

pub fn classify(settings: &GoogleSettings, count: usize, response: &HttpResponse) -> Vec<Outcome> {
    let parsed: Option<Value> = serde_json::from_str(&response.body).ok();
    if (200..300).contains(&response.status) {
        let request_id = parsed
            .as_ref()
            .and_then(|v| v.get("requestId"))
            .and_then(Value::as_str);
        // A request that was only validated (the test mode, or a controlled test's events)
        // ingested nothing, so it has no requestId to ask about.
        let note = match request_id {
            Some(id) => format!("requestId {id}"),
            None => {
                "validated only (validateOnly): Google checked the request and recorded nothing"
                    .to_string()
            }
        };
        return vec![Outcome::Delivered { note: Some(note) }; count];
    }
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let status = error
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| excerpt(&response.body));
    match (response.status, status) {
        (401, _) | (_, "UNAUTHENTICATED") => vec![
            Outcome::Misconfigured {
                reason: format!("Google refused the token (HTTP {}: {message}): the Data Manager API takes an OAuth access token with the https://www.googleapis.com/auth/datamanager scope", response.status),
            };
            count
        ],
        (403, _) | (_, "PERMISSION_DENIED") => vec![
            Outcome::Misconfigured {
                reason: format!("Google denied access (HTTP {}: {message}): the token's user needs access to account {} (the one that owns the conversion actions; set login_customer_id when access comes through a manager account)", response.status, settings.customer_id),
            };
            count
        ],
        (429, _) | (_, "RESOURCE_EXHAUSTED") => vec![
            Outcome::Retry {
                reason: format!(
                    "Data Manager API quota exhausted (HTTP {}); backing off",
                    response.status
                ),
                // Google's guidance: at least 30 s after a 429.
                after: Some(
                    response
                        .retry_after
                        .unwrap_or(Duration::from_secs(30))
                        .max(Duration::from_secs(30)),
                ),
            };
            count
        ],
        (400, _) | (_, "INVALID_ARGUMENT") => {
            let mut named: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for (field, description) in error.map(violations).unwrap_or_default() {
                if let Some(i) = event_index(&field).filter(|i| *i < count) {
                    named
                        .entry(i)
                        .or_default()
                        .push(format!("{field}: {description}"));
                }
            }
            if named.is_empty() {
                // Not tied to an event: the same refusal for all (resent one by one when
                // there are several, so the bad one is found).
                return vec![
                    Outcome::permanent(format!("Data Manager API HTTP 400 {status}: {message}"));
                    count
                ];
            }
            (0..count)
                .map(|i| match named.get(&i) {
                    Some(problems) => Outcome::permanent(format!(
                        "Data Manager API refused this event: {}",
                        problems.join("; ")
                    )),
                    None => Outcome::Resend {
                        reason: format!(
                            "the request was refused for another event ({}; the API fails fast); sent again without it",
                            named
                                .keys()
                                .map(|i| format!("events[{i}]"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    },
                })
                .collect()
        }
        _ => vec![classify_status(response, "Data Manager API"); count],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DestinationKind;
    use crate::destinations::{fixture, Settings};
    use crate::pipeline::RefundedOrder;

    fn dest(extra: &str) -> Destination {
        fixture::destination(
            DestinationKind::GoogleAds,
            &format!("customer_id = \"123-456-7890\"\nconversion_actions = {{ purchase = \"555000111\", lead = \"555000222\" }}\naccess_token = \"ya29.TEST\"\nlogin_customer_id = \"9876543210\"\n{extra}"),
        )
    }

    fn settings(d: &Destination) -> &GoogleSettings {
        match &d.settings {
            Settings::GoogleAds(s) => s,
            _ => panic!("not google"),
        }
    }

    fn body_of(built: &Built) -> Value {
        serde_json::from_slice(&built.request.as_ref().expect("a request").body).expect("json")
    }

    #[test]
    fn the_reference_purchase_as_an_ingest_request() {
        let mut event = fixture::purchase();
        event.consent = Some(
            [
                ("Advertising".to_string(), true),
                ("Analytics".to_string(), false),
            ]
            .into_iter()
            .collect(),
        );
        let d = dest("");
        let built = crate::destinations::build(&d, &[fixture::subject(event, "purchase")], 0);
        let request = built.request.as_ref().unwrap();
        assert_eq!(
            request.url,
            "https://datamanager.googleapis.com/v1/events:ingest"
        );
        assert!(request
            .headers
            .contains(&("Authorization".into(), "Bearer ya29.TEST".into())));
        assert!(
            !request.headers.iter().any(|(k, _)| k == "developer-token"),
            "the Data Manager API takes no developer token"
        );
        let body = body_of(&built);
        let expected: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/destinations/google_data_manager_purchase.json"
        ))
        .unwrap();
        assert_eq!(body, expected);
    }

    #[test]
    fn several_conversion_actions_go_by_reference_and_test_mode_validates_only() {
        let mut lead = fixture::purchase();
        lead.name = "lead".into();
        lead.dedup_key = "msg-lead-1".into();
        let d = dest("validate_only = true\nevent_source = \"phone\"");
        let built = crate::destinations::build(
            &d,
            &[
                fixture::subject(fixture::purchase(), "purchase"),
                fixture::subject(lead, "lead"),
            ],
            0,
        );
        let body = body_of(&built);
        assert_eq!(body["validateOnly"], true);
        assert_eq!(body["destinations"][0]["reference"], "lead");
        assert_eq!(body["destinations"][0]["productDestinationId"], "555000222");
        assert_eq!(body["destinations"][1]["productDestinationId"], "555000111");
        assert_eq!(
            body["events"][0]["destinationReferences"],
            json!(["purchase"])
        );
        assert_eq!(body["events"][1]["destinationReferences"], json!(["lead"]));
        assert_eq!(body["events"][1]["eventSource"], "PHONE");
        // No consent on the events: the signals are left unspecified, not guessed.
        assert!(body["events"][0].get("consent").is_none());
    }

    #[test]
    fn the_same_order_twice_waits_and_unattributable_events_are_refused() {
        let mut anonymous = fixture::purchase();
        anonymous.dedup_key = "ORD-2".into();
        anonymous.context.click_ids.clear();
        anonymous.user = Default::default();
        let built = crate::destinations::build(
            &dest(""),
            &[
                fixture::subject(fixture::purchase(), "purchase"),
                fixture::subject(fixture::purchase(), "purchase"),
                fixture::subject(anonymous, "purchase"),
            ],
            0,
        );
        assert_eq!(built.included, [0]);
        assert_eq!(built.deferred, [1]);
        assert_eq!(built.rejected.len(), 1);
        assert!(
            built.rejected[0].1.starts_with("no gclid"),
            "{:?}",
            built.rejected
        );
    }

    fn refund(refunded: Option<f64>, routed_to: &[&str]) -> CanonicalEvent {
        let mut event = fixture::purchase();
        event.name = "refund".into();
        event.event_id = "ev_refund_1".into();
        event.event_time_ms += 86_400_000;
        event.properties = json!({"order_id": "ORD-10042", "currency": "USD"})
            .as_object()
            .cloned()
            .unwrap();
        if let Some(v) = refunded {
            event.properties.insert("value".into(), json!(v));
        }
        event.refunds = Some(RefundedOrder {
            event_id: "ev_purchase_0123456789abcdef01234567".into(),
            order_id: "ORD-10042".into(),
            value: Some(129.98),
            currency: Some("USD".into()),
            event_time: "2026-01-15T18:30:00.000Z".into(),
            event_time_ms: 1_768_501_800_000,
            routed_to: routed_to.iter().map(|s| s.to_string()).collect(),
        });
        event
    }

    #[test]
    fn refunds_restate_the_purchase_matched_on_its_transaction_id() {
        let d = dest("");
        let partial = body_of(&crate::destinations::build(
            &d,
            &[fixture::subject(
                refund(Some(49.99), &["google_ads"]),
                "refund",
            )],
            0,
        ));
        let event = &partial["events"][0];
        assert_eq!(event["transactionId"], "ORD-10042");
        assert_eq!(event["conversionValue"], json!(79.99));
        assert_eq!(event["eventTimestamp"], "2026-01-15T18:30:00Z");
        assert_eq!(event["lastUpdatedTimestamp"], "2026-01-16T18:30:00Z");
        assert_eq!(
            partial["destinations"][0]["productDestinationId"],
            "555000111"
        );
        let whole = body_of(&crate::destinations::build(
            &d,
            &[fixture::subject(refund(None, &["google_ads"]), "refund")],
            0,
        ));
        assert_eq!(whole["events"][0]["conversionValue"], json!(0.0));

        let elsewhere = crate::destinations::build(
            &d,
            &[fixture::subject(refund(None, &["meta"]), "refund")],
            0,
        );
        assert!(elsewhere.request.is_none());
        assert!(
            elsewhere.rejected[0].1.contains("not sent to google_ads"),
            "{:?}",
            elsewhere.rejected
        );
        let mut unknown = refund(None, &[]);
        unknown.refunds = None;
        let unknown = crate::destinations::build(&d, &[fixture::subject(unknown, "refund")], 0);
        assert!(
            unknown.rejected[0].1.contains("new conversion"),
            "{:?}",
            unknown.rejected
        );
    }

    #[test]
    fn a_refused_event_is_named_and_the_others_go_again() {
        let d = dest("");
        let body = r#"{"error":{"code":400,"message":"Request contains an invalid argument.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"events.events[2].ad_identifiers.gclid","description":"The gclid could not be decoded."}]}]}}"#;
        let out = classify(settings(&d), 4, &HttpResponse::new(400, body));
        assert_eq!(
            out[2],
            Outcome::permanent("Data Manager API refused this event: events.events[2].ad_identifiers.gclid: The gclid could not be decoded.")
        );
        for i in [0, 1, 3] {
            assert!(
                matches!(&out[i], Outcome::Resend { reason } if reason.contains("events[2]")),
                "{:?}",
                out[i]
            );
        }
        let unnamed = classify(
            settings(&d),
            2,
            &HttpResponse::new(
                400,
                r#"{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}"#,
            ),
        );
        assert!(unnamed
            .iter()
            .all(|o| matches!(o, Outcome::Permanent { .. })));
        let scope = classify(
            settings(&d),
            2,
            &HttpResponse::new(
                403,
                r#"{"error":{"code":403,"message":"Request had insufficient authentication scopes.","status":"PERMISSION_DENIED"}}"#,
            ),
        );
        assert!(
            matches!(&scope[0], Outcome::Misconfigured { reason } if reason.contains("1234567890"))
        );
        let ok = classify(
            settings(&d),
            2,
            &HttpResponse::new(200, r#"{"requestId":"r-1"}"#),
        );
        assert_eq!(
            ok[1],
            Outcome::Delivered {
                note: Some("requestId r-1".into())
            }
        );
        assert_eq!(event_index("events[17].transaction_id"), Some(17));
        assert_eq!(event_index("destinations[0]"), None);
    }

    #[test]
    fn an_old_config_is_told_what_changed() {
        let table: toml::Table = toml::from_str(
            "customer_id = \"1234567890\"\nconversion_actions = { purchase = \"1\" }\naccess_token = \"t\"\ndeveloper_token = \"DEV\"",
        )
        .unwrap();
        let config = crate::config::DestinationConfig {
            index: 2,
            name: "google".into(),
            kind: DestinationKind::GoogleAds,
            endpoint: None,
            environments: vec![],
            consent: vec![],
            retry_schedule: vec![1],
            settings: table.into_iter().collect(),
        };
        let err = Destination::from_config(
            2,
            &config,
            std::path::Path::new("."),
            &crate::config::EnvVars::new(&|_| None, &crate::config::Needs::Everything),
        )
        .unwrap_err();
        assert_eq!(err.key, "destinations[2].developer_token");
        assert!(err.reason.contains("google_ads_api"), "{}", err.reason);
        assert!(err.reason.contains("datamanager"), "{}", err.reason);
    }
}
