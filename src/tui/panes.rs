//! Rendering: one function per pane, reading state and drawing. Nothing here does IO.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Tabs, Wrap,
};
use ratatui::Frame;
use serde_json::Value;

use super::app::{App, Pane, KEYMAP};
use super::theme::Theme;
use crate::inspect::format_ms;
use crate::pipeline::diff::{self, DiffKind};
use crate::store::views::{node_label, FleetNode};

fn clock(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

fn block<'a>(theme: &Theme, title: impl Into<Line<'a>>) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(theme.style(theme.border))
        .title(title)
        .title_style(theme.title())
}

fn word<'a>(theme: &Theme, text: &str) -> Span<'a> {
    Span::styled(text.to_string(), theme.style(theme.status(text)))
}

fn muted<'a>(theme: &Theme, text: impl Into<String>) -> Span<'a> {
    Span::styled(text.into(), theme.style(theme.muted))
}

/// Message-derived text for a cell: control characters shown escaped (see
/// [`crate::inspect::terminal_safe`]).
fn safe(text: &str) -> String {
    crate::inspect::terminal_safe(text).into_owned()
}

fn opt(text: &Option<String>) -> String {
    text.as_deref().map(safe).unwrap_or_else(|| "—".into())
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn table<'a>(
    theme: &Theme,
    header: &[&'a str],
    rows: Vec<Row<'a>>,
    widths: Vec<Constraint>,
    title: String,
) -> Table<'a> {
    Table::new(rows, widths)
        .header(Row::new(header.to_vec()).style(theme.title()))
        .block(block(theme, title))
        .row_highlight_style(theme.highlight())
}

fn pane_title(app: &App, extra: &str) -> String {
    let filter = if app.filter().is_empty() {
        String::new()
    } else {
        format!("  filter: {}", app.filter())
    };
    format!(" {}{extra}{filter} ", app.pane.title())
}

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
    let theme = app.theme();
    let area = frame.area();
    let chunks = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .split(area);
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
    let titles: Vec<Line> = Pane::ALL
        .iter()
        .enumerate()
        .map(|(i, p)| Line::from(format!("{} {}", i + 1, p.title())))
        .collect();
    let selected = Pane::ALL.iter().position(|p| *p == app.pane).unwrap_or(0);
    frame.render_widget(
        Tabs::new(titles)
            .select(selected)
            .highlight_style(theme.highlight())
            .divider(" "),
        chunks[1],
    );
    let body = chunks[2];
    match app.pane {
        Pane::Stream => stream(frame, body, app),
        Pane::Deliveries => deliveries(frame, body, app),
        Pane::Diff => diff_pane(frame, body, app),
        Pane::Unmapped => unmapped(frame, body, app),
        Pane::Destinations => destinations(frame, body, app),
        Pane::Collisions => collisions(frame, body, app),
        Pane::Profiles => profiles(frame, body, app),
        Pane::TestSend => test_send(frame, body, app),
    }
    let footer = match (&app.editing_filter, &app.snapshot.error, &app.status) {
        (Some(text), _, _) => Line::from(vec![
            Span::styled(" filter: ", theme.title()),
            Span::raw(format!("{text}▏")),
            muted(theme, "  enter apply · esc cancel"),
        ]),
        (None, Some(error), _) => {
            Line::from(Span::styled(format!(" {error}"), theme.style(theme.failed)))
        }
        (None, None, Some(status)) => Line::from(vec![
            muted(theme, format!(" {status}  ")),
            muted(theme, "? help · q quit"),
        ]),
        _ => Line::from(muted(
            theme,
            " ? help · / filter · enter open · 1-7 panes · q quit",
        )),
    };
    frame.render_widget(Paragraph::new(footer), chunks[3]);
    if app.help {
        help(frame, area, theme);
    }
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn help(frame: &mut Frame, area: Rect, theme: &Theme) {
    let lines: Vec<Line> = KEYMAP
        .iter()
        .map(|(key, what, _)| {
            Line::from(vec![
                Span::styled(format!(" {key:<10}"), theme.title()),
                Span::raw(what.to_string()),
            ])
        })
        .collect();
    // On a short terminal the keys go in two columns so none is cut off.
    let two_columns = lines.len() as u16 + 2 > area.height;
    let rows = if two_columns {
        lines.len().div_ceil(2)
    } else {
        lines.len()
    };
    let width = if two_columns { area.width } else { 96 };
    let rect = centered(area, width, rows as u16 + 2);
    frame.render_widget(Clear, rect);
    let outer = block(theme, " Keys (any key closes) ");
    let inner = outer.inner(rect);
    frame.render_widget(outer, rect);
    if two_columns {
        let halves = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
            .split(inner);
        let (left, right) = lines.split_at(rows);
        frame.render_widget(Paragraph::new(left.to_vec()), halves[0]);
        frame.render_widget(Paragraph::new(right.to_vec()), halves[1]);
    } else {
        frame.render_widget(Paragraph::new(lines), inner);
    }
}

