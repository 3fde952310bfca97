//! `tracklayer.toml`: the model, loading (with `env:VAR` secrets) and validation.
//!
//! Validation names the exact key and the reason, because `tracklayer check` is what an engineer
//! runs right before a deploy and "invalid config" alone is useless at 3 a.m.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod alerts;
mod validate;

pub use alerts::AlertsConfig;

pub use validate::{nearest, with_hint, Problems};

/// While ingest requests are waiting, delivery bookkeeping gets at most this share of the
/// writer's time by default (measured over the last second or so): a recovered platform's
/// backlog drains without taking ingest down, and is never starved either.
pub const DEFAULT_DELIVERY_SHARE: f64 = 0.2;

use crate::pipeline::mapping::MappingTable;
use crate::segment::MessageLimits;

/// Segment limits a `/batch` request to 500 KB, but Webhooks (Actions) batches can be far larger
/// (up to 4000 events); 4 MiB covers a recommended `batch_size` of 500 with room to spare.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Segment's largest batch is 4,000 events (Webhooks (Actions) `batch_size`); a little above it.
pub const DEFAULT_MAX_MESSAGES_PER_REQUEST: usize = 5000;
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;
/// Long enough for any real client on a slow link, short enough that idle or stalled sockets
/// do not pile up.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Segment opens a few dozen connections at most; this leaves room for SDKs posting directly.
pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;
/// ±5 minutes, as Standard Webhooks, Svix and Stripe use.
pub const DEFAULT_TIMESTAMP_TOLERANCE_SECS: u64 = 300;
/// Above Segment's 4 h retry window with a wide margin (DESIGN §1).
pub const DEFAULT_DEDUP_WINDOW_HOURS: u64 = 48;
/// How long the body of each request sent to a destination is kept (the request row stays).
pub const DEFAULT_REQUEST_BODY_RETENTION_DAYS: u64 = 3;
/// How long messages, events and finished deliveries are kept.
pub const DEFAULT_RETENTION_DAYS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    /// More than one problem, each on its own line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Many(Vec<ConfigError>),
}

impl ConfigError {
    /// Every problem as (key, reason); the key is `None` when the file as a whole is at fault
    /// (unreadable, not TOML).
    pub fn problems(&self) -> Vec<(Option<&str>, String)> {
        match self {
            ConfigError::Read { source, .. } => vec![(None, format!("cannot read it: {source}"))],
            ConfigError::Parse { message, .. } => vec![(None, message.clone())],
            ConfigError::Invalid { key, reason } => vec![(Some(key.as_str()), reason.clone())],
            ConfigError::Many(all) => all.iter().flat_map(ConfigError::problems).collect(),
        }
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A secret that never shows up in logs, `Debug` output or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    /// The `env:VAR` a command left unread because it does not use this secret (see [`Needs`]).
    unresolved: Option<String>,
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret {
            value: value.into(),
            unresolved: None,
        }
    }

    /// A secret the running command does not use: its variable was not read. It exposes as
    /// empty, so using it by mistake fails authentication instead of leaking anything.
    pub fn unresolved(var: &str) -> Self {
        Secret {
            value: String::new(),
            unresolved: Some(var.to_string()),
        }
    }

    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn is_resolved(&self) -> bool {
        self.unresolved.is_none()
    }
}

/// Which `env:VAR` secrets a command reads. The others stay unresolved, and an unset variable
/// there is no error: `send --env production` must not need staging's secret or Meta's token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Needs {
    /// `serve`, the dashboard and `check`: every secret, every problem.
    #[default]
    Everything,
    /// One environment's credentials (if any) and, with `storage`, the database URL.
    Only {
        environment: Option<String>,
        storage: bool,
    },
}

/// What a secret belongs to, to decide whether a command needs it.
#[derive(Debug, Clone, Copy)]
pub enum SecretOwner<'a> {
    Environment(&'a str),
    Storage,
    Destination,
    Alerts,
}

impl Needs {
    pub fn wants(&self, owner: SecretOwner<'_>) -> bool {
        match self {
            Needs::Everything => true,
            Needs::Only {
                environment,
                storage,
            } => match owner {
                SecretOwner::Environment(name) => environment.as_deref() == Some(name),
                SecretOwner::Storage => *storage,
                SecretOwner::Destination | SecretOwner::Alerts => false,
            },
        }
    }
}

/// `env:VAR` lookups for one command: where variables come from (the process environment, or a
/// test's map) and which secrets the command needs.
pub struct EnvVars<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    needs: &'a Needs,
}

