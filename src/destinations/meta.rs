//! Meta Conversions API: `POST {base}/{api_version}/{pixel_id}/events`, the access token in the
//! JSON body
//! (reference/destination-apis.md §1, fixture §8.2).

use serde_json::{json, Map, Value};

use super::hashing::meta as h;
use super::{
    classify_status, copy_renamed, event_seconds, excerpt, insert_some, items_of, Built,
    Destination, HttpRequest, HttpResponse, Outcome, SettingsError, SettingsReader, Subject,
};
use crate::config::Secret;

pub const DEFAULT_API_VERSION: &str = "v23.0";
/// Meta's `action_source` values (the SDK's enum).
pub const ACTION_SOURCES: [&str; 8] = [
    "email",
    "website",
    "app",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "other",
];

#[derive(Debug, Clone)]
pub struct MetaSettings {
    pub pixel_id: String,
    pub access_token: Secret,
    pub api_version: String,
    pub test_event_code: Option<String>,
    /// `website` unless set; an event without a page URL or user agent cannot be a website
    /// event for Meta, and goes as `other` instead of being rejected.
    pub action_source: String,
}

impl MetaSettings {
    pub fn read(r: &SettingsReader<'_>) -> Result<MetaSettings, SettingsError> {
        r.deny_unknown(&[
            "pixel_id",
            "access_token",
            "api_version",
            "test_event_code",
            "action_source",
        ])?;
        let pixel_id = r.required_str("pixel_id")?;
        if !pixel_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(r.error(
                "pixel_id",
                format!("`{pixel_id}` must be the numeric pixel (dataset) id"),
            ));
        }
        let api_version = r
            .optional_str("api_version")?
            .unwrap_or_else(|| DEFAULT_API_VERSION.into());
        if !api_version.starts_with('v') {
            return Err(r.error("api_version", "must look like v23.0"));
        }
        let action_source = r
            .optional_str("action_source")?
            .unwrap_or_else(|| "website".into());
        if !ACTION_SOURCES.contains(&action_source.as_str()) {
            return Err(r.error(
                "action_source",
                format!("expected one of {}", ACTION_SOURCES.join(", ")),
            ));
        }
        Ok(MetaSettings {
            pixel_id,
            access_token: r.required_secret("access_token")?,
            api_version,
            test_event_code: r.optional_str("test_event_code")?,
            action_source,
        })
    }
}

fn list(value: Option<String>) -> Option<Value> {
    value.map(|v| json!([v]))
}

/// One `data[]` entry, or why the event cannot go to Meta.
pub fn server_event(settings: &MetaSettings, item: &Subject) -> Result<Value, String> {
    let Subject::Event {
        event,
        destination_event,
        ..
    } = item
    else {
        return Err("Meta receives events, not profiles".into());
    };
    let user = &event.user;
    let country = user.country.as_deref();
    let mut user_data = Map::new();
    let hashed = [
        ("em", user.email.as_deref().and_then(h::email)),
        (
            "ph",
            user.phone.as_deref().and_then(|p| h::phone(p, country)),
        ),
        ("fn", user.first_name.as_deref().and_then(h::name)),
        ("ln", user.last_name.as_deref().and_then(h::name)),
        ("ct", user.city.as_deref().and_then(h::city)),
        ("st", user.state.as_deref().and_then(h::state)),
        (
            "zp",
            user.postal_code.as_deref().and_then(|z| h::zip(z, country)),
        ),
        ("country", country.and_then(h::country)),
        (
            "external_id",
            user.user_id.as_deref().and_then(h::external_id),
        ),
    ];
    for (key, value) in hashed {
        if let Some(v) = list(value) {
            user_data.insert(key.into(), v);
        }
    }
    let ctx = &event.context;
    let raw = [
        ("client_ip_address", ctx.ip.clone()),
        ("client_user_agent", ctx.user_agent.clone()),
        ("fbc", ctx.click_ids.get("fbc").cloned()),
        ("fbp", ctx.click_ids.get("fbp").cloned()),
    ];
    for (key, value) in raw {
        insert_some(&mut user_data, key, value);
    }
    if user_data.is_empty() {
        return Err("no customer information to match on (email, phone, external_id, ip + user agent, fbc/fbp); forward userId, email or phone from the source".into());
    }

    let props = &event.properties;
    let mut custom = Map::new();
    copy_renamed(
        props,
        &mut custom,
        &[
            ("currency", "currency"),
            ("value", "value"),
            ("order_id", "order_id"),
            ("num_items", "num_items"),
            ("search_string", "search_string"),
        ],
    );
    let items = items_of(event);
    if !items.is_empty() {
        custom.insert("content_type".into(), json!("product"));
        let ids: Vec<Value> = items
            .iter()
            .filter_map(|i| i.get("item_id").cloned())
            .collect();
        custom.insert("content_ids".into(), Value::Array(ids));
        let contents: Vec<Value> = items
            .iter()
            .map(|item| {
                let mut content = Map::new();
                copy_renamed(
                    item,
                    &mut content,
                    &[
                        ("item_id", "id"),
                        ("quantity", "quantity"),
                        ("price", "item_price"),
                    ],
                );
                Value::Object(content)
            })
            .collect();
        custom.insert("contents".into(), Value::Array(contents));
    }
    if destination_event == "Purchase"
        && (!custom.contains_key("currency") || !custom.contains_key("value"))
    {
        return Err("Meta requires currency and value on Purchase".into());
    }

    let website = settings.action_source == "website";
    let action_source = if website && (ctx.page_url.is_none() || ctx.user_agent.is_none()) {
        "other"
    } else {
        settings.action_source.as_str()
    };
    let mut out = Map::new();
    out.insert("event_name".into(), json!(destination_event));
    out.insert("event_time".into(), json!(event_seconds(event)));
    // The dedup key (order id, else messageId) so a browser Pixel can send the same eventID.
    out.insert("event_id".into(), json!(event.dedup_key));
    if let Some(url) = &ctx.page_url {
        out.insert("event_source_url".into(), json!(url));
    }
    out.insert("action_source".into(), json!(action_source));
    out.insert("user_data".into(), Value::Object(user_data));
    if !custom.is_empty() {
        out.insert("custom_data".into(), Value::Object(custom));
    }
    out.insert("opt_out".into(), json!(false));
    out.insert("data_processing_options".into(), json!([]));
    Ok(Value::Object(out))
}

