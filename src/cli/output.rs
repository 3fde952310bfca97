//! Output discipline: results on stdout (JSON with `--json`), status and progress on stderr,
//! colour only where a person reads it, and a closed pipe ends a command quietly.

use std::io::Write;

use anstyle::{AnsiColor, Style};
use clap::ValueEnum;

/// `--color`: when to colour output and log lines.
#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum ColorWhen {
    /// On a terminal, unless `NO_COLOR` is set (or `TERM=dumb`).
    #[default]
    Auto,
    Always,
    Never,
}

/// Decide colour once for the whole process; `anstream` strips styles from every stream that
/// should not get them.
pub fn choose_colour(when: ColorWhen) {
    let choice = match when {
        ColorWhen::Auto => anstream::ColorChoice::Auto,
        ColorWhen::Always => anstream::ColorChoice::Always,
        ColorWhen::Never => anstream::ColorChoice::Never,
    };
    choice.write_global();
}

/// Whether log lines on stderr get ANSI colour (tracing writes them itself, not via anstream).
pub fn stderr_coloured() -> bool {
    anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never
}

pub const GOOD: Style = AnsiColor::Green.on_default();
pub const BAD: Style = AnsiColor::Red.on_default().bold();
pub const WARN: Style = AnsiColor::Yellow.on_default();
pub const DIM: Style = Style::new().dimmed();

pub fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// One result on stdout (styles stripped where colour is off).
pub fn result(text: impl std::fmt::Display) -> std::io::Result<()> {
    let mut out = anstream::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// Bytes generated elsewhere (completion scripts, manual pages) onto stdout as they are.
pub fn raw(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// One JSON document on stdout, pretty-printed.
pub fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    result(serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// A status line on stderr, for people (styles stripped where colour is off).
pub fn status(text: impl std::fmt::Display) {
    let _ = writeln!(anstream::stderr().lock(), "{text}");
}
