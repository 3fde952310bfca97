//! Google's OAuth token endpoint, as far as TrackLayer uses it: the refresh-token grant
//! (RFC 6749 §6), with Google's error codes. The access tokens it issues are known to the Data
//! Manager stand-in, which refuses them once they have run out, as Google does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use super::{json_response, lock, Platform, SandboxState};

/// Issued access tokens and when each runs out.
pub struct IssuedTokens {
    issued: u64,
    live: HashMap<String, Instant>,
    lifetime: Duration,
}

impl Default for IssuedTokens {
    fn default() -> IssuedTokens {
        IssuedTokens {
            issued: 0,
            live: HashMap::new(),
            lifetime: Duration::from_secs(3599),
        }
    }
}

/// Tokens this stand-in issued start so; others (a test's static `ya29.TEST`) are taken as is.
const PREFIX: &str = "ya29.sandbox.";

impl SandboxState {
    /// How long the access tokens issued from now on live (Google's: an hour).
    pub fn google_token_lifetime(&self, lifetime: Duration) {
        lock(&self.google_tokens).lifetime = lifetime;
    }

    /// How many access tokens the token endpoint has issued.
    pub fn google_tokens_issued(&self) -> u64 {
        lock(&self.google_tokens).issued
    }

    /// Why a bearer token is refused, if it is one of ours that is unknown or has run out.
    pub(super) fn google_token_refused(&self, headers: &HeaderMap) -> Option<&'static str> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))?;
        if !token.starts_with(PREFIX) {
            return None;
        }
        match lock(&self.google_tokens).live.get(token) {
            None => Some("access token unknown to the token endpoint"),
            Some(ends) if Instant::now() >= *ends => Some("access token expired"),
            Some(_) => None,
        }
    }
}

fn oauth_error(status: u16, error: &str, description: &str) -> (u16, Value) {
    (
        status,
        json!({"error": error, "error_description": description}),
    )
}

/// `POST /token`.
pub async fn token(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let given = |key: &str| form.get(key).filter(|v| !v.is_empty());
    let form_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let (status, reply) = if !form_type {
        oauth_error(
            400,
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded",
        )
    } else if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        oauth_error(400, "unsupported_grant_type", "Invalid grant_type: ")
    } else if given("client_id").is_none() || given("client_secret").is_none() {
        oauth_error(401, "invalid_client", "The OAuth client was not found.")
    } else if given("refresh_token").is_none() {
        oauth_error(
            400,
            "invalid_request",
            "Missing required parameter: refresh_token",
        )
    } else if given("refresh_token").is_some_and(|t| t.starts_with("revoked")) {
        oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
    } else {
        let mut tokens = lock(&state.google_tokens);
        tokens.issued += 1;
        let token = format!("{PREFIX}{}", tokens.issued);
        let lifetime = tokens.lifetime;
        tokens.live.insert(token.clone(), Instant::now() + lifetime);
        (
            200,
            json!({"access_token": token, "expires_in": lifetime.as_secs(),
                   "scope": "https://www.googleapis.com/auth/datamanager", "token_type": "Bearer"}),
        )
    };
    let refusal = (status != 200).then(|| reply["error"].as_str().unwrap_or("").to_string());
    // What is kept of the request names the fields, never the secrets.
    let mut fields: Vec<&String> = form.keys().collect();
    fields.sort();
    state.record(
        Platform::Google,
        "/token",
        &headers,
        json!({"fields": fields}),
        status,
        refusal,
    );
    json_response(status, reply)
}
