//! PostgreSQL's side of the writer (`store::writer`): this node's connection, each group in one
//! transaction. Another node touching the same rows can make a transaction fail with a
//! serialization failure, a deadlock or a lost race on a unique key; the group is then run
//! again (a few times, with a short random pause), so such a race never reaches Segment as a
//! 5xx.

use std::sync::Arc;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::Client;

use super::db::{Db, Prepared};
use super::{delivery, ingest, retention, stage};
use crate::pipeline::RouteTarget;
use crate::stage::{Decision, Ids, Keys, RejectionBatch, Snapshot};
use crate::store::apply::{apply_items, StoreTx, Written};
use crate::store::error::{now_ms, StoreError};
use crate::store::handoff::{HandOffPlan, HandOffs};
use crate::store::model::alerts::{AlertChange, AlertNotice, AlertWrite};
use crate::store::model::delivery::{Claim, Completion, RequestRecord};
use crate::store::model::destinations::MinuteRollup;
use crate::store::writer::{
    ClaimRequest, GroupWriter, Item, JobOutput, StoreWriter, WriterOptions, WriterState,
    WriterThread,
};

/// How many times a group is run again after losing a race to another node.
const RETRIES: usize = 8;

pub(crate) struct PostgresGroups {
    url: String,
    client: Client,
    prepared: Prepared,
    node_id: String,
    node_timeout_ms: i64,
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
    let writers = options.writers.max(1);
    let node_timeout_ms = options.node_timeout_ms;
    let connect_to = url.to_string();
    let registered = node_id.clone();
    let (clients, suppression_key) =
        std::thread::spawn(move || -> Result<(Vec<Client>, Vec<u8>), StoreError> {
            let mut first = writer_connection(&connect_to)?;
            super::migrate(&mut first)?;
            let host = registered.split(':').next().unwrap_or_default().to_string();
            first.execute(
                "INSERT INTO nodes (node_id, hostname, started_at_ms, last_seen_ms, version)
             VALUES ($1, $2, $3, $3, $4)
             ON CONFLICT (node_id) DO UPDATE SET last_seen_ms = EXCLUDED.last_seen_ms",
                &[&registered, &host, &now_ms(), &env!("CARGO_PKG_VERSION")],
            )?;
            let key = super::privacy::suppression_key(&mut first)?;
            let mut clients = vec![first];
            for _ in 1..writers {
                clients.push(writer_connection(&connect_to)?);
            }
            Ok((clients, key))
        })
        .join()
        .map_err(|_| StoreError::Unsupported("the PostgreSQL connection thread panicked"))??;
    let backends = clients
        .into_iter()
        .map(|client| PostgresGroups {
            url: url.to_string(),
            client,
            prepared: Prepared::default(),
            node_id: node_id.clone(),
            node_timeout_ms,
        })
        .collect();
    let options = WriterOptions {
        suppression_key,
        ..options
    };
    StoreWriter::start_many(backends, options, targets, handoffs)
}

/// The writer's connection. It looks rows up by key only, so a sequential scan is never its
/// plan: without this, a statement's cached generic plan, made while a table was still small
/// (a new database, the first seconds of a node), kept scanning whole tables ever after
/// (measured: 16 million identity rows read in 12 s of load). With sequential scans priced out,
/// a plan's cost can pass the JIT threshold, and compiling a statement at every execution
/// took 300 ms: its statements are small, so no JIT.
fn writer_connection(url: &str) -> Result<Client, StoreError> {
    let mut client = super::connect(url)?;
    client.batch_execute("SET enable_seqscan = off; SET jit = off")?;
    Ok(client)
}

