//! Dashboard state and input handling. Pure: keys in, state changes and data requests out; the
//! data arrives as [`Snapshot`]s from the loader thread.

use ratatui::crossterm::event::{KeyCode, KeyEvent};
use serde_json::Value;

use super::theme::Theme;

use crate::store::model::actions::OperatorAction;
use crate::store::model::alerts::StoredAlert;
use crate::store::views::{
    AttemptRow, DestinationStats, FleetNode, PagedTable, ProfileEvent, RejectionDetail, SearchHit,
    StreamCursor, StreamExtent, StreamRow, StreamSource, UnmappedGroup,
};
use crate::store::{
    DashboardReader, MessageTrace, StoreError, StoredCollision, StoredHttpRequest, StoredProfile,
};
use crate::testsend::{self, SendResult, Stage, Step, TestPlan};

mod keys;
mod mouse;
mod preview;
pub use keys::{
    action_for, detail_action_for, footer_keys, Action, DetailAction, Key, DETAIL_KEYS,
    FILTER_HELP, KEYS,
};
pub use mouse::{Hits, ListHits};
pub use preview::MappingPreview;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Stream,
    Deliveries,
    Diff,
    Unmapped,
    Destinations,
    Collisions,
    Profiles,
    TestSend,
    Alerts,
}

impl Pane {
    pub const ALL: [Pane; 9] = [
        Pane::Stream,
        Pane::Deliveries,
        Pane::Diff,
        Pane::Unmapped,
        Pane::Destinations,
        Pane::Collisions,
        Pane::Profiles,
        Pane::TestSend,
        Pane::Alerts,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Stream => "Live stream",
            Pane::Deliveries => "Delivery attempts",
            Pane::Diff => "Raw vs canonical",
            Pane::Unmapped => "Unmapped",
            Pane::Destinations => "Destinations",
            Pane::Collisions => "Dedup collisions",
            Pane::Profiles => "Profiles",
            Pane::TestSend => "Test send",
            Pane::Alerts => "Alerts",
        }
    }
}

/// How far back `h` narrows a replay of dead letters.
pub const REPLAY_RECENT_MS: i64 = 3_600_000;

/// What the loader is asked to fetch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    pub pane: Option<usize>,
    pub filter: String,
    /// The message whose trace the diff pane shows (None: the newest event).
    pub trace_of: Option<String>,
    /// The HTTP request behind the selected attempt (deliveries pane detail).
    pub request_row: Option<i64>,
    /// The refused request opened from the stream.
    pub rejection: Option<i64>,
    /// The selected collision (raw messages for the side-by-side).
    pub collision: Option<i64>,
    /// The test-send call being walked: its messageId and what the ingest answered.
    pub test_call: Option<(String, SendResult)>,
    /// How the destinations take the test (for the consent and payload stages).
    pub test_plan: TestPlan,
    /// The page's top on a paged pane (stream, attempts; `None`: follow the newest).
    pub page_top: Option<StreamCursor>,
    /// Move the page before loading it.
    pub page_seek: Option<Seek>,
    /// Search the whole history for this (answered in [`Snapshot::search`]).
    pub search: Option<String>,
    /// An operator action to perform once (by its sequence number), and who asks.
    pub action: Option<(u64, OperatorAction, String)>,
    /// Which state of the app asked: answers to older questions are dropped.
    pub generation: u64,
}

/// A move of a paged pane's page (stream, attempts) the loader resolves against the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    /// `n` rows newer than the page starting here.
    Newer(StreamCursor, usize),
    /// The oldest page.
    Oldest,
}

/// Everything the panes draw, loaded off the UI thread.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The [`Query::generation`] it answers.
    pub generation: u64,
    pub loaded_at_ms: i64,
    pub totals: (i64, i64),
    /// The fleet's nodes (empty on SQLite).
    pub nodes: Vec<FleetNode>,
    /// Open alerts first, then the newest resolved (the banner and the alerts pane).
    pub alerts: Vec<StoredAlert>,
    /// The newest forget requests (the alerts pane's audit list; loaded with that pane).
    pub privacy: Vec<crate::store::model::privacy::PrivacyRecord>,
    pub stream: Vec<StreamRow>,
    /// The id ranges of the paged pane loaded (position and total).
    pub extent: StreamExtent,
    /// Where the loaded page starts (resolved: never `NEWEST`).
    pub page_top: Option<StreamCursor>,
    pub attempts: Vec<AttemptRow>,
    pub request: Option<StoredHttpRequest>,
    pub rejection: Option<RejectionDetail>,
    /// The outcome of [`Query::action`]: its sequence number and what it did (or why not).
    pub action_done: Option<(u64, Result<String, String>)>,
    /// The answer to [`Query::search`]: what was searched and what it found.
    pub search: Option<(String, Option<SearchHit>)>,
    pub trace: Option<MessageTrace>,
    pub unmapped: Vec<UnmappedGroup>,
    pub destinations: Vec<DestinationStats>,
    pub collisions: Vec<StoredCollision>,
    /// Raw messages of the selected collision: (first arrival, later arrival).
    pub collision_raws: Option<(Value, Value)>,
    pub profile: Option<StoredProfile>,
    pub profile_events: Vec<ProfileEvent>,
    /// The stages of the test-send call being walked.
    pub test_stages: Vec<Stage>,
    pub error: Option<String>,
}

/// Rows per loaded page.
pub const ROWS: usize = 500;
/// Alerts are few (one row per firing); the pane keeps this many of the newest.
const ALERT_ROWS: usize = 200;

/// Perform the operator action `query` carries, once: `last` is the sequence number of the
/// last one performed. Runs on the loader thread, with its own write connection.
pub fn act(
    store: &crate::store::StoreLocation,
    query: &Query,
    last: &mut u64,
) -> Option<(u64, Result<String, String>)> {
    let (seq, action, who) = query.action.as_ref()?;
    if *seq <= *last {
        return None;
    }
    *last = *seq;
    Some((
        *seq,
        store
            .operate(action, who)
            .map(|affected| action.done(affected))
            .map_err(|e| format!("{} failed: {e}", action.name())),
    ))
}

