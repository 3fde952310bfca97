//! `check` (the config, or the embedded default), `init`, and what is generated from the
//! command definitions: `completions` and `man`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde::Serialize;

use super::output::{self, paint, BAD, GOOD};
use super::workspace::{self, DEFAULT_CONFIG, DEFAULT_DB};
use crate::config::{self, Config};
use crate::destinations::Setup;
use crate::store;

/// What `check --json` prints.
#[derive(Serialize, Default)]
struct Report {
    /// The file checked; `null` for the embedded default.
    config: Option<String>,
    embedded_default: bool,
    ok: bool,
    problems: Vec<Problem>,
    environments: Vec<String>,
    destinations: Vec<String>,
    /// How each destination with more than one way in sends ("google: Google Ads through the
    /// Data Manager API …").
    paths: Vec<String>,
    database: Option<String>,
    /// PostgreSQL: the schema version the server holds, and the one this build applies.
    schema: Option<Schema>,
    /// Embedded default: whether its workspace (database, secret) exists yet.
    workspace_exists: Option<bool>,
}

#[derive(Serialize)]
struct Problem {
    key: Option<String>,
    reason: String,
}

#[derive(Serialize)]
struct Schema {
    version: i32,
    latest: i32,
}

pub fn check(config: Option<&Path>, json: bool) -> Result<ExitCode> {
    let report = match workspace::config_file(config) {
        Some(path) => check_file(&path),
        None => check_embedded(),
    };
    if json {
        output::json(&report)?;
    } else {
        let name = report
            .config
            .clone()
            .unwrap_or_else(|| format!("embedded default (no {DEFAULT_CONFIG})"));
        for p in &report.problems {
            match &p.key {
                Some(key) => output::status(format!("{name}: {key}: {}", p.reason)),
                None => output::status(format!("{name}: {}", p.reason)),
            }
        }
        if let Some(schema) = &report.schema {
            output::status(format!(
                "{}: the server answers; schema version {} of {}{}",
                report.database.as_deref().unwrap_or("storage.url"),
                schema.version,
                schema.latest,
                if schema.version < schema.latest {
                    " (serve applies the rest at start)"
                } else {
                    ""
                }
            ));
        }
        if report.ok {
            let mut line = format!(
                "{name}: {} ({} environment(s), {} destination(s), database {}",
                paint(GOOD, "ok"),
                report.environments.len(),
                report.destinations.len(),
                report.database.as_deref().unwrap_or("?")
            );
            if report.workspace_exists == Some(false) {
                line.push_str(", created by the first `tracklayer serve`");
            }
            line.push(')');
            output::result(line)?;
            for path in &report.paths {
                output::result(format!("  {path}"))?;
            }
        } else {
            output::status(paint(
                BAD,
                &format!("{name}: {} problem(s)", report.problems.len()),
            ));
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn summary(config: &Config, report: &mut Report) {
    report.environments = config.environments.iter().map(|e| e.name.clone()).collect();
    report.destinations = config.destinations.iter().map(|d| d.name.clone()).collect();
    report.database = Some(workspace::store_name(config));
}

fn check_file(path: &Path) -> Report {
    let mut report = Report {
        config: Some(path.display().to_string()),
        ..Report::default()
    };
    let setup = match Setup::load(path) {
        Ok(setup) => setup,
        Err(e) => {
            report.problems = e
                .problems()
                .into_iter()
                .map(|(key, reason)| Problem {
                    key: key.map(str::to_string),
                    reason,
                })
                .collect();
            return report;
        }
    };
    let config = &setup.config;
    summary(config, &mut report);
    report.paths = setup
        .destinations
        .iter()
        .filter_map(|d| d.describe_path().map(|path| format!("{}: {path}", d.name)))
        .collect();
    report.ok = true;
    if let Some(url) = &config.storage.url {
        match store::postgres::probe(url.expose()) {
            Ok(version) => {
                report.schema = Some(Schema {
                    version,
                    latest: store::postgres::MIGRATIONS.len() as i32,
                })
            }
            Err(e) => {
                // The whole chain: "error connecting to server: Connection refused".
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(inner) = source {
                    let text = inner.to_string();
                    if !why.ends_with(&text) {
                        why.push_str(&format!(": {text}"));
                    }
                    source = inner.source();
                }
                report.ok = false;
                report.problems.push(Problem {
                    key: Some("storage.url".into()),
                    reason: format!(
                        "{}: the server does not answer: {}",
                        store::postgres::describe(url.expose()),
                        why.replace(url.expose(), "(storage.url)")
                    ),
                });
            }
        }
    }
    report
}

/// The embedded default is always valid; what can be wrong is its workspace (a database that
/// exists but cannot be read). Nothing is created.
fn check_embedded() -> Report {
    let db = PathBuf::from(DEFAULT_DB);
    let exists = db.exists();
    let mut report = Report {
        embedded_default: true,
        workspace_exists: Some(exists),
        ok: true,
        ..Report::default()
    };
    let config = config::embedded_default(db.clone(), config::Secret::new(""), None);
    summary(&config, &mut report);
    if exists {
        if let Err(e) = store::read_local_secret(&db, workspace::LOCAL_SECRET_KEY)
            .map_err(anyhow::Error::from)
            .and_then(|s| s.context("it holds no embedded default secret"))
        {
            report.ok = false;
            report.problems.push(Problem {
                key: None,
                reason: format!("./{DEFAULT_DB} cannot be used: {e:#}"),
            });
        }
    }
    report
}

/// `init`: a commented example config, only its owner can read.
pub fn init(path: &Path, force: bool) -> Result<ExitCode> {
    if path.exists() && !force {
        anyhow::bail!(
            "{} already exists; pass --force to overwrite it",
            path.display()
        );
    }
    workspace::write_private(path, config::EXAMPLE_CONFIG.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    output::status(format!(
        "wrote {}; set the secrets it names (env:...) and run `tracklayer check --config {}`",
        path.display(),
        path.display()
    ));
    Ok(ExitCode::SUCCESS)
}

/// `completions SHELL`: the completion script, on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let mut command = <super::Cli as clap::CommandFactory>::command();
    // Into memory first: the generator panics on a write error, such as a closed pipe.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "tracklayer", &mut script);
    output::raw(&script)?;
    Ok(ExitCode::SUCCESS)
}

/// `man`: the manual page on stdout, or with `--dir` one page per command in that directory.
pub fn man(dir: Option<&Path>) -> Result<ExitCode> {
    let command = <super::Cli as clap::CommandFactory>::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("cannot write manual pages into {}", dir.display()))?;
            output::status(format!("manual pages written to {}", dir.display()));
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page)?;
            output::raw(&page)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
