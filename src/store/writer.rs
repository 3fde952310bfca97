//! The single writer: a dedicated thread that owns the write connection and group-commits.

use std::path::Path;
use std::thread::JoinHandle;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::records::{IngestBatch, MessageOutcome, RejectedRequest};
use super::{open_for_writing, StoreError};

/// Upper bound on jobs per transaction, so one commit never holds the lock for long.
const MAX_JOBS_PER_COMMIT: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Back-pressure: the writer's queue is full. Answer 503 with Retry-After.
    #[error("the database writer is busy; retry shortly")]
    QueueFull,
    /// The writer has stopped (shutdown or a fatal database error).
    #[error("the database writer has stopped")]
    Stopped,
    #[error("the write failed: {0}")]
    Failed(String),
}

type IngestReply = oneshot::Sender<Result<Vec<MessageOutcome>, WriteError>>;

enum Job {
    Ingest(Box<IngestBatch>, IngestReply),
    Rejection(Box<RejectedRequest>),
}

/// A cheap, cloneable handle for sending work to the writer thread.
#[derive(Clone)]
pub struct StoreWriter {
    jobs: mpsc::Sender<Job>,
}

/// Joins the writer thread: it finishes every queued job once all handles are dropped.
pub struct WriterThread(JoinHandle<()>);

impl WriterThread {
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("the database writer thread panicked");
        }
    }
}

impl StoreWriter {
    /// Open the database (running migrations) and start the writer thread.
    pub fn spawn(
        path: &Path,
        queue_capacity: usize,
    ) -> Result<(StoreWriter, WriterThread), StoreError> {
        let conn = open_for_writing(path)?;
        let (tx, rx) = mpsc::channel(queue_capacity);
        let handle = std::thread::Builder::new()
            .name("tracklayer-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| StoreError::CreateDir {
                path: "writer thread".into(),
                source: e,
            })?;
        Ok((StoreWriter { jobs: tx }, WriterThread(handle)))
    }

    /// Store a request's messages; resolves after the commit that holds all of them.
    pub async fn ingest(&self, batch: IngestBatch) -> Result<Vec<MessageOutcome>, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job::Ingest(Box::new(batch), reply))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => WriteError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => WriteError::Stopped,
            })?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    /// Record a refused request. Best effort: under a flood of bad requests, dropping some
    /// rejection rows is better than letting them crowd out real traffic.
    pub fn record_rejection(&self, rejection: RejectedRequest) {
        if self
            .jobs
            .try_send(Job::Rejection(Box::new(rejection)))
            .is_err()
        {
            tracing::warn!("writer queue full; a rejection was not recorded");
        }
    }
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_JOBS_PER_COMMIT);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < MAX_JOBS_PER_COMMIT {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        commit_group(&mut conn, &mut jobs);
    }
}

/// Apply every job in one transaction; each job in its own savepoint so one failing job does
/// not take the others down. Replies go out only after the commit.
fn commit_group(conn: &mut Connection, jobs: &mut Vec<Job>) {
    let mut replies: Vec<(IngestReply, Result<Vec<MessageOutcome>, WriteError>)> =
        Vec::with_capacity(jobs.len());
    let outcome = (|| -> Result<(), rusqlite::Error> {
        let mut tx = conn.transaction()?;
        for job in jobs.drain(..) {
            match job {
                Job::Ingest(batch, reply) => {
                    let result = apply_in_savepoint(&mut tx, |sp| insert_batch(sp, &batch));
                    replies.push((reply, result.map_err(|e| WriteError::Failed(e.to_string()))));
                }
                Job::Rejection(rejection) => {
                    if let Err(e) =
                        apply_in_savepoint(&mut tx, |sp| insert_rejection(sp, &rejection))
                    {
                        tracing::error!(error = %e, "could not record a rejected request");
                    }
                }
            }
        }
        tx.commit()
    })();
    match outcome {
        Ok(()) => {
            for (reply, result) in replies {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "group commit failed; the requests in it are answered 503");
            jobs.clear();
            for (reply, _) in replies {
                let _ = reply.send(Err(WriteError::Failed(e.to_string())));
            }
        }
    }
}

