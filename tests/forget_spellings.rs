//! A forget that holds, tried as a hostile tester would on both stores: a forgotten person
//! written another way (gmail dots, `+tag`, googlemail.com; a phone nationally, with `00`, with
//! a `(0)` trunk, spaced) is still that person; `/privacy/forget` takes each TrackLayer-signed
//! request once (on every node of a fleet) and no Segment signature or write key; an undo and a
//! second forget still reach the userId the first forget unlinked.

mod common;

use common::*;
use serde_json::{json, Value};

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A server whose workspace reads national phones as Dutch.
async fn dutch_server(store: Store) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tracklayer.db");
    let text = config_text_with(&path, "", "").replacen(
        "[workspace]\n",
        "[workspace]\ndefault_country = \"NL\"\n",
        1,
    );
    (TestServer::start_text_for(store, &path, &text).await, dir)
}

fn identify(message_id: &str, user: &str, email: &str, phone: &str) -> Value {
    json!({"type": "identify", "messageId": message_id, "userId": user,
        "anonymousId": format!("anon-{user}"), "timestamp": now(),
        "traits": {"email": email, "phone": phone}})
}

/// A message from a device nobody has linked yet, naming the person only by `traits`.
fn stranger_with(message_id: &str, traits: Value) -> Value {
    json!({"type": "identify", "messageId": message_id,
        "anonymousId": format!("anon-{message_id}"), "timestamp": now(), "traits": traits})
}

async fn post(server: &TestServer, body: &Value) -> Value {
    let (status, reply) = server
        .post("production", PRODUCTION_SECRET, &body.to_string())
        .await;
    assert_eq!(status, 200, "{reply}");
    reply
}

async fn forget(server: &TestServer, body: &Value) -> (u16, Value) {
    let request = signed(
        &client(),
        &server.url("/privacy/forget"),
        "production",
        PRODUCTION_SECRET,
        &body.to_string(),
    );
    json_of(request.send().await.unwrap()).await
}

async fn forgotten(server: &TestServer, body: &Value) -> Value {
    let (status, reply) = forget(server, body).await;
    assert_eq!(status, 200, "{body}: {reply}");
    reply["report"].clone()
}

/// The message was refused by the suppression list: counted as such, nothing stored.
async fn assert_suppressed(server: &TestServer, message: &Value) {
    let reply = post(server, message).await;
    assert_eq!(reply["suppressed"], 1, "{message}: {reply}");
    let id = message["messageId"].as_str().unwrap();
    assert!(server.trace(id).await.is_none(), "{id} was stored");
}

async fn every_spelling_of_a_forgotten_person_is_suppressed(store: Store) {
    let (server, _dir) = dutch_server(store).await;
    post(
        &server,
        &identify("ann-1", "user-ann", "ann.smith@gmail.com", "+31612345678"),
    )
    .await;
    // Stored before the forget: a stranger's message that spells Ann out in a property.
    let mention = json!({"type": "track", "event": "Support Ticket", "messageId": "ticket-1",
        "anonymousId": "anon-support", "timestamp": now(),
        "properties": {"contact": "Ann.Smith+Support@GoogleMail.com", "callback": "06-12 34 56 78"}});
    post(&server, &mention).await;
    post(
        &server,
        &identify("bob-1", "user-bob", "bob.jones@example.com", "+31687654321"),
    )
    .await;

    let report = forgotten(&server, &json!({"email": "ANN.SMITH@gmail.com"})).await;
    assert_eq!(report["status"], "done", "{report:#}");
    assert!(server.trace("ann-1").await.is_none());
    assert!(
        server.trace("ticket-1").await.is_none(),
        "a message spelling her address another way goes with her"
    );
    assert!(server.trace("bob-1").await.is_some());

    let mut n = 0;
    let mut next = |traits: Value| {
        n += 1;
        stranger_with(&format!("later-{n}"), traits)
    };
    for email in [
        "annsmith@gmail.com",
        "a.n.n.s.m.i.t.h@gmail.com",
        "Ann.Smith+promo@gmail.com",
        "ann.smith@googlemail.com",
        " ANNSMITH+x@GoogleMail.com ",
    ] {
        assert_suppressed(&server, &next(json!({"email": email}))).await;
    }
    for phone in [
        "0612345678",
        "06 12 34 56 78",
        "0031612345678",
        "+31 (0)6 1234 5678",
        "+31 6 1234 5678",
    ] {
        assert_suppressed(&server, &next(json!({"phone": phone}))).await;
    }
    // Another mailbox at gmail, and another number, are other people.
    for traits in [
        json!({"email": "ann.smith2@gmail.com"}),
        json!({"email": "ann.smith@example.com"}),
        json!({"phone": "0612345679"}),
    ] {
        let message = next(traits.clone());
        let reply = post(&server, &message).await;
        assert_eq!(reply["suppressed"], 0, "{traits}: {reply}");
    }

    // The reverse: forgotten under a dotted, tagged spelling, known by the plain one.
    post(
        &server,
        &identify("cy-1", "user-cy", "cyrus.v@gmail.com", "+31611112222"),
    )
    .await;
    let report = forgotten(&server, &json!({"email": "Cyrus.V+old@googlemail.com"})).await;
    assert_eq!(report["status"], "done", "{report:#}");
    assert!(server.trace("cy-1").await.is_none());
    assert_suppressed(&server, &next(json!({"email": "cyrusv@gmail.com"}))).await;

    // By phone, written nationally: every way of writing it.
    post(
        &server,
        &identify("dee-1", "user-dee", "dee@example.com", "+31 6 3333 4444"),
    )
    .await;
    let report = forgotten(&server, &json!({"phone": "06 3333 4444"})).await;
    assert_eq!(report["status"], "done", "{report:#}");
    assert!(server.trace("dee-1").await.is_none());
    for phone in [
        "0633334444",
        "0031 6 33334444",
        "+31 (0)6 3333 4444",
        "+31633334444",
    ] {
        assert_suppressed(&server, &next(json!({"phone": phone}))).await;
    }
    server.stop().await;
}

