//! The controlled test send of the brief: one identify and the track calls of one test user,
//! each sent through the real signed ingest, then walked stage by stage — authenticated, parsed,
//! mapped, transformed, identity, dedup, consent, payload, the destination's reply — stopping at
//! the first failed stage with the fix in the words of the brief's troubleshooting section.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

mod stages;

pub use stages::{failed, settled, stages, SendResult, Stage, Verdict, FIX_401, FIX_IDENTITY};

/// One call of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub label: String,
    pub message: Value,
}

impl Step {
    /// The message as it goes out now: a call without a time of its own is dated when it is
    /// sent (a step the engineer looked at for ten minutes is not ten minutes old), as
    /// Segment's libraries date a call when they send it.
    pub fn outgoing(&self) -> Value {
        let mut message = self.message.clone();
        if let Some(object) = message.as_object_mut() {
            if !object.contains_key("timestamp") {
                object.insert(
                    "timestamp".into(),
                    json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                );
            }
        }
        message
    }
}

/// The test user a scenario is built for (editable before sending). Only the identifiers it
/// has are sent: a user given by email alone is a guest without a userId, not `tl_test_user`
/// with another email.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestUser {
    pub user_id: Option<String>,
    pub anonymous_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

impl Default for TestUser {
    fn default() -> TestUser {
        TestUser {
            user_id: Some("tl_test_user".into()),
            anonymous_id: "tl_test_anon".into(),
            email: Some("test.user@example.com".into()),
            phone: Some("+31612345678".into()),
        }
    }
}

impl TestUser {
    /// The user named by `userId`, `email` or both (words with `@` are the email). Its
    /// anonymousId is derived from them, so two test users never share a device and merge.
    pub fn named(user_id: Option<&str>, email: Option<&str>) -> Option<TestUser> {
        let user_id = user_id.map(str::trim).filter(|u| !u.is_empty());
        let email = email.map(str::trim).filter(|e| !e.is_empty());
        if user_id.is_none() && email.is_none() {
            return None;
        }
        use sha2::Digest;
        let seed = format!("{}\n{}", user_id.unwrap_or(""), email.unwrap_or(""));
        let digest = sha2::Sha256::digest(seed.as_bytes());
        Some(TestUser {
            user_id: user_id.map(str::to_string),
            anonymous_id: format!("tl_test_anon_{}", &hex::encode(digest)[..12]),
            email: email.map(str::to_string),
            phone: None,
        })
    }

    /// From the dashboard's prompt: a userId, an email, or both separated by a space.
    pub fn parse(input: &str) -> Option<TestUser> {
        let mut user_id = None;
        let mut email = None;
        for word in input.split_whitespace() {
            if word.contains('@') {
                email = Some(word);
            } else {
                user_id = Some(word);
            }
        }
        TestUser::named(user_id, email)
    }

