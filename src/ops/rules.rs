//! The alert rules: which conditions hold now, from recent signals and the store's view of each
//! destination. Pure: no clocks, no IO; the ops task supplies `now_ms` and the data.

use serde_json::{json, Value};

use super::signals::Signals;
use crate::config::AlertsConfig;
use crate::store::{DestinationPause, QueueCounts};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    PlatformDown,
    QueueBacklog,
    ErrorRate,
    AuthFailures,
    UnmappedSpike,
    DeadLetters,
    MatchQualityDrop,
}

impl Rule {
    pub const ALL: [Rule; 7] = [
        Rule::PlatformDown,
        Rule::QueueBacklog,
        Rule::ErrorRate,
        Rule::AuthFailures,
        Rule::UnmappedSpike,
        Rule::DeadLetters,
        Rule::MatchQualityDrop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::PlatformDown => "platform_down",
            Rule::QueueBacklog => "queue_backlog",
            Rule::ErrorRate => "error_rate",
            Rule::AuthFailures => "auth_failures",
            Rule::UnmappedSpike => "unmapped_spike",
            Rule::DeadLetters => "dead_letters",
            Rule::MatchQualityDrop => "match_quality_drop",
        }
    }

    pub fn parse(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// The store's view of a destination (shared by the fleet on PostgreSQL).
#[derive(Debug, Clone, Default)]
pub struct DestinationView {
    pub name: String,
    pub paused: Option<DestinationPause>,
    pub queue: QueueCounts,
}

/// A condition that holds now: what fires (or keeps firing) an alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub rule: Rule,
    pub subject: String,
    /// One line a person reads in a notification.
    pub summary: String,
    pub evidence: Value,
}

fn secs(ms: i64) -> i64 {
    (ms.max(0) + 999) / 1000
}

/// A destination whose events lately carry fewer identifiers than over the rest of its day (a
/// frontend release that lost the email): its average match quality over the window against
/// the day before it.
fn quality_drop(
    now_ms: i64,
    config: &AlertsConfig,
    name: &str,
    d: &super::signals::DestinationSignals,
) -> Option<Condition> {
    if config.match_quality_drop <= 0.0 {
        return None;
    }
    let window_ms = config.match_quality_window_secs as i64 * 1000;
    let since = now_ms - window_ms;
    let (recent, recent_n) = d.quality_between(since, now_ms + 1);
    let (day, day_n) = d.quality_between(now_ms - super::signals::QUALITY_DAY_MS, since);
    let min = u64::from(config.match_quality_min_events);
    let (recent, day) = (recent?, day?);
    if recent_n < min || day_n < min || day - recent < config.match_quality_drop {
        return None;
    }
    Some(Condition {
        rule: Rule::MatchQualityDrop,
        subject: name.to_string(),
        summary: format!(
            "{name}: match quality {recent:.1}/10 over the last {} s against {day:.1} over the day before: events lost an identifier (a release that dropped the email?)",
            config.match_quality_window_secs
        ),
        evidence: json!({
            "destination": name,
            "recent": (recent * 10.0).round() / 10.0,
            "recent_events": recent_n,
            "day": (day * 10.0).round() / 10.0,
            "day_events": day_n,
            "drop": config.match_quality_drop,
            "window_secs": config.match_quality_window_secs,
        }),
    })
}

