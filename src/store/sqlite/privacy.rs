//! Forgetting a person in the SQLite file. Only SQL. The connection has `secure_delete` on (as
//! every writing connection does), so a deleted row's bytes are overwritten with zeros as its
//! space is freed; `compact` folds the WAL into the file and truncates it, so the page images
//! the WAL still held are gone too.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::open_for_writing;
use super::privacy_audit::{insert_request, read_requests};
use crate::pipeline::identity::{IdKind, Identifier};
use crate::store::codec::unpack_raw;
use crate::store::model::privacy::{
    ChunkDeleted, Deleted, DueForward, ForwardResult, NewForward, NewPrivacyRequest, PersonKeys,
    PrivacyRecord, Suppression,
};
use crate::store::privacy::PrivacyStore;
use crate::store::StoreError;

const KEY_SETTING: &str = "privacy.key";

pub struct SqlitePrivacy {
    conn: Connection,
}

impl SqlitePrivacy {
    pub fn open(path: &Path) -> Result<SqlitePrivacy, StoreError> {
        let conn = open_for_writing(path)?;
        // A forget gives way to ingest (the node's writer takes the lock first): under
        // sustained load its ranges may wait, and waiting is all they should do.
        conn.busy_timeout(std::time::Duration::from_secs(120))?;
        Ok(SqlitePrivacy { conn })
    }
}

/// The suppression key, created on first use (the writer reads it at start).
pub fn suppression_key(conn: &Connection) -> Result<Vec<u8>, rusqlite::Error> {
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh).expect("the OS random source is available");
    conn.execute(
        "INSERT INTO local_settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
        (KEY_SETTING, hex::encode(fresh)),
    )?;
    let stored: String = conn.query_row(
        "SELECT value FROM local_settings WHERE key = ?1",
        [KEY_SETTING],
        |r| r.get(0),
    )?;
    Ok(hex::decode(stored).unwrap_or_default())
}

fn json_list(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".into())
}

fn ids_json(values: &[i64]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".into())
}

impl PrivacyStore for SqlitePrivacy {
    fn exclusive(&mut self) -> Result<(), StoreError> {
        // One file: each step is its own short write transaction, and every step of a forget
        // is safe to repeat, so two forgets at once only do some work twice.
        Ok(())
    }

    fn key(&mut self) -> Result<Vec<u8>, StoreError> {
        Ok(suppression_key(&self.conn)?)
    }

