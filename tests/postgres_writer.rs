//! The PostgreSQL writer as a fleet uses it: several writers (nodes) on one database at the same
//! moment. A messageId is stored once, an order becomes one event_id with the collision
//! recorded, a person split across nodes is one profile, and deliveries are claimed by one node
//! at a time, taken over by another when a lease runs out.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::postgres::TestDatabase;
use sha2::{Digest, Sha256};
use tracklayer::destinations::Setup;
use tracklayer::ingest::{message_record, MessageContext};
use tracklayer::pipeline::{MappingTable, RouteTarget};
use tracklayer::segment::MessageLimits;
use tracklayer::store::handoff::HandOffs;
use tracklayer::store::postgres::writer;
use tracklayer::store::{
    IngestBatch, MessageOutcome, RequestReceipt, StoreWriter, StoredOutcome, WriterOptions,
};

const ENV: &str = "production";

fn targets() -> (Vec<RouteTarget>, MappingTable) {
    let text = format!(
        r#"
[storage]
path = "unused.db"
[workspace]
account = "{ACCOUNT}"
[[environments]]
name = "{ENV}"
secret = "{PRODUCTION_SECRET}"
[[destinations]]
name = "hooks"
kind = "webhook"
url = "https://hooks.example/tl"
secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
"#,
        ACCOUNT = common::ACCOUNT,
        PRODUCTION_SECRET = common::PRODUCTION_SECRET
    );
    let setup = Setup::parse(&text, std::path::Path::new("/tmp/tl.toml"), &|_| None).unwrap();
    (setup.route_targets(), setup.config.mapping.table.clone())
}

struct Node {
    writer: StoreWriter,
    thread: Option<tracklayer::store::WriterThread>,
    name: &'static str,
}

impl Node {
    fn start(db: &TestDatabase, name: &'static str) -> Node {
        let (targets, _) = targets();
        let (writer, thread) = writer::spawn(
            &db.url,
            format!("{name}:1:1"),
            WriterOptions::default(),
            targets,
            Arc::new(HandOffs::default()),
        )
        .unwrap();
        Node {
            writer,
            thread: Some(thread),
            name,
        }
    }

    async fn post(&self, request: u32, bodies: &[String]) -> Vec<StoredOutcome> {
        let (_, mapping) = targets();
        let now = chrono::Utc::now().timestamp_millis();
        let limits = MessageLimits::default();
        let ctx = MessageContext {
            implied_type: None,
            environment: ENV,
            mapping: &mapping,
            received_at_ms: now,
            limits: &limits,
            default_country: None,
        };
        let body = format!("[{}]", bodies.join(","));
        let batch = IngestBatch {
            receipt: RequestReceipt {
                request_id: format!("req_{}_{request}", self.name),
                received_at_ms: now,
                environment: ENV.into(),
                path: "/segment/events".into(),
                remote_addr: None,
                user_agent: None,
                auth_scheme: "tracklayer",
                body_shape: "array",
                body_bytes: body.len(),
                body_sha256: Sha256::digest(body.as_bytes()).into(),
            },
            messages: bodies
                .iter()
                .enumerate()
                .map(|(i, b)| message_record(i, Bytes::from(b.clone()), &ctx))
                .collect(),
            dedup_since_ms: now - 48 * 3_600_000,
            replay_guard: None,
        };
        self.writer.ingest(batch).await.unwrap()
    }

    async fn stop(mut self) {
        drop(self.writer);
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .unwrap();
        }
    }
}

fn track(message_id: &str, order: &str, user: &str, anonymous: &str) -> String {
    // One time for the whole test: two arrivals of one order carry the same time, as a re-sent
    // order does.
    static NOW: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let now =
        NOW.get_or_init(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"{message_id}","userId":"{user}","anonymousId":"{anonymous}","timestamp":"{now}","properties":{{"order_id":"{order}","revenue":10,"currency":"EUR"}}}}"#
    )
}

fn identify(message_id: &str, user: &str, anonymous: &str, email: &str) -> String {
    let now = chrono::Utc::now().to_rfc3339();
    format!(
        r#"{{"type":"identify","messageId":"{message_id}","userId":"{user}","anonymousId":"{anonymous}","timestamp":"{now}","traits":{{"email":"{email}"}}}}"#
    )
}

fn count(db: &TestDatabase, sql: &str) -> i64 {
    let mut c = ::postgres::Client::connect(&db.url, ::postgres::NoTls).unwrap();
    c.query_one(sql, &[]).unwrap().get(0)
}

