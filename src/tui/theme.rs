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
    #[serde(default)]
    colors: std::collections::BTreeMap<String, String>,
}

impl Default for Theme {
    fn default() -> Theme {
        Theme {
            name: "default".into(),
            text: Color::Reset,
            muted: Color::DarkGray,
            title: Color::LightBlue,
            border: Color::DarkGray,
            highlight_fg: Color::Black,
            highlight_bg: Color::LightBlue,
            ok: Color::Green,
            retrying: Color::Yellow,
            failed: Color::LightRed,
            blocked: Color::Magenta,
            unmapped: Color::Cyan,
            diff_added: Color::Green,
            diff_removed: Color::Red,
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
            "retry" | "pending" | "in_flight" | "retrying" | "paused" => self.retrying,
            "invalid" | "rejected" | "dead" | "failed" | "missing_required" | "not_configured" => {
                self.failed
            }
            "duplicate" | "collision" | "blocked_consent" | "other_environment" | "blocked" => {
                self.blocked
            }
            "unmapped" => self.unmapped,
            "identify" => self.text,
            _ => self.muted,
        }
    }
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
