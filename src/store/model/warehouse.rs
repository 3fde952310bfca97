//! The warehouse destination's contract, whatever database holds the table (see
//! `store::warehouse`).

use crate::pipeline::CanonicalEvent;

/// The version of the table's columns.
pub const SCHEMA_VERSION: i32 = 1;

/// A place canonical events are appended to.
pub trait WarehouseSink: Send {
    /// Write the events; returns how many were new (the rest were already there).
    fn write(&mut self, events: &[&CanonicalEvent]) -> Result<usize, String>;
    /// Delete a forgotten person's rows (by their events' ids, or the ids they carry), so that
    /// nothing of them stays readable; returns how many rows went.
    fn forget(&mut self, person: &WarehouseForget) -> Result<usize, String>;
}

/// Whose rows a forget deletes from the warehouse table.
#[derive(Debug, Clone, Default)]
pub struct WarehouseForget {
    pub event_ids: Vec<String>,
    pub user_ids: Vec<String>,
    pub anonymous_ids: Vec<String>,
}
