//! Themes by semantic role, from `themes/*.toml`. The three shipped themes are built in, so the
//! binary works from any folder; a `themes/` folder next to it adds or overrides. A theme that
//! fails to load falls back to the default with a message, never a crash.

use std::path::Path;
use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

const BUILT_IN: [(&str, &str); 3] = [
    ("default", include_str!("../../themes/default.toml")),
    ("light", include_str!("../../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.toml"),
    ),
];

#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub name: String,
    /// The terminal background the theme is made for. Not drawn (the terminal keeps its own);
    /// the contrast check measures every role against it.
    pub background: Color,
    pub text: Color,
    pub muted: Color,
    pub title: Color,
    pub border: Color,
    pub highlight_fg: Color,
    pub highlight_bg: Color,
    pub ok: Color,
    pub retrying: Color,
    pub failed: Color,
    pub blocked: Color,
    pub unmapped: Color,
    pub diff_added: Color,
    pub diff_removed: Color,
    pub diff_changed: Color,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: Option<String>,
    background: Option<String>,
    #[serde(default)]
    colors: std::collections::BTreeMap<String, String>,
}

impl Default for Theme {
    fn default() -> Theme {
        Theme {
            name: "default".into(),
            background: Color::Rgb(0, 0, 0),
            text: Color::Reset,
            muted: Color::DarkGray,
            title: Color::Indexed(105),
            border: Color::DarkGray,
            highlight_fg: Color::Black,
            highlight_bg: Color::Indexed(105),
            ok: Color::Green,
            retrying: Color::Yellow,
            failed: Color::LightRed,
            blocked: Color::LightMagenta,
            unmapped: Color::Cyan,
            diff_added: Color::Green,
            diff_removed: Color::Indexed(203),
            diff_changed: Color::Yellow,
        }
    }
}

impl Theme {
    /// Parse a theme file; unknown roles or bad colours are errors naming the key.
    pub fn parse(text: &str, fallback_name: &str) -> Result<Theme, String> {
        let file: ThemeFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut theme = Theme {
            name: file.name.unwrap_or_else(|| fallback_name.to_string()),
            ..Theme::default()
        };
        if let Some(value) = &file.background {
            theme.background = Color::from_str(value)
                .map_err(|_| format!("background: `{value}` is not a colour"))?;
        }
        for (role, value) in &file.colors {
            let color = Color::from_str(value)
                .map_err(|_| format!("colors.{role}: `{value}` is not a colour"))?;
            let slot = match role.as_str() {
                "text" => &mut theme.text,
                "muted" => &mut theme.muted,
                "title" => &mut theme.title,
                "border" => &mut theme.border,
                "highlight_fg" => &mut theme.highlight_fg,
                "highlight_bg" => &mut theme.highlight_bg,
                "ok" => &mut theme.ok,
                "retrying" => &mut theme.retrying,
                "failed" => &mut theme.failed,
                "blocked" => &mut theme.blocked,
                "unmapped" => &mut theme.unmapped,
                "diff_added" => &mut theme.diff_added,
                "diff_removed" => &mut theme.diff_removed,
                "diff_changed" => &mut theme.diff_changed,
                other => return Err(format!("colors.{other}: not a theme role")),
            };
            *slot = color;
        }
        Ok(theme)
    }

    pub fn style(&self, color: Color) -> Style {
        Style::default().fg(color)
    }

    pub fn highlight(&self) -> Style {
        Style::default()
            .fg(self.highlight_fg)
            .bg(self.highlight_bg)
            .add_modifier(Modifier::BOLD)
    }

    pub fn title(&self) -> Style {
        Style::default().fg(self.title).add_modifier(Modifier::BOLD)
    }

