//! The legacy path: Google Ads API `customers/{id}:uploadClickConversions`
//! (reference/destination-apis.md §2, fixture §8.3): camelCase JSON, partialFailure always on,
//! per-row results. Closed to new adopters since 2026-06-15 (CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE).

use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use serde_json::{json, Map, Value};

use super::GoogleSettings;
use crate::config::Secret;
use crate::destinations::hashing::google as h;
use crate::destinations::{
    classify_status, Built, Destination, HttpRequest, HttpResponse, Outcome, SettingsError,
    SettingsReader, Subject,
};

pub const DEFAULT_API_VERSION: &str = "v21";
/// "Retry after 6 hours have passed" for TOO_RECENT_EVENT / TOO_RECENT_CONVERSION_ACTION.
pub const TOO_RECENT_DELAY: Duration = Duration::from_secs(6 * 3600);

/// What only the legacy path needs.
#[derive(Debug, Clone)]
pub struct AdsApiSettings {
    pub developer_token: Secret,
    pub api_version: String,
    /// UTC offset for conversionDateTime (the account's time zone), in minutes.
    pub utc_offset_minutes: i32,
}

impl AdsApiSettings {
    pub fn read(r: &SettingsReader<'_>) -> Result<AdsApiSettings, SettingsError> {
        let offset = r
            .optional_str("utc_offset")?
            .unwrap_or_else(|| "+00:00".into());
        let utc_offset_minutes = parse_offset(&offset)
            .ok_or_else(|| r.error("utc_offset", format!("`{offset}` must look like +01:00")))?;
        let developer_token = r.optional_secret("developer_token")?.ok_or_else(|| {
            r.error(
                "developer_token",
                "is required with api = \"google_ads_api\" (the legacy uploadClickConversions needs an allowlisted developer token); without one, leave `api` out to use the Data Manager API",
            )
        })?;
        Ok(AdsApiSettings {
            developer_token,
            api_version: r
                .optional_str("api_version")?
                .unwrap_or_else(|| DEFAULT_API_VERSION.into()),
            utc_offset_minutes,
        })
    }
}

fn parse_offset(text: &str) -> Option<i32> {
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = text[1..].split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 60 + m))
}

/// `yyyy-mm-dd hh:mm:ss+hh:mm` in the account's offset.
pub fn conversion_date_time(event_time_ms: i64, offset_minutes: i32) -> String {
    let offset = FixedOffset::east_opt(offset_minutes * 60)
        .unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset"));
    let utc: DateTime<Utc> = Utc
        .timestamp_millis_opt(event_time_ms)
        .single()
        .unwrap_or_default();
    utc.with_timezone(&offset)
        .format("%Y-%m-%d %H:%M:%S%:z")
        .to_string()
}

fn conversion(
    settings: &GoogleSettings,
    legacy: &AdsApiSettings,
    item: &Subject,
) -> Result<Value, String> {
    let Subject::Event {
        event,
        consent_source,
        ..
    } = item
    else {
        return Err("Google Ads receives conversions, not profiles".into());
    };
    let action = settings
        .conversion_actions
        .get(&event.name)
        .ok_or_else(|| {
            format!(
                "no conversion action for `{}` in conversion_actions",
                event.name
            )
        })?;
    let mut row = Map::new();
    let click = ["gclid", "gbraid", "wbraid"]
        .into_iter()
        .find_map(|k| event.context.click_ids.get(k).map(|v| (k, v)));
    if let Some((key, value)) = click {
        row.insert(key.into(), json!(value));
    }
    row.insert(
        "conversionAction".into(),
        json!(format!(
            "customers/{}/conversionActions/{action}",
            settings.customer_id
        )),
    );
    row.insert(
        "conversionDateTime".into(),
        json!(conversion_date_time(
            event.event_time_ms,
            legacy.utc_offset_minutes
        )),
    );
    if let Some(v) = event.properties.get("value") {
        row.insert("conversionValue".into(), v.clone());
    }
    if let Some(c) = event.properties.get("currency") {
        row.insert("currencyCode".into(), c.clone());
    }
    if let Some(o) = event.properties.get("order_id") {
        row.insert("orderId".into(), o.clone());
    }
    let mut identifiers = Vec::new();
    if let Some(email) = event.user.email.as_deref().and_then(h::email) {
        identifiers.push(json!({"userIdentifierSource": "FIRST_PARTY", "hashedEmail": email}));
    }
    if let Some(phone) = event
        .user
        .phone
        .as_deref()
        .and_then(|p| h::phone(p, event.user.country.as_deref()))
    {
        identifiers
            .push(json!({"userIdentifierSource": "FIRST_PARTY", "hashedPhoneNumber": phone}));
    }
    if click.is_none() && identifiers.is_empty() {
        return Err("no gclid, gbraid or wbraid and no email or phone: Google cannot attribute it; forward the click id (context.page.url or properties.gclid) or identify the user".into());
    }
    if !identifiers.is_empty() {
        row.insert("userIdentifiers".into(), Value::Array(identifiers));
    }
    // Consent was checked before routing; say so when the source told us (adUserData only:
    // adPersonalization is not allowed on click conversions).
    if consent_source != "none" {
        row.insert("consent".into(), json!({"adUserData": "GRANTED"}));
    }
    Ok(Value::Object(row))
}

