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
use std::collections::BTreeSet;

use crate::pipeline::identifier::{normal_email, normal_phone, spells_out};
use crate::pipeline::identity::{IdKind, Identifier};
use crate::pipeline::privacy::{
    covered, whose, ForgetError, ForgetRequest, HashedId, Person, Suppressor,
};
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
    #[error("this signed request was used before: sign each request anew (a replay is refused)")]
    Replayed,
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
    /// A signed HTTP request is taken once: its digest, kept until its signature expires.
    pub once: Option<SignedOnce>,
}

/// What identifies one signed request, and until when it could be replayed.
#[derive(Debug, Clone)]
pub struct SignedOnce {
    pub digest: Vec<u8>,
    pub expires_at_ms: i64,
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
    pub identifiers: Vec<ShownId>,
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
pub struct ShownId {
    pub kind: &'static str,
    pub hash: String,
}

impl Report {
    fn new(order: &Order, action: &'static str, ids: &BTreeSet<HashedId>) -> Report {
        Report {
            request_id: order.request_id.clone(),
            action,
            status: "done",
            environment: order.environment.clone(),
            identifiers: shown(ids),
            deleted: Deleted::default(),
            warehouse_rows: 0,
            forwarded: Vec::new(),
            not_forwarded: Vec::new(),
            message: String::new(),
            elapsed_ms: 0,
            longest_step_ms: 0,
        }
    }
}

fn hashed<'a>(
    suppressor: &Suppressor,
    ids: impl IntoIterator<Item = &'a Identifier>,
) -> BTreeSet<HashedId> {
    ids.into_iter()
        .map(|id| HashedId::of(suppressor, id))
        .collect()
}

fn shown(ids: &BTreeSet<HashedId>) -> Vec<ShownId> {
    ids.iter()
        .map(|id| ShownId {
            kind: id.kind.as_str(),
            hash: hex::encode(&id.hash[..8.min(id.hash.len())]),
        })
        .collect()
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
    if let Some(once) = &order.once {
        if !store.first_use(&once.digest, once.expires_at_ms, now_ms())? {
            return Err(PrivacyError::Replayed);
        }
    }
    let result = forget_or_undo(
        store.as_mut(),
        order,
        &requested,
        destinations,
        default_country,
    );
    if let (Err(PrivacyError::Store(_)), Some(once)) = (&result, &order.once) {
        // Nothing was finished: the same signed request may come again (a client's retry).
        let _ = store.unuse(&once.digest);
    }
    result
}

fn forget_or_undo(
    store: &mut dyn PrivacyStore,
    order: &Order,
    requested: &[Identifier],
    destinations: &[Destination],
    default_country: Option<&str>,
) -> Result<Report, PrivacyError> {
    let suppressor = Suppressor::new(&store.key()?);
    let audits: Vec<Vec<HashedId>> = store
        .forget_audits()?
        .iter()
        .map(|json| HashedId::parse_list(json))
        .collect();
    if order.undo {
        return undo(store, order, &suppressor, requested, &audits);
    }
    let owners = store.owners(requested)?;
    let mut person = match whose(requested, &owners)? {
        Person::Known { profile_id } => store.person(profile_id)?,
        Person::Unknown => PersonKeys::default(),
    };
    let covering = reach(store, &suppressor, requested, &audits, &mut person)?;
    let received_at_ms = now_ms();
    let audit = |status: &'static str, ids: &BTreeSet<HashedId>| NewPrivacyRequest {
        request_id: order.request_id.clone(),
        action: "forget",
        who: order.who.clone(),
        environment: order.environment.clone(),
        received_at_ms,
        identifiers: HashedId::list_json(ids),
        status,
    };
    let mut report = Report::new(order, "forget", &covering);
    let suppress: Vec<Suppression> = covering
        .iter()
        .map(|id| Suppression {
            hash: id.hash.clone(),
            kind: id.kind.as_str(),
        })
        .collect();
    if person.profile_ids.is_empty() {
        // Nobody stored: what earlier forgets recorded of them decides.
        let recorded: Vec<Vec<u8>> = covering
            .iter()
            .filter(|id| audits.iter().any(|audit| audit.contains(id)))
            .map(|id| id.hash.clone())
            .collect();
        let suppressed = store.suppressed(&recorded)?;
        let (status, message, suppress) = if recorded.is_empty() {
            ("unknown_person", "no stored message, profile or identifier matches: nothing was deleted or suppressed", &[][..])
        } else if suppressed.len() == recorded.len() {
            ("already_forgotten", "this person was forgotten before: nothing of them is stored, and later messages stay suppressed", &suppress[..])
        } else {
            ("done", "this person was forgotten before and their suppression lifted since; nothing of them was stored in between: every identifier the earlier forget reached is suppressed again", &suppress[..])
        };
        store.begin(&audit(status, &covering), suppress)?;
        report.status = status;
        report.message = message.into();
        return Ok(report);
    }
    let started = std::time::Instant::now();
    let mut longest = std::time::Duration::ZERO;
    let mut timed = |step: std::time::Instant| longest = longest.max(step.elapsed());
    // Suppressed first: from this commit on, no node stores a new message of theirs, so the
    // walk below cannot miss one that arrives while it runs.
    let step = std::time::Instant::now();
    let row = store.begin(&audit("deleting", &covering), &suppress)?;
    timed(step);
    let spelling = Spellings::of(&person.identifiers, default_country);
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
            let spelled = spelling.rows(store, lower, upper)?;
            let step = std::time::Instant::now();
            let chunk = store.forget_messages(&person, lower, upper, &spelled)?;
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
        &person.identifiers,
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
        "forgot profile {}: {} rows deleted, {} identifiers suppressed",
        person
            .profile_ids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        report.deleted.total() + report.warehouse_rows,
        covering.len()
    );
    Ok(report)
}

