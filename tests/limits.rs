//! Request and connection limits over real loopback HTTP: what one request may cost, what a slow
//! or idle client may hold, and what a body that ends early gets.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Raw HTTP/1.1 with TrackLayer's signature over `body`, with `extra` header lines.
fn signed_request(server: &TestServer, body: &[u8], extra: &str) -> Vec<u8> {
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signature = tracklayer::ingest::auth::sign_tracklayer(
        &tracklayer::config::Secret::new(PRODUCTION_SECRET),
        &timestamp,
        body,
    );
    let mut request = format!(
        "POST /segment/events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         X-TrackLayer-Account: {ACCOUNT}\r\nX-TrackLayer-Environment: production\r\n\
         X-TrackLayer-Timestamp: {timestamp}\r\nX-TrackLayer-Signature: {signature}\r\n{extra}\r\n",
        server.addr
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Read until the peer closes or `limit` passes; what arrived.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut received)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&received).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_million_tiny_elements_are_refused_with_the_limit_named_and_nothing_stored() {
    let server = TestServer::start().await;
    // 4 MB of `{}`: under the body limit, far over the message limit.
    let body = format!("[{}{{}}]", "{},".repeat(1_390_000));
    assert!(body.len() < 4 * 1024 * 1024);
    let (status, reply) = server.post("production", PRODUCTION_SECRET, &body).await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(
        reply["message"],
        "the request carries more than 5000 messages (server.max_messages_per_request); Segment sends at most 4000 per batch, lower batch_size"
    );
    let stopped = server.stop().await;
    let reader = stopped.reader();
    assert_eq!(
        reader.message_counts().unwrap(),
        (0, 0, 0),
        "nothing stored"
    );
    let refused = reader.rejection_counts(0).unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].reason_code, "too_many_messages");
    assert_eq!(refused[0].status_code, 413);
}

#[tokio::test]
async fn a_megabyte_message_id_is_invalid_and_stored_clipped() {
    let server = TestServer::start_with("max_message_bytes = 2000000").await;
    let long_id = "x".repeat(1_000_000);
    let body = format!(
        r#"[{},{{"type":"track","event":"Order Completed","messageId":"{long_id}","userId":"u-1"}}]"#,
        track("m-ok", "Order Completed")
    );
    let (status, reply) = server.post("production", PRODUCTION_SECRET, &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 1);
    assert_eq!(reply["invalid"], 1);
    assert_eq!(
        reply["problems"][0]["reason"],
        "messageId is 1000000 characters; Segment limits it to 100"
    );
    let shown = reply["problems"][0]["messageId"].as_str().unwrap();
    assert!(
        shown.len() < 200 && shown.ends_with("(1000000 bytes)"),
        "{shown}"
    );
    let stopped = server.stop().await;
    let stored = stopped
        .reader()
        .messages_of_request(reply["request_id"].as_str().unwrap())
        .unwrap();
    let invalid = stored.iter().find(|m| m.status == "invalid").unwrap();
    // The messageId index holds the clipped copy, never the megabyte.
    assert!(invalid.message_id.as_deref().unwrap().len() < 200);
}

#[tokio::test]
async fn an_oversized_invalid_message_keeps_its_first_bytes_and_its_size() {
    let server = TestServer::start().await;
    let big = "y".repeat(100_000);
    let body = format!(
        r#"{{"type":"track","event":"x","messageId":"m-big","userId":"u","properties":{{"p":"{big}"}}}}"#
    );
    let (status, reply) = server.post("production", PRODUCTION_SECRET, &body).await;
    assert_eq!(status, 200);
    assert!(reply["problems"][0]["reason"]
        .as_str()
        .unwrap()
        .starts_with(&format!("message is {} bytes", body.len())));
    let stopped = server.stop().await;
    let reader = stopped.reader();
    let stored = &reader.messages_by_message_id("m-big").unwrap()[0];
    assert_eq!(stored.raw.len(), 32 * 1024);
    assert_eq!(stored.raw_bytes, Some(body.len() as i64));
}

#[tokio::test]
async fn the_reply_lists_at_most_100_problems_and_counts_the_rest() {
    let server = TestServer::start().await;
    let body = format!("[{}{{}}]", "{},".repeat(249));
    let (status, reply) = server.post("production", PRODUCTION_SECRET, &body).await;
    assert_eq!(status, 200);
    assert_eq!(reply["invalid"], 250);
    assert_eq!(reply["problems"].as_array().unwrap().len(), 100);
    assert_eq!(reply["problems_not_listed"], 150);
}

#[tokio::test]
async fn a_slow_header_client_is_dropped_while_a_normal_client_is_served() {
    let server = TestServer::start_with("header_timeout_secs = 1").await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"POST /segment/events HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Meanwhile a normal client gets its answer.
    let (status, _) = server
        .post(
            "production",
            PRODUCTION_SECRET,
            &track("m-normal", "Order Completed"),
        )
        .await;
    assert_eq!(status, 200);
    let answer = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    assert!(
        answer.is_some(),
        "the server never closed a client that stopped mid-headers"
    );
    // An idle keep-alive connection is closed the same way.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let answer = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(answer.is_some(), "an idle connection was kept open");
}

