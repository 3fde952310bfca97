//! What forgetting a person asks of a store: only reads and writes of sets. Which person, which
//! identifiers, what to suppress and forward is decided above (`crate::privacy`).

use std::collections::BTreeMap;

use super::model::privacy::{
    ChunkDeleted, Deleted, DueForward, ForwardResult, NewForward, NewPrivacyRequest, PersonKeys,
    PrivacyRecord, Suppression,
};
use super::StoreError;
use crate::pipeline::identity::Identifier;

pub trait PrivacyStore: Send {
    /// Run alone among forgets (a fleet: until this connection closes).
    fn exclusive(&mut self) -> Result<(), StoreError>;
    /// The store's key for suppression hashes, created on first use (the same for every node).
    fn key(&mut self) -> Result<Vec<u8>, StoreError>;
    /// Which profile owns each of these identifiers (the profile a merge kept).
    fn owners(&mut self, ids: &[Identifier]) -> Result<BTreeMap<Identifier, i64>, StoreError>;
    /// The profile, every profile merged into it (at any depth), and all their identifiers.
    fn person(&mut self, profile_id: i64) -> Result<PersonKeys, StoreError>;
    /// A signed request seen for the first time is recorded until `expires_at_ms` (true); one
    /// seen before is a replay (false). On a fleet, every node answers the same.
    fn first_use(
        &mut self,
        digest: &[u8],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Forget a recorded use, so a request that failed on the store can be sent again as it was.
    fn unuse(&mut self, digest: &[u8]) -> Result<(), StoreError>;
    /// The identifiers each forget recorded (the audit's `[{"kind", "hash"}]`, as stored).
    fn forget_audits(&mut self) -> Result<Vec<String>, StoreError>;
    /// Up to `limit` identifiers of the graph after `after`, in (kind, value) order, each with
    /// the profile it names.
    fn identities_after(
        &mut self,
        after: Option<&Identifier>,
        limit: usize,
    ) -> Result<Vec<(Identifier, i64)>, StoreError>;
    /// The raw bytes (as received) of the messages in rows `from..to`: a forget reads each to
    /// see whether it spells out the person.
    fn raw_messages(&mut self, from: i64, to: i64) -> Result<Vec<(i64, Vec<u8>)>, StoreError>;
    /// Which of these hashes are suppressed now.
    fn suppressed(&mut self, hashes: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Record a request and, in the same transaction, suppress `suppress`. Returns its row.
    fn begin(
        &mut self,
        request: &NewPrivacyRequest,
        suppress: &[Suppression],
    ) -> Result<i64, StoreError>;
    /// The highest message row: a forget walks the messages up to it in ranges.
    fn last_message_row(&mut self) -> Result<i64, StoreError>;
    /// Delete the person's messages with rows in `from..to` (those carrying their ids, their
    /// profiles' known rows, and `spelled`, the rows found to spell them out), and every row made from them
    /// (events, routes, collisions, unmapped, identity changes, deliveries and their attempts,
    /// request bodies that carried them, requests left without messages). One transaction.
    fn forget_messages(
        &mut self,
        person: &PersonKeys,
        from: i64,
        to: i64,
        spelled: &[i64],
    ) -> Result<ChunkDeleted, StoreError>;
    /// Delete the person's profiles, identities and identity changes; queue `forwards`; close
    /// the request as `done` with everything deleted. One transaction.
    fn forget_profiles(
        &mut self,
        request_row: i64,
        person: &PersonKeys,
        deleted: &Deleted,
        forwards: &[NewForward],
        now_ms: i64,
    ) -> Result<Deleted, StoreError>;
    /// Lift the suppression of these hashes; the undo request is recorded. Returns how many.
    fn lift(
        &mut self,
        request: &NewPrivacyRequest,
        hashes: &[Vec<u8>],
    ) -> Result<usize, StoreError>;
    /// Make deleted bytes unreadable where the store can (SQLite: the WAL folded in and
    /// truncated; deleted pages were zeroed as they were freed).
    fn compact(&mut self) -> Result<(), StoreError>;
    /// The newest requests, with their forwards.
    fn requests(&mut self, limit: usize) -> Result<Vec<PrivacyRecord>, StoreError>;
    fn request(&mut self, request_id: &str) -> Result<Option<PrivacyRecord>, StoreError>;
    /// Lease up to `limit` forwards that are due (a lease runs out after `lease_ms`).
    fn due_forwards(
        &mut self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueForward>, StoreError>;
    /// Record an attempt; a finished forward's payload is cleared.
    fn forward_done(&mut self, result: &ForwardResult, now_ms: i64) -> Result<(), StoreError>;
}
