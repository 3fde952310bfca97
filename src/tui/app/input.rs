//! Keys in, state changes out: what each key does to the dashboard's state (and which data it
//! asks the loader for). Pure, like the rest of the app state.

use super::*;

impl App {
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
                self.status.set(
                    "R retries on 2 (attempts), D and p act on 5 (destinations), A on 1 (stream)"
                        .into(),
                );
                return;
            }
        };
        match (&self.actions, action) {
            (Err(why), _) => self.status.set(format!("refused: {why}")),
            (Ok(()), None) => self.status.set("select a row first".into()),
            (Ok(()), Some(action)) => {
                self.pause();
                self.confirm = Some(action);
            }
        }
    }

    /// Go where a search led: the message's trace, or the profile.
    pub(super) fn found(&mut self, text: &str, hit: Option<SearchHit>) {
        self.detail = false;
        self.reload_now = true;
        self.generation += 1;
        match hit {
            Some(SearchHit::Message {
                message_id,
                matched,
            }) => {
                self.status
                    .set(format!("`{text}` is a {matched}: message {message_id}"));
                self.trace_of = Some(message_id);
                self.pane = Pane::Diff;
                self.diff_tab = 0;
            }
            Some(SearchHit::Profile { query }) => {
                self.status.set(format!("`{text}` identifies a profile"));
                self.pane = Pane::Profiles;
                let i = self.index();
                self.filters[i] = query;
            }
            None => {
                self.reload_now = false;
                self.status.set(format!(
                    "nothing matches `{text}` (tried messageId, event_id, request id, order_id, userId, anonymousId, email, phone)"
                ));
            }
        }
    }

    /// Handle a key; returns true when the data should be reloaded at once.
    pub fn handle_key(&mut self, key: KeyEvent) -> bool {
        let reload = self.handle_key_inner(key);
        if reload {
            self.generation += 1;
        }
        reload
    }

    pub(super) fn handle_key_inner(&mut self, key: KeyEvent) -> bool {
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
                        self.status
                            .set(format!("test user {}", self.test.user.label()));
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
                    self.status
                        .set(format!("searching the whole history for `{text}`…"));
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
                self.status.set(format!("{}…", action.name()));
                self.pending_action = Some((self.action_seq, action));
                return true;
            }
            self.status.set("cancelled: nothing was changed".into());
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
                    (false, _, _) => self.status.set("the test send needs the embedded pipeline (tracklayer tui or demo), not --attach".into()),
                    (_, None, _) => self.status.set("every call was sent; r starts a new run".into()),
                    (_, Some(_), true) => self.status.set("the walk stopped at a failed stage: fix it, then r for a new run".into()),
                    (_, Some(i), false) => {
                        self.pending_send = Some(i);
                        self.test.viewing = i;
                        self.test.revealed = 1;
                        self.test.stages_up = 0;
                        self.selected[7] = i;
                    }
                }
                return false;
            }
            Action::NextStage if self.pane == Pane::TestSend => {
                self.test.revealed += 1;
                self.test.stages_up = 0;
                return true;
            }
            // The stage list scrolls: what the last key revealed is in view, pgup/pgdn read
            // what came before it.
            Action::PageUp if self.pane == Pane::TestSend => {
                self.test.stages_up += 5;
                return false;
            }
            Action::PageDown if self.pane == Pane::TestSend => {
                self.test.stages_up = self.test.stages_up.saturating_sub(5);
                return false;
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
                self.test.stages_up = 0;
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
                    self.status.set(format!(
                        "{} paused: the selection stays on its row (f or g: follow)",
                        self.pane.title()
                    ));
                } else {
                    self.follow_newest();
                    self.status
                        .set(format!("{}: following the newest", self.pane.title()));
                }
                return true;
            }
            Action::ContentDown | Action::ContentUp => {
                if !self.preview_move(action == Action::ContentDown) {
                    self.status.set(
                        "J / K scroll the collision side-by-side (6) and pane 3, and a draft's groups (4)"
                            .into(),
                    )
                }
            }
            Action::PreviewDraft if self.pane == Pane::Unmapped => self.ask_for_draft(),
            Action::ActivateDraft if self.pane == Pane::Unmapped => self.ask_to_activate(),
            Action::PreviewDraft | Action::ActivateDraft => self
                .status
                .set("m previews a draft mapping table on 4 (unmapped), a activates it".into()),
            Action::NextTab => self.diff_tab += 1,
            Action::PreviousTab => self.diff_tab = self.diff_tab.saturating_sub(1),
            Action::Theme => {
                self.theme_index = (self.theme_index + 1) % self.themes.len();
                self.status.set(format!("theme: {}", self.theme().name));
            }
        }
        false
    }

    /// Keys of an open detail viewport: they scroll it, never the list behind it. `None`:
    /// not a detail key (pane switches, help, quit go on as usual).
    pub(super) fn detail_key(&mut self, key: &KeyEvent) -> Option<bool> {
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
                    self.status
                        .set("copied the request as a curl command (secrets stay REDACTED)".into());
                }
                _ => self.status.set("nothing to copy as curl here".into()),
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
                    self.status
                        .set(format!("copied {} bytes to the clipboard", body.len()));
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
                self.status.set(format!(
                    "copied the raw message ({} bytes) to the clipboard",
                    text.len()
                ));
                self.clipboard = Some(text);
            }
            None => self
                .status
                .set("c copies a raw message on the diff and collisions panes".into()),
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
