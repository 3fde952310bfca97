//! The identity graph, as pure functions: given what a message says about a person and the
//! profiles that already own those identifiers, decide which profile it belongs to, which
//! profiles merge, and which links are refused as conflicts.
//!
//! Conservative by design: two different userIds are never merged. When a message would join
//! them (a shared device's anonymousId, an email used by two accounts), the conflict is recorded
//! and the contested identifier stays where it was.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::canonical::{CanonicalUser, Provenance};
use super::identifier::{earlier_spellings as earlier_spellings_of, normal_email, normal_phone};
use crate::segment::{MessageType, ValidMessage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    UserId,
    AnonymousId,
    Email,
    Phone,
}

impl IdKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::UserId => "user_id",
            IdKind::AnonymousId => "anonymous_id",
            IdKind::Email => "email",
            IdKind::Phone => "phone",
        }
    }

    pub fn parse(s: &str) -> Option<IdKind> {
        [
            IdKind::UserId,
            IdKind::AnonymousId,
            IdKind::Email,
            IdKind::Phone,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// An identifier as the graph stores it (normalised for matching, not hashed).
pub type Identifier = (IdKind, String);

/// What a message says about a person.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub message_id: String,
    pub message_type: MessageType,
    pub at_ms: i64,
    pub user_id: Option<String>,
    /// For alias: `previousId` (often the anonymousId, sometimes an older userId).
    pub previous_id: Option<String>,
    pub identifiers: Vec<Identifier>,
    /// The same emails and phones as earlier versions keyed them, where that differs (only the
    /// suppression list still holds such keys).
    pub earlier_spellings: Vec<Identifier>,
    /// identify: traits to merge into the profile.
    pub traits: Option<Map<String, Value>>,
    /// identify or the Segment consent event: `context.consent.categoryPreferences`.
    pub consent: Option<Map<String, Value>>,
}

/// The reserved track event Segment uses to store consent on a profile.
pub const CONSENT_EVENT: &str = "Segment Consent Preference Updated";

pub fn consent_preferences(body: &Map<String, Value>) -> Option<&Map<String, Value>> {
    body.get("context")?
        .get("consent")?
        .get("categoryPreferences")?
        .as_object()
}

/// What a message says about a person; a phone written nationally is read in the person's
/// country, else in `default_country`.
pub fn observe(message: &ValidMessage, at_ms: i64, default_country: Option<&str>) -> Observation {
    let body = &message.body;
    let mut identifiers: Vec<Identifier> = Vec::new();
    if let Some(u) = &message.user_id {
        identifiers.push((IdKind::UserId, u.clone()));
    }
    if let Some(a) = &message.anonymous_id {
        identifiers.push((IdKind::AnonymousId, a.clone()));
    }
    let mut scratch = BTreeMap::new();
    let user = super::transform::message_user(message, &mut scratch);
    let mut earlier_spellings = Vec::new();
    if let Some(raw) = user.email.as_deref() {
        if let Some(email) = normal_email(raw) {
            earlier_spellings.extend(earlier_spellings_of(IdKind::Email, raw, &email));
            identifiers.push((IdKind::Email, email));
        }
    }
    if let Some(raw) = user.phone.as_deref() {
        let country = user.country.as_deref().or(default_country);
        if let Some(phone) = normal_phone(raw, country) {
            earlier_spellings.extend(earlier_spellings_of(IdKind::Phone, raw, &phone));
            identifiers.push((IdKind::Phone, phone));
        }
    }
    let previous_id = (message.message_type == MessageType::Alias)
        .then(|| body.get("previousId"))
        .flatten()
        .and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    let stores_consent = message.message_type == MessageType::Identify
        || message.event.as_deref() == Some(CONSENT_EVENT);
    Observation {
        message_id: message.message_id.clone(),
        message_type: message.message_type,
        at_ms,
        user_id: message.user_id.clone(),
        previous_id,
        identifiers,
        earlier_spellings,
        traits: (message.message_type == MessageType::Identify)
            .then(|| body.get("traits").and_then(Value::as_object).cloned())
            .flatten(),
        consent: stores_consent
            .then(|| consent_preferences(body).cloned())
            .flatten(),
    }
}

/// A stored profile as the graph needs it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// `None` for a profile this message creates.
    pub id: Option<i64>,
    pub user_id: Option<String>,
    pub traits: Map<String, Value>,
    /// Which messageId last set each trait.
    pub trait_sources: BTreeMap<String, String>,
    pub consent: Option<Map<String, Value>>,
    pub consent_source: Option<String>,
    pub identifiers: Vec<Identifier>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub identifier: Identifier,
    /// The profile that keeps the identifier.
    pub owner: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// The profile the message belongs to, after merges and updates.
    pub profile: Profile,
    /// False when the message taught the graph nothing new (the common case for a track by a
    /// known user), so nothing needs writing.
    pub changed: bool,
    /// Identifiers that now point at `profile` and did not before.
    pub new_identifiers: Vec<Identifier>,
    /// Profiles folded into `profile` (their identifiers now point at it).
    pub merged: Vec<i64>,
    pub conflicts: Vec<Conflict>,
}

