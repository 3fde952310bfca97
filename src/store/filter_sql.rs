//! A dashboard list filter as a SQL condition, the same for both stores: which columns each
//! term matches in each list, with the dialect's placeholders and case-insensitive match.

use super::model::filter::{FilterField, ListFilter};
use super::model::views::PagedTable;

/// The delivery attempts with what the attempts list shows and filters on.
pub(crate) const ATTEMPT_JOINS: &str = "delivery_attempts a
    JOIN deliveries d ON d.id = a.delivery_id
    LEFT JOIN delivery_requests r ON r.id = a.request_row
    LEFT JOIN messages m ON m.id = d.message_row";
/// The collisions with both arrivals' messageIds.
pub(crate) const COLLISION_JOINS: &str = "collisions c
    LEFT JOIN messages w ON w.id = c.winner_message_row
    LEFT JOIN messages m ON m.id = c.message_row";

/// A paged table as its page queries read it: the FROM clause, its id column, its filter.
pub(crate) fn paged_from(table: PagedTable) -> (&'static str, &'static str, FilterSource) {
    match table {
        PagedTable::Attempts => (ATTEMPT_JOINS, "a.id", FilterSource::Attempts),
        PagedTable::Collisions => (COLLISION_JOINS, "c.id", FilterSource::Collisions),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// The list being filtered (its table alias and columns as the queries write them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterSource {
    Messages,
    Refusals,
    Attempts,
    Collisions,
}

/// The condition and the text values bound to its placeholders, in order.
pub(crate) struct FilterSql {
    pub clause: String,
    pub values: Vec<String>,
}

fn columns(
    dialect: Dialect,
    source: FilterSource,
    field: Option<FilterField>,
) -> Vec<&'static str> {
    use FilterField::*;
    let pg = dialect == Dialect::Postgres;
    let mut cols: Vec<&'static str> = match (source, field) {
        (FilterSource::Messages, None) => {
            vec![
                "event",
                "message_id",
                "status",
                "outcome",
                "type",
                "environment",
            ]
        }
        (FilterSource::Messages, Some(Status)) => vec!["status", "outcome"],
        (FilterSource::Messages, Some(Event)) => vec!["event"],
        (FilterSource::Messages, Some(Env)) => vec!["environment"],
        (FilterSource::Messages, Some(Type)) => vec!["type"],
        (FilterSource::Messages, Some(Id)) => vec!["message_id"],
        (FilterSource::Refusals, None) => {
            vec!["reason", "reason_code", "'rejected'", "environment_header"]
        }
        (FilterSource::Refusals, Some(Status)) => vec!["'rejected'", "reason_code"],
        (FilterSource::Refusals, Some(Env)) => vec!["environment_header"],
        (FilterSource::Refusals, Some(Event)) => vec!["path"],
        (FilterSource::Attempts, None) => vec![
            "d.destination",
            "a.outcome",
            "d.destination_event",
            "d.event_id",
            "m.message_id",
            "CAST(r.status_code AS TEXT)",
        ],
        (FilterSource::Attempts, Some(Destination)) => vec!["d.destination"],
        (FilterSource::Attempts, Some(Status)) => vec!["a.outcome"],
        (FilterSource::Attempts, Some(Event)) => vec!["d.destination_event"],
        (FilterSource::Attempts, Some(Env)) => vec!["m.environment"],
        (FilterSource::Attempts, Some(Http)) => vec!["CAST(r.status_code AS TEXT)"],
        (FilterSource::Attempts, Some(Id)) => vec!["d.event_id", "m.message_id"],
        (FilterSource::Collisions, None) => {
            vec!["c.kind", "c.event_id", "m.message_id", "w.message_id"]
        }
        // A collision's "status" is its kind (segment_retry, duplicate_order, …).
        (FilterSource::Collisions, Some(Status)) => vec!["c.kind"],
        (FilterSource::Collisions, Some(Id)) => vec!["c.event_id", "m.message_id", "w.message_id"],
        _ => Vec::new(),
    };
    // Only a fleet records which node did what.
    if pg {
        match (source, field) {
            (FilterSource::Messages, None | Some(Node)) => cols.push("node_id"),
            (FilterSource::Attempts, None | Some(Node)) => cols.push("a.node_id"),
            _ => {}
        }
    }
    cols
}

