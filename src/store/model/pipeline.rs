//! What the stateful pipeline stages take and give, the same for every store.

use serde::Serialize;

use serde_json::{Map, Value};

use crate::destinations::ProfileSnapshot;
use crate::pipeline::dedup::CollisionKind;
use crate::pipeline::identity::{IdKind, Identifier, Observation, Profile};
use crate::pipeline::{consent, phone, Draft, RouteTarget, RouteVerdict};

/// What the pipeline made of one message (the reply and the trace show it).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PipelineOutcome {
    Mapped {
        event_id: String,
        name: String,
        routes: Vec<(String, RouteVerdict)>,
    },
    /// Let through by an operator's replay window despite an earlier event with the same id.
    Replayed { event_id: String, name: String },
    Collision {
        event_id: String,
        kind: CollisionKind,
    },
    Unmapped {
        reason: String,
        suggestion: Option<String>,
    },
    Identify {
        profile_id: i64,
        merged: usize,
        conflicts: usize,
    },
}

impl PipelineOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            PipelineOutcome::Mapped { .. } => "mapped",
            PipelineOutcome::Replayed { .. } => "replayed",
            PipelineOutcome::Collision { .. } => "collision",
            PipelineOutcome::Unmapped { .. } => "unmapped",
            PipelineOutcome::Identify { .. } => "identify",
        }
    }
}

/// What the request task prepared for the writer (the pure, stateless stages).
#[derive(Debug, Clone)]
pub struct PipelineInput {
    pub draft: Draft,
    pub observation: Observation,
    pub event_consent: Option<Map<String, Value>>,
    /// Destinations a controlled test send asked to skip.
    pub skip_destinations: Vec<String>,
}

/// Identifiers to look up for an observation, including an alias's previousId in both roles.
pub fn lookup_keys(obs: &Observation) -> Vec<Identifier> {
    let mut keys = obs.identifiers.clone();
    if let Some(previous) = &obs.previous_id {
        keys.push((IdKind::UserId, previous.clone()));
        keys.push((IdKind::AnonymousId, previous.clone()));
    }
    keys
}

/// A JSON object stored as text (traits, consent); an unreadable one reads as empty.
pub fn json_map(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Of the profiles owning a duplicate's identifiers, the one it belongs to (its userId's, else
/// the first found), without changing anything.
pub fn profile_of(profiles: Vec<Profile>, obs: &Observation) -> Option<Profile> {
    let by_user = profiles
        .iter()
        .position(|p| p.user_id.is_some() && p.user_id == obs.user_id);
    let mut profiles = profiles;
    match by_user {
        Some(i) => Some(profiles.swap_remove(i)),
        None => profiles.into_iter().next(),
    }
}

/// A profile's stored consent and where it was learned, as routing reads it.
pub fn profile_consent(profile: Option<&Profile>) -> (Option<&Map<String, Value>>, String) {
    let learned_from = profile
        .and_then(|p| p.consent_source.clone())
        .map(|m| format!("message {m}"))
        .unwrap_or_default();
    (profile.and_then(|p| p.consent.as_ref()), learned_from)
}

/// A profile update for a destination that keeps profiles (Klaviyo profile-import).
pub struct ProfileDelivery<'a> {
    pub destination: &'a str,
    pub kind: &'a str,
    pub consent_source: String,
    pub snapshot: ProfileSnapshot,
}

/// The profile deliveries an identify that taught `profile` something makes: to each
/// destination that keeps profiles, serves this environment, is not skipped by a test send and
/// has consent; each snapshot's phone in E.164 (or left out, with why).
pub fn profile_deliveries<'a>(
    targets: &'a [RouteTarget],
    environment: &str,
    default_country: Option<&str>,
    input: &PipelineInput,
    profile: &Profile,
) -> Vec<ProfileDelivery<'a>> {
    let (stored, learned_from) = profile_consent(Some(profile));
    let profile_consent = stored.map(|c| (c, learned_from.as_str()));
    targets
        .iter()
        .filter(|t| t.takes_profiles && !input.skip_destinations.contains(&t.name))
        .filter(|t| t.environments.is_empty() || t.environments.iter().any(|e| e == environment))
        .filter_map(|target| {
            let verdict = consent::evaluate(
                &target.consent,
                input.event_consent.as_ref(),
                profile_consent,
            );
            if !verdict.allowed {
                return None;
            }
            let mut snapshot = ProfileSnapshot {
                profile_id: profile.id.unwrap_or_default(),
                message_id: input.observation.message_id.clone(),
                user_id: profile.user_id.clone(),
                anonymous_id: input
                    .observation
                    .identifiers
                    .iter()
                    .find(|(k, _)| *k == IdKind::AnonymousId)
                    .map(|(_, v)| v.clone()),
                traits: profile.traits.clone(),
                problems: Vec::new(),
            };
            snapshot.problems.extend(phone::settle_trait_phone(
                &mut snapshot.traits,
                default_country,
            ));
            Some(ProfileDelivery {
                destination: &target.name,
                kind: &target.kind,
                consent_source: verdict.source,
                snapshot,
            })
        })
        .collect()
}
