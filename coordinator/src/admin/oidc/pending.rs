//! Sign-ins in flight: from `GET /oidc/login` to the provider's callback.
//! Each is keyed by its `state`, holds the nonce and PKCE verifier, and is
//! taken exactly once (a replayed callback finds nothing). Bounded: at
//! most [`MAX`] at once, each for at most [`TTL`]; when full, the oldest
//! goes first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const MAX: usize = 1024;
pub const TTL: Duration = Duration::from_secs(600);

pub struct PendingLogin {
    pub nonce: String,
    pub verifier: String,
    pub started: Instant,
}

#[derive(Default)]
pub struct Pending {
    by_state: HashMap<String, PendingLogin>,
}

impl Pending {
    pub fn insert(&mut self, state: String, login: PendingLogin, now: Instant) {
        self.by_state
            .retain(|_, p| now.saturating_duration_since(p.started) < TTL);
        while self.by_state.len() >= MAX {
            let Some(oldest) = self
                .by_state
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(s, _)| s.clone())
            else {
                break;
            };
            self.by_state.remove(&oldest);
        }
        self.by_state.insert(state, login);
    }

    /// The sign-in started with `state`, if it is still live; it is gone
    /// afterwards either way.
    pub fn take(&mut self, state: &str, now: Instant) -> Option<PendingLogin> {
        self.by_state
            .remove(state)
            .filter(|p| now.saturating_duration_since(p.started) < TTL)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_state.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(at: Instant) -> PendingLogin {
        PendingLogin {
            nonce: "n".into(),
            verifier: "v".into(),
            started: at,
        }
    }

    #[test]
    fn a_sign_in_is_taken_once_and_only_while_fresh() {
        let t0 = Instant::now();
        let mut p = Pending::default();
        p.insert("a".into(), login(t0), t0);
        p.insert("b".into(), login(t0), t0);
        assert!(p.take("a", t0).is_some());
        assert!(p.take("a", t0).is_none(), "replayed");
        assert!(p.take("b", t0 + TTL).is_none(), "expired");
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn it_never_holds_more_than_max_and_drops_the_oldest() {
        let t0 = Instant::now();
        let mut p = Pending::default();
        for i in 0..MAX + 10 {
            let at = t0 + Duration::from_millis(i as u64);
            p.insert(format!("s{i}"), login(at), at);
        }
        assert_eq!(p.len(), MAX);
        let late = t0 + Duration::from_millis(MAX as u64 + 10);
        assert!(p.take("s0", late).is_none());
        assert!(p.take(&format!("s{}", MAX + 9), late).is_some());
    }
}
