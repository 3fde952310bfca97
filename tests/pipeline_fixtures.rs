//! Table-driven pipeline cases: one JSON file per case in tests/fixtures/pipeline/. Each case
//! posts its messages through the real signed ingest and compares `inspect --json` of the named
//! messages with the expected values (a subset match: every expected key must be there and equal).
//!
//! Case format:
//! ```json
//! { "description": "...",
//!   "config": "extra TOML ([mapping], [[destinations]]); default: the three test destinations",
//!   "steps": [ {"send": <message or array>, "env": "production"} | {"allow_replay": "production"} ],
//!   "expect": [ {"inspect": "<messageId>", "match": { ...subset of inspect JSON... }} ] }
//! ```
//! In "match", the string "$absent" means the key is missing or null, and "$present" means it
//! exists and is not null.
//!
//! The same cases run on both stores: the SQLite file and a PostgreSQL database (a fresh one per
//! case), so the pipeline's outcome cannot depend on where it is stored.

mod common;

use common::postgres::TestDatabase;
use common::*;
use serde_json::Value;

/// Where a case's server stores what it receives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Store {
    Sqlite,
    Postgres,
}

const DEFAULT_DESTINATIONS: &str = r#"
[[destinations]]
name = "meta"
kind = "meta_capi"
environments = ["production"]
consent = ["Advertising"]
pixel_id = "1234567890123456"
access_token = "EAAB_TEST"

[[destinations]]
name = "tiktok"
kind = "tiktok"
environments = ["production"]
consent = ["Advertising", "DataSharing"]
pixel_code = "CABCDEF1234567890XYZ"
access_token = "TT_TEST"

[[destinations]]
name = "warehouse"
kind = "warehouse"
"#;

/// Why `actual` does not contain `expected`, or None when it does.
fn mismatch(expected: &Value, actual: &Value, path: &str) -> Option<String> {
    match (expected, actual) {
        (Value::String(s), a) if s == "$absent" => {
            (!a.is_null()).then(|| format!("{path}: expected absent, got {a}"))
        }
        (Value::String(s), a) if s == "$present" => a
            .is_null()
            .then(|| format!("{path}: expected a value, got nothing")),
        (Value::Object(e), Value::Object(a)) => e.iter().find_map(|(k, ev)| {
            let av = a.get(k).unwrap_or(&Value::Null);
            mismatch(ev, av, &format!("{path}.{k}"))
        }),
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Some(format!(
                    "{path}: expected {} items, got {}: {actual}",
                    e.len(),
                    a.len()
                ));
            }
            e.iter()
                .zip(a)
                .enumerate()
                .find_map(|(i, (ev, av))| mismatch(ev, av, &format!("{path}[{i}]")))
        }
        (Value::Number(e), Value::Number(a)) => {
            let (e, a) = (
                e.as_f64().unwrap_or(f64::NAN),
                a.as_f64().unwrap_or(f64::NAN),
            );
            ((e - a).abs() > 1e-9).then(|| format!("{path}: expected {e}, got {a}"))
        }
        (e, a) => (e != a).then(|| format!("{path}: expected {e}, got {a}")),
    }
}

async fn run_case(path: &std::path::Path, store: Store) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let case: Value = serde_json::from_str(&text).map_err(|e| format!("bad fixture: {e}"))?;
    let extra = case["config"].as_str().unwrap_or(DEFAULT_DESTINATIONS);
    // The sync PostgreSQL client makes and drops the database off the async threads.
    let database = match store {
        Store::Sqlite => None,
        Store::Postgres => tokio::task::spawn_blocking(TestDatabase::create)
            .await
            .unwrap(),
    };
    let server = match &database {
        Some(db) => TestServer::start_on_postgres(&db.url, extra).await,
        None => TestServer::start_with_toml(extra).await,
    };
    let result = run_steps(&server, &case).await;
    server.stop().await;
    if let Some(db) = database {
        tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
    }
    result
}

async fn run_steps(server: &TestServer, case: &Value) -> Result<(), String> {
    for (i, step) in case["steps"]
        .as_array()
        .ok_or("no steps")?
        .iter()
        .enumerate()
    {
        if let Some(env) = step["allow_replay"].as_str() {
            server.allow_replay(env).await;
            continue;
        }
        let env = step["env"].as_str().unwrap_or("production");
        let secret = if env == "staging" {
            STAGING_SECRET
        } else {
            PRODUCTION_SECRET
        };
        let body = step["send"].to_string();
        let (status, reply) = server.post(env, secret, &body).await;
        if status != 200 {
            return Err(format!("step {i}: HTTP {status}: {reply}"));
        }
        if let Some(expected) = step.get("reply") {
            if let Some(why) = mismatch(expected, &reply, &format!("step {i} reply")) {
                return Err(why);
            }
        }
    }
    let expectations = case["expect"].as_array().ok_or("no expect")?;
    let ids = expectations
        .iter()
        .map(|e| e["inspect"].as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or("inspect needs a messageId")?;
    let traces = server.traces(ids).await;
    for (expectation, (id, trace)) in expectations.iter().zip(traces) {
        let trace = trace.ok_or_else(|| format!("nothing stored for {id}"))?;
        let actual = tracklayer::inspect::to_json(&trace);
        if let Some(why) = mismatch(&expectation["match"], &actual, &id) {
            return Err(format!(
                "{why}\n--- inspect {id}:\n{}",
                serde_json::to_string_pretty(&actual).unwrap()
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_fixtures_on_sqlite() {
    run_all(Store::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_fixtures_on_postgres() {
    if common::postgres::server_url().is_none() {
        return;
    }
    run_all(Store::Postgres).await;
}

async fn run_all(store: Store) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pipeline");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 40,
        "expected at least 40 cases, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        if let Err(why) = run_case(file, store).await {
            failures.push(format!(
                "{}: {why}",
                file.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{store:?}: {} of {} cases failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}
