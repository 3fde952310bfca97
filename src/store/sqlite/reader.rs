//! Read-only queries. Each reader has its own connection opened read-only, so readers never
//! block the writer (WAL) and cannot write by mistake.

use std::path::Path;

use crate::store::codec::{unpack_raw, unpacked, Unpacked};
use crate::store::model::trace::*;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};

use crate::store::error::StoreError;

pub struct StoreReader {
    conn: Connection,
}

const MESSAGE_COLUMNS: &str = "m.id, m.request_id, m.position, m.received_at_ms, m.environment,
    m.message_id, m.type, m.event, m.user_id, m.anonymous_id, m.status, m.reason, m.duplicate_of,
    m.raw_sha256, COALESCE(m.raw, o.raw), m.raw IS NOT NULL, m.raw_bytes";

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    let digest: Vec<u8> = row.get(13)?;
    Ok(StoredMessage {
        row_id: row.get(0)?,
        request_id: row.get(1)?,
        position: row.get(2)?,
        received_at_ms: row.get(3)?,
        environment: row.get(4)?,
        message_id: row.get(5)?,
        message_type: row.get(6)?,
        event: row.get(7)?,
        user_id: row.get(8)?,
        anonymous_id: row.get(9)?,
        status: row.get(10)?,
        reason: row.get(11)?,
        duplicate_of: row.get(12)?,
        raw_sha256: hex::encode(digest),
        raw: row
            .get::<_, Option<Vec<u8>>>(14)?
            .map(|stored| unpack_raw(&stored))
            .unwrap_or_default(),
        raw_stored: row.get(15)?,
        raw_bytes: row.get(16)?,
    })
}

impl StoreReader {
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Open an existing database for reading. Fails if it does not exist.
    pub fn open(path: &Path) -> Result<StoreReader, StoreError> {
        // Not SQLITE_OPEN_READ_ONLY: a read-only connection cannot create the WAL index (-shm)
        // when no writer is running. `query_only` refuses writes just as firmly.
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(StoreReader { conn })
    }

    /// The read-only connection, for a scan that streams its rows (the mapping preview).
    pub(crate) fn conn_for_scan(&self) -> &Connection {
        &self.conn
    }

    /// Every stored arrival of a messageId (the original, duplicates, invalid copies), oldest first.
    pub fn messages_by_message_id(
        &self,
        message_id: &str,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m LEFT JOIN messages o ON o.id = m.duplicate_of
             WHERE m.message_id = ?1 ORDER BY m.id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([message_id], message_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The messages of one request, in batch order.
    pub fn messages_of_request(&self, request_id: &str) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m LEFT JOIN messages o ON o.id = m.duplicate_of
             WHERE m.request_id = ?1 ORDER BY m.position"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([request_id], message_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn request(&self, request_id: &str) -> Result<Option<StoredRequest>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT request_id, received_at_ms, environment, path, remote_addr, user_agent,
                    auth_scheme, body_shape, body_bytes, message_count
             FROM requests WHERE request_id = ?1",
        )?;
        Ok(stmt
            .query_row([request_id], |row| {
                Ok(StoredRequest {
                    request_id: row.get(0)?,
                    received_at_ms: row.get(1)?,
                    environment: row.get(2)?,
                    path: row.get(3)?,
                    remote_addr: row.get(4)?,
                    user_agent: row.get(5)?,
                    auth_scheme: row.get(6)?,
                    body_shape: row.get(7)?,
                    body_bytes: row.get(8)?,
                    message_count: row.get(9)?,
                })
            })
            .optional()?)
    }

