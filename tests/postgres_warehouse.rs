//! The warehouse destination writing to PostgreSQL, on a real server: one row per event_id in
//! the schema the user names, PostgreSQL types, idempotent, and the database password never
//! kept in what TrackLayer stores.

mod common;

use std::time::{Duration, Instant};

use common::postgres::TestDatabase;
use common::*;

const PASSWORD: &str = "warehouse-pw-0123456789";

/// The test database's URL with a password in it (the throwaway cluster trusts local
/// connections, so any password works, and the test can look for it).
fn url_with_password(db: &TestDatabase) -> String {
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_password(Some(PASSWORD)).unwrap();
    url.to_string()
}

fn purchase(message_id: &str, order: &str, revenue: f64) -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"{message_id}","userId":"u-1","timestamp":"{now}",
        "properties":{{"order_id":"{order}","revenue":{revenue},"currency":"EUR","products":[{{"product_id":"SKU-1","price":{revenue},"quantity":1}}]}}}}"#
    )
}

async fn delivered(server: &TestServer, message_id: &str) -> tracklayer::store::StoredDelivery {
    let start = Instant::now();
    loop {
        let trace = server.reader().trace(message_id).unwrap();
        if let Some(d) = trace
            .as_ref()
            .and_then(|t| t.deliveries.first())
            .filter(|d| d.status == "delivered" || d.status == "dead")
        {
            return d.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{message_id} not delivered: {trace:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The database is made and dropped with the sync client, outside the async runtime.
#[test]
fn events_land_once_in_the_named_schema() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(events_land_once(&db));
}

async fn events_land_once(db: &TestDatabase) {
    let server = TestServer::start_with_toml(&format!(
        r#"
[[destinations]]
name = "pg"
kind = "warehouse"
url = "{}"
schema = "analytics"
"#,
        url_with_password(db)
    ))
    .await;
    for body in [
        purchase("pg-1", "ORD-PG-1", 129.95),
        purchase("pg-1", "ORD-PG-1", 129.95), // Segment's retry
        purchase("pg-2", "ORD-PG-1", 129.95), // the same order again
        purchase("pg-3", "ORD-PG-2", 10.5),
    ] {
        let (status, reply) = server.post("production", PRODUCTION_SECRET, &body).await;
        assert_eq!(status, 200, "{reply}");
    }
    for id in ["pg-1", "pg-3"] {
        let d = delivered(&server, id).await;
        assert_eq!(d.status, "delivered", "{d:#?}");
    }

    // The sync client runs its own runtime: off this test's async threads.
    let url = db.url.clone();
    let (rows, version) = tokio::task::spawn_blocking(move || {
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        let rows = client
            .query(
                "SELECT event_id, event_name, order_id, value, currency, properties_json->>'order_id',
                        jsonb_array_length(items_json), extract(epoch from event_time)::bigint
                 FROM analytics.tracklayer_events ORDER BY order_id",
                &[],
            )
            .unwrap();
        let version: i32 = client
            .query_one("SELECT version FROM analytics.tracklayer_warehouse_schema", &[])
            .unwrap()
            .get(0);
        (rows, version)
    })
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "one row per event_id");
    assert_eq!(rows[0].get::<_, String>(1), "purchase");
    assert_eq!(
        rows[0].get::<_, Option<String>>(2).as_deref(),
        Some("ORD-PG-1")
    );
    assert_eq!(rows[0].get::<_, Option<f64>>(3), Some(129.95));
    assert_eq!(rows[0].get::<_, Option<String>>(4).as_deref(), Some("EUR"));
    assert_eq!(
        rows[0].get::<_, Option<String>>(5).as_deref(),
        Some("ORD-PG-1")
    );
    assert_eq!(rows[0].get::<_, Option<i32>>(6), Some(1));
    let event_time: i64 = rows[0].get(7);
    assert!((chrono::Utc::now().timestamp() - event_time).abs() < 120);
    let trace = server.reader().trace("pg-1").unwrap().unwrap();
    assert_eq!(rows[0].get::<_, String>(0), trace.events[0].event_id);
    assert_eq!(version, tracklayer::store::warehouse::SCHEMA_VERSION);

    // What TrackLayer keeps of the delivery names the table, never the password.
    let shown = serde_json::to_string(&tracklayer::inspect::to_json(&trace)).unwrap();
    assert!(
        shown.contains("#analytics.tracklayer_events"),
        "the request record names the table: {shown}"
    );
    assert!(!shown.contains(PASSWORD), "the password is kept: {shown}");
    let stopped = server.stop().await;
    let stored = std::fs::read(&stopped.db).unwrap();
    assert!(
        !stored
            .windows(PASSWORD.len())
            .any(|w| w == PASSWORD.as_bytes()),
        "the password is in the database file"
    );
}

#[test]
fn writing_the_same_events_again_adds_nothing_and_nodes_may_open_at_once() {
    use tracklayer::store::postgres::warehouse::PostgresWarehouse;
    use tracklayer::store::warehouse::WarehouseSink;
    let Some(db) = TestDatabase::create() else {
        return;
    };
    // Two nodes creating the table at the same moment.
    let mut sinks: Vec<PostgresWarehouse> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| PostgresWarehouse::open(&db.url, "shared").unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let event: tracklayer::pipeline::CanonicalEvent = serde_json::from_value(serde_json::json!({
        "event_id": "ev_purchase_1", "event_id_basis": "order_id O-1", "dedup_key": "O-1",
        "name": "purchase", "segment_event": "Order Completed", "mapping_version": 1,
        "message_id": "m-1", "environment": "production",
        "event_time": "2026-11-30T10:00:00.000Z", "event_time_ms": 1796032800000_i64,
        "properties": {"order_id": "O-1", "value": 5.0, "currency": "EUR"},
        "user": {}, "context": {}, "provenance": {}
    }))
    .unwrap();
    assert_eq!(sinks[0].write(&[&event]).unwrap(), 1);
    assert_eq!(
        sinks[1].write(&[&event]).unwrap(),
        0,
        "a re-sent event is a no-op"
    );
    let mut client = ::postgres::Client::connect(&db.url, ::postgres::NoTls).unwrap();
    let (count, at): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT COUNT(*), MAX(extract(epoch from event_time))::bigint FROM shared.tracklayer_events",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((count, at), (1, 1796032800));
    // A dropped connection is re-opened on the next write.
    client
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap();
    let mut again = event.clone();
    again.event_id = "ev_purchase_2".into();
    let result = sinks[0].write(&[&again]);
    let written = match result {
        Ok(n) => n,
        // The first use of a killed connection may report the error; the next one reconnects.
        Err(_) => sinks[0].write(&[&again]).unwrap(),
    };
    assert_eq!(written, 1);
}
