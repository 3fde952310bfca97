//! Request handling: authenticate from headers, read the body within the limit, verify the
//! signature over the raw bytes, split and validate messages, and answer only after the commit.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::auth::{self, AuthError};
use super::body::{check_content_type, content_encoding, decode_body, read_body};
use super::refusal::{header_str, Refusal, RequestMeta};
use super::IngestState;
use crate::config::EnvironmentConfig;
use crate::segment::{split_body, BodyError, MessageType, SplitBody};
use crate::stage::{message_record, MessageContext, PipelineOutcome};
use crate::store::{
    IngestBatch, MessageOutcome, MessageRecord, ReplayGuard, RequestReceipt, WriteError,
};

/// The reply to an accepted request. Segment only reads the status; `tracklayer send` and
/// engineers with curl read the rest.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct IngestReply {
    pub success: bool,
    pub request_id: String,
    pub environment: String,
    pub accepted: usize,
    pub duplicates: usize,
    pub invalid: usize,
    /// Track calls that became canonical events.
    pub mapped: usize,
    /// Track calls whose name is not in the mapping table (kept, see `problems`).
    pub unmapped: usize,
    /// Events that collapsed onto an existing event_id (see `problems`).
    pub collisions: usize,
    /// Messages naming a forgotten person: not stored, sent nowhere (see `problems`).
    #[serde(default)]
    pub suppressed: usize,
    /// Only the messages that need attention, so a 1000-event batch stays small; at most 100
    /// (`problems_not_listed` counts the rest).
    pub problems: Vec<MessageProblem>,
    #[serde(default)]
    pub problems_not_listed: usize,
    /// The canonical events created, up to 100 (`events_truncated` says when there were more).
    pub events: Vec<ReplyEvent>,
    pub events_truncated: bool,
}

const MAX_EVENTS_IN_REPLY: usize = 100;
const MAX_PROBLEMS_IN_REPLY: usize = 100;

#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ReplyEvent {
    pub index: usize,
    #[serde(rename = "messageId")]
    pub message_id: Option<String>,
    pub event_id: String,
    pub name: String,
}

#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct MessageProblem {
    pub index: usize,
    #[serde(rename = "messageId")]
    pub message_id: Option<String>,
    pub status: String,
    pub reason: String,
}

/// A body that could not be split into messages: 413 when it carries too many, else 400.
fn body_refusal(e: BodyError) -> Refusal {
    match e {
        BodyError::TooManyMessages { .. } => Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_messages",
            e.to_string(),
        ),
        other => Refusal::new(StatusCode::BAD_REQUEST, "bad_request", other.to_string()),
    }
}

fn find_environment<'a>(
    state: &'a IngestState,
    headers: &HeaderMap,
) -> Result<&'a EnvironmentConfig, AuthError> {
    let account = header_str(headers, auth::HEADER_ACCOUNT)
        .ok_or(AuthError::MissingHeader("X-TrackLayer-Account"))?;
    if account != state.account {
        return Err(AuthError::UnknownAccount(auth::truncate_for_display(
            account,
        )));
    }
    let name = header_str(headers, auth::HEADER_ENVIRONMENT)
        .ok_or(AuthError::MissingHeader("X-TrackLayer-Environment"))?;
    state
        .environments
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| AuthError::UnknownEnvironment(auth::truncate_for_display(name)))
}

fn secrets_of(env: &EnvironmentConfig) -> Vec<&crate::config::Secret> {
    std::iter::once(&env.secret)
        .chain(env.previous_secret.as_ref())
        .collect()
}

/// What a verified signature covers.
pub(super) struct Verified {
    pub scheme: &'static str,
    /// The body split to find Segment's element 0, so it is not parsed twice.
    split: Option<SplitBody>,
    /// Segment's X-Signature: it carries no time of its own, and for a batch it covers only
    /// element 0; `Some(true)` when that is all it covers.
    pub segment_element0_only: Option<bool>,
    /// TrackLayer's signature: what makes this request one of a kind (a digest of its
    /// environment, timestamp and signature), and when its timestamp leaves the window.
    pub once: Option<crate::privacy::SignedOnce>,
}

