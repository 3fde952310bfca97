//! Rendering: one module per pane, each reading state and drawing. Nothing here does IO.

mod alerts;
mod attempts;
mod collisions;
mod destinations;
mod detail;
mod diff;
mod profiles;
mod stream;
mod test_send;
mod unmapped;
mod widgets;

use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs};
use ratatui::Frame;

use super::app::{App, Hits, Pane};
use crate::store::model::actions::OperatorAction;
use crate::store::model::alerts::StoredAlert;
use crate::store::views::FleetNode;
use widgets::*;

/// "· fleet 3 nodes" in the header, naming the nodes that went silent (a dead node's leases
/// are what delays its deliveries).
fn fleet_summary<'a>(theme: &Theme, nodes: &[FleetNode], now_ms: i64) -> Span<'a> {
    if nodes.is_empty() {
        return Span::raw("");
    }
    let silent: Vec<String> = nodes
        .iter()
        .filter(|n| n.silent(now_ms))
        .map(|n| {
            format!(
                "{} {}s",
                node_label(&n.node_id),
                (now_ms - n.last_seen_ms) / 1000
            )
        })
        .collect();
    let live = nodes.len() - silent.len();
    let nodes = if live == 1 { "node" } else { "nodes" };
    if silent.is_empty() {
        Span::raw(format!(" · fleet {live} {nodes}"))
    } else {
        Span::styled(
            format!(
                " · fleet {live} {nodes} live, silent: {}",
                silent.into_iter().take(3).collect::<Vec<_>>().join(", ")
            ),
            theme.style(theme.failed),
        )
    }
}

/// The whole screen: header, tabs, the pane, the footer; help and filter on top.
pub fn draw(frame: &mut Frame, app: &App) {
    *app.hits.borrow_mut() = Hits::default();
    let theme = app.theme();
    let area = frame.area();
    let firing: Vec<&StoredAlert> = app
        .snapshot
        .alerts
        .iter()
        .filter(|a| a.is_firing())
        .collect();
    // What must be read to act (a question's choices, the alert) wraps rather than being cut
    // off at the edge of a narrow terminal.
    let lines_for = |line: &Line, most: u16| -> u16 {
        (line.width() as u16)
            .div_ceil(area.width.max(1))
            .clamp(1, most)
    };
    let footer = footer_lines(app, theme, area.width);
    let footer_height = footer
        .iter()
        .map(|line| lines_for(line, 3))
        .sum::<u16>()
        .min(4);
    let banner = (!firing.is_empty()).then(|| alerts::alert_banner(theme, &firing));
    let banner_height = banner.as_ref().map_or(0, |b| lines_for(b, 2));
    let chunks = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length(banner_height),
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(footer_height),
        ])
        .split(area);
    if let Some(banner) = banner {
        frame.render_widget(
            Paragraph::new(banner).wrap(ratatui::widgets::Wrap { trim: true }),
            chunks[1],
        );
    }
    let chunks = [chunks[0], chunks[2], chunks[3], chunks[4]];
    let (messages, events) = app.snapshot.totals;
    let header = Line::from(vec![
        Span::styled(" TrackLayer ", theme.title()),
        muted(theme, format!("{}  ", app.source)),
        Span::raw(format!("{messages} messages · {events} events")),
        fleet_summary(theme, &app.snapshot.nodes, app.snapshot.loaded_at_ms),
        muted(
            theme,
            if app.snapshot.loaded_at_ms > 0 {
                format!("  updated {}", clock(app.snapshot.loaded_at_ms))
            } else {
                String::new()
            },
        ),
    ]);
    frame.render_widget(Paragraph::new(header), chunks[0]);
    let selected = Pane::ALL.iter().position(|p| *p == app.pane).unwrap_or(0);
    // Every tab named when they fit; on a narrow terminal numbers, and the current one named.
    let full: usize = Pane::ALL.iter().map(|p| p.title().len() + 5).sum();
    let narrow = full > chunks[1].width as usize;
    let titles: Vec<Line> = Pane::ALL
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if narrow && i != selected {
                Line::from(format!("{}", i + 1))
            } else {
                Line::from(format!("{} {}", i + 1, p.title()))
            }
        })
        .collect();
    // Where each tab lands: Tabs pads every title with a space each side, one divider between.
    let mut x = chunks[1].x;
    let tabs = titles
        .iter()
        .enumerate()
        .map(|(i, title)| {
            let from = x;
            x = x.saturating_add(title.width() as u16 + 2);
            let tab = (from, x, i);
            x = x.saturating_add(1);
            tab
        })
        .collect();
    {
        let mut hits = app.hits.borrow_mut();
        hits.tabs = tabs;
        hits.tab_row = Some(chunks[1].y);
    }
    frame.render_widget(
        Tabs::new(titles)
            .select(selected)
            .highlight_style(theme.highlight())
            .divider(" "),
        chunks[1],
    );
    let body = chunks[2];
    match app.pane {
        Pane::Stream => stream::stream(frame, body, app),
        Pane::Deliveries => attempts::deliveries(frame, body, app),
        Pane::Diff => diff::diff_pane(frame, body, app),
        Pane::Unmapped => unmapped::unmapped(frame, body, app),
        Pane::Destinations => destinations::destinations(frame, body, app),
        Pane::Collisions => collisions::collisions(frame, body, app),
        Pane::Profiles => profiles::profiles(frame, body, app),
        Pane::TestSend => test_send::test_send(frame, body, app),
        Pane::Alerts => alerts::alerts(frame, body, app),
    }
    frame.render_widget(
        Paragraph::new(footer).wrap(ratatui::widgets::Wrap { trim: false }),
        chunks[3],
    );
    if app.help {
        help(frame, area, app);
    }
}