impl<'a> EnvVars<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>, needs: &'a Needs) -> Self {
        EnvVars { lookup, needs }
    }

    /// The variable's value; `Ok(None)` when it is unset and the command does not need it
    /// (the secret stays unresolved); an error naming the variable when it is needed.
    pub fn get(&self, var: &str, owner: SecretOwner<'_>) -> Result<Option<String>, String> {
        if var.is_empty() {
            return Err("`env:` must be followed by a variable name".into());
        }
        match (self.lookup)(var) {
            Some(value) => Ok(Some(value)),
            None if self.needs.wants(owner) => {
                Err(format!("environment variable {var} is not set"))
            }
            None => Ok(None),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.unresolved {
            Some(var) => write!(f, "Secret(<env:{var} not read>)"),
            None => f.write_str("Secret(<redacted>)"),
        }
    }
}

/// The file as written: secrets still as `env:VAR` references.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    storage: RawStorage,
    workspace: RawWorkspace,
    #[serde(default)]
    environments: Vec<RawEnvironment>,
    #[serde(default)]
    mapping: Option<toml::Value>,
    #[serde(default)]
    destinations: Vec<RawDestination>,
    #[serde(default)]
    alerts: alerts::RawAlerts,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    max_body_bytes: Option<usize>,
    timestamp_tolerance_secs: Option<u64>,
    queue_capacity: Option<usize>,
    max_messages_per_request: Option<usize>,
    max_message_bytes: Option<usize>,
    max_name_chars: Option<usize>,
    header_timeout_secs: Option<u64>,
    body_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    path: Option<PathBuf>,
    url: Option<String>,
    dedup_window_hours: Option<u64>,
    retention_days: Option<u64>,
    request_body_retention_days: Option<u64>,
    delivery_share: Option<f64>,
    writers: Option<usize>,
    node_timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkspace {
    account: String,
    #[serde(default)]
    default_country: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    name: String,
    secret: String,
    previous_secret: Option<String>,
    write_key: Option<String>,
    segment_batches: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct RawDestination {
    name: String,
    kind: String,
    endpoint: Option<String>,
    #[serde(default)]
    environments: Vec<String>,
    #[serde(default)]
    consent: Vec<String>,
    retry_schedule: Option<Vec<u64>>,
    /// Kind-specific keys (`pixel_id`, `access_token`, …) are kept for the destination adapters.
    #[serde(flatten)]
    settings: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub workspace: WorkspaceConfig,
    pub environments: Vec<EnvironmentConfig>,
    pub mapping: MappingConfig,
    /// As written; `destinations::Setup` resolves their kind-specific settings.
    pub destinations: Vec<DestinationConfig>,
    pub alerts: AlertsConfig,
    /// The file this config was read from (hot reload of the mapping watches it).
    pub source_path: Option<PathBuf>,
    /// Relative paths in destination settings (a warehouse file) are relative to this folder.
    pub base_dir: PathBuf,
}

/// The mapping table and where it lives, so it can be reloaded when that file changes.
#[derive(Debug, Clone)]
pub struct MappingConfig {
    pub table: MappingTable,
    /// The file to watch: a `[mapping] file = …` file, or the config file for inline rows.
    pub watch: Option<PathBuf>,
    /// True when the rows live in their own file (`[mapping] file = …`).
    pub separate_file: bool,
}

impl MappingConfig {
    pub fn default_table() -> MappingConfig {
        MappingConfig {
            table: MappingTable::default(),
            watch: None,
            separate_file: false,
        }
    }

    /// Re-read the mapping from the watched file.
    pub fn reload(&self) -> Result<MappingTable, ConfigError> {
        let Some(path) = &self.watch else {
            return Ok(self.table.clone());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let result = if self.separate_file {
            MappingTable::from_file_text(&text)
        } else {
            let value: toml::Value = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: parse_problem(&text, &e),
            })?;
            match value.get("mapping") {
                Some(mapping) => MappingTable::from_toml(mapping).map(|(table, _)| table),
                None => Ok(MappingTable::default()),
            }
        };
        result.map_err(|e| invalid(e.key, e.reason))
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub timestamp_tolerance_secs: u64,
    /// How many ingest requests may wait for the writer before TrackLayer answers 503.
    pub queue_capacity: usize,
    /// Messages one request may carry (413 above it).
    pub max_messages_per_request: usize,
    /// Per-message limits (a message over them is stored as invalid, with the reason).
    pub messages: MessageLimits,
    /// A request's headers must arrive within this long of the connection opening or of the
    /// previous response; an idle keep-alive connection is closed after it too.
    pub header_timeout: Duration,
    /// The whole body must arrive within this long of its headers (408 otherwise).
    pub body_timeout: Duration,
    /// Open client connections at most; new ones beyond it get 503 and are closed.
    pub max_connections: usize,
}

impl ServerConfig {
    /// Every limit at its default, listening on `listen`.
    pub fn with_defaults(listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            listen,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            timestamp_tolerance_secs: DEFAULT_TIMESTAMP_TOLERANCE_SECS,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_messages_per_request: DEFAULT_MAX_MESSAGES_PER_REQUEST,
            messages: MessageLimits::default(),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
    /// A PostgreSQL database shared by a fleet of nodes (`postgres://…`); `path` (SQLite) when
    /// unset.
    pub url: Option<Secret>,
    pub dedup_window_hours: u64,
    /// Messages, events and finished deliveries older than this are deleted (0 keeps all).
    /// Profiles and identities are kept: the identity graph outlives any one event.
    pub retention_days: u64,
    /// The bodies (request, response, headers) kept with each successful delivery request are
    /// cleared after this many days; the request's outcome stays, and a failed request keeps
    /// its bodies for the whole retention (0 keeps them all as long as the rows).
    pub request_body_retention_days: u64,
    /// The share of the database writer's time that delivery bookkeeping (draining a backlog)
    /// may take while Segment traffic is arriving.
    pub delivery_share: f64,
    /// PostgreSQL: connections that commit groups at once on this node (SQLite has one writer).
    pub writers: usize,
    /// PostgreSQL: a node silent this long (no heartbeat; each beats every 2 s) is taken for
    /// dead, and the others release the deliveries it held.
    pub node_timeout_secs: u64,
}

#[derive(Debug, Clone)]
pub struct WorkspaceConfig {
    pub account: String,
    /// ISO 3166-1 alpha-2 code (`NL`): the country of a phone written without a country code
    /// when the person's own country is unknown. Unset, such phones are not sent.
    pub default_country: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EnvironmentConfig {
    pub name: String,
    pub secret: Secret,
    pub previous_secret: Option<Secret>,
    /// Basic-auth write key for the Segment HTTP Tracking API paths (`/v1/*`); those paths are
    /// closed for an environment without one.
    pub write_key: Option<Secret>,
    /// Whether batches signed with Segment's X-Signature (which covers element 0 only) are
    /// accepted; workspaces that do not batch can refuse them.
    pub segment_batches: bool,
}

#[derive(Debug, Clone)]
pub struct DestinationConfig {
    /// Its place among `[[destinations]]`, for messages (`destinations[2].pixel_id`).
    pub index: usize,
    pub name: String,
    pub kind: DestinationKind,
    pub endpoint: Option<String>,
    pub environments: Vec<String>,
    pub consent: Vec<String>,
    pub retry_schedule: Vec<u64>,
    pub settings: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationKind {
    MetaCapi,
    GoogleAds,
    Klaviyo,
    Tiktok,
    Warehouse,
    Webhook,
    Ga4,
}

impl DestinationKind {
    pub const ALL: [(&'static str, DestinationKind); 7] = [
        ("meta_capi", DestinationKind::MetaCapi),
        ("google_ads", DestinationKind::GoogleAds),
        ("ga4", DestinationKind::Ga4),
        ("klaviyo", DestinationKind::Klaviyo),
        ("tiktok", DestinationKind::Tiktok),
        ("warehouse", DestinationKind::Warehouse),
        ("webhook", DestinationKind::Webhook),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, kind)| *kind == self)
            .map_or("unknown", |(name, _)| name)
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, kind)| *kind)
    }
}

/// Short enough for the reference test vectors ("tl_test_secret"), long enough to stop "test".
pub const MIN_SECRET_CHARS: usize = 12;

/// Seconds without a heartbeat after which a fleet node's leases are released by the others.
pub const DEFAULT_NODE_TIMEOUT_SECS: u64 = 15;

/// PostgreSQL writers per node: while one connection waits for the server, the next group is
/// applied on the other.
pub const DEFAULT_POSTGRES_WRITERS: usize = 2;

/// Default retry schedule: seconds before attempt 2, 3, …
pub const DEFAULT_RETRY_SCHEDULE: [u64; 6] = [5, 30, 300, 1800, 7200, 14400];

impl Config {
    /// A config file's text, or why it cannot be read.
    pub fn read(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parse config text and check everything but destination settings, which
    /// `destinations::Setup::parse` resolves and checks next, adding to the same problems so
    /// `check` shows them all at once. `env_vars` resolves `env:VAR` references.
    pub fn parse_unresolved(
        text: &str,
        path: &Path,
        env_vars: &EnvVars<'_>,
    ) -> Result<(Config, Problems), ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: parse_problem(text, &e),
        })?;
        // Relative storage paths are relative to the config file, so `--config /etc/x.toml`
        // does not depend on the working directory.
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(validate::validate(raw, base, Some(path), env_vars))
    }

    pub fn environment(&self, name: &str) -> Option<&EnvironmentConfig> {
        self.environments.iter().find(|e| e.name == name)
    }
}