pub fn evaluate(
    now_ms: i64,
    config: &AlertsConfig,
    signals: &Signals,
    destinations: &[DestinationView],
) -> Vec<Condition> {
    let mut out = Vec::new();
    for view in destinations {
        let name = view.name.as_str();
        let recent = signals.destinations.get(name);
        let failing = recent.map_or(0, |d| d.consecutive_failures);
        let last_error = recent.and_then(|d| d.last_error.clone());
        let paused = view.paused.as_ref().filter(|p| p.in_force(now_ms));
        if paused.is_some() || failing >= config.platform_down_failures {
            let why = match paused {
                Some(p) => format!("paused: {}", p.reason),
                None => format!("{failing} requests in a row failed"),
            };
            let last = last_error
                .as_ref()
                .map(|(_, e)| format!("; last error: {e}"))
                .unwrap_or_default();
            out.push(Condition {
                rule: Rule::PlatformDown,
                subject: name.to_string(),
                summary: format!("{name} is down ({why}){last}"),
                evidence: json!({
                    "destination": name,
                    "paused_until_ms": paused.map(|p| p.until_ms),
                    "pause_reason": paused.map(|p| p.reason.clone()),
                    "consecutive_failures": failing,
                    "last_error": last_error.as_ref().map(|(_, e)| e.clone()),
                    "last_error_at_ms": last_error.as_ref().map(|(at, _)| *at),
                    "queued": view.queue.pending + view.queue.in_flight,
                }),
            });
        }
        if let Some(oldest) = view.queue.oldest_pending_ms {
            let age_ms = now_ms - oldest;
            if age_ms > (config.queue_backlog_secs as i64) * 1000 {
                out.push(Condition {
                    rule: Rule::QueueBacklog,
                    subject: name.to_string(),
                    summary: format!(
                        "{name}: {} deliveries waiting, the oldest for {} s (threshold {} s)",
                        view.queue.pending,
                        secs(age_ms),
                        config.queue_backlog_secs
                    ),
                    evidence: json!({
                        "destination": name,
                        "pending": view.queue.pending,
                        "in_flight": view.queue.in_flight,
                        "oldest_pending_age_secs": secs(age_ms),
                        "last_error": last_error.as_ref().map(|(_, e)| e.clone()),
                    }),
                });
            }
        }
        if let Some(d) = recent {
            let since = now_ms - (config.error_rate_window_secs as i64) * 1000;
            let (mut requests, mut failed) = (0u32, 0u32);
            for (_, (ok, _)) in d.requests.since(since) {
                requests += 1;
                failed += u32::from(!ok);
            }
            let rate = f64::from(failed) / f64::from(requests.max(1));
            if requests >= config.error_rate_min_requests && rate >= config.error_rate {
                out.push(Condition {
                    rule: Rule::ErrorRate,
                    subject: name.to_string(),
                    summary: format!(
                        "{name}: {failed} of {requests} requests failed in the last {} s ({:.0}%)",
                        config.error_rate_window_secs,
                        rate * 100.0
                    ),
                    evidence: json!({
                        "destination": name,
                        "requests": requests,
                        "failed": failed,
                        "rate": rate,
                        "window_secs": config.error_rate_window_secs,
                        "last_error": last_error.as_ref().map(|(_, e)| e.clone()),
                    }),
                });
            }
            let since = now_ms - (config.dead_letters_window_secs as i64) * 1000;
            let dead: Vec<&String> = d.dead.since(since).map(|(_, r)| r).collect();
            if dead.len() as u32 >= config.dead_letters {
                out.push(Condition {
                    rule: Rule::DeadLetters,
                    subject: name.to_string(),
                    summary: format!(
                        "{name}: {} deliveries dead-lettered in the last {} s; last: {}",
                        dead.len(),
                        config.dead_letters_window_secs,
                        dead.last().map(|s| s.as_str()).unwrap_or_default()
                    ),
                    evidence: json!({
                        "destination": name,
                        "count": dead.len(),
                        "window_secs": config.dead_letters_window_secs,
                        "last_reason": dead.last(),
                    }),
                });
            }
            if let Some(condition) = quality_drop(now_ms, config, name, d) {
                out.push(condition);
            }
        }
    }
    let since = now_ms - (config.auth_failures_window_secs as i64) * 1000;
    for (environment, window) in &signals.auth_failures {
        let mut reasons: std::collections::BTreeMap<&str, u32> = Default::default();
        for (_, code) in window.since(since) {
            *reasons.entry(code).or_default() += 1;
        }
        let count: u32 = reasons.values().sum();
        if count >= config.auth_failures {
            out.push(Condition {
                rule: Rule::AuthFailures,
                subject: environment.clone(),
                summary: format!(
                    "{count} requests for environment {environment} refused with 401 in the last {} s ({}): a rotated secret not updated in Segment?",
                    config.auth_failures_window_secs,
                    reasons
                        .iter()
                        .map(|(code, n)| format!("{code} ×{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                evidence: json!({
                    "environment": environment,
                    "count": count,
                    "window_secs": config.auth_failures_window_secs,
                    "reasons": reasons,
                }),
            });
        }
    }
    let since = now_ms - (config.unmapped_window_secs as i64) * 1000;
    for (event, window) in &signals.unmapped {
        let mut environments: Vec<&str> = Vec::new();
        let mut count = 0u32;
        for (_, env) in window.since(since) {
            count += 1;
            if !environments.contains(&env.as_str()) {
                environments.push(env);
            }
        }
        if count >= config.unmapped_spike {
            out.push(Condition {
                rule: Rule::UnmappedSpike,
                subject: event.clone(),
                summary: format!(
                    "{count} messages named {:?} in the last {} s have no mapping (a frontend deploy?); they are kept as unmapped",
                    crate::segment::clip(event),
                    config.unmapped_window_secs
                ),
                evidence: json!({
                    "event": event,
                    "count": count,
                    "environments": environments,
                    "window_secs": config.unmapped_window_secs,
                }),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AlertsConfig {
        AlertsConfig {
            platform_down_failures: 3,
            error_rate_min_requests: 4,
            auth_failures: 3,
            unmapped_spike: 2,
            queue_backlog_secs: 10,
            ..AlertsConfig::default()
        }
    }

    fn view(name: &str) -> DestinationView {
        DestinationView {
            name: name.into(),
            ..DestinationView::default()
        }
    }

    #[test]
    fn a_destination_failing_in_a_row_is_down_until_one_request_succeeds() {
        let mut s = Signals::default();
        for t in 0..3 {
            s.request("meta", t, false, Some("Meta answered HTTP 500".into()));
        }
        let fired = evaluate(10, &config(), &s, &[view("meta"), view("tiktok")]);
        let down: Vec<_> = fired
            .iter()
            .filter(|c| c.rule == Rule::PlatformDown)
            .collect();
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].subject, "meta");
        assert!(down[0].summary.contains("3 requests in a row failed"));
        assert_eq!(down[0].evidence["last_error"], "Meta answered HTTP 500");
        s.request("meta", 11, true, None);
        assert!(evaluate(12, &config(), &s, &[view("meta")])
            .iter()
            .all(|c| c.rule != Rule::PlatformDown));
    }

    #[test]
    fn a_paused_destination_is_down_whatever_this_node_saw() {
        let mut meta = view("meta");
        meta.paused = Some(DestinationPause {
            until_ms: 99,
            reason: "8 of the last 8 requests failed".into(),
            since_ms: 1,
        });
        let fired = evaluate(10, &config(), &Signals::default(), &[meta.clone()]);
        assert_eq!(fired[0].rule, Rule::PlatformDown);
        assert!(fired[0].summary.contains("paused: 8 of the last 8"));
        // Once the pause is over and its last request succeeded, it is not down, even while
        // the pause's row waits for a probe that nothing in the queue will make.
        let mut s = Signals::default();
        s.request("meta", 5, true, None);
        assert!(evaluate(100, &config(), &s, &[meta]).is_empty());
    }

    #[test]
    fn the_error_rate_needs_enough_requests() {
        let mut s = Signals::default();
        s.request("google", 1, false, Some("x".into()));
        s.request("google", 2, true, None);
        assert!(evaluate(3, &config(), &s, &[view("google")]).is_empty());
        s.request("google", 3, false, Some("x".into()));
        s.request("google", 4, true, None);
        let fired = evaluate(5, &config(), &s, &[view("google")]);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].rule, Rule::ErrorRate);
        assert_eq!(fired[0].evidence["failed"], 2);
    }

    #[test]
    fn backlog_auth_unmapped_and_dead_letters_name_their_subject() {
        let mut s = Signals::default();
        for t in 0..3 {
            s.auth_failure("staging".into(), t, "bad_signature");
        }
        s.unmapped("Checkout Step Viewed", "production", 1);
        s.unmapped("Checkout Step Viewed", "production", 2);
        s.dead_letter("klaviyo", 2, "Klaviyo answered HTTP 400".into());
        let mut kl = view("klaviyo");
        kl.queue = QueueCounts {
            pending: 40,
            oldest_pending_ms: Some(-20_000),
            ..QueueCounts::default()
        };
        let fired = evaluate(5, &config(), &s, &[kl]);
        let find = |r: Rule| fired.iter().find(|c| c.rule == r).unwrap();
        assert_eq!(find(Rule::AuthFailures).subject, "staging");
        assert_eq!(
            find(Rule::AuthFailures).evidence["reasons"]["bad_signature"],
            3
        );
        assert_eq!(find(Rule::UnmappedSpike).subject, "Checkout Step Viewed");
        assert_eq!(find(Rule::DeadLetters).subject, "klaviyo");
        assert_eq!(
            find(Rule::QueueBacklog).evidence["oldest_pending_age_secs"],
            21
        );
        // Past their windows, nothing holds.
        let later = 10_000_000;
        let mut kl = view("klaviyo");
        kl.queue.pending = 0;
        assert!(evaluate(later, &config(), &s, &[kl]).is_empty());
    }

    #[test]
    fn a_destination_whose_events_lost_an_identifier_pages_once_its_window_shows_it() {
        let hour = 3_600_000;
        let now = 30 * hour;
        let mut s = Signals::default();
        // A day of purchases with email and phone (8/10), then the email went missing (4/10).
        for i in 0..200 {
            s.match_quality("meta", now - 20 * hour + i * 60_000, 8.0);
        }
        let recent = |s: &mut Signals, score: f64| {
            for i in 0..30 {
                s.match_quality("meta", now - 10 * 60_000 + i * 10_000, score);
            }
        };
        let fired = |s: &Signals, drop: f64| {
            let config = AlertsConfig {
                match_quality_drop: drop,
                ..config()
            };
            evaluate(now, &config, s, &[view("meta")])
                .into_iter()
                .filter(|c| c.rule == Rule::MatchQualityDrop)
                .collect::<Vec<_>>()
        };
        let mut steady = s.clone();
        recent(&mut steady, 7.5);
        assert!(fired(&steady, 2.0).is_empty(), "half a point is no drop");
        recent(&mut s, 4.0);
        let drop = fired(&s, 2.0);
        assert_eq!(drop.len(), 1);
        assert_eq!(drop[0].subject, "meta");
        assert_eq!(drop[0].evidence["day"], 8.0);
        assert_eq!(drop[0].evidence["recent"], 4.0);
        assert!(
            drop[0].summary.contains("match quality 4.0/10"),
            "{}",
            drop[0].summary
        );
        assert!(fired(&s, 0.0).is_empty(), "0 turns the rule off");
    }
}
