//! A real TrackLayer on a loopback port with a real database file, for integration tests.
#![allow(dead_code)]

pub mod bulk;
pub mod postgres;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;
use tracklayer::config::Secret;
use tracklayer::destinations::Setup;
use tracklayer::ingest::auth;

pub const ACCOUNT: &str = "acct_live_123";
pub const PRODUCTION_SECRET: &str = "prod-secret-0123456789abcdef";
pub const PREVIOUS_SECRET: &str = "old-prod-secret-0123456789";
pub const STAGING_SECRET: &str = "tl_test_secret";
pub const WRITE_KEY: &str = "wk_production_0123456789";

pub struct TestServer {
    pub addr: SocketAddr,
    pub db: PathBuf,
    pub setup: Setup,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database of a server started on one (dropped with the server).
    pg: Option<postgres::TestDatabase>,
}

/// Where a test server stores what it receives: tests that hold for both run on both.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Store {
    Sqlite,
    Postgres,
}

/// `async fn name(store: Store)` as two tests, one per store (the PostgreSQL one fails without
/// a server, see `common::postgres`).
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::common::Store::Sqlite).await })*
        }
        mod on_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if super::common::postgres::server_url().is_some() {
                    super::$name(super::common::Store::Postgres).await
                }
            })*
        }
    };
}

/// Config text pointed at the PostgreSQL database at `url` instead of its SQLite file.
fn on_postgres(text: &str, url: &str) -> String {
    text.replacen("[storage]\n", &format!("[storage]\nurl = \"{url}\"\n"), 1)
}

pub fn config_text(db: &Path, extra_server: &str) -> String {
    config_text_with(db, extra_server, "")
}

