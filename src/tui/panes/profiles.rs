//! Pane 7: profiles and the identity graph.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;
use serde_json::Value;

use super::widgets::*;
use crate::tui::app::App;

pub(super) fn profiles(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let Some(p) = &app.snapshot.profile else {
        let hint = if app.filter().is_empty() {
            "Press / and type a userId, anonymousId, email or phone to look up a profile."
                .to_string()
        } else {
            format!(
                "No profile for `{}` (tried userId, anonymousId, email and phone).",
                safe(app.filter())
            )
        };
        frame.render_widget(
            Paragraph::new(hint).block(block(theme, pane_title(app, ""))),
            area,
        );
        return;
    };
    let halves = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(area);
    let mut left = vec![
        Line::from(vec![
            Span::styled(format!("profile {}", p.id), theme.title()),
            Span::raw(format!("  userId {}", opt(&p.user_id))),
        ]),
        Line::from(muted(
            theme,
            format!(
                "first seen {} · last seen {}",
                format_ms(p.first_seen_ms),
                format_ms(p.last_seen_ms)
            ),
        )),
        Line::from(Span::styled("identities", theme.title())),
    ];
    left.extend(
        p.identities
            .iter()
            .map(|(k, v)| Line::from(format!("  {k:<13} {}", safe(v)))),
    );
    left.push(Line::from(Span::styled("consent", theme.title())));
    match &p.consent {
        Some(Value::Object(c)) => {
            for (category, v) in c {
                let state = if v == &Value::Bool(true) {
                    "delivered"
                } else {
                    "blocked"
                };
                left.push(Line::from(vec![
                    Span::raw(format!("  {:<13} ", safe(category))),
                    Span::styled(v.to_string(), theme.style(theme.status(state))),
                ]));
            }
            left.push(Line::from(muted(
                theme,
                format!("  from message {}", opt(&p.consent_source)),
            )));
        }
        _ => left.push(Line::from(muted(
            theme,
            "  none stored (not enforced unless the event carries it)",
        ))),
    }
    left.push(Line::from(Span::styled("identity changes", theme.title())));
    for c in &p.changes {
        left.push(Line::from(vec![
            word(
                theme,
                if c.kind == "conflict" {
                    "blocked"
                } else {
                    "ok"
                },
            ),
            Span::raw(format!(" {} {}", c.kind, safe(&c.detail))),
        ]));
    }
    frame.render_widget(
        Paragraph::new(left)
            .wrap(Wrap { trim: true })
            .block(block(theme, pane_title(app, ""))),
        halves[0],
    );
    let mut right: Vec<Line> = vec![Line::from(Span::styled("traits", theme.title()))];
    right.extend(pretty(&p.traits).lines().map(|l| Line::from(l.to_string())));
    right.push(Line::from(Span::styled(
        "recent events (enter traces the newest)",
        theme.title(),
    )));
    for e in &app.snapshot.profile_events {
        right.push(Line::from(format!(
            "  {}  {:<14} {}  {}",
            format_ms(e.event_time_ms),
            e.name,
            safe(&e.event_id),
            safe(&e.message_id)
        )));
    }
    frame.render_widget(
        Paragraph::new(right).block(block(theme, " traits and events ")),
        halves[1],
    );
}
