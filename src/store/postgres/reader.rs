//! Reading one message's trace from the fleet's database (`inspect`): the same records as the
//! SQLite reader gives, so the trace views do not know where they came from. The dashboard's
//! views are in `views.rs`.

use postgres::{Client, Row};

use super::PostgresError;
use crate::store::codec::unpack;
use crate::store::model::trace::{
    live_profile, DestinationPause, MessageTrace, ProfileKey, RejectionTally, StoredAttempt,
    StoredCollision, StoredDelivery, StoredEvent, StoredHttpRequest, StoredIdentityChange,
    StoredMessage, StoredProfile, StoredRejection, StoredRequest, StoredRoute, StoredUnmapped,
};

type PgResult<T> = Result<T, postgres::Error>;

/// A packed column as text (None when NULL or damaged).
pub(super) fn packed(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes
        .and_then(|b| unpack(&b).ok())
        .map(|plain| String::from_utf8_lossy(&plain).into_owned())
}

const MESSAGE_COLUMNS: &str = "m.id, m.request_id, m.position, m.received_at_ms, m.environment,
    m.message_id, m.type, m.event, m.user_id, m.anonymous_id, m.status, m.reason, m.duplicate_of,
    m.raw_sha256, COALESCE(m.raw, o.raw), m.raw IS NOT NULL, m.raw_bytes";

fn message_from_row(r: &Row) -> StoredMessage {
    StoredMessage {
        row_id: r.get(0),
        request_id: r.get(1),
        position: i64::from(r.get::<_, i32>(2)),
        received_at_ms: r.get(3),
        environment: r.get(4),
        message_id: r.get(5),
        message_type: r.get(6),
        event: r.get(7),
        user_id: r.get(8),
        anonymous_id: r.get(9),
        status: r.get(10),
        reason: r.get(11),
        duplicate_of: r.get(12),
        raw_sha256: hex::encode(r.get::<_, Vec<u8>>(13)),
        raw: r
            .get::<_, Option<Vec<u8>>>(14)
            .map(|stored| crate::store::codec::unpack_raw(&stored))
            .unwrap_or_default(),
        raw_stored: r.get(15),
        raw_bytes: r.get(16),
    }
}

/// Collisions with both messageIds: append the condition and order.
pub(super) const COLLISION_SELECT: &str =
    "SELECT c.id, c.event_id, c.kind, c.winner_event_row, c.winner_message_row, w.message_id,
            c.message_row, m.message_id, c.detected_at_ms, c.canonical
     FROM collisions c
     LEFT JOIN messages w ON w.id = c.winner_message_row
     LEFT JOIN messages m ON m.id = c.message_row";

pub(super) fn collision_from_row(r: &Row) -> StoredCollision {
    StoredCollision {
        id: r.get(0),
        event_id: r.get(1),
        kind: r.get(2),
        winner_event_row: r.get(3),
        winner_message_row: r.get(4),
        winner_message_id: r.get(5),
        message_row: r.get(6),
        message_id: r.get(7),
        detected_at_ms: r.get(8),
        canonical: packed(r.get(9))
            .and_then(|c| serde_json::from_str(&c).ok())
            .unwrap_or_default(),
    }
}

fn change_from_row(r: &Row) -> StoredIdentityChange {
    StoredIdentityChange {
        at_ms: r.get(0),
        message_row: r.get(1),
        kind: r.get(2),
        profile_id: r.get(3),
        other_profile_id: r.get(4),
        detail: r.get(5),
    }
}

/// A connection to the fleet's database for reading traces. Used from synchronous commands;
/// the sync client must not run on an async task's thread.
pub struct PgReader {
    pub(super) client: Client,
}

impl PgReader {
    pub fn open(url: &str) -> Result<PgReader, PostgresError> {
        Ok(PgReader {
            client: super::connect(url)?,
        })
    }

