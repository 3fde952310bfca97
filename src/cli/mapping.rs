//! `tracklayer mapping preview` and `tracklayer mapping activate`: see a draft mapping table's
//! effect on stored traffic before it ships, then put it in force.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};

use super::output;
use super::workspace;
use crate::config::Needs;
use crate::pipeline::MappingTable;
use crate::stage::preview::{Preview, PreviewReport};
use crate::store::model::actions::OperatorAction;
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

/// Read a draft: a `[mapping]` table as in tracklayer.toml (or its keys at the top level).
/// An error names the key.
pub fn read_draft(path: &Path, in_force: &MappingTable) -> Result<MappingTable> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the draft {}", path.display()))?;
    let mut draft = MappingTable::from_file_text(&text)
        .map_err(|e| anyhow!("{}: {}: {}", path.display(), e.key, e.reason))?;
    // The raw paths destinations asked to capture belong to the destinations, not the table.
    draft.capture = in_force.capture.clone();
    Ok(draft)
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
    let before = config.mapping.table.clone();
    let after = read_draft(draft_path, &before)?;
    let location = StoreLocation::of(&config.storage);
    let since_ms = chrono::Utc::now().timestamp_millis() - window_ms;
    let environment = env.map(str::to_string);
    let targets = setup.route_targets();
    let destinations = setup.destinations.clone();
    // The store's client is synchronous: the scan runs on a thread of its own.
    let report: PreviewReport = std::thread::spawn(move || -> Result<PreviewReport> {
        let mut preview = Preview::new(&before, &after, &targets, &destinations);
        location.each_message(since_ms, environment.as_deref(), &mut |m| {
            preview.add(m.raw, m.environment, m.received_at_ms)
        })?;
        Ok(preview.finish())
    })
    .join()
    .map_err(|_| anyhow!("the preview thread panicked"))??;
    if report.replayed == 0 {
        bail!(
            "no stored message in the last {since}{}: nothing to preview (widen --since)",
            env.map(|e| format!(" for {e}")).unwrap_or_default()
        );
    }
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
    let config = &loaded.setup.config;
    let in_force = &config.mapping.table;
    let draft = read_draft(draft_path, in_force)?;
    let Some(target) = config
        .mapping
        .watch
        .clone()
        .filter(|_| config.mapping.separate_file)
    else {
        bail!(
            "mapping: the rows live in the config file itself; put them in their own file (`[mapping] file = \"mapping.toml\"`) so a draft can replace it"
        );
    };
    if draft.version <= in_force.version {
        bail!(
            "mapping.version: the draft is version {} and version {} is in force; give the draft a higher version",
            draft.version,
            in_force.version
        );
    }
    let text = std::fs::read_to_string(draft_path)
        .with_context(|| format!("cannot read the draft {}", draft_path.display()))?;
    // Written beside the file and renamed over it: a reloading node never reads half a table.
    let temporary = target.with_extension("toml.activating");
    std::fs::write(&temporary, &text)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &target)
        .with_context(|| format!("cannot replace {}", target.display()))?;
    let who = crate::operator::operator_name();
    let action = OperatorAction::ActivateMapping {
        version: draft.version,
        file: target.display().to_string(),
    };
    let location = StoreLocation::of(&config.storage);
    let record_action = action.clone();
    let recorded = std::thread::spawn(move || location.operate(&record_action, &who))
        .join()
        .map_err(|_| anyhow!("the store thread panicked"))?;
    if let Err(e) = recorded {
        output::status(format!("activated, but not recorded in the store: {e}"));
    }
    if json {
        output::json(&serde_json::json!({
            "activated": draft.version,
            "previous": in_force.version,
            "file": target.display().to_string(),
        }))?;
    } else {
        output::result(action.done(1))?;
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
