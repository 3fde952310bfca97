//! What the ingest side hands to the stateful stage (a request and its messages, with the
//! stateless stages' drafts), and what the stage answers for each message.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::destinations::ProfileSnapshot;
use crate::pipeline::dedup::CollisionKind;
use crate::pipeline::identity::{IdKind, Identifier, Observation, Profile};
use crate::pipeline::{
    self, consent, identity, phone, Draft, MappingTable, RouteTarget, RouteVerdict,
};
use crate::segment::{validate_message, MessageLimits, MessageType};

/// What every message of a request shares.
pub struct MessageContext<'a> {
    /// The call type given by the URL (`/v1/track`), which SDKs may leave out of the body.
    pub implied_type: Option<MessageType>,
    pub environment: &'a str,
    pub mapping: &'a MappingTable,
    pub received_at_ms: i64,
    pub limits: &'a MessageLimits,
    /// `[workspace] default_country`: a phone written nationally is read there.
    pub default_country: Option<&'a str>,
}

/// Validate one message, run the stateless pipeline stages on it, and describe it for storage.
pub fn message_record(position: usize, raw: Bytes, ctx: &MessageContext<'_>) -> MessageRecord {
    let raw_sha256: [u8; 32] = Sha256::digest(&raw).into();
    match validate_message(&raw, ctx.implied_type, ctx.limits) {
        Ok(valid) => {
            let pipeline = PipelineInput {
                draft: pipeline::draft(&valid, ctx.environment, ctx.mapping, ctx.received_at_ms),
                observation: identity::observe(&valid, ctx.received_at_ms, ctx.default_country),
                event_consent: consent::event_consent(&valid.body).cloned(),
                skip_destinations: pipeline::test_skips(&valid.body),
            };
            MessageRecord {
                position,
                message_id: Some(valid.message_id),
                message_type: Some(valid.message_type.as_str().to_string()),
                event: valid.event,
                user_id: valid.user_id,
                anonymous_id: valid.anonymous_id,
                raw,
                raw_bytes: None,
                raw_sha256,
                invalid_reason: None,
                pipeline: Some(pipeline),
            }
        }
        Err(invalid) => {
            // An oversized invalid message keeps its first bytes and its size, not all of it.
            let (raw, raw_bytes) = if raw.len() > ctx.limits.max_message_bytes {
                let size = raw.len();
                (raw.slice(..ctx.limits.max_message_bytes), Some(size))
            } else {
                (raw, None)
            };
            MessageRecord {
                position,
                message_id: invalid.message_id,
                message_type: invalid.message_type,
                event: invalid.event,
                user_id: None,
                anonymous_id: None,
                raw,
                raw_bytes,
                raw_sha256,
                invalid_reason: Some(invalid.reason),
                pipeline: None,
            }
        }
    }
}

/// Metadata of one authenticated request.
#[derive(Debug, Clone)]
pub struct RequestReceipt {
    pub request_id: String,
    pub received_at_ms: i64,
    pub environment: String,
    pub path: String,
    pub remote_addr: Option<String>,
    pub user_agent: Option<String>,
    pub auth_scheme: &'static str,
    pub body_shape: &'static str,
    pub body_bytes: usize,
    /// SHA-256 of the whole body as received.
    pub body_sha256: [u8; 32],
}

/// One message of a request, valid or not.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub position: usize,
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    pub event: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// Exactly the bytes received (for an invalid message over the size limit, its first bytes).
    pub raw: Bytes,
    /// The message's full size when `raw` holds only its first bytes.
    pub raw_bytes: Option<usize>,
    /// SHA-256 of `raw`, computed on the request's task so the single writer does less.
    pub raw_sha256: [u8; 32],
    /// `Some(reason)` when the message failed validation.
    pub invalid_reason: Option<String>,
    /// The stateless pipeline stages' result, for valid messages.
    pub pipeline: Option<PipelineInput>,
}

/// A request and all its messages: stored in one transaction, acknowledged after its commit.
#[derive(Debug, Clone)]
pub struct IngestBatch {
    pub receipt: RequestReceipt,
    pub messages: Vec<MessageRecord>,
    /// Messages whose messageId was first accepted before this instant are not duplicates.
    pub dedup_since_ms: i64,
    /// Set for a batch authenticated only by Segment's signature over element 0.
    pub replay_guard: Option<ReplayGuard>,
}

/// A batch signed only over element 0 (Segment's X-Signature) is a genuine retry, or new: if
/// element 0 was accepted before, the whole body must equal the request that first carried it.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    /// For a batch signed over element 0 only: element 0's messageId.
    pub element0_message_id: Option<String>,
    /// The newest Segment time in the signed message: older than the dedup window, it is a
    /// replay (unless an operator opened a replay window).
    pub newest_time_ms: i64,
}

