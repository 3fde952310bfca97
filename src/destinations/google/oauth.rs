//! Google's OAuth access tokens expire after about an hour. With a refresh token (and the OAuth
//! client that obtained it), TrackLayer exchanges it for access tokens as they run out, as
//! Google's own client libraries do; a static `access_token` stays for operators who refresh it
//! themselves. This file is the pure part: the exchange request and the reading of its answer.

use std::time::Duration;

use serde_json::Value;

use super::super::http::HttpRequest;
use super::super::{SettingsError, SettingsReader};
use crate::config::Secret;

/// Google's token endpoint, unless `token_url` overrides it.
pub const TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// How a Google destination authenticates.
#[derive(Debug, Clone)]
pub enum GoogleAuth {
    /// A token the operator keeps fresh (`access_token`).
    AccessToken(Secret),
    /// A refresh token TrackLayer exchanges for access tokens (`refresh_token`, `client_id`,
    /// `client_secret`, optional `token_url`).
    Refresh(OAuthRefresh),
}

#[derive(Debug, Clone)]
pub struct OAuthRefresh {
    pub client_id: String,
    pub client_secret: Secret,
    pub refresh_token: Secret,
    pub token_url: String,
}

pub const KEYS: [&str; 5] = [
    "access_token",
    "refresh_token",
    "client_id",
    "client_secret",
    "token_url",
];

impl GoogleAuth {
    pub fn read(r: &SettingsReader<'_>) -> Result<GoogleAuth, SettingsError> {
        let access_token = r.optional_secret("access_token")?;
        let refresh_token = r.optional_secret("refresh_token")?;
        match (access_token, refresh_token) {
            (Some(_), Some(_)) => Err(r.error(
                "refresh_token",
                "set either access_token (you refresh it yourself; Google's expire after an hour) or refresh_token with client_id and client_secret (TrackLayer refreshes), not both",
            )),
            (Some(token), None) => {
                if let Some(key) = ["client_id", "client_secret", "token_url"]
                    .iter()
                    .find(|k| r.optional_str(k).ok().flatten().is_some())
                {
                    return Err(r.error(
                        key,
                        "is read only with refresh_token; with a static access_token leave it out",
                    ));
                }
                Ok(GoogleAuth::AccessToken(token))
            }
            (None, Some(refresh_token)) => {
                let client_id = r.required_str("client_id").map_err(|_| {
                    r.error(
                        "client_id",
                        "is required with refresh_token: the OAuth client (…apps.googleusercontent.com) the refresh token was issued to",
                    )
                })?;
                let client_secret = r.optional_secret("client_secret")?.ok_or_else(|| {
                    r.error(
                        "client_secret",
                        "is required with refresh_token: the OAuth client's secret",
                    )
                })?;
                let token_url = r
                    .optional_str("token_url")?
                    .unwrap_or_else(|| TOKEN_URL.into());
                if url::Url::parse(&token_url).is_err() {
                    return Err(r.error("token_url", format!("`{token_url}` is not a URL")));
                }
                Ok(GoogleAuth::Refresh(OAuthRefresh {
                    client_id,
                    client_secret,
                    refresh_token,
                    token_url,
                }))
            }
            (None, None) => Err(r.error(
                "access_token",
                "is required (or refresh_token with client_id and client_secret, so TrackLayer refreshes the access token itself)",
            )),
        }
    }

    /// The static token, when there is one (with a refresh token, the sender adds the header).
    pub fn static_token(&self) -> Option<&Secret> {
        match self {
            GoogleAuth::AccessToken(token) => Some(token),
            GoogleAuth::Refresh(_) => None,
        }
    }

    /// The credentials as they could appear in a request or an answer, for redaction.
    pub fn secrets(&self) -> Vec<&Secret> {
        match self {
            GoogleAuth::AccessToken(token) => vec![token],
            GoogleAuth::Refresh(r) => vec![&r.refresh_token, &r.client_secret],
        }
    }
}

/// The exchange: `grant_type=refresh_token`, form-encoded, as RFC 6749 §6 has it.
pub fn token_request(refresh: &OAuthRefresh) -> HttpRequest {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "refresh_token")
        .append_pair("client_id", &refresh.client_id)
        .append_pair("client_secret", refresh.client_secret.expose())
        .append_pair("refresh_token", refresh.refresh_token.expose())
        .finish();
    HttpRequest {
        url: refresh.token_url.clone(),
        headers: vec![(
            "Content-Type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: body.into_bytes(),
    }
}

/// A fresh access token and how long it lives.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessToken {
    pub token: String,
    pub expires_in: Duration,
}

/// Why no token came back: `permanent` when only the operator can fix it (a revoked or expired
/// refresh token, a wrong client), else worth another try later.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenError {
    pub permanent: bool,
    pub reason: String,
}

