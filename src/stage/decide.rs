//! The stateful stage's decisions, once for every store: for a group of requests and the state a
//! store loaded for them, what each message is (accepted, duplicate, invalid), whom it belongs
//! to (identity merges, conflicts), whether its event collides, where it is routed, and every
//! row that records it. Pure: the same group and snapshot always make the same rows, so a
//! fleet node that lost a race re-loads and decides again.
//!
//! Messages are decided in order; each sees what the ones before it decided (a profile created
//! by the first message of a group is the one the second joins).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::input::{
    lookup_keys, message_identifiers, profile_consent, profile_deliveries, profile_of, IngestBatch,
    MessageOutcome, MessageRecord, PipelineInput, PipelineOutcome, StoredOutcome, Verdict,
};
use super::rows::*;
use super::snapshot::{PriorEvent, PriorMessage, Purchase, Snapshot};
use crate::destinations::Subject;
use crate::pipeline::identity::{self, Identifier, Profile};
use crate::pipeline::{self as pl, dedup, Draft, RouteTarget, RouteVerdict};

/// What the decisions need besides the group and the snapshot.
pub struct Context<'a> {
    pub targets: &'a [RouteTarget],
    pub default_country: Option<&'a str>,
    /// The suppression list's keyed hash.
    pub suppressor: &'a crate::pipeline::privacy::Suppressor,
}

/// The kinds of row whose ids the decisions assign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Messages = 0,
    Events = 1,
    Profiles = 2,
    Deliveries = 3,
}

/// Where new row ids come from: a counter from a starting id (a single writer: SQLite), or ids a
/// fleet's sequences handed out.
#[derive(Debug, Clone)]
pub enum Ids {
    From([i64; 4]),
    Reserved([Vec<i64>; 4]),
}

/// Ids far above any real row's: a first pass that only counts what a group needs uses them, so
/// a new profile still sorts after every stored one.
pub const COUNTING: Ids = Ids::From([1 << 60; 4]);

impl Ids {
    fn take(&self, table: Table, used: &mut [usize; 4]) -> i64 {
        let i = table as usize;
        let n = used[i];
        used[i] += 1;
        match self {
            Ids::From(start) => start[i] + n as i64,
            // Reserved by counting first, so there are always enough; never reused if not.
            Ids::Reserved(ids) => ids[i].get(n).copied().unwrap_or(-(n as i64) - 1),
        }
    }
}

/// The working state: the snapshot, as the group's earlier messages changed it.
struct Working<'s> {
    snapshot: &'s Snapshot,
    messages: HashMap<(String, String), PriorMessage>,
    owners: HashMap<Identifier, i64>,
    profiles: HashMap<i64, Profile>,
    events: HashMap<String, PriorEvent>,
    purchases: HashMap<String, Purchase>,
    /// Profiles written, in their latest state, and whether each is new.
    written: BTreeMap<i64, ProfileWrite>,
    identities: BTreeMap<Identifier, IdentityUpsert>,
}

/// Decide a group. `ids` gives the messages, events, profiles and deliveries their ids.
pub fn decide<'a>(
    batches: &[&'a IngestBatch],
    snapshot: &Snapshot,
    ctx: &Context<'_>,
    ids: &Ids,
) -> Decision<'a> {
    let mut out = Decision::default();
    let mut w = Working {
        snapshot,
        messages: snapshot.messages.clone(),
        owners: snapshot.owners.clone(),
        profiles: snapshot.profiles.clone(),
        events: snapshot.events.clone(),
        purchases: snapshot.purchases.clone(),
        written: BTreeMap::new(),
        identities: BTreeMap::new(),
    };
    for batch in batches {
        if let Some(reason) = reused_signature(&w, batch) {
            out.jobs.push(JobDecision::Refused(reason));
            continue;
        }
        out.requests.push(batch);
        let mut outcomes = Vec::with_capacity(batch.messages.len());
        for message in &batch.messages {
            if let Some(forget_row) = suppressed_by(snapshot, ctx, message) {
                // A forgotten person's message: answered, counted against the forget that
                // suppressed it, and nothing of it stored.
                *out.suppressed.entry(forget_row).or_default() += 1;
                outcomes.push(StoredOutcome {
                    message: MessageOutcome::Suppressed,
                    pipeline: None,
                });
                continue;
            }
            let row = ids.take(Table::Messages, &mut out.ids_used);
            let env = &batch.receipt.environment;
            let verdict = match Verdict::message_id(message) {
                Err(invalid) => invalid,
                Ok(message_id) => {
                    let key = (env.clone(), message_id.to_string());
                    match w
                        .messages
                        .get(&key)
                        .filter(|m| m.first_seen_ms >= batch.dedup_since_ms)
                    {
                        Some(original) => Verdict::Duplicate {
                            original_row_id: original.row,
                            same_payload: original.raw_sha256 == message.raw_sha256,
                        },
                        None => {
                            w.messages.insert(
                                key,
                                PriorMessage {
                                    row,
                                    raw_sha256: message.raw_sha256.to_vec(),
                                    first_seen_ms: batch.receipt.received_at_ms,
                                    request_id: batch.receipt.request_id.clone(),
                                    request_sha256: Some(batch.receipt.body_sha256.to_vec()),
                                },
                            );
                            out.message_claims.push(MessageClaim {
                                environment: env.clone(),
                                message_id: message_id.to_string(),
                                row,
                                first_seen_ms: batch.receipt.received_at_ms,
                            });
                            Verdict::Accepted
                        }
                    }
                }
            };
            let pipeline = match (&verdict, &message.pipeline) {
                (Verdict::Invalid(_), _) | (_, None) => None,
                (verdict, Some(input)) => {
                    let duplicate = matches!(verdict, Verdict::Duplicate { .. });
                    Some(apply(
                        &mut w, &mut out, ctx, ids, batch, row, input, duplicate,
                    ))
                }
            };
            let stored = verdict.row(message);
            out.messages.push(MessageInsert {
                id: row,
                batch,
                record: message,
                status: stored.status,
                reason: stored.reason,
                duplicate_of: stored.duplicate_of,
                raw: stored.raw,
                outcome: pipeline.as_ref().map(PipelineOutcome::label),
            });
            outcomes.push(StoredOutcome {
                message: verdict.outcome(row),
                pipeline,
            });
        }
        out.jobs.push(JobDecision::Stored(outcomes));
    }
    out.profiles = w.written.into_values().collect();
    out.identities = w.identities.into_values().collect();
    out
}

