//! `decide` without a database: groups of real Segment messages (through the same stateless
//! stages ingest runs) against snapshots, and a small fold that carries one group's rows into
//! the next group's snapshot the way a store's load would read them back.

use std::collections::HashMap;

use bytes::Bytes;

use super::*;
use crate::pipeline::dedup::CollisionKind;
use crate::pipeline::identity::IdKind;
use crate::pipeline::privacy::Suppressor;
use crate::pipeline::{MappingTable, RouteTarget, RouteVerdict};
use crate::stage::input::{message_record, MessageContext, RequestReceipt};
use crate::stage::snapshot::ReplayWindow;

const NOW: i64 = 1_780_000_000_000;
const KEY: &[u8] = b"the store's suppression key";
const HOUR: i64 = 3_600_000;

fn target(name: &str, kind: &str, consent: &[&str]) -> RouteTarget {
    RouteTarget {
        name: name.into(),
        kind: kind.into(),
        environments: vec!["production".into()],
        consent: consent.iter().map(|c| c.to_string()).collect(),
        supported_events: None,
        takes_profiles: kind == "klaviyo",
        unsupported: Vec::new(),
    }
}

fn targets() -> Vec<RouteTarget> {
    vec![
        target("meta", "meta_capi", &["Advertising"]),
        target("klaviyo", "klaviyo", &[]),
    ]
}

/// One request of raw Segment messages, received at `at_ms`, with a 48-hour dedup window.
fn request(n: usize, at_ms: i64, messages: &[serde_json::Value]) -> IngestBatch {
    let table = MappingTable::default();
    let ctx = MessageContext {
        implied_type: None,
        environment: "production",
        mapping: &table,
        received_at_ms: at_ms,
        limits: &Default::default(),
        default_country: None,
    };
    let records = messages
        .iter()
        .enumerate()
        .map(|(i, m)| message_record(i, Bytes::from(m.to_string()), &ctx))
        .collect();
    IngestBatch {
        receipt: RequestReceipt {
            request_id: format!("req_{n}"),
            received_at_ms: at_ms,
            environment: "production".into(),
            path: "/segment/events".into(),
            remote_addr: None,
            user_agent: None,
            auth_scheme: "tracklayer",
            body_shape: "array",
            body_bytes: 0,
            body_sha256: [n as u8; 32],
        },
        messages: records,
        dedup_since_ms: at_ms - 48 * HOUR,
        replay_guard: None,
    }
}

fn identify(id: &str, user: &str, anon: &str, email: &str) -> serde_json::Value {
    serde_json::json!({"type": "identify", "messageId": id, "userId": user,
        "anonymousId": anon, "traits": {"email": email}})
}

fn purchase(id: &str, anon: &str, order: &str, revenue: f64) -> serde_json::Value {
    serde_json::json!({"type": "track", "event": "Order Completed", "messageId": id,
        "anonymousId": anon, "properties": {"order_id": order, "revenue": revenue,
        "currency": "EUR"}})
}

fn with_consent(mut message: serde_json::Value, advertising: bool) -> serde_json::Value {
    message["context"] = serde_json::json!({"consent": {"categoryPreferences":
        {"Advertising": advertising}}});
    message
}

/// What a store holds between groups, as a store's load would read it back.
#[derive(Default)]
struct Memory {
    snapshot: Snapshot,
    next: [i64; 4],
}

impl Memory {
    fn new() -> Memory {
        Memory {
            snapshot: Snapshot::default(),
            next: [1; 4],
        }
    }

