//! `tracklayer send`: sign and post as Segment would, and the controlled test walk (`--trace`).

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};

use super::output::{self, paint, BAD, DIM, GOOD, WARN};
use super::workspace;
use crate::config::{self, Config, Needs, Secret};
use crate::ingest::auth;
use crate::segment::split_body;
use crate::store;
use crate::testsend::{self, Stage, Verdict};

#[derive(Clone, Copy, Debug, clap::ValueEnum, PartialEq, Eq)]
pub enum Scheme {
    /// TrackLayer's timestamped HMAC-SHA256 (X-TrackLayer-Timestamp + X-TrackLayer-Signature).
    Tracklayer,
    /// Segment's X-Signature (HMAC-SHA1 of the body, of element 0 for a bare array).
    Segment,
}

/// Where and how to post.
pub struct Target {
    pub env: String,
    pub url: Option<String>,
    pub scheme: Scheme,
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
        workspace::unknown(
            "environment",
            name,
            config.environments.iter().map(|e| e.name.as_str()),
        )
    })
}

impl Target {
    /// `--url`, else the config's own endpoint.
    fn url(&self, config: &Config) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| format!("http://{}/segment/events", config.server.listen))
    }

    /// The headers that sign `body` for this target's environment.
    fn sign(
        &self,
        config: &Config,
        secret: &Secret,
        body: &[u8],
    ) -> Result<Vec<(&'static str, String)>> {
        signed_headers(
            &config.workspace.account,
            &self.env,
            secret,
            body,
            self.scheme == Scheme::Segment,
        )
    }
}

