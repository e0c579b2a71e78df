//! The reconciler's clock: wall time for records and for deadlines operators
//! give (a drain's `deadline`), monotonic [`tokio::time::Instant`] for every
//! decision, so a test drives both with tokio's paused clock.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

/// Wall time as the reconciler sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    /// `None`: the system's wall clock. `Some((wall, at))`: `wall` at the
    /// tokio instant `at`, advancing with tokio's clock.
    anchor: Option<(OffsetDateTime, Instant)>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Clock { anchor: None }
    }

    /// Wall time that starts now and advances only with tokio's clock (which
    /// a test pauses and advances).
    pub fn following_tokio() -> Self {
        Clock {
            anchor: Some((OffsetDateTime::now_utc(), Instant::now())),
        }
    }

    /// Wall time that reads `wall` now and advances only with tokio's
    /// clock: a test picks the moment (a Monday 07:58 in Berlin).
    pub fn following_tokio_from(wall: OffsetDateTime) -> Self {
        Clock {
            anchor: Some((wall, Instant::now())),
        }
    }

    pub fn now_utc(&self) -> OffsetDateTime {
        match self.anchor {
            None => OffsetDateTime::now_utc(),
            Some((wall, at)) => wall + Instant::now().saturating_duration_since(at),
        }
    }

    pub fn now_ms(&self) -> i64 {
        crate::db::to_ms(self.now_utc())
    }

    /// The tokio instant at which wall time reaches `at` (now, if it has).
    pub fn instant_at(&self, at: OffsetDateTime) -> Instant {
        let left = Duration::try_from(at - self.now_utc()).unwrap_or(Duration::ZERO);
        Instant::now() + left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn following_tokio_advances_with_the_paused_clock_only() {
        let clock = Clock::following_tokio();
        let t0 = clock.now_utc();
        assert_eq!(clock.now_utc(), t0, "no wall time passes while paused");
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now_utc() - t0, time::Duration::seconds(90));
        let deadline = clock.instant_at(t0 + time::Duration::hours(1));
        assert_eq!(deadline - Instant::now(), Duration::from_secs(3600 - 90));
        assert_eq!(
            clock.instant_at(t0),
            Instant::now(),
            "a past deadline is now"
        );
    }
}
