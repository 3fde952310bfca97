//! The load generators the benches share: signed ~1 KB Segment messages over loopback HTTP/1.1
//! keep-alive, closed loop (each connection sends as fast as it is answered) or open loop (a
//! fixed offered rate, latency counted from when each message was due, so a stall is not hidden).
//!
//! The client is a minimal hand-rolled HTTP/1.1 loop so that its overhead, which shares the
//! machine's cores with the server, stays small and equal for every target.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracklayer::config::Secret;
use tracklayer::destinations::Setup;
use tracklayer::ingest::auth;

pub const SECRET: &str = "bench-secret-0123456789abcdef";
pub const ACCOUNT: &str = "acct_bench";

/// An Order Completed with two products and context, padded to about 1 KB, dated now (the
/// platforms refuse events older than 7 days).
pub fn message(id: &str) -> String {
    // A few thousand customers, as on a shop: most orders come from someone seen before.
    let user = id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 5000;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let base = format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"{id}","userId":"cust_{user}","anonymousId":"anon_{user}","timestamp":"{now}","context":{{"ip":"67.160.210.48","userAgent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15","page":{{"url":"https://example.com/checkout/thank-you?gclid=Cj0KCQiA{user}"}},"traits":{{"email":"buyer{user}@example.com"}}}},"properties":{{"order_id":"ORD-{id}","revenue":129.95,"currency":"EUR","products":[{{"product_id":"SKU-481","name":"Monopoly","price":89.95,"quantity":1}},{{"product_id":"SKU-812","name":"Uno","price":40,"quantity":1}}],"note":""#
    );
    let pad = 1024usize.saturating_sub(base.len() + 3);
    format!("{base}{}\"}}}}", "x".repeat(pad))
}

/// An identify of the same shop's customers (traits Klaviyo takes as a profile), dated now.
pub fn identify(id: &str) -> String {
    let user = id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 5000;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        r#"{{"type":"identify","messageId":"{id}","userId":"cust_{user}","anonymousId":"anon_{user}","timestamp":"{now}","context":{{"ip":"67.160.210.48"}},"traits":{{"email":"buyer{user}@example.com","phone":"+31612{user:06}","first_name":"Buyer","last_name":"{user}","plan":"gold"}}}}"#
    )
}

/// A signed `POST /segment/events` carrying `body`, as raw HTTP/1.1 bytes.
pub fn request_bytes(addr: SocketAddr, body: &str) -> Vec<u8> {
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signature = auth::sign_tracklayer(&Secret::new(SECRET), &timestamp, body.as_bytes());
    format!(
        "POST /segment/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         X-TrackLayer-Account: {ACCOUNT}\r\nX-TrackLayer-Environment: production\r\n\
         X-TrackLayer-Timestamp: {timestamp}\r\nX-TrackLayer-Signature: {signature}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Read one HTTP/1.1 response with a Content-Length; return its status code.
pub async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
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

#[derive(Debug, Default)]
pub struct Report {
    pub ok: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub latencies_us: Vec<u64>,
}

impl Report {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p) as f64 / 1000.0
    }

    pub fn line(&self, label: &str) -> String {
        format!(
            "{label:<34} {:>9.0} msg/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} ok, {} errors, {:.1} s)",
            self.rate(),
            self.percentile_ms(0.50),
            self.percentile_ms(0.99),
            self.ok,
            self.errors,
            self.elapsed.as_secs_f64()
        )
    }

    fn merge(&mut self, ok: usize, errors: usize, latencies: Vec<u64>) {
        self.ok += ok;
        self.errors += errors;
        self.latencies_us.extend(latencies);
    }
}

/// The `p` quantile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Closed loop: `connections` keep-alive connections, each sending one message per request as
/// soon as the previous one is answered, for `duration`.
pub async fn closed_loop(
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
                let id = format!("{label}-{}-{c}-{n}", std::process::id());
                let request = request_bytes(addr, &message(&id));
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
    let mut report = Report::default();
    for t in tasks {
        let (ok, errors, latencies) = t.await.unwrap();
        report.merge(ok, errors, latencies);
    }
    report.elapsed = started.elapsed();
    report.latencies_us.sort_unstable();
    report
}

/// Open loop: `rate` messages a second for `duration`, `per_request` to a request (a bare array
/// when more than one, as Webhooks (Actions) batches), spread over `connections`. Each request is
/// due at a fixed instant; its latency runs from then (a stalled server is charged for the wait,
/// not hidden by a client that slowed down with it). `ok` counts messages. With
/// `identify_every` = k > 0, every k-th message is an identify.
pub async fn open_loop(
    addr: SocketAddr,
    rate: u64,
    per_request: usize,
    connections: usize,
    duration: Duration,
    label: &'static str,
    identify_every: usize,
) -> Report {
    let started = Instant::now();
    let requests_per_connection = rate as f64 / per_request as f64 / connections as f64;
    let interval = Duration::from_secs_f64(1.0 / requests_per_connection);
    let count = (requests_per_connection * duration.as_secs_f64()) as u64;
    let mut tasks = Vec::new();
    for c in 0..connections {
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).ok();
            let mut buf = Vec::with_capacity(8192);
            let (mut ok, mut errors, mut latencies) = (0usize, 0usize, Vec::new());
            // Connections start staggered across one interval.
            let offset = interval.mul_f64(c as f64 / connections as f64);
            for n in 0..count {
                let due = started + offset + interval.mul_f64(n as f64);
                tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
                let pid = std::process::id();
                let one = |id: String, k: usize| {
                    if identify_every > 0 && k % identify_every == identify_every - 1 {
                        identify(&id)
                    } else {
                        message(&id)
                    }
                };
                let body = if per_request == 1 {
                    one(format!("{label}-{pid}-{c}-{n}"), n as usize)
                } else {
                    let elements: Vec<String> = (0..per_request)
                        .map(|i| one(format!("{label}-{pid}-{c}-{n}-{i}"), i))
                        .collect();
                    format!("[{}]", elements.join(","))
                };
                if stream.write_all(&request_bytes(addr, &body)).await.is_err() {
                    errors += per_request;
                    break;
                }
                match read_response(&mut stream, &mut buf).await {
                    Ok(200) => {
                        ok += per_request;
                        latencies.push(due.elapsed().as_micros() as u64);
                    }
                    Ok(_) => errors += per_request,
                    Err(_) => {
                        errors += per_request;
                        break;
                    }
                }
            }
            (ok, errors, latencies)
        }));
    }
    let mut report = Report::default();
    for t in tasks {
        let (ok, errors, latencies) = t.await.unwrap();
        report.merge(ok, errors, latencies);
    }
    report.elapsed = started.elapsed();
    report.latencies_us.sort_unstable();
    report
}

