//! A decision's rows on PostgreSQL: the claims that guard against other nodes, then every other
//! row in one statement.

use super::PgResult;
use crate::stage::{Decision, Snapshot};
use crate::store::apply::Written;
use crate::store::codec::{pack_raw, Packed};
use crate::store::handoff::{HandOffPlan, Start};
use crate::store::postgres::db::Db;

/// Claim what a decision counts on, in one statement: its new messageIds and event_ids, its
/// identifiers, and the profiles it changes at the version it loaded. Returns what another node
/// took or changed meanwhile, if anything.
fn claim(
    tx: &mut Db<'_, '_>,
    d: &Decision<'_>,
    snapshot: &Snapshot,
    since_ms: i64,
) -> PgResult<Option<String>> {
    // Rare: a merge moves every identifier of the folded profile (one statement each, before
    // the claims, which may then re-point some of them again).
    for (merged, into) in &d.merges {
        tx.execute(
            "UPDATE identities SET profile_id = $1 WHERE profile_id = $2",
            &[into, merged],
        )?;
    }
    let mc = &d.message_claims;
    let ec = &d.event_claims;
    let ids = &d.identities;
    let merged: Vec<i64> = d.merges.iter().map(|(m, _)| *m).collect();
    let changed: Vec<_> = d.profiles.iter().filter(|p| !p.new).collect();
    let row = tx.query_one(
        "WITH messages AS (
             INSERT INTO message_ids (environment, message_id, message_row, first_seen_ms)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
             ON CONFLICT (environment, message_id) DO UPDATE
                 SET message_row = EXCLUDED.message_row, first_seen_ms = EXCLUDED.first_seen_ms
                 WHERE message_ids.first_seen_ms < $5
             RETURNING 1),
         events AS (
             INSERT INTO event_ids (event_id, event_row, created_at_ms)
             SELECT * FROM unnest($6::text[], $7::bigint[], $8::bigint[])
             ON CONFLICT (event_id) DO UPDATE
                 SET event_row = EXCLUDED.event_row, created_at_ms = EXCLUDED.created_at_ms
                 WHERE event_ids.created_at_ms < $5
             RETURNING 1),
         -- Ours, or one of the profiles just folded into ours; anything else means another
         -- node took the identifier since this node looked.
         identifiers AS (
             INSERT INTO identities (kind, value, profile_id, first_seen_ms, last_seen_ms)
             SELECT k, v, p, a, a FROM unnest($9::text[], $10::text[], $11::bigint[], $12::bigint[])
                 AS u(k, v, p, a)
             ON CONFLICT (kind, value) DO UPDATE SET profile_id = EXCLUDED.profile_id,
                 last_seen_ms = GREATEST(identities.last_seen_ms, EXCLUDED.last_seen_ms)
             WHERE identities.profile_id = EXCLUDED.profile_id
                OR identities.profile_id = ANY($13)
             RETURNING 1),
         profiles AS (
             UPDATE profiles p SET user_id = u.user_id, traits = u.traits,
                 trait_sources = u.trait_sources, consent = u.consent,
                 consent_source = u.consent_source, first_seen_ms = u.first_seen_ms,
                 last_seen_ms = u.last_seen_ms,
                 merged_into = COALESCE(u.merged_into, p.merged_into), version = p.version + 1
             FROM unnest($14::bigint[], $15::text[], $16::text[], $17::text[], $18::text[],
                         $19::text[], $20::bigint[], $21::bigint[], $22::bigint[], $23::bigint[])
                 AS u(id, user_id, traits, trait_sources, consent, consent_source, first_seen_ms,
                      last_seen_ms, merged_into, version)
             WHERE p.id = u.id AND p.version = u.version
             RETURNING 1)
         SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM events),
                (SELECT count(*) FROM identifiers), (SELECT count(*) FROM profiles)",
        &[
            &mc.iter()
                .map(|c| c.environment.as_str())
                .collect::<Vec<_>>(),
            &mc.iter().map(|c| c.message_id.as_str()).collect::<Vec<_>>(),
            &mc.iter().map(|c| c.row).collect::<Vec<_>>(),
            &mc.iter().map(|c| c.first_seen_ms).collect::<Vec<_>>(),
            &since_ms,
            &ec.iter().map(|c| c.event_id.as_str()).collect::<Vec<_>>(),
            &ec.iter().map(|c| c.row).collect::<Vec<_>>(),
            &ec.iter().map(|c| c.created_at_ms).collect::<Vec<_>>(),
            &ids.iter().map(|i| i.kind).collect::<Vec<_>>(),
            &ids.iter().map(|i| i.value.as_str()).collect::<Vec<_>>(),
            &ids.iter().map(|i| i.profile_id).collect::<Vec<_>>(),
            &ids.iter().map(|i| i.at_ms).collect::<Vec<_>>(),
            &merged,
            &changed.iter().map(|p| p.id()).collect::<Vec<_>>(),
            &changed
                .iter()
                .map(|p| p.profile.user_id.as_deref())
                .collect::<Vec<_>>(),
            &changed.iter().map(|p| p.traits_json()).collect::<Vec<_>>(),
            &changed
                .iter()
                .map(|p| p.trait_sources_json())
                .collect::<Vec<_>>(),
            &changed.iter().map(|p| p.consent_json()).collect::<Vec<_>>(),
            &changed
                .iter()
                .map(|p| p.profile.consent_source.as_deref())
                .collect::<Vec<_>>(),
            &changed
                .iter()
                .map(|p| p.profile.first_seen_ms)
                .collect::<Vec<_>>(),
            &changed
                .iter()
                .map(|p| p.profile.last_seen_ms)
                .collect::<Vec<_>>(),
            &changed.iter().map(|p| p.merged_into).collect::<Vec<_>>(),
            &changed
                .iter()
                .map(|p| snapshot.versions.get(&p.id()).copied().unwrap_or_default())
                .collect::<Vec<_>>(),
        ],
    )?;
    let got: [i64; 4] = [row.get(0), row.get(1), row.get(2), row.get(3)];
    let wanted = [mc.len(), ec.len(), ids.len(), changed.len()];
    let lost = ["a messageId", "an event_id", "an identifier", "a profile"]
        .iter()
        .zip(got.iter().zip(wanted))
        .filter(|(_, (got, wanted))| **got < *wanted as i64)
        .map(|(what, _)| *what)
        .collect::<Vec<_>>();
    Ok((!lost.is_empty()).then(|| {
        format!(
            "another node took or changed {} of this group meanwhile",
            lost.join(", ")
        )
    }))
}

