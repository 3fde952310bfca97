//! Read models for the dashboard. Every query is bounded (newest-first by rowid with a LIMIT, or
//! a window of recent rows), so a database with millions of events stays instant.

use crate::store::filter_sql::{
    filter_sql, paged_from, Dialect, FilterSource, ATTEMPT_JOINS, COLLISION_JOINS,
};
use crate::store::model::filter::ListFilter;
use crate::store::model::views::*;
use rusqlite::{params, OptionalExtension};

use super::reader::{collision_from_row, StoreReader, COLLISION_COLUMNS};
use crate::store::error::StoreError;
use crate::store::model::trace::StoredCollision;
use crate::store::model::trace::StoredProfile;

/// How far back a filtered scan looks (rows), so a filter never walks the whole table.
const FILTER_WINDOW: i64 = 100_000;

const MESSAGE_COLUMNS: &str =
    "id, received_at_ms, environment, status, outcome, type, event, message_id,
     COALESCE(reason, (SELECT 'collision ' || c.kind || ': collapsed onto ' || c.event_id
                       FROM collisions c WHERE c.message_row = messages.id LIMIT 1))";
const REFUSAL_COLUMNS: &str =
    "id, received_at_ms, COALESCE(environment_header, '?'), reason_code, reason, path";

fn message_row(r: &rusqlite::Row) -> rusqlite::Result<StreamRow> {
    Ok(StreamRow {
        source: StreamSource::Message(r.get(0)?),
        received_at_ms: r.get(1)?,
        environment: r.get(2)?,
        status: r.get(3)?,
        outcome: r.get(4)?,
        message_type: r.get(5)?,
        event: r.get(6)?,
        message_id: r.get(7)?,
        reason: r.get(8)?,
        node: None,
        cursor: StreamCursor::NEWEST,
    })
}

fn refusal_row(r: &rusqlite::Row) -> rusqlite::Result<StreamRow> {
    Ok(StreamRow {
        source: StreamSource::Refusal(r.get(0)?),
        received_at_ms: r.get(1)?,
        environment: r.get(2)?,
        status: "rejected".into(),
        outcome: None,
        message_type: None,
        event: Some(r.get(5)?),
        message_id: None,
        reason: Some(format!(
            "{}: {}",
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?
        )),
        node: None,
        cursor: StreamCursor::NEWEST,
    })
}

impl StoreReader {
    fn max_rowid(&self, table: &str) -> Result<i64, StoreError> {
        let sql = format!("SELECT COALESCE(MAX(id), 0) FROM {table}");
        Ok(self.conn().query_row(&sql, [], |r| r.get(0))?)
    }

