//! Forgetting a person in a fleet's database. Only SQL. A forget holds a session advisory lock
//! while it runs, so two nodes given the same request run it one after the other (the second
//! finds it done). Deleted rows stay in PostgreSQL's pages until VACUUM reclaims the space and
//! new rows overwrite it; `compact` runs VACUUM on the tables a forget touches.

use std::collections::BTreeMap;

use postgres::Client;

use crate::pipeline::identity::{IdKind, Identifier};
use crate::store::codec::unpack_raw;
use crate::store::model::privacy::{
    ChunkDeleted, Deleted, DueForward, ForwardRecord, ForwardResult, NewForward, NewPrivacyRequest,
    PersonKeys, PrivacyRecord, Suppression,
};
use crate::store::privacy::PrivacyStore;
use crate::store::StoreError;

const KEY_SETTING: &str = "privacy.key";
/// Serialises forgets across the fleet ("forget" in ASCII).
const FORGET_LOCK: i64 = 0x666f_7267_6574;

pub struct PgPrivacy {
    client: Client,
    node_id: Option<String>,
}

impl PgPrivacy {
    /// Connect (run from a plain thread: the sync client must not run on an async task's).
    pub fn open(url: &str) -> Result<PgPrivacy, StoreError> {
        let mut client = super::connect(url)?;
        super::migrate(&mut client)?;
        Ok(PgPrivacy {
            client,
            node_id: None,
        })
    }
}

/// The suppression key, created on first use by whichever node comes first.
pub fn suppression_key(client: &mut Client) -> Result<Vec<u8>, postgres::Error> {
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh).expect("the OS random source is available");
    client.execute(
        "INSERT INTO local_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        &[&KEY_SETTING, &hex::encode(fresh)],
    )?;
    let stored: String = client
        .query_one(
            "SELECT value FROM local_settings WHERE key = $1",
            &[&KEY_SETTING],
        )?
        .get(0);
    Ok(hex::decode(stored).unwrap_or_default())
}

impl PrivacyStore for PgPrivacy {
    fn exclusive(&mut self) -> Result<(), StoreError> {
        // Held until this connection closes: the next forget of the fleet waits for it.
        self.client
            .execute("SELECT pg_advisory_lock($1)", &[&FORGET_LOCK])?;
        Ok(())
    }

    fn key(&mut self) -> Result<Vec<u8>, StoreError> {
        Ok(suppression_key(&mut self.client)?)
    }

