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

/// How the body was encoded on the wire (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

/// `Content-Encoding` as SDKs send it: analytics-python with `gzip=True` and analytics-android
/// gzip their batches; anything else is a 415 naming what was sent.
pub(super) fn content_encoding(headers: &HeaderMap) -> Result<Encoding, Refusal> {
    let Some(value) = header_str(headers, header::CONTENT_ENCODING.as_str()) else {
        return Ok(Encoding::Identity);
    };
    let codings: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        .collect();
    match codings.as_slice() {
        [] => Ok(Encoding::Identity),
        [one] if one.eq_ignore_ascii_case("gzip") || one.eq_ignore_ascii_case("x-gzip") => {
            Ok(Encoding::Gzip)
        }
        [one] if one.eq_ignore_ascii_case("deflate") => Ok(Encoding::Deflate),
        _ => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!(
                "Content-Encoding `{}` is not supported; send gzip, deflate or none",
                auth::truncate_for_display(value)
            ),
        )),
    }
}

/// The body as its sender serialised it. The decompressed size is held to the same limit as a
/// plain body, so a small bomb costs at most `limit` bytes of memory and is a 413.
pub(super) fn decode_body(encoding: Encoding, wire: Bytes, limit: usize) -> Result<Bytes, Refusal> {
    use std::io::Read;
    let inflate = |reader: &mut dyn Read| -> Result<Bytes, std::io::Error> {
        let mut out = Vec::with_capacity((wire.len() * 4).min(limit + 1));
        reader.take(limit as u64 + 1).read_to_end(&mut out)?;
        Ok(Bytes::from(out))
    };
    let decoded = match encoding {
        Encoding::Identity => return Ok(wire),
        Encoding::Gzip => inflate(&mut flate2::read::MultiGzDecoder::new(&wire[..])),
        // HTTP's "deflate" is zlib-wrapped (RFC 9110 §8.4.1.2), but some clients send raw
        // deflate; the zlib header tells them apart.
        Encoding::Deflate if looks_like_zlib(&wire) => {
            inflate(&mut flate2::read::ZlibDecoder::new(&wire[..]))
        }
        Encoding::Deflate => inflate(&mut flate2::read::DeflateDecoder::new(&wire[..])),
    };
    match decoded {
        Ok(body) if body.len() > limit => Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the decompressed body exceeds the {limit}-byte limit (server.max_body_bytes); \
                 {} compressed bytes were sent",
                wire.len()
            ),
        )),
        Ok(body) => Ok(body),
        Err(e) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_encoding",
            format!(
                "the body is not valid {} data: {e}",
                match encoding {
                    Encoding::Gzip => "gzip",
                    _ => "deflate",
                }
            ),
        )),
    }
}

fn looks_like_zlib(data: &[u8]) -> bool {
    matches!(data, [cmf, flg, ..] if cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        Bytes::from(encoder.finish().unwrap())
    }

    #[test]
    fn gzip_zlib_and_raw_deflate_decode() {
        let body = br#"{"type":"track","event":"x"}"#;
        assert_eq!(
            decode_body(Encoding::Gzip, gzip(body), 1000).unwrap(),
            &body[..]
        );
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(body).unwrap();
        let zlib = Bytes::from(zlib.finish().unwrap());
        assert_eq!(
            decode_body(Encoding::Deflate, zlib, 1000).unwrap(),
            &body[..]
        );
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        raw.write_all(body).unwrap();
        let raw = Bytes::from(raw.finish().unwrap());
        assert_eq!(
            decode_body(Encoding::Deflate, raw, 1000).unwrap(),
            &body[..]
        );
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![b' '; 10_000_000]);
        assert!(bomb.len() < 20_000);
        let refusal = decode_body(Encoding::Gzip, bomb, 1_000_000).unwrap_err();
        assert_eq!(refusal.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            refusal.message.contains("decompressed"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn garbage_and_unknown_codings_are_named() {
        let refusal = decode_body(Encoding::Gzip, Bytes::from_static(b"{}"), 100).unwrap_err();
        assert_eq!(refusal.code, "bad_encoding");
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        assert_eq!(
            content_encoding(&headers).unwrap_err().code,
            "unsupported_encoding"
        );
        headers.insert(header::CONTENT_ENCODING, "GZIP".parse().unwrap());
        assert_eq!(content_encoding(&headers).unwrap(), Encoding::Gzip);
    }
}