pub fn build(dest: &Destination, settings: &MetaSettings, items: &[Subject]) -> Built {
    let mut data = Vec::new();
    let mut built = Built::default();
    for (i, item) in items.iter().enumerate() {
        match server_event(settings, item) {
            Ok(v) => {
                data.push(v);
                built.included.push(i);
            }
            Err(reason) => built.rejected.push((i, reason)),
        }
    }
    if data.is_empty() {
        return built;
    }
    let mut body = json!({ "data": data });
    if let Some(code) = &settings.test_event_code {
        body["test_event_code"] = json!(code);
    }
    // In the body, not the URL (Meta takes it as a form field too): a URL ends up in error
    // texts, and a token there would be stored and shown with them.
    body["access_token"] = json!(settings.access_token.expose());
    let url = format!(
        "{}/{}/{}/events",
        dest.base_url, settings.api_version, settings.pixel_id,
    );
    built.request = Some(HttpRequest::json(
        url,
        vec![("Content-Type".into(), "application/json".into())],
        &body,
    ));
    built
}

/// A 2xx is only as good as its `events_received`: fewer than were sent means Meta dropped
/// some without saying which, so the batch goes again (Meta dedups on event_id + event_name,
/// so the ones it kept are not counted twice).
fn received_outcome(sent: usize, received: Option<u64>, cut: bool) -> Outcome {
    match received {
        Some(n) if n as usize == sent => Outcome::Delivered {
            note: Some(format!("events_received {n}")),
        },
        Some(n) => Outcome::retry(format!(
            "Meta answered 2xx but received {n} of {sent} events; sending the batch again (Meta dedups on event_id)"
        )),
        None if cut => Outcome::Delivered {
            note: Some("2xx; the answer was cut at max_response_bytes, so events_received was not read".into()),
        },
        None => Outcome::Delivered {
            note: Some("2xx without events_received".into()),
        },
    }
}