async fn identifiers_that_name_nobody_are_refused_and_nothing_changes(store: Store) {
    let (server, _dir) = dutch_server(store).await;
    post(
        &server,
        &identify("eve-1", "user-eve", "eve@gmail.com", "+31655556666"),
    )
    .await;
    for (body, field) in [
        (json!({"email": "+"}), "email"),
        (json!({"email": "@gmail.com"}), "email"),
        (json!({"phone": "0"}), "phone"),
        (json!({"phone": "+"}), "phone"),
    ] {
        let (status, reply) = forget(&server, &body).await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}: ")),
            "{body}: {reply}"
        );
    }
    assert!(server.trace("eve-1").await.is_some(), "nothing deleted");
    let reply = post(
        &server,
        &stranger_with("eve-2", json!({"email": "eve@gmail.com"})),
    )
    .await;
    assert_eq!(reply["suppressed"], 0, "nothing suppressed: {reply}");
    server.stop().await;

    // Without a default country, a national phone names nobody in particular.
    let server = TestServer::start_for(store, "").await;
    let (status, reply) = forget(&server, &json!({"phone": "06 1234 5678"})).await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("no country code and [workspace] default_country is not set"),
        "{reply}"
    );
    server.stop().await;
}

async fn a_signed_forget_is_taken_once_and_only_with_tracklayer_signatures(store: Store) {
    let (server, _dir) = dutch_server(store).await;
    post(
        &server,
        &identify("fay-1", "user-fay", "fay@example.com", "+31677778888"),
    )
    .await;
    let body = json!({"user_id": "user-fay"}).to_string();
    let captured = signed(
        &client(),
        &server.url("/privacy/forget"),
        "production",
        PRODUCTION_SECRET,
        &body,
    )
    .build()
    .unwrap();
    let replay = captured.try_clone().unwrap();
    let (status, reply) = json_of(client().execute(captured).await.unwrap()).await;
    assert_eq!(
        (status, reply["report"]["status"].clone()),
        (200, json!("done"))
    );
    let (status, reply) = json_of(client().execute(replay).await.unwrap()).await;
    assert_eq!(status, 409, "{reply}");
    assert_eq!(reply["code"], "replayed", "{reply}");

    // An undo is a request like any other: replayed after a later forget, it lifts nothing.
    let undo_body = json!({"user_id": "user-fay", "undo": true}).to_string();
    let undo = signed(
        &client(),
        &server.url("/privacy/forget"),
        "production",
        PRODUCTION_SECRET,
        &undo_body,
    )
    .build()
    .unwrap();
    let undo_again = undo.try_clone().unwrap();
    let (status, reply) = json_of(client().execute(undo).await.unwrap()).await;
    assert_eq!(
        (status, reply["report"]["status"].clone()),
        (200, json!("lifted")),
        "{reply}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let report = forgotten(&server, &json!({"user_id": "user-fay"})).await;
    assert_eq!(report["status"], "done", "suppressed again: {report:#}");
    let (status, reply) = json_of(client().execute(undo_again).await.unwrap()).await;
    assert_eq!(status, 409, "{reply}");
    let later = json!({"type": "track", "event": "Page Viewed", "messageId": "fay-2",
        "userId": "user-fay", "timestamp": now()});
    assert_suppressed(&server, &later).await;

    // Segment's X-Signature (no time of its own) and a write key are not taken here.
    let segment_signed = client()
        .post(server.url("/privacy/forget"))
        .header("content-type", "application/json")
        .header("x-tracklayer-account", ACCOUNT)
        .header("x-tracklayer-environment", "production")
        .header(
            "x-signature",
            tracklayer::ingest::auth::sign_segment(
                &tracklayer::config::Secret::new(PRODUCTION_SECRET),
                body.as_bytes(),
            ),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let (status, reply) = json_of(segment_signed).await;
    assert_eq!(status, 401, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("X-TrackLayer-Signature"),
        "{reply}"
    );
    let with_write_key = client()
        .post(server.url("/privacy/forget"))
        .header("content-type", "application/json")
        .basic_auth(WRITE_KEY, Some(""))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(with_write_key.status(), 401);
    server.stop().await;
}

async fn an_undo_and_a_second_forget_reach_the_userid_the_first_one_unlinked(store: Store) {
    let (server, _dir) = dutch_server(store).await;
    post(
        &server,
        &identify("gus-1", "user-gus", "gus@example.com", "+31699990000"),
    )
    .await;
    let report = forgotten(&server, &json!({"email": "gus@example.com"})).await;
    assert_eq!(report["status"], "done", "{report:#}");
    let by_user = json!({"type": "track", "event": "Page Viewed", "messageId": "gus-2",
        "userId": "user-gus", "timestamp": now()});
    assert_suppressed(&server, &by_user).await;

    // Undone by the email alone: the userId the forget reached is lifted with it.
    let report = forgotten(&server, &json!({"email": "gus@example.com", "undo": true})).await;
    assert_eq!(report["status"], "lifted", "{report:#}");
    let reply = post(&server, &by_user).await;
    assert_eq!(reply["suppressed"], 0, "{reply}");
    assert!(server.trace("gus-2").await.is_some());

    // Forgotten again by the email, which no stored message names: the audit still knows the
    // userId, and what was stored under it in between goes.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let report = forgotten(&server, &json!({"email": "gus@example.com"})).await;
    assert_eq!(report["status"], "done", "{report:#}");
    assert!(server.trace("gus-2").await.is_none(), "{report:#}");
    let again = json!({"type": "track", "event": "Page Viewed", "messageId": "gus-3",
        "userId": "user-gus", "timestamp": now()});
    assert_suppressed(&server, &again).await;
    server.stop().await;
}

on_both_stores!(
    every_spelling_of_a_forgotten_person_is_suppressed,
    identifiers_that_name_nobody_are_refused_and_nothing_changes,
    a_signed_forget_is_taken_once_and_only_with_tracklayer_signatures,
    an_undo_and_a_second_forget_reach_the_userid_the_first_one_unlinked,
);

/// A captured forget replayed to another node of the fleet is refused there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forget_replayed_to_another_node_is_refused() {
    let Some(_) = common::postgres::server_url() else {
        return;
    };
    let db = common::postgres::TestDatabase::create().expect("a PostgreSQL server");
    let one = TestServer::start_on_postgres(&db.url, "").await;
    let two = TestServer::start_on_postgres(&db.url, "").await;
    post(
        &one,
        &identify("hal-1", "user-hal", "hal@example.com", "+31612121212"),
    )
    .await;
    let body = json!({"user_id": "user-hal"}).to_string();
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let to = |server: &TestServer| {
        signed_at(
            &client(),
            &server.url("/privacy/forget"),
            "production",
            PRODUCTION_SECRET,
            &body,
            &timestamp,
        )
    };
    let (status, reply) = json_of(to(&one).send().await.unwrap()).await;
    assert_eq!(
        (status, reply["report"]["status"].clone()),
        (200, json!("done"))
    );
    let (status, reply) = json_of(to(&two).send().await.unwrap()).await;
    assert_eq!(status, 409, "{reply}");
    assert_eq!(reply["code"], "replayed");
    one.stop().await;
    two.stop().await;
    std::thread::spawn(move || drop(db)).join().unwrap();
}
