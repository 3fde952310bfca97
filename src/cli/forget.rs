//! `tracklayer forget`: erase a person everywhere TrackLayer keeps them, suppress them from now
//! on, forward the deletion where a platform takes one; `--undo` lifts a suppression; `--list`
//! shows the audit.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::output;
use super::workspace;
use crate::config::Needs;
use crate::pipeline::privacy::ForgetRequest;
use crate::privacy::{self, Order, Report};
use crate::store::model::privacy::PrivacyRecord;
use crate::store::StoreLocation;

pub struct ForgetArgs {
    pub env: Option<String>,
    pub request: ForgetRequest,
    pub undo: bool,
    pub list: bool,
    pub json: bool,
}

pub fn forget(config: Option<&Path>, args: ForgetArgs) -> Result<ExitCode> {
    // Forwards are sent with the destinations' credentials: every secret is read.
    let loaded = workspace::load(config, &Needs::Everything, false)?;
    let setup = &loaded.setup;
    let location = StoreLocation::of(&setup.config.storage);
    if args.list {
        let records = std::thread::spawn(move || privacy::history(&location, 50))
            .join()
            .map_err(|_| anyhow::anyhow!("the store thread panicked"))??;
        if args.json {
            output::json(&records)?;
        } else if records.is_empty() {
            output::status("no forget requests recorded");
        } else {
            for r in &records {
                output::result(audit_line(r))?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(env) = args.env else {
        bail!("--env is required: the environment the request comes from (recorded in the audit)");
    };
    if !setup.config.environments.iter().any(|e| e.name == env) {
        return Err(workspace::unknown(
            "environment",
            &env,
            setup.config.environments.iter().map(|e| e.name.as_str()),
        ));
    }
    let order = Order {
        once: None,
        request: args.request,
        environment: env,
        who: format!("cli:{}", crate::operator::operator_name()),
        request_id: privacy::new_request_id(),
        undo: args.undo,
    };
    let destinations = setup.destinations.clone();
    let country = setup.config.workspace.default_country.clone();
    let run_location = location.clone();
    let run_destinations = destinations.clone();
    let report: Report = std::thread::spawn(move || {
        privacy::run(&run_location, &order, &run_destinations, country.as_deref())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the forget thread panicked"))??;
    // Forward now what was queued; whatever fails stays queued for a running node to retry.
    if !report.forwarded.is_empty() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        if let Err(e) = runtime.block_on(privacy::forward::send_due(
            &privacy::forward::ForwardStore::new(location.clone()),
            &destinations,
        )) {
            output::status(format!("forwards stay queued: {e}"));
        }
    }
    let record = {
        let (location, id) = (location.clone(), report.request_id.clone());
        std::thread::spawn(move || privacy::record(&location, &id))
            .join()
            .map_err(|_| anyhow::anyhow!("the store thread panicked"))??
    };
    if args.json {
        output::json(&serde_json::json!({"report": report, "audit": record}))?;
    } else {
        output::result(format!(
            "{} {} ({}): {}",
            report.action, report.request_id, report.status, report.message
        ))?;
        if !report.deleted.0.is_empty() || report.warehouse_rows > 0 {
            let mut parts: Vec<String> = report
                .deleted
                .0
                .iter()
                .map(|(table, n)| format!("{table} {n}"))
                .collect();
            if report.warehouse_rows > 0 {
                parts.push(format!("warehouse {}", report.warehouse_rows));
            }
            output::result(format!("  deleted: {}", parts.join(", ")))?;
        }
        if let Some(record) = &record {
            for f in &record.forwards {
                output::result(format!(
                    "  forwarded to {} ({}): {}{}",
                    f.destination,
                    f.kind,
                    f.status,
                    f.last_error
                        .as_deref()
                        .map(|e| format!(" — {e}"))
                        .unwrap_or_default()
                ))?;
            }
        }
        for skipped in &report.not_forwarded {
            output::result(format!(
                "  not forwarded to {}: {}",
                skipped.destination, skipped.why
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One audit row as a line: no personal data in it, by construction.
pub fn audit_line(r: &PrivacyRecord) -> String {
    let deleted: i64 = r
        .deleted
        .as_object()
        .map(|o| o.values().filter_map(|v| v.as_i64()).sum())
        .unwrap_or(0);
    let forwards: Vec<String> = r
        .forwards
        .iter()
        .map(|f| format!("{} {}", f.destination, f.status))
        .collect();
    format!(
        "{}  {}  {} {}  by {}  env {}  {} rows deleted  {} later messages suppressed{}",
        crate::inspect::format_ms(r.received_at_ms),
        r.request_id,
        r.action,
        r.status,
        crate::inspect::terminal_safe(&r.who),
        r.environment,
        deleted,
        r.suppressed_messages,
        if forwards.is_empty() {
            String::new()
        } else {
            format!("  forwarded: {}", forwards.join(", "))
        }
    )
}
