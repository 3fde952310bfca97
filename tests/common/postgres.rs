//! A fresh PostgreSQL database per test, on the server named by `TRACKLAYER_TEST_POSTGRES_URL`
//! (`eval "$(tests/postgres/cluster.sh start)"` starts one; `.ci/run` does). Without it the
//! PostgreSQL tests fail and say how to start one; `TRACKLAYER_SKIP_POSTGRES=1` skips them for
//! a local run, loudly.

use std::sync::atomic::{AtomicU32, Ordering};

pub const URL_VARIABLE: &str = "TRACKLAYER_TEST_POSTGRES_URL";

/// The server's URL, or None when the developer asked to skip (printed so it is not missed).
pub fn server_url() -> Option<String> {
    if let Ok(url) = std::env::var(URL_VARIABLE) {
        return Some(url);
    }
    if std::env::var("TRACKLAYER_SKIP_POSTGRES").as_deref() == Ok("1") {
        // Straight to stderr, past the test harness's capture, so a skip is never silent.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"\n*** TRACKLAYER_SKIP_POSTGRES=1: PostgreSQL tests NOT RUN (CI runs them) ***\n",
        );
        return None;
    }
    panic!(
        "{URL_VARIABLE} is not set: the PostgreSQL tests need a real server.\n\
         Start a throwaway one with `eval \"$(tests/postgres/cluster.sh start)\"` \
         (apt-get install -y postgresql first), or set TRACKLAYER_SKIP_POSTGRES=1 to skip them locally."
    );
}

/// A database created for one test and dropped after it.
pub struct TestDatabase {
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// None only when the developer skips PostgreSQL tests. Safe from async tests: the sync
    /// client runs on a plain thread.
    pub fn create() -> Option<TestDatabase> {
        std::thread::spawn(Self::create_here).join().unwrap()
    }

    fn create_here() -> Option<TestDatabase> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let admin_url = server_url()?;
        let name = format!(
            "tl_test_{}_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            chrono::Utc::now().timestamp_micros() % 1_000_000
        );
        let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL ({URL_VARIABLE}): {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let url = with_database(&admin_url, &name);
        Some(TestDatabase {
            url,
            name,
            admin_url,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(mut admin) = postgres::Client::connect(&admin_url, postgres::NoTls) {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        })
        .join();
    }
}

/// `url` with its database name replaced.
fn with_database(url: &str, database: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("a postgres:// URL");
    parsed.set_path(&format!("/{database}"));
    parsed.to_string()
}
