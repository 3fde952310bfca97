//! The one normal form of a person's email and phone: the key the identity graph, the
//! suppression list, a forget's lookup and its search of stored bytes all know a person by.
//! It is not what platforms receive: each payload keeps its platform's own rule (Meta hashes an
//! address as written, lower-cased).
//!
//! - email: trimmed and lower-cased; gmail.com and googlemail.com are one mailbox that ignores
//!   dots and a `+suffix` in the local part, so those are dropped and the domain is gmail.com.
//! - phone: E.164, read in the person's country or `[workspace] default_country` when written
//!   nationally, with `00` for `+` and a `(0)` trunk dropped; a number that cannot be read that
//!   way keeps its digits (and a leading `+`), so it still joins what was written the same way.

use std::collections::BTreeSet;

use super::identity::{IdKind, Identifier};
use super::phone;

/// The mailbox an address reaches, or `None` where it names none (`@gmail.com`, `+@x.io`).
pub fn normal_email(raw: &str) -> Option<String> {
    let lowered = raw.trim().to_lowercase();
    let (local, domain) = lowered.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains(char::is_whitespace) {
        return None;
    }
    if domain == "gmail.com" || domain == "googlemail.com" {
        let before_tag = local.split('+').next().unwrap_or_default();
        let mailbox: String = before_tag.chars().filter(|c| *c != '.').collect();
        return (!mailbox.is_empty()).then(|| format!("{mailbox}@gmail.com"));
    }
    Some(lowered)
}

/// The spelling the graph used before the gmail rule: trimmed and lower-cased only. Suppressions
/// made then were keyed on it, so it is still looked up where it differs.
fn written_email(raw: &str) -> Option<String> {
    let e = raw.trim().to_lowercase();
    (e.contains('@') && e.len() > 2).then_some(e)
}

/// A phone's digits (and a leading `+`): how a number is kept when it cannot be read as E.164,
/// and how the graph kept every phone before E.164 was its key. Fewer than 6 digits is no phone.
fn phone_digits(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 6 {
        return None;
    }
    Some(if trimmed.starts_with('+') {
        format!("+{digits}")
    } else {
        digits
    })
}

/// Whether a phone says which country it is in (`+…` or `00…`).
fn international(raw: &str) -> bool {
    let t = raw.trim();
    t.starts_with('+') || t.starts_with("00")
}

/// An international number written with its national trunk in brackets, `+31 (0)6 …`: the
/// trunk is not dialled from abroad, so it goes.
fn without_trunk(raw: &str) -> String {
    if international(raw) {
        raw.replace("(0)", "")
    } else {
        raw.to_string()
    }
}

/// A phone's key: E.164 when the number can be read (international, or nationally in
/// `country`), else its digits. `None` for fewer than 6 digits.
pub fn normal_phone(raw: &str, country: Option<&str>) -> Option<String> {
    let digits = phone_digits(raw)?;
    let region = country.and_then(phone::region);
    Some(phone::to_e164(&without_trunk(raw), region).unwrap_or(digits))
}

/// Why a forget cannot name a person by this phone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneKeyProblem {
    #[error("`{0}` has fewer than 6 digits")]
    TooShort(String),
    #[error(
        "`{0}` has no country code and [workspace] default_country is not set: write it with its country code (+31…)"
    )]
    NoCountry(String),
}

/// A phone as a forget names it: a national number needs a country to become the key.
pub fn requested_phone(raw: &str, country: Option<&str>) -> Result<String, PhoneKeyProblem> {
    let shown = || raw.trim().chars().take(40).collect::<String>();
    if phone_digits(raw).is_none() {
        return Err(PhoneKeyProblem::TooShort(shown()));
    }
    if !international(raw) && country.and_then(phone::region).is_none() {
        return Err(PhoneKeyProblem::NoCountry(shown()));
    }
    normal_phone(raw, country).ok_or_else(|| PhoneKeyProblem::TooShort(shown()))
}

/// The other spellings of an email or phone that earlier versions keyed the graph and the
/// suppression list on, where they differ from the normal form: a suppression made then still
/// holds for the spelling it was made for.
pub fn earlier_spellings(kind: IdKind, raw: &str, normal: &str) -> Option<Identifier> {
    let earlier = match kind {
        IdKind::Email => written_email(raw),
        IdKind::Phone => phone_digits(raw),
        IdKind::UserId | IdKind::AnonymousId => None,
    }?;
    (earlier != normal).then_some((kind, earlier))
}

/// Whether a raw message spells out one of these emails or phones (normal forms) anywhere, in
/// any spelling that is the same person: every JSON string in it that reads as an address or a
/// phone is put in normal form and compared.
pub fn spells_out(
    raw: &[u8],
    emails: &BTreeSet<String>,
    phones: &BTreeSet<String>,
    country: Option<&str>,
) -> bool {
    json_strings(raw).any(|text| {
        if text.contains('@') {
            !emails.is_empty() && normal_email(&text).is_some_and(|e| emails.contains(&e))
        } else {
            !phones.is_empty()
                && looks_like_phone(&text)
                && normal_phone(&text, country).is_some_and(|p| phones.contains(&p))
        }
    })
}

fn looks_like_phone(text: &str) -> bool {
    text.len() <= 40
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || " +-()./".contains(c))
}