    /// The newest rejected requests first.
    pub fn recent_rejections(&self, limit: usize) -> Result<Vec<StoredRejection>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT received_at_ms, path, remote_addr, user_agent, account_header,
                    environment_header, content_type, body_bytes, status_code, reason_code, reason
             FROM rejections ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |row| {
            Ok(StoredRejection {
                received_at_ms: row.get(0)?,
                path: row.get(1)?,
                remote_addr: row.get(2)?,
                user_agent: row.get(3)?,
                account_header: row.get(4)?,
                environment_header: row.get(5)?,
                content_type: row.get(6)?,
                body_bytes: row.get(7)?,
                status_code: row.get(8)?,
                reason_code: row.get(9)?,
                reason: row.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Refused requests since `since_ms`, summed per (environment header, reason, peer, status),
    /// most first.
    pub fn rejection_counts(&self, since_ms: i64) -> Result<Vec<RejectionTally>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT environment, reason_code, peer, status_code, SUM(count), MAX(minute_ms)
             FROM rejection_counts WHERE minute_ms >= ?1
             GROUP BY environment, reason_code, peer, status_code
             ORDER BY SUM(count) DESC",
        )?;
        let rows = stmt.query_map([since_ms - since_ms.rem_euclid(60_000)], |row| {
            Ok(RejectionTally {
                environment: row.get(0)?,
                reason_code: row.get(1)?,
                peer: row.get(2)?,
                status_code: row.get(3)?,
                count: row.get(4)?,
                last_minute_ms: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Message counts by status: (accepted, duplicate, invalid).
    pub fn message_counts(&self) -> Result<(i64, i64, i64), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT status, COUNT(*) FROM messages GROUP BY status")?;
        let mut counts = (0, 0, 0);
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (status, n) = row?;
            match status.as_str() {
                "accepted" => counts.0 = n,
                "duplicate" => counts.1 = n,
                _ => counts.2 = n,
            }
        }
        Ok(counts)
    }

    /// The messages stored and the bytes of their raw bodies as received (what the store's
    /// size is measured against: each one unpacked and counted, so this reads them all).
    pub fn raw_bytes(&self) -> Result<(i64, i64), StoreError> {
        let mut stmt = self.conn.prepare("SELECT raw FROM messages")?;
        let mut rows = stmt.query([])?;
        let (mut count, mut bytes) = (0i64, 0i64);
        while let Some(row) = rows.next()? {
            count += 1;
            if let Some(stored) = row.get::<_, Option<Vec<u8>>>(0)? {
                bytes += unpack_raw(&stored).len() as i64;
            }
        }
        Ok((count, bytes))
    }

    /// Whether an accepted message with this messageId exists (used by durability checks).
    pub fn has_accepted(&self, environment: &str, message_id: &str) -> Result<bool, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT 1 FROM messages WHERE environment = ?1 AND message_id = ?2 AND status = 'accepted'",
        )?;
        Ok(stmt.exists([environment, message_id])?)
    }

    /// A message's raw bytes by row (an identical duplicate reads its original's bytes).
    pub fn message_raw(&self, row: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT COALESCE(m.raw, o.raw) FROM messages m LEFT JOIN messages o ON o.id = m.duplicate_of
             WHERE m.id = ?1",
        )?;
        Ok(stmt
            .query_row([row], |r| r.get::<_, Option<Vec<u8>>>(0))
            .optional()?
            .flatten()
            .map(|stored| unpack_raw(&stored)))
    }

    pub fn local_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT value FROM local_settings WHERE key = ?1")?;
        Ok(stmt.query_row([key], |row| row.get(0)).optional()?)
    }
}

pub(super) const COLLISION_COLUMNS: &str =
    "c.id, c.event_id, c.kind, c.winner_event_row, c.winner_message_row,
    w.message_id, c.message_row, m.message_id, c.detected_at_ms, c.canonical";

pub(super) fn collision_from_row(row: &Row<'_>) -> rusqlite::Result<StoredCollision> {
    let canonical: Unpacked = row.get(9)?;
    Ok(StoredCollision {
        id: row.get(0)?,
        event_id: row.get(1)?,
        kind: row.get(2)?,
        winner_event_row: row.get(3)?,
        winner_message_row: row.get(4)?,
        winner_message_id: row.get(5)?,
        message_row: row.get(6)?,
        message_id: row.get(7)?,
        detected_at_ms: row.get(8)?,
        canonical: serde_json::from_str(&canonical.0).unwrap_or_default(),
    })
}

