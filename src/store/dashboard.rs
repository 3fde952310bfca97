//! What the dashboard reads, from either store. The loader thread owns one of these; the panes
//! never learn whether they show one SQLite file or a fleet's PostgreSQL.

use super::model::alerts::StoredAlert;
use super::model::privacy::PrivacyRecord;
use super::model::trace::{
    DestinationPause, MessageTrace, StoredCollision, StoredHttpRequest, StoredProfile,
};
use super::model::views::*;
use super::postgres::reader::PgReader;
use super::{StoreError, StoreReader};

pub trait DashboardReader: Send {
    /// Messages and events stored so far.
    fn totals(&mut self) -> Result<(i64, i64), StoreError>;
    /// A page of the stream, newest first, starting at `top` (keyset pagination).
    fn stream(
        &mut self,
        limit: usize,
        filter: &str,
        top: StreamCursor,
    ) -> Result<Vec<StreamRow>, StoreError>;
    /// The cursor `n` rows newer than `from` (paging up; `NEWEST` past the newest row).
    fn stream_newer(
        &mut self,
        filter: &str,
        from: StreamCursor,
        n: usize,
    ) -> Result<StreamCursor, StoreError>;
    /// The id ranges the stream spans (position and total).
    fn stream_extent(&mut self) -> Result<StreamExtent, StoreError>;
    /// One refused request.
    fn rejection(&mut self, id: i64) -> Result<Option<RejectionDetail>, StoreError>;
    /// A message (messageId, event_id, request id, order_id) or profile, across all history.
    fn search(&mut self, text: &str) -> Result<Option<SearchHit>, StoreError>;
    /// A page of delivery attempts with `id <= top`, newest first.
    fn attempts_page(
        &mut self,
        limit: usize,
        filter: &str,
        top: i64,
    ) -> Result<Vec<AttemptRow>, StoreError>;
    /// The top of the page of `table` that is `n` rows newer than `from`.
    fn page_newer(
        &mut self,
        table: PagedTable,
        filter: &str,
        from: i64,
        n: usize,
    ) -> Result<i64, StoreError>;
    /// The id range of a paged list's table.
    fn id_range(&mut self, table: PagedTable) -> Result<Option<(i64, i64)>, StoreError>;
    /// A page of dedup collisions with `id <= top`, newest first.
    fn collisions_page(
        &mut self,
        limit: usize,
        filter: &str,
        top: i64,
    ) -> Result<Vec<StoredCollision>, StoreError>;
    fn http_request(&mut self, row: i64) -> Result<Option<StoredHttpRequest>, StoreError>;
    fn latest_event_message_id(&mut self) -> Result<Option<String>, StoreError>;
    fn trace(&mut self, id: &str) -> Result<Option<MessageTrace>, StoreError>;
    fn unmapped_groups(
        &mut self,
        limit: usize,
        filter: &str,
    ) -> Result<Vec<UnmappedGroup>, StoreError>;
    fn destination_stats(
        &mut self,
        destinations: &[String],
        now_ms: i64,
    ) -> Result<Vec<DestinationStats>, StoreError>;
    /// The destinations the store has seen, for a dashboard attached without a config.
    fn destination_names(&mut self) -> Result<Vec<String>, StoreError>;
    /// The fleet's nodes (none on the single-node SQLite store).
    fn nodes(&mut self) -> Result<Vec<FleetNode>, StoreError>;
    /// Open alerts first, then the newest resolved ones.
    fn alerts(&mut self, limit: usize) -> Result<Vec<StoredAlert>, StoreError>;
    /// The newest forget requests (the audit: no personal data).
    fn privacy_requests(&mut self, limit: usize) -> Result<Vec<PrivacyRecord>, StoreError>;
    /// A destination's queue now.
    fn queue_counts(&mut self, destination: &str) -> Result<QueueCounts, StoreError>;
    /// Whether a destination is paused: until when and why.
    fn destination_pause(
        &mut self,
        destination: &str,
    ) -> Result<Option<DestinationPause>, StoreError>;
    /// Bytes the store takes: (database, write-ahead log).
    fn storage_bytes(&mut self) -> Result<(u64, u64), StoreError>;
    fn message_raw(&mut self, row: i64) -> Result<Option<Vec<u8>>, StoreError>;
    fn find_profile(&mut self, query: &str) -> Result<Option<StoredProfile>, StoreError>;
    fn events_of_profile(
        &mut self,
        profile_id: i64,
        limit: usize,
    ) -> Result<Vec<ProfileEvent>, StoreError>;
}