/// What `send` needs of a config: the one environment it signs for (and the store to trace).
fn needs(env: &str, trace: bool) -> Needs {
    Needs::Only {
        environment: Some(env.to_string()),
        storage: trace,
    }
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

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `send FILE`: the reply on stdout (with `--json`, `{"status", "reply"}`), the HTTP status on
/// stderr; exit 1 on a non-2xx answer.
pub fn send(config: Option<&Path>, target: Target, file: &str, json: bool) -> Result<ExitCode> {
    let loaded = workspace::load(config, &needs(&target.env, false), false)?;
    let config = loaded.config();
    let environment = environment_named(config, &target.env)?;
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
    let headers = target.sign(config, &environment.secret, &body)?;
    let url = target.url(config);
    let (status, reply) =
        runtime()?.block_on(post_signed(&send_client()?, &url, &headers, body))?;
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let ok = (200..300).contains(&status);
    output::status(paint(
        if ok { GOOD } else { BAD },
        &format!("HTTP {status} {reason}"),
    ));
    if json {
        output::json(&serde_json::json!({ "status": status, "reply": reply }))?;
    } else {
        match &reply {
            serde_json::Value::String(text) => output::result(text)?,
            json => output::json(json)?,
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub struct TraceOptions {
    pub scenario: Vec<String>,
    pub user: testsend::TestUser,
    /// Include destinations that would receive a live event.
    pub live: bool,
    /// `--yes`: the live send is confirmed without a prompt.
    pub confirmed: bool,
    pub keep_ids: bool,
    pub pause: bool,
    pub json: bool,
}

/// One call of the walk, for `--json`.
#[derive(serde::Serialize)]
struct TracedStep<'a> {
    label: &'a str,
    message_id: String,
    http_status: u16,
    stages: Vec<Stage>,
}

/// `send --trace`: each call, then its stages as they settle. The walk is the result (stdout);
/// the destination list and prompts are status (stderr). With `--json`, one object at the end.
pub fn send_trace(
    config: Option<&Path>,
    target: Target,
    file: Option<&str>,
    options: TraceOptions,
) -> Result<ExitCode> {
    use std::io::IsTerminal;

    let loaded = workspace::load(config, &needs(&target.env, true), false)?;
    let config = loaded.config();
    let environment = environment_named(config, &target.env)?;
    for step in &options.scenario {
        if !testsend::SCENARIO_STEPS.contains(&step.as_str()) {
            bail!(
                "--scenario: `{step}` is not one of {}",
                testsend::SCENARIO_STEPS.join(", ")
            );
        }
    }
    let plan = testsend::TestPlan::new(
        loaded.setup.test_modes(),
        loaded.setup.profile_destinations(),
        options.live,
    );
    for name in plan.modes.keys() {
        output::status(format!("destination {name}: {}", plan.describe(name)));
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
            output::status("not sent");
            return Ok(ExitCode::FAILURE);
        }
    }
    let run_id = chrono::Utc::now().format("%Y%m%d%H%M%S%3f").to_string();
    let steps: Vec<testsend::Step> = match file {
        Some(path) => read_steps(path, &run_id, options.keep_ids, &plan.skip)?,
        None => testsend::scenario(&options.user, &run_id, &options.scenario, &plan.skip),
    };
    let url = target.url(config);
    let pause = options.pause && !options.json && std::io::stdin().is_terminal();
    let location = store::StoreLocation::of(&config.storage);
    let mut reader: Option<Box<dyn store::TraceReader>> = None;
    let runtime = runtime()?;
    let client = send_client()?;
    let mut traced = Vec::new();
    let mut verdict = Ok(());
    for (n, step) in steps.iter().enumerate() {
        let body = serde_json::to_vec(&step.outgoing())?;
        let message_id = step
            .message
            .get("messageId")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        if !options.json {
            output::result(format!(
                "\n▶ {}/{} {}  messageId {message_id}",
                n + 1,
                steps.len(),
                step.label
            ))?;
        }
        let headers = target.sign(config, &environment.secret, &body)?;
        let (status, reply) = runtime.block_on(post_signed(&client, &url, &headers, body))?;
        let sent = testsend::SendResult { status, reply };
        // Poll the database until every stage has its final verdict (deliveries answered).
        let started = std::time::Instant::now();
        let stages = loop {
            if reader.is_none() {
                reader = location.trace_reader().ok();
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
        let failed = stages.iter().find(|s| s.verdict == Verdict::Fail);
        if !options.json {
            print_stages(&stages, pause)?;
        }
        if let Some(stage) = failed {
            verdict = Err(format!(
                "stopped at `{}`: fix it and run the test again",
                stage.name
            ));
        } else if !testsend::settled(&stages) {
            verdict = Err(format!("not settled after 30 s: a destination is still retrying (see `tracklayer inspect {message_id}`)"));
        }
        traced.push(TracedStep {
            label: &step.label,
            message_id,
            http_status: status,
            stages,
        });
        if verdict.is_err() {
            break;
        }
    }
    if options.json {
        output::json(&serde_json::json!({
            "passed": verdict.is_ok(),
            "stopped": verdict.as_ref().err(),
            "steps": traced,
        }))?;
    } else {
        match &verdict {
            Ok(()) => output::result(paint(
                GOOD,
                "\ncontrolled test passed: every call traced end to end. You can widen the allowlist.",
            ))?,
            Err(why) => output::result(paint(BAD, &format!("\n{why}")))?,
        }
    }
    Ok(if verdict.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The calls of a FILE for the walk: one message, an array, or `{"batch": [...]}`.
fn read_steps(
    path: &str,
    run_id: &str,
    keep_ids: bool,
    skip: &[String],
) -> Result<Vec<testsend::Step>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{path} is not JSON"))?;
    let messages = match value {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(mut o) if o.contains_key("batch") => match o.remove("batch") {
            Some(serde_json::Value::Array(items)) => items,
            _ => bail!("{path}: `batch` is not an array"),
        },
        other => vec![other],
    };
    Ok(messages
        .into_iter()
        .enumerate()
        .map(|(n, m)| testsend::file_step(m, run_id, n + 1, keep_ids, skip))
        .collect())
}

fn print_stages(stages: &[Stage], pause: bool) -> Result<()> {
    for s in stages {
        let (mark, style) = match s.verdict {
            Verdict::Pass => ("✔", GOOD),
            Verdict::Warn => ("!", WARN),
            Verdict::Skip => ("·", DIM),
            Verdict::Wait => ("…", WARN),
            Verdict::Fail => ("✘", BAD),
        };
        output::result(format!(
            "  {} {:<14} {}",
            paint(style, mark),
            s.name,
            s.detail.first().cloned().unwrap_or_default()
        ))?;
        for line in s.detail.iter().skip(1) {
            output::result(format!("    {line}"))?;
        }
        if let Some(fix) = &s.fix {
            output::result(format!("    → {fix}"))?;
        }
        if s.verdict == Verdict::Fail {
            break;
        }
        if pause {
            eprint!("    (enter: next stage) ");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
    }
    Ok(())
}
