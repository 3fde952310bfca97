//! Pane 4: names not in the mapping table, with near misses.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Paragraph, Wrap};
use ratatui::Frame;

use super::widgets::*;
use crate::tui::app::App;

pub(super) fn unmapped(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let chunks = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Min(3), Constraint::Length(4)])
        .split(area);
    let columns = [
        col("Segment event (as delivered)", 0, 0),
        col("count", 7, 0),
        col("first seen", 25, 3),
        col("last seen", 25, 2),
        col("env", 12, 4),
        col("suggested mapping", 0, 1),
    ];
    let rows: Vec<Vec<Cell>> = app
        .snapshot
        .unmapped
        .iter()
        .map(|g| {
            vec![
                Cell::from(Span::styled(
                    safe(&g.segment_event),
                    theme.style(theme.unmapped),
                )),
                Cell::from(g.count.to_string()),
                Cell::from(format_ms(g.first_seen_ms)),
                Cell::from(format_ms(g.last_seen_ms)),
                Cell::from(g.environments.clone()),
                Cell::from(
                    g.suggestion
                        .clone()
                        .map(|s| format!("→ {s}"))
                        .unwrap_or_else(|| "add a mapping row".into()),
                ),
            ]
        })
        .collect();
    let t = fitted_table(theme, &columns, rows, area.width, pane_title(app, ""));
    render_list(frame, t, chunks[0], app);
    let reason = app
        .snapshot
        .unmapped
        .get(app.selection())
        .map(|g| safe(&g.reason))
        .unwrap_or_else(|| {
            "No unmapped events: every track call matched the mapping table.".into()
        });
    frame.render_widget(
        Paragraph::new(reason)
            .wrap(Wrap { trim: true })
            .block(block(theme, " why ")),
        chunks[1],
    );
}
