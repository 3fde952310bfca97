//! What the stateful pipeline stages take and give, the same for every store.

use serde::Serialize;

use serde_json::{Map, Value};

use crate::pipeline::dedup::CollisionKind;
use crate::pipeline::identity::Observation;
use crate::pipeline::{Draft, RouteVerdict};

/// What the pipeline made of one message (the reply and the trace show it).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PipelineOutcome {
    Mapped {
        event_id: String,
        name: String,
        routes: Vec<(String, RouteVerdict)>,
    },
    /// Let through by an operator's replay window despite an earlier event with the same id.
    Replayed { event_id: String, name: String },
    Collision {
        event_id: String,
        kind: CollisionKind,
    },
    Unmapped {
        reason: String,
        suggestion: Option<String>,
    },
    Identify {
        profile_id: i64,
        merged: usize,
        conflicts: usize,
    },
}

impl PipelineOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            PipelineOutcome::Mapped { .. } => "mapped",
            PipelineOutcome::Replayed { .. } => "replayed",
            PipelineOutcome::Collision { .. } => "collision",
            PipelineOutcome::Unmapped { .. } => "unmapped",
            PipelineOutcome::Identify { .. } => "identify",
        }
    }
}

/// What the request task prepared for the writer (the pure, stateless stages).
#[derive(Debug, Clone)]
pub struct PipelineInput {
    pub draft: Draft,
    pub observation: Observation,
    pub event_consent: Option<Map<String, Value>>,
    /// Destinations a controlled test send asked to skip.
    pub skip_destinations: Vec<String>,
}