    fn owners(&mut self, ids: &[Identifier]) -> Result<BTreeMap<Identifier, i64>, StoreError> {
        let kinds: Vec<&str> = ids.iter().map(|(k, _)| k.as_str()).collect();
        let values: Vec<&str> = ids.iter().map(|(_, v)| v.as_str()).collect();
        let rows = self.client.query(
            "WITH RECURSIVE owner(kind, value, id) AS (
                 SELECT i.kind, i.value, i.profile_id
                 FROM unnest($1::text[], $2::text[]) AS k(kind, value)
                 JOIN identities i ON i.kind = k.kind AND i.value = k.value
                 UNION
                 SELECT o.kind, o.value, p.merged_into FROM profiles p JOIN owner o ON p.id = o.id
                 WHERE p.merged_into IS NOT NULL
             )
             SELECT o.kind, o.value, o.id FROM owner o JOIN profiles p ON p.id = o.id
             WHERE p.merged_into IS NULL",
            &[&kinds, &values],
        )?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                IdKind::parse(r.get(0)).map(|k| ((k, r.get::<_, String>(1)), r.get::<_, i64>(2)))
            })
            .collect())
    }

    fn person(&mut self, profile_id: i64) -> Result<PersonKeys, StoreError> {
        let profile_ids: Vec<i64> = self
            .client
            .query(
                "WITH RECURSIVE folded(id) AS (
                     SELECT $1::bigint UNION SELECT p.id FROM profiles p JOIN folded ON p.merged_into = folded.id
                 )
                 SELECT id FROM folded ORDER BY id",
                &[&profile_id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut identifiers: Vec<Identifier> = self
            .client
            .query(
                "SELECT kind, value FROM identities WHERE profile_id = ANY($1)
                 UNION SELECT 'user_id', user_id FROM profiles WHERE id = ANY($1) AND user_id IS NOT NULL",
                &[&profile_ids],
            )?
            .iter()
            .filter_map(|r| IdKind::parse(r.get(0)).map(|k| (k, r.get(1))))
            .collect();
        identifiers.sort();
        identifiers.dedup();
        let message_rows: Vec<i64> = self
            .client
            .query(
                "SELECT message_row FROM events WHERE profile_id = ANY($1)
                 UNION SELECT message_row FROM identity_changes WHERE profile_id = ANY($1)
                 ORDER BY 1",
                &[&profile_ids],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
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
        let mut tx = self.client.transaction()?;
        tx.execute(
            "DELETE FROM signed_request_uses WHERE expires_at_ms < $1",
            &[&now_ms],
        )?;
        let fresh = tx.execute(
            "INSERT INTO signed_request_uses (digest, expires_at_ms) VALUES ($1, $2)
             ON CONFLICT (digest) DO NOTHING",
            &[&digest, &expires_at_ms],
        )?;
        tx.commit()?;
        Ok(fresh == 1)
    }

    fn unuse(&mut self, digest: &[u8]) -> Result<(), StoreError> {
        self.client.execute(
            "DELETE FROM signed_request_uses WHERE digest = $1",
            &[&digest],
        )?;
        Ok(())
    }

    fn forget_audits(&mut self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT identifiers FROM privacy_requests WHERE action = 'forget' ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn identities_after(
        &mut self,
        after: Option<&Identifier>,
        limit: usize,
    ) -> Result<Vec<(Identifier, i64)>, StoreError> {
        let (kind, value) = after.map_or(("", ""), |(k, v)| (k.as_str(), v.as_str()));
        Ok(self
            .client
            .query(
                "SELECT kind, value, profile_id FROM identities
                 WHERE (kind, value) > ($1, $2) ORDER BY kind, value LIMIT $3",
                &[&kind, &value, &(limit as i64)],
            )?
            .iter()
            .filter_map(|r| {
                IdKind::parse(r.get(0)).map(|k| ((k, r.get::<_, String>(1)), r.get::<_, i64>(2)))
            })
            .collect())
    }

    fn raw_messages(&mut self, from: i64, to: i64) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT id, raw FROM messages WHERE id >= $1 AND id < $2 AND raw IS NOT NULL",
                &[&from, &to],
            )?
            .iter()
            .map(|r| (r.get(0), unpack_raw(r.get(1))))
            .collect())
    }

    fn suppressed(&mut self, hashes: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT hash FROM suppressions WHERE hash = ANY($1)",
                &[&hashes],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn begin(
        &mut self,
        request: &NewPrivacyRequest,
        suppress: &[Suppression],
    ) -> Result<i64, StoreError> {
        let mut tx = self.client.transaction()?;
        let row = insert_request(&mut tx, request, self.node_id.as_deref())?;
        let hashes: Vec<&[u8]> = suppress.iter().map(|s| s.hash.as_slice()).collect();
        let kinds: Vec<&str> = suppress.iter().map(|s| s.kind).collect();
        tx.execute(
            "INSERT INTO suppressions (hash, kind, request_row, created_at_ms)
             SELECT h, k, $3, $4 FROM unnest($1::bytea[], $2::text[]) AS u(h, k)
             ON CONFLICT (hash) DO NOTHING",
            &[&hashes, &kinds, &row, &request.received_at_ms],
        )?;
        tx.commit()?;
        Ok(row)
    }

    fn last_message_row(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .client
            .query_one("SELECT COALESCE(MAX(id), 0) FROM messages", &[])?
            .get(0))
    }

    fn forget_messages(
        &mut self,
        person: &PersonKeys,
        from: i64,
        to: i64,
        spelled: &[i64],
    ) -> Result<ChunkDeleted, StoreError> {
        let users = person.values(IdKind::UserId);
        let anonymous = person.values(IdKind::AnonymousId);
        let mut known = person.rows_in(from, to).to_vec();
        known.extend_from_slice(spelled);
        let mut tx = self.client.transaction()?;
        // Whose messages (as on SQLite): by their ids, by the person's events and identity
        // changes, and those found to spell them out.
        let rows: Vec<i64> = tx
            .query(
                "SELECT id FROM messages
                 WHERE id >= $1 AND id < $2
                   AND (user_id = ANY($3) OR anonymous_id = ANY($4))
                 UNION SELECT unnest($5::bigint[])",
                &[&from, &to, &users, &anonymous, &known],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = ChunkDeleted::default();
        if rows.is_empty() {
            tx.commit()?;
            return Ok(out);
        }
        out.event_ids = tx
            .query(
                "SELECT DISTINCT event_id FROM events WHERE message_row = ANY($1)",
                &[&rows],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // One statement of data-modifying CTEs; each reports how many rows it took.
        let counts = tx.query_one(
            "WITH dels AS (SELECT id FROM deliveries WHERE message_row = ANY($1)),
             carried AS (
                 SELECT a.request_row AS id, COUNT(DISTINCT a.delivery_id) AS n
                 FROM delivery_attempts a WHERE a.delivery_id IN (SELECT id FROM dels)
                   AND a.request_row IS NOT NULL GROUP BY a.request_row
             ),
             attempts AS (DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM dels) RETURNING 1),
             deliveries_ AS (DELETE FROM deliveries WHERE id IN (SELECT id FROM dels) RETURNING 1),
             requests_gone AS (
                 DELETE FROM delivery_requests r USING carried c
                 WHERE r.id = c.id AND c.n >= r.item_count RETURNING r.id
             ),
             bodies AS (
                 UPDATE delivery_requests r SET request_body = NULL, response_body = NULL
                 FROM carried c WHERE r.id = c.id AND c.n < r.item_count RETURNING 1
             ),
             evs AS (SELECT id FROM events WHERE message_row = ANY($1)),
             routes_ AS (DELETE FROM routes WHERE event_row IN (SELECT id FROM evs) RETURNING 1),
             collisions_ AS (
                 DELETE FROM collisions WHERE message_row = ANY($1) OR event_id = ANY($2) RETURNING 1
             ),
             unmapped_ AS (DELETE FROM unmapped WHERE message_row = ANY($1) RETURNING 1),
             changes AS (DELETE FROM identity_changes WHERE message_row = ANY($1) RETURNING 1),
             event_claims AS (DELETE FROM event_ids WHERE event_row IN (SELECT id FROM evs) RETURNING 1),
             events_ AS (DELETE FROM events WHERE id IN (SELECT id FROM evs) RETURNING 1),
             message_claims AS (DELETE FROM message_ids WHERE message_row = ANY($1) RETURNING 1)
             SELECT (SELECT COUNT(*) FROM attempts), (SELECT COUNT(*) FROM deliveries_),
                    (SELECT COUNT(*) FROM requests_gone), (SELECT COUNT(*) FROM bodies),
                    (SELECT COUNT(*) FROM routes_), (SELECT COUNT(*) FROM collisions_),
                    (SELECT COUNT(*) FROM unmapped_), (SELECT COUNT(*) FROM changes),
                    (SELECT COUNT(*) FROM events_), (SELECT COUNT(*) FROM event_claims),
                    (SELECT COUNT(*) FROM message_claims)",
            &[&rows, &out.event_ids],
        )?;
        let names = [
            "delivery_attempts",
            "deliveries",
            "delivery_requests",
            "delivery_request_bodies",
            "routes",
            "collisions",
            "unmapped",
            "identity_changes",
            "events",
            "event_ids",
            "message_ids",
        ];
        for (i, name) in names.iter().enumerate() {
            out.deleted.add(name, counts.get::<_, i64>(i));
        }
        // Messages last: a duplicate points at its original (a foreign key), and the walk goes
        // from the newest range down, so duplicates always go before what they point at.
        let request_ids: Vec<String> = tx
            .query(
                "DELETE FROM messages WHERE id = ANY($1) RETURNING request_id",
                &[&rows],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        out.deleted.add("messages", request_ids.len() as i64);
        let requests = tx.execute(
            "DELETE FROM requests r WHERE r.request_id = ANY($1)
             AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.request_id = r.request_id)",
            &[&request_ids],
        )?;
        out.deleted.add("requests", requests as i64);
        tx.commit()?;
        Ok(out)
    }

    fn forget_profiles(
        &mut self,
        request_row: i64,
        person: &PersonKeys,
        deleted: &Deleted,
        forwards: &[NewForward],
        now_ms: i64,
    ) -> Result<Deleted, StoreError> {
        let kinds: Vec<&str> = person.identifiers.iter().map(|(k, _)| k.as_str()).collect();
        let values: Vec<&str> = person.identifiers.iter().map(|(_, v)| v.as_str()).collect();
        let mut tx = self.client.transaction()?;
        let counts = tx.query_one(
            "WITH changes AS (
                 DELETE FROM identity_changes WHERE profile_id = ANY($1) OR other_profile_id = ANY($1)
                 RETURNING 1
             ),
             ids AS (
                 DELETE FROM identities i WHERE i.profile_id = ANY($1)
                    OR (i.kind, i.value) IN (SELECT * FROM unnest($2::text[], $3::text[]))
                 RETURNING 1
             ),
             profiles_ AS (DELETE FROM profiles WHERE id = ANY($1) RETURNING 1)
             SELECT (SELECT COUNT(*) FROM changes), (SELECT COUNT(*) FROM ids),
                    (SELECT COUNT(*) FROM profiles_)",
            &[&person.profile_ids, &kinds, &values],
        )?;
        let mut mine = Deleted::default();
        mine.add("identity_changes", counts.get(0));
        mine.add("identities", counts.get(1));
        mine.add("profiles", counts.get(2));
        let destinations: Vec<&str> = forwards.iter().map(|f| f.destination.as_str()).collect();
        let fkinds: Vec<&str> = forwards.iter().map(|f| f.kind).collect();
        let payloads: Vec<&str> = forwards.iter().map(|f| f.payload.as_str()).collect();
        tx.execute(
            "INSERT INTO privacy_forwards (request_row, destination, kind, payload, status,
                 next_attempt_ms, updated_at_ms)
             SELECT $1, d, k, p, 'pending', $5, $5
             FROM unnest($2::text[], $3::text[], $4::text[]) AS u(d, k, p)",
            &[&request_row, &destinations, &fkinds, &payloads, &now_ms],
        )?;
        let mut all = deleted.clone();
        all.merge(&mine);
        tx.execute(
            "UPDATE privacy_requests SET status = 'done', finished_at_ms = $2, deleted = $3
             WHERE id = $1",
            &[
                &request_row,
                &now_ms,
                &serde_json::to_string(&all).unwrap_or_else(|_| "{}".into()),
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
        let mut tx = self.client.transaction()?;
        let lifted = tx.execute("DELETE FROM suppressions WHERE hash = ANY($1)", &[&hashes])?;
        let mut request = request.clone();
        if lifted == 0 {
            request.status = "not_suppressed";
        }
        insert_request(&mut tx, &request, self.node_id.as_deref())?;
        tx.commit()?;
        Ok(lifted as usize)
    }

    fn compact(&mut self) -> Result<(), StoreError> {
        self.client.batch_execute(
            "VACUUM messages, events, collisions, unmapped, identity_changes, deliveries,
                    delivery_attempts, delivery_requests, profiles, identities, requests",
        )?;
        Ok(())
    }

    fn requests(&mut self, limit: usize) -> Result<Vec<PrivacyRecord>, StoreError> {
        read_requests(&mut self.client, None, limit as i64)
    }

    fn request(&mut self, request_id: &str) -> Result<Option<PrivacyRecord>, StoreError> {
        Ok(read_requests(&mut self.client, Some(request_id), 1)?.pop())
    }

    fn due_forwards(
        &mut self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueForward>, StoreError> {
        let rows = self.client.query(
            "UPDATE privacy_forwards f SET status = 'in_flight', attempts = f.attempts + 1,
                 lease_until_ms = $2, leased_by = $4, updated_at_ms = $1
             WHERE f.id IN (
                 SELECT id FROM privacy_forwards
                 WHERE status IN ('pending', 'in_flight') AND next_attempt_ms <= $1
                   AND (status = 'pending' OR lease_until_ms < $1) AND payload IS NOT NULL
                 ORDER BY next_attempt_ms LIMIT $3 FOR UPDATE SKIP LOCKED
             )
             RETURNING f.id, f.destination, f.kind, f.payload, f.attempts",
            &[
                &now_ms,
                &(now_ms + lease_ms),
                &(limit as i64),
                &self.node_id,
            ],
        )?;
        Ok(rows
            .iter()
            .map(|r| DueForward {
                id: r.get(0),
                destination: r.get(1),
                kind: r.get(2),
                payload: r.get(3),
                attempt: i64::from(r.get::<_, i32>(4)),
            })
            .collect())
    }

    fn forward_done(&mut self, result: &ForwardResult, now_ms: i64) -> Result<(), StoreError> {
        self.client.execute(
            "UPDATE privacy_forwards SET status = $2, status_code = $3, last_error = $4,
                 next_attempt_ms = $5, lease_until_ms = NULL, leased_by = NULL, updated_at_ms = $6,
                 payload = CASE WHEN $2 IN ('delivered', 'dead') THEN NULL ELSE payload END
             WHERE id = $1",
            &[
                &result.id,
                &result.status,
                &result.status_code.map(i32::from),
                &result.error,
                &result.next_attempt_ms,
                &now_ms,
            ],
        )?;
        Ok(())
    }
}

fn insert_request(
    tx: &mut postgres::Transaction<'_>,
    request: &NewPrivacyRequest,
    node_id: Option<&str>,
) -> Result<i64, postgres::Error> {
    let finished = (request.status != "deleting").then_some(request.received_at_ms);
    Ok(tx
        .query_one(
            "INSERT INTO privacy_requests (request_id, action, who, environment, received_at_ms,
                 finished_at_ms, identifiers, status, node_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            &[
                &request.request_id,
                &request.action,
                &request.who,
                &request.environment,
                &request.received_at_ms,
                &finished,
                &request.identifiers,
                &request.status,
                &node_id,
            ],
        )?
        .get(0))
}

pub(super) fn read_requests(
    client: &mut Client,
    request_id: Option<&str>,
    limit: i64,
) -> Result<Vec<PrivacyRecord>, StoreError> {
    let rows = client.query(
        "SELECT id, request_id, action, who, environment, received_at_ms, finished_at_ms,
                identifiers, status, deleted, suppressed_messages, last_suppressed_ms
         FROM privacy_requests WHERE ($1::text IS NULL OR request_id = $1)
         ORDER BY id DESC LIMIT $2",
        &[&request_id, &limit],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let json = |text: String| serde_json::from_str(&text).unwrap_or_default();
        let row: i64 = r.get(0);
        let forwards = client
            .query(
                "SELECT destination, kind, status, attempts, status_code, last_error, updated_at_ms
                 FROM privacy_forwards WHERE request_row = $1 ORDER BY id",
                &[&row],
            )?
            .iter()
            .map(|f| ForwardRecord {
                destination: f.get(0),
                kind: f.get(1),
                status: f.get(2),
                attempts: i64::from(f.get::<_, i32>(3)),
                status_code: f.get::<_, Option<i32>>(4).map(i64::from),
                last_error: f.get(5),
                updated_at_ms: f.get(6),
            })
            .collect();
        out.push(PrivacyRecord {
            request_id: r.get(1),
            action: r.get(2),
            who: r.get(3),
            environment: r.get(4),
            received_at_ms: r.get(5),
            finished_at_ms: r.get(6),
            identifiers: json(r.get(7)),
            status: r.get(8),
            deleted: json(r.get(9)),
            suppressed_messages: r.get(10),
            last_suppressed_ms: r.get(11),
            forwards,
        });
    }
    Ok(out)
}

/// Count messages a suppression refused, per forget request (the writer, in its transaction).
pub(super) fn count_suppressed(
    tx: &mut super::db::Db<'_, '_>,
    counts: &BTreeMap<i64, usize>,
    at_ms: i64,
) -> Result<(), postgres::Error> {
    let rows: Vec<i64> = counts.keys().copied().collect();
    let ns: Vec<i64> = counts.values().map(|n| *n as i64).collect();
    tx.execute(
        "UPDATE privacy_requests p SET suppressed_messages = p.suppressed_messages + u.n,
             last_suppressed_ms = $3
         FROM unnest($1::bigint[], $2::bigint[]) AS u(id, n) WHERE p.id = u.id",
        &[&rows, &ns, &at_ms],
    )?;
    Ok(())
}
