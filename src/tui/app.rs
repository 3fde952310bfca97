//! Dashboard state and input handling. Pure: keys in, state changes and data requests out; the
//! data arrives as [`Snapshot`]s from the loader thread.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::Value;

use super::theme::Theme;
use std::collections::BTreeMap;

use crate::store::model::alerts::StoredAlert;
use crate::store::views::{
    AttemptRow, DestinationStats, FleetNode, ProfileEvent, StreamRow, UnmappedGroup,
};
use crate::store::{
    DashboardReader, MessageTrace, StoreError, StoredCollision, StoredHttpRequest, StoredProfile,
};
use crate::testsend::{self, SendResult, Stage, Step};

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

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    Pane(usize),
    NextPane,
    PreviousPane,
    Down,
    Up,
    PageDown,
    PageUp,
    Open,
    Close,
    Filter,
    Freeze,
    NextTab,
    PreviousTab,
    Theme,
    SendNext,
    NextStage,
    NewRun,
}

/// The key map; the help overlay is generated from it.
pub const KEYMAP: [(&str, &str, Action); 25] = [
    ("1", "live stream", Action::Pane(0)),
    ("2", "delivery attempts", Action::Pane(1)),
    ("3", "raw vs canonical diff", Action::Pane(2)),
    ("4", "unmapped events", Action::Pane(3)),
    ("5", "destination diagnostics", Action::Pane(4)),
    ("6", "dedup collisions", Action::Pane(5)),
    ("7", "profiles", Action::Pane(6)),
    ("8", "controlled test send", Action::Pane(7)),
    ("9", "alerts: firing and history", Action::Pane(8)),
    ("tab", "next pane", Action::NextPane),
    ("shift-tab", "previous pane", Action::PreviousPane),
    ("j / ↓", "select next row", Action::Down),
    ("k / ↑", "select previous row", Action::Up),
    ("pgdn", "ten rows down", Action::PageDown),
    ("pgup", "ten rows up", Action::PageUp),
    (
        "enter",
        "open: trace the message / show request and response",
        Action::Open,
    ),
    ("esc", "close the detail, clear the filter", Action::Close),
    (
        "/",
        "filter this pane (event, destination, status, id); on Profiles: look up",
        Action::Filter,
    ),
    ("f", "freeze / unfreeze the live stream", Action::Freeze),
    (
        "← / →",
        "previous / next payload tab (diff pane)",
        Action::NextTab,
    ),
    ("t", "next theme", Action::Theme),
    ("s", "test send: send the next call", Action::SendNext),
    (
        "space",
        "test send: reveal the next stage",
        Action::NextStage,
    ),
    ("r", "test send: start a new run", Action::NewRun),
    ("? / q", "help / quit", Action::Help),
];

pub fn action_for(key: &KeyEvent) -> Option<Action> {
    Some(match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Action::Quit,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Char(c @ '1'..='9') => Action::Pane(c as usize - '1' as usize),
        KeyCode::Tab => Action::NextPane,
        KeyCode::BackTab => Action::PreviousPane,
        KeyCode::Char('j') | KeyCode::Down => Action::Down,
        KeyCode::Char('k') | KeyCode::Up => Action::Up,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::Enter => Action::Open,
        KeyCode::Esc => Action::Close,
        KeyCode::Char('/') => Action::Filter,
        KeyCode::Char('f') => Action::Freeze,
        KeyCode::Right | KeyCode::Char('l') => Action::NextTab,
        KeyCode::Left | KeyCode::Char('h') => Action::PreviousTab,
        KeyCode::Char('t') => Action::Theme,
        KeyCode::Char('s') => Action::SendNext,
        KeyCode::Char(' ') | KeyCode::Char('n') => Action::NextStage,
        KeyCode::Char('r') => Action::NewRun,
        _ => return None,
    })
}