/// Write a decision's rows: first the claims (a conflict drops the transaction: the writer
/// loads and decides the group again), then every other row in one statement.
pub(in crate::store::postgres) fn write(
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
    if let Some(lost) = claim(tx, d, snapshot, since_ms)? {
        return Ok(Written::Conflict(lost));
    }
    let reservations = handoff.reserve_for(&d.deliveries, &snapshot.paused);
    let starts: Vec<Start> = d
        .deliveries
        .iter()
        .zip(&reservations)
        .map(|(d, r)| Start::of(r.as_ref(), d.created_at_ms))
        .collect();
    write_rows(tx, d, &starts, node_id)?;
    if !d.suppressed.is_empty() {
        crate::store::postgres::privacy::count_suppressed(
            tx,
            &d.suppressed,
            crate::store::now_ms(),
        )?;
    }
    handoff.hand_over_inserted(&d.deliveries, reservations);
    Ok(Written::Done)
}

/// Every row of a decision but the claims, in one statement of data-modifying CTEs (an empty
/// array inserts nothing, so the statement is the same, prepared once, for every group).
fn write_rows(
    tx: &mut Db<'_, '_>,
    d: &Decision<'_>,
    starts: &[Start],
    node_id: &str,
) -> PgResult<()> {
    let r: Vec<_> = d.requests.iter().map(|b| &b.receipt).collect();
    let m = &d.messages;
    let u = &d.unmapped;
    let p: Vec<_> = d.profiles.iter().filter(|p| p.new).collect();
    let c = &d.identity_changes;
    let e = &d.events;
    let event_canonical: Vec<Packed> = e.iter().map(|e| Packed::text(&e.canonical)).collect();
    let routes: Vec<_> = d
        .routes
        .iter()
        .map(|r| (&r.decision, r.event_row))
        .collect();
    let v = &d.deliveries;
    let x = &d.collisions;
    let collision_canonical: Vec<Packed> = x.iter().map(|c| Packed::text(&c.canonical)).collect();
    tx.execute(
        "WITH requests_ AS (
             INSERT INTO requests (request_id, node_id, received_at_ms, environment, path,
                 remote_addr, user_agent, auth_scheme, body_shape, body_bytes, message_count,
                 body_sha256)
             SELECT u.request_id, $1, u.received_at_ms, u.environment, u.path, u.remote_addr,
                    u.user_agent, u.auth_scheme, u.body_shape, u.body_bytes, u.message_count,
                    u.body_sha256
             FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::text[], $10::bigint[], $11::int[],
                         $12::bytea[])
                 AS u(request_id, received_at_ms, environment, path, remote_addr, user_agent,
                      auth_scheme, body_shape, body_bytes, message_count, body_sha256)),
         messages_ AS (
             INSERT INTO messages (id, request_id, node_id, position, received_at_ms,
                 environment, message_id, type, event, user_id, anonymous_id, status, reason,
                 duplicate_of, raw_sha256, raw, outcome, raw_bytes)
             OVERRIDING SYSTEM VALUE
             SELECT u.id, u.request_id, $1, u.position, u.received_at_ms, u.environment,
                    u.message_id, u.type, u.event, u.user_id, u.anonymous_id, u.status, u.reason,
                    u.duplicate_of, u.raw_sha256, u.raw, u.outcome, u.raw_bytes
             FROM unnest($13::bigint[], $14::text[], $15::int[], $16::bigint[], $17::text[],
                         $18::text[], $19::text[], $20::text[], $21::text[], $22::text[],
                         $23::text[], $24::text[], $25::bigint[], $26::bytea[], $27::bytea[],
                         $28::text[], $29::bigint[])
                 AS u(id, request_id, position, received_at_ms, environment, message_id, type,
                      event, user_id, anonymous_id, status, reason, duplicate_of, raw_sha256,
                      raw, outcome, raw_bytes)),
         unmapped_ AS (
             INSERT INTO unmapped (message_row, environment, segment_event, mapping_version,
                 suggestion, reason, received_at_ms)
             SELECT * FROM unnest($30::bigint[], $31::text[], $32::text[], $33::int[],
                                  $34::text[], $35::text[], $36::bigint[])),
         profiles_ AS (
             INSERT INTO profiles (id, user_id, traits, trait_sources, consent, consent_source,
                 first_seen_ms, last_seen_ms, merged_into)
             OVERRIDING SYSTEM VALUE
             SELECT * FROM unnest($37::bigint[], $38::text[], $39::text[], $40::text[],
                                  $41::text[], $42::text[], $43::bigint[], $44::bigint[],
                                  $45::bigint[])),
         changes_ AS (
             INSERT INTO identity_changes (at_ms, message_row, kind, profile_id,
                 other_profile_id, detail)
             SELECT * FROM unnest($46::bigint[], $47::bigint[], $48::text[], $49::bigint[],
                                  $50::bigint[], $51::text[])),
         events_ AS (
             INSERT INTO events (id, event_id, message_row, message_id, environment, name,
                 segment_event, mapping_version, event_time_ms, profile_id, fingerprint,
                 canonical, replay, created_at_ms)
             OVERRIDING SYSTEM VALUE
             SELECT * FROM unnest($52::bigint[], $53::text[], $54::bigint[], $55::text[],
                                  $56::text[], $57::text[], $58::text[], $59::int[],
                                  $60::bigint[], $61::bigint[], $62::bytea[], $63::bytea[],
                                  $64::bool[], $65::bigint[])),
         routes_ AS (
             INSERT INTO routes (event_row, destination, kind, destination_event, verdict,
                 reason, consent_source, consent_allowed, consent_reason)
             SELECT * FROM unnest($66::bigint[], $67::text[], $68::text[], $69::text[],
                                  $70::text[], $71::text[], $72::text[], $73::bool[],
                                  $74::text[])),
         deliveries_ AS (
             INSERT INTO deliveries (id, event_row, event_id, message_row, destination, kind,
                 destination_event, consent_source, subject, status, attempts, lease_until_ms,
                 leased_by, next_attempt_ms, event_time_ms, created_at_ms, updated_at_ms)
             OVERRIDING SYSTEM VALUE
             SELECT u.id, u.event_row, u.event_id, u.message_row, u.destination, u.kind,
                    u.destination_event, u.consent_source, u.subject, u.status, u.attempts,
                    u.lease_until_ms, CASE WHEN u.status = 'in_flight' THEN $1 END,
                    u.created_at_ms, u.event_time_ms, u.created_at_ms, u.created_at_ms
             FROM unnest($75::bigint[], $76::bigint[], $77::text[], $78::bigint[], $79::text[],
                         $80::text[], $81::text[], $82::text[], $83::text[], $84::text[],
                         $85::int[], $86::bigint[], $87::bigint[], $88::bigint[])
                 AS u(id, event_row, event_id, message_row, destination, kind,
                      destination_event, consent_source, subject, status, attempts,
                      lease_until_ms, event_time_ms, created_at_ms))
         INSERT INTO collisions (event_id, kind, winner_event_row, winner_message_row,
             message_row, canonical, detected_at_ms)
         SELECT * FROM unnest($89::text[], $90::text[], $91::bigint[], $92::bigint[],
                              $93::bigint[], $94::bytea[], $95::bigint[])",
        &[
            &node_id,
            // requests
            &r.iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(),
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
            // messages
            &m.iter().map(|m| m.id).collect::<Vec<_>>(),
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
            &m.iter().map(|m| m.raw.map(pack_raw)).collect::<Vec<_>>(),
            &m.iter().map(|m| m.outcome).collect::<Vec<_>>(),
            &m.iter()
                .map(|m| m.record.raw_bytes.map(|n| n as i64))
                .collect::<Vec<_>>(),
            // unmapped
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
            // new profiles
            &p.iter().map(|p| p.id()).collect::<Vec<_>>(),
            &p.iter()
                .map(|p| p.profile.user_id.as_deref())
                .collect::<Vec<_>>(),
            &p.iter().map(|p| p.traits_json()).collect::<Vec<_>>(),
            &p.iter().map(|p| p.trait_sources_json()).collect::<Vec<_>>(),
            &p.iter().map(|p| p.consent_json()).collect::<Vec<_>>(),
            &p.iter()
                .map(|p| p.profile.consent_source.as_deref())
                .collect::<Vec<_>>(),
            &p.iter()
                .map(|p| p.profile.first_seen_ms)
                .collect::<Vec<_>>(),
            &p.iter().map(|p| p.profile.last_seen_ms).collect::<Vec<_>>(),
            &p.iter().map(|p| p.merged_into).collect::<Vec<_>>(),
            // identity changes
            &c.iter().map(|c| c.at_ms).collect::<Vec<_>>(),
            &c.iter().map(|c| c.message_row).collect::<Vec<_>>(),
            &c.iter().map(|c| c.kind).collect::<Vec<_>>(),
            &c.iter().map(|c| c.profile_id).collect::<Vec<_>>(),
            &c.iter().map(|c| c.other_profile_id).collect::<Vec<_>>(),
            &c.iter().map(|c| c.detail.as_str()).collect::<Vec<_>>(),
            // events
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
            &event_canonical
                .iter()
                .map(Packed::as_bytes)
                .collect::<Vec<_>>(),
            &e.iter().map(|e| e.replay).collect::<Vec<_>>(),
            &e.iter().map(|e| e.created_at_ms).collect::<Vec<_>>(),
            // routes
            &routes.iter().map(|(_, row)| *row).collect::<Vec<_>>(),
            &routes
                .iter()
                .map(|(d, _)| d.destination.as_str())
                .collect::<Vec<_>>(),
            &routes
                .iter()
                .map(|(d, _)| d.kind.as_str())
                .collect::<Vec<_>>(),
            &routes
                .iter()
                .map(|(d, _)| d.destination_event.as_str())
                .collect::<Vec<_>>(),
            &routes
                .iter()
                .map(|(d, _)| d.verdict.as_str())
                .collect::<Vec<_>>(),
            &routes
                .iter()
                .map(|(d, _)| d.reason.as_str())
                .collect::<Vec<_>>(),
            &routes
                .iter()
                .map(|(d, _)| d.consent.source.as_str())
                .collect::<Vec<_>>(),
            &routes
                .iter()
                .map(|(d, _)| d.consent.allowed)
                .collect::<Vec<_>>(),
            &routes
                .iter()
                .map(|(d, _)| d.consent.reason.as_str())
                .collect::<Vec<_>>(),
            // deliveries
            &v.iter().map(|d| d.id).collect::<Vec<_>>(),
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
            &v.iter().map(|d| d.created_at_ms).collect::<Vec<_>>(),
            // collisions
            &x.iter().map(|c| c.event_id.as_str()).collect::<Vec<_>>(),
            &x.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>(),
            &x.iter().map(|c| c.winner_event_row).collect::<Vec<_>>(),
            &x.iter().map(|c| c.winner_message_row).collect::<Vec<_>>(),
            &x.iter().map(|c| c.message_row).collect::<Vec<_>>(),
            &collision_canonical
                .iter()
                .map(Packed::as_bytes)
                .collect::<Vec<_>>(),
            &x.iter().map(|c| c.detected_at_ms).collect::<Vec<_>>(),
        ],
    )?;
    Ok(())
}