/// The node a row came from, as a cell (fleet only).
fn node_cell<'a>(theme: &Theme, node: &Option<String>) -> Cell<'a> {
    Cell::from(muted(
        theme,
        node.as_deref().map(node_label).unwrap_or("—").to_string(),
    ))
}

/// Add the node column when any row has a node (a fleet on PostgreSQL).
fn with_node_column(fleet: bool, header: &mut Vec<&str>, widths: &mut Vec<Constraint>, at: usize) {
    if fleet {
        header.insert(at, "node");
        widths.insert(at, Constraint::Length(16));
    }
}

fn stream(frame: &mut Frame, area: Rect, app: &App) {
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
    let frozen = if app.frozen { " (frozen)" } else { "" };
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
    let t = table(theme, &header, rows, widths, pane_title(app, frozen));
    let mut state = TableState::default().with_selected(Some(app.selection()));
    frame.render_stateful_widget(t, area, &mut state);
}

fn deliveries(frame: &mut Frame, area: Rect, app: &App) {
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

fn diff_pane(frame: &mut Frame, area: Rect, app: &App) {
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
    let chunks = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(3),
            Constraint::Length(1),
            Constraint::Min(3),
        ])
        .split(area);
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
    } else if let Some(u) = &trace.unmapped {
        summary.push(Span::styled(
            format!("  {}", safe(&u.reason)),
            theme.style(theme.unmapped),
        ));
    }
    frame.render_widget(
        Paragraph::new(Line::from(summary))
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
    frame.render_widget(
        Paragraph::new(raw_text).block(block(theme, " raw (as received) ")),
        halves[0],
    );

    let right: Vec<Line> = if tab == 0 {
        match event {
            Some(e) => diff::diff(&raw, &e.canonical)
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
    let title = if tab == 0 {
        " canonical (field ← source (transform)) ".to_string()
    } else {
        format!(
            " payload sent to {} ",
            trace.deliveries[tab - 1].destination
        )
    };
    frame.render_widget(Paragraph::new(right).block(block(theme, title)), halves[1]);
}

fn unmapped(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let chunks = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Min(3), Constraint::Length(4)])
        .split(area);
    let rows: Vec<Row> = app
        .snapshot
        .unmapped
        .iter()
        .map(|g| {
            Row::new(vec![
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
            ])
        })
        .collect();
    let t = table(
        theme,
        &[
            "Segment event (as delivered)",
            "count",
            "first seen",
            "last seen",
            "env",
            "suggested mapping",
        ],
        rows,
        vec![
            Constraint::Percentage(25),
            Constraint::Length(7),
            Constraint::Length(25),
            Constraint::Length(25),
            Constraint::Length(12),
            Constraint::Fill(1),
        ],
        pane_title(app, ""),
    );
    let mut state = TableState::default().with_selected(Some(app.selection()));
    frame.render_stateful_widget(t, chunks[0], &mut state);
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

fn pct(part: i64, whole: i64) -> String {
    if whole == 0 {
        "—".into()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

fn destinations(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let chunks = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Min(4), Constraint::Length(9)])
        .split(area);
    let window = |w: &crate::store::views::WindowStats| {
        format!(
            "{} {}/{}",
            w.success_rate()
                .map(|r| format!("{:.0}%", r * 100.0))
                .unwrap_or_else(|| "—".into()),
            w.p50_ms
                .map(|v| v.to_string())
                .unwrap_or_else(|| "—".into()),
            w.p95_ms
                .map(|v| format!("{v}ms"))
                .unwrap_or_else(|| "—".into())
        )
    };
    let rows: Vec<Row> = app
        .snapshot
        .destinations
        .iter()
        .map(|d| {
            let state = if d.paused.is_some() {
                "paused"
            } else if d.dead > 0 && d.last_5m.success_rate().is_some_and(|r| r < 0.5) {
                "failed"
            } else {
                "delivered"
            };
            Row::new(vec![
                Cell::from(d.destination.clone()),
                Cell::from(word(theme, state)),
                Cell::from(Span::styled(d.delivered.to_string(), theme.style(theme.ok))),
                Cell::from(Span::styled(
                    d.retrying.to_string(),
                    theme.style(theme.retrying),
                )),
                Cell::from(Span::styled(d.dead.to_string(), theme.style(theme.failed))),
                Cell::from(Span::styled(
                    d.blocked_consent.to_string(),
                    theme.style(theme.blocked),
                )),
                Cell::from(d.queue_depth().to_string()),
                Cell::from(window(&d.last_5m)),
                Cell::from(window(&d.last_1h)),
                Cell::from(muted(
                    theme,
                    d.last_error
                        .as_ref()
                        .map(|(_, e)| e.clone())
                        .unwrap_or_default(),
                )),
            ])
        })
        .collect();
    let t = table(
        theme,
        &[
            "destination",
            "state",
            "delivered",
            "retrying",
            "dead",
            "blocked",
            "queue",
            "5m ok p50/p95",
            "1h ok p50/p95",
            "last error",
        ],
        rows,
        vec![
            Constraint::Length(12),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(16),
            Constraint::Length(16),
            Constraint::Fill(1),
        ],
        pane_title(app, ""),
    );
    let mut state = TableState::default().with_selected(Some(app.selection()));
    frame.render_stateful_widget(t, chunks[0], &mut state);
    let detail: Vec<Line> = match app.snapshot.destinations.get(app.selection()) {
        Some(d) => {
            let c = &d.coverage;
            let mut lines = vec![Line::from(vec![
                Span::styled("identifier coverage ", theme.title()),
                Span::raw(format!(
                    "(last {} events): email {} · phone {} · external_id {} · ip+ua {} · click ids {}",
                    c.events,
                    pct(c.email, c.events),
                    pct(c.phone, c.events),
                    pct(c.external_id, c.events),
                    pct(c.ip_and_user_agent, c.events),
                    pct(c.click_ids, c.events)
                )),
            ])];
            if let Some(p) = &d.paused {
                lines.push(Line::from(vec![
                    word(theme, "paused"),
                    Span::raw(format!(" until {}: {}", clock(p.until_ms), p.reason)),
                ]));
            }
            if let Some((at, e)) = &d.last_error {
                let on = d
                    .last_error_node
                    .as_deref()
                    .map(|n| format!("on {} ", node_label(n)))
                    .unwrap_or_default();
                lines.push(Line::from(vec![
                    Span::styled("last error ", theme.title()),
                    muted(theme, format!("{} {on}", clock(*at))),
                    Span::styled(safe(e), theme.style(theme.failed)),
                ]));
            }
            if !d.in_flight_by_node.is_empty() {
                let held: Vec<String> = d
                    .in_flight_by_node
                    .iter()
                    .map(|(node, n)| format!("{} {n}", node_label(node)))
                    .collect();
                lines.push(Line::from(vec![
                    Span::styled("in flight by node ", theme.title()),
                    Span::raw(held.join(" · ")),
                ]));
            }
            lines.push(Line::from(Span::styled(
                "recent error kinds",
                theme.title(),
            )));
            if d.error_kinds.is_empty() {
                lines.push(Line::from(muted(theme, "  none")));
            }
            for (kind, n) in &d.error_kinds {
                lines.push(Line::from(format!("  {n:>4} × {kind}")));
            }
            lines
        }
        None => vec![Line::from("No destinations configured.")],
    };
    frame.render_widget(
        Paragraph::new(detail)
            .wrap(Wrap { trim: true })
            .block(block(theme, " diagnostics ")),
        chunks[1],
    );
}

fn collisions(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let chunks = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Percentage(40),
            Constraint::Length(2),
            Constraint::Min(4),
        ])
        .split(area);
    let rows: Vec<Row> = app
        .snapshot
        .collisions
        .iter()
        .map(|c| {
            Row::new(vec![
                Cell::from(clock(c.detected_at_ms)),
                Cell::from(Span::styled(c.kind.clone(), theme.style(theme.blocked))),
                Cell::from(safe(&c.event_id)),
                Cell::from(opt(&c.winner_message_id)),
                Cell::from(opt(&c.message_id)),
            ])
        })
        .collect();
    let t = table(
        theme,
        &[
            "time",
            "kind",
            "event_id",
            "first (won)",
            "later (collapsed)",
        ],
        rows,
        vec![
            Constraint::Length(12),
            Constraint::Length(20),
            Constraint::Length(38),
            Constraint::Fill(1),
            Constraint::Fill(1),
        ],
        pane_title(app, ""),
    );
    let mut state = TableState::default().with_selected(Some(app.selection()));
    frame.render_stateful_widget(t, chunks[0], &mut state);
    let selected = app.snapshot.collisions.get(app.selection());
    let why = selected
        .map(|c| {
            let kind = match c.kind.as_str() {
                "segment_retry" => crate::pipeline::dedup::CollisionKind::SegmentRetry,
                "duplicate_order" => crate::pipeline::dedup::CollisionKind::DuplicateOrder,
                _ => crate::pipeline::dedup::CollisionKind::ConflictingPayload,
            };
            kind.explain().to_string()
        })
        .unwrap_or_else(|| "No collisions: every event_id arrived once.".into());
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
    let (winner, later) = app
        .snapshot
        .collision_raws
        .clone()
        .unwrap_or((Value::Null, Value::Null));
    // Lines that differ between the two messages are marked, so the difference jumps out.
    let (left, right) = (pretty(&winner), pretty(&later));
    let left_lines: Vec<&str> = left.lines().collect();
    let right_lines: Vec<&str> = right.lines().collect();
    let mark = |lines: &[&str], other: &[&str], color| -> Vec<Line<'static>> {
        lines
            .iter()
            .map(|l| {
                if other.contains(l) {
                    Line::from(l.to_string())
                } else {
                    Line::from(Span::styled(
                        l.to_string(),
                        Style::default().fg(color).add_modifier(Modifier::BOLD),
                    ))
                }
            })
            .collect()
    };
    frame.render_widget(
        Paragraph::new(mark(&left_lines, &right_lines, theme.diff_removed))
            .block(block(theme, " first arrival (won) ")),
        halves[0],
    );
    frame.render_widget(
        Paragraph::new(mark(&right_lines, &left_lines, theme.diff_added))
            .block(block(theme, " later arrival (collapsed onto it) ")),
        halves[1],
    );
}

