//! TrackLayer: a Segment destination that turns selected Segment calls into canonical,
//! server-side events. This crate holds the whole pipeline; `main.rs` is a thin CLI over it.

pub mod cli;
pub mod config;
pub mod ingest;
pub mod pipeline;
pub mod segment;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("HTTP server: {0}")]
    Serve(#[from] std::io::Error),
}

/// Run the pipeline headless on `listener` until `shutdown` resolves. Every request that was
/// acknowledged is committed; queued writes are finished before this returns.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let (writer, writer_thread) =
        store::StoreWriter::spawn(&config.storage.path, config.server.queue_capacity)?;
    let state = Arc::new(ingest::IngestState::new(&config, writer));
    let served = ingest::serve(listener, state, shutdown).await;
    // All handles to the writer are gone once the server has stopped; let it drain and exit.
    tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .ok();
    served?;
    Ok(())
}
