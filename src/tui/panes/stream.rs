//! Pane 1: the live stream of messages and refused requests.

use ratatui::layout::Rect;
use ratatui::widgets::Cell;
use ratatui::Frame;

use super::widgets::*;
use crate::tui::app::App;

pub(super) fn stream(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let fleet = app.snapshot.stream.iter().any(|r| r.node.is_some());
    let mut columns = vec![
        col("time", 12, 2),
        col("env", 11, 3),
        col("status", 10, 0),
        col("type", 8, 4),
        col("event", 0, 1),
        col("messageId", 0, 0),
        col("reason", 0, 2),
    ];
    if fleet {
        columns.insert(2, col("node", 16, 5));
    }
    let rows: Vec<Vec<Cell>> = app
        .snapshot
        .stream
        .iter()
        .map(|r| {
            let state = r
                .outcome
                .clone()
                .filter(|_| r.status == "accepted")
                .unwrap_or_else(|| r.status.clone());
            let mut cells = vec![
                Cell::from(clock(r.received_at_ms)),
                Cell::from(r.environment.clone()),
                Cell::from(word(theme, &state)),
                Cell::from(opt(&r.message_type)),
                Cell::from(opt(&r.event)),
                Cell::from(opt(&r.message_id)),
                Cell::from(muted(theme, safe(r.reason.as_deref().unwrap_or_default()))),
            ];
            if fleet {
                cells.insert(2, node_cell(theme, &r.node));
            }
            cells
        })
        .collect();
    let t = fitted_table(theme, &columns, rows, area.width, pane_title(app, ""));
    render_list(frame, t, area, app);
    if app.detail {
        if let Some(r) = &app.snapshot.rejection {
            super::detail::draw_viewport(
                frame,
                area,
                app,
                "Refused request · c copy",
                super::detail::rejection_detail(theme, r),
            );
        }
    }
}
