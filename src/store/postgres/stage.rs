//! The stateful stage on PostgreSQL: load what a group touches and write what `stage::decide`
//! decided, each kind of row in one statement (`INSERT … SELECT FROM unnest(…)`), so a group of
//! a thousand messages costs a few dozen round trips, not a dozen per message. Only SQL here.
//!
//! Several nodes write at once. The keys a decision counts on are claimed first, under a
//! savepoint: a messageId (`message_ids`), an event_id (`event_ids`), an identifier
//! (`identities`). A key another node took between this node's load and its write comes back
//! missing from the claim; everything is rolled back to the savepoint and the group is loaded
//! and decided again, now seeing that node's rows. Profiles are loaded `FOR UPDATE` (in id
//! order, one statement), so two nodes resolving one person take turns.

use super::db::Db;
use crate::pipeline::identity::{IdKind, Profile};
use crate::pipeline::CanonicalEvent;
use crate::stage::snapshot::{PriorEvent, PriorMessage, Purchase, ReplayWindow};
use crate::stage::{Decision, Ids, Keys, Snapshot};
use crate::store::apply::Written;
use crate::store::codec::{unpack, Packed};
use crate::store::handoff::{HandOffPlan, Start};
use crate::store::model::pipeline::json_map;

type PgResult<T> = Result<T, postgres::Error>;

fn pairs<A: Clone, B: Clone>(items: &[(A, B)]) -> (Vec<A>, Vec<B>) {
    items.iter().cloned().unzip()
}