    /// The role colour of a status or outcome word, wherever it appears.
    pub fn status(&self, word: &str) -> Color {
        match word {
            "accepted" | "mapped" | "delivered" | "ready" | "replayed" => self.ok,
            "retry" | "pending" | "in_flight" | "retrying" => self.retrying,
            "invalid" | "rejected" | "dead" | "failed" | "failing" | "paused"
            | "missing_required" | "not_configured" => self.failed,
            "duplicate" | "collision" | "blocked_consent" | "other_environment" | "blocked" => {
                self.blocked
            }
            "unmapped" => self.unmapped,
            "identify" => self.text,
            _ => self.muted,
        }
    }
}

/// WCAG AA: body text needs 4.5:1 against its background; borders (not text) 3:1.
pub const TEXT_CONTRAST: f64 = 4.5;
pub const BORDER_CONTRAST: f64 = 3.0;

/// A colour as the usual xterm palette draws it. `reset` is the terminal's own foreground,
/// assumed to be made for its background (light on dark, dark on light).
pub fn rgb(color: Color, background: Color) -> (u8, u8, u8) {
    match color {
        Color::Rgb(r, g, b) => (r, g, b),
        Color::Black => (0, 0, 0),
        Color::Red => (205, 0, 0),
        Color::Green => (0, 205, 0),
        Color::Yellow => (205, 205, 0),
        Color::Blue => (0, 0, 238),
        Color::Magenta => (205, 0, 205),
        Color::Cyan => (0, 205, 205),
        Color::Gray => (229, 229, 229),
        Color::DarkGray => (127, 127, 127),
        Color::LightRed => (255, 0, 0),
        Color::LightGreen => (0, 255, 0),
        Color::LightYellow => (255, 255, 0),
        Color::LightBlue => (92, 92, 255),
        Color::LightMagenta => (255, 0, 255),
        Color::LightCyan => (0, 255, 255),
        Color::White => (255, 255, 255),
        Color::Indexed(i) => indexed(i),
        Color::Reset => {
            if luminance(rgb(background, Color::Black)) > 0.5 {
                (0, 0, 0)
            } else {
                (229, 229, 229)
            }
        }
    }
}

/// The 256-colour palette: 16 system colours, a 6×6×6 cube, 24 greys.
fn indexed(i: u8) -> (u8, u8, u8) {
    const SYSTEM: [Color; 16] = [
        Color::Black,
        Color::Red,
        Color::Green,
        Color::Yellow,
        Color::Blue,
        Color::Magenta,
        Color::Cyan,
        Color::Gray,
        Color::DarkGray,
        Color::LightRed,
        Color::LightGreen,
        Color::LightYellow,
        Color::LightBlue,
        Color::LightMagenta,
        Color::LightCyan,
        Color::White,
    ];
    match i {
        0..=15 => rgb(SYSTEM[i as usize], Color::Black),
        16..=231 => {
            let level = |v: u8| if v == 0 { 0 } else { 55 + v * 40 };
            let v = i - 16;
            (level(v / 36), level((v / 6) % 6), level(v % 6))
        }
        _ => {
            let g = 8 + (i - 232) * 10;
            (g, g, g)
        }
    }
}

/// Relative luminance (WCAG 2).
fn luminance((r, g, b): (u8, u8, u8)) -> f64 {
    let channel = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.03928 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)
}

/// The WCAG contrast ratio of two colours, 1 to 21.
pub fn contrast(a: (u8, u8, u8), b: (u8, u8, u8)) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

