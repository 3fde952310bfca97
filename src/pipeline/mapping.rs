//! The versioned mapping table: Segment event name → canonical name → per-destination names,
//! with required properties, consent categories and the dedup key of each row.
//!
//! Matching is exact and case-sensitive, as Segment's names are. A near miss is *unmapped*, with a
//! suggestion, because silently routing `order completed` as a purchase would hide the drift the
//! team needs to fix at the source.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which property keys an event's identity rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DedupKey {
    /// One event per order: `event_id` derives from the canonical name and `order_id`, so the
    /// same order sent twice (under two messageIds) collapses. Falls back to the messageId when
    /// an event carries no order_id.
    OrderId,
    /// One event per Segment message.
    MessageId,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MappingRow {
    pub segment: String,
    pub canonical: String,
    /// Name per destination kind (`meta_capi`, `tiktok`, `klaviyo`, `google_ads`, …) or name.
    pub destinations: BTreeMap<String, String>,
    /// Canonical property names that must be present for the event to be deliverable.
    pub required: Vec<String>,
    /// Consent categories this event needs in addition to the destination's own.
    pub consent: Vec<String>,
    pub dedup_key: DedupKey,
}

impl MappingRow {
    /// The name a destination uses: by destination name first, then by kind, then canonical.
    pub fn destination_name(&self, destination: &str, kind: &str) -> &str {
        self.destinations
            .get(destination)
            .or_else(|| self.destinations.get(kind))
            .map(String::as_str)
            .unwrap_or(&self.canonical)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MappingTable {
    pub version: u32,
    pub rows: Vec<MappingRow>,
    /// ISO 4217 currency for events that send none (Segment assumes USD).
    pub default_currency: String,
    /// Raw message paths destinations read beyond the canonical fields (GA4's `client_id_path`),
    /// captured into the canonical event by the transform. Set from the destinations, not
    /// written in `[mapping]`, so a reloaded table keeps the running one's (SharedMapping).
    #[serde(skip)]
    pub capture: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key}: {reason}")]
pub struct MappingError {
    pub key: String,
    pub reason: String,
}

fn mapping_error(key: impl Into<String>, reason: impl Into<String>) -> MappingError {
    MappingError {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    version: Option<u32>,
    default_currency: Option<String>,
    /// Load the rows from another TOML file (relative to the config); it is watched for changes.
    file: Option<String>,
    #[serde(default)]
    events: Vec<RawRow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    segment: String,
    canonical: String,
    #[serde(default)]
    destinations: BTreeMap<String, String>,
    required: Option<Vec<String>>,
    #[serde(default)]
    consent: Vec<String>,
    dedup_key: Option<DedupKey>,
}

/// Rows from the brief's table plus `Order Refunded → refund`, with the destination names from
/// reference/destination-apis.md §0.
/// The canonical names of the default table.
const KNOWN_CANONICAL: [&str; 8] = [
    "view_content",
    "add_to_cart",
    "begin_checkout",
    "purchase",
    "lead",
    "sign_up",
    "search",
    "refund",
];

pub fn default_rows() -> Vec<MappingRow> {
    let row = |segment: &str,
               canonical: &str,
               names: &[(&str, &str)],
               required: &[&str],
               dedup_key: DedupKey| MappingRow {
        segment: segment.into(),
        canonical: canonical.into(),
        destinations: names
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        required: required.iter().map(|s| s.to_string()).collect(),
        consent: Vec::new(),
        dedup_key,
    };
    use DedupKey::{MessageId, OrderId};
    vec![
        row(
            "Product Viewed",
            "view_content",
            &[
                ("meta_capi", "ViewContent"),
                ("tiktok", "ViewContent"),
                ("klaviyo", "Viewed Product"),
                ("ga4", "view_item"),
            ],
            &[],
            MessageId,
        ),
        row(
            "Product Added",
            "add_to_cart",
            &[
                ("meta_capi", "AddToCart"),
                ("tiktok", "AddToCart"),
                ("klaviyo", "Added to Cart"),
                ("ga4", "add_to_cart"),
            ],
            &[],
            MessageId,
        ),
        row(
            "Checkout Started",
            "begin_checkout",
            &[
                ("meta_capi", "InitiateCheckout"),
                ("tiktok", "InitiateCheckout"),
                ("klaviyo", "Started Checkout"),
                ("ga4", "begin_checkout"),
            ],
            &[],
            MessageId,
        ),
        row(
            "Order Completed",
            "purchase",
            &[
                ("meta_capi", "Purchase"),
                ("tiktok", "Purchase"),
                ("klaviyo", "Placed Order"),
                ("ga4", "purchase"),
            ],
            &["order_id", "value", "currency"],
            OrderId,
        ),
        row(
            "Lead Submitted",
            "lead",
            &[
                ("meta_capi", "Lead"),
                ("tiktok", "Lead"),
                ("klaviyo", "Submitted Lead"),
                ("ga4", "generate_lead"),
            ],
            &[],
            MessageId,
        ),
        row(
            "Signed Up",
            "sign_up",
            &[
                ("meta_capi", "CompleteRegistration"),
                ("tiktok", "CompleteRegistration"),
                ("klaviyo", "Signed Up"),
                ("ga4", "sign_up"),
            ],
            &[],
            MessageId,
        ),
        row(
            "Products Searched",
            "search",
            &[
                ("meta_capi", "Search"),
                ("tiktok", "Search"),
                ("klaviyo", "Searched Site"),
                ("ga4", "search"),
            ],
            &[],
            MessageId,
        ),
        row(
            "Order Refunded",
            "refund",
            // Meta and TikTok take no refunds (routing says so); Google restates the purchase.
            &[("klaviyo", "Refunded Order"), ("ga4", "refund")],
            &["order_id"],
            OrderId,
        ),
    ]
}

impl Default for MappingTable {
    fn default() -> Self {
        MappingTable {
            version: 1,
            rows: default_rows(),
            default_currency: "USD".into(),
            capture: Vec::new(),
        }
    }
}

/// Where the rows of a `[mapping]` section come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingSource {
    /// The brief's default table.
    Default,
    /// Inline `[[mapping.events]]` in the config file.
    Inline,
    /// `[mapping] file = "…"`: a separate file, reloaded when it changes.
    File(String),
}

impl MappingTable {
    /// Parse a `[mapping]` table (from the config, or a mapping file with the same keys).
    pub fn from_toml(value: &toml::Value) -> Result<(MappingTable, MappingSource), MappingError> {
        let raw: RawTable = value
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| mapping_error("mapping", e.message().to_string()))?;
        let source = match (&raw.file, raw.events.is_empty()) {
            (Some(file), true) => MappingSource::File(file.clone()),
            (Some(_), false) => {
                return Err(mapping_error(
                    "mapping.file",
                    "give the rows either inline ([[mapping.events]]) or in a file, not both",
                ))
            }
            (None, true) => MappingSource::Default,
            (None, false) => MappingSource::Inline,
        };
        let version = raw.version.unwrap_or(1);
        let default_currency = match raw.default_currency {
            Some(code) => {
                let upper = code.trim().to_ascii_uppercase();
                if !super::currency::is_iso4217(&upper) {
                    return Err(mapping_error(
                        "mapping.default_currency",
                        format!("`{code}` is not an ISO 4217 currency code"),
                    ));
                }
                upper
            }
            None => "USD".into(),
        };
        let rows = match source {
            MappingSource::Default => default_rows(),
            _ => validate_rows(raw.events)?,
        };
        Ok((
            MappingTable {
                version,
                rows,
                default_currency,
                capture: Vec::new(),
            },
            source,
        ))
    }

    /// Parse a mapping file: the same keys as `[mapping]`, at the top level.
    pub fn from_file_text(text: &str) -> Result<MappingTable, MappingError> {
        let value: toml::Value =
            toml::from_str(text).map_err(|e| mapping_error("mapping file", e.to_string()))?;
        let value = value.get("mapping").cloned().unwrap_or(value);
        let (table, source) = Self::from_toml(&value)?;
        if matches!(source, MappingSource::File(_)) {
            return Err(mapping_error(
                "mapping.file",
                "a mapping file cannot name another file",
            ));
        }
        Ok(table)
    }

    pub fn find(&self, segment_event: &str) -> Option<&MappingRow> {
        self.rows.iter().find(|row| row.segment == segment_event)
    }

    pub fn find_canonical(&self, canonical: &str) -> Option<&MappingRow> {
        self.rows.iter().find(|row| row.canonical == canonical)
    }

    /// Whether some row of this table maps to `canonical`.
    pub fn is_canonical(&self, canonical: &str) -> bool {
        self.find_canonical(canonical).is_some()
    }

    /// The canonical names this table produces.
    pub fn canonical_names(&self) -> impl Iterator<Item = &str> {
        self.rows.iter().map(|row| row.canonical.as_str())
    }

    /// The canonical names TrackLayer has destination names and defaults for.
    pub fn known_canonical_names() -> Vec<&'static str> {
        KNOWN_CANONICAL.to_vec()
    }

