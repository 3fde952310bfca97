//! Which config a command runs on: `--config` / `TRACKLAYER_CONFIG`, `./tracklayer.toml`, or the
//! embedded default, whose workspace (database, secret, secret file) is created whole or not
//! at all.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use crate::config::{self, Config, Needs, Secret};
use crate::destinations::Setup;
use crate::store;

pub const DEFAULT_CONFIG: &str = "tracklayer.toml";
pub const DEFAULT_DB: &str = "tracklayer.db";
/// The embedded default's credentials, for people and scripts (`. ./tracklayer.secret`).
pub const SECRET_FILE: &str = "tracklayer.secret";
pub const LOCAL_SECRET_KEY: &str = "secret.development";
const LOCAL_WRITE_KEY: &str = "write_key.development";
pub const SECRET_VAR: &str = "TRACKLAYER_SECRET_DEVELOPMENT";
pub const WRITE_KEY_VAR: &str = "TRACKLAYER_WRITE_KEY_DEVELOPMENT";

/// The config file a command uses: the one named (`--config`, `TRACKLAYER_CONFIG`), else
/// `./tracklayer.toml` if it exists; `None` means the embedded default.
pub fn config_file(named: Option<&Path>) -> Option<PathBuf> {
    match named {
        Some(path) => Some(path.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
    }
}

/// A loaded config and where it came from.
pub struct Loaded {
    pub setup: Setup,
    pub source: Source,
}

pub enum Source {
    File(PathBuf),
    Embedded {
        /// This start created the workspace (its secret has never been shown).
        created: bool,
        /// Where the credentials are written for people and scripts.
        secret_file: PathBuf,
    },
}

impl Loaded {
    pub fn config(&self) -> &Config {
        &self.setup.config
    }
}

/// Load the config a command runs on. `create`: a command that runs the pipeline creates the
/// embedded default's workspace if there is none; every other command only reads it.
pub fn load(named: Option<&Path>, needs: &Needs, create: bool) -> Result<Loaded> {
    if let Some(path) = config_file(named) {
        return Ok(Loaded {
            setup: Setup::load_for(&path, needs)?,
            source: Source::File(path),
        });
    }
    let db = PathBuf::from(DEFAULT_DB);
    let secret_file = PathBuf::from(SECRET_FILE);
    let (secret, write_key, created) = if create {
        let (secret, write_key, created) = open_or_create_workspace(&db, &secret_file)?;
        (secret, Some(write_key), created)
    } else {
        let secret = store::read_local_secret(&db, LOCAL_SECRET_KEY)
            .ok()
            .flatten()
            .ok_or_else(|| {
                anyhow!(
                    "no {DEFAULT_CONFIG} and no embedded default in ./{DEFAULT_DB}: run `tracklayer serve` first, or pass --config (or set TRACKLAYER_CONFIG)"
                )
            })?;
        let write_key = store::read_local_secret(&db, LOCAL_WRITE_KEY)
            .ok()
            .flatten();
        (secret, write_key, false)
    };
    Ok(Loaded {
        setup: Setup::without_destinations(config::embedded_default(
            db,
            Secret::new(secret),
            write_key.map(Secret::new),
        )),
        source: Source::Embedded {
            created,
            secret_file,
        },
    })
}

/// The embedded default's database with its secret and write key, and the secret file beside
/// it. A workspace whose secret file cannot be written is removed again, so a failed first
/// start leaves nothing behind that would hide its secret.
fn open_or_create_workspace(db: &Path, secret_file: &Path) -> Result<(String, String, bool)> {
    let existed = db.exists();
    let created = (|| -> Result<(String, String, bool)> {
        let (secret, created) = store::local_secret(db, LOCAL_SECRET_KEY)?;
        let write_key = store::local_write_key(db, LOCAL_WRITE_KEY)?;
        // Written once per workspace: a file left from a deleted database holds a dead secret.
        if created || !secret_file.exists() {
            write_private(
                secret_file,
                secret_file_text(&secret, &write_key).as_bytes(),
            )
            .with_context(|| format!("cannot write {}", secret_file.display()))?;
        }
        Ok((secret, write_key, created))
    })();
    if created.is_err() && !existed {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = db.as_os_str().to_owned();
            path.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(path));
        }
    }
    created
}

fn secret_file_text(secret: &str, write_key: &str) -> String {
    format!(
        "# TrackLayer's embedded default: the credentials of its `development` environment,\n\
         # kept in ./{DEFAULT_DB} as well. `tracklayer send --env development` signs with the\n\
         # secret by itself; SDKs posting to /v1/* use the write key. Shell: . ./{SECRET_FILE}\n\
         {SECRET_VAR}={secret}\n\
         {WRITE_KEY_VAR}={write_key}\n"
    )
}

/// Write a file only its owner can read (configs and secret files hold secrets).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    std::io::Write::write_all(&mut options.open(path)?, contents)
}

/// "unknown environment `x`; configured: a, b" — for a name the config does not have.
pub fn unknown<'a>(what: &str, name: &str, known: impl Iterator<Item = &'a str>) -> anyhow::Error {
    let known: Vec<&str> = known.collect();
    anyhow!(
        "unknown {what} `{name}`; configured: {}",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )
}

/// The store a config names, for people: the SQLite file, or the PostgreSQL server and
/// database without credentials.
pub fn store_name(config: &Config) -> String {
    let location = store::StoreLocation::of(&config.storage);
    match location.is_fleet() {
        true => format!("{} (fleet)", location.describe()),
        false => location.describe(),
    }
}

/// What `serve` says on start, on stderr (stdout stays clean for scripts). The secret itself
/// only reaches a terminal: a service manager's log gets the path of the secret file.
pub fn print_banner(loaded: &Loaded, addr: std::net::SocketAddr, stderr_is_terminal: bool) {
    use super::output::status;
    let config = loaded.config();
    status(format!(
        "TrackLayer listening on http://{addr}/segment/events"
    ));
    if let Source::File(path) = &loaded.source {
        status(format!("  config       {}", path.display()));
    }
    status(format!("  database     {}", store_name(config)));
    status(format!("  account      {}", config.workspace.account));
    let names: Vec<&str> = config
        .environments
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    status(format!("  environments {}", names.join(", ")));
    if let Source::Embedded {
        created,
        secret_file,
    } = &loaded.source
    {
        status(format!(
            "  (embedded default: no {DEFAULT_CONFIG}; `tracklayer init` writes one)"
        ));
        if *created && stderr_is_terminal {
            status(format!(
                "  secret       {}",
                config.environments[0].secret.expose()
            ));
            if let Some(key) = &config.environments[0].write_key {
                status(format!(
                    "  write key    {} (for SDKs posting to /v1/*)",
                    key.expose()
                ));
            }
        }
        status(format!(
            "  credentials  {} (owner-only; `tracklayer send --env development` needs no copy)",
            secret_file.display()
        ));
    }
}
