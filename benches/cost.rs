//! What TrackLayer's own bookkeeping costs, measured as an operator would: `tracklayer serve` in
//! its own process, loaded by wrk on `/v1/track` (unique messageIds, `Product Added`, ~600 B)
//! against the sandbox's stand-ins (in this process, so their CPU is not TrackLayer's).
//!
//! For each destination set it reports TrackLayer's CPU time (utime + stime of its process, from
//! /proc) from the start of the load until every delivery is out, per message; the attempt rows
//! per delivery; how long the queues took to drain after the load stopped; and, once the node
//! has stopped (its WAL folded in), the bytes of the store per message, table by table, against
//! the raw message's.
//!
//! `cargo bench --bench cost` (needs wrk: tests/prepare.sh installs it). Settings:
//! BENCH_COST_SETS (default "none,meta,ga4,klaviyo,all"), BENCH_COST_SECS (10),
//! BENCH_COST_CONNECTIONS (32), BENCH_COST_IDENTIFY_EVERY (0: tracks only; N: every Nth call
//! is an identify, which Klaviyo takes as a profile), BENCH_COST_PERF (a directory: profile the
//! node with `perf record` into it), BENCH_COST_BEFORE (another build's `tracklayer` binary,
//! e.g. of the last release: each set runs on it too, right before this build, so before and
//! after are measured in one run on the same machine state), BENCH_COST_POSTGRES=1 (instead:
//! one SQLite node against one PostgreSQL node, a batching webhook each, the server at
//! TRACKLAYER_TEST_POSTGRES_URL).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracklayer::store::StoreReader;

const SECRET: &str = "bench-secret-0123456789abcdef";
const WRITE_KEY: &str = "wk_bench_0123456789";
const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The destinations of a set, as config TOML, and their names.
fn destinations(set: &str, url: &str) -> (String, Vec<&'static str>) {
    let meta = format!(
        "[[destinations]]\nname = \"meta\"\nkind = \"meta_capi\"\nendpoint = \"{url}\"\npixel_id = \"1234567890\"\naccess_token = \"EAAB_BENCH\"\n"
    );
    let ga4 = format!(
        "[[destinations]]\nname = \"ga4\"\nkind = \"ga4\"\nendpoint = \"{url}\"\nmeasurement_id = \"G-BENCH12345\"\napi_secret = \"ga4-bench-secret\"\n"
    );
    let klaviyo = format!(
        "[[destinations]]\nname = \"klaviyo\"\nkind = \"klaviyo\"\nendpoint = \"{url}\"\napi_key = \"pk_BENCH_0123456789\"\n"
    );
    let tiktok = format!(
        "[[destinations]]\nname = \"tiktok\"\nkind = \"tiktok\"\nendpoint = \"{url}\"\npixel_code = \"CABCDEF1234567890XYZ\"\naccess_token = \"TT_BENCH\"\n"
    );
    let webhook = format!(
        "[[destinations]]\nname = \"webhook\"\nkind = \"webhook\"\nurl = \"{url}/webhooks/bench\"\nsecret = \"{WEBHOOK_SECRET}\"\nbatch_size = 100\n"
    );
    match set {
        "none" => (String::new(), vec![]),
        "meta" => (meta, vec!["meta"]),
        "ga4" => (ga4, vec!["ga4"]),
        "klaviyo" => (klaviyo, vec!["klaviyo"]),
        "tiktok" => (tiktok, vec!["tiktok"]),
        "webhook" => (webhook, vec!["webhook"]),
        "all" => (
            [meta, ga4, klaviyo, tiktok, webhook].concat(),
            vec!["meta", "ga4", "klaviyo", "tiktok", "webhook"],
        ),
        other => panic!("unknown destination set {other}"),
    }
}

/// The wrk script: each call a new messageId and a new person (one GA4 client each), dated now.
fn script(identify_every: u64) -> String {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"));
    format!(
        r#"
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Basic {auth}"
local n = 0
local every = {identify_every}
request = function()
  n = n + 1
  local id = string.format("c%d-%d-%d", os.time(), tid, n)
  local now = os.date("!%Y-%m-%dT%H:%M:%SZ")
  local user = string.format("u%d-%d", tid, n)
  if every > 0 and n % every == 0 then
    local body = string.format('{{"messageId":"%s","userId":"%s","anonymousId":"a-%s","timestamp":"%s","context":{{"ip":"67.160.210.48"}},"traits":{{"email":"%s@example.com","phone":"+31612%06d","first_name":"Bench","plan":"team"}}}}', id, user, user, now, user, n % 1000000)
    return wrk.format(nil, "/v1/identify", nil, body)
  end
  local body = string.format('{{"event":"Product Added","messageId":"%s","userId":"%s","anonymousId":"a-%s","timestamp":"%s","context":{{"ip":"67.160.210.48","userAgent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15","page":{{"url":"https://shop.example.com/p/481"}},"traits":{{"email":"%s@example.com"}}}},"properties":{{"product_id":"SKU-481","sku":"SKU-481","name":"Monopoly: 3rd Edition","category":"Games","price":18.99,"quantity":1,"currency":"EUR","value":18.99}}}}', id, user, user, now, user)
  return wrk.format(nil, "/v1/track", nil, body)
end
"#
    )
}

