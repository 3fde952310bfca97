//! Storing one request on PostgreSQL: its receipt, each message and the stateful pipeline for
//! each, in the writer's transaction, with the fleet's rules held by unique keys rather than by
//! reading first: a messageId is claimed in `message_ids`, an event_id in `event_ids`, an
//! identifier in `identities`. Another node's concurrent claim of the same key waits for this
//! transaction and then sees it; a race this transaction loses is a conflict error, and the
//! writer runs the whole group again.

use super::db::Db;
use serde_json::{Map, Value};

use crate::pipeline::dedup;
use crate::pipeline::identity::{self, IdKind, Observation, Profile};
use crate::pipeline::{self as pl, CanonicalEvent, Draft, MappingRow, RouteTarget, RouteVerdict};
use crate::store::codec::Packed;
use crate::store::handoff::HandOffPlan;
use crate::store::model::pipeline::{
    json_map, lookup_keys, profile_consent, profile_deliveries, profile_of, PipelineInput,
    PipelineOutcome,
};
use crate::store::records::{IngestBatch, RejectedRequest, RejectionBatch, StoredOutcome, Verdict};

use super::delivery;

type PgResult<T> = Result<T, postgres::Error>;

/// What the stateful stages share for one request.
pub(super) struct Context<'a> {
    pub targets: &'a [RouteTarget],
    pub default_country: Option<&'a str>,
    pub handoff: &'a mut HandOffPlan,
    pub node_id: &'a str,
    pub environment: &'a str,
    pub received_at_ms: i64,
    pub dedup_since_ms: i64,
}

pub(super) fn replay_window_open(
    tx: &mut Db<'_, '_>,
    environment: &str,
    at_ms: i64,
) -> PgResult<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM replay_windows WHERE environment = $1 AND starts_ms <= $2 AND ends_ms > $2
             LIMIT 1",
            &[&environment, &at_ms],
        )?
        .is_some())
}

/// As on SQLite: a batch signed only over element 0 whose element 0 was first delivered in
/// another request is a re-used signature.
pub(super) fn reused_signature(
    tx: &mut Db<'_, '_>,
    batch: &IngestBatch,
) -> PgResult<Option<String>> {
    let Some(guard) = &batch.replay_guard else {
        return Ok(None);
    };
    let environment = &batch.receipt.environment;
    if guard.newest_time_ms < batch.dedup_since_ms
        && !replay_window_open(tx, environment, batch.receipt.received_at_ms)?
    {
        return Ok(Some(format!(
            "X-Signature carries no time of its own, and the signed message's newest time ({}) is older than the dedup window: refused as a replay; for a Segment Replay, open a replay window (tracklayer allow-replay)",
            crate::segment::format_ms(guard.newest_time_ms)
        )));
    }
    let Some(message_id) = &guard.element0_message_id else {
        return Ok(None);
    };
    let first = tx.query_opt(
        "SELECT r.request_id, r.body_sha256 FROM message_ids i
         JOIN messages m ON m.id = i.message_row
         JOIN requests r ON r.request_id = m.request_id
         WHERE i.environment = $1 AND i.message_id = $2 AND i.first_seen_ms >= $3",
        &[environment, message_id, &batch.dedup_since_ms],
    )?;
    Ok(match first {
        Some(row) if row.get::<_, Option<Vec<u8>>>(1).as_deref() == Some(&batch.receipt.body_sha256[..]) => None,
        Some(row) => Some(format!(
            "X-Signature covers only element 0, and element 0 (messageId {}) was first delivered in request {} with a different batch: a re-used signature; a genuine Segment retry resends the same bytes",
            crate::segment::clip(message_id),
            row.get::<_, String>(0)
        )),
        None => None,
    })
}

/// Claim `message_id` for `row_id`: true when it is new (or its last claim is older than the
/// dedup window), else the row and digest of the message that holds it.
fn claim_message_id(
    tx: &mut Db<'_, '_>,
    environment: &str,
    message_id: &str,
    row_id: i64,
    now_ms: i64,
    dedup_since_ms: i64,
) -> PgResult<Option<(i64, Vec<u8>)>> {
    let claimed = tx.query_opt(
        "INSERT INTO message_ids (environment, message_id, message_row, first_seen_ms)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (environment, message_id) DO UPDATE
             SET message_row = EXCLUDED.message_row, first_seen_ms = EXCLUDED.first_seen_ms
             WHERE message_ids.first_seen_ms < $5
         RETURNING message_row",
        &[&environment, &message_id, &row_id, &now_ms, &dedup_since_ms],
    )?;
    if claimed.is_some() {
        return Ok(None);
    }
    let original = tx.query_one(
        "SELECT m.id, m.raw_sha256 FROM message_ids i JOIN messages m ON m.id = i.message_row
         WHERE i.environment = $1 AND i.message_id = $2",
        &[&environment, &message_id],
    )?;
    Ok(Some((original.get(0), original.get(1))))
}

