//! How the single writer shares its time between ingest and delivery work: ingest first while
//! it keeps the writer saturated, delivery work held to its share then, and free to use the
//! writer's idle time otherwise.

use std::time::{Duration, Instant};

/// Recent writer time spent applying each kind of job, halved every second.
pub(super) struct TimeShare {
    ingest: Duration,
    delivery: Duration,
    /// Time spent in groups (applying and committing) since `since`.
    busy: Duration,
    since: Instant,
    delivery_share: f64,
}

/// Above this fraction of its time busy, the writer is saturated and delivery work is held to
/// its share; below it, delivery may use the writer's idle time freely.
const SATURATED: f64 = 0.85;

impl TimeShare {
    pub(super) fn new(delivery_share: f64) -> TimeShare {
        TimeShare {
            ingest: Duration::ZERO,
            delivery: Duration::ZERO,
            busy: Duration::ZERO,
            since: Instant::now(),
            delivery_share,
        }
    }

    pub(super) fn add(&mut self, ingest: Duration, delivery: Duration) {
        self.ingest += ingest;
        self.delivery += delivery;
    }

    /// A group took `busy` (apply and commit). Every second the window halves, so what counts
    /// is the last second or two.
    pub(super) fn group_done(&mut self, busy: Duration, now: Instant) {
        self.busy += busy;
        let window = now.saturating_duration_since(self.since);
        if window >= Duration::from_secs(2) {
            self.ingest /= 2;
            self.delivery /= 2;
            self.busy /= 2;
            self.since += window / 2;
        }
    }

    /// Whether ingest has kept the writer busy lately (its clients then come back at once:
    /// Segment, like any HTTP client, waits for each answer before the next request).
    pub(super) fn ingest_recently(&self) -> bool {
        self.ingest > Duration::from_millis(20)
    }

    fn saturated(&self, now: Instant) -> bool {
        self.busy.as_secs_f64()
            >= SATURATED * now.saturating_duration_since(self.since).as_secs_f64()
    }

    /// Whether delivery work may run now: freely while the writer has time to spare, within
    /// its share once ingest keeps it saturated.
    pub(super) fn delivery_may_run(&self, now: Instant) -> bool {
        !self.saturated(now)
            || self.delivery.as_secs_f64()
                <= self.delivery_share * (self.ingest + self.delivery).as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delivery_work_runs_freely_while_the_writer_has_time_to_spare() {
        let mut share = TimeShare::new(0.25);
        let start = share.since;
        // Half a second busy out of a second, all of it delivery work.
        share.add(Duration::ZERO, 500 * MS);
        share.group_done(500 * MS, start + 1000 * MS);
        assert!(!share.saturated(start + 1000 * MS));
        assert!(share.delivery_may_run(start + 1000 * MS));
        assert!(!share.ingest_recently());
    }

    #[test]
    fn a_saturated_writer_holds_delivery_work_to_its_share() {
        let mut share = TimeShare::new(0.25);
        let start = share.since;
        let now = start + 1000 * MS;
        // 950 ms busy in a second: 600 ingest, 350 delivery (37% of it, over 25%).
        share.add(600 * MS, 350 * MS);
        share.group_done(950 * MS, now);
        assert!(share.saturated(now));
        assert!(share.ingest_recently());
        assert!(!share.delivery_may_run(now));
        // Ingest alone for a while brings delivery under its share again.
        share.add(500 * MS, Duration::ZERO);
        share.group_done(500 * MS, start + 1400 * MS);
        assert!(share.saturated(start + 1400 * MS));
        assert!(share.delivery_may_run(start + 1400 * MS));
    }

    #[test]
    fn what_counts_is_the_last_second_or_two() {
        let mut share = TimeShare::new(0.25);
        let start = share.since;
        share.add(900 * MS, 900 * MS);
        share.group_done(1800 * MS, start + 1900 * MS);
        assert!(share.saturated(start + 1900 * MS));
        // Two seconds in, the window halves: the old load weighs half, and an idle spell
        // after it leaves the writer unsaturated.
        share.group_done(Duration::ZERO, start + 2000 * MS);
        assert_eq!(share.ingest, 450 * MS);
        assert_eq!(share.since, start + 1000 * MS);
        assert!(!share.saturated(start + 4000 * MS));
    }
}
