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
    // The selected destination's last hour beside its diagnostics on a wide terminal, below
    // them on a narrow one.
    let wide = area.width >= 120;
    let chunks = Layout::default()
        .direction(Direction::Vertical)
        .constraints(if wide {
            vec![
                Constraint::Min(4),
                Constraint::Length(9),
                Constraint::Length(0),
            ]
        } else {
            vec![
                Constraint::Min(4),
                Constraint::Length(6),
                Constraint::Length(8),
            ]
        })
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
    let columns = [
        col("destination", 12, 0),
        col("health", 9, 0),
        col("delivered", 9, 3),
        col("retry", 8, 2),
        col("dead", 6, 1),
        col("blocked", 7, 4),
        col("queue", 6, 1),
        col("5m ok p50/p95", 16, 2),
        col("1h ok p50/p95", 16, 4),
        col("match 5m/1h", 11, 3),
        col("last error", 0, 3),
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
                Cell::from(muted(
                    theme,
                    d.last_error
                        .as_ref()
                        .map(|(_, e)| e.clone())
                        .unwrap_or_default(),
                )),
            ]
        })
        .collect();
    let t = fitted_table(theme, &columns, rows, area.width, pane_title(app, ""));
    render_list(frame, t, chunks[0], app);
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
        diagnostics_area,
    );
    if let Some(d) = app.snapshot.destinations.get(app.selection()) {
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
