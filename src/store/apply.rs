//! What a group does inside its transaction, written once for every store: the ingest requests
//! through the stateful stage (load, decide, write), then each bookkeeping job. A store gives
//! its transaction as a [`StoreTx`]: the statements, and nothing else.

use std::time::{Duration, Instant};

use crate::stage::RejectionBatch;
use crate::stage::{self, Decision, Ids, JobDecision, Keys, Snapshot};
use crate::store::error::StoreError;
use crate::store::handoff::HandOffPlan;
use crate::store::model::alerts::{AlertChange, AlertNotice, AlertWrite};
use crate::store::model::delivery::{Claim, Completion, RequestRecord};
use crate::store::model::destinations::MinuteRollup;
use crate::store::writer::{ClaimRequest, IngestJob, Item, Job, JobOutput, WriterState};

/// What became of writing a decision.
pub(crate) enum Written {
    Done,
    /// Another node took or changed something this decision counted on (a messageId, an
    /// event_id, an identifier, a profile) between the load and the write: the transaction is
    /// dropped, and the writer loads and decides the group again.
    Conflict(String),
}

/// A store's transaction, as the shared group logic uses it.
pub(crate) trait StoreTx {
    /// Read what a group touches (see `stage::Keys`).
    fn load(&mut self, keys: &Keys) -> Result<Snapshot, StoreError>;
    /// Ids for the decision's new messages, events, profiles and deliveries. `counted` is what a first pass
    /// used: a store that reserves ids from shared sequences reserves exactly that many; a
    /// single writer ignores it and counts on from its last row (`needs_count` false).
    fn ids(&mut self, counted: [usize; 4]) -> Result<Ids, StoreError>;
    /// Whether `ids` wants a first counting pass.
    fn needs_count(&self) -> bool;
    /// Whether anyone may be suppressed (else the group's identifiers are not hashed). A store
    /// that cannot know cheaply says yes.
    fn may_suppress(&self) -> bool {
        true
    }
    /// Write a decision's rows; its deliveries reserve room with `handoff`.
    fn write(
        &mut self,
        decision: &Decision<'_>,
        snapshot: &Snapshot,
        handoff: &mut HandOffPlan,
    ) -> Result<Written, StoreError>;

    fn rejections(&mut self, batch: &RejectionBatch) -> Result<(), StoreError>;
    fn claim(&mut self, request: &ClaimRequest) -> Result<Claim, StoreError>;
    /// Record a completion; false when it was recorded before (nothing written).
    fn complete(&mut self, completion: &Completion) -> Result<bool, StoreError>;
    /// Add a group's tallies to the destinations' minutes.
    fn add_minutes(&mut self, minutes: &MinuteRollup) -> Result<(), StoreError>;
    fn record_request(
        &mut self,
        destination: &str,
        request: &RequestRecord,
    ) -> Result<i64, StoreError>;
    fn release(&mut self, ids: &[i64], next_attempt_ms: i64, now_ms: i64)
        -> Result<(), StoreError>;
    fn renew(&mut self, ids: &[i64], until_ms: i64, now_ms: i64) -> Result<(), StoreError>;
    fn prune(&mut self, cutoff_ms: i64, bodies_cutoff_ms: Option<i64>)
        -> Result<usize, StoreError>;
    fn destination_state(
        &mut self,
        destination: &str,
        paused_until_ms: Option<i64>,
        reason: Option<&str>,
        at_ms: i64,
    ) -> Result<(), StoreError>;
    fn probe(&mut self, now_ms: i64) -> Result<(), StoreError>;
    fn alert(&mut self, change: &AlertChange) -> Result<AlertWrite, StoreError>;
    fn alert_notice(&mut self, notice: &AlertNotice) -> Result<(), StoreError>;
    /// Put expired leases back in line (and, on a fleet, beat this node's heart and release the
    /// leases of nodes gone silent). Returns how many deliveries went back.
    fn sweep_leases(&mut self, now_ms: i64) -> Result<usize, StoreError>;
}

