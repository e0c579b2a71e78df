//! Client-side token bucket, so polling stays under GitLab's rate limits.
//!
//! GitLab limits listing a project's jobs to 600 requests per minute per user
//! by default; one AutoGit poller per token must not be the reason a user's
//! other tools get 429s. The bucket holds `burst = max(1, rpm / 10)` tokens and
//! refills at `(rpm - burst) / 60` per second, so no 60-second window ever sees
//! more than `rpm` requests (for `rpm >= 2`).
//!
//! Each call reserves a token (the balance may go negative) and then sleeps
//! off its debt outside the lock, so waiters are served in arrival order and
//! the loop cannot spin.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket shared by all calls of one client.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A limiter allowing at most `requests_per_minute` (clamped to at least
    /// 2) requests in any minute, starting full.
    pub fn per_minute(requests_per_minute: u32) -> Self {
        let rpm = f64::from(requests_per_minute.max(2));
        let burst = (rpm / 10.0).floor().max(1.0);
        let per_sec = ((rpm - burst).max(1.0)) / 60.0;
        RateLimiter {
            per_sec,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// How many requests may go out back to back from a full bucket.
    pub fn burst(&self) -> u32 {
        self.burst as u32
    }

    /// Takes one token, waiting until it is available.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tracing::debug!(
                wait_ms = wait.as_millis() as u64,
                "GitLab client rate limit: waiting"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Reserves a token now and returns how long the caller must wait for it.
    fn reserve(&self) -> Duration {
        // A poisoned lock only means another task panicked mid-update; the
        // numbers are still usable.
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        b.last = now;
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.per_sec)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_and_rate_keep_any_minute_under_the_limit() {
        let l = RateLimiter::per_minute(600);
        assert_eq!(l.burst(), 60);
        assert!((l.per_sec - 9.0).abs() < 1e-9);
        assert!(l.burst + l.per_sec * 60.0 <= 600.0 + 1e-9);
        let tiny = RateLimiter::per_minute(0);
        assert_eq!(tiny.burst(), 1);
    }

    #[tokio::test]
    async fn burst_goes_out_at_once_then_requests_are_spaced() {
        // 120/min: burst 12, then 1.8 per second (one every ~0.56 s).
        let l = RateLimiter::per_minute(120);
        let start = Instant::now();
        for _ in 0..12 {
            l.acquire().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(200),
            "burst should not wait: {:?}",
            start.elapsed()
        );
        let before = Instant::now();
        l.acquire().await;
        let waited = before.elapsed();
        assert!(
            waited >= Duration::from_millis(450) && waited < Duration::from_millis(1500),
            "13th request should wait about 0.56 s, waited {waited:?}"
        );
    }
}
