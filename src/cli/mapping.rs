//! `tracklayer mapping preview` and `tracklayer mapping activate`: see a draft mapping table's
//! effect on stored traffic before it ships, then put it in force.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};

use super::output;
use super::workspace;
use crate::config::Needs;
use crate::stage::preview::PreviewReport;
use crate::store::StoreLocation;

/// `7d`, `24h`, `30m`, `90s`: how far back the preview looks.
pub fn parse_duration(text: &str) -> Result<i64> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = number
        .parse()
        .map_err(|_| anyhow!("--since `{text}`: give a number and a unit, e.g. 7d, 24h, 30m"))?;
    let unit_ms = match unit {
        "d" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        _ => bail!("--since `{text}`: the unit is d, h, m or s (e.g. 7d)"),
    };
    if n <= 0 {
        bail!("--since `{text}` must be longer than nothing");
    }
    Ok(n * unit_ms)
}

pub fn preview(
    config: Option<&Path>,
    draft_path: &Path,
    since: &str,
    env: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let window_ms = parse_duration(since)?;
    let loaded = workspace::load(config, &Needs::Everything, false)?;
    let setup = loaded.setup.clone();
    let config = &setup.config;
    if let Some(env) = env {
        if !config.environments.iter().any(|e| e.name == env) {
            return Err(workspace::unknown(
                "environment",
                env,
                config.environments.iter().map(|e| e.name.as_str()),
            ));
        }
    }
    let context = crate::preview::PreviewContext {
        location: StoreLocation::of(&config.storage),
        mapping: config.mapping.clone(),
        targets: setup.route_targets(),
        destinations: setup.destinations.clone(),
    };
    let since_ms = chrono::Utc::now().timestamp_millis() - window_ms;
    let (draft, window, environment) = (
        draft_path.to_path_buf(),
        since.to_string(),
        env.map(str::to_string),
    );
    // The store's client is synchronous: the scan runs on a thread of its own.
    let report: PreviewReport = std::thread::spawn(move || {
        context.preview(&draft, since_ms, &window, environment.as_deref())
    })
    .join()
    .map_err(|_| anyhow!("the preview thread panicked"))??;
    if json {
        output::json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    output::result(format!(
        "{} stored messages of the last {since} replayed: mapping v{} (in force) against the draft v{}; {} would change{}",
        report.replayed,
        report.before_version,
        report.after_version,
        report.changed,
        if report.invalid > 0 {
            format!(" ({} no longer valid, not judged)", report.invalid)
        } else {
            String::new()
        }
    ))?;
    for g in &report.groups {
        let mark = if g.before == g.after { " " } else { "~" };
        output::result(format!(
            "{mark} {:<32} {:>18} → {:<18} {:>8}  e.g. {}",
            crate::inspect::terminal_safe(&g.segment_event),
            g.before,
            g.after,
            g.count,
            g.example_message_ids
                .iter()
                .map(|m| crate::inspect::terminal_safe(m))
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
        for n in &g.not_sent {
            output::result(format!(
                "    not sent to {}: {} ({} messages): {}",
                n.destination,
                n.verdict,
                n.count,
                crate::inspect::terminal_safe(&n.reason)
            ))?;
        }
    }
    for d in &report.destinations {
        output::result(format!(
            "{}: {} payload(s) would change",
            d.name, d.payloads_changed
        ))?;
        for example in &d.examples {
            output::result(format!(
                "  e.g. {}",
                crate::inspect::terminal_safe(&example.message_id)
            ))?;
            for line in &example.diff {
                output::result(format!("    {}", crate::inspect::terminal_safe(line)))?;
            }
        }
    }
    output::status(format!("note: {}", report.note));
    Ok(ExitCode::SUCCESS)
}

/// Put a draft in force: it replaces the mapping file the config names, which every running
/// node reloads as the new version. Recorded with who and when.
pub fn activate(config: Option<&Path>, draft_path: &Path, json: bool) -> Result<ExitCode> {
    let loaded = workspace::load(config, &Needs::Everything, false)?;
    let setup = loaded.setup.clone();
    let context = crate::preview::PreviewContext {
        location: StoreLocation::of(&setup.config.storage),
        mapping: setup.config.mapping.clone(),
        targets: Vec::new(),
        destinations: Vec::new(),
    };
    let previous = context.mapping.table.version;
    let draft = draft_path.to_path_buf();
    let who = crate::operator::operator_name();
    let done = std::thread::spawn(move || context.activate(&draft, &who))
        .join()
        .map_err(|_| anyhow!("the activation thread panicked"))??;
    if json {
        output::json(&serde_json::json!({"previous": previous, "done": done}))?;
    } else {
        output::result(done)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_written() {
        assert_eq!(super::parse_duration("7d").unwrap(), 7 * 86_400_000);
        assert_eq!(super::parse_duration("30m").unwrap(), 1_800_000);
        assert!(super::parse_duration("7")
            .unwrap_err()
            .to_string()
            .contains("unit"));
        assert!(super::parse_duration("week").is_err());
        assert!(super::parse_duration("0h").is_err());
    }
}