/// The bottom lines: a question being asked, the prompt being typed or an error; else the
/// last status (for a few seconds) on a line of its own above the focused view's keys, which
/// are fitted to one line (`?` lists them all).
fn footer_lines<'a>(app: &'a App, theme: &Theme, width: u16) -> Vec<Line<'a>> {
    let prompt = footer_line(app, theme);
    if prompt.is_some() {
        return prompt.into_iter().collect();
    }
    let mut lines = Vec::new();
    if let Some(status) = app.status.shown() {
        lines.push(Line::from(muted(theme, format!(" {status}"))));
    }
    let mut keys = vec![Span::raw(" ")];
    keys.extend(keys_line(theme, app, width.saturating_sub(1) as usize));
    lines.push(Line::from(keys));
    lines
}

/// What the bottom line is when something must be read or typed there: a question being
/// asked (with its choices), the prompt being typed, or an error.
fn footer_line<'a>(app: &'a App, theme: &Theme) -> Option<Line<'a>> {
    Some(match (&app.editing_filter, &app.snapshot.error) {
        _ if app.confirm.is_some() => Line::from(vec![
            Span::styled(
                format!(
                    " {} ",
                    app.confirm.as_ref().map(|a| a.question()).unwrap_or_default()
                ),
                theme.style(theme.retrying).add_modifier(ratatui::style::Modifier::BOLD),
            ),
            muted(
                theme,
                match &app.confirm {
                    Some(OperatorAction::ReplayDead { since_ms: None, .. }) => {
                        " y: all of them · h: only those that died in the last hour · any other key: cancel"
                    }
                    _ => " y: do it · any other key: cancel",
                },
            ),
        ]),
        _ if app.editing_draft.is_some() => Line::from(vec![
            Span::styled(" draft mapping file to preview: ", theme.title()),
            Span::raw(format!("{}▏", app.editing_draft.as_deref().unwrap_or(""))),
            muted(
                theme,
                "  a [mapping] table as in tracklayer.toml · enter preview · esc cancel",
            ),
        ]),
        _ if app.editing_search.is_some() => Line::from(vec![
            Span::styled(" search all history: ", theme.title()),
            Span::raw(format!("{}▏", app.editing_search.as_deref().unwrap_or(""))),
            muted(
                theme,
                "  messageId, event_id, request id, order_id, userId, anonymousId, email, phone · enter find · esc cancel",
            ),
        ]),
        (Some(text), _) if app.pane == Pane::TestSend => Line::from(vec![
            Span::styled(" test user (userId and/or email): ", theme.title()),
            Span::raw(format!("{text}▏")),
            muted(theme, "  enter sets it and starts a new run · esc cancel"),
        ]),
        (Some(text), _) => Line::from(vec![
            Span::styled(" filter: ", theme.title()),
            Span::raw(format!("{text}▏")),
            muted(
                theme,
                "  narrows as you type · fields: dest: status: event: env: type: http: id: · enter keep · esc clear",
            ),
        ]),
        (None, Some(error)) => {
            Line::from(Span::styled(format!(" {error}"), theme.style(theme.failed)))
        }
        (None, None) => return None,
    })
}

/// "? help · q quit · j move · enter open · …" for the focused view, as many as fit `width`:
/// help and quit first, then the key table's order.
fn keys_line<'a>(theme: &Theme, app: &App, width: usize) -> Vec<Span<'a>> {
    let mut keys = super::app::footer_keys(app.pane, app.detail);
    keys.sort_by_key(|(_, what)| !matches!(*what, "help" | "quit"));
    let mut spans = Vec::new();
    let mut used = 0;
    for (i, (key, what)) in keys.into_iter().enumerate() {
        // The first of a binding's keys ("j" of "j / ↓").
        let key = key.split(" / ").next().unwrap_or(key);
        let separator = if i > 0 { 3 } else { 0 };
        let cost = separator + key.chars().count() + 1 + what.chars().count();
        if i >= 2 && used + cost > width {
            break;
        }
        used += cost;
        if i > 0 {
            spans.push(muted(theme, " · "));
        }
        spans.push(Span::styled(key.to_string(), theme.title()));
        spans.push(muted(theme, format!(" {what}")));
    }
    spans
}
