//! Request bodies come in three shapes: one message object, a bare JSON array (Webhooks (Actions)
//! batching) and `{"batch": [...]}` (HTTP Tracking API). Each element is kept as the exact bytes
//! received, because Segment's `X-Signature` for a batch covers element 0's raw bytes and because
//! "stored raw" must mean byte for byte.

use bytes::Bytes;
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
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("body must be a JSON object (one message), an array of messages or {{\"batch\": [...]}}; found {0}")]
    WrongShape(&'static str),
    #[error("batch is empty")]
    Empty,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    batch: Option<&'a RawValue>,
    #[serde(rename = "writeKey", default)]
    write_key: Option<String>,
}

fn json_kind(first: u8) -> &'static str {
    match first {
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        _ => "a number",
    }
}

/// Split a request body into message slices without re-serialising anything.
pub fn split_body(body: &Bytes) -> Result<SplitBody, BodyError> {
    let root: &RawValue =
        serde_json::from_slice(body).map_err(|e| BodyError::Json(e.to_string()))?;
    let text = root.get();
    let first = text.as_bytes().first().copied().unwrap_or(b' ');
    match first {
        b'[' => {
            let elements: Vec<&RawValue> =
                serde_json::from_str(text).map_err(|e| BodyError::Json(e.to_string()))?;
            if elements.is_empty() {
                return Err(BodyError::Empty);
            }
            Ok(SplitBody {
                shape: BodyShape::Array,
                messages: elements.iter().map(|e| slice_of(body, e)).collect(),
                write_key: None,
            })
        }
        b'{' => {
            let envelope: Envelope =
                serde_json::from_str(text).map_err(|e| BodyError::Json(e.to_string()))?;
            match envelope.batch {
                Some(batch) if batch.get().starts_with('[') => {
                    let elements: Vec<&RawValue> = serde_json::from_str(batch.get())
                        .map_err(|e| BodyError::Json(e.to_string()))?;
                    if elements.is_empty() {
                        return Err(BodyError::Empty);
                    }
                    Ok(SplitBody {
                        shape: BodyShape::BatchObject,
                        messages: elements.iter().map(|e| slice_of(body, e)).collect(),
                        write_key: envelope.write_key,
                    })
                }
                Some(_) => Err(BodyError::WrongShape("`batch` that is not an array")),
                None => Ok(SplitBody {
                    shape: BodyShape::Single,
                    messages: vec![slice_of(body, root)],
                    write_key: envelope.write_key,
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
        let split = split_body(&body).unwrap();
        assert_eq!(split.shape, BodyShape::Array);
        assert_eq!(&split.messages[0][..], b"{\"a\": 1}");
        assert_eq!(&split.messages[1][..], b"{\"b\":[2, 3]}");
    }

    #[test]
    fn batch_object_and_single() {
        let body = Bytes::from_static(
            br#"{"batch":[{"type":"track"}],"writeKey":"wk","sentAt":"2026-01-01T00:00:00Z"}"#,
        );
        let split = split_body(&body).unwrap();
        assert_eq!(split.shape, BodyShape::BatchObject);
        assert_eq!(split.write_key.as_deref(), Some("wk"));
        assert_eq!(&split.messages[0][..], br#"{"type":"track"}"#);

        let body = Bytes::from_static(b" {\"type\":\"identify\"}\n");
        let split = split_body(&body).unwrap();
        assert_eq!(split.shape, BodyShape::Single);
        assert_eq!(&split.messages[0][..], b"{\"type\":\"identify\"}");
    }

    #[test]
    fn rejects_other_shapes() {
        assert!(matches!(
            split_body(&Bytes::from_static(b"{\"type\":")),
            Err(BodyError::Json(_))
        ));
        assert_eq!(
            split_body(&Bytes::from_static(b"[]")).unwrap_err(),
            BodyError::Empty
        );
        assert_eq!(
            split_body(&Bytes::from_static(b"\"x\"")).unwrap_err(),
            BodyError::WrongShape("a string")
        );
        assert_eq!(
            split_body(&Bytes::from_static(b"{\"batch\":{}}")).unwrap_err(),
            BodyError::WrongShape("`batch` that is not an array")
        );
    }
}
