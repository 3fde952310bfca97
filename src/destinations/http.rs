//! Requests and answers as the pure builders and classifiers see them: no IO here.

use std::time::Duration;

use serde_json::Value;

/// An HTTP request as built, before any IO.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

const SECRET_HEADERS: [&str; 4] = [
    "authorization",
    "access-token",
    "developer-token",
    "webhook-signature",
];
const SECRET_QUERY: [&str; 2] = ["access_token", "api_secret"];

impl HttpRequest {
    pub fn json(url: String, headers: Vec<(String, String)>, body: &Value) -> HttpRequest {
        HttpRequest {
            url,
            headers,
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// The URL with secret query parameters replaced, for storage and display.
    pub fn redacted_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut url) => {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if SECRET_QUERY.contains(&k.as_ref()) {
                            "REDACTED".to_string()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                if !pairs.is_empty() {
                    url.query_pairs_mut().clear().extend_pairs(pairs);
                }
                url.to_string()
            }
            Err(_) => self.url.clone(),
        }
    }

    /// Headers with credentials replaced, for storage and display.
    pub fn redacted_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(k, v)| {
                if SECRET_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                    let scheme = v
                        .split_once(' ')
                        .map(|(s, _)| format!("{s} "))
                        .unwrap_or_default();
                    (k.clone(), format!("{scheme}REDACTED"))
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect()
    }
}

/// What a platform answered, as the classifier sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// What was read of the answer: at most the destination's `max_response_bytes`.
    pub body: String,
    /// The answer went on past what was read (`body` is its beginning only).
    pub cut: bool,
    /// The platform's rate-limit headers say nothing is left until then (`RateLimit-Remaining:
    /// 0` with `RateLimit-Reset`): the endpoint waits, whatever this answer's verdict.
    pub rate_limit_wait: Option<Duration>,
}

impl HttpResponse {
    /// How long the endpoint should be left alone: a 429 or 503 with `Retry-After`, or spent
    /// rate-limit headers.
    pub fn asks_to_wait(&self) -> Option<Duration> {
        let retry = matches!(self.status, 429 | 503)
            .then_some(self.retry_after)
            .flatten();
        match (retry, self.rate_limit_wait) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// A whole answer (the classifiers' tests, the sandbox's replies).
    pub fn new(status: u16, body: impl Into<String>) -> HttpResponse {
        HttpResponse {
            status,
            retry_after: None,
            body: body.into(),
            cut: false,
            rate_limit_wait: None,
        }
    }
}

/// The verdict for one item of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered {
        note: Option<String>,
    },
    /// Not at fault: the request was refused for another item (a fast-fail API names the bad
    /// one), so send it again at once, without counting a failure.
    Resend {
        reason: String,
    },
    /// Try again, not before `after` (Retry-After, or a platform rule such as Google's 6 h).
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Will never succeed as sent: dead-letter now, keeping the response.
    Permanent {
        reason: String,
    },
    /// Nothing this destination sends can succeed as it is set up (credentials, an account's
    /// access): dead now, without resending each item alone to find a bad one.
    Misconfigured {
        reason: String,
    },
}

impl Outcome {
    pub fn retry(reason: impl Into<String>) -> Outcome {
        Outcome::Retry {
            reason: reason.into(),
            after: None,
        }
    }
    pub fn permanent(reason: impl Into<String>) -> Outcome {
        Outcome::Permanent {
            reason: reason.into(),
        }
    }
}

/// A request covering some of the items. Of the others, `rejected` can never be sent (with the
/// reason) and `deferred` just do not fit this request (one event per call, a second row for
/// the same order) and go in a later one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Built {
    pub request: Option<HttpRequest>,
    /// Indexes (into the items given) that the request carries, in order.
    pub included: Vec<usize>,
    pub rejected: Vec<(usize, String)>,
    pub deferred: Vec<usize>,
}

impl Built {
    /// A request carrying the first item; the rest wait for their own requests.
    pub fn first_of(request: HttpRequest, items: usize) -> Built {
        Built {
            request: Some(request),
            included: vec![0],
            rejected: Vec::new(),
            deferred: (1..items).collect(),
        }
    }
}

/// Generic HTTP status classification (DESIGN §3, reference §6): 2xx delivered; 408/429/5xx
/// retry (honouring Retry-After); other 4xx permanent.
pub fn classify_status(response: &HttpResponse, what: &str) -> Outcome {
    match response.status {
        200..=299 => Outcome::Delivered { note: None },
        408 | 425 | 429 | 500..=599 => Outcome::Retry {
            reason: format!(
                "{what} answered HTTP {}: {}",
                response.status,
                excerpt(&response.body)
            ),
            after: response.retry_after,
        },
        status => Outcome::permanent(format!(
            "{what} answered HTTP {status}: {}",
            excerpt(&response.body)
        )),
    }
}

/// A short excerpt of a response body for reasons.
pub fn excerpt(body: &str) -> String {
    let trimmed = body.trim();
    if trimmed.chars().count() <= 300 {
        trimmed.to_string()
    } else {
        let mut s: String = trimmed.chars().take(300).collect();
        s.push('…');
        s
    }
}
