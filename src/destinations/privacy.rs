//! Deletions forwarded to the platforms that take one, as pure functions: which destination
//! gets what (Klaviyo a data-privacy deletion job per email or phone, a webhook a signed
//! `tracklayer.forget` event with hashed identifiers), each request, and what its answer means.
//! Meta, TikTok, Google Ads and GA4 take no deletion from a server-side sender; the forget's
//! answer says so for each.

use serde::{Deserialize, Serialize};

use super::{webhook, Destination, HttpRequest, HttpResponse, Settings};
use crate::pipeline::identity::{IdKind, Identifier};
use crate::pipeline::privacy::shared_hashes;

/// What a forward carries until the platform has answered for good (then it is cleared).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ForwardPayload {
    /// Klaviyo deletes by exactly one of email, phone_number or its own id.
    Klaviyo {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phone_number: Option<String>,
    },
    Webhook(ForgetEvent),
}

/// The signed event internal systems receive: identifiers as SHA-256 of their normalised value
/// (hex), so a receiver can match its own records without TrackLayer sending the values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForgetEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub request_id: String,
    pub environment: String,
    pub requested_at: String,
    pub identifiers: Vec<HashedIdentifier>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HashedIdentifier {
    pub kind: IdKind,
    pub sha256: String,
}

/// A deletion to forward (queued by the store, sent by the node's forwarder).
#[derive(Debug, Clone)]
pub struct NewForward {
    pub destination: String,
    pub kind: &'static str,
    pub payload: String,
}

/// A destination the deletion is not forwarded to, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotForwarded {
    pub destination: String,
    pub why: String,
}

/// The forwards a forget queues for `destinations`, and why the others get none.
pub fn plan(
    destinations: &[&Destination],
    person: &[Identifier],
    request_id: &str,
    environment: &str,
    requested_at: &str,
) -> (Vec<NewForward>, Vec<NotForwarded>) {
    let mut forwards = Vec::new();
    let mut skipped = Vec::new();
    let skip = |d: &Destination, why: &str| NotForwarded {
        destination: d.name.clone(),
        why: why.to_string(),
    };
    for d in destinations {
        match &d.settings {
            Settings::Klaviyo(_) => {
                let mut any = false;
                for (kind, value) in person {
                    let payload = match kind {
                        IdKind::Email => ForwardPayload::Klaviyo {
                            email: Some(value.clone()),
                            phone_number: None,
                        },
                        // Klaviyo's phone numbers are E.164.
                        IdKind::Phone if value.starts_with('+') => ForwardPayload::Klaviyo {
                            email: None,
                            phone_number: Some(value.clone()),
                        },
                        _ => continue,
                    };
                    any = true;
                    forwards.push(NewForward {
                        destination: d.name.clone(),
                        kind: "klaviyo",
                        payload: serde_json::to_string(&payload).unwrap_or_default(),
                    });
                }
                if !any {
                    skipped.push(skip(
                        d,
                        "Klaviyo deletes by email or E.164 phone, and the person has neither",
                    ));
                }
            }
            Settings::Webhook(_) => {
                let event = ForgetEvent {
                    kind: "tracklayer.forget".into(),
                    request_id: request_id.to_string(),
                    environment: environment.to_string(),
                    requested_at: requested_at.to_string(),
                    identifiers: shared_hashes(person)
                        .into_iter()
                        .map(|(kind, sha256)| HashedIdentifier { kind, sha256 })
                        .collect(),
                };
                forwards.push(NewForward {
                    destination: d.name.clone(),
                    kind: "webhook",
                    payload: serde_json::to_string(&ForwardPayload::Webhook(event))
                        .unwrap_or_default(),
                });
            }
            Settings::Meta(_) => skipped.push(skip(
                d,
                "Meta's Conversions API takes no deletion: ask in Events Manager (or Meta's data deletion process) for what it received",
            )),
            Settings::Tiktok(_) => skipped.push(skip(
                d,
                "TikTok's Events API takes no deletion: ask TikTok through its privacy request process",
            )),
            Settings::GoogleAds(_) => skipped.push(skip(
                d,
                "Google Ads takes no deletion of uploaded conversions from a sender; Google applies its own retention",
            )),
            Settings::Ga4(_) => skipped.push(skip(
                d,
                "GA4 deletes a user through the Google Analytics User Deletion API (an admin's OAuth), not the Measurement Protocol: delete the client_id/user_id there",
            )),
            Settings::Warehouse(_) => skipped.push(skip(
                d,
                "deleted by TrackLayer itself (its rows are part of this forget's counts)",
            )),
        }
    }
    (forwards, skipped)
}

