//! The stateful stage of the pipeline, written once for every store. For a group of requests
//! the writer:
//!
//! 1. **loads** — `Keys::of` names everything the group could touch (messageIds, identifiers,
//!    event_ids, refunded purchases, replay windows, paused destinations) and the store reads
//!    each kind in a set-based query into a [`Snapshot`];
//! 2. **decides** — [`decide`] (pure) makes every decision and every row: duplicates, identity
//!    merges and conflicts, dedup collisions, routes, deliveries;
//! 3. **writes** — the store writes the rows, one statement per table where it can.
//!
//! A store implements only load and write. A fleet node that finds a key taken by another node
//! between its load and its write loads again and decides again (`decide` is deterministic).

pub mod decide;
pub mod input;
pub mod preview;
pub mod rows;
pub mod snapshot;

pub use decide::{decide, Context, Ids, Table, COUNTING};
pub use input::{
    message_record, IngestBatch, MessageContext, MessageOutcome, MessageRecord, PipelineInput,
    PipelineOutcome, RejectedRequest, RejectionBatch, RejectionCount, ReplayGuard, RequestReceipt,
    StoredOutcome,
};
pub use rows::{Decision, JobDecision};
pub use snapshot::{Keys, Snapshot};