#[tokio::test]
async fn a_body_that_ends_early_is_a_400_saying_how_much_arrived() {
    let server = TestServer::start().await;
    let body = track("m-cut", "Order Completed");
    let mut request = signed_request(
        &server,
        body.as_bytes(),
        &format!("Content-Length: {}\r\n", body.len()),
    );
    request.truncate(request.len() - body.len() + 40);
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    stream.shutdown().await.unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains(&format!("body ended after 40 of {} bytes", body.len())),
        "{answer}"
    );
    let stopped = server.stop().await;
    let reader = stopped.reader();
    assert_eq!(reader.message_counts().unwrap(), (0, 0, 0));
    let kept = reader.recent_rejections(5).unwrap();
    assert_eq!(kept[0].reason_code, "incomplete_body");
    assert_eq!(kept[0].status_code, 400);
}

#[tokio::test]
async fn a_body_that_stalls_is_a_408() {
    let server = TestServer::start_with("body_timeout_secs = 1").await;
    let body = track("m-stall", "Order Completed");
    let mut request = signed_request(
        &server,
        body.as_bytes(),
        &format!("Content-Length: {}\r\n", body.len()),
    );
    request.truncate(request.len() - body.len() + 10);
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .expect("a stalled body is answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&buffer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 1 s"), "{answer}");
    assert!(
        answer.contains(&format!("10 of {} bytes", body.len())),
        "{answer}"
    );
}

/// RFC 9112 §6.3: with both headers, Transfer-Encoding wins and the connection is closed after
/// the answer (a smuggling guard). It must be answered, never left waiting.
#[tokio::test]
async fn content_length_with_chunked_is_read_as_chunked_and_the_connection_closed() {
    let server = TestServer::start().await;
    let body = track("m-both", "Order Completed");
    let mut request = signed_request(
        &server,
        b"",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    );
    request.extend_from_slice(format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).as_bytes());
    // The signature covers the body as sent in the chunks.
    let request = String::from_utf8(request).unwrap();
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signature = tracklayer::ingest::auth::sign_tracklayer(
        &tracklayer::config::Secret::new(PRODUCTION_SECRET),
        &timestamp,
        body.as_bytes(),
    );
    let request = request
        .lines()
        .map(|line| {
            if line.starts_with("X-TrackLayer-Timestamp:") {
                format!("X-TrackLayer-Timestamp: {timestamp}")
            } else if line.starts_with("X-TrackLayer-Signature:") {
                format!("X-TrackLayer-Signature: {signature}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n\r\n";
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
}

/// A body over the limit is answered 413 before it is read, and the client reads that answer:
/// the connection reads and drops what is still coming instead of closing on it (a close with
/// unread bytes resets the connection, and a client still writing then sees a broken pipe;
/// Segment retries that for hours where it drops a 413). Tried as the clients that write their
/// whole body before reading (Python's http.client, Node's fetch) do it, and with curl; the
/// same for a refusal at the headers (401) and the content type (415).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_a_413_the_client_can_read() {
    let server = TestServer::start().await;
    let write_everything_then_read = |headers: String, size: usize| {
        let addr = server.addr;
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let head = format!(
                "POST /v1/batch HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {size}\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).unwrap();
            let chunk = vec![b' '; 1 << 20];
            let mut sent = 0;
            while sent < size {
                let n = chunk.len().min(size - sent);
                stream
                    .write_all(&chunk[..n])
                    .unwrap_or_else(|e| panic!("writing the body after {sent} bytes: {e}"));
                sent += n;
            }
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer
        })
        .join()
        .unwrap()
    };
    let key = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"))
    };
    let json = "Content-Type: application/json\r\n";
    for size in [5_000_000, 50_000_000] {
        for _ in 0..3 {
            let answer =
                write_everything_then_read(format!("{json}Authorization: Basic {key}\r\n"), size);
            assert!(answer.starts_with("HTTP/1.1 413"), "{size}: {answer}");
            assert!(answer.contains("payload_too_large"), "{answer}");
        }
    }
    let answer = write_everything_then_read(
        format!("{json}Authorization: Basic d2tfd3Jvbmc6\r\n"),
        50_000_000,
    );
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let answer = write_everything_then_read(
        format!("Content-Type: text/plain\r\nAuthorization: Basic {key}\r\n"),
        50_000_000,
    );
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");

    // curl, without `Expect: 100-continue` (so it sends the whole body, as Segment does).
    let dir = tempfile::tempdir().unwrap();
    for size in [5_000_000usize, 50_000_000] {
        let file = dir.path().join(format!("body-{size}"));
        std::fs::write(&file, vec![b' '; size]).unwrap();
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "-H",
                "Expect:",
                "-H",
                "Content-Type: application/json",
            ])
            .args(["-u", &format!("{WRITE_KEY}:"), "-w", "\n%{http_code}"])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(server.url("/v1/batch"))
            .output()
            .expect("curl is installed (tests/prepare.sh installs it)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.ends_with("\n413") && stdout.contains("payload_too_large"),
            "curl, {size} bytes: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    server.stop().await;
}
