//! The mapping preview in the dashboard (pane 4): open a draft file, read what it would make of
//! the stored traffic, put it in force. The preview itself runs on a thread of the event loop;
//! this is its state and its keys.

use std::path::PathBuf;

use ratatui::crossterm::event::{KeyCode, KeyEvent};

use super::{App, Pane};
use crate::stage::preview::PreviewReport;
use crate::store::model::actions::OperatorAction;

/// What `m`, enter asks the drafts thread: preview the draft at `path`, first writing one there
/// when there is none, with `adding` (an unmapped Segment name and the mapped name it
/// resembles) mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftAsk {
    pub path: PathBuf,
    pub adding: Option<(String, Option<String>)>,
}

/// What pane 4 shows of a draft.
#[derive(Debug, Default)]
pub struct MappingPreview {
    /// The draft file last opened (the prompt starts from it).
    pub draft: String,
    pub running: bool,
    pub report: Option<PreviewReport>,
    pub error: Option<String>,
    /// The group whose example is shown.
    pub selected: usize,
}

impl MappingPreview {
    pub fn open(&self) -> bool {
        self.running || self.report.is_some() || self.error.is_some()
    }
}

impl App {
    /// `m` on pane 4: ask for the draft file (a new one is written from the table in force).
    pub(super) fn ask_for_draft(&mut self) {
        if !self.drafts {
            self.status.set(
                "the mapping preview needs the embedded pipeline (tracklayer tui or demo), not --attach"
                    .into(),
            );
            return;
        }
        let last = if self.preview.draft.is_empty() {
            "draft.toml".to_string()
        } else {
            self.preview.draft.clone()
        };
        self.editing_draft = Some(last);
    }

    /// Keys while the draft's path is typed. Returns whether the key was taken.
    pub(super) fn draft_key(&mut self, key: &KeyEvent) -> bool {
        let Some(text) = &mut self.editing_draft else {
            return false;
        };
        match key.code {
            KeyCode::Enter => {
                let path = text.trim().to_string();
                self.editing_draft = None;
                if !path.is_empty() {
                    self.preview = MappingPreview {
                        draft: path.clone(),
                        running: true,
                        ..MappingPreview::default()
                    };
                    // A new draft (none at that path yet) maps the selected unmapped name.
                    let adding = self
                        .snapshot
                        .unmapped
                        .get(self.selection())
                        .map(|g| (g.segment_event.clone(), g.suggestion.clone()));
                    self.pending_preview = Some(DraftAsk {
                        path: PathBuf::from(path),
                        adding,
                    });
                    self.status
                        .set("replaying the stored messages through the draft…".into());
                }
            }
            KeyCode::Esc => self.editing_draft = None,
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) => text.push(c),
            _ => {}
        }
        true
    }

    /// `a` on pane 4 with a report: put the draft in force, asked first.
    pub(super) fn ask_to_activate(&mut self) {
        match &self.preview.report {
            Some(report) => {
                self.confirm = Some(OperatorAction::ActivateMapping {
                    version: report.after_version,
                    file: self.preview.draft.clone(),
                });
            }
            None => self
                .status
                .set("m opens a draft first; a puts it in force".into()),
        }
    }

    /// A confirmed activation goes to the event loop (it writes the mapping file), not to the
    /// store's operator actions alone.
    pub(super) fn confirmed_activation(&mut self, action: &OperatorAction) -> bool {
        if let OperatorAction::ActivateMapping { file, .. } = action {
            self.pending_activation = Some(PathBuf::from(file));
            self.status.set(format!("putting {file} in force…"));
            return true;
        }
        false
    }

    /// J / K on pane 4 move through the report's groups.
    pub(super) fn preview_move(&mut self, down: bool) -> bool {
        if self.pane != Pane::Unmapped || !self.preview.open() {
            return false;
        }
        let groups = self.preview.report.as_ref().map_or(0, |r| r.groups.len());
        self.preview.selected = if down {
            (self.preview.selected + 1).min(groups.saturating_sub(1))
        } else {
            self.preview.selected.saturating_sub(1)
        };
        true
    }
}