/// utime + stime of a process (or one of its threads), in microseconds, and its name.
fn cpu_of(stat_path: &Path) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let name = stat[stat.find('(')? + 1..stat.rfind(')')?].to_string();
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Some((name, ticks * 1_000_000 / hz))
}

fn cpu_us(pid: u32) -> u64 {
    cpu_of(Path::new(&format!("/proc/{pid}/stat")))
        .expect("/proc/PID/stat")
        .1
}

/// CPU per kind of thread (the writer, delivery, the ingest runtime…), summed by name.
fn cpu_by_thread(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut by = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Some((name, us)) = cpu_of(&task.path().join("stat")) {
            *by.entry(name).or_default() += us;
        }
    }
    by
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_node(binary: &Path, dir: &Path, port: u16, destinations: &str) -> Child {
    start_node_on(binary, dir, port, destinations, None)
}

/// A node on `dir`'s SQLite file, or on the PostgreSQL database at `postgres`.
fn start_node_on(
    binary: &Path,
    dir: &Path,
    port: u16,
    destinations: &str,
    postgres: Option<&str>,
) -> Child {
    let config = dir.join("cost.toml");
    let url = postgres.map_or(String::new(), |url| format!("url = \"{url}\"\n"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nqueue_capacity = 8192\n[storage]\n{url}path = \"{}\"\n[workspace]\naccount = \"acct_bench\"\ndefault_country = \"NL\"\n[[environments]]\nname = \"production\"\nsecret = \"{SECRET}\"\nwrite_key = \"{WRITE_KEY}\"\n{destinations}",
            dir.join("cost.db").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child = Command::new(binary)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("tracklayer serve");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "node did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

struct Row {
    set: String,
    messages: i64,
    cpu_us_per_message: f64,
    attempts_per_delivery: Option<f64>,
    drained_after: Option<Duration>,
    store_per_message: i64,
    store_after_window: Option<i64>,
    raw_per_message: i64,
    tables: Vec<(String, i64)>,
    threads: Vec<(String, u64)>,
}

fn measure(
    binary: &Path,
    set: &str,
    url: &str,
    secs: u64,
    connections: u64,
    identify_every: u64,
) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let (config, names) = destinations(set, url);
    let port = free_port();
    let mut node = start_node(binary, dir.path(), port, &config);
    let script_path = dir.path().join("load.lua");
    std::fs::File::create(&script_path)
        .unwrap()
        .write_all(script(identify_every).as_bytes())
        .unwrap();
    // BENCH_COST_PERF=DIR: a `perf record` of the node for the whole measurement, into
    // DIR/perf-<set>.data (`perf report -i …`).
    let perf = std::env::var("BENCH_COST_PERF").ok().map(|out| {
        Command::new("perf")
            .args(["record", "-F", "199", "--call-graph", "dwarf,16384", "-p"])
            .arg(node.id().to_string())
            .arg("-o")
            .arg(Path::new(&out).join(format!("perf-{set}.data")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf is installed (tests/prepare.sh installs it)")
    });
    let cpu_before = cpu_us(node.id());
    let threads_before = cpu_by_thread(node.id());
    let wrk = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "-s",
        ])
        .arg(&script_path)
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .expect("wrk is installed (tests/prepare.sh installs it)");
    assert!(
        wrk.status.success(),
        "{}",
        String::from_utf8_lossy(&wrk.stderr)
    );
    let load_ended = Instant::now();
    let reader = StoreReader::open(&dir.path().join("cost.db")).unwrap();
    let waiting = |reader: &StoreReader| -> i64 {
        names
            .iter()
            .map(|d| {
                let q = reader.queue_counts(d).unwrap();
                q.pending + q.in_flight
            })
            .sum()
    };
    let mut drained_after = None;
    while load_ended.elapsed() < Duration::from_secs(600) {
        if waiting(&reader) == 0 {
            drained_after = Some(load_ended.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu_after = cpu_us(node.id());
    let threads: Vec<(String, u64)> = cpu_by_thread(node.id())
        .into_iter()
        .map(|(name, us)| {
            let before = threads_before.get(&name).copied().unwrap_or(0);
            (name, us.saturating_sub(before))
        })
        .filter(|(_, us)| *us > 0)
        .collect();
    if let Some(mut perf) = perf {
        unsafe {
            libc::kill(perf.id() as i32, libc::SIGINT);
        }
        let _ = perf.wait();
    }
    let (accepted, duplicates, invalid) = reader.message_counts().unwrap();
    let messages = accepted + duplicates + invalid;
    let deliveries: i64 = reader
        .delivery_counts()
        .unwrap()
        .iter()
        .map(|(_, _, n)| n)
        .sum();
    let attempts = reader.last_attempt_row().unwrap();
    drop(reader);
    unsafe {
        libc::kill(node.id() as i32, libc::SIGTERM);
    }
    node.wait().unwrap();
    let reader = StoreReader::open(&dir.path().join("cost.db")).unwrap();
    let tables = reader.storage_by_table().unwrap();
    let stored: i64 = tables.iter().map(|(_, b)| b).sum();
    let (_, raw_bytes) = reader.raw_bytes().unwrap();
    drop(reader);
    // The same store once successful requests' bodies are past their window (as every request
    // older than `request_body_retention_days` is), compacted.
    // (Only for this build: opening another build's store for writing would migrate it.)
    let after_window = (binary == Path::new(env!("CARGO_BIN_EXE_tracklayer"))).then(|| {
        let conn = tracklayer::store::open_for_writing(&dir.path().join("cost.db")).unwrap();
        while tracklayer::store::retention::clear_request_bodies(&conn, i64::MAX).unwrap() > 0 {}
        conn.execute_batch("VACUUM").unwrap();
        drop(conn);
        let reader = StoreReader::open(&dir.path().join("cost.db")).unwrap();
        reader
            .storage_by_table()
            .unwrap()
            .iter()
            .map(|(_, b)| b)
            .sum::<i64>()
    });
    let per = |n: i64| n / messages.max(1);
    Row {
        set: set.to_string(),
        messages,
        cpu_us_per_message: (cpu_after - cpu_before) as f64 / messages.max(1) as f64,
        attempts_per_delivery: (deliveries > 0).then(|| attempts as f64 / deliveries as f64),
        drained_after,
        store_per_message: per(stored),
        store_after_window: after_window.map(per),
        raw_per_message: per(raw_bytes),
        tables: tables.into_iter().map(|(t, b)| (t, per(b))).collect(),
        threads,
    }
}

/// CPU of every PostgreSQL server process (the postmaster and its backends), in microseconds.
fn postgres_cpu_us() -> u64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| cpu_of(&entry.path().join("stat")))
        .filter(|(name, _)| name.starts_with("postgres"))
        .map(|(_, us)| us)
        .sum()
}

/// One node on SQLite against one on PostgreSQL (a fresh database on the server at `admin`),
/// each loaded by wrk on /v1/track with a batching webhook: messages a second, and CPU per
/// message counting PostgreSQL's own (it shares the cores).
fn sqlite_against_postgres(admin: &str, url: &str, secs: u64, connections: u64) {
    let hook = format!(
        "[[destinations]]\nname = \"webhook\"\nkind = \"webhook\"\nurl = \"{url}/webhooks/bench\"\nsecret = \"{WEBHOOK_SECRET}\"\nbatch_size = 100\n"
    );
    let mut rates = Vec::new();
    for store in ["sqlite", "postgres"] {
        let dir = tempfile::tempdir().unwrap();
        let database = (store == "postgres").then(|| {
            let mut c = postgres::Client::connect(admin, postgres::NoTls).expect("PostgreSQL");
            let name = format!("tl_cost_{}", std::process::id());
            c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .unwrap();
            c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
            let mut u = url::Url::parse(admin).unwrap();
            u.set_path(&format!("/{name}"));
            u.to_string()
        });
        let port = free_port();
        let mut node = start_node_on(
            Path::new(env!("CARGO_BIN_EXE_tracklayer")),
            dir.path(),
            port,
            &hook,
            database.as_deref(),
        );
        let location = match &database {
            Some(url) => tracklayer::store::StoreLocation::Postgres(url.clone()),
            None => tracklayer::store::StoreLocation::Sqlite(dir.path().join("cost.db")),
        };
        // Ready once the store answers.
        let mut reader = loop {
            if let Ok(reader) = location.open() {
                break reader;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let script_path = dir.path().join("load.lua");
        std::fs::write(&script_path, script(0)).unwrap();
        let (cpu_before, pg_before) = (cpu_us(node.id()), postgres_cpu_us());
        let started = Instant::now();
        let wrk = Command::new("wrk")
            .args([
                "-t2",
                &format!("-c{connections}"),
                &format!("-d{secs}s"),
                "-s",
            ])
            .arg(&script_path)
            .arg(format!("http://127.0.0.1:{port}"))
            .output()
            .expect("wrk is installed (tests/prepare.sh installs it)");
        assert!(wrk.status.success());
        while reader
            .queue_counts("webhook")
            .map(|q| q.pending + q.in_flight)
            .unwrap_or(1)
            > 0
            && started.elapsed() < Duration::from_secs(secs + 120)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let (cpu, pg) = (
            cpu_us(node.id()) - cpu_before,
            postgres_cpu_us().saturating_sub(pg_before),
        );
        let (messages, _) = reader.totals().unwrap();
        drop(reader);
        unsafe {
            libc::kill(node.id() as i32, libc::SIGTERM);
        }
        node.wait().unwrap();
        let rate = messages as f64 / secs as f64;
        println!(
            "{store:<9} {rate:>8.0} msg/s   TrackLayer {:.0} µs/message{}",
            cpu as f64 / messages.max(1) as f64,
            if store == "postgres" {
                format!(
                    ", PostgreSQL {:.0} µs/message",
                    pg as f64 / messages.max(1) as f64
                )
            } else {
                String::new()
            }
        );
        rates.push(rate);
    }
    println!(
        "one PostgreSQL node: {:.2}x one SQLite node",
        rates[1] / rates[0].max(1.0)
    );
}

fn main() {
    let sets =
        std::env::var("BENCH_COST_SETS").unwrap_or_else(|_| "none,meta,ga4,klaviyo,all".into());
    let secs = env_or("BENCH_COST_SECS", 10);
    let connections = env_or("BENCH_COST_CONNECTIONS", 32);
    let identify_every = env_or("BENCH_COST_IDENTIFY_EVERY", 0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sandbox")
        .on_thread_start(tracklayer::delivery::yield_to_ingest)
        .enable_all()
        .build()
        .unwrap();
    let sandbox = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        tracklayer::sandbox::Sandbox::start(listener).await.unwrap()
    });
    sandbox.state.webhook_key(
        "bench",
        tracklayer::destinations::webhook::decode_secret(WEBHOOK_SECRET).unwrap(),
    );
    // BENCH_COST_POSTGRES=1: one SQLite node against one PostgreSQL node, and nothing else.
    if std::env::var("BENCH_COST_POSTGRES").as_deref() == Ok("1") {
        let admin = std::env::var("TRACKLAYER_TEST_POSTGRES_URL")
            .expect("TRACKLAYER_TEST_POSTGRES_URL (eval \"$(tests/prepare.sh)\")");
        sqlite_against_postgres(&admin, &sandbox.url(), secs, connections);
        return;
    }
    println!(
        "wrk -t2 -c{connections} -d{secs}s on /v1/track{}; tracklayer serve in its own process",
        if identify_every > 0 {
            format!(" (every {identify_every}th call an identify)")
        } else {
            String::new()
        }
    );
    println!(
        "{:<8} {:>8} {:>12} {:>16} {:>10} {:>14}",
        "set", "messages", "CPU/message", "attempts/deliv.", "drained", "store/message"
    );
    let this = std::path::PathBuf::from(env!("CARGO_BIN_EXE_tracklayer"));
    let mut builds = Vec::new();
    if let Ok(before) = std::env::var("BENCH_COST_BEFORE") {
        builds.push(("before", std::path::PathBuf::from(before)));
    }
    builds.push(("", this));
    for set in sets.split(',').map(str::trim) {
        for (build, binary) in &builds {
            let row = measure(
                binary,
                set,
                &sandbox.url(),
                secs,
                connections,
                identify_every,
            );
            let label = if build.is_empty() {
                row.set.clone()
            } else {
                format!("{} ({build})", row.set)
            };
            println!(
                "{:<8} {:>8} {:>9.0} µs {:>16} {:>10} {:>7} B ({:.1}x the {} B raw{})",
                label,
                row.messages,
                row.cpu_us_per_message,
                row.attempts_per_delivery
                    .map_or("—".into(), |a| format!("{a:.2}")),
                row.drained_after
                    .map_or("NOT".into(), |d| format!("{:.1} s", d.as_secs_f64())),
                row.store_per_message,
                row.store_per_message as f64 / row.raw_per_message.max(1) as f64,
                row.raw_per_message,
                row.store_after_window
                    .map_or(String::new(), |after| format!(
                        "; {after} B, {:.1}x, once request bodies are past their window",
                        after as f64 / row.raw_per_message.max(1) as f64
                    )),
            );
            let threads: Vec<String> = row
                .threads
                .iter()
                .map(|(name, us)| format!("{name} {:.0}", *us as f64 / row.messages.max(1) as f64))
                .collect();
            println!(
                "           CPU µs/message by thread: {}",
                threads.join(", ")
            );
            for (table, bytes) in row.tables.iter().filter(|(_, b)| *b >= 20) {
                println!("           {table:<24} {bytes:>6} B/message");
            }
        }
    }
}
