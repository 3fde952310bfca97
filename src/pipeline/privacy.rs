//! Forgetting a person, as pure functions: which identifiers a request names (normalised as the
//! identity graph stores them), whose they are, and how a forgotten identifier is remembered —
//! only as a keyed hash, so the suppression list itself holds no personal data.

use std::collections::{BTreeMap, BTreeSet};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::identifier::{earlier_spellings, normal_email, requested_phone};
use super::identity::{IdKind, Identifier};

/// The identifiers a forget request gives (any of them; at least one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgetError {
    #[error("name the person: give user_id, anonymous_id, email or phone")]
    NoIdentifier,
    #[error("{field}: {why}")]
    Unreadable { field: &'static str, why: String },
    #[error("the identifiers belong to different people ({0}); forget each person on its own")]
    DifferentPeople(String),
}

impl ForgetRequest {
    /// The identifiers in their normal form (as the graph keys them), each email and phone
    /// followed by the spelling earlier versions keyed it on where that differs, so a profile or
    /// suppression from then is found too. A phone written nationally needs `default_country`.
    pub fn identifiers(
        &self,
        default_country: Option<&str>,
    ) -> Result<Vec<Identifier>, ForgetError> {
        let mut out = Vec::new();
        let text = |field: &'static str, value: &Option<String>| -> Result<Option<String>, _> {
            match value.as_deref().map(str::trim) {
                None => Ok(None),
                Some("") => Err(ForgetError::Unreadable {
                    field,
                    why: "empty".into(),
                }),
                Some(v) if v.len() > 1024 => Err(ForgetError::Unreadable {
                    field,
                    why: "longer than 1024 characters".into(),
                }),
                Some(v) => Ok(Some(v.to_string())),
            }
        };
        if let Some(v) = text("user_id", &self.user_id)? {
            out.push((IdKind::UserId, v));
        }
        if let Some(v) = text("anonymous_id", &self.anonymous_id)? {
            out.push((IdKind::AnonymousId, v));
        }
        if let Some(v) = text("email", &self.email)? {
            let email = normal_email(&v).ok_or_else(|| ForgetError::Unreadable {
                field: "email",
                why: format!("`{v}` is not an email address (it names no mailbox)"),
            })?;
            out.extend(earlier_spellings(IdKind::Email, &v, &email));
            out.push((IdKind::Email, email));
        }
        if let Some(v) = text("phone", &self.phone)? {
            let phone =
                requested_phone(&v, default_country).map_err(|e| ForgetError::Unreadable {
                    field: "phone",
                    why: e.to_string(),
                })?;
            out.extend(earlier_spellings(IdKind::Phone, &v, &phone));
            out.push((IdKind::Phone, phone));
        }
        if out.is_empty() {
            return Err(ForgetError::NoIdentifier);
        }
        Ok(out)
    }
}

/// Whom a request names, once the graph was asked who owns each identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Person {
    /// One profile owns at least one of them.
    Known { profile_id: i64 },
    /// No profile holds any of them.
    Unknown,
}

