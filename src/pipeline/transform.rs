//! Explicit, data-driven property transforms: Segment properties → canonical properties, each
//! field recording the raw path and transform that produced it.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use super::canonical::{CanonicalContext, CanonicalUser, Provenance, RECEIPT_TIME};
use super::currency::is_iso4217;
use super::mapping::{MappingRow, MappingTable};
use crate::segment::ValidMessage;

/// The result of the transform stage, before identity and dedup.
#[derive(Debug, Clone, PartialEq)]
pub struct Transformed {
    pub properties: Map<String, Value>,
    pub user: CanonicalUser,
    pub context: CanonicalContext,
    pub event_time_ms: i64,
    pub provenance: BTreeMap<String, Provenance>,
    pub missing_required: Vec<String>,
    pub problems: Vec<String>,
}

/// Canonical names whose `id` property means an order (v1 `id`, as Segment's facade reads it).
const ORDER_EVENTS: [&str; 3] = ["purchase", "refund", "begin_checkout"];
/// Product-level events whose properties describe one product.
const PRODUCT_EVENTS: [&str; 2] = ["view_content", "add_to_cart"];
/// Properties copied as they are, when present.
const COPIED: [&str; 9] = [
    "coupon",
    "discount",
    "shipping",
    "tax",
    "subtotal",
    "checkout_id",
    "affiliation",
    "cart_id",
    "content_name",
];
/// Click and browser identifiers read from properties or context (DESIGN §7).
const CLICK_IDS: [&str; 7] = ["gclid", "gbraid", "wbraid", "fbc", "fbp", "ttclid", "ttp"];

struct Builder {
    out: Transformed,
}

impl Builder {
    fn set(
        &mut self,
        key: &str,
        value: Value,
        source: impl Into<String>,
        transform: impl Into<String>,
    ) {
        self.out.properties.insert(key.to_string(), value);
        self.out.provenance.insert(
            format!("properties.{key}"),
            Provenance::new(source, transform),
        );
    }
}