fn apply_in_savepoint<T>(
    tx: &mut Transaction<'_>,
    f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>,
) -> Result<T, rusqlite::Error> {
    let sp = tx.savepoint()?;
    let value = f(&sp)?;
    sp.commit()?;
    Ok(value)
}

fn insert_batch(
    conn: &Connection,
    batch: &IngestBatch,
) -> Result<Vec<MessageOutcome>, rusqlite::Error> {
    let receipt = &batch.receipt;
    conn.prepare_cached(
        "INSERT INTO requests (request_id, received_at_ms, environment, path, remote_addr,
             user_agent, auth_scheme, body_shape, body_bytes, message_count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        receipt.request_id,
        receipt.received_at_ms,
        receipt.environment,
        receipt.path,
        receipt.remote_addr,
        receipt.user_agent,
        receipt.auth_scheme,
        receipt.body_shape,
        receipt.body_bytes as i64,
        batch.messages.len() as i64,
    ])?;

    let mut find_original = conn.prepare_cached(
        "SELECT id, raw_sha256 FROM messages
         WHERE environment = ?1 AND message_id = ?2 AND status = 'accepted'
           AND received_at_ms >= ?3
         ORDER BY id LIMIT 1",
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO messages (request_id, position, received_at_ms, environment, message_id,
             type, event, user_id, anonymous_id, status, reason, duplicate_of, raw_sha256, raw)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;

    let mut outcomes = Vec::with_capacity(batch.messages.len());
    for message in &batch.messages {
        let digest: [u8; 32] = Sha256::digest(&message.raw).into();
        let original: Option<(i64, Vec<u8>)> = match (&message.invalid_reason, &message.message_id)
        {
            (None, Some(message_id)) => find_original
                .query_row(
                    params![receipt.environment, message_id, batch.dedup_since_ms],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?,
            _ => None,
        };
        let (status, reason, duplicate_of, raw): (
            &str,
            Option<String>,
            Option<i64>,
            Option<&[u8]>,
        ) = match (&message.invalid_reason, &original) {
            (Some(reason), _) => ("invalid", Some(reason.clone()), None, Some(&message.raw)),
            (None, Some((original_id, original_digest))) => {
                let same = original_digest.as_slice() == digest.as_slice();
                let reason = if same {
                    "messageId already accepted with identical bytes (a Segment retry)"
                } else {
                    "messageId already accepted with a different payload"
                };
                // Identical bytes are not stored twice; a different payload is kept whole.
                let raw = if same { None } else { Some(&message.raw[..]) };
                (
                    "duplicate",
                    Some(reason.to_string()),
                    Some(*original_id),
                    raw,
                )
            }
            (None, None) => ("accepted", None, None, Some(&message.raw)),
        };
        insert.execute(params![
            receipt.request_id,
            message.position as i64,
            receipt.received_at_ms,
            receipt.environment,
            message.message_id,
            message.message_type,
            message.event,
            message.user_id,
            message.anonymous_id,
            status,
            reason,
            duplicate_of,
            &digest[..],
            raw,
        ])?;
        let row_id = conn.last_insert_rowid();
        outcomes.push(match (status, original) {
            ("accepted", _) => MessageOutcome::Accepted { row_id },
            ("duplicate", Some((original_row_id, original_digest))) => MessageOutcome::Duplicate {
                row_id,
                original_row_id,
                same_payload: original_digest.as_slice() == digest.as_slice(),
            },
            _ => MessageOutcome::Invalid { row_id },
        });
    }
    Ok(outcomes)
}

fn insert_rejection(conn: &Connection, r: &RejectedRequest) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO rejections (received_at_ms, path, remote_addr, user_agent, account_header,
             environment_header, content_type, body_bytes, status_code, reason_code, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        r.received_at_ms,
        r.path,
        r.remote_addr,
        r.user_agent,
        r.account_header,
        r.environment_header,
        r.content_type,
        r.body_bytes.map(|b| b as i64),
        r.status_code,
        r.reason_code,
        r.reason,
    ])?;
    Ok(())
}