    pub fn is_known_canonical(name: &str) -> bool {
        KNOWN_CANONICAL.contains(&name)
    }

    /// Why a name is unmapped, and the row it most likely meant.
    pub fn suggest(&self, segment_event: &str) -> Option<Suggestion> {
        suggest(self, segment_event)
    }
}

fn validate_rows(rows: Vec<RawRow>) -> Result<Vec<MappingRow>, MappingError> {
    let mut out: Vec<MappingRow> = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let key = format!("mapping.events[{i}]");
        if row.segment.trim().is_empty() {
            return Err(mapping_error(format!("{key}.segment"), "must not be empty"));
        }
        if row.segment != row.segment.trim() {
            return Err(mapping_error(
                format!("{key}.segment"),
                format!(
                    "`{}` has leading or trailing spaces; names match exactly",
                    row.segment
                ),
            ));
        }
        let canonical_ok = !row.canonical.is_empty()
            && row
                .canonical
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !canonical_ok {
            return Err(mapping_error(
                format!("{key}.canonical"),
                format!("`{}` must be snake_case (a-z, 0-9, _)", row.canonical),
            ));
        }
        if out.iter().any(|r| r.segment == row.segment) {
            return Err(mapping_error(
                format!("{key}.segment"),
                format!("`{}` is mapped twice", row.segment),
            ));
        }
        let defaults = default_rows();
        let default = defaults.iter().find(|d| d.canonical == row.canonical);
        let mut destinations = default.map(|d| d.destinations.clone()).unwrap_or_default();
        destinations.extend(row.destinations);
        out.push(MappingRow {
            segment: row.segment,
            destinations,
            required: row
                .required
                .or_else(|| default.map(|d| d.required.clone()))
                .unwrap_or_default(),
            consent: row.consent,
            dedup_key: row
                .dedup_key
                .or_else(|| default.map(|d| d.dedup_key))
                .unwrap_or(DedupKey::MessageId),
            canonical: row.canonical,
        });
    }
    Ok(out)
}