pub fn build(
    dest: &Destination,
    settings: &GoogleSettings,
    legacy: &AdsApiSettings,
    items: &[Subject],
) -> Built {
    let mut built = Built::default();
    let mut rows = Vec::new();
    let mut seen_orders: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match conversion(settings, legacy, item) {
            Ok(row) => {
                // DUPLICATE_ORDER_ID in one request is our bug to avoid: send it next time.
                if let Some(order) = row.get("orderId").and_then(Value::as_str) {
                    if seen_orders.iter().any(|o| o == order) {
                        built.deferred.push(i);
                        continue;
                    }
                    seen_orders.push(order.to_string());
                }
                rows.push(row);
                built.included.push(i);
            }
            Err(reason) => built.rejected.push((i, reason)),
        }
    }
    if rows.is_empty() {
        return built;
    }
    let body = json!({
        "conversions": rows,
        "partialFailure": true,
        "validateOnly": settings.validate_only,
    });
    let mut headers = vec![(
        "developer-token".to_string(),
        legacy.developer_token.expose().to_string(),
    )];
    // With a refresh token, the sender adds the access token it holds at sending time.
    if let Some(token) = settings.auth.static_token() {
        headers.push((
            "Authorization".to_string(),
            format!("Bearer {}", token.expose()),
        ));
    }
    if let Some(login) = &settings.login_customer_id {
        headers.push(("login-customer-id".into(), login.clone()));
    }
    headers.push(("Content-Type".into(), "application/json".into()));
    built.request = Some(HttpRequest::json(
        format!(
            "{}/{}/customers/{}:uploadClickConversions",
            dest.base_url, legacy.api_version, settings.customer_id
        ),
        headers,
        &body,
    ));
    built
}

/// What one ConversionUploadError means for a row.
fn row_outcome(code: &str, message: &str) -> Outcome {
    match code {
        // A replay of an already recorded conversion: it is there, which is what we wanted.
        "ORDER_ID_ALREADY_IN_USE" | "CLICK_CONVERSION_ALREADY_EXISTS" => Outcome::Delivered {
            note: Some(format!("{code}: already recorded by Google")),
        },
        "TOO_RECENT_EVENT" | "TOO_RECENT_CONVERSION_ACTION" => Outcome::Retry {
            reason: format!("{code}: {message} (Google asks to retry after 6 hours)"),
            after: Some(TOO_RECENT_DELAY),
        },
        "TRANSIENT_ERROR" | "INTERNAL_ERROR" | "DEADLINE_EXCEEDED" => {
            Outcome::retry(format!("{code}: {message}"))
        }
        _ => Outcome::permanent(format!("{code}: {message}")),
    }
}

fn error_code(error: &Value) -> String {
    error
        .get("errorCode")
        .and_then(Value::as_object)
        .and_then(|codes| codes.values().next())
        .and_then(Value::as_str)
        .unwrap_or("UNKNOWN")
        .to_string()
}

