//! Storage. All SQL lives under this module: `sqlite/` is the embedded default (one process,
//! one file), `postgres/` the store a fleet of nodes shares. What the rest of TrackLayer sees
//! is re-exported here, so the pipeline, delivery, dashboard and CLI do not name a backend.
//!
//! One writer thread owns the write connection and commits in groups: every job waiting in its
//! queue goes into the same transaction, so one commit acknowledges many requests. Readers open
//! their own connections.

pub(crate) mod apply;
pub mod codec;
pub mod dashboard;
mod error;
pub(crate) mod filter_sql;
pub mod handoff;
mod location;
pub mod model;
pub mod postgres;
pub mod privacy;
pub mod replay_read;
pub mod sqlite;
pub mod warehouse;
pub(crate) mod writer;

pub use crate::stage::{
    IngestBatch, MessageOutcome, MessageRecord, PipelineInput, PipelineOutcome, RejectedRequest,
    RejectionBatch, RejectionCount, ReplayGuard, RequestReceipt, StoredOutcome,
};
pub use dashboard::DashboardReader;
pub use error::{now_ms, StoreError};
pub use handoff::LeasedDelivery;
pub use location::{RunningWriter, StoreLocation};
pub use model::trace::{
    DestinationPause, MessageTrace, RejectionTally, StoredAttempt, StoredCollision, StoredDelivery,
    StoredEvent, StoredHttpRequest, StoredIdentityChange, StoredMessage, StoredProfile,
    StoredRejection, StoredRequest, StoredRoute, StoredUnmapped,
};
pub use model::views::QueueCounts;
pub use model::{delivery, trace, views};
pub use sqlite::reader::StoreReader;
pub use sqlite::{local_secret, local_write_key, open_for_writing, read_local_secret, retention};
pub use writer::{
    ClaimToken, StoreWriter, WriteError, WriterOptions, WriterThread, DEFAULT_DELIVERY_SHARE,
};

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

/// What `inspect` reads, from either store.
pub trait TraceReader {
    /// Everything about a messageId (or an event_id, resolved to its first message).
    fn trace(&mut self, id: &str) -> Result<Option<MessageTrace>, StoreError>;
    fn request(&mut self, request_id: &str) -> Result<Option<StoredRequest>, StoreError>;
    /// The messages of one request, in batch order.
    fn messages_of_request(&mut self, request_id: &str) -> Result<Vec<StoredMessage>, StoreError>;
    /// Whether a destination paused itself: until when and why (`None` when running).
    fn destination_pause(
        &mut self,
        destination: &str,
    ) -> Result<Option<DestinationPause>, StoreError>;
}

impl TraceReader for StoreReader {
    fn trace(&mut self, id: &str) -> Result<Option<MessageTrace>, StoreError> {
        StoreReader::trace(self, id)
    }
    fn request(&mut self, request_id: &str) -> Result<Option<StoredRequest>, StoreError> {
        StoreReader::request(self, request_id)
    }
    fn messages_of_request(&mut self, request_id: &str) -> Result<Vec<StoredMessage>, StoreError> {
        StoreReader::messages_of_request(self, request_id)
    }
    fn destination_pause(
        &mut self,
        destination: &str,
    ) -> Result<Option<DestinationPause>, StoreError> {
        StoreReader::destination_pause(self, destination)
    }
}

impl TraceReader for postgres::reader::PgReader {
    fn trace(&mut self, id: &str) -> Result<Option<MessageTrace>, StoreError> {
        Ok(postgres::reader::PgReader::trace(self, id)?)
    }
    fn request(&mut self, request_id: &str) -> Result<Option<StoredRequest>, StoreError> {
        Ok(postgres::reader::PgReader::request(self, request_id)?)
    }
    fn messages_of_request(&mut self, request_id: &str) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(postgres::reader::PgReader::messages_of_request(
            self, request_id,
        )?)
    }
    fn destination_pause(
        &mut self,
        destination: &str,
    ) -> Result<Option<DestinationPause>, StoreError> {
        Ok(postgres::reader::PgReader::destination_pause(
            self,
            destination,
        )?)
    }
}