pub(super) fn insert_batch(
    tx: &mut Db<'_, '_>,
    batch: &IngestBatch,
    targets: &[RouteTarget],
    default_country: Option<&str>,
    handoff: &mut HandOffPlan,
    node_id: &str,
) -> PgResult<Vec<StoredOutcome>> {
    let receipt = &batch.receipt;
    tx.execute(
        "INSERT INTO requests (request_id, node_id, received_at_ms, environment, path, remote_addr,
             user_agent, auth_scheme, body_shape, body_bytes, message_count, body_sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &receipt.request_id,
            &node_id,
            &receipt.received_at_ms,
            &receipt.environment,
            &receipt.path,
            &receipt.remote_addr,
            &receipt.user_agent,
            &receipt.auth_scheme,
            &receipt.body_shape,
            &(receipt.body_bytes as i64),
            &(batch.messages.len() as i32),
            &&receipt.body_sha256[..],
        ],
    )?;
    // Row ids from the sequence up front, so the pipeline can reference each message and its
    // outcome goes into the same INSERT.
    let row_ids: Vec<i64> = tx
        .query(
            "SELECT nextval(pg_get_serial_sequence('messages', 'id')) FROM generate_series(1, $1)",
            &[&(batch.messages.len() as i32)],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    const INSERT_MESSAGE: &str =
        "INSERT INTO messages (id, request_id, node_id, position, received_at_ms, environment,
             message_id, type, event, user_id, anonymous_id, status, reason, duplicate_of,
             raw_sha256, raw, outcome, raw_bytes)
         OVERRIDING SYSTEM VALUE
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)";
    let mut outcomes = Vec::with_capacity(batch.messages.len());
    for (&row_id, message) in row_ids.iter().zip(&batch.messages) {
        let verdict = match Verdict::message_id(message) {
            Err(invalid) => invalid,
            Ok(message_id) => match claim_message_id(
                tx,
                &receipt.environment,
                message_id,
                row_id,
                receipt.received_at_ms,
                batch.dedup_since_ms,
            )? {
                None => Verdict::Accepted,
                Some((original_row_id, digest)) => Verdict::Duplicate {
                    original_row_id,
                    same_payload: digest == message.raw_sha256,
                },
            },
        };
        let row = verdict.row(message);
        let pipeline = match (&verdict, &message.pipeline) {
            (Verdict::Invalid(_), _) | (_, None) => None,
            (verdict, Some(input)) => {
                let mut ctx = Context {
                    targets,
                    default_country,
                    handoff,
                    node_id,
                    environment: &receipt.environment,
                    received_at_ms: receipt.received_at_ms,
                    dedup_since_ms: batch.dedup_since_ms,
                };
                let duplicate = matches!(verdict, Verdict::Duplicate { .. });
                Some(apply(tx, &mut ctx, row_id, input, duplicate)?)
            }
        };
        tx.execute(
            INSERT_MESSAGE,
            &[
                &row_id,
                &receipt.request_id,
                &node_id,
                &(message.position as i32),
                &receipt.received_at_ms,
                &receipt.environment,
                &message.message_id,
                &message.message_type,
                &message.event,
                &message.user_id,
                &message.anonymous_id,
                &row.status,
                &row.reason,
                &row.duplicate_of,
                &&message.raw_sha256[..],
                &row.raw,
                &pipeline.as_ref().map(|p| p.label()),
                &message.raw_bytes.map(|n| n as i64),
            ],
        )?;
        let message = verdict.outcome(row_id);
        outcomes.push(StoredOutcome { message, pipeline });
    }
    Ok(outcomes)
}