/// The async part on its own runtime; the database is made and dropped outside it.
fn run(test: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

#[test]
fn two_nodes_at_the_same_instant_store_each_message_and_order_once() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    run(async {
        let a = Node::start(&db, "node-a");
        let b = Node::start(&db, "node-b");
        for round in 0..20u32 {
            // The same messageId on both nodes at once (a Segment retry racing the original),
            // the same order under two messageIds on both nodes at once, and one person's
            // identify and track split across the nodes.
            let same_message = track(
                &format!("dup-{round}"),
                &format!("O-{round}"),
                &format!("u-{round}"),
                &format!("a-{round}"),
            );
            let order_a = track(
                &format!("oa-{round}"),
                &format!("SAME-{round}"),
                &format!("v-{round}"),
                &format!("b-{round}"),
            );
            let order_b = track(
                &format!("ob-{round}"),
                &format!("SAME-{round}"),
                &format!("v-{round}"),
                &format!("b-{round}"),
            );
            let person_id = identify(
                &format!("id-{round}"),
                &format!("w-{round}"),
                &format!("c-{round}"),
                &format!("w{round}@example.com"),
            );
            let person_track = track(
                &format!("pt-{round}"),
                &format!("P-{round}"),
                &format!("w-{round}"),
                &format!("c-{round}"),
            );
            // A new person first seen on both nodes at once: both try to create them.
            let new_a = track(
                &format!("na-{round}"),
                &format!("NA-{round}"),
                &format!("x-{round}"),
                &format!("xa-{round}"),
            );
            let new_b = track(
                &format!("nb-{round}"),
                &format!("NB-{round}"),
                &format!("x-{round}"),
                &format!("xb-{round}"),
            );
            let to_a = [same_message.clone(), order_a, person_id];
            let to_b = [same_message, order_b, person_track];
            let (ra, rb) = tokio::join!(a.post(round * 4, &to_a), b.post(round * 4 + 1, &to_b));
            // Alone in their requests, so nothing else orders the two transactions.
            let (new_a, new_b) = ([new_a], [new_b]);
            tokio::join!(a.post(round * 4 + 2, &new_a), b.post(round * 4 + 3, &new_b));
            let accepted = |r: &StoredOutcome| matches!(r.message, MessageOutcome::Accepted { .. });
            assert_eq!(
                [accepted(&ra[0]), accepted(&rb[0])]
                    .iter()
                    .filter(|x| **x)
                    .count(),
                1,
                "round {round}: the shared messageId accepted exactly once: {ra:?} / {rb:?}"
            );
        }
        a.stop().await;
        b.stop().await;
    });
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM messages WHERE message_id LIKE 'dup-%' AND status = 'accepted'"
        ),
        20
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM messages WHERE message_id LIKE 'dup-%' AND status = 'duplicate'"
        ),
        20
    );
    // One event per order, and the other arrival recorded as a collision.
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM events WHERE message_id LIKE 'oa-%' OR message_id LIKE 'ob-%'"
        ),
        20
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM collisions WHERE kind = 'duplicate_order'"
        ),
        20
    );
    // One person, one live profile, however the identify and track were split.
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(DISTINCT i.profile_id) FROM identities i
             WHERE i.kind = 'user_id' AND i.value LIKE 'w-%'"
        ),
        20
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM profiles WHERE user_id LIKE 'w-%' AND merged_into IS NULL"
        ),
        20,
        "no duplicated profile"
    );
    // Both nodes' first sight of a new person became one profile with both anonymousIds.
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(DISTINCT i.profile_id) FROM identities i
             WHERE i.kind = 'user_id' AND i.value LIKE 'x-%'"
        ),
        20
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM identities u JOIN identities a ON a.profile_id = u.profile_id
             WHERE u.kind = 'user_id' AND u.value LIKE 'x-%' AND a.kind = 'anonymous_id'"
        ),
        40
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM profiles WHERE user_id LIKE 'x-%' AND merged_into IS NULL"
        ),
        20
    );
    // The track saw the identify's email whichever node took it first (or learned it after).
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM identities i JOIN identities e
                 ON e.profile_id = i.profile_id AND e.kind = 'email'
             WHERE i.kind = 'user_id' AND i.value LIKE 'w-%'"
        ),
        20
    );
    // Every event has its webhook delivery, and each message records its node.
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_row = e.id)"),
        0
    );
    assert_eq!(
        count(&db, "SELECT COUNT(DISTINCT node_id) FROM messages"),
        2
    );
}

