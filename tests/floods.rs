//! Floods: unauthenticated traffic and too many connections must cost a few rows and a few log
//! lines, not one of each per request. These tests read the log (see `common::log`), so they are
//! a test binary of their own.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn ten_thousand_refused_requests_leave_counts_a_few_examples_and_a_bounded_log() {
    capture_log();
    let server = TestServer::start().await;
    let url = server.url("/segment/events");
    let body = track("m-flood", "Order Completed");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let client = client();
                for _ in 0..1250 {
                    let response =
                        signed(&client, &url, "production", "not-the-secret-123456", &body)
                            .send()
                            .await
                            .unwrap();
                    assert_eq!(response.status(), 401);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stopped = server.stop().await;
    let reader = stopped.reader();
    let tallies = reader.rejection_counts(0).unwrap();
    let total: i64 = tallies.iter().map(|t| t.count).sum();
    assert_eq!(total, 10_000, "every refusal is counted");
    assert!(tallies
        .iter()
        .all(|t| t.reason_code == "bad_signature" && t.peer == "127.0.0.1"));
    let examples = reader.recent_rejections(1000).unwrap();
    assert!(
        (1..=6).contains(&examples.len()),
        "{} examples kept for 10,000 refusals (three a minute)",
        examples.len()
    );
    let text = logged();
    let refused_lines = text
        .lines()
        .filter(|l| l.contains("request refused"))
        .count();
    assert!(
        refused_lines <= 20,
        "{refused_lines} log lines for 10,000 refusals:\n{text}"
    );
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_are_logged() {
    capture_log();
    let server = TestServer::start_with("max_connections = 4").await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Let the server accept them before the next one arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = TcpStream::connect(server.addr).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), over.read_to_string(&mut answer))
        .await
        .expect("refused at once, not left waiting")
        .ok();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("Retry-After: 1"), "{answer}");
    assert!(logged().contains("connections refused: server.max_connections reached"));

    // A freed slot serves again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = TcpStream::connect(server.addr).await.unwrap();
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    again.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
