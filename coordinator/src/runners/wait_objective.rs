//! Queue-latency objectives: per pool, the share of jobs whose wait for a
//! runner met the pool's `wait_objective`, over the last hour and the last
//! 24 hours.
//!
//! A job's wait runs from when the coordinator first saw it pending to when
//! GitLab reported a runner taking it (the same span as the
//! `job_wait_seconds` histogram). The reconciler [`WaitObjectives::record`]s
//! each wait of a pool that has an objective; the API and the metrics scrape
//! ask for [`WaitObjectives::shares`].
//!
//! Counts are kept per pool in [`BUCKETS`] one-minute buckets of (met, total),
//! a ring indexed by the minute since the Unix epoch: memory stays bounded
//! (about 23 KiB a pool) whatever the job rate, and an answer is one pass
//! over the ring. Time is an argument, never read here. A pool's counts
//! belong to the objective they were measured against: when a reload
//! changes the objective, they start afresh.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

/// One-minute buckets kept per pool: 24 hours.
pub const BUCKETS: usize = 24 * 60;
/// The short window, in minutes.
const HOUR: i64 = 60;

/// Jobs measured in a window and how many of them met the objective.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub met: u32,
    pub total: u32,
}

impl Tally {
    /// The share that met the objective (0.0 to 1.0); `None` when no job
    /// was measured.
    pub fn ratio(&self) -> Option<f64> {
        (self.total > 0).then(|| f64::from(self.met) / f64::from(self.total))
    }

    fn add(&mut self, other: Tally) {
        self.met = self.met.saturating_add(other.met);
        self.total = self.total.saturating_add(other.total);
    }
}

/// A pool's objective and how it was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitShares {
    pub objective: Duration,
    pub last_hour: Tally,
    pub last_day: Tally,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Minutes since the Unix epoch this bucket counts.
    minute: i64,
    tally: Tally,
}

const EMPTY: Bucket = Bucket {
    minute: i64::MIN,
    tally: Tally { met: 0, total: 0 },
};

#[derive(Debug)]
struct PoolWaits {
    objective: Duration,
    ring: Box<[Bucket]>,
}

/// Every pool's waits, bucketed by minute.
#[derive(Debug, Default)]
pub struct WaitObjectives {
    pools: HashMap<String, PoolWaits>,
}

fn minute_of(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().div_euclid(60)
}

fn slot(minute: i64) -> usize {
    // rem_euclid of a positive modulus is in 0..BUCKETS.
    minute.rem_euclid(BUCKETS as i64) as usize
}

impl WaitObjectives {
    /// Count one job of `pool` that waited `wait`, its runner taking it at
    /// `at`, against `objective` (met when `wait <= objective`).
    pub fn record(&mut self, pool: &str, objective: Duration, wait: Duration, at: OffsetDateTime) {
        let waits = self
            .pools
            .entry(pool.to_owned())
            .or_insert_with(|| PoolWaits {
                objective,
                ring: vec![EMPTY; BUCKETS].into_boxed_slice(),
            });
        if waits.objective != objective {
            waits.objective = objective;
            waits.ring.fill(EMPTY);
        }
        let minute = minute_of(at);
        let bucket = &mut waits.ring[slot(minute)];
        if bucket.minute > minute {
            // Older than the whole ring holds: already outside every window.
            return;
        }
        if bucket.minute < minute {
            *bucket = Bucket {
                minute,
                tally: Tally::default(),
            };
        }
        bucket.tally.add(Tally {
            met: u32::from(wait <= objective),
            total: 1,
        });
    }

    /// How `pool` met `objective` in the hour and the 24 hours up to `now`
    /// (the current minute included). Counts taken against another
    /// objective do not count.
    pub fn shares(&self, pool: &str, objective: Duration, now: OffsetDateTime) -> WaitShares {
        let mut out = WaitShares {
            objective,
            last_hour: Tally::default(),
            last_day: Tally::default(),
        };
        let Some(waits) = self.pools.get(pool).filter(|w| w.objective == objective) else {
            return out;
        };
        let now = minute_of(now);
        for b in waits.ring.iter() {
            let age = now.saturating_sub(b.minute);
            if (0..BUCKETS as i64).contains(&age) {
                out.last_day.add(b.tally);
                if age < HOUR {
                    out.last_hour.add(b.tally);
                }
            }
        }
        out
    }

    /// Forget pools for which `keep` is false (pools no longer configured).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.pools.retain(|name, _| keep(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJ: Duration = Duration::from_secs(30);

