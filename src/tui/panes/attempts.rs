//! Pane 2: delivery attempts, each with its request and the platform's response.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Cell, Clear, Paragraph, Row, TableState, Wrap};
use ratatui::Frame;
use serde_json::Value;

use super::widgets::*;
use crate::tui::app::App;

pub(super) fn deliveries(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let fleet = app.snapshot.attempts.iter().any(|a| a.node.is_some());
    let rows: Vec<Row> = app
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
                Cell::from(safe(&a.event_id)),
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
            Row::new(cells)
        })
        .collect();
    let mut header = vec![
        "time",
        "destination",
        "event",
        "event_id",
        "try",
        "outcome",
        "http",
        "latency",
        "next retry",
        "reason",
    ];
    let mut widths = vec![
        Constraint::Length(12),
        Constraint::Length(11),
        Constraint::Length(16),
        Constraint::Length(26),
        Constraint::Length(4),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(12),
        Constraint::Fill(1),
    ];
    with_node_column(fleet, &mut header, &mut widths, 2);
    let t = table(theme, &header, rows, widths, pane_title(app, ""));
    let mut state = TableState::default().with_selected(Some(app.selection()));
    frame.render_stateful_widget(t, area, &mut state);
    if app.detail {
        let rect = centered(
            area,
            area.width.saturating_sub(6),
            area.height.saturating_sub(2),
        );
        frame.render_widget(Clear, rect);
        let text = match &app.snapshot.request {
            Some(r) => {
                let mut lines = vec![Line::from(vec![
                    Span::styled("POST ", theme.title()),
                    Span::raw(r.url.clone().unwrap_or_default()),
                ])];
                if let Some(Value::Array(headers)) = &r.headers {
                    for h in headers {
                        lines.push(Line::from(muted(
                            theme,
                            format!(
                                "  {}: {}",
                                h[0].as_str().unwrap_or(""),
                                h[1].as_str().unwrap_or("")
                            ),
                        )));
                    }
                }
                let body = r
                    .body
                    .as_deref()
                    .map(|b| {
                        serde_json::from_str::<Value>(b)
                            .map(|v| pretty(&v))
                            .unwrap_or_else(|_| b.to_string())
                    })
                    .unwrap_or_default();
                lines.extend(body.lines().map(|l| Line::from(l.to_string())));
                let status = r
                    .status_code
                    .map(|c| c.to_string())
                    .or_else(|| r.error.clone())
                    .unwrap_or_default();
                lines.push(Line::from(vec![
                    Span::styled("response ", theme.title()),
                    word(
                        theme,
                        if r.status_code.is_some_and(|c| (200..300).contains(&c)) {
                            "delivered"
                        } else {
                            "failed"
                        },
                    ),
                    Span::raw(format!(
                        " {status} in {} ms",
                        r.latency_ms.unwrap_or_default()
                    )),
                ]));
                lines.extend(
                    r.response_body
                        .clone()
                        .unwrap_or_default()
                        .lines()
                        .map(|l| Line::from(l.to_string())),
                );
                Text::from(lines)
            }
            None => Text::from(
                "no request was sent for this attempt (refused before sending; see the reason)",
            ),
        };
        frame.render_widget(
            Paragraph::new(text).wrap(Wrap { trim: false }).block(block(
                theme,
                " Request sent and response received (secrets redacted) · esc closes ",
            )),
            rect,
        );
    }
}
