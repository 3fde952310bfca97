//! What happened lately, kept in memory for the alert rules: refusals per environment, each
//! destination's requests and dead letters, unmapped names. Bounded: each window keeps at most
//! `MAX_EVENTS` entries, unmapped names at most `MAX_NAMES`.

use std::collections::{BTreeMap, VecDeque};

const MAX_EVENTS: usize = 20_000;
const MAX_NAMES: usize = 200;

/// Entries (time, value) no older than the longest window anyone asks about.
#[derive(Debug, Default, Clone)]
pub struct Window<T> {
    entries: VecDeque<(i64, T)>,
}

impl<T> Window<T> {
    pub fn push(&mut self, at_ms: i64, value: T) {
        if self.entries.len() == MAX_EVENTS {
            self.entries.pop_front();
        }
        self.entries.push_back((at_ms, value));
    }

    /// Drop what is older than `since_ms`.
    pub fn trim(&mut self, since_ms: i64) {
        while self.entries.front().is_some_and(|(at, _)| *at < since_ms) {
            self.entries.pop_front();
        }
    }

    pub fn since(&self, since_ms: i64) -> impl Iterator<Item = &(i64, T)> {
        self.entries.iter().filter(move |(at, _)| *at >= since_ms)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One destination's recent requests.
#[derive(Debug, Default, Clone)]
pub struct DestinationSignals {
    /// (ok, the failure reason).
    pub requests: Window<(bool, Option<String>)>,
    /// Requests that failed in a row, up to now.
    pub consecutive_failures: u32,
    pub last_error: Option<(i64, String)>,
    pub dead: Window<String>,
    /// Match quality per second (second → (sum, count)), kept a day: a rule compares the last
    /// minutes with the rest of the day.
    pub quality: BTreeMap<i64, (f64, u64)>,
}

impl DestinationSignals {
    /// The average match quality and its sample count over the seconds that start in
    /// `from_ms..to_ms`: a second belongs to one window only, so the recent window and the day
    /// before it never share a sample (a second straddling the boundary counts as the past).
    pub fn quality_between(&self, from_ms: i64, to_ms: i64) -> (Option<f64>, u64) {
        let (sum, n) = self
            .quality
            .range(from_ms..to_ms)
            .fold((0.0, 0), |(s, c), (_, (sum, n))| (s + sum, c + n));
        ((n > 0).then(|| sum / n as f64), n)
    }
}

/// How long match quality is kept: the rule's baseline is the destination's own last day.
pub const QUALITY_DAY_MS: i64 = 24 * 3_600_000;

#[derive(Debug, Default, Clone)]
pub struct Signals {
    /// 401s by the environment they named (a configured name, or `unknown`): the reason code.
    pub auth_failures: BTreeMap<String, Window<&'static str>>,
    pub destinations: BTreeMap<String, DestinationSignals>,
    /// Unmapped event names: (environment).
    pub unmapped: BTreeMap<String, Window<String>>,
}

impl Signals {
    pub fn auth_failure(&mut self, environment: String, at_ms: i64, code: &'static str) {
        self.auth_failures
            .entry(environment)
            .or_default()
            .push(at_ms, code);
    }

    pub fn request(&mut self, destination: &str, at_ms: i64, ok: bool, reason: Option<String>) {
        let d = self
            .destinations
            .entry(destination.to_string())
            .or_default();
        if ok {
            d.consecutive_failures = 0;
        } else {
            d.consecutive_failures = d.consecutive_failures.saturating_add(1);
            if let Some(r) = &reason {
                d.last_error = Some((at_ms, r.clone()));
            }
        }
        d.requests.push(at_ms, (ok, reason));
    }

    pub fn dead_letter(&mut self, destination: &str, at_ms: i64, reason: String) {
        self.destinations
            .entry(destination.to_string())
            .or_default()
            .dead
            .push(at_ms, reason);
    }

    pub fn match_quality(&mut self, destination: &str, at_ms: i64, score: f64) {
        let d = self
            .destinations
            .entry(destination.to_string())
            .or_default();
        let second = at_ms - at_ms.rem_euclid(1000);
        let slot = d.quality.entry(second).or_insert((0.0, 0));
        slot.0 += score;
        slot.1 += 1;
        // A day at most.
        if d.quality
            .first_key_value()
            .is_some_and(|(s, _)| *s < second - QUALITY_DAY_MS)
        {
            d.quality = d.quality.split_off(&(second - QUALITY_DAY_MS));
        }
    }

    pub fn unmapped(&mut self, name: &str, environment: &str, at_ms: i64) {
        if !self.unmapped.contains_key(name) && self.unmapped.len() >= MAX_NAMES {
            return;
        }
        self.unmapped
            .entry(name.to_string())
            .or_default()
            .push(at_ms, environment.to_string());
    }

    /// Forget what no window looks at any more.
    pub fn trim(&mut self, since_ms: i64) {
        for w in self.auth_failures.values_mut() {
            w.trim(since_ms);
        }
        for d in self.destinations.values_mut() {
            d.requests.trim(since_ms);
            d.dead.trim(since_ms);
        }
        for w in self.unmapped.values_mut() {
            w.trim(since_ms);
        }
        self.auth_failures.retain(|_, w| !w.is_empty());
        self.unmapped.retain(|_, w| !w.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_straddling_a_window_boundary_counts_in_one_window_only() {
        let mut s = Signals::default();
        s.match_quality("meta", 1_500, 8.0);
        s.match_quality("meta", 2_100, 2.0);
        let d = &s.destinations["meta"];
        // The recent window starts at 1,600: the second 1,000–1,999 began before it.
        assert_eq!(d.quality_between(1_600, 5_000), (Some(2.0), 1));
        assert_eq!(d.quality_between(0, 1_600), (Some(8.0), 1));
    }
}
