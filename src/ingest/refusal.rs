//! Refusals: the answer a refused request gets, and what is kept of it. A flood of bad requests
//! must cost almost nothing, so refusals are counted per minute, environment, reason and peer,
//! with a few full examples per minute and reason, and logged at a bounded rate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::auth::{self, AuthError};
use crate::store::{now_ms, RejectedRequest, RejectionBatch, RejectionCount};

/// A refusal: status, the `{"message": ..., "code": ...}` body, and what to record about it.
/// `code` is stable for scripts and alerts; `message` is for people and may change.
#[derive(Debug)]
pub(super) struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u32>,
}

impl Refusal {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Refusal {
        Refusal::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    }
}

/// The refusal code of a response, for the request counter (`/metrics`).
#[derive(Debug, Clone, Copy)]
pub(super) struct RefusalCode(pub &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "message": self.message, "code": self.code })),
        )
            .into_response();
        response.extensions_mut().insert(RefusalCode(self.code));
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What is known of a request before its body is trusted; enough to record a refusal.
pub(super) struct RequestMeta {
    pub received_at_ms: i64,
    pub path: String,
    pub remote_addr: Option<SocketAddr>,
    pub user_agent: Option<String>,
    pub account_header: Option<String>,
    pub environment_header: Option<String>,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
}

impl RequestMeta {
    pub fn of(headers: &HeaderMap, path: &str, remote: Option<SocketAddr>) -> RequestMeta {
        let short = |name: &str| header_str(headers, name).map(auth::truncate_for_display);
        RequestMeta {
            received_at_ms: now_ms(),
            path: path.to_string(),
            remote_addr: remote,
            user_agent: short(header::USER_AGENT.as_str()),
            account_header: short(auth::HEADER_ACCOUNT),
            environment_header: short(auth::HEADER_ENVIRONMENT),
            content_type: short(header::CONTENT_TYPE.as_str()),
            // With Transfer-Encoding the length is the chunks', whatever Content-Length says
            // (RFC 9112 §6.3); hyper reads it that way.
            content_length: header_str(headers, header::CONTENT_LENGTH.as_str())
                .filter(|_| !headers.contains_key(header::TRANSFER_ENCODING))
                .and_then(|v| v.parse().ok()),
        }
    }

    /// Answer `refusal`, and count it (keeping it whole if it is one of the minute's examples).
    pub fn refuse(&self, log: &RefusalLog, refusal: Refusal, body_bytes: Option<u64>) -> Response {
        log.record(RejectedRequest {
            received_at_ms: self.received_at_ms,
            path: self.path.clone(),
            remote_addr: self.remote_addr.map(|a| a.to_string()),
            user_agent: self.user_agent.clone(),
            account_header: self.account_header.clone(),
            environment_header: self.environment_header.clone(),
            content_type: self.content_type.clone(),
            body_bytes: body_bytes.or(self.content_length),
            status_code: refusal.status.as_u16(),
            reason_code: refusal.code,
            reason: refusal.message.clone(),
        });
        refusal.into_response()
    }
}

/// Full examples kept per minute and reason.
const EXAMPLES_PER_MINUTE: usize = 3;
/// Distinct (environment, reason, peer) counters per flush; past it, peers count as `other`.
const MAX_COUNTERS: usize = 1000;
/// Log lines about refusals per interval; the rest are counted and reported as suppressed.
const LOG_BURST: u32 = 5;
const LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CountKey {
    minute_ms: i64,
    environment: String,
    reason_code: &'static str,
    peer: String,
}

