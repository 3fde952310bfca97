//! TrackLayer: a Segment destination that turns selected Segment calls into canonical,
//! server-side events. This crate holds the whole pipeline; `main.rs` is a thin CLI over it.

pub mod cli;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod destinations;
pub mod ingest;
pub mod inspect;
pub mod operator;
pub mod ops;
pub mod pipeline;
pub mod preview;
pub mod privacy;
pub mod sandbox;
pub mod segment;
pub mod stage;
pub mod store;
pub mod testsend;
pub mod throttle;
pub mod tui;

use std::future::Future;
use std::sync::Arc;

use destinations::Setup;

/// Requests are allocated on one thread and freed on another, and every message builds many
/// small strings; glibc's allocator spent ~20% of the server's CPU on that (perf, ingest bench).
/// Declared here so the binary, the tests and the benchmarks all measure the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("HTTP server: {0}")]
    Serve(#[from] std::io::Error),
    #[error(transparent)]
    Alerts(#[from] ops::notify::BadSecret),
}

/// Run the pipeline headless on `listener` until `shutdown` resolves. Every request that was
/// acknowledged is committed; queued writes are finished before this returns.
pub async fn run(
    setup: Setup,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let config = &setup.config;
    let targets = setup.route_targets();
    let handoffs = Arc::new(store::handoff::HandOffs::default());
    let ops = ops::Ops::new(config.environments.iter().map(|e| e.name.clone()).collect());
    let options = store::WriterOptions {
        queue_capacity: config.server.queue_capacity,
        delivery_share: config.storage.delivery_share,
        default_country: config.workspace.default_country.clone(),
        commit_seconds: Some(ops.metrics.commit_seconds.clone()),
        writers: config.storage.writers,
        node_timeout_ms: config.storage.node_timeout_secs as i64 * 1000,
        // Read from the store by its writer.
        suppression_key: Vec::new(),
    };
    let location = store::StoreLocation::of(&config.storage);
    if location.is_fleet() {
        tracing::info!("storage: PostgreSQL (fleet)");
    }
    let store::RunningWriter {
        writer,
        thread: writer_thread,
        node,
    } = location.spawn_writer(options, targets, handoffs.clone())?;
    if let Some(node) = &node {
        tracing::info!(node = %node, "this node's name in the fleet");
    }
    let mapping = pipeline::SharedMapping::new(config.mapping.table.clone());
    let reload = tokio::spawn(watch_mapping(config.mapping.clone(), mapping.clone()));
    let workers = delivery::DeliveryWorkers::start(&setup.destinations, &writer, &handoffs, &ops)?;
    let ops_task = ops::spawn(
        ops.clone(),
        config.alerts.clone(),
        location.clone(),
        writer.clone(),
        setup.destinations.iter().map(|d| d.name.clone()).collect(),
        node,
    )?;
    let storage = &config.storage;
    let retention =
        (storage.retention_days > 0 || storage.request_body_retention_days > 0).then(|| {
            tokio::spawn(retention(
                writer.clone(),
                storage.retention_days,
                storage.request_body_retention_days,
            ))
        });
    let mut state = ingest::IngestState::new(config, writer, mapping, ops.clone());
    state.privacy = Some(ingest::PrivacyContext {
        location: location.clone(),
        destinations: setup.destinations.clone(),
        default_country: config.workspace.default_country.clone(),
    });
    let state = Arc::new(state);
    // Deletions queued by forget requests (on any node) go out from here, retried until the
    // platform has answered for good.
    let (stop_forwards, forwards_stopped) = tokio::sync::watch::channel(false);
    let forwarder = tokio::spawn(privacy::forward::run(
        location.clone(),
        setup.destinations.clone(),
        forwards_stopped,
    ));
    let limits = ingest::ServerLimits {
        header_timeout: config.server.header_timeout,
        max_connections: config.server.max_connections,
        // Enough to read what Segment or an SDK may send past the limit (a 50 MB batch), bounded
        // so a client cannot keep a connection busy with endless bytes.
        linger_bytes: (config.server.max_body_bytes as u64)
            .saturating_mul(16)
            .max(64 * 1024 * 1024),
    };
    let stopping = ops.clone();
    let shutdown = async move {
        shutdown.await;
        // Readiness fails from here on, so a load balancer stops sending work.
        stopping.shutting_down();
        tracing::info!("stopping: no new connections; finishing queued commits");
    };
    let served = ingest::serve(listener, state, limits, shutdown).await;
    // It holds a writer handle: stopped before the writer is left to drain.
    ops_task.stop().await;
    let _ = stop_forwards.send(true);
    let _ = forwarder.await;
    // What the workers claimed and did not send goes back in line; requests out are answered
    // and recorded (the writer still runs).
    workers.stop().await;
    if let Some(retention) = retention {
        retention.abort();
        let _ = retention.await;
    }
    // All handles to the writer are gone once the server has stopped; let it drain and exit.
    tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .ok();
    reload.abort();
    served?;
    Ok(())
}

/// Every ten minutes, delete what is older than the retention period (and clear request bodies
/// older than theirs), a chunk per transaction so ingest never waits long behind it. 0 days
/// keeps everything.
async fn retention(writer: store::StoreWriter, days: u64, body_days: u64) {
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(600));
    let cutoff = |days: u64| (days > 0).then(|| store::now_ms() - (days as i64) * 86_400_000);
    loop {
        interval.tick().await;
        let mut total = 0;
        loop {
            // Rows older than the retention period; `i64::MIN` deletes nothing.
            let rows = cutoff(days).unwrap_or(i64::MIN);
            match writer.prune(rows, cutoff(body_days)).await {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => {
                    tracing::warn!(error = %e, "retention pass failed; next one in ten minutes");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(
                rows = total,
                days,
                body_days,
                "retention: old rows deleted, old request bodies cleared"
            );
        }
    }
}

/// Poll the mapping's file and swap in a new table when it changes and validates. An invalid
/// edit is logged and the table in force stays, so a typo never stops ingest.
async fn watch_mapping(config: config::MappingConfig, shared: pipeline::SharedMapping) {
    let Some(path) = config.watch.clone() else {
        return;
    };
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut last = modified(&path);
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        interval.tick().await;
        let now = modified(&path);
        if now == last {
            continue;
        }
        last = now;
        match config.reload() {
            Ok(table) if table == *shared.current() => {}
            Ok(table) => {
                tracing::info!(version = table.version, rows = table.rows.len(), file = %path.display(), "mapping table reloaded");
                shared.replace(table);
            }
            Err(e) => {
                tracing::error!(error = %e, "mapping change rejected; the previous table stays in force")
            }
        }
    }
}
