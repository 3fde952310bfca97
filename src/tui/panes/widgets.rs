//! What every pane draws with: blocks, tables, words in the theme's colours, terminal-safe text.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;
use serde_json::Value;

pub(super) use crate::inspect::format_ms;
pub(super) use crate::store::views::node_label;
use crate::tui::app::{App, ListHits, Pane, DETAIL_KEYS, FILTER_HELP, KEYS};
pub(super) use crate::tui::theme::Theme;

pub(super) fn clock(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

pub(super) fn block<'a>(theme: &Theme, title: impl Into<Line<'a>>) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(theme.style(theme.border))
        .title(title)
        .title_style(theme.title())
}

pub(super) fn word<'a>(theme: &Theme, text: &str) -> Span<'a> {
    Span::styled(text.to_string(), theme.style(theme.status(text)))
}

pub(super) fn muted<'a>(theme: &Theme, text: impl Into<String>) -> Span<'a> {
    Span::styled(text.into(), theme.style(theme.muted))
}

/// Message-derived text for a cell: control characters shown escaped (see
/// [`crate::inspect::terminal_safe`]).
pub(super) fn safe(text: &str) -> String {
    crate::inspect::terminal_safe(text).into_owned()
}

pub(super) fn opt(text: &Option<String>) -> String {
    text.as_deref().map(safe).unwrap_or_else(|| "—".into())
}

pub(super) fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

pub(super) fn table<'a>(
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

/// The pane's title: what it is, whether it follows new rows or is paused (and how many
/// arrived since), where the selection is, and the filter.
pub(super) fn pane_title(app: &App, extra: &str) -> String {
    let lists = !matches!(app.pane, Pane::Diff | Pane::Profiles | Pane::TestSend);
    let filter = match (app.filter().is_empty(), lists && app.rows() == 0) {
        (true, _) => String::new(),
        (false, true) => format!("  no matches for `{}` (esc clears)", app.filter()),
        (false, false) => format!("  filter: {}", app.filter()),
    };
    let timeline = lists && app.pane != Pane::Destinations;
    let mode = match (timeline, app.follow[app.index()], app.new_rows[app.index()]) {
        (false, _, _) => String::new(),
        (true, true, _) => "  ● following".into(),
        (true, false, 0) => "  ‖ paused (f: follow)".into(),
        (true, false, n) => format!("  ‖ paused · {} new (g: newest)", thousands(n)),
    };
    // A filtered page holds at most ROWS matches: more may be older ("500+").
    let more = !app.filter().is_empty() && app.rows() >= crate::tui::app::ROWS;
    let position = match (lists, app.position()) {
        (true, Some((at, total))) => format!(
            "  {} of {}{}",
            thousands(at),
            thousands(total),
            if more { "+" } else { "" }
        ),
        _ => String::new(),
    };
    format!(" {}{extra}{mode}{position}{filter} ", app.pane.title())
}

/// 767310 → "767,310".
pub(super) fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

