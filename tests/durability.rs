//! Kill the real binary with SIGKILL while clients are posting; after a restart every message
//! that was answered 2xx must be in the database.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("durable.db");
    let config = dir.path().join("tracklayer.toml");
    std::fs::write(&config, config_text(&db, "")).unwrap();

    let (mut child, addr) = start_serve(&config);
    let url = format!("http://{addr}/segment/events");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let mut clients = Vec::new();
    for worker in 0..8 {
        let (url, acked, failed, stop) = (url.clone(), acked.clone(), failed.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let client = client();
            for n in 0.. {
                if stop.load(Ordering::Relaxed) || n > 100_000 {
                    break;
                }
                let ids: Vec<String> = (0..5).map(|i| format!("w{worker}-r{n}-m{i}")).collect();
                let body = format!(
                    "[{}]",
                    ids.iter()
                        .map(|id| track(id, "Order Completed"))
                        .collect::<Vec<_>>()
                        .join(",")
                );
                match signed(&client, &url, "production", PRODUCTION_SECRET, &body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                {
                    Ok(response) if response.status().is_success() => {
                        acked.lock().unwrap().extend(ids);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }

    // Let traffic build up, then kill mid-stream: no graceful shutdown, no flush.
    while acked.lock().unwrap().len() < 2_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    // Clients keep trying against the dead server for a moment: those must not count as acked.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(
        failed.load(Ordering::Relaxed) > 0,
        "the kill happened while clients were posting"
    );

    // Restart on the same database, then check every acknowledged message.
    let (mut restarted, addr) = start_serve(&config);
    let health = client()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let reader = tracklayer::store::StoreReader::open(&db).unwrap();
    let acked = acked.lock().unwrap().clone();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !reader.has_accepted("production", id).unwrap())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    restarted.kill().unwrap();
    restarted.wait().unwrap();
}
