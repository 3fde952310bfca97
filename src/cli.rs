//! The command line (DESIGN §7). Thin: parse, load config, call into the library.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, Secret};
use crate::destinations::Setup;
use crate::ingest::auth;
use crate::segment::split_body;
use crate::store::{self, StoreLocation, StoreReader};

const DEFAULT_CONFIG: &str = "tracklayer.toml";
const DEFAULT_DB: &str = "tracklayer.db";
const LOCAL_SECRET_KEY: &str = "secret.development";
const LOCAL_WRITE_KEY: &str = "write_key.development";

#[derive(Parser, Debug)]
#[command(
    name = "tracklayer",
    version,
    about = "Segment destination: canonical server-side events, routed downstream"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Log lines as text (for people) or JSON (one object per line, for log collectors).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "TRACKLAYER_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, clap::Args)]
struct ConfigArg {
    /// Config file. Without one (and no ./tracklayer.toml) TrackLayer runs on its embedded
    /// default: loopback only, ./tracklayer.db, a `development` environment.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The dashboard, with the pipeline running inside it (the default command).
    Tui {
        #[command(flatten)]
        config: ConfigArg,
        /// Watch the store of headless instances instead (read-only, live): an SQLite file,
        /// a fleet's `postgres://` URL, or `env:VAR` naming a variable that holds the URL
        /// (keeps the password out of the process list).
        #[arg(long, value_name = "FILE.db|URL|env:VAR")]
        attach: Option<String>,
        /// Theme name (default, light, high-contrast, or one in ./themes).
        #[arg(long)]
        theme: Option<String>,
        /// Override server.listen for the embedded pipeline.
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Leave the mouse to the terminal (select and copy text as usual); by default a click
        /// selects a tab or a row and the wheel scrolls.
        #[arg(long)]
        no_mouse: bool,
    },
    /// Sandbox destinations and generated Segment traffic: no config, credentials or network.
    Demo {
        /// No dashboard: run for --duration seconds and print a summary.
        #[arg(long)]
        headless: bool,
        /// Requests per second of generated traffic.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// How long traffic runs (seconds); headless default 10.
        #[arg(long)]
        duration: Option<u64>,
        /// Theme name (default, light, high-contrast, or one in ./themes).
        #[arg(long)]
        theme: Option<String>,
        /// Leave the mouse to the terminal (see `tui --no-mouse`).
        #[arg(long)]
        no_mouse: bool,
    },
    /// Run the pipeline headless: the ingest endpoint and storage (logs to stderr).
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Override server.listen (e.g. 127.0.0.1:0 for a free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Sign and POST a message or batch as Segment would; print the reply.
    Send {
        #[command(flatten)]
        config: ConfigArg,
        /// Environment whose secret signs the request.
        #[arg(long)]
        env: String,
        /// Where to post (default: http://<server.listen>/segment/events).
        #[arg(long)]
        url: Option<String>,
        /// Signature scheme: TrackLayer's timestamped SHA-256, or Segment's X-Signature (SHA-1).
        #[arg(long, value_enum, default_value_t = Scheme::Tracklayer)]
        scheme: Scheme,
        /// JSON file with one message, an array, or {"batch": [...]}; `-` reads stdin. With
        /// --trace and no file, the controlled test scenario is sent.
        file: Option<String>,
        /// Walk each call through every stage (authenticated → … → the destination's reply),
        /// one key press at a time; stop at the first failure with what to fix.
        #[arg(long)]
        trace: bool,
        /// Scenario steps to send with --trace (comma-separated): identify, product_added,
        /// checkout_started, order_completed, lead_submitted. Default: all.
        #[arg(long, value_delimiter = ',')]
        scenario: Vec<String>,
        /// The test user's userId (scenario; default tl_test_user unless --email is given alone).
        #[arg(long, value_name = "ID")]
        user_id: Option<String>,
        /// The test user's email (scenario; alone, the user is a guest without a userId).
        #[arg(long, value_name = "EMAIL")]
        email: Option<String>,
        /// Also send to destinations that would receive the test as a live event (no test
        /// mode, or test mode off); asks for confirmation. By default they are left out.
        #[arg(long)]
        live: bool,
        /// Confirm --live without a prompt (scripts).
        #[arg(long, requires = "live")]
        yes: bool,
        /// Keep the messageIds of FILE as written (to test a Segment retry on purpose); by
        /// default each run gives them fresh ones, so a re-sent file is a new call.
        #[arg(long)]
        keep_ids: bool,
        /// Left out by default now; accepted so existing scripts keep working.
        #[arg(long, hide = true)]
        skip_untestable: bool,
        /// Do not wait for a key press between stages.
        #[arg(long)]
        no_pause: bool,
    },
    /// Show what is stored for a messageId (or a request id).
    Inspect {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Let a Segment Replay through: for the next N minutes, an event_id seen before passes
    /// (with the same event_id) instead of being recorded as a collision.
    AllowReplay {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        env: String,
        /// How long the window stays open.
        #[arg(long, default_value_t = 240)]
        minutes: i64,
        /// Why (shown in the trace).
        #[arg(long, default_value = "operator replay")]
        note: String,
    },
    /// Re-queue a destination's dead (or other) deliveries; a running instance sends them.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        destination: String,
        /// Only deliveries that reached their status at or after this instant (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Which deliveries: dead (default) or pending (to send now, skipping the wait).
        #[arg(long, default_value = "dead")]
        status: String,
    },
    /// Validate the config; precise errors, exit 1 on failure.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Write a commented example config.
    Init {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        path: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Scheme {
    Tracklayer,
    Segment,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The dashboard owns the terminal: its logs go to a file instead of stderr.
    let to_file = matches!(
        cli.command,
        None | Some(Command::Tui { .. })
            | Some(Command::Demo {
                headless: false,
                ..
            })
    );
    init_logging(
        to_file.then(|| PathBuf::from("tracklayer.log")),
        cli.log_format,
    );
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `TRACKLAYER_LOG` is a full filter, as `RUST_LOG` (`info`, `warn,tracklayer::delivery=debug`);
/// an unreadable one falls back to `info` and says so. Colour only on a terminal.
fn init_logging(file: Option<PathBuf>, format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let wanted = std::env::var("TRACKLAYER_LOG").unwrap_or_default();
    let (filter, bad_filter) =
        match EnvFilter::try_new(if wanted.is_empty() { "info" } else { &wanted }) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new("info"), Some(e.to_string())),
        };
    let opened = file.and_then(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    let ansi = opened.is_none()
        && std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let writer = move || -> Box<dyn std::io::Write> {
        match &opened {
            Some(f) => match f.try_clone() {
                Ok(f) => Box::new(f),
                Err(_) => Box::new(std::io::stderr()),
            },
            None => Box::new(std::io::stderr()),
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Some(e) = bad_filter {
        tracing::warn!(error = %e, "TRACKLAYER_LOG is not a valid filter; logging at info");
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        None => tui(ConfigArg { config: None }, None, None, None, true),
        Some(Command::Tui {
            config,
            attach,
            theme,
            listen,
            no_mouse,
        }) => tui(config, attach, theme, listen, !no_mouse),
        Some(Command::Serve { config, listen }) => serve(config, listen),
        Some(Command::Demo {
            headless,
            rate,
            duration,
            theme,
            no_mouse,
        }) => {
            if !(rate > 0.0 && rate <= 5000.0) {
                bail!("--rate must be between 0 and 5000 requests per second");
            }
            let summary = crate::demo::run(crate::demo::DemoOptions {
                headless,
                rate,
                duration: duration.map(std::time::Duration::from_secs),
                theme,
                mouse: !no_mouse,
            })?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Send {
            config,
            env,
            url,
            scheme,
            file,
            trace,
            scenario,
            user_id,
            email,
            live,
            yes,
            keep_ids,
            skip_untestable: _,
            no_pause,
        }) => {
            if trace {
                let options = TraceOptions {
                    scenario,
                    user: match (&user_id, &email) {
                        (None, None) => crate::testsend::TestUser::default(),
                        _ => crate::testsend::TestUser::named(user_id.as_deref(), email.as_deref())
                            .ok_or_else(|| {
                                anyhow!("--user-id / --email: give a non-empty value")
                            })?,
                    },
                    live,
                    confirmed: yes,
                    keep_ids,
                    pause: !no_pause,
                };
                send_trace(config, &env, url, scheme, file.as_deref(), options)
            } else {
                let file = file.ok_or_else(|| {
                    anyhow!("give a FILE (or `-` for stdin), or use --trace for the test scenario")
                })?;
                send(config, &env, url, scheme, &file)
            }
        }
        Some(Command::Inspect { config, id, json }) => inspect(config, &id, json),
        Some(Command::AllowReplay {
            config,
            env,
            minutes,
            note,
        }) => allow_replay(config, &env, minutes, &note),
        Some(Command::Replay {
            config,
            destination,
            since,
            status,
        }) => replay(config, &destination, since.as_deref(), &status),
        Some(Command::Check { config }) => check(config),
        Some(Command::Init { path, force }) => init(&path, force),
    }
}

/// The config to use: the named file, ./tracklayer.toml, or the embedded default.
enum Loaded {
    File(Setup),
    Embedded { setup: Setup, new_secret: bool },
}

impl Loaded {
    fn setup(&self) -> &Setup {
        match self {
            Loaded::File(s) | Loaded::Embedded { setup: s, .. } => s,
        }
    }

    fn config(&self) -> &Config {
        &self.setup().config
    }
}

fn load_config(arg: &ConfigArg, create_default: bool) -> Result<Loaded> {
    if let Some(path) = &arg.config {
        return Ok(Loaded::File(Setup::load(path)?));
    }
    let default = Path::new(DEFAULT_CONFIG);
    if default.exists() {
        return Ok(Loaded::File(Setup::load(default)?));
    }
    let db = PathBuf::from(DEFAULT_DB);
    let (secret, new_secret) = if create_default {
        store::local_secret(&db, LOCAL_SECRET_KEY)?
    } else {
        let secret = store::read_local_secret(&db, LOCAL_SECRET_KEY)
            .ok()
            .flatten()
            .ok_or_else(|| {
                anyhow!(
                    "no {DEFAULT_CONFIG} and no embedded default in ./{DEFAULT_DB}: run `tracklayer serve` first, or pass --config"
                )
            })?;
        (secret, false)
    };
    // The write key for /v1 exists once the workspace does; reading never creates one.
    let write_key = if create_default {
        Some(store::local_write_key(&db, LOCAL_WRITE_KEY)?)
    } else {
        store::read_local_secret(&db, LOCAL_WRITE_KEY)
            .ok()
            .flatten()
    };
    Ok(Loaded::Embedded {
        setup: Setup::without_destinations(config::embedded_default(
            db,
            Secret::new(secret),
            write_key.map(Secret::new),
        )),
        new_secret,
    })
}

fn serve(arg: ConfigArg, listen: Option<std::net::SocketAddr>) -> Result<ExitCode> {
    let loaded = load_config(&arg, true)?;
    let mut setup = loaded.setup().clone();
    if let Some(listen) = listen {
        setup.config.server.listen = listen;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listen = setup.config.server.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        print_banner(&loaded, addr);
        crate::run(setup, listener, shutdown_signal()).await?;
        tracing::info!("stopped; every acknowledged request is committed");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn tui(
    arg: ConfigArg,
    attach: Option<String>,
    theme: Option<String>,
    listen: Option<std::net::SocketAddr>,
    mouse: bool,
) -> Result<ExitCode> {
    let (themes, problems) = crate::tui::theme::load_all(Some(Path::new("themes")));
    crate::tui::theme::select(&themes, theme.as_deref()).map_err(anyhow::Error::msg)?;
    if let Some(named) = attach {
        let named = match named.strip_prefix("env:") {
            Some(var) => std::env::var(var)
                .with_context(|| format!("--attach env:{var}: the variable {var} is not set"))?,
            None => named,
        };
        let store = StoreLocation::parse(&named);
        // Fail here, with the reason, rather than inside the dashboard.
        match &store {
            StoreLocation::Sqlite(db) if !db.exists() => bail!(
                "{} does not exist; point --attach at the database of a running `tracklayer serve` \
                 or at a fleet's postgres:// URL",
                db.display()
            ),
            StoreLocation::Sqlite(db) => {
                StoreReader::open(db)?;
            }
            StoreLocation::Postgres(url) => {
                let version = store::postgres::probe(url).with_context(|| {
                    format!("cannot read the fleet's database {}", store.describe())
                })?;
                if version == 0 {
                    bail!(
                        "{} holds no TrackLayer schema yet; start a `tracklayer serve` node \
                         with `[storage] url` pointing at it first",
                        store.describe()
                    );
                }
            }
        }
        let mut app = crate::tui::App::new(
            themes,
            theme.as_deref(),
            format!("attached to {} (read-only)", store.describe()),
        );
        app.status = problems.first().cloned();
        app.mouse = mouse;
        app.actions = match &store {
            // A local file someone can write: the same machine, acting as its operator.
            StoreLocation::Sqlite(db) => std::fs::OpenOptions::new()
                .write(true)
                .open(db)
                .map(|_| ())
                .map_err(|e| format!("{} is not writable here ({e})", db.display())),
            StoreLocation::Postgres(_) => Err(
                "attached to a fleet's database (read-only); act from a node's own dashboard, \
                 or with `tracklayer replay` / `tracklayer allow-replay`"
                    .into(),
            ),
        };
        app.test = crate::tui::app::TestSendState::new(Default::default(), false);
        crate::tui::run(store, crate::tui::Destinations::Discovered, app, None)?;
        return Ok(ExitCode::SUCCESS);
    }
    let loaded = load_config(&arg, true)?;
    let mut setup = loaded.setup().clone();
    if let Some(listen) = listen {
        setup.config.server.listen = listen;
    }
    let test_plan =
        crate::testsend::TestPlan::new(setup.test_modes(), setup.profile_destinations(), false);
    let config = &setup.config;
    let store = match &config.storage.url {
        Some(url) => StoreLocation::Postgres(url.expose().to_string()),
        None => StoreLocation::Sqlite(config.storage.path.clone()),
    };
    let names: Vec<String> = config.destinations.iter().map(|d| d.name.clone()).collect();
    let test_env = config.environments[0].clone();
    let account = config.workspace.account.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(config.server.listen))
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let test_target = crate::tui::TestSendTarget {
        url: format!("http://{addr}/segment/events"),
        account,
        environment: test_env.name.clone(),
        secret: test_env.secret.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let pipeline = runtime.spawn(crate::run(setup, listener, async {
        let _ = stopped.await;
    }));
    let mut source = format!("http://{addr}/segment/events");
    if let Loaded::Embedded {
        setup,
        new_secret: true,
    } = &loaded
    {
        source.push_str(&format!(
            "  secret {} (shown once)",
            setup.config.environments[0].secret.expose()
        ));
    }
    let mut app = crate::tui::App::new(themes, theme.as_deref(), source);
    app.actions = Ok(());
    app.mouse = mouse;
    app.status = problems.first().cloned();
    app.test = crate::tui::app::TestSendState::new(test_plan, true);
    let result = crate::tui::run(
        store,
        crate::tui::Destinations::Configured(names),
        app,
        Some(test_target),
    );
    let _ = stop.send(());
    let _ = runtime.block_on(pipeline);
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The store a config names, for people: the SQLite file, or the PostgreSQL server and
/// database without credentials.
fn store_name(config: &Config) -> String {
    match &config.storage.url {
        Some(url) => format!("{} (fleet)", store::postgres::describe(url.expose())),
        None => config.storage.path.display().to_string(),
    }
}

fn print_banner(loaded: &Loaded, addr: std::net::SocketAddr) {
    let config = loaded.config();
    // Written to stderr like the logs, so stdout stays clean for scripts.
    eprintln!("TrackLayer listening on http://{addr}/segment/events");
    eprintln!("  database     {}", store_name(config));
    eprintln!("  account      {}", config.workspace.account);
    let names: Vec<&str> = config
        .environments
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    eprintln!("  environments {}", names.join(", "));
    if let Loaded::Embedded { setup, new_secret } = loaded {
        let config = &setup.config;
        eprintln!("  (embedded default: no {DEFAULT_CONFIG}; `tracklayer init` writes one)");
        let secret = config.environments[0].secret.expose();
        if *new_secret {
            eprintln!("  secret       {secret}");
            eprintln!("               shown once; it is kept in {DEFAULT_DB}, where `tracklayer send --env development` finds it");
            if let Some(key) = &config.environments[0].write_key {
                eprintln!(
                    "  write key    {} (for SDKs posting to /v1/*)",
                    key.expose()
                );
            }
        } else {
            eprintln!("  secret       kept in {DEFAULT_DB} (shown when it was created)");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down: finishing queued writes");
}

/// Headers that sign `body` for `environment` as Segment (or TrackLayer's scheme) would.
pub fn signed_headers(
    account: &str,
    environment: &str,
    secret: &Secret,
    body: &[u8],
    segment_scheme: bool,
) -> Result<Vec<(&'static str, String)>> {
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        (auth::HEADER_ACCOUNT, account.to_string()),
        (auth::HEADER_ENVIRONMENT, environment.to_string()),
    ];
    if segment_scheme {
        // Segment signs element 0 of a batch, the whole body otherwise.
        let bytes = bytes::Bytes::copy_from_slice(body);
        let split = split_body(&bytes, usize::MAX).map_err(|e| anyhow!("{e}"))?;
        let signed: &[u8] = if split.shape == crate::segment::BodyShape::Array {
            &split.messages[0]
        } else {
            body
        };
        headers.push((
            auth::HEADER_SEGMENT_SIGNATURE,
            auth::sign_segment(secret, signed),
        ));
    } else {
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let signature = auth::sign_tracklayer(secret, &timestamp, body);
        headers.push((auth::HEADER_TIMESTAMP, timestamp));
        headers.push((auth::HEADER_SIGNATURE, signature));
    }
    Ok(headers)
}

/// The configured environment `name`, or an error listing the ones that exist.
fn environment_named<'a>(config: &'a Config, name: &str) -> Result<&'a config::EnvironmentConfig> {
    config.environment(name).ok_or_else(|| {
        let names: Vec<&str> = config
            .environments
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        anyhow!(
            "unknown environment `{name}`; configured: {}",
            names.join(", ")
        )
    })
}

struct TraceOptions {
    scenario: Vec<String>,
    user: crate::testsend::TestUser,
    /// Include destinations that would receive a live event.
    live: bool,
    /// `--yes`: the live send is confirmed without a prompt.
    confirmed: bool,
    keep_ids: bool,
    pause: bool,
}

fn send_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .user_agent(concat!("tracklayer-send/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Post one signed body; returns the status and the JSON reply.
async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> Result<(u16, serde_json::Value)> {
    let mut request = client.post(url).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let reply = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Ok((status, reply))
}

fn send_trace(
    arg: ConfigArg,
    env: &str,
    url: Option<String>,
    scheme: Scheme,
    file: Option<&str>,
    options: TraceOptions,
) -> Result<ExitCode> {
    use crate::testsend::{self, Verdict};
    use std::io::IsTerminal;

    let loaded = load_config(&arg, false)?;
    let config = loaded.config();
    let environment = environment_named(config, env)?;
    for step in &options.scenario {
        if !testsend::SCENARIO_STEPS.contains(&step.as_str()) {
            bail!(
                "--scenario: `{step}` is not one of {}",
                testsend::SCENARIO_STEPS.join(", ")
            );
        }
    }
    let plan = testsend::TestPlan::new(
        loaded.setup().test_modes(),
        loaded.setup().profile_destinations(),
        options.live,
    );
    for name in plan.modes.keys() {
        eprintln!("destination {name}: {}", plan.describe(name));
    }
    let live = plan.live();
    if !live.is_empty() && !options.confirmed {
        // A live send reaches real ad accounts and customer profiles: ask, and never assume.
        if !std::io::stdin().is_terminal() {
            bail!(
                "--live would send the test to {} as live events: add --yes to confirm without a terminal",
                live.join(", ")
            );
        }
        eprint!(
            "send the test to {} as LIVE events (real conversions / profiles)? [y/N] ",
            live.join(", ")
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("not sent");
            return Ok(ExitCode::FAILURE);
        }
    }
    let run_id = chrono::Utc::now().format("%Y%m%d%H%M%S%3f").to_string();
    let steps: Vec<testsend::Step> = match file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{path} is not JSON"))?;
            let messages = match value {
                serde_json::Value::Array(items) => items,
                serde_json::Value::Object(mut o) if o.contains_key("batch") => {
                    match o.remove("batch") {
                        Some(serde_json::Value::Array(items)) => items,
                        _ => bail!("{path}: `batch` is not an array"),
                    }
                }
                other => vec![other],
            };
            messages
                .into_iter()
                .enumerate()
                .map(|(n, m)| testsend::file_step(m, &run_id, n + 1, options.keep_ids, &plan.skip))
                .collect()
        }
        None => testsend::scenario(&options.user, &run_id, &options.scenario, &plan.skip),
    };
    let url = url.unwrap_or_else(|| format!("http://{}/segment/events", config.server.listen));
    let pause = options.pause && std::io::stdin().is_terminal();
    let db = config.storage.path.clone();
    let store_url = config.storage.url.as_ref().map(|u| u.expose().to_string());
    let mut reader: Option<Box<dyn store::TraceReader>> = None;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = send_client()?;
    for (n, step) in steps.iter().enumerate() {
        let body = serde_json::to_vec(&step.message)?;
        let message_id = step
            .message
            .get("messageId")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        println!(
            "\n▶ {}/{} {}  messageId {message_id}",
            n + 1,
            steps.len(),
            step.label
        );
        let headers = signed_headers(
            &config.workspace.account,
            env,
            &environment.secret,
            &body,
            scheme == Scheme::Segment,
        )?;
        let (status, reply) = runtime.block_on(post_signed(&client, &url, &headers, body))?;
        let sent = testsend::SendResult { status, reply };
        // Poll the database until every stage has its final verdict (deliveries answered).
        let started = std::time::Instant::now();
        let stages = loop {
            if reader.is_none() {
                reader = store::open_trace_reader(&db, store_url.as_deref()).ok();
            }
            let trace = match (&mut reader, status < 300) {
                (Some(r), true) => r.trace(&message_id).ok().flatten(),
                _ => None,
            };
            let stages = testsend::stages(&sent, trace.as_ref(), &plan);
            if testsend::settled(&stages) || started.elapsed() > std::time::Duration::from_secs(30)
            {
                break stages;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        for s in &stages {
            let mark = match s.verdict {
                Verdict::Pass => "✔",
                Verdict::Warn => "!",
                Verdict::Skip => "·",
                Verdict::Wait => "…",
                Verdict::Fail => "✘",
            };
            println!(
                "  {mark} {:<14} {}",
                s.name,
                s.detail.first().cloned().unwrap_or_default()
            );
            for line in s.detail.iter().skip(1) {
                println!("    {line}");
            }
            if let Some(fix) = &s.fix {
                println!("    → {fix}");
            }
            if s.verdict == Verdict::Fail {
                println!("\nstopped at `{}`: fix it and run the test again", s.name);
                return Ok(ExitCode::FAILURE);
            }
            if pause {
                print!("    (enter: next stage) ");
                let _ = std::io::Write::flush(&mut std::io::stdout());
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
            }
        }
        if !testsend::settled(&stages) {
            println!("\nnot settled after 30 s: a destination is still retrying (see `tracklayer inspect {message_id}`)");
            return Ok(ExitCode::FAILURE);
        }
    }
    println!(
        "\ncontrolled test passed: every call traced end to end. You can widen the allowlist."
    );
    Ok(ExitCode::SUCCESS)
}

fn send(
    arg: ConfigArg,
    env: &str,
    url: Option<String>,
    scheme: Scheme,
    file: &str,
) -> Result<ExitCode> {
    let loaded = load_config(&arg, false)?;
    let config = loaded.config();
    let environment = environment_named(config, env)?;
    let body = if file == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading stdin")?;
        buf
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {file}"))?
    };
    // As Segment's libraries do: every message carries the time it was sent.
    let body = crate::segment::stamp_sent_at(&body, chrono::Utc::now().timestamp_millis());
    let url = url.unwrap_or_else(|| format!("http://{}/segment/events", config.server.listen));
    let headers = signed_headers(
        &config.workspace.account,
        env,
        &environment.secret,
        &body,
        scheme == Scheme::Segment,
    )?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, reply) = runtime.block_on(post_signed(&send_client()?, &url, &headers, body))?;
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    println!("HTTP {status} {reason}");
    match &reply {
        serde_json::Value::String(text) => println!("{text}"),
        json => println!("{}", serde_json::to_string_pretty(json)?),
    }
    Ok(if (200..300).contains(&status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `inspect REQUEST_ID --json`: the request and the trace of each of its messages.
#[derive(serde::Serialize)]
struct RequestTraces<'a, R: serde::Serialize> {
    request: &'a R,
    messages: Vec<crate::inspect::ExactTrace>,
}

fn inspect(arg: ConfigArg, id: &str, json: bool) -> Result<ExitCode> {
    let loaded = load_config(&arg, false)?;
    let storage = &loaded.config().storage;
    let mut reader =
        store::open_trace_reader(&storage.path, storage.url.as_ref().map(|u| u.expose()))?;
    if let Some(trace) = reader.trace(id)? {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::inspect::to_json_exact(&trace))?
            );
        } else {
            println!("{}", crate::inspect::to_text(&trace));
        }
        return Ok(ExitCode::SUCCESS);
    }
    // A request id: list its messages, then the trace of each.
    if let Some(request) = reader.request(id)? {
        let messages = reader.messages_of_request(id)?;
        if json {
            let traces = messages
                .iter()
                .filter_map(|m| m.message_id.as_deref())
                .filter_map(|mid| reader.trace(mid).ok().flatten())
                .map(|t| crate::inspect::to_json_exact(&t))
                .collect::<Vec<_>>();
            println!(
                "{}",
                serde_json::to_string_pretty(&RequestTraces {
                    request: &request,
                    messages: traces
                })?
            );
        } else {
            println!(
                "request {}  {}  {} via {}  {} bytes, {} message(s)",
                request.request_id,
                crate::inspect::format_ms(request.received_at_ms),
                request.path,
                request.auth_scheme,
                request.body_bytes,
                request.message_count
            );
            for m in &messages {
                let line = format!(
                    "  #{} {} {} {}",
                    m.position,
                    m.status,
                    m.message_id.as_deref().unwrap_or("(no messageId)"),
                    m.reason.as_deref().unwrap_or("")
                );
                println!("{}", crate::inspect::terminal_safe(&line));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "message_id": id, "status": "not_found" })
        );
    } else {
        println!(
            "nothing stored for `{}` (not a messageId, event_id or request id)",
            crate::inspect::terminal_safe(id)
        );
    }
    Ok(ExitCode::FAILURE)
}

fn allow_replay(arg: ConfigArg, env: &str, minutes: i64, note: &str) -> Result<ExitCode> {
    let loaded = load_config(&arg, false)?;
    let config = loaded.config();
    if config.environment(env).is_none() {
        bail!("unknown environment `{env}`");
    }
    if !(1..=7 * 24 * 60).contains(&minutes) {
        bail!("--minutes must be between 1 and 10080 (7 days)");
    }
    let start = chrono::Utc::now().timestamp_millis();
    let end = start + minutes * 60_000;
    match &config.storage.url {
        Some(url) => {
            store::postgres::open_replay_window(url.expose(), env, start, end, note)?;
        }
        None => {
            store::open_replay_window(&config.storage.path, env, start, end, note)?;
        }
    }
    println!(
        "replay window open for {env} until {}: repeated event_ids pass with their original id",
        crate::inspect::format_ms(end)
    );
    Ok(ExitCode::SUCCESS)
}

fn replay(
    arg: ConfigArg,
    destination: &str,
    since: Option<&str>,
    status: &str,
) -> Result<ExitCode> {
    let loaded = load_config(&arg, false)?;
    let config = loaded.config();
    if !config.destinations.iter().any(|d| d.name == destination) {
        let names: Vec<&str> = config
            .destinations
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        bail!(
            "unknown destination `{destination}`; configured: {}",
            names.join(", ")
        );
    }
    if !["dead", "pending"].contains(&status) {
        bail!("--status must be dead or pending");
    }
    let since_ms = match since {
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .with_context(|| {
                format!("--since `{text}` is not RFC 3339 (e.g. 2026-04-23T10:00:00Z)")
            })?
            .timestamp_millis(),
        None => 0,
    };
    let count = match &config.storage.url {
        Some(url) => {
            store::postgres::requeue(url.expose(), destination, status, since_ms)? as usize
        }
        None => store::requeue(&config.storage.path, destination, status, since_ms)?,
    };
    println!(
        "{count} {status} deliver{} of {destination} re-queued; they keep their event_id",
        if count == 1 { "y" } else { "ies" }
    );
    Ok(ExitCode::SUCCESS)
}

fn check(arg: ConfigArg) -> Result<ExitCode> {
    let path = arg.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match Setup::load(&path) {
        Ok(setup) => {
            let config = &setup.config;
            if let Some(url) = &config.storage.url {
                let latest = store::postgres::MIGRATIONS.len() as i32;
                match store::postgres::probe(url.expose()) {
                    Ok(version) => eprintln!(
                        "{}: the server answers; schema version {version} of {latest}{}",
                        store::postgres::describe(url.expose()),
                        if version < latest {
                            " (serve applies the rest at start)"
                        } else {
                            ""
                        }
                    ),
                    Err(e) => {
                        // The whole chain: "error connecting to server: Connection refused".
                        let mut why = e.to_string();
                        let mut source = std::error::Error::source(&e);
                        while let Some(inner) = source {
                            let text = inner.to_string();
                            if !why.ends_with(&text) {
                                why.push_str(&format!(": {text}"));
                            }
                            source = inner.source();
                        }
                        eprintln!(
                            "{}: storage.url: {}: the server does not answer: {}",
                            path.display(),
                            store::postgres::describe(url.expose()),
                            why.replace(url.expose(), "(storage.url)")
                        );
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            println!(
                "{}: ok ({} environment(s), {} destination(s), database {})",
                path.display(),
                config.environments.len(),
                config.destinations.len(),
                store_name(config)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Write a file only its owner can read (configs hold secrets, literal or by name).
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
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

fn init(path: &Path, force: bool) -> Result<ExitCode> {
    if path.exists() && !force {
        bail!(
            "{} already exists; pass --force to overwrite it",
            path.display()
        );
    }
    write_private(path, config::EXAMPLE_CONFIG.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "wrote {}; set the secrets it names (env:...) and run `tracklayer check --config {}`",
        path.display(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