/// Decide where a message's identifiers belong. `known` holds every profile that owns one of
/// the observation's identifiers (and, for alias, the previousId).
pub fn resolve(obs: &Observation, known: &[Profile]) -> Resolution {
    let owner_of = |id: &Identifier| -> Option<&Profile> {
        known.iter().find(|p| p.identifiers.iter().any(|x| x == id))
    };
    let mut wanted: Vec<Identifier> = obs.identifiers.clone();
    if let Some(previous) = &obs.previous_id {
        // previousId is an anonymousId unless a profile already knows it as a userId.
        let as_user = (IdKind::UserId, previous.clone());
        if owner_of(&as_user).is_some() {
            wanted.push(as_user);
        } else {
            wanted.push((IdKind::AnonymousId, previous.clone()));
        }
    }

    // The target: the profile of the message's userId; else the oldest profile touched.
    let mut touched: Vec<&Profile> = wanted.iter().filter_map(owner_of).collect();
    touched.sort_by_key(|p| p.id);
    touched.dedup_by_key(|p| p.id);
    let target_user_id = obs
        .user_id
        .clone()
        .or_else(|| touched.iter().find_map(|p| p.user_id.clone()));
    let by_user_id = target_user_id.as_ref().and_then(|u| {
        touched
            .iter()
            .find(|p| p.user_id.as_ref() == Some(u))
            .copied()
    });
    let compatible = |p: &Profile| match (&p.user_id, &target_user_id) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    let mut profile = match by_user_id.or_else(|| touched.iter().find(|p| compatible(p)).copied()) {
        Some(p) => p.clone(),
        None => Profile {
            first_seen_ms: obs.at_ms,
            ..Profile::default()
        },
    };
    let original = profile.clone();
    if profile.user_id.is_none() {
        profile.user_id = target_user_id.clone();
    }

    let mut merged = Vec::new();
    let mut conflicts = Vec::new();
    for other in touched.iter().filter(|p| p.id != profile.id) {
        let other_id = other.id.unwrap_or_default();
        if other.user_id.is_none() || other.user_id == profile.user_id {
            // Fold: the target keeps its own traits, fills gaps from the other profile.
            for (k, v) in &other.traits {
                profile.traits.entry(k.clone()).or_insert_with(|| v.clone());
            }
            for (k, v) in &other.trait_sources {
                profile
                    .trait_sources
                    .entry(k.clone())
                    .or_insert_with(|| v.clone());
            }
            if profile.consent.is_none() {
                profile.consent = other.consent.clone();
                profile.consent_source = other.consent_source.clone();
            }
            for id in &other.identifiers {
                if !profile.identifiers.contains(id) {
                    profile.identifiers.push(id.clone());
                }
            }
            profile.first_seen_ms = profile.first_seen_ms.min(other.first_seen_ms);
            merged.push(other_id);
        } else {
            for id in wanted.iter().filter(|id| other.identifiers.contains(id)) {
                conflicts.push(Conflict {
                    identifier: id.clone(),
                    owner: other_id,
                    reason: format!(
                        "{} `{}` belongs to userId `{}`; message {} says userId `{}`; not merged",
                        id.0.as_str(),
                        id.1,
                        other.user_id.as_deref().unwrap_or("?"),
                        obs.message_id,
                        profile.user_id.as_deref().unwrap_or("?"),
                    ),
                });
            }
        }
    }

    let contested: Vec<&Identifier> = conflicts.iter().map(|c| &c.identifier).collect();
    for id in wanted {
        if !contested.contains(&&id) && !profile.identifiers.contains(&id) {
            profile.identifiers.push(id);
        }
    }
    if let Some(traits) = &obs.traits {
        for (k, v) in traits {
            if v.is_null() || profile.traits.get(k) == Some(v) {
                continue;
            }
            profile.traits.insert(k.clone(), v.clone());
            profile
                .trait_sources
                .insert(k.clone(), obs.message_id.clone());
        }
    }
    if let Some(consent) = &obs.consent {
        if profile.consent.as_ref() != Some(consent) {
            profile.consent = Some(consent.clone());
            profile.consent_source = Some(obs.message_id.clone());
        }
    }
    let new_identifiers: Vec<Identifier> = profile
        .identifiers
        .iter()
        .filter(|id| !original.identifiers.contains(id))
        .cloned()
        .collect();
    // last_seen moves at most hourly on its own, so a busy user's tracks do not each rewrite
    // their profile; any real change writes it anyway.
    const LAST_SEEN_GRANULARITY_MS: i64 = 3_600_000;
    let mut changed = profile.id.is_none() || profile != original;
    if changed || obs.at_ms - profile.last_seen_ms > LAST_SEEN_GRANULARITY_MS {
        profile.last_seen_ms = profile.last_seen_ms.max(obs.at_ms);
        changed = true;
    }
    Resolution {
        profile,
        changed,
        new_identifiers,
        merged,
        conflicts,
    }
}