/// Add refusal counts to their minutes, and keep the examples.
pub(super) fn insert_rejections(tx: &mut Db<'_, '_>, batch: &RejectionBatch) -> PgResult<()> {
    for c in &batch.counts {
        tx.execute(
            "INSERT INTO rejection_counts (minute_ms, environment, reason_code, peer, status_code, count)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (minute_ms, environment, reason_code, peer)
             DO UPDATE SET count = rejection_counts.count + EXCLUDED.count",
            &[
                &c.minute_ms,
                &c.environment,
                &c.reason_code,
                &c.peer,
                &i32::from(c.status_code),
                &(c.count as i64),
            ],
        )?;
    }
    for r in &batch.examples {
        insert_rejection(tx, r)?;
    }
    Ok(())
}

fn insert_rejection(tx: &mut Db<'_, '_>, r: &RejectedRequest) -> PgResult<()> {
    tx.execute(
        "INSERT INTO rejections (received_at_ms, path, remote_addr, user_agent, account_header,
             environment_header, content_type, body_bytes, status_code, reason_code, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &r.received_at_ms,
            &r.path,
            &r.remote_addr,
            &r.user_agent,
            &r.account_header,
            &r.environment_header,
            &r.content_type,
            &r.body_bytes.map(|b| b as i64),
            &i32::from(r.status_code),
            &r.reason_code,
            &r.reason,
        ],
    )?;
    Ok(())
}

/// A profile, locked for this transaction: another node resolving the same person waits here
/// instead of merging from a stale copy.
fn load_profile(tx: &mut Db<'_, '_>, id: i64) -> PgResult<Option<Profile>> {
    let Some(row) = tx.query_opt(
        "SELECT user_id, traits, trait_sources, consent, consent_source, first_seen_ms, last_seen_ms
         FROM profiles WHERE id = $1 FOR UPDATE",
        &[&id],
    )?
    else {
        return Ok(None);
    };
    let identifiers = tx
        .query(
            "SELECT kind, value FROM identities WHERE profile_id = $1 ORDER BY first_seen_ms",
            &[&id],
        )?
        .iter()
        .filter_map(|r| IdKind::parse(r.get::<_, &str>(0)).map(|k| (k, r.get::<_, String>(1))))
        .collect();
    Ok(Some(Profile {
        id: Some(id),
        user_id: row.get(0),
        traits: json_map(row.get(1)),
        trait_sources: serde_json::from_str(row.get(2)).unwrap_or_default(),
        consent: row.get::<_, Option<&str>>(3).map(json_map),
        consent_source: row.get(4),
        identifiers,
        first_seen_ms: row.get(5),
        last_seen_ms: row.get(6),
    }))
}