/// The request a forward sends.
pub fn build(dest: &Destination, payload: &str, now_unix: i64) -> Result<HttpRequest, String> {
    let payload: ForwardPayload =
        serde_json::from_str(payload).map_err(|e| format!("unreadable forward: {e}"))?;
    match (&dest.settings, payload) {
        (
            Settings::Klaviyo(settings),
            ForwardPayload::Klaviyo {
                email,
                phone_number,
            },
        ) => {
            let mut attributes = serde_json::Map::new();
            if let Some(email) = email {
                attributes.insert("email".into(), email.into());
            }
            if let Some(phone) = phone_number {
                attributes.insert("phone_number".into(), phone.into());
            }
            let body = serde_json::json!({
                "data": {
                    "type": "data-privacy-deletion-job",
                    "attributes": {
                        "profile": {"data": {"type": "profile", "attributes": attributes}}
                    }
                }
            });
            Ok(HttpRequest {
                url: format!("{}/api/data-privacy-deletion-jobs", dest.base_url),
                headers: super::klaviyo::request_headers(settings),
                body: serde_json::to_vec(&body).unwrap_or_default(),
            })
        }
        (Settings::Webhook(settings), ForwardPayload::Webhook(event)) => {
            let body = serde_json::to_vec(&event).unwrap_or_default();
            let id = format!("forget_{}", event.request_id);
            let signature = webhook::sign(&settings.key, &id, now_unix, &body);
            Ok(HttpRequest {
                url: settings.url.clone(),
                headers: vec![
                    ("Content-Type".into(), "application/json".into()),
                    ("webhook-id".into(), id),
                    ("webhook-timestamp".into(), now_unix.to_string()),
                    ("webhook-signature".into(), signature),
                ],
                body,
            })
        }
        _ => Err(format!(
            "{} is no longer a destination of the kind this forward was queued for",
            dest.name
        )),
    }
}

/// What a forward's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardVerdict {
    Delivered,
    Retry(String),
    Dead(String),
}

pub fn classify(response: &HttpResponse) -> ForwardVerdict {
    let excerpt = super::excerpt(&response.body);
    match response.status {
        200..=299 => ForwardVerdict::Delivered,
        408 | 429 | 500..=599 => {
            ForwardVerdict::Retry(format!("HTTP {}: {excerpt}", response.status))
        }
        status => ForwardVerdict::Dead(format!("HTTP {status}: {excerpt}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::setup::Setup;

    fn destinations() -> Vec<Destination> {
        let toml = r#"
[workspace]
account = "acct_1"
[[environments]]
name = "production"
secret = "tls_0123456789abcdef0123456789abcdef"
[mapping]
[[destinations]]
name = "klaviyo"
kind = "klaviyo"
api_key = "pk_test"
[[destinations]]
name = "hooks"
kind = "webhook"
url = "http://127.0.0.1:9/hook"
secret = "whsec_MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5"
[[destinations]]
name = "meta"
kind = "meta_capi"
pixel_id = "123"
access_token = "EAAB"
"#;
        Setup::parse(toml, std::path::Path::new("t.toml"), &|_| None)
            .expect("a valid config")
            .destinations
    }

    #[test]
    fn klaviyo_gets_a_job_per_email_and_phone_and_webhooks_get_hashes_only() {
        let all = destinations();
        let refs: Vec<&Destination> = all.iter().collect();
        let person = vec![
            (IdKind::Email, "ann@example.com".to_string()),
            (IdKind::Phone, "+31612345678".to_string()),
            (IdKind::UserId, "u-1".to_string()),
        ];
        let (forwards, skipped) =
            plan(&refs, &person, "fg_1", "production", "2026-12-04T10:00:00Z");
        let klaviyo: Vec<_> = forwards.iter().filter(|f| f.kind == "klaviyo").collect();
        assert_eq!(klaviyo.len(), 2);
        let webhook = forwards.iter().find(|f| f.kind == "webhook").unwrap();
        assert!(!webhook.payload.contains("ann@example.com"));
        assert!(webhook
            .payload
            .contains(&crate::destinations::hashing::sha256_hex("ann@example.com")));
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].why.contains("Meta"));

        let request = build(
            all.iter().find(|d| d.name == "klaviyo").unwrap(),
            &klaviyo[0].payload,
            0,
        )
        .unwrap();
        assert!(request.url.ends_with("/api/data-privacy-deletion-jobs"));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["data"]["type"], "data-privacy-deletion-job");
        let attributes = &body["data"]["attributes"]["profile"]["data"]["attributes"];
        assert_eq!(
            attributes.as_object().unwrap().len(),
            1,
            "exactly one identifier"
        );
        assert!(request.headers.iter().any(|(k, _)| k == "revision"));
    }
}