/// A failure another node caused, which running the transaction again resolves: a key it took
/// or a profile it changed between this node's load and write, or the database's own word for
/// a race.
fn lost_a_race(e: &StoreError) -> bool {
    match e {
        StoreError::Conflict(_) => true,
        StoreError::Postgres(e) => matches!(
            e.code(),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::UNIQUE_VIOLATION
        ),
        _ => false,
    }
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
                self.client = writer_connection(&self.url)?;
                self.prepared.clear();
                tracing::warn!("reconnected to PostgreSQL");
            }
            let db = Db::new(self.client.transaction()?, &mut self.prepared);
            let mut tx = PgTx {
                db,
                node_id: &self.node_id,
                node_timeout_ms: self.node_timeout_ms,
            };
            let result = apply_items(&mut tx, items, state)
                .and_then(|done| tx.db.commit().map(|()| done).map_err(StoreError::from));
            match result {
                Ok((outputs, ingest_time, delivery_time)) => {
                    state.committed(ingest_time, delivery_time);
                    return Ok(outputs);
                }
                Err(e) if lost_a_race(&e) && attempt < RETRIES => {
                    if let StoreError::Conflict(what) = &e {
                        tracing::debug!(%what, "deciding the group again");
                    }
                    // Rolled back (the transaction was dropped); nothing of it is handed over.
                    state.handoff.borrow_mut().discard();
                    attempt += 1;
                    let mut jitter = [0u8; 1];
                    let _ = getrandom::fill(&mut jitter);
                    std::thread::sleep(Duration::from_millis(
                        (attempt as u64) * 2 + u64::from(jitter[0] % 8),
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The writer's transaction on PostgreSQL.
struct PgTx<'t, 'c, 'n> {
    db: Db<'t, 'c>,
    node_id: &'n str,
    node_timeout_ms: i64,
}

impl StoreTx for PgTx<'_, '_, '_> {
    fn load(&mut self, keys: &Keys) -> Result<Snapshot, StoreError> {
        Ok(stage::load(&mut self.db, keys)?)
    }
    fn ids(&mut self, counted: [usize; 4]) -> Result<Ids, StoreError> {
        Ok(stage::reserve_ids(&mut self.db, counted)?)
    }
    fn needs_count(&self) -> bool {
        true
    }
    fn write(
        &mut self,
        decision: &Decision<'_>,
        snapshot: &Snapshot,
        handoff: &mut HandOffPlan,
    ) -> Result<Written, StoreError> {
        Ok(stage::write(
            &mut self.db,
            decision,
            snapshot,
            handoff,
            self.node_id,
        )?)
    }
    fn rejections(&mut self, batch: &RejectionBatch) -> Result<(), StoreError> {
        Ok(ingest::insert_rejections(&mut self.db, batch)?)
    }
    fn claim(&mut self, r: &ClaimRequest) -> Result<Claim, StoreError> {
        Ok(delivery::claim(
            &mut self.db,
            self.node_id,
            &r.destination,
            r.now_ms,
            r.limit,
            r.lease_ms,
            r.token,
        )?)
    }
    fn complete(&mut self, completion: &Completion) -> Result<bool, StoreError> {
        Ok(delivery::complete(&mut self.db, self.node_id, completion)?)
    }
    fn add_minutes(&mut self, minutes: &MinuteRollup) -> Result<(), StoreError> {
        Ok(delivery::add_minutes(&mut self.db, minutes)?)
    }
    fn record_request(
        &mut self,
        destination: &str,
        request: &RequestRecord,
    ) -> Result<i64, StoreError> {
        Ok(delivery::record_request(
            &mut self.db,
            self.node_id,
            destination,
            request,
        )?)
    }
    fn release(
        &mut self,
        ids: &[i64],
        next_attempt_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        delivery::release(&mut self.db, self.node_id, ids, next_attempt_ms, now_ms)?;
        Ok(())
    }
    fn renew(&mut self, ids: &[i64], until_ms: i64, now_ms: i64) -> Result<(), StoreError> {
        delivery::renew(&mut self.db, self.node_id, ids, until_ms, now_ms)?;
        Ok(())
    }
    fn prune(
        &mut self,
        cutoff_ms: i64,
        bodies_cutoff_ms: Option<i64>,
    ) -> Result<usize, StoreError> {
        Ok(retention::prune(&mut self.db, cutoff_ms, bodies_cutoff_ms)?)
    }
    fn destination_state(
        &mut self,
        destination: &str,
        paused_until_ms: Option<i64>,
        reason: Option<&str>,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        Ok(delivery::set_destination_state(
            &mut self.db,
            destination,
            paused_until_ms,
            reason,
            at_ms,
        )?)
    }
    fn probe(&mut self, now_ms: i64) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO local_settings (key, value) VALUES ('readiness_probe', $1)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&now_ms.to_string()],
        )?;
        Ok(())
    }
    fn alert(&mut self, change: &AlertChange) -> Result<AlertWrite, StoreError> {
        Ok(super::alerts::record(&mut self.db, change)?)
    }
    fn alert_notice(&mut self, notice: &AlertNotice) -> Result<(), StoreError> {
        Ok(super::alerts::record_notice(&mut self.db, notice)?)
    }
    fn sweep_leases(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        // The sweep runs every few seconds on every node: it doubles as the node's heartbeat,
        // so the dashboard can tell a silent node from a quiet one.
        self.db.execute(
            "UPDATE nodes SET last_seen_ms = $2 WHERE node_id = $1",
            &[&self.node_id, &now_ms],
        )?;
        let expired = delivery::release_expired_leases(&mut self.db, now_ms)?;
        let orphaned = delivery::release_silent_nodes(
            &mut self.db,
            self.node_id,
            now_ms,
            now_ms - self.node_timeout_ms,
        )?;
        if orphaned > 0 {
            tracing::warn!(
                deliveries = orphaned,
                silent_for_s = self.node_timeout_ms / 1000,
                "a node went silent: the deliveries it held are back in line"
            );
        }
        Ok((expired + orphaned) as usize)
    }
}
