//! Detail views as scrollable viewports: an attempt's request and response, a refused request.
//! Each line carries one style, so wrapping is exact and the app can be told where the
//! response starts; the app keeps the scroll position (its own keys, not the list's).

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;
use serde_json::Value;

use super::widgets::*;
use crate::store::views::RejectionDetail;
use crate::store::StoredHttpRequest;
use crate::tui::app::{App, DetailLayout};

/// What a detail shows, line by line.
pub(super) struct DetailText {
    lines: Vec<(Style, String)>,
    /// The line where the response starts (the part that says why).
    response_at: Option<usize>,
}

impl DetailText {
    fn new() -> DetailText {
        DetailText {
            lines: Vec::new(),
            response_at: None,
        }
    }

    fn push(&mut self, style: Style, text: impl Into<String>) {
        for line in text.into().split('\n') {
            self.lines.push((style, safe(line)));
        }
    }
}

pub(super) fn attempt_detail(theme: &Theme, r: &StoredHttpRequest) -> DetailText {
    let mut text = DetailText::new();
    text.push(
        theme.title(),
        format!("POST {}", r.url.clone().unwrap_or_default()),
    );
    if let Some(Value::Array(headers)) = &r.headers {
        for h in headers {
            text.push(
                theme.style(theme.muted),
                format!(
                    "  {}: {}",
                    h[0].as_str().unwrap_or(""),
                    h[1].as_str().unwrap_or("")
                ),
            );
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
    text.push(theme.style(theme.text), body);
    text.response_at = Some(text.lines.len());
    let delivered = r.status_code.is_some_and(|c| (200..300).contains(&c));
    let status = r
        .status_code
        .map(|c| format!("HTTP {c}"))
        .or_else(|| r.error.clone())
        .unwrap_or_default();
    text.push(
        theme
            .style(theme.status(if delivered { "delivered" } else { "failed" }))
            .add_modifier(ratatui::style::Modifier::BOLD),
        format!(
            "response: {} {status} in {} ms",
            if delivered { "delivered" } else { "failed" },
            r.latency_ms.unwrap_or_default()
        ),
    );
    let response = r.response_body.clone().unwrap_or_default();
    let response = serde_json::from_str::<Value>(&response)
        .map(|v| pretty(&v))
        .unwrap_or(response);
    text.push(theme.style(theme.text), response);
    text
}

pub(super) fn rejection_detail(theme: &Theme, r: &RejectionDetail) -> DetailText {
    let mut text = DetailText::new();
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
    text.push(
        theme.style(theme.failed),
        format!("refused: HTTP {} {}", r.status_code, r.reason_code),
    );
    text.push(theme.style(theme.text), format!("reason: {}", r.reason));
    text.push(
        theme.title(),
        format!("fix: {}", crate::ingest::auth::fix_for(&r.reason_code)),
    );
    text.push(theme.style(theme.text), "");
    for (label, value) in [
        ("time", format_ms(r.received_at_ms)),
        ("path", r.path.clone()),
        ("peer", or_dash(&r.remote_addr)),
        ("user agent", or_dash(&r.user_agent)),
        ("X-TrackLayer-Account", or_dash(&r.account_header)),
        ("X-TrackLayer-Environment", or_dash(&r.environment_header)),
        ("Content-Type", or_dash(&r.content_type)),
        (
            "body",
            r.body_bytes
                .map(|b| format!("{b} bytes (not kept: it was not authenticated)"))
                .unwrap_or_else(|| "—".into()),
        ),
    ] {
        text.push(theme.style(theme.muted), format!("{label:<25} {value}"));
    }
    text
}

/// Draw `text` in a viewport over most of `area`, scrolled as the app says, and report the
/// layout back (lines, height, where the response starts) for the next key.
pub(super) fn draw_viewport(
    frame: &mut Frame,
    area: Rect,
    app: &App,
    title: &str,
    text: DetailText,
) {
    let theme = app.theme();
    let rect = centered(
        area,
        area.width.saturating_sub(6),
        area.height.saturating_sub(2),
    );
    frame.render_widget(Clear, rect);
    app.hits.borrow_mut().detail = Some(rect);
    let width = rect.width.saturating_sub(2).max(1) as usize;
    let height = rect.height.saturating_sub(2) as usize;
    let mut lines: Vec<(Style, String)> = Vec::with_capacity(text.lines.len());
    let mut response_at = None;
    for (i, (style, line)) in text.lines.into_iter().enumerate() {
        if text.response_at == Some(i) {
            response_at = Some(lines.len());
        }
        if app.viewport.wrap && line.chars().count() > width {
            let chars: Vec<char> = line.chars().collect();
            for chunk in chars.chunks(width) {
                lines.push((style, chunk.iter().collect()));
            }
        } else {
            lines.push((style, line));
        }
    }
    let max_scroll = lines.len().saturating_sub(height);
    let scroll = app.viewport.scroll.min(max_scroll);
    app.viewport.layout.set(DetailLayout {
        lines: lines.len(),
        height,
        response_at,
    });
    let shown: Vec<Line> = lines
        .iter()
        .skip(scroll)
        .take(height)
        .map(|(style, l)| Line::styled(l.clone(), *style))
        .collect();
    let last = (scroll + height).min(lines.len());
    let keys = format!(
        " lines {}–{last} of {} · j/k pgup/pgdn g/G scroll · r response · w wrap · esc closes ",
        (scroll + 1).min(last),
        lines.len(),
    );
    let block = block(theme, format!(" {title} ")).title_bottom(Line::styled(keys, theme.title()));
    frame.render_widget(Paragraph::new(shown).block(block), rect);
}
