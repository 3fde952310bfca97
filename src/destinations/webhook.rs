//! Internal webhooks: the canonical event as JSON, signed with Standard Webhooks headers
//! (`webhook-id` = event_id, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`).

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::Secret;

use super::{
    classify_status, Built, HttpRequest, HttpResponse, Outcome, SettingsError, SettingsReader,
    Subject,
};

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: String,
    /// The `whsec_<base64>` secret as configured.
    pub secret: Secret,
    /// Its decoded key.
    pub key: Vec<u8>,
}

impl WebhookSettings {
    pub fn read(r: &SettingsReader<'_>) -> Result<WebhookSettings, SettingsError> {
        r.deny_unknown(&["url", "secret"])?;
        let url = r.required_str("url")?;
        if url::Url::parse(&url)
            .map(|u| u.scheme() != "http" && u.scheme() != "https")
            .unwrap_or(true)
        {
            return Err(r.error("url", format!("`{url}` is not an http(s) URL")));
        }
        let secret = r.required_secret("secret")?;
        // A secret the running command does not read cannot be checked (and is never used).
        let key = if secret.is_resolved() {
            decode_secret(secret.expose()).map_err(|reason| r.error("secret", reason))?
        } else {
            Vec::new()
        };
        Ok(WebhookSettings { url, secret, key })
    }
}

/// `whsec_` + base64 of 24–64 random bytes (Standard Webhooks).
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("must start with whsec_ (Standard Webhooks secret)")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "the part after whsec_ is not base64".to_string())?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "decodes to {} bytes; use 24 to 64 random bytes",
            key.len()
        ));
    }
    Ok(key)
}

/// `v1,<base64 HMAC-SHA256(key, id.timestamp.body)>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// One item of a webhook body: the canonical event, or the profile an identify call updated.
#[derive(serde::Serialize)]
#[serde(tag = "type")]
enum Envelope<'a> {
    #[serde(rename = "tracklayer.event")]
    Event {
        name: &'a str,
        event: &'a crate::pipeline::CanonicalEvent,
    },
    #[serde(rename = "tracklayer.profile")]
    Profile {
        profile: &'a crate::destinations::ProfileSnapshot,
    },
}

/// Its id (the event_id, or the profile delivery's id) and its envelope.
fn envelope(item: &Subject) -> (String, Envelope<'_>) {
    match item {
        Subject::Event {
            event,
            destination_event,
            ..
        } => (
            event.event_id.clone(),
            Envelope::Event {
                name: destination_event,
                event,
            },
        ),
        Subject::Profile(p) => (
            format!("profile_{}_{}", p.profile_id, p.message_id),
            Envelope::Profile { profile: p },
        ),
    }
}

/// Several items in one request (`batch_size` > 1): `{"type": "tracklayer.batch", "items": [...]}`.
#[derive(serde::Serialize)]
struct Batch<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    items: Vec<Envelope<'a>>,
}

/// The request for `items`: one envelope when the destination sends one event per request
/// (`batch_size` = 1, the default), else every item in one `tracklayer.batch` body. A batch's
/// `webhook-id` derives from the ids it carries, so a retry of the same batch has the same id;
/// receivers dedup items on their own ids.
pub fn build(
    settings: &WebhookSettings,
    batch_size: usize,
    items: &[Subject],
    now_unix: i64,
) -> Built {
    if items.is_empty() {
        return Built::default();
    }
    let (id, body) = if batch_size <= 1 {
        let (id, envelope) = envelope(&items[0]);
        (id, serde_json::to_vec(&envelope).unwrap_or_default())
    } else {
        let (ids, envelopes): (Vec<String>, Vec<Envelope<'_>>) = items.iter().map(envelope).unzip();
        let mut digest = sha2::Sha256::new();
        for id in &ids {
            sha2::Digest::update(&mut digest, id.as_bytes());
            sha2::Digest::update(&mut digest, b"\n");
        }
        let id = format!("batch_{}", &hex::encode(digest.finalize())[..32]);
        let body = Batch {
            kind: "tracklayer.batch",
            items: envelopes,
        };
        (id, serde_json::to_vec(&body).unwrap_or_default())
    };
    let signature = sign(&settings.key, &id, now_unix, &body);
    let request = HttpRequest {
        url: settings.url.clone(),
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("webhook-id".into(), id),
            ("webhook-timestamp".into(), now_unix.to_string()),
            ("webhook-signature".into(), signature),
        ],
        body,
    };
    if batch_size <= 1 {
        Built::first_of(request, items.len())
    } else {
        Built {
            request: Some(request),
            included: (0..items.len()).collect(),
            rejected: Vec::new(),
            deferred: Vec::new(),
        }
    }
}

