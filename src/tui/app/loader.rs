//! What the dashboard asks the loader thread for, and what comes back: the query, one load of
//! the panes' data from a store, and the operator actions it performs.

use super::*;

/// What the loader is asked to fetch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    pub pane: Option<usize>,
    pub filter: String,
    /// The message whose trace the diff pane shows (None: the newest event).
    pub trace_of: Option<String>,
    /// The HTTP request behind the selected attempt (deliveries pane detail).
    pub request_row: Option<i64>,
    /// The refused request opened from the stream.
    pub rejection: Option<i64>,
    /// The selected collision (raw messages for the side-by-side).
    pub collision: Option<i64>,
    /// The test-send call being walked: its messageId and what the ingest answered.
    pub test_call: Option<(String, SendResult)>,
    /// How the destinations take the test (for the consent and payload stages).
    pub test_plan: TestPlan,
    /// The page's top on a paged pane (stream, attempts; `None`: follow the newest).
    pub page_top: Option<StreamCursor>,
    /// Move the page before loading it.
    pub page_seek: Option<Seek>,
    /// Search the whole history for this (answered in [`Snapshot::search`]).
    pub search: Option<String>,
    /// An operator action to perform once (by its sequence number), and who asks.
    pub action: Option<(u64, OperatorAction, String)>,
    /// Which state of the app asked: answers to older questions are dropped.
    pub generation: u64,
}

/// A move of a paged pane's page (stream, attempts) the loader resolves against the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    /// `n` rows newer than the page starting here.
    Newer(StreamCursor, usize),
    /// The oldest page.
    Oldest,
}

/// Everything the panes draw, loaded off the UI thread.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The [`Query::generation`] it answers.
    pub generation: u64,
    pub loaded_at_ms: i64,
    pub totals: (i64, i64),
    /// The fleet's nodes (empty on SQLite).
    pub nodes: Vec<FleetNode>,
    /// Open alerts first, then the newest resolved (the banner and the alerts pane).
    pub alerts: Vec<StoredAlert>,
    /// The newest forget requests (the alerts pane's audit list; loaded with that pane).
    pub privacy: Vec<crate::store::model::privacy::PrivacyRecord>,
    pub stream: Vec<StreamRow>,
    /// The id ranges of the paged pane loaded (position and total).
    pub extent: StreamExtent,
    /// Where the loaded page starts (resolved: never `NEWEST`).
    pub page_top: Option<StreamCursor>,
    pub attempts: Vec<AttemptRow>,
    pub request: Option<StoredHttpRequest>,
    pub rejection: Option<RejectionDetail>,
    /// The outcome of [`Query::action`]: its sequence number and what it did (or why not).
    pub action_done: Option<(u64, Result<String, String>)>,
    /// The answer to [`Query::search`]: what was searched and what it found.
    pub search: Option<(String, Option<SearchHit>)>,
    pub trace: Option<MessageTrace>,
    pub unmapped: Vec<UnmappedGroup>,
    pub destinations: Vec<DestinationStats>,
    pub collisions: Vec<StoredCollision>,
    /// Raw messages of the selected collision: (first arrival, later arrival).
    pub collision_raws: Option<(Value, Value)>,
    pub profile: Option<StoredProfile>,
    pub profile_events: Vec<ProfileEvent>,
    /// The stages of the test-send call being walked.
    pub test_stages: Vec<Stage>,
    pub error: Option<String>,
}

/// Rows per loaded page.
pub const ROWS: usize = 500;
/// Alerts are few (one row per firing); the pane keeps this many of the newest.
const ALERT_ROWS: usize = 200;
/// Forget requests the alerts pane lists.
const PRIVACY_ROWS: usize = 20;

/// Perform the operator action `query` carries, once: `last` is the sequence number of the
/// last one performed. Runs on the loader thread, with its own write connection.
pub fn act(
    store: &crate::store::StoreLocation,
    query: &Query,
    last: &mut u64,
) -> Option<(u64, Result<String, String>)> {
    let (seq, action, who) = query.action.as_ref()?;
    if *seq <= *last {
        return None;
    }
    *last = *seq;
    Some((
        *seq,
        store
            .operate(action, who)
            .map(|affected| action.done(affected))
            .map_err(|e| format!("{} failed: {e}", action.name())),
    ))
}

/// Where the page of a list paged by one id starts, after the query's seek, as concrete ids
/// (so a paused page does not take in rows that arrive later), with the table's id range.
fn resolve_page(
    reader: &mut dyn DashboardReader,
    table: PagedTable,
    query: &Query,
) -> Result<(StreamExtent, StreamCursor), StoreError> {
    let extent = StreamExtent {
        messages: reader.id_range(table)?,
        refusals: None,
    };
    let f = &query.filter;
    let top = match query.page_seek {
        Some(Seek::Newer(from, n)) => reader.page_newer(table, f, from.message, n)?,
        Some(Seek::Oldest) => reader.page_newer(table, f, extent.below_oldest().message, ROWS)?,
        None => query.page_top.unwrap_or(StreamCursor::NEWEST).message,
    };
    let top = StreamCursor {
        message: top.min(extent.messages.map_or(0, |(_, hi)| hi)),
        refusal: 0,
    };
    Ok((extent, top))
}

