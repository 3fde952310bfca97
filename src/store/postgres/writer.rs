//! PostgreSQL's side of the writer (`store::writer`): this node's connection, each group in one
//! transaction. Another node touching the same rows can make a transaction fail with a
//! serialization failure, a deadlock or a lost race on a unique key; the group is then run
//! again (a few times, with a short random pause), so such a race never reaches Segment as a
//! 5xx.

use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::Client;

use super::db::{Db, Prepared};
use super::{delivery, ingest, retention};
use crate::pipeline::RouteTarget;
use crate::store::error::{now_ms, StoreError};
use crate::store::handoff::HandOffs;
use crate::store::writer::{
    GroupWriter, IngestJob, Item, Job, JobOutput, StoreWriter, WriterOptions, WriterState,
    WriterThread,
};

/// How many times a group is run again after losing a race to another node.
const RETRIES: usize = 8;

pub(crate) struct PostgresGroups {
    url: String,
    client: Client,
    prepared: Prepared,
    node_id: String,
}

/// This process's name in the fleet: host, process id and start time.
pub fn node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}:{}", std::process::id(), now_ms())
}

/// Connect, bring the schema up to date (under the fleet's migration lock), register this node
/// and start the writer.
pub fn spawn(
    url: &str,
    node_id: String,
    options: WriterOptions,
    targets: Vec<RouteTarget>,
    handoffs: Arc<HandOffs>,
) -> Result<(StoreWriter, WriterThread), StoreError> {
    // The sync client runs its own runtime: connect on a plain thread, never on the caller's
    // (which may be an async task).
    let url = url.to_string();
    let connect_to = url.clone();
    let registered = node_id.clone();
    let client = std::thread::spawn(move || -> Result<Client, StoreError> {
        let mut client = super::connect(&connect_to)?;
        super::migrate(&mut client)?;
        let host = registered.split(':').next().unwrap_or_default().to_string();
        client.execute(
            "INSERT INTO nodes (node_id, hostname, started_at_ms, last_seen_ms, version)
             VALUES ($1, $2, $3, $3, $4)
             ON CONFLICT (node_id) DO UPDATE SET last_seen_ms = EXCLUDED.last_seen_ms",
            &[&registered, &host, &now_ms(), &env!("CARGO_PKG_VERSION")],
        )?;
        Ok(client)
    })
    .join()
    .map_err(|_| StoreError::Unsupported("the PostgreSQL connection thread panicked"))??;
    let backend = PostgresGroups {
        url,
        client,
        prepared: Prepared::default(),
        node_id,
    };
    StoreWriter::start(backend, options, targets, handoffs)
}

/// A failure another node caused, which running the transaction again resolves.
fn lost_a_race(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::UNIQUE_VIOLATION
    )
}

