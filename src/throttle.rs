//! Log lines at a bounded rate. A database that goes away fails every group, claim and outcome
//! it is asked for, several a second: the first of each kind is logged, then one line per
//! interval saying how many more there were.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often each kind of repeated failure is logged at most.
pub const INTERVAL: Duration = Duration::from_secs(10);

struct Budget {
    last: Instant,
    suppressed: u64,
}

static BUDGETS: Mutex<Option<HashMap<&'static str, Budget>>> = Mutex::new(None);

/// Whether a line of `kind` may be logged now: `Some(n)` with the number of lines of that kind
/// left out since the last one, `None` to stay quiet (the line is counted).
pub fn allow(kind: &'static str) -> Option<u64> {
    allow_at(kind, Instant::now())
}

fn allow_at(kind: &'static str, now: Instant) -> Option<u64> {
    let mut guard = match BUDGETS.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let budgets = guard.get_or_insert_with(HashMap::new);
    match budgets.get_mut(kind) {
        Some(b) if now.duration_since(b.last) < INTERVAL => {
            b.suppressed += 1;
            None
        }
        Some(b) => {
            let left_out = b.suppressed;
            b.last = now;
            b.suppressed = 0;
            Some(left_out)
        }
        None => {
            budgets.insert(
                kind,
                Budget {
                    last: now,
                    suppressed: 0,
                },
            );
            Some(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_then_one_per_interval_with_the_count_left_out() {
        let t0 = Instant::now();
        assert_eq!(allow_at("test-kind", t0), Some(0));
        for n in 1..=5 {
            assert_eq!(allow_at("test-kind", t0 + Duration::from_millis(n)), None);
        }
        assert_eq!(
            allow_at("other-kind", t0),
            Some(0),
            "kinds are counted apart"
        );
        assert_eq!(allow_at("test-kind", t0 + INTERVAL), Some(5));
        assert_eq!(
            allow_at("test-kind", t0 + INTERVAL + Duration::from_millis(1)),
            None
        );
    }
}