/// The forget request whose suppression a message falls under, if any.
fn suppressed_by(snapshot: &Snapshot, ctx: &Context<'_>, message: &MessageRecord) -> Option<i64> {
    if snapshot.suppressed.is_empty() {
        return None;
    }
    message_identifiers(message).iter().find_map(|id| {
        let hash = ctx.suppressor.hash(id);
        snapshot.suppressed.get(&hash).copied()
    })
}

/// Why a batch signed only over element 0 is refused: its signed message is older than the
/// dedup window (a replay), or its element 0 was first delivered in another request (a
/// captured signature carrying a different batch).
fn reused_signature(w: &Working<'_>, batch: &IngestBatch) -> Option<String> {
    let guard = batch.replay_guard.as_ref()?;
    let environment = &batch.receipt.environment;
    if guard.newest_time_ms < batch.dedup_since_ms
        && !w
            .snapshot
            .replay_open(environment, batch.receipt.received_at_ms)
    {
        return Some(format!(
            "X-Signature carries no time of its own, and the signed message's newest time ({}) is older than the dedup window: refused as a replay; for a Segment Replay, open a replay window (tracklayer allow-replay)",
            crate::segment::format_ms(guard.newest_time_ms)
        ));
    }
    let message_id = guard.element0_message_id.as_ref()?;
    let first = w
        .messages
        .get(&(environment.clone(), message_id.clone()))
        .filter(|m| m.first_seen_ms >= batch.dedup_since_ms)?;
    if first.request_sha256.as_deref() == Some(&batch.receipt.body_sha256[..]) {
        return None;
    }
    Some(format!(
        "X-Signature covers only element 0, and element 0 (messageId {}) was first delivered in request {} with a different batch: a re-used signature; a genuine Segment retry resends the same bytes",
        crate::segment::clip(message_id),
        first.request_id
    ))
}

/// The profiles owning an observation's identifiers, in the order the identifiers name them.
fn profiles_for(w: &Working<'_>, obs: &identity::Observation) -> Vec<Profile> {
    let mut ids: Vec<i64> = Vec::new();
    for key in lookup_keys(obs) {
        if let Some(id) = w.owners.get(&key).filter(|id| !ids.contains(id)) {
            ids.push(*id);
        }
    }
    ids.iter()
        .filter_map(|id| w.profiles.get(id).cloned())
        .collect()
}

