//! Request signing and verification, as pure functions.
//!
//! Two schemes are accepted (DESIGN §1):
//! - TrackLayer's own: `X-TrackLayer-Timestamp` + `X-TrackLayer-Signature: sha256=<hex>` where the
//!   MAC is HMAC-SHA256(secret, "<timestamp>.<raw body>"), valid within a ±tolerance window.
//! - Segment's `X-Signature: <hex HMAC-SHA1(secret, raw body)>`; for a batch Segment signs only the
//!   raw bytes of element 0, so that is what is verified.
//!
//! MACs are compared with `Mac::verify_slice`, which is constant-time.

use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Secret;

pub const HEADER_ACCOUNT: &str = "x-tracklayer-account";
pub const HEADER_ENVIRONMENT: &str = "x-tracklayer-environment";
pub const HEADER_TIMESTAMP: &str = "x-tracklayer-timestamp";
pub const HEADER_SIGNATURE: &str = "x-tracklayer-signature";
pub const HEADER_SEGMENT_SIGNATURE: &str = "x-signature";

/// Why a request was refused. The `Display` text is what the client gets in
/// `{"message": ...}` and what the dashboard shows; it never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("unknown account `{0}` in X-TrackLayer-Account")]
    UnknownAccount(String),
    #[error("unknown environment `{0}` in X-TrackLayer-Environment")]
    UnknownEnvironment(String),
    #[error("X-TrackLayer-Timestamp `{0}` is neither RFC 3339 nor Unix seconds")]
    UnreadableTimestamp(String),
    #[error("stale timestamp: X-TrackLayer-Timestamp is {skew_secs} s {direction} the server clock; the limit is {tolerance_secs} s")]
    StaleTimestamp {
        skew_secs: i64,
        direction: &'static str,
        tolerance_secs: u64,
    },
    #[error("bad signature: X-TrackLayer-Signature must look like sha256=<64 hex digits>")]
    MalformedSignature,
    #[error("bad signature: X-TrackLayer-Signature does not match HMAC-SHA256(secret, timestamp + \".\" + body) for environment `{0}`")]
    BadSignature(String),
    #[error("bad signature: X-Signature does not match HMAC-SHA1(secret, {signed}) for environment `{environment}`")]
    BadSegmentSignature {
        environment: String,
        signed: &'static str,
    },
    #[error("X-Signature covers only element 0 of a batch, and environment `{0}` refuses such batches (environments[].segment_batches = false); turn batching off in Segment or sign with X-TrackLayer-Signature")]
    SignedBatchRefused(String),
    #[error("X-Signature carries no time of its own, so the signed message must carry a messageId and one of timestamp, sentAt, receivedAt (Segment always sends them)")]
    SignedMessageWithoutTime,
    #[error("missing Authorization: Basic <write key> header")]
    MissingWriteKey,
    #[error("unknown write key")]
    UnknownWriteKey,
}

impl AuthError {
    /// A short, stable code for storage and filtering.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingHeader(_) => "missing_header",
            AuthError::UnknownAccount(_) => "unknown_account",
            AuthError::UnknownEnvironment(_) => "unknown_environment",
            AuthError::UnreadableTimestamp(_) => "bad_timestamp",
            AuthError::StaleTimestamp { .. } => "stale_timestamp",
            AuthError::MalformedSignature
            | AuthError::BadSignature(_)
            | AuthError::BadSegmentSignature { .. } => "bad_signature",
            AuthError::SignedBatchRefused(_) => "signed_batch_refused",
            AuthError::SignedMessageWithoutTime => "unsigned_time",
            AuthError::MissingWriteKey => "missing_write_key",
            AuthError::UnknownWriteKey => "unknown_write_key",
        }
    }
}

