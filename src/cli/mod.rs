//! The command line (DESIGN §7). Thin: parse, load config, call into the library. Results go
//! to stdout (JSON with `--json`), status and progress to stderr (see `output`).

mod check;
mod forget;
mod mapping;
mod output;
mod run;
mod send;
mod stored;
mod workspace;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::{Parser, Subcommand, ValueEnum};

pub use output::ColorWhen;
pub use send::signed_headers;

#[derive(Parser, Debug)]
#[command(
    name = "tracklayer",
    version,
    about = "Segment destination: canonical server-side events, routed downstream",
    after_help = "Without a command, `tracklayer` opens the dashboard (`tui`); without a terminal it runs headless (`serve`)."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file, for every command (also TRACKLAYER_CONFIG). Without one: ./tracklayer.toml,
    /// else the embedded default (loopback only, ./tracklayer.db, a `development` environment).
    #[arg(
        long,
        global = true,
        env = "TRACKLAYER_CONFIG",
        value_name = "FILE",
        value_hint = clap::ValueHint::FilePath
    )]
    config: Option<PathBuf>,
    /// When to colour output and log lines: auto (a terminal without NO_COLOR), always, never.
    #[arg(long, global = true, value_enum, default_value_t, value_name = "WHEN")]
    color: ColorWhen,
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
    /// For people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// What `tracklayer mapping` does.
