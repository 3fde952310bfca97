//! Pane 3: raw Segment message against the canonical event and each platform payload.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs, Wrap};
use ratatui::Frame;
use serde_json::Value;

use super::widgets::*;
use crate::pipeline::diff::{self, DiffKind};
use crate::tui::app::App;

pub(super) fn diff_pane(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let Some(trace) = &app.snapshot.trace else {
        frame.render_widget(
            Paragraph::new(
                "No canonical event yet. Select a message in the live stream and press enter.",
            )
            .block(block(theme, pane_title(app, ""))),
            area,
        );
        return;
    };
    let first = &trace.arrivals[0];
    let raw: Value = serde_json::from_slice(&first.raw).unwrap_or(Value::Null);
    let event = trace.events.first();
    // A track call that collapsed onto an earlier event: its own canonical event is kept with
    // the collision (it was never sent), and that is what this pane shows for it.
    let own_rows: Vec<i64> = trace.arrivals.iter().map(|a| a.row_id).collect();
    let collapsed = trace
        .collisions
        .iter()
        .find(|c| own_rows.contains(&c.message_row));
    let collapsed_event: Option<crate::pipeline::CanonicalEvent> = collapsed
        .filter(|_| event.is_none())
        .and_then(|c| serde_json::from_value(c.canonical.clone()).ok());
    let status = crate::inspect::status(trace);
    let mut summary = vec![
        Span::raw(format!(
            " messageId {} ",
            safe(first.message_id.as_deref().unwrap_or("?"))
        )),
        word(theme, status),
    ];
    if let Some(e) = event {
        summary.push(Span::raw(format!(
            "  {} → {} (mapping v{})  event_id {}  ({})",
            safe(&e.canonical.segment_event),
            e.canonical.name,
            e.canonical.mapping_version,
            safe(&e.event_id),
            safe(&e.canonical.event_id_basis)
        )));
    } else if let (Some(c), Some(e)) = (collapsed, &collapsed_event) {
        summary.push(Span::styled(
            format!(
                "  {} → {}: collapsed onto event_id {} ({}), first sent as messageId {}",
                safe(&e.segment_event),
                e.name,
                safe(&c.event_id),
                c.kind,
                safe(c.winner_message_id.as_deref().unwrap_or("?"))
            ),
            theme.style(theme.blocked),
        ));
    } else if let Some(u) = &trace.unmapped {
        summary.push(Span::styled(
            format!("  {}", safe(&u.reason)),
            theme.style(theme.unmapped),
        ));
    }
    // As many lines as the summary needs (up to three): at 80 columns what the message
    // became must not be cut off.
    let summary = Line::from(summary);
    let inner = area.width.saturating_sub(2).max(1) as usize;
    let lines = summary.width().div_ceil(inner).clamp(1, 3) as u16;
    let chunks = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(lines + 2),
            Constraint::Length(1),
            Constraint::Min(3),
        ])
        .split(area);
    frame.render_widget(
        Paragraph::new(summary)
            .wrap(Wrap { trim: true })
            .block(block(theme, pane_title(app, ""))),
        chunks[0],
    );

    // Tabs: the canonical diff, then each destination's payload for this event.
    let mut tabs = vec!["canonical".to_string()];
    tabs.extend(
        trace
            .deliveries
            .iter()
            .map(|d| format!("{} ({})", d.destination, d.status)),
    );
    let tab = app.diff_tab.min(tabs.len() - 1);
    frame.render_widget(
        Tabs::new(
            tabs.iter()
                .map(|t| Line::from(t.clone()))
                .collect::<Vec<_>>(),
        )
        .select(tab)
        .highlight_style(theme.highlight()),
        chunks[1],
    );
    let halves = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(45), Constraint::Percentage(55)])
        .split(chunks[2]);
    let raw_text: Vec<Line> = pretty(&raw)
        .lines()
        .map(|l| Line::from(l.to_string()))
        .collect();
    let shown = event.map(|e| &e.canonical).or(collapsed_event.as_ref());
    let right: Vec<Line> = if tab == 0 {
        match shown {
            Some(canonical) => diff::diff(&raw, canonical)
                .into_iter()
                .map(|line| {
                    let (mark, color) = match line.kind {
                        DiffKind::Kept => ("=", theme.text),
                        DiffKind::Transformed => ("~", theme.diff_changed),
                        DiffKind::Added => ("+", theme.diff_added),
                        DiffKind::Unused => ("-", theme.diff_removed),
                    };
                    let value = line
                        .canonical
                        .as_ref()
                        .or(line.raw.as_ref())
                        .map(|v| match v {
                            Value::Array(a) => format!("[{} item(s)]", a.len()),
                            other => other.to_string(),
                        });
                    Line::from(vec![
                        Span::styled(
                            format!("{mark} {:<26}", safe(&line.field)),
                            theme.style(color),
                        ),
                        Span::raw(format!("{:<22} ", value.unwrap_or_default())),
                        muted(theme, format!("← {} ({})", line.source, line.transform)),
                    ])
                })
                .chain(trace.events.first().into_iter().flat_map(|e| {
                    e.routes.iter().map(|r| {
                        Line::from(vec![
                            Span::raw(format!("→ {:<11}", r.destination)),
                            word(theme, &r.verdict),
                            muted(theme, format!("  as {}: {}", r.destination_event, r.reason)),
                        ])
                    })
                }))
                .chain(collapsed.filter(|_| event.is_none()).map(|c| {
                    Line::from(Span::styled(
                        format!(
                            "→ sent nowhere: the event_id's deliveries are the first arrival's (messageId {}); 6 shows the two side by side",
                            safe(c.winner_message_id.as_deref().unwrap_or("?"))
                        ),
                        theme.style(theme.blocked),
                    ))
                }))
                .collect(),
            None => vec![Line::from(match &trace.unmapped {
                Some(u) => format!("not mapped: {}", safe(&u.reason)),
                None => {
                    "this call updates identity only; it never becomes a conversion".to_string()
                }
            })],
        }
    } else {
        let d = &trace.deliveries[tab - 1];
        let body = d
            .history
            .iter()
            .rev()
            .find_map(|a| a.request.as_ref())
            .and_then(|r| r.body.clone())
            .map(|b| {
                serde_json::from_str::<Value>(&b)
                    .map(|v| pretty(&v))
                    .unwrap_or(b)
            })
            .unwrap_or_else(|| {
                format!(
                    "not sent yet ({})",
                    d.last_error.clone().unwrap_or_else(|| d.status.clone())
                )
            });
        let mut lines = vec![Line::from(vec![
            word(theme, &d.status),
            Span::raw(format!(
                "  attempt {}  {}",
                d.attempts,
                d.last_error.clone().unwrap_or_default()
            )),
        ])];
        lines.extend(body.lines().map(|l| Line::from(l.to_string())));
        lines
    };
    // Both halves scroll together (j/k, PgDn/PgUp, g/G): the raw message and what became of it.
    let lines = raw_text.len().max(right.len());
    let scroll = content_scroll(app, lines, halves[0]);
    let note = scroll_note(app, lines, halves[0]);
    frame.render_widget(
        Paragraph::new(raw_text)
            .scroll((scroll, 0))
            .block(block(theme, format!(" raw {}", note.trim_start()))),
        halves[0],
    );
    let title = if tab == 0 {
        " canonical (field ← source (transform)) ".to_string()
    } else {
        format!(
            " payload sent to {} ",
            trace.deliveries[tab - 1].destination
        )
    };
    frame.render_widget(
        Paragraph::new(right)
            .scroll((scroll, 0))
            .block(block(theme, title)),
        halves[1],
    );
}