/// What to change so a request refused with `code` gets through: for the engineer who opens
/// the refusal in the dashboard.
pub fn fix_for(code: &str) -> &'static str {
    match code {
        "missing_header" => "Add the header named in the reason to the Segment webhook destination's headers (README: Connecting Segment).",
        "unknown_account" => "X-TrackLayer-Account must equal [workspace] account in tracklayer.toml; correct it in Segment's headers or in the config.",
        "unknown_environment" => "X-TrackLayer-Environment must name one of the [[environments]]; add it to the config or fix the header in Segment.",
        "bad_timestamp" => "X-TrackLayer-Timestamp must be RFC 3339 or Unix seconds.",
        "stale_timestamp" => "The request's time is outside [server] timestamp_tolerance_secs: check the sender's clock, or replays of old requests.",
        "bad_signature" => "The secret used to sign differs from this environment's secret (often a rotated secret not updated in Segment): set the same secret on both sides; during a rotation list the old one as previous_secret.",
        "signed_batch_refused" => "Segment's signature covers the whole batch: send it unmodified, or sign it with the TrackLayer scheme.",
        "unsigned_time" => "Signed single messages need a messageId and a timestamp, sentAt or receivedAt (Segment always sends them); check the sender.",
        "missing_write_key" => "Send Authorization: Basic <write key> (the environment's write_key), as Segment's HTTP API clients do.",
        "unknown_write_key" => "The write key is not one of the environments' write_key values: copy it from the config to the sending source.",
        _ => "See README: What each answer means.",
    }
}

/// Parse `X-TrackLayer-Timestamp`: RFC 3339 (`2026-04-23T10:15:30Z`) or Unix seconds.
pub fn parse_timestamp(value: &str) -> Result<DateTime<Utc>, AuthError> {
    let trimmed = value.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        if let Some(ts) = trimmed
            .parse::<i64>()
            .ok()
            .and_then(|secs| Utc.timestamp_opt(secs, 0).single())
        {
            return Ok(ts);
        }
    }
    DateTime::parse_from_rfc3339(trimmed)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| AuthError::UnreadableTimestamp(truncate_for_display(value)))
}

/// Header values are attacker-controlled; keep what we echo back short.
pub fn truncate_for_display(value: &str) -> String {
    const LIMIT: usize = 64;
    if value.chars().count() <= LIMIT {
        value.to_string()
    } else {
        let mut s: String = value.chars().take(LIMIT).collect();
        s.push('…');
        s
    }
}

pub fn check_timestamp_window(
    timestamp: DateTime<Utc>,
    now: DateTime<Utc>,
    tolerance_secs: u64,
) -> Result<(), AuthError> {
    let skew = (now - timestamp).num_seconds();
    if skew.unsigned_abs() > tolerance_secs {
        return Err(AuthError::StaleTimestamp {
            skew_secs: skew.abs(),
            direction: if skew > 0 { "behind" } else { "ahead of" },
            tolerance_secs,
        });
    }
    Ok(())
}

fn hmac_sha256(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length")
}

fn hmac_sha1(secret: &[u8]) -> Hmac<Sha1> {
    <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key length")
}

