//! The terminal dashboard. The UI thread only reads keys, applies snapshots and draws; a loader
//! thread runs every query (its own read connection to SQLite or the fleet's PostgreSQL) and
//! sends snapshots back. Redraws are
//! coalesced: at most one per input burst or new snapshot. The terminal is restored on every
//! exit path, including a panic.

pub mod app;
pub mod clipboard;
pub mod panes;
pub mod theme;

use std::io;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{
    self, DisableMouseCapture, EnableMouseCapture, Event, KeyEventKind,
};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::prelude::CrosstermBackend;
use ratatui::Terminal;

pub use app::{App, Pane, Query, Snapshot};

use crate::store::{DashboardReader, StoreLocation};

/// How often the visible pane is refreshed from the database.
const REFRESH: Duration = Duration::from_millis(500);
/// How often an attached dashboard looks for destinations it has not seen yet.
const DISCOVER_DESTINATIONS: Duration = Duration::from_secs(30);

/// Which destinations the dashboard lists.
#[derive(Debug, Clone)]
pub enum Destinations {
    /// The embedded pipeline's, from its config.
    Configured(Vec<String>),
    /// Attached to a store without its config: whatever the store has routed to.
    Discovered,
}

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("no terminal: {0} (the dashboard needs an interactive terminal; `tracklayer serve` runs headless)")]
    Terminal(io::Error),
    #[error("cannot read the database {path}: {source}")]
    Database {
        path: String,
        source: crate::store::StoreError,
    },
}

/// Runs queries for the UI on its own thread, newest request first.
pub struct Loader {
    requests: mpsc::Sender<Query>,
    pub snapshots: mpsc::Receiver<Snapshot>,
}