    /// Decide one group against what is stored, and store its rows.
    fn run<'a>(&mut self, batches: &[&'a IngestBatch], targets: &[RouteTarget]) -> Decision<'a> {
        let ctx = Context {
            targets,
            default_country: None,
            suppressor: &Suppressor::new(KEY),
        };
        let decision = decide(batches, &self.snapshot, &ctx, &Ids::From(self.next));
        for (next, used) in self.next.iter_mut().zip(decision.ids_used) {
            *next += used as i64;
        }
        self.fold(&decision);
        decision
    }

    fn fold(&mut self, d: &Decision<'_>) {
        let s = &mut self.snapshot;
        let raw: HashMap<i64, &MessageInsert<'_>> = d.messages.iter().map(|m| (m.id, m)).collect();
        for claim in &d.message_claims {
            let message = raw[&claim.row];
            s.messages.insert(
                (claim.environment.clone(), claim.message_id.clone()),
                PriorMessage {
                    row: claim.row,
                    raw_sha256: message.record.raw_sha256.to_vec(),
                    first_seen_ms: claim.first_seen_ms,
                    request_id: message.batch.receipt.request_id.clone(),
                    request_sha256: Some(message.batch.receipt.body_sha256.to_vec()),
                },
            );
        }
        for write in &d.profiles {
            match write.merged_into {
                Some(_) => {
                    s.profiles.remove(&write.id());
                }
                None => {
                    s.profiles.insert(write.id(), write.profile.clone());
                }
            }
        }
        for (merged, into) in &d.merges {
            for owner in s.owners.values_mut().filter(|o| **o == *merged) {
                *owner = *into;
            }
        }
        for identity in &d.identities {
            let kind = IdKind::parse(identity.kind).expect("a kind decide wrote");
            s.owners
                .insert((kind, identity.value.clone()), identity.profile_id);
        }
        for claim in &d.event_claims {
            let event = d.events.iter().find(|e| e.id == claim.row).unwrap();
            s.events.insert(
                claim.event_id.clone(),
                PriorEvent {
                    row: claim.row,
                    message_row: event.message_row,
                    message_id: event.event.message_id.clone(),
                    fingerprint: event.fingerprint.to_vec(),
                    created_at_ms: claim.created_at_ms,
                },
            );
        }
        for event in d.events.iter().filter(|e| e.event.name == "purchase") {
            let routed_to = d
                .deliveries
                .iter()
                .filter(|x| x.event_row == Some(event.id))
                .map(|x| x.destination.clone())
                .collect();
            s.purchases.insert(
                event.event.event_id.clone(),
                Purchase {
                    event: (*event.event).clone(),
                    routed_to,
                },
            );
        }
    }
}

fn outcomes(d: &Decision<'_>) -> Vec<StoredOutcome> {
    d.jobs
        .iter()
        .flat_map(|j| match j {
            JobDecision::Stored(outcomes) => outcomes.clone(),
            JobDecision::Refused(why) => panic!("refused: {why}"),
        })
        .collect()
}

fn destinations(d: &Decision<'_>) -> Vec<(String, String)> {
    d.deliveries
        .iter()
        .map(|x| (x.destination.clone(), x.destination_event.clone()))
        .collect()
}

#[test]
fn an_identify_updates_the_profile_and_never_becomes_a_conversion() {
    let mut memory = Memory::new();
    let group = request(1, NOW, &[identify("m1", "u1", "a1", "ann@example.com")]);
    let d = memory.run(&[&group], &targets());
    assert!(d.events.is_empty(), "an identify makes no event");
    assert_eq!(d.profiles.len(), 1);
    assert!(d.profiles[0].new);
    let kinds: Vec<&str> = d.identities.iter().map(|i| i.kind).collect();
    assert_eq!(kinds.len(), 3, "userId, anonymousId and email: {kinds:?}");
    assert_eq!(d.identity_changes[0].kind, "created");
    // Only the destination that keeps profiles gets it, as a profile update.
    assert_eq!(
        destinations(&d),
        vec![("klaviyo".to_string(), "profile".to_string())]
    );
    assert!(matches!(
        outcomes(&d)[0].pipeline,
        Some(PipelineOutcome::Identify { merged: 0, .. })
    ));
}

