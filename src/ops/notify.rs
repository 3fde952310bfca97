//! Where alerts reach a person: a Slack-compatible incoming webhook (`{"text": …}`) and/or a
//! generic receiver, signed like the internal webhooks (Standard Webhooks headers). A few tries
//! with backoff; a notification that cannot be delivered is logged, the alert stays stored.

use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::{AlertsConfig, Secret};
use crate::destinations::webhook;

/// One notification: an alert firing or resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub rule: &'static str,
    pub subject: String,
    /// `firing` or `resolved`.
    pub state: &'static str,
    pub started_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
    pub summary: String,
    pub evidence: Value,
    pub node: Option<String>,
}

impl Notice {
    fn text(&self) -> String {
        let when = |ms: i64| crate::segment::format_ms(ms);
        match self.state {
            "firing" => format!(
                ":rotating_light: *{}* firing for `{}` since {}\n{}",
                self.rule,
                self.subject,
                when(self.started_at_ms),
                self.summary
            ),
            _ => format!(
                ":white_check_mark: *{}* resolved for `{}` (firing {} → {})\n{}",
                self.rule,
                self.subject,
                when(self.started_at_ms),
                when(self.resolved_at_ms.unwrap_or(self.started_at_ms)),
                self.summary
            ),
        }
    }

    fn envelope(&self) -> Value {
        json!({
            "type": "tracklayer.alert",
            "alert": {
                "rule": self.rule,
                "subject": self.subject,
                "state": self.state,
                "started_at_ms": self.started_at_ms,
                "resolved_at_ms": self.resolved_at_ms,
                "summary": self.summary,
                "evidence": self.evidence,
                "node": self.node,
            }
        })
    }
}

pub struct Notifier {
    client: reqwest::Client,
    slack: Option<Secret>,
    webhook: Option<(String, Vec<u8>)>,
}

#[derive(Debug, thiserror::Error)]
#[error("alerts.webhook_secret {0}")]
pub struct BadSecret(String);

impl Notifier {
    pub fn new(config: &AlertsConfig) -> Result<Notifier, BadSecret> {
        let webhook = match (&config.webhook_url, &config.webhook_secret) {
            (Some(url), Some(secret)) => Some((
                url.clone(),
                webhook::decode_secret(secret.expose()).map_err(BadSecret)?,
            )),
            _ => None,
        };
        Ok(Notifier {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            slack: config.slack_webhook_url.clone(),
            webhook,
        })
    }

    pub fn is_configured(&self) -> bool {
        self.slack.is_some() || self.webhook.is_some()
    }

    /// Send to every configured receiver; says what became of it, for the alert's row
    /// ("firing: sent to Slack; alert webhook failed: HTTP 500 after 3 tries").
    pub async fn send(&self, notice: &Notice) -> String {
        let mut outcomes = Vec::new();
        if let Some(url) = &self.slack {
            let body = serde_json::to_vec(&json!({ "text": notice.text() })).unwrap_or_default();
            outcomes.push(
                self.post(url.expose(), body, Vec::new(), "Slack", notice)
                    .await,
            );
        }
        if let Some((url, key)) = &self.webhook {
            let body = serde_json::to_vec(&notice.envelope()).unwrap_or_default();
            let id = format!(
                "alert_{}_{}_{}_{}",
                notice.rule,
                hex::encode(&Sha256::digest(notice.subject.as_bytes())[..8]),
                notice.started_at_ms,
                notice.state
            );
            let timestamp = chrono::Utc::now().timestamp();
            let headers = vec![
                ("webhook-id".to_string(), id.clone()),
                ("webhook-timestamp".to_string(), timestamp.to_string()),
                (
                    "webhook-signature".to_string(),
                    webhook::sign(key, &id, timestamp, &body),
                ),
            ];
            outcomes.push(self.post(url, body, headers, "alert webhook", notice).await);
        }
        let (sent, failed): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(|o| o.is_ok());
        let mut parts = Vec::new();
        if !sent.is_empty() {
            let names: Vec<&str> = sent.into_iter().filter_map(|o| o.ok()).collect();
            parts.push(format!("sent to {}", names.join(", ")));
        }
        parts.extend(failed.into_iter().filter_map(|o| o.err()));
        if parts.is_empty() {
            parts.push("no receiver configured ([alerts] slack_webhook_url / webhook_url)".into());
        }
        format!("{}: {}", notice.state, parts.join("; "))
    }

    async fn post<'r>(
        &self,
        url: &str,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
        receiver: &'r str,
        notice: &Notice,
    ) -> Result<&'r str, String> {
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
            }
            let mut request = self
                .client
                .post(url)
                .header("content-type", "application/json")
                .body(body.clone());
            for (k, v) in &headers {
                request = request.header(k, v);
            }
            match request.send().await {
                Ok(r) if r.status().is_success() => return Ok(receiver),
                Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
                // Without the URL: a Slack webhook URL is a credential.
                Err(e) => last = e.without_url().to_string(),
            }
        }
        tracing::error!(receiver, rule = notice.rule, subject = %notice.subject, state = notice.state, error = %last, "alert notification not delivered after 3 tries");
        Err(format!("{receiver} failed: {last} after 3 tries"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice() -> Notice {
        Notice {
            rule: "platform_down",
            subject: "meta".into(),
            state: "firing",
            started_at_ms: 0,
            resolved_at_ms: None,
            summary: "meta failing".into(),
            evidence: json!({}),
            node: None,
        }
    }

    #[tokio::test]
    async fn an_unreachable_receiver_is_reported_as_failed() {
        // Nothing listens on the port of a listener just dropped.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let config = AlertsConfig {
            slack_webhook_url: Some(Secret::new(format!("http://127.0.0.1:{port}/slack"))),
            ..AlertsConfig::default()
        };
        let outcome = Notifier::new(&config).unwrap().send(&notice()).await;
        assert!(
            outcome.starts_with("firing: Slack failed: ") && outcome.ends_with("after 3 tries"),
            "{outcome}"
        );
        assert!(
            !outcome.contains(&port.to_string()),
            "the URL is a credential: {outcome}"
        );
    }

    #[tokio::test]
    async fn without_a_receiver_the_notice_says_where_to_configure_one() {
        let outcome = Notifier::new(&AlertsConfig::default())
            .unwrap()
            .send(&notice())
            .await;
        assert_eq!(
            outcome,
            "firing: no receiver configured ([alerts] slack_webhook_url / webhook_url)"
        );
    }
}
