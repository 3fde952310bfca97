//! A mapping draft to start from, as the TOML a draft file holds: the table in force one
//! version up, with a Segment name the engineer picked (an unmapped one) mapped to the
//! canonical name of the row its suggestion names, or to a name of its own. The engineer edits
//! it from there instead of writing a whole table by hand.

use std::collections::BTreeMap;

use serde::Serialize;

use super::mapping::{DedupKey, MappingTable};

#[derive(Serialize)]
struct DraftFile<'a> {
    mapping: DraftTable<'a>,
}

#[derive(Serialize)]
struct DraftTable<'a> {
    version: u32,
    default_currency: &'a str,
    events: Vec<DraftRow<'a>>,
}

#[derive(Serialize)]
struct DraftRow<'a> {
    segment: &'a str,
    canonical: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    destinations: &'a BTreeMap<String, String>,
    required: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    consent: &'a [String],
    dedup_key: DedupKey,
}

/// What a draft adds to the table it starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    pub segment: String,
    pub canonical: String,
}

/// A canonical name for a Segment name no row resembles: `Newsletter Signed Up` →
/// `newsletter_signed_up`.
fn own_canonical(segment: &str) -> String {
    let mut out = String::new();
    for c in segment.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    let trimmed = out.trim_end_matches('_').to_string();
    if trimmed.is_empty() {
        "custom_event".into()
    } else {
        trimmed
    }
}

/// The draft's text: `table` one version up, plus `segment` (when given and not mapped yet)
/// mapped like the row `like` names (its suggestion), or to a canonical name of its own.
pub fn draft_text(
    table: &MappingTable,
    segment: Option<&str>,
    like: Option<&str>,
) -> (String, Option<Added>) {
    let added = segment
        .filter(|s| table.find(s).is_none())
        .map(|segment| Added {
            segment: segment.to_string(),
            canonical: like
                .and_then(|like| table.find(like))
                .map(|row| row.canonical.clone())
                .unwrap_or_else(|| own_canonical(segment)),
        });
    let template = added
        .as_ref()
        .and_then(|a| table.find_canonical(&a.canonical));
    let no_names = BTreeMap::new();
    let mut events: Vec<DraftRow> = table
        .rows
        .iter()
        .map(|row| DraftRow {
            segment: &row.segment,
            canonical: &row.canonical,
            destinations: &row.destinations,
            required: &row.required,
            consent: &row.consent,
            dedup_key: row.dedup_key,
        })
        .collect();
    if let Some(a) = &added {
        events.push(DraftRow {
            segment: &a.segment,
            canonical: &a.canonical,
            destinations: template.map_or(&no_names, |t| &t.destinations),
            required: template.map_or(&[], |t| &t.required),
            consent: template.map_or(&[], |t| &t.consent),
            dedup_key: template.map_or(DedupKey::MessageId, |t| t.dedup_key),
        });
    }
    let file = DraftFile {
        mapping: DraftTable {
            version: table.version + 1,
            default_currency: &table.default_currency,
            events,
        },
    };
    let mut text = String::from(
        "# A draft of the mapping table: the table in force, one version up.\n\
         # Edit it, preview it (m, then enter, on the dashboard's pane 4, or\n\
         # `tracklayer mapping preview --draft FILE`), then put it in force (a).\n",
    );
    text.push_str(&toml::to_string(&file).unwrap_or_default());
    (text, added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draft_is_the_table_in_force_one_version_up_and_reads_back() {
        let table = MappingTable::default();
        let (text, added) = draft_text(&table, None, None);
        assert_eq!(added, None);
        let draft = MappingTable::from_file_text(&text).unwrap();
        assert_eq!(draft.version, table.version + 1);
        assert_eq!(draft.rows, table.rows);
    }

    #[test]
    fn an_unmapped_name_is_added_like_the_row_it_resembles() {
        let table = MappingTable::default();
        let (text, added) = draft_text(&table, Some("order completed"), Some("Order Completed"));
        assert_eq!(
            added,
            Some(Added {
                segment: "order completed".into(),
                canonical: "purchase".into()
            })
        );
        let draft = MappingTable::from_file_text(&text).unwrap();
        let row = draft.find("order completed").unwrap();
        let like = table.find("Order Completed").unwrap();
        assert_eq!(
            (
                &row.canonical,
                &row.destinations,
                &row.required,
                row.dedup_key
            ),
            (
                &like.canonical,
                &like.destinations,
                &like.required,
                like.dedup_key
            )
        );

        // No resemblance: a canonical name of its own.
        let (text, added) = draft_text(&table, Some("Newsletter Signed-Up!"), None);
        assert_eq!(added.unwrap().canonical, "newsletter_signed_up");
        assert!(MappingTable::from_file_text(&text)
            .unwrap()
            .find("Newsletter Signed-Up!")
            .is_some());
        // Already mapped: nothing added.
        assert_eq!(draft_text(&table, Some("Order Completed"), None).1, None);
    }
}
