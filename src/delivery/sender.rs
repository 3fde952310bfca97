//! The one HTTP client of the pipeline: sends a built request, reads the answer within bounds,
//! and keeps a redacted record of both.

use std::time::{Duration, Instant};

use crate::destinations::{Destination, HttpRequest, HttpResponse, Settings};
use crate::store::codec::Packed;
use crate::store::delivery::RequestRecord;

/// How much of a response body an attempt keeps.
const RESPONSE_EXCERPT: usize = 4096;
/// How much of a request body an attempt keeps (a 1000-event batch can be large).
const REQUEST_EXCERPT: usize = 64 * 1024;
/// The longest a `Retry-After` can hold a delivery back: a date far ahead is a platform's
/// mistake or a hostile answer, and a day is already longer than any schedule step but the last.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(24 * 3600);

pub fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// The shared HTTP client: no redirects (a 3xx is a failure for webhooks and APIs alike).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("TrackLayer/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_default()
}

/// Per-request timeout: Meta recommends short ones; others get more room.
pub fn request_timeout(dest: &Destination) -> Duration {
    match dest.settings {
        Settings::Meta(_) => Duration::from_secs(5),
        _ => Duration::from_secs(15),
    }
}

/// The wait a platform's rate-limit headers ask for once nothing is left (`RateLimit-Remaining:
/// 0`, `RateLimit-Reset` in seconds, as Klaviyo answers), capped as `Retry-After` is.
fn spent_rate_limit(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let number =
        |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    (number("ratelimit-remaining")? == 0)
        .then(|| number("ratelimit-reset"))
        .flatten()
        .map(|secs| Duration::from_secs(secs.min(RETRY_AFTER_CAP.as_secs())))
}

/// `Retry-After` as delay-seconds or as an HTTP date (RFC 9110 §10.2.3), capped at a day. A
/// date in the past means "now"; anything unreadable is ignored (the schedule decides).
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    let delay = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let when = httpdate::parse_http_date(v).ok()?;
            when.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(RETRY_AFTER_CAP))
}

/// Read at most `limit` bytes of an answer. Returns what was read and whether the answer went
/// on past it; the rest is never read (the connection is dropped), so a receiver answering
/// 200 MB costs a node `limit` bytes, not 200 MB.
pub(super) async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::with_capacity(limit.min(16 * 1024));
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// Send one request; returns the response (or why there is none) and the attempt record.
pub async fn send(
    client: &reqwest::Client,
    dest: &Destination,
    request: &HttpRequest,
    item_count: usize,
    started_ms: i64,
) -> (Result<HttpResponse, String>, RequestRecord) {
    let mut builder = client
        .post(&request.url)
        .timeout(request_timeout(dest))
        .body(request.body.clone());
    for (k, v) in &request.headers {
        builder = builder.header(k, v);
    }
    let clock = Instant::now();
    let result = builder.send().await;
    // Everything kept of a request passes through the destination's redaction: a platform may
    // echo a credential, and transport errors can quote the URL.
    let redact = |text: &str| dest.redact(text);
    let mut record = RequestRecord {
        started_at_ms: started_ms,
        latency_ms: None,
        item_count,
        url: Some(redact(&request.redacted_url())),
        headers: serde_json::to_string(&request.redacted_headers())
            .ok()
            .map(|h| Packed::text(&redact(&h))),
        body: Some(Packed::text(&redact(&truncate(
            &String::from_utf8_lossy(&request.body),
            REQUEST_EXCERPT,
        )))),
        ..RequestRecord::default()
    };
    let endpoint = url::Url::parse(&request.url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let transport_error = |e: reqwest::Error| {
        let reason = if e.is_timeout() {
            format!(
                "no answer from {endpoint} within {} s (timeout)",
                request_timeout(dest).as_secs()
            )
        } else if e.is_connect() {
            format!("could not connect to {endpoint} (refused or unreachable)")
        } else {
            // Without the URL: it is in the request record, redacted.
            format!("request to {endpoint} failed: {}", e.without_url())
        };
        redact(&reason)
    };
    let response = match result {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
            let rate_limit_wait = spent_rate_limit(response.headers());
            record.status_code = Some(status);
            match read_bounded(response, dest.max_response_bytes).await {
                Ok((bytes, cut)) => {
                    let body = String::from_utf8_lossy(&bytes).into_owned();
                    let mut kept = redact(&truncate(&body, RESPONSE_EXCERPT));
                    if cut {
                        kept.push_str(&format!(
                            " [answer cut: only its first {} bytes were read (max_response_bytes)]",
                            dest.max_response_bytes
                        ));
                    }
                    record.response_body = Some(Packed::text(&kept));
                    Ok(HttpResponse {
                        status,
                        retry_after,
                        body,
                        cut,
                        rate_limit_wait,
                    })
                }
                // The status line arrived and the body broke off (the deadline passed while it
                // dripped in, or the connection went): nobody can say which events the
                // platform took, so it is a transport failure, retried (the platform dedups on
                // event_id), never "delivered" on a status alone.
                Err(e) => {
                    let reason = format!(
                        "the answer broke off after its status line (HTTP {status}): {}",
                        transport_error(e)
                    );
                    record.error = Some(reason.clone());
                    Err(reason)
                }
            }
        }
        Err(e) => {
            let reason = transport_error(e);
            record.error = Some(reason.clone());
            Err(reason)
        }
    };
    record.latency_ms = Some(clock.elapsed().as_millis() as i64);
    (response, record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn retry_after_in_seconds_or_as_a_date_capped_at_a_day() {
        let now = UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let in_ten_minutes = httpdate::fmt_http_date(now + Duration::from_secs(600));
        assert_eq!(
            parse_retry_after(&in_ten_minutes, now),
            Some(Duration::from_secs(600))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(600));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        let next_month = httpdate::fmt_http_date(now + Duration::from_secs(30 * 86_400));
        assert_eq!(parse_retry_after(&next_month, now), Some(RETRY_AFTER_CAP));
        assert_eq!(parse_retry_after("9999999999", now), Some(RETRY_AFTER_CAP));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after(" ", now), None);
    }
}
