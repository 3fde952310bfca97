//! Reading a request body within its limits: size (413), time (408), and a body that ends before
//! its Content-Length (400, saying how much arrived).

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use super::auth;
use super::refusal::{header_str, Refusal, RequestMeta};

pub(super) fn check_content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let value = header_str(headers, header::CONTENT_TYPE.as_str());
    let is_json = value
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            match value {
                Some(v) => format!(
                    "Content-Type must be application/json, got `{}`",
                    auth::truncate_for_display(v)
                ),
                None => "missing Content-Type header; it must be application/json".to_string(),
            },
        ))
    }
}

fn too_large(limit: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "body exceeds the {limit}-byte limit (server.max_body_bytes); lower the webhook's batch_size"
        ),
    )
}

fn of_expected(received: usize, expected: Option<u64>) -> String {
    match expected {
        Some(total) => format!("{received} of {total} bytes"),
        None => format!("{received} bytes"),
    }
}

/// The whole body, or why not. Memory is bounded by `limit`, time by `timeout`.
pub(super) async fn read_body(
    mut body: Body,
    meta: &RequestMeta,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Refusal> {
    if meta.content_length.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    let expected = meta.content_length;
    let mut buffer = BytesMut::with_capacity(expected.map_or(8 * 1024, |n| n as usize));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(Refusal::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                    "the body did not arrive within {} s (server.body_timeout_secs): {} received",
                    timeout.as_secs(),
                    of_expected(buffer.len(), expected)
                ),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                // Over the limit while streaming a chunked body, or the client went away.
                if buffer.len() > limit {
                    return Err(too_large(limit));
                }
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "incomplete_body",
                    format!(
                        "body ended after {}: {e}",
                        of_expected(buffer.len(), expected)
                    ),
                ));
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if buffer.len() + data.len() > limit {
                        return Err(too_large(limit));
                    }
                    buffer.extend_from_slice(&data);
                }
            }
        }
    }
    if let Some(total) = expected.filter(|total| buffer.len() as u64 != *total) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "incomplete_body",
            format!("body ended after {} of {total} bytes", buffer.len()),
        ));
    }
    Ok(buffer.freeze())
}
