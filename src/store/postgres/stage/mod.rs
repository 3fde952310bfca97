//! The stateful stage on PostgreSQL: load what a group touches and write what `stage::decide`
//! decided, each kind of row in one statement (`INSERT … SELECT FROM unnest(…)`), so a group of
//! a thousand messages costs a few dozen round trips, not a dozen per message. Only SQL here.
//!
//! A group is seven round trips whatever its size: BEGIN, two loads, the ids, the claims, the
//! rows (one statement of data-modifying CTEs), COMMIT.
//!
//! Several nodes write at once. What a decision counts on is claimed in one statement before
//! anything else is written: a messageId (`message_ids`), an event_id (`event_ids`), an
//! identifier (`identities`), and each profile it changes, at the version it loaded. Anything
//! another node took or changed between this node's load and its write comes back missing from
//! the claim; the transaction is then dropped and the group loaded and decided again, now
//! seeing that node's rows. No row lock is held while a group is decided.

use super::db::Db;
use crate::pipeline::identity::{IdKind, Profile};
use crate::pipeline::CanonicalEvent;
use crate::stage::snapshot::{PriorEvent, PriorMessage, Purchase, ReplayWindow};
use crate::stage::{Ids, Keys, Snapshot};
use crate::store::codec::unpack;
use crate::store::model::pipeline::json_map;

mod write;

pub(in crate::store::postgres) use write::write;

type PgResult<T> = Result<T, postgres::Error>;

pub(super) fn load(tx: &mut Db<'_, '_>, keys: &Keys) -> PgResult<Snapshot> {
    let mut snapshot = Snapshot::default();
    load_keyed(tx, keys, &mut snapshot)?;
    if !keys.identifiers.is_empty() {
        load_profiles(tx, keys, &mut snapshot)?;
    }
    Ok(snapshot)
}

/// Everything looked up by key, in one statement: prior messages, prior events, refunded
/// purchases, replay windows and paused destinations. Arrays are matched with `= ANY`, which a
/// prepared statement's generic plan still answers from the indexes.
fn load_keyed(tx: &mut Db<'_, '_>, keys: &Keys, snapshot: &mut Snapshot) -> PgResult<()> {
    let environments: Vec<&str> = keys.message_ids.iter().map(|(e, _)| e.as_str()).collect();
    let message_ids: Vec<&str> = keys.message_ids.iter().map(|(_, m)| m.as_str()).collect();
    // Each key is looked up on its own (LATERAL): a nested loop of index lookups, whatever
    // the statistics said when the statement's generic plan was made.
    let rows = tx.query(
        "SELECT 'message', k.environment, k.message_id, m.id, m.raw_sha256, i.first_seen_ms,
                m.request_id, m.body_sha256, NULL::bigint, NULL::text[]
         FROM unnest($1::text[], $2::text[]) AS k(environment, message_id)
         JOIN LATERAL (SELECT message_row, first_seen_ms FROM message_ids
                       WHERE environment = k.environment AND message_id = k.message_id) i ON true
         JOIN LATERAL (SELECT m.id, m.raw_sha256, m.request_id,
                              (SELECT body_sha256 FROM requests WHERE request_id = m.request_id)
                                  AS body_sha256
                       FROM messages m WHERE m.id = i.message_row) m ON true
         UNION ALL
         SELECT 'event', k.event_id, e.message_id, e.id, e.fingerprint, i.created_at_ms, NULL,
                NULL, e.message_row, NULL
         FROM unnest($3::text[]) AS k(event_id)
         JOIN LATERAL (SELECT event_row, created_at_ms FROM event_ids
                       WHERE event_id = k.event_id) i ON true
         JOIN LATERAL (SELECT id, message_id, fingerprint, message_row FROM events
                       WHERE id = i.event_row) e ON true
         UNION ALL
         SELECT 'purchase', k.event_id, NULL, e.id, e.canonical, NULL, NULL, NULL, NULL,
                ARRAY(SELECT destination FROM routes WHERE event_row = e.id AND verdict = 'ready')
         FROM unnest($4::text[]) AS k(event_id)
         JOIN LATERAL (SELECT event_row FROM event_ids WHERE event_id = k.event_id) i ON true
         JOIN LATERAL (SELECT id, canonical FROM events WHERE id = i.event_row) e ON true
         UNION ALL
         SELECT 'window', environment, NULL, starts_ms, NULL, ends_ms, NULL, NULL, NULL, NULL
         FROM replay_windows WHERE environment = ANY($5) AND ends_ms > $6
         UNION ALL
         SELECT 'paused', destination, NULL, NULL, NULL, paused_until_ms, NULL, NULL, NULL, NULL
         FROM destination_state WHERE destination = ANY($7) AND paused_until_ms > $8
         UNION ALL
         SELECT 'suppressed', NULL, NULL, s.request_row, s.hash, NULL, NULL, NULL, NULL, NULL
         FROM unnest($9::bytea[]) AS k(hash)
         JOIN LATERAL (SELECT hash, request_row FROM suppressions WHERE hash = k.hash) s ON true",
        &[
            &environments,
            &message_ids,
            &keys.event_ids,
            &keys.purchases,
            &keys.environments,
            &keys.since_ms.min(keys.now_ms),
            &keys.destinations,
            &keys.now_ms,
            &keys.suppression,
        ],
    )?;
    for r in rows {
        match r.get::<_, &str>(0) {
            "message" => {
                snapshot.messages.insert(
                    (r.get(1), r.get(2)),
                    PriorMessage {
                        row: r.get(3),
                        raw_sha256: r.get(4),
                        first_seen_ms: r.get(5),
                        request_id: r.get(6),
                        request_sha256: r.get(7),
                    },
                );
            }
            "event" => {
                snapshot.events.insert(
                    r.get(1),
                    PriorEvent {
                        row: r.get(3),
                        message_row: r.get(8),
                        message_id: r.get(2),
                        fingerprint: r.get(4),
                        created_at_ms: r.get(5),
                    },
                );
            }
            "purchase" => {
                let canonical: Vec<u8> = r.get(4);
                if let Some(event) = unpack(&canonical)
                    .ok()
                    .and_then(|plain| serde_json::from_slice::<CanonicalEvent>(&plain).ok())
                {
                    snapshot.purchases.insert(
                        r.get(1),
                        Purchase {
                            event,
                            routed_to: r.get(9),
                        },
                    );
                }
            }
            "suppressed" => {
                snapshot.suppressed.insert(r.get(4), r.get(3));
            }
            "window" => snapshot.replay_windows.push(ReplayWindow {
                environment: r.get(1),
                starts_ms: r.get(3),
                ends_ms: r.get(5),
            }),
            _ => snapshot.paused.push(r.get(1)),
        }
    }
    Ok(())
}

