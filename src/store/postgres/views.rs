//! The dashboard's read models on the fleet's database: the same rows as on SQLite, plus the
//! node that received each message and sent each attempt. Every query is bounded the same way
//! (newest rows by id within a window, or a LIMIT), so a fleet's history stays instant to read.

use super::reader::{collision_from_row, packed, PgReader, COLLISION_SELECT};
use crate::store::filter_sql::{filter_sql, paged_from, Dialect, FilterSource, ATTEMPT_JOINS};
use crate::store::model::filter::ListFilter;
use crate::store::model::trace::{StoredCollision, StoredProfile};
use crate::store::model::views::*;
use postgres::types::ToSql;

type PgResult<T> = Result<T, postgres::Error>;

/// How far back a filtered scan looks (rows), as on SQLite.
const FILTER_WINDOW: i64 = 100_000;

const MESSAGE_COLUMNS: &str =
    "id, received_at_ms, environment, status, outcome, type, event, message_id,
     COALESCE(reason, (SELECT 'collision ' || c.kind || ': collapsed onto ' || c.event_id
                       FROM collisions c WHERE c.message_row = messages.id LIMIT 1)), node_id";
const REFUSAL_COLUMNS: &str =
    "id, received_at_ms, COALESCE(environment_header, '?'), reason_code, reason, path";

fn message_row(r: &postgres::Row) -> StreamRow {
    StreamRow {
        source: StreamSource::Message(r.get(0)),
        received_at_ms: r.get(1),
        environment: r.get(2),
        status: r.get(3),
        outcome: r.get(4),
        message_type: r.get(5),
        event: r.get(6),
        message_id: r.get(7),
        reason: r.get(8),
        node: Some(r.get(9)),
        cursor: StreamCursor::NEWEST,
    }
}

/// Refusals happen before any node-specific storage decision; they carry no node.
fn refusal_row(r: &postgres::Row) -> StreamRow {
    StreamRow {
        source: StreamSource::Refusal(r.get(0)),
        received_at_ms: r.get(1),
        environment: r.get(2),
        status: "rejected".into(),
        outcome: None,
        message_type: None,
        event: Some(r.get(5)),
        message_id: None,
        reason: Some(format!(
            "{}: {}",
            r.get::<_, String>(3),
            r.get::<_, String>(4)
        )),
        node: None,
        cursor: StreamCursor::NEWEST,
    }
}