/// `text` matched as typed: `%` and `_` in a messageId are characters, not wildcards.
fn literal(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The condition for `filter` on `source`; placeholders are numbered from `first_param`.
/// `scan_floor`, when given (`id > ?2`), bounds a filtered scan to a window of recent rows.
pub(crate) fn filter_sql(
    dialect: Dialect,
    source: FilterSource,
    filter: &ListFilter,
    first_param: usize,
    scan_floor: Option<&str>,
) -> FilterSql {
    if filter.is_empty() {
        // The floor's placeholder stays in the text (always true): PostgreSQL must see every
        // parameter it is given to know its type.
        return FilterSql {
            clause: scan_floor.map_or("1=1".into(), |floor| format!("({floor} OR 1=1)")),
            values: Vec::new(),
        };
    }
    let (like, mark) = match dialect {
        Dialect::Sqlite => ("LIKE", '?'),
        Dialect::Postgres => ("ILIKE", '$'),
    };
    let mut terms: Vec<String> = scan_floor.map(str::to_string).into_iter().collect();
    let mut values = Vec::new();
    let mut term = |field: Option<FilterField>, value: String| {
        let cols = columns(dialect, source, field);
        if cols.is_empty() {
            // This list has no such column (e.g. a destination on a refused request).
            terms.push("1=0".into());
            return;
        }
        let n = first_param + values.len();
        values.push(value);
        let any: Vec<String> = cols
            .iter()
            .map(|c| format!("{c} {like} {mark}{n} ESCAPE '\\'"))
            .collect();
        terms.push(format!("({})", any.join(" OR ")));
    };
    if let Some(free) = &filter.free {
        term(None, format!("%{}%", literal(free)));
    }
    for (field, value) in &filter.fields {
        term(Some(*field), literal(value));
    }
    FilterSql {
        clause: format!("({})", terms.join(" AND ")),
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_become_conditions_on_their_columns() {
        let f = ListFilter::parse("dest:tiktok status:retry seg_test");
        let sql = filter_sql(
            Dialect::Sqlite,
            FilterSource::Attempts,
            &f,
            4,
            Some("a.id > ?2"),
        );
        assert!(
            sql.clause
                .starts_with("(a.id > ?2 AND (d.destination LIKE ?4 ESCAPE"),
            "{}",
            sql.clause
        );
        assert!(
            sql.clause.contains("m.message_id LIKE ?4"),
            "{}",
            sql.clause
        );
        assert!(
            sql.clause.contains(
                "AND (d.destination LIKE ?5 ESCAPE '\\') AND (a.outcome LIKE ?6 ESCAPE '\\'))"
            ),
            "{}",
            sql.clause
        );
        assert_eq!(sql.values, ["%seg\\_test%", "tiktok", "retry"]);
        // A refused request has no destination: a destination term excludes it.
        let sql = filter_sql(Dialect::Postgres, FilterSource::Refusals, &f, 3, None);
        assert!(sql.clause.contains("1=0"), "{}", sql.clause);
        assert!(sql.clause.contains("reason ILIKE $3"), "{}", sql.clause);
        // No filter, no condition.
        let none = filter_sql(
            Dialect::Sqlite,
            FilterSource::Messages,
            &ListFilter::default(),
            4,
            None,
        );
        assert_eq!((none.clause.as_str(), none.values.len()), ("1=1", 0));
        let floor_only = filter_sql(
            Dialect::Postgres,
            FilterSource::Messages,
            &ListFilter::default(),
            4,
            Some("id > $2"),
        );
        assert_eq!(floor_only.clause, "(id > $2 OR 1=1)");
    }
}
