//! Local stand-ins for Meta CAPI, Google Ads (the Data Manager API and the legacy Ads API),
//! GA4, Klaviyo, TikTok and webhook receivers. Each validates requests with the checks of
//! reference/destination-apis.md (§1.10, §2.6, §3.4, §4.6) and platforms-2026.md, and answers
//! as the real API does, with switchable faults (429 + Retry-After, 500, timeouts, bad token,
//! partial failure, a token not allowlisted, TikTok codes). The tests and the demo use them.

mod checks;
mod ga4;
pub mod google;
mod google_oauth;
mod klaviyo;
pub mod traffic;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Meta,
    Google,
    Ga4,
    Klaviyo,
    Tiktok,
    Webhook,
}

/// A fault the next request (or every request, when sticky) gets instead of the normal answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this HTTP status (and a plausible body).
    Status { status: u16 },
    /// 429 with `Retry-After`.
    RateLimit { retry_after_secs: u64 },
    /// Answer only after this long (longer than the client's timeout).
    Timeout { millis: u64 },
    /// The platform's invalid-token error.
    BadToken,
    /// Google: fail the first row of the request with this ConversionUploadError (e.g.
    /// `UNPARSEABLE_GCLID`, or a retryable `TRANSIENT_ERROR`); the other rows succeed.
    PartialFailure { code: String },
    /// TikTok: HTTP 200 with this `code`.
    TiktokCode { code: i64 },
    /// Google Ads API: the developer token is not allowlisted for click conversion uploads
    /// (what a new adopter gets since 2026-06-15).
    NotAllowlisted,
}

#[derive(Debug, Clone, Serialize)]
pub struct Received {
    pub platform: Platform,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub status: u16,
    /// Why the sandbox refused it, when it did.
    pub refusal: Option<String>,
}

#[derive(Default)]
struct Faults {
    queue: VecDeque<Fault>,
    sticky: Option<Fault>,
}

/// Requests the sandbox keeps for inspection; older ones are dropped (a drain of a million events
/// must not keep them all in memory). Counts cover every request.
const KEEP_RECEIVED: usize = 5000;

#[derive(Default)]
pub struct SandboxState {
    faults: Mutex<HashMap<Platform, Faults>>,
    received: Mutex<VecDeque<Received>>,
    /// Per platform: requests answered 2xx, and the events they carried.
    accepted: Mutex<HashMap<Platform, (u64, u64)>>,
    google_orders: Mutex<HashSet<String>>,
    google_conversions: Mutex<google::Conversions>,
    google_tokens: Mutex<google_oauth::IssuedTokens>,
    klaviyo_unique: Mutex<HashSet<String>>,
    webhook_keys: Mutex<HashMap<String, Vec<u8>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl SandboxState {
    /// The next request to `platform` gets `fault` (faults queue up in order).
    pub fn push_fault(&self, platform: Platform, fault: Fault) {
        lock(&self.faults)
            .entry(platform)
            .or_default()
            .queue
            .push_back(fault);
    }

    /// Every request to `platform` gets `fault` until cleared with `None`.
    pub fn set_sticky(&self, platform: Platform, fault: Option<Fault>) {
        lock(&self.faults).entry(platform).or_default().sticky = fault;
    }

    fn take_fault(&self, platform: Platform) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let f = faults.entry(platform).or_default();
        f.queue.pop_front().or_else(|| f.sticky.clone())
    }

    /// Verify webhook signatures for `/webhooks/{name}` with this key.
    pub fn webhook_key(&self, name: &str, key: Vec<u8>) {
        lock(&self.webhook_keys).insert(name.to_string(), key);
    }

    /// Requests answered 2xx and the events they carried, since the start.
    pub fn accepted(&self, platform: Platform) -> (u64, u64) {
        lock(&self.accepted)
            .get(&platform)
            .copied()
            .unwrap_or_default()
    }

    /// Conversions the Data Manager stand-in recorded, with their restatements.
    pub fn google_conversions(&self) -> google::Conversions {
        lock(&self.google_conversions).clone()
    }

    /// The last requests to `platform` (up to the most recent few thousand).
    pub fn received(&self, platform: Platform) -> Vec<Received> {
        lock(&self.received)
            .iter()
            .filter(|r| r.platform == platform)
            .cloned()
            .collect()
    }