#[derive(Subcommand, Debug)]
pub enum MappingAction {
    /// Replay stored messages through the draft and the table in force: what each Segment
    /// event name would become, and which destination payloads would change. Nothing is
    /// written or sent.
    Preview {
        /// A file with a `[mapping]` table, written as in tracklayer.toml.
        #[arg(long, value_name = "FILE")]
        draft: PathBuf,
        /// How far back to replay: 7d, 24h, 30m.
        #[arg(long, default_value = "7d", value_name = "DURATION")]
        since: String,
        /// Only messages of this environment.
        #[arg(long, value_name = "NAME")]
        env: Option<String>,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Put the draft in force: it replaces the mapping file the config names, and every running
    /// node reloads it as the new version (recorded with who and when).
    Activate {
        /// The draft to put in force (its version must be higher than the one in force).
        #[arg(long, value_name = "FILE")]
        draft: PathBuf,
        /// The result as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The dashboard, with the pipeline running inside it (the default command).
    Tui {
        /// Watch the store of headless instances instead (read-only, live): an SQLite file,
        /// a fleet's `postgres://` URL, or `env:VAR` naming a variable that holds the URL
        /// (keeps the password out of the process list).
        #[arg(long, value_name = "FILE.db|URL|env:VAR")]
        attach: Option<String>,
        /// Theme: default, light, high-contrast, or one in ./themes (an unknown name is an error).
        #[arg(long, value_name = "NAME")]
        theme: Option<String>,
        /// Override server.listen for the embedded pipeline.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
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
        #[arg(long, default_value_t = 20.0, value_name = "N")]
        rate: f64,
        /// How long traffic runs (seconds); headless default 10.
        #[arg(long, value_name = "SECS")]
        duration: Option<u64>,
        /// Theme: default, light, high-contrast, or one in ./themes (an unknown name is an error).
        #[arg(long, value_name = "NAME", conflicts_with = "headless")]
        theme: Option<String>,
        /// Leave the mouse to the terminal (see `tui --no-mouse`).
        #[arg(long, conflicts_with = "headless")]
        no_mouse: bool,
        /// With --headless: the summary as one JSON object.
        #[arg(long, requires = "headless")]
        json: bool,
    },
    /// Run the pipeline headless: the ingest endpoint and storage (logs to stderr).
    Serve {
        /// Override server.listen (e.g. 127.0.0.1:0 for a free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Sign and post a message or batch as Segment would; the reply on stdout, the HTTP status
    /// on stderr, exit 1 on a non-2xx answer.
    Send {
        /// Environment whose secret signs the request (only its secret is read).
        #[arg(long, value_name = "NAME")]
        env: String,
        /// Where to post (default: http://<server.listen>/segment/events).
        #[arg(long)]
        url: Option<String>,
        /// Signature scheme.
        #[arg(long, value_enum, default_value_t = send::Scheme::Tracklayer)]
        scheme: send::Scheme,
        /// JSON file with one message, an array, or {"batch": [...]}; `-` reads stdin. With
        /// --trace and no file, the controlled test scenario is sent.
        #[arg(value_hint = clap::ValueHint::FilePath)]
        file: Option<String>,
        /// Walk each call through every stage (authenticated → … → the destination's reply),
        /// one key press at a time; stop at the first failure with what to fix.
        #[arg(long)]
        trace: bool,
        /// Scenario steps to send with --trace (comma-separated): identify, product_added,
        /// checkout_started, order_completed, lead_submitted. Default: all.
        #[arg(long, value_delimiter = ',', value_name = "STEPS")]
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
        /// One JSON object on stdout: `{"status", "reply"}`, or with --trace every step's
        /// stages and whether the test passed.
        #[arg(long)]
        json: bool,
    },
    /// Show what is stored for a messageId, an event_id or a request id.
    Inspect {
        /// A messageId, an event_id or a request id (req_…).
        id: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Let a Segment Replay through: for the next N minutes, an event_id seen before passes
    /// (with the same event_id) instead of being recorded as a collision.
    AllowReplay {
        /// The environment the replay comes from.
        #[arg(long, value_name = "NAME")]
        env: String,
        /// How long the window stays open (1 to 10080).
        #[arg(long, default_value_t = 240, value_name = "N")]
        minutes: i64,
        /// Why (shown in the trace).
        #[arg(long, default_value = "operator replay")]
        note: String,
        /// The window as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Forget a person: delete everything stored of them (messages, events, profiles, identity
    /// graph, deliveries, warehouse rows), suppress their later messages, forward the deletion
    /// where a platform takes one. Give one or more identifiers of the same person.
    Forget {
        /// The environment the request comes from (recorded in the audit).
        #[arg(long, value_name = "NAME", required_unless_present = "list")]
        env: Option<String>,
        /// The person's Segment userId.
        #[arg(long, value_name = "ID")]
        user_id: Option<String>,
        /// The person's Segment anonymousId.
        #[arg(long, value_name = "ID")]
        anonymous_id: Option<String>,
        /// The person's email address.
        #[arg(long, value_name = "EMAIL")]
        email: Option<String>,
        /// The person's phone number.
        #[arg(long, value_name = "PHONE")]
        phone: Option<String>,
        /// Lift the suppression of these identifiers (Segment's UNSUPPRESS); deleted data stays
        /// deleted.
        #[arg(long, conflicts_with = "list")]
        undo: bool,
        /// List the recorded forget requests (the audit) instead.
        #[arg(long)]
        list: bool,
        /// The report (and the audit row) as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Re-queue a destination's dead (or pending) deliveries; a running instance sends them.
    Replay {
        /// The destination's name, as in the config.
        #[arg(long, value_name = "NAME")]
        destination: String,
        /// Only deliveries that reached their status at or after this instant (RFC 3339).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Which deliveries: dead (default) or pending (to send now, skipping the wait).
        #[arg(long, default_value = "dead", value_parser = ["dead", "pending"])]
        status: String,
        /// How many were re-queued, as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Validate the config (or the embedded default without one); every problem with its key,
    /// exit 1 on failure.
    Check {
        /// The verdict and every problem as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write a commented example config (to --path, else --config / TRACKLAYER_CONFIG, else
    /// ./tracklayer.toml).
    Init {
        /// Where to write it.
        #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
        path: Option<PathBuf>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// See a draft mapping table's effect on stored traffic (`preview`), then put it in force
    /// (`activate`).
    Mapping {
        #[command(subcommand)]
        action: MappingAction,
    },
    /// Print a shell completion script (e.g. `tracklayer completions bash > /etc/bash_completion.d/tracklayer`).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command into --dir.
    Man {
        /// Write tracklayer.1 and tracklayer-COMMAND.1 here instead.
        #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
        dir: Option<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    output::choose_colour(cli.color);
    let bare = cli.command.is_none();
    let terminal = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    // The dashboard owns the terminal: its logs go to a file instead of stderr. Without a
    // terminal there is no dashboard, and no log file is created for it.
    let to_file = terminal
        && (bare
            || matches!(
                cli.command,
                Some(Command::Tui { .. })
                    | Some(Command::Demo {
                        headless: false,
                        ..
                    })
            ));
    init_logging(
        to_file.then(|| PathBuf::from("tracklayer.log")),
        cli.log_format,
    );
    match run(cli, terminal) {
        Ok(code) => code,
        Err(e) if closed_pipe(&e) => ExitCode::from(141),
        Err(e) => {
            output::status(format!("{}: {e:#}", output::paint(output::BAD, "error")));
            ExitCode::FAILURE
        }
    }
}

/// The reader went away (`| head`): nothing to report, as with any Unix tool; the status is
/// the shell's for a closed pipe (128 + SIGPIPE). SIGPIPE itself stays ignored (Rust's
/// default), so a socket closed under a command (a database going away) is an error it
/// reports, never a silent death; every write to stdout goes through `output`, which returns
/// the error instead of panicking as `println!` would.
fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `TRACKLAYER_LOG` is a full filter, as `RUST_LOG` (`info`, `warn,tracklayer::delivery=debug`);
/// an unreadable one falls back to `info` and says so. Colour as `--color` says, never in a file.
fn init_logging(file: Option<PathBuf>, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let wanted = std::env::var("TRACKLAYER_LOG").unwrap_or_default();
    let (filter, bad_filter) =
        match EnvFilter::try_new(if wanted.is_empty() { "info" } else { &wanted }) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new("info"), Some(e.to_string())),
        };
    // Owner-only, like the database: log lines name peers, environments and message ids.
    let opened = file.and_then(|path| {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(path).ok()
    });
    let ansi = opened.is_none() && output::stderr_coloured();
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

/// `terminal`: stdin and stdout are a terminal, so a dashboard can be drawn.
fn run(cli: Cli, terminal: bool) -> Result<ExitCode> {
    let config = cli.config.as_deref();
    let Some(command) = cli.command else {
        if !terminal {
            output::status(
                "no terminal: running headless, as `tracklayer serve` (the dashboard needs one)",
            );
            return run::serve(config, None);
        }
        return run::tui(config, None, None, None, true);
    };
    match command {
        Command::Tui {
            attach,
            theme,
            listen,
            no_mouse,
        } => run::tui(config, attach, theme, listen, !no_mouse),
        Command::Serve { listen } => run::serve(config, listen),
        Command::Demo {
            headless,
            rate,
            duration,
            theme,
            no_mouse,
            json,
        } => {
            if !(rate > 0.0 && rate <= 5000.0) {
                bail!("--rate must be between 0 and 5000 requests per second");
            }
            if !(headless || terminal) {
                bail!("the demo dashboard needs a terminal; add --headless for a summary instead");
            }
            if let Some(path) = config {
                output::status(format!(
                    "demo runs on its own sandbox config; {} is not used",
                    path.display()
                ));
            }
            let summary = crate::demo::run(crate::demo::DemoOptions {
                headless,
                rate,
                duration: duration.map(std::time::Duration::from_secs),
                theme,
                mouse: !no_mouse,
            })?;
            if json {
                output::json(&summary)?;
            } else {
                output::result(&summary)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Send {
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
            json,
        } => {
            let target = send::Target { env, url, scheme };
            if trace {
                let options = send::TraceOptions {
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
                    json,
                };
                send::send_trace(config, target, file.as_deref(), options)
            } else {
                let file = file.ok_or_else(|| {
                    anyhow!("give a FILE (or `-` for stdin), or use --trace for the test scenario")
                })?;
                send::send(config, target, &file, json)
            }
        }
        Command::Inspect { id, json } => stored::inspect(config, &id, json),
        Command::AllowReplay {
            env,
            minutes,
            note,
            json,
        } => stored::allow_replay(config, &env, minutes, &note, json),
        Command::Forget {
            env,
            user_id,
            anonymous_id,
            email,
            phone,
            undo,
            list,
            json,
        } => forget::forget(
            config,
            forget::ForgetArgs {
                env,
                request: crate::pipeline::privacy::ForgetRequest {
                    user_id,
                    anonymous_id,
                    email,
                    phone,
                },
                undo,
                list,
                json,
            },
        ),
        Command::Replay {
            destination,
            since,
            status,
            json,
        } => stored::replay(config, &destination, since.as_deref(), &status, json),
        Command::Check { json } => check::check(config, json),
        Command::Init { path, force } => {
            let path = path
                .or_else(|| config.map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(workspace::DEFAULT_CONFIG));
            check::init(&path, force)
        }
        Command::Mapping { action } => match action {
            MappingAction::Preview {
                draft,
                since,
                env,
                json,
            } => mapping::preview(config, &draft, &since, env.as_deref(), json),
            MappingAction::Activate { draft, json } => mapping::activate(config, &draft, json),
        },
        Command::Completions { shell } => check::completions(shell),
        Command::Man { dir } => check::man(dir.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `--help`, completions and the man page all come from these definitions: every command
    /// and every argument explains itself.
    #[test]
    fn every_command_and_argument_has_help_text() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_name() == "help" {
                    continue;
                }
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let command = super::Cli::command();
        command.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&command, "tracklayer", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
