//! The long-running commands: `serve` (headless) and `tui` (the dashboard).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::workspace::{self, Source};
use crate::config::Needs;
use crate::store::{self, StoreLocation, StoreReader};

/// `serve`: the pipeline headless. The port is bound before the embedded default's workspace
/// is created, so a start that cannot listen leaves nothing behind.
pub fn serve(config: Option<&Path>, listen: Option<SocketAddr>) -> Result<ExitCode> {
    let file = workspace::config_file(config);
    let from_file = file
        .as_deref()
        .map(|path| workspace::load(Some(path), &Needs::Everything, false))
        .transpose()?;
    let address = listen.unwrap_or_else(|| match &from_file {
        Some(loaded) => loaded.config().server.listen,
        None => crate::config::EMBEDDED_LISTEN,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(address))
        .with_context(|| format!("cannot listen on {address}"))?;
    let loaded = match from_file {
        Some(loaded) => loaded,
        None => workspace::load(None, &Needs::Everything, true)?,
    };
    let mut setup = loaded.setup.clone();
    setup.config.server.listen = address;
    runtime.block_on(async move {
        let addr = listener.local_addr()?;
        workspace::print_banner(&loaded, addr, std::io::stderr().is_terminal());
        crate::run(setup, listener, shutdown_signal()).await?;
        tracing::info!("stopped; every acknowledged request is committed");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `tui`: the dashboard, with the pipeline inside or attached to a store.
pub fn tui(
    config: Option<&Path>,
    attach: Option<String>,
    theme: Option<String>,
    listen: Option<SocketAddr>,
    mouse: bool,
) -> Result<ExitCode> {
    let (themes, problems) = crate::tui::theme::load_all(Some(Path::new("themes")));
    crate::tui::theme::select(&themes, theme.as_deref()).map_err(anyhow::Error::msg)?;
    if !(std::io::stdout().is_terminal() && std::io::stdin().is_terminal()) {
        // Before anything is created: a dashboard that cannot draw leaves nothing behind.
        bail!("the dashboard needs a terminal; run `tracklayer serve` for the pipeline headless");
    }
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
        if let Some(problem) = problems.first() {
            app.status.set(problem.clone());
        }
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
    let loaded = workspace::load(config, &Needs::Everything, true)?;
    let mut setup = loaded.setup.clone();
    if let Some(listen) = listen {
        setup.config.server.listen = listen;
    }
    let test_plan =
        crate::testsend::TestPlan::new(setup.test_modes(), setup.profile_destinations(), false);
    let config = &setup.config;
    let store = StoreLocation::of(&config.storage);
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
    let drafts = crate::preview::PreviewContext {
        location: store.clone(),
        mapping: setup.config.mapping.clone(),
        targets: setup.route_targets(),
        destinations: setup.destinations.clone(),
    };
    let pipeline = runtime.spawn(crate::run(setup, listener, async {
        let _ = stopped.await;
    }));
    let mut source = format!("http://{addr}/segment/events");
    // The secret stays off the screen (dashboards get shared); the file holds it.
    if let Source::Embedded {
        created: true,
        secret_file,
    } = &loaded.source
    {
        source.push_str(&format!(
            "  new workspace: credentials in {}",
            secret_file.display()
        ));
    }
    let mut app = crate::tui::App::new(themes, theme.as_deref(), source);
    app.actions = Ok(());
    app.mouse = mouse;
    if let Some(problem) = problems.first() {
        app.status.set(problem.clone());
    }
    app.test = crate::tui::app::TestSendState::new(test_plan, true);
    let result = crate::tui::run(
        store,
        crate::tui::Destinations::Configured(names),
        app,
        Some(crate::tui::Embedded {
            test: test_target,
            drafts,
        }),
    );
    let _ = stop.send(());
    let _ = runtime.block_on(pipeline);
    result?;
    Ok(ExitCode::SUCCESS)
}

pub async fn shutdown_signal() {
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
