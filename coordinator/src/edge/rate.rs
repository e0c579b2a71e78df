//! A small keyed token bucket: each key (a peer's IP) may spend `burst`
//! tokens at once, refilled at `per_minute`. The table is bounded: when it
//! is full, keys whose bucket has refilled are forgotten, and while it stays
//! full new keys are refused (the limit fails closed).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per key.
#[derive(Debug)]
pub struct KeyedBuckets<K> {
    burst: f64,
    per_sec: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> KeyedBuckets<K> {
    /// `burst` at once, `per_minute` sustained, at most `max_keys` tracked.
    pub fn new(per_minute: u32, burst: u32, max_keys: usize) -> Self {
        KeyedBuckets {
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_minute.max(1)) / 60.0,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Spend one token of `key` at `now`; `false` when none is left.
    pub fn try_take(&self, key: &K, now: Instant) -> bool {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(key) && map.len() >= self.max_keys {
            let (burst, per_sec) = (self.burst, self.per_sec);
            map.retain(|_, b| refill(b, now, burst, per_sec) < burst);
            if map.len() >= self.max_keys {
                return false;
            }
        }
        let b = map.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        refill(b, now, self.burst, self.per_sec);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn refill(b: &mut Bucket, now: Instant, burst: f64, per_sec: f64) -> f64 {
    let elapsed = now.saturating_duration_since(b.at);
    b.tokens = (b.tokens + elapsed.as_secs_f64() * per_sec).min(burst);
    b.at = now;
    b.tokens
}

/// The rate-limit key of a peer: its IPv4 address, or the /64 of an IPv6
/// address (one host usually holds a whole /64).
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

/// How long until a token is back (for messages).
pub fn refill_interval(per_minute: u32) -> Duration {
    Duration::from_secs(60) / per_minute.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate_per_key() {
        let b = KeyedBuckets::new(6, 3, 100); // one token per 10 s
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.try_take(&"a", t0));
        }
        assert!(!b.try_take(&"a", t0), "burst spent");
        assert!(b.try_take(&"b", t0), "another key has its own bucket");
        assert!(!b.try_take(&"a", t0 + Duration::from_secs(9)));
        assert!(b.try_take(&"a", t0 + Duration::from_secs(20)));
    }

    #[test]
    fn the_table_is_bounded_and_fails_closed() {
        let b = KeyedBuckets::new(60, 1, 2);
        let t0 = Instant::now();
        assert!(b.try_take(&1, t0));
        assert!(b.try_take(&2, t0));
        assert!(!b.try_take(&3, t0), "full of active keys: refused");
        assert_eq!(b.len(), 2);
        // A second later both buckets have refilled: forgotten, room again.
        assert!(b.try_take(&3, t0 + Duration::from_secs(1)));
        assert!(b.len() <= 2);
    }

    #[test]
    fn ipv6_peers_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        assert_eq!(peer_key(a), peer_key(b));
        let m: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(peer_key(m), "10.0.0.1".parse::<IpAddr>().expect("ip"));
    }
}