fn pattern(filter: &str) -> String {
    let escaped = filter
        .trim()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

fn count(v: i32) -> i64 {
    i64::from(v)
}

impl PgReader {
    fn max_id(&mut self, table: &str) -> PgResult<i64> {
        let sql = format!("SELECT COALESCE(MAX(id), 0)::BIGINT FROM {table}");
        Ok(self.client.query_one(&sql, &[])?.get(0))
    }

    /// Messages and events stored (their newest row numbers: cheap on any table size).
    pub fn totals(&mut self) -> PgResult<(i64, i64)> {
        Ok((self.max_id("messages")?, self.max_id("events")?))
    }

    /// Rows of `sql`, whose `{filter}` becomes `filter`'s condition on `source`; `fixed` are
    /// bound first ($1…), the filter's values after them.
    fn filtered<T>(
        &mut self,
        sql: &str,
        fixed: &[&(dyn ToSql + Sync)],
        source: FilterSource,
        filter: &ListFilter,
        scan_floor: Option<&str>,
        row: fn(&postgres::Row) -> T,
    ) -> PgResult<Vec<T>> {
        let condition = filter_sql(
            Dialect::Postgres,
            source,
            filter,
            fixed.len() + 1,
            scan_floor,
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = fixed.to_vec();
        params.extend(condition.values.iter().map(|v| v as &(dyn ToSql + Sync)));
        Ok(self
            .client
            .query(&sql.replace("{filter}", &condition.clause), &params)?
            .iter()
            .map(row)
            .collect())
    }

    /// A page of messages and refused requests, newest first, starting at `top`, with the node
    /// that received each. `filter` (free text and `field:value` terms) looks at the
    /// `FILTER_WINDOW` ids below the page's top.
    pub fn stream(
        &mut self,
        limit: usize,
        filter: &str,
        top: StreamCursor,
    ) -> PgResult<Vec<StreamRow>> {
        let filter = ListFilter::parse(filter);
        let floor = top.message.min(self.max_id("messages")?) - FILTER_WINDOW;
        let messages = self.filtered(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id <= $3 AND {{filter}}
                 ORDER BY id DESC LIMIT $1"
            ),
            &[&(limit as i64), &floor, &top.message],
            FilterSource::Messages,
            &filter,
            Some("id > $2"),
            message_row,
        )?;
        let refusals = self.filtered(
            &format!(
                "SELECT {REFUSAL_COLUMNS} FROM rejections WHERE id <= $2 AND {{filter}}
                 ORDER BY id DESC LIMIT $1"
            ),
            &[&(limit as i64), &top.refusal],
            FilterSource::Refusals,
            &filter,
            None,
            refusal_row,
        )?;
        Ok(merge_older(messages, refusals, top, limit))
    }

    /// The cursor `n` rows newer than the page starting at `from` (paging up).
    pub fn stream_newer(
        &mut self,
        filter: &str,
        from: StreamCursor,
        n: usize,
    ) -> PgResult<StreamCursor> {
        let filter = ListFilter::parse(filter);
        let floor = from.message - FILTER_WINDOW;
        let messages = self.filtered(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id > $3 AND {{filter}}
                 ORDER BY id ASC LIMIT $1"
            ),
            &[&(n as i64), &floor, &from.message],
            FilterSource::Messages,
            &filter,
            Some("id > $2"),
            message_row,
        )?;
        let refusals = self.filtered(
            &format!(
                "SELECT {REFUSAL_COLUMNS} FROM rejections WHERE id > $2 AND {{filter}}
                 ORDER BY id ASC LIMIT $1"
            ),
            &[&(n as i64), &from.refusal],
            FilterSource::Refusals,
            &filter,
            None,
            refusal_row,
        )?;
        Ok(step_newer(&messages, &refusals, from, n))
    }

    /// Find a message by messageId, event_id, request id or order_id, or else a profile, as
    /// the SQLite reader does.
    pub fn search(&mut self, text: &str) -> PgResult<Option<SearchHit>> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let message = |message_id: String, matched| {
            Ok(Some(SearchHit::Message {
                message_id,
                matched,
            }))
        };
        let first =
            |client: &mut postgres::Client, sql: &str, value: &str| -> PgResult<Option<String>> {
                Ok(client.query_opt(sql, &[&value])?.map(|r| r.get(0)))
            };
        if let Some(id) = first(
            &mut self.client,
            "SELECT message_id FROM messages WHERE message_id = $1 LIMIT 1",
            text,
        )? {
            return message(id, "messageId");
        }
        const OF_EVENT: &str =
            "SELECT message_id FROM events WHERE event_id = $1 ORDER BY id LIMIT 1";
        if let Some(id) = first(&mut self.client, OF_EVENT, text)? {
            return message(id, "event_id");
        }
        if let Some(id) = first(
            &mut self.client,
            "SELECT message_id FROM messages WHERE request_id = $1 AND message_id IS NOT NULL
             ORDER BY position LIMIT 1",
            text,
        )? {
            return message(id, "request id");
        }
        let pairs: Vec<(String, String)> = self
            .client
            .query(
                "SELECT DISTINCT environment, name FROM
                 (SELECT environment, name FROM events ORDER BY id DESC LIMIT $1) recent",
                &[&ORDER_SEARCH_RECENT_EVENTS],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for candidate in crate::pipeline::dedup::order_event_ids(&pairs, text) {
            if let Some(id) = first(&mut self.client, OF_EVENT, &candidate)? {
                return message(id, "order_id");
            }
        }
        if self.find_profile(text)?.is_some() {
            return Ok(Some(SearchHit::Profile { query: text.into() }));
        }
        Ok(None)
    }

    /// One refused request, to open from the stream.
    pub fn rejection(&mut self, id: i64) -> PgResult<Option<RejectionDetail>> {
        let sql = format!("SELECT {REJECTION_COLUMNS} FROM rejections WHERE id = $1");
        Ok(self
            .client
            .query_opt(&sql, &[&id])?
            .map(|r| RejectionDetail {
                id: r.get(0),
                received_at_ms: r.get(1),
                path: r.get(2),
                remote_addr: r.get(3),
                user_agent: r.get(4),
                account_header: r.get(5),
                environment_header: r.get(6),
                content_type: r.get(7),
                body_bytes: r.get(8),
                status_code: i64::from(r.get::<_, i32>(9)),
                reason_code: r.get(10),
                reason: r.get(11),
            }))
    }

    /// The id ranges of messages and refused requests.
    pub fn stream_extent(&mut self) -> PgResult<StreamExtent> {
        let mut range = |table: &str| -> PgResult<Option<(i64, i64)>> {
            let row = self.client.query_one(
                &format!("SELECT (SELECT MIN(id) FROM {table}), (SELECT MAX(id) FROM {table})"),
                &[],
            )?;
            let (lo, hi): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
            Ok(lo.zip(hi))
        };
        Ok(StreamExtent {
            messages: range("messages")?,
            refusals: range("rejections")?,
        })
    }

    /// The newest delivery attempts, newest first, with the node that made each.
    pub fn recent_attempts(&mut self, limit: usize, filter: &str) -> PgResult<Vec<AttemptRow>> {
        self.attempts_page(limit, filter, i64::MAX)
    }

    /// A page of delivery attempts with `id <= top`, newest first (keyset paging).
    pub fn attempts_page(
        &mut self,
        limit: usize,
        filter: &str,
        top: i64,
    ) -> PgResult<Vec<AttemptRow>> {
        let floor = top.min(self.max_id("delivery_attempts")?) - FILTER_WINDOW;
        self.filtered(
            &format!(
                "SELECT a.id, a.at_ms, d.destination, d.destination_event, d.event_id,
                        m.message_id, a.attempt, a.outcome, r.status_code, r.latency_ms,
                        a.reason, a.next_attempt_ms, a.request_row, d.status, a.node_id, d.id
                 FROM {ATTEMPT_JOINS}
                 WHERE a.id <= $3 AND {{filter}}
                 ORDER BY a.id DESC LIMIT $1"
            ),
            &[&(limit as i64), &floor, &top],
            FilterSource::Attempts,
            &ListFilter::parse(filter),
            Some("a.id > $2"),
            |r| AttemptRow {
                attempt_row: r.get(0),
                at_ms: r.get(1),
                destination: r.get(2),
                destination_event: r.get(3),
                event_id: r.get(4),
                message_id: r.get(5),
                attempt: count(r.get(6)),
                outcome: r.get(7),
                status_code: r.get::<_, Option<i32>>(8).map(count),
                latency_ms: r.get(9),
                reason: r.get(10),
                next_attempt_ms: r.get(11),
                request_row: r.get(12),
                delivery_status: r.get(13),
                node: Some(r.get(14)),
                delivery_id: r.get(15),
            },
        )
    }

    /// The top of the page of `table` that is `n` rows newer than `from` (`i64::MAX` when
    /// fewer are).
    pub fn page_newer(
        &mut self,
        table: PagedTable,
        filter: &str,
        from: i64,
        n: usize,
    ) -> PgResult<i64> {
        let (joins, id, source) = paged_from(table);
        let ids: Vec<i64> = self.filtered(
            &format!(
                "SELECT {id} FROM {joins} WHERE {id} > $3 AND {{filter}} ORDER BY {id} ASC LIMIT $1"
            ),
            &[&(n as i64), &(from - FILTER_WINDOW), &from],
            source,
            &ListFilter::parse(filter),
            Some(&format!("{id} > $2")),
            |r| r.get(0),
        )?;
        Ok(newer_top(&ids, n))
    }

    /// The id range of a paged list's table (position and total).
    pub fn id_range(&mut self, table: PagedTable) -> PgResult<Option<(i64, i64)>> {
        let table = table.name();
        let row = self.client.query_one(
            &format!("SELECT (SELECT MIN(id) FROM {table}), (SELECT MAX(id) FROM {table})"),
            &[],
        )?;
        let (lo, hi): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
        Ok(lo.zip(hi))
    }

    /// A page of dedup collisions with `id <= top`, newest first (`status:` is the kind).
    pub fn collisions_page(
        &mut self,
        limit: usize,
        filter: &str,
        top: i64,
    ) -> PgResult<Vec<StoredCollision>> {
        let floor = top.min(self.max_id("collisions")?) - FILTER_WINDOW;
        self.filtered(
            &format!(
                "{COLLISION_SELECT} WHERE c.id <= $3 AND {{filter}} ORDER BY c.id DESC LIMIT $1"
            ),
            &[&(limit as i64), &floor, &top],
            FilterSource::Collisions,
            &ListFilter::parse(filter),
            Some("c.id > $2"),
            collision_from_row,
        )
    }

    /// Unmapped event names, most frequent first, with the suggestion for each.
    pub fn unmapped_groups(&mut self, limit: usize, filter: &str) -> PgResult<Vec<UnmappedGroup>> {
        let like = pattern(filter);
        Ok(self
            .client
            .query(
                "SELECT g.segment_event, g.n, g.first_ms, g.last_ms, g.envs, g.suggestion,
                        g.reason, m.message_id
                 FROM (SELECT u.segment_event, COUNT(*) AS n, MIN(u.received_at_ms) AS first_ms,
                              MAX(u.received_at_ms) AS last_ms,
                              string_agg(DISTINCT u.environment, ',') AS envs,
                              MAX(u.suggestion) AS suggestion, MAX(u.reason) AS reason,
                              MAX(u.message_row) AS last_row
                       FROM unmapped u
                       WHERE $2 = '%%' OR u.segment_event ILIKE $2 OR u.suggestion ILIKE $2
                       GROUP BY u.segment_event) g
                 LEFT JOIN messages m ON m.id = g.last_row
                 ORDER BY g.n DESC, g.last_ms DESC LIMIT $1",
                &[&(limit as i64), &like],
            )?
            .iter()
            .map(|r| UnmappedGroup {
                segment_event: r.get(0),
                count: r.get(1),
                first_seen_ms: r.get(2),
                last_seen_ms: r.get(3),
                environments: r.get::<_, Option<String>>(4).unwrap_or_default(),
                suggestion: r.get(5),
                reason: r.get(6),
                example_message_id: r.get(7),
            })
            .collect())
    }

    /// A destination's queue now: partial indexes and a running total, as on SQLite.
    pub fn queue_counts(&mut self, destination: &str) -> PgResult<QueueCounts> {
        let row = self.client.query_one(
            "SELECT
                (SELECT COUNT(*) FROM deliveries WHERE destination = $1 AND status = 'pending'),
                (SELECT COUNT(*) FROM deliveries WHERE destination = $1 AND status = 'in_flight'),
                (SELECT COUNT(*) FROM deliveries WHERE destination = $1 AND status = 'dead'),
                (SELECT delivered FROM destination_totals WHERE destination = $1),
                (SELECT created_at_ms FROM deliveries WHERE destination = $1 AND status = 'pending'
                 ORDER BY next_attempt_ms LIMIT 1)",
            &[&destination],
        )?;
        Ok(QueueCounts {
            pending: row.get(0),
            in_flight: row.get(1),
            dead: row.get(2),
            delivered: row.get::<_, Option<i64>>(3).unwrap_or(0),
            oldest_pending_ms: row.get(4),
        })
    }

    /// Diagnostics for each destination, with which node holds its in-flight deliveries and
    /// which node saw the last failure.
    pub fn destination_stats(
        &mut self,
        destinations: &[String],
        now_ms: i64,
    ) -> PgResult<Vec<DestinationStats>> {
        let routes_floor = self.max_id("events")? - FILTER_WINDOW;
        let attempts_floor = self.max_id("delivery_attempts")? - FILTER_WINDOW;
        let deliveries_floor = self.max_id("deliveries")? - FILTER_WINDOW;
        let mut out = Vec::with_capacity(destinations.len());
        for name in destinations {
            let queue = self.queue_counts(name)?;
            let mut s = DestinationStats {
                destination: name.clone(),
                retrying: queue.pending,
                in_flight: queue.in_flight,
                dead: queue.dead,
                delivered: queue.delivered,
                ..DestinationStats::default()
            };
            s.blocked_consent = self
                .client
                .query_one(
                    "SELECT COUNT(*) FROM routes
                     WHERE destination = $1 AND verdict = 'blocked_consent' AND event_row > $2",
                    &[name, &routes_floor],
                )?
                .get(0);
            s.paused = self.destination_pause(name)?;
            s.in_flight_by_node = self
                .client
                .query(
                    "SELECT COALESCE(leased_by, '?'), COUNT(*) FROM deliveries
                     WHERE destination = $1 AND status = 'in_flight'
                     GROUP BY 1 ORDER BY 2 DESC",
                    &[name],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            // The last hour, minute by minute, as every node added it up.
            let since = MinuteCounts::start_ms(now_ms);
            let minutes: Vec<MinuteTally> = self
                .client
                .query(
                    "SELECT minute_ms, requests, succeeded, latency_10ms, latency_50ms,
                         latency_100ms, latency_250ms, latency_500ms, latency_1s, latency_5s,
                         latency_slower, delivered, retried, dead
                     FROM destination_minutes WHERE destination = $1 AND minute_ms >= $2",
                    &[name, &since],
                )?
                .iter()
                .map(|r| {
                    let mut latency = [0i64; LATENCY_BUCKETS];
                    for (i, slot) in latency.iter_mut().enumerate() {
                        *slot = r.get(3 + i);
                    }
                    MinuteTally {
                        minute_ms: r.get(0),
                        requests: r.get(1),
                        succeeded: r.get(2),
                        latency,
                        delivered: r.get(11),
                        retried: r.get(12),
                        dead: r.get(13),
                    }
                })
                .collect();
            let errors: Vec<(String, i64, i64, String)> = self
                .client
                .query(
                    "SELECT DISTINCT ON (kind) kind,
                         SUM(count) OVER (PARTITION BY kind)::bigint,
                         last_at_ms, last_reason
                     FROM destination_minute_errors
                     WHERE destination = $1 AND minute_ms >= $2
                     ORDER BY kind, last_at_ms DESC",
                    &[name, &since],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
            // The last failure however long ago, and which node met it (when its attempt is
            // among the newest).
            s.last_error = self
                .client
                .query_opt(
                    "SELECT last_at_ms, last_reason FROM destination_minute_errors
                     WHERE destination = $1 ORDER BY minute_ms DESC, last_at_ms DESC LIMIT 1",
                    &[name],
                )?
                .map(|r| (r.get(0), r.get(1)));
            s.last_error_node = self
                .client
                .query_opt(
                    "SELECT a.node_id FROM delivery_attempts a
                     JOIN deliveries d ON d.id = a.delivery_id
                     WHERE d.destination = $1 AND a.outcome <> 'delivered' AND a.id > $2
                     ORDER BY a.id DESC LIMIT 1",
                    &[name, &attempts_floor],
                )?
                .and_then(|r| r.get(0));
            summarise_minutes(&mut s, &minutes, &errors, now_ms);
            let mut coverage = Coverage::default();
            let mut quality = MatchSummary::default();
            for r in self.client.query(
                "SELECT e.canonical, d.kind, d.created_at_ms FROM deliveries d
                 JOIN events e ON e.id = d.event_row
                 WHERE d.destination = $1 AND d.id > $2 ORDER BY d.id DESC LIMIT 500",
                &[name, &deliveries_floor],
            )? {
                if let Some(json) = packed(r.get(0)) {
                    coverage.add(&json);
                    quality.add(r.get(1), r.get(2), &json, now_ms);
                }
            }
            s.coverage = coverage;
            s.match_quality = quality;
            out.push(s);
        }
        Ok(out)
    }

    /// The destinations this database has seen (an attached dashboard has no config to ask).
    pub fn destination_names(&mut self) -> PgResult<Vec<String>> {
        Ok(self
            .client
            .query(
                "SELECT destination FROM destination_totals
                 UNION SELECT destination FROM destination_state
                 UNION SELECT DISTINCT destination FROM deliveries WHERE status = 'pending'
                 UNION SELECT DISTINCT destination FROM deliveries WHERE status = 'in_flight'
                 UNION SELECT DISTINCT destination FROM deliveries WHERE status = 'dead'
                 ORDER BY 1",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// The fleet's nodes heard from in the last ten minutes, most recent first (every start
    /// of a process is a new node; older ones are history).
    pub fn nodes(&mut self) -> PgResult<Vec<FleetNode>> {
        let since = crate::store::now_ms() - 10 * 60_000;
        Ok(self
            .client
            .query(
                "SELECT node_id, hostname, started_at_ms, last_seen_ms, version FROM nodes
                 WHERE last_seen_ms > $1 ORDER BY last_seen_ms DESC LIMIT 50",
                &[&since],
            )?
            .iter()
            .map(|r| FleetNode {
                node_id: r.get(0),
                hostname: r.get(1),
                started_at_ms: r.get(2),
                last_seen_ms: r.get(3),
                version: r.get(4),
            })
            .collect())
    }

    /// The newest forget requests, as audited.
    pub fn privacy_requests(
        &mut self,
        limit: usize,
    ) -> Result<Vec<crate::store::model::privacy::PrivacyRecord>, crate::store::StoreError> {
        super::privacy::read_requests(&mut self.client, None, limit as i64)
    }

    /// Open alerts first, then the newest resolved ones.
    pub fn alerts(
        &mut self,
        limit: usize,
    ) -> PgResult<Vec<crate::store::model::alerts::StoredAlert>> {
        Ok(self
            .client
            .query(super::alerts::RECENT, &[&(limit as i64)])?
            .iter()
            .map(super::alerts::from_row)
            .collect())
    }

    /// The database's size on disk (PostgreSQL's write-ahead log is the server's, not ours: 0).
    pub fn storage_bytes(&mut self) -> PgResult<(u64, u64)> {
        let bytes: i64 = self
            .client
            .query_one("SELECT pg_database_size(current_database())", &[])?
            .get(0);
        Ok((bytes.max(0) as u64, 0))
    }

    /// The newest collisions first.
    pub fn recent_collisions(&mut self, limit: usize) -> PgResult<Vec<StoredCollision>> {
        let sql = format!("{COLLISION_SELECT} ORDER BY c.id DESC LIMIT $1");
        Ok(self
            .client
            .query(&sql, &[&(limit as i64)])?
            .iter()
            .map(collision_from_row)
            .collect())
    }

    /// A message's raw bytes by row (an identical duplicate reads its original's bytes).
    pub fn message_raw(&mut self, row: i64) -> PgResult<Option<Vec<u8>>> {
        Ok(self
            .client
            .query_opt(
                "SELECT COALESCE(m.raw, o.raw) FROM messages m
                 LEFT JOIN messages o ON o.id = m.duplicate_of WHERE m.id = $1",
                &[&row],
            )?
            .and_then(|r| r.get::<_, Option<Vec<u8>>>(0))
            .map(|stored| crate::store::codec::unpack_raw(&stored)))
    }

    /// The messageId of the newest canonical event.
    pub fn latest_event_message_id(&mut self) -> PgResult<Option<String>> {
        Ok(self
            .client
            .query_opt(
                "SELECT message_id FROM events ORDER BY id DESC LIMIT 1",
                &[],
            )?
            .map(|r| r.get(0)))
    }

    /// Find a profile by number, userId, anonymousId, email or phone.
    pub fn find_profile(&mut self, query: &str) -> PgResult<Option<StoredProfile>> {
        let (number, candidates) = profile_search(query);
        if let Some(id) = number {
            if let Some(p) = self.profile(id)? {
                return Ok(Some(p));
            }
        }
        for (kind, value) in candidates {
            if let Some(p) = self.profile_by_identifier(kind, &value)? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    pub fn events_of_profile(
        &mut self,
        profile_id: i64,
        limit: usize,
    ) -> PgResult<Vec<ProfileEvent>> {
        Ok(self
            .client
            .query(
                "SELECT event_id, name, message_id, event_time_ms FROM events
                 WHERE profile_id = $1 ORDER BY id DESC LIMIT $2",
                &[&profile_id, &(limit as i64)],
            )?
            .iter()
            .map(|r| ProfileEvent {
                event_id: r.get(0),
                name: r.get(1),
                message_id: r.get(2),
                event_time_ms: r.get(3),
            })
            .collect())
    }
}