/// Decide whom the request names: every known identifier must belong to the same profile.
pub fn whose(
    requested: &[Identifier],
    owners: &BTreeMap<Identifier, i64>,
) -> Result<Person, ForgetError> {
    let profiles: BTreeSet<i64> = requested
        .iter()
        .filter_map(|id| owners.get(id).copied())
        .collect();
    match profiles.len() {
        0 => Ok(Person::Unknown),
        1 => Ok(Person::Known {
            profile_id: *profiles.iter().next().unwrap_or(&0),
        }),
        _ => Err(ForgetError::DifferentPeople(
            requested
                .iter()
                .filter_map(|id| {
                    owners
                        .get(id)
                        .map(|p| format!("{} → profile {p}", id.0.as_str()))
                })
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// How a forgotten identifier is kept: HMAC-SHA256 under the store's own key, so the list
/// cannot be checked against a list of emails without that key.
pub fn suppression_hash(key: &[u8], id: &Identifier) -> Vec<u8> {
    Suppressor::new(key).hash(id)
}

/// The keyed hash, prepared once: the writer hashes every identifier of every message while
/// anyone is suppressed, and the key's own setup is half the work of each hash.
#[derive(Clone)]
pub struct Suppressor {
    keyed: Hmac<Sha256>,
}

impl Suppressor {
    pub fn new(key: &[u8]) -> Suppressor {
        Suppressor {
            // An HMAC takes a key of any length.
            keyed: <Hmac<Sha256> as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts every key length")),
        }
    }

    pub fn hash(&self, id: &Identifier) -> Vec<u8> {
        let mut mac = self.keyed.clone();
        mac.update(id.0.as_str().as_bytes());
        mac.update(&[0x1f]);
        mac.update(id.1.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// An identifier as a forget's audit keeps it: its kind and keyed hash, never its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HashedId {
    pub kind: IdKind,
    pub hash: Vec<u8>,
}

impl HashedId {
    pub fn of(suppressor: &Suppressor, id: &Identifier) -> HashedId {
        HashedId {
            kind: id.0,
            hash: suppressor.hash(id),
        }
    }

    /// The audit's JSON list `[{"kind", "hash"}]`; entries it cannot read are skipped.
    pub fn parse_list(json: &str) -> Vec<HashedId> {
        let Ok(serde_json::Value::Array(items)) = serde_json::from_str(json) else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| {
                Some(HashedId {
                    kind: IdKind::parse(item.get("kind")?.as_str()?)?,
                    hash: hex::decode(item.get("hash")?.as_str()?).ok()?,
                })
            })
            .collect()
    }

    pub fn list_json(ids: &BTreeSet<HashedId>) -> String {
        serde_json::Value::Array(
            ids.iter()
                .map(|id| serde_json::json!({"kind": id.kind.as_str(), "hash": hex::encode(&id.hash)}))
                .collect(),
        )
        .to_string()
    }
}

/// Everyone earlier forgets covered together with any of `named`. A forget's audit holds every
/// identifier of the person it reached, so naming one of them again names them all: after an
/// undo the graph no longer links a userId the first forget unlinked, but its audit still does.
/// Followed to the end, as one person may have been forgotten under several of their ids.
pub fn covered(named: &BTreeSet<HashedId>, audits: &[Vec<HashedId>]) -> BTreeSet<HashedId> {
    let mut covered = named.clone();
    let mut taken = vec![false; audits.len()];
    loop {
        let mut grew = false;
        for (audit, taken) in audits.iter().zip(taken.iter_mut()) {
            if !*taken && audit.iter().any(|id| covered.contains(id)) {
                *taken = true;
                covered.extend(audit.iter().cloned());
                grew = true;
            }
        }
        if !grew {
            return covered;
        }
    }
}

/// The identifiers as the platforms hash them (SHA-256 of the normalised value, hex), for the
/// signed `tracklayer.forget` event: internal systems can match them without TrackLayer sending
/// the values.
pub fn shared_hashes(ids: &[Identifier]) -> Vec<(IdKind, String)> {
    let mut seen = BTreeSet::new();
    ids.iter()
        .filter(|id| seen.insert((id.0, id.1.clone())))
        .map(|(kind, value)| (*kind, hex::encode(Sha256::digest(value.as_bytes()))))
        .collect()
}

/// A message's identifiers as a forget reads them: what its pipeline observed, or for an
/// invalid message the ids it still names.
pub fn message_identifiers(
    observed: Option<&[Identifier]>,
    user_id: Option<&str>,
    anonymous_id: Option<&str>,
) -> Vec<Identifier> {
    let mut out: Vec<Identifier> = observed.map(<[_]>::to_vec).unwrap_or_default();
    if let Some(u) = user_id {
        out.push((IdKind::UserId, u.to_string()));
    }
    if let Some(a) = anonymous_id {
        out.push((IdKind::AnonymousId, a.to_string()));
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_identifiers_as_the_graph_keeps_them() {
        let request = ForgetRequest {
            email: Some("  Ann@Example.COM ".into()),
            phone: Some("06 1234 5678".into()),
            ..Default::default()
        };
        let ids = request.identifiers(Some("NL")).unwrap();
        assert_eq!(ids[0], (IdKind::Email, "ann@example.com".into()));
        assert_eq!(ids[1], (IdKind::Phone, "0612345678".into()));
        assert_eq!(ids[2], (IdKind::Phone, "+31612345678".into()));

        let gmail = ForgetRequest {
            email: Some("Jane.Doe+x@googlemail.com".into()),
            ..Default::default()
        };
        assert_eq!(
            gmail.identifiers(None).unwrap(),
            vec![
                (IdKind::Email, "jane.doe+x@googlemail.com".into()),
                (IdKind::Email, "janedoe@gmail.com".into())
            ]
        );
    }

    #[test]
    fn identifiers_that_name_nobody_are_refused_with_the_field() {
        let refused = |request: ForgetRequest, country: Option<&str>| {
            request.identifiers(country).unwrap_err().to_string()
        };
        for email in ["+", "@gmail.com", "+x@gmail.com"] {
            let why = refused(
                ForgetRequest {
                    email: Some(email.into()),
                    ..Default::default()
                },
                Some("NL"),
            );
            assert!(why.starts_with("email: "), "{why}");
        }
        let why = refused(
            ForgetRequest {
                phone: Some("0".into()),
                ..Default::default()
            },
            Some("NL"),
        );
        assert!(
            why.starts_with("phone: `0` has fewer than 6 digits"),
            "{why}"
        );
        let why = refused(
            ForgetRequest {
                phone: Some("06 1234 5678".into()),
                ..Default::default()
            },
            None,
        );
        assert!(
            why.starts_with("phone: `06 1234 5678` has no country code"),
            "{why}"
        );
    }

    #[test]
    fn bad_requests_say_which_field_and_why() {
        assert_eq!(
            ForgetRequest::default().identifiers(None),
            Err(ForgetError::NoIdentifier)
        );
        let bad = ForgetRequest {
            email: Some("not-an-email".into()),
            ..Default::default()
        };
        let err = bad.identifiers(None).unwrap_err().to_string();
        assert!(err.starts_with("email: "), "{err}");
        let empty = ForgetRequest {
            user_id: Some(" ".into()),
            ..Default::default()
        };
        assert_eq!(
            empty.identifiers(None).unwrap_err().to_string(),
            "user_id: empty"
        );
    }

    #[test]
    fn identifiers_of_two_people_are_refused() {
        let a = (IdKind::Email, "a@x.io".to_string());
        let b = (IdKind::UserId, "u2".to_string());
        let owners = BTreeMap::from([(a.clone(), 1), (b.clone(), 2)]);
        assert!(matches!(
            whose(&[a.clone(), b], &owners),
            Err(ForgetError::DifferentPeople(_))
        ));
        assert_eq!(
            whose(std::slice::from_ref(&a), &owners),
            Ok(Person::Known { profile_id: 1 })
        );
        let unknown = (IdKind::Email, "nobody@x.io".to_string());
        assert_eq!(whose(&[unknown], &owners), Ok(Person::Unknown));
    }

    #[test]
    fn a_forget_covers_everyone_earlier_forgets_named_with_any_of_its_ids() {
        let id = |kind, hash: u8| HashedId {
            kind,
            hash: vec![hash],
        };
        let (email, user, anon, phone, stranger) = (
            id(IdKind::Email, 1),
            id(IdKind::UserId, 2),
            id(IdKind::AnonymousId, 3),
            id(IdKind::Phone, 4),
            id(IdKind::UserId, 9),
        );
        // First forgotten by email (with the userId it reached), later by the userId (with a
        // phone the person had given since).
        let audits = vec![
            vec![email.clone(), user.clone()],
            vec![stranger.clone()],
            vec![user.clone(), anon.clone(), phone.clone()],
        ];
        let named = BTreeSet::from([email.clone()]);
        assert_eq!(
            covered(&named, &audits),
            BTreeSet::from([email, user, anon, phone.clone()])
        );
        let fresh = BTreeSet::from([id(IdKind::Email, 7)]);
        assert_eq!(covered(&fresh, &audits), fresh);

        let json = HashedId::list_json(&BTreeSet::from([phone.clone()]));
        assert_eq!(json, r#"[{"kind":"phone","hash":"04"}]"#);
        assert_eq!(HashedId::parse_list(&json), vec![phone]);
        assert_eq!(HashedId::parse_list("not json"), Vec::new());
    }

    #[test]
    fn suppression_hashes_depend_on_the_key_kind_and_value() {
        let email = (IdKind::Email, "a@x.io".to_string());
        let h = suppression_hash(b"k1", &email);
        assert_eq!(h.len(), 32);
        assert_eq!(h, suppression_hash(b"k1", &email));
        assert_ne!(h, suppression_hash(b"k2", &email));
        assert_ne!(
            h,
            suppression_hash(b"k1", &(IdKind::UserId, "a@x.io".into()))
        );
        assert!(!h.windows(6).any(|w| w == b"a@x.io"));
    }
}
