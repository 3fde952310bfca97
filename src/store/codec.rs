//! How large text is kept: LZ4 against a built-in dictionary of TrackLayer's own JSON (canonical
//! events, platform payloads, their replies), in a BLOB whose first byte names the codec. Small
//! texts share most of their keys and phrases with the dictionary, so they shrink 3–10× in a few
//! microseconds — cheap enough for the single writer thread. Plain TEXT is still read as is.
//!
//! The dictionary must never change once rows use it: a new one gets a new codec byte, and the
//! old one stays to read old rows.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::ToSql;

/// LZ4 with `DICTIONARY_1`, the uncompressed size prepended.
const LZ4_DICTIONARY_1: u8 = 1;
const DICTIONARY_1: &[u8] = include_bytes!("codec_dictionary.json");

/// Text as stored: compressed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packed(Vec<u8>);

impl Packed {
    pub fn text(text: &str) -> Packed {
        Packed::bytes(text.as_bytes())
    }

    pub fn bytes(bytes: &[u8]) -> Packed {
        let compressed = lz4_flex::block::compress_prepend_size_with_dict(bytes, DICTIONARY_1);
        let mut packed = Vec::with_capacity(compressed.len() + 1);
        packed.push(LZ4_DICTIONARY_1);
        packed.extend(compressed);
        Packed(packed)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The stored form (tag byte, then the compressed text), for stores that bind bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl ToSql for Packed {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(&self.0)))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a stored text cannot be unpacked: {0}")]
pub(crate) struct UnpackError(String);

pub(crate) fn unpack(bytes: &[u8]) -> Result<Vec<u8>, UnpackError> {
    match bytes.split_first() {
        Some((&LZ4_DICTIONARY_1, rest)) => {
            let (size, compressed) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| UnpackError("too short".into()))?;
            let size = u32::from_le_bytes(*size) as usize;
            // LZ4 expands at most ~255×: a larger size means damage, not a reason to allocate.
            if size > compressed.len().saturating_mul(255) + 64 {
                return Err(UnpackError(format!(
                    "claims {size} bytes from {} compressed",
                    compressed.len()
                )));
            }
            lz4_flex::block::decompress_with_dict(compressed, size, DICTIONARY_1)
                .map_err(|e| UnpackError(e.to_string()))
        }
        Some((codec, _)) => Err(UnpackError(format!("unknown codec {codec}"))),
        None => Ok(Vec::new()),
    }
}

/// A raw message kept as received, marked so it is never taken for a packed one.
const RAW_AS_RECEIVED: u8 = 0;

/// A message's raw bytes as stored: packed when that is smaller (the usual Segment message
/// shares its keys with the dictionary: ~570 bytes become ~320), else as received. Raw bytes
/// that could be read as a codec byte are marked as received, so what is read back is always
/// exactly what arrived.
pub fn pack_raw(raw: &[u8]) -> Vec<u8> {
    let packed = Packed::bytes(raw);
    if packed.len() < raw.len() {
        packed.0
    } else if raw.first().is_some_and(|b| *b <= LZ4_DICTIONARY_1) {
        [&[RAW_AS_RECEIVED][..], raw].concat()
    } else {
        raw.to_vec()
    }
}

/// A message's raw bytes as they arrived, from what `pack_raw` stored (or an older version
/// stored as received).
pub fn unpack_raw(stored: &[u8]) -> Vec<u8> {
    match stored.first() {
        Some(&LZ4_DICTIONARY_1) => unpack(stored).unwrap_or_else(|_| stored.to_vec()),
        Some(&RAW_AS_RECEIVED) => stored[1..].to_vec(),
        _ => stored.to_vec(),
    }
}

/// Text read back from a column that holds either packed BLOBs or plain TEXT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked(pub String);

impl FromSql for Unpacked {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Text(text) => Ok(Unpacked(String::from_utf8_lossy(text).into_owned())),
            ValueRef::Blob(bytes) => unpack(bytes)
                .map_err(|e| FromSqlError::Other(Box::new(e)))
                .map(|plain| Unpacked(String::from_utf8_lossy(&plain).into_owned())),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

/// A nullable packed column.
pub fn unpacked(value: Option<Unpacked>) -> Option<String> {
    value.map(|u| u.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn packed_text_reads_back_and_plain_text_still_reads() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute("CREATE TABLE t (v TEXT)", []).unwrap();
        let text = r#"{"event_id":"ev_1","properties":{"a":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}"#;
        conn.execute("INSERT INTO t VALUES (?1)", [Packed::text(text)])
            .unwrap();
        conn.execute("INSERT INTO t VALUES (?1)", [text]).unwrap();
        let read: Vec<Unpacked> = conn
            .prepare("SELECT v FROM t")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read, vec![Unpacked(text.into()); 2]);
    }

    /// An event of the usual shape shares most of its text with the dictionary.
    #[test]
    fn a_canonical_event_packs_small() {
        let event = serde_json::to_string(&crate::destinations::fixture::purchase()).unwrap();
        let packed = Packed::text(&event);
        assert!(
            packed.len() * 3 < event.len(),
            "{} bytes packed to {}",
            event.len(),
            packed.len()
        );
    }

    #[test]
    fn a_raw_message_reads_back_byte_for_byte_whatever_it_holds() {
        let message = br#"{"type":"track","event":"Order Completed","messageId":"m-1","userId":"u-1","properties":{"order_id":"O-1","revenue":12.5,"currency":"EUR"},"context":{"ip":"203.0.113.7"}}"#;
        let stored = pack_raw(message);
        assert!(stored.len() < message.len(), "packed: {}", stored.len());
        assert_eq!(unpack_raw(&stored), message);
        // Bytes a client may send that look like a codec: kept as they arrived.
        for odd in [
            &b"\x01\x02\x03"[..],
            &[1u8, 0, 0, 0, 9][..],
            &[0u8, 1][..],
            b"",
            b"x",
        ] {
            assert_eq!(unpack_raw(&pack_raw(odd)), odd, "{odd:?}");
        }
        // What an older version stored as received still reads.
        assert_eq!(unpack_raw(message), message);
    }

    #[test]
    fn a_damaged_blob_is_an_error_not_garbage() {
        let conn = Connection::open_in_memory().unwrap();
        let read: rusqlite::Result<Unpacked> = conn.query_row("SELECT x'09ffff'", [], |r| r.get(0));
        assert!(read.is_err());
        let read: rusqlite::Result<Unpacked> =
            conn.query_row("SELECT x'01ffffffff00'", [], |r| r.get(0));
        assert!(read.is_err());
    }
}
