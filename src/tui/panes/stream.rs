//! Pane 1: the live stream of messages and refused requests.

use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::{Cell, Row, TableState};
use ratatui::Frame;

use super::widgets::*;
use crate::tui::app::App;

pub(super) fn stream(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let fleet = app.snapshot.stream.iter().any(|r| r.node.is_some());
    let rows: Vec<Row> = app
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
            Row::new(cells)
        })
        .collect();
    let mut header = vec![
        "time",
        "env",
        "status",
        "type",
        "event",
        "messageId",
        "reason",
    ];
    let mut widths = vec![
        Constraint::Length(12),
        Constraint::Length(11),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Percentage(22),
        Constraint::Percentage(22),
        Constraint::Fill(1),
    ];
    with_node_column(fleet, &mut header, &mut widths, 2);
    let t = table(theme, &header, rows, widths, pane_title(app, ""));
    let mut state = TableState::default().with_selected(Some(app.selection()));
    frame.render_stateful_widget(t, area, &mut state);
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
