//! Capped exponential backoff with full jitter, for reconnects.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max, attempt: 0 }
    }

    /// The next delay: uniform in [cap/2, cap] where cap = min(max, initial·2^n).
    /// Never zero, so a failing loop can never spin.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.initial.saturating_mul(1u32 << self.attempt.min(20));
        let cap = exp.min(self.max).max(Duration::from_millis(1));
        self.attempt = self.attempt.saturating_add(1);
        let lo = cap / 2;
        lo + rand::rng().random_range(Duration::ZERO..=cap - lo)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..30 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(2) && d >= Duration::from_millis(50));
        }
        let late = b.next_delay();
        assert!(late >= Duration::from_secs(1), "capped delays stay near the cap: {late:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
