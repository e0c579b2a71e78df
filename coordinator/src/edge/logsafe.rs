//! Logging what peers send, safely.
//!
//! [`wire`] wraps any string that came from the wire (hostnames, runner ids,
//! reasons, labels, webhook fields, error texts quoting them) for a log
//! field: control characters (newlines, ANSI escapes) and bidirectional
//! overrides are escaped, and it is cut at [`MAX_LOGGED_CHARS`] characters,
//! so a peer can neither forge log lines nor flood them.
//!
//! [`RefusalLog`] rate-limits refusal lines per peer: the first refusal in an
//! interval is logged with how many were suppressed before it.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Longest peer-supplied value written to the log, in characters.
pub const MAX_LOGGED_CHARS: usize = 128;

/// A peer-supplied string made safe to log; see the module docs.
#[derive(Clone, Copy)]
pub struct Wire<'a>(&'a str);

/// Wrap `s` for logging: `tracing::warn!(hostname = %wire(&h), ...)`.
pub fn wire(s: &str) -> Wire<'_> {
    Wire(s)
}

/// Characters that could forge or hide log content.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Wire<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(MAX_LOGGED_CHARS) {
            if needs_escape(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        let rest = chars.count();
        if rest > 0 {
            write!(f, "…[{rest} more chars]")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Wire<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// The sanitized text as an owned string (for messages built before logging).
pub fn clean(s: &str) -> String {
    wire(s).to_string()
}

/// Per-key log rate limit: one line per key per `interval`.
#[derive(Debug)]
pub struct RefusalLog<K> {
    interval: Duration,
    max_keys: usize,
    seen: Mutex<HashMap<K, (Instant, u64)>>,
}

impl<K: Hash + Eq + Clone> RefusalLog<K> {
    pub fn new(interval: Duration, max_keys: usize) -> Self {
        RefusalLog {
            interval,
            max_keys: max_keys.max(1),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether to log a refusal for `key` at `now`: `Some(suppressed)` (the
    /// refusals not logged since the last line) or `None` (suppressed).
    /// With the table full of recent keys, new keys are suppressed too.
    pub fn admit(&self, key: &K, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((last, suppressed)) = seen.get_mut(key) {
            if now.saturating_duration_since(*last) < self.interval {
                *suppressed += 1;
                return None;
            }
            let n = std::mem::take(suppressed);
            *last = now;
            return Some(n);
        }
        if seen.len() >= self.max_keys {
            let interval = self.interval;
            seen.retain(|_, (last, n)| now.saturating_duration_since(*last) < interval || *n > 0);
            if seen.len() >= self.max_keys {
                return None;
            }
        }
        seen.insert(key.clone(), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_ansi_are_escaped() {
        let s = wire("evil\nINFO forged line\u{1b}[31mred\r\t\u{202e}").to_string();
        assert!(!s.contains('\n') && !s.contains('\u{1b}') && !s.contains('\r'));
        assert!(!s.contains('\u{202e}'));
        assert_eq!(s, "evil\\nINFO forged line\\u{1b}[31mred\\r\\t\\u{202e}");
        assert_eq!(wire("host-1.example").to_string(), "host-1.example");
        assert_eq!(format!("{:?}", wire("a\nb")), "\"a\\nb\"");
    }

    #[test]
    fn long_values_are_capped() {
        let long = "x".repeat(10_000);
        let s = wire(&long).to_string();
        assert!(s.len() < MAX_LOGGED_CHARS + 40, "{}", s.len());
        assert!(s.ends_with(&format!("…[{} more chars]", 10_000 - MAX_LOGGED_CHARS)));
    }

    #[test]
    fn one_line_per_key_per_interval_with_a_count() {
        let log = RefusalLog::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        assert_eq!(log.admit(&"a", t0), Some(0));
        for _ in 0..5 {
            assert_eq!(log.admit(&"a", t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(log.admit(&"b", t0), Some(0), "keys are separate");
        assert_eq!(log.admit(&"a", t0 + Duration::from_secs(11)), Some(5));
    }

    #[test]
    fn the_table_is_bounded() {
        let log = RefusalLog::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert!(log.admit(&1, t0).is_some());
        assert!(log.admit(&2, t0).is_some());
        assert!(log.admit(&3, t0).is_none(), "full of recent keys");
        assert!(log.admit(&3, t0 + Duration::from_secs(11)).is_some());
    }
}
