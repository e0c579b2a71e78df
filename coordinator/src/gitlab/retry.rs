//! When and how long to wait before trying a GitLab call again.
//!
//! - 5xx and transport failures: capped exponential backoff with jitter, for
//!   idempotent calls only. A call that creates something (`POST
//!   /user/runners`) is retried only when the connection was never made,
//!   because a retry after GitLab processed it would create a second runner
//!   whose token is lost.
//! - 429: wait as long as `Retry-After` says (seconds), if that is within
//!   [`RetryPolicy::max_retry_after`]; GitLab's rate limiter rejects before
//!   doing any work, so this is safe for every call.
//! - Any other 4xx: never retried.
//!
//! Attempts are bounded by [`RetryPolicy::max_attempts`]; dropping the future
//! of a call cancels any wait in progress.

use std::time::Duration;

use reqwest::header::HeaderMap;

/// Retry settings of the GitLab client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries per call, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second try; doubles each time.
    pub base_delay: Duration,
    /// Upper bound of one backoff.
    pub max_delay: Duration,
    /// Longest `Retry-After` the client waits out; a longer one is returned
    /// to the caller as [`GitLabError::RateLimited`](super::GitLabError).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Backoff after failed try number `attempt` (1-based): "equal jitter",
    /// half of `min(max_delay, base_delay * 2^(attempt-1))` plus a random
    /// part of the other half, so concurrent pollers spread out but never
    /// retry immediately.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let half = ceiling / 2;
        let jitter = half.mul_f64(rand::random::<f64>());
        half + jitter
    }
}

/// `Retry-After` as a duration. GitLab sends whole seconds; an HTTP date is
/// also accepted for safety (`None` if it cannot be read).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let fmt = time::format_description::well_known::Rfc2822;
    let when = time::OffsetDateTime::parse(value, &fmt).ok()?;
    let delta = when - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(delta).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let first = p.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = p.backoff(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = p.backoff(30);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_rejects_garbage() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a past date means now"
        );
    }
}