fn profiles(frame: &mut Frame, area: Rect, app: &App) {
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

fn verdict_word(v: crate::testsend::Verdict) -> (&'static str, &'static str) {
    use crate::testsend::Verdict::*;
    match v {
        Pass => ("✔ pass", "delivered"),
        Warn => ("! warn", "retry"),
        Skip => ("· skip", "muted"),
        Wait => ("… wait", "pending"),
        Fail => ("✘ FAIL", "failed"),
    }
}

fn test_send(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let halves = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Length(44), Constraint::Min(20)])
        .split(area);
    let t = &app.test;
    let mut left: Vec<Line> = Vec::new();
    if !t.enabled {
        left.push(Line::from("The controlled test send needs the embedded pipeline: run `tracklayer tui` or `tracklayer demo` (not --attach)."));
    }
    for (i, step) in t.steps.iter().enumerate() {
        let state = match &t.sent[i] {
            None => muted(theme, "not sent"),
            Some(r) if r.status < 300 => word(theme, "accepted"),
            Some(r) => Span::styled(format!("HTTP {}", r.status), theme.style(theme.failed)),
        };
        let marker = if i == t.viewing { "▶ " } else { "  " };
        let id = step
            .message
            .get("messageId")
            .and_then(Value::as_str)
            .unwrap_or("");
        left.push(Line::from(vec![
            Span::raw(format!("{marker}{}. {:<17}", i + 1, step.label)),
            state,
        ]));
        left.push(Line::from(muted(theme, format!("     {id}"))));
    }
    left.push(Line::from(""));
    left.push(Line::from(Span::styled("destinations", theme.title())));
    for (name, mode) in &t.test_modes {
        let (text, role) = match mode {
            Some(true) => ("test mode".to_string(), "delivered"),
            Some(false) => ("LIVE: test mode off".to_string(), "failed"),
            None if t.skip.contains(name) => ("no test mode: skipped".to_string(), "muted"),
            None => ("no test mode".to_string(), "retry"),
        };
        left.push(Line::from(vec![
            Span::raw(format!("  {name:<11} ")),
            Span::styled(text, theme.style(theme.status(role))),
        ]));
    }
    left.push(Line::from(""));
    left.push(Line::from(muted(
        theme,
        "s send next call · space next stage · ↑↓ choose call · enter trace · r new run",
    )));
    frame.render_widget(
        Paragraph::new(left)
            .wrap(Wrap { trim: false })
            .block(block(theme, " Controlled test send: one test user ")),
        halves[0],
    );

    let mut right: Vec<Line> = Vec::new();
    let stages = &app.snapshot.test_stages;
    if t.sent.get(t.viewing).is_none_or(Option::is_none) {
        right.push(Line::from("Press s to send the next call through the real signed ingest, then space to walk its stages."));
    } else if stages.is_empty() {
        right.push(Line::from(muted(theme, "waiting for the stored trace…")));
    }
    for stage in stages.iter().take(t.revealed.max(1)) {
        let (text, role) = verdict_word(stage.verdict);
        right.push(Line::from(vec![
            Span::styled(
                format!("{text:<7}"),
                theme.style(theme.status(role)).add_modifier(Modifier::BOLD),
            ),
            Span::styled(format!(" {:<14}", stage.name), theme.title()),
            Span::raw(stage.detail.first().cloned().unwrap_or_default()),
        ]));
        for line in stage.detail.iter().skip(1) {
            right.push(Line::from(muted(
                theme,
                format!("                       {line}"),
            )));
        }
        if let Some(fix) = &stage.fix {
            right.push(Line::from(Span::styled(
                format!("        → {fix}"),
                theme.style(if stage.verdict == crate::testsend::Verdict::Fail {
                    theme.failed
                } else {
                    theme.retrying
                }),
            )));
        }
    }
    let remaining = stages.len().saturating_sub(t.revealed.max(1));
    if remaining > 0 {
        right.push(Line::from(muted(
            theme,
            format!("        … {remaining} more stage(s): press space"),
        )));
    } else if crate::testsend::failed(stages) {
        right.push(Line::from(Span::styled(
            "The walk stops here: fix the cause above, then r for a new run.",
            theme.style(theme.failed),
        )));
    } else if !stages.is_empty() && crate::testsend::settled(stages) && t.next_unsent().is_none() {
        right.push(Line::from(Span::styled(
            "Every call traced end to end: you can widen the allowlist.",
            theme.style(theme.ok),
        )));
    }
    let title = t
        .steps
        .get(t.viewing)
        .map(|s| format!(" {} — stage by stage ", s.label))
        .unwrap_or_default();
    frame.render_widget(
        Paragraph::new(right)
            .wrap(Wrap { trim: false })
            .block(block(theme, title)),
        halves[1],
    );
}