/// Profiles owning any of the observation's identifiers, locked in id order (a fixed order, so
/// two nodes locking the same profiles cannot deadlock each other).
fn profiles_for(tx: &mut Db<'_, '_>, obs: &Observation) -> PgResult<Vec<Profile>> {
    let mut ids: Vec<i64> = Vec::new();
    for (kind, value) in lookup_keys(obs) {
        if let Some(row) = tx.query_opt(
            "SELECT profile_id FROM identities WHERE kind = $1 AND value = $2",
            &[&kind.as_str(), &value],
        )? {
            let id: i64 = row.get(0);
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    let mut locked = ids.clone();
    locked.sort_unstable();
    let mut by_id = Vec::with_capacity(locked.len());
    for id in locked {
        if let Some(p) = load_profile(tx, id)? {
            by_id.push(p);
        }
    }
    // Back in the order the identifiers named them (the resolution prefers the first).
    Ok(ids
        .iter()
        .filter_map(|id| by_id.iter().find(|p| p.id == Some(*id)).cloned())
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn record_change(
    tx: &mut Db<'_, '_>,
    at_ms: i64,
    message_row: i64,
    kind: &str,
    profile_id: i64,
    other: Option<i64>,
    detail: &str,
) -> PgResult<()> {
    tx.execute(
        "INSERT INTO identity_changes (at_ms, message_row, kind, profile_id, other_profile_id, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&at_ms, &message_row, &kind, &profile_id, &other, &detail],
    )?;
    Ok(())
}

/// Identity resolution for an observation, stored. Returns the profile (with its id), the
/// number of merges and conflicts, and whether anything changed.
fn resolve_and_store(
    tx: &mut Db<'_, '_>,
    obs: &Observation,
    message_row: i64,
) -> PgResult<(Profile, usize, usize, bool)> {
    let known = profiles_for(tx, obs)?;
    let resolution = identity::resolve(obs, &known);
    let mut profile = resolution.profile;
    let conflicts = |tx: &mut Db<'_, '_>, id: i64| -> PgResult<()> {
        for c in &resolution.conflicts {
            record_change(
                tx,
                obs.at_ms,
                message_row,
                "conflict",
                id,
                Some(c.owner),
                &c.reason,
            )?;
        }
        Ok(())
    };
    if !resolution.changed {
        conflicts(tx, profile.id.unwrap_or_default())?;
        return Ok((profile, 0, resolution.conflicts.len(), false));
    }
    let traits = Value::Object(profile.traits.clone()).to_string();
    let sources = serde_json::to_string(&profile.trait_sources).unwrap_or_else(|_| "{}".into());
    let consent = profile
        .consent
        .clone()
        .map(|c| Value::Object(c).to_string());
    let id = match profile.id {
        Some(id) => {
            tx.execute(
                "UPDATE profiles SET user_id = $2, traits = $3, trait_sources = $4, consent = $5,
                     consent_source = $6, first_seen_ms = $7, last_seen_ms = $8 WHERE id = $1",
                &[
                    &id,
                    &profile.user_id,
                    &traits,
                    &sources,
                    &consent,
                    &profile.consent_source,
                    &profile.first_seen_ms,
                    &profile.last_seen_ms,
                ],
            )?;
            id
        }
        None => {
            let id: i64 = tx
                .query_one(
                    "INSERT INTO profiles (user_id, traits, trait_sources, consent, consent_source,
                         first_seen_ms, last_seen_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)
                     RETURNING id",
                    &[
                        &profile.user_id,
                        &traits,
                        &sources,
                        &consent,
                        &profile.consent_source,
                        &profile.first_seen_ms,
                        &profile.last_seen_ms,
                    ],
                )?
                .get(0);
            profile.id = Some(id);
            let ids: Vec<String> = profile
                .identifiers
                .iter()
                .map(|(k, v)| format!("{}={v}", k.as_str()))
                .collect();
            record_change(
                tx,
                obs.at_ms,
                message_row,
                "created",
                id,
                None,
                &ids.join(", "),
            )?;
            id
        }
    };
    for merged in &resolution.merged {
        tx.execute(
            "UPDATE identities SET profile_id = $1 WHERE profile_id = $2",
            &[&id, merged],
        )?;
        tx.execute(
            "UPDATE profiles SET merged_into = $1 WHERE id = $2",
            &[&id, merged],
        )?;
        record_change(
            tx,
            obs.at_ms,
            message_row,
            "merged",
            id,
            Some(*merged),
            &format!(
                "profile {merged} folded into {id} by message {}",
                obs.message_id
            ),
        )?;
    }
    for (kind, value) in &resolution.new_identifiers {
        // Ours, or one of the profiles just merged into ours. Anything else means another node
        // took this identifier since we looked: fail as a serialization failure, and the writer
        // runs the transaction again, now seeing that node's profile.
        let taken = tx
            .query_opt(
                "INSERT INTO identities (kind, value, profile_id, first_seen_ms, last_seen_ms)
                 VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (kind, value) DO UPDATE SET profile_id = EXCLUDED.profile_id,
                     last_seen_ms = GREATEST(identities.last_seen_ms, EXCLUDED.last_seen_ms)
                 WHERE identities.profile_id = EXCLUDED.profile_id
                    OR identities.profile_id = ANY($5)
                 RETURNING 1",
                &[&kind.as_str(), value, &id, &obs.at_ms, &resolution.merged],
            )?
            .is_none();
        if taken {
            tx.batch_execute(
                "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
                     MESSAGE = 'an identifier was taken by another node meanwhile'; END $$",
            )?;
        }
    }
    conflicts(tx, id)?;
    Ok((
        profile,
        resolution.merged.len(),
        resolution.conflicts.len(),
        true,
    ))
}

/// The profile a message belongs to, without changing anything (for duplicates).
fn current_profile(tx: &mut Db<'_, '_>, obs: &Observation) -> PgResult<Option<Profile>> {
    Ok(profile_of(profiles_for(tx, obs)?, obs))
}

/// Run identity, dedup, consent and routing for one message; the caller stores the message.
fn apply(
    tx: &mut Db<'_, '_>,
    ctx: &mut Context<'_>,
    message_row: i64,
    input: &PipelineInput,
    duplicate_message: bool,
) -> PgResult<PipelineOutcome> {
    let (profile, merged, conflicts, changed) = if duplicate_message {
        (current_profile(tx, &input.observation)?, 0, 0, false)
    } else {
        let (p, m, c, changed) = resolve_and_store(tx, &input.observation, message_row)?;
        (Some(p), m, c, changed)
    };
    Ok(match &input.draft {
        Draft::IdentityOnly => {
            if let (true, true, Some(p)) = (changed, input.observation.traits.is_some(), &profile) {
                create_profile_deliveries(tx, ctx, message_row, input, p)?;
            }
            PipelineOutcome::Identify {
                profile_id: profile.as_ref().and_then(|p| p.id).unwrap_or_default(),
                merged,
                conflicts,
            }
        }
        Draft::Unmapped {
            segment_event,
            mapping_version,
            reason,
            suggestion,
        } => {
            if !duplicate_message {
                tx.execute(
                    "INSERT INTO unmapped (message_row, environment, segment_event, mapping_version,
                         suggestion, reason, received_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &message_row,
                        &ctx.environment,
                        segment_event,
                        &(*mapping_version as i32),
                        &suggestion.as_ref().map(|s| s.segment.clone()),
                        reason,
                        &ctx.received_at_ms,
                    ],
                )?;
            }
            PipelineOutcome::Unmapped {
                reason: reason.clone(),
                suggestion: suggestion.as_ref().map(|s| s.segment.clone()),
            }
        }
        Draft::Mapped(event, row) => {
            let mut event = (**event).clone();
            if let Some(p) = &profile {
                identity::enrich(&mut event.user, p, &mut event.provenance);
            }
            pl::phone::settle_event_phone(&mut event, ctx.default_country);
            if let Some(purchase_id) = pl::refund::purchase_event_id(&event) {
                event.refunds = load_purchase(tx, &purchase_id)?
                    .map(|(purchase, routed)| pl::refund::refunded_order(&purchase, routed));
            }
            map_event(tx, ctx, message_row, event, row, input, profile.as_ref())?
        }
    })
}

/// The event that holds `event_id`, with the destinations it was routed to.
fn load_purchase(
    tx: &mut Db<'_, '_>,
    event_id: &str,
) -> PgResult<Option<(CanonicalEvent, Vec<String>)>> {
    let Some(found) = tx.query_opt(
        "SELECT e.id, e.canonical FROM event_ids i JOIN events e ON e.id = i.event_row
         WHERE i.event_id = $1",
        &[&event_id],
    )?
    else {
        return Ok(None);
    };
    let (row, canonical): (i64, Vec<u8>) = (found.get(0), found.get(1));
    let Some(event) = crate::store::codec::unpack(&canonical)
        .ok()
        .and_then(|plain| serde_json::from_slice::<CanonicalEvent>(&plain).ok())
    else {
        return Ok(None);
    };
    let routed = tx
        .query(
            "SELECT destination FROM routes WHERE event_row = $1 AND verdict = 'ready'",
            &[&row],
        )?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    Ok(Some((event, routed)))
}

/// Dedup by event_id (claimed in `event_ids`), then the event, its routes and deliveries.
fn map_event(
    tx: &mut Db<'_, '_>,
    ctx: &mut Context<'_>,
    message_row: i64,
    event: CanonicalEvent,
    row: &MappingRow,
    input: &PipelineInput,
    profile: Option<&Profile>,
) -> PgResult<PipelineOutcome> {
    let fingerprint = event.payload_fingerprint();
    let event_row: i64 = tx
        .query_one(
            "SELECT nextval(pg_get_serial_sequence('events', 'id'))",
            &[],
        )?
        .get(0);
    let claimed = tx
        .query_opt(
            "INSERT INTO event_ids (event_id, event_row, created_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (event_id) DO UPDATE
                 SET event_row = EXCLUDED.event_row, created_at_ms = EXCLUDED.created_at_ms
                 WHERE event_ids.created_at_ms < $4
             RETURNING event_row",
            &[
                &event.event_id,
                &event_row,
                &ctx.received_at_ms,
                &ctx.dedup_since_ms,
            ],
        )?
        .is_some();
    let replay_open = !claimed && replay_window_open(tx, ctx.environment, ctx.received_at_ms)?;
    if !claimed && !replay_open {
        let winner = tx.query_one(
            "SELECT e.id, e.message_row, e.message_id, e.fingerprint FROM event_ids i
             JOIN events e ON e.id = i.event_row WHERE i.event_id = $1",
            &[&event.event_id],
        )?;
        let (winner_row, winner_message_row, winner_message_id, winner_fingerprint): (
            i64,
            i64,
            String,
            Vec<u8>,
        ) = (winner.get(0), winner.get(1), winner.get(2), winner.get(3));
        let kind = dedup::classify(
            &winner_message_id,
            &winner_fingerprint,
            &event.message_id,
            &fingerprint,
        );
        let canonical =
            Packed::text(&serde_json::to_string(&event).unwrap_or_else(|_| "{}".into()));
        tx.execute(
            "INSERT INTO collisions (event_id, kind, winner_event_row, winner_message_row,
                 message_row, canonical, detected_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &event.event_id,
                &kind.as_str(),
                &winner_row,
                &winner_message_row,
                &message_row,
                &canonical.as_bytes(),
                &ctx.received_at_ms,
            ],
        )?;
        return Ok(PipelineOutcome::Collision {
            event_id: event.event_id,
            kind,
        });
    }
    let event = std::sync::Arc::new(event);
    let canonical = Packed::text(&serde_json::to_string(&*event).unwrap_or_else(|_| "{}".into()));
    tx.execute(
        "INSERT INTO events (id, event_id, message_row, message_id, environment, name, segment_event,
             mapping_version, event_time_ms, profile_id, fingerprint, canonical, replay, created_at_ms)
         OVERRIDING SYSTEM VALUE
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        &[
            &event_row,
            &event.event_id,
            &message_row,
            &event.message_id,
            &event.environment,
            &event.name,
            &event.segment_event,
            &(event.mapping_version as i32),
            &event.event_time_ms,
            &event.user.profile_id,
            &&fingerprint[..],
            &canonical.as_bytes(),
            &replay_open,
            &ctx.received_at_ms,
        ],
    )?;
    let routes = insert_routes(
        tx,
        ctx,
        event_row,
        message_row,
        &event,
        row,
        input.event_consent.as_ref(),
        profile,
    )?;
    Ok(if replay_open {
        PipelineOutcome::Replayed {
            event_id: event.event_id.clone(),
            name: event.name.clone(),
        }
    } else {
        PipelineOutcome::Mapped {
            event_id: event.event_id.clone(),
            name: event.name.clone(),
            routes,
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn insert_routes(
    tx: &mut Db<'_, '_>,
    ctx: &mut Context<'_>,
    event_row: i64,
    message_row: i64,
    event: &std::sync::Arc<CanonicalEvent>,
    row: &MappingRow,
    event_consent: Option<&Map<String, Value>>,
    profile: Option<&Profile>,
) -> PgResult<Vec<(String, RouteVerdict)>> {
    let (stored, learned_from) = profile_consent(profile);
    let profile_consent = stored.map(|c| (c, learned_from.as_str()));
    let decisions = pl::route(event, row, ctx.targets, event_consent, profile_consent);
    for d in &decisions {
        tx.execute(
            "INSERT INTO routes (event_row, destination, kind, destination_event, verdict, reason,
                 consent_source, consent_allowed, consent_reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &event_row,
                &d.destination,
                &d.kind,
                &d.destination_event,
                &d.verdict.as_str(),
                &d.reason,
                &d.consent.source,
                &d.consent.allowed,
                &d.consent.reason,
            ],
        )?;
    }
    delivery::create_for_event(
        tx,
        ctx.handoff,
        ctx.node_id,
        event_row,
        message_row,
        event,
        &decisions,
        ctx.received_at_ms,
    )?;
    Ok(decisions
        .into_iter()
        .map(|d| (d.destination, d.verdict))
        .collect())
}

/// The profile deliveries an identify makes (see `profile_deliveries`).
fn create_profile_deliveries(
    tx: &mut Db<'_, '_>,
    ctx: &mut Context<'_>,
    message_row: i64,
    input: &PipelineInput,
    profile: &Profile,
) -> PgResult<()> {
    for d in profile_deliveries(
        ctx.targets,
        ctx.environment,
        ctx.default_country,
        input,
        profile,
    ) {
        delivery::create_for_profile(
            tx,
            ctx.handoff,
            ctx.node_id,
            message_row,
            d.destination,
            d.kind,
            &d.consent_source,
            &d.snapshot,
            ctx.received_at_ms,
        )?;
    }
    Ok(())
}
