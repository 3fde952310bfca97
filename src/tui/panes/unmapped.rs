//! Pane 4: names not in the mapping table, with near misses.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Wrap};
use ratatui::Frame;

use super::widgets::*;
use crate::tui::app::App;

pub(super) fn unmapped(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    // A draft being previewed takes the lower part of the pane.
    let area = if app.preview.open() {
        let halves = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Percentage(40), Constraint::Min(8)])
            .split(area);
        draft_preview(frame, halves[1], app);
        halves[0]
    } else {
        area
    };
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

/// What the draft would make of the stored traffic: its groups (changed first, `~`), the
/// selected group's examples, and each destination's payload changes with one field diff.
fn draft_preview(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let p = &app.preview;
    let mut scroll = 0u16;
    let (title, mut lines) = match (&p.report, &p.error) {
        (_, Some(error)) => (
            format!(" draft {} ", safe(&p.draft)),
            vec![Line::from(Span::styled(
                safe(error),
                theme.style(theme.failed),
            ))],
        ),
        (None, None) => (
            format!(" draft {} ", safe(&p.draft)),
            vec![Line::from(muted(
                theme,
                "replaying the stored messages through the draft…",
            ))],
        ),
        (Some(r), None) => {
            let title = format!(
                " draft {}: v{} → v{} · {} replayed · {} change · a activate · J/K move ",
                safe(&file_name(&p.draft)),
                r.before_version,
                r.after_version,
                thousands(r.replayed as i64),
                thousands(r.changed as i64)
            );
            // What each destination would see first (one line each), then the groups (the
            // selected one kept in view), then the selected group's examples and a diff.
            let mut lines: Vec<Line> = r
                .destinations
                .iter()
                .map(|d| {
                    Line::from(vec![
                        Span::styled(format!("{}: ", d.name), theme.title()),
                        Span::raw(format!("{} payload(s) would change", d.payloads_changed)),
                    ])
                })
                .collect();
            let first_group = lines.len();
            lines.extend(r.groups.iter().enumerate().map(|(i, g)| {
                let changed = g.before != g.after;
                let text = format!(
                    "{} {:<32} {:>14} → {:<14} {:>9}",
                    if changed { "~" } else { " " },
                    safe(&g.segment_event),
                    g.before,
                    g.after,
                    thousands(g.count as i64)
                );
                let style = if i == p.selected {
                    theme.highlight()
                } else if changed {
                    theme.style(theme.diff_changed)
                } else {
                    theme.style(theme.text)
                };
                Line::from(Span::styled(text, style))
            }));
            if let Some(g) = r.groups.get(p.selected) {
                lines.push(Line::from(muted(
                    theme,
                    format!(
                        "  {} e.g. {}",
                        safe(&g.segment_event),
                        g.example_message_ids
                            .iter()
                            .map(|m| safe(m))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )));
                // Why a changed group sends nothing somewhere: the route it would not take.
                for n in &g.not_sent {
                    lines.push(Line::from(vec![
                        Span::styled(
                            format!(
                                "  not sent to {}: {} ×{} ",
                                n.destination, n.verdict, n.count
                            ),
                            theme.style(theme.retrying),
                        ),
                        muted(theme, safe(&n.reason)),
                    ]));
                }
            }
            for d in &r.destinations {
                for example in d.examples.iter().take(1) {
                    lines.push(Line::from(muted(
                        theme,
                        format!("  {} payload e.g. {}", d.name, safe(&example.message_id)),
                    )));
                    for diff in &example.diff {
                        lines.push(Line::from(Span::styled(
                            format!("    {}", safe(diff)),
                            theme.style(theme.diff_changed),
                        )));
                    }
                }
            }
            scroll = (first_group + p.selected)
                .saturating_sub(area.height.saturating_sub(4) as usize) as u16;
            lines.push(Line::from(muted(theme, r.note)));
            (title, lines)
        }
    };
    if lines.is_empty() {
        lines.push(Line::from("nothing stored to replay"));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .scroll((scroll, 0))
            .block(block(theme, title)),
        area,
    );
}

/// The draft's file name: its directory is in the `m` prompt, and the title's room goes to what
/// the engineer acts on (the version, the changes, `a`).
fn file_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}