/// The string literals of a JSON text, unescaped where they carry escapes (without parsing the
/// document: a raw message may be invalid JSON, and this runs over every candidate of a walk).
fn json_strings(raw: &[u8]) -> impl Iterator<Item = String> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let start = at + raw.get(at..)?.iter().position(|b| *b == b'"')? + 1;
        let mut end = start;
        let mut escaped = false;
        while let Some(&b) = raw.get(end) {
            if b == b'"' && !escaped {
                break;
            }
            escaped = b == b'\\' && !escaped;
            end += 1;
        }
        at = end + 1;
        let literal = raw.get(start..end.min(raw.len()))?;
        let text = if literal.contains(&b'\\') {
            let quoted = [&b"\""[..], literal, b"\""].concat();
            serde_json::from_slice::<String>(&quoted)
                .unwrap_or_else(|_| String::from_utf8_lossy(literal).into_owned())
        } else {
            String::from_utf8_lossy(literal).into_owned()
        };
        Some(text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_gmail_mailbox_has_one_key() {
        for spelling in [
            "janedoe@gmail.com",
            " Jane.Doe@Gmail.com ",
            "j.a.n.e.d.o.e@gmail.com",
            "jane.doe+shopping@gmail.com",
            "JaneDoe+a+b@googlemail.com",
            "jane.doe@googlemail.com",
        ] {
            assert_eq!(
                normal_email(spelling).as_deref(),
                Some("janedoe@gmail.com"),
                "{spelling}"
            );
        }
        // Other providers keep dots and tags: they may be other mailboxes there.
        assert_eq!(
            normal_email("Jane.Doe+x@Example.com").as_deref(),
            Some("jane.doe+x@example.com")
        );
    }

    #[test]
    fn addresses_that_name_no_mailbox_have_no_key() {
        for nothing in [
            "+",
            "@gmail.com",
            "+tag@gmail.com",
            "...@gmail.com",
            "ann@",
            "@",
            "a b",
        ] {
            assert_eq!(normal_email(nothing), None, "{nothing}");
        }
    }

    #[test]
    fn one_phone_written_many_ways_has_one_key() {
        for spelling in [
            "+31612345678",
            "+31 6 1234 5678",
            "0031 6 12345678",
            "+31 (0)6 1234 5678",
            "0612345678",
            "06-12 34 56 78",
            "(06) 12345678",
        ] {
            assert_eq!(
                normal_phone(spelling, Some("NL")).as_deref(),
                Some("+31612345678"),
                "{spelling}"
            );
        }
        // Without a country, a national number keeps its digits; an international one is read.
        assert_eq!(
            normal_phone("0612345678", None).as_deref(),
            Some("0612345678")
        );
        assert_eq!(
            normal_phone("0031612345678", None).as_deref(),
            Some("+31612345678")
        );
        assert_eq!(normal_phone("0", Some("NL")), None);
        assert_eq!(normal_phone("+", Some("NL")), None);
    }

    #[test]
    fn a_forget_needs_a_country_for_a_national_number() {
        assert_eq!(
            requested_phone("06 1234 5678", None),
            Err(PhoneKeyProblem::NoCountry("06 1234 5678".into()))
        );
        assert_eq!(
            requested_phone("06 1234 5678", Some("NL")).as_deref(),
            Ok("+31612345678")
        );
        assert_eq!(
            requested_phone("+31 6 1234 5678", None).as_deref(),
            Ok("+31612345678")
        );
        assert_eq!(
            requested_phone("0", Some("NL")),
            Err(PhoneKeyProblem::TooShort("0".into()))
        );
    }

    #[test]
    fn earlier_spellings_are_kept_only_where_they_differ() {
        assert_eq!(
            earlier_spellings(IdKind::Email, "Jane.Doe@gmail.com", "janedoe@gmail.com"),
            Some((IdKind::Email, "jane.doe@gmail.com".into()))
        );
        assert_eq!(
            earlier_spellings(IdKind::Email, "ann@x.io", "ann@x.io"),
            None
        );
        assert_eq!(
            earlier_spellings(IdKind::Phone, "06 1234 5678", "+31612345678"),
            Some((IdKind::Phone, "0612345678".into()))
        );
    }

    #[test]
    fn a_raw_message_spells_out_a_person_in_any_of_their_spellings() {
        let emails = BTreeSet::from(["janedoe@gmail.com".to_string()]);
        let phones = BTreeSet::from(["+31612345678".to_string()]);
        let found = |raw: &str| spells_out(raw.as_bytes(), &emails, &phones, Some("NL"));
        assert!(found(
            r#"{"properties":{"note":"J.Doe","contact":"Jane.Doe+promo@GoogleMail.com"}}"#
        ));
        assert!(found(r#"{"x":"06 12 34 56 78"}"#));
        assert!(found(r#"{"x":"jane.doe\u0040gmail.com"}"#));
        assert!(!found(
            r#"{"x":"janedoe@example.com","y":"06 12 34 56 79"}"#
        ));
        assert!(!found(r#"{"revenue":"612345678.5"}"#));
        // Broken JSON is still read as far as it goes.
        assert!(found(r#"{"email":"janedoe@gmail.com"#));
    }
}