pub(super) fn load(tx: &mut Db<'_, '_>, keys: &Keys) -> PgResult<Snapshot> {
    let mut snapshot = Snapshot::default();
    if !keys.message_ids.is_empty() {
        let (environments, ids) = pairs(&keys.message_ids);
        for r in tx.query(
            "SELECT k.environment, k.message_id, m.id, m.raw_sha256, i.first_seen_ms, m.request_id,
                    r.body_sha256
             FROM unnest($1::text[], $2::text[]) AS k(environment, message_id)
             JOIN message_ids i ON i.environment = k.environment AND i.message_id = k.message_id
             JOIN messages m ON m.id = i.message_row
             JOIN requests r ON r.request_id = m.request_id",
            &[&environments, &ids],
        )? {
            snapshot.messages.insert(
                (r.get(0), r.get(1)),
                PriorMessage {
                    row: r.get(2),
                    raw_sha256: r.get(3),
                    first_seen_ms: r.get(4),
                    request_id: r.get(5),
                    request_sha256: r.get(6),
                },
            );
        }
    }
    if !keys.identifiers.is_empty() {
        let kinds: Vec<&str> = keys.identifiers.iter().map(|(k, _)| k.as_str()).collect();
        let values: Vec<&str> = keys.identifiers.iter().map(|(_, v)| v.as_str()).collect();
        let mut owners: Vec<i64> = tx
            .query(
                "SELECT DISTINCT i.profile_id
                 FROM unnest($1::text[], $2::text[]) AS k(kind, value)
                 JOIN identities i ON i.kind = k.kind AND i.value = k.value",
                &[&kinds, &values],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        owners.sort_unstable();
        if !owners.is_empty() {
            load_profiles(tx, &owners, &mut snapshot)?;
        }
    }
    if !keys.event_ids.is_empty() {
        for r in tx.query(
            "SELECT i.event_id, e.id, e.message_row, e.message_id, e.fingerprint, i.created_at_ms
             FROM event_ids i JOIN events e ON e.id = i.event_row WHERE i.event_id = ANY($1)",
            &[&keys.event_ids],
        )? {
            snapshot.events.insert(
                r.get(0),
                PriorEvent {
                    row: r.get(1),
                    message_row: r.get(2),
                    message_id: r.get(3),
                    fingerprint: r.get(4),
                    created_at_ms: r.get(5),
                },
            );
        }
    }
    if !keys.purchases.is_empty() {
        let found = tx.query(
            "SELECT i.event_id, e.id, e.canonical,
                    ARRAY(SELECT destination FROM routes WHERE event_row = e.id AND verdict = 'ready')
             FROM event_ids i JOIN events e ON e.id = i.event_row WHERE i.event_id = ANY($1)",
            &[&keys.purchases],
        )?;
        for r in found {
            let canonical: Vec<u8> = r.get(2);
            let Some(event) = unpack(&canonical)
                .ok()
                .and_then(|plain| serde_json::from_slice::<CanonicalEvent>(&plain).ok())
            else {
                continue;
            };
            snapshot.purchases.insert(
                r.get(0),
                Purchase {
                    event,
                    routed_to: r.get(3),
                },
            );
        }
    }
    for r in tx.query(
        "SELECT 'window', environment, starts_ms, ends_ms FROM replay_windows
         WHERE environment = ANY($1) AND ends_ms > $2
         UNION ALL
         SELECT 'paused', destination, 0, paused_until_ms FROM destination_state
         WHERE destination = ANY($3) AND paused_until_ms > $4",
        &[
            &keys.environments,
            &keys.since_ms.min(keys.now_ms),
            &keys.destinations,
            &keys.now_ms,
        ],
    )? {
        if r.get::<_, &str>(0) == "window" {
            snapshot.replay_windows.push(ReplayWindow {
                environment: r.get(1),
                starts_ms: r.get(2),
                ends_ms: r.get(3),
            });
        } else {
            snapshot.paused.push(r.get(1));
        }
    }
    Ok(snapshot)
}

/// Profiles `ids` (sorted), locked for this transaction, with all their identifiers.
fn load_profiles(tx: &mut Db<'_, '_>, ids: &[i64], snapshot: &mut Snapshot) -> PgResult<()> {
    for r in tx.query(
        "SELECT id, user_id, traits, trait_sources, consent, consent_source, first_seen_ms,
                last_seen_ms
         FROM profiles WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&ids],
    )? {
        let id: i64 = r.get(0);
        snapshot.profiles.insert(
            id,
            Profile {
                id: Some(id),
                user_id: r.get(1),
                traits: json_map(r.get(2)),
                trait_sources: serde_json::from_str(r.get(3)).unwrap_or_default(),
                consent: r.get::<_, Option<&str>>(4).map(json_map),
                consent_source: r.get(5),
                identifiers: Vec::new(),
                first_seen_ms: r.get(6),
                last_seen_ms: r.get(7),
            },
        );
    }
    for r in tx.query(
        "SELECT profile_id, kind, value FROM identities WHERE profile_id = ANY($1)
         ORDER BY profile_id, first_seen_ms",
        &[&ids],
    )? {
        let (id, kind, value): (i64, &str, String) = (r.get(0), r.get(1), r.get(2));
        let Some(kind) = IdKind::parse(kind) else {
            continue;
        };
        snapshot.owners.insert((kind, value.clone()), id);
        if let Some(p) = snapshot.profiles.get_mut(&id) {
            p.identifiers.push((kind, value));
        }
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

/// Claim the keys a decision counts on; what is missing from an answer another node took.
fn claim_keys(tx: &mut Db<'_, '_>, d: &Decision<'_>, since_ms: i64) -> PgResult<Option<String>> {
    if !d.message_claims.is_empty() {
        let environments: Vec<&str> = d
            .message_claims
            .iter()
            .map(|c| c.environment.as_str())
            .collect();
        let ids: Vec<&str> = d
            .message_claims
            .iter()
            .map(|c| c.message_id.as_str())
            .collect();
        let rows: Vec<i64> = d.message_claims.iter().map(|c| c.row).collect();
        let seen: Vec<i64> = d.message_claims.iter().map(|c| c.first_seen_ms).collect();
        let claimed = tx.query(
            "INSERT INTO message_ids (environment, message_id, message_row, first_seen_ms)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
             ON CONFLICT (environment, message_id) DO UPDATE
                 SET message_row = EXCLUDED.message_row, first_seen_ms = EXCLUDED.first_seen_ms
                 WHERE message_ids.first_seen_ms < $5
             RETURNING message_row",
            &[&environments, &ids, &rows, &seen, &since_ms],
        )?;
        if claimed.len() < rows.len() {
            let got: Vec<i64> = claimed.iter().map(|r| r.get(0)).collect();
            let lost = d
                .message_claims
                .iter()
                .find(|c| !got.contains(&c.row))
                .map(|c| c.message_id.clone())
                .unwrap_or_default();
            return Ok(Some(format!("messageId {lost}")));
        }
    }
    if !d.event_claims.is_empty() {
        let ids: Vec<&str> = d.event_claims.iter().map(|c| c.event_id.as_str()).collect();
        let rows: Vec<i64> = d.event_claims.iter().map(|c| c.row).collect();
        let at: Vec<i64> = d.event_claims.iter().map(|c| c.created_at_ms).collect();
        let claimed = tx.query(
            "INSERT INTO event_ids (event_id, event_row, created_at_ms)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
             ON CONFLICT (event_id) DO UPDATE
                 SET event_row = EXCLUDED.event_row, created_at_ms = EXCLUDED.created_at_ms
                 WHERE event_ids.created_at_ms < $4
             RETURNING event_row",
            &[&ids, &rows, &at, &since_ms],
        )?;
        if claimed.len() < rows.len() {
            let got: Vec<i64> = claimed.iter().map(|r| r.get(0)).collect();
            let lost = d
                .event_claims
                .iter()
                .find(|c| !got.contains(&c.row))
                .map(|c| c.event_id.clone())
                .unwrap_or_default();
            return Ok(Some(format!("event_id {lost}")));
        }
    }
    for (merged, into) in &d.merges {
        tx.execute(
            "UPDATE identities SET profile_id = $1 WHERE profile_id = $2",
            &[into, merged],
        )?;
    }
    if !d.identities.is_empty() {
        let kinds: Vec<&str> = d.identities.iter().map(|i| i.kind).collect();
        let values: Vec<&str> = d.identities.iter().map(|i| i.value.as_str()).collect();
        let owners: Vec<i64> = d.identities.iter().map(|i| i.profile_id).collect();
        let at: Vec<i64> = d.identities.iter().map(|i| i.at_ms).collect();
        let merged: Vec<i64> = d.merges.iter().map(|(m, _)| *m).collect();
        // Ours, or one of the profiles just folded into ours; anything else means another node
        // took the identifier since this node looked.
        let claimed = tx.query(
            "INSERT INTO identities (kind, value, profile_id, first_seen_ms, last_seen_ms)
             SELECT k, v, p, a, a FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
                 AS u(k, v, p, a)
             ON CONFLICT (kind, value) DO UPDATE SET profile_id = EXCLUDED.profile_id,
                 last_seen_ms = GREATEST(identities.last_seen_ms, EXCLUDED.last_seen_ms)
             WHERE identities.profile_id = EXCLUDED.profile_id
                OR identities.profile_id = ANY($5)
             RETURNING kind, value",
            &[&kinds, &values, &owners, &at, &merged],
        )?;
        if claimed.len() < kinds.len() {
            let got: Vec<(String, String)> = claimed.iter().map(|r| (r.get(0), r.get(1))).collect();
            let lost = d
                .identities
                .iter()
                .find(|i| !got.iter().any(|(k, v)| k == i.kind && v == &i.value))
                .map(|i| format!("{} {}", i.kind, i.value))
                .unwrap_or_default();
            return Ok(Some(format!("identifier {lost}")));
        }
    }
    Ok(None)
}

/// Write a decision's rows: the keys first (a conflict rolls back to the savepoint), then one
/// statement per table.
pub(super) fn write(
    tx: &mut Db<'_, '_>,
    d: &Decision<'_>,
    snapshot: &Snapshot,
    handoff: &mut HandOffPlan,
    node_id: &str,
) -> PgResult<Written> {
    // A claim older than its message's dedup window is taken over; the group's newest window
    // start is the one every claim the decision made is past.
    let since_ms = d
        .requests
        .iter()
        .map(|b| b.dedup_since_ms)
        .max()
        .unwrap_or(i64::MIN);
    tx.batch_execute("SAVEPOINT stage")?;
    if let Some(lost) = claim_keys(tx, d, since_ms)? {
        tx.batch_execute("ROLLBACK TO SAVEPOINT stage")?;
        return Ok(Written::Conflict(lost));
    }
    tx.batch_execute("RELEASE SAVEPOINT stage")?;
    write_requests(tx, d, node_id)?;
    write_profiles(tx, d)?;
    write_events(tx, d)?;
    write_deliveries(tx, d, snapshot, handoff, node_id)?;
    Ok(Written::Done)
}

fn write_requests(tx: &mut Db<'_, '_>, d: &Decision<'_>, node_id: &str) -> PgResult<()> {
    if !d.requests.is_empty() {
        let r: Vec<_> = d.requests.iter().map(|b| &b.receipt).collect();
        tx.execute(
            "INSERT INTO requests (request_id, node_id, received_at_ms, environment, path,
                 remote_addr, user_agent, auth_scheme, body_shape, body_bytes, message_count,
                 body_sha256)
             SELECT u.request_id, $2, u.received_at_ms, u.environment, u.path, u.remote_addr,
                    u.user_agent, u.auth_scheme, u.body_shape, u.body_bytes, u.message_count,
                    u.body_sha256
             FROM unnest($1::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::text[], $10::bigint[], $11::int[], $12::bytea[])
                 AS u(request_id, received_at_ms, environment, path, remote_addr, user_agent,
                      auth_scheme, body_shape, body_bytes, message_count, body_sha256)",
            &[
                &r.iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(),
                &node_id,
                &r.iter().map(|r| r.received_at_ms).collect::<Vec<_>>(),
                &r.iter().map(|r| r.environment.as_str()).collect::<Vec<_>>(),
                &r.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
                &r.iter()
                    .map(|r| r.remote_addr.as_deref())
                    .collect::<Vec<_>>(),
                &r.iter()
                    .map(|r| r.user_agent.as_deref())
                    .collect::<Vec<_>>(),
                &r.iter().map(|r| r.auth_scheme).collect::<Vec<_>>(),
                &r.iter().map(|r| r.body_shape).collect::<Vec<_>>(),
                &r.iter().map(|r| r.body_bytes as i64).collect::<Vec<_>>(),
                &d.requests
                    .iter()
                    .map(|b| b.messages.len() as i32)
                    .collect::<Vec<_>>(),
                &r.iter().map(|r| &r.body_sha256[..]).collect::<Vec<_>>(),
            ],
        )?;
    }
    if !d.messages.is_empty() {
        let m = &d.messages;
        tx.execute(
            "INSERT INTO messages (id, request_id, node_id, position, received_at_ms, environment,
                 message_id, type, event, user_id, anonymous_id, status, reason, duplicate_of,
                 raw_sha256, raw, outcome, raw_bytes)
             OVERRIDING SYSTEM VALUE
             SELECT u.id, u.request_id, $2, u.position, u.received_at_ms, u.environment,
                    u.message_id, u.type, u.event, u.user_id, u.anonymous_id, u.status, u.reason,
                    u.duplicate_of, u.raw_sha256, u.raw, u.outcome, u.raw_bytes
             FROM unnest($1::bigint[], $3::text[], $4::int[], $5::bigint[], $6::text[], $7::text[],
                         $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                         $13::text[], $14::bigint[], $15::bytea[], $16::bytea[], $17::text[],
                         $18::bigint[])
                 AS u(id, request_id, position, received_at_ms, environment, message_id, type,
                      event, user_id, anonymous_id, status, reason, duplicate_of, raw_sha256,
                      raw, outcome, raw_bytes)",
            &[
                &m.iter().map(|m| m.id).collect::<Vec<_>>(),
                &node_id,
                &m.iter()
                    .map(|m| m.batch.receipt.request_id.as_str())
                    .collect::<Vec<_>>(),
                &m.iter()
                    .map(|m| m.record.position as i32)
                    .collect::<Vec<_>>(),
                &m.iter()
                    .map(|m| m.batch.receipt.received_at_ms)
                    .collect::<Vec<_>>(),
                &m.iter()
                    .map(|m| m.batch.receipt.environment.as_str())
                    .collect::<Vec<_>>(),
                &m.iter()
                    .map(|m| m.record.message_id.as_deref())
                    .collect::<Vec<_>>(),
                &m.iter()
                    .map(|m| m.record.message_type.as_deref())
                    .collect::<Vec<_>>(),
                &m.iter()
                    .map(|m| m.record.event.as_deref())
                    .collect::<Vec<_>>(),
                &m.iter()
                    .map(|m| m.record.user_id.as_deref())
                    .collect::<Vec<_>>(),
                &m.iter()
                    .map(|m| m.record.anonymous_id.as_deref())
                    .collect::<Vec<_>>(),
                &m.iter().map(|m| m.status).collect::<Vec<_>>(),
                &m.iter().map(|m| m.reason).collect::<Vec<_>>(),
                &m.iter().map(|m| m.duplicate_of).collect::<Vec<_>>(),
                &m.iter()
                    .map(|m| &m.record.raw_sha256[..])
                    .collect::<Vec<_>>(),
                &m.iter().map(|m| m.raw).collect::<Vec<_>>(),
                &m.iter().map(|m| m.outcome).collect::<Vec<_>>(),
                &m.iter()
                    .map(|m| m.record.raw_bytes.map(|n| n as i64))
                    .collect::<Vec<_>>(),
            ],
        )?;
    }
    if !d.unmapped.is_empty() {
        let u = &d.unmapped;
        tx.execute(
            "INSERT INTO unmapped (message_row, environment, segment_event, mapping_version,
                 suggestion, reason, received_at_ms)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::text[],
                                  $6::text[], $7::bigint[])",
            &[
                &u.iter().map(|u| u.message_row).collect::<Vec<_>>(),
                &u.iter().map(|u| u.environment).collect::<Vec<_>>(),
                &u.iter().map(|u| u.segment_event).collect::<Vec<_>>(),
                &u.iter()
                    .map(|u| u.mapping_version as i32)
                    .collect::<Vec<_>>(),
                &u.iter()
                    .map(|u| u.suggestion.as_deref())
                    .collect::<Vec<_>>(),
                &u.iter().map(|u| u.reason).collect::<Vec<_>>(),
                &u.iter().map(|u| u.received_at_ms).collect::<Vec<_>>(),
            ],
        )?;
    }
    Ok(())
}

