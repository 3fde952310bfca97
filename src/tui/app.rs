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

mod input;
mod keys;
mod loader;
mod mouse;
mod preview;
pub use keys::{
    action_for, detail_action_for, footer_keys, Action, DetailAction, Key, DETAIL_KEYS,
    FILTER_HELP, KEYS,
};
pub use loader::{act, load, Query, Seek, Snapshot, ROWS};
pub use mouse::{Hits, ListHits};
pub use preview::{DraftAsk, MappingPreview};

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
    /// Lines the stage list is scrolled up from its end (0: the newest stage in view).
    pub stages_up: usize,
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
        self.stages_up = 0;
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
    /// A draft to preview, and the unmapped name (with the name it resembles) a new draft
    /// should map.
    pub pending_preview: Option<preview::DraftAsk>,
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
    pub status: Status,
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
            status: Status::default(),
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
                self.status.set(match result {
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
}

pub use crate::operator::operator_name;

/// The last thing the dashboard told the user: shown for a few seconds, then it gives its line
/// back to the keys.
#[derive(Debug, Clone, Default)]
pub struct Status {
    text: Option<String>,
    at: Option<std::time::Instant>,
}

/// How long a status stays on screen.
pub const STATUS_SHOWN: std::time::Duration = std::time::Duration::from_secs(8);

impl Status {
    pub fn set(&mut self, text: String) {
        self.text = Some(text);
        self.at = Some(std::time::Instant::now());
    }

    pub fn clear(&mut self) {
        self.text = None;
        self.at = None;
    }

    /// The status, while it is fresh.
    pub fn shown(&self) -> Option<&str> {
        self.text
            .as_deref()
            .filter(|_| self.at.is_some_and(|at| at.elapsed() < STATUS_SHOWN))
    }
}