/// Load what `query` asks for. Runs on the loader thread.
pub fn load(
    reader: &mut dyn DashboardReader,
    query: &Query,
    destinations: &[String],
    now_ms: i64,
) -> Snapshot {
    let mut snap = Snapshot {
        generation: query.generation,
        loaded_at_ms: now_ms,
        ..Snapshot::default()
    };
    let result: Result<(), StoreError> = (|| {
        snap.totals = reader.totals()?;
        snap.nodes = reader.nodes()?;
        snap.alerts = reader.alerts(ALERT_ROWS)?;
        if let Some(text) = &query.search {
            snap.search = Some((text.clone(), reader.search(text)?));
        }
        if query.pane == Some(Pane::ALL.len() - 1) {
            snap.privacy = reader.privacy_requests(PRIVACY_ROWS)?;
        }
        if query.pane == Some(Pane::ALL.len() - 1) && !query.filter.is_empty() {
            let f = query.filter.as_str();
            snap.alerts
                .retain(|a| a.rule.contains(f) || a.subject.contains(f) || a.state.contains(f));
        }
        match query.pane.map(|i| Pane::ALL[i.min(Pane::ALL.len() - 1)]) {
            Some(Pane::Stream) | None => {
                let extent = reader.stream_extent()?;
                let top = match query.page_seek {
                    Some(Seek::Newer(from, n)) => reader.stream_newer(&query.filter, from, n)?,
                    Some(Seek::Oldest) => {
                        reader.stream_newer(&query.filter, extent.below_oldest(), ROWS)?
                    }
                    None => query.page_top.unwrap_or(StreamCursor::NEWEST),
                };
                // Concrete ids, so a paused page does not take in rows that arrive later.
                let top = StreamCursor {
                    message: top.message.min(extent.messages.map_or(0, |(_, hi)| hi)),
                    refusal: top.refusal.min(extent.refusals.map_or(0, |(_, hi)| hi)),
                };
                snap.stream = reader.stream(ROWS, &query.filter, top)?;
                if let Some(id) = query.rejection {
                    snap.rejection = reader.rejection(id)?;
                }
                snap.extent = extent;
                snap.page_top = Some(top);
            }
            Some(Pane::Deliveries) => {
                let (extent, top) = resolve_page(reader, PagedTable::Attempts, query)?;
                snap.attempts = reader.attempts_page(ROWS, &query.filter, top.message)?;
                snap.extent = extent;
                snap.page_top = Some(top);
                if let Some(row) = query.request_row {
                    snap.request = reader.http_request(row)?;
                }
            }
            Some(Pane::Diff) => {
                let id = match &query.trace_of {
                    Some(id) => Some(id.clone()),
                    None => reader.latest_event_message_id()?,
                };
                if let Some(id) = id {
                    snap.trace = reader.trace(&id)?;
                }
            }
            Some(Pane::Unmapped) => snap.unmapped = reader.unmapped_groups(ROWS, &query.filter)?,
            Some(Pane::Destinations) => {
                let names: Vec<String> = destinations
                    .iter()
                    .filter(|d| query.filter.is_empty() || d.contains(query.filter.as_str()))
                    .cloned()
                    .collect();
                snap.destinations = reader.destination_stats(&names, now_ms)?;
                // A breaker's pause past its end holds nothing back (its row waits for a probe
                // that an empty queue never makes): not shown, nor resumed, as paused.
                for d in &mut snap.destinations {
                    d.paused = d.paused.take().filter(|p| p.in_force(now_ms));
                }
            }
            Some(Pane::Collisions) => {
                let (extent, top) = resolve_page(reader, PagedTable::Collisions, query)?;
                snap.collisions = reader.collisions_page(ROWS, &query.filter, top.message)?;
                snap.extent = extent;
                snap.page_top = Some(top);
                let selected = query
                    .collision
                    .and_then(|id| snap.collisions.iter().find(|c| c.id == id))
                    .or(snap.collisions.first());
                if let Some(c) = selected {
                    let mut raw_of = |row: i64| -> Result<Value, StoreError> {
                        Ok(reader
                            .message_raw(row)?
                            .and_then(|raw| serde_json::from_slice(&raw).ok())
                            .unwrap_or(Value::Null))
                    };
                    snap.collision_raws =
                        Some((raw_of(c.winner_message_row)?, raw_of(c.message_row)?));
                }
            }
            Some(Pane::TestSend) => {
                if let Some((message_id, sent)) = &query.test_call {
                    let trace = if sent.status < 300 {
                        reader.trace(message_id)?
                    } else {
                        None
                    };
                    snap.test_stages = testsend::stages(sent, trace.as_ref(), &query.test_plan);
                }
            }
            Some(Pane::Alerts) => {}
            Some(Pane::Profiles) => {
                snap.profile = reader.find_profile(&query.filter)?;
                if let Some(p) = &snap.profile {
                    snap.profile_events = reader.events_of_profile(p.id, 20)?;
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        snap.error = Some(e.to_string());
    }
    snap
}