#[test]
fn a_purchase_after_an_identify_in_the_same_group_links_to_that_person() {
    let mut memory = Memory::new();
    let group = request(
        1,
        NOW,
        &[
            identify("m1", "u1", "a1", "ann@example.com"),
            with_consent(purchase("m2", "a1", "o-1", 30.0), true),
        ],
    );
    let d = memory.run(&[&group], &targets());
    assert_eq!(d.events.len(), 1);
    let event = &d.events[0].event;
    assert_eq!(event.name, "purchase");
    assert_eq!(
        event.user.user_id.as_deref(),
        Some("u1"),
        "from the profile"
    );
    assert!(
        event.user.email.is_some(),
        "the email learned by the identify enriches the purchase"
    );
    assert_eq!(event.message_id, "m2", "the Segment messageId is kept");
    let sent: Vec<_> = destinations(&d);
    assert!(
        sent.contains(&("meta".into(), "Purchase".into())),
        "{sent:?}"
    );
}

#[test]
fn a_segment_retry_is_a_duplicate_and_sends_nothing_again() {
    let mut memory = Memory::new();
    let first = request(
        1,
        NOW,
        &[with_consent(purchase("m1", "a1", "o-1", 30.0), true)],
    );
    let d1 = memory.run(&[&first], &targets());
    assert_eq!(d1.deliveries.len(), 2);
    let retry = request(
        2,
        NOW + 60_000,
        &[with_consent(purchase("m1", "a1", "o-1", 30.0), true)],
    );
    let d2 = memory.run(&[&retry], &targets());
    assert!(matches!(
        outcomes(&d2)[0].message,
        MessageOutcome::Duplicate {
            same_payload: true,
            ..
        }
    ));
    assert!(d2.events.is_empty() && d2.deliveries.is_empty());
    assert!(
        d2.message_claims.is_empty(),
        "the messageId stays the first's"
    );
}

#[test]
fn the_same_order_sent_twice_collapses_onto_one_event_id_as_a_collision() {
    let mut memory = Memory::new();
    let first = request(1, NOW, &[purchase("m1", "a1", "o-9", 30.0)]);
    let d1 = memory.run(&[&first], &targets());
    let event_id = d1.events[0].event.event_id.clone();
    let again = request(2, NOW + 1000, &[purchase("m2", "a1", "o-9", 30.0)]);
    let d2 = memory.run(&[&again], &targets());
    assert!(d2.events.is_empty() && d2.deliveries.is_empty());
    assert_eq!(d2.collisions.len(), 1);
    let collision = &d2.collisions[0];
    assert_eq!(collision.event_id, event_id);
    assert_eq!(collision.kind, CollisionKind::DuplicateOrder);
    assert_eq!(collision.winner_event_row, d1.events[0].id);
    // The same order with another amount: someone must look.
    let changed = request(3, NOW + 2000, &[purchase("m3", "a1", "o-9", 45.0)]);
    let d3 = memory.run(&[&changed], &targets());
    assert_eq!(d3.collisions[0].kind, CollisionKind::ConflictingPayload);
    // Past the dedup window the order is new again.
    let later = request(4, NOW + 49 * HOUR, &[purchase("m4", "a1", "o-9", 30.0)]);
    let d4 = memory.run(&[&later], &targets());
    assert!(d4.collisions.is_empty());
    assert_eq!(d4.events[0].event.event_id, event_id);
}

#[test]
fn two_copies_of_an_order_in_one_group_give_one_event_and_one_collision() {
    let mut memory = Memory::new();
    let group = request(
        1,
        NOW,
        &[
            purchase("m1", "a1", "o-2", 10.0),
            purchase("m2", "a1", "o-2", 10.0),
        ],
    );
    let d = memory.run(&[&group], &targets());
    assert_eq!(d.events.len(), 1);
    assert_eq!(d.event_claims.len(), 1);
    assert_eq!(d.collisions.len(), 1);
    assert_eq!(d.collisions[0].message_row, d.messages[1].id);
}

