//! Commands over what is stored: `inspect`, `replay`, `allow-replay`. They read the store a
//! config names and no other secret.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::output::{self, paint, BAD, GOOD, WARN};
use super::workspace;
use crate::config::Needs;
use crate::store;

/// The store, and nothing else secret.
const STORE_ONLY: Needs = Needs::Only {
    environment: None,
    storage: true,
};

/// `inspect REQUEST_ID --json`: the request and the trace of each of its messages.
#[derive(serde::Serialize)]
struct RequestTraces<'a, R: serde::Serialize> {
    request: &'a R,
    messages: Vec<crate::inspect::ExactTrace>,
}

/// The terminal colour of a word of the shared vocabulary (statuses, verdicts, outcomes).
fn tone(word: &str) -> Option<anstyle::Style> {
    match word {
        "mapped" | "identify" | "delivered" | "accepted" | "allowed" => Some(GOOD),
        "invalid" | "dead" | "failed" | "rejected" => Some(BAD),
        "unmapped" | "collision" | "duplicate" | "retry" | "pending" | "blocked" => Some(WARN),
        _ => None,
    }
}

pub fn inspect(config: Option<&Path>, id: &str, json: bool) -> Result<ExitCode> {
    let loaded = workspace::load(config, &STORE_ONLY, false)?;
    let mut reader = store::StoreLocation::of(&loaded.config().storage).trace_reader()?;
    if let Some(trace) = reader.trace(id)? {
        if json {
            output::json(&crate::inspect::to_json_exact(&trace))?;
        } else {
            output::result(crate::inspect::to_text_styled(
                &trace,
                &|word, text| match tone(word) {
                    Some(style) => paint(style, text),
                    None => text.to_string(),
                },
            ))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // A request id: list its messages, then the trace of each.
    if let Some(request) = reader.request(id)? {
        let messages = reader.messages_of_request(id)?;
        if json {
            let traces = messages
                .iter()
                .filter_map(|m| m.message_id.as_deref())
                .filter_map(|mid| reader.trace(mid).ok().flatten())
                .map(|t| crate::inspect::to_json_exact(&t))
                .collect::<Vec<_>>();
            output::json(&RequestTraces {
                request: &request,
                messages: traces,
            })?;
        } else {
            output::result(format!(
                "request {}  {}  {} via {}  {} bytes, {} message(s)",
                request.request_id,
                crate::inspect::format_ms(request.received_at_ms),
                request.path,
                request.auth_scheme,
                request.body_bytes,
                request.message_count
            ))?;
            for m in &messages {
                let status = match tone(&m.status) {
                    Some(style) => paint(style, &m.status),
                    None => m.status.clone(),
                };
                let line = format!(
                    "{} {}",
                    m.message_id.as_deref().unwrap_or("(no messageId)"),
                    m.reason.as_deref().unwrap_or("")
                );
                output::result(format!(
                    "  #{} {status} {}",
                    m.position,
                    crate::inspect::terminal_safe(&line)
                ))?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    // A forget request's audit row.
    let location = store::StoreLocation::of(&loaded.config().storage);
    let wanted = id.to_string();
    let audit = std::thread::spawn(move || crate::privacy::record(&location, &wanted))
        .join()
        .map_err(|_| anyhow::anyhow!("the store thread panicked"))??;
    if let Some(record) = audit {
        if json {
            output::json(&record)?;
        } else {
            output::result(super::forget::audit_line(&record))?;
            for f in &record.forwards {
                output::result(format!(
                    "  forwarded to {} ({}): {} after {} attempt(s){}",
                    f.destination,
                    f.kind,
                    f.status,
                    f.attempts,
                    f.last_error
                        .as_deref()
                        .map(|e| format!(" — {}", crate::inspect::terminal_safe(e)))
                        .unwrap_or_default()
                ))?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if json {
        output::json(&serde_json::json!({ "message_id": id, "status": "not_found" }))?;
    } else {
        output::status(format!(
            "nothing stored for `{}` (not a messageId, event_id, request id or forget request id)",
            crate::inspect::terminal_safe(id)
        ));
    }
    Ok(ExitCode::FAILURE)
}

pub fn allow_replay(
    config: Option<&Path>,
    env: &str,
    minutes: i64,
    note: &str,
    json: bool,
) -> Result<ExitCode> {
    let loaded = workspace::load(config, &STORE_ONLY, false)?;
    let config = loaded.config();
    if config.environment(env).is_none() {
        return Err(workspace::unknown(
            "environment",
            env,
            config.environments.iter().map(|e| e.name.as_str()),
        ));
    }
    if !(1..=7 * 24 * 60).contains(&minutes) {
        bail!("--minutes must be between 1 and 10080 (7 days)");
    }
    let start = chrono::Utc::now().timestamp_millis();
    let end = start + minutes * 60_000;
    store::StoreLocation::of(&config.storage).open_replay_window(env, start, end, note)?;
    if json {
        output::json(&serde_json::json!({
            "environment": env,
            "from": crate::inspect::format_ms(start),
            "until": crate::inspect::format_ms(end),
            "note": note,
        }))?;
    } else {
        output::result(format!(
            "replay window open for {env} until {}: repeated event_ids pass with their original id",
            crate::inspect::format_ms(end)
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn replay(
    config: Option<&Path>,
    destination: &str,
    since: Option<&str>,
    status: &str,
    json: bool,
) -> Result<ExitCode> {
    let loaded = workspace::load(config, &STORE_ONLY, false)?;
    let config = loaded.config();
    if !config.destinations.iter().any(|d| d.name == destination) {
        return Err(workspace::unknown(
            "destination",
            destination,
            config.destinations.iter().map(|d| d.name.as_str()),
        ));
    }
    if !["dead", "pending"].contains(&status) {
        bail!("--status must be dead or pending");
    }
    let since_ms = match since {
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .with_context(|| {
                format!("--since `{text}` is not RFC 3339 (e.g. 2026-04-23T10:00:00Z)")
            })?
            .timestamp_millis(),
        None => 0,
    };
    let count = store::StoreLocation::of(&config.storage).requeue(destination, status, since_ms)?;
    if json {
        output::json(&serde_json::json!({
            "destination": destination,
            "status": status,
            "since": since,
            "requeued": count,
        }))?;
    } else {
        output::result(format!(
            "{count} {status} deliver{} of {destination} re-queued; they keep their event_id",
            if count == 1 { "y" } else { "ies" }
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
