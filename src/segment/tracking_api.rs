//! What Segment's HTTP Tracking API does to a message an SDK posts, before anything else sees
//! it: the write key leaves the message, a message without a messageId gets one (derived from
//! its content, so the SDK's retry of the same call gets the same id), `receivedAt` is the
//! server's time, and the device's clock skew is taken out of `timestamp`:
//! `timestamp = receivedAt − (sentAt − originalTimestamp)`.
//!
//! Only `/v1/*` messages are rewritten: no signature covers their bytes. Messages on
//! `/segment/events` are stored exactly as received.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::time::{self, format_ms};

/// A message as Segment's API would record it, or the bytes unchanged when they are not a JSON
/// object (validation reports that).
pub fn normalize(raw: &[u8], batch_sent_at: Option<&str>, received_at_ms: i64) -> Vec<u8> {
    let Ok(mut message) = serde_json::from_slice::<Map<String, Value>>(raw) else {
        return raw.to_vec();
    };
    message.remove("writeKey");
    if message.get("messageId").is_none_or(Value::is_null) {
        message.insert("messageId".into(), Value::String(content_id(&message)));
    }
    correct_skew(&mut message, batch_sent_at, received_at_ms);
    message
        .entry("receivedAt")
        .or_insert_with(|| Value::String(format_ms(received_at_ms)));
    serde_json::to_vec(&message).unwrap_or_else(|_| raw.to_vec())
}

/// `tl-` and a digest of the message without the fields an SDK changes between attempts.
fn content_id(message: &Map<String, Value>) -> String {
    let mut stable = message.clone();
    for volatile in ["sentAt", "receivedAt", "writeKey", "messageId"] {
        stable.remove(volatile);
    }
    let digest = Sha256::digest(serde_json::to_vec(&stable).unwrap_or_default());
    format!("tl-{}", &hex::encode(digest)[..32])
}

/// Segment's correction: the device's clock may be off by years, but the interval between the
/// call and the send is right, and `receivedAt` is the server's clock.
fn correct_skew(
    message: &mut Map<String, Value>,
    batch_sent_at: Option<&str>,
    received_at_ms: i64,
) {
    let sent_at = match message.get("sentAt").and_then(Value::as_str) {
        Some(text) => time::parse(text).ok(),
        None => batch_sent_at.and_then(|text| time::parse(text).ok()),
    };
    let Some((sent_ms, _)) = sent_at else {
        return;
    };
    // The device's time of the call: what the SDK sent as `timestamp` (or an explicit
    // originalTimestamp).
    let device = message
        .get("originalTimestamp")
        .or_else(|| message.get("timestamp"))
        .cloned();
    let Some(Value::String(device_text)) = device else {
        return;
    };
    let Ok((device_ms, _)) = time::parse(&device_text) else {
        return;
    };
    message
        .entry("originalTimestamp")
        .or_insert(Value::String(device_text));
    if message.get("sentAt").is_none() {
        message.insert("sentAt".into(), Value::String(format_ms(sent_ms)));
    }
    message.insert(
        "timestamp".into(),
        Value::String(format_ms(received_at_ms - (sent_ms - device_ms))),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(bytes: &[u8], name: &str) -> Option<String> {
        let value: Map<String, Value> = serde_json::from_slice(bytes).unwrap();
        value.get(name).and_then(Value::as_str).map(str::to_string)
    }

    #[test]
    fn a_device_clock_years_off_is_corrected() {
        let received = time::parse("2026-12-01T12:00:00Z").unwrap().0;
        // The phone thinks it is 2020; it called 2 s before it sent.
        let raw = br#"{"type":"track","event":"x","anonymousId":"a","messageId":"m","timestamp":"2020-01-01T00:00:00.000Z","sentAt":"2020-01-01T00:00:02.000Z"}"#;
        let normalized = normalize(raw, None, received);
        assert_eq!(
            field(&normalized, "timestamp").as_deref(),
            Some("2026-12-01T11:59:58.000Z")
        );
        assert_eq!(
            field(&normalized, "originalTimestamp").as_deref(),
            Some("2020-01-01T00:00:00.000Z")
        );
        assert_eq!(
            field(&normalized, "receivedAt").as_deref(),
            Some("2026-12-01T12:00:00.000Z")
        );
        // The batch's sentAt applies to messages without their own.
        let raw = br#"{"type":"track","event":"x","anonymousId":"a","messageId":"m","timestamp":"2020-01-01T00:00:00Z"}"#;
        let normalized = normalize(raw, Some("2020-01-01T00:00:05+0000"), received);
        assert_eq!(
            field(&normalized, "timestamp").as_deref(),
            Some("2026-12-01T11:59:55.000Z")
        );
    }

    #[test]
    fn the_write_key_leaves_and_a_missing_message_id_is_derived_from_the_content() {
        let raw = br#"{"type":"track","event":"x","anonymousId":"a","writeKey":"wk_secret","sentAt":"2026-12-01T00:00:00Z"}"#;
        let first = normalize(raw, None, 1_000);
        assert!(!String::from_utf8_lossy(&first).contains("wk_secret"));
        let id = field(&first, "messageId").unwrap();
        assert!(id.starts_with("tl-") && id.len() == 35, "{id}");
        // The SDK's retry sends the same call with a new sentAt: the same id.
        let retry = br#"{"type":"track","event":"x","anonymousId":"a","writeKey":"wk_secret","sentAt":"2026-12-01T00:00:09Z"}"#;
        assert_eq!(field(&normalize(retry, None, 2_000), "messageId"), Some(id));
        // A different call gets a different id.
        let other = br#"{"type":"track","event":"y","anonymousId":"a"}"#;
        assert_ne!(
            field(&normalize(other, None, 1_000), "messageId"),
            field(&first, "messageId")
        );
        assert_eq!(normalize(b"[1]", None, 1), b"[1]");
    }
}
