//! A list filter as typed in the dashboard: free text (matches any column shown) and field
//! terms (`dest:tiktok status:retry`) that each match one kind of column exactly. Pure: the
//! stores turn it into SQL.

/// A column kind a `field:value` term names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterField {
    Destination,
    Status,
    Event,
    Env,
    Type,
    Http,
    Id,
    Node,
}

/// The field names a filter takes, with their aliases (shown in the dashboard's help).
pub const FILTER_FIELDS: [(&str, FilterField); 12] = [
    ("dest", FilterField::Destination),
    ("destination", FilterField::Destination),
    ("status", FilterField::Status),
    ("outcome", FilterField::Status),
    ("event", FilterField::Event),
    ("env", FilterField::Env),
    ("environment", FilterField::Env),
    ("type", FilterField::Type),
    ("http", FilterField::Http),
    ("id", FilterField::Id),
    ("node", FilterField::Node),
    ("code", FilterField::Http),
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Words that are not field terms, matched anywhere (as one phrase).
    pub free: Option<String>,
    /// Each must match (case-insensitively, exactly) its kind of column.
    pub fields: Vec<(FilterField, String)>,
}

impl ListFilter {
    /// `dest:tiktok status:retry Purchase`: known `field:` prefixes become terms; a term whose
    /// value is not typed yet is left out (the filter narrows as it is typed); anything else,
    /// including unknown prefixes (a messageId may hold a colon), is free text.
    pub fn parse(text: &str) -> ListFilter {
        let mut free = Vec::new();
        let mut fields = Vec::new();
        for word in text.split_whitespace() {
            let term = word.split_once(':').and_then(|(name, value)| {
                let field = FILTER_FIELDS
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))?
                    .1;
                Some((field, value))
            });
            match term {
                Some((_, "")) => {}
                Some((field, value)) => fields.push((field, value.to_string())),
                None => free.push(word),
            }
        }
        ListFilter {
            free: (!free.is_empty()).then(|| free.join(" ")),
            fields,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.free.is_none() && self.fields.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_terms_and_free_text() {
        let f = ListFilter::parse("dest:tiktok status:retry  Purchase");
        assert_eq!(
            f.fields,
            [
                (FilterField::Destination, "tiktok".to_string()),
                (FilterField::Status, "retry".to_string())
            ]
        );
        assert_eq!(f.free.as_deref(), Some("Purchase"));
        // Half typed: `status:` narrows nothing yet.
        assert_eq!(ListFilter::parse("status:"), ListFilter::default());
        assert!(ListFilter::parse("  ").is_empty());
        // An unknown prefix is text: messageIds may hold colons.
        let f = ListFilter::parse("ajs:123 ENV:staging");
        assert_eq!(f.free.as_deref(), Some("ajs:123"));
        assert_eq!(f.fields, [(FilterField::Env, "staging".to_string())]);
    }
}
