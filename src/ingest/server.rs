//! The HTTP/1.1 server around the router: a timeout on request headers (which also closes idle
//! keep-alive connections), a cap on open connections, and a graceful stop. Slow or idle clients
//! must never use up the process's file descriptors while real traffic waits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower_service::Service;

/// File descriptors kept for the database, the delivery clients and the logs.
const RESERVED_FILES: u64 = 128;
/// How often "connections refused at the cap" and accept errors are logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The answer to a connection over the cap: nothing has been read, so it is written at once and
/// the connection closed; Segment retries a 503.
fn over_capacity() -> String {
    let body = r#"{"message":"too many open connections; retry shortly (server.max_connections)","code":"too_many_connections"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// What a closing connection reads and drops of a refused body, at most.
    pub linger_bytes: u64,
}

/// Raise the open-file soft limit toward the hard limit, and the connection cap to what it
/// allows. Returns the cap to use.
fn connection_cap(wanted: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            return wanted;
        }
    };
    let allowed = limit.saturating_sub(RESERVED_FILES).max(1);
    if (wanted as u64) > allowed {
        tracing::warn!(
            open_file_limit = limit,
            max_connections = wanted,
            cap = allowed,
            "the open-file limit is too low for server.max_connections; raise it (ulimit -n, LimitNOFILE=) or lower the setting"
        );
        allowed as usize
    } else {
        wanted
    }
}

/// Counts something and logs it at most once per LOG_EVERY.
struct Throttled {
    what: &'static str,
    count: u64,
    logged_at: Option<Instant>,
}

impl Throttled {
    fn new(what: &'static str) -> Self {
        Throttled {
            what,
            count: 0,
            logged_at: None,
        }
    }

    fn hit(&mut self, detail: &str) {
        self.count += 1;
        if self.logged_at.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            tracing::warn!(count = self.count, detail, "{}", self.what);
            self.count = 0;
            self.logged_at = Some(Instant::now());
        }
    }
}

fn refuse(stream: TcpStream) {
    // Best effort: the client may not even be reading.
    let _ = stream.try_write(over_capacity().as_bytes());
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        // Boxed: the connection is polled without shutting down (to linger), which needs a
        // future it can move.
        Box::pin(async move {
            Ok::<_, Infallible>(router.call(request).await.unwrap_or_else(|e| match e {}))
        })
    });
    let mut connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            result = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => break result,
            _ = stop.changed(), if !stopping => stopping = true,
        }
        std::pin::Pin::new(&mut connection).graceful_shutdown();
    };
    match result {
        Ok(()) => linger(connection.into_parts().io.into_inner(), limits.linger_bytes).await,
        Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
    }
}

/// How long a closing connection waits for its client to stop sending.
const LINGER_IDLE: Duration = Duration::from_secs(2);
const LINGER_TOTAL: Duration = Duration::from_secs(30);

/// Close as a client can read the answer: a refusal (413, 401, 415) is sent before the body
/// is read, and closing a socket with unread bytes makes the kernel reset the connection, which
/// can reach the client before the answer does (it then sees a reset, and Segment retries a
/// network error for hours where it drops a 413). So the answer is followed by our end of the
/// stream, and what the client still sends is read and dropped until it stops: up to `bound`
/// bytes, an idle spell of 2 s or 30 s in all.
async fn linger(mut stream: TcpStream, bound: u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + LINGER_TOTAL;
    let mut dropped = 0u64;
    let mut scratch = vec![0u8; 64 * 1024];
    while dropped < bound {
        let idle_until = (tokio::time::Instant::now() + LINGER_IDLE).min(deadline);
        match tokio::time::timeout_at(idle_until, stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => dropped += n as u64,
            _ => return,
        }
    }
}

/// Serve `router` on `listener` until `shutdown` resolves, then stop accepting, let requests in
/// progress finish and return.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cap = connection_cap(limits.max_connections);
    let slots = Arc::new(Semaphore::new(cap));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut over_cap = Throttled::new("connections refused: server.max_connections reached");
    let mut accept_errors = Throttled::new("cannot accept connections");
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, usually: wait a little instead of spinning.
                accept_errors.hit(&e.to_string());
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            over_cap.hit(&format!("{cap} open"));
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stopped = stopped.clone();
        connections.spawn(async move {
            serve_connection(stream, peer, router, limits, stopped).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}
