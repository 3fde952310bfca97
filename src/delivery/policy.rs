//! Pure delivery policy: when to retry, when to give up, when a destination pauses itself.

use std::collections::VecDeque;
use std::time::Duration;

/// The delay before the next attempt after `failures` failed attempts (1 = the first failure),
/// or `None` when the schedule is exhausted. Full jitter over the step (never below a tenth of
/// it, so retries do not bunch at zero), and never sooner than the platform asked.
pub fn next_delay(
    schedule: &[u64],
    failures: i64,
    not_before: Option<Duration>,
    random: u64,
) -> Option<Duration> {
    let step = usize::try_from(failures).ok()?.checked_sub(1)?;
    let base_ms = schedule.get(step)?.saturating_mul(1000);
    let floor = base_ms / 10;
    let span = base_ms - floor;
    let jittered = floor + if span == 0 { 0 } else { random % (span + 1) };
    let wanted = not_before.map_or(0, |d| d.as_millis() as u64);
    Some(Duration::from_millis(jittered.max(wanted)))
}

/// A destination's circuit breaker: after a run of failures it pauses (every request would fail
/// anyway, and hammering a struggling API makes it worse), then lets one probe through.
#[derive(Debug, Clone)]
pub struct Breaker {
    window: VecDeque<bool>,
    capacity: usize,
    min_samples: usize,
    failure_ratio: f64,
    base_pause: Duration,
    max_pause: Duration,
    pauses_in_a_row: u32,
    paused_until_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BreakerChange {
    /// The destination pauses until this instant, for this reason.
    Paused {
        until_ms: i64,
        reason: String,
    },
    Resumed,
}

impl Breaker {
    pub fn new(base_pause: Duration) -> Breaker {
        Breaker {
            window: VecDeque::new(),
            capacity: 20,
            min_samples: 8,
            failure_ratio: 0.8,
            base_pause,
            // A recovered platform gets its backlog within a minute, not ten.
            max_pause: Duration::from_secs(60),
            pauses_in_a_row: 0,
            paused_until_ms: None,
        }
    }

    pub fn paused_until_ms(&self) -> Option<i64> {
        self.paused_until_ms
    }

    /// True while paused; after the pause ends, the next request is a probe.
    pub fn is_paused(&self, now_ms: i64) -> bool {
        self.paused_until_ms.is_some_and(|until| now_ms < until)
    }

    pub fn probing(&self, now_ms: i64) -> bool {
        self.paused_until_ms.is_some_and(|until| now_ms >= until)
    }

    /// Record a request's result (`ok` = the platform answered and did not ask to retry).
    pub fn record(&mut self, ok: bool, now_ms: i64) -> Option<BreakerChange> {
        if self.probing(now_ms) {
            return Some(if ok {
                self.paused_until_ms = None;
                self.pauses_in_a_row = 0;
                self.window.clear();
                BreakerChange::Resumed
            } else {
                self.pause(now_ms, "the probe after a pause failed too".into())
            });
        }
        if self.is_paused(now_ms) {
            return None;
        }
        self.window.push_back(ok);
        if self.window.len() > self.capacity {
            self.window.pop_front();
        }
        let failures = self.window.iter().filter(|ok| !**ok).count();
        // Only a failure trips it: a platform that has just answered well is not paused for
        // the failures before (measured: Meta back up, its last request 200, paused for
        // "7 of the last 8 failed" with nothing left to probe, and reported down for good).
        if ok {
            return None;
        }
        if self.window.len() >= self.min_samples
            && failures as f64 / self.window.len() as f64 >= self.failure_ratio
        {
            let reason = format!(
                "{failures} of the last {} requests failed",
                self.window.len()
            );
            self.window.clear();
            return Some(self.pause(now_ms, reason));
        }
        None
    }

    fn pause(&mut self, now_ms: i64, reason: String) -> BreakerChange {
        let factor = 2u32.saturating_pow(self.pauses_in_a_row.min(10));
        let pause = (self.base_pause * factor).min(self.max_pause);
        self.pauses_in_a_row += 1;
        let until_ms = now_ms + pause.as_millis() as i64;
        self.paused_until_ms = Some(until_ms);
        BreakerChange::Paused {
            until_ms,
            reason: format!("{reason}; paused for {} s, then one probe", pause.as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_with_jitter_and_retry_after() {
        let schedule = [5, 30];
        let d = next_delay(&schedule, 1, None, 0).unwrap();
        assert_eq!(
            d,
            Duration::from_millis(500),
            "never below a tenth of the step"
        );
        let d = next_delay(&schedule, 1, None, u64::MAX).unwrap();
        assert!(d <= Duration::from_secs(5));
        assert_eq!(
            next_delay(&schedule, 2, Some(Duration::from_secs(60)), 0).unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(next_delay(&schedule, 3, None, 0), None, "exhausted");
        assert_eq!(next_delay(&schedule, 0, None, 0), None);
    }

    #[test]
    fn breaker_pauses_and_probes() {
        let mut b = Breaker::new(Duration::from_secs(30));
        for i in 0..7 {
            assert_eq!(b.record(false, i), None);
        }
        let change = b.record(false, 7).unwrap();
        assert!(matches!(&change, BreakerChange::Paused { until_ms, .. } if *until_ms == 30_007));
        assert!(b.is_paused(10_000));
        assert!(b.probing(30_007));
        // The probe fails: a longer pause.
        assert!(
            matches!(b.record(false, 30_007), Some(BreakerChange::Paused { until_ms, .. }) if until_ms == 90_007)
        );
        assert_eq!(b.record(true, 90_007), Some(BreakerChange::Resumed));
        assert!(!b.is_paused(90_008));
        // Mixed results do not trip it.
        for i in 0..20 {
            assert_eq!(b.record(i % 2 == 0, 100_000 + i), None);
        }
    }

    #[test]
    fn a_platform_that_answers_well_again_is_not_paused_for_its_past_failures() {
        let mut b = Breaker::new(Duration::from_secs(1));
        for i in 0..7 {
            assert_eq!(b.record(false, i), None);
        }
        // 7 of 8 failed, but the last one came back well: no pause.
        assert_eq!(b.record(true, 7), None);
        assert!(!b.is_paused(8) && !b.probing(8));
        // Another failure with the ratio still over the line does pause.
        assert!(matches!(
            b.record(false, 9),
            Some(BreakerChange::Paused { .. })
        ));
    }
}
