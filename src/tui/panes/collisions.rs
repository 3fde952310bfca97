//! Pane 6: dedup collisions, winner against loser.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Wrap};
use ratatui::Frame;

use super::widgets::*;
use crate::tui::app::App;

pub(super) fn collisions(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let chunks = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Percentage(40),
            Constraint::Length(2),
            Constraint::Min(4),
        ])
        .split(area);
    let columns = [
        col("time", 12, 2),
        col("kind", 20, 0),
        col("event_id", 0, 1).up_to(
            app.snapshot.collisions.iter().map(|c| c.event_id.as_str()),
            super::stream::ID_WIDTH,
        ),
        col("winner (first)", 0, 0).up_to(
            app.snapshot
                .collisions
                .iter()
                .filter_map(|c| c.winner_message_id.as_deref()),
            super::stream::ID_WIDTH,
        ),
        col("collapsed", 0, 0).up_to(
            app.snapshot
                .collisions
                .iter()
                .filter_map(|c| c.message_id.as_deref()),
            super::stream::ID_WIDTH,
        ),
        col("why", 0, 2),
    ];
    let rows: Vec<Vec<Cell>> = app
        .snapshot
        .collisions
        .iter()
        .map(|c| {
            vec![
                Cell::from(clock(c.detected_at_ms)),
                Cell::from(Span::styled(c.kind.clone(), theme.style(theme.blocked))),
                Cell::from(middle_cut(
                    &safe(&c.event_id),
                    super::stream::ID_WIDTH as usize,
                )),
                Cell::from(middle_cut(
                    &opt(&c.winner_message_id),
                    super::stream::ID_WIDTH as usize,
                )),
                Cell::from(middle_cut(
                    &opt(&c.message_id),
                    super::stream::ID_WIDTH as usize,
                )),
                Cell::from(muted(theme, collision_kind(&c.kind).explain())),
            ]
        })
        .collect();
    let t = fitted_table(theme, &columns, rows, area.width, pane_title(app, ""));
    render_list(frame, t, chunks[0], app);
    let selected = app.snapshot.collisions.get(app.selection());
    let why = selected
        .map(|c| collision_kind(&c.kind).explain().to_string())
        .unwrap_or_else(|| match app.filter() {
            "" => "No collisions: every event_id arrived once.".into(),
            f => format!(
                "No collision matches `{}` (esc clears the filter).",
                safe(f)
            ),
        });
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::raw(" "),
            Span::styled(why, theme.style(theme.blocked)),
        ]))
        .wrap(Wrap { trim: true }),
        chunks[1],
    );
    let halves = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(chunks[2]);
    let Some((winner, later)) = app
        .snapshot
        .collision_raws
        .clone()
        .filter(|_| selected.is_some())
    else {
        frame.render_widget(
            Paragraph::new(" Select a collision: its two arrivals show here side by side.")
                .block(block(theme, " first arrival · later arrival ")),
            chunks[2],
        );
        return;
    };
    // Lines that differ between the two messages are marked `≠` and drawn in the "changed"
    // colour on both sides: neither arrival is an error, and the winner is never red.
    let (left, right) = (pretty(&winner), pretty(&later));
    let left_lines: Vec<&str> = left.lines().collect();
    let right_lines: Vec<&str> = right.lines().collect();
    let changed = theme.style(theme.diff_changed).add_modifier(Modifier::BOLD);
    let mark = |lines: &[&str], other: &[&str]| -> Vec<Line<'static>> {
        lines
            .iter()
            .map(|l| {
                if other.contains(l) {
                    Line::from(format!("  {l}"))
                } else {
                    Line::from(Span::styled(format!("≠ {l}"), changed))
                }
            })
            .collect()
    };
    // PgDn/PgUp scroll both sides together (j/k choose the collision).
    let lines = left_lines.len().max(right_lines.len());
    let scroll = content_scroll(app, lines, halves[0]);
    let note = scroll_note(app, lines, halves[0]);
    frame.render_widget(
        Paragraph::new(mark(&left_lines, &right_lines))
            .scroll((scroll, 0))
            .block(block(theme, format!(" first arrival (kept){note}"))),
        halves[0],
    );
    frame.render_widget(
        Paragraph::new(mark(&right_lines, &left_lines))
            .scroll((scroll, 0))
            .block(block(theme, " later arrival (collapsed; ≠ differs) ")),
        halves[1],
    );
}

fn collision_kind(kind: &str) -> crate::pipeline::dedup::CollisionKind {
    match kind {
        "segment_retry" => crate::pipeline::dedup::CollisionKind::SegmentRetry,
        "duplicate_order" => crate::pipeline::dedup::CollisionKind::DuplicateOrder,
        _ => crate::pipeline::dedup::CollisionKind::ConflictingPayload,
    }
}