/// Verify the signature headers over the raw body.
fn verify_signature(
    state: &IngestState,
    env: &EnvironmentConfig,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Verified, AuthError> {
    let secrets = secrets_of(env);
    if let Some(signature) = header_str(headers, auth::HEADER_SIGNATURE) {
        let timestamp = header_str(headers, auth::HEADER_TIMESTAMP)
            .ok_or(AuthError::MissingHeader("X-TrackLayer-Timestamp"))?;
        let parsed = auth::parse_timestamp(timestamp)?;
        auth::check_timestamp_window(parsed, chrono::Utc::now(), state.timestamp_tolerance_secs)?;
        return if auth::verify_tracklayer(&secrets, timestamp, body, signature)? {
            let digest = Sha256::new()
                .chain_update(env.name.as_bytes())
                .chain_update([0x1f])
                .chain_update(timestamp.trim().as_bytes())
                .chain_update([0x1f])
                .chain_update(signature.trim().as_bytes())
                .finalize()
                .to_vec();
            let tolerance_ms = (state.timestamp_tolerance_secs as i64).saturating_mul(1000);
            Ok(Verified {
                scheme: "tracklayer",
                split: None,
                segment_element0_only: None,
                once: Some(crate::privacy::SignedOnce {
                    digest,
                    expires_at_ms: parsed.timestamp_millis().saturating_add(tolerance_ms),
                }),
            })
        } else {
            Err(AuthError::BadSignature(env.name.clone()))
        };
    }
    if let Some(signature) = header_str(headers, auth::HEADER_SEGMENT_SIGNATURE) {
        if auth::verify_segment(&secrets, body, signature) {
            return Ok(Verified {
                scheme: "segment",
                split: None,
                segment_element0_only: Some(false),
                once: None,
            });
        }
        // A batch: Segment signs only the raw bytes of element 0.
        if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            if let Ok(split) = split_body(body, state.max_messages_per_request) {
                if auth::verify_segment(&secrets, &split.messages[0], signature) {
                    return Ok(Verified {
                        scheme: "segment",
                        split: Some(split),
                        segment_element0_only: Some(true),
                        once: None,
                    });
                }
            }
            return Err(AuthError::BadSegmentSignature {
                environment: env.name.clone(),
                signed: "element 0 of the batch",
            });
        }
        return Err(AuthError::BadSegmentSignature {
            environment: env.name.clone(),
            signed: "the raw body",
        });
    }
    Err(AuthError::MissingHeader(
        "X-TrackLayer-Signature (with X-TrackLayer-Timestamp) or Segment's X-Signature",
    ))
}

/// The rules that keep a captured X-Signature from being re-used (it carries no timestamp, and
/// for a batch covers only element 0): the signed message must carry a Segment time, a batch
/// signed over element 0 must be allowed for the environment, and the writer checks the rest
/// (recency, and that a repeated element 0 comes in the same bytes as the first time).
fn segment_guard(
    env: &EnvironmentConfig,
    split: &SplitBody,
    element0_only: bool,
) -> Result<ReplayGuard, AuthError> {
    if element0_only && !env.segment_batches {
        return Err(AuthError::SignedBatchRefused(env.name.clone()));
    }
    let first = split.messages.first().map(|m| &m[..]).unwrap_or_default();
    let newest_time_ms =
        crate::segment::newest_segment_time_ms(first).ok_or(AuthError::SignedMessageWithoutTime)?;
    let element0_message_id = element0_only
        .then(|| crate::segment::message_id_of(first))
        .flatten();
    if element0_only && element0_message_id.is_none() {
        return Err(AuthError::SignedMessageWithoutTime);
    }
    Ok(ReplayGuard {
        element0_message_id,
        newest_time_ms,
    })
}