    fn owners(&mut self, ids: &[Identifier]) -> Result<BTreeMap<Identifier, i64>, StoreError> {
        let mut owners = BTreeMap::new();
        let mut stmt = self.conn.prepare_cached(
            "WITH RECURSIVE owner(id) AS (
                 SELECT profile_id FROM identities WHERE kind = ?1 AND value = ?2
                 UNION SELECT p.merged_into FROM profiles p JOIN owner ON p.id = owner.id
                 WHERE p.merged_into IS NOT NULL
             )
             SELECT o.id FROM owner o JOIN profiles p ON p.id = o.id WHERE p.merged_into IS NULL",
        )?;
        for id in ids {
            let owner: Option<i64> = stmt
                .query_row(params![id.0.as_str(), id.1], |r| r.get(0))
                .optional()?;
            if let Some(owner) = owner {
                owners.insert(id.clone(), owner);
            }
        }
        Ok(owners)
    }

    fn person(&mut self, profile_id: i64) -> Result<PersonKeys, StoreError> {
        let profile_ids: Vec<i64> = self
            .conn
            .prepare(
                "WITH RECURSIVE folded(id) AS (
                     SELECT ?1 UNION SELECT p.id FROM profiles p JOIN folded ON p.merged_into = folded.id
                 )
                 SELECT id FROM folded ORDER BY id",
            )?
            .query_map([profile_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut identifiers: Vec<Identifier> = self
            .conn
            .prepare(
                "SELECT kind, value FROM identities
                 WHERE profile_id IN (SELECT value FROM json_each(?1))",
            )?
            .query_map([ids_json(&profile_ids)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .filter_map(|row| match row {
                Ok((kind, value)) => IdKind::parse(&kind).map(|k| Ok((k, value))),
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()?;
        // A profile keeps its userId in its own column as well.
        let user_ids: Vec<String> = self
            .conn
            .prepare(
                "SELECT user_id FROM profiles
                 WHERE id IN (SELECT value FROM json_each(?1)) AND user_id IS NOT NULL",
            )?
            .query_map([ids_json(&profile_ids)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        identifiers.extend(user_ids.into_iter().map(|u| (IdKind::UserId, u)));
        identifiers.sort();
        identifiers.dedup();
        let message_rows: Vec<i64> = self
            .conn
            .prepare(
                "SELECT message_row FROM events WHERE profile_id IN (SELECT value FROM json_each(?1))
                 UNION SELECT message_row FROM identity_changes
                 WHERE profile_id IN (SELECT value FROM json_each(?1))
                 ORDER BY 1",
            )?
            .query_map([ids_json(&profile_ids)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(PersonKeys {
            profile_ids,
            identifiers,
            message_rows,
        })
    }

    fn first_use(
        &mut self,
        digest: &[u8],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM signed_request_uses WHERE expires_at_ms < ?1",
            [now_ms],
        )?;
        let fresh = tx.execute(
            "INSERT INTO signed_request_uses (digest, expires_at_ms) VALUES (?1, ?2)
             ON CONFLICT (digest) DO NOTHING",
            params![digest, expires_at_ms],
        )?;
        tx.commit()?;
        Ok(fresh == 1)
    }

    fn unuse(&mut self, digest: &[u8]) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM signed_request_uses WHERE digest = ?1",
            [digest],
        )?;
        Ok(())
    }

    fn forget_audits(&mut self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .conn
            .prepare(
                "SELECT identifiers FROM privacy_requests WHERE action = 'forget' ORDER BY id",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
    }

    fn identities_after(
        &mut self,
        after: Option<&Identifier>,
        limit: usize,
    ) -> Result<Vec<(Identifier, i64)>, StoreError> {
        let (kind, value) = after.map_or(("", ""), |(k, v)| (k.as_str(), v.as_str()));
        let rows = self
            .conn
            .prepare_cached(
                "SELECT kind, value, profile_id FROM identities
                 WHERE (kind, value) > (?1, ?2) ORDER BY kind, value LIMIT ?3",
            )?
            .query_map(params![kind, value, limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(kind, value, profile)| {
                IdKind::parse(&kind).map(|k| ((k, value), profile))
            })
            .collect())
    }

    fn raw_messages(&mut self, from: i64, to: i64) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, raw FROM messages WHERE id >= ?1 AND id < ?2 AND raw IS NOT NULL",
            )?
            .query_map(params![from, to], |r| {
                Ok((r.get(0)?, unpack_raw(&r.get::<_, Vec<u8>>(1)?)))
            })?
            .collect::<Result<_, _>>()?)
    }

    fn suppressed(&mut self, hashes: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT hash FROM suppressions WHERE hash = ?1")?;
        let mut found = Vec::new();
        for hash in hashes {
            if let Some(h) = stmt
                .query_row([hash], |r| r.get::<_, Vec<u8>>(0))
                .optional()?
            {
                found.push(h);
            }
        }
        Ok(found)
    }

    fn begin(
        &mut self,
        request: &NewPrivacyRequest,
        suppress: &[Suppression],
    ) -> Result<i64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let row = insert_request(&tx, request)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO suppressions (hash, kind, request_row, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (hash) DO NOTHING",
            )?;
            for s in suppress {
                stmt.execute(params![s.hash, s.kind, row, request.received_at_ms])?;
            }
        }
        tx.commit()?;
        Ok(row)
    }

    fn last_message_row(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM messages", [], |r| {
                r.get(0)
            })?)
    }

    fn forget_messages(
        &mut self,
        person: &PersonKeys,
        from: i64,
        to: i64,
        spelled: &[i64],
    ) -> Result<ChunkDeleted, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS forget_rows (id INTEGER PRIMARY KEY);
             CREATE TEMP TABLE IF NOT EXISTS forget_requests (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
             DELETE FROM forget_rows; DELETE FROM forget_requests;",
        )?;
        let users = json_list(&person.values(IdKind::UserId));
        let anonymous = json_list(&person.values(IdKind::AnonymousId));
        // Whose messages: by the ids they carry, by the events and identity changes of the
        // person's profiles, and those found to spell them out.
        tx.execute(
            "INSERT OR IGNORE INTO forget_rows (id)
             SELECT id FROM messages
             WHERE id >= ?1 AND id < ?2
               AND (user_id IN (SELECT value FROM json_each(?3))
                    OR anonymous_id IN (SELECT value FROM json_each(?4)))",
            params![from, to, users, anonymous],
        )?;
        {
            let mut known =
                tx.prepare_cached("INSERT OR IGNORE INTO forget_rows (id) VALUES (?1)")?;
            for row in person.rows_in(from, to).iter().chain(spelled) {
                known.execute([row])?;
            }
        }
        let event_ids: Vec<String> = tx
            .prepare(
                "SELECT DISTINCT event_id FROM events WHERE message_row IN (SELECT id FROM forget_rows)",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let request_ids: Vec<String> = tx
            .prepare(
                "SELECT DISTINCT request_id FROM messages WHERE id IN (SELECT id FROM forget_rows)",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let unmapped_names: std::collections::BTreeSet<String> = tx
            .prepare(
                "SELECT DISTINCT segment_event FROM unmapped WHERE message_row IN (SELECT id FROM forget_rows)",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut deleted = Deleted::default();
        // The outgoing requests that carried the person's deliveries, with how many of theirs.
        tx.execute(
            "INSERT INTO forget_requests (id, n)
             SELECT a.request_row, COUNT(DISTINCT a.delivery_id) FROM delivery_attempts a
             WHERE a.request_row IS NOT NULL
               AND a.delivery_id IN (SELECT id FROM deliveries WHERE message_row IN (SELECT id FROM forget_rows))
             GROUP BY a.request_row",
            [],
        )?;
        let steps: [(&str, &str); 9] = [
            (
                "delivery_attempts",
                "DELETE FROM delivery_attempts WHERE delivery_id IN
                     (SELECT id FROM deliveries WHERE message_row IN (SELECT id FROM forget_rows))",
            ),
            (
                "deliveries",
                "DELETE FROM deliveries WHERE message_row IN (SELECT id FROM forget_rows)",
            ),
            // A request that carried only the person's items goes; a shared batch keeps its
            // outcome for the others' history, without its bodies.
            (
                "delivery_requests",
                "DELETE FROM delivery_requests WHERE id IN
                     (SELECT f.id FROM forget_requests f JOIN delivery_requests r ON r.id = f.id
                      WHERE f.n >= r.item_count)",
            ),
            (
                "delivery_request_bodies",
                "UPDATE delivery_requests SET request_body = NULL, response_body = NULL
                 WHERE id IN (SELECT id FROM forget_requests)",
            ),
            (
                "routes",
                "DELETE FROM routes WHERE event_row IN
                     (SELECT id FROM events WHERE message_row IN (SELECT id FROM forget_rows))",
            ),
            (
                "collisions",
                "DELETE FROM collisions WHERE message_row IN (SELECT id FROM forget_rows)",
            ),
            (
                "unmapped",
                "DELETE FROM unmapped WHERE message_row IN (SELECT id FROM forget_rows)",
            ),
            (
                "identity_changes",
                "DELETE FROM identity_changes WHERE message_row IN (SELECT id FROM forget_rows)",
            ),
            (
                "events",
                "DELETE FROM events WHERE message_row IN (SELECT id FROM forget_rows)",
            ),
        ];
        for (table, sql) in steps {
            deleted.add(table, tx.execute(sql, [])? as i64);
        }
        // The Unmapped pane's per-name counts, from what is left.
        super::retention::recount_unmapped_names(&tx, &unmapped_names)?;
        // Collisions whose winner was the person's event.
        {
            let mut stmt = tx.prepare_cached("DELETE FROM collisions WHERE event_id = ?1")?;
            for event_id in &event_ids {
                deleted.add("collisions", stmt.execute([event_id])? as i64);
            }
        }
        deleted.add(
            "messages",
            tx.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM forget_rows)",
                [],
            )? as i64,
        );
        {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM requests WHERE request_id = ?1
                 AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.request_id = ?1)",
            )?;
            for request_id in &request_ids {
                deleted.add("requests", stmt.execute([request_id])? as i64);
            }
        }
        tx.commit()?;
        Ok(ChunkDeleted { deleted, event_ids })
    }

    fn forget_profiles(
        &mut self,
        request_row: i64,
        person: &PersonKeys,
        deleted: &Deleted,
        forwards: &[NewForward],
        now_ms: i64,
    ) -> Result<Deleted, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let profiles = ids_json(&person.profile_ids);
        let mut mine = Deleted::default();
        mine.add(
            "identity_changes",
            tx.execute(
                "DELETE FROM identity_changes WHERE profile_id IN (SELECT value FROM json_each(?1))
                     OR other_profile_id IN (SELECT value FROM json_each(?1))",
                [&profiles],
            )? as i64,
        );
        mine.add(
            "identities",
            tx.execute(
                "DELETE FROM identities WHERE profile_id IN (SELECT value FROM json_each(?1))",
                [&profiles],
            )? as i64,
        );
        {
            // An identifier of the person the graph filed elsewhere (a conflict kept it with
            // another profile) is theirs too.
            let mut stmt =
                tx.prepare_cached("DELETE FROM identities WHERE kind = ?1 AND value = ?2")?;
            for (kind, value) in &person.identifiers {
                mine.add(
                    "identities",
                    stmt.execute(params![kind.as_str(), value])? as i64,
                );
            }
        }
        mine.add(
            "profiles",
            tx.execute(
                "DELETE FROM profiles WHERE id IN (SELECT value FROM json_each(?1))",
                [&profiles],
            )? as i64,
        );
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO privacy_forwards (request_row, destination, kind, payload, status,
                     next_attempt_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5)",
            )?;
            for f in forwards {
                stmt.execute(params![
                    request_row,
                    f.destination,
                    f.kind,
                    f.payload,
                    now_ms
                ])?;
            }
        }
        let mut all = deleted.clone();
        all.merge(&mine);
        tx.execute(
            "UPDATE privacy_requests SET status = 'done', finished_at_ms = ?2, deleted = ?3
             WHERE id = ?1",
            params![
                request_row,
                now_ms,
                serde_json::to_string(&all).unwrap_or_else(|_| "{}".into())
            ],
        )?;
        tx.commit()?;
        Ok(mine)
    }

    fn lift(
        &mut self,
        request: &NewPrivacyRequest,
        hashes: &[Vec<u8>],
    ) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut lifted = 0;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM suppressions WHERE hash = ?1")?;
            for hash in hashes {
                lifted += stmt.execute([hash])?;
            }
        }
        let mut request = request.clone();
        if lifted == 0 {
            request.status = "not_suppressed";
        }
        insert_request(&tx, &request)?;
        tx.commit()?;
        Ok(lifted)
    }

    fn compact(&mut self) -> Result<(), StoreError> {
        // TRUNCATE waits (busy timeout) for readers to let go of old snapshots, copies every
        // frame into the file and cuts the WAL to zero bytes. A reader that kept an old
        // snapshot past the wait makes it report busy: try again until the WAL is gone.
        // First copy what can be copied without holding writers back (PASSIVE), so the
        // TRUNCATE below, which does hold them, has only the last frames left to copy.
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        for _ in 0..50 {
            let busy: i64 = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
            if busy == 0 {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Err(StoreError::Unsupported(
            "the WAL could not be truncated: a reader kept an old snapshot open",
        ))
    }

    fn requests(&mut self, limit: usize) -> Result<Vec<PrivacyRecord>, StoreError> {
        let rows = read_requests(
            &self.conn,
            "SELECT id, request_id, action, who, environment, received_at_ms, finished_at_ms,
                    identifiers, status, deleted, suppressed_messages, last_suppressed_ms
             FROM privacy_requests ORDER BY id DESC LIMIT ?1",
            params![limit as i64],
        )?;
        Ok(rows)
    }

    fn request(&mut self, request_id: &str) -> Result<Option<PrivacyRecord>, StoreError> {
        Ok(read_requests(
            &self.conn,
            "SELECT id, request_id, action, who, environment, received_at_ms, finished_at_ms,
                    identifiers, status, deleted, suppressed_messages, last_suppressed_ms
             FROM privacy_requests WHERE request_id = ?1",
            params![request_id],
        )?
        .pop())
    }

    fn due_forwards(
        &mut self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueForward>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let due: Vec<DueForward> = tx
            .prepare(
                "SELECT id, destination, kind, payload, attempts + 1 FROM privacy_forwards
                 WHERE status IN ('pending', 'in_flight') AND next_attempt_ms <= ?1
                   AND (status = 'pending' OR lease_until_ms < ?1) AND payload IS NOT NULL
                 ORDER BY next_attempt_ms LIMIT ?2",
            )?
            .query_map(params![now_ms, limit as i64], |r| {
                Ok(DueForward {
                    id: r.get(0)?,
                    destination: r.get(1)?,
                    kind: r.get(2)?,
                    payload: r.get(3)?,
                    attempt: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        {
            let mut lease = tx.prepare_cached(
                "UPDATE privacy_forwards SET status = 'in_flight', attempts = attempts + 1,
                     lease_until_ms = ?2, updated_at_ms = ?3 WHERE id = ?1",
            )?;
            for f in &due {
                lease.execute(params![f.id, now_ms + lease_ms, now_ms])?;
            }
        }
        tx.commit()?;
        Ok(due)
    }

    fn forward_done(&mut self, result: &ForwardResult, now_ms: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE privacy_forwards SET status = ?2, status_code = ?3, last_error = ?4,
                 next_attempt_ms = ?5, lease_until_ms = NULL, updated_at_ms = ?6,
                 payload = CASE WHEN ?2 IN ('delivered', 'dead') THEN NULL ELSE payload END
             WHERE id = ?1",
            params![
                result.id,
                result.status,
                result.status_code,
                result.error,
                result.next_attempt_ms,
                now_ms
            ],
        )?;
        Ok(())
    }
}

/// Count messages a suppression refused, per forget request (the writer, in its transaction).
pub fn count_suppressed(
    conn: &Connection,
    counts: &BTreeMap<i64, usize>,
    at_ms: i64,
) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "UPDATE privacy_requests SET suppressed_messages = suppressed_messages + ?2,
             last_suppressed_ms = ?3 WHERE id = ?1",
    )?;
    for (row, n) in counts {
        stmt.execute(params![row, *n as i64, at_ms])?;
    }
    Ok(())
}

/// The whole suppression list (it holds only forgotten people's hashes: small).
pub fn suppressions(
    conn: &Connection,
) -> Result<std::collections::HashMap<Vec<u8>, i64>, rusqlite::Error> {
    conn.prepare_cached("SELECT hash, request_row FROM suppressions")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}
