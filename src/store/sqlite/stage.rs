//! The stateful stage on SQLite: load what a group touches, and write what `stage::decide`
//! decided. Only SQL here; every decision is the stage's. One writer owns the file, so the
//! next row ids are simply past the last, and profiles it has read stay true in its cache.

use std::cell::RefCell;
use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use crate::pipeline::identity::{IdKind, Identifier, Profile};
use crate::pipeline::CanonicalEvent;
use crate::stage::snapshot::{PriorEvent, PriorMessage, Purchase, ReplayWindow};
use crate::stage::{Decision, Keys, Snapshot};
use crate::store::codec::{pack_raw, Packed, Unpacked};
use crate::store::handoff::{HandOffPlan, Start};
use crate::store::model::pipeline::json_map;

/// Profiles the writer has recently read or written, by identifier. Only the writer changes
/// profiles and identities, so the cache stays true as long as every write updates it; the
/// writer clears it when a transaction rolls back.
#[derive(Default)]
pub struct IdentityCache {
    owners: HashMap<Identifier, i64>,
    profiles: HashMap<i64, Profile>,
}

impl IdentityCache {
    /// Bound on cached identifiers; past it the cache starts over.
    const LIMIT: usize = 200_000;

    pub fn clear(&mut self) {
        self.owners.clear();
        self.profiles.clear();
    }

    fn remember(&mut self, profile: &Profile) {
        let Some(id) = profile.id else { return };
        if self.owners.len() > Self::LIMIT {
            self.clear();
        }
        for identifier in &profile.identifiers {
            self.owners.insert(identifier.clone(), id);
        }
        self.profiles.insert(id, profile.clone());
    }

    fn forget(&mut self, profile_id: i64) {
        self.profiles.remove(&profile_id);
        self.owners.retain(|_, owner| *owner != profile_id);
    }
}

