//! The mapping table reloads when its file changes; a broken edit keeps the table in force.

mod common;

use std::time::Duration;

use common::*;
use tracklayer::destinations::Setup;

const MAPPING_V1: &str = r#"
version = 1
[[events]]
segment = "Order Completed"
canonical = "purchase"
"#;

const MAPPING_V2: &str = r#"
version = 2
[[events]]
segment = "Order Completed"
canonical = "purchase"
[[events]]
segment = "Demo Booked"
canonical = "schedule"
"#;

async fn outcome_of(url: &str, id: &str) -> serde_json::Value {
    let body = format!(
        r#"{{"type":"track","event":"Demo Booked","messageId":"{id}","userId":"u-1","properties":{{}}}}"#
    );
    let (status, reply) = json_of(
        signed(&client(), url, "production", PRODUCTION_SECRET, &body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    reply
}

#[tokio::test]
async fn mapping_file_changes_apply_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, MAPPING_V1).unwrap();
    let config_path = dir.path().join("tracklayer.toml");
    std::fs::write(
        &config_path,
        config_text_with(&db, "", "[mapping]\nfile = \"mapping.toml\"\n"),
    )
    .unwrap();
    let setup = Setup::load(&config_path).unwrap();
    assert_eq!(setup.config.mapping.table.version, 1);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/segment/events", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tracklayer::run(setup, listener, async {
        let _ = stopped.await;
    }));

    let reply = outcome_of(&url, "before").await;
    assert_eq!(reply["unmapped"], 1, "{reply}");

    // A broken edit is rejected; the v1 table stays in force.
    std::fs::write(
        &mapping,
        "version = 3\n[[events]]\nsegment = \"Demo Booked\"\ncanonical = \"Schedule\"\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let reply = outcome_of(&url, "broken").await;
    assert_eq!(reply["unmapped"], 1, "{reply}");

    std::fs::write(&mapping, MAPPING_V2).unwrap();
    let mut mapped = None;
    for attempt in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let reply = outcome_of(&url, &format!("after-{attempt}")).await;
        if reply["mapped"] == 1 {
            assert_eq!(reply["events"][0]["name"], "schedule");
            mapped = Some(format!("after-{attempt}"));
            break;
        }
    }
    let mapped = mapped.expect("the new mapping row was never picked up");
    let _ = stop.send(());
    server.await.unwrap().unwrap();

    let reader = tracklayer::store::StoreReader::open(&db).unwrap();
    let trace = reader.trace("before").unwrap().unwrap();
    assert_eq!(tracklayer::inspect::status(&trace), "unmapped");
    assert_eq!(trace.unmapped.unwrap().mapping_version, 1);
    let trace = reader.trace(&mapped).unwrap().unwrap();
    assert_eq!(trace.events[0].canonical.mapping_version, 2);
}
