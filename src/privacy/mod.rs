//! Forgetting a person (`tracklayer forget`, `POST /privacy/forget`): resolve whom the request
//! names through the identity graph, suppress every identifier of theirs (as keyed hashes), walk
//! the stored messages in ranges deleting the person's rows, delete their profiles, warehouse
//! rows and identity graph, queue the deletions platforms take, and record it all without
//! personal data. Each range is its own short transaction, so ingest waits at most one range.
//!
//! The decisions are pure (`pipeline::privacy`, `destinations::privacy`); the store only reads
//! and writes sets (`store::privacy::PrivacyStore`).

pub mod forward;

use serde::Serialize;

use crate::destinations::privacy::{plan, NotForwarded};
use crate::destinations::{Destination, Settings};
use crate::pipeline::identity::Identifier;
use crate::pipeline::privacy::{suppression_hash, whose, ForgetError, ForgetRequest, Person};
use crate::store::model::privacy::{
    Deleted, NewPrivacyRequest, PersonKeys, PrivacyRecord, Suppression,
};
use crate::store::privacy::PrivacyStore;
use crate::store::warehouse::WarehouseForget;
use crate::store::{now_ms, StoreError, StoreLocation};

/// Messages per range: a range is one transaction, short enough that a group of ingest waits
/// at most one of them.
pub const RANGE_ROWS: i64 = 2_000;
/// The pause after each range: the node's writer looks for the lock every millisecond.
const RANGE_PAUSE: std::time::Duration = std::time::Duration::from_millis(3);

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error("{0}")]
    Request(#[from] ForgetError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One forget (or undo) as asked.
#[derive(Debug, Clone)]
pub struct Order {
    pub request: ForgetRequest,
    pub environment: String,
    /// `cli:user@host`, or `http:<request id> from <peer>`.
    pub who: String,
    pub request_id: String,
    pub undo: bool,
}

/// What a forget did, for the CLI's and the endpoint's answer. No personal data: identifiers
/// appear as their kinds and the first characters of their keyed hashes.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub request_id: String,
    pub action: &'static str,
    /// `done`, `unknown_person` (nothing known of them: nothing changed), `already_forgotten`,
    /// `lifted` or `not_suppressed` (an undo that found nothing to lift).
    pub status: &'static str,
    pub environment: String,
    pub identifiers: Vec<HashedId>,
    pub deleted: Deleted,
    pub warehouse_rows: i64,
    /// Deletions queued for platforms (their outcome: `tracklayer inspect <request_id>`).
    pub forwarded: Vec<String>,
    pub not_forwarded: Vec<NotForwarded>,
    pub message: String,
    /// How long it took, and its longest single transaction (what ingest may have waited).
    pub elapsed_ms: u64,
    pub longest_step_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HashedId {
    pub kind: &'static str,
    pub hash: String,
}

fn hashed(key: &[u8], ids: &[Identifier]) -> Vec<(Identifier, Vec<u8>)> {
    ids.iter()
        .map(|id| (id.clone(), suppression_hash(key, id)))
        .collect()
}

fn shown(hashes: &[(Identifier, Vec<u8>)]) -> Vec<HashedId> {
    hashes
        .iter()
        .map(|((kind, _), h)| HashedId {
            kind: kind.as_str(),
            hash: hex::encode(&h[..8.min(h.len())]),
        })
        .collect()
}

fn audit_identifiers(hashes: &[(Identifier, Vec<u8>)]) -> String {
    serde_json::to_string(
        &hashes
            .iter()
            .map(
                |((kind, _), h)| serde_json::json!({"kind": kind.as_str(), "hash": hex::encode(h)}),
            )
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|_| "[]".into())
}

/// Run a forget (or undo) to the end on this thread. `destinations` are the configured ones
/// (forwards and the warehouse); `default_country` reads phones written without a country code.
pub fn run(
    location: &StoreLocation,
    order: &Order,
    destinations: &[Destination],
    default_country: Option<&str>,
) -> Result<Report, PrivacyError> {
    let requested = order.request.identifiers(default_country)?;
    let mut store = location.privacy()?;
    store.exclusive()?;
    let key = store.key()?;
    if order.undo {
        return undo(store.as_mut(), order, &key, &requested);
    }
    let owners = store.owners(&requested)?;
    let person = whose(&requested, &owners)?;
    let received_at_ms = now_ms();
    let requested_hashes = hashed(&key, &requested);
    let mut report = Report {
        request_id: order.request_id.clone(),
        action: "forget",
        status: "done",
        environment: order.environment.clone(),
        identifiers: shown(&requested_hashes),
        deleted: Deleted::default(),
        warehouse_rows: 0,
        forwarded: Vec::new(),
        not_forwarded: Vec::new(),
        message: String::new(),
        elapsed_ms: 0,
        longest_step_ms: 0,
    };
    let started = std::time::Instant::now();
    let mut longest = std::time::Duration::ZERO;
    let mut timed = |step: std::time::Instant| longest = longest.max(step.elapsed());
    let audit = |status: &'static str, hashes: &[(Identifier, Vec<u8>)]| NewPrivacyRequest {
        request_id: order.request_id.clone(),
        action: "forget",
        who: order.who.clone(),
        environment: order.environment.clone(),
        received_at_ms,
        identifiers: audit_identifiers(hashes),
        status,
    };
    let profile_id = match person {
        Person::Known { profile_id } => profile_id,
        Person::Unknown => {
            let wanted: Vec<Vec<u8>> = requested_hashes.iter().map(|(_, h)| h.clone()).collect();
            let suppressed = store.suppressed(&wanted)?;
            let status = if suppressed.is_empty() {
                "unknown_person"
            } else {
                "already_forgotten"
            };
            store.begin(&audit(status, &requested_hashes), &[])?;
            report.status = status;
            report.message = if suppressed.is_empty() {
                "no stored message, profile or identifier matches: nothing was deleted or suppressed"
                    .into()
            } else {
                "this person was forgotten before: nothing of them is stored, and later messages stay suppressed"
                    .into()
            };
            return Ok(report);
        }
    };
    let keys = store.person(profile_id)?;
    let mut all: Vec<Identifier> = keys.identifiers.clone();
    all.extend(requested.iter().cloned());
    all.sort();
    all.dedup();
    let all_hashes = hashed(&key, &all);
    report.identifiers = shown(&all_hashes);
    let suppress: Vec<Suppression> = all_hashes
        .iter()
        .map(|((kind, _), h)| Suppression {
            hash: h.clone(),
            kind: kind.as_str(),
        })
        .collect();
    // Suppressed first: from this commit on, no node stores a new message of theirs, so the
    // walk below cannot miss one that arrives while it runs.
    let step = std::time::Instant::now();
    let row = store.begin(&audit("deleting", &all_hashes), &suppress)?;
    timed(step);
    let person = PersonKeys {
        identifiers: all.clone(),
        ..keys
    };
    let mut event_ids = Vec::new();
    // Newest first: a duplicate always comes after what it duplicates (a foreign key on a
    // fleet's database), so it goes first. Then once more over what arrived meanwhile: on a
    // fleet, a group another node had loaded before the suppression committed may commit a
    // message of theirs after the walk began.
    let mut walked_to = 0;
    for _ in 0..2 {
        let top = store.last_message_row()? + 1;
        let mut upper = top;
        while upper > walked_to {
            let lower = (upper - RANGE_ROWS).max(walked_to);
            let step = std::time::Instant::now();
            let chunk = store.forget_messages(&person, lower, upper)?;
            timed(step);
            // A moment between ranges, so a writer waiting for the lock takes it first.
            std::thread::sleep(RANGE_PAUSE);
            report.deleted.merge(&chunk.deleted);
            event_ids.extend(chunk.event_ids);
            upper = lower;
        }
        walked_to = top;
    }
    report.warehouse_rows = forget_in_warehouses(destinations, &person, event_ids);
    let serving: Vec<&Destination> = destinations.iter().collect();
    let (forwards, not_forwarded) = plan(
        &serving,
        &all,
        &order.request_id,
        &order.environment,
        &crate::segment::format_ms(received_at_ms),
    );
    let mut counted = report.deleted.clone();
    counted.add("warehouse", report.warehouse_rows);
    let step = std::time::Instant::now();
    let profiles = store.forget_profiles(row, &person, &counted, &forwards, now_ms())?;
    timed(step);
    report.deleted.merge(&profiles);
    let step = std::time::Instant::now();
    store.compact()?;
    timed(step);
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report.longest_step_ms = longest.as_millis() as u64;
    report.forwarded = forwards
        .iter()
        .map(|f| format!("{} ({})", f.destination, f.kind))
        .collect();
    report.not_forwarded = not_forwarded;
    report.message = format!(
        "forgot profile {profile_id}: {} rows deleted, {} identifiers suppressed",
        report.deleted.total() + report.warehouse_rows,
        all.len()
    );
    Ok(report)
}