/// Row index of a GoogleAdsError (`location.fieldPathElements[{fieldName:"conversions", index}]`).
fn row_index(error: &Value) -> Option<usize> {
    error
        .get("location")?
        .get("fieldPathElements")?
        .as_array()?
        .iter()
        .find(|e| e.get("fieldName").and_then(Value::as_str) == Some("conversions"))?
        .get("index")?
        .as_u64()
        .map(|i| i as usize)
}

/// Google's answer to a developer token that is not allowlisted for click conversion uploads.
pub const NOT_ALLOWLISTED: &str = "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE";

/// What to do about it: nothing a retry changes.
pub const NOT_ALLOWLISTED_FIX: &str = "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE: since 2026-06-15 the Google Ads API takes click conversions only from developer tokens that imported them before; switch this destination to the Data Manager API: remove `api` (and developer_token, api_version, utc_offset) and use an OAuth token with the https://www.googleapis.com/auth/datamanager scope, then `tracklayer replay --destination` the dead deliveries";

pub fn classify(count: usize, response: &HttpResponse) -> Vec<Outcome> {
    // Refused for the token, wherever Google puts it (an RPC error or every row's error): the
    // same answer for every event, so dead once, without retries or resending each alone.
    if response.body.contains(NOT_ALLOWLISTED) {
        return vec![
            Outcome::Misconfigured {
                reason: NOT_ALLOWLISTED_FIX.into()
            };
            count
        ];
    }
    let parsed: Option<Value> = serde_json::from_str(&response.body).ok();
    if !(200..300).contains(&response.status) {
        // RPC-level error: the whole request failed.
        let status = parsed
            .as_ref()
            .and_then(|v| v.pointer("/error/status"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let outcome = match (response.status, status) {
            (429, _) | (_, "RESOURCE_EXHAUSTED") => Outcome::Retry {
                reason: format!(
                    "Google Ads quota exhausted (HTTP {}); backing off",
                    response.status
                ),
                // Google's guidance: at least 30 s after a 429.
                after: Some(
                    response
                        .retry_after
                        .unwrap_or(Duration::from_secs(30))
                        .max(Duration::from_secs(30)),
                ),
            },
            _ => classify_status(response, "Google Ads"),
        };
        return vec![outcome; count];
    }
    let mut outcomes = vec![Outcome::Delivered { note: None }; count];
    let errors = parsed
        .as_ref()
        .and_then(|v| v.get("partialFailureError"))
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array)
        .map(|details| {
            details
                .iter()
                .filter_map(|d| d.get("errors").and_then(Value::as_array))
                .flatten()
                .cloned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for error in &errors {
        let code = error_code(error);
        let message = error.get("message").and_then(Value::as_str).unwrap_or("");
        match row_index(error) {
            Some(i) if i < count => outcomes[i] = row_outcome(&code, message),
            // An error no row owns fails them all (Segment does the same).
            _ => {
                for o in outcomes.iter_mut() {
                    *o = row_outcome(&code, message);
                }
            }
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DestinationKind;
    use crate::destinations::fixture;

    fn dest(validate_only: bool) -> Destination {
        fixture::destination(
            DestinationKind::GoogleAds,
            &format!("api = \"google_ads_api\"\ncustomer_id = \"123-456-7890\"\nconversion_actions = {{ purchase = \"555000111\" }}\ndeveloper_token = \"DEVTOKEN_TEST\"\naccess_token = \"ya29.TEST\"\nlogin_customer_id = \"9876543210\"\nvalidate_only = {validate_only}"),
        )
    }

    #[test]
    fn reference_fixture_purchase() {
        let built = crate::destinations::build(
            &dest(false),
            &[fixture::subject(fixture::purchase(), "purchase")],
            0,
        );
        let request = built.request.unwrap();
        assert_eq!(
            request.url,
            "https://googleads.googleapis.com/v21/customers/1234567890:uploadClickConversions"
        );
        assert!(request
            .headers
            .contains(&("developer-token".into(), "DEVTOKEN_TEST".into())));
        assert!(request
            .headers
            .contains(&("login-customer-id".into(), "9876543210".into())));
        assert!(request
            .redacted_headers()
            .contains(&("Authorization".into(), "Bearer REDACTED".into())));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let expected: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/destinations/google_ads_purchase.json"
        ))
        .unwrap();
        assert_eq!(body, expected);
        let test_mode = crate::destinations::build(
            &dest(true),
            &[fixture::subject(fixture::purchase(), "purchase")],
            0,
        );
        let body: Value = serde_json::from_slice(&test_mode.request.unwrap().body).unwrap();
        assert_eq!(body["validateOnly"], true);
    }

    #[test]
    fn a_second_row_for_the_same_order_waits_for_the_next_request() {
        let items = [
            fixture::subject(fixture::purchase(), "purchase"),
            fixture::subject(fixture::purchase(), "purchase"),
        ];
        let built = crate::destinations::build(&dest(false), &items, 0);
        assert_eq!(built.included, [0]);
        assert_eq!(built.deferred, [1]);
        assert!(built.rejected.is_empty());
        let body: Value = serde_json::from_slice(&built.request.unwrap().body).unwrap();
        assert_eq!(body["conversions"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn date_time_format_and_unattributable_rows() {
        assert_eq!(
            conversion_date_time(1_768_501_800_000, 0),
            "2026-01-15 18:30:00+00:00"
        );
        assert_eq!(
            conversion_date_time(1_768_501_800_000, -480),
            "2026-01-15 10:30:00-08:00"
        );
        let mut event = fixture::purchase();
        event.context.click_ids.clear();
        event.user.email = None;
        event.user.phone = None;
        let built =
            crate::destinations::build(&dest(false), &[fixture::subject(event, "purchase")], 0);
        assert!(built.request.is_none());
        assert!(built.rejected[0].1.starts_with("no gclid"));
    }

    #[test]
    fn a_token_not_allowlisted_is_dead_once_with_the_switch_to_make() {
        // As the Ads API answers a token that never imported click conversions before.
        let body = r#"{"error":{"code":403,"message":"The caller does not have permission","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.ads.googleads.v21.errors.GoogleAdsFailure","errors":[{"errorCode":{"notAllowlistedError":"CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE"},"message":"Customer is not allowlisted for accessing this feature."}]}]}}"#;
        let out = classify(3, &HttpResponse::new(403, body));
        assert_eq!(out.len(), 3);
        for outcome in out {
            let Outcome::Misconfigured { reason } = outcome else {
                panic!("not allowlisted must be dead without bisection: {outcome:?}")
            };
            assert!(reason.contains("Data Manager API"), "{reason}");
            assert!(reason.contains("datamanager"), "{reason}");
        }
    }

    #[test]
    fn partial_failure_rows() {
        let body =
            include_str!("../../../tests/fixtures/destinations/google_ads_partial_failure.json");
        let out = classify(
            2,
            &HttpResponse {
                status: 200,
                retry_after: None,
                body: body.into(),
                cut: false,
                rate_limit_wait: None,
            },
        );
        assert_eq!(
            out[0],
            Outcome::permanent("UNPARSEABLE_GCLID: The imported gclid could not be decoded.")
        );
        assert_eq!(out[1], Outcome::Delivered { note: None });
        assert_eq!(
            row_outcome("ORDER_ID_ALREADY_IN_USE", ""),
            Outcome::Delivered {
                note: Some("ORDER_ID_ALREADY_IN_USE: already recorded by Google".into())
            }
        );
        assert!(
            matches!(row_outcome("TOO_RECENT_EVENT", "x"), Outcome::Retry { after: Some(d), .. } if d == TOO_RECENT_DELAY)
        );
        let unauth = HttpResponse { status: 401, retry_after: None, body: r#"{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}"#.into(), cut: false, rate_limit_wait: None };
        assert!(matches!(
            &classify(1, &unauth)[0],
            Outcome::Permanent { .. }
        ));
        let quota = HttpResponse {
            status: 429,
            retry_after: None,
            body: "{}".into(),
            cut: false,
            rate_limit_wait: None,
        };
        assert!(
            matches!(classify(1, &quota)[0], Outcome::Retry { after: Some(d), .. } if d >= Duration::from_secs(30))
        );
    }
}
