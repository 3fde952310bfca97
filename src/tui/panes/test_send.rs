//! Pane 8: the controlled test send, stage by stage.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;
use serde_json::Value;

use super::widgets::*;
use crate::tui::app::App;

pub(super) fn verdict_word(v: crate::testsend::Verdict) -> (&'static str, &'static str) {
    use crate::testsend::Verdict::*;
    match v {
        Pass => ("✔ pass", "delivered"),
        Warn => ("! warn", "retry"),
        Skip => ("· skip", "muted"),
        Wait => ("… wait", "pending"),
        Fail => ("✘ FAIL", "failed"),
    }
}

pub(super) fn test_send(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    // The calls beside their stages on a wide terminal; above them, one line a call, on a
    // narrow one, so a stage's detail has the whole width.
    let wide = area.width >= 120;
    let t = &app.test;
    let halves = if wide {
        Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Length(44), Constraint::Min(20)])
            .split(area)
    } else {
        Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Length(t.steps.len() as u16 + 2),
                Constraint::Min(4),
            ])
            .split(area)
    };
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
        if wide {
            left.push(Line::from(vec![
                Span::raw(format!("{marker}{}. {:<17}", i + 1, step.label)),
                state,
            ]));
            left.push(Line::from(muted(theme, format!("     {id}"))));
        } else {
            left.push(Line::from(vec![
                Span::raw(format!("{marker}{}. {:<17}", i + 1, step.label)),
                state,
                muted(theme, format!("  {id}")),
            ]));
        }
    }
    if !wide {
        frame.render_widget(
            Paragraph::new(left).block(block(
                theme,
                " Controlled test send · s send · space next stage · ↑↓ call · pgup/pgdn scroll ",
            )),
            halves[0],
        );
        test_stages(frame, halves[1], app);
        return;
    }
    left.push(Line::from(""));
    left.push(Line::from(Span::styled("destinations", theme.title())));
    for name in t.plan.modes.keys() {
        let text = t.plan.describe_short(name);
        let role = if text.starts_with("test mode") {
            "delivered"
        } else if text.starts_with("LIVE") {
            "failed"
        } else {
            "muted"
        };
        left.push(Line::from(vec![
            Span::raw(format!("  {name:<11} ")),
            Span::styled(text, theme.style(theme.status(role))),
        ]));
    }
    left.push(Line::from(""));
    left.push(Line::from(muted(
        theme,
        "s send next call · space next stage · ↑↓ choose call · pgup/pgdn scroll · enter trace · r new run",
    )));
    frame.render_widget(
        Paragraph::new(left)
            .wrap(Wrap { trim: false })
            .block(block(theme, " Controlled test send: one test user ")),
        halves[0],
    );
    test_stages(frame, halves[1], app);
}

/// The viewed call's stages, as far as they are revealed: scrolled so the newest is in view
/// (pgup/pgdn move back from there).
fn test_stages(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let t = &app.test;
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
    let inner_width = area.width.saturating_sub(2).max(1) as usize;
    let height: usize = right
        .iter()
        .map(|l| l.width().div_ceil(inner_width).max(1))
        .sum();
    let visible = area.height.saturating_sub(2) as usize;
    let bottom = height.saturating_sub(visible);
    let scroll = bottom.saturating_sub(t.stages_up);
    let title = if height > visible {
        format!(
            "{title}· lines {}–{} of {height} ",
            scroll + 1,
            scroll + visible
        )
    } else {
        title
    };
    frame.render_widget(
        Paragraph::new(right)
            .wrap(Wrap { trim: false })
            .scroll((scroll as u16, 0))
            .block(block(theme, title)),
        area,
    );
}