fn change_from_row(row: &Row<'_>) -> rusqlite::Result<StoredIdentityChange> {
    Ok(StoredIdentityChange {
        at_ms: row.get(0)?,
        message_row: row.get(1)?,
        kind: row.get(2)?,
        profile_id: row.get(3)?,
        other_profile_id: row.get(4)?,
        detail: row.get(5)?,
    })
}

impl StoreReader {
    fn outcome_of(&self, message_row: i64) -> Result<Option<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT outcome FROM messages WHERE id = ?1")?;
        Ok(stmt
            .query_row([message_row], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }

    pub fn events_of_message(&self, message_row: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, event_id, message_row, message_id, replay, created_at_ms, canonical
             FROM events WHERE message_row = ?1 ORDER BY id",
        )?;
        let rows: Vec<(i64, String, i64, String, bool, i64, Unpacked)> = stmt
            .query_map([message_row], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        let mut events = Vec::with_capacity(rows.len());
        for (row_id, event_id, message_row, message_id, replay, created_at_ms, canonical) in rows {
            let Ok(canonical) = serde_json::from_str(&canonical.0) else {
                continue;
            };
            events.push(StoredEvent {
                row_id,
                event_id,
                message_row,
                message_id,
                replay,
                created_at_ms,
                canonical,
                routes: self.routes_of(row_id)?,
            });
        }
        Ok(events)
    }

    pub fn routes_of(&self, event_row: i64) -> Result<Vec<StoredRoute>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT destination, kind, destination_event, verdict, reason, consent_source,
                    consent_allowed, consent_reason
             FROM routes WHERE event_row = ?1 ORDER BY destination",
        )?;
        let rows = stmt.query_map([event_row], |r| {
            Ok(StoredRoute {
                destination: r.get(0)?,
                kind: r.get(1)?,
                destination_event: r.get(2)?,
                verdict: r.get(3)?,
                reason: r.get(4)?,
                consent_source: r.get(5)?,
                consent_allowed: r.get(6)?,
                consent_reason: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Collisions where the message was the winner or the later arrival.
    pub fn collisions_of_message(
        &self,
        message_row: i64,
    ) -> Result<Vec<StoredCollision>, StoreError> {
        let sql = format!(
            "SELECT {COLLISION_COLUMNS} FROM collisions c
             LEFT JOIN messages w ON w.id = c.winner_message_row
             LEFT JOIN messages m ON m.id = c.message_row
             WHERE c.message_row = ?1 OR c.winner_message_row = ?1 ORDER BY c.id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([message_row], collision_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest collisions first (the dashboard's collisions pane).
    pub fn recent_collisions(&self, limit: usize) -> Result<Vec<StoredCollision>, StoreError> {
        let sql = format!(
            "SELECT {COLLISION_COLUMNS} FROM collisions c
             LEFT JOIN messages w ON w.id = c.winner_message_row
             LEFT JOIN messages m ON m.id = c.message_row
             ORDER BY c.id DESC LIMIT ?1"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([limit as i64], collision_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn unmapped_of_message(
        &self,
        message_row: i64,
    ) -> Result<Option<StoredUnmapped>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT segment_event, mapping_version, suggestion, reason FROM unmapped WHERE message_row = ?1",
        )?;
        Ok(stmt
            .query_row([message_row], |r| {
                Ok(StoredUnmapped {
                    segment_event: r.get(0)?,
                    mapping_version: r.get(1)?,
                    suggestion: r.get(2)?,
                    reason: r.get(3)?,
                })
            })
            .optional()?)
    }

    pub fn profile(&self, id: i64) -> Result<Option<StoredProfile>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, user_id, traits, trait_sources, consent, consent_source, first_seen_ms,
                    last_seen_ms, merged_into FROM profiles WHERE id = ?1",
        )?;
        let Some(mut profile) = stmt
            .query_row([id], |r| {
                let traits: String = r.get(2)?;
                let sources: String = r.get(3)?;
                let consent: Option<String> = r.get(4)?;
                Ok(StoredProfile {
                    id: r.get(0)?,
                    user_id: r.get(1)?,
                    traits: serde_json::from_str(&traits).unwrap_or_default(),
                    trait_sources: serde_json::from_str(&sources).unwrap_or_default(),
                    consent: consent.and_then(|c| serde_json::from_str(&c).ok()),
                    consent_source: r.get(5)?,
                    identities: Vec::new(),
                    first_seen_ms: r.get(6)?,
                    last_seen_ms: r.get(7)?,
                    merged_into: r.get(8)?,
                    changes: Vec::new(),
                })
            })
            .optional()?
        else {
            return Ok(None);
        };
        let mut ids = self.conn.prepare_cached(
            "SELECT kind, value FROM identities WHERE profile_id = ?1 ORDER BY first_seen_ms, kind",
        )?;
        profile.identities = ids
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut changes = self.conn.prepare_cached(
            "SELECT at_ms, message_row, kind, profile_id, other_profile_id, detail FROM identity_changes
             WHERE profile_id = ?1
             UNION
             SELECT at_ms, message_row, kind, profile_id, other_profile_id, detail FROM identity_changes
             WHERE other_profile_id = ?1
             ORDER BY at_ms",
        )?;
        profile.changes = changes
            .query_map([id], change_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(Some(profile))
    }

    /// The live profile owning an identifier (`user_id`, `anonymous_id`, `email`, `phone`).
    pub fn profile_by_identifier(
        &self,
        kind: &str,
        value: &str,
    ) -> Result<Option<StoredProfile>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT profile_id FROM identities WHERE kind = ?1 AND value = ?2")?;
        match stmt
            .query_row([kind, value], |r| r.get::<_, i64>(0))
            .optional()?
        {
            Some(id) => self.profile(id),
            None => Ok(None),
        }
    }

    fn identity_changes_of_message(
        &self,
        message_row: i64,
    ) -> Result<Vec<StoredIdentityChange>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT at_ms, message_row, kind, profile_id, other_profile_id, detail FROM identity_changes
             WHERE message_row = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([message_row], change_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The messageId of the first message that produced an event_id.
    pub fn message_id_of_event(&self, event_id: &str) -> Result<Option<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT message_id FROM events WHERE event_id = ?1 ORDER BY id LIMIT 1",
        )?;
        Ok(stmt.query_row([event_id], |r| r.get(0)).optional()?)
    }

    /// Everything about a messageId (or an event_id, resolved to its first message).
    pub fn trace(&self, id: &str) -> Result<Option<MessageTrace>, StoreError> {
        let mut arrivals = self.messages_by_message_id(id)?;
        if arrivals.is_empty() {
            if let Some(message_id) = self.message_id_of_event(id)? {
                arrivals = self.messages_by_message_id(&message_id)?;
            }
        }
        if arrivals.is_empty() {
            return Ok(None);
        }
        let mut outcomes = Vec::with_capacity(arrivals.len());
        let mut events = Vec::new();
        let mut collisions: Vec<StoredCollision> = Vec::new();
        let mut identity_changes = Vec::new();
        let mut unmapped = None;
        let mut deliveries = Vec::new();
        for arrival in &arrivals {
            deliveries.extend(self.deliveries_of_message(arrival.row_id)?);
            outcomes.push(self.outcome_of(arrival.row_id)?);
            events.extend(self.events_of_message(arrival.row_id)?);
            for c in self.collisions_of_message(arrival.row_id)? {
                if !collisions.iter().any(|x| x.id == c.id) {
                    collisions.push(c);
                }
            }
            identity_changes.extend(self.identity_changes_of_message(arrival.row_id)?);
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

const DELIVERY_COLUMNS: &str =
    "id, event_id, message_row, destination, kind, destination_event, status,
    attempts, next_attempt_ms, last_status_code, last_error, created_at_ms, updated_at_ms";

fn delivery_from_row(r: &Row<'_>) -> rusqlite::Result<StoredDelivery> {
    Ok(StoredDelivery {
        id: r.get(0)?,
        event_id: r.get(1)?,
        message_row: r.get(2)?,
        destination: r.get(3)?,
        kind: r.get(4)?,
        destination_event: r.get(5)?,
        status: r.get(6)?,
        attempts: r.get(7)?,
        next_attempt_ms: r.get(8)?,
        last_status_code: r.get(9)?,
        last_error: r.get(10)?,
        created_at_ms: r.get(11)?,
        updated_at_ms: r.get(12)?,
        history: Vec::new(),
    })
}

impl StoreReader {
    pub fn http_request(&self, id: i64) -> Result<Option<StoredHttpRequest>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, started_at_ms, latency_ms, item_count, request_url, request_headers, request_body,
                    status_code, response_body, error FROM delivery_requests WHERE id = ?1",
        )?;
        Ok(stmt
            .query_row([id], |r| {
                let headers: Option<Unpacked> = r.get(5)?;
                Ok(StoredHttpRequest {
                    id: r.get(0)?,
                    started_at_ms: r.get(1)?,
                    latency_ms: r.get(2)?,
                    item_count: r.get(3)?,
                    url: r.get(4)?,
                    headers: headers.and_then(|h| serde_json::from_str(&h.0).ok()),
                    body: unpacked(r.get(6)?),
                    status_code: r.get(7)?,
                    response_body: unpacked(r.get(8)?),
                    error: r.get(9)?,
                })
            })
            .optional()?)
    }

    fn attempts_of(&self, delivery_id: i64) -> Result<Vec<StoredAttempt>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT attempt, at_ms, outcome, reason, next_attempt_ms, request_row
             FROM delivery_attempts WHERE delivery_id = ?1 ORDER BY id",
        )?;
        let rows: Vec<(StoredAttempt, Option<i64>)> = stmt
            .query_map([delivery_id], |r| {
                Ok((
                    StoredAttempt {
                        attempt: r.get(0)?,
                        at_ms: r.get(1)?,
                        outcome: r.get(2)?,
                        reason: r.get(3)?,
                        next_attempt_ms: r.get(4)?,
                        request: None,
                    },
                    r.get(5)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        let mut attempts = Vec::with_capacity(rows.len());
        for (mut attempt, request_row) in rows {
            if let Some(id) = request_row {
                attempt.request = self.http_request(id)?;
            }
            attempts.push(attempt);
        }
        Ok(attempts)
    }

    /// Deliveries made for a message (its event, or its identify), with every attempt.
    pub fn deliveries_of_message(
        &self,
        message_row: i64,
    ) -> Result<Vec<StoredDelivery>, StoreError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message_row = ?1 ORDER BY destination, id");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut deliveries: Vec<StoredDelivery> = stmt
            .query_map([message_row], delivery_from_row)?
            .collect::<Result<_, _>>()?;
        for d in &mut deliveries {
            d.history = self.attempts_of(d.id)?;
        }
        Ok(deliveries)
    }

    /// Count of deliveries per (destination, status).
    pub fn delivery_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT destination, status, COUNT(*) FROM deliveries GROUP BY destination, status ORDER BY destination, status",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether a destination paused itself: until when and why (`None` when running).
    pub fn destination_pause(
        &self,
        destination: &str,
    ) -> Result<Option<DestinationPause>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT paused_until_ms, reason, updated_at_ms FROM destination_state
             WHERE destination = ?1 AND paused_until_ms IS NOT NULL",
        )?;
        Ok(stmt
            .query_row([destination], |r| {
                Ok(DestinationPause {
                    until_ms: r.get(0)?,
                    reason: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    since_ms: r.get(2)?,
                })
            })
            .optional()?)
    }
}