    /// `userId <email>` as the prompt takes it back.
    pub fn label(&self) -> String {
        [self.user_id.as_deref(), self.email.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How the destinations take a controlled test: each one's test mode (`None`: the platform has
/// none), which take identify calls as profile updates, and which this run leaves out.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TestPlan {
    pub modes: BTreeMap<String, Option<bool>>,
    pub profile_destinations: Vec<String>,
    /// Left out of the run (`context.tracklayer.skip`): by default every destination that
    /// would receive the test as a live event.
    pub skip: Vec<String>,
}

impl TestPlan {
    /// `include_live`: also send to destinations without a test mode or with it off (asked
    /// for explicitly, and confirmed, by the caller).
    pub fn new(
        modes: BTreeMap<String, Option<bool>>,
        profile_destinations: Vec<String>,
        include_live: bool,
    ) -> TestPlan {
        let skip = if include_live {
            Vec::new()
        } else {
            modes
                .iter()
                .filter(|(_, mode)| **mode != Some(true))
                .map(|(name, _)| name.clone())
                .collect()
        };
        TestPlan {
            modes,
            profile_destinations,
            skip,
        }
    }

    /// Destinations that receive this run as a live event (test mode off or none).
    pub fn live(&self) -> Vec<&str> {
        self.modes
            .iter()
            .filter(|(name, mode)| **mode != Some(true) && !self.skip.contains(name))
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// `describe` in a few words, for a narrow column.
    pub fn describe_short(&self, name: &str) -> &'static str {
        let mode = self.modes.get(name).copied().flatten();
        match (mode, self.skip.iter().any(|s| s == name)) {
            (Some(true), _) => "test mode",
            (Some(false), true) => "skipped (test mode off)",
            (Some(false), false) => "LIVE (test mode off)",
            (None, true) => "skipped (no test mode)",
            (None, false) => "LIVE (no test mode)",
        }
    }

    /// How an event sent to `name` lands there.
    pub fn mode(&self, name: &str) -> &'static str {
        match self.modes.get(name).copied().flatten() {
            Some(true) => "test mode",
            Some(false) => "LIVE: test mode off",
            None => "LIVE: no test mode",
        }
    }

    /// How `name` takes this run, in the words the CLI and the dashboard both use.
    pub fn describe(&self, name: &str) -> String {
        let mode = self.modes.get(name).copied().flatten();
        let skipped = self.skip.iter().any(|s| s == name);
        match (mode, skipped) {
            (Some(true), _) => "test mode".into(),
            (Some(false), true) => "skipped: test mode off, would be a live event".into(),
            (Some(false), false) => "LIVE: test mode off, receives the test events".into(),
            (None, true) => "skipped: no test mode, would be a live event".into(),
            (None, false) => "LIVE: no test mode, receives the test events".into(),
        }
    }
}

/// The scenario names `--scenario` accepts.
pub const SCENARIO_STEPS: [&str; 5] = [
    "identify",
    "product_added",
    "checkout_started",
    "order_completed",
    "lead_submitted",
];

/// Build the calls: identify, Product Added, Checkout Started, Order Completed, Lead Submitted.
/// `run_id` makes messageIds and the order id unique per run, so a rerun is not a duplicate.
pub fn scenario(user: &TestUser, run_id: &str, only: &[String], skip: &[String]) -> Vec<Step> {
    let context = json!({
        "ip": "203.0.113.42",
        "userAgent": "Mozilla/5.0 (TrackLayer controlled test)",
        "page": {"url": "https://shop.example/checkout/thank-you?gclid=TeSt_GcLiD"},
        "consent": {"categoryPreferences": {"Advertising": true, "Analytics": true, "Marketing": true, "DataSharing": true}},
        "tracklayer": {"test": true, "skip": skip},
    });
    let order = format!("TEST-{run_id}");
    let product = json!({"product_id": "SKU-481", "sku": "SKU-481", "name": "Test Sock", "price": 89.95, "quantity": 1});
    let base = |n: usize, kind: &str| {
        let mut m = json!({
            "type": kind,
            "messageId": format!("tl_test_{run_id}_{n}"),
            "anonymousId": user.anonymous_id,
            "context": context,
        });
        if let Some(user_id) = &user.user_id {
            m["userId"] = json!(user_id);
        }
        m
    };
    let mut steps = Vec::new();
    let mut identify = base(1, "identify");
    let mut traits = json!({"firstName": "Test", "lastName": "User"});
    if let Some(email) = &user.email {
        traits["email"] = json!(email);
    }
    if let Some(phone) = &user.phone {
        traits["phone"] = json!(phone);
    }
    identify["traits"] = traits;
    steps.push((
        "identify",
        Step {
            label: "identify".into(),
            message: identify,
        },
    ));
    let track = |n: usize, event: &str, props: Value| {
        let mut m = base(n, "track");
        m["event"] = json!(event);
        m["properties"] = props;
        Step {
            label: event.into(),
            message: m,
        }
    };
    steps.push((
        "product_added",
        track(
            2,
            "Product Added",
            json!({"product_id": "SKU-481", "price": 89.95, "quantity": 1, "currency": "EUR"}),
        ),
    ));
    steps.push((
        "checkout_started",
        track(
            3,
            "Checkout Started",
            json!({"order_id": order, "value": 89.95, "currency": "EUR", "products": [product]}),
        ),
    ));
    steps.push((
        "order_completed",
        track(
            4,
            "Order Completed",
            json!({"order_id": order, "revenue": 89.95, "currency": "EUR", "products": [product]}),
        ),
    ));
    steps.push((
        "lead_submitted",
        track(5, "Lead Submitted", json!({"form": "tracklayer-test"})),
    ));
    steps
        .into_iter()
        .filter(|(key, _)| only.is_empty() || only.iter().any(|o| o == key))
        .map(|(_, step)| step)
        .collect()
}

/// A message from the engineer's own file, made ready for one test run: a fresh messageId per
/// run (`keep_ids` keeps the file's, to test a Segment retry on purpose), so a file re-sent
/// after a fix is graded as the new call it is and not as a retry of the old one; and marked as
/// a test that leaves out `skip`.
pub fn file_step(
    mut message: Value,
    run_id: &str,
    n: usize,
    keep_ids: bool,
    skip: &[String],
) -> Step {
    let label = message
        .get("event")
        .or_else(|| message.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("message")
        .to_string();
    if let Some(object) = message.as_object_mut() {
        if !keep_ids {
            let base = object
                .get("messageId")
                .and_then(Value::as_str)
                .unwrap_or("tl_test")
                .to_string();
            object.insert("messageId".into(), json!(format!("{base}~{run_id}_{n}")));
        }
        let context = object.entry("context").or_insert_with(|| json!({}));
        if let Some(context) = context.as_object_mut() {
            context.insert("tracklayer".into(), json!({"test": true, "skip": skip}));
        }
    }
    Step { label, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_call_is_dated_when_it_is_sent_and_a_given_time_is_kept() {
        let user = TestUser::default();
        let steps = scenario(&user, "r1", &[], &[]);
        assert!(steps.iter().all(|s| s.message.get("timestamp").is_none()));
        let before = chrono::Utc::now() - chrono::Duration::milliseconds(1);
        let sent = steps[0].outgoing();
        let stamped = chrono::DateTime::parse_from_rfc3339(sent["timestamp"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert!(stamped >= before, "{stamped} is when it went out");
        let own = Step {
            label: "x".into(),
            message: json!({"type": "track", "timestamp": "2026-01-01T00:00:00Z"}),
        };
        assert_eq!(own.outgoing()["timestamp"], "2026-01-01T00:00:00Z");
    }
}