/// What became of one message: its storage verdict and, for valid ones, the pipeline's.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOutcome {
    pub message: MessageOutcome,
    pub pipeline: Option<PipelineOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOutcome {
    Accepted {
        row_id: i64,
    },
    /// The messageId was accepted before (a Segment retry or replay).
    Duplicate {
        row_id: i64,
        original_row_id: i64,
        same_payload: bool,
    },
    Invalid {
        row_id: i64,
    },
    /// The message names a forgotten person: nothing of it is stored or sent.
    Suppressed,
}

/// A request refused before its body was trusted. Never holds the body or a secret.
#[derive(Debug, Clone)]
pub struct RejectedRequest {
    pub received_at_ms: i64,
    pub path: String,
    pub remote_addr: Option<String>,
    pub user_agent: Option<String>,
    pub account_header: Option<String>,
    pub environment_header: Option<String>,
    pub content_type: Option<String>,
    pub body_bytes: Option<u64>,
    pub status_code: u16,
    pub reason_code: &'static str,
    pub reason: String,
}

/// Refusals counted per minute, environment header, reason and peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionCount {
    pub minute_ms: i64,
    pub environment: String,
    pub reason_code: &'static str,
    pub peer: String,
    pub status_code: u16,
    pub count: u64,
}

/// What the ingest side hands over every few seconds: counts, and a few full examples.
#[derive(Debug, Clone, Default)]
pub struct RejectionBatch {
    pub counts: Vec<RejectionCount>,
    pub examples: Vec<RejectedRequest>,
}

/// What becomes of one message of a request, decided before it is stored.
pub enum Verdict<'a> {
    Invalid(&'a str),
    Duplicate {
        original_row_id: i64,
        same_payload: bool,
    },
    Accepted,
}

/// A message's row as every store writes it.
pub struct MessageRow<'a> {
    pub status: &'static str,
    pub reason: Option<&'a str>,
    pub duplicate_of: Option<i64>,
    /// None for a duplicate with identical bytes: they are not stored twice.
    pub raw: Option<&'a [u8]>,
}

impl<'a> Verdict<'a> {
    /// The messageId to check against those accepted before, or the message is invalid.
    pub fn message_id(message: &'a MessageRecord) -> Result<&'a str, Verdict<'a>> {
        match (&message.invalid_reason, &message.message_id) {
            (Some(reason), _) => Err(Verdict::Invalid(reason)),
            (None, None) => Err(Verdict::Invalid("messageId is missing")),
            (None, Some(message_id)) => Ok(message_id),
        }
    }

    pub fn row(&self, message: &'a MessageRecord) -> MessageRow<'a> {
        let (status, reason, duplicate_of, raw) = match self {
            Verdict::Invalid(reason) => ("invalid", Some(*reason), None, Some(&message.raw[..])),
            // Identical bytes are not stored twice; a different payload is kept whole.
            Verdict::Duplicate {
                original_row_id,
                same_payload: true,
            } => (
                "duplicate",
                Some("messageId already accepted with identical bytes (a Segment retry)"),
                Some(*original_row_id),
                None,
            ),
            Verdict::Duplicate {
                original_row_id,
                same_payload: false,
            } => (
                "duplicate",
                Some("messageId already accepted with a different payload"),
                Some(*original_row_id),
                Some(&message.raw[..]),
            ),
            Verdict::Accepted => ("accepted", None, None, Some(&message.raw[..])),
        };
        MessageRow {
            status,
            reason,
            duplicate_of,
            raw,
        }
    }

    pub fn outcome(&self, row_id: i64) -> MessageOutcome {
        match *self {
            Verdict::Invalid(_) => MessageOutcome::Invalid { row_id },
            Verdict::Duplicate {
                original_row_id,
                same_payload,
            } => MessageOutcome::Duplicate {
                row_id,
                original_row_id,
                same_payload,
            },
            Verdict::Accepted => MessageOutcome::Accepted { row_id },
        }
    }
}

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

/// The identifiers a message names, for the suppression list: what its pipeline observed, or
/// for an invalid message the ids it still carries.
pub fn message_identifiers(message: &MessageRecord) -> Vec<Identifier> {
    crate::pipeline::privacy::message_identifiers(
        message
            .pipeline
            .as_ref()
            .map(|p| {
                let mut keys = lookup_keys(&p.observation);
                keys.extend(p.observation.earlier_spellings.iter().cloned());
                keys
            })
            .as_deref(),
        message.user_id.as_deref(),
        message.anonymous_id.as_deref(),
    )
}
