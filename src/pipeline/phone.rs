//! Phones to E.164, the one form every platform takes, through libphonenumber's metadata (the
//! `phonenumber` crate). A number written without a country code is read in the person's
//! country when the message or profile names one, else in `[workspace] default_country`; with
//! neither it is not sent as a phone at all: guessing "+1" sent Dutch mobiles to Klaviyo as
//! American numbers.

use std::str::FromStr;

use phonenumber::country::Id as Region;
use serde_json::{Map, Value};

use super::canonical::{CanonicalEvent, Provenance};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneProblem {
    #[error(
        "phone `{0}` has no country code and neither the person's country nor \
         [workspace] default_country says which country it is in; not sent as a phone"
    )]
    NoCountry(String),
    #[error("phone `{0}` is not a valid number ({1}); not sent as a phone")]
    Invalid(String, String),
}

/// The ISO 3166-1 region a country value names: "NL", "nl", "Netherlands", "United States".
pub fn region(country: &str) -> Option<Region> {
    let letters: String = country
        .chars()
        .filter(|c| c.is_alphabetic())
        .flat_map(char::to_uppercase)
        .collect();
    let code = match letters.as_str() {
        "UNITEDSTATES" | "UNITEDSTATESOFAMERICA" | "USA" => "US",
        "UNITEDKINGDOM" | "GREATBRITAIN" | "UK" | "ENGLAND" => "GB",
        "NETHERLANDS" | "THENETHERLANDS" | "HOLLAND" => "NL",
        "GERMANY" | "DEUTSCHLAND" => "DE",
        "FRANCE" => "FR",
        "CANADA" => "CA",
        "SPAIN" | "ESPAÑA" => "ES",
        "ITALY" | "ITALIA" => "IT",
        "AUSTRALIA" => "AU",
        "BELGIUM" | "BELGIË" | "BELGIQUE" => "BE",
        "IRELAND" => "IE",
        other => other,
    };
    Region::from_str(code).ok()
}

/// A phone as typed by a person → E.164 (`+31612345678`). `00` is read as the international
/// prefix; `region` is only used when the number carries no country code.
pub fn to_e164(raw: &str, region: Option<Region>) -> Result<String, PhoneProblem> {
    let trimmed = raw.trim();
    let shown: String = trimmed.chars().take(40).collect();
    let international = trimmed.starts_with('+') || trimmed.starts_with("00");
    let text = match trimmed.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => trimmed.to_string(),
    };
    if !international && region.is_none() {
        return Err(PhoneProblem::NoCountry(shown));
    }
    let parsed = phonenumber::parse(if international { None } else { region }, &text)
        .map_err(|e| PhoneProblem::Invalid(shown.clone(), e.to_string()))?;
    if !phonenumber::is_valid(&parsed) {
        return Err(PhoneProblem::Invalid(
            shown,
            "no such number in its country's numbering plan".into(),
        ));
    }
    Ok(parsed.format().mode(phonenumber::Mode::E164).to_string())
}

/// The region to read a person's phone in: theirs if known, else the workspace default.
fn region_for(country: Option<&str>, default_country: Option<&str>) -> Option<Region> {
    country
        .and_then(region)
        .or_else(|| default_country.and_then(region))
}

/// Put the event's phone in E.164, or take it off with the reason among the event's problems.
pub fn settle_event_phone(event: &mut CanonicalEvent, default_country: Option<&str>) {
    let Some(raw) = event.user.phone.take() else {
        return;
    };
    let region = region_for(event.user.country.as_deref(), default_country);
    match to_e164(&raw, region) {
        Ok(e164) => {
            if e164 != raw.trim() {
                if let Some(provenance) = event.provenance.get_mut("user.phone") {
                    provenance.transform = format!("{} → E.164", provenance.transform);
                } else {
                    event.provenance.insert(
                        "user.phone".into(),
                        Provenance {
                            source: "phone".into(),
                            transform: "→ E.164".into(),
                        },
                    );
                }
            }
            event.user.phone = Some(e164);
        }
        Err(problem) => {
            event.provenance.remove("user.phone");
            event.problems.push(format!("user.phone: {problem}"));
        }
    }
}

/// The same for a profile's traits (what identify deliveries carry): `phone` becomes E.164 or
/// is left out, with the reason returned.
pub fn settle_trait_phone(
    traits: &mut Map<String, Value>,
    default_country: Option<&str>,
) -> Option<String> {
    let raw = traits.get("phone").and_then(Value::as_str)?.to_string();
    let country = traits
        .get("address")
        .and_then(|a| a.get("country"))
        .and_then(Value::as_str)
        .or_else(|| traits.get("country").and_then(Value::as_str));
    match to_e164(&raw, region_for(country, default_country)) {
        Ok(e164) => {
            traits.insert("phone".into(), Value::String(e164));
            None
        }
        Err(problem) => {
            traits.remove("phone");
            Some(format!("traits.phone: {problem}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_numbers_need_a_country() {
        assert_eq!(
            to_e164("0612345678", None),
            Err(PhoneProblem::NoCountry("0612345678".into()))
        );
        assert_eq!(to_e164("0612345678", region("NL")).unwrap(), "+31612345678");
        assert_eq!(
            to_e164("06 12 34 56 78", region("Netherlands")).unwrap(),
            "+31612345678"
        );
        assert_eq!(
            to_e164("(415) 555-0123", region("us")).unwrap(),
            "+14155550123"
        );
    }

    #[test]
    fn an_international_number_ignores_the_region() {
        assert_eq!(
            to_e164("+31 6 1234 5678", region("US")).unwrap(),
            "+31612345678"
        );
        assert_eq!(to_e164("0031612345678", None).unwrap(), "+31612345678");
        assert_eq!(to_e164("+44 20 7946 0958", None).unwrap(), "+442079460958");
    }

    #[test]
    fn invalid_numbers_are_named() {
        let err = to_e164("12", region("NL")).unwrap_err();
        assert!(matches!(err, PhoneProblem::Invalid(..)), "{err}");
        let err = to_e164("+1 000 000 0000", None).unwrap_err();
        assert!(err.to_string().contains("+1 000 000 0000"), "{err}");
    }

    #[test]
    fn traits_phone_is_rewritten_or_left_out() {
        let mut traits = serde_json::json!({"phone": "0612345678", "address": {"country": "NL"}})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(settle_trait_phone(&mut traits, None), None);
        assert_eq!(traits["phone"], "+31612345678");
        let mut traits = serde_json::json!({"phone": "0612345678"})
            .as_object()
            .cloned()
            .unwrap();
        let problem = settle_trait_phone(&mut traits, None).unwrap();
        assert!(problem.contains("default_country"), "{problem}");
        assert!(!traits.contains_key("phone"));
    }
}