impl GroupWriter for PostgresGroups {
    fn apply(
        &mut self,
        items: &[Item<'_>],
        state: &WriterState,
    ) -> Result<Vec<JobOutput>, StoreError> {
        let mut attempt = 0;
        loop {
            if self.client.is_closed() {
                // The server restarted or the connection broke: a new one, with no statements
                // prepared. Until it connects, the group fails and its requests get a 503.
                self.client = super::connect(&self.url)?;
                self.prepared.clear();
                tracing::warn!("reconnected to PostgreSQL");
            }
            let tx = Db::new(self.client.transaction()?, &mut self.prepared);
            let result = apply_in(tx, items, state, &self.node_id);
            match result {
                Ok((outputs, ingest_time, delivery_time)) => {
                    state.committed(ingest_time, delivery_time);
                    return Ok(outputs);
                }
                Err(e) if lost_a_race(&e) && attempt < RETRIES => {
                    // Rolled back (the transaction was dropped); nothing of it is handed over.
                    state.handoff.borrow_mut().discard();
                    attempt += 1;
                    let mut jitter = [0u8; 1];
                    let _ = getrandom::fill(&mut jitter);
                    std::thread::sleep(Duration::from_millis(
                        (attempt as u64) * 2 + u64::from(jitter[0] % 8),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// One transaction over `items`, committed. Returns the outputs and the time spent on ingest
/// and on delivery work.
fn apply_in(
    mut tx: Db<'_, '_>,
    items: &[Item<'_>],
    state: &WriterState,
    node_id: &str,
) -> Result<(Vec<JobOutput>, Duration, Duration), postgres::Error> {
    let now = now_ms();
    let mut outputs = Vec::with_capacity(items.len());
    let (mut ingest_time, mut delivery_time) = (Duration::ZERO, Duration::ZERO);
    for item in items {
        let started = Instant::now();
        match item {
            Item::Ingest(IngestJob(batch, _)) => {
                let output = match ingest::reused_signature(&mut tx, batch)? {
                    Some(reason) => JobOutput::Refused(reason),
                    None => JobOutput::Stored(ingest::insert_batch(
                        &mut tx,
                        batch,
                        &state.targets,
                        state.default_country.as_deref(),
                        &mut state.handoff.borrow_mut(),
                        node_id,
                    )?),
                };
                ingest_time += started.elapsed();
                outputs.push(output);
            }
            Item::Work(job) => {
                outputs.push(apply_work(&mut tx, job, now, state, node_id)?);
                delivery_time += started.elapsed();
            }
        }
    }
    tx.commit()?;
    Ok((outputs, ingest_time, delivery_time))
}

fn apply_work(
    tx: &mut Db<'_, '_>,
    job: &Job,
    now: i64,
    state: &WriterState,
    node_id: &str,
) -> Result<JobOutput, postgres::Error> {
    Ok(match job {
        Job::Rejections(batch) => {
            ingest::insert_rejections(tx, batch)?;
            JobOutput::Done
        }
        Job::Claim(r, _) => JobOutput::Claimed(delivery::claim(
            tx,
            node_id,
            &r.destination,
            r.now_ms,
            r.limit,
            r.lease_ms,
        )?),
        Job::Complete(completions, _) => {
            for c in completions {
                delivery::complete(tx, node_id, c)?;
            }
            JobOutput::Done
        }
        Job::RecordRequest(destination, request, _) => {
            JobOutput::Row(delivery::record_request(tx, node_id, destination, request)?)
        }
        Job::Release {
            ids,
            next_attempt_ms,
        } => {
            delivery::release(tx, node_id, ids, *next_attempt_ms, now)?;
            JobOutput::Done
        }
        Job::DestinationState {
            destination,
            paused_until_ms,
            reason,
            at_ms,
        } => {
            delivery::set_destination_state(
                tx,
                destination,
                *paused_until_ms,
                reason.as_deref(),
                *at_ms,
            )?;
            JobOutput::Done
        }
        Job::Probe(_) => {
            tx.execute(
                "INSERT INTO local_settings (key, value) VALUES ('readiness_probe', $1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&now.to_string()],
            )?;
            JobOutput::Done
        }
        Job::Alert(change, _) => JobOutput::Alert(super::alerts::record(tx, change)?),
        Job::AlertNotice(notice) => {
            super::alerts::record_notice(tx, notice)?;
            JobOutput::Done
        }
        Job::SweepLeases => {
            // The sweep runs every few seconds on every node: it doubles as the node's
            // heartbeat, so the dashboard can tell a silent node from a quiet one.
            tx.execute(
                "UPDATE nodes SET last_seen_ms = $2 WHERE node_id = $1",
                &[&node_id, &now],
            )?;
            let released = delivery::release_expired_leases(tx, now)?;
            if released > 0 {
                state.handoff.borrow().flag_all();
                tracing::info!(
                    deliveries = released,
                    "expired delivery leases put back in line"
                );
            }
            JobOutput::Done
        }
        Job::Prune {
            cutoff_ms,
            bodies_cutoff_ms,
            ..
        } => JobOutput::Pruned(retention::prune(tx, *cutoff_ms, *bodies_cutoff_ms)?),
    })
}
