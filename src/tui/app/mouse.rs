//! The mouse: a click selects a tab or a row (a click on the selected row opens it), the wheel
//! moves through a list or scrolls an open detail. Where things are comes from the last frame
//! ([`Hits`], written while drawing), so a click means what the user saw under the pointer.

use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Position, Rect};

use super::{App, Pane};

/// Rows the wheel moves per notch.
const WHEEL_ROWS: isize = 3;

/// Where the last frame drew what can be clicked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hits {
    /// Each tab on the tab row: its columns `[from, to)` and its pane.
    pub tabs: Vec<(u16, u16, usize)>,
    pub tab_row: Option<u16>,
    /// The current list's visible rows (below its header) and which row is drawn first.
    pub list: Option<ListHits>,
    /// An open detail viewport, which takes the wheel.
    pub detail: Option<Rect>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListHits {
    pub rows: Rect,
    pub offset: usize,
}

impl App {
    /// Handle a mouse event; returns true when the data should be reloaded at once.
    pub fn handle_mouse(&mut self, event: MouseEvent) -> bool {
        // A prompt or a question owns the input until it is answered by a key.
        if self.editing_filter.is_some() || self.editing_search.is_some() || self.confirm.is_some()
        {
            return false;
        }
        if self.help {
            if matches!(event.kind, MouseEventKind::Down(_)) {
                self.help = false;
            }
            return false;
        }
        let at = Position::new(event.column, event.row);
        let hits = self.hits.borrow().clone();
        let reload = match event.kind {
            MouseEventKind::ScrollDown | MouseEventKind::ScrollUp => {
                let down = event.kind == MouseEventKind::ScrollDown;
                if self.detail && hits.detail.is_some_and(|r| r.contains(at)) {
                    let code = if down { KeyCode::Down } else { KeyCode::Up };
                    for _ in 0..WHEEL_ROWS {
                        let _ = self.detail_key(&KeyEvent::new(code, KeyModifiers::NONE));
                    }
                    false
                } else if self.pane == Pane::TestSend {
                    let code = if down { KeyCode::Down } else { KeyCode::Up };
                    self.handle_key_inner(KeyEvent::new(code, KeyModifiers::NONE))
                } else {
                    let reload = self.move_selection(if down { WHEEL_ROWS } else { -WHEEL_ROWS });
                    reload || matches!(self.pane, Pane::Collisions | Pane::Deliveries)
                }
            }
            MouseEventKind::Down(MouseButton::Left) => self.click(at, &hits),
            _ => false,
        };
        if reload {
            self.generation += 1;
        }
        reload
    }

    fn click(&mut self, at: Position, hits: &Hits) -> bool {
        if hits.tab_row == Some(at.y) {
            return match hits
                .tabs
                .iter()
                .find(|(from, to, _)| (*from..*to).contains(&at.x))
            {
                Some((_, _, pane)) => {
                    self.pane = Pane::ALL[*pane];
                    self.detail = false;
                    true
                }
                None => false,
            };
        }
        if self.detail {
            // Clicks inside an open detail do nothing; outside it they close it.
            if hits.detail.is_some_and(|r| r.contains(at)) {
                return false;
            }
            self.detail = false;
            return true;
        }
        let Some(list) = hits.list.filter(|l| l.rows.contains(at)) else {
            return false;
        };
        let row = list.offset + usize::from(at.y - list.rows.y);
        if row >= self.rows() {
            return false;
        }
        if row == self.selection() {
            // A second click on the highlighted row opens it, like Enter.
            return self.handle_key_inner(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        }
        let delta = row as isize - self.selection() as isize;
        let reload = self.move_selection(delta);
        reload || matches!(self.pane, Pane::Collisions | Pane::Deliveries)
    }
}