/// 2xx delivered; 410 Gone means the endpoint is retired (dead); 3xx is a failure (redirects are
/// not followed); 408/429/5xx retry.
pub fn classify(count: usize, response: &HttpResponse) -> Vec<Outcome> {
    let outcome = match response.status {
        300..=399 => Outcome::permanent(format!(
            "HTTP {}: redirects are not followed; fix the webhook URL",
            response.status
        )),
        410 => Outcome::permanent("HTTP 410 Gone: the endpoint is retired"),
        _ => classify_status(response, "the webhook"),
    };
    vec![outcome; count]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_vector() {
        // reference/segment-and-peers.md §4.6
        let key = decode_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        assert!(decode_secret("C2FVsBQIhrscChlQIMV").is_err());
        assert!(decode_secret("whsec_c2hvcnQ=")
            .unwrap_err()
            .contains("bytes"));
    }

    #[test]
    fn a_batch_is_one_signed_body_with_an_id_stable_across_retries() {
        use crate::destinations::ProfileSnapshot;
        let settings = WebhookSettings {
            url: "https://hooks.example/tl".into(),
            secret: Secret::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
            key: decode_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap(),
        };
        let profile = |n: i64| {
            Subject::Profile(ProfileSnapshot {
                profile_id: n,
                message_id: format!("m-{n}"),
                user_id: Some(format!("u-{n}")),
                anonymous_id: None,
                traits: serde_json::Map::new(),
                problems: Vec::new(),
            })
        };
        let items = [profile(1), profile(2), profile(3)];
        let built = build(&settings, 100, &items, 1_700_000_000);
        assert_eq!(built.included, vec![0, 1, 2]);
        let request = built.request.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["type"], "tracklayer.batch");
        assert_eq!(body["items"].as_array().unwrap().len(), 3);
        assert_eq!(body["items"][2]["profile"]["user_id"], "u-3");
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let id = header("webhook-id");
        assert_eq!(
            header("webhook-signature"),
            sign(&settings.key, &id, 1_700_000_000, &request.body)
        );
        // The same items again (a retry) carry the same id; other items another.
        let again = build(&settings, 100, &items, 1_700_000_100)
            .request
            .unwrap();
        assert!(again.headers.contains(&("webhook-id".into(), id.clone())));
        let other = build(&settings, 100, &items[..2], 1_700_000_000)
            .request
            .unwrap();
        assert!(!other.headers.contains(&("webhook-id".into(), id)));
        // batch_size 1 keeps the single-envelope body.
        let single = build(&settings, 1, &items, 1_700_000_000);
        assert_eq!((single.included, single.deferred), (vec![0], vec![1, 2]));
    }

    #[test]
    fn statuses() {
        let r = |status| HttpResponse {
            status,
            retry_after: None,
            body: String::new(),
            cut: false,
            rate_limit_wait: None,
        };
        assert!(matches!(classify(1, &r(204))[0], Outcome::Delivered { .. }));
        assert!(matches!(classify(1, &r(302))[0], Outcome::Permanent { .. }));
        assert!(matches!(classify(1, &r(410))[0], Outcome::Permanent { .. }));
        assert!(matches!(classify(1, &r(503))[0], Outcome::Retry { .. }));
        assert!(matches!(classify(1, &r(400))[0], Outcome::Permanent { .. }));
    }
}
