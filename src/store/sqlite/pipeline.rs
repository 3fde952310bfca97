//! The stateful half of the pipeline, run by the writer inside the transaction that stores the
//! raw message: load what the pure stages need, call them, write what they decided.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::store::model::pipeline::{
    json_map, lookup_keys, profile_consent, profile_deliveries, profile_of, PipelineInput,
    PipelineOutcome,
};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};

use crate::store::codec::Packed;
use crate::store::handoff::HandOffPlan;

use crate::pipeline::dedup;
use crate::pipeline::identity::{self, IdKind, Identifier, Observation, Profile};
use crate::pipeline::{self as pl, CanonicalEvent, Draft, MappingRow, RouteTarget, RouteVerdict};

pub fn load_profile(conn: &Connection, id: i64) -> Result<Option<Profile>, rusqlite::Error> {
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
    let mut stmt = conn.prepare_cached(
        "SELECT kind, value FROM identities WHERE profile_id = ?1 ORDER BY first_seen_ms",
    )?;
    let identifiers = stmt
        .query_map([id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .filter_map(|row| row.ok())
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

/// Profiles owning any of the observation's identifiers.
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
    }
}

fn profiles_for(
    conn: &Connection,
    cache: &RefCell<IdentityCache>,
    obs: &Observation,
) -> Result<Vec<Profile>, rusqlite::Error> {
    let mut ids: Vec<i64> = Vec::new();
    let mut stmt =
        conn.prepare_cached("SELECT profile_id FROM identities WHERE kind = ?1 AND value = ?2")?;
    for key in lookup_keys(obs) {
        let cached = cache.borrow().owners.get(&key).copied();
        let owner = match cached {
            Some(id) => Some(id),
            None => stmt
                .query_row(params![key.0.as_str(), key.1], |r| r.get::<_, i64>(0))
                .optional()?,
        };
        if let Some(id) = owner.filter(|id| !ids.contains(id)) {
            ids.push(id);
        }
    }
    let mut profiles = Vec::with_capacity(ids.len());
    for id in ids {
        let cached = cache.borrow().profiles.get(&id).cloned();
        let profile = match cached {
            Some(p) => Some(p),
            None => load_profile(conn, id)?,
        };
        if let Some(p) = profile {
            cache.borrow_mut().remember(&p);
            profiles.push(p);
        }
    }
    Ok(profiles)
}

fn record_change(
    conn: &Connection,
    at_ms: i64,
    message_row: i64,
    kind: &str,
    profile_id: i64,
    other: Option<i64>,
    detail: &str,
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO identity_changes (at_ms, message_row, kind, profile_id, other_profile_id, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![at_ms, message_row, kind, profile_id, other, detail])?;
    Ok(())
}

fn record_conflicts(
    conn: &Connection,
    obs: &Observation,
    message_row: i64,
    profile_id: i64,
    conflicts: &[identity::Conflict],
) -> Result<(), rusqlite::Error> {
    for conflict in conflicts {
        record_change(
            conn,
            obs.at_ms,
            message_row,
            "conflict",
            profile_id,
            Some(conflict.owner),
            &conflict.reason,
        )?;
    }
    Ok(())
}

/// Run identity resolution for an observation and store the outcome. Returns the profile (with
/// its id) and the number of merges and conflicts.
fn resolve_and_store(
    conn: &Connection,
    cache: &RefCell<IdentityCache>,
    obs: &Observation,
    message_row: i64,
) -> Result<(Profile, usize, usize, bool), rusqlite::Error> {
    let known = profiles_for(conn, cache, obs)?;
    let resolution = identity::resolve(obs, &known);
    let mut profile = resolution.profile;
    if !resolution.changed {
        // Nothing new: a known user doing something. No profile or identity writes.
        let id = profile.id.unwrap_or_default();
        record_conflicts(conn, obs, message_row, id, &resolution.conflicts)?;
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
            conn.prepare_cached(
                "UPDATE profiles SET user_id = ?2, traits = ?3, trait_sources = ?4, consent = ?5,
                     consent_source = ?6, first_seen_ms = ?7, last_seen_ms = ?8 WHERE id = ?1",
            )?
            .execute(params![
                id,
                profile.user_id,
                traits,
                sources,
                consent,
                profile.consent_source,
                profile.first_seen_ms,
                profile.last_seen_ms
            ])?;
            id
        }
        None => {
            conn.prepare_cached(
                "INSERT INTO profiles (user_id, traits, trait_sources, consent, consent_source,
                     first_seen_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                profile.user_id,
                traits,
                sources,
                consent,
                profile.consent_source,
                profile.first_seen_ms,
                profile.last_seen_ms
            ])?;
            let id = conn.last_insert_rowid();
            profile.id = Some(id);
            let ids: Vec<String> = profile
                .identifiers
                .iter()
                .map(|(k, v)| format!("{}={v}", k.as_str()))
                .collect();
            record_change(
                conn,
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
        conn.prepare_cached("UPDATE identities SET profile_id = ?1 WHERE profile_id = ?2")?
            .execute(params![id, merged])?;
        conn.prepare_cached("UPDATE profiles SET merged_into = ?1 WHERE id = ?2")?
            .execute(params![id, merged])?;
        record_change(
            conn,
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
    let mut upsert = conn.prepare_cached(
        "INSERT INTO identities (kind, value, profile_id, first_seen_ms, last_seen_ms)
         VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (kind, value) DO UPDATE SET profile_id = excluded.profile_id,
             last_seen_ms = MAX(last_seen_ms, excluded.last_seen_ms)",
    )?;
    for (kind, value) in &resolution.new_identifiers {
        upsert.execute(params![kind.as_str(), value, id, obs.at_ms])?;
    }
    {
        let mut cache = cache.borrow_mut();
        for merged in &resolution.merged {
            cache.forget(*merged);
        }
        cache.remember(&profile);
    }
    record_conflicts(conn, obs, message_row, id, &resolution.conflicts)?;
    Ok((
        profile,
        resolution.merged.len(),
        resolution.conflicts.len(),
        true,
    ))
}

/// The first event stored under `event_id`, with the destinations it was routed to.
fn load_purchase(
    conn: &Connection,
    event_id: &str,
) -> Result<Option<(CanonicalEvent, Vec<String>)>, rusqlite::Error> {
    let found: Option<(i64, crate::store::codec::Unpacked)> = conn
        .prepare_cached("SELECT id, canonical FROM events WHERE event_id = ?1 ORDER BY id LIMIT 1")?
        .query_row([event_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((row, canonical)) = found else {
        return Ok(None);
    };
    let Ok(event) = serde_json::from_str::<CanonicalEvent>(&canonical.0) else {
        return Ok(None);
    };
    let routed = conn
        .prepare_cached(
            "SELECT destination FROM routes WHERE event_row = ?1 AND verdict = 'ready'",
        )?
        .query_map([row], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((event, routed)))
}

/// The profile a message belongs to, without changing anything (for duplicates).
fn current_profile(
    conn: &Connection,
    cache: &RefCell<IdentityCache>,
    obs: &Observation,
) -> Result<Option<Profile>, rusqlite::Error> {
    Ok(profile_of(profiles_for(conn, cache, obs)?, obs))
}

pub(super) fn replay_window_open(
    conn: &Connection,
    environment: &str,
    at_ms: i64,
) -> Result<bool, rusqlite::Error> {
    conn.prepare_cached(
        "SELECT 1 FROM replay_windows WHERE environment = ?1 AND starts_ms <= ?2 AND ends_ms > ?2",
    )?
    .exists(params![environment, at_ms])
}

fn insert_event(
    conn: &Connection,
    event: &CanonicalEvent,
    message_row: i64,
    fingerprint: &[u8],
    replay: bool,
    now_ms: i64,
) -> Result<i64, rusqlite::Error> {
    let canonical = Packed::text(&serde_json::to_string(event).unwrap_or_else(|_| "{}".into()));
    conn.prepare_cached(
        "INSERT INTO events (event_id, message_row, message_id, environment, name, segment_event,
             mapping_version, event_time_ms, profile_id, fingerprint, canonical, replay, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        event.event_id,
        message_row,
        event.message_id,
        event.environment,
        event.name,
        event.segment_event,
        event.mapping_version,
        event.event_time_ms,
        event.user.profile_id,
        fingerprint,
        canonical,
        replay,
        now_ms
    ])?;
    Ok(conn.last_insert_rowid())
}

#[allow(clippy::too_many_arguments)]
fn insert_routes(
    conn: &Connection,
    ctx: &PipelineContext<'_>,
    event_row: i64,
    message_row: i64,
    event: &std::sync::Arc<CanonicalEvent>,
    row: &MappingRow,
    event_consent: Option<&Map<String, Value>>,
    profile: Option<&Profile>,
) -> Result<Vec<(String, RouteVerdict)>, rusqlite::Error> {
    let (stored, learned_from) = profile_consent(profile);
    let profile_consent = stored.map(|c| (c, learned_from.as_str()));
    let decisions = pl::route(event, row, ctx.targets, event_consent, profile_consent);
    let mut stmt = conn.prepare_cached(
        "INSERT INTO routes (event_row, destination, kind, destination_event, verdict, reason,
             consent_source, consent_allowed, consent_reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for d in &decisions {
        stmt.execute(params![
            event_row,
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
    super::delivery::create_for_event(
        conn,
        &mut ctx.handoff.borrow_mut(),
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
    conn: &Connection,
    ctx: &PipelineContext<'_>,
    message_row: i64,
    input: &PipelineInput,
    profile: &Profile,
) -> Result<(), rusqlite::Error> {
    for d in profile_deliveries(
        ctx.targets,
        ctx.environment,
        ctx.default_country,
        input,
        profile,
    ) {
        super::delivery::create_for_profile(
            conn,
            &mut ctx.handoff.borrow_mut(),
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

/// Everything the stateful stages need besides the message.
pub struct PipelineContext<'a> {
    pub targets: &'a [RouteTarget],
    pub default_country: Option<&'a str>,
    pub cache: &'a RefCell<IdentityCache>,
    /// Deliveries created here go to their workers after the commit when they have room.
    pub handoff: &'a RefCell<HandOffPlan>,
    pub environment: &'a str,
    pub received_at_ms: i64,
    pub dedup_since_ms: i64,
}

/// Run identity, dedup, consent and routing for one message. The caller stores the message
/// itself, as row `message_row`, with the outcome, in the same transaction.
pub fn apply(
    conn: &Connection,
    ctx: &PipelineContext<'_>,
    message_row: i64,
    input: &PipelineInput,
    duplicate_message: bool,
) -> Result<PipelineOutcome, rusqlite::Error> {
    // A repeated messageId already updated identity on its first arrival.
    let (profile, merged, conflicts, changed) = if duplicate_message {
        (
            current_profile(conn, ctx.cache, &input.observation)?,
            0,
            0,
            false,
        )
    } else {
        let (p, m, c, changed) =
            resolve_and_store(conn, ctx.cache, &input.observation, message_row)?;
        (Some(p), m, c, changed)
    };

    let outcome = match &input.draft {
        Draft::IdentityOnly => {
            // An identify that taught the profile something goes to the destinations that keep
            // profiles (Klaviyo profile-import), within their environment and consent.
            if let (true, true, Some(p)) = (changed, input.observation.traits.is_some(), &profile) {
                create_profile_deliveries(conn, ctx, message_row, input, p)?;
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
                conn.prepare_cached(
                    "INSERT INTO unmapped (message_row, environment, segment_event, mapping_version,
                         suggestion, reason, received_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    message_row,
                    ctx.environment,
                    segment_event,
                    mapping_version,
                    suggestion.as_ref().map(|s| s.segment.clone()),
                    reason,
                    ctx.received_at_ms
                ])?;
                count_unmapped_name(
                    conn,
                    segment_event,
                    ctx.environment,
                    suggestion.as_ref().map(|s| s.segment.as_str()),
                    reason,
                    ctx.received_at_ms,
                    message_row,
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
            crate::pipeline::phone::settle_event_phone(&mut event, ctx.default_country);
            if let Some(purchase_id) = pl::refund::purchase_event_id(&event) {
                event.refunds = load_purchase(conn, &purchase_id)?
                    .map(|(purchase, routed)| pl::refund::refunded_order(&purchase, routed));
            }
            let fingerprint = event.payload_fingerprint();
            let prior: Option<(i64, i64, String, Vec<u8>)> = conn
                .prepare_cached(
                    "SELECT id, message_row, message_id, fingerprint FROM events
                     WHERE event_id = ?1 AND created_at_ms >= ?2 ORDER BY id LIMIT 1",
                )?
                .query_row(params![event.event_id, ctx.dedup_since_ms], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            // A repeated event_id collides, unless an operator opened a replay window.
            let replay_open =
                prior.is_some() && replay_window_open(conn, ctx.environment, ctx.received_at_ms)?;
            match prior {
                Some((
                    winner_event_row,
                    winner_message_row,
                    winner_message_id,
                    winner_fingerprint,
                )) if !replay_open => {
                    let kind = dedup::classify(
                        &winner_message_id,
                        &winner_fingerprint,
                        &event.message_id,
                        &fingerprint,
                    );
                    let canonical = Packed::text(
                        &serde_json::to_string(&event).unwrap_or_else(|_| "{}".into()),
                    );
                    conn.prepare_cached(
                        "INSERT INTO collisions (event_id, kind, winner_event_row, winner_message_row,
                             message_row, canonical, detected_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![
                        event.event_id,
                        kind.as_str(),
                        winner_event_row,
                        winner_message_row,
                        message_row,
                        canonical,
                        ctx.received_at_ms
                    ])?;
                    PipelineOutcome::Collision {
                        event_id: event.event_id,
                        kind,
                    }
                }
                _ => {
                    // Shared with the hand-offs to every destination, not copied for each.
                    let event = std::sync::Arc::new(event);
                    let event_row = insert_event(
                        conn,
                        &event,
                        message_row,
                        &fingerprint,
                        replay_open,
                        ctx.received_at_ms,
                    )?;
                    let routes = insert_routes(
                        conn,
                        ctx,
                        event_row,
                        message_row,
                        &event,
                        row,
                        input.event_consent.as_ref(),
                        profile.as_ref(),
                    )?;
                    if replay_open {
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
                    }
                }
            }
        }
    };
    Ok(outcome)
}

/// Open a replay window: while it is open, an event_id seen before passes as a replay.
pub fn open_replay_window(
    conn: &Connection,
    environment: &str,
    starts_ms: i64,
    ends_ms: i64,
    note: &str,
) -> Result<i64, rusqlite::Error> {
    conn.execute(
        "INSERT INTO replay_windows (environment, starts_ms, ends_ms, note, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?2)",
        params![environment, starts_ms, ends_ms, note],
    )?;
    Ok(conn.last_insert_rowid())
}

/// One more unmapped message for its name's row in `unmapped_names` (migration 0012).
pub(super) fn count_unmapped_name(
    conn: &Connection,
    segment_event: &str,
    environment: &str,
    suggestion: Option<&str>,
    reason: &str,
    received_at_ms: i64,
    message_row: i64,
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO unmapped_names
             (segment_event, n, first_ms, last_ms, environments, suggestion, reason, last_row)
         VALUES (?1, 1, ?2, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (segment_event) DO UPDATE SET
             n = n + 1,
             first_ms = MIN(first_ms, excluded.first_ms),
             last_ms = MAX(last_ms, excluded.last_ms),
             environments = CASE
                 WHEN instr(',' || environments || ',', ',' || excluded.environments || ',') > 0
                 THEN environments ELSE environments || ',' || excluded.environments END,
             suggestion = CASE
                 WHEN suggestion IS NULL OR excluded.suggestion > suggestion
                 THEN excluded.suggestion ELSE suggestion END,
             reason = MAX(reason, excluded.reason),
             last_row = MAX(last_row, excluded.last_row)",
    )?
    .execute(params![
        segment_event,
        received_at_ms,
        environment,
        suggestion,
        reason,
        message_row
    ])?;
    Ok(())
}