#[test]
fn deliveries_are_claimed_by_one_node_at_a_time_and_taken_over_when_a_lease_runs_out() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    run(async {
        let a = Node::start(&db, "node-a");
        let b = Node::start(&db, "node-b");
        let bodies: Vec<String> = (0..60)
            .map(|i| track(&format!("c-{i}"), &format!("C-{i}"), "u", "a"))
            .collect();
        a.post(1, &bodies).await;
        let now = chrono::Utc::now().timestamp_millis();
        let (ca, cb) = tokio::join!(
            a.writer.claim(
                "hooks",
                now,
                40,
                60_000,
                tracklayer::store::ClaimToken::fresh()
            ),
            b.writer.claim(
                "hooks",
                now,
                40,
                60_000,
                tracklayer::store::ClaimToken::fresh()
            ),
        );
        let (ca, cb) = (ca.unwrap(), cb.unwrap());
        let mut ids: Vec<i64> = ca.items.iter().chain(&cb.items).map(|d| d.id).collect();
        let total = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), total, "a delivery claimed by both nodes");
        assert_eq!(total, 60, "every due delivery claimed once");

        // Node a dies holding its claim: its leases expire and node b takes them over.
        let held: Vec<i64> = ca.items.iter().map(|d| d.id).collect();
        let later = now + 120_000;
        let sweep = {
            let url = db.url.clone();
            tokio::task::spawn_blocking(move || {
                let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
                c.execute(
                    "UPDATE deliveries SET status = 'pending', lease_until_ms = NULL, leased_by = NULL
                     WHERE status = 'in_flight' AND lease_until_ms < $1",
                    &[&later],
                )
                .unwrap()
            })
            .await
            .unwrap()
        };
        assert_eq!(sweep as usize, 60);
        let retaken = b
            .writer
            .claim(
                "hooks",
                later,
                100,
                60_000,
                tracklayer::store::ClaimToken::fresh(),
            )
            .await
            .unwrap();
        let retaken_ids: Vec<i64> = retaken.items.iter().map(|d| d.id).collect();
        assert!(held.iter().all(|id| retaken_ids.contains(id)));
        // No request recorded carrying them: their first attempt still.
        assert!(retaken.items.iter().all(|d| d.attempt == 1));
        a.stop().await;
        b.stop().await;
    });
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM deliveries WHERE leased_by LIKE 'node-b%'"
        ),
        60
    );
}

#[test]
fn retention_replay_windows_and_requeue_work_against_the_fleet_database() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    run(async {
        let a = Node::start(&db, "node-a");
        let b = Node::start(&db, "node-b");
        let bodies: Vec<String> = (0..30)
            .map(|i| track(&format!("r-{i}"), &format!("R-{i}"), "ru", "ra"))
            .collect();
        a.post(1, &bodies).await;

        // A replay window lets an order seen before through as a replay, on any node.
        let now = chrono::Utc::now().timestamp_millis();
        tracklayer::store::postgres::open_replay_window(
            &db.url,
            ENV,
            now - 1000,
            now + 60_000,
            "test",
        )
        .unwrap();
        let again = b.post(2, &[track("r-again", "R-0", "ru", "ra")]).await;
        assert!(
            matches!(
                again[0].pipeline,
                Some(tracklayer::stage::PipelineOutcome::Replayed { .. })
            ),
            "{again:?}"
        );

        // Dead letters go back in line for whichever node claims first.
        let url = db.url.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
            c.execute(
                "UPDATE deliveries SET status = 'dead', updated_at_ms = $1
                 WHERE id IN (SELECT id FROM deliveries ORDER BY id LIMIT 5)",
                &[&now],
            )
            .unwrap();
        })
        .await
        .unwrap();
        let url = db.url.clone();
        let requeued = tokio::task::spawn_blocking(move || {
            tracklayer::store::postgres::requeue(&url, "hooks", "dead", now - 1000).unwrap()
        })
        .await
        .unwrap();
        assert_eq!(requeued, 5);

        // Everything is past a cutoff in the future; both nodes' passes run, the fleet's lock
        // keeps them from running at once, and pending deliveries and profiles stay.
        let future = now + 86_400_000;
        let mut total = 0;
        loop {
            let (x, y) = tokio::join!(
                a.writer.prune(future, Some(future)),
                b.writer.prune(future, Some(future))
            );
            let changed = x.unwrap() + y.unwrap();
            if changed == 0 {
                break;
            }
            total += changed;
        }
        assert!(total > 0);
        a.stop().await;
        b.stop().await;
    });
    assert_eq!(count(&db, "SELECT COUNT(*) FROM messages"), 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM message_ids"), 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM events"), 0);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM destination_minutes"),
        0,
        "a destination's minutes go with the rest"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'"
        ),
        31,
        "pending deliveries are never deleted"
    );
    // A day past everything: every person is untouched for the retention period and has no
    // event left, so they go with their identifiers.
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM profiles"),
        0,
        "idle people go"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM identities"), 0);
}
