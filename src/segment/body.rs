//! Request bodies come in three shapes: one message object, a bare JSON array (Webhooks (Actions)
//! batching) and `{"batch": [...]}` (HTTP Tracking API). Each element is kept as the exact bytes
//! received, because Segment's `X-Signature` for a batch covers element 0's raw bytes and because
//! "stored raw" must mean byte for byte.

use std::cell::Cell;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyShape {
    Single,
    Array,
    BatchObject,
}

impl BodyShape {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyShape::Single => "single",
            BodyShape::Array => "array",
            BodyShape::BatchObject => "batch",
        }
    }
}

#[derive(Debug)]
pub struct SplitBody {
    pub shape: BodyShape,
    /// Each message's raw bytes, sharing the request body's buffer.
    pub messages: Vec<Bytes>,
    /// `writeKey` from a `{batch, writeKey, sentAt}` body, which older SDKs use instead of Basic auth.
    pub write_key: Option<String>,
    /// `sentAt` of a `{batch, sentAt}` body: when the library sent it (for clock-skew correction).
    pub sent_at: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("body must be a JSON object (one message), an array of messages or {{\"batch\": [...]}}; found {0}")]
    WrongShape(&'static str),
    #[error("batch is empty")]
    Empty,
    /// Refused as soon as the count passes the limit, without reading the rest.
    #[error("the request carries more than {limit} messages (server.max_messages_per_request); Segment sends at most 4000 per batch, lower batch_size")]
    TooManyMessages { limit: usize },
}

/// The elements of a JSON array as raw slices, at most `limit` of them: past it, parsing stops
/// at once, so a body of a million tiny elements costs no more than the limit.
struct Elements<'a> {
    limit: usize,
    over: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Elements<'_> {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut elements = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.limit));
        while let Some(element) = seq.next_element::<&'de RawValue>()? {
            if elements.len() == self.limit {
                self.over.set(true);
                return Err(de::Error::custom("too many messages"));
            }
            elements.push(element);
        }
        Ok(elements)
    }
}

fn elements(text: &str, limit: usize) -> Result<Vec<&RawValue>, BodyError> {
    let over = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = Elements { limit, over: &over }
        .deserialize(&mut deserializer)
        .and_then(|elements| deserializer.end().map(|()| elements));
    match parsed {
        Ok(elements) if elements.is_empty() => Err(BodyError::Empty),
        Ok(elements) => Ok(elements),
        Err(_) if over.get() => Err(BodyError::TooManyMessages { limit }),
        Err(e) => Err(BodyError::Json(e.to_string())),
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    batch: Option<&'a RawValue>,
    #[serde(rename = "writeKey", default)]
    write_key: Option<String>,
    #[serde(rename = "sentAt", default)]
    sent_at: Option<String>,
}

fn json_kind(first: u8) -> &'static str {
    match first {
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        _ => "a number",
    }
}

/// Split a request body into message slices without re-serialising anything; more than
/// `max_messages` is refused.
pub fn split_body(body: &Bytes, max_messages: usize) -> Result<SplitBody, BodyError> {
    let root: &RawValue =
        serde_json::from_slice(body).map_err(|e| BodyError::Json(e.to_string()))?;
    let text = root.get();
    let first = text.as_bytes().first().copied().unwrap_or(b' ');
    match first {
        b'[' => {
            let elements = elements(text, max_messages)?;
            Ok(SplitBody {
                shape: BodyShape::Array,
                messages: elements.iter().map(|e| slice_of(body, e)).collect(),
                write_key: None,
                sent_at: None,
            })
        }
        b'{' => {
            let envelope: Envelope =
                serde_json::from_str(text).map_err(|e| BodyError::Json(e.to_string()))?;
            match envelope.batch {
                Some(batch) if batch.get().starts_with('[') => {
                    let elements = elements(batch.get(), max_messages)?;
                    Ok(SplitBody {
                        shape: BodyShape::BatchObject,
                        messages: elements.iter().map(|e| slice_of(body, e)).collect(),
                        write_key: envelope.write_key,
                        sent_at: envelope.sent_at,
                    })
                }
                Some(_) => Err(BodyError::WrongShape("`batch` that is not an array")),
                None => Ok(SplitBody {
                    shape: BodyShape::Single,
                    messages: vec![slice_of(body, root)],
                    write_key: envelope.write_key,
                    sent_at: envelope.sent_at,
                }),
            }
        }
        other => Err(BodyError::WrongShape(json_kind(other))),
    }
}

/// The bytes of a raw JSON value borrowed from `body`, sharing its allocation.
fn slice_of(body: &Bytes, raw: &RawValue) -> Bytes {
    body.slice_ref(raw.get().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_elements_keep_their_exact_bytes() {
        let body = Bytes::from_static(b"[ {\"a\": 1} ,\n{\"b\":[2, 3]}]");
        let split = split_body(&body, 100).unwrap();
        assert_eq!(split.shape, BodyShape::Array);
        assert_eq!(&split.messages[0][..], b"{\"a\": 1}");
        assert_eq!(&split.messages[1][..], b"{\"b\":[2, 3]}");
    }

    #[test]
    fn batch_object_and_single() {
        let body = Bytes::from_static(
            br#"{"batch":[{"type":"track"}],"writeKey":"wk","sentAt":"2026-01-01T00:00:00Z"}"#,
        );
        let split = split_body(&body, 100).unwrap();
        assert_eq!(split.shape, BodyShape::BatchObject);
        assert_eq!(split.write_key.as_deref(), Some("wk"));
        assert_eq!(&split.messages[0][..], br#"{"type":"track"}"#);

        let body = Bytes::from_static(b" {\"type\":\"identify\"}\n");
        let split = split_body(&body, 100).unwrap();
        assert_eq!(split.shape, BodyShape::Single);
        assert_eq!(&split.messages[0][..], b"{\"type\":\"identify\"}");
    }

    #[test]
    fn rejects_other_shapes() {
        assert!(matches!(
            split_body(&Bytes::from_static(b"{\"type\":"), 100),
            Err(BodyError::Json(_))
        ));
        assert_eq!(
            split_body(&Bytes::from_static(b"[]"), 100).unwrap_err(),
            BodyError::Empty
        );
        assert_eq!(
            split_body(&Bytes::from_static(b"\"x\""), 100).unwrap_err(),
            BodyError::WrongShape("a string")
        );
        assert_eq!(
            split_body(&Bytes::from_static(b"{\"batch\":{}}"), 100).unwrap_err(),
            BodyError::WrongShape("`batch` that is not an array")
        );
    }

    #[test]
    fn stops_at_the_message_limit() {
        let body = Bytes::from(format!("[{}{{}}]", "{},".repeat(10)));
        assert_eq!(
            split_body(&body, 5).unwrap_err(),
            BodyError::TooManyMessages { limit: 5 }
        );
        assert_eq!(split_body(&body, 11).unwrap().messages.len(), 11);
        let batch = Bytes::from(format!("{{\"batch\":[{}{{}}]}}", "{},".repeat(10)));
        assert_eq!(
            split_body(&batch, 5).unwrap_err(),
            BodyError::TooManyMessages { limit: 5 }
        );
        // Broken JSON is still reported as such, not as too many.
        assert!(matches!(
            split_body(&Bytes::from_static(b"[{},{}"), 5),
            Err(BodyError::Json(_))
        ));
    }
}