/// Everyone the request reaches: the profile it names (already in `person`), and every
/// identifier an earlier forget recorded together with any of theirs. An identifier known only
/// by its keyed hash (an undo lifted it; the graph has linked it since to a profile of its own)
/// is found by hashing the graph's identifiers, and its profile joins `person`. Returns every
/// keyed identifier the forget covers.
fn reach(
    store: &mut dyn PrivacyStore,
    suppressor: &Suppressor,
    requested: &[Identifier],
    audits: &[Vec<HashedId>],
    person: &mut PersonKeys,
) -> Result<BTreeSet<HashedId>, StoreError> {
    loop {
        let known = hashed(suppressor, requested.iter().chain(&person.identifiers));
        let covering = covered(&known, audits);
        let unresolved: BTreeSet<&Vec<u8>> =
            covering.difference(&known).map(|id| &id.hash).collect();
        if unresolved.is_empty() {
            return Ok(covering);
        }
        let mut found = BTreeSet::new();
        let mut after: Option<Identifier> = None;
        loop {
            let page = store.identities_after(after.as_ref(), GRAPH_PAGE)?;
            for (id, profile) in &page {
                if !person.profile_ids.contains(profile)
                    && unresolved.contains(&suppressor.hash(id))
                {
                    found.insert(*profile);
                }
            }
            match page.last() {
                Some((id, _)) if page.len() == GRAPH_PAGE => after = Some(id.clone()),
                _ => break,
            }
        }
        if found.is_empty() {
            return Ok(covering);
        }
        for profile in found {
            person.absorb(store.person(profile)?);
        }
    }
}

/// Identifiers of the graph read per page while looking for one known only by its hash.
const GRAPH_PAGE: usize = 5_000;

/// How a walk finds the messages that spell the person out in any of their spellings.
struct Spellings {
    emails: BTreeSet<String>,
    phones: BTreeSet<String>,
    country: Option<String>,
}

impl Spellings {
    fn of(identifiers: &[Identifier], default_country: Option<&str>) -> Spellings {
        let emails: BTreeSet<String> = identifiers
            .iter()
            .filter(|(k, _)| *k == IdKind::Email)
            .filter_map(|(_, v)| normal_email(v))
            .collect();
        let phones: BTreeSet<String> = identifiers
            .iter()
            .filter(|(k, _)| *k == IdKind::Phone)
            .filter_map(|(_, v)| normal_phone(v, default_country))
            .collect();
        Spellings {
            emails,
            phones,
            country: default_country.map(str::to_string),
        }
    }

    /// The rows of `from..to` that spell the person out: every raw message of the range read
    /// (stored packed, so no text search in SQL can look into it).
    fn rows(
        &self,
        store: &mut dyn PrivacyStore,
        from: i64,
        to: i64,
    ) -> Result<Vec<i64>, StoreError> {
        if self.emails.is_empty() && self.phones.is_empty() {
            return Ok(Vec::new());
        }
        Ok(store
            .raw_messages(from, to)?
            .into_iter()
            .filter(|(_, raw)| spells_out(raw, &self.emails, &self.phones, self.country.as_deref()))
            .map(|(row, _)| row)
            .collect())
    }
}

/// Lift the suppression of everyone the named identifiers were forgotten with.
fn undo(
    store: &mut dyn PrivacyStore,
    order: &Order,
    suppressor: &Suppressor,
    requested: &[Identifier],
    audits: &[Vec<HashedId>],
) -> Result<Report, PrivacyError> {
    let covering = covered(&hashed(suppressor, requested), audits);
    let request = NewPrivacyRequest {
        request_id: order.request_id.clone(),
        action: "undo",
        who: order.who.clone(),
        environment: order.environment.clone(),
        received_at_ms: now_ms(),
        identifiers: HashedId::list_json(&covering),
        status: "lifted",
    };
    let wanted: Vec<Vec<u8>> = covering.iter().map(|id| id.hash.clone()).collect();
    let lifted = store.lift(&request, &wanted)?;
    let mut report = Report::new(order, "undo", &covering);
    if lifted > 0 {
        report.status = "lifted";
        report.message = format!("{lifted} identifier(s) no longer suppressed: later messages are stored and delivered again (what was deleted stays deleted)");
    } else {
        report.status = "not_suppressed";
        report.message = "none of these identifiers was suppressed: nothing changed".into();
    }
    Ok(report)
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
