//! Mapping drafts at the edge: read a draft file, preview it against the stored traffic, put it
//! in force. The CLI (`tracklayer mapping …`) and the dashboard both call these; the judging
//! itself is pure (`stage::preview`).

use std::path::{Path, PathBuf};

use crate::config::MappingConfig;
use crate::destinations::Destination;
use crate::pipeline::{MappingTable, RouteTarget};
use crate::stage::preview::{Preview, PreviewReport};
use crate::store::model::actions::OperatorAction;
use crate::store::{StoreError, StoreLocation};

#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    #[error("cannot read the draft {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A key of the draft, and why it is refused.
    #[error("{path}: {key}: {reason}")]
    Invalid {
        path: String,
        key: String,
        reason: String,
    },
    #[error("no stored message in the last {window}{environment}: nothing to preview (widen the window)")]
    Empty { window: String, environment: String },
    #[error("mapping: the rows live in the config file itself; put them in their own file (`[mapping] file = \"mapping.toml\"`) so a draft can replace it")]
    Inline,
    #[error("mapping.version: the draft is version {draft} and version {in_force} is in force; give the draft a higher version")]
    Version { draft: u32, in_force: u32 },
    #[error("cannot put the draft in force at {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Read a draft: a `[mapping]` table as in tracklayer.toml (or its keys at the top level).
pub fn read_draft(path: &Path, in_force: &MappingTable) -> Result<MappingTable, DraftError> {
    let text = std::fs::read_to_string(path).map_err(|source| DraftError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut draft = MappingTable::from_file_text(&text).map_err(|e| DraftError::Invalid {
        path: path.display().to_string(),
        key: e.key,
        reason: e.reason,
    })?;
    // The raw paths destinations asked to capture belong to the destinations, not the table.
    draft.capture = in_force.capture.clone();
    Ok(draft)
}

/// What a preview runs against.
#[derive(Clone)]
pub struct PreviewContext {
    pub location: StoreLocation,
    pub mapping: MappingConfig,
    pub targets: Vec<RouteTarget>,
    pub destinations: Vec<Destination>,
}

impl PreviewContext {
    /// Where a new draft goes: beside the mapping file in force, else the current directory.
    pub fn default_draft(&self) -> PathBuf {
        match (&self.mapping.watch, self.mapping.separate_file) {
            (Some(file), true) => file.with_file_name("draft.toml"),
            _ => PathBuf::from("draft.toml"),
        }
    }

    /// Write a draft to `path` when there is none there: the table in force one version up,
    /// with `adding` (a Segment name, and the mapped name it resembles) mapped. Returns what
    /// it wrote, in words, or None when the file was already there (it is previewed as it is).
    pub fn start_draft(
        &self,
        path: &Path,
        adding: Option<(&str, Option<&str>)>,
    ) -> Result<Option<String>, DraftError> {
        if path.exists() {
            return Ok(None);
        }
        let (segment, like) = adding.map_or((None, None), |(s, l)| (Some(s), l));
        let (text, added) =
            crate::pipeline::mapping_draft::draft_text(&self.mapping.table, segment, like);
        std::fs::write(path, text).map_err(|source| DraftError::Write {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Some(format!(
            "wrote {}: the table in force as version {}{}; edit it and preview again (m, enter)",
            path.display(),
            self.mapping.table.version + 1,
            added
                .map(|a| format!(", with `{}` → {}", a.segment, a.canonical))
                .unwrap_or_default()
        )))
    }

    /// Replay the window's stored messages through the table in force and the draft.
    /// Synchronous (a plain thread: the store's client must not run on an async task's).
    pub fn preview(
        &self,
        draft_path: &Path,
        since_ms: i64,
        window: &str,
        environment: Option<&str>,
    ) -> Result<PreviewReport, DraftError> {
        let draft = read_draft(draft_path, &self.mapping.table)?;
        let mut preview = Preview::new(
            &self.mapping.table,
            &draft,
            &self.targets,
            &self.destinations,
        );
        self.location
            .each_message(since_ms, environment, &mut |m| {
                preview.add(m.raw, m.environment, m.received_at_ms)
            })?;
        let report = preview.finish();
        if report.replayed == 0 {
            return Err(DraftError::Empty {
                window: window.to_string(),
                environment: environment.map(|e| format!(" for {e}")).unwrap_or_default(),
            });
        }
        Ok(report)
    }

    /// Put a draft in force: it replaces the mapping file the config names (written beside it
    /// and renamed, so a reloading node never reads half a table); running nodes reload it as
    /// the new version. Recorded as an operator action with who and when. Returns what was done.
    pub fn activate(&self, draft_path: &Path, who: &str) -> Result<String, DraftError> {
        let in_force = &self.mapping.table;
        let draft = read_draft(draft_path, in_force)?;
        let target: PathBuf = match (&self.mapping.watch, self.mapping.separate_file) {
            (Some(file), true) => file.clone(),
            _ => return Err(DraftError::Inline),
        };
        if draft.version <= in_force.version {
            return Err(DraftError::Version {
                draft: draft.version,
                in_force: in_force.version,
            });
        }
        let write_error = |source| DraftError::Write {
            path: target.display().to_string(),
            source,
        };
        let text = std::fs::read_to_string(draft_path).map_err(|source| DraftError::Read {
            path: draft_path.display().to_string(),
            source,
        })?;
        let temporary = target.with_extension("toml.activating");
        std::fs::write(&temporary, &text).map_err(write_error)?;
        std::fs::rename(&temporary, &target).map_err(write_error)?;
        let action = OperatorAction::ActivateMapping {
            version: draft.version,
            file: target.display().to_string(),
        };
        let done = action.done(1);
        if let Err(e) = self.location.operate(&action, who) {
            return Ok(format!("{done} (not recorded in the store: {e})"));
        }
        Ok(done)
    }
}