/// Apply a group's items in `tx` (not committed): outputs in item order, and the time spent on
/// ingest and on delivery bookkeeping.
pub(crate) fn apply_items(
    tx: &mut impl StoreTx,
    items: &[Item<'_>],
    state: &WriterState,
) -> Result<(Vec<JobOutput>, Duration, Duration), StoreError> {
    let started = Instant::now();
    let jobs: Vec<&IngestJob> = items
        .iter()
        .filter_map(|i| match i {
            Item::Ingest(job) => Some(*job),
            Item::Work(_) => None,
        })
        .collect();
    let mut outputs = if jobs.is_empty() {
        Vec::new()
    } else {
        stage_group(tx, &jobs, state)?
    };
    let ingest_time = started.elapsed();
    let started = Instant::now();
    let now = crate::store::error::now_ms();
    let mut minutes = MinuteRollup::default();
    for item in items {
        if let Item::Work(job) = item {
            outputs.push(apply_work(tx, job, now, state, &mut minutes)?);
        }
    }
    if !minutes.is_empty() {
        tx.add_minutes(&minutes)?;
    }
    Ok((outputs, ingest_time, started.elapsed()))
}

/// The ingest requests of a group through the stateful stage.
fn stage_group(
    tx: &mut impl StoreTx,
    jobs: &[&IngestJob],
    state: &WriterState,
) -> Result<Vec<JobOutput>, StoreError> {
    let batches: Vec<&stage::IngestBatch> = jobs.iter().map(|IngestJob(b, _)| &**b).collect();
    let destinations: Vec<String> = state.targets.iter().map(|t| t.name.clone()).collect();
    let keys = Keys::of(
        &batches,
        &destinations,
        tx.may_suppress().then_some(&state.suppressor),
        crate::store::error::now_ms(),
    );
    let ctx = stage::Context {
        targets: &state.targets,
        default_country: state.default_country.as_deref(),
        suppressor: &state.suppressor,
    };
    let snapshot = tx.load(&keys)?;
    let ids = if tx.needs_count() {
        let counted = stage::decide(&batches, &snapshot, &ctx, &stage::COUNTING);
        tx.ids(counted.ids_used)?
    } else {
        tx.ids([0; 4])?
    };
    let decision = stage::decide(&batches, &snapshot, &ctx, &ids);
    match tx.write(&decision, &snapshot, &mut state.handoff.borrow_mut())? {
        Written::Done => Ok(decision
            .jobs
            .into_iter()
            .map(|job| match job {
                JobDecision::Stored(outcomes) => JobOutput::Stored(outcomes),
                JobDecision::Refused(reason) => JobOutput::Refused(reason),
            })
            .collect()),
        Written::Conflict(what) => Err(StoreError::Conflict(what)),
    }
}

/// One bookkeeping job.
fn apply_work(
    tx: &mut impl StoreTx,
    job: &Job,
    now: i64,
    state: &WriterState,
    minutes: &mut MinuteRollup,
) -> Result<JobOutput, StoreError> {
    Ok(match job {
        Job::Rejections(batch) => {
            tx.rejections(batch)?;
            JobOutput::Done
        }
        Job::Claim(request, _) => JobOutput::Claimed(tx.claim(request)?),
        Job::Complete(completions, _) => {
            for c in completions {
                // One recorded twice (its first answer lost) counts once.
                if tx.complete(c)? {
                    minutes.add_completion(c);
                }
            }
            JobOutput::Done
        }
        Job::RecordRequest(destination, request, _) => {
            minutes.add_request(destination, request);
            JobOutput::Row(tx.record_request(destination, request)?)
        }
        Job::Release {
            ids,
            next_attempt_ms,
        } => {
            tx.release(ids, *next_attempt_ms, now)?;
            JobOutput::Done
        }
        Job::Renew { ids, until_ms } => {
            tx.renew(ids, *until_ms, now)?;
            JobOutput::Done
        }
        Job::Prune {
            cutoff_ms,
            bodies_cutoff_ms,
            ..
        } => JobOutput::Pruned(tx.prune(*cutoff_ms, *bodies_cutoff_ms)?),
        Job::DestinationState {
            destination,
            paused_until_ms,
            reason,
            at_ms,
        } => {
            tx.destination_state(destination, *paused_until_ms, reason.as_deref(), *at_ms)?;
            JobOutput::Done
        }
        Job::Probe(_) => {
            tx.probe(now)?;
            JobOutput::Done
        }
        Job::Alert(change, _) => JobOutput::Alert(tx.alert(change)?),
        Job::AlertNotice(notice) => {
            tx.alert_notice(notice)?;
            JobOutput::Done
        }
        Job::SweepLeases => {
            let released = tx.sweep_leases(now)?;
            if released > 0 {
                state.handoff.borrow().flag_all();
                tracing::info!(
                    deliveries = released,
                    "expired delivery leases put back in line"
                );
            }
            JobOutput::Done
        }
    })
}
