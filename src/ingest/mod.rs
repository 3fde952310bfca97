//! The HTTP side: `POST /segment/events` (Segment's webhook destinations), the Segment HTTP
//! Tracking API paths (`/v1/*`, for SDKs posting directly) and `GET /healthz`.

pub mod auth;
mod handler;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::config::{Config, EnvironmentConfig};
use crate::pipeline::SharedMapping;
use crate::store::StoreWriter;

pub use handler::{message_record, IngestReply};

/// Everything a request handler needs; shared read-only between requests.
pub struct IngestState {
    pub account: String,
    pub environments: Vec<EnvironmentConfig>,
    pub timestamp_tolerance_secs: u64,
    pub max_body_bytes: usize,
    pub dedup_window_ms: i64,
    pub writer: StoreWriter,
    /// The mapping table in force (hot-reloaded).
    pub mapping: SharedMapping,
    request_seq: AtomicU32,
}

impl IngestState {
    pub fn new(config: &Config, writer: StoreWriter, mapping: SharedMapping) -> IngestState {
        let mut seed = [0u8; 4];
        // Request ids only need to differ between processes sharing a database.
        let _ = getrandom::fill(&mut seed);
        IngestState {
            account: config.workspace.account.clone(),
            environments: config.environments.clone(),
            timestamp_tolerance_secs: config.server.timestamp_tolerance_secs,
            max_body_bytes: config.server.max_body_bytes,
            dedup_window_ms: (config.storage.dedup_window_hours as i64) * 3_600_000,
            writer,
            mapping,
            request_seq: AtomicU32::new(u32::from_le_bytes(seed)),
        }
    }
}

pub fn router(state: Arc<IngestState>) -> Router {
    Router::new()
        .route("/segment/events", post(handler::segment_events))
        .route("/v1/{call}", post(handler::tracking_api))
        .route("/healthz", get(handler::healthz))
        .with_state(state)
}

/// Serve until `shutdown` resolves. Connection info is kept so rejections record the peer.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<IngestState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
