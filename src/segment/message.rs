//! Validation of one Segment message. The rules follow the Segment Spec and the discard reasons
//! Segment itself reports (`no_user_anon_id`, `event_not_string`, `properties_not_object`, …), so a
//! user sees the same kind of reason they would in Segment's Delivery Overview, with the field named.

use serde_json::{Map, Value};

/// Segment's per-call limit (HTTP Tracking API: 32 KB per call).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// `messageId` is "limited to 100 characters" in the Segment Spec.
pub const MAX_MESSAGE_ID_CHARS: usize = 100;

/// What one message may hold. Everything a message carries ends up in rows and indexes, so an
/// unbounded field would let one request slow every later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// A message over this many bytes is invalid (Segment's own limit by default).
    pub max_message_bytes: usize,
    /// Event names, userId and anonymousId longer than this are invalid.
    pub max_name_chars: usize,
}

impl Default for MessageLimits {
    fn default() -> Self {
        MessageLimits {
            max_message_bytes: MAX_MESSAGE_BYTES,
            max_name_chars: 200,
        }
    }
}

/// What an invalid message keeps of a field for display: at most this many characters.
const KEPT_CHARS: usize = 100;

/// `text`, or its first `KEPT_CHARS` characters and its size when it is longer, so an oversized
/// field of an invalid message is shown (and indexed) at a bounded length.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(KEPT_CHARS) {
        None => text.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl MessageType {
    pub const ALL: [MessageType; 6] = [
        MessageType::Identify,
        MessageType::Track,
        MessageType::Page,
        MessageType::Screen,
        MessageType::Group,
        MessageType::Alias,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Identify => "identify",
            MessageType::Track => "track",
            MessageType::Page => "page",
            MessageType::Screen => "screen",
            MessageType::Group => "group",
            MessageType::Alias => "alias",
        }
    }

    pub fn parse(name: &str) -> Option<MessageType> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// A message that passed validation. `body` is the parsed message for later stages.
#[derive(Debug, Clone)]
pub struct ValidMessage {
    pub message_type: MessageType,
    pub message_id: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// The `event` of a track call, or the `name` of a page/screen call.
    pub event: Option<String>,
    pub body: Map<String, Value>,
}

/// A message that failed validation: what could be read of it, and why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMessage {
    pub message_type: Option<String>,
    pub message_id: Option<String>,
    pub event: Option<String>,
    pub reason: String,
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A Segment identifier: a non-empty string, or a number (some server libraries send numeric
/// userIds), normalised to a string. `Ok(None)` when absent, null or empty.
fn identifier(body: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(format!(
            "{field} must be a string, found {}",
            json_type_name(other)
        )),
    }
}

fn require_object_if_present(body: &Map<String, Value>, field: &str) -> Result<(), String> {
    match body.get(field) {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(other) => Err(format!(
            "{field} must be an object, found {}",
            json_type_name(other)
        )),
    }
}

/// Segment discards messages whose consent preferences are not booleans
/// (`consent_categorypreferences_fields_should_be_bool`); so do we, naming the category.
fn check_consent(body: &Map<String, Value>) -> Result<(), String> {
    let Some(context) = body.get("context").and_then(Value::as_object) else {
        return Ok(());
    };
    let Some(consent) = context.get("consent") else {
        return Ok(());
    };
    let Value::Object(consent) = consent else {
        return Err(format!(
            "context.consent must be an object, found {}",
            json_type_name(consent)
        ));
    };
    match consent.get("categoryPreferences") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(prefs)) => {
            for (category, value) in prefs {
                if !value.is_boolean() {
                    return Err(format!(
                        "context.consent.categoryPreferences.{category} must be true or false, found {}",
                        json_type_name(value)
                    ));
                }
            }
            Ok(())
        }
        Some(other) => Err(format!(
            "context.consent.categoryPreferences must be an object, found {}",
            json_type_name(other)
        )),
    }
}