/// Meta answers 2xx with `events_received`, or a Graph error; classify on its code/subcode.
pub fn classify(count: usize, response: &HttpResponse) -> Vec<Outcome> {
    if (200..300).contains(&response.status) {
        let received = serde_json::from_str::<Value>(&response.body)
            .ok()
            .and_then(|v| v.get("events_received").and_then(Value::as_u64));
        return vec![received_outcome(count, received, response.cut); count];
    }
    let parsed: Option<Value> = serde_json::from_str(&response.body).ok();
    let Some(error) = parsed.as_ref().and_then(|v| v.get("error")) else {
        return vec![classify_status(response, "Meta"); count];
    };
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    let subcode = error.get("error_subcode").and_then(Value::as_i64);
    let title = error
        .get("error_user_title")
        .or_else(|| error.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let transient = error.get("is_transient").and_then(Value::as_bool) == Some(true);
    let reason = format!(
        "Meta error {code}{}: {title}",
        subcode.map(|s| format!("/{s}")).unwrap_or_default()
    );
    let outcome = match code {
        1 | 2 | 4 | 17 | 341 | 613 | 80003 => Outcome::Retry {
            reason,
            after: response.retry_after,
        },
        _ if transient => Outcome::Retry {
            reason,
            after: response.retry_after,
        },
        190 | 102 => Outcome::Misconfigured {
            reason: format!("{reason} (the access token is invalid or expired; renew it)"),
        },
        _ if response.status >= 500 => Outcome::Retry {
            reason: format!("{reason}: {}", excerpt(&response.body)),
            after: response.retry_after,
        },
        _ => Outcome::permanent(reason),
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
            DestinationKind::MetaCapi,
            "pixel_id = \"1234567890123456\"\naccess_token = \"EAAB_TEST_TOKEN\"\napi_version = \"v21.0\"\ntest_event_code = \"TEST12345\"",
        )
    }

    #[test]
    fn reference_fixture_purchase() {
        let d = dest();
        let built =
            super::super::build(&d, &[fixture::subject(fixture::purchase(), "Purchase")], 0);
        let request = built.request.unwrap();
        // No credential in the URL: errors quote URLs.
        assert_eq!(
            request.url,
            "https://graph.facebook.com/v21.0/1234567890123456/events"
        );
        let mut body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["access_token"], "EAAB_TEST_TOKEN");
        assert!(!d
            .redact(&String::from_utf8_lossy(&request.body))
            .contains("EAAB_TEST_TOKEN"));
        body.as_object_mut().unwrap().remove("access_token");
        let expected: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/destinations/meta_purchase.json"
        ))
        .unwrap();
        assert_eq!(body, expected);
    }

    #[test]
    fn purchase_without_value_is_refused_before_sending() {
        let mut event = fixture::purchase();
        event.properties.remove("value");
        let built = super::super::build(&dest(), &[fixture::subject(event, "Purchase")], 0);
        assert!(built.request.is_none());
        assert_eq!(
            built.rejected[0].1,
            "Meta requires currency and value on Purchase"
        );
    }

    #[test]
    fn blank_ip_and_user_agent_are_not_something_to_match_on() {
        let mut event = fixture::purchase();
        event.user = Default::default();
        event.context.ip = Some(String::new());
        event.context.user_agent = Some("  ".into());
        event.context.click_ids.clear();
        let built = super::super::build(&dest(), &[fixture::subject(event, "Purchase")], 0);
        assert!(built.request.is_none());
        assert!(
            built.rejected[0].1.starts_with("no customer information"),
            "{}",
            built.rejected[0].1
        );
    }

    #[test]
    fn classifies_graph_errors() {
        let r = |status, body: &str| HttpResponse {
            status,
            retry_after: None,
            body: body.into(),
            cut: false,
            rate_limit_wait: None,
        };
        assert_eq!(
            classify(
                2,
                &r(
                    200,
                    r#"{"events_received":2,"messages":[],"fbtrace_id":"x"}"#
                )
            )[0],
            Outcome::Delivered {
                note: Some("events_received 2".into())
            }
        );
        // Fewer received than sent: the batch goes again, and Meta's dedup keeps it single.
        assert!(matches!(
            &classify(3, &r(200, r#"{"events_received":2}"#))[0],
            Outcome::Retry { reason, .. } if reason.contains("received 2 of 3")
        ));
        let too_old = r(
            400,
            r#"{"error":{"message":"Invalid parameter","type":"OAuthException","code":100,"error_subcode":2804003,"is_transient":false,"error_user_title":"Event Timestamp Too Old"}}"#,
        );
        assert_eq!(
            classify(1, &too_old)[0],
            Outcome::permanent("Meta error 100/2804003: Event Timestamp Too Old")
        );
        let token = r(
            400,
            r#"{"error":{"message":"The access token could not be decrypted","type":"OAuthException","code":190}}"#,
        );
        assert!(
            matches!(&classify(1, &token)[0], Outcome::Misconfigured { reason } if reason.contains("renew"))
        );
        let throttled = r(
            400,
            r#"{"error":{"message":"User request limit reached","code":17,"error_subcode":2446079}}"#,
        );
        assert!(matches!(classify(1, &throttled)[0], Outcome::Retry { .. }));
        assert!(matches!(
            classify(1, &r(503, "<html>down</html>"))[0],
            Outcome::Retry { .. }
        ));
    }
}
