//! How large text is kept: compressed, in a BLOB whose first byte names the codec. LZ4 where
//! speed matters (the canonical event, packed on the single writer thread: a few microseconds),
//! deflate where size does (request bodies, packed by the delivery worker that sent them). Plain
//! TEXT is still read as is.

use std::io::{Read, Write};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::ToSql;

const LZ4: u8 = 1;
const DEFLATE: u8 = 2;

/// Text as stored: compressed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packed(Vec<u8>);

impl Packed {
    /// Fast (LZ4): for what the single writer packs.
    pub fn text(text: &str) -> Packed {
        let mut packed = Vec::with_capacity(text.len() / 2 + 8);
        packed.push(LZ4);
        packed.extend(lz4_flex::compress_prepend_size(text.as_bytes()));
        Packed(packed)
    }

    /// Smaller (deflate): for what is packed off the writer.
    pub fn small(text: &str) -> Packed {
        let mut encoder = flate2::write::DeflateEncoder::new(
            Vec::with_capacity(text.len() / 3 + 8),
            flate2::Compression::fast(),
        );
        let mut packed = match encoder
            .write_all(text.as_bytes())
            .and_then(|()| encoder.finish())
        {
            Ok(deflated) => {
                let mut packed = Vec::with_capacity(deflated.len() + 1);
                packed.push(DEFLATE);
                packed.extend(deflated);
                packed
            }
            // Writing to memory does not fail; fall back to the fast codec if it ever does.
            Err(_) => return Packed::text(text),
        };
        packed.shrink_to_fit();
        Packed(packed)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ToSql for Packed {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(&self.0)))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a stored text cannot be unpacked: {0}")]
struct UnpackError(String);

fn unpack(bytes: &[u8]) -> Result<Vec<u8>, UnpackError> {
    match bytes.split_first() {
        Some((&LZ4, rest)) => {
            lz4_flex::decompress_size_prepended(rest).map_err(|e| UnpackError(e.to_string()))
        }
        Some((&DEFLATE, rest)) => {
            let mut plain = Vec::with_capacity(rest.len() * 3);
            flate2::read::DeflateDecoder::new(rest)
                .read_to_end(&mut plain)
                .map_err(|e| UnpackError(e.to_string()))?;
            Ok(plain)
        }
        Some((codec, _)) => Err(UnpackError(format!("unknown codec {codec}"))),
        None => Ok(Vec::new()),
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
        conn.execute("INSERT INTO t VALUES (?1)", [Packed::small(text)])
            .unwrap();
        conn.execute("INSERT INTO t VALUES (?1)", [text]).unwrap();
        let read: Vec<Unpacked> = conn
            .prepare("SELECT v FROM t")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read, vec![Unpacked(text.into()); 3]);
        assert!(Packed::text(text).len() < text.len());
        assert!(Packed::small(text).len() < text.len());
    }

    #[test]
    fn a_damaged_blob_is_an_error_not_garbage() {
        let conn = Connection::open_in_memory().unwrap();
        let read: rusqlite::Result<Unpacked> =
            conn.query_row("SELECT x'09ffff'", [], |r| r.get(0));
        assert!(read.is_err());
    }
}