impl Theme {
    /// Every role whose text would be hard to read on the theme's background (and the
    /// highlighted row against its own background), with its ratio.
    pub fn contrast_problems(&self) -> Vec<String> {
        let bg = rgb(self.background, self.background);
        let mut problems = Vec::new();
        let mut check = |role: &str, fg: (u8, u8, u8), against: (u8, u8, u8), needed: f64| {
            let ratio = contrast(fg, against);
            if ratio < needed {
                problems.push(format!(
                    "{}: {role} has contrast {ratio:.2}:1, needs {needed}:1",
                    self.name
                ));
            }
        };
        for (role, color) in [
            ("text", self.text),
            ("muted", self.muted),
            ("title", self.title),
            ("ok", self.ok),
            ("retrying", self.retrying),
            ("failed", self.failed),
            ("blocked", self.blocked),
            ("unmapped", self.unmapped),
            ("diff_added", self.diff_added),
            ("diff_removed", self.diff_removed),
            ("diff_changed", self.diff_changed),
        ] {
            check(role, rgb(color, self.background), bg, TEXT_CONTRAST);
        }
        check(
            "border",
            rgb(self.border, self.background),
            bg,
            BORDER_CONTRAST,
        );
        check(
            "highlight_fg on highlight_bg",
            rgb(self.highlight_fg, self.background),
            rgb(self.highlight_bg, self.background),
            TEXT_CONTRAST,
        );
        problems
    }
}

/// The index of the theme called `name`; an unknown name is an error listing the themes.
pub fn select(themes: &[Theme], name: Option<&str>) -> Result<usize, String> {
    let Some(name) = name else { return Ok(0) };
    themes.iter().position(|t| t.name == name).ok_or_else(|| {
        let names: Vec<&str> = themes.iter().map(|t| t.name.as_str()).collect();
        format!(
            "no theme named `{name}`; the themes are: {} (add one as themes/{name}.toml)",
            names.join(", ")
        )
    })
}

/// All themes: built-in ones, then `themes/*.toml` under `dir` (overriding by name). Problems
/// are returned as messages for the status line.
pub fn load_all(dir: Option<&Path>) -> (Vec<Theme>, Vec<String>) {
    let mut themes = Vec::new();
    let mut problems = Vec::new();
    for (name, text) in BUILT_IN {
        match Theme::parse(text, name) {
            Ok(t) => themes.push(t),
            Err(e) => problems.push(format!("built-in theme {name}: {e}")),
        }
    }
    if let Some(dir) = dir {
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for path in paths
                .into_iter()
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            {
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("theme")
                    .to_string();
                let parsed = std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|text| Theme::parse(&text, &stem));
                if let Ok(theme) = &parsed {
                    // Loaded all the same: the user chose it; say what will be hard to read.
                    problems.extend(theme.contrast_problems());
                }
                match parsed {
                    Ok(theme) => match themes.iter_mut().find(|t| t.name == theme.name) {
                        Some(existing) => *existing = theme,
                        None => themes.push(theme),
                    },
                    Err(e) => problems.push(format!(
                        "theme {} not loaded ({e}); using the others",
                        path.display()
                    )),
                }
            }
        }
    }
    if themes.is_empty() {
        themes.push(Theme::default());
    }
    (themes, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_in_code_is_the_shipped_default() {
        // A user theme sets some roles and inherits the rest from here.
        let shipped = Theme::parse(BUILT_IN[0].1, "default").unwrap();
        assert_eq!(Theme::default(), shipped);
    }

    #[test]
    fn built_in_themes_load_and_differ() {
        let (themes, problems) = load_all(None);
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = themes.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["default", "light", "high-contrast"]);
        for t in &themes {
            assert_ne!(t.ok, t.failed, "{}: failed must not look like ok", t.name);
            assert_ne!(t.status("dead"), t.status("delivered"));
            assert_ne!(t.status("unmapped"), t.status("mapped"));
        }
    }

    #[test]
    fn a_broken_theme_falls_back_with_a_message() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("broken.toml"),
            "name = \"broken\"\n[colors]\nok = \"not-a-colour\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("ocean.toml"),
            "name = \"ocean\"\n[colors]\nok = \"#00ffaa\"\n",
        )
        .unwrap();
        let (themes, problems) = load_all(Some(dir.path()));
        assert!(themes
            .iter()
            .any(|t| t.name == "ocean" && t.ok == Color::Rgb(0, 255, 170)));
        assert!(!themes.iter().any(|t| t.name == "broken"));
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("colors.ok: `not-a-colour` is not a colour"),
            "{problems:?}"
        );
    }
}
