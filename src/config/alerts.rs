//! `[alerts]`: when the pipeline pages someone, and where. Every threshold has a default that
//! suits a production workspace; tests and small installs override them.

use serde::Deserialize;

use super::validate::Problems;
use super::{resolve_secret, EnvVars, Secret, SecretOwner};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    interval_secs: Option<u64>,
    cooldown_secs: Option<u64>,
    slack_webhook_url: Option<String>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    platform_down_failures: Option<u32>,
    queue_backlog_secs: Option<u64>,
    error_rate: Option<f64>,
    error_rate_window_secs: Option<u64>,
    error_rate_min_requests: Option<u32>,
    auth_failures: Option<u32>,
    auth_failures_window_secs: Option<u64>,
    unmapped_spike: Option<u32>,
    unmapped_window_secs: Option<u64>,
    dead_letters: Option<u32>,
    dead_letters_window_secs: Option<u64>,
    match_quality_drop: Option<f64>,
    match_quality_window_secs: Option<u64>,
    match_quality_min_events: Option<u32>,
}

/// Where notifications go and when each rule fires.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    /// How often the rules are evaluated.
    pub interval_secs: u64,
    /// An alert that fires again within this long after a notified one resolved stays quiet.
    pub cooldown_secs: u64,
    /// A Slack-compatible incoming webhook (`{"text": …}`); the URL itself is the credential.
    pub slack_webhook_url: Option<Secret>,
    /// A generic HTTPS receiver, signed like the internal webhooks with `webhook_secret`.
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<Secret>,
    /// `platform_down`: this many requests in a row failed (or the destination is paused).
    pub platform_down_failures: u32,
    /// `queue_backlog`: the oldest pending delivery waited longer than this.
    pub queue_backlog_secs: u64,
    /// `error_rate`: failed requests / requests over the window, with at least `min` requests.
    pub error_rate: f64,
    pub error_rate_window_secs: u64,
    pub error_rate_min_requests: u32,
    /// `auth_failures`: this many 401s naming one environment within the window.
    pub auth_failures: u32,
    pub auth_failures_window_secs: u64,
    /// `unmapped_spike`: this many messages of one unmapped name within the window.
    pub unmapped_spike: u32,
    pub unmapped_window_secs: u64,
    /// `dead_letters`: this many deliveries of one destination dead-lettered within the window.
    pub dead_letters: u32,
    pub dead_letters_window_secs: u64,
    /// `match_quality_drop`: a destination's average match quality over the window fell this
    /// many points (of 10) below its own average over the rest of the last day; 0 never.
    pub match_quality_drop: f64,
    pub match_quality_window_secs: u64,
    /// Events needed in the window and in the day before it before the rule compares them.
    pub match_quality_min_events: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            interval_secs: 15,
            cooldown_secs: 1800,
            slack_webhook_url: None,
            webhook_url: None,
            webhook_secret: None,
            platform_down_failures: 5,
            queue_backlog_secs: 300,
            error_rate: 0.25,
            error_rate_window_secs: 300,
            error_rate_min_requests: 20,
            auth_failures: 20,
            auth_failures_window_secs: 300,
            unmapped_spike: 50,
            unmapped_window_secs: 600,
            dead_letters: 1,
            dead_letters_window_secs: 600,
            match_quality_drop: 2.0,
            match_quality_window_secs: 900,
            match_quality_min_events: 20,
        }
    }
}

