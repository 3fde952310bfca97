//! The records every store reads and writes, whatever holds them: what the writer takes and
//! answers, what a reader gives back. Backends (`sqlite`, `postgres`) convert rows to these.

pub mod actions;
pub mod alerts;
pub mod delivery;
pub mod destinations;
pub mod filter;
pub mod pipeline;
pub mod privacy;
pub mod trace;
pub mod views;
pub mod warehouse;