fn non_empty_str(value: Option<&Value>) -> Option<&str> {
    value
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A string or number property as a string (order ids and product ids arrive as either).
fn id_string(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parse a money amount: a number, or a string such as `"39.95"`, `"$39.95"`, `"€1,299.95"`,
/// `"39,95"`. Returns the amount and a note when the input was a string.
pub fn parse_money(value: &Value) -> Result<(f64, Option<String>), String> {
    match value {
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(|f| (f, None))
            .ok_or_else(|| format!("{n} is not a finite number")),
        Value::String(text) => {
            let cleaned: String = text
                .trim()
                .trim_start_matches(['$', '€', '£', '¥'])
                .trim_end_matches(['$', '€', '£', '¥'])
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            // "39,95" is a decimal comma; "1,299.95" uses the comma for thousands.
            let normalised = match (cleaned.matches(',').count(), cleaned.contains('.')) {
                (1, false) if cleaned.rsplit(',').next().is_some_and(|d| d.len() <= 2) => {
                    cleaned.replace(',', ".")
                }
                _ => cleaned.replace(',', ""),
            };
            normalised
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(|f| (f, Some(format!("parsed {text:?}"))))
                .ok_or_else(|| format!("{text:?} is not an amount"))
        }
        other => Err(format!("{other} is not an amount")),
    }
}

fn number(f: f64) -> Value {
    // Amounts are shown to cents; this also removes float noise like 179.89999999999998.
    let rounded = (f * 1_000_000.0).round() / 1_000_000.0;
    Number::from_f64(rounded).map_or(Value::Null, Value::Number)
}

/// Largest money amount taken as real (a billion in any currency): past it the value is a bug
/// or an attack at the source, and no platform should optimise on it.
pub const MAX_AMOUNT: f64 = 1e9;
/// Largest quantity of one item taken as real.
pub const MAX_QUANTITY: u64 = 1_000_000;

/// A money amount within sane bounds, or why not.
fn sane_amount(amount: f64) -> Result<f64, String> {
    if amount.abs() <= MAX_AMOUNT {
        Ok(amount)
    } else {
        Err(format!(
            "{amount} is outside sane bounds (±{MAX_AMOUNT:.0}), a data-quality problem at the source"
        ))
    }
}

/// An item's quantity: a whole number from 1 to [`MAX_QUANTITY`], 1 when absent; anything
/// else is recorded as a problem at `path` and counted as 1.
fn quantity(value: Option<&Value>, problems: &mut Vec<String>, path: &str) -> u64 {
    let Some(value) = value else { return 1 };
    let read = match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= MAX_QUANTITY as f64)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match read {
        Some(q) if (1..=MAX_QUANTITY).contains(&q) => q,
        _ => {
            problems.push(format!(
                "{path}.quantity: {value} is not a quantity from 1 to {MAX_QUANTITY}; counted as 1"
            ));
            1
        }
    }
}

/// One product object (v2 `product_id`, v1 `id`) → a canonical item.
fn item(
    product: &Map<String, Value>,
    problems: &mut Vec<String>,
    path: &str,
) -> Map<String, Value> {
    let mut item = Map::new();
    let item_id = id_string(product.get("product_id"))
        .or_else(|| id_string(product.get("productId")))
        .or_else(|| id_string(product.get("id")))
        .or_else(|| id_string(product.get("sku")));
    if let Some(id) = item_id {
        item.insert("item_id".into(), Value::String(id));
    }
    if let Some(sku) = id_string(product.get("sku")) {
        item.insert("sku".into(), Value::String(sku));
    }
    if let Some(name) = non_empty_str(product.get("name")) {
        item.insert("name".into(), Value::String(name.into()));
    }
    if let Some(category) = non_empty_str(product.get("category")) {
        item.insert("category".into(), Value::String(category.into()));
    }
    if let Some(price) = product.get("price") {
        match parse_money(price).and_then(|(p, _)| sane_amount(p)) {
            Ok(p) => {
                item.insert("price".into(), number(p));
            }
            Err(e) => problems.push(format!("{path}.price: {e}; left out")),
        }
    }
    let qty = quantity(product.get("quantity"), problems, path);
    item.insert("quantity".into(), Value::from(qty));
    item
}

/// Read `key` from the query string of a URL.
fn query_param(url: &str, key: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    parsed
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// The event time: `timestamp`, else `originalTimestamp`, else `receivedAt`, else the moment
/// TrackLayer received it. Returns the time, the field it came from, and what could not be read
/// on the way (a time is never silently replaced: each problem says which field and why).
pub fn event_time(
    body: &Map<String, Value>,
    received_at_ms: i64,
) -> (i64, &'static str, Vec<String>) {
    let mut problems = Vec::new();
    for field in ["timestamp", "originalTimestamp", "receivedAt"] {
        match crate::segment::time::field(body, field) {
            Ok(Some((ms, reading))) => {
                if reading == crate::segment::time::Reading::AssumedUtc {
                    problems.push(format!("{field} has no time zone; read as UTC"));
                }
                return (ms, field, problems);
            }
            Ok(None) => {}
            Err(crate::segment::time::TimeProblem(why)) => {
                problems.push(format!("{why}; not used for the event time"));
            }
        }
    }
    (received_at_ms, RECEIPT_TIME, problems)
}

fn traits_of(body: &Map<String, Value>) -> Option<&Map<String, Value>> {
    body.get("traits").and_then(Value::as_object)
}

fn context_of(body: &Map<String, Value>) -> Option<&Map<String, Value>> {
    body.get("context").and_then(Value::as_object)
}

/// A user field from the message: identify `traits`, else `context.traits`, else `properties`
/// (snake_case and camelCase, as Segment allows both). Returns value and raw path.
fn user_field(body: &Map<String, Value>, names: &[&str]) -> Option<(String, String)> {
    let sources: [(&str, Option<&Map<String, Value>>); 3] = [
        ("traits", traits_of(body)),
        (
            "context.traits",
            context_of(body)
                .and_then(|c| c.get("traits"))
                .and_then(Value::as_object),
        ),
        (
            "properties",
            body.get("properties").and_then(Value::as_object),
        ),
    ];
    first_field(&sources, names)
}

/// The first non-empty field among `names`, trying each source in order; with its raw path.
fn first_field(
    sources: &[(&str, Option<&Map<String, Value>>)],
    names: &[&str],
) -> Option<(String, String)> {
    sources.iter().find_map(|(prefix, map)| {
        let map = (*map)?;
        names.iter().find_map(|name| {
            non_empty_str(map.get(*name)).map(|v| (v.to_string(), format!("{prefix}.{name}")))
        })
    })
}

/// An address part from `traits.address` (identify) or `context.traits.address`.
fn address_field(body: &Map<String, Value>, names: &[&str]) -> Option<(String, String)> {
    let sources: [(&str, Option<&Map<String, Value>>); 2] = [
        (
            "traits.address",
            traits_of(body)
                .and_then(|t| t.get("address"))
                .and_then(Value::as_object),
        ),
        (
            "context.traits.address",
            context_of(body)
                .and_then(|c| c.get("traits"))
                .and_then(Value::as_object)
                .and_then(|t| t.get("address"))
                .and_then(Value::as_object),
        ),
    ];
    first_field(&sources, names)
}

/// The user as the message itself describes them (identity enrichment comes later).
pub fn message_user(
    message: &ValidMessage,
    provenance: &mut BTreeMap<String, Provenance>,
) -> CanonicalUser {
    let body = &message.body;
    let mut user = CanonicalUser {
        user_id: message.user_id.clone(),
        anonymous_id: message.anonymous_id.clone(),
        ..CanonicalUser::default()
    };
    if user.user_id.is_some() {
        provenance.insert("user.user_id".into(), Provenance::new("userId", "copied"));
    }
    if user.anonymous_id.is_some() {
        provenance.insert(
            "user.anonymous_id".into(),
            Provenance::new("anonymousId", "copied"),
        );
    }
    let fields: [(&str, &[&str], &mut Option<String>); 4] = [
        ("email", &["email"], &mut user.email),
        ("phone", &["phone"], &mut user.phone),
        (
            "first_name",
            &["firstName", "first_name"],
            &mut user.first_name,
        ),
        ("last_name", &["lastName", "last_name"], &mut user.last_name),
    ];
    for (key, names, slot) in fields {
        if let Some((value, path)) = user_field(body, names) {
            *slot = Some(value);
            provenance.insert(format!("user.{key}"), Provenance::new(path, "copied"));
        }
    }
    let address: [(&str, &[&str], &mut Option<String>); 4] = [
        ("city", &["city"], &mut user.city),
        ("state", &["state"], &mut user.state),
        (
            "postal_code",
            &["postalCode", "postal_code"],
            &mut user.postal_code,
        ),
        ("country", &["country"], &mut user.country),
    ];
    for (key, names, slot) in address {
        if let Some((value, path)) = address_field(body, names) {
            *slot = Some(value);
            provenance.insert(format!("user.{key}"), Provenance::new(path, "copied"));
        }
    }
    user
}

fn message_context(
    body: &Map<String, Value>,
    event_time_ms: i64,
    provenance: &mut BTreeMap<String, Provenance>,
) -> CanonicalContext {
    let context = context_of(body);
    let properties = body.get("properties").and_then(Value::as_object);
    let mut out = CanonicalContext::default();
    let mut take = |key: &str, value: Option<&Value>, source: &str| -> Option<String> {
        let v = non_empty_str(value)?.to_string();
        provenance.insert(format!("context.{key}"), Provenance::new(source, "copied"));
        Some(v)
    };
    out.ip = take("ip", context.and_then(|c| c.get("ip")), "context.ip");
    out.user_agent = take(
        "user_agent",
        context.and_then(|c| c.get("userAgent")),
        "context.userAgent",
    );
    out.locale = take(
        "locale",
        context.and_then(|c| c.get("locale")),
        "context.locale",
    );
    let page = context
        .and_then(|c| c.get("page"))
        .and_then(Value::as_object);
    out.page_url = take(
        "page_url",
        page.and_then(|p| p.get("url")),
        "context.page.url",
    )
    .or_else(|| {
        take(
            "page_url",
            properties.and_then(|p| p.get("url")),
            "properties.url",
        )
    });
    out.referrer = take(
        "referrer",
        page.and_then(|p| p.get("referrer")),
        "context.page.referrer",
    );

    for key in CLICK_IDS {
        let found = [("properties", properties), ("context", context)]
            .into_iter()
            .find_map(|(prefix, map)| {
                non_empty_str(map.and_then(|m| m.get(key)))
                    .map(|v| (v.to_string(), format!("{prefix}.{key}")))
            });
        if let Some((value, source)) = found {
            out.click_ids.insert(key.into(), value);
            provenance.insert(
                format!("context.click_ids.{key}"),
                Provenance::new(source, "copied"),
            );
        }
    }
    if let Some(url) = out.page_url.clone() {
        for key in ["gclid", "ttclid"] {
            if out.click_ids.contains_key(key) {
                continue;
            }
            if let Some(v) = query_param(&url, key) {
                out.click_ids.insert(key.into(), v);
                provenance.insert(
                    format!("context.click_ids.{key}"),
                    Provenance::new("context.page.url", format!("`{key}` query parameter")),
                );
            }
        }
        if !out.click_ids.contains_key("fbc") {
            if let Some(fbclid) = query_param(&url, "fbclid") {
                // Meta's format: fb.<subdomain index>.<creation time ms>.<fbclid>.
                out.click_ids
                    .insert("fbc".into(), format!("fb.1.{event_time_ms}.{fbclid}"));
                provenance.insert(
                    "context.click_ids.fbc".into(),
                    Provenance::new(
                        "context.page.url",
                        "`fbclid` query parameter → fb.1.<event time ms>.<fbclid>",
                    ),
                );
            }
        }
    }
    out
}

/// The text at a dotted path of the raw message (`properties.ga_client_id`,
/// `integrations.Google Analytics 4.client_id`): a string, or a number written as text.
pub fn raw_path(body: &Map<String, Value>, path: &str) -> Option<String> {
    let mut parts = path.split('.');
    let mut value = body.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Apply a mapping row's transforms to a track message.
pub fn transform(
    message: &ValidMessage,
    row: &MappingRow,
    table: &MappingTable,
    received_at_ms: i64,
) -> Transformed {
    let body = &message.body;
    let empty = Map::new();
    let props = body
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let (event_time_ms, time_source, time_problems) = event_time(body, received_at_ms);
    let mut b = Builder {
        out: Transformed {
            properties: Map::new(),
            user: CanonicalUser::default(),
            context: CanonicalContext::default(),
            event_time_ms,
            provenance: BTreeMap::new(),
            missing_required: Vec::new(),
            problems: time_problems,
        },
    };
    b.out.provenance.insert(
        "event_time".into(),
        Provenance::new(time_source, "preserved"),
    );
    let canonical = row.canonical.as_str();

    // order_id: order_id | orderId | (v1, order events only) id
    let order_source = ["order_id", "orderId"]
        .into_iter()
        .chain(ORDER_EVENTS.contains(&canonical).then_some("id"))
        .find_map(|key| id_string(props.get(key)).map(|v| (v, key)));
    if let Some((order_id, key)) = order_source {
        let transform = if key == "order_id" {
            "copied".to_string()
        } else {
            format!("{key} → order_id")
        };
        b.set(
            "order_id",
            Value::String(order_id),
            format!("properties.{key}"),
            transform,
        );
    }

    // items: products[] (v1 and v2 shapes), or the event's own product fields
    let mut items: Vec<Value> = Vec::new();
    match props.get("products") {
        Some(Value::Array(products)) => {
            for (i, product) in products.iter().enumerate() {
                match product {
                    Value::Object(p) => items.push(Value::Object(item(
                        p,
                        &mut b.out.problems,
                        &format!("properties.products[{i}]"),
                    ))),
                    other => b.out.problems.push(format!(
                        "properties.products[{i}] is not an object ({other}); left out"
                    )),
                }
            }
            b.set(
                "items",
                Value::Array(items.clone()),
                "properties.products",
                "products → items (product_id|id → item_id, sku, name, price, quantity default 1, category)",
            );
        }
        Some(other) => b.out.problems.push(format!(
            "properties.products must be an array, found {other}; no items"
        )),
        None => {
            let has_product = ["product_id", "productId", "sku", "id"]
                .iter()
                .any(|k| props.contains_key(*k));
            if PRODUCT_EVENTS.contains(&canonical) && has_product {
                let single = item(props, &mut b.out.problems, "properties");
                items.push(Value::Object(single));
                b.set(
                    "items",
                    Value::Array(items.clone()),
                    "properties",
                    "product fields → one item",
                );
            }
        }
    }
    if !items.is_empty() {
        let count: u64 = items
            .iter()
            .filter_map(|i| i.get("quantity").and_then(Value::as_u64))
            .fold(0, u64::saturating_add);
        b.set(
            "num_items",
            Value::from(count),
            "properties.products",
            "sum of quantities",
        );
    }

    // value: revenue (number or "$39.95"), else total (Order Completed), else value, else
    // price × quantity (product events)
    let mut value_sources: Vec<(&str, String)> = vec![("revenue", "revenue → value".into())];
    if canonical == "purchase" {
        value_sources.push(("total", "total → value (no revenue sent)".into()));
    }
    value_sources.push(("value", "copied".into()));
    let mut value_set = false;
    for (key, transform) in value_sources {
        let Some(raw) = props.get(key) else { continue };
        match parse_money(raw).and_then(|(amount, note)| Ok((sane_amount(amount)?, note))) {
            Ok((amount, note)) => {
                let transform = match note {
                    Some(note) => format!("{transform} ({note})"),
                    None => transform,
                };
                b.set(
                    "value",
                    number(amount),
                    format!("properties.{key}"),
                    transform,
                );
                value_set = true;
                break;
            }
            Err(e) => b
                .out
                .problems
                .push(format!("properties.{key}: {e}; not used as value")),
        }
    }
    if !value_set && PRODUCT_EVENTS.contains(&canonical) {
        if let Some(price) = props.get("price") {
            if let Ok((p, _)) = parse_money(price) {
                let qty = quantity(props.get("quantity"), &mut Vec::new(), "properties");
                match sane_amount(p * qty as f64) {
                    Ok(amount) => b.set(
                        "value",
                        number(amount),
                        "properties.price",
                        format!("price × quantity ({qty})"),
                    ),
                    Err(e) => b
                        .out
                        .problems
                        .push(format!("properties.price × quantity: {e}; no value")),
                }
            }
        }
    }

    // currency: kept if ISO 4217 (case-normalised), else the configured default
    match props.get("currency") {
        Some(Value::String(code)) if is_iso4217(&code.trim().to_ascii_uppercase()) => {
            let upper = code.trim().to_ascii_uppercase();
            let transform = if &upper == code {
                "copied"
            } else {
                "upper-cased"
            };
            b.set(
                "currency",
                Value::String(upper),
                "properties.currency",
                transform,
            );
        }
        Some(other) => {
            b.out.problems.push(format!(
                "properties.currency: {other} is not an ISO 4217 code; left out"
            ));
        }
        None if b.out.properties.contains_key("value") => {
            b.set(
                "currency",
                Value::String(table.default_currency.clone()),
                "mapping.default_currency",
                "default (no currency sent)",
            );
        }
        None => {}
    }

    if let Some(query) = non_empty_str(props.get("query")) {
        b.set(
            "search_string",
            Value::String(query.into()),
            "properties.query",
            "query → search_string",
        );
    }
    for key in COPIED {
        if let Some(v) = props.get(key).filter(|v| !v.is_null()) {
            b.set(key, v.clone(), format!("properties.{key}"), "copied");
        }
    }

    b.out.user = message_user(message, &mut b.out.provenance);
    b.out.context = message_context(body, event_time_ms, &mut b.out.provenance);
    for path in &table.capture {
        if let Some(value) = raw_path(body, path) {
            b.out.context.captured.insert(path.clone(), value);
            b.out.provenance.insert(
                format!("context.captured.{path}"),
                Provenance::new(path.clone(), "copied (a destination reads it)"),
            );
        }
    }
    b.out.missing_required = row
        .required
        .iter()
        .filter(|key| !b.out.properties.contains_key(key.as_str()))
        .cloned()
        .collect();
    b.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_in_its_usual_shapes() {
        let p = |v: Value| parse_money(&v).map(|(f, _)| f);
        assert_eq!(p(Value::from(39.95)), Ok(39.95));
        assert_eq!(p(Value::from("39.95")), Ok(39.95));
        assert_eq!(p(Value::from("$39.95")), Ok(39.95));
        assert_eq!(p(Value::from("€1,299.95")), Ok(1299.95));
        assert_eq!(p(Value::from("39,95")), Ok(39.95));
        assert_eq!(p(Value::from(" 12 ")), Ok(12.0));
        assert!(p(Value::from("free")).is_err());
        assert!(p(Value::Bool(true)).is_err());
    }

    #[test]
    fn query_parameters_from_page_url() {
        assert_eq!(
            query_param(
                "https://shop.example/p?x=1&gclid=Cj0KCQ&fbclid=IwAR",
                "gclid"
            )
            .as_deref(),
            Some("Cj0KCQ")
        );
        assert_eq!(query_param("not a url", "gclid"), None);
    }
}
