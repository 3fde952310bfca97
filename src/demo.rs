//! `tracklayer demo`: a temporary workspace, the sandbox APIs, the whole pipeline and generated
//! Segment traffic, with no config, credentials or network. One destination fails for a while
//! and recovers; another rejects a few events permanently, so every pane has something to show.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::Secret;
use crate::destinations::Setup;
use crate::sandbox::traffic::{Target, Traffic, TrafficStats};
use crate::sandbox::{Fault, Platform, Sandbox};
use crate::store::views::DemoSummary;

pub struct DemoOptions {
    pub headless: bool,
    pub rate: f64,
    pub duration: Option<Duration>,
    pub theme: Option<String>,
    /// Capture the mouse in the dashboard.
    pub mouse: bool,
}

fn random_secret() -> String {
    let mut bytes = [0u8; 24];
    let _ = getrandom::fill(&mut bytes);
    format!("demo_{}", hex::encode(bytes))
}

fn config_text(db: &std::path::Path, sandbox: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[storage]
path = "{db}"

[workspace]
account = "acct_demo"

[[environments]]
name = "production"
secret = "env:DEMO_PRODUCTION"

[[environments]]
name = "staging"
secret = "env:DEMO_STAGING"

[[destinations]]
name = "meta"
kind = "meta_capi"
endpoint = "{sandbox}"
environments = ["production"]
consent = ["Advertising"]
retry_schedule = [1, 2, 4]
pixel_id = "1234567890123456"
access_token = "EAAB_DEMO"
test_event_code = "TEST_DEMO"

[[destinations]]
name = "google"
kind = "google_ads"
endpoint = "{sandbox}"
environments = ["production"]
consent = ["Advertising"]
retry_schedule = [1, 2, 4]
customer_id = "1234567890"
conversion_actions = {{ purchase = "555000111", lead = "555000222" }}
access_token = "ya29.DEMO"
validate_only = true

[[destinations]]
name = "ga4"
kind = "ga4"
endpoint = "{sandbox}"
environments = ["production"]
consent = ["Analytics"]
retry_schedule = [1, 2, 4]
measurement_id = "G-DEMO12345"
api_secret = "ga4_demo_secret"

[[destinations]]
name = "klaviyo"
kind = "klaviyo"
endpoint = "{sandbox}"
consent = ["Marketing"]
retry_schedule = [1, 2]
api_key = "pk_demo_0123456789"

[[destinations]]
name = "tiktok"
kind = "tiktok"
endpoint = "{sandbox}"
environments = ["production"]
consent = ["Advertising", "DataSharing"]
retry_schedule = [1, 2, 4, 8, 8]
pixel_code = "CDEMO1234567890"
access_token = "TT_DEMO"
test_event_code = "TEST_DEMO"

[[destinations]]
name = "warehouse"
kind = "warehouse"
retry_schedule = [1, 2]
path = "warehouse.db"

[[destinations]]
name = "orders"
kind = "webhook"
retry_schedule = [1, 2]
url = "{sandbox}/webhooks/orders"
secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
"#,
        db = db.display()
    )
}

/// Faults on a timeline: TikTok goes down at 25% of the run and comes back at 55%; Meta rate
/// limits once; Klaviyo refuses a few events with a bad token (they dead-letter).
async fn fault_schedule(sandbox: Arc<crate::sandbox::SandboxState>, length: Duration) {
    sandbox.push_fault(
        Platform::Meta,
        Fault::RateLimit {
            retry_after_secs: 2,
        },
    );
    for _ in 0..3 {
        sandbox.push_fault(Platform::Klaviyo, Fault::BadToken);
    }
    tokio::time::sleep(length.mul_f64(0.25)).await;
    tracing::info!("demo: tiktok starts failing (503)");
    sandbox.set_sticky(Platform::Tiktok, Some(Fault::Status { status: 503 }));
    tokio::time::sleep(length.mul_f64(0.30)).await;
    tracing::info!("demo: tiktok recovers");
    sandbox.set_sticky(Platform::Tiktok, None);
}