#[derive(Default)]
struct Pending {
    counts: HashMap<CountKey, (u16, u64)>,
    examples: Vec<RejectedRequest>,
    examples_per_reason: HashMap<(i64, &'static str), usize>,
}

struct LogBudget {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

/// Refusals waiting to be written, and the log's rate limit.
pub struct RefusalLog {
    pending: Mutex<Pending>,
    budget: Mutex<LogBudget>,
    /// Told of every refusal (401 bursts feed the `auth_failures` alert).
    ops: Option<std::sync::Arc<crate::ops::Ops>>,
}

impl RefusalLog {
    pub fn observed_by(ops: std::sync::Arc<crate::ops::Ops>) -> RefusalLog {
        RefusalLog {
            ops: Some(ops),
            ..RefusalLog::default()
        }
    }
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            ops: None,
            pending: Mutex::new(Pending::default()),
            budget: Mutex::new(LogBudget {
                window_start: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RefusalLog {
    pub fn record(&self, rejection: RejectedRequest) {
        self.log(&rejection);
        if let Some(ops) = &self.ops {
            ops.refused(
                rejection.environment_header.as_deref(),
                rejection.status_code,
                rejection.reason_code,
                rejection.received_at_ms,
            );
        }
        let minute_ms = rejection.received_at_ms - rejection.received_at_ms.rem_euclid(60_000);
        let mut pending = lock(&self.pending);
        let peer = rejection
            .remote_addr
            .as_deref()
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
        let mut key = CountKey {
            minute_ms,
            environment: rejection.environment_header.clone().unwrap_or_default(),
            reason_code: rejection.reason_code,
            peer,
        };
        if pending.counts.len() >= MAX_COUNTERS && !pending.counts.contains_key(&key) {
            key.peer = "other".into();
        }
        pending
            .counts
            .entry(key)
            .or_insert((rejection.status_code, 0))
            .1 += 1;
        let kept = pending
            .examples_per_reason
            .entry((minute_ms, rejection.reason_code))
            .or_insert(0);
        if *kept < EXAMPLES_PER_MINUTE {
            *kept += 1;
            pending.examples.push(rejection);
        }
    }

    fn log(&self, rejection: &RejectedRequest) {
        let mut budget = lock(&self.budget);
        if budget.window_start.elapsed() >= LOG_INTERVAL {
            if budget.suppressed > 0 {
                tracing::info!(
                    suppressed = budget.suppressed,
                    "more requests were refused than logged in the last {} s; every one is counted in the store",
                    LOG_INTERVAL.as_secs()
                );
            }
            *budget = LogBudget {
                window_start: Instant::now(),
                logged: 0,
                suppressed: 0,
            };
        }
        if budget.logged < LOG_BURST {
            budget.logged += 1;
            tracing::info!(
                path = %rejection.path,
                status = rejection.status_code,
                peer = rejection.remote_addr.as_deref().unwrap_or("unknown"),
                reason = %rejection.reason,
                "request refused"
            );
        } else {
            budget.suppressed += 1;
        }
    }

    /// Everything counted since the last call, for the store.
    pub fn take(&self) -> Option<RejectionBatch> {
        let pending = {
            let mut guard = lock(&self.pending);
            // The examples allowance is per minute, not per flush: it outlives the take.
            let latest = guard.examples_per_reason.keys().map(|k| k.0).max();
            let mut allowance = std::mem::take(&mut guard.examples_per_reason);
            allowance.retain(|(minute, _), _| Some(*minute) == latest);
            let pending = std::mem::take(&mut *guard);
            guard.examples_per_reason = allowance;
            pending
        };
        if pending.counts.is_empty() {
            return None;
        }
        Some(RejectionBatch {
            counts: pending
                .counts
                .into_iter()
                .map(|(key, (status_code, count))| RejectionCount {
                    minute_ms: key.minute_ms,
                    environment: key.environment,
                    reason_code: key.reason_code,
                    peer: key.peer,
                    status_code,
                    count,
                })
                .collect(),
            examples: pending.examples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(at_ms: i64, peer: &str, code: &'static str) -> RejectedRequest {
        RejectedRequest {
            received_at_ms: at_ms,
            path: "/segment/events".into(),
            remote_addr: Some(format!("{peer}:5000")),
            user_agent: None,
            account_header: None,
            environment_header: Some("production".into()),
            content_type: None,
            body_bytes: None,
            status_code: 401,
            reason_code: code,
            reason: "bad".into(),
        }
    }

    #[test]
    fn counts_per_minute_reason_and_peer_with_a_few_examples() {
        let log = RefusalLog::default();
        for i in 0..10_000 {
            log.record(rejection(60_000 + i % 50_000, "10.0.0.1", "bad_signature"));
        }
        log.record(rejection(60_000, "10.0.0.2", "bad_signature"));
        log.record(rejection(125_000, "10.0.0.1", "missing_header"));
        let batch = log.take().unwrap();
        let mut counts: Vec<(i64, &str, String, u64)> = batch
            .counts
            .iter()
            .map(|c| (c.minute_ms, c.reason_code, c.peer.clone(), c.count))
            .collect();
        counts.sort();
        assert_eq!(
            counts,
            vec![
                (60_000, "bad_signature", "10.0.0.1".into(), 10_000),
                (60_000, "bad_signature", "10.0.0.2".into(), 1),
                (120_000, "missing_header", "10.0.0.1".into(), 1),
            ]
        );
        assert_eq!(
            batch.examples.len(),
            4,
            "three for the flood, one for the other"
        );
        assert!(log.take().is_none(), "taken once");
        // The allowance is per minute: a flush in the middle of it does not renew it.
        log.record(rejection(125_000, "10.0.0.1", "missing_header"));
        log.record(rejection(125_000, "10.0.0.1", "missing_header"));
        log.record(rejection(125_000, "10.0.0.1", "missing_header"));
        assert_eq!(log.take().unwrap().examples.len(), 2);
    }

    #[test]
    fn distinct_peers_are_capped() {
        let log = RefusalLog::default();
        for i in 0..5000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            log.record(rejection(60_000, &ip, "bad_signature"));
        }
        let batch = log.take().unwrap();
        assert_eq!(batch.counts.len(), MAX_COUNTERS + 1);
        let other = batch.counts.iter().find(|c| c.peer == "other").unwrap();
        assert_eq!(other.count, 5000 - MAX_COUNTERS as u64);
    }
}
