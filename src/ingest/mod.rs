//! The HTTP side: `POST /segment/events` (PUT and PATCH too) (Segment's webhook destinations), the Segment HTTP
//! Tracking API paths (`/v1/*`, for SDKs posting directly), `GET /healthz` (liveness),
//! `GET /readyz` (readiness) and `GET /metrics` (Prometheus).

pub mod auth;
mod body;
mod handler;
mod privacy;
mod probes;
mod refusal;
mod server;

use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;

use crate::config::{Config, EnvironmentConfig};
use crate::pipeline::SharedMapping;
use crate::segment::MessageLimits;
use crate::store::StoreWriter;

pub use crate::stage::{message_record, MessageContext};
pub use handler::IngestReply;
pub use refusal::RefusalLog;
pub use server::ServerLimits;

/// Everything a request handler needs; shared read-only between requests.
pub struct IngestState {
    pub account: String,
    pub environments: Vec<EnvironmentConfig>,
    pub timestamp_tolerance_secs: u64,
    pub max_body_bytes: usize,
    pub max_messages_per_request: usize,
    pub message_limits: MessageLimits,
    pub body_timeout: Duration,
    pub dedup_window_ms: i64,
    /// `[workspace] default_country`: phones written nationally are keyed in it.
    pub default_country: Option<String>,
    pub writer: StoreWriter,
    /// The mapping table in force (hot-reloaded).
    pub mapping: SharedMapping,
    /// Refused requests, counted until the next flush to the store.
    pub refusals: RefusalLog,
    /// Metrics and alert signals.
    pub ops: Arc<crate::ops::Ops>,
    /// What `POST /privacy/forget` needs: the store, the destinations (forwards, warehouse).
    pub privacy: Option<PrivacyContext>,
    request_seq: AtomicU32,
}

/// Where a forget over HTTP runs.
#[derive(Clone)]
pub struct PrivacyContext {
    pub location: crate::store::StoreLocation,
    pub destinations: Vec<crate::destinations::Destination>,
    pub default_country: Option<String>,
}

impl IngestState {
    pub fn new(
        config: &Config,
        writer: StoreWriter,
        mapping: SharedMapping,
        ops: Arc<crate::ops::Ops>,
    ) -> IngestState {
        let mut seed = [0u8; 4];
        // Request ids only need to differ between processes sharing a database.
        let _ = getrandom::fill(&mut seed);
        IngestState {
            account: config.workspace.account.clone(),
            environments: config.environments.clone(),
            timestamp_tolerance_secs: config.server.timestamp_tolerance_secs,
            max_body_bytes: config.server.max_body_bytes,
            max_messages_per_request: config.server.max_messages_per_request,
            message_limits: config.server.messages,
            body_timeout: config.server.body_timeout,
            dedup_window_ms: (config.storage.dedup_window_hours as i64) * 3_600_000,
            default_country: config.workspace.default_country.clone(),
            writer,
            mapping,
            refusals: RefusalLog::observed_by(ops.clone()),
            ops,
            privacy: None,
            request_seq: AtomicU32::new(u32::from_le_bytes(seed)),
        }
    }
}

pub fn router(state: Arc<IngestState>) -> Router {
    Router::new()
        // Segment's Webhooks (Actions) destination offers POST, PUT and PATCH.
        .route(
            "/segment/events",
            post(handler::segment_events)
                .put(handler::segment_events)
                .patch(handler::segment_events),
        )
        .route("/v1/{call}", post(handler::tracking_api))
        .route("/privacy/forget", post(privacy::forget))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            probes::count_request,
        ))
        .with_state(state)
}

/// How often counted refusals go to the store (and so reach the dashboard).
const REFUSAL_FLUSH: Duration = Duration::from_secs(1);

/// Serve until `shutdown` resolves: stop accepting, finish requests in progress, and write the
/// last refusal counts.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<IngestState>,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let flusher = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFUSAL_FLUSH);
            loop {
                tick.tick().await;
                if let Some(batch) = state.refusals.take() {
                    state.writer.record_rejections(batch).await;
                }
            }
        })
    };
    let served = server::serve(listener, router(state.clone()), limits, shutdown).await;
    flusher.abort();
    if let Some(batch) = state.refusals.take() {
        state.writer.record_rejections(batch).await;
    }
    served
}
