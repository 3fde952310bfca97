//! Sending the deletions a forget queued: leased from the store like deliveries (so two nodes
//! never send one twice at once), retried on the destination's schedule, the payload cleared
//! once the platform has answered for good. No request body is recorded: it names the person.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::delivery::policy::next_delay;
use crate::delivery::sender::{http_client, send};
use crate::destinations::privacy::{build, classify, ForwardVerdict};
use crate::destinations::Destination;
use crate::store::model::privacy::{DueForward, ForwardResult};
use crate::store::privacy::PrivacyStore;
use crate::store::{now_ms, StoreError, StoreLocation};

/// How long a leased forward is this sender's before another may take it.
const LEASE_MS: i64 = 60_000;
/// Klaviyo takes three deletion jobs a second in a burst: a few at a time keep well under.
const AT_ONCE: usize = 3;

/// The forwarder's store: one connection kept from one poll to the next (a fleet's server is
/// not asked for a new session every two seconds by every node), opened again after a failure.
#[derive(Clone)]
pub struct ForwardStore {
    location: StoreLocation,
    open: Arc<Kept>,
}

/// The kept connection.
struct Kept(Mutex<Option<Box<dyn PrivacyStore>>>);

impl Drop for Kept {
    fn drop(&mut self) {
        // The PostgreSQL client blocks while it closes, which must not happen on an async
        // task's thread (where the last handle usually goes): it closes on a thread of its own.
        let kept = self
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(store) = kept {
            std::thread::spawn(move || drop(store));
        }
    }
}

impl ForwardStore {
    pub fn new(location: StoreLocation) -> ForwardStore {
        ForwardStore {
            location,
            open: Arc::new(Kept(Mutex::new(None))),
        }
    }

    /// Run `work` on the kept connection, on a thread of its own (the PostgreSQL client must
    /// not run on an async task's). A failed call drops the connection: the next one reopens.
    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut dyn PrivacyStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut open = this.open.0.lock().unwrap_or_else(PoisonError::into_inner);
            let result = match open.as_mut() {
                Some(store) => work(store.as_mut()),
                None => this
                    .location
                    .privacy()
                    .and_then(|store| work(open.insert(store).as_mut())),
            };
            if result.is_err() {
                *open = None;
            }
            let _ = tx.send(result);
        });
        rx.await
            .unwrap_or(Err(StoreError::Unsupported("the forward thread panicked")))
    }
}

/// Lease what is due, send it, record each outcome. Returns how many were sent.
pub async fn send_due(
    store: &ForwardStore,
    destinations: &[Destination],
) -> Result<usize, StoreError> {
    let lease = store
        .with(|store| store.due_forwards(now_ms(), LEASE_MS, AT_ONCE))
        .await?;
    if lease.is_empty() {
        return Ok(0);
    }
    let client = http_client();
    let mut results = Vec::with_capacity(lease.len());
    for due in &lease {
        results.push(attempt(&client, destinations, due).await);
    }
    let sent = results.len();
    store
        .with(move |store| {
            for result in &results {
                store.forward_done(result, now_ms())?;
            }
            // A finished forward's payload (the person's email or phone) was just cleared:
            // make the old bytes unreadable as a forget does.
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
    let store = ForwardStore::new(location);
    loop {
        match send_due(&store, &destinations).await {
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