fn undo(
    store: &mut dyn PrivacyStore,
    order: &Order,
    key: &[u8],
    requested: &[Identifier],
) -> Result<Report, PrivacyError> {
    let hashes = hashed(key, requested);
    let request = NewPrivacyRequest {
        request_id: order.request_id.clone(),
        action: "undo",
        who: order.who.clone(),
        environment: order.environment.clone(),
        received_at_ms: now_ms(),
        identifiers: audit_identifiers(&hashes),
        status: "lifted",
    };
    let wanted: Vec<Vec<u8>> = hashes.iter().map(|(_, h)| h.clone()).collect();
    let lifted = store.lift(&request, &wanted)?;
    Ok(Report {
        request_id: order.request_id.clone(),
        action: "undo",
        status: if lifted > 0 {
            "lifted"
        } else {
            "not_suppressed"
        },
        environment: order.environment.clone(),
        identifiers: shown(&hashes),
        deleted: Deleted::default(),
        warehouse_rows: 0,
        forwarded: Vec::new(),
        not_forwarded: Vec::new(),
        elapsed_ms: 0,
        longest_step_ms: 0,
        message: if lifted > 0 {
            format!("{lifted} identifier(s) no longer suppressed: later messages are stored and delivered again (what was deleted stays deleted)")
        } else {
            "none of these identifiers was suppressed: nothing changed".into()
        },
    })
}