    fn messages(
        &mut self,
        condition: &str,
        order: &str,
        key: &str,
    ) -> PgResult<Vec<StoredMessage>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m LEFT JOIN messages o ON o.id = m.duplicate_of
             WHERE {condition} = $1 ORDER BY {order}"
        );
        Ok(self
            .client
            .query(&sql, &[&key])?
            .iter()
            .map(message_from_row)
            .collect())
    }

    /// The messages of one request, in batch order.
    pub fn messages_of_request(&mut self, request_id: &str) -> PgResult<Vec<StoredMessage>> {
        self.messages("m.request_id", "m.position", request_id)
    }

    pub fn request(&mut self, request_id: &str) -> PgResult<Option<StoredRequest>> {
        Ok(self
            .client
            .query_opt(
                "SELECT request_id, received_at_ms, environment, path, remote_addr, user_agent,
                        auth_scheme, body_shape, body_bytes, message_count
                 FROM requests WHERE request_id = $1",
                &[&request_id],
            )?
            .map(|r| StoredRequest {
                request_id: r.get(0),
                received_at_ms: r.get(1),
                environment: r.get(2),
                path: r.get(3),
                remote_addr: r.get(4),
                user_agent: r.get(5),
                auth_scheme: r.get(6),
                body_shape: r.get(7),
                body_bytes: r.get(8),
                message_count: i64::from(r.get::<_, i32>(9)),
            }))
    }

    fn events_of_message(&mut self, message_row: i64) -> PgResult<Vec<StoredEvent>> {
        let rows = self.client.query(
            "SELECT id, event_id, message_row, message_id, replay, created_at_ms, canonical
             FROM events WHERE message_row = $1 ORDER BY id",
            &[&message_row],
        )?;
        let mut events = Vec::with_capacity(rows.len());
        for r in rows {
            let Some(canonical) = packed(r.get(6)).and_then(|c| serde_json::from_str(&c).ok())
            else {
                continue;
            };
            let row_id: i64 = r.get(0);
            events.push(StoredEvent {
                row_id,
                event_id: r.get(1),
                message_row: r.get(2),
                message_id: r.get(3),
                replay: r.get(4),
                created_at_ms: r.get(5),
                canonical,
                routes: self.routes_of(row_id)?,
            });
        }
        Ok(events)
    }

    fn routes_of(&mut self, event_row: i64) -> PgResult<Vec<StoredRoute>> {
        Ok(self
            .client
            .query(
                "SELECT destination, kind, destination_event, verdict, reason, consent_source,
                        consent_allowed, consent_reason
                 FROM routes WHERE event_row = $1 ORDER BY destination",
                &[&event_row],
            )?
            .iter()
            .map(|r| StoredRoute {
                destination: r.get(0),
                kind: r.get(1),
                destination_event: r.get(2),
                verdict: r.get(3),
                reason: r.get(4),
                consent_source: r.get(5),
                consent_allowed: r.get(6),
                consent_reason: r.get(7),
            })
            .collect())
    }

    fn collisions_of_message(&mut self, message_row: i64) -> PgResult<Vec<StoredCollision>> {
        let sql = format!(
            "{COLLISION_SELECT} WHERE c.message_row = $1 OR c.winner_message_row = $1 ORDER BY c.id"
        );
        Ok(self
            .client
            .query(&sql, &[&message_row])?
            .iter()
            .map(collision_from_row)
            .collect())
    }

    fn unmapped_of_message(&mut self, message_row: i64) -> PgResult<Option<StoredUnmapped>> {
        Ok(self
            .client
            .query_opt(
                "SELECT segment_event, mapping_version, suggestion, reason FROM unmapped
                 WHERE message_row = $1",
                &[&message_row],
            )?
            .map(|r| StoredUnmapped {
                segment_event: r.get(0),
                mapping_version: i64::from(r.get::<_, i32>(1)),
                suggestion: r.get(2),
                reason: r.get(3),
            }))
    }

    pub(super) fn profile(&mut self, id: i64) -> PgResult<Option<StoredProfile>> {
        let Some(r) = self.client.query_opt(
            "SELECT id, user_id, traits, trait_sources, consent, consent_source, first_seen_ms,
                    last_seen_ms, merged_into FROM profiles WHERE id = $1",
            &[&id],
        )?
        else {
            return Ok(None);
        };
        let identities = self
            .client
            .query(
                "SELECT kind, value FROM identities WHERE profile_id = $1
                 ORDER BY first_seen_ms, kind",
                &[&id],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let changes = self
            .client
            .query(
                "SELECT at_ms, message_row, kind, profile_id, other_profile_id, detail
                 FROM identity_changes WHERE profile_id = $1 OR other_profile_id = $1
                 ORDER BY at_ms, id",
                &[&id],
            )?
            .iter()
            .map(change_from_row)
            .collect();
        Ok(Some(StoredProfile {
            id: r.get(0),
            user_id: r.get(1),
            traits: serde_json::from_str(r.get(2)).unwrap_or_default(),
            trait_sources: serde_json::from_str(r.get(3)).unwrap_or_default(),
            consent: r
                .get::<_, Option<&str>>(4)
                .and_then(|c| serde_json::from_str(c).ok()),
            consent_source: r.get(5),
            identities,
            first_seen_ms: r.get(6),
            last_seen_ms: r.get(7),
            merged_into: r.get(8),
            changes,
        }))
    }

    pub(super) fn profile_by_identifier(
        &mut self,
        kind: &str,
        value: &str,
    ) -> PgResult<Option<StoredProfile>> {
        match self.client.query_opt(
            "SELECT profile_id FROM identities WHERE kind = $1 AND value = $2",
            &[&kind, &value],
        )? {
            Some(r) => self.profile(r.get(0)),
            None => Ok(None),
        }
    }

    pub(crate) fn http_request(&mut self, id: i64) -> PgResult<Option<StoredHttpRequest>> {
        Ok(self
            .client
            .query_opt(
                "SELECT id, started_at_ms, latency_ms, item_count, request_url, request_headers,
                        request_body, status_code, response_body, error
                 FROM delivery_requests WHERE id = $1",
                &[&id],
            )?
            .map(|r| StoredHttpRequest {
                id: r.get(0),
                started_at_ms: r.get(1),
                latency_ms: r.get(2),
                item_count: i64::from(r.get::<_, i32>(3)),
                url: r.get(4),
                headers: packed(r.get(5)).and_then(|h| serde_json::from_str(&h).ok()),
                body: packed(r.get(6)),
                status_code: r.get::<_, Option<i32>>(7).map(i64::from),
                response_body: packed(r.get(8)),
                error: r.get(9),
            }))
    }

    fn deliveries_of_message(&mut self, message_row: i64) -> PgResult<Vec<StoredDelivery>> {
        let rows = self.client.query(
            "SELECT id, event_id, message_row, destination, kind, destination_event, status,
                    attempts, next_attempt_ms, last_status_code, last_error, created_at_ms,
                    updated_at_ms
             FROM deliveries WHERE message_row = $1 ORDER BY destination, id",
            &[&message_row],
        )?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.get(0);
            let attempts = self.client.query(
                "SELECT attempt, at_ms, outcome, reason, next_attempt_ms, request_row
                 FROM delivery_attempts WHERE delivery_id = $1 ORDER BY id",
                &[&id],
            )?;
            let mut history = Vec::with_capacity(attempts.len());
            for a in attempts {
                let request = match a.get::<_, Option<i64>>(5) {
                    Some(row) => self.http_request(row)?,
                    None => None,
                };
                history.push(StoredAttempt {
                    attempt: i64::from(a.get::<_, i32>(0)),
                    at_ms: a.get(1),
                    outcome: a.get(2),
                    reason: a.get(3),
                    next_attempt_ms: a.get(4),
                    request,
                });
            }
            deliveries.push(StoredDelivery {
                id,
                event_id: r.get(1),
                message_row: r.get(2),
                destination: r.get(3),
                kind: r.get(4),
                destination_event: r.get(5),
                status: r.get(6),
                attempts: i64::from(r.get::<_, i32>(7)),
                next_attempt_ms: r.get(8),
                last_status_code: r.get::<_, Option<i32>>(9).map(i64::from),
                last_error: r.get(10),
                created_at_ms: r.get(11),
                updated_at_ms: r.get(12),
                history,
            });
        }
        Ok(deliveries)
    }

    /// Every stored arrival of a messageId, oldest first.
    pub fn messages_by_message_id(&mut self, message_id: &str) -> PgResult<Vec<StoredMessage>> {
        self.messages("m.message_id", "m.id", message_id)
    }

    /// Message counts by status: (accepted, duplicate, invalid).
    pub fn message_counts(&mut self) -> PgResult<(i64, i64, i64)> {
        let r = self.client.query_one(
            "SELECT COUNT(*) FILTER (WHERE status = 'accepted'),
                    COUNT(*) FILTER (WHERE status = 'duplicate'),
                    COUNT(*) FILTER (WHERE status = 'invalid')
             FROM messages",
            &[],
        )?;
        Ok((r.get(0), r.get(1), r.get(2)))
    }

    /// The newest rejected requests first.
    pub fn recent_rejections(&mut self, limit: usize) -> PgResult<Vec<StoredRejection>> {
        Ok(self
            .client
            .query(
                "SELECT received_at_ms, path, remote_addr, user_agent, account_header,
                        environment_header, content_type, body_bytes, status_code, reason_code,
                        reason
                 FROM rejections ORDER BY id DESC LIMIT $1",
                &[&(limit as i64)],
            )?
            .iter()
            .map(|r| StoredRejection {
                received_at_ms: r.get(0),
                path: r.get(1),
                remote_addr: r.get(2),
                user_agent: r.get(3),
                account_header: r.get(4),
                environment_header: r.get(5),
                content_type: r.get(6),
                body_bytes: r.get(7),
                status_code: u16::try_from(r.get::<_, i32>(8)).unwrap_or_default(),
                reason_code: r.get(9),
                reason: r.get(10),
            })
            .collect())
    }

    /// Refused requests since `since_ms`, summed per (environment header, reason, peer,
    /// status), most first.
    pub fn rejection_counts(&mut self, since_ms: i64) -> PgResult<Vec<RejectionTally>> {
        Ok(self
            .client
            .query(
                "SELECT environment, reason_code, peer, status_code, SUM(count)::BIGINT,
                        MAX(minute_ms)
                 FROM rejection_counts WHERE minute_ms >= $1
                 GROUP BY environment, reason_code, peer, status_code
                 ORDER BY SUM(count) DESC",
                &[&(since_ms - since_ms.rem_euclid(60_000))],
            )?
            .iter()
            .map(|r| RejectionTally {
                environment: r.get(0),
                reason_code: r.get(1),
                peer: r.get(2),
                status_code: i64::from(r.get::<_, i32>(3)),
                count: r.get(4),
                last_minute_ms: r.get(5),
            })
            .collect())
    }

    /// Whether a destination is paused for the fleet: until when and why.
    pub fn destination_pause(&mut self, destination: &str) -> PgResult<Option<DestinationPause>> {
        Ok(self
            .client
            .query_opt(
                "SELECT paused_until_ms, reason, updated_at_ms FROM destination_state
                 WHERE destination = $1 AND paused_until_ms IS NOT NULL",
                &[&destination],
            )?
            .map(|r| DestinationPause {
                until_ms: r.get(0),
                reason: r.get::<_, Option<String>>(1).unwrap_or_default(),
                since_ms: r.get(2),
            }))
    }

    /// Everything about a messageId (or an event_id, resolved to its first message), as the
    /// SQLite reader gives it.
    pub fn trace(&mut self, id: &str) -> PgResult<Option<MessageTrace>> {
        let mut arrivals = self.messages("m.message_id", "m.id", id)?;
        if arrivals.is_empty() {
            let first = self.client.query_opt(
                "SELECT message_id FROM events WHERE event_id = $1 ORDER BY id LIMIT 1",
                &[&id],
            )?;
            if let Some(r) = first {
                let message_id: String = r.get(0);
                arrivals = self.messages("m.message_id", "m.id", &message_id)?;
            }
        }
        if arrivals.is_empty() {
            return Ok(None);
        }
        let mut outcomes = Vec::with_capacity(arrivals.len());
        let (mut events, mut collisions, mut identity_changes) =
            (Vec::new(), Vec::new(), Vec::new());
        let mut deliveries = Vec::new();
        let mut unmapped = None;
        for arrival in &arrivals {
            deliveries.extend(self.deliveries_of_message(arrival.row_id)?);
            outcomes.push(
                self.client
                    .query_opt(
                        "SELECT outcome FROM messages WHERE id = $1",
                        &[&arrival.row_id],
                    )?
                    .and_then(|r| r.get(0)),
            );
            events.extend(self.events_of_message(arrival.row_id)?);
            for c in self.collisions_of_message(arrival.row_id)? {
                if !collisions.iter().any(|x: &StoredCollision| x.id == c.id) {
                    collisions.push(c);
                }
            }
            identity_changes.extend(
                self.client
                    .query(
                        "SELECT at_ms, message_row, kind, profile_id, other_profile_id, detail
                         FROM identity_changes WHERE message_row = $1 ORDER BY id",
                        &[&arrival.row_id],
                    )?
                    .iter()
                    .map(change_from_row),
            );
            if unmapped.is_none() {
                unmapped = self.unmapped_of_message(arrival.row_id)?;
            }
        }
        let first = &arrivals[0];
        let profile = live_profile(&events, &identity_changes, first, |key| match key {
            ProfileKey::Id(id) => self.profile(id),
            ProfileKey::Identifier(kind, value) => self.profile_by_identifier(kind, value),
        })?;
        Ok(Some(MessageTrace {
            arrivals,
            outcomes,
            events,
            collisions,
            unmapped,
            profile,
            identity_changes,
            deliveries,
        }))
    }
}