impl DashboardReader for StoreReader {
    fn totals(&mut self) -> Result<(i64, i64), StoreError> {
        StoreReader::totals(self)
    }
    fn stream(
        &mut self,
        limit: usize,
        filter: &str,
        top: StreamCursor,
    ) -> Result<Vec<StreamRow>, StoreError> {
        StoreReader::stream(self, limit, filter, top)
    }
    fn stream_newer(
        &mut self,
        filter: &str,
        from: StreamCursor,
        n: usize,
    ) -> Result<StreamCursor, StoreError> {
        StoreReader::stream_newer(self, filter, from, n)
    }
    fn stream_extent(&mut self) -> Result<StreamExtent, StoreError> {
        StoreReader::stream_extent(self)
    }
    fn rejection(&mut self, id: i64) -> Result<Option<RejectionDetail>, StoreError> {
        StoreReader::rejection(self, id)
    }
    fn search(&mut self, text: &str) -> Result<Option<SearchHit>, StoreError> {
        StoreReader::search(self, text)
    }
    fn attempts_page(
        &mut self,
        limit: usize,
        filter: &str,
        top: i64,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        StoreReader::attempts_page(self, limit, filter, top)
    }
    fn page_newer(
        &mut self,
        table: PagedTable,
        filter: &str,
        from: i64,
        n: usize,
    ) -> Result<i64, StoreError> {
        StoreReader::page_newer(self, table, filter, from, n)
    }
    fn id_range(&mut self, table: PagedTable) -> Result<Option<(i64, i64)>, StoreError> {
        StoreReader::id_range(self, table)
    }
    fn collisions_page(
        &mut self,
        limit: usize,
        filter: &str,
        top: i64,
    ) -> Result<Vec<StoredCollision>, StoreError> {
        StoreReader::collisions_page(self, limit, filter, top)
    }
    fn http_request(&mut self, row: i64) -> Result<Option<StoredHttpRequest>, StoreError> {
        StoreReader::http_request(self, row)
    }
    fn latest_event_message_id(&mut self) -> Result<Option<String>, StoreError> {
        StoreReader::latest_event_message_id(self)
    }
    fn trace(&mut self, id: &str) -> Result<Option<MessageTrace>, StoreError> {
        StoreReader::trace(self, id)
    }
    fn unmapped_groups(
        &mut self,
        limit: usize,
        filter: &str,
    ) -> Result<Vec<UnmappedGroup>, StoreError> {
        StoreReader::unmapped_groups(self, limit, filter)
    }
    fn destination_stats(
        &mut self,
        destinations: &[String],
        now_ms: i64,
    ) -> Result<Vec<DestinationStats>, StoreError> {
        StoreReader::destination_stats(self, destinations, now_ms)
    }
    fn destination_names(&mut self) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = self
            .delivery_counts()?
            .into_iter()
            .map(|(d, _, _)| d)
            .collect();
        names.dedup();
        Ok(names)
    }
    fn nodes(&mut self) -> Result<Vec<FleetNode>, StoreError> {
        Ok(Vec::new())
    }
    fn alerts(&mut self, limit: usize) -> Result<Vec<StoredAlert>, StoreError> {
        StoreReader::alerts(self, limit)
    }
    fn privacy_requests(&mut self, limit: usize) -> Result<Vec<PrivacyRecord>, StoreError> {
        StoreReader::privacy_requests(self, limit)
    }
    fn queue_counts(&mut self, destination: &str) -> Result<QueueCounts, StoreError> {
        StoreReader::queue_counts(self, destination)
    }
    fn destination_pause(
        &mut self,
        destination: &str,
    ) -> Result<Option<DestinationPause>, StoreError> {
        StoreReader::destination_pause(self, destination)
    }
    fn storage_bytes(&mut self) -> Result<(u64, u64), StoreError> {
        StoreReader::storage_bytes(self)
    }
    fn message_raw(&mut self, row: i64) -> Result<Option<Vec<u8>>, StoreError> {
        StoreReader::message_raw(self, row)
    }
    fn find_profile(&mut self, query: &str) -> Result<Option<StoredProfile>, StoreError> {
        StoreReader::find_profile(self, query)
    }
    fn events_of_profile(
        &mut self,
        profile_id: i64,
        limit: usize,
    ) -> Result<Vec<ProfileEvent>, StoreError> {
        StoreReader::events_of_profile(self, profile_id, limit)
    }
}

