//! Pane 1: the live stream of messages and refused requests.

use ratatui::layout::Rect;
use ratatui::widgets::Cell;
use ratatui::Frame;

use super::widgets::*;
use crate::tui::app::App;

/// The most an id column takes; longer ids are cut in the middle.
pub(super) const ID_WIDTH: u16 = 36;

pub(super) fn stream(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let fleet = app.snapshot.stream.iter().any(|r| r.node.is_some());
    let stream = &app.snapshot.stream;
    let mut columns = vec![
        col("time", 12, 2),
        col("env", 11, 3),
        col("status", 13, 0),
        col("type", 8, 4),
        col("event", 0, 1).up_to(stream.iter().filter_map(|r| r.event.as_deref()), 32),
        col("messageId", 0, 0).up_to(
            stream.iter().filter_map(|r| r.message_id.as_deref()),
            ID_WIDTH,
        ),
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
            // What `status:` matches: the stored status, or the pipeline's outcome where it says
            // more (a Segment retry is a duplicate and a collision: both words show).
            let state = match (r.status.as_str(), r.outcome.as_deref()) {
                ("accepted", Some(outcome)) => outcome.to_string(),
                ("duplicate", Some("collision")) => "dup·collision".to_string(),
                (status, _) => status.to_string(),
            };
            let mut cells = vec![
                Cell::from(clock(r.received_at_ms)),
                Cell::from(r.environment.clone()),
                Cell::from(word(theme, &state)),
                Cell::from(opt(&r.message_type)),
                Cell::from(opt(&r.event)),
                Cell::from(middle_cut(&opt(&r.message_id), ID_WIDTH as usize)),
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
