//! Match quality before the platform reports it: a score from 0 to 10 for what a delivery sends
//! a platform to match the event to a person, after Meta's Event Match Quality guidance (email
//! and phone weigh most, then external_id, then click ids / browser ids, then ip + user agent,
//! then name and address). An estimate from what was sent, not the platform's own figure: it
//! cannot know whether the platform has an account for that email.
//!
//! Pure: the canonical event as it went out (after identity enrichment) and the platform kind.

use serde::Serialize;

use crate::pipeline::CanonicalEvent;

/// One identifier a platform matches on, and its weight there.
struct Weight {
    name: &'static str,
    weight: f64,
}

/// The identifiers each platform uses, and how much each counts toward 10. Weights follow the
/// platforms' own guidance on what matches best (Meta's Event Match Quality: email and phone
/// first; Google: email, phone and the click id; TikTok: email, phone, ttclid; Klaviyo
/// identifies a profile by email, phone or external_id only).
fn weights(kind: &str) -> Option<&'static [Weight]> {
    const META: &[Weight] = &[
        Weight {
            name: "email",
            weight: 3.0,
        },
        Weight {
            name: "phone",
            weight: 2.5,
        },
        Weight {
            name: "external_id",
            weight: 1.5,
        },
        Weight {
            name: "fbc",
            weight: 1.0,
        },
        Weight {
            name: "fbp",
            weight: 0.5,
        },
        Weight {
            name: "ip+user_agent",
            weight: 0.8,
        },
        Weight {
            name: "name",
            weight: 0.3,
        },
        Weight {
            name: "city/zip/country",
            weight: 0.4,
        },
    ];
    const GOOGLE: &[Weight] = &[
        Weight {
            name: "email",
            weight: 3.0,
        },
        Weight {
            name: "phone",
            weight: 2.0,
        },
        Weight {
            name: "gclid/gbraid/wbraid",
            weight: 3.5,
        },
        Weight {
            name: "name+zip+country",
            weight: 1.5,
        },
    ];
    const TIKTOK: &[Weight] = &[
        Weight {
            name: "email",
            weight: 3.0,
        },
        Weight {
            name: "phone",
            weight: 2.5,
        },
        Weight {
            name: "external_id",
            weight: 1.5,
        },
        Weight {
            name: "ttclid",
            weight: 1.5,
        },
        Weight {
            name: "ttp",
            weight: 0.5,
        },
        Weight {
            name: "ip+user_agent",
            weight: 1.0,
        },
    ];
    const KLAVIYO: &[Weight] = &[
        Weight {
            name: "email",
            weight: 5.0,
        },
        Weight {
            name: "phone",
            weight: 3.0,
        },
        Weight {
            name: "external_id",
            weight: 2.0,
        },
    ];
    match kind {
        "meta_capi" => Some(META),
        "google_ads" => Some(GOOGLE),
        "tiktok" => Some(TIKTOK),
        "klaviyo" => Some(KLAVIYO),
        _ => None,
    }
}

/// A delivery's score and what made it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchQuality {
    /// 0 to 10, one decimal.
    pub score: f64,
    /// The identifiers sent (each hashed by the payload where the platform wants it hashed).
    pub identifiers: Vec<&'static str>,
    /// Identifiers the platform would use that this event lacked, heaviest first.
    pub missing: Vec<&'static str>,
}

/// Which of the platform's identifiers the event carries.
fn present(name: &str, e: &CanonicalEvent) -> bool {
    let u = &e.user;
    let c = &e.context;
    let some = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    let click = |k: &str| c.click_ids.get(k).is_some_and(|v| !v.is_empty());
    match name {
        "email" => some(&u.email),
        "phone" => some(&u.phone),
        "external_id" => some(&u.user_id),
        "fbc" => click("fbc"),
        "fbp" => click("fbp"),
        "ttclid" => click("ttclid"),
        "ttp" => click("ttp"),
        "gclid/gbraid/wbraid" => click("gclid") || click("gbraid") || click("wbraid"),
        "ip+user_agent" => some(&c.ip) && some(&c.user_agent),
        "name" => some(&u.first_name) || some(&u.last_name),
        "city/zip/country" => some(&u.city) || some(&u.postal_code) || some(&u.country),
        "name+zip+country" => {
            (some(&u.first_name) || some(&u.last_name)) && some(&u.postal_code) && some(&u.country)
        }
        _ => false,
    }
}

/// The score of what a delivery of `event` to a platform of `kind` sends; `None` for a kind
/// that matches no person (a webhook, the warehouse, GA4's client ids).
pub fn score(kind: &str, event: &CanonicalEvent) -> Option<MatchQuality> {
    let weights = weights(kind)?;
    let total: f64 = weights.iter().map(|w| w.weight).sum();
    let mut got = 0.0;
    let mut identifiers = Vec::new();
    let mut missing: Vec<&Weight> = Vec::new();
    for w in weights {
        if present(w.name, event) {
            got += w.weight;
            identifiers.push(w.name);
        } else {
            missing.push(w);
        }
    }
    missing.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    Some(MatchQuality {
        score: (got / total * 100.0).round() / 10.0,
        identifiers,
        missing: missing.into_iter().map(|w| w.name).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(f: impl FnOnce(&mut CanonicalEvent)) -> CanonicalEvent {
        let mut e: CanonicalEvent = serde_json::from_value(serde_json::json!({
            "event_id": "ev_purchase_1", "event_id_basis": "b", "dedup_key": "o-1",
            "name": "purchase", "segment_event": "Order Completed", "mapping_version": 1,
            "message_id": "m-1", "environment": "production",
            "event_time": "2026-12-04T10:00:00Z", "event_time_ms": 0,
            "properties": {}, "user": {"anonymous_id": "a-1"}, "context": {},
            "provenance": {}
        }))
        .expect("a canonical event");
        f(&mut e);
        e
    }

    #[test]
    fn scores_rise_with_what_is_sent() {
        let anonymous = event(|_| {});
        let email = event(|e| e.user.email = Some("a@x.io".into()));
        let everything = event(|e| {
            e.user.email = Some("a@x.io".into());
            e.user.phone = Some("+31612345678".into());
            e.context.ip = Some("203.0.113.1".into());
            e.context.user_agent = Some("Mozilla/5.0".into());
            e.context
                .click_ids
                .insert("fbc".into(), "fb.1.1.abc".into());
        });
        for kind in ["meta_capi", "tiktok", "google_ads", "klaviyo"] {
            let a = score(kind, &anonymous).unwrap();
            let b = score(kind, &email).unwrap();
            let c = score(kind, &everything).unwrap();
            assert!(
                a.score < b.score && b.score < c.score,
                "{kind}: {} < {} < {}",
                a.score,
                b.score,
                c.score
            );
            // What an anonymous event lacks most: the email, or for Google its click id.
            let first = if kind == "google_ads" {
                "gclid/gbraid/wbraid"
            } else {
                "email"
            };
            assert_eq!(a.missing.first(), Some(&first), "{kind}");
        }
        let meta = score("meta_capi", &everything).unwrap();
        assert_eq!(
            meta.identifiers,
            vec!["email", "phone", "fbc", "ip+user_agent"]
        );
        assert!(meta.score >= 7.0 && meta.score <= 10.0, "{}", meta.score);
        assert_eq!(score("meta_capi", &anonymous).unwrap().score, 0.0);
        assert!(score("webhook", &everything).is_none());
    }
}