pub(super) fn alerts(
    raw: RawAlerts,
    env_vars: &EnvVars<'_>,
    problems: &mut Problems,
) -> AlertsConfig {
    let d = AlertsConfig::default();
    let mut positive = |key: &str, value: Option<u64>, default: u64| match value {
        Some(0) => {
            problems.push(format!("alerts.{key}"), "must be at least 1");
            default
        }
        Some(v) => v,
        None => default,
    };
    let interval_secs = positive("interval_secs", raw.interval_secs, d.interval_secs);
    let platform_down_failures = positive(
        "platform_down_failures",
        raw.platform_down_failures.map(u64::from),
        d.platform_down_failures.into(),
    ) as u32;
    let queue_backlog_secs = positive(
        "queue_backlog_secs",
        raw.queue_backlog_secs,
        d.queue_backlog_secs,
    );
    let error_rate_window_secs = positive(
        "error_rate_window_secs",
        raw.error_rate_window_secs,
        d.error_rate_window_secs,
    );
    let error_rate_min_requests = positive(
        "error_rate_min_requests",
        raw.error_rate_min_requests.map(u64::from),
        d.error_rate_min_requests.into(),
    ) as u32;
    let auth_failures = positive(
        "auth_failures",
        raw.auth_failures.map(u64::from),
        d.auth_failures.into(),
    ) as u32;
    let auth_failures_window_secs = positive(
        "auth_failures_window_secs",
        raw.auth_failures_window_secs,
        d.auth_failures_window_secs,
    );
    let unmapped_spike = positive(
        "unmapped_spike",
        raw.unmapped_spike.map(u64::from),
        d.unmapped_spike.into(),
    ) as u32;
    let unmapped_window_secs = positive(
        "unmapped_window_secs",
        raw.unmapped_window_secs,
        d.unmapped_window_secs,
    );
    let dead_letters = positive(
        "dead_letters",
        raw.dead_letters.map(u64::from),
        d.dead_letters.into(),
    ) as u32;
    let dead_letters_window_secs = positive(
        "dead_letters_window_secs",
        raw.dead_letters_window_secs,
        d.dead_letters_window_secs,
    );
    let match_quality_window_secs = positive(
        "match_quality_window_secs",
        raw.match_quality_window_secs,
        d.match_quality_window_secs,
    );
    let match_quality_min_events = positive(
        "match_quality_min_events",
        raw.match_quality_min_events.map(u64::from),
        d.match_quality_min_events.into(),
    ) as u32;
    let match_quality_drop = match raw.match_quality_drop {
        Some(points) if !(0.0..=10.0).contains(&points) => {
            problems.push(
                "alerts.match_quality_drop",
                "must be points of the 0-10 score between 0 (never) and 10, e.g. 2",
            );
            d.match_quality_drop
        }
        Some(points) => points,
        None => d.match_quality_drop,
    };
    let error_rate = match raw.error_rate {
        Some(r) if !(r > 0.0 && r <= 1.0) => {
            problems.push(
                "alerts.error_rate",
                "must be a share of requests between 0 and 1, e.g. 0.25",
            );
            d.error_rate
        }
        Some(r) => r,
        None => d.error_rate,
    };
    let slack_webhook_url = raw
        .slack_webhook_url
        .as_deref()
        .and_then(|v| url_secret("alerts.slack_webhook_url", v, env_vars, problems));
    let webhook_url = raw
        .webhook_url
        .as_deref()
        .and_then(|v| url_secret("alerts.webhook_url", v, env_vars, problems))
        .map(|s| s.expose().to_string());
    let webhook_secret = raw.webhook_secret.as_deref().and_then(|v| {
        resolve_secret("alerts.webhook_secret", v, SecretOwner::Alerts, env_vars)
            .map_err(|e| problems.push_error(e))
            .ok()
    });
    if webhook_url.is_some() != webhook_secret.is_some() {
        problems.push(
            "alerts.webhook_secret",
            "alerts.webhook_url and alerts.webhook_secret go together: the receiver checks the signature",
        );
    }
    AlertsConfig {
        interval_secs,
        cooldown_secs: raw.cooldown_secs.unwrap_or(d.cooldown_secs),
        slack_webhook_url,
        webhook_url,
        webhook_secret,
        platform_down_failures,
        queue_backlog_secs,
        error_rate,
        error_rate_window_secs,
        error_rate_min_requests,
        auth_failures,
        auth_failures_window_secs,
        unmapped_spike,
        unmapped_window_secs,
        dead_letters,
        dead_letters_window_secs,
        match_quality_drop,
        match_quality_window_secs,
        match_quality_min_events,
    }
}

/// An http(s) URL, literal or `env:VAR`; never echoed (a Slack webhook URL is a credential).
fn url_secret(
    key: &str,
    value: &str,
    env_vars: &EnvVars<'_>,
    problems: &mut Problems,
) -> Option<Secret> {
    let resolved = match value.strip_prefix("env:") {
        Some(var) => match env_vars.get(var, SecretOwner::Alerts) {
            Ok(Some(v)) => v,
            Ok(None) => return Some(Secret::unresolved(var)),
            Err(reason) => {
                problems.push(key, reason);
                return None;
            }
        },
        None => value.to_string(),
    };
    match url::Url::parse(&resolved) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Some(Secret::new(resolved))
        }
        _ => {
            problems.push(
                key,
                "must be an http(s) URL such as https://hooks.slack.com/services/…",
            );
            None
        }
    }
}
