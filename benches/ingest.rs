//! Ingest throughput and ack latency over loopback with keep-alive, against a bare axum
//! "200 OK" handler in the same run. `cargo bench --bench ingest`
//! (BENCH_SECS, BENCH_CONNECTIONS override the defaults).
//!
//! With BENCH_POSTGRES_URL (a server's admin URL, e.g. from `tests/postgres/cluster.sh start`)
//! the same load then goes to one PostgreSQL node, and split over two nodes on one database,
//! each on a fresh database, next to the SQLite figure of the same run. For each it reports the
//! statements the server ran per message (pg_stat_statements, which the test cluster preloads:
//! each is one round trip) and the CPU per message of the server's processes and of this process
//! (the node or nodes, and the load generator).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    closed_loop, create_pg_database, env_or, merged, node_config, pg_node_config_with, Node, Report,
};

/// A bare axum "200 OK" handler on loopback.
async fn start_bare() -> SocketAddr {
    let bare = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = bare.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/segment/events",
        axum::routing::post(|_body: bytes::Bytes| async { "OK" }),
    );
    tokio::spawn(async move { axum::serve(bare, app).await });
    addr
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
        let (bare_addr, ingest_addr, mut node) = if role == "client" {
            let bare = addr_from_env("BENCH_BARE").expect("BENCH_BARE=host:port");
            let ingest = addr_from_env("BENCH_INGEST").expect("BENCH_INGEST=host:port");
            (bare, ingest, None)
        } else {
            let bare = start_bare().await;
            let node = Node::start(node_config(dir.path(), "")).await;
            (bare, node.addr, Some(node))
        };
        if role == "server" {
            println!("BENCH_BARE={bare_addr} BENCH_INGEST={ingest_addr}");
            tokio::time::sleep(Duration::from_secs(env_or("BENCH_SERVE_SECS", 60))).await;
        } else {
            let sqlite_rate = run_loads(
                bare_addr,
                ingest_addr,
                connections,
                Duration::from_secs(secs),
            )
            .await;
            // Stopped first: its final checkpoint would compete with the PostgreSQL runs.
            if let Some(node) = node.take() {
                node.stop().await;
            }
            if let (Ok(admin), Some(sqlite)) = (std::env::var("BENCH_POSTGRES_URL"), sqlite_rate) {
                postgres_loads(&admin, sqlite, connections, Duration::from_secs(secs)).await;
            }
        }
        if let Some(node) = node {
            node.stop().await;
        }
    });
}

async fn run_loads(
    bare_addr: SocketAddr,
    ingest_addr: SocketAddr,
    connections: usize,
    duration: Duration,
) -> Option<f64> {
    println!(
        "{connections} keep-alive connections, {} s each, ~1 KB signed messages, one per request",
        duration.as_secs()
    );
    // Warm-up, not reported.
    closed_loop(bare_addr, connections, Duration::from_millis(500), "warm").await;
    // BENCH_ONLY=bare|ingest runs one side (for profiling one at a time).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let mut rates = Vec::new();
    if only != "ingest" {
        let report = closed_loop(bare_addr, connections, duration, "bare").await;
        println!("{}", report.line("bare axum 200 OK"));
        rates.push(report.rate());
    }
    if only != "bare" {
        let report = closed_loop(ingest_addr, connections, duration, "ingest").await;
        println!("{}", report.line("tracklayer ingest (durable)"));
        rates.push(report.rate());
    }
    if let [bare, ingest] = rates[..] {
        println!("ratio ingest / bare: {:.2}", ingest / bare.max(1.0));
    }
    (only != "bare").then(|| rates.last().copied()).flatten()
}

/// The same load on PostgreSQL: one node, then two nodes sharing one database.
async fn postgres_loads(admin: &str, sqlite_rate: f64, connections: usize, duration: Duration) {
    let dir = tempfile::tempdir().unwrap();
    // BENCH_PG_RUNS: nodes×writers per node, e.g. "1x1,1x2,2x1,2x2".
    let runs: Vec<(usize, usize)> = std::env::var("BENCH_PG_RUNS")
        .unwrap_or_else(|_| "1x1,1x2,2x1,2x2".into())
        .split(',')
        .filter_map(|run| {
            let (n, w) = run.split_once('x')?;
            Some((n.trim().parse().ok()?, w.trim().parse().ok()?))
        })
        .collect();
    for (nodes, writers) in runs {
        let url = create_pg_database(
            admin,
            &format!("tl_bench_{nodes}x{writers}_{}", std::process::id()),
        );
        let mut running = Vec::new();
        for _ in 0..nodes {
            running.push(Node::start(pg_node_config_with(dir.path(), &url, "", writers)).await);
        }
        let statements_before = statement_count(&url);
        let cpu_before = (server_cpu_ms(), own_cpu_ms());
        let loads: Vec<_> = running
            .iter()
            .zip(["pg-node-0", "pg-node-1", "pg-node-2", "pg-node-3"])
            // Each node its own messageIds: a shared one would be a cheap duplicate.
            .map(|(node, label)| {
                tokio::spawn(closed_loop(node.addr, connections / nodes, duration, label))
            })
            .collect();
        let mut reports: Vec<Report> = Vec::new();
        for load in loads {
            reports.push(load.await.unwrap());
        }
        let report = merged(reports);
        let messages = report.ok.max(1) as f64;
        let statements = match (statements_before, statement_count(&url)) {
            (Some(before), Some(after)) => {
                format!(
                    "{:.2} statements/message",
                    (after - before) as f64 / messages
                )
            }
            _ => "statements: n/a (preload pg_stat_statements)".into(),
        };
        let server_us = (server_cpu_ms() - cpu_before.0) as f64 * 1000.0 / messages;
        let own_us = (own_cpu_ms() - cpu_before.1) as f64 * 1000.0 / messages;
        println!(
            "{}   = {:.2}× SQLite   {statements}, CPU/message: server {server_us:.0} µs, node(s) + load generator {own_us:.0} µs",
            report.line(&format!("PostgreSQL, {nodes} node(s) × {writers} writer(s)")),
            report.rate() / sqlite_rate.max(1.0)
        );
        for node in running {
            node.stop().await;
        }
    }
}

/// Statements the server has run in `url`'s database (pg_stat_statements), if it tracks them.
fn statement_count(url: &str) -> Option<i64> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).ok()?;
        c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .ok()?;
        c.query_one(
            "SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .ok()
        .map(|r| r.get(0))
    })
    .join()
    .ok()
    .flatten()
}

/// CPU milliseconds (user + system) of the processes named `postgres` on this machine.
fn server_cpu_ms() -> i64 {
    let tick_ms = 1000 / 100; // USER_HZ
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter(|stat| stat.contains("(postgres)"))
        .filter_map(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<i64>().ok()? + fields.get(12)?.parse::<i64>().ok()?)
        })
        .sum::<i64>()
        * tick_ms
}

/// CPU milliseconds (user + system) of this process.
fn own_cpu_ms() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let ms = |t: libc::timeval| t.tv_sec * 1000 + t.tv_usec / 1000;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}
