//! TikTok Events API 2.0: `POST {base}/open_api/v1.3/event/track/` (reference §4, §8.6).
//! Errors come back as HTTP 200 with a non-zero `code`.

use serde_json::{json, Map, Value};

use super::hashing::tiktok as h;
use super::{
    classify_status, copy_renamed, event_seconds, insert_some, items_of, Built, Destination,
    HttpRequest, HttpResponse, Outcome, SettingsError, SettingsReader, Subject,
};
use crate::config::Secret;

#[derive(Debug, Clone)]
pub struct TiktokSettings {
    pub pixel_code: String,
    pub access_token: Secret,
    pub test_event_code: Option<String>,
    pub event_source: String,
}

impl TiktokSettings {
    pub fn read(r: &SettingsReader<'_>) -> Result<TiktokSettings, SettingsError> {
        r.deny_unknown(&[
            "pixel_code",
            "access_token",
            "test_event_code",
            "event_source",
        ])?;
        let event_source = r
            .optional_str("event_source")?
            .unwrap_or_else(|| "web".into());
        if !["web", "app", "offline", "crm"].contains(&event_source.as_str()) {
            return Err(r.error("event_source", "expected web, app, offline or crm"));
        }
        Ok(TiktokSettings {
            pixel_code: r.required_str("pixel_code")?,
            access_token: r.required_secret("access_token")?,
            test_event_code: r.optional_str("test_event_code")?,
            event_source,
        })
    }
}

fn event(item: &Subject) -> Result<Value, String> {
    let Subject::Event {
        event,
        destination_event,
        ..
    } = item
    else {
        return Err("TikTok receives events, not profiles".into());
    };
    let u = &event.user;
    let ctx = &event.context;
    let mut user = Map::new();
    let fields = [
        ("email", u.email.as_deref().and_then(h::email)),
        (
            "phone",
            u.phone
                .as_deref()
                .and_then(|p| h::phone(p, u.country.as_deref())),
        ),
        ("external_id", u.user_id.as_deref().and_then(h::external_id)),
        ("ttclid", ctx.click_ids.get("ttclid").cloned()),
        ("ttp", ctx.click_ids.get("ttp").cloned()),
        ("ip", ctx.ip.clone()),
        ("user_agent", ctx.user_agent.clone()),
        ("locale", ctx.locale.clone()),
    ];
    for (key, value) in fields {
        insert_some(&mut user, key, value);
    }
    if user.is_empty() {
        return Err("no identifier TikTok can match (email, phone, external_id, ttclid, ttp, ip + user agent)".into());
    }
    let props = &event.properties;
    let mut properties = Map::new();
    copy_renamed(
        props,
        &mut properties,
        &[
            ("currency", "currency"),
            ("value", "value"),
            ("order_id", "order_id"),
            ("search_string", "query"),
        ],
    );
    let items = items_of(event);
    if !items.is_empty() {
        properties.insert("content_type".into(), json!("product"));
        let contents: Vec<Value> = items
            .iter()
            .map(|item| {
                let mut content = Map::new();
                copy_renamed(
                    item,
                    &mut content,
                    &[
                        ("item_id", "content_id"),
                        ("name", "content_name"),
                        ("quantity", "quantity"),
                        ("price", "price"),
                    ],
                );
                // content_id must be a string (40002 "Not a valid string" otherwise).
                if let Some(id) = content.get_mut("content_id") {
                    if !id.is_string() {
                        *id = Value::String(id.to_string());
                    }
                }
                Value::Object(content)
            })
            .collect();
        properties.insert("contents".into(), Value::Array(contents));
    }
    let mut out = Map::new();
    out.insert("event".into(), json!(destination_event));
    out.insert("event_time".into(), json!(event_seconds(event)));
    out.insert("event_id".into(), json!(event.dedup_key));
    out.insert("user".into(), Value::Object(user));
    out.insert("properties".into(), Value::Object(properties));
    if ctx.page_url.is_some() || ctx.referrer.is_some() {
        let mut page = Map::new();
        if let Some(url) = &ctx.page_url {
            page.insert("url".into(), json!(url));
        }
        if let Some(r) = &ctx.referrer {
            page.insert("referrer".into(), json!(r));
        }
        out.insert("page".into(), Value::Object(page));
    }
    out.insert("limited_data_use".into(), json!(false));
    Ok(Value::Object(out))
}