#[test]
fn an_identify_that_joins_two_known_people_merges_them() {
    let mut memory = Memory::new();
    let anonymous = request(1, NOW, &[purchase("m1", "anon-7", "o-1", 5.0)]);
    memory.run(&[&anonymous], &targets());
    let known = request(
        2,
        NOW + 1,
        &[identify("m2", "u7", "other-anon", "bo@example.com")],
    );
    memory.run(&[&known], &targets());
    assert_eq!(memory.snapshot.profiles.len(), 2);
    let joining = request(
        3,
        NOW + 2,
        &[identify("m3", "u7", "anon-7", "bo@example.com")],
    );
    let d = memory.run(&[&joining], &targets());
    assert_eq!(d.merges.len(), 1, "{:?}", d.identity_changes);
    assert!(d.identity_changes.iter().any(|c| c.kind == "merged"));
    assert_eq!(memory.snapshot.profiles.len(), 1);
    let owners: std::collections::BTreeSet<i64> =
        memory.snapshot.owners.values().copied().collect();
    assert_eq!(owners.len(), 1, "every identifier is the one person's");
}

#[test]
fn consent_is_enforced_per_destination() {
    let mut memory = Memory::new();
    let refused = request(
        1,
        NOW,
        &[with_consent(purchase("m1", "a1", "o-1", 5.0), false)],
    );
    let d = memory.run(&[&refused], &targets());
    let Some(PipelineOutcome::Mapped { routes, .. }) = &outcomes(&d)[0].pipeline else {
        panic!("mapped expected");
    };
    assert!(routes.contains(&("meta".into(), RouteVerdict::BlockedConsent)));
    assert!(routes.contains(&("klaviyo".into(), RouteVerdict::Ready)));
    assert_eq!(
        destinations(&d),
        vec![("klaviyo".to_string(), "Placed Order".to_string())]
    );
}

#[test]
fn a_name_not_in_the_table_is_kept_as_unmapped_with_a_suggestion() {
    let mut memory = Memory::new();
    let message = serde_json::json!({"type": "track", "event": "Order Complete",
        "messageId": "m1", "anonymousId": "a1"});
    let group = request(1, NOW, &[message]);
    let d = memory.run(&[&group], &targets());
    assert_eq!(d.messages.len(), 1, "stored, never dropped");
    assert_eq!(d.unmapped.len(), 1);
    assert_eq!(d.unmapped[0].suggestion.as_deref(), Some("Order Completed"));
    assert!(d.events.is_empty() && d.deliveries.is_empty());
}

#[test]
fn a_refund_carries_the_purchase_and_where_it_went() {
    let mut memory = Memory::new();
    let bought = request(
        1,
        NOW,
        &[with_consent(purchase("m1", "a1", "o-5", 80.0), false)],
    );
    memory.run(&[&bought], &targets());
    let refund = serde_json::json!({"type": "track", "event": "Order Refunded",
        "messageId": "m2", "anonymousId": "a1",
        "properties": {"order_id": "o-5", "total": 80.0, "currency": "EUR"}});
    let group = request(2, NOW + HOUR, &[refund]);
    let d = memory.run(&[&group], &targets());
    let refunds = d.events[0]
        .event
        .refunds
        .as_ref()
        .expect("the purchase was found");
    assert_eq!(refunds.routed_to, vec!["klaviyo".to_string()]);
}

#[test]
fn a_replay_window_lets_a_repeated_event_id_through_with_its_id() {
    let mut memory = Memory::new();
    let first = request(1, NOW, &[purchase("m1", "a1", "o-3", 5.0)]);
    memory.run(&[&first], &targets());
    memory.snapshot.replay_windows.push(ReplayWindow {
        environment: "production".into(),
        starts_ms: NOW,
        ends_ms: NOW + HOUR,
    });
    let replayed = request(2, NOW + 1000, &[purchase("m2", "a1", "o-3", 5.0)]);
    let d = memory.run(&[&replayed], &targets());
    assert!(d.collisions.is_empty());
    assert!(d.events[0].replay);
    assert!(matches!(
        outcomes(&d)[0].pipeline,
        Some(PipelineOutcome::Replayed { .. })
    ));
}

