//! Normalisation and SHA-256 hashing of identifiers, per platform rules
//! (reference/destination-apis.md §1.4, §2.3, §4.2). Each platform normalises differently
//! (Meta keeps gmail dots; Google drops them), so each rule is its own function.

use sha2::{Digest, Sha256};

pub fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// A value that already is a lowercase SHA-256 hex digest is passed through, as the platform
/// SDKs do, so pre-hashed identifiers from the source are not hashed twice.
pub fn is_sha256_hex(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hash_normalised(normalised: Option<String>) -> Option<String> {
    normalised
        .filter(|v| !v.is_empty())
        .map(|v| if is_sha256_hex(&v) { v } else { sha256_hex(&v) })
}

/// Phone digits with the country code, no `+` (Meta's `ph` form): "+1 (415) 555-0123" →
/// "14155550123". The pipeline has already put event and profile phones in E.164; a number
/// without a country code is read in `country`, and left out when there is none.
pub fn phone_digits_with_country(phone: &str, country: Option<&str>) -> Option<String> {
    phone_e164(phone, country).map(|e164| e164.trim_start_matches('+').to_string())
}

/// E.164 (`+14155550123`), as Google, TikTok and Klaviyo want it.
pub fn phone_e164(phone: &str, country: Option<&str>) -> Option<String> {
    let region = country.and_then(crate::pipeline::phone::region);
    crate::pipeline::phone::to_e164(phone, region).ok()
}

const US_STATES: [(&str, &str); 51] = [
    ("alabama", "al"),
    ("alaska", "ak"),
    ("arizona", "az"),
    ("arkansas", "ar"),
    ("california", "ca"),
    ("colorado", "co"),
    ("connecticut", "ct"),
    ("delaware", "de"),
    ("districtofcolumbia", "dc"),
    ("florida", "fl"),
    ("georgia", "ga"),
    ("hawaii", "hi"),
    ("idaho", "id"),
    ("illinois", "il"),
    ("indiana", "in"),
    ("iowa", "ia"),
    ("kansas", "ks"),
    ("kentucky", "ky"),
    ("louisiana", "la"),
    ("maine", "me"),
    ("maryland", "md"),
    ("massachusetts", "ma"),
    ("michigan", "mi"),
    ("minnesota", "mn"),
    ("mississippi", "ms"),
    ("missouri", "mo"),
    ("montana", "mt"),
    ("nebraska", "ne"),
    ("nevada", "nv"),
    ("newhampshire", "nh"),
    ("newjersey", "nj"),
    ("newmexico", "nm"),
    ("newyork", "ny"),
    ("northcarolina", "nc"),
    ("northdakota", "nd"),
    ("ohio", "oh"),
    ("oklahoma", "ok"),
    ("oregon", "or"),
    ("pennsylvania", "pa"),
    ("rhodeisland", "ri"),
    ("southcarolina", "sc"),
    ("southdakota", "sd"),
    ("tennessee", "tn"),
    ("texas", "tx"),
    ("utah", "ut"),
    ("vermont", "vt"),
    ("virginia", "va"),
    ("washington", "wa"),
    ("westvirginia", "wv"),
    ("wisconsin", "wi"),
    ("wyoming", "wy"),
];

const COUNTRY_NAMES: [(&str, &str); 16] = [
    ("unitedstates", "us"),
    ("unitedstatesofamerica", "us"),
    ("usa", "us"),
    ("unitedkingdom", "gb"),
    ("greatbritain", "gb"),
    ("uk", "gb"),
    ("england", "gb"),
    ("netherlands", "nl"),
    ("thenetherlands", "nl"),
    ("germany", "de"),
    ("deutschland", "de"),
    ("france", "fr"),
    ("canada", "ca"),
    ("spain", "es"),
    ("italy", "it"),
    ("australia", "au"),
];

fn letters_lower(value: &str) -> String {
    value
        .chars()
        .filter(|c| c.is_alphabetic())
        .flat_map(char::to_lowercase)
        .collect()
}

/// ISO 3166-1 alpha-2, lowercase: "US" → "us", "United States" → "us".
pub fn country_code(value: &str) -> String {
    let squashed = letters_lower(value);
    COUNTRY_NAMES
        .iter()
        .find(|(name, _)| *name == squashed)
        .map(|(_, code)| code.to_string())
        .unwrap_or(squashed)
}

pub mod meta {
    //! Meta CAPI `user_data` (§1.4): trim + lowercase everywhere; no gmail dot rule.
    use super::*;

    pub fn email(value: &str) -> Option<String> {
        hash_normalised(Some(value.trim().to_lowercase()))
    }
    pub fn phone(value: &str, country: Option<&str>) -> Option<String> {
        hash_normalised(phone_digits_with_country(value, country))
    }
    /// fn / ln: lowercase, no punctuation (UTF-8 letters are kept).
    pub fn name(value: &str) -> Option<String> {
        hash_normalised(Some(letters_lower(value)))
    }
    /// ct: lowercase, letters only ("San Francisco" → "sanfrancisco").
    pub fn city(value: &str) -> Option<String> {
        hash_normalised(Some(letters_lower(value)))
    }
    /// st: two-letter code for US states ("California" → "ca").
    pub fn state(value: &str) -> Option<String> {
        let letters = letters_lower(value);
        let code = US_STATES
            .iter()
            .find(|(name, _)| *name == letters)
            .map(|(_, code)| code.to_string())
            .unwrap_or(letters);
        hash_normalised(Some(code))
    }
    /// zp: lowercase, no spaces or dash; US: the first five digits.
    pub fn zip(value: &str, country: Option<&str>) -> Option<String> {
        let cleaned: String = value
            .split('-')
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect();
        let us = country.map(country_code).as_deref() == Some("us")
            || cleaned.chars().all(|c| c.is_ascii_digit());
        let normalised = if us && cleaned.len() > 5 && cleaned.chars().all(|c| c.is_ascii_digit()) {
            cleaned[..5].to_string()
        } else {
            cleaned
        };
        hash_normalised(Some(normalised))
    }
    pub fn country(value: &str) -> Option<String> {
        hash_normalised(Some(country_code(value)))
    }
    /// external_id is hashed (Meta recommends it); trimmed, case kept as the Pixel sends it.
    pub fn external_id(value: &str) -> Option<String> {
        hash_normalised(Some(value.trim().to_string()))
    }
}

pub mod google {
    //! Google Ads enhanced conversions (§2.3): trim, lowercase; for gmail.com and
    //! googlemail.com only, drop dots and any `+suffix` in the local part; phone in E.164.
    use super::*;

    pub fn normalise_email(value: &str) -> String {
        let lower = value.trim().to_lowercase();
        match lower.rsplit_once('@') {
            Some((local, domain)) if domain == "gmail.com" || domain == "googlemail.com" => {
                let local = local.split('+').next().unwrap_or(local).replace('.', "");
                format!("{local}@{domain}")
            }
            _ => lower,
        }
    }
    pub fn email(value: &str) -> Option<String> {
        hash_normalised(Some(normalise_email(value)))
    }
    pub fn phone(value: &str, country: Option<&str>) -> Option<String> {
        hash_normalised(phone_e164(value, country))
    }
    /// givenName / familyName: trimmed, lowercase (Google's address matching).
    pub fn name(value: &str) -> Option<String> {
        hash_normalised(Some(value.trim().to_lowercase()))
    }
}

pub mod tiktok {
    //! TikTok Events API (§4.2): email trim + lowercase; phone E.164 with `+`; external_id
    //! trim + lowercase; all SHA-256.
    use super::*;

    pub fn email(value: &str) -> Option<String> {
        hash_normalised(Some(value.trim().to_lowercase()))
    }
    pub fn phone(value: &str, country: Option<&str>) -> Option<String> {
        hash_normalised(phone_e164(value, country))
    }
    pub fn external_id(value: &str) -> Option<String> {
        hash_normalised(Some(value.trim().to_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // reference/destination-apis.md §8.1 and Meta's own vectors (§1.4).
    #[test]
    fn reference_hashes() {
        assert_eq!(
            meta::email("Jane.Doe@Gmail.com").unwrap(),
            "831f6494ad6be4fcb3a724c3d5fef22d3ceffa3c62ef3a7984e45a0ea177f982"
        );
        assert_eq!(
            google::email("Jane.Doe@Gmail.com").unwrap(),
            "d6117306485ed0e50afab3ac871e98f81699151f30281527d63ff5f233656c69"
        );
        assert_eq!(
            meta::phone("+1 (415) 555-0123", None).unwrap(),
            "413ba75461ab5f99d36820e561ea97e2bd80f9cb586f7ecea6cf4c496518950a"
        );
        assert_eq!(
            google::phone("+1 (415) 555-0123", None).unwrap(),
            "36a2cef4ff9bf7a1abd2a93359136b870393be4106e6c5d19b72ff564f9deca4"
        );
        assert_eq!(
            tiktok::phone("+1 (415) 555-0123", None).unwrap(),
            "36a2cef4ff9bf7a1abd2a93359136b870393be4106e6c5d19b72ff564f9deca4"
        );
        assert_eq!(
            meta::name("Jane").unwrap(),
            "81f8f6dde88365f3928796ec7aa53f72820b06db8664f5fe76a7eb13e24546a2"
        );
        assert_eq!(
            meta::name("Doe").unwrap(),
            "799ef92a11af918e3fb741df42934f3b568ed2d93ac1df74f1b8d41a27932a6f"
        );
        assert_eq!(
            meta::city("San Francisco").unwrap(),
            "1a6bd4d9d79dc0a79b53795c70d3349fa9e38968a3fbefbfe8783efb1d2b6aac"
        );
        assert_eq!(
            meta::state("CA").unwrap(),
            "6959097001d10501ac7d54c0bdb8db61420f658f2922cc26e46d536119a31126"
        );
        assert_eq!(
            meta::zip("94107-1234", Some("US")).unwrap(),
            "c884a209ebe08750a7d13db63bd02233b375bd79786cbe329ab11586cc35dead"
        );
        assert_eq!(
            meta::country("US").unwrap(),
            "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"
        );
        assert_eq!(
            meta::external_id("user_8f3a2c").unwrap(),
            "4a6ce5d967a2104997a36ed2f2c424fc5e7c96f5002349093fff2c39daaefbf2"
        );
        // Meta's documentation vectors.
        assert_eq!(
            meta::email("John_Smith@gmail.com").unwrap(),
            "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
        );
        assert_eq!(
            meta::phone("(650)555-1212", Some("US")).unwrap(),
            "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
        );
        assert_eq!(
            meta::name("Mary").unwrap(),
            "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"
        );
        assert_eq!(
            meta::country("United States").unwrap(),
            "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"
        );
    }

    #[test]
    fn messy_inputs() {
        // Spaces, case and gmail rules.
        assert_eq!(
            meta::email("  JANE.DOE@GMAIL.COM ").unwrap(),
            meta::email("jane.doe@gmail.com").unwrap()
        );
        assert_eq!(
            google::normalise_email("Cloudy.SanFrancisco+shopping@gmail.com"),
            "cloudysanfrancisco@gmail.com"
        );
        assert_eq!(
            google::normalise_email("j.doe+x@googlemail.com"),
            "jdoe@googlemail.com"
        );
        assert_eq!(
            google::normalise_email(" User.Name+NYC@Example.com "),
            "user.name+nyc@example.com"
        );
        // Phones: 00 prefix, national numbers with a known country, trunk zero, junk.
        assert_eq!(
            phone_digits_with_country("0031 6 1234 5678", None).as_deref(),
            Some("31612345678")
        );
        assert_eq!(
            phone_digits_with_country("06-12345678", Some("NL")).as_deref(),
            Some("31612345678")
        );
        // Without a country, a national number is not guessed to be American.
        assert_eq!(phone_e164("(800)555-0100", None), None);
        assert_eq!(
            phone_e164("(800)555-0100", Some("us")).as_deref(),
            Some("+18005550100")
        );
        assert_eq!(
            phone_e164("020 7946 0958", Some("United Kingdom")).as_deref(),
            Some("+442079460958")
        );
        assert_eq!(phone_e164("12", None), None);
        assert_eq!(phone_e164("call me", None), None);
        // Names and places.
        assert_eq!(meta::name(" Valéry ").unwrap(), sha256_hex("valéry"));
        assert_eq!(
            meta::name("O'Brien-Smith").unwrap(),
            sha256_hex("obriensmith")
        );
        assert_eq!(meta::city("New York").unwrap(), sha256_hex("newyork"));
        assert_eq!(meta::state("California").unwrap(), sha256_hex("ca"));
        assert_eq!(
            meta::zip("M1 1AE", Some("GB")).unwrap(),
            sha256_hex("m11ae")
        );
        assert_eq!(meta::country(" us ").unwrap(), sha256_hex("us"));
        // Already hashed values pass through.
        let hashed = sha256_hex("jane.doe@gmail.com");
        assert_eq!(meta::email(&hashed).unwrap(), hashed);
        assert_eq!(meta::email("   "), None);
        assert_eq!(
            tiktok::external_id(" User_8F3A2C ").unwrap(),
            sha256_hex("user_8f3a2c")
        );
    }
}