fn write_profiles(tx: &mut Db<'_, '_>, d: &Decision<'_>) -> PgResult<()> {
    for new in [true, false] {
        let p: Vec<_> = d.profiles.iter().filter(|p| p.new == new).collect();
        if p.is_empty() {
            continue;
        }
        let ids: Vec<i64> = p.iter().map(|p| p.id()).collect();
        let user_ids: Vec<Option<&str>> = p.iter().map(|p| p.profile.user_id.as_deref()).collect();
        let traits: Vec<String> = p.iter().map(|p| p.traits_json()).collect();
        let sources: Vec<String> = p.iter().map(|p| p.trait_sources_json()).collect();
        let consent: Vec<Option<String>> = p.iter().map(|p| p.consent_json()).collect();
        let consent_source: Vec<Option<&str>> = p
            .iter()
            .map(|p| p.profile.consent_source.as_deref())
            .collect();
        let first: Vec<i64> = p.iter().map(|p| p.profile.first_seen_ms).collect();
        let last: Vec<i64> = p.iter().map(|p| p.profile.last_seen_ms).collect();
        let merged_into: Vec<Option<i64>> = p.iter().map(|p| p.merged_into).collect();
        let sql = if new {
            "INSERT INTO profiles (id, user_id, traits, trait_sources, consent, consent_source,
                 first_seen_ms, last_seen_ms, merged_into)
             OVERRIDING SYSTEM VALUE
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::bigint[], $8::bigint[], $9::bigint[])"
        } else {
            "UPDATE profiles p SET user_id = u.user_id, traits = u.traits,
                 trait_sources = u.trait_sources, consent = u.consent,
                 consent_source = u.consent_source, first_seen_ms = u.first_seen_ms,
                 last_seen_ms = u.last_seen_ms, merged_into = COALESCE(u.merged_into, p.merged_into)
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::bigint[], $8::bigint[], $9::bigint[])
                 AS u(id, user_id, traits, trait_sources, consent, consent_source, first_seen_ms,
                      last_seen_ms, merged_into)
             WHERE p.id = u.id"
        };
        tx.execute(
            sql,
            &[
                &ids,
                &user_ids,
                &traits,
                &sources,
                &consent,
                &consent_source,
                &first,
                &last,
                &merged_into,
            ],
        )?;
    }
    if !d.identity_changes.is_empty() {
        let c = &d.identity_changes;
        tx.execute(
            "INSERT INTO identity_changes (at_ms, message_row, kind, profile_id, other_profile_id,
                 detail)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[],
                                  $5::bigint[], $6::text[])",
            &[
                &c.iter().map(|c| c.at_ms).collect::<Vec<_>>(),
                &c.iter().map(|c| c.message_row).collect::<Vec<_>>(),
                &c.iter().map(|c| c.kind).collect::<Vec<_>>(),
                &c.iter().map(|c| c.profile_id).collect::<Vec<_>>(),
                &c.iter().map(|c| c.other_profile_id).collect::<Vec<_>>(),
                &c.iter().map(|c| c.detail.as_str()).collect::<Vec<_>>(),
            ],
        )?;
    }
    Ok(())
}