/// Read the token endpoint's answer.
pub fn read_token_answer(status: u16, body: &str) -> Result<AccessToken, TokenError> {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let field = |key: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if (200..300).contains(&status) {
        let token = field("access_token").filter(|t| !t.is_empty());
        let expires_in = parsed
            .as_ref()
            .and_then(|v| v.get("expires_in"))
            .and_then(Value::as_u64)
            .unwrap_or(3600);
        return match token {
            Some(token) => Ok(AccessToken {
                token,
                expires_in: Duration::from_secs(expires_in),
            }),
            None => Err(TokenError {
                permanent: false,
                reason: format!(
                    "Google's token endpoint answered HTTP {status} without an access_token"
                ),
            }),
        };
    }
    let error = field("error").unwrap_or_default();
    let description = field("error_description").unwrap_or_default();
    let said = match (error.is_empty(), description.is_empty()) {
        (true, _) => super::super::excerpt(body),
        (false, true) => error.clone(),
        (false, false) => format!("{error}: {description}"),
    };
    // RFC 6749 §5.2: these need the operator (a new refresh token, the right client).
    let permanent = matches!(
        error.as_str(),
        "invalid_grant"
            | "invalid_client"
            | "unauthorized_client"
            | "unsupported_grant_type"
            | "invalid_scope"
    );
    let fix = if permanent {
        "; authorise again for a new refresh token (with the datamanager scope) and check client_id and client_secret"
    } else {
        ""
    };
    Err(TokenError {
        permanent,
        reason: format!("Google refused to refresh the access token (HTTP {status}, {said}){fix}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refresh() -> OAuthRefresh {
        OAuthRefresh {
            client_id: "123-abc.apps.googleusercontent.com".into(),
            client_secret: Secret::new("GOCSPX-secret"),
            refresh_token: Secret::new("1//0refresh+token/x"),
            token_url: TOKEN_URL.into(),
        }
    }

    #[test]
    fn the_exchange_is_a_form_post_of_the_refresh_grant() {
        let request = token_request(&refresh());
        assert_eq!(request.url, "https://oauth2.googleapis.com/token");
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect();
        assert_eq!(
            form,
            [
                ("grant_type".into(), "refresh_token".into()),
                (
                    "client_id".into(),
                    "123-abc.apps.googleusercontent.com".into()
                ),
                ("client_secret".into(), "GOCSPX-secret".into()),
                ("refresh_token".into(), "1//0refresh+token/x".into()),
            ]
        );
    }

    #[test]
    fn an_answer_gives_a_token_or_says_whether_to_try_again() {
        assert_eq!(
            read_token_answer(
                200,
                r#"{"access_token":"ya29.a0","expires_in":3599,"token_type":"Bearer"}"#
            ),
            Ok(AccessToken {
                token: "ya29.a0".into(),
                expires_in: Duration::from_secs(3599)
            })
        );
        let revoked = read_token_answer(
            400,
            r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
        )
        .unwrap_err();
        assert!(revoked.permanent);
        assert!(revoked
            .reason
            .contains("HTTP 400, invalid_grant: Token has been expired or revoked."));
        let down = read_token_answer(503, "<html>unavailable</html>").unwrap_err();
        assert!(!down.permanent, "{down:?}");
        let empty = read_token_answer(200, "{}").unwrap_err();
        assert!(!empty.permanent);
    }

    fn read(
        auth: &str,
    ) -> Result<crate::destinations::Destination, crate::destinations::SettingsError> {
        let table: toml::Table = toml::from_str(&format!(
            "customer_id = \"1234567890\"\nconversion_actions = {{ purchase = \"1\" }}\n{auth}"
        ))
        .expect("toml");
        let config = crate::config::DestinationConfig {
            index: 0,
            name: "google".into(),
            kind: crate::config::DestinationKind::GoogleAds,
            endpoint: None,
            environments: vec![],
            consent: vec![],
            retry_schedule: vec![1],
            settings: table.into_iter().collect(),
        };
        crate::destinations::Destination::from_config(
            0,
            &config,
            std::path::Path::new("."),
            &crate::config::EnvVars::new(&|_| None, &crate::config::Needs::Everything),
        )
    }

    #[test]
    fn a_destination_takes_one_way_to_authenticate_and_names_what_is_missing() {
        let refresh = "refresh_token = \"1//0r\"\nclient_id = \"c.apps.googleusercontent.com\"\nclient_secret = \"GOCSPX-s\"";
        let ok = read(refresh).expect("a refresh token with its client");
        assert_eq!(
            ok.redact("form: 1//0r GOCSPX-s"),
            "form: 1//0r REDACTED",
            "short values stay; the secret goes"
        );
        let both = read(&format!("access_token = \"ya29.x\"\n{refresh}")).unwrap_err();
        assert_eq!(both.key, "destinations[0].refresh_token");
        assert!(both.reason.contains("not both"), "{}", both.reason);
        let no_secret = read("refresh_token = \"1//0r\"\nclient_id = \"c\"").unwrap_err();
        assert_eq!(no_secret.key, "destinations[0].client_secret");
        let neither = read("").unwrap_err();
        assert_eq!(neither.key, "destinations[0].access_token");
        assert!(
            neither.reason.contains("refresh_token"),
            "{}",
            neither.reason
        );
        let stray = read("access_token = \"ya29.x\"\nclient_id = \"c\"").unwrap_err();
        assert_eq!(stray.key, "destinations[0].client_id");
    }
}
