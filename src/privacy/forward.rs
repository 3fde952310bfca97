//! Sending the deletions a forget queued: leased from the store like deliveries (so two nodes
//! never send one twice at once), retried on the destination's schedule, the payload cleared
//! once the platform has answered for good. No request body is recorded: it names the person.

use std::time::Duration;

use crate::delivery::policy::next_delay;
use crate::delivery::sender::{http_client, send};
use crate::destinations::privacy::{build, classify, ForwardVerdict};
use crate::destinations::Destination;
use crate::store::model::privacy::{DueForward, ForwardResult};
use crate::store::{now_ms, StoreError, StoreLocation};

/// How long a leased forward is this sender's before another may take it.
const LEASE_MS: i64 = 60_000;
/// Klaviyo takes three deletion jobs a second in a burst: a few at a time keep well under.
const AT_ONCE: usize = 3;

/// Lease what is due, send it, record each outcome. Returns how many were sent.
pub async fn send_due(
    location: &StoreLocation,
    destinations: &[Destination],
) -> Result<usize, StoreError> {
    let lease = {
        let location = location.clone();
        blocking(move || {
            location
                .privacy()?
                .due_forwards(now_ms(), LEASE_MS, AT_ONCE)
        })
        .await?
    };
    if lease.is_empty() {
        return Ok(0);
    }
    let client = http_client();
    let mut results = Vec::with_capacity(lease.len());
    for due in &lease {
        results.push(attempt(&client, destinations, due).await);
    }
    let location = location.clone();
    let sent = results.len();
    blocking(move || {
        let mut store = location.privacy()?;
        for result in &results {
            store.forward_done(result, now_ms())?;
        }
        // A finished forward's payload (the person's email or phone) was just cleared: make
        // the old bytes unreadable as a forget does.
        if results.iter().any(|r| r.status != "pending") {
            store.compact()?;
        }
        Ok(())
    })
    .await?;
    Ok(sent)
}

async fn attempt(
    client: &reqwest::Client,
    destinations: &[Destination],
    due: &DueForward,
) -> ForwardResult {
    let now = now_ms();
    let dead = |why: String| ForwardResult {
        id: due.id,
        status: "dead",
        status_code: None,
        error: Some(why),
        next_attempt_ms: now,
    };
    let Some(dest) = destinations.iter().find(|d| d.name == due.destination) else {
        return dead(format!(
            "destination {} is no longer configured",
            due.destination
        ));
    };
    let request = match build(dest, &due.payload, now / 1000) {
        Ok(request) => request,
        Err(why) => return dead(why),
    };
    let (answer, _record) = send(client, dest, &request, 1, now).await;
    let (verdict, status_code, not_before) = match &answer {
        Ok(response) => (
            classify(response),
            Some(response.status),
            response.retry_after,
        ),
        Err(why) => (ForwardVerdict::Retry(why.clone()), None, None),
    };
    match verdict {
        ForwardVerdict::Delivered => ForwardResult {
            id: due.id,
            status: "delivered",
            status_code,
            error: None,
            next_attempt_ms: now,
        },
        ForwardVerdict::Dead(why) => ForwardResult {
            status_code,
            ..dead(why)
        },
        ForwardVerdict::Retry(why) => {
            let random =
                u64::from_le_bytes(*uuid_like_random().first_chunk::<8>().unwrap_or(&[0; 8]));
            match next_delay(&dest.retry_schedule, due.attempt, not_before, random) {
                Some(delay) => ForwardResult {
                    id: due.id,
                    status: "pending",
                    status_code,
                    error: Some(why),
                    next_attempt_ms: now + delay.as_millis() as i64,
                },
                None => ForwardResult {
                    status_code,
                    ..dead(format!("{why} (gave up after {} attempts)", due.attempt))
                },
            }
        }
    }
}

fn uuid_like_random() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes
}

/// Run store work on a plain thread (the PostgreSQL client must not run on an async task's).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.await
        .unwrap_or(Err(StoreError::Unsupported("the forward thread panicked")))
}

/// A node's forwarder: every few seconds, send what is due (whichever node queued it).
pub async fn run(
    location: StoreLocation,
    destinations: Vec<Destination>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let takes_forwards = destinations.iter().any(|d| {
        matches!(
            d.settings,
            crate::destinations::Settings::Klaviyo(_) | crate::destinations::Settings::Webhook(_)
        )
    });
    if !takes_forwards {
        return;
    }
    loop {
        match send_due(&location, &destinations).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "privacy forwards: the store did not answer"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
    }
}
