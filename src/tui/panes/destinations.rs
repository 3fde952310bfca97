//! Pane 5: per-destination diagnostics.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Sparkline, Wrap};
use ratatui::Frame;

use super::widgets::*;
use crate::tui::app::App;

pub(super) fn pct(part: i64, whole: i64) -> String {
    if whole == 0 {
        "—".into()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

pub(super) fn destinations(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    // Every destination in the table first (it scrolls when even that does not fit), then the
    // selected one's diagnostics; its last hour beside them on a wide terminal, below them when
    // there is room, left out at 80×24 (its figures are in the table and the diagnostics).
    let wide = area.width >= 120;
    let table_rows = app.snapshot.destinations.len() as u16 + 3;
    let diagnostics = if wide { 9 } else { 7 };
    let table_height = table_rows.min(area.height.saturating_sub(diagnostics).max(4));
    let chart = if wide {
        0
    } else if area.height >= table_height + diagnostics + 8 {
        8
    } else {
        0
    };
    let chunks = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(table_height),
            Constraint::Min(diagnostics.min(area.height.saturating_sub(table_height))),
            Constraint::Length(chart),
        ])
        .split(area);
    let (diagnostics_area, chart_area) = if wide {
        let halves = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Min(40), Constraint::Length(66)])
            .split(chunks[1]);
        (halves[0], halves[1])
    } else {
        (chunks[1], chunks[2])
    };
    // Latencies are kept in buckets: "≤50" is read as "at most 50 ms".
    let window = |w: &crate::store::views::WindowStats| match (w.success_rate(), w.p50_ms, w.p95_ms)
    {
        (Some(rate), Some(p50), Some(p95)) => {
            format!("{:.0}% ≤{p50}/≤{p95}ms", rate * 100.0)
        }
        (Some(rate), _, _) => format!("{:.0}%", rate * 100.0),
        _ => "—".into(),
    };
    let columns = [
        col("destination", 12, 0),
        col("health", 9, 0),
        col("delivered", 9, 3),
        col("retry", 7, 2),
        col("dead", 6, 1),
        col("blocked", 7, 4),
        col("queue", 6, 1),
        col("5m ok p50/p95", 16, 2),
        col("1h ok p50/p95", 16, 4),
        col("match 5m/1h", 11, 3),
        col("last error / pause", 0, 1),
    ];
    let score = |v: Option<f64>| v.map_or_else(|| "—".to_string(), |v| format!("{v:.1}"));
    let rows: Vec<Vec<Cell>> = app
        .snapshot
        .destinations
        .iter()
        .map(|d| {
            let state = d.health();
            vec![
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
                Cell::from(format!(
                    "{}/{}",
                    score(d.match_quality.average_5m()),
                    score(d.match_quality.average_1h())
                )),
                // Why it is paused first: that is what holds its deliveries now.
                Cell::from(match &d.paused {
                    Some(p) => Span::styled(
                        format!("paused until {}: {}", clock(p.until_ms), p.reason),
                        theme.style(theme.retrying),
                    ),
                    None => muted(
                        theme,
                        d.last_error
                            .as_ref()
                            .map(|(at, e)| {
                                let time = clock(*at);
                                format!("{} {}", time.get(..8).unwrap_or(&time), safe(e))
                            })
                            .unwrap_or_default(),
                    ),
                }),
            ]
        })
        .collect();
    let t = fitted_table(theme, &columns, rows, area.width, pane_title(app, ""));
    render_list(frame, t, chunks[0], app);
    let detail: Vec<Line> = match app.snapshot.destinations.get(app.selection()) {
        // What holds deliveries back first (a pause, the last failure, the hour's failures by
        // kind), then what the platform can match them on.
        Some(d) => {
            let mut lines = Vec::new();
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
            let kinds: Vec<String> = d
                .error_kinds
                .iter()
                .map(|(kind, n)| format!("{n} × {kind}"))
                .collect();
            lines.push(Line::from(vec![
                Span::styled("errors in the last hour ", theme.title()),
                if kinds.is_empty() {
                    muted(theme, "none".to_string())
                } else {
                    Span::raw(kinds.join(" · "))
                },
            ]));
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
            let c = &d.coverage;
            lines.push(Line::from(vec![
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
            ]));
            let q = &d.match_quality;
            if q.events_1h > 0 {
                let missing = q
                    .most_missing()
                    .map(|(name, n)| {
                        format!(" · most often missing: {name} ({n} of {})", q.events_1h)
                    })
                    .unwrap_or_else(|| " · nothing missing".into());
                lines.push(Line::from(vec![
                    Span::styled("match quality ", theme.title()),
                    Span::raw(format!(
                        "{}/10 over 5 min ({} events) · {}/10 over 1 h ({} events){missing}",
                        score(q.average_5m()),
                        q.events_5m,
                        score(q.average_1h()),
                        q.events_1h
                    )),
                    muted(theme, "  (an estimate from what was sent)"),
                ]));
            }
            lines
        }
        None => vec![Line::from("No destinations configured.")],
    };
    frame.render_widget(
        Paragraph::new(detail)
            .wrap(Wrap { trim: true })
            .block(block(theme, " diagnostics ")),
        diagnostics_area,
    );
    if let Some(d) = app
        .snapshot
        .destinations
        .get(app.selection())
        .filter(|_| chart_area.height > 0)
    {
        last_hour(frame, chart_area, app, d);
    }
}

/// Delivered, retried and dead attempts per minute over the last hour (the newest minute on
/// the right), with the success rates, as Segment's Event Delivery shows them over time.
fn last_hour(frame: &mut Frame, area: Rect, app: &App, d: &crate::store::views::DestinationStats) {
    let theme = app.theme();
    let rate = |w: &crate::store::views::WindowStats| {
        w.success_rate()
            .map(|r| format!("{:.0}%", r * 100.0))
            .unwrap_or_else(|| "—".into())
    };
    let outer = block(
        theme,
        format!(
            " {} · last hour per minute · ok 5m {} · 1h {} ",
            d.destination,
            rate(&d.last_5m),
            rate(&d.last_1h)
        ),
    );
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    if inner.height < 3 || inner.width < 20 {
        return;
    }
    let m = &d.per_minute;
    let (delivered, retried, dead) = m.total();
    let series: [(&str, &[u64], u64, ratatui::style::Color); 3] = [
        ("delivered", &m.delivered, delivered, theme.ok),
        ("retried", &m.retried, retried, theme.retrying),
        ("dead", &m.dead, dead, theme.failed),
    ];
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Ratio(1, 3); 3])
        .split(inner);
    for (row, (label, data, total, colour)) in rows.iter().zip(series) {
        let parts = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Length(15), Constraint::Min(1)])
            .split(*row);
        let peak = data.iter().copied().max().unwrap_or(0);
        frame.render_widget(
            Paragraph::new(vec![
                Line::from(Span::styled(
                    format!("{label} {total}"),
                    theme.style(colour),
                )),
                Line::from(muted(theme, format!("peak {peak}/min"))),
            ]),
            parts[0],
        );
        // The newest minutes when the chart is narrower than the hour.
        let shown = &data[data.len().saturating_sub(parts[1].width as usize)..];
        frame.render_widget(
            Sparkline::default()
                .data(shown)
                .max(peak.max(1))
                .style(theme.style(colour)),
            parts[1],
        );
    }
}
