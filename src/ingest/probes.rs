//! What operators and orchestrators ask of a node: liveness, readiness (with the check that
//! failed), Prometheus's scrape, and the count of every answered request.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::IngestState;

/// Liveness: the process serves HTTP.
pub async fn healthz() -> Response {
    (StatusCode::OK, Json(serde_json::json!({ "status": "ok" }))).into_response()
}

/// How long the readiness write may take before the store counts as not accepting writes.
const READY_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Readiness: the writer runs, the store commits a write, every delivery worker can claim and
/// record, and the node is not stopping. The body names each check, so a failed probe says
/// which one failed.
pub async fn readyz(State(state): State<Arc<IngestState>>) -> Response {
    let stopping = state.ops.is_shutting_down();
    let writer = state.writer.is_running();
    let store = if writer {
        match tokio::time::timeout(READY_PROBE_TIMEOUT, state.writer.probe()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no commit within {} s (the writer is stuck or the disk is slow)",
                READY_PROBE_TIMEOUT.as_secs()
            )),
        }
    } else {
        Err("not tried: the writer has stopped".into())
    };
    let deliveries = state.ops.delivery_store_problems();
    let ready = !stopping && writer && store.is_ok() && deliveries.is_empty();
    let check = |ok: bool, detail: Option<String>| match (ok, detail) {
        (true, _) => serde_json::json!({ "ok": true }),
        (false, detail) => serde_json::json!({ "ok": false, "error": detail }),
    };
    let body = serde_json::json!({
        "ready": ready,
        "checks": {
            "writer": check(writer, (!writer).then(|| "the database writer has stopped".to_string())),
            "store_write": check(store.is_ok(), store.err()),
            "not_shutting_down": check(!stopping, stopping.then(|| "the node is stopping (SIGTERM)".to_string())),
            "deliveries": check(deliveries.is_empty(), (!deliveries.is_empty()).then(|| {
                deliveries
                    .iter()
                    .map(|(d, since, why)| format!("{d}: cannot claim or record deliveries since {}: {why}", crate::segment::format_ms(*since)))
                    .collect::<Vec<_>>()
                    .join("; ")
            })),
        }
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus's scrape.
pub async fn metrics(State(state): State<Arc<IngestState>>) -> Response {
    state
        .ops
        .metrics
        .writer_queue_depth
        .set(state.writer.queue_depth() as i64);
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            crate::ops::Metrics::CONTENT_TYPE,
        )],
        state.ops.metrics.encode(),
    )
        .into_response()
}

/// Count every answered request by route, status and refusal code.
pub async fn count_request(
    State(state): State<Arc<IngestState>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let reason = response
        .extensions()
        .get::<super::refusal::RefusalCode>()
        .map_or("", |c| c.0);
    state.ops.http(&path, response.status().as_u16(), reason);
    response
}