/// Config text with `extra` TOML appended (mapping, destinations).
pub fn config_text_with(db: &Path, extra_server: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{extra_server}

[storage]
path = "{db}"

[workspace]
account = "{ACCOUNT}"

[[environments]]
name = "production"
secret = "{PRODUCTION_SECRET}"
previous_secret = "{PREVIOUS_SECRET}"
write_key = "{WRITE_KEY}"

[[environments]]
name = "staging"
secret = "{STAGING_SECRET}"

{extra}
"#,
        db = db.display()
    )
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with("").await
    }

    /// `extra_server` is appended to the `[server]` table (e.g. `max_body_bytes = 2048`).
    pub async fn start_with(extra_server: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tracklayer.db");
        let mut server = Self::start_on(&db, extra_server).await;
        server._dir = Some(dir);
        server
    }

    pub async fn start_on(db: &Path, extra_server: &str) -> TestServer {
        Self::start_configured(db, extra_server, "").await
    }

    /// A server in a fresh folder with `extra` TOML (mapping, destinations) in its config.
    pub async fn start_with_toml(extra: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tracklayer.db");
        let mut server = Self::start_configured(&db, "", extra).await;
        server._dir = Some(dir);
        server
    }

    /// A server on `store` (a fresh database either way) with `extra` TOML in its config.
    pub async fn start_for(store: Store, extra: &str) -> TestServer {
        match store {
            Store::Sqlite => Self::start_with_toml(extra).await,
            Store::Postgres => {
                let db = postgres::TestDatabase::create().expect("a PostgreSQL server");
                let mut server = Self::start_on_postgres(&db.url, extra).await;
                server.pg = Some(db);
                server
            }
        }
    }

    /// A server on `store` with exactly this config text (its `[storage]` pointed at a fresh
    /// PostgreSQL database on that store).
    pub async fn start_text_for(store: Store, db: &Path, text: &str) -> TestServer {
        match store {
            Store::Sqlite => Self::start_text(db, text).await,
            Store::Postgres => {
                let pg = postgres::TestDatabase::create().expect("a PostgreSQL server");
                let text = on_postgres(text, &pg.url);
                let mut server = Self::start_text(db, &text).await;
                server.pg = Some(pg);
                server
            }
        }
    }

    /// A server on `store` with `extra_server` in its `[server]` table.
    pub async fn start_for_with(store: Store, extra_server: &str) -> TestServer {
        match store {
            Store::Sqlite => Self::start_with(extra_server).await,
            Store::Postgres => {
                let db = postgres::TestDatabase::create().expect("a PostgreSQL server");
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("tracklayer.db");
                let text = on_postgres(&config_text_with(&path, extra_server, ""), &db.url);
                let mut server = Self::start_text(&path, &text).await;
                server._dir = Some(dir);
                server.pg = Some(db);
                server
            }
        }
    }

    /// Where this server stores: its SQLite file, and the PostgreSQL URL when it has one.
    fn location(&self) -> tracklayer::store::StoreLocation {
        tracklayer::store::StoreLocation::of(&self.setup.config.storage)
    }

    /// Open a replay window for `environment` (`tracklayer allow-replay`) in whichever store.
    pub async fn allow_replay(&self, environment: &str) {
        let (location, environment) = (self.location(), environment.to_string());
        let now = chrono::Utc::now().timestamp_millis();
        let (starts, ends) = (now - 1000, now + 60_000);
        tokio::task::spawn_blocking(move || {
            location
                .open_replay_window(&environment, starts, ends, "test")
                .unwrap();
        })
        .await
        .unwrap()
    }

    /// The trace of one message (from whichever store).
    pub async fn trace(&self, id: &str) -> Option<tracklayer::store::MessageTrace> {
        self.traces(vec![id.to_string()])
            .await
            .pop()
            .and_then(|(_, t)| t)
    }

    /// Put a destination's deliveries in `status` back in line (`tracklayer replay`).
    pub async fn requeue(&self, destination: &str, status: &str) -> usize {
        let (location, destination, status) =
            (self.location(), destination.to_string(), status.to_string());
        tokio::task::spawn_blocking(move || location.requeue(&destination, &status, 0).unwrap())
            .await
            .unwrap()
    }

    /// Whether a destination paused itself (from whichever store).
    pub async fn destination_pause(
        &self,
        destination: &str,
    ) -> Option<tracklayer::store::DestinationPause> {
        self.store_reader().destination_pause(destination).unwrap()
    }

    /// A server whose store is the PostgreSQL database at `url` (a fleet of one), with `extra`
    /// TOML in its config.
    pub async fn start_on_postgres(url: &str, extra: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tracklayer.db");
        let text = on_postgres(&config_text_with(&db, "", extra), url);
        let mut server = Self::start_text(&db, &text).await;
        server._dir = Some(dir);
        server
    }

    /// What `inspect` reads, from whichever store this server writes. Opened on a blocking
    /// thread: the PostgreSQL client must not run on an async task's thread.
    pub async fn traces(
        &self,
        ids: Vec<String>,
    ) -> Vec<(String, Option<tracklayer::store::MessageTrace>)> {
        let reader = self.store_reader();
        ids.into_iter()
            .map(|id| {
                let trace = reader.trace(&id).unwrap();
                (id, trace)
            })
            .collect()
    }

    pub async fn start_configured(db: &Path, extra_server: &str, extra: &str) -> TestServer {
        Self::start_text(db, &config_text_with(db, extra_server, extra)).await
    }

    /// A server with exactly this config text.
    pub async fn start_text(db: &Path, text: &str) -> TestServer {
        let text = text.to_string();
        // Relative paths in the config (a warehouse file) land next to the database.
        let config_path = db.parent().unwrap().join("tracklayer.toml");
        let setup = Setup::parse(&text, &config_path, &|_| None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let run_setup = setup.clone();
        let task = tokio::spawn(async move {
            tracklayer::run(run_setup, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            addr,
            db: db.to_path_buf(),
            setup,
            shutdown: Some(tx),
            task: Some(task),
            _dir: None,
            pg: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POST `body` to /segment/events signed for `environment` with `secret`: status and reply.
    pub async fn post(
        &self,
        environment: &str,
        secret: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let request = signed(
            &client(),
            &self.url("/segment/events"),
            environment,
            secret,
            body,
        );
        json_of(request.send().await.unwrap()).await
    }

    pub fn reader(&self) -> tracklayer::store::StoreReader {
        tracklayer::store::StoreReader::open(&self.db).unwrap()
    }

    /// Stop gracefully and wait until queued writes are committed. The database stays readable.
    pub async fn stop(mut self) -> Stopped {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        Stopped {
            db: self.db.clone(),
            _dir: self._dir.take(),
            _pg: self.pg.take(),
        }
    }
}

pub struct Stopped {
    pub db: PathBuf,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<postgres::TestDatabase>,
}

impl Stopped {
    pub fn reader(&self) -> tracklayer::store::StoreReader {
        tracklayer::store::StoreReader::open(&self.db).unwrap()
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

pub fn track(message_id: &str, event: &str) -> String {
    format!(
        r#"{{"type":"track","event":"{event}","messageId":"{message_id}","userId":"cust_34982","anonymousId":"anon_8dca","properties":{{"order_id":"ORD-10492","revenue":129.95,"currency":"EUR"}},"timestamp":"2026-04-23T10:15:30Z"}}"#
    )
}

/// A request signed with TrackLayer's scheme for `environment` with `secret`.
pub fn signed(
    client: &reqwest::Client,
    url: &str,
    environment: &str,
    secret: &str,
    body: &str,
) -> reqwest::RequestBuilder {
    let timestamp = chrono::Utc::now().timestamp().to_string();
    signed_at(client, url, environment, secret, body, &timestamp)
}

pub fn signed_at(
    client: &reqwest::Client,
    url: &str,
    environment: &str,
    secret: &str,
    body: &str,
    timestamp: &str,
) -> reqwest::RequestBuilder {
    let signature = auth::sign_tracklayer(&Secret::new(secret), timestamp, body.as_bytes());
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-tracklayer-account", ACCOUNT)
        .header("x-tracklayer-environment", environment)
        .header("x-tracklayer-timestamp", timestamp)
        .header("x-tracklayer-signature", signature)
        .body(body.to_string())
}

pub async fn json_of(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, value)
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .init();
        captured
    })
}

/// Capture everything TrackLayer logs in this test binary (at debug level and up). Test files
/// that call it should hold only tests that read the log.
pub fn capture_log() {
    captured();
}

pub fn logged() -> String {
    String::from_utf8_lossy(&captured().0.lock().unwrap()).into_owned()
}

/// Start `tracklayer serve` and return the child and the address it printed.
pub fn start_serve(config: &std::path::Path) -> (std::process::Child, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tracklayer"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .env("TRACKLAYER_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tracklayer");
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let addr = loop {
        let line = lines
            .next()
            .expect("tracklayer exited before listening")
            .unwrap();
        if let Some(rest) = line.strip_prefix("TrackLayer listening on http://") {
            break rest.trim_end_matches("/segment/events").to_string();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// What a test reads back, from either store, with the same calls. The PostgreSQL client runs
/// each call on a thread of its own, so tests call it from async code as they call SQLite.
pub enum Reader {
    Sqlite(tracklayer::store::StoreReader),
    /// An Option so the client can be dropped on a thread of its own (its drop blocks).
    Postgres(Mutex<Option<tracklayer::store::postgres::reader::PgReader>>),
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Reader::Postgres(reader) = self {
            if let Some(client) = reader.get_mut().unwrap().take() {
                let _ = std::thread::spawn(move || drop(client)).join();
            }
        }
    }
}

type Read<T> = Result<T, tracklayer::store::StoreError>;

impl Reader {
    fn open(db: &Path, url: Option<&str>) -> Reader {
        match url {
            None => Reader::Sqlite(tracklayer::store::StoreReader::open(db).unwrap()),
            Some(url) => {
                let url = url.to_string();
                let reader = std::thread::spawn(move || {
                    tracklayer::store::postgres::reader::PgReader::open(&url).unwrap()
                })
                .join()
                .unwrap();
                Reader::Postgres(Mutex::new(Some(reader)))
            }
        }
    }

    fn pg<T: Send>(
        reader: &Mutex<Option<tracklayer::store::postgres::reader::PgReader>>,
        read: impl FnOnce(
                &mut tracklayer::store::postgres::reader::PgReader,
            ) -> Result<T, ::postgres::Error>
            + Send,
    ) -> Read<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut reader = reader.lock().unwrap();
                read(reader.as_mut().expect("an open reader")).map_err(Into::into)
            })
            .join()
            .unwrap()
        })
    }

    pub fn messages_by_message_id(&self, id: &str) -> Read<Vec<tracklayer::store::StoredMessage>> {
        match self {
            Reader::Sqlite(r) => r.messages_by_message_id(id),
            Reader::Postgres(r) => Self::pg(r, |r| r.messages_by_message_id(id)),
        }
    }

    pub fn request(&self, request_id: &str) -> Read<Option<tracklayer::store::StoredRequest>> {
        match self {
            Reader::Sqlite(r) => r.request(request_id),
            Reader::Postgres(r) => Self::pg(r, |r| r.request(request_id)),
        }
    }

    pub fn message_counts(&self) -> Read<(i64, i64, i64)> {
        match self {
            Reader::Sqlite(r) => r.message_counts(),
            Reader::Postgres(r) => Self::pg(r, |r| r.message_counts()),
        }
    }

    pub fn recent_rejections(&self, limit: usize) -> Read<Vec<tracklayer::store::StoredRejection>> {
        match self {
            Reader::Sqlite(r) => r.recent_rejections(limit),
            Reader::Postgres(r) => Self::pg(r, |r| r.recent_rejections(limit)),
        }
    }

    pub fn rejection_counts(&self, since_ms: i64) -> Read<Vec<tracklayer::store::RejectionTally>> {
        match self {
            Reader::Sqlite(r) => r.rejection_counts(since_ms),
            Reader::Postgres(r) => Self::pg(r, |r| r.rejection_counts(since_ms)),
        }
    }

    pub fn destination_pause(
        &self,
        destination: &str,
    ) -> Read<Option<tracklayer::store::DestinationPause>> {
        match self {
            Reader::Sqlite(r) => r.destination_pause(destination),
            Reader::Postgres(r) => Self::pg(r, |r| r.destination_pause(destination)),
        }
    }

    pub fn trace(&self, id: &str) -> Read<Option<tracklayer::store::MessageTrace>> {
        match self {
            Reader::Sqlite(r) => r.trace(id),
            Reader::Postgres(r) => Self::pg(r, |r| r.trace(id)),
        }
    }
}