/// A likely intended mapping row for an unmapped name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suggestion {
    pub segment: String,
    pub why: String,
}

/// E-commerce Spec v1 names and common aliases, mapped to the v2 name (segment-and-peers §2.4).
const V1_ALIASES: [(&str, &str); 8] = [
    ("Viewed Product", "Product Viewed"),
    ("Added Product", "Product Added"),
    ("Completed Order", "Order Completed"),
    ("Started Order", "Checkout Started"),
    ("Started Checkout", "Checkout Started"),
    ("Searched Products", "Products Searched"),
    ("Refunded Order", "Order Refunded"),
    ("Signed up", "Signed Up"),
];

fn squash(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Levenshtein distance, bounded: returns `None` when it exceeds `limit`.
fn edit_distance(a: &str, b: &str, limit: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > limit {
        return None;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    let distance = previous[b.len()];
    (distance <= limit).then_some(distance)
}

fn suggest(table: &MappingTable, name: &str) -> Option<Suggestion> {
    let mapped = |segment: &str| table.find(segment).is_some();
    for (alias, v2) in V1_ALIASES {
        if name == alias && mapped(v2) {
            return Some(Suggestion {
                segment: v2.into(),
                why: format!("`{alias}` is the e-commerce Spec v1 name of `{v2}`"),
            });
        }
    }
    for row in &table.rows {
        if row.segment.eq_ignore_ascii_case(name) {
            return Some(Suggestion {
                segment: row.segment.clone(),
                why: "differs only in letter case; Segment event names are case-sensitive".into(),
            });
        }
    }
    let squashed = squash(name);
    for row in &table.rows {
        if !squashed.is_empty() && squash(&row.segment) == squashed {
            return Some(Suggestion {
                segment: row.segment.clone(),
                why: "differs only in spacing, punctuation or case".into(),
            });
        }
    }
    table
        .rows
        .iter()
        .filter_map(|row| edit_distance(name, &row.segment, 2).map(|d| (d, row)))
        .min_by_key(|(d, _)| *d)
        .map(|(d, row)| Suggestion {
            segment: row.segment.clone(),
            why: format!("{d} character{} away", if d == 1 { "" } else { "s" }),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_has_the_brief_rows() {
        let table = MappingTable::default();
        let pairs: Vec<(&str, &str)> = table
            .rows
            .iter()
            .map(|r| (r.segment.as_str(), r.canonical.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("Product Viewed", "view_content"),
                ("Product Added", "add_to_cart"),
                ("Checkout Started", "begin_checkout"),
                ("Order Completed", "purchase"),
                ("Lead Submitted", "lead"),
                ("Signed Up", "sign_up"),
                ("Products Searched", "search"),
                ("Order Refunded", "refund"),
            ]
        );
        let purchase = table.find("Order Completed").unwrap();
        assert_eq!(purchase.destination_name("meta", "meta_capi"), "Purchase");
        assert_eq!(purchase.destination_name("wh", "warehouse"), "purchase");
    }

    #[test]
    fn near_misses_get_suggestions() {
        let table = MappingTable::default();
        let s = |name: &str| table.suggest(name).map(|s| (s.segment, s.why));
        assert_eq!(s("order completed").unwrap().0, "Order Completed");
        assert!(s("order completed").unwrap().1.contains("case"));
        assert_eq!(s("Order_Completed").unwrap().0, "Order Completed");
        assert_eq!(
            s("Completed Order").unwrap().1,
            "`Completed Order` is the e-commerce Spec v1 name of `Order Completed`"
        );
        assert_eq!(
            s("Order Complete").unwrap(),
            ("Order Completed".into(), "1 character away".into())
        );
        assert_eq!(s("Prodct Addd").unwrap().0, "Product Added");
        assert_eq!(s("Newsletter Opened"), None);
    }

    #[test]
    fn parses_rows_and_fills_defaults() {
        let value: toml::Value = toml::from_str(
            r#"
version = 3
default_currency = "eur"
[[events]]
segment = "Order Completed"
canonical = "purchase"
destinations = { tiktok = "CompletePayment" }
[[events]]
segment = "Trial Started"
canonical = "start_trial"
consent = ["Advertising"]
"#,
        )
        .unwrap();
        let (table, source) = MappingTable::from_toml(&value).unwrap();
        assert_eq!(source, MappingSource::Inline);
        assert_eq!(table.version, 3);
        assert_eq!(table.default_currency, "EUR");
        let purchase = table.find("Order Completed").unwrap();
        assert_eq!(purchase.destination_name("t", "tiktok"), "CompletePayment");
        assert_eq!(purchase.destination_name("m", "meta_capi"), "Purchase");
        assert_eq!(purchase.dedup_key, DedupKey::OrderId);
        assert_eq!(purchase.required, ["order_id", "value", "currency"]);
        let trial = table.find("Trial Started").unwrap();
        assert_eq!(trial.dedup_key, DedupKey::MessageId);
        assert_eq!(trial.consent, ["Advertising"]);
        assert!(
            table.find("Product Viewed").is_none(),
            "inline rows replace the defaults"
        );
    }

    #[test]
    fn rejects_bad_rows_with_their_key() {
        let parse = |text: &str| {
            let value: toml::Value = toml::from_str(text).unwrap();
            MappingTable::from_toml(&value).unwrap_err().to_string()
        };
        assert_eq!(
            parse("[[events]]\nsegment = \"A\"\ncanonical = \"Purchase\""),
            "mapping.events[0].canonical: `Purchase` must be snake_case (a-z, 0-9, _)"
        );
        assert_eq!(
            parse("[[events]]\nsegment = \"A\"\ncanonical = \"a\"\n[[events]]\nsegment = \"A\"\ncanonical = \"b\""),
            "mapping.events[1].segment: `A` is mapped twice"
        );
        assert_eq!(
            parse("default_currency = \"EURO\""),
            "mapping.default_currency: `EURO` is not an ISO 4217 currency code"
        );
    }
}