    fn at(minutes: i64, seconds: i64) -> OffsetDateTime {
        // A fixed Monday, 2026-03-02 00:00:00 UTC.
        OffsetDateTime::from_unix_timestamp(1_772_409_600 + minutes * 60 + seconds).unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_wait_at_the_objective_meets_it_and_a_longer_one_misses() {
        let mut w = WaitObjectives::default();
        w.record("amd64", OBJ, secs(30), at(0, 0));
        w.record("amd64", OBJ, Duration::from_millis(30_001), at(0, 10));
        w.record("amd64", OBJ, secs(2), at(0, 20));
        let s = w.shares("amd64", OBJ, at(0, 30));
        assert_eq!(s.last_hour, Tally { met: 2, total: 3 });
        assert_eq!(s.last_day, Tally { met: 2, total: 3 });
        assert_eq!(s.last_hour.ratio(), Some(2.0 / 3.0));
        assert_eq!(s.objective, OBJ);
    }

    #[test]
    fn no_job_measured_is_no_share_not_zero() {
        let mut w = WaitObjectives::default();
        let s = w.shares("amd64", OBJ, at(0, 0));
        assert_eq!(s.last_hour, Tally::default());
        assert_eq!(s.last_hour.ratio(), None);
        w.record("arm64", OBJ, secs(1), at(0, 0));
        assert_eq!(w.shares("amd64", OBJ, at(0, 0)).last_day.ratio(), None);
    }

    #[test]
    fn the_hour_window_drops_a_miss_after_sixty_minutes_the_day_keeps_it() {
        let mut w = WaitObjectives::default();
        w.record("p", OBJ, secs(300), at(0, 5)); // missed, minute 0
        w.record("p", OBJ, secs(1), at(30, 0)); // met, minute 30
        let s = w.shares("p", OBJ, at(59, 59));
        assert_eq!(s.last_hour, Tally { met: 1, total: 2 });
        let s = w.shares("p", OBJ, at(60, 0));
        assert_eq!(
            s.last_hour,
            Tally { met: 1, total: 1 },
            "minute 0 left the hour"
        );
        assert_eq!(s.last_day, Tally { met: 1, total: 2 });
        assert_eq!(s.last_hour.ratio(), Some(1.0));
        assert_eq!(s.last_day.ratio(), Some(0.5));
    }

    #[test]
    fn the_day_window_ends_after_1440_minutes() {
        let mut w = WaitObjectives::default();
        w.record("p", OBJ, secs(300), at(0, 0));
        assert_eq!(w.shares("p", OBJ, at(1439, 59)).last_day.total, 1);
        assert_eq!(w.shares("p", OBJ, at(1440, 0)).last_day.total, 0);
    }

    #[test]
    fn a_bucket_reused_a_day_later_starts_from_zero() {
        let mut w = WaitObjectives::default();
        for _ in 0..5 {
            w.record("p", OBJ, secs(300), at(10, 0));
        }
        // Same ring slot, 24 hours later: the old minute's misses are gone.
        w.record("p", OBJ, secs(1), at(10 + 1440, 0));
        let s = w.shares("p", OBJ, at(10 + 1440, 30));
        assert_eq!(s.last_day, Tally { met: 1, total: 1 });
        // A late report for the overwritten minute is outside every window.
        w.record("p", OBJ, secs(1), at(10, 0));
        assert_eq!(w.shares("p", OBJ, at(10 + 1440, 30)).last_day.total, 1);
    }

    #[test]
    fn a_steady_stream_over_two_days_counts_only_the_last_day() {
        let mut w = WaitObjectives::default();
        // One job a minute for 48 hours; every tenth misses.
        for m in 0..2 * 1440 {
            let wait = if m % 10 == 0 { secs(60) } else { secs(5) };
            w.record("p", OBJ, wait, at(m, 0));
        }
        let s = w.shares("p", OBJ, at(2 * 1440 - 1, 0));
        assert_eq!(
            s.last_day,
            Tally {
                met: 1296,
                total: 1440
            }
        );
        assert_eq!(s.last_hour, Tally { met: 54, total: 60 });
        assert_eq!(s.last_day.ratio(), Some(0.9));
    }

    #[test]
    fn a_changed_objective_starts_the_counts_afresh() {
        let mut w = WaitObjectives::default();
        w.record("p", OBJ, secs(40), at(0, 0));
        // Read against the new objective before any job: nothing measured.
        assert_eq!(w.shares("p", secs(60), at(0, 1)).last_hour.total, 0);
        w.record("p", secs(60), secs(40), at(1, 0));
        let s = w.shares("p", secs(60), at(1, 1));
        assert_eq!(s.last_hour, Tally { met: 1, total: 1 });
        assert_eq!(s.objective, secs(60));
    }

    #[test]
    fn retain_forgets_removed_pools() {
        let mut w = WaitObjectives::default();
        w.record("gone", OBJ, secs(1), at(0, 0));
        w.record("kept", OBJ, secs(1), at(0, 0));
        w.retain(|p| p == "kept");
        assert_eq!(w.shares("gone", OBJ, at(0, 1)).last_day.total, 0);
        assert_eq!(w.shares("kept", OBJ, at(0, 1)).last_day.total, 1);
    }
}