/// Delete the person's rows from every warehouse destination's table.
fn forget_in_warehouses(
    destinations: &[Destination],
    person: &PersonKeys,
    event_ids: Vec<String>,
) -> i64 {
    let forget = WarehouseForget {
        event_ids,
        user_ids: person.values(crate::pipeline::identity::IdKind::UserId),
        anonymous_ids: person.values(crate::pipeline::identity::IdKind::AnonymousId),
    };
    let mut rows = 0;
    for d in destinations {
        let Settings::Warehouse(target) = &d.settings else {
            continue;
        };
        match crate::store::warehouse::open(target).and_then(|mut sink| sink.forget(&forget)) {
            Ok(n) => rows += n as i64,
            Err(e) => {
                tracing::error!(destination = %d.name, error = %e, "forget: the warehouse rows could not be deleted")
            }
        }
    }
    rows
}

/// The audit, newest first.
pub fn history(location: &StoreLocation, limit: usize) -> Result<Vec<PrivacyRecord>, StoreError> {
    location.privacy()?.requests(limit)
}

/// One audited request.
pub fn record(
    location: &StoreLocation,
    request_id: &str,
) -> Result<Option<PrivacyRecord>, StoreError> {
    location.privacy()?.request(request_id)
}

/// A new request id: `fg_` and the time, unique enough per node and readable in a list.
pub fn new_request_id() -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!(
        "fg_{}{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S"),
        hex::encode(bytes)
    )
}