#[test]
fn the_same_group_and_snapshot_always_make_the_same_rows() {
    let group = request(
        1,
        NOW,
        &[
            identify("m1", "u1", "a1", "ann@example.com"),
            purchase("m2", "a1", "o-1", 30.0),
            purchase("m3", "a1", "o-1", 30.0),
        ],
    );
    let ctx_targets = targets();
    let ctx = Context {
        targets: &ctx_targets,
        default_country: None,
        suppressor: &Suppressor::new(KEY),
    };
    let snapshot = Snapshot::default();
    let a = decide(&[&group], &snapshot, &ctx, &Ids::From([10, 20, 30, 40]));
    let b = decide(&[&group], &snapshot, &ctx, &Ids::From([10, 20, 30, 40]));
    assert_eq!(format!("{:?}", a.jobs), format!("{:?}", b.jobs));
    assert_eq!(format!("{:?}", a.deliveries), format!("{:?}", b.deliveries));
    // A fleet counts first, reserves exactly that many ids, and decides with them.
    let counted = decide(&[&group], &snapshot, &ctx, &COUNTING);
    let reserved = Ids::Reserved([
        (0..counted.ids_used[0] as i64).map(|i| 100 + i).collect(),
        (0..counted.ids_used[1] as i64).map(|i| 200 + i).collect(),
        (0..counted.ids_used[2] as i64).map(|i| 300 + i).collect(),
        (0..counted.ids_used[3] as i64).map(|i| 400 + i).collect(),
    ]);
    let c = decide(&[&group], &snapshot, &ctx, &reserved);
    assert_eq!(c.ids_used, counted.ids_used);
    let message_ids: Vec<i64> = c.messages.iter().map(|m| m.id).collect();
    assert_eq!(message_ids, vec![100, 101, 102]);
    assert!(c.deliveries.iter().all(|x| x.id >= 400));
    assert!(c.profiles.iter().all(|p| p.id() == 300));
}

#[test]
fn a_forgotten_persons_message_is_answered_and_nothing_of_it_written() {
    let mut memory = Memory::new();
    let forgotten = (IdKind::Email, "ann@example.com".to_string());
    memory.snapshot.suppressed.insert(
        crate::pipeline::privacy::suppression_hash(KEY, &forgotten),
        7,
    );
    let group = request(
        1,
        NOW,
        &[
            purchase("m1", "someone-else", "o-1", 5.0),
            identify("m2", "u9", "a9", "ann@example.com"),
            with_consent(purchase("m3", "a1", "o-2", 5.0), true),
        ],
    );
    // The purchase after the identify names only its anonymousId: it is someone else's
    // until the graph links them, and the identify that would link them is suppressed.
    let d = memory.run(&[&group], &targets());
    let outcomes = outcomes(&d);
    assert_eq!(outcomes[1].message, MessageOutcome::Suppressed);
    assert!(outcomes[1].pipeline.is_none());
    assert_eq!(d.messages.len(), 2, "the suppressed message is not stored");
    assert!(d.identities.iter().all(|i| i.value != "ann@example.com"));
    assert_eq!(d.suppressed.get(&7), Some(&1));
    // The keys a store is asked about carry the hash, never the value.
    let keys = crate::stage::Keys::of(&[&group], &[], Some(&Suppressor::new(KEY)), NOW);
    assert!(keys
        .suppression
        .contains(&crate::pipeline::privacy::suppression_hash(KEY, &forgotten)));
}

#[test]
fn a_suppression_made_under_an_earlier_spelling_still_holds() {
    // Made before gmail addresses were keyed on their mailbox: the hash of the address as
    // written, lower-cased.
    let mut memory = Memory::new();
    let earlier = (IdKind::Email, "jane.doe@gmail.com".to_string());
    memory
        .snapshot
        .suppressed
        .insert(crate::pipeline::privacy::suppression_hash(KEY, &earlier), 3);
    let group = request(
        1,
        NOW,
        &[
            identify("m1", "u1", "a1", "Jane.Doe@gmail.com"),
            identify("m2", "u2", "a2", "janedoe@gmail.com"),
        ],
    );
    let d = memory.run(&[&group], &targets());
    let outcomes = outcomes(&d);
    assert_eq!(outcomes[0].message, MessageOutcome::Suppressed);
    // The plain spelling was never suppressed under the old key: only a new forget reaches it.
    assert_ne!(outcomes[1].message, MessageOutcome::Suppressed);
}