fn tracklayer_mac(secret: &Secret, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = hmac_sha256(secret.expose().as_bytes());
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `sha256=<hex>` for the TrackLayer scheme.
pub fn sign_tracklayer(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    let tag = tracklayer_mac(secret, timestamp, body)
        .finalize()
        .into_bytes();
    format!("sha256={}", hex::encode(tag))
}

/// True when `header` is a valid TrackLayer signature under any of `secrets`.
pub fn verify_tracklayer(
    secrets: &[&Secret],
    timestamp: &str,
    body: &[u8],
    header: &str,
) -> Result<bool, AuthError> {
    let hex_part = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(AuthError::MalformedSignature)?;
    let tag = hex::decode(hex_part).map_err(|_| AuthError::MalformedSignature)?;
    if tag.len() != 32 {
        return Err(AuthError::MalformedSignature);
    }
    Ok(secrets.iter().any(|secret| {
        tracklayer_mac(secret, timestamp, body)
            .verify_slice(&tag)
            .is_ok()
    }))
}

/// Segment's `X-Signature`: hex HMAC-SHA1 over `signed` (the body, or element 0 of a batch).
pub fn sign_segment(secret: &Secret, signed: &[u8]) -> String {
    let mut mac = hmac_sha1(secret.expose().as_bytes());
    mac.update(signed);
    hex::encode(mac.finalize().into_bytes())
}

pub fn verify_segment(secrets: &[&Secret], signed: &[u8], header: &str) -> bool {
    let Ok(tag) = hex::decode(header.trim()) else {
        return false;
    };
    if tag.len() != 20 {
        return false;
    }
    secrets.iter().any(|secret| {
        let mut mac = hmac_sha1(secret.expose().as_bytes());
        mac.update(signed);
        mac.verify_slice(&tag).is_ok()
    })
}

/// The write key in `Authorization: Basic base64(writeKey + ":")`, as Segment SDKs send it.
pub fn basic_auth_write_key(header: &str) -> Option<String> {
    // The scheme name is case-insensitive (RFC 9110 §11.1): `basic` works as `Basic` does.
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let key = text.split_once(':').map_or(text.as_str(), |(user, _)| user);
    (!key.is_empty()).then(|| key.to_string())
}

/// Constant-time equality for write keys.
pub fn keys_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR_BODY: &str = r#"{"type":"track","event":"Order Completed","messageId":"m-1","userId":"u-1","properties":{"order_id":"o-1","revenue":25}}"#;

    #[test]
    fn segment_reference_vectors() {
        // reference/segment-and-peers.md §4.6
        let secret = Secret::new("tl_test_secret");
        assert_eq!(
            sign_segment(&secret, VECTOR_BODY.as_bytes()),
            "333db3a62b5fc54ca9a14fda69daf2c10435eca2"
        );
        let batch = format!(
            r#"[{VECTOR_BODY},{{"type":"identify","messageId":"m-2","userId":"u-1","traits":{{"email":"a@example.com"}}}}]"#
        );
        assert_eq!(
            sign_segment(&secret, batch.as_bytes()),
            "6283f39b42704eeb6dae44167ad13b5e5870288f"
        );
        assert!(verify_segment(
            &[&secret],
            VECTOR_BODY.as_bytes(),
            "333db3a62b5fc54ca9a14fda69daf2c10435eca2"
        ));
        assert!(!verify_segment(
            &[&secret],
            VECTOR_BODY.as_bytes(),
            "333db3a6"
        ));
    }

    #[test]
    fn tracklayer_signature_round_trip_and_rotation() {
        let old = Secret::new("old-secret-0123456789");
        let new = Secret::new("new-secret-0123456789");
        let sig = sign_tracklayer(&old, "1700000000", b"{}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify_tracklayer(&[&new, &old], "1700000000", b"{}", &sig).unwrap());
        assert!(!verify_tracklayer(&[&new], "1700000000", b"{}", &sig).unwrap());
        // The timestamp is part of what is signed.
        assert!(!verify_tracklayer(&[&old], "1700000001", b"{}", &sig).unwrap());
        assert_eq!(
            verify_tracklayer(&[&old], "1", b"{}", "md5=abc"),
            Err(AuthError::MalformedSignature)
        );
    }

    #[test]
    fn timestamps_in_both_formats_and_the_window() {
        let rfc = parse_timestamp("2026-04-23T10:15:30Z").unwrap();
        let unix = parse_timestamp(&rfc.timestamp().to_string()).unwrap();
        assert_eq!(rfc, unix);
        assert!(parse_timestamp("yesterday").is_err());
        let tolerance = 300;
        assert!(
            check_timestamp_window(rfc, rfc + chrono::Duration::seconds(300), tolerance).is_ok()
        );
        assert_eq!(
            check_timestamp_window(rfc, rfc + chrono::Duration::seconds(301), tolerance)
                .unwrap_err()
                .to_string(),
            "stale timestamp: X-TrackLayer-Timestamp is 301 s behind the server clock; the limit is 300 s"
        );
        assert!(matches!(
            check_timestamp_window(rfc, rfc - chrono::Duration::seconds(301), tolerance),
            Err(AuthError::StaleTimestamp {
                direction: "ahead of",
                ..
            })
        ));
    }

    #[test]
    fn basic_auth_write_key_forms() {
        // analytics-node sends base64("<writeKey>:")
        assert_eq!(
            basic_auth_write_key("Basic d2tfMTIzOg==").as_deref(),
            Some("wk_123")
        );
        assert_eq!(
            basic_auth_write_key("Basic d2tfMTIz").as_deref(),
            Some("wk_123")
        );
        assert_eq!(basic_auth_write_key("Bearer x"), None);
        assert_eq!(
            basic_auth_write_key("basic d2tfMTIzOg==").as_deref(),
            Some("wk_123")
        );
        assert_eq!(
            basic_auth_write_key("BASIC  d2tfMTIzOg==").as_deref(),
            Some("wk_123")
        );
        assert!(keys_equal("abc", "abc") && !keys_equal("abc", "abd"));
    }
}