impl Loader {
    pub fn spawn(store: StoreLocation, destinations: Destinations) -> Loader {
        let (req_tx, req_rx) = mpsc::channel::<Query>();
        let (snap_tx, snap_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("tracklayer-tui-loader".into())
            .spawn(move || {
                let mut reader: Option<Box<dyn DashboardReader>> = None;
                let mut last_error = String::new();
                let mut last_action = 0u64;
                let (mut names, mut discovered_at) = match &destinations {
                    Destinations::Configured(names) => (names.clone(), None),
                    Destinations::Discovered => {
                        (Vec::new(), Some(Instant::now() - DISCOVER_DESTINATIONS))
                    }
                };
                while let Ok(mut query) = req_rx.recv() {
                    // Only the newest request matters.
                    while let Ok(newer) = req_rx.try_recv() {
                        query = newer;
                    }
                    if reader.is_none() {
                        match store.open() {
                            Ok(r) => reader = Some(r),
                            Err(e) => last_error = e.to_string(),
                        }
                    }
                    let done = app::act(&store, &query, &mut last_action);
                    let mut snapshot = match reader.as_mut() {
                        Some(r) => {
                            if let Some(at) =
                                discovered_at.filter(|at| at.elapsed() >= DISCOVER_DESTINATIONS)
                            {
                                let _ = at;
                                if let Ok(found) = r.destination_names() {
                                    names = found;
                                }
                                discovered_at = Some(Instant::now());
                            }
                            let snapshot = app::load(
                                r.as_mut(),
                                &query,
                                &names,
                                chrono::Utc::now().timestamp_millis(),
                            );
                            // A broken connection (PostgreSQL restarted) is opened afresh next time.
                            if snapshot.error.is_some() {
                                reader = None;
                            }
                            snapshot
                        }
                        None => Snapshot {
                            error: Some(format!(
                                "waiting for the database {}: {last_error}",
                                store.describe()
                            )),
                            ..Snapshot::default()
                        },
                    };
                    snapshot.action_done = done;
                    if snap_tx.send(snapshot).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn the loader thread");
        Loader {
            requests: req_tx,
            snapshots: snap_rx,
        }
    }

    pub fn request(&self, query: Query) {
        let _ = self.requests.send(query);
    }
}

/// Where the dashboard's test send posts: the embedded pipeline's own ingest.
#[derive(Clone)]
pub struct TestSendTarget {
    pub url: String,
    pub account: String,
    pub environment: String,
    pub secret: crate::config::Secret,
}

/// Posts test-send calls off the UI thread; answers arrive on `results`.
pub struct TestSender {
    requests: mpsc::Sender<(usize, serde_json::Value)>,
    results: mpsc::Receiver<(usize, crate::testsend::SendResult)>,
}

/// Below the shortest keep-alive a TrackLayer server allows (`server.header_timeout`, which also
/// closes idle connections; at least 1 s).
const IDLE_BELOW_SERVER_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_millis(900);

impl TestSender {
    /// Post `message` as call `index` of the run.
    pub fn send(&self, index: usize, message: serde_json::Value) {
        let _ = self.requests.send((index, message));
    }

    /// The next answer, if one came within `wait`.
    pub fn answer(
        &self,
        wait: std::time::Duration,
    ) -> Option<(usize, crate::testsend::SendResult)> {
        self.results.recv_timeout(wait).ok()
    }

    pub fn spawn(target: TestSendTarget) -> TestSender {
        let (req_tx, req_rx) = mpsc::channel::<(usize, serde_json::Value)>();
        let (res_tx, res_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("tracklayer-test-send".into())
            .spawn(move || {
                // A runtime that keeps running between sends: on a current-thread runtime only
                // driven while a request is in flight, the pooled connection never saw the
                // server close it when idle, and the next step after a pause longer than the
                // server's keep-alive failed with "cannot reach" (seen after ~16 s).
                let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                else {
                    return;
                };
                // And never offer a connection idle for longer than the server keeps one.
                let client = reqwest::Client::builder()
                    .pool_idle_timeout(IDLE_BELOW_SERVER_KEEP_ALIVE)
                    .build()
                    .unwrap_or_default();
                while let Ok((index, message)) = req_rx.recv() {
                    let body = serde_json::to_vec(&message).unwrap_or_default();
                    let timestamp = chrono::Utc::now().timestamp().to_string();
                    let signature = crate::ingest::auth::sign_tracklayer(&target.secret, &timestamp, &body);
                    let result = runtime.block_on(async {
                        let response = client
                            .post(&target.url)
                            .header("content-type", "application/json")
                            .header(crate::ingest::auth::HEADER_ACCOUNT, &target.account)
                            .header(crate::ingest::auth::HEADER_ENVIRONMENT, &target.environment)
                            .header(crate::ingest::auth::HEADER_TIMESTAMP, &timestamp)
                            .header(crate::ingest::auth::HEADER_SIGNATURE, signature)
                            .body(body)
                            .send()
                            .await;
                        match response {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let text = r.text().await.unwrap_or_default();
                                crate::testsend::SendResult {
                                    status,
                                    reply: serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
                                }
                            }
                            Err(e) => crate::testsend::SendResult {
                                status: 0,
                                reply: serde_json::json!({"message": format!("cannot reach {}: {e}", target.url)}),
                            },
                        }
                    });
                    if res_tx.send((index, result)).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn the test-send thread");
        TestSender {
            requests: req_tx,
            results: res_rx,
        }
    }
}

fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), DisableMouseCapture, LeaveAlternateScreen);
}

/// What a dashboard with the pipeline inside it can do besides reading: send the controlled
/// test, preview and activate mapping drafts.
pub struct Embedded {
    pub test: TestSendTarget,
    pub drafts: crate::preview::PreviewContext,
}

/// What the drafts thread answers: a preview (and what it wrote first, if it started a new
/// draft), or an activation.
enum DraftAnswer {
    Report(
        Result<crate::stage::preview::PreviewReport, String>,
        Option<String>,
    ),
    Activated(Result<String, String>),
}

/// What the drafts thread is asked.
enum DraftRequest {
    Preview {
        path: std::path::PathBuf,
        adding: Option<(String, Option<String>)>,
    },
    Activate {
        path: std::path::PathBuf,
        who: String,
    },
}

/// Previews and activations off the UI thread (a preview reads every stored message of the
/// window; the store's client is synchronous).
struct Drafts {
    requests: mpsc::Sender<DraftRequest>,
    answers: mpsc::Receiver<DraftAnswer>,
}

/// How far back the dashboard's preview replays.
const PREVIEW_WINDOW_MS: i64 = 7 * 86_400_000;

impl Drafts {
    fn spawn(context: crate::preview::PreviewContext) -> Drafts {
        let (req_tx, req_rx) = mpsc::channel::<DraftRequest>();
        let (ans_tx, ans_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("tracklayer-drafts".into())
            .spawn(move || {
                while let Ok(request) = req_rx.recv() {
                    let answer = match request {
                        DraftRequest::Activate { path, who } => DraftAnswer::Activated(
                            context.activate(&path, &who).map_err(|e| e.to_string()),
                        ),
                        DraftRequest::Preview { path, adding } => {
                            let since = chrono::Utc::now().timestamp_millis() - PREVIEW_WINDOW_MS;
                            let adding = adding
                                .as_ref()
                                .map(|(segment, like)| (segment.as_str(), like.as_deref()));
                            match context.start_draft(&path, adding) {
                                Err(e) => DraftAnswer::Report(Err(e.to_string()), None),
                                Ok(wrote) => DraftAnswer::Report(
                                    context
                                        .preview(&path, since, "7d", None)
                                        .map_err(|e| e.to_string()),
                                    wrote,
                                ),
                            }
                        }
                    };
                    if ans_tx.send(answer).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn the drafts thread");
        Drafts {
            requests: req_tx,
            answers: ans_rx,
        }
    }
}

/// Run the dashboard over `store` until the user quits.
pub fn run(
    store: StoreLocation,
    destinations: Destinations,
    mut app: App,
    embedded: Option<Embedded>,
) -> Result<(), TuiError> {
    enable_raw_mode().map_err(TuiError::Terminal)?;
    if let Err(e) = execute!(io::stdout(), EnterAlternateScreen) {
        restore_terminal();
        return Err(TuiError::Terminal(e));
    }
    if app.mouse {
        if let Err(e) = execute!(io::stdout(), EnableMouseCapture) {
            restore_terminal();
            return Err(TuiError::Terminal(e));
        }
    }
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous_hook(info);
    }));
    app.drafts = embedded.is_some();
    if let Some(e) = &embedded {
        if app.preview.draft.is_empty() {
            app.preview.draft = e.drafts.default_draft().display().to_string();
        }
    }
    let result = event_loop(store, destinations, &mut app, embedded);
    restore_terminal();
    let _ = std::panic::take_hook();
    result
}

fn event_loop(
    store: StoreLocation,
    destinations: Destinations,
    app: &mut App,
    embedded: Option<Embedded>,
) -> Result<(), TuiError> {
    let mut terminal =
        Terminal::new(CrosstermBackend::new(io::stdout())).map_err(TuiError::Terminal)?;
    let loader = Loader::spawn(store, destinations);
    let (sender, drafts) = match embedded {
        Some(e) => (
            Some(TestSender::spawn(e.test)),
            Some(Drafts::spawn(e.drafts)),
        ),
        None => (None, None),
    };
    loader.request(app.query());
    let mut last_refresh = Instant::now();
    let mut dirty = true;
    while !app.quit {
        while let Ok(snapshot) = loader.snapshots.try_recv() {
            app.apply(snapshot);
            dirty = true;
        }
        if std::mem::take(&mut app.reload_now) {
            loader.request(app.query());
            last_refresh = Instant::now();
        }
        if let Some(sender) = &sender {
            if let Some(index) = app.pending_send.take() {
                if let Some(step) = app.test.steps.get(index) {
                    let _ = sender.requests.send((index, step.outgoing()));
                }
            }
            while let Ok((index, result)) = sender.results.try_recv() {
                if let Some(slot) = app.test.sent.get_mut(index) {
                    *slot = Some(result);
                }
                loader.request(app.query());
                dirty = true;
            }
        }
        if let Some(drafts) = &drafts {
            if let Some(app::DraftAsk { path, adding }) = app.pending_preview.take() {
                let _ = drafts.requests.send(DraftRequest::Preview { path, adding });
            }
            if let Some(path) = app.pending_activation.take() {
                let _ = drafts.requests.send(DraftRequest::Activate {
                    path,
                    who: app.who.clone(),
                });
            }
            while let Ok(answer) = drafts.answers.try_recv() {
                match answer {
                    DraftAnswer::Report(result, wrote) => {
                        app.preview.running = false;
                        app.preview.selected = 0;
                        match wrote {
                            Some(wrote) => app.status.set(wrote),
                            None => app.status.clear(),
                        }
                        match result {
                            Ok(report) => app.preview.report = Some(report),
                            Err(e) => app.preview.error = Some(e),
                        }
                    }
                    DraftAnswer::Activated(result) => {
                        app.status.set(match result {
                            Ok(done) => format!("done: {done} (recorded as {})", app.who),
                            Err(e) => format!("not activated: {e}"),
                        });
                    }
                }
                dirty = true;
            }
        }
        if dirty {
            terminal
                .draw(|f| panes::draw(f, app))
                .map_err(TuiError::Terminal)?;
            dirty = false;
        }
        if event::poll(Duration::from_millis(50)).map_err(TuiError::Terminal)? {
            // Drain every pending event before the next draw.
            loop {
                match event::read().map_err(TuiError::Terminal)? {
                    Event::Key(key) if key.kind == KeyEventKind::Press => {
                        if app.handle_key(key) {
                            loader.request(app.query());
                            last_refresh = Instant::now();
                        }
                        dirty = true;
                    }
                    Event::Mouse(mouse) => {
                        if app.handle_mouse(mouse) {
                            loader.request(app.query());
                            last_refresh = Instant::now();
                        }
                        dirty = true;
                    }
                    Event::Resize(..) => dirty = true,
                    _ => {}
                }
                if !event::poll(Duration::ZERO).map_err(TuiError::Terminal)? {
                    break;
                }
            }
        }
        if let Some(text) = app.clipboard.take() {
            use std::io::Write;
            let mut out = io::stdout();
            let _ = out.write_all(clipboard::osc52(&text).as_bytes());
            let _ = out.flush();
        }
        if last_refresh.elapsed() >= REFRESH {
            // A paused pane reloads too: its rows stay put (a fixed page), their states update.
            loader.request(app.query());
            last_refresh = Instant::now();
        }
    }
    Ok(())
}