fn load_profile(conn: &Connection, id: i64) -> Result<Option<Profile>, rusqlite::Error> {
    let row = conn
        .prepare_cached(
            "SELECT user_id, traits, trait_sources, consent, consent_source, first_seen_ms, last_seen_ms
             FROM profiles WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })
        .optional()?;
    let Some((user_id, traits, sources, consent, consent_source, first, last)) = row else {
        return Ok(None);
    };
    let identifiers = conn
        .prepare_cached(
            "SELECT kind, value FROM identities WHERE profile_id = ?1 ORDER BY first_seen_ms",
        )?
        .query_map([id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .filter_map(Result::ok)
        .filter_map(|(kind, value)| IdKind::parse(&kind).map(|k| (k, value)))
        .collect();
    Ok(Some(Profile {
        id: Some(id),
        user_id,
        traits: json_map(&traits),
        trait_sources: serde_json::from_str(&sources).unwrap_or_default(),
        consent: consent.as_deref().map(json_map),
        consent_source,
        identifiers,
        first_seen_ms: first,
        last_seen_ms: last,
    }))
}

/// Read what a group touches. SQLite answers a keyed lookup from its page cache in
/// microseconds, so each key is one prepared lookup; known users come from the cache.
pub(super) fn load(
    conn: &Connection,
    keys: &Keys,
    cache: &RefCell<IdentityCache>,
) -> Result<Snapshot, rusqlite::Error> {
    let mut snapshot = Snapshot::default();
    let mut message = conn.prepare_cached(
        "SELECT m.id, m.raw_sha256, m.received_at_ms, m.request_id, r.body_sha256
         FROM messages m JOIN requests r ON r.request_id = m.request_id
         WHERE m.message_id = ?2 AND m.environment = ?1 AND m.status = 'accepted'
           AND m.received_at_ms >= ?3
         ORDER BY m.id LIMIT 1",
    )?;
    for (environment, message_id) in &keys.message_ids {
        let found = message
            .query_row(params![environment, message_id, keys.since_ms], |r| {
                Ok(PriorMessage {
                    row: r.get(0)?,
                    raw_sha256: r.get(1)?,
                    first_seen_ms: r.get(2)?,
                    request_id: r.get(3)?,
                    request_sha256: r.get(4)?,
                })
            })
            .optional()?;
        if let Some(found) = found {
            snapshot
                .messages
                .insert((environment.clone(), message_id.clone()), found);
        }
    }
    let mut owner =
        conn.prepare_cached("SELECT profile_id FROM identities WHERE kind = ?1 AND value = ?2")?;
    for identifier in &keys.identifiers {
        let cached = cache.borrow().owners.get(identifier).copied();
        let id = match cached {
            Some(id) => Some(id),
            None => owner
                .query_row(params![identifier.0.as_str(), identifier.1], |r| r.get(0))
                .optional()?,
        };
        let Some(id) = id else { continue };
        snapshot.owners.insert(identifier.clone(), id);
        if snapshot.profiles.contains_key(&id) {
            continue;
        }
        let cached = cache.borrow().profiles.get(&id).cloned();
        let profile = match cached {
            Some(p) => Some(p),
            None => load_profile(conn, id)?,
        };
        if let Some(profile) = profile {
            cache.borrow_mut().remember(&profile);
            // Every identifier of a loaded profile is known: resolution reads them all.
            for identifier in &profile.identifiers {
                snapshot.owners.insert(identifier.clone(), id);
            }
            snapshot.profiles.insert(id, profile);
        }
    }
    let mut event = conn.prepare_cached(
        "SELECT id, message_row, message_id, fingerprint, created_at_ms FROM events
         WHERE event_id = ?1 AND created_at_ms >= ?2 ORDER BY id LIMIT 1",
    )?;
    for event_id in &keys.event_ids {
        let found = event
            .query_row(params![event_id, keys.since_ms], |r| {
                Ok(PriorEvent {
                    row: r.get(0)?,
                    message_row: r.get(1)?,
                    message_id: r.get(2)?,
                    fingerprint: r.get(3)?,
                    created_at_ms: r.get(4)?,
                })
            })
            .optional()?;
        if let Some(found) = found {
            snapshot.events.insert(event_id.clone(), found);
        }
    }
    for event_id in &keys.purchases {
        let found: Option<(i64, Unpacked)> = conn
            .prepare_cached(
                "SELECT id, canonical FROM events WHERE event_id = ?1 ORDER BY id LIMIT 1",
            )?
            .query_row([event_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((row, canonical)) = found else {
            continue;
        };
        let Ok(purchase) = serde_json::from_str::<CanonicalEvent>(&canonical.0) else {
            continue;
        };
        let routed_to = conn
            .prepare_cached(
                "SELECT destination FROM routes WHERE event_row = ?1 AND verdict = 'ready'",
            )?
            .query_map([row], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        snapshot.purchases.insert(
            event_id.clone(),
            Purchase {
                event: purchase,
                routed_to,
            },
        );
    }
    snapshot.replay_windows = conn
        .prepare_cached(
            "SELECT environment, starts_ms, ends_ms FROM replay_windows WHERE ends_ms > ?1",
        )?
        .query_map([keys.since_ms.min(keys.now_ms)], |r| {
            Ok(ReplayWindow {
                environment: r.get(0)?,
                starts_ms: r.get(1)?,
                ends_ms: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(snapshot)
}

/// The next free id of messages, events, profiles and deliveries (this is the only writer).
pub(super) fn next_ids(conn: &Connection) -> Result<[i64; 4], rusqlite::Error> {
    let next = |table: &str| -> Result<i64, rusqlite::Error> {
        conn.prepare_cached(&format!("SELECT COALESCE(MAX(id), 0) + 1 FROM {table}"))?
            .query_row([], |r| r.get(0))
    };
    Ok([
        next("messages")?,
        next("events")?,
        next("profiles")?,
        next("deliveries")?,
    ])
}

/// Write a group's decided rows.
pub(super) fn write(
    conn: &Connection,
    decision: &Decision<'_>,
    cache: &RefCell<IdentityCache>,
    handoff: &mut HandOffPlan,
    paused: &[String],
) -> Result<(), rusqlite::Error> {
    let mut request = conn.prepare_cached(
        "INSERT INTO requests (request_id, received_at_ms, environment, path, remote_addr,
             user_agent, auth_scheme, body_shape, body_bytes, message_count, body_sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for batch in &decision.requests {
        let r = &batch.receipt;
        request.execute(params![
            r.request_id,
            r.received_at_ms,
            r.environment,
            r.path,
            r.remote_addr,
            r.user_agent,
            r.auth_scheme,
            r.body_shape,
            r.body_bytes as i64,
            batch.messages.len() as i64,
            &r.body_sha256[..],
        ])?;
    }
    let mut message = conn.prepare_cached(
        "INSERT INTO messages (id, request_id, position, received_at_ms, environment, message_id,
             type, event, user_id, anonymous_id, status, reason, duplicate_of, raw_sha256, raw, outcome,
             raw_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?;
    for m in &decision.messages {
        let (r, record) = (&m.batch.receipt, m.record);
        message.execute(params![
            m.id,
            r.request_id,
            record.position as i64,
            r.received_at_ms,
            r.environment,
            record.message_id,
            record.message_type,
            record.event,
            record.user_id,
            record.anonymous_id,
            m.status,
            m.reason,
            m.duplicate_of,
            &record.raw_sha256[..],
            m.raw.map(pack_raw),
            m.outcome,
            record.raw_bytes.map(|n| n as i64),
        ])?;
    }
    for u in &decision.unmapped {
        conn.prepare_cached(
            "INSERT INTO unmapped (message_row, environment, segment_event, mapping_version,
                 suggestion, reason, received_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            u.message_row,
            u.environment,
            u.segment_event,
            u.mapping_version,
            u.suggestion,
            u.reason,
            u.received_at_ms
        ])?;
        super::pipeline::count_unmapped_name(
            conn,
            u.segment_event,
            u.environment,
            u.suggestion.as_deref(),
            u.reason,
            u.received_at_ms,
            u.message_row,
        )?;
    }
    for p in &decision.profiles {
        let sql = if p.new {
            "INSERT INTO profiles (id, user_id, traits, trait_sources, consent, consent_source,
                 first_seen_ms, last_seen_ms, merged_into) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        } else {
            "UPDATE profiles SET user_id = ?2, traits = ?3, trait_sources = ?4, consent = ?5,
                 consent_source = ?6, first_seen_ms = ?7, last_seen_ms = ?8,
                 merged_into = COALESCE(?9, merged_into) WHERE id = ?1"
        };
        conn.prepare_cached(sql)?.execute(params![
            p.id(),
            p.profile.user_id,
            p.traits_json(),
            p.trait_sources_json(),
            p.consent_json(),
            p.profile.consent_source,
            p.profile.first_seen_ms,
            p.profile.last_seen_ms,
            p.merged_into,
        ])?;
    }
    for (merged, into) in &decision.merges {
        conn.prepare_cached("UPDATE identities SET profile_id = ?1 WHERE profile_id = ?2")?
            .execute(params![into, merged])?;
    }
    let mut identity = conn.prepare_cached(
        "INSERT INTO identities (kind, value, profile_id, first_seen_ms, last_seen_ms)
         VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (kind, value) DO UPDATE SET profile_id = excluded.profile_id,
             last_seen_ms = MAX(last_seen_ms, excluded.last_seen_ms)",
    )?;
    for i in &decision.identities {
        identity.execute(params![i.kind, i.value, i.profile_id, i.at_ms])?;
    }
    let mut change = conn.prepare_cached(
        "INSERT INTO identity_changes (at_ms, message_row, kind, profile_id, other_profile_id, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for c in &decision.identity_changes {
        change.execute(params![
            c.at_ms,
            c.message_row,
            c.kind,
            c.profile_id,
            c.other_profile_id,
            c.detail
        ])?;
    }
    let mut event = conn.prepare_cached(
        "INSERT INTO events (id, event_id, message_row, message_id, environment, name, segment_event,
             mapping_version, event_time_ms, profile_id, fingerprint, canonical, replay, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    for e in &decision.events {
        let ev = &e.event;
        event.execute(params![
            e.id,
            ev.event_id,
            e.message_row,
            ev.message_id,
            ev.environment,
            ev.name,
            ev.segment_event,
            ev.mapping_version,
            ev.event_time_ms,
            ev.user.profile_id,
            &e.fingerprint[..],
            Packed::text(&e.canonical),
            e.replay,
            e.created_at_ms
        ])?;
    }
    let mut route = conn.prepare_cached(
        "INSERT INTO routes (event_row, destination, kind, destination_event, verdict, reason,
             consent_source, consent_allowed, consent_reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for r in &decision.routes {
        let d = &r.decision;
        route.execute(params![
            r.event_row,
            d.destination,
            d.kind,
            d.destination_event,
            d.verdict.as_str(),
            d.reason,
            d.consent.source,
            d.consent.allowed,
            d.consent.reason
        ])?;
    }
    let reservations = handoff.reserve_for(&decision.deliveries, paused);
    let mut delivery = conn.prepare_cached(
        "INSERT INTO deliveries (event_row, event_id, message_row, destination, kind, destination_event,
             consent_source, subject, status, attempts, lease_until_ms, next_attempt_ms, event_time_ms,
             created_at_ms, updated_at_ms, id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?12, ?12, ?14)",
    )?;
    for (d, reservation) in decision.deliveries.iter().zip(&reservations) {
        let start = Start::of(reservation.as_ref(), d.created_at_ms);
        delivery.execute(params![
            d.event_row,
            d.event_id,
            d.message_row,
            d.destination,
            d.kind,
            d.destination_event,
            d.consent_source,
            d.snapshot,
            start.status,
            start.attempts,
            start.lease_until_ms,
            d.created_at_ms,
            d.event_time_ms,
            d.id,
        ])?;
    }
    handoff.hand_over_inserted(&decision.deliveries, reservations);
    let mut collision = conn.prepare_cached(
        "INSERT INTO collisions (event_id, kind, winner_event_row, winner_message_row,
             message_row, canonical, detected_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for c in &decision.collisions {
        collision.execute(params![
            c.event_id,
            c.kind.as_str(),
            c.winner_event_row,
            c.winner_message_row,
            c.message_row,
            Packed::text(&c.canonical),
            c.detected_at_ms
        ])?;
    }
    // What the group taught the cache (rolled back with the transaction: see the writer).
    let mut cache = cache.borrow_mut();
    for (merged, _) in &decision.merges {
        cache.forget(*merged);
    }
    for p in decision.profiles.iter().filter(|p| p.merged_into.is_none()) {
        cache.remember(&p.profile);
    }
    Ok(())
}