    /// Rows of `sql`, whose `{filter}` becomes `filter`'s condition on `source`; `fixed` are
    /// bound first (?1…), the filter's values after them.
    fn filtered<T>(
        &self,
        sql: &str,
        fixed: &[&dyn rusqlite::ToSql],
        source: FilterSource,
        filter: &ListFilter,
        scan_floor: Option<&str>,
        row: fn(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let condition = filter_sql(Dialect::Sqlite, source, filter, fixed.len() + 1, scan_floor);
        let mut stmt = self
            .conn()
            .prepare_cached(&sql.replace("{filter}", &condition.clause))?;
        let mut params: Vec<&dyn rusqlite::ToSql> = fixed.to_vec();
        params.extend(condition.values.iter().map(|v| v as &dyn rusqlite::ToSql));
        let rows = stmt.query_map(&*params, row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// A page of messages and refused requests, newest first, starting at `top`; `filter`
    /// (free text and `field:value` terms) looks at the `FILTER_WINDOW` rows below the top.
    pub fn stream(
        &self,
        limit: usize,
        filter: &str,
        top: StreamCursor,
    ) -> Result<Vec<StreamRow>, StoreError> {
        let filter = ListFilter::parse(filter);
        let floor = top.message.min(self.max_rowid("messages")?) - FILTER_WINDOW;
        let messages = self.filtered(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id <= ?3 AND {{filter}}
                 ORDER BY id DESC LIMIT ?1"
            ),
            &[&(limit as i64), &floor, &top.message],
            FilterSource::Messages,
            &filter,
            Some("id > ?2"),
            message_row,
        )?;
        let refusals = self.filtered(
            &format!(
                "SELECT {REFUSAL_COLUMNS} FROM rejections WHERE id <= ?2 AND {{filter}}
                 ORDER BY id DESC LIMIT ?1"
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
        &self,
        filter: &str,
        from: StreamCursor,
        n: usize,
    ) -> Result<StreamCursor, StoreError> {
        let filter = ListFilter::parse(filter);
        let floor = from.message - FILTER_WINDOW;
        let messages = self.filtered(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id > ?3 AND {{filter}}
                 ORDER BY id ASC LIMIT ?1"
            ),
            &[&(n as i64), &floor, &from.message],
            FilterSource::Messages,
            &filter,
            Some("id > ?2"),
            message_row,
        )?;
        let refusals = self.filtered(
            &format!(
                "SELECT {REFUSAL_COLUMNS} FROM rejections WHERE id > ?2 AND {{filter}}
                 ORDER BY id ASC LIMIT ?1"
            ),
            &[&(n as i64), &from.refusal],
            FilterSource::Refusals,
            &filter,
            None,
            refusal_row,
        )?;
        Ok(step_newer(&messages, &refusals, from, n))
    }

    /// Find a message by messageId, event_id, request id or order_id, or else a profile by
    /// userId, anonymousId, email or phone, across the whole history (index lookups only).
    pub fn search(&self, text: &str) -> Result<Option<SearchHit>, StoreError> {
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
        let exists: Option<i64> = self
            .conn()
            .prepare_cached("SELECT 1 FROM messages WHERE message_id = ?1 LIMIT 1")?
            .query_row([text], |r| r.get(0))
            .optional()?;
        if exists.is_some() {
            return message(text.to_string(), "messageId");
        }
        if let Some(id) = self.message_id_of_event(text)? {
            return message(id, "event_id");
        }
        let by_request: Option<String> = self
            .conn()
            .prepare_cached(
                "SELECT message_id FROM messages WHERE request_id = ?1 AND message_id IS NOT NULL
                 ORDER BY position LIMIT 1",
            )?
            .query_row([text], |r| r.get(0))
            .optional()?;
        if let Some(id) = by_request {
            return message(id, "request id");
        }
        let pairs = self
            .conn()
            .prepare_cached(
                "SELECT DISTINCT environment, name FROM
                 (SELECT environment, name FROM events ORDER BY id DESC LIMIT ?1)",
            )?
            .query_map([ORDER_SEARCH_RECENT_EVENTS], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<(String, String)>, _>>()?;
        for candidate in crate::pipeline::dedup::order_event_ids(&pairs, text) {
            if let Some(id) = self.message_id_of_event(&candidate)? {
                return message(id, "order_id");
            }
        }
        if self.find_profile(text)?.is_some() {
            return Ok(Some(SearchHit::Profile { query: text.into() }));
        }
        Ok(None)
    }

    /// One refused request, to open from the stream.
    pub fn rejection(&self, id: i64) -> Result<Option<RejectionDetail>, StoreError> {
        let sql = format!("SELECT {REJECTION_COLUMNS} FROM rejections WHERE id = ?1");
        Ok(self
            .conn()
            .query_row(&sql, [id], |r| {
                Ok(RejectionDetail {
                    id: r.get(0)?,
                    received_at_ms: r.get(1)?,
                    path: r.get(2)?,
                    remote_addr: r.get(3)?,
                    user_agent: r.get(4)?,
                    account_header: r.get(5)?,
                    environment_header: r.get(6)?,
                    content_type: r.get(7)?,
                    body_bytes: r.get(8)?,
                    status_code: r.get(9)?,
                    reason_code: r.get(10)?,
                    reason: r.get(11)?,
                })
            })
            .optional()?)
    }

    /// The id ranges of messages and refused requests (two index lookups each).
    pub fn stream_extent(&self) -> Result<StreamExtent, StoreError> {
        let range = |table: &str| -> Result<Option<(i64, i64)>, StoreError> {
            // Two subqueries: SQLite takes the rowid shortcut only for a lone MIN or MAX;
            // `SELECT MIN(id), MAX(id)` scans the table (70 ms at 1M messages).
            let sql =
                format!("SELECT (SELECT MIN(id) FROM {table}), (SELECT MAX(id) FROM {table})");
            let (lo, hi): (Option<i64>, Option<i64>) = self
                .conn()
                .query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(lo.zip(hi))
        };
        Ok(StreamExtent {
            messages: range("messages")?,
            refusals: range("rejections")?,
        })
    }

    /// The newest delivery attempts, newest first; `filter` matches destination, outcome,
    /// event name, event_id or status code.
    pub fn recent_attempts(
        &self,
        limit: usize,
        filter: &str,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        self.attempts_page(limit, filter, i64::MAX)
    }

    /// A page of delivery attempts with `id <= top`, newest first (keyset paging on the
    /// primary key, so a page deep in history costs what the first does).
    pub fn attempts_page(
        &self,
        limit: usize,
        filter: &str,
        top: i64,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        let floor = top.min(self.max_rowid("delivery_attempts")?) - FILTER_WINDOW;
        self.filtered(
            &format!(
                "SELECT a.id, a.at_ms, d.destination, d.destination_event, d.event_id,
                        m.message_id, a.attempt, a.outcome, r.status_code, r.latency_ms, a.reason,
                        a.next_attempt_ms, a.request_row, d.status, d.id
                 FROM {ATTEMPT_JOINS}
                 WHERE a.id <= ?3 AND {{filter}}
                 ORDER BY a.id DESC LIMIT ?1"
            ),
            &[&(limit as i64), &floor, &top],
            FilterSource::Attempts,
            &ListFilter::parse(filter),
            Some("a.id > ?2"),
            |r| {
                Ok(AttemptRow {
                    attempt_row: r.get(0)?,
                    at_ms: r.get(1)?,
                    destination: r.get(2)?,
                    destination_event: r.get(3)?,
                    event_id: r.get(4)?,
                    message_id: r.get(5)?,
                    attempt: r.get(6)?,
                    outcome: r.get(7)?,
                    status_code: r.get(8)?,
                    latency_ms: r.get(9)?,
                    reason: r.get(10)?,
                    next_attempt_ms: r.get(11)?,
                    request_row: r.get(12)?,
                    delivery_status: r.get(13)?,
                    delivery_id: r.get(14)?,
                    node: None,
                })
            },
        )
    }

    /// The top of the page of `table` that is `n` rows newer than `from` (`i64::MAX`, the
    /// newest page, when fewer are newer).
    pub fn page_newer(
        &self,
        table: PagedTable,
        filter: &str,
        from: i64,
        n: usize,
    ) -> Result<i64, StoreError> {
        let (joins, id, source) = paged_from(table);
        let ids = self.filtered(
            &format!(
                "SELECT {id} FROM {joins} WHERE {id} > ?3 AND {{filter}} ORDER BY {id} ASC LIMIT ?1"
            ),
            &[&(n as i64), &(from - FILTER_WINDOW), &from],
            source,
            &ListFilter::parse(filter),
            Some(&format!("{id} > ?2")),
            |r| r.get::<_, i64>(0),
        )?;
        Ok(newer_top(&ids, n))
    }

    /// A page of dedup collisions with `id <= top`, newest first; `filter` matches kind,
    /// event_id and either messageId (`status:` is the kind).
    pub fn collisions_page(
        &self,
        limit: usize,
        filter: &str,
        top: i64,
    ) -> Result<Vec<StoredCollision>, StoreError> {
        let floor = top.min(self.max_rowid("collisions")?) - FILTER_WINDOW;
        self.filtered(
            &format!(
                "SELECT {COLLISION_COLUMNS} FROM {COLLISION_JOINS}
                 WHERE c.id <= ?3 AND {{filter}} ORDER BY c.id DESC LIMIT ?1"
            ),
            &[&(limit as i64), &floor, &top],
            FilterSource::Collisions,
            &ListFilter::parse(filter),
            Some("c.id > ?2"),
            collision_from_row,
        )
    }

    /// The id range of a paged list's table (position and total).
    pub fn id_range(&self, table: PagedTable) -> Result<Option<(i64, i64)>, StoreError> {
        let table = table.name();
        let (lo, hi): (Option<i64>, Option<i64>) = self.conn().query_row(
            &format!("SELECT (SELECT MIN(id) FROM {table}), (SELECT MAX(id) FROM {table})"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(lo.zip(hi))
    }

    /// Unmapped event names, most frequent first, with the suggestion for each.
    pub fn unmapped_groups(
        &self,
        limit: usize,
        filter: &str,
    ) -> Result<Vec<UnmappedGroup>, StoreError> {
        let like = format!("%{}%", filter.trim());
        // Kept up to date by the writer (migration 0012): a few hundred names, not every row.
        let mut stmt = self.conn().prepare_cached(
            "SELECT g.segment_event, g.n, g.first_ms, g.last_ms, g.environments, g.suggestion,
                    g.reason, m.message_id
             FROM unmapped_names g LEFT JOIN messages m ON m.id = g.last_row
             WHERE ?2 = '%%' OR g.segment_event LIKE ?2 OR g.suggestion LIKE ?2
             ORDER BY g.n DESC, g.last_ms DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit as i64, like], |r| {
            Ok(UnmappedGroup {
                segment_event: r.get(0)?,
                count: r.get(1)?,
                first_seen_ms: r.get(2)?,
                last_seen_ms: r.get(3)?,
                environments: sorted_list(&r.get::<_, String>(4)?),
                suggestion: r.get(5)?,
                reason: r.get(6)?,
                example_message_id: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Diagnostics for each destination.
    pub fn destination_stats(
        &self,
        destinations: &[String],
        now_ms: i64,
    ) -> Result<Vec<DestinationStats>, StoreError> {
        let mut out = Vec::with_capacity(destinations.len());
        let routes_floor = self.max_rowid("events")? - FILTER_WINDOW;
        for name in destinations {
            let mut s = DestinationStats {
                destination: name.clone(),
                ..DestinationStats::default()
            };
            let queue = self.queue_counts(name)?;
            s.retrying = queue.pending;
            s.in_flight = queue.in_flight;
            s.dead = queue.dead;
            s.delivered = queue.delivered;
            s.blocked_consent = self.conn().prepare_cached(
                "SELECT COUNT(*) FROM routes WHERE destination = ?1 AND verdict = 'blocked_consent' AND event_row > ?2",
            )?
            .query_row(params![name, routes_floor], |r| r.get(0))?;
            s.paused = self.destination_pause(name)?;
            // The last hour, minute by minute, as the writer added it up.
            let since = MinuteCounts::start_ms(now_ms);
            let minutes: Vec<MinuteTally> = self
                .conn()
                .prepare_cached(
                    "SELECT minute_ms, requests, succeeded, latency_10ms, latency_50ms,
                         latency_100ms, latency_250ms, latency_500ms, latency_1s, latency_5s,
                         latency_slower, delivered, retried, dead
                     FROM destination_minutes WHERE destination = ?1 AND minute_ms >= ?2",
                )?
                .query_map(params![name, since], |r| {
                    let mut latency = [0i64; LATENCY_BUCKETS];
                    for (i, slot) in latency.iter_mut().enumerate() {
                        *slot = r.get(3 + i)?;
                    }
                    Ok(MinuteTally {
                        minute_ms: r.get(0)?,
                        requests: r.get(1)?,
                        succeeded: r.get(2)?,
                        latency,
                        delivered: r.get(11)?,
                        retried: r.get(12)?,
                        dead: r.get(13)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            let errors: Vec<(String, i64, i64, String)> = self
                .conn()
                .prepare_cached(
                    "SELECT kind, SUM(count), MAX(last_at_ms),
                         (SELECT e2.last_reason FROM destination_minute_errors e2
                          WHERE e2.destination = e.destination AND e2.kind = e.kind
                            AND e2.minute_ms >= ?2
                          ORDER BY e2.last_at_ms DESC LIMIT 1)
                     FROM destination_minute_errors e
                     WHERE destination = ?1 AND minute_ms >= ?2 GROUP BY kind",
                )?
                .query_map(params![name, since], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<_, _>>()?;
            // The last failure, however long ago (its minute may be past the hour).
            s.last_error = self
                .conn()
                .prepare_cached(
                    "SELECT last_at_ms, last_reason FROM destination_minute_errors
                     WHERE destination = ?1 ORDER BY minute_ms DESC, last_at_ms DESC LIMIT 1",
                )?
                .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            summarise_minutes(&mut s, &minutes, &errors, now_ms);
            (s.coverage, s.match_quality) = self.coverage(name, now_ms)?;
            out.push(s);
        }
        Ok(out)
    }

    pub fn queue_counts(&self, destination: &str) -> Result<QueueCounts, StoreError> {
        let count = |sql: &str| -> Result<Option<i64>, StoreError> {
            Ok(self
                .conn()
                .prepare_cached(sql)?
                .query_row([destination], |r| r.get::<_, Option<i64>>(0))
                .optional()?
                .flatten())
        };
        Ok(QueueCounts {
            pending: count(
                "SELECT COUNT(*) FROM deliveries WHERE destination = ?1 AND status = 'pending'",
            )?
            .unwrap_or(0),
            in_flight: count(
                "SELECT COUNT(*) FROM deliveries INDEXED BY deliveries_leased
                 WHERE status = 'in_flight' AND destination = ?1",
            )?
            .unwrap_or(0),
            dead: count(
                "SELECT COUNT(*) FROM deliveries WHERE destination = ?1 AND status = 'dead'",
            )?
            .unwrap_or(0),
            delivered: count("SELECT delivered FROM destination_totals WHERE destination = ?1")?
                .unwrap_or(0),
            // The ready index is ordered by due time; the oldest by creation is among the
            // first due (a row only moves later when retried), close enough for an age alarm
            // and one index step instead of a scan.
            oldest_pending_ms: count(
                "SELECT created_at_ms FROM deliveries WHERE destination = ?1 AND status = 'pending'
                 ORDER BY next_attempt_ms LIMIT 1",
            )?,
        })
    }

    /// Time from receipt to delivery (ms) of each delivery a destination completed after
    /// attempt row `after_attempt_row`: what an engineer means by "how long until it reached Meta".
    pub fn delivered_latencies(
        &self,
        destination: &str,
        after_attempt_row: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT a.at_ms - d.created_at_ms FROM delivery_attempts a
             JOIN deliveries d ON d.id = a.delivery_id
             WHERE a.id > ?2 AND a.outcome = 'delivered' AND d.destination = ?1",
        )?;
        let rows = stmt.query_map(params![destination, after_attempt_row], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest attempt row (a mark to measure from).
    pub fn last_attempt_row(&self) -> Result<i64, StoreError> {
        self.max_rowid("delivery_attempts")
    }

    /// Bytes on disk per table, indexes included (SQLite's dbstat), largest first.
    pub fn storage_by_table(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT COALESCE(m.tbl_name, s.name), SUM(s.pgsize) FROM dbstat s
             LEFT JOIN sqlite_schema m ON m.name = s.name
             GROUP BY 1 ORDER BY 2 DESC",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Identifier coverage over the destination's last 500 events.
    fn coverage(
        &self,
        destination: &str,
        now_ms: i64,
    ) -> Result<(Coverage, MatchSummary), StoreError> {
        let mut stmt = self.conn().prepare_cached(
            // Newest deliveries first by rowid (not by the destination index, which would sort
            // every delivery the destination ever had).
            "SELECT e.canonical, d.kind, d.created_at_ms FROM deliveries d JOIN events e ON e.id = d.event_row
             WHERE +d.destination = ?1 AND d.id > ?2 ORDER BY d.id DESC LIMIT 500",
        )?;
        let floor = self.max_rowid("deliveries")? - FILTER_WINDOW;
        let mut c = Coverage::default();
        let mut q = MatchSummary::default();
        for row in stmt.query_map(params![destination, floor], |r| {
            Ok((
                r.get::<_, crate::store::codec::Unpacked>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })? {
            let (canonical, kind, created) = row?;
            c.add(&canonical.0);
            q.add(&kind, created, &canonical.0, now_ms);
        }
        Ok((c, q))
    }

    /// Find a profile by userId, anonymousId, email or phone.
    pub fn find_profile(&self, query: &str) -> Result<Option<StoredProfile>, StoreError> {
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
        &self,
        profile_id: i64,
        limit: usize,
    ) -> Result<Vec<ProfileEvent>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT event_id, name, message_id, event_time_ms FROM events WHERE profile_id = ?1
             ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![profile_id, limit as i64], |r| {
            Ok(ProfileEvent {
                event_id: r.get(0)?,
                name: r.get(1)?,
                message_id: r.get(2)?,
                event_time_ms: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The messageId of the newest canonical event (what the diff pane shows by default).
    pub fn latest_event_message_id(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT message_id FROM events ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Bytes on disk: (the database file, its write-ahead log).
    pub fn storage_bytes(&self) -> Result<(u64, u64), StoreError> {
        let Some(path) = self.conn().path().filter(|p| !p.is_empty()) else {
            return Ok((0, 0));
        };
        let size = |p: &str| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        Ok((size(path), size(&format!("{path}-wal"))))
    }

    /// The newest forget requests, as audited.
    pub fn privacy_requests(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::store::model::privacy::PrivacyRecord>, StoreError> {
        Ok(super::privacy_audit::recent(self.conn(), limit)?)
    }

    /// Open alerts first, then the newest resolved ones.
    pub fn alerts(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::store::model::alerts::StoredAlert>, StoreError> {
        Ok(super::alerts::recent(self.conn(), limit)?)
    }

    /// Totals for the header: messages, events, deliveries delivered and dead.
    pub fn totals(&self) -> Result<(i64, i64), StoreError> {
        let messages = self.max_rowid("messages")?;
        let events = self.max_rowid("events")?;
        Ok((messages, events))
    }
}

impl StoreReader {
    pub fn demo_summary(&self) -> Result<DemoSummary, StoreError> {
        let count = |sql: &str| -> Result<i64, StoreError> {
            Ok(self.conn().query_row(sql, [], |r| r.get(0))?)
        };
        Ok(DemoSummary {
            received: count("SELECT COUNT(*) FROM messages")?,
            accepted: count("SELECT COUNT(*) FROM messages WHERE status = 'accepted'")?,
            rejected: count("SELECT COUNT(*) FROM rejections")?,
            invalid: count("SELECT COUNT(*) FROM messages WHERE status = 'invalid'")?,
            mapped: count("SELECT COUNT(*) FROM messages WHERE outcome IN ('mapped', 'replayed')")?,
            unmapped: count("SELECT COUNT(*) FROM messages WHERE outcome = 'unmapped'")?,
            identify: count("SELECT COUNT(*) FROM messages WHERE outcome = 'identify'")?,
            duplicates: count("SELECT COUNT(*) FROM messages WHERE status = 'duplicate'")?,
            collisions: count("SELECT COUNT(*) FROM collisions")?,
            consent_blocked: count(
                "SELECT COUNT(*) FROM routes WHERE verdict = 'blocked_consent'",
            )?,
            delivered: count("SELECT COUNT(*) FROM deliveries WHERE status = 'delivered'")?,
            retried: count("SELECT COUNT(*) FROM delivery_attempts WHERE outcome = 'retry'")?,
            dead_lettered: count("SELECT COUNT(*) FROM deliveries WHERE status = 'dead'")?,
            pending: count(
                "SELECT COUNT(*) FROM deliveries WHERE status IN ('pending', 'in_flight')",
            )?,
        })
    }
}

/// A comma-separated list in order, as PostgreSQL's `string_agg(DISTINCT …)` gives it (the
/// writer appends environments as they are first seen).
fn sorted_list(list: &str) -> String {
    let mut items: Vec<&str> = list.split(',').filter(|s| !s.is_empty()).collect();
    items.sort_unstable();
    items.join(",")
}