/// Identity resolution for a message, recorded. Returns the profile (with its id), merges and
/// conflicts, and whether anything changed.
fn resolve(
    w: &mut Working<'_>,
    out: &mut Decision<'_>,
    ids: &Ids,
    obs: &identity::Observation,
    message_row: i64,
) -> (Profile, usize, usize, bool) {
    let known = profiles_for(w, obs);
    let resolution = identity::resolve(obs, &known);
    let mut profile = resolution.profile;
    let change =
        |kind: &'static str, profile_id: i64, other: Option<i64>, detail: String| IdentityChange {
            at_ms: obs.at_ms,
            message_row,
            kind,
            profile_id,
            other_profile_id: other,
            detail,
        };
    if !resolution.changed {
        let id = profile.id.unwrap_or_default();
        for c in &resolution.conflicts {
            out.identity_changes
                .push(change("conflict", id, Some(c.owner), c.reason.clone()));
        }
        return (profile, 0, resolution.conflicts.len(), false);
    }
    let id = match profile.id {
        Some(id) => id,
        None => {
            let id = ids.take(Table::Profiles, &mut out.ids_used);
            profile.id = Some(id);
            let names: Vec<String> = profile
                .identifiers
                .iter()
                .map(|(k, v)| format!("{}={v}", k.as_str()))
                .collect();
            out.identity_changes
                .push(change("created", id, None, names.join(", ")));
            id
        }
    };
    for merged in &resolution.merged {
        out.merges.push((*merged, id));
        if let Some(folded) = w.written.get_mut(merged) {
            folded.merged_into = Some(id);
        } else if let Some(stored) = w.profiles.get(merged) {
            w.written.insert(
                *merged,
                ProfileWrite {
                    profile: stored.clone(),
                    new: false,
                    merged_into: Some(id),
                },
            );
        }
        w.profiles.remove(merged);
        for owner in w.owners.values_mut().filter(|o| **o == *merged) {
            *owner = id;
        }
        for upsert in w
            .identities
            .values_mut()
            .filter(|u| u.profile_id == *merged)
        {
            upsert.profile_id = id;
        }
        out.identity_changes.push(change(
            "merged",
            id,
            Some(*merged),
            format!(
                "profile {merged} folded into {id} by message {}",
                obs.message_id
            ),
        ));
    }
    for identifier in &resolution.new_identifiers {
        w.owners.insert(identifier.clone(), id);
        let first_seen = w
            .identities
            .get(identifier)
            .map_or(obs.at_ms, |u| u.at_ms.min(obs.at_ms));
        w.identities.insert(
            identifier.clone(),
            IdentityUpsert {
                kind: identifier.0.as_str(),
                value: identifier.1.clone(),
                profile_id: id,
                at_ms: first_seen,
            },
        );
    }
    for c in &resolution.conflicts {
        out.identity_changes
            .push(change("conflict", id, Some(c.owner), c.reason.clone()));
    }
    let new = w
        .written
        .get(&id)
        .map_or(!w.snapshot.profiles.contains_key(&id), |p| p.new);
    w.written.insert(
        id,
        ProfileWrite {
            profile: profile.clone(),
            new,
            merged_into: None,
        },
    );
    w.profiles.insert(id, profile.clone());
    (
        profile,
        resolution.merged.len(),
        resolution.conflicts.len(),
        true,
    )
}