fn write_events(tx: &mut Db<'_, '_>, d: &Decision<'_>) -> PgResult<()> {
    if !d.events.is_empty() {
        let e = &d.events;
        let canonical: Vec<Packed> = e.iter().map(|e| Packed::text(&e.canonical)).collect();
        tx.execute(
            "INSERT INTO events (id, event_id, message_row, message_id, environment, name,
                 segment_event, mapping_version, event_time_ms, profile_id, fingerprint, canonical,
                 replay, created_at_ms)
             OVERRIDING SYSTEM VALUE
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                                  $6::text[], $7::text[], $8::int[], $9::bigint[], $10::bigint[],
                                  $11::bytea[], $12::bytea[], $13::bool[], $14::bigint[])",
            &[
                &e.iter().map(|e| e.id).collect::<Vec<_>>(),
                &e.iter()
                    .map(|e| e.event.event_id.as_str())
                    .collect::<Vec<_>>(),
                &e.iter().map(|e| e.message_row).collect::<Vec<_>>(),
                &e.iter()
                    .map(|e| e.event.message_id.as_str())
                    .collect::<Vec<_>>(),
                &e.iter()
                    .map(|e| e.event.environment.as_str())
                    .collect::<Vec<_>>(),
                &e.iter().map(|e| e.event.name.as_str()).collect::<Vec<_>>(),
                &e.iter()
                    .map(|e| e.event.segment_event.as_str())
                    .collect::<Vec<_>>(),
                &e.iter()
                    .map(|e| e.event.mapping_version as i32)
                    .collect::<Vec<_>>(),
                &e.iter().map(|e| e.event.event_time_ms).collect::<Vec<_>>(),
                &e.iter()
                    .map(|e| e.event.user.profile_id)
                    .collect::<Vec<_>>(),
                &e.iter().map(|e| &e.fingerprint[..]).collect::<Vec<_>>(),
                &canonical.iter().map(Packed::as_bytes).collect::<Vec<_>>(),
                &e.iter().map(|e| e.replay).collect::<Vec<_>>(),
                &e.iter().map(|e| e.created_at_ms).collect::<Vec<_>>(),
            ],
        )?;
    }
    if !d.routes.is_empty() {
        let r: Vec<_> = d
            .routes
            .iter()
            .map(|r| (&r.decision, r.event_row))
            .collect();
        tx.execute(
            "INSERT INTO routes (event_row, destination, kind, destination_event, verdict, reason,
                 consent_source, consent_allowed, consent_reason)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::text[], $8::bool[], $9::text[])",
            &[
                &r.iter().map(|(_, row)| *row).collect::<Vec<_>>(),
                &r.iter()
                    .map(|(d, _)| d.destination.as_str())
                    .collect::<Vec<_>>(),
                &r.iter().map(|(d, _)| d.kind.as_str()).collect::<Vec<_>>(),
                &r.iter()
                    .map(|(d, _)| d.destination_event.as_str())
                    .collect::<Vec<_>>(),
                &r.iter()
                    .map(|(d, _)| d.verdict.as_str())
                    .collect::<Vec<_>>(),
                &r.iter().map(|(d, _)| d.reason.as_str()).collect::<Vec<_>>(),
                &r.iter()
                    .map(|(d, _)| d.consent.source.as_str())
                    .collect::<Vec<_>>(),
                &r.iter().map(|(d, _)| d.consent.allowed).collect::<Vec<_>>(),
                &r.iter()
                    .map(|(d, _)| d.consent.reason.as_str())
                    .collect::<Vec<_>>(),
            ],
        )?;
    }
    if !d.collisions.is_empty() {
        let c = &d.collisions;
        let canonical: Vec<Packed> = c.iter().map(|c| Packed::text(&c.canonical)).collect();
        tx.execute(
            "INSERT INTO collisions (event_id, kind, winner_event_row, winner_message_row,
                 message_row, canonical, detected_at_ms)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                                  $6::bytea[], $7::bigint[])",
            &[
                &c.iter().map(|c| c.event_id.as_str()).collect::<Vec<_>>(),
                &c.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>(),
                &c.iter().map(|c| c.winner_event_row).collect::<Vec<_>>(),
                &c.iter().map(|c| c.winner_message_row).collect::<Vec<_>>(),
                &c.iter().map(|c| c.message_row).collect::<Vec<_>>(),
                &canonical.iter().map(Packed::as_bytes).collect::<Vec<_>>(),
                &c.iter().map(|c| c.detected_at_ms).collect::<Vec<_>>(),
            ],
        )?;
    }
    Ok(())
}

