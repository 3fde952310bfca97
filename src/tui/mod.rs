//! The terminal dashboard. The UI thread only reads keys, applies snapshots and draws; a loader
//! thread runs every query (SQLite, read-only connection) and sends snapshots back. Redraws are
//! coalesced: at most one per input burst or new snapshot. The terminal is restored on every
//! exit path, including a panic.

pub mod app;
pub mod panes;
pub mod theme;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyEventKind};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::prelude::CrosstermBackend;
use ratatui::Terminal;

pub use app::{App, Pane, Query, Snapshot};

use crate::store::StoreReader;

/// How often the visible pane is refreshed from the database.
const REFRESH: Duration = Duration::from_millis(500);

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
    pub fn spawn(db: PathBuf, destinations: Vec<String>) -> Loader {
        let (req_tx, req_rx) = mpsc::channel::<Query>();
        let (snap_tx, snap_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("tracklayer-tui-loader".into())
            .spawn(move || {
                let mut reader: Option<StoreReader> = None;
                while let Ok(mut query) = req_rx.recv() {
                    // Only the newest request matters.
                    while let Ok(newer) = req_rx.try_recv() {
                        query = newer;
                    }
                    if reader.is_none() {
                        reader = StoreReader::open(&db).ok();
                    }
                    let snapshot = match &reader {
                        Some(r) => app::load(
                            r,
                            &query,
                            &destinations,
                            chrono::Utc::now().timestamp_millis(),
                        ),
                        None => Snapshot {
                            error: Some(format!("waiting for the database {}", db.display())),
                            ..Snapshot::default()
                        },
                    };
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

fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen);
}

/// Run the dashboard over `db` until the user quits.
pub fn run(db: &Path, destinations: Vec<String>, mut app: App) -> Result<(), TuiError> {
    enable_raw_mode().map_err(TuiError::Terminal)?;
    if let Err(e) = execute!(io::stdout(), EnterAlternateScreen) {
        restore_terminal();
        return Err(TuiError::Terminal(e));
    }
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous_hook(info);
    }));
    let result = event_loop(db, destinations, &mut app);
    restore_terminal();
    let _ = std::panic::take_hook();
    result
}

fn event_loop(db: &Path, destinations: Vec<String>, app: &mut App) -> Result<(), TuiError> {
    let mut terminal =
        Terminal::new(CrosstermBackend::new(io::stdout())).map_err(TuiError::Terminal)?;
    let loader = Loader::spawn(db.to_path_buf(), destinations);
    loader.request(app.query());
    let mut last_refresh = Instant::now();
    let mut dirty = true;
    while !app.quit {
        while let Ok(snapshot) = loader.snapshots.try_recv() {
            app.apply(snapshot);
            dirty = true;
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
                    Event::Resize(..) => dirty = true,
                    _ => {}
                }
                if !event::poll(Duration::ZERO).map_err(TuiError::Terminal)? {
                    break;
                }
            }
        }
        if last_refresh.elapsed() >= REFRESH {
            if !(app.frozen && app.pane == Pane::Stream) {
                loader.request(app.query());
            }
            last_refresh = Instant::now();
        }
    }
    Ok(())
}