/// Identity, dedup, consent and routing for one valid message stored as `message_row`.
#[allow(clippy::too_many_arguments)]
fn apply<'a>(
    w: &mut Working<'_>,
    out: &mut Decision<'a>,
    ctx: &Context<'_>,
    ids: &Ids,
    batch: &'a IngestBatch,
    message_row: i64,
    input: &'a PipelineInput,
    duplicate_message: bool,
) -> PipelineOutcome {
    let environment = batch.receipt.environment.as_str();
    let now = batch.receipt.received_at_ms;
    // A repeated messageId already updated identity on its first arrival.
    let (profile, merged, conflicts, changed) = if duplicate_message {
        let known = profiles_for(w, &input.observation);
        (profile_of(known, &input.observation), 0, 0, false)
    } else {
        let (p, m, c, changed) = resolve(w, out, ids, &input.observation, message_row);
        (Some(p), m, c, changed)
    };
    match &input.draft {
        Draft::IdentityOnly => {
            // An identify that taught the profile something goes to the destinations that keep
            // profiles (Klaviyo profile-import), within their environment and consent.
            if let (true, true, Some(p)) = (changed, input.observation.traits.is_some(), &profile) {
                for d in profile_deliveries(ctx.targets, environment, ctx.default_country, input, p)
                {
                    let snapshot =
                        serde_json::to_string(&d.snapshot).unwrap_or_else(|_| "{}".into());
                    out.deliveries.push(DeliveryInsert {
                        id: ids.take(Table::Deliveries, &mut out.ids_used),
                        event_row: None,
                        event_id: format!(
                            "profile_{}_{}",
                            d.snapshot.profile_id, d.snapshot.message_id
                        ),
                        message_row,
                        destination: d.destination.to_string(),
                        kind: d.kind.to_string(),
                        destination_event: "profile".into(),
                        consent_source: d.consent_source,
                        snapshot: Some(snapshot),
                        event_time_ms: now,
                        created_at_ms: now,
                        subject: Subject::Profile(d.snapshot),
                    });
                }
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
                out.unmapped.push(UnmappedInsert {
                    message_row,
                    environment: &batch.receipt.environment,
                    segment_event,
                    mapping_version: *mapping_version,
                    suggestion: suggestion.as_ref().map(|s| s.segment.clone()),
                    reason,
                    received_at_ms: now,
                });
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
                event.refunds = w
                    .purchases
                    .get(&purchase_id)
                    .map(|p| pl::refund::refunded_order(&p.event, p.routed_to.clone()));
            }
            let fingerprint = event.payload_fingerprint();
            let prior = w
                .events
                .get(&event.event_id)
                .filter(|e| e.created_at_ms >= batch.dedup_since_ms)
                .cloned();
            // A repeated event_id collides, unless an operator opened a replay window.
            let replay_open = prior.is_some() && w.snapshot.replay_open(environment, now);
            match prior {
                Some(winner) if !replay_open => {
                    let kind = dedup::classify(
                        &winner.message_id,
                        &winner.fingerprint,
                        &event.message_id,
                        &fingerprint,
                    );
                    out.collisions.push(CollisionInsert {
                        event_id: event.event_id.clone(),
                        kind,
                        winner_event_row: winner.row,
                        winner_message_row: winner.message_row,
                        message_row,
                        canonical: serde_json::to_string(&event).unwrap_or_else(|_| "{}".into()),
                        detected_at_ms: now,
                    });
                    PipelineOutcome::Collision {
                        event_id: event.event_id,
                        kind,
                    }
                }
                _ => {
                    let event_row = ids.take(Table::Events, &mut out.ids_used);
                    // Shared with every destination's delivery, not copied for each.
                    let event = Arc::new(event);
                    let (stored, learned_from) = profile_consent(profile.as_ref());
                    let profile_consent = stored.map(|c| (c, learned_from.as_str()));
                    let decisions = pl::route(
                        &event,
                        row,
                        ctx.targets,
                        input.event_consent.as_ref(),
                        profile_consent,
                    );
                    for d in decisions
                        .iter()
                        .filter(|d| d.verdict == RouteVerdict::Ready)
                    {
                        out.deliveries.push(DeliveryInsert {
                            id: ids.take(Table::Deliveries, &mut out.ids_used),
                            event_row: Some(event_row),
                            event_id: event.event_id.clone(),
                            message_row,
                            destination: d.destination.clone(),
                            kind: d.kind.clone(),
                            destination_event: d.destination_event.clone(),
                            consent_source: d.consent.source.clone(),
                            snapshot: None,
                            event_time_ms: event.event_time_ms,
                            created_at_ms: now,
                            subject: Subject::Event {
                                event: event.clone(),
                                destination_event: d.destination_event.clone(),
                                consent_source: d.consent.source.clone(),
                            },
                        });
                    }
                    if !w.events.contains_key(&event.event_id)
                        || w.events[&event.event_id].created_at_ms < batch.dedup_since_ms
                    {
                        w.events.insert(
                            event.event_id.clone(),
                            PriorEvent {
                                row: event_row,
                                message_row,
                                message_id: event.message_id.clone(),
                                fingerprint: fingerprint.to_vec(),
                                created_at_ms: now,
                            },
                        );
                        out.event_claims.push(EventClaim {
                            event_id: event.event_id.clone(),
                            row: event_row,
                            created_at_ms: now,
                        });
                    }
                    if event.name == "purchase" {
                        w.purchases.insert(
                            event.event_id.clone(),
                            Purchase {
                                event: (*event).clone(),
                                routed_to: decisions
                                    .iter()
                                    .filter(|d| d.verdict == RouteVerdict::Ready)
                                    .map(|d| d.destination.clone())
                                    .collect(),
                            },
                        );
                    }
                    let routes = decisions
                        .iter()
                        .map(|d| (d.destination.clone(), d.verdict))
                        .collect();
                    out.routes
                        .extend(decisions.into_iter().map(|decision| RouteInsert {
                            event_row,
                            decision,
                        }));
                    out.events.push(EventInsert {
                        id: event_row,
                        canonical: serde_json::to_string(&*event).unwrap_or_else(|_| "{}".into()),
                        event: event.clone(),
                        message_row,
                        fingerprint,
                        replay: replay_open,
                        created_at_ms: now,
                    });
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
    }
}

/// The message rows a decision's outcomes name (for a reply: row id and, for duplicates, the
/// original's), e.g. to check numbering in tests.
pub fn outcome_rows(decision: &Decision<'_>) -> Vec<i64> {
    decision
        .jobs
        .iter()
        .filter_map(|j| match j {
            JobDecision::Stored(outcomes) => Some(outcomes),
            JobDecision::Refused(_) => None,
        })
        .flatten()
        .filter_map(|o| match o.message {
            MessageOutcome::Accepted { row_id }
            | MessageOutcome::Duplicate { row_id, .. }
            | MessageOutcome::Invalid { row_id } => Some(row_id),
            MessageOutcome::Suppressed => None,
        })
        .collect()
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
