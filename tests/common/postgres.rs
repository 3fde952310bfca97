//! A fresh PostgreSQL database per test, on the server named by `TRACKLAYER_TEST_POSTGRES_URL`
//! (`eval "$(tests/prepare.sh)"` starts one; `.ci/run` does). Without it the
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
         Start a throwaway one with `eval \"$(tests/prepare.sh)\"` \
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

/// A PostgreSQL server of a test's own, on a free port, that the test may stop and start again
/// (the shared test server must not restart under other tests). From the distribution's
/// packages, as `tests/postgres/cluster.sh` runs them; as root it belongs to `postgres`.
pub struct PrivateServer {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
}

impl PrivateServer {
    /// None only when PostgreSQL tests are skipped (`TRACKLAYER_SKIP_POSTGRES=1`).
    pub fn start() -> Option<PrivateServer> {
        server_url()?;
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed: apt-get install -y postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("no PostgreSQL server binaries under /usr/lib/postgresql");
        let dir = tempfile::tempdir().unwrap();
        let root = is_root();
        if root {
            std::process::Command::new("chmod")
                .args(["755"])
                .arg(dir.path())
                .status()
                .unwrap();
            std::process::Command::new("chown")
                .args(["postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = PrivateServer { port, dir, bin };
        let data = server.dir.path().join("data");
        let out = server
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.start_again();
        Some(server)
    }

    fn command(&self, program: &str) -> std::process::Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            std::process::Command::new(path)
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stop the server (fast: connections are cut, as in a crash or a restart).
    pub fn stop(&self) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start it (again) on the same port and data.
    pub fn start_again(&self) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.path().display()
            ))
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// Whether this process runs as root (then the server runs as `postgres`).
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