/// Post `messages` messages as signed arrays of `per_request`, from `connections` at once: a
/// quick way to fill a node through its public endpoint.
pub async fn fill(addr: SocketAddr, messages: usize, per_request: usize, connections: usize) {
    let requests = messages.div_ceil(per_request);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let mut buf = Vec::with_capacity(8192);
            loop {
                let r = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if r >= requests {
                    break;
                }
                let elements: Vec<String> = (0..per_request)
                    .map(|i| message(&format!("fill-{}-{r}-{i}", std::process::id())))
                    .collect();
                let body = format!("[{}]", elements.join(","));
                stream
                    .write_all(&request_bytes(addr, &body))
                    .await
                    .expect("write");
                let status = read_response(&mut stream, &mut buf).await.expect("read");
                assert_eq!(status, 200, "filling the node failed");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A config for a node on a fresh database under `dir`, with `destinations` TOML appended.
pub fn node_config(dir: &Path, destinations: &str) -> Setup {
    let text = format!(
        "[server]\nqueue_capacity = 8192\n[storage]\npath = \"{}\"\n[workspace]\naccount = \"{ACCOUNT}\"\n[[environments]]\nname = \"production\"\nsecret = \"{SECRET}\"\n{destinations}",
        dir.join("bench.db").display()
    );
    Setup::parse(&text, &dir.join("bench.toml"), &|_| None).unwrap()
}

/// A node of a fleet on the PostgreSQL database at `url`, with `destinations` TOML appended.
/// A PostgreSQL node with `writers` connections committing groups (`storage.writers`).
pub fn pg_node_config_with(dir: &Path, url: &str, destinations: &str, writers: usize) -> Setup {
    let text = format!(
        "[server]\nqueue_capacity = 8192\n[storage]\nurl = \"{url}\"\nretention_days = 0\nwriters = {writers}\n[workspace]\naccount = \"{ACCOUNT}\"\n[[environments]]\nname = \"production\"\nsecret = \"{SECRET}\"\n{destinations}"
    );
    Setup::parse(&text, &dir.join("bench.toml"), &|_| None).unwrap()
}

/// A fresh database on the PostgreSQL server at `admin_url`; returns its URL.
pub fn create_pg_database(admin_url: &str, name: &str) -> String {
    let (admin, name) = (admin_url.to_string(), name.to_string());
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).expect("PostgreSQL");
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&format!("/{name}"));
        url.to_string()
    })
    .join()
    .unwrap()
}

/// Merge the reports of loads run side by side (one per node).
pub fn merged(reports: Vec<Report>) -> Report {
    let elapsed = reports.iter().map(|r| r.elapsed).max().unwrap_or_default();
    let mut latencies_us: Vec<u64> = reports
        .iter()
        .flat_map(|r| r.latencies_us.clone())
        .collect();
    latencies_us.sort_unstable();
    Report {
        ok: reports.iter().map(|r| r.ok).sum(),
        errors: reports.iter().map(|r| r.errors).sum(),
        elapsed,
        latencies_us,
    }
}

/// A running node; `stop` shuts it down gracefully.
pub struct Node {
    pub addr: SocketAddr,
    pub db: std::path::PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tracklayer::RunError>>,
}

impl Node {
    pub async fn start(setup: Setup) -> Node {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let db = setup.config.storage.path.clone();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(tracklayer::run(setup, listener, async {
            let _ = stop_rx.await;
        }));
        // Ready once it answers (its database exists by then).
        let mut buf = Vec::new();
        loop {
            if let Ok(mut stream) = TcpStream::connect(addr).await {
                let asked = stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await;
                if asked.is_ok() && read_response(&mut stream, &mut buf).await.ok() == Some(200) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Node {
            addr,
            db,
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A loopback port with nothing listening on it: connections are refused until a server binds it.
pub fn refused_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The sandbox stands in for platforms that run elsewhere: it gets threads of its own at low
/// priority, so its CPU does not count as TrackLayer's.
pub struct RemoteSandbox {
    pub sandbox: tracklayer::sandbox::Sandbox,
    _runtime: tokio::runtime::Runtime,
}

impl RemoteSandbox {
    pub fn start(listener: std::net::TcpListener) -> RemoteSandbox {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sandbox")
            .on_thread_start(tracklayer::delivery::yield_to_ingest)
            .enable_all()
            .build()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let sandbox = runtime.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tracklayer::sandbox::Sandbox::start(listener).await.unwrap()
        });
        RemoteSandbox {
            sandbox,
            _runtime: runtime,
        }
    }
}