fn trait_str(traits: &Map<String, Value>, names: &[&str]) -> Option<(String, String)> {
    names.iter().find_map(|name| {
        traits
            .get(*name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| (s.to_string(), name.to_string()))
    })
}

/// A user field, the profile value found for it (value, trait name), and where it goes.
type EnrichSlot<'a> = (
    &'static str,
    Option<(String, String)>,
    &'a mut Option<String>,
);

/// Fill the user fields a track call left out from its profile ("a track with only anonymousId
/// gets the email/phone learned earlier"), recording which identify call taught us each one.
pub fn enrich(
    user: &mut CanonicalUser,
    profile: &Profile,
    provenance: &mut BTreeMap<String, Provenance>,
) {
    let profile_id = profile.id.unwrap_or_default();
    user.profile_id = profile.id;
    let address = profile.traits.get("address").and_then(Value::as_object);
    let empty = Map::new();
    let address = address.unwrap_or(&empty);
    let slots: [EnrichSlot<'_>; 9] = [
        (
            "user_id",
            profile.user_id.clone().map(|u| (u, "userId".to_string())),
            &mut user.user_id,
        ),
        (
            "email",
            trait_str(&profile.traits, &["email"]),
            &mut user.email,
        ),
        (
            "phone",
            trait_str(&profile.traits, &["phone"]),
            &mut user.phone,
        ),
        (
            "first_name",
            trait_str(&profile.traits, &["firstName", "first_name"]),
            &mut user.first_name,
        ),
        (
            "last_name",
            trait_str(&profile.traits, &["lastName", "last_name"]),
            &mut user.last_name,
        ),
        (
            "city",
            trait_str(address, &["city"]).map(|(v, k)| (v, format!("address.{k}"))),
            &mut user.city,
        ),
        (
            "state",
            trait_str(address, &["state"]).map(|(v, k)| (v, format!("address.{k}"))),
            &mut user.state,
        ),
        (
            "postal_code",
            trait_str(address, &["postalCode", "postal_code"])
                .map(|(v, k)| (v, format!("address.{k}"))),
            &mut user.postal_code,
        ),
        (
            "country",
            trait_str(address, &["country"]).map(|(v, k)| (v, format!("address.{k}"))),
            &mut user.country,
        ),
    ];
    for (key, found, slot) in slots {
        if slot.is_some() {
            continue;
        }
        let Some((value, trait_name)) = found else {
            continue;
        };
        let root = trait_name.split('.').next().unwrap_or(&trait_name);
        let learned_from = profile
            .trait_sources
            .get(root)
            .map(|m| format!(" (identify {m})"))
            .unwrap_or_default();
        *slot = Some(value);
        provenance.insert(
            format!("user.{key}"),
            Provenance::new(
                format!("profile {profile_id}{learned_from}"),
                format!("from the identity graph: traits.{trait_name}"),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(user: Option<&str>, anon: Option<&str>, email: Option<&str>) -> Observation {
        let mut identifiers = Vec::new();
        if let Some(u) = user {
            identifiers.push((IdKind::UserId, u.to_string()));
        }
        if let Some(a) = anon {
            identifiers.push((IdKind::AnonymousId, a.to_string()));
        }
        if let Some(e) = email {
            identifiers.push((IdKind::Email, e.to_string()));
        }
        Observation {
            message_id: "m".into(),
            message_type: MessageType::Identify,
            at_ms: 1,
            user_id: user.map(String::from),
            previous_id: None,
            identifiers,
            earlier_spellings: Vec::new(),
            traits: None,
            consent: None,
        }
    }

    fn profile(id: i64, user: Option<&str>, ids: &[(IdKind, &str)]) -> Profile {
        Profile {
            id: Some(id),
            user_id: user.map(String::from),
            identifiers: ids.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            ..Profile::default()
        }
    }

    #[test]
    fn new_identifiers_make_a_new_profile() {
        let r = resolve(&obs(Some("u1"), Some("a1"), None), &[]);
        assert_eq!(r.profile.id, None);
        assert_eq!(r.profile.user_id.as_deref(), Some("u1"));
        assert_eq!(r.profile.identifiers.len(), 2);
    }

    #[test]
    fn anonymous_profile_joins_the_known_user() {
        let anon = profile(1, None, &[(IdKind::AnonymousId, "a1")]);
        let known = profile(2, Some("u1"), &[(IdKind::UserId, "u1")]);
        let r = resolve(&obs(Some("u1"), Some("a1"), None), &[anon, known]);
        assert_eq!(r.profile.id, Some(2));
        assert_eq!(r.merged, [1]);
        assert!(r.conflicts.is_empty());
    }

    #[test]
    fn two_user_ids_are_never_merged() {
        let alice = profile(
            1,
            Some("alice"),
            &[(IdKind::UserId, "alice"), (IdKind::AnonymousId, "shared")],
        );
        let r = resolve(&obs(Some("bob"), Some("shared"), None), &[alice]);
        assert_eq!(r.profile.id, None, "bob gets his own profile");
        assert!(r.merged.is_empty());
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!(r.conflicts[0].owner, 1);
        assert!(r.conflicts[0].reason.contains("belongs to userId `alice`"));
        assert!(!r
            .profile
            .identifiers
            .contains(&(IdKind::AnonymousId, "shared".into())));
    }

    #[test]
    fn a_message_is_keyed_on_normal_forms_and_keeps_its_earlier_spellings() {
        let raw = br#"{"type":"identify","messageId":"m1","userId":"u1",
            "traits":{"email":" Jane.Doe+promo@Gmail.com ","phone":"06 1234 5678"}}"#;
        let valid = crate::segment::validate_message(raw, None, &Default::default()).unwrap();
        let seen = observe(&valid, 1, Some("NL"));
        assert!(seen
            .identifiers
            .contains(&(IdKind::Email, "janedoe@gmail.com".into())));
        assert!(seen
            .identifiers
            .contains(&(IdKind::Phone, "+31612345678".into())));
        assert_eq!(
            seen.earlier_spellings,
            vec![
                (IdKind::Email, "jane.doe+promo@gmail.com".into()),
                (IdKind::Phone, "0612345678".into())
            ]
        );
    }
}
