//! Health as a load balancer sees it: `/readyz` turns unready when the disk under the database
//! is full and ready again once there is room; SIGTERM under load drains without losing an
//! acknowledged message.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A 3 MB tmpfs, unmounted on drop: a disk that fills up. Needs root (CI runs as root).
struct TinyDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TinyDisk {
    fn mount() -> TinyDisk {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a tiny tmpfs to fill a disk and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TinyDisk { path, _dir: dir }
    }

    /// Fill what is left with a file; returns its path.
    fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

async fn readyz(server: &TestServer) -> (u16, Value) {
    json_of(client().get(server.url("/readyz")).send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_unready_on_a_full_disk_and_ready_once_there_is_room() {
    let disk = TinyDisk::mount();
    let db = disk.path.join("tracklayer.db");
    let server = TestServer::start_on(&db, "").await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);

    let filler = disk.fill();
    // Writes need room: traffic (and the probe's own write) run into the full disk.
    let start = Instant::now();
    let body = loop {
        let _ = server
            .post(
                "production",
                PRODUCTION_SECRET,
                &track(
                    &format!("full-{}", start.elapsed().as_millis()),
                    "Order Completed",
                ),
            )
            .await;
        let (status, body) = readyz(&server).await;
        if status == 503 {
            break body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still ready on a full disk: {body}"
        );
    };
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["store_write"]["ok"], false, "{body}");
    assert!(
        body["checks"]["store_write"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("full")),
        "{body}"
    );
    assert_eq!(body["checks"]["writer"]["ok"], true, "{body}");
    // Liveness is not readiness: the process still serves.
    let live = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(live.status(), 200);

    std::fs::remove_file(filler).unwrap();
    let start = Instant::now();
    loop {
        let (status, body) = readyz(&server).await;
        if status == 200 {
            assert_eq!(body["ready"], true);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not ready again after the disk got room: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = server
        .post(
            "production",
            PRODUCTION_SECRET,
            &track("after", "Order Completed"),
        )
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// `tracklayer serve --config FILE` on a free port: the child and its address.
fn serve(dir: &Path) -> (std::process::Child, String) {
    let db = dir.join("tracklayer.db");
    let config = dir.join("tracklayer.toml");
    std::fs::write(&config, config_text(&db, "")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracklayer"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("TRACKLAYER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("TrackLayer listening on http://") {
            addr = Some(rest.trim_end_matches("/segment/events").to_string());
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, addr.expect("the listening line"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = serve(dir.path());
    let url = format!("http://{addr}/segment/events");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut senders = Vec::new();
    for worker in 0..8 {
        let (url, acked) = (url.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            let client = client();
            for i in 0.. {
                let id = format!("term-{worker}-{i}");
                let body = track(&id, "Order Completed");
                match signed(&client, &url, "production", PRODUCTION_SECRET, &body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().push(id),
                    // 503 while draining, then refused connections: not acknowledged.
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }));
    }
    // Under load for a moment, then the service manager stops it.
    let start = Instant::now();
    while acked.lock().unwrap().len() < 200 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no load got through"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id() as i32;
    // SAFETY: kill(2) with a child's pid and SIGTERM has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "serve must exit 0 after a SIGTERM");
    for s in senders {
        let _ = s.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 200);
    let reader = tracklayer::store::StoreReader::open(&dir.path().join("tracklayer.db")).unwrap();
    let mut missing = Vec::new();
    for id in &acked {
        let stored = reader.messages_by_message_id(id).unwrap();
        if !stored.iter().any(|m| m.status == "accepted") {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
}