impl DashboardReader for PgReader {
    fn totals(&mut self) -> Result<(i64, i64), StoreError> {
        Ok(PgReader::totals(self)?)
    }
    fn stream(
        &mut self,
        limit: usize,
        filter: &str,
        top: StreamCursor,
    ) -> Result<Vec<StreamRow>, StoreError> {
        Ok(PgReader::stream(self, limit, filter, top)?)
    }
    fn stream_newer(
        &mut self,
        filter: &str,
        from: StreamCursor,
        n: usize,
    ) -> Result<StreamCursor, StoreError> {
        Ok(PgReader::stream_newer(self, filter, from, n)?)
    }
    fn stream_extent(&mut self) -> Result<StreamExtent, StoreError> {
        Ok(PgReader::stream_extent(self)?)
    }
    fn rejection(&mut self, id: i64) -> Result<Option<RejectionDetail>, StoreError> {
        Ok(PgReader::rejection(self, id)?)
    }
    fn search(&mut self, text: &str) -> Result<Option<SearchHit>, StoreError> {
        Ok(PgReader::search(self, text)?)
    }
    fn attempts_page(
        &mut self,
        limit: usize,
        filter: &str,
        top: i64,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        Ok(PgReader::attempts_page(self, limit, filter, top)?)
    }
    fn page_newer(
        &mut self,
        table: PagedTable,
        filter: &str,
        from: i64,
        n: usize,
    ) -> Result<i64, StoreError> {
        Ok(PgReader::page_newer(self, table, filter, from, n)?)
    }
    fn id_range(&mut self, table: PagedTable) -> Result<Option<(i64, i64)>, StoreError> {
        Ok(PgReader::id_range(self, table)?)
    }
    fn collisions_page(
        &mut self,
        limit: usize,
        filter: &str,
        top: i64,
    ) -> Result<Vec<StoredCollision>, StoreError> {
        Ok(PgReader::collisions_page(self, limit, filter, top)?)
    }
    fn http_request(&mut self, row: i64) -> Result<Option<StoredHttpRequest>, StoreError> {
        Ok(PgReader::http_request(self, row)?)
    }
    fn latest_event_message_id(&mut self) -> Result<Option<String>, StoreError> {
        Ok(PgReader::latest_event_message_id(self)?)
    }
    fn trace(&mut self, id: &str) -> Result<Option<MessageTrace>, StoreError> {
        Ok(PgReader::trace(self, id)?)
    }
    fn unmapped_groups(
        &mut self,
        limit: usize,
        filter: &str,
    ) -> Result<Vec<UnmappedGroup>, StoreError> {
        Ok(PgReader::unmapped_groups(self, limit, filter)?)
    }
    fn destination_stats(
        &mut self,
        destinations: &[String],
        now_ms: i64,
    ) -> Result<Vec<DestinationStats>, StoreError> {
        Ok(PgReader::destination_stats(self, destinations, now_ms)?)
    }
    fn destination_names(&mut self) -> Result<Vec<String>, StoreError> {
        Ok(PgReader::destination_names(self)?)
    }
    fn nodes(&mut self) -> Result<Vec<FleetNode>, StoreError> {
        Ok(PgReader::nodes(self)?)
    }
    fn alerts(&mut self, limit: usize) -> Result<Vec<StoredAlert>, StoreError> {
        Ok(PgReader::alerts(self, limit)?)
    }
    fn privacy_requests(&mut self, limit: usize) -> Result<Vec<PrivacyRecord>, StoreError> {
        PgReader::privacy_requests(self, limit)
    }
    fn queue_counts(&mut self, destination: &str) -> Result<QueueCounts, StoreError> {
        Ok(PgReader::queue_counts(self, destination)?)
    }
    fn destination_pause(
        &mut self,
        destination: &str,
    ) -> Result<Option<DestinationPause>, StoreError> {
        Ok(PgReader::destination_pause(self, destination)?)
    }
    fn storage_bytes(&mut self) -> Result<(u64, u64), StoreError> {
        Ok(PgReader::storage_bytes(self)?)
    }
    fn message_raw(&mut self, row: i64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(PgReader::message_raw(self, row)?)
    }
    fn find_profile(&mut self, query: &str) -> Result<Option<StoredProfile>, StoreError> {
        Ok(PgReader::find_profile(self, query)?)
    }
    fn events_of_profile(
        &mut self,
        profile_id: i64,
        limit: usize,
    ) -> Result<Vec<ProfileEvent>, StoreError> {
        Ok(PgReader::events_of_profile(self, profile_id, limit)?)
    }
}
