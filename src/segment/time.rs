//! Times in Segment messages: RFC 3339 as the Spec says, and the variants real clients send
//! (`+0000` offsets, no offset, a space for the `T`). A time that cannot be read is reported,
//! never silently replaced.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

/// How a time was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// RFC 3339 with an offset (or `Z`).
    Exact,
    /// No offset given: read as UTC, which is what Segment's libraries mean.
    AssumedUtc,
}

/// A time field that could not be read, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeProblem(pub String);

/// Milliseconds since the epoch from a Segment time string.
pub fn parse(text: &str) -> Result<(i64, Reading), TimeProblem> {
    let trimmed = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(trimmed) {
        return Ok((t.timestamp_millis(), Reading::Exact));
    }
    let normalized = trimmed.replacen(' ', "T", 1);
    // `+0000` / `-0530` offsets (ISO 8601 basic form, as Java and some SDKs write).
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(t) = DateTime::parse_from_str(&normalized, format) {
            return Ok((t.timestamp_millis(), Reading::Exact));
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(&normalized) {
        return Ok((t.timestamp_millis(), Reading::Exact));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&normalized, format) {
            return Ok((t.and_utc().timestamp_millis(), Reading::AssumedUtc));
        }
    }
    Err(TimeProblem(format!(
        "`{}` is not an RFC 3339 time",
        crate::segment::clip(trimmed)
    )))
}

/// A time field of a message: `Ok(None)` when absent or null.
pub fn field(body: &Map<String, Value>, name: &str) -> Result<Option<(i64, Reading)>, TimeProblem> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => parse(text)
            .map(Some)
            .map_err(|TimeProblem(why)| TimeProblem(format!("{name}: {why}"))),
        Some(other) => Err(TimeProblem(format!(
            "{name} must be a time string, found {}",
            match other {
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                Value::Array(_) => "an array",
                _ => "an object",
            }
        ))),
    }
}

/// RFC 3339 UTC with milliseconds.
pub fn format_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The newest of the Segment times a raw message carries (`timestamp`, `originalTimestamp`,
/// `sentAt`, `receivedAt`): how recent a signed message is.
pub fn newest_segment_time_ms(raw: &[u8]) -> Option<i64> {
    let body: Map<String, Value> = serde_json::from_slice(raw).ok()?;
    ["timestamp", "originalTimestamp", "sentAt", "receivedAt"]
        .iter()
        .filter_map(|name| field(&body, name).ok().flatten())
        .map(|(ms, _)| ms)
        .max()
}

/// What a Segment library does as it sends: stamp each message (one, an array or a
/// `{"batch": [...]}`) without a `sentAt` with the current time. A body that is not JSON is left
/// as it is, for the server to refuse.
pub fn stamp_sent_at(body: &[u8], now_ms: i64) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    let now = Value::String(format_ms(now_ms));
    let stamp = |message: &mut Value| {
        if let Value::Object(fields) = message {
            fields.entry("sentAt").or_insert_with(|| now.clone());
        }
    };
    match &mut value {
        Value::Array(messages) => messages.iter_mut().for_each(stamp),
        Value::Object(fields) => match fields.get_mut("batch") {
            Some(Value::Array(messages)) => messages.iter_mut().for_each(stamp),
            _ => stamp(&mut value),
        },
        _ => {}
    }
    serde_json::to_vec(&value).unwrap_or_else(|_| body.to_vec())
}

/// The messageId of a raw message, if it has one.
pub fn message_id_of(raw: &[u8]) -> Option<String> {
    let body: Map<String, Value> = serde_json::from_slice(raw).ok()?;
    body.get("messageId")
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_real_clients_send() {
        let z = parse("2026-04-23T10:15:30Z").unwrap();
        assert_eq!(z.1, Reading::Exact);
        for variant in [
            "2026-04-23T10:15:30.000Z",
            "2026-04-23T10:15:30+00:00",
            "2026-04-23T10:15:30+0000",
            "2026-04-23T12:15:30+0200",
            "2026-04-23T10:15:30.000+0000",
            "2026-04-23 10:15:30Z",
        ] {
            assert_eq!(parse(variant).unwrap().0, z.0, "{variant}");
        }
        let naive = parse("2026-04-23T10:15:30").unwrap();
        assert_eq!(naive, (z.0, Reading::AssumedUtc));
        assert_eq!(parse("2026-04-23 10:15:30.000").unwrap().0, z.0);
        assert_eq!(
            parse("last tuesday").unwrap_err(),
            TimeProblem("`last tuesday` is not an RFC 3339 time".into())
        );
    }

    #[test]
    fn newest_time_and_message_id() {
        let raw = br#"{"messageId":"m-1","timestamp":"2020-01-01T00:00:00Z","sentAt":"2026-01-01T00:00:00Z","receivedAt":"bad"}"#;
        assert_eq!(
            newest_segment_time_ms(raw),
            Some(parse("2026-01-01T00:00:00Z").unwrap().0)
        );
        assert_eq!(message_id_of(raw).as_deref(), Some("m-1"));
        assert_eq!(newest_segment_time_ms(br#"{"messageId":"m"}"#), None);
    }

    #[test]
    fn sent_at_is_stamped_where_missing() {
        let now = parse("2026-12-01T00:00:00Z").unwrap().0;
        let stamped = stamp_sent_at(
            br#"[{"messageId":"a"},{"messageId":"b","sentAt":"2026-11-30T00:00:00.000Z"}]"#,
            now,
        );
        assert_eq!(
            String::from_utf8(stamped).unwrap(),
            r#"[{"messageId":"a","sentAt":"2026-12-01T00:00:00.000Z"},{"messageId":"b","sentAt":"2026-11-30T00:00:00.000Z"}]"#
        );
        let batch = stamp_sent_at(br#"{"batch":[{"messageId":"a"}]}"#, now);
        assert!(String::from_utf8(batch)
            .unwrap()
            .contains(r#""batch":[{"messageId":"a","sentAt""#));
        assert_eq!(stamp_sent_at(b"not json", now), b"not json");
    }
}
