//! Pane 2: delivery attempts, each with its request and the platform's response.

use ratatui::layout::Rect;
use ratatui::widgets::{Cell, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::widgets::*;
use crate::tui::app::App;

pub(super) fn deliveries(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let fleet = app.snapshot.attempts.iter().any(|a| a.node.is_some());
    let mut columns = vec![
        col("time", 12, 2),
        col("destination", 11, 0),
        col("event", 16, 3),
        col("event_id", 0, 0).up_to(
            app.snapshot.attempts.iter().map(|a| a.event_id.as_str()),
            super::stream::ID_WIDTH,
        ),
        col("try", 4, 4),
        col("outcome", 9, 0),
        col("http", 5, 1),
        col("latency", 8, 4),
        col("next retry", 12, 3),
        col("reason", 0, 2),
    ];
    if fleet {
        columns.insert(2, col("node", 16, 5));
    }
    let rows: Vec<Vec<Cell>> = app
        .snapshot
        .attempts
        .iter()
        .map(|a| {
            let next = match (a.outcome.as_str(), a.next_attempt_ms) {
                ("retry", Some(ms)) => clock(ms),
                _ => String::new(),
            };
            let mut cells = vec![
                Cell::from(clock(a.at_ms)),
                Cell::from(a.destination.clone()),
                Cell::from(a.destination_event.clone()),
                Cell::from(middle_cut(
                    &safe(&a.event_id),
                    super::stream::ID_WIDTH as usize,
                )),
                Cell::from(format!("#{}", a.attempt)),
                Cell::from(word(theme, &a.outcome)),
                Cell::from(
                    a.status_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "—".into()),
                ),
                Cell::from(a.latency_ms.map(|l| format!("{l} ms")).unwrap_or_default()),
                Cell::from(next),
                Cell::from(muted(theme, safe(a.reason.as_deref().unwrap_or_default()))),
            ];
            if fleet {
                cells.insert(2, node_cell(theme, &a.node));
            }
            cells
        })
        .collect();
    let t = fitted_table(theme, &columns, rows, area.width, pane_title(app, ""));
    render_list(frame, t, area, app);
    if app.detail {
        match &app.snapshot.request {
            Some(r) => super::detail::draw_viewport(
                frame,
                area,
                app,
                "Request sent and response received (secrets redacted) · y copy as curl · c copy body",
                super::detail::attempt_detail(theme, r),
            ),
            None => {
                let rect = centered(area, area.width.saturating_sub(6), 5);
                frame.render_widget(Clear, rect);
                frame.render_widget(
                    Paragraph::new(
                        "no request was sent for this attempt (refused before sending; see the reason)",
                    )
                    .wrap(Wrap { trim: false })
                    .block(block(theme, " Attempt · esc closes ")),
                    rect,
                );
            }
        }
    }
}
