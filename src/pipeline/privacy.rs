//! Forgetting a person, as pure functions: which identifiers a request names (normalised as the
//! identity graph stores them), whose they are, and how a forgotten identifier is remembered —
//! only as a keyed hash, so the suppression list itself holds no personal data.

use std::collections::{BTreeMap, BTreeSet};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::identity::{normalise_email, normalise_phone, IdKind, Identifier};

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
    /// The identifiers as the graph stores them. A phone is looked up as written (digits and
    /// a leading +) and, where a default country is set, in E.164 too.
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
            let email = normalise_email(&v).ok_or_else(|| ForgetError::Unreadable {
                field: "email",
                why: format!("`{v}` is not an email address"),
            })?;
            out.push((IdKind::Email, email));
        }
        if let Some(v) = text("phone", &self.phone)? {
            let phone = normalise_phone(&v).ok_or_else(|| ForgetError::Unreadable {
                field: "phone",
                why: format!("`{v}` has fewer than 6 digits"),
            })?;
            let e164 = default_country
                .and_then(super::phone::region)
                .and_then(|region| super::phone::to_e164(&v, Some(region)).ok());
            out.push((IdKind::Phone, phone.clone()));
            if let Some(e164) = e164.filter(|e| *e != phone) {
                out.push((IdKind::Phone, e164));
            }
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