    fn record(
        &self,
        platform: Platform,
        path: &str,
        headers: &HeaderMap,
        body: Value,
        status: u16,
        refusal: Option<String>,
    ) {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        if (200..300).contains(&status) && refusal.is_none() {
            let events = match platform {
                Platform::Meta | Platform::Tiktok => body
                    .get("data")
                    .and_then(Value::as_array)
                    .map_or(1, Vec::len),
                Platform::Google => body
                    .get("conversions")
                    .or_else(|| body.get("events"))
                    .and_then(Value::as_array)
                    .map_or(1, Vec::len),
                Platform::Ga4 => body
                    .get("events")
                    .and_then(Value::as_array)
                    .map_or(1, Vec::len),
                Platform::Klaviyo => body
                    .pointer("/data/attributes/profiles/data")
                    .and_then(Value::as_array)
                    .map(Vec::len)
                    .or_else(|| {
                        let entries = body.pointer("/data/attributes/events-bulk-create/data")?;
                        Some(
                            entries
                                .as_array()?
                                .iter()
                                .filter_map(|p| p.pointer("/attributes/events/data"))
                                .filter_map(Value::as_array)
                                .map(Vec::len)
                                .sum(),
                        )
                    })
                    .unwrap_or(1),
                Platform::Webhook => 1,
            } as u64;
            let mut accepted = lock(&self.accepted);
            let entry = accepted.entry(platform).or_default();
            entry.0 += 1;
            entry.1 += events;
        }
        let mut received = lock(&self.received);
        if received.len() >= KEEP_RECEIVED {
            received.pop_front();
        }
        received.push_back(Received {
            platform,
            path: path.to_string(),
            headers,
            body,
            status,
            refusal,
        });
    }
}

pub struct Sandbox {
    pub addr: SocketAddr,
    pub state: Arc<SandboxState>,
    task: tokio::task::JoinHandle<()>,
}

impl Sandbox {
    /// Serve every sandbox API on one loopback listener.
    pub async fn start(listener: tokio::net::TcpListener) -> std::io::Result<Sandbox> {
        let addr = listener.local_addr()?;
        let state = Arc::new(SandboxState::default());
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Sandbox { addr, state, task })
    }

    /// The base URL to use as a destination's `endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn router(state: Arc<SandboxState>) -> Router {
    Router::new()
        .route("/{version}/{pixel}/events", post(meta))
        .route("/{version}/customers/{call}", post(google::ads_api))
        .route("/v1/events:ingest", post(google::ingest))
        .route("/token", post(google_oauth::token))
        .route("/mp/collect", post(ga4::live))
        .route("/debug/mp/collect", post(ga4::debug))
        .route("/api/events", post(klaviyo::event))
        .route("/api/profile-import", post(klaviyo::profile))
        .route("/api/event-bulk-create-jobs", post(klaviyo::bulk))
        .route("/api/profile-bulk-import-jobs", post(klaviyo::profile_bulk))
        .route("/api/data-privacy-deletion-jobs", post(klaviyo::deletion))
        .route("/open_api/v1.3/event/track/", post(tiktok))
        .route("/webhooks/{name}", post(webhook))
        .route("/slack/{name}", post(slack))
        .route("/_sandbox/faults", post(admin_fault))
        .with_state(state)
}

#[derive(Deserialize)]
struct FaultRequest {
    platform: Platform,
    #[serde(default)]
    sticky: bool,
    #[serde(default)]
    clear: bool,
    #[serde(flatten)]
    fault: Option<Fault>,
}

/// `POST /_sandbox/faults {"platform": "meta", "fault": "status", "status": 500, "sticky": true}`
/// switches faults on a running sandbox (the demo uses it).
async fn admin_fault(
    State(state): State<Arc<SandboxState>>,
    Json(req): Json<FaultRequest>,
) -> StatusCode {
    match (req.clear, req.fault) {
        (true, _) => state.set_sticky(req.platform, None),
        (false, Some(f)) if req.sticky => state.set_sticky(req.platform, Some(f)),
        (false, Some(f)) => state.push_fault(req.platform, f),
        (false, None) => return StatusCode::BAD_REQUEST,
    }
    StatusCode::NO_CONTENT
}

fn json_response(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

fn parse_body(body: &Bytes) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))
}

/// Take the platform's next fault. A generic one (status, 429, timeout) is answered and
/// recorded here (`Err`); a platform-specific one is returned for the handler to apply.
async fn take_fault(
    state: &SandboxState,
    platform: Platform,
    path: &str,
    headers: &HeaderMap,
    parsed: &Value,
) -> Result<Option<Fault>, Response> {
    let fault = state.take_fault(platform);
    if let Some(f) = &fault {
        if let Some(response) = generic_fault(f).await {
            let status = response.status().as_u16();
            state.record(
                platform,
                path,
                headers,
                parsed.clone(),
                status,
                Some("fault".into()),
            );
            return Err(response);
        }
    }
    Ok(fault)
}