impl TestServer {
    /// Where the dashboard reads this server's store.
    pub fn store_location(&self) -> tracklayer::store::StoreLocation {
        match &self.setup.config.storage.url {
            Some(url) => tracklayer::store::StoreLocation::Postgres(url.expose().to_string()),
            None => tracklayer::store::StoreLocation::Sqlite(self.db.clone()),
        }
    }

    /// What the dashboard's loader would load for `query`, from whichever store this server
    /// writes (on a plain thread, as the loader runs: the PostgreSQL client must not run on an
    /// async task's thread).
    pub fn dashboard(
        &self,
        query: &tracklayer::tui::Query,
        destinations: &[String],
        now_ms: i64,
    ) -> tracklayer::tui::Snapshot {
        let location = self.store_location();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut reader = location.open().unwrap();
                tracklayer::tui::app::load(reader.as_mut(), query, destinations, now_ms)
            })
            .join()
            .unwrap()
        })
    }

    /// One frame of the dashboard on `pane` at `width`x`height`, read from this server's
    /// store, as text.
    pub fn dashboard_text(&self, pane: tracklayer::tui::Pane, width: u16, height: u16) -> String {
        let (themes, _) = tracklayer::tui::theme::load_all(None);
        let mut app = tracklayer::tui::App::new(themes, None, "test".into());
        app.pane = pane;
        let snapshot = self.dashboard(&app.query(), &[], chrono::Utc::now().timestamp_millis());
        assert_eq!(snapshot.error, None);
        app.apply(snapshot);
        let backend = ratatui::backend::TestBackend::new(width, height);
        let mut terminal = ratatui::Terminal::new(backend).unwrap();
        terminal
            .draw(|f| tracklayer::tui::panes::draw(f, &app))
            .unwrap();
        terminal.backend().to_string()
    }

    /// A reader of whichever store this server writes (see `Reader`).
    pub fn store_reader(&self) -> Reader {
        let url = self.setup.config.storage.url.as_ref().map(|u| u.expose());
        Reader::open(&self.db, url)
    }
}

impl Stopped {
    /// A reader of whichever store the server wrote.
    pub fn store_reader(&self) -> Reader {
        Reader::open(&self.db, self._pg.as_ref().map(|db| db.url.as_str()))
    }
}