/// A TOML or type error with its line and column, in plain words, and never the offending line
/// itself: it may hold a literal secret.
fn parse_problem(text: &str, e: &toml::de::Error) -> String {
    let place = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("line {line}, column {column}: ")
    });
    format!("{}{}", place.unwrap_or_default(), plain_words(e.message()))
}

/// serde's type names as a person would say them.
fn plain_words(message: &str) -> String {
    let mut text = message.to_string();
    for (jargon, plain) in [
        ("expected usize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected a list such as [1, 2]"),
        ("expected a string", "expected text in quotes"),
        ("invalid type: ", ""),
        ("integer `", "the number `"),
        ("floating point `", "the number `"),
    ] {
        text = text.replace(jargon, plain);
    }
    text
}

/// A secret that is a URL (a database's): literal or `env:VAR`, any length.
fn resolve_url_secret(
    key: &str,
    value: &str,
    env_vars: &EnvVars<'_>,
) -> Result<Secret, ConfigError> {
    let resolved = match value.strip_prefix("env:") {
        Some(var) => match env_vars
            .get(var, SecretOwner::Storage)
            .map_err(|reason| invalid(key, reason))?
        {
            Some(value) => value,
            None => return Ok(Secret::unresolved(var)),
        },
        None => value.to_string(),
    };
    let scheme_ok = url::Url::parse(&resolved)
        .map(|u| matches!(u.scheme(), "postgres" | "postgresql"))
        .unwrap_or(false);
    if !scheme_ok {
        // Never the value itself: it may hold a password.
        return Err(invalid(
            key,
            "must be a PostgreSQL URL: postgres://user:password@host:5432/database",
        ));
    }
    Ok(Secret::new(resolved))
}