/// Apply a generic fault, if one is queued; `None` lets the request through.
async fn generic_fault(fault: &Fault) -> Option<Response> {
    match fault {
        Fault::Status { status } => {
            Some(json_response(*status, json!({"message": "sandbox fault"})))
        }
        Fault::RateLimit { retry_after_secs } => {
            let mut r = json_response(429, json!({"message": "rate limited (sandbox)"}));
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
            Some(r)
        }
        Fault::Timeout { millis } => {
            tokio::time::sleep(Duration::from_millis(*millis)).await;
            Some(json_response(504, json!({"message": "sandbox timeout"})))
        }
        _ => None,
    }
}

async fn meta(
    State(state): State<Arc<SandboxState>>,
    Path((version, pixel)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/{version}/{pixel}/events");
    let parsed = parse_body(&body).unwrap_or(Value::Null);
    let fault = match take_fault(&state, Platform::Meta, &path, &headers, &parsed).await {
        Ok(fault) => fault,
        Err(answered) => return answered,
    };
    // Meta takes the token as a query parameter or as a field of the body.
    let token = query
        .get("access_token")
        .map(String::as_str)
        .or_else(|| parsed.get("access_token").and_then(Value::as_str));
    let (status, reply, refusal) = if fault == Some(Fault::BadToken)
        || token.is_none_or(str::is_empty)
    {
        (
            400,
            json!({"error": {"message": "The access token could not be decrypted", "type": "OAuthException", "code": 190, "fbtrace_id": "sandbox"}}),
            Some("bad token".to_string()),
        )
    } else {
        match checks::meta(&pixel, &parsed, chrono::Utc::now().timestamp()) {
            Ok(n) => (
                200,
                json!({"events_received": n, "messages": [], "fbtrace_id": "sandbox"}),
                None,
            ),
            Err(e) => (
                400,
                json!({"error": {"message": "Invalid parameter", "type": "OAuthException", "code": 100, "error_subcode": e.subcode, "is_transient": false, "error_user_title": e.title, "error_user_msg": e.message, "fbtrace_id": "sandbox"}}),
                Some(e.message),
            ),
        }
    };
    state.record(Platform::Meta, &path, &headers, parsed, status, refusal);
    json_response(status, reply)
}

async fn tiktok(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = "/open_api/v1.3/event/track/";
    let parsed = parse_body(&body).unwrap_or(Value::Null);
    let fault = match take_fault(&state, Platform::Tiktok, path, &headers, &parsed).await {
        Ok(fault) => fault,
        Err(answered) => return answered,
    };
    let token_ok = headers.get("access-token").is_some_and(|v| !v.is_empty());
    // TikTok reports errors in the body of an HTTP 200.
    let (code, message) = match fault {
        Some(Fault::TiktokCode { code }) => (code, format!("sandbox code {code}")),
        Some(Fault::BadToken) => (
            40105,
            "Access token is incorrect or has been revoked.".to_string(),
        ),
        _ if !token_ok => (
            40105,
            "Access token is incorrect or has been revoked.".to_string(),
        ),
        _ => match checks::tiktok(&parsed) {
            Ok(()) => (0, "OK".to_string()),
            Err(m) => (40002, m),
        },
    };
    state.record(
        Platform::Tiktok,
        path,
        &headers,
        parsed,
        200,
        (code != 0).then(|| message.clone()),
    );
    json_response(
        200,
        json!({"code": code, "message": message, "request_id": "sandbox"}),
    )
}

/// A Slack-compatible incoming webhook (alert notifications); recorded with the webhooks.
async fn slack(
    State(state): State<Arc<SandboxState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/slack/{name}");
    let parsed = parse_body(&body).unwrap_or(Value::Null);
    let verdict = checks::slack_body(&parsed);
    let status = if verdict.is_ok() { 200 } else { 400 };
    state.record(
        Platform::Webhook,
        &path,
        &headers,
        parsed,
        status,
        verdict.clone().err(),
    );
    match verdict {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn webhook(
    State(state): State<Arc<SandboxState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/webhooks/{name}");
    let parsed = parse_body(&body).unwrap_or(Value::Null);
    if let Err(answered) = take_fault(&state, Platform::Webhook, &path, &headers, &parsed).await {
        return answered;
    }
    let key = lock(&state.webhook_keys).get(&name).cloned();
    let verdict = match key {
        Some(key) => {
            checks::standard_webhook(&key, &headers, &body, chrono::Utc::now().timestamp())
        }
        None => Ok(()),
    };
    let shape = checks::webhook_body(&parsed);
    let status = match (&verdict, &shape) {
        (Err(_), _) => 401,
        (Ok(()), Err(_)) => 400,
        (Ok(()), Ok(_)) => 204,
    };
    let verdict = verdict.and(shape.map(|_| ()));
    state.record(
        Platform::Webhook,
        &path,
        &headers,
        parsed,
        status,
        verdict.err(),
    );
    StatusCode::from_u16(status)
        .unwrap_or(StatusCode::OK)
        .into_response()
}