pub(super) fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// A key and its description as lines of `width`: the key in a column of `key_column`
/// (a longer key gets a line of its own), the description wrapped at word boundaries beside it.
pub(super) fn hanging(
    keys: &str,
    what: &str,
    key_column: usize,
    width: usize,
) -> Vec<(String, String)> {
    let text_width = width.saturating_sub(key_column + 1).max(10);
    let mut wrapped: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in what.split_whitespace() {
        let needed = if line.is_empty() { 0 } else { 1 } + word.chars().count();
        if !line.is_empty() && line.chars().count() + needed > text_width {
            wrapped.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || wrapped.is_empty() {
        wrapped.push(line);
    }
    let pad = " ".repeat(key_column + 1);
    let mut out = Vec::new();
    let key = format!(" {keys}");
    if key.chars().count() > key_column {
        out.push((key, String::new()));
    } else {
        out.push((
            format!("{key:<width$}", width = key_column + 1),
            wrapped.remove(0),
        ));
    }
    out.extend(wrapped.into_iter().map(|text| (pad.clone(), text)));
    out
}

pub(super) fn help(frame: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let scroll = app.help_scroll;
    // Generated from the tables that bind the keys: the pane keys, an open detail's keys, and
    // the filter syntax. The key column is as wide as its widest key (up to a third of the
    // box), and a description that wraps stays to the right of it.
    let width = area.width.min(112);
    let inner_width = width.saturating_sub(2).max(1) as usize;
    let widest = KEYS
        .iter()
        .map(|k| k.keys)
        .chain(DETAIL_KEYS.iter().map(|k| k.keys))
        .chain(FILTER_HELP.iter().map(|(syntax, _)| *syntax))
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0);
    let key_column = (widest + 2).min(inner_width / 3).max(4);
    let entry = |keys: &str, what: &str| -> Vec<Line<'static>> {
        hanging(keys, what, key_column, inner_width)
            .into_iter()
            .map(|(key, text)| Line::from(vec![Span::styled(key, theme.title()), Span::raw(text)]))
            .collect()
    };
    let mut lines: Vec<Line> = KEYS
        .iter()
        .filter(|k| k.keys != "j / ↓" || k.short == "move")
        .flat_map(|k| entry(k.keys, k.what))
        .collect();
    lines.push(Line::from(Span::styled(
        " in a detail (enter on 2, a refusal on 1)",
        theme.title(),
    )));
    lines.extend(DETAIL_KEYS.iter().flat_map(|k| entry(k.keys, k.what)));
    lines.push(Line::from(Span::styled(
        " filter syntax (/)",
        theme.title(),
    )));
    lines.extend(
        FILTER_HELP
            .iter()
            .flat_map(|(syntax, what)| entry(syntax, what)),
    );
    // One column, scrolled with j/k and the page keys when the terminal is shorter than the
    // list (at 80×24 nothing is cut off; it is below).
    let total: usize = lines
        .iter()
        .map(|l| l.width().div_ceil(inner_width).max(1))
        .sum();
    let height = (total as u16 + 2).min(area.height);
    let rect = centered(area, width, height);
    let visible = height.saturating_sub(2) as usize;
    app.help_last.set(total.saturating_sub(visible));
    let scroll = scroll.min(total.saturating_sub(visible));
    let title = if total > visible {
        format!(
            " Keys {}–{}/{total} · j/k pgdn/pgup scroll · any other key closes ",
            scroll + 1,
            scroll + visible
        )
    } else {
        " Keys (any key closes) ".to_string()
    };
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((scroll as u16, 0))
            .block(block(theme, title)),
        rect,
    );
}

/// The node a row came from, as a cell (fleet only).
pub(super) fn node_cell<'a>(theme: &Theme, node: &Option<String>) -> Cell<'a> {
    Cell::from(muted(
        theme,
        node.as_deref().map(node_label).unwrap_or("—").to_string(),
    ))
}

/// Add the node column when any row has a node (a fleet on PostgreSQL).
/// A list column: its header, its width (0: takes a share of what is left, at least
/// `FILL_MIN`), and its priority (0: always shown; higher numbers give way first, the
/// rightmost first among equals), so a narrow terminal keeps what identifies a row and its
/// state, and a wide one gives the room to ids and reasons.
pub(super) struct Col {
    pub header: &'static str,
    pub width: u16,
    pub priority: u8,
    /// A share-of-the-rest column that needs no more than this (its longest value): the rest
    /// goes to the columns that can use it (a reason), not to padding after short ids.
    pub cap: u16,
}

pub(super) const fn col(header: &'static str, width: u16, priority: u8) -> Col {
    Col {
        header,
        width,
        priority,
        cap: 0,
    }
}

impl Col {
    /// A share-of-the-rest column no wider than its longest value (and than `most`).
    /// `values` as shown: terminal-safe, so escapes count at their shown width.
    pub fn up_to<'t>(mut self, values: impl Iterator<Item = &'t str>, most: u16) -> Col {
        let longest = values.map(|v| safe(v).chars().count()).max().unwrap_or(0) as u16;
        self.cap = longest.max(self.header.len() as u16).clamp(FILL_MIN, most);
        self
    }
}