pub fn build(dest: &Destination, settings: &TiktokSettings, items: &[Subject]) -> Built {
    let mut built = Built::default();
    let mut data = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match event(item) {
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
    let mut body = Map::new();
    body.insert("event_source".into(), json!(settings.event_source));
    body.insert("event_source_id".into(), json!(settings.pixel_code));
    body.insert("partner_name".into(), json!("TrackLayer"));
    if let Some(code) = &settings.test_event_code {
        body.insert("test_event_code".into(), json!(code));
    }
    body.insert("data".into(), Value::Array(data));
    built.request = Some(HttpRequest::json(
        format!("{}/open_api/v1.3/event/track/", dest.base_url),
        vec![
            (
                "Access-Token".into(),
                settings.access_token.expose().to_string(),
            ),
            ("Content-Type".into(), "application/json".into()),
        ],
        &Value::Object(body),
    ));
    built
}

pub fn classify(count: usize, response: &HttpResponse) -> Vec<Outcome> {
    if !(200..300).contains(&response.status) {
        return vec![classify_status(response, "TikTok"); count];
    }
    let parsed: Option<Value> = serde_json::from_str(&response.body).ok();
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("code"))
        .and_then(Value::as_i64);
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let outcome = match code {
        Some(0) => Outcome::Delivered { note: None },
        Some(20001) => Outcome::Delivered {
            note: Some(format!("partial success (20001): {message}")),
        },
        Some(40100) | Some(40700) => Outcome::Retry {
            reason: format!("TikTok {}: {message}", code.unwrap_or_default()),
            after: response.retry_after,
        },
        Some(40105) => Outcome::permanent(format!(
            "TikTok 40105: {message} (the access token is missing or wrong)"
        )),
        Some(c) => Outcome::permanent(format!("TikTok {c}: {message}")),
        None => Outcome::retry(format!(
            "TikTok answered HTTP {} without a code",
            response.status
        )),
    };
    vec![outcome; count]
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;
    use crate::config::DestinationKind;

    #[test]
    fn reference_fixture_purchase() {
        let dest = fixture::destination(
            DestinationKind::Tiktok,
            "pixel_code = \"CABCDEF1234567890XYZ\"\naccess_token = \"TT_TEST_TOKEN\"\ntest_event_code = \"TEST12345\"",
        );
        let built = super::super::build(
            &dest,
            &[fixture::subject(fixture::purchase(), "Purchase")],
            0,
        );
        let request = built.request.unwrap();
        assert_eq!(
            request.url,
            "https://business-api.tiktok.com/open_api/v1.3/event/track/"
        );
        assert!(request
            .redacted_headers()
            .contains(&("Access-Token".into(), "REDACTED".into())));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let expected: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/destinations/tiktok_purchase.json"
        ))
        .unwrap();
        assert_eq!(body, expected);
    }

    #[test]
    fn numeric_product_ids_are_sent_as_strings_and_absent_fields_stay_absent() {
        let dest = fixture::destination(
            DestinationKind::Tiktok,
            "pixel_code = \"CABCDEF1234567890XYZ\"\naccess_token = \"TT_TEST_TOKEN\"",
        );
        let mut purchase = fixture::purchase();
        purchase.properties.insert(
            "items".into(),
            serde_json::json!([{"item_id": 123456, "price": 10.0}, {"name": "No id"}]),
        );
        let built = super::super::build(&dest, &[fixture::subject(purchase, "Purchase")], 0);
        let body: Value = serde_json::from_slice(&built.request.unwrap().body).unwrap();
        let contents = &body["data"][0]["properties"]["contents"];
        assert_eq!(
            contents,
            &serde_json::json!([
                {"content_id": "123456", "price": 10.0},
                {"content_name": "No id"}
            ])
        );
    }

    #[test]
    fn codes_in_a_200() {
        let r = |body: &str| HttpResponse {
            status: 200,
            retry_after: None,
            body: body.into(),
            cut: false,
            rate_limit_wait: None,
        };
        assert_eq!(
            classify(1, &r(r#"{"code":0,"message":"OK"}"#))[0],
            Outcome::Delivered { note: None }
        );
        assert!(matches!(
            classify(1, &r(r#"{"code":40100,"message":"Too many requests."}"#))[0],
            Outcome::Retry { .. }
        ));
        assert_eq!(
            classify(
                1,
                &r(
                    r#"{"code":40002,"message":"Batch.0.properties.contents.0.content_id: Not a valid string"}"#
                )
            )[0],
            Outcome::permanent(
                "TikTok 40002: Batch.0.properties.contents.0.content_id: Not a valid string"
            )
        );
        assert!(matches!(
            classify(
                1,
                &HttpResponse {
                    status: 502,
                    retry_after: None,
                    body: "<html>".into(),
                    cut: false,
                    rate_limit_wait: None,
                }
            )[0],
            Outcome::Retry { .. }
        ));
    }
}
