//! Every theme shipped in `themes/` is readable: WCAG AA contrast (4.5:1) for every text role on
//! the background the theme is made for, and for the highlighted row; 3:1 for borders.

use tracklayer::tui::theme::{contrast, rgb, select, Theme};

fn shipped() -> Vec<(String, Theme)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("themes");
    let mut themes = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with("background")),
                "{}: say which background the theme is made for (background = \"#rrggbb\")",
                path.display()
            );
            let theme =
                Theme::parse(&text, "x").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            themes.push((path.display().to_string(), theme));
        }
    }
    assert!(themes.len() >= 3, "the three built-in themes at least");
    themes
}

#[test]
fn every_theme_passes_the_contrast_check() {
    let problems: Vec<String> = shipped()
        .iter()
        .flat_map(|(path, t)| {
            t.contrast_problems()
                .into_iter()
                .map(move |p| format!("{path}: {p}"))
        })
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_check_catches_grey_on_white() {
    // What the light theme used to draw muted text in.
    let theme = Theme::parse(
        "background = \"#ffffff\"\n[colors]\ntext = \"black\"\nmuted = \"gray\"\n",
        "grey",
    )
    .unwrap();
    let problems = theme.contrast_problems();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("grey: muted has contrast 1.2")),
        "{problems:?}"
    );
    assert!(
        (contrast(
            rgb(ratatui::style::Color::Black, theme.background),
            (255, 255, 255)
        ) - 21.0)
            .abs()
            < 0.01
    );
}

#[test]
fn an_unknown_theme_name_lists_the_themes() {
    let (themes, _) = tracklayer::tui::theme::load_all(None);
    let error = select(&themes, Some("nosuch")).unwrap_err();
    assert_eq!(
        error,
        "no theme named `nosuch`; the themes are: default, light, high-contrast (add one as themes/nosuch.toml)"
    );
    assert_eq!(select(&themes, Some("light")), Ok(1));
}