/// The JSON body as its sender serialised it: content type checked, read within the limits,
/// decompressed (within the same limit) when it came gzipped or deflated. Signatures cover
/// these bytes, as Segment and TrackLayer's own clients sign before compressing.
async fn read_json_body(
    state: &IngestState,
    headers: &HeaderMap,
    meta: &RequestMeta,
    body: axum::body::Body,
) -> Result<Bytes, Refusal> {
    check_content_type(headers)?;
    let encoding = content_encoding(headers)?;
    let wire = read_body(body, meta, state.max_body_bytes, state.body_timeout).await?;
    decode_body(encoding, wire, state.max_body_bytes)
}

/// A request to a signed endpoint (`/segment/events`, `/privacy/forget`) whose environment is
/// known, whose body was read within bounds and whose signature holds.
pub(super) struct Signed<'s> {
    pub meta: RequestMeta,
    pub remote: Option<SocketAddr>,
    pub env: &'s EnvironmentConfig,
    pub body: Bytes,
    pub verified: Verified,
}

/// Authenticate a signed endpoint's request, or the refusal to answer with.
pub(super) async fn signed_request(
    state: &IngestState,
    request: Request,
) -> Result<Signed<'_>, Response> {
    let (parts, body) = request.into_parts();
    let remote = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let meta = RequestMeta::of(&parts.headers, parts.uri.path(), remote);
    let env = match find_environment(state, &parts.headers) {
        Ok(env) => env,
        Err(e) => return Err(meta.refuse(&state.refusals, e.into(), None)),
    };
    let body = match read_json_body(state, &parts.headers, &meta, body).await {
        Ok(body) => body,
        Err(refusal) => return Err(meta.refuse(&state.refusals, refusal, None)),
    };
    match verify_signature(state, env, &parts.headers, &body) {
        Ok(verified) => Ok(Signed {
            meta,
            remote,
            env,
            body,
            verified,
        }),
        Err(e) => Err(meta.refuse(&state.refusals, e.into(), Some(body.len() as u64))),
    }
}

/// `POST /segment/events`: Segment's webhook destinations.
pub async fn segment_events(State(state): State<Arc<IngestState>>, request: Request) -> Response {
    let Signed {
        meta,
        env,
        body,
        verified,
        ..
    } = match signed_request(&state, request).await {
        Ok(signed) => signed,
        Err(refused) => return refused,
    };
    let split = match verified.split {
        Some(split) => split,
        None => match split_body(&body, state.max_messages_per_request) {
            Ok(split) => split,
            Err(e) => {
                return meta.refuse(&state.refusals, body_refusal(e), Some(body.len() as u64))
            }
        },
    };
    let guard = match verified
        .segment_element0_only
        .map(|element0_only| segment_guard(env, &split, element0_only))
        .transpose()
    {
        Ok(guard) => guard,
        Err(e) => return meta.refuse(&state.refusals, e.into(), Some(body.len() as u64)),
    };
    let request = Received {
        environment: &env.name,
        auth_scheme: verified.scheme,
        body: &body,
        implied_type: None,
        replay_guard: guard,
    };
    store_and_reply(&state, &meta, request, split).await
}