pub fn run(options: DemoOptions) -> Result<DemoSummary> {
    if !options.headless {
        // A misspelt theme is an error before anything starts, never a silent fallback.
        let (themes, _) = crate::tui::theme::load_all(Some(std::path::Path::new("themes")));
        crate::tui::theme::select(&themes, options.theme.as_deref()).map_err(anyhow::Error::msg)?;
    }
    let dir = tempfile::Builder::new()
        .prefix("tracklayer-demo-")
        .tempdir()
        .context("creating the demo workspace")?;
    let db: PathBuf = dir.path().join("tracklayer.db");
    let production = random_secret();
    let production_for_tui = production.clone();
    let staging = random_secret();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (sandbox, listener) = runtime.block_on(async {
        let sandbox = Sandbox::start(tokio::net::TcpListener::bind("127.0.0.1:0").await?).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Ok::<_, std::io::Error>((sandbox, listener))
    })?;
    sandbox.state.webhook_key(
        "orders",
        crate::destinations::webhook::decode_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
            .unwrap_or_default(),
    );
    let text = config_text(&db, &sandbox.url());
    let (p, s) = (production.clone(), staging.clone());
    let setup = Setup::parse(
        &text,
        &dir.path().join("tracklayer.toml"),
        &move |name| match name {
            "DEMO_PRODUCTION" => Some(p.clone()),
            "DEMO_STAGING" => Some(s.clone()),
            _ => None,
        },
    )
    .context("the demo configuration")?;
    let names: Vec<String> = setup
        .config
        .destinations
        .iter()
        .map(|d| d.name.clone())
        .collect();
    let test_plan =
        crate::testsend::TestPlan::new(setup.test_modes(), setup.profile_destinations(), false);
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let drafts = crate::preview::PreviewContext {
        location: crate::store::StoreLocation::Sqlite(db.clone()),
        mapping: setup.config.mapping.clone(),
        targets: setup.route_targets(),
        destinations: setup.destinations.clone(),
    };
    let pipeline = runtime.spawn(crate::run(setup, listener, async {
        let _ = stopped.await;
    }));

    let stats = Arc::new(TrafficStats::default());
    // An interactive demo runs until the user quits (traffic for up to an hour).
    let length = options
        .duration
        .unwrap_or(Duration::from_secs(if options.headless {
            10
        } else {
            3600
        }));
    let until = Instant::now() + length;
    let seed = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(7) as u64;
    let traffic = Traffic::new(
        Target {
            url: format!("http://{addr}/segment/events"),
            account: "acct_demo".into(),
            production_secret: Secret::new(production),
            staging_secret: Secret::new(staging),
        },
        seed,
    );
    let traffic_task = runtime.spawn(traffic.run(options.rate, until, stats.clone()));
    // Interactive runs show the outage within the first two minutes.
    let faults = runtime.spawn(fault_schedule(
        sandbox.state.clone(),
        length.min(Duration::from_secs(120)),
    ));

    if options.headless {
        eprintln!("TrackLayer demo: {length:?} of traffic at {} requests/s into http://{addr}/segment/events", options.rate);
        runtime.block_on(async {
            let _ = traffic_task.await;
            // Let retries due soon go out before counting.
            let settle = Instant::now() + Duration::from_secs(8);
            while Instant::now() < settle {
                let pending = crate::store::StoreReader::open(&db)
                    .and_then(|r| r.delivery_counts())
                    .map(|c| {
                        c.iter()
                            .filter(|(_, s, _)| s == "pending" || s == "in_flight")
                            .map(|(_, _, n)| *n)
                            .sum::<i64>()
                    })
                    .unwrap_or(0);
                if pending == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    } else {
        let (themes, problems) = crate::tui::theme::load_all(Some(std::path::Path::new("themes")));
        let mut app = crate::tui::App::new(
            themes,
            options.theme.as_deref(),
            format!(
                "demo · http://{addr}/segment/events · sandbox {}",
                sandbox.url()
            ),
        );
        app.status.set(problems.first().cloned().unwrap_or_else(|| {
            "demo: TikTok fails for a while and recovers (5: diagnostics, 8: test send)".into()
        }));
        app.test = crate::tui::app::TestSendState::new(test_plan, true);
        app.actions = Ok(());
        app.mouse = options.mouse;
        let target = crate::tui::TestSendTarget {
            url: format!("http://{addr}/segment/events"),
            account: "acct_demo".into(),
            environment: "production".into(),
            secret: Secret::new(production_for_tui),
        };
        crate::tui::run(
            crate::store::StoreLocation::Sqlite(db.clone()),
            crate::tui::Destinations::Configured(names),
            app,
            Some(crate::tui::Embedded {
                test: target,
                drafts,
            }),
        )?;
        traffic_task.abort();
    }
    faults.abort();
    let _ = stop.send(());
    let _ = runtime.block_on(pipeline);
    let summary = crate::store::StoreReader::open(&db)?.demo_summary()?;
    drop(sandbox);
    Ok(summary)
}
