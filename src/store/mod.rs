//! Storage. All SQL lives under this module: `sqlite/` is the embedded default (one process,
//! one file), `postgres/` the store a fleet of nodes shares. What the rest of TrackLayer sees
//! is re-exported here, so the pipeline, delivery, dashboard and CLI do not name a backend.
//!
//! One writer thread owns the write connection and commits in groups: every job waiting in its
//! queue goes into the same transaction, so one commit acknowledges many requests. Readers open
//! their own connections.

pub mod codec;
mod error;
pub mod handoff;
pub mod model;
pub mod postgres;
pub(crate) mod records;
pub mod sqlite;
pub mod warehouse;
pub(crate) mod writer;

pub use error::{now_ms, StoreError};
pub use handoff::LeasedDelivery;
pub use model::trace::{
    DestinationPause, MessageTrace, RejectionTally, StoredAttempt, StoredCollision, StoredDelivery,
    StoredEvent, StoredHttpRequest, StoredIdentityChange, StoredMessage, StoredProfile,
    StoredRejection, StoredRequest, StoredRoute, StoredUnmapped,
};
pub use model::views::QueueCounts;
pub use model::{delivery, pipeline, trace, views};
pub use records::{
    IngestBatch, MessageOutcome, MessageRecord, RejectedRequest, RejectionBatch, RejectionCount,
    ReplayGuard, RequestReceipt, StoredOutcome,
};
pub use sqlite::reader::StoreReader;
pub use sqlite::{
    local_secret, local_write_key, open_for_writing, open_replay_window, read_local_secret,
    requeue, retention,
};
pub use writer::{StoreWriter, WriteError, WriterOptions, WriterThread, DEFAULT_DELIVERY_SHARE};

impl StoreWriter {
    /// Open the embedded SQLite database (running migrations) and start the writer thread.
    /// `targets` are the destinations events are routed to (consent and environment checks).
    /// `handoffs` are the delivery workers that take new deliveries straight from a commit.
    pub fn spawn(
        path: &std::path::Path,
        options: WriterOptions,
        targets: Vec<crate::pipeline::RouteTarget>,
        handoffs: std::sync::Arc<handoff::HandOffs>,
    ) -> Result<(StoreWriter, writer::WriterThread), StoreError> {
        sqlite::writer::spawn(path, options, targets, handoffs)
    }
}