/// Validate one message's raw bytes. `implied_type` is the call type given by the URL path
/// (`/v1/track`), which SDKs may leave out of the body.
pub fn validate_message(
    raw: &[u8],
    implied_type: Option<MessageType>,
    limits: &MessageLimits,
) -> Result<ValidMessage, InvalidMessage> {
    let mut partial = InvalidMessage {
        message_type: implied_type.map(|t| t.as_str().to_string()),
        message_id: None,
        event: None,
        reason: String::new(),
    };
    let fail = |mut partial: InvalidMessage, reason: String| {
        partial.reason = reason;
        Err(partial)
    };

    let value: Value = match serde_json::from_slice(raw) {
        Ok(v) => v,
        Err(e) => return fail(partial, format!("message is not valid JSON: {e}")),
    };
    let Value::Object(body) = value else {
        let kind = json_type_name(&value);
        return fail(
            partial,
            format!("message must be a JSON object, found {kind}"),
        );
    };

    // Record what can be read even from an invalid message, so the dashboard can show it.
    // Clipped: an oversized field must not reach an index at full length.
    partial.message_id = body.get("messageId").and_then(Value::as_str).map(clip);
    if let Some(t) = body.get("type").and_then(Value::as_str) {
        partial.message_type = Some(clip(t));
    }
    partial.event = body.get("event").and_then(Value::as_str).map(clip);

    if raw.len() > limits.max_message_bytes {
        return fail(
            partial,
            format!(
                "message is {} bytes; one call may be at most {} bytes (Segment's limit is {MAX_MESSAGE_BYTES})",
                raw.len(),
                limits.max_message_bytes
            ),
        );
    }

    let message_type = match body.get("type") {
        None | Some(Value::Null) => match implied_type {
            Some(t) => t,
            None => return fail(partial, "type is missing".to_string()),
        },
        Some(Value::String(name)) => match MessageType::parse(name) {
            Some(t) => {
                if let Some(implied) = implied_type.filter(|implied| *implied != t) {
                    return fail(
                        partial,
                        format!(
                            "type `{name}` does not match the endpoint /v1/{}",
                            implied.as_str()
                        ),
                    );
                }
                t
            }
            None => {
                return fail(
                    partial,
                    format!(
                        "type `{name}` is not a Segment call type (identify, track, page, screen, group, alias)"
                    ),
                )
            }
        },
        Some(other) => {
            let kind = json_type_name(other);
            return fail(partial, format!("type must be a string, found {kind}"));
        }
    };
    partial.message_type = Some(message_type.as_str().to_string());

    let message_id = match body.get("messageId") {
        None | Some(Value::Null) => return fail(partial, "messageId is missing".to_string()),
        Some(Value::String(id)) if id.trim().is_empty() => {
            return fail(partial, "messageId is empty".to_string())
        }
        Some(Value::String(id)) => {
            let chars = id.chars().count();
            if chars > MAX_MESSAGE_ID_CHARS {
                return fail(
                    partial,
                    format!(
                        "messageId is {chars} characters; Segment limits it to {MAX_MESSAGE_ID_CHARS}"
                    ),
                );
            }
            id.clone()
        }
        Some(other) => {
            let kind = json_type_name(other);
            return fail(partial, format!("messageId must be a string, found {kind}"));
        }
    };

    let too_long = |field: &str, value: &Option<String>| match value {
        Some(v) if v.chars().count() > limits.max_name_chars => Err(format!(
            "{field} is {} characters; TrackLayer accepts up to {} (server.max_name_chars)",
            v.chars().count(),
            limits.max_name_chars
        )),
        _ => Ok(()),
    };
    let user_id = identifier(&body, "userId").and_then(|v| too_long("userId", &v).map(|()| v));
    let anonymous_id =
        identifier(&body, "anonymousId").and_then(|v| too_long("anonymousId", &v).map(|()| v));
    let (user_id, anonymous_id) = match (user_id, anonymous_id) {
        (Err(reason), _) | (_, Err(reason)) => return fail(partial, reason),
        (Ok(None), Ok(None)) => {
            return fail(
                partial,
                "neither userId nor anonymousId is present; Segment requires one of them"
                    .to_string(),
            )
        }
        (Ok(u), Ok(a)) => (u, a),
    };

    for field in ["context", "integrations"] {
        if let Err(reason) = require_object_if_present(&body, field) {
            return fail(partial, reason);
        }
    }
    if let Err(reason) = check_consent(&body) {
        return fail(partial, reason);
    }

    let mut event = None;
    match message_type {
        MessageType::Track => {
            match body.get("event") {
                None | Some(Value::Null) => {
                    return fail(partial, "event is missing on a track call".to_string())
                }
                Some(Value::String(name)) if name.trim().is_empty() => {
                    return fail(partial, "event is empty on a track call".to_string())
                }
                Some(Value::String(name)) => {
                    let name = Some(name.clone());
                    if let Err(reason) = too_long("event", &name) {
                        return fail(partial, reason);
                    }
                    event = name;
                }
                Some(other) => {
                    let kind = json_type_name(other);
                    return fail(partial, format!("event must be a string, found {kind}"));
                }
            }
            if let Err(reason) = require_object_if_present(&body, "properties") {
                return fail(partial, reason);
            }
        }
        MessageType::Page | MessageType::Screen => {
            if let Err(reason) = require_object_if_present(&body, "properties") {
                return fail(partial, reason);
            }
            // A page name is a label, not a key: kept, at a bounded length.
            event = body.get("name").and_then(Value::as_str).map(clip);
        }
        MessageType::Identify => {
            if let Err(reason) = require_object_if_present(&body, "traits") {
                return fail(partial, reason);
            }
        }
        MessageType::Group => {
            if let Err(reason) = require_object_if_present(&body, "traits") {
                return fail(partial, reason);
            }
            match identifier(&body, "groupId") {
                Ok(Some(_)) => {}
                Ok(None) => return fail(partial, "groupId is missing on a group call".to_string()),
                Err(reason) => return fail(partial, reason),
            }
        }
        MessageType::Alias => match identifier(&body, "previousId") {
            Ok(Some(_)) if user_id.is_some() => {}
            Ok(Some(_)) => return fail(partial, "userId is missing on an alias call".to_string()),
            Ok(None) => {
                return fail(
                    partial,
                    "previousId is missing on an alias call".to_string(),
                )
            }
            Err(reason) => return fail(partial, reason),
        },
    }

    Ok(ValidMessage {
        message_type,
        message_id,
        user_id,
        anonymous_id,
        event,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(raw: &str) -> String {
        validate_message(raw.as_bytes(), None, &MessageLimits::default())
            .unwrap_err()
            .reason
    }

    #[test]
    fn accepts_a_track_call() {
        let msg = validate_message(
            br#"{"type":"track","event":"Order Completed","messageId":"m-1","userId":"u-1","properties":{"order_id":"o-1"}}"#,
            None,
            &MessageLimits::default(),
        )
        .unwrap();
        assert_eq!(msg.message_type, MessageType::Track);
        assert_eq!(msg.event.as_deref(), Some("Order Completed"));
        assert_eq!(msg.user_id.as_deref(), Some("u-1"));
    }

    #[test]
    fn implied_type_from_the_endpoint() {
        let msg = validate_message(
            br#"{"event":"x","messageId":"m","anonymousId":"a"}"#,
            Some(MessageType::Track),
            &MessageLimits::default(),
        )
        .unwrap();
        assert_eq!(msg.message_type, MessageType::Track);
        let err = validate_message(
            br#"{"type":"identify","messageId":"m","anonymousId":"a"}"#,
            Some(MessageType::Track),
            &MessageLimits::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.reason,
            "type `identify` does not match the endpoint /v1/track"
        );
    }

    #[test]
    fn names_the_failing_field() {
        assert_eq!(
            reason(r#"{"messageId":"m","userId":"u"}"#),
            "type is missing"
        );
        assert_eq!(
            reason(r#"{"type":"delete","messageId":"m","userId":"u"}"#),
            "type `delete` is not a Segment call type (identify, track, page, screen, group, alias)"
        );
        assert_eq!(
            reason(r#"{"type":"track","event":"x","userId":"u"}"#),
            "messageId is missing"
        );
        let long = "m".repeat(101);
        assert_eq!(
            reason(&format!(
                r#"{{"type":"track","event":"x","userId":"u","messageId":"{long}"}}"#
            )),
            "messageId is 101 characters; Segment limits it to 100"
        );
        assert_eq!(
            reason(r#"{"type":"track","event":"x","messageId":"m"}"#),
            "neither userId nor anonymousId is present; Segment requires one of them"
        );
        assert_eq!(
            reason(r#"{"type":"track","event":7,"messageId":"m","userId":"u"}"#),
            "event must be a string, found a number"
        );
        assert_eq!(
            reason(r#"{"type":"track","messageId":"m","userId":"u"}"#),
            "event is missing on a track call"
        );
        assert_eq!(
            reason(r#"{"type":"track","event":"x","messageId":"m","userId":"u","properties":[1]}"#),
            "properties must be an object, found an array"
        );
        assert_eq!(
            reason(r#"{"type":"identify","messageId":"m","userId":"u","traits":"x"}"#),
            "traits must be an object, found a string"
        );
        assert_eq!(
            reason(r#"{"type":"alias","messageId":"m","userId":"u"}"#),
            "previousId is missing on an alias call"
        );
        assert_eq!(
            reason(r#"{"type":"group","messageId":"m","userId":"u"}"#),
            "groupId is missing on a group call"
        );
        assert_eq!(
            reason(
                r#"{"type":"track","event":"x","messageId":"m","userId":"u","context":{"consent":{"categoryPreferences":{"Advertising":"yes"}}}}"#
            ),
            "context.consent.categoryPreferences.Advertising must be true or false, found a string"
        );
        assert_eq!(
            reason("[1]"),
            "message must be a JSON object, found an array"
        );
    }

    #[test]
    fn invalid_messages_keep_what_could_be_read() {
        let err = validate_message(
            br#"{"type":"track","messageId":"m-9","userId":"u"}"#,
            None,
            &MessageLimits::default(),
        )
        .unwrap_err();
        assert_eq!(err.message_id.as_deref(), Some("m-9"));
        assert_eq!(err.message_type.as_deref(), Some("track"));
    }

    #[test]
    fn oversized_message_is_invalid() {
        let big = "x".repeat(MAX_MESSAGE_BYTES);
        let raw = format!(
            r#"{{"type":"track","event":"x","messageId":"m","userId":"u","properties":{{"p":"{big}"}}}}"#
        );
        assert!(reason(&raw).starts_with("message is 32"));
    }

    #[test]
    fn oversized_fields_are_invalid_and_kept_clipped() {
        let long_id = "m".repeat(1_000_000);
        let raw = format!(r#"{{"type":"track","event":"x","messageId":"{long_id}","userId":"u"}}"#);
        let limits = MessageLimits {
            max_message_bytes: 2_000_000,
            ..MessageLimits::default()
        };
        let err = validate_message(raw.as_bytes(), None, &limits).unwrap_err();
        assert_eq!(
            err.reason,
            "messageId is 1000000 characters; Segment limits it to 100"
        );
        let kept = err.message_id.unwrap();
        assert!(kept.len() < 200, "kept {} bytes", kept.len());
        assert!(kept.ends_with("… (1000000 bytes)"), "{kept}");

        let name = "E".repeat(201);
        let err = reason(&format!(
            r#"{{"type":"track","event":"{name}","messageId":"m","userId":"u"}}"#
        ));
        assert_eq!(
            err,
            "event is 201 characters; TrackLayer accepts up to 200 (server.max_name_chars)"
        );
        let err = reason(&format!(
            r#"{{"type":"track","event":"x","messageId":"m","anonymousId":"{name}"}}"#
        ));
        assert!(err.starts_with("anonymousId is 201 characters"), "{err}");
    }
}