/// `text` in at most `width` characters, cut in the middle: ids that differ only at the end
/// ("seg_test_481", "seg_test_482") stay told apart.
pub(super) fn middle_cut(text: &str, width: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= width || width < 5 {
        return text.to_string();
    }
    let tail = (width - 1) / 2;
    let head = width - 1 - tail;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

const FILL_MIN: u16 = 12;

/// Which columns fit in `width` (the table's outer width, borders included).
pub(super) fn fit(columns: &[Col], width: u16) -> Vec<bool> {
    let mut shown = vec![true; columns.len()];
    let need = |shown: &[bool]| -> u16 {
        let cols: Vec<&Col> = columns
            .iter()
            .zip(shown)
            .filter(|(_, s)| **s)
            .map(|(c, _)| c)
            .collect();
        let widths: u16 = cols
            .iter()
            .map(|c| if c.width == 0 { FILL_MIN } else { c.width })
            .sum();
        widths + cols.len().saturating_sub(1) as u16 + 2
    };
    while need(&shown) > width {
        let Some(drop) = (0..columns.len())
            .filter(|&i| shown[i] && columns[i].priority > 0)
            .max_by_key(|&i| (columns[i].priority, i))
        else {
            break;
        };
        shown[drop] = false;
    }
    shown
}

/// Each column's width: fixed ones as given; what is left shared evenly among the others,
/// except that a capped one never takes more than its cap and leaves the rest to the others.
fn share_widths(columns: &[&Col], area_width: u16) -> Vec<u16> {
    let fixed: u16 = columns.iter().map(|c| c.width).sum();
    let gaps = columns.len().saturating_sub(1) as u16;
    let mut left = area_width.saturating_sub(2 + gaps + fixed);
    let mut widths: Vec<Option<u16>> = columns
        .iter()
        .map(|c| (c.width > 0).then_some(c.width))
        .collect();
    // Ids (capped columns) whole first, when that leaves the free-text columns their minimum:
    // an id cut short identifies nothing, a reason cut short still says most of it.
    let capped: u16 = columns
        .iter()
        .filter(|c| c.width == 0 && c.cap > 0)
        .map(|c| c.cap)
        .sum();
    let free = columns
        .iter()
        .filter(|c| c.width == 0 && c.cap == 0)
        .count() as u16;
    if capped + free * FILL_MIN <= left {
        for (i, c) in columns.iter().enumerate() {
            if c.width == 0 && c.cap > 0 {
                widths[i] = Some(c.cap);
            }
        }
        left -= capped;
    }
    loop {
        let open: Vec<usize> = (0..columns.len())
            .filter(|&i| widths[i].is_none())
            .collect();
        if open.is_empty() {
            break;
        }
        let share = left / open.len() as u16;
        // Capped columns that need less than a share take what they need, and the shares
        // are counted again without them.
        let settled: Vec<usize> = open
            .iter()
            .copied()
            .filter(|&i| columns[i].cap > 0 && columns[i].cap <= share)
            .collect();
        if settled.is_empty() {
            let extra = left - share * open.len() as u16;
            for (n, i) in open.iter().enumerate() {
                widths[*i] = Some(share + u16::from((n as u16) < extra));
            }
            break;
        }
        for i in settled {
            widths[i] = Some(columns[i].cap);
            left -= columns[i].cap;
        }
    }
    widths.into_iter().map(|w| w.unwrap_or(0)).collect()
}

/// A table of the columns that fit `area_width`; `rows` hold a cell for every column.
pub(super) fn fitted_table<'a>(
    theme: &Theme,
    columns: &[Col],
    rows: Vec<Vec<Cell<'a>>>,
    area_width: u16,
    title: String,
) -> Table<'a> {
    let shown = fit(columns, area_width);
    let header: Vec<&'static str> = columns
        .iter()
        .zip(&shown)
        .filter(|(_, s)| **s)
        .map(|(c, _)| c.header)
        .collect();
    let visible: Vec<&Col> = columns
        .iter()
        .zip(&shown)
        .filter(|(_, s)| **s)
        .map(|(c, _)| c)
        .collect();
    let widths: Vec<Constraint> = share_widths(&visible, area_width)
        .into_iter()
        .map(Constraint::Length)
        .collect();
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|cells| {
            Row::new(
                cells
                    .into_iter()
                    .zip(&shown)
                    .filter(|(_, s)| **s)
                    .map(|(c, _)| c),
            )
        })
        .collect();
    table(theme, &header, rows, widths, title)
}

/// Draw a list pane's table with the selection visible, and note where its rows landed so a
/// click selects the row under the pointer.
pub(super) fn render_list(frame: &mut Frame, table: Table, area: Rect, app: &App) {
    let mut state = TableState::default().with_selected(Some(app.selection()));
    frame.render_stateful_widget(table, area, &mut state);
    // Inside the border, below the header row.
    let rows = Rect {
        x: area.x + 1,
        y: area.y + 2,
        width: area.width.saturating_sub(2),
        height: area.height.saturating_sub(3),
    };
    app.hits.borrow_mut().list = Some(ListHits {
        rows,
        offset: state.offset(),
    });
}

/// The scroll of a pane's content (pane 3's halves, the collision side-by-side) for `lines`
/// lines in `area` (its border included): recorded for the keys, clamped to the end.
pub(super) fn content_scroll(app: &App, lines: usize, area: Rect) -> u16 {
    let height = area.height.saturating_sub(2) as usize;
    app.content.layout.set(crate::tui::app::DetailLayout {
        lines,
        height,
        response_at: None,
    });
    app.content.scroll.min(lines.saturating_sub(height)) as u16
}

/// " 12–40/96" (the lines shown, of all) when the content is taller than its box, else nothing.
pub(super) fn scroll_note(app: &App, lines: usize, area: Rect) -> String {
    let height = area.height.saturating_sub(2) as usize;
    if lines <= height {
        return String::new();
    }
    let top = app.content.scroll.min(lines - height);
    format!(" {}–{}/{lines} ", top + 1, top + height)
}