/// The deliveries: handed straight to this node's workers when they have room and the fleet
/// has not paused the destination, else pending for whichever node claims them first.
fn write_deliveries(
    tx: &mut Db<'_, '_>,
    d: &Decision<'_>,
    snapshot: &Snapshot,
    handoff: &mut HandOffPlan,
    node_id: &str,
) -> PgResult<()> {
    if d.deliveries.is_empty() {
        return Ok(());
    }
    let reservations = handoff.reserve_for(&d.deliveries, &snapshot.paused);
    let starts: Vec<Start> = d
        .deliveries
        .iter()
        .zip(&reservations)
        .map(|(d, r)| Start::of(r.as_ref(), d.created_at_ms))
        .collect();
    let v = &d.deliveries;
    tx.execute(
        "INSERT INTO deliveries (id, event_row, event_id, message_row, destination, kind,
             destination_event, consent_source, subject, status, attempts, lease_until_ms,
             leased_by, next_attempt_ms, event_time_ms, created_at_ms, updated_at_ms)
         OVERRIDING SYSTEM VALUE
         SELECT u.id, u.event_row, u.event_id, u.message_row, u.destination, u.kind,
                u.destination_event, u.consent_source, u.subject, u.status, u.attempts,
                u.lease_until_ms, CASE WHEN u.status = 'in_flight' THEN $13 END, u.created_at_ms,
                u.event_time_ms, u.created_at_ms, u.created_at_ms
         FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::int[], $11::bigint[], $12::bigint[],
                     $14::bigint[], $15::bigint[])
             AS u(event_row, event_id, message_row, destination, kind, destination_event,
                  consent_source, subject, status, attempts, lease_until_ms, event_time_ms,
                  created_at_ms, id)",
        &[
            &v.iter().map(|d| d.event_row).collect::<Vec<_>>(),
            &v.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(),
            &v.iter().map(|d| d.message_row).collect::<Vec<_>>(),
            &v.iter().map(|d| d.destination.as_str()).collect::<Vec<_>>(),
            &v.iter().map(|d| d.kind.as_str()).collect::<Vec<_>>(),
            &v.iter()
                .map(|d| d.destination_event.as_str())
                .collect::<Vec<_>>(),
            &v.iter()
                .map(|d| d.consent_source.as_str())
                .collect::<Vec<_>>(),
            &v.iter().map(|d| d.snapshot.as_deref()).collect::<Vec<_>>(),
            &starts.iter().map(|s| s.status).collect::<Vec<_>>(),
            &starts.iter().map(|s| s.attempts as i32).collect::<Vec<_>>(),
            &starts.iter().map(|s| s.lease_until_ms).collect::<Vec<_>>(),
            &v.iter().map(|d| d.event_time_ms).collect::<Vec<_>>(),
            &node_id,
            &v.iter().map(|d| d.created_at_ms).collect::<Vec<_>>(),
            &v.iter().map(|d| d.id).collect::<Vec<_>>(),
        ],
    )?;
    handoff.hand_over_inserted(&d.deliveries, reservations);
    Ok(())
}