/// Where the page of a list paged by one id starts, after the query's seek, as concrete ids
/// (so a paused page does not take in rows that arrive later), with the table's id range.
fn resolve_page(
    reader: &mut dyn DashboardReader,
    table: PagedTable,
    query: &Query,
) -> Result<(StreamExtent, StreamCursor), StoreError> {
    let extent = StreamExtent {
        messages: reader.id_range(table)?,
        refusals: None,
    };
    let f = &query.filter;
    let top = match query.page_seek {
        Some(Seek::Newer(from, n)) => reader.page_newer(table, f, from.message, n)?,
        Some(Seek::Oldest) => reader.page_newer(table, f, extent.below_oldest().message, ROWS)?,
        None => query.page_top.unwrap_or(StreamCursor::NEWEST).message,
    };
    let top = StreamCursor {
        message: top.min(extent.messages.map_or(0, |(_, hi)| hi)),
        refusal: 0,
    };
    Ok((extent, top))
}

/// Load what `query` asks for. Runs on the loader thread.
pub fn load(
    reader: &mut dyn DashboardReader,
    query: &Query,
    destinations: &[String],
    now_ms: i64,
) -> Snapshot {
    let mut snap = Snapshot {
        generation: query.generation,
        loaded_at_ms: now_ms,
        ..Snapshot::default()
    };
    let result: Result<(), StoreError> = (|| {
        snap.totals = reader.totals()?;
        snap.nodes = reader.nodes()?;
        snap.alerts = reader.alerts(ALERT_ROWS)?;
        if let Some(text) = &query.search {
            snap.search = Some((text.clone(), reader.search(text)?));
        }
        if query.pane == Some(Pane::ALL.len() - 1) {
            snap.privacy = reader.privacy_requests(PRIVACY_ROWS)?;
        }
        if query.pane == Some(Pane::ALL.len() - 1) && !query.filter.is_empty() {
            let f = query.filter.as_str();
            snap.alerts
                .retain(|a| a.rule.contains(f) || a.subject.contains(f) || a.state.contains(f));
        }
        match query.pane.map(|i| Pane::ALL[i.min(Pane::ALL.len() - 1)]) {
            Some(Pane::Stream) | None => {
                let extent = reader.stream_extent()?;
                let top = match query.page_seek {
                    Some(Seek::Newer(from, n)) => reader.stream_newer(&query.filter, from, n)?,
                    Some(Seek::Oldest) => {
                        reader.stream_newer(&query.filter, extent.below_oldest(), ROWS)?
                    }
                    None => query.page_top.unwrap_or(StreamCursor::NEWEST),
                };
                // Concrete ids, so a paused page does not take in rows that arrive later.
                let top = StreamCursor {
                    message: top.message.min(extent.messages.map_or(0, |(_, hi)| hi)),
                    refusal: top.refusal.min(extent.refusals.map_or(0, |(_, hi)| hi)),
                };
                snap.stream = reader.stream(ROWS, &query.filter, top)?;
                if let Some(id) = query.rejection {
                    snap.rejection = reader.rejection(id)?;
                }
                snap.extent = extent;
                snap.page_top = Some(top);
            }
            Some(Pane::Deliveries) => {
                let (extent, top) = resolve_page(reader, PagedTable::Attempts, query)?;
                snap.attempts = reader.attempts_page(ROWS, &query.filter, top.message)?;
                snap.extent = extent;
                snap.page_top = Some(top);
                if let Some(row) = query.request_row {
                    snap.request = reader.http_request(row)?;
                }
            }
            Some(Pane::Diff) => {
                let id = match &query.trace_of {
                    Some(id) => Some(id.clone()),
                    None => reader.latest_event_message_id()?,
                };
                if let Some(id) = id {
                    snap.trace = reader.trace(&id)?;
                }
            }
            Some(Pane::Unmapped) => snap.unmapped = reader.unmapped_groups(ROWS, &query.filter)?,
            Some(Pane::Destinations) => {
                let names: Vec<String> = destinations
                    .iter()
                    .filter(|d| query.filter.is_empty() || d.contains(query.filter.as_str()))
                    .cloned()
                    .collect();
                snap.destinations = reader.destination_stats(&names, now_ms)?;
            }
            Some(Pane::Collisions) => {
                let (extent, top) = resolve_page(reader, PagedTable::Collisions, query)?;
                snap.collisions = reader.collisions_page(ROWS, &query.filter, top.message)?;
                snap.extent = extent;
                snap.page_top = Some(top);
                let selected = query
                    .collision
                    .and_then(|id| snap.collisions.iter().find(|c| c.id == id))
                    .or(snap.collisions.first());
                if let Some(c) = selected {
                    let mut raw_of = |row: i64| -> Result<Value, StoreError> {
                        Ok(reader
                            .message_raw(row)?
                            .and_then(|raw| serde_json::from_slice(&raw).ok())
                            .unwrap_or(Value::Null))
                    };
                    snap.collision_raws =
                        Some((raw_of(c.winner_message_row)?, raw_of(c.message_row)?));
                }
            }
            Some(Pane::TestSend) => {
                if let Some((message_id, sent)) = &query.test_call {
                    let trace = if sent.status < 300 {
                        reader.trace(message_id)?
                    } else {
                        None
                    };
                    snap.test_stages = testsend::stages(sent, trace.as_ref(), &query.test_plan);
                }
            }
            Some(Pane::Alerts) => {}
            Some(Pane::Profiles) => {
                snap.profile = reader.find_profile(&query.filter)?;
                if let Some(p) = &snap.profile {
                    snap.profile_events = reader.events_of_profile(p.id, 20)?;
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        snap.error = Some(e.to_string());
    }
    snap
}

/// A detail view's scroll state. The layout of the last frame comes back through a `Cell`
/// (drawing reads the app), so keys know where the response starts and where the end is.
#[derive(Debug, Default)]
pub struct Viewport {
    pub scroll: usize,
    pub wrap: bool,
    pub layout: std::cell::Cell<DetailLayout>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetailLayout {
    pub lines: usize,
    pub height: usize,
    pub response_at: Option<usize>,
}

/// The controlled test send's progress in the dashboard.
#[derive(Debug, Clone, Default)]
pub struct TestSendState {
    pub steps: Vec<Step>,
    /// What the ingest answered for each sent step.
    pub sent: Vec<Option<SendResult>>,
    /// The step whose stages are shown.
    pub viewing: usize,
    /// How many of its stages are revealed (one key press each).
    pub revealed: usize,
    /// How each destination takes the test; the dashboard never sends a live event.
    pub plan: TestPlan,
    /// Where test calls go; `None` when attached to another instance's database.
    pub enabled: bool,
    /// The test user (edit with `/`: a userId, an email, or both separated by a space).
    pub user: testsend::TestUser,
}

impl TestSendState {
    pub fn new(plan: TestPlan, enabled: bool) -> TestSendState {
        let mut state = TestSendState {
            plan,
            enabled,
            ..TestSendState::default()
        };
        state.new_run();
        state
    }

    pub fn new_run(&mut self) {
        let run_id = chrono::Utc::now().format("%H%M%S%3f").to_string();
        self.steps = testsend::scenario(&self.user, &run_id, &[], &self.plan.skip);
        self.sent = vec![None; self.steps.len()];
        self.viewing = 0;
        self.revealed = 0;
    }

    /// Set the test user from `/` input: words with `@` are the email, others the userId;
    /// what is not given is not sent. Empty input keeps the current user.
    pub fn edit_user(&mut self, input: &str) {
        if let Some(user) = testsend::TestUser::parse(input) {
            self.user = user;
        }
        self.new_run();
    }

    /// The next step to send, if any (the walk stops after a failed stage).
    pub fn next_unsent(&self) -> Option<usize> {
        self.sent.iter().position(Option::is_none)
    }
}

pub struct App {
    pub pane: Pane,
    pub selected: [usize; Pane::ALL.len()],
    pub filters: [String; Pane::ALL.len()],
    pub test: TestSendState,
    /// A test-send step the event loop should post (set by the `s` key).
    pub pending_send: Option<usize>,
    pub editing_filter: Option<String>,
    /// The `:` search prompt being typed.
    pub editing_search: Option<String>,
    /// The draft file's path being typed (pane 4, `m`).
    pub editing_draft: Option<String>,
    /// The mapping preview of pane 4.
    pub preview: MappingPreview,
    /// Whether drafts can be previewed and activated here (the embedded pipeline).
    pub drafts: bool,
    /// A draft the event loop should preview, and one it should put in force.
    pub pending_preview: Option<std::path::PathBuf>,
    pub pending_activation: Option<std::path::PathBuf>,
    /// A search sent to the loader, answered in a snapshot.
    search: Option<String>,
    /// Load again at once after applying a snapshot (a search moved to another pane).
    pub reload_now: bool,
    /// Whether this dashboard may act on the store, or why not (attached to a fleet).
    pub actions: Result<(), String>,
    /// Who acts, for the record (`user@host`).
    pub who: String,
    /// An action waiting for `y`.
    pub confirm: Option<OperatorAction>,
    /// An action confirmed and sent to the loader, with its sequence number.
    pending_action: Option<(u64, OperatorAction)>,
    action_seq: u64,
    /// Per pane: newest rows on top with the selection riding along (true), or paused with
    /// the selection anchored to its row while new rows arrive above it.
    pub follow: [bool; Pane::ALL.len()],
    /// Per pane: the key of the selected row; the selection follows it, not a screen row.
    anchor: [Option<String>; Pane::ALL.len()],
    /// Rows to move from the anchor once a page being loaded arrives.
    pending_offset: isize,
    /// Per pane: rows that arrived above the paused view.
    pub new_rows: [i64; Pane::ALL.len()],
    /// Per paged pane (stream, attempts): where its page starts (`None`: newest, following).
    pub page_top: [Option<StreamCursor>; Pane::ALL.len()],
    /// Per paged pane: how many rows it held when it was paused (what arrived since is "new").
    total_at_pause: [i64; Pane::ALL.len()],
    page_seek: [Option<Seek>; Pane::ALL.len()],
    /// Select the last row once the page being loaded arrives (End).
    select_last: bool,
    /// Bumped whenever a key changes what to load; older snapshots are stale.
    generation: u64,
    pub help: bool,
    /// How far the help overlay is scrolled (it is longer than a small terminal).
    pub help_scroll: usize,
    /// The last scroll position the help had room for (set by drawing).
    pub help_last: std::cell::Cell<usize>,
    /// The detail viewport (an attempt's request and response, a refused request) is open.
    pub detail: bool,
    pub viewport: Viewport,
    /// The scroll of what a pane shows beside its list: pane 3's raw and canonical halves, the
    /// collision side-by-side.
    pub content: Viewport,
    /// The pane `enter` came from to pane 3: `esc` goes back there, to the same row.
    pub came_from: Option<Pane>,
    /// Where the last frame drew tabs, list rows and the detail (for the mouse).
    pub hits: std::cell::RefCell<Hits>,
    /// Whether the dashboard captures the mouse (off: the terminal selects text as usual).
    pub mouse: bool,
    /// Text for the clipboard; the event loop sends it to the terminal (OSC 52).
    pub clipboard: Option<String>,
    pub diff_tab: usize,
    pub trace_of: Option<String>,
    pub themes: Vec<Theme>,
    pub theme_index: usize,
    pub snapshot: Snapshot,
    pub status: Option<String>,
    /// A label for the header: what this dashboard is attached to.
    pub source: String,
    pub quit: bool,
}

impl App {
    pub fn new(themes: Vec<Theme>, theme_name: Option<&str>, source: String) -> App {
        let theme_index = theme_name
            .and_then(|n| themes.iter().position(|t| t.name == n))
            .unwrap_or(0);
        App {
            pane: Pane::Stream,
            selected: [0; Pane::ALL.len()],
            filters: Default::default(),
            test: TestSendState::default(),
            pending_send: None,
            editing_filter: None,
            editing_search: None,
            editing_draft: None,
            preview: MappingPreview::default(),
            drafts: false,
            pending_preview: None,
            pending_activation: None,
            search: None,
            reload_now: false,
            actions: Err("actions need the embedded pipeline or a local database".into()),
            who: operator_name(),
            confirm: None,
            pending_action: None,
            action_seq: 0,
            follow: [true; Pane::ALL.len()],
            anchor: Default::default(),
            pending_offset: 0,
            new_rows: [0; Pane::ALL.len()],
            page_top: [None; Pane::ALL.len()],
            total_at_pause: [0; Pane::ALL.len()],
            page_seek: [None; Pane::ALL.len()],
            select_last: false,
            generation: 0,
            help: false,
            help_scroll: 0,
            help_last: std::cell::Cell::new(0),
            detail: false,
            content: Viewport::default(),
            came_from: None,
            viewport: Viewport {
                wrap: true,
                ..Viewport::default()
            },
            hits: Default::default(),
            mouse: true,
            clipboard: None,
            diff_tab: 0,
            trace_of: None,
            themes,
            theme_index,
            snapshot: Snapshot::default(),
            status: None,
            source,
            quit: false,
        }
    }

    pub fn theme(&self) -> &Theme {
        &self.themes[self.theme_index.min(self.themes.len() - 1)]
    }

    pub fn index(&self) -> usize {
        Pane::ALL.iter().position(|p| *p == self.pane).unwrap_or(0)
    }

    pub fn selection(&self) -> usize {
        self.selected[self.index()]
    }

    pub fn filter(&self) -> &str {
        &self.filters[self.index()]
    }

    pub fn rows(&self) -> usize {
        match self.pane {
            Pane::Stream => self.snapshot.stream.len(),
            Pane::Deliveries => self.snapshot.attempts.len(),
            Pane::Unmapped => self.snapshot.unmapped.len(),
            Pane::Destinations => self.snapshot.destinations.len(),
            Pane::Collisions => self.snapshot.collisions.len(),
            Pane::Diff | Pane::Profiles => 0,
            Pane::TestSend => self.test.steps.len(),
            Pane::Alerts => self.snapshot.alerts.len(),
        }
    }

    /// The query for the current state.
    pub fn query(&self) -> Query {
        let selected = self.selection();
        Query {
            pane: Some(self.index()),
            filter: self.filter().to_string(),
            trace_of: self.trace_of.clone(),
            request_row: (self.pane == Pane::Deliveries && self.detail)
                .then(|| {
                    self.snapshot
                        .attempts
                        .get(selected)
                        .and_then(|a| a.request_row)
                })
                .flatten(),
            rejection: (self.pane == Pane::Stream && self.detail)
                .then(|| match self.snapshot.stream.get(selected)?.source {
                    StreamSource::Refusal(id) => Some(id),
                    StreamSource::Message(_) => None,
                })
                .flatten(),
            collision: (self.pane == Pane::Collisions)
                .then(|| self.snapshot.collisions.get(selected).map(|c| c.id))
                .flatten(),
            test_call: (self.pane == Pane::TestSend)
                .then(|| {
                    let i = self.test.viewing;
                    let sent = self.test.sent.get(i)?.clone()?;
                    let id = self.test.steps[i]
                        .message
                        .get("messageId")?
                        .as_str()?
                        .to_string();
                    Some((id, sent))
                })
                .flatten(),
            test_plan: self.test.plan.clone(),
            page_top: self.page_top[self.index()],
            page_seek: self.page_seek[self.index()],
            search: self.search.clone(),
            action: self
                .pending_action
                .clone()
                .map(|(seq, action)| (seq, action, self.who.clone())),
            generation: self.generation,
        }
    }

    /// The identity of row `i` of the current pane: what a selection is anchored to.
    fn key_at(&self, i: usize) -> Option<String> {
        let s = &self.snapshot;
        match self.pane {
            Pane::Stream => s.stream.get(i).map(|r| format!("{:?}", r.source)),
            Pane::Deliveries => s.attempts.get(i).map(|a| a.attempt_row.to_string()),
            Pane::Unmapped => s.unmapped.get(i).map(|g| g.segment_event.clone()),
            Pane::Destinations => s.destinations.get(i).map(|d| d.destination.clone()),
            Pane::Collisions => s.collisions.get(i).map(|c| c.id.to_string()),
            Pane::Alerts => s.alerts.get(i).map(|a| a.id.to_string()),
            Pane::TestSend => (i < self.test.steps.len()).then(|| i.to_string()),
            Pane::Diff | Pane::Profiles => None,
        }
    }

    fn position_of(&self, key: &str) -> Option<usize> {
        (0..self.rows()).find(|&i| self.key_at(i).as_deref() == Some(key))
    }

    /// Whether the current pane pages through the whole store (the others hold their rows).
    pub fn paged(&self) -> bool {
        matches!(
            self.pane,
            Pane::Stream | Pane::Deliveries | Pane::Collisions
        )
    }

    /// The cursor of a page starting at row `i` of a paged pane.
    fn cursor_at(&self, i: usize) -> Option<StreamCursor> {
        match self.pane {
            Pane::Stream => self.snapshot.stream.get(i).map(|r| r.cursor),
            Pane::Deliveries => self.snapshot.attempts.get(i).map(|a| StreamCursor {
                message: a.attempt_row,
                refusal: 0,
            }),
            Pane::Collisions => self.snapshot.collisions.get(i).map(|c| StreamCursor {
                message: c.id,
                refusal: 0,
            }),
            _ => None,
        }
    }

    /// "1,204 of 767,310": where the selection is in the whole history (paged panes) or in
    /// the rows loaded (the others, and a filtered page).
    pub fn position(&self) -> Option<(i64, i64)> {
        let selected = self.selection();
        if self.paged() && self.filter().is_empty() {
            let cursor = self.cursor_at(selected)?;
            let extent = &self.snapshot.extent;
            return Some((extent.position(cursor), extent.total()));
        }
        (self.rows() > 0).then(|| (selected as i64 + 1, self.rows() as i64))
    }

    /// Apply new data. The selection stays on its row (found again by key) however many rows
    /// arrived above it; following, it stays on the newest.
    pub fn apply(&mut self, snapshot: Snapshot) {
        if snapshot.generation < self.generation {
            // Asked before the last key changed the view: its rows may be another page's.
            return;
        }
        let mut snapshot = snapshot;
        if let Some((seq, result)) = snapshot.action_done.take() {
            if self.pending_action.as_ref().is_some_and(|(s, _)| *s == seq) {
                self.pending_action = None;
                self.status = Some(match result {
                    Ok(done) => format!("done: {done} (recorded as {})", self.who),
                    Err(e) => e,
                });
            }
        }
        if let Some((text, hit)) = snapshot.search.take() {
            if self.search.as_deref() == Some(text.as_str()) {
                self.search = None;
                self.found(&text, hit);
                // The snapshot is of the pane searched from; the found one loads next.
                return;
            }
        }
        let i = self.index();
        let offset = std::mem::take(&mut self.pending_offset);
        let old_top = self.key_at(0);
        if self.paged() && snapshot.page_top.is_some() && !self.follow[i] {
            // The page the loader resolved (a seek, or NEWEST made concrete) is the page now.
            self.page_seek[i] = None;
            self.page_top[i] = snapshot.page_top;
        }
        self.snapshot = snapshot;
        let rows = self.rows();
        if self.select_last {
            self.select_last = false;
            self.selected[i] = rows.saturating_sub(1);
        } else if self.follow[i] {
            self.selected[i] = 0;
        } else if let Some(at) = self.anchor[i].clone().and_then(|k| self.position_of(&k)) {
            let moved = at as isize + offset;
            self.selected[i] = moved.clamp(0, rows.saturating_sub(1) as isize) as usize;
        } else if rows > 0 && self.selected[i] >= rows {
            self.selected[i] = rows - 1;
        }
        self.anchor[i] = self.key_at(self.selected[i]);
        self.new_rows[i] = if self.follow[i] {
            0
        } else if self.paged() && !self.filter().is_empty() {
            // What arrived since the pause is counted over every row, not the filter's: a
            // count that cannot be true is not shown ("paused", g goes to the newest).
            0
        } else if self.paged() {
            (self.snapshot.extent.total() - self.total_at_pause[i]).max(0)
        } else {
            // Rows above the previous top are new since the last refresh.
            let arrived = old_top.and_then(|k| self.position_of(&k)).unwrap_or(0) as i64;
            self.new_rows[i] + arrived
        };
    }

    /// An action key: what it would do to the selected row, asked before it is done.
    fn ask(&mut self, key: Action) {
        let selected = self.selection();
        let s = &self.snapshot;
        let action = match (key, self.pane) {
            (Action::RetryNow, Pane::Deliveries) => {
                s.attempts.get(selected).map(|a| OperatorAction::RetryNow {
                    delivery_id: a.delivery_id,
                    what: crate::store::model::actions::DeliveryName {
                        destination: a.destination.clone(),
                        destination_event: a.destination_event.clone(),
                        event_id: a.event_id.clone(),
                        message_id: a.message_id.clone(),
                    },
                })
            }
            (Action::ReplayDead, Pane::Destinations) => {
                s.destinations
                    .get(selected)
                    .map(|d| OperatorAction::ReplayDead {
                        destination: d.destination.clone(),
                        since_ms: None,
                    })
            }
            (Action::PauseResume, Pane::Destinations) => s.destinations.get(selected).map(|d| {
                let destination = d.destination.clone();
                if d.paused.is_some() {
                    OperatorAction::Resume { destination }
                } else {
                    OperatorAction::Pause { destination }
                }
            }),
            (Action::AllowReplay, Pane::Stream) => {
                s.stream.get(selected).map(|r| OperatorAction::AllowReplay {
                    environment: r.environment.clone(),
                    minutes: 60,
                })
            }
            _ => {
                self.status = Some(
                    "R retries on 2 (attempts), D and p act on 5 (destinations), A on 1 (stream)"
                        .into(),
                );
                return;
            }
        };
        match (&self.actions, action) {
            (Err(why), _) => self.status = Some(format!("refused: {why}")),
            (Ok(()), None) => self.status = Some("select a row first".into()),
            (Ok(()), Some(action)) => {
                self.pause();
                self.confirm = Some(action);
            }
        }
    }

    /// Go where a search led: the message's trace, or the profile.
    fn found(&mut self, text: &str, hit: Option<SearchHit>) {
        self.detail = false;
        self.reload_now = true;
        self.generation += 1;
        match hit {
            Some(SearchHit::Message {
                message_id,
                matched,
            }) => {
                self.status = Some(format!("`{text}` is a {matched}: message {message_id}"));
                self.trace_of = Some(message_id);
                self.pane = Pane::Diff;
                self.diff_tab = 0;
            }
            Some(SearchHit::Profile { query }) => {
                self.status = Some(format!("`{text}` identifies a profile"));
                self.pane = Pane::Profiles;
                let i = self.index();
                self.filters[i] = query;
            }
            None => {
                self.reload_now = false;
                self.status = Some(format!(
                    "nothing matches `{text}` (tried messageId, event_id, request id, order_id, userId, anonymousId, email, phone)"
                ));
            }
        }
    }

    /// A new filter is a new question: its answer starts at the newest matching row. A page
    /// paused before held only rows older than the pause (`1 of 1` where 99 matched), and the
    /// rows counted as new since were the unfiltered ones (`1,682 new` beside `3 of 500`).
    fn filter_changed(&mut self) {
        let i = self.index();
        self.follow[i] = true;
        self.new_rows[i] = 0;
        self.selected[i] = 0;
        self.page_top[i] = None;
        self.page_seek[i] = None;
        self.anchor[i] = None;
    }

    /// Pause the current pane where it is: the stream page stops taking new rows.
    fn pause(&mut self) {
        let i = self.index();
        if self.follow[i] {
            self.follow[i] = false;
            self.new_rows[i] = 0;
            if self.paged() {
                self.page_top[i] = self.snapshot.page_top;
                self.total_at_pause[i] = self.snapshot.extent.total();
            }
        }
    }

    /// Follow the newest rows again.
    fn follow_newest(&mut self) {
        let i = self.index();
        self.follow[i] = true;
        self.new_rows[i] = 0;
        self.selected[i] = 0;
        self.page_top[i] = None;
        self.page_seek[i] = None;
        self.anchor[i] = self.key_at(0);
    }

    /// Move the selection; returns true when another page must be loaded first.
    fn move_selection(&mut self, delta: isize) -> bool {
        let rows = self.rows();
        let i = self.index();
        if rows == 0 {
            self.selected[i] = 0;
            return false;
        }
        self.pause();
        let target = self.selected[i] as isize + delta;
        if self.paged() {
            let page_is_full = rows >= ROWS;
            let at_newest = self
                .snapshot
                .page_top
                .is_some_and(|t| self.snapshot.extent.newer_than(t) == 0);
            if target >= rows as isize && page_is_full {
                // Older rows: the page moves down by half, the selection rides on its row.
                self.page_top[i] = self.cursor_at(rows / 2);
                self.pending_offset = target - self.selected[i] as isize;
                self.anchor[i] = self.key_at(self.selected[i]);
                return true;
            }
            if target < 0 && !at_newest {
                if let Some(top) = self.cursor_at(0) {
                    self.page_seek[i] = Some(Seek::Newer(top, ROWS / 2));
                    self.pending_offset = target - self.selected[i] as isize;
                    self.anchor[i] = self.key_at(self.selected[i]);
                    return true;
                }
            }
        }
        let next = target.clamp(0, rows as isize - 1) as usize;
        self.selected[i] = next;
        self.anchor[i] = self.key_at(next);
        false
    }

    /// Handle a key; returns true when the data should be reloaded at once.
    pub fn handle_key(&mut self, key: KeyEvent) -> bool {
        let reload = self.handle_key_inner(key);
        if reload {
            self.generation += 1;
        }
        reload
    }

    fn handle_key_inner(&mut self, key: KeyEvent) -> bool {
        let i = self.index();
        if let Some(text) = &mut self.editing_filter {
            match key.code {
                KeyCode::Enter => {
                    let text = text.trim().to_string();
                    self.editing_filter = None;
                    self.selected[i] = 0;
                    if self.pane == Pane::TestSend {
                        // On the test-send pane `/` edits the test user instead of filtering.
                        self.test.edit_user(&text);
                        self.snapshot.test_stages.clear();
                        self.status = Some(format!("test user {}", self.test.user.label()));
                    } else {
                        self.filters[i] = text;
                        self.filter_changed();
                    }
                    return true;
                }
                KeyCode::Esc => {
                    self.editing_filter = None;
                    if self.pane != Pane::TestSend {
                        self.filters[i].clear();
                        self.filter_changed();
                        return true;
                    }
                }
                KeyCode::Backspace | KeyCode::Char(_) => {
                    match key.code {
                        KeyCode::Char(c) => text.push(c),
                        _ => {
                            text.pop();
                        }
                    }
                    if self.pane != Pane::TestSend {
                        // The filter narrows as it is typed.
                        self.filters[i] = text.trim().to_string();
                        self.filter_changed();
                        return true;
                    }
                }
                _ => {}
            }
            return false;
        }
        if self.draft_key(&key) {
            return false;
        }
        if let Some(text) = &mut self.editing_search {
            match key.code {
                KeyCode::Enter => {
                    let text = text.trim().to_string();
                    self.editing_search = None;
                    if text.is_empty() {
                        return false;
                    }
                    self.status = Some(format!("searching the whole history for `{text}`…"));
                    self.search = Some(text);
                    return true;
                }
                KeyCode::Esc => self.editing_search = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            return false;
        }
        if self.help {
            // The page keys scroll a help taller than the terminal; any other key closes it.
            match key.code {
                KeyCode::Char('j') | KeyCode::Down => {
                    self.help_scroll = (self.help_scroll + 1).min(self.help_last.get())
                }
                KeyCode::Char('k') | KeyCode::Up => {
                    self.help_scroll = self.help_scroll.saturating_sub(1)
                }
                KeyCode::PageDown | KeyCode::Char(' ') => {
                    self.help_scroll = (self.help_scroll + 10).min(self.help_last.get())
                }
                KeyCode::PageUp => self.help_scroll = self.help_scroll.saturating_sub(10),
                _ => {
                    self.help = false;
                    self.help_scroll = 0;
                }
            }
            return false;
        }
        if let Some(action) = self.confirm.take() {
            if let (
                KeyCode::Char('h'),
                OperatorAction::ReplayDead {
                    destination,
                    since_ms: None,
                },
            ) = (key.code, &action)
            {
                // Narrowed to the last hour's dead letters (what an outage just caused); asked again.
                let now = match self.snapshot.loaded_at_ms {
                    0 => chrono::Utc::now().timestamp_millis(),
                    ms => ms,
                };
                self.confirm = Some(OperatorAction::ReplayDead {
                    destination: destination.clone(),
                    since_ms: Some(now - REPLAY_RECENT_MS),
                });
                return false;
            }
            if key.code == KeyCode::Char('y') && self.confirmed_activation(&action) {
                return false;
            }
            if key.code == KeyCode::Char('y') {
                self.action_seq += 1;
                self.status = Some(format!("{}…", action.name()));
                self.pending_action = Some((self.action_seq, action));
                return true;
            }
            self.status = Some("cancelled: nothing was changed".into());
            return false;
        }
        if self.detail {
            if let Some(reload) = self.detail_key(&key) {
                return reload;
            }
        }
        let Some(action) = action_for(&key) else {
            return false;
        };
        if self.scroll_content(action) {
            return false;
        }
        match action {
            Action::Quit => self.quit = true,
            Action::Help => self.help = true,
            Action::Pane(n) => {
                self.pane = Pane::ALL[n.min(Pane::ALL.len() - 1)];
                self.detail = false;
                self.came_from = None;
                return true;
            }
            Action::NextPane | Action::PreviousPane => {
                let (i, n) = (self.index(), Pane::ALL.len());
                let next = if action == Action::NextPane {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                };
                self.pane = Pane::ALL[next];
                self.detail = false;
                return true;
            }
            Action::SendNext if self.pane == Pane::TestSend => {
                let blocked = testsend::failed(&self.snapshot.test_stages);
                match (self.test.enabled, self.test.next_unsent(), blocked) {
                    (false, _, _) => self.status = Some("the test send needs the embedded pipeline (tracklayer tui or demo), not --attach".into()),
                    (_, None, _) => self.status = Some("every call was sent; r starts a new run".into()),
                    (_, Some(_), true) => self.status = Some("the walk stopped at a failed stage: fix it, then r for a new run".into()),
                    (_, Some(i), false) => {
                        self.pending_send = Some(i);
                        self.test.viewing = i;
                        self.test.revealed = 1;
                        self.selected[7] = i;
                    }
                }
                return false;
            }
            Action::NextStage if self.pane == Pane::TestSend => {
                self.test.revealed += 1;
                return true;
            }
            Action::NewRun if self.pane == Pane::TestSend => {
                self.test.new_run();
                self.snapshot.test_stages.clear();
                self.selected[7] = 0;
                return true;
            }
            Action::SendNext | Action::NextStage | Action::NewRun => {}
            Action::RetryNow | Action::ReplayDead | Action::PauseResume | Action::AllowReplay => {
                self.ask(action);
            }
            Action::Down | Action::Up if self.pane == Pane::TestSend => {
                let _ = self.move_selection(if action == Action::Down { 1 } else { -1 });
                self.test.viewing = self.selected[7];
                self.test.revealed = usize::MAX;
                return true;
            }
            Action::Down | Action::Up | Action::PageDown | Action::PageUp => {
                let delta = match action {
                    Action::Down => 1,
                    Action::Up => -1,
                    Action::PageDown => 10,
                    _ => -10,
                };
                let reload = self.move_selection(delta);
                self.content.scroll = 0;
                return reload || matches!(self.pane, Pane::Collisions | Pane::Deliveries);
            }
            Action::Newest => {
                self.follow_newest();
                return true;
            }
            Action::Copy => self.copy_raw(),
            Action::Oldest => {
                let i = self.index();
                self.pause();
                if self.paged() {
                    self.page_seek[i] = Some(Seek::Oldest);
                    self.select_last = true;
                    return true;
                }
                self.selected[i] = self.rows().saturating_sub(1);
                self.anchor[i] = self.key_at(self.selected[i]);
                return matches!(self.pane, Pane::Collisions | Pane::Deliveries);
            }
            Action::Open => return self.open(),
            Action::Close => {
                if self.detail {
                    self.detail = false;
                } else if self.pane == Pane::Unmapped && self.preview.open() {
                    self.preview = MappingPreview {
                        draft: std::mem::take(&mut self.preview.draft),
                        ..MappingPreview::default()
                    };
                } else if let (Pane::Diff, Some(from)) = (self.pane, self.came_from.take()) {
                    // Back where enter was pressed, on the same row (that pane was paused).
                    self.pane = from;
                } else {
                    let i = self.index();
                    if !self.filters[i].is_empty() {
                        self.filters[i].clear();
                        self.filter_changed();
                    }
                }
                return true;
            }
            Action::Filter if self.pane == Pane::TestSend => {
                self.editing_filter = Some(self.test.user.label());
            }
            Action::Filter => self.editing_filter = Some(self.filter().to_string()),
            Action::Search => self.editing_search = Some(String::new()),
            Action::Follow => {
                let i = self.index();
                if self.follow[i] {
                    self.pause();
                    self.status = Some(format!(
                        "{} paused: the selection stays on its row (f or g: follow)",
                        self.pane.title()
                    ));
                } else {
                    self.follow_newest();
                    self.status = Some(format!("{}: following the newest", self.pane.title()));
                }
                return true;
            }
            Action::ContentDown | Action::ContentUp => {
                if !self.preview_move(action == Action::ContentDown) {
                    self.status = Some(
                        "J / K scroll the collision side-by-side (6) and pane 3, and a draft's groups (4)"
                            .into(),
                    )
                }
            }
            Action::PreviewDraft if self.pane == Pane::Unmapped => self.ask_for_draft(),
            Action::ActivateDraft if self.pane == Pane::Unmapped => self.ask_to_activate(),
            Action::PreviewDraft | Action::ActivateDraft => {
                self.status =
                    Some("m previews a draft mapping table on 4 (unmapped), a activates it".into())
            }
            Action::NextTab => self.diff_tab += 1,
            Action::PreviousTab => self.diff_tab = self.diff_tab.saturating_sub(1),
            Action::Theme => {
                self.theme_index = (self.theme_index + 1) % self.themes.len();
                self.status = Some(format!("theme: {}", self.theme().name));
            }
        }
        false
    }

    /// Keys of an open detail viewport: they scroll it, never the list behind it. `None`:
    /// not a detail key (pane switches, help, quit go on as usual).
    fn detail_key(&mut self, key: &KeyEvent) -> Option<bool> {
        let layout = self.viewport.layout.get();
        let last = layout.lines.saturating_sub(layout.height);
        let page = layout.height.saturating_sub(1).max(1);
        let v = &mut self.viewport;
        v.scroll = v.scroll.min(last);
        let action = detail_action_for(key)?;
        match action {
            DetailAction::Down => v.scroll = (v.scroll + 1).min(last),
            DetailAction::Up => v.scroll = v.scroll.saturating_sub(1),
            DetailAction::PageDown => v.scroll = (v.scroll + page).min(last),
            DetailAction::PageUp => v.scroll = v.scroll.saturating_sub(page),
            DetailAction::Top => v.scroll = 0,
            DetailAction::Bottom => v.scroll = last,
            DetailAction::Response => v.scroll = layout.response_at.unwrap_or(last).min(last),
            DetailAction::Wrap => {
                v.wrap = !v.wrap;
                v.scroll = 0;
            }
            DetailAction::Curl => match (&self.snapshot.request, self.pane) {
                (Some(r), Pane::Deliveries) => {
                    self.clipboard = Some(crate::tui::clipboard::curl_command(r));
                    self.status =
                        Some("copied the request as a curl command (secrets stay REDACTED)".into());
                }
                _ => self.status = Some("nothing to copy as curl here".into()),
            },
            DetailAction::Copy => {
                let body = match self.pane {
                    Pane::Deliveries => self.snapshot.request.as_ref().and_then(|r| r.body.clone()),
                    Pane::Stream => self
                        .snapshot
                        .rejection
                        .as_ref()
                        .and_then(|r| serde_json::to_string_pretty(r).ok()),
                    _ => None,
                };
                if let Some(body) = body {
                    self.status = Some(format!("copied {} bytes to the clipboard", body.len()));
                    self.clipboard = Some(body);
                }
            }
            DetailAction::Close => {
                self.detail = false;
                return Some(true);
            }
        }
        Some(false)
    }

    /// `c`: the raw message as Segment sent it, pretty-printed, to the clipboard.
    fn copy_raw(&mut self) {
        let raw = match self.pane {
            Pane::Diff => self
                .snapshot
                .trace
                .as_ref()
                .and_then(|t| t.arrivals.first())
                .and_then(|a| serde_json::from_slice::<Value>(&a.raw).ok()),
            Pane::Collisions => self
                .snapshot
                .collision_raws
                .as_ref()
                .map(|(_, collapsed)| collapsed.clone())
                .filter(|v| !v.is_null()),
            _ => None,
        };
        match raw.and_then(|v| serde_json::to_string_pretty(&v).ok()) {
            Some(text) => {
                self.status = Some(format!(
                    "copied the raw message ({} bytes) to the clipboard",
                    text.len()
                ));
                self.clipboard = Some(text);
            }
            None => {
                self.status = Some("c copies a raw message on the diff and collisions panes".into())
            }
        }
    }

    /// Enter: follow the selected row to where its story is told.
    fn open(&mut self) -> bool {
        let selected = self.selection();
        self.viewport.scroll = 0;
        if self.pane == Pane::Stream {
            if let Some(StreamSource::Refusal(_)) =
                self.snapshot.stream.get(selected).map(|r| r.source)
            {
                // A refused request has no trace: its detail opens here.
                self.pause();
                self.detail = true;
                return true;
            }
        }
        let message_id = match self.pane {
            Pane::Stream => self
                .snapshot
                .stream
                .get(selected)
                .and_then(|r| r.message_id.clone()),
            Pane::Unmapped => self
                .snapshot
                .unmapped
                .get(selected)
                .and_then(|g| g.example_message_id.clone()),
            Pane::Collisions => self
                .snapshot
                .collisions
                .get(selected)
                .and_then(|c| c.message_id.clone()),
            Pane::Profiles => self
                .snapshot
                .profile_events
                .first()
                .map(|e| e.message_id.clone()),
            Pane::Deliveries => {
                // Paused, so the attempt under the detail cannot change while it is read.
                self.pause();
                self.detail = !self.detail;
                return true;
            }
            Pane::Diff | Pane::Destinations | Pane::Alerts => None,
            Pane::TestSend => self
                .test
                .steps
                .get(self.test.viewing)
                .and_then(|s| s.message.get("messageId"))
                .and_then(|v| v.as_str())
                .map(str::to_string),
        };
        if let Some(id) = message_id {
            if self.pane != Pane::Diff {
                // Paused, so esc finds the row where it was.
                self.pause();
                self.came_from = Some(self.pane);
            }
            self.trace_of = Some(id);
            self.pane = Pane::Diff;
            self.diff_tab = 0;
            self.content.scroll = 0;
            return true;
        }
        false
    }

    /// Keys that scroll what a pane shows beside its list: every movement key on pane 3
    /// (it has no list), page keys on the collisions pane (j/k choose the collision there).
    fn scroll_content(&mut self, action: Action) -> bool {
        if self.detail {
            return false;
        }
        let scrolls = match self.pane {
            Pane::Diff => matches!(
                action,
                Action::Down
                    | Action::Up
                    | Action::PageDown
                    | Action::PageUp
                    | Action::Newest
                    | Action::Oldest
                    | Action::ContentDown
                    | Action::ContentUp
            ),
            Pane::Collisions => matches!(action, Action::ContentDown | Action::ContentUp),
            _ => false,
        };
        if !scrolls {
            return false;
        }
        let layout = self.content.layout.get();
        let last = layout.lines.saturating_sub(layout.height);
        let page = layout.height.saturating_sub(1).max(1);
        let v = &mut self.content;
        v.scroll = match action {
            Action::Down => v.scroll + 1,
            Action::Up => v.scroll.saturating_sub(1),
            // Half a box at a time: the side-by-side is read in steps, not lines.
            Action::ContentDown => v.scroll + (page / 2).max(1),
            Action::ContentUp => v.scroll.saturating_sub((page / 2).max(1)),
            Action::PageDown => v.scroll + page,
            Action::PageUp => v.scroll.saturating_sub(page),
            Action::Newest => 0,
            _ => last,
        }
        .min(last);
        true
    }
}

pub use crate::operator::operator_name;

/// Forget requests the alerts pane lists.
const PRIVACY_ROWS: usize = 20;