/// `POST /v1/{track|identify|page|screen|group|alias|batch}`: the Segment HTTP Tracking API, so
/// SDKs (analytics-node, RudderStack's) can post directly with their write key.
pub async fn tracking_api(
    State(state): State<Arc<IngestState>>,
    Path(call): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let remote = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let meta = RequestMeta::of(&parts.headers, parts.uri.path(), remote);

    let implied_type = match call.as_str() {
        "batch" | "import" => None,
        other => match MessageType::parse(other) {
            Some(t) => Some(t),
            None => {
                let refusal = Refusal::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!(
                        "/v1/{} is not a Segment Tracking API path",
                        auth::truncate_for_display(other)
                    ),
                );
                return meta.refuse(&state.refusals, refusal, None);
            }
        },
    };
    // Authenticate before parsing whenever the key is in the header (every current SDK).
    let header_key = header_str(&parts.headers, header::AUTHORIZATION.as_str())
        .and_then(auth::basic_auth_write_key);
    let env_of = |key: &str| {
        state.environments.iter().find(|env| {
            env.write_key
                .as_ref()
                .is_some_and(|k| auth::keys_equal(k.expose(), key))
        })
    };
    let header_env = match &header_key {
        Some(key) => match env_of(key) {
            Some(env) => Some(env),
            None => return meta.refuse(&state.refusals, AuthError::UnknownWriteKey.into(), None),
        },
        None => None,
    };
    let body = match read_json_body(&state, &parts.headers, &meta, body).await {
        Ok(body) => body,
        Err(refusal) => return meta.refuse(&state.refusals, refusal, None),
    };
    let split = match split_body(&body, state.max_messages_per_request) {
        Ok(split) => split,
        Err(e) => {
            // Without a parsable body there is no writeKey to check; never say 400 to a
            // request we cannot attribute.
            let refusal: Refusal = match header_env {
                None => AuthError::MissingWriteKey.into(),
                Some(_) => body_refusal(e),
            };
            return meta.refuse(&state.refusals, refusal, Some(body.len() as u64));
        }
    };
    // Older SDKs put the write key in the body instead of Basic auth.
    let env = match header_env {
        Some(env) => env,
        None => match split.write_key.as_deref() {
            None => {
                return meta.refuse(
                    &state.refusals,
                    AuthError::MissingWriteKey.into(),
                    Some(body.len() as u64),
                )
            }
            Some(key) => match env_of(key) {
                Some(env) => env,
                None => {
                    return meta.refuse(
                        &state.refusals,
                        AuthError::UnknownWriteKey.into(),
                        Some(body.len() as u64),
                    )
                }
            },
        },
    };
    // As Segment's API records an SDK's message: no write key, a messageId, the server's
    // receipt time, the device's clock skew corrected.
    let mut split = split;
    let sent_at = split.sent_at.take();
    split.messages = split
        .messages
        .iter()
        .map(|raw| {
            Bytes::from(crate::segment::tracking_api::normalize(
                raw,
                sent_at.as_deref(),
                meta.received_at_ms,
            ))
        })
        .collect();
    let request = Received {
        environment: &env.name,
        auth_scheme: "write_key",
        body: &body,
        implied_type,
        replay_guard: None,
    };
    store_and_reply(&state, &meta, request, split).await
}

pub(super) fn next_request_id(state: &IngestState, received_at_ms: i64) -> String {
    let seq = state.request_seq.fetch_add(1, Ordering::Relaxed);
    format!("req_{received_at_ms:011x}{seq:08x}")
}

/// An authenticated request, ready to be stored.
struct Received<'a> {
    environment: &'a str,
    auth_scheme: &'static str,
    body: &'a Bytes,
    implied_type: Option<MessageType>,
    replay_guard: Option<ReplayGuard>,
}