/// The profiles owning any of the group's identifiers, whole, with their versions: one
/// statement.
fn load_profiles(tx: &mut Db<'_, '_>, keys: &Keys, snapshot: &mut Snapshot) -> PgResult<()> {
    let kinds: Vec<&str> = keys.identifiers.iter().map(|(k, _)| k.as_str()).collect();
    let values: Vec<&str> = keys.identifiers.iter().map(|(_, v)| v.as_str()).collect();
    for r in tx.query(
        "SELECT p.id, p.user_id, p.traits, p.trait_sources, p.consent, p.consent_source,
                p.first_seen_ms, p.last_seen_ms, p.version, ids.kinds, ids.vals
         FROM (SELECT DISTINCT o.profile_id
               FROM unnest($1::text[], $2::text[]) AS k(kind, value)
               JOIN LATERAL (SELECT profile_id FROM identities
                             WHERE kind = k.kind AND value = k.value) o ON true) owners
         JOIN LATERAL (SELECT * FROM profiles WHERE id = owners.profile_id) p ON true
         JOIN LATERAL (SELECT array_agg(kind ORDER BY first_seen_ms, kind, value) AS kinds,
                              array_agg(value ORDER BY first_seen_ms, kind, value) AS vals
                       FROM identities WHERE profile_id = p.id) ids ON true",
        &[&kinds, &values],
    )? {
        let id: i64 = r.get(0);
        let kinds: Vec<String> = r.get::<_, Option<Vec<String>>>(9).unwrap_or_default();
        let values: Vec<String> = r.get::<_, Option<Vec<String>>>(10).unwrap_or_default();
        let identifiers: Vec<(IdKind, String)> = kinds
            .iter()
            .zip(values)
            .filter_map(|(k, v)| IdKind::parse(k).map(|k| (k, v)))
            .collect();
        for identifier in &identifiers {
            snapshot.owners.insert(identifier.clone(), id);
        }
        snapshot.versions.insert(id, r.get(8));
        snapshot.profiles.insert(
            id,
            Profile {
                id: Some(id),
                user_id: r.get(1),
                traits: json_map(r.get(2)),
                trait_sources: serde_json::from_str(r.get(3)).unwrap_or_default(),
                consent: r.get::<_, Option<&str>>(4).map(json_map),
                consent_source: r.get(5),
                identifiers,
                first_seen_ms: r.get(6),
                last_seen_ms: r.get(7),
            },
        );
    }
    Ok(())
}

/// Exactly `counts` new ids of messages, events, profiles and deliveries, from the fleet's
/// sequences (one round trip).
pub(super) fn reserve_ids(tx: &mut Db<'_, '_>, counts: [usize; 4]) -> PgResult<Ids> {
    let row = tx.query_one(
        "SELECT ARRAY(SELECT nextval(pg_get_serial_sequence('messages', 'id'))
                      FROM generate_series(1, $1)),
                ARRAY(SELECT nextval(pg_get_serial_sequence('events', 'id'))
                      FROM generate_series(1, $2)),
                ARRAY(SELECT nextval(pg_get_serial_sequence('profiles', 'id'))
                      FROM generate_series(1, $3)),
                ARRAY(SELECT nextval(pg_get_serial_sequence('deliveries', 'id'))
                      FROM generate_series(1, $4))",
        &[
            &(counts[0] as i32),
            &(counts[1] as i32),
            &(counts[2] as i32),
            &(counts[3] as i32),
        ],
    )?;
    Ok(Ids::Reserved([
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
    ]))
}
