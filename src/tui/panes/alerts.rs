//! Pane 9: alerts, firing first then history, with the evidence of the selected one; and
//! the banner every pane shows while any fires.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Wrap};
use ratatui::Frame;

use super::widgets::*;
use crate::store::model::alerts::StoredAlert;
use crate::tui::app::App;

/// One line over the tabs while anything fires: words first (not colour alone), then where.
pub(super) fn alert_banner<'a>(theme: &Theme, firing: &[&StoredAlert]) -> Line<'a> {
    let listed: Vec<String> = firing
        .iter()
        .take(3)
        .map(|a| {
            format!(
                "{} {} since {}",
                a.rule,
                safe(&a.subject),
                clock(a.started_at_ms)
            )
        })
        .collect();
    let more = firing.len().saturating_sub(3);
    let more = if more > 0 {
        format!(" · +{more} more")
    } else {
        String::new()
    };
    Line::from(vec![
        Span::styled(
            format!(" ▲ ALERT: {} firing ", firing.len()),
            theme.style(theme.failed).add_modifier(Modifier::BOLD),
        ),
        Span::styled(
            format!("{}{more}", listed.join(" · ")),
            theme.style(theme.failed),
        ),
        muted(theme, "  (9: alerts)"),
    ])
}

pub(super) fn alerts(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    // The forget requests' audit below the evidence, when there is any.
    let audit_rows = app.snapshot.privacy.len().min(6) as u16;
    let chunks = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Percentage(50),
            Constraint::Min(4),
            Constraint::Length(if audit_rows > 0 { audit_rows + 2 } else { 0 }),
        ])
        .split(area);
    let columns = [
        col("state", 9, 0),
        col("rule", 15, 0),
        col("subject", 18, 0),
        col("started", 12, 2),
        col("lasted", 8, 3),
        col("notice", 8, 1),
        col("summary", 0, 2),
    ];
    let rows: Vec<Vec<Cell>> = app
        .snapshot
        .alerts
        .iter()
        .map(|a| {
            let state = if a.is_firing() { "firing" } else { "resolved" };
            let lasted = a
                .resolved_at_ms
                .map(|end| format!("{} s", (end - a.started_at_ms).max(0) / 1000))
                .unwrap_or_else(|| "ongoing".into());
            vec![
                Cell::from(Span::styled(
                    state,
                    theme.style(if a.is_firing() {
                        theme.failed
                    } else {
                        theme.ok
                    }),
                )),
                Cell::from(a.rule.clone()),
                Cell::from(safe(&a.subject)),
                Cell::from(clock(a.started_at_ms)),
                Cell::from(lasted),
                notice_cell(theme, a),
                Cell::from(muted(
                    theme,
                    safe(a.evidence["summary"].as_str().unwrap_or_default()),
                )),
            ]
        })
        .collect();
    let t = fitted_table(theme, &columns, rows, area.width, pane_title(app, ""));
    render_list(frame, t, chunks[0], app);
    let detail = match app.snapshot.alerts.get(app.selection()) {
        Some(a) => {
            let mut lines = vec![Line::from(vec![
                Span::styled(format!("{} {} ", a.rule, a.state), theme.title()),
                Span::raw(safe(&a.subject)),
                muted(
                    theme,
                    a.node_id
                        .as_deref()
                        .map(|n| format!("  fired by {}", node_label(n)))
                        .unwrap_or_default(),
                ),
            ])];
            lines.push(Line::from(vec![
                muted(theme, "notice: "),
                Span::raw(safe(&notice_text(a))),
            ]));
            lines.extend(pretty(&a.evidence).lines().map(|l| Line::from(safe(l))));
            lines
        }
        None => vec![Line::from(
            "No alerts yet. Rules and thresholds: [alerts] in the config (README, Operating it).",
        )],
    };
    frame.render_widget(
        Paragraph::new(detail)
            .wrap(Wrap { trim: false })
            .block(block(theme, " evidence ")),
        chunks[1],
    );
    if audit_rows > 0 {
        frame.render_widget(
            Paragraph::new(privacy_lines(theme, app)).block(block(
                theme,
                " forget requests (tracklayer inspect <fg_…>) ",
            )),
            chunks[2],
        );
    }
}

/// One line per forget request: when, who, what became of it, what was deleted and forwarded.
/// The audit holds no personal data, so neither do these lines.
fn privacy_lines<'a>(theme: &Theme, app: &App) -> Vec<Line<'a>> {
    app.snapshot
        .privacy
        .iter()
        .take(6)
        .map(|r| {
            let deleted: i64 = r
                .deleted
                .as_object()
                .map(|o| o.values().filter_map(|v| v.as_i64()).sum())
                .unwrap_or(0);
            let forwards: Vec<String> = r
                .forwards
                .iter()
                .map(|f| format!("{} {}", f.destination, f.status))
                .collect();
            let colour = match r.status.as_str() {
                "done" | "lifted" => theme.ok,
                "deleting" => theme.retrying,
                _ => theme.muted,
            };
            Line::from(vec![
                Span::raw(format!("{} ", clock(r.received_at_ms))),
                Span::styled(format!("{} {} ", r.action, r.status), theme.style(colour)),
                Span::raw(format!("{}  ", safe(&r.request_id))),
                muted(
                    theme,
                    format!(
                        "{} rows · {} suppressed since · {} · by {}",
                        deleted,
                        r.suppressed_messages,
                        if forwards.is_empty() {
                            "nothing forwarded".to_string()
                        } else {
                            forwards.join(", ")
                        },
                        safe(&r.who)
                    ),
                ),
            ])
        })
        .collect()
}

/// What became of an alert's notifications, in a word: did a person hear of it?
fn notice_word(a: &StoredAlert) -> &'static str {
    match a.notice.as_deref() {
        _ if !a.notified => "cooldown",
        None => "pending",
        Some(n) if n.contains("failed") => "FAILED",
        Some(n) if n.contains("no receiver") => "none",
        Some(_) => "sent",
    }
}

fn notice_cell<'a>(theme: &Theme, a: &StoredAlert) -> Cell<'a> {
    let word = notice_word(a);
    let colour = match word {
        "FAILED" | "none" => theme.failed,
        "sent" => theme.ok,
        _ => theme.muted,
    };
    Cell::from(Span::styled(word, theme.style(colour)))
}

fn notice_text(a: &StoredAlert) -> String {
    match (&a.notice, a.notified) {
        (_, false) => "kept quiet: the same alert resolved within [alerts] cooldown_secs".into(),
        (None, true) => "not sent yet".into(),
        (Some(n), true) => n.clone(),
    }
}