async fn store_and_reply(
    state: &IngestState,
    meta: &RequestMeta,
    request: Received<'_>,
    split: SplitBody,
) -> Response {
    let Received {
        environment,
        auth_scheme,
        body,
        implied_type,
        replay_guard,
    } = request;
    let request_id = next_request_id(state, meta.received_at_ms);
    let mapping = state.mapping.current();
    let ctx = MessageContext {
        implied_type,
        environment,
        mapping: &mapping,
        received_at_ms: meta.received_at_ms,
        limits: &state.message_limits,
        default_country: state.default_country.as_deref(),
    };
    let messages: Vec<MessageRecord> = split
        .messages
        .into_iter()
        .enumerate()
        .map(|(position, raw)| message_record(position, raw, &ctx))
        .collect();

    // Reasons and ids for the reply, taken before the records move to the writer.
    let labels: Vec<(Option<String>, Option<String>)> = messages
        .iter()
        .map(|m| (m.message_id.clone(), m.invalid_reason.clone()))
        .collect();
    let events: Vec<Option<String>> = messages.iter().map(|m| m.event.clone()).collect();

    let batch = IngestBatch {
        receipt: RequestReceipt {
            request_id: request_id.clone(),
            received_at_ms: meta.received_at_ms,
            environment: environment.to_string(),
            path: meta.path.clone(),
            remote_addr: meta.remote_addr.map(|a| a.to_string()),
            user_agent: meta.user_agent.clone(),
            auth_scheme,
            body_shape: split.shape.as_str(),
            body_bytes: body.len(),
            body_sha256: Sha256::digest(body).into(),
        },
        messages,
        dedup_since_ms: meta.received_at_ms - state.dedup_window_ms,
        replay_guard,
    };

    let outcomes = match state.writer.ingest(batch).await {
        Ok(outcomes) => outcomes,
        Err(WriteError::ReusedSignature(reason)) => {
            let refusal = Refusal::new(StatusCode::UNAUTHORIZED, "reused_signature", reason);
            return meta.refuse(&state.refusals, refusal, Some(body.len() as u64));
        }
        Err(WriteError::QueueFull) => {
            let mut refusal = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "TrackLayer is catching up on writes; retry shortly",
            );
            refusal.retry_after = Some(1);
            return refusal.into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, request_id, "could not store a request");
            let mut refusal = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_failed",
                "TrackLayer could not store the request; it was not accepted, retry",
            );
            refusal.retry_after = Some(5);
            return refusal.into_response();
        }
    };

    state
        .ops
        .ingested(environment, meta.received_at_ms, &outcomes, &events);
    let mut reply = IngestReply {
        success: true,
        request_id,
        environment: environment.to_string(),
        accepted: 0,
        duplicates: 0,
        invalid: 0,
        mapped: 0,
        unmapped: 0,
        collisions: 0,
        suppressed: 0,
        problems: Vec::new(),
        problems_not_listed: 0,
        events: Vec::new(),
        events_truncated: false,
    };
    for (index, (outcome, (message_id, invalid_reason))) in outcomes.iter().zip(labels).enumerate()
    {
        let mut problem = |status: &str, reason: String| {
            if reply.problems.len() < MAX_PROBLEMS_IN_REPLY {
                reply.problems.push(MessageProblem {
                    index,
                    message_id: message_id.clone(),
                    status: status.into(),
                    reason,
                })
            } else {
                reply.problems_not_listed += 1;
            }
        };
        match &outcome.message {
            MessageOutcome::Accepted { .. } => reply.accepted += 1,
            MessageOutcome::Duplicate { same_payload, .. } => {
                reply.duplicates += 1;
                problem(
                    "duplicate",
                    if *same_payload {
                        "messageId already accepted (Segment retry); stored as a duplicate".into()
                    } else {
                        "messageId already accepted with a different payload; stored as a duplicate"
                            .into()
                    },
                );
            }
            MessageOutcome::Invalid { .. } => {
                reply.invalid += 1;
                problem("invalid", invalid_reason.unwrap_or_default());
            }
            MessageOutcome::Suppressed => {
                reply.suppressed += 1;
                problem(
                    "suppressed",
                    "names a person who asked to be forgotten: not stored, sent nowhere".into(),
                );
            }
        }
        match &outcome.pipeline {
            Some(PipelineOutcome::Unmapped { reason, .. }) => {
                reply.unmapped += 1;
                problem("unmapped", reason.clone());
            }
            Some(PipelineOutcome::Collision { event_id, kind }) => {
                reply.collisions += 1;
                problem(
                    "collision",
                    format!("{}: {} ({event_id})", kind.as_str(), kind.explain()),
                );
            }
            Some(PipelineOutcome::Mapped { event_id, name, .. })
            | Some(PipelineOutcome::Replayed { event_id, name }) => {
                reply.mapped += 1;
                if reply.events.len() < MAX_EVENTS_IN_REPLY {
                    reply.events.push(ReplyEvent {
                        index,
                        message_id: message_id.clone(),
                        event_id: event_id.clone(),
                        name: name.clone(),
                    });
                } else {
                    reply.events_truncated = true;
                }
            }
            Some(PipelineOutcome::Identify { .. }) | None => {}
        }
    }
    (StatusCode::OK, Json(reply)).into_response()
}
