//! The PostgreSQL schema on a real server: migrations are applied once however many nodes start
//! together, and stepping through the versions gives the same schema as a fresh install.

mod common;

use common::postgres::TestDatabase;
use tracklayer::store::postgres::{self, MIGRATIONS};

fn client(db: &TestDatabase) -> ::postgres::Client {
    postgres::connect(&db.url).unwrap()
}

/// Tables, columns (with types, nullability, defaults) and indexes, as text to compare.
fn schema_of(db: &TestDatabase) -> Vec<String> {
    let mut c = client(db);
    let mut lines: Vec<String> = c
        .query(
            "SELECT table_name, column_name, data_type, is_nullable, COALESCE(column_default, '')
             FROM information_schema.columns WHERE table_schema = 'public'
             ORDER BY table_name, column_name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "column {}.{} {} null={} default={}",
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, String>(3),
                r.get::<_, String>(4)
            )
        })
        .collect();
    lines.extend(
        c.query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| format!("index {}", r.get::<_, String>(0))),
    );
    lines
}

#[test]
fn nodes_starting_together_apply_each_migration_once() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let reports: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| postgres::migrate(&mut client(&db)).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let latest = MIGRATIONS.len() as i32;
    assert!(reports.iter().all(|r| r.version == latest), "{reports:?}");
    let applied: usize = reports.iter().map(|r| r.applied.len()).sum();
    assert_eq!(
        applied,
        MIGRATIONS.len(),
        "each migration once: {reports:?}"
    );
    let rows: i64 = client(&db)
        .query_one("SELECT COUNT(*) FROM schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, MIGRATIONS.len() as i64);
    // A later start finds nothing to do.
    let again = postgres::migrate(&mut client(&db)).unwrap();
    assert!(again.applied.is_empty());
    assert!(schema_of(&db)
        .iter()
        .any(|l| l.contains("deliveries_ready")));
}

#[test]
fn stepping_through_versions_gives_the_fresh_schema() {
    let Some(fresh) = TestDatabase::create() else {
        return;
    };
    postgres::migrate(&mut client(&fresh)).unwrap();
    let expected = schema_of(&fresh);
    for first in 0..MIGRATIONS.len() {
        let stepped = TestDatabase::create().unwrap();
        postgres::migrate_to(&mut client(&stepped), first).unwrap();
        postgres::migrate(&mut client(&stepped)).unwrap();
        assert_eq!(
            schema_of(&stepped),
            expected,
            "upgraded from version {first}"
        );
    }
}

#[test]
fn a_failing_migration_leaves_no_trace_and_releases_the_lock() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    // A table in the way makes migration 1 fail; its transaction rolls back whole.
    client(&db)
        .batch_execute("CREATE TABLE nodes (something_else INTEGER)")
        .unwrap();
    let err = postgres::migrate(&mut client(&db)).unwrap_err().to_string();
    assert!(err.contains("migration 1 (0001_schema)"), "{err}");
    let requests: i64 = client(&db)
        .query_one(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'requests'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(requests, 0, "a failed migration applies nothing");
    // The lock was released: after the fix, another node migrates at once.
    client(&db).batch_execute("DROP TABLE nodes").unwrap();
    let report = postgres::migrate(&mut client(&db)).unwrap();
    let every: Vec<i32> = postgres::MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(report.applied, every);
}

#[test]
fn check_says_whether_the_server_answers_and_never_prints_the_password() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let write = |url: &str| {
        let path = dir.path().join("fleet.toml");
        std::fs::write(
            &path,
            format!(
                "[storage]\nurl = \"{url}\"\n[workspace]\naccount = \"acct_x\"\n[[environments]]\nname = \"production\"\nsecret = \"0123456789abcdef0123456789\"\n"
            ),
        )
        .unwrap();
        path
    };
    let check = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tracklayer"))
            .args(["check", "--config"])
            .arg(path)
            .output()
            .unwrap()
    };
    let out = check(&write(&db.url));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains(&format!(
            "the server answers; schema version 0 of {}",
            postgres::MIGRATIONS.len()
        )),
        "{all}"
    );
    assert!(all.contains("(fleet)"), "{all}");

    let out = check(&write("postgres://tl:hunter2-secret@127.0.0.1:1/none"));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("the server does not answer"), "{all}");
    assert!(all.contains("Connection refused"), "{all}");
    assert!(!all.contains("hunter2"), "the password was printed: {all}");
}

/// Graph rows keyed on a gmail spelling before one normal form are re-keyed on the mailbox; a
/// second spelling of a mailbox that already has its row keeps its own.
#[test]
fn gmail_addresses_in_the_graph_are_rekeyed_to_their_mailbox() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let mut c = client(&db);
    postgres::migrate_to(&mut c, 7).unwrap();
    for (value, profile) in [
        ("jane.doe+shop@googlemail.com", 1i64),
        ("janedoe@gmail.com.evil.io", 2),
        ("ann@example.com", 3),
        ("b.o.b@gmail.com", 4),
        ("bob@googlemail.com", 5),
        ("+x@gmail.com", 6),
    ] {
        c.execute(
            "INSERT INTO identities (kind, value, profile_id, first_seen_ms, last_seen_ms)
             VALUES ('email', $1, $2, $2, 1)",
            &[&value, &profile],
        )
        .unwrap();
    }
    postgres::migrate(&mut c).unwrap();
    let rows: Vec<(String, i64)> = c
        .query(
            "SELECT value, profile_id FROM identities ORDER BY profile_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let rows: Vec<(&str, i64)> = rows.iter().map(|(v, p)| (v.as_str(), *p)).collect();
    assert_eq!(
        rows,
        [
            ("janedoe@gmail.com", 1),
            ("janedoe@gmail.com.evil.io", 2),
            ("ann@example.com", 3),
            ("bob@gmail.com", 4),
            ("bob@googlemail.com", 5),
            ("+x@gmail.com", 6),
        ]
    );
}
