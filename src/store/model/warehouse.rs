//! The warehouse destination's contract, whatever database holds the table (see
//! `store::warehouse`).

use crate::pipeline::CanonicalEvent;

/// The version of the table's columns.
pub const SCHEMA_VERSION: i32 = 1;

/// A place canonical events are appended to.
pub trait WarehouseSink: Send {
    /// Write the events; returns how many were new (the rest were already there).
    fn write(&mut self, events: &[&CanonicalEvent]) -> Result<usize, String>;
}
