//! Ingest throughput and ack latency over loopback with keep-alive, against a bare axum
//! "200 OK" handler in the same run. `cargo bench --bench ingest`
//! (BENCH_SECS, BENCH_CONNECTIONS override the defaults).
//!
//! The client is a minimal hand-rolled HTTP/1.1 keep-alive loop so that client overhead, which
//! shares the machine's cores with the server, stays small and equal for both targets.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracklayer::config::{Config, Secret};
use tracklayer::ingest::auth;

const SECRET: &str = "bench-secret-0123456789abcdef";

fn message(id: &str) -> String {
    // Padded to about 1 KB, a typical Order Completed with two products and context.
    let base = format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"{id}","userId":"cust_34982","anonymousId":"anon_8dca","timestamp":"2026-04-23T10:15:30Z","context":{{"ip":"67.160.210.48","userAgent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15","page":{{"url":"https://example.com/checkout/thank-you"}}}},"properties":{{"order_id":"ORD-{id}","revenue":129.95,"currency":"EUR","products":[{{"product_id":"SKU-481","name":"Monopoly","price":89.95,"quantity":1}},{{"product_id":"SKU-812","name":"Uno","price":40,"quantity":1}}],"note":""#
    );
    let pad = 1024usize.saturating_sub(base.len() + 3);
    format!("{base}{}\"}}}}", "x".repeat(pad))
}

fn request_bytes(addr: SocketAddr, id: &str) -> Vec<u8> {
    let body = message(id);
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signature = auth::sign_tracklayer(&Secret::new(SECRET), &timestamp, body.as_bytes());
    format!(
        "POST /segment/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         X-TrackLayer-Account: acct_bench\r\nX-TrackLayer-Environment: production\r\n\
         X-TrackLayer-Timestamp: {timestamp}\r\nX-TrackLayer-Signature: {signature}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Read one HTTP/1.1 response with a Content-Length; return its status code.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).unwrap_or("");
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

struct Report {
    ok: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Report {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let idx = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[idx] as f64 / 1000.0
    }
}

async fn load(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    label: &'static str,
) -> Report {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).ok();
            let mut buf = Vec::with_capacity(8192);
            let (mut ok, mut errors, mut latencies) = (0usize, 0usize, Vec::new());
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                // The process id keeps ids unique when several client runs load one server.
                let request =
                    request_bytes(addr, &format!("{label}-{}-{c}-{n}", std::process::id()));
                let sent = Instant::now();
                if stream.write_all(&request).await.is_err() {
                    errors += 1;
                    break;
                }
                match read_response(&mut stream, &mut buf).await {
                    Ok(200) => {
                        ok += 1;
                        latencies.push(sent.elapsed().as_micros() as u64);
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            (ok, errors, latencies)
        }));
    }
    let mut report = Report {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (ok, errors, latencies) = t.await.unwrap();
        report.ok += ok;
        report.errors += errors;
        report.latencies_us.extend(latencies);
    }
    report.elapsed = started.elapsed();
    report.latencies_us.sort_unstable();
    report
}

fn print(label: &str, r: &Report) {
    println!(
        "{label:<28} {:>9.0} msg/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} ok, {} errors, {:.1} s)",
        r.rate(),
        r.percentile(0.50),
        r.percentile(0.99),
        r.ok,
        r.errors,
        r.elapsed.as_secs_f64()
    );
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A bare axum "200 OK" handler and TrackLayer's ingest on a fresh database, both on loopback.
/// Returns their addresses and what stops TrackLayer.
async fn start_servers(
    dir: &Path,
) -> (
    SocketAddr,
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tracklayer::RunError>>,
) {
    let bare = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare_addr = bare.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/segment/events",
        axum::routing::post(|_body: bytes::Bytes| async { "OK" }),
    );
    tokio::spawn(async move { axum::serve(bare, app).await });

    // TrackLayer ingest with its durable group commit on a fresh database file.
    let text = format!(
        "[storage]\npath = \"{}\"\n[workspace]\naccount = \"acct_bench\"\n[[environments]]\nname = \"production\"\nsecret = \"{SECRET}\"\n",
        dir.join("bench.db").display()
    );
    let config = Config::parse(&text, Path::new("bench.toml"), &|_| None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingest_addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tracklayer::run(config, listener, async {
        let _ = stop_rx.await;
    }));
    (bare_addr, ingest_addr, stop_tx, server)
}

fn addr_from_env(name: &str) -> Option<SocketAddr> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not host:port")),
    )
}

/// BENCH_ROLE=server starts both servers, prints their addresses and keeps them up for
/// BENCH_SERVE_SECS; BENCH_ROLE=client with BENCH_BARE and BENCH_INGEST loads servers started
/// that way, so the load generator runs in a process of its own. Without BENCH_ROLE, both run here.
fn main() {
    let secs = env_or("BENCH_SECS", 5);
    let connections = env_or("BENCH_CONNECTIONS", 32) as usize;
    let role = std::env::var("BENCH_ROLE").unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let (bare_addr, ingest_addr, servers) = if role == "client" {
            let bare = addr_from_env("BENCH_BARE").expect("BENCH_BARE=host:port");
            let ingest = addr_from_env("BENCH_INGEST").expect("BENCH_INGEST=host:port");
            (bare, ingest, None)
        } else {
            let (bare, ingest, stop, server) = start_servers(dir.path()).await;
            (bare, ingest, Some((stop, server)))
        };
        if role == "server" {
            println!("BENCH_BARE={bare_addr} BENCH_INGEST={ingest_addr}");
            tokio::time::sleep(Duration::from_secs(env_or("BENCH_SERVE_SECS", 60))).await;
        } else {
            run_loads(
                bare_addr,
                ingest_addr,
                connections,
                Duration::from_secs(secs),
            )
            .await;
        }
        if let Some((stop, server)) = servers {
            let _ = stop.send(());
            let _ = server.await;
        }
    });
}

async fn run_loads(
    bare_addr: SocketAddr,
    ingest_addr: SocketAddr,
    connections: usize,
    duration: Duration,
) {
    println!(
        "{connections} keep-alive connections, {} s each, ~1 KB signed messages, one per request",
        duration.as_secs()
    );
    // Warm-up, not reported.
    load(bare_addr, connections, Duration::from_millis(500), "warm").await;
    // BENCH_ONLY=bare|ingest runs one side (for profiling one at a time).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let mut rates = Vec::new();
    if only != "ingest" {
        let report = load(bare_addr, connections, duration, "bare").await;
        print("bare axum 200 OK", &report);
        rates.push(report.rate());
    }
    if only != "bare" {
        let report = load(ingest_addr, connections, duration, "ingest").await;
        print("tracklayer ingest (durable)", &report);
        rates.push(report.rate());
    }
    if let [bare, ingest] = rates[..] {
        println!("ratio ingest / bare: {:.2}", ingest / bare.max(1.0));
    }
}