fn resolve_secret(
    key: &str,
    value: &str,
    owner: SecretOwner<'_>,
    env_vars: &EnvVars<'_>,
) -> Result<Secret, ConfigError> {
    let resolved = match value.strip_prefix("env:") {
        Some(var) => match env_vars
            .get(var, owner)
            .map_err(|reason| invalid(key, reason))?
        {
            Some(value) => value,
            None => return Ok(Secret::unresolved(var)),
        },
        None => value.to_string(),
    };
    if resolved.trim().is_empty() {
        return Err(invalid(key, "secret is empty"));
    }
    if resolved.len() < MIN_SECRET_CHARS {
        return Err(invalid(
            key,
            format!(
                "secret is {} characters; use at least {MIN_SECRET_CHARS} random characters",
                resolved.len()
            ),
        ));
    }
    Ok(Secret::new(resolved))
}

/// The embedded default: loopback only, SQLite in the working folder, one `development`
/// environment whose secret (and write key) come from the local database.
pub fn embedded_default(
    storage_path: PathBuf,
    development_secret: Secret,
    write_key: Option<Secret>,
) -> Config {
    Config {
        server: ServerConfig::with_defaults(EMBEDDED_LISTEN),
        storage: StorageConfig {
            path: storage_path,
            url: None,
            dedup_window_hours: DEFAULT_DEDUP_WINDOW_HOURS,
            retention_days: DEFAULT_RETENTION_DAYS,
            request_body_retention_days: DEFAULT_REQUEST_BODY_RETENTION_DAYS,
            delivery_share: DEFAULT_DELIVERY_SHARE,
            writers: 1,
            node_timeout_secs: DEFAULT_NODE_TIMEOUT_SECS,
        },
        workspace: WorkspaceConfig {
            account: EMBEDDED_ACCOUNT.to_string(),
            default_country: None,
        },
        environments: vec![EnvironmentConfig {
            name: EMBEDDED_ENVIRONMENT.to_string(),
            write_key,
            secret: development_secret,
            previous_secret: None,
            segment_batches: true,
        }],
        mapping: MappingConfig::default_table(),
        destinations: Vec::new(),
        alerts: AlertsConfig::default(),
        source_path: None,
        base_dir: PathBuf::from("."),
    }
}

pub const EMBEDDED_ACCOUNT: &str = "acct_local";
/// Loopback only: the embedded default's secret is printed, not configured.
pub const EMBEDDED_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8787,
));
pub const EMBEDDED_ENVIRONMENT: &str = "development";

/// What `tracklayer init` writes: every key documented, secrets read from the environment.
pub const EXAMPLE_CONFIG: &str = include_str!("../../tracklayer.example.toml");
