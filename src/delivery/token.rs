//! Access tokens for a destination that refreshes its own (Google with a refresh token): one
//! per destination, shared by its requests, exchanged when missing or within a minute of its
//! end, and dropped when the platform refuses it so the next attempt exchanges again.

use std::time::{Duration, Instant};

use super::sender::read_bounded;
use crate::destinations::google::oauth::{self, GoogleAuth, OAuthRefresh, TokenError};
use crate::destinations::{Destination, Settings};

/// A token this close to its end is exchanged before use (a request must not carry one that
/// runs out on its way); a token that lives less than twice this, at half its life.
const MARGIN: Duration = Duration::from_secs(60);
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) struct TokenSource {
    refresh: OAuthRefresh,
    /// The token and when to exchange it for the next. The lock also makes concurrent
    /// requests wait for one exchange instead of each making its own.
    current: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl TokenSource {
    pub(super) fn for_destination(dest: &Destination) -> Option<TokenSource> {
        match &dest.settings {
            Settings::GoogleAds(s) => match &s.auth {
                GoogleAuth::Refresh(refresh) => Some(TokenSource {
                    refresh: refresh.clone(),
                    current: tokio::sync::Mutex::new(None),
                }),
                GoogleAuth::AccessToken(_) => None,
            },
            _ => None,
        }
    }

    /// A token good for at least another minute (or half its life), exchanged for if need be.
    pub(super) async fn bearer(
        &self,
        client: &reqwest::Client,
        dest: &Destination,
    ) -> Result<String, TokenError> {
        let mut current = self.current.lock().await;
        if let Some((token, renew_at)) = current.as_ref() {
            if Instant::now() < *renew_at {
                return Ok(token.clone());
            }
        }
        let request = oauth::token_request(&self.refresh);
        let mut builder = client
            .post(&request.url)
            .timeout(EXCHANGE_TIMEOUT)
            .body(request.body);
        for (k, v) in &request.headers {
            builder = builder.header(k, v);
        }
        // Whatever is said about a failure passes the destination's redaction: the form carries
        // the refresh token and the client secret.
        let transient = |reason: String| TokenError {
            permanent: false,
            reason: dest.redact(&reason),
        };
        let response = builder.send().await.map_err(|e| {
            transient(format!(
                "could not reach Google's token endpoint: {}",
                e.without_url()
            ))
        })?;
        let status = response.status().as_u16();
        let (body, _) = read_bounded(response, dest.max_response_bytes)
            .await
            .map_err(|e| {
                transient(format!(
                    "the token endpoint's answer broke off: {}",
                    e.without_url()
                ))
            })?;
        let answer =
            oauth::read_token_answer(status, &String::from_utf8_lossy(&body)).map_err(|e| {
                TokenError {
                    reason: dest.redact(&e.reason),
                    ..e
                }
            })?;
        let renew_at = Instant::now() + answer.expires_in - MARGIN.min(answer.expires_in / 2);
        *current = Some((answer.token.clone(), renew_at));
        Ok(answer.token)
    }

    /// The platform refused `token`: the next request exchanges for a new one.
    pub(super) async fn refused(&self, token: &str) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|(held, _)| held == token) {
            *current = None;
        }
    }
}