/// What the loader is asked to fetch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    pub pane: Option<usize>,
    pub filter: String,
    /// The message whose trace the diff pane shows (None: the newest event).
    pub trace_of: Option<String>,
    /// The HTTP request behind the selected attempt (deliveries pane detail).
    pub request_row: Option<i64>,
    /// The selected collision (raw messages for the side-by-side).
    pub collision: Option<i64>,
    /// The test-send call being walked: its messageId and what the ingest answered.
    pub test_call: Option<(String, SendResult)>,
    /// Test mode per destination (for the payload stage).
    pub test_modes: BTreeMap<String, Option<bool>>,
}

/// Everything the panes draw, loaded off the UI thread.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub loaded_at_ms: i64,
    pub totals: (i64, i64),
    /// The fleet's nodes (empty on SQLite).
    pub nodes: Vec<FleetNode>,
    /// Open alerts first, then the newest resolved (the banner and the alerts pane).
    pub alerts: Vec<StoredAlert>,
    pub stream: Vec<StreamRow>,
    pub attempts: Vec<AttemptRow>,
    pub request: Option<StoredHttpRequest>,
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

const ROWS: usize = 500;
/// Alerts are few (one row per firing); the pane keeps this many of the newest.
const ALERT_ROWS: usize = 200;

/// Load what `query` asks for. Runs on the loader thread.
pub fn load(
    reader: &mut dyn DashboardReader,
    query: &Query,
    destinations: &[String],
    now_ms: i64,
) -> Snapshot {
    let mut snap = Snapshot {
        loaded_at_ms: now_ms,
        ..Snapshot::default()
    };
    let result: Result<(), StoreError> = (|| {
        snap.totals = reader.totals()?;
        snap.nodes = reader.nodes()?;
        snap.alerts = reader.alerts(ALERT_ROWS)?;
        if query.pane == Some(Pane::ALL.len() - 1) && !query.filter.is_empty() {
            let f = query.filter.as_str();
            snap.alerts
                .retain(|a| a.rule.contains(f) || a.subject.contains(f) || a.state.contains(f));
        }
        match query.pane.map(|i| Pane::ALL[i.min(Pane::ALL.len() - 1)]) {
            Some(Pane::Stream) | None => snap.stream = reader.stream(ROWS, &query.filter)?,
            Some(Pane::Deliveries) => {
                snap.attempts = reader.recent_attempts(ROWS, &query.filter)?;
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
                snap.collisions = reader.recent_collisions(ROWS)?;
                if !query.filter.is_empty() {
                    let f = query.filter.as_str();
                    snap.collisions.retain(|c| {
                        c.kind.contains(f)
                            || c.event_id.contains(f)
                            || c.message_id.as_deref().is_some_and(|m| m.contains(f))
                            || c.winner_message_id
                                .as_deref()
                                .is_some_and(|m| m.contains(f))
                    });
                }
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
                    snap.test_stages = testsend::stages(sent, trace.as_ref(), &query.test_modes);
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

/// The dashboard's state.
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
    pub test_modes: BTreeMap<String, Option<bool>>,
    /// Where test calls go; `None` when attached to another instance's database.
    pub enabled: bool,
    pub skip: Vec<String>,
    /// The test user (edit with `/`: a userId, an email, or both separated by a space).
    pub user: testsend::TestUser,
}

impl TestSendState {
    pub fn new(test_modes: BTreeMap<String, Option<bool>>, enabled: bool) -> TestSendState {
        let skip: Vec<String> = test_modes
            .iter()
            .filter(|(_, m)| m.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        let mut state = TestSendState {
            test_modes,
            enabled,
            skip,
            ..TestSendState::default()
        };
        state.new_run();
        state
    }

    pub fn new_run(&mut self) {
        let run_id = chrono::Utc::now().format("%H%M%S%3f").to_string();
        self.steps = testsend::scenario(&self.user, &run_id, &[], &self.skip);
        self.sent = vec![None; self.steps.len()];
        self.viewing = 0;
        self.revealed = 0;
    }

    /// Set the test user from `/` input: words with `@` are the email, others the userId.
    pub fn edit_user(&mut self, input: &str) {
        for word in input.split_whitespace() {
            if word.contains('@') {
                self.user.email = word.to_string();
            } else {
                self.user.user_id = word.to_string();
            }
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
    pub frozen: bool,
    pub help: bool,
    /// The detail popup (request/response) of the deliveries pane.
    pub detail: bool,
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
            frozen: false,
            help: false,
            detail: false,
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

    fn index(&self) -> usize {
        Pane::ALL.iter().position(|p| *p == self.pane).unwrap_or(0)
    }

    pub fn selection(&self) -> usize {
        self.selected[self.index()]
    }

    pub fn filter(&self) -> &str {
        &self.filters[self.index()]
    }

    fn rows(&self) -> usize {
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
            test_modes: self.test.test_modes.clone(),
        }
    }

    /// Apply new data; keep the selection in range.
    pub fn apply(&mut self, snapshot: Snapshot) {
        if self.frozen && self.pane == Pane::Stream {
            return;
        }
        self.snapshot = snapshot;
        let rows = self.rows();
        let i = self.index();
        if rows > 0 && self.selected[i] >= rows {
            self.selected[i] = rows - 1;
        }
    }

    fn move_selection(&mut self, delta: isize) {
        let rows = self.rows();
        let i = self.index();
        if rows == 0 {
            self.selected[i] = 0;
            return;
        }
        let next = (self.selected[i] as isize + delta).clamp(0, rows as isize - 1);
        self.selected[i] = next as usize;
    }

    /// Handle a key; returns true when the data should be reloaded at once.
    pub fn handle_key(&mut self, key: KeyEvent) -> bool {
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
                        self.status = Some(format!(
                            "test user {} <{}>",
                            self.test.user.user_id, self.test.user.email
                        ));
                    } else {
                        self.filters[i] = text;
                    }
                    return true;
                }
                KeyCode::Esc => self.editing_filter = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            return false;
        }
        if self.help {
            self.help = false;
            return false;
        }
        let Some(action) = action_for(&key) else {
            return false;
        };
        match action {
            Action::Quit => self.quit = true,
            Action::Help => self.help = true,
            Action::Pane(n) => {
                self.pane = Pane::ALL[n.min(Pane::ALL.len() - 1)];
                self.detail = false;
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
            Action::Down | Action::Up if self.pane == Pane::TestSend => {
                self.move_selection(if action == Action::Down { 1 } else { -1 });
                self.test.viewing = self.selected[7];
                self.test.revealed = usize::MAX;
                return true;
            }
            Action::Down => self.move_selection(1),
            Action::Up => self.move_selection(-1),
            Action::PageDown => self.move_selection(10),
            Action::PageUp => self.move_selection(-10),
            Action::Open => return self.open(),
            Action::Close => {
                if self.detail {
                    self.detail = false;
                } else {
                    let i = self.index();
                    self.filters[i].clear();
                    if self.pane == Pane::Diff {
                        self.trace_of = None;
                    }
                }
                return true;
            }
            Action::Filter if self.pane == Pane::TestSend => {
                self.editing_filter = Some(format!(
                    "{} {}",
                    self.test.user.user_id, self.test.user.email
                ));
            }
            Action::Filter => self.editing_filter = Some(self.filter().to_string()),
            Action::Freeze => {
                self.frozen = !self.frozen;
                self.status = Some(if self.frozen {
                    "stream frozen (f to resume)".into()
                } else {
                    "stream live".into()
                });
            }
            Action::NextTab => self.diff_tab += 1,
            Action::PreviousTab => self.diff_tab = self.diff_tab.saturating_sub(1),
            Action::Theme => {
                self.theme_index = (self.theme_index + 1) % self.themes.len();
                self.status = Some(format!("theme: {}", self.theme().name));
            }
        }
        matches!(
            action,
            Action::Down | Action::Up | Action::PageDown | Action::PageUp
        ) && matches!(self.pane, Pane::Collisions | Pane::Deliveries)
    }

    /// Enter: follow the selected row to where its story is told.
    fn open(&mut self) -> bool {
        let selected = self.selection();
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
            self.trace_of = Some(id);
            self.pane = Pane::Diff;
            self.diff_tab = 0;
            self.frozen = false;
            return true;
        }
        false
    }
}
