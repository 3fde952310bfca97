//! `POST /privacy/forget`: the forget command over HTTP, authenticated as `/segment/events` is
//! (account, environment, timestamp and signature with the environment's secret; never a write
//! key). A bad request is refused with the field and why, and nothing is deleted.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::handler::{next_request_id, signed_request, Signed};
use super::refusal::Refusal;
use super::IngestState;
use crate::pipeline::privacy::ForgetRequest;
use crate::privacy::{self, Order, PrivacyError};

/// The body: one or more identifiers of the same person, and `undo` to lift a suppression.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    anonymous_id: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    undo: bool,
}

pub async fn forget(State(state): State<Arc<IngestState>>, request: Request) -> Response {
    let Signed {
        meta,
        remote,
        env,
        body,
        verified,
    } = match signed_request(&state, request).await {
        Ok(signed) => signed,
        Err(refused) => return refused,
    };
    // Segment's X-Signature carries no time, so a captured request would work forever: a
    // forget takes TrackLayer's signature only, and each signed request once.
    let Some(once) = verified.once else {
        let refusal = Refusal::new(
            StatusCode::UNAUTHORIZED,
            "signature_scheme",
            "/privacy/forget takes X-TrackLayer-Signature with X-TrackLayer-Timestamp only (Segment's X-Signature carries no time and could be replayed)",
        );
        return meta.refuse(&state.refusals, refusal, Some(body.len() as u64));
    };
    let bad = |why: String| Refusal::new(StatusCode::BAD_REQUEST, "bad_forget_request", why);
    let parsed: Body = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => {
            let refusal = bad(format!(
                "the body must be {{\"user_id\"|\"anonymous_id\"|\"email\"|\"phone\": \"…\", \"undo\": false}}: {e}"
            ));
            return meta.refuse(&state.refusals, refusal, Some(body.len() as u64));
        }
    };
    let Some(context) = state.privacy.clone() else {
        let refusal = Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "privacy_unavailable",
            "this node was started without a store for forget requests",
        );
        return meta.refuse(&state.refusals, refusal, None);
    };
    let request_id = next_request_id(&state, meta.received_at_ms);
    let peer = remote.map_or_else(|| "unknown peer".to_string(), |r| r.ip().to_string());
    let order = Order {
        request: ForgetRequest {
            user_id: parsed.user_id,
            anonymous_id: parsed.anonymous_id,
            email: parsed.email,
            phone: parsed.phone,
        },
        environment: env.name.clone(),
        who: format!("http:{request_id} from {peer}"),
        request_id: format!("fg_{request_id}"),
        undo: parsed.undo,
        once: Some(once),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let context = context.clone();
        // The store's client is synchronous: the forget runs on a thread of its own.
        std::thread::spawn(move || {
            let _ = tx.send(privacy::run(
                &context.location,
                &order,
                &context.destinations,
                context.default_country.as_deref(),
            ));
        });
    }
    let report = match rx.await {
        Ok(Ok(report)) => report,
        Ok(Err(PrivacyError::Request(e))) => {
            return meta.refuse(&state.refusals, bad(e.to_string()), Some(body.len() as u64))
        }
        Ok(Err(PrivacyError::Replayed)) => {
            let refusal = Refusal::new(
                StatusCode::CONFLICT,
                "replayed",
                PrivacyError::Replayed.to_string(),
            );
            return meta.refuse(&state.refusals, refusal, Some(body.len() as u64));
        }
        Ok(Err(PrivacyError::Store(e))) => {
            tracing::error!(error = %e, "forget: the store failed");
            let mut refusal = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the store failed; nothing is lost, ask again (the same signed request is taken again): {e}"),
            );
            refusal.retry_after = Some(5);
            return refusal.into_response();
        }
        Err(_) => {
            return Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "forget_failed",
                "the forget stopped unexpectedly; ask again (each step is safe to repeat)",
            )
            .into_response()
        }
    };
    if !report.forwarded.is_empty() {
        // Forgets are rare: a connection of their own, closed once the forwards are sent.
        let store = privacy::forward::ForwardStore::new(context.location.clone());
        if let Err(e) = privacy::forward::send_due(&store, &context.destinations).await {
            tracing::warn!(error = %e, "forget: forwards stay queued");
        }
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let (location, id) = (context.location.clone(), report.request_id.clone());
        std::thread::spawn(move || {
            let _ = tx.send(privacy::record(&location, &id));
        });
    }
    let audit = rx.await.ok().and_then(Result::ok).flatten();
    (
        StatusCode::OK,
        Json(serde_json::json!({"report": report, "audit": audit})),
    )
        .into_response()
}
