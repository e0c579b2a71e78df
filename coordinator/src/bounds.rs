//! Upper bounds on every duration a request, a flag or a config file can
//! ask for, and checked arithmetic with them.
//!
//! The release build aborts on panic, so one overflowing `now + ttl` would
//! take the whole coordinator (and every agent session) down. Every
//! duration that comes from outside is checked here first: out of range is
//! an [`OutOfRange`] error naming the field and the bound (HTTP 400, a CLI
//! usage error, a config error), never a panic. `docs/configuration.md` and
//! `docs/operations.md` list the bounds.

use std::time::Duration;

use time::OffsetDateTime;

const DAY: u64 = 24 * 3600;

/// Longest join token validity (`token create --ttl`, `ttl_seconds`).
pub const MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(365 * DAY);
/// Longest admin token validity (`admin-token create --ttl`).
pub const MAX_ADMIN_TOKEN_TTL: Duration = Duration::from_secs(5 * 365 * DAY);
/// Longest admin client certificate validity (`admin-cert create --ttl`).
pub const MAX_ADMIN_CERT_TTL: Duration = Duration::from_secs(5 * 365 * DAY);
/// Longest drain deadline (`drain --deadline`, `deadline_seconds`).
pub const MAX_DRAIN_DEADLINE: Duration = Duration::from_secs(7 * DAY);
/// Shortest and longest dashboard session (`session_ttl`).
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(1);
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(7 * DAY);
/// Longest value of any duration key in the configuration file.
pub const MAX_CONFIG_DURATION: Duration = Duration::from_secs(10 * 365 * DAY);

/// A duration outside `[min, max]`; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be between {} and {} ({} seconds), got {got}", fmt(*.min), fmt(*.max), .max.as_secs())]
pub struct OutOfRange {
    pub field: &'static str,
    pub min: Duration,
    pub max: Duration,
    /// What was asked for, as given.
    pub got: String,
}

/// Whole days as days (humantime would print 365 days as months and hours).
fn fmt(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= DAY && secs.is_multiple_of(DAY) && d.subsec_nanos() == 0 {
        format!("{} days", secs / DAY)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// `d` if it lies in `[min, max]`.
pub fn check(
    field: &'static str,
    d: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, OutOfRange> {
    if d < min || d > max {
        return Err(OutOfRange {
            field,
            min,
            max,
            got: fmt(d),
        });
    }
    Ok(d)
}

/// A whole number of seconds from a request, checked against `[1 s, max]`.
pub fn seconds(field: &'static str, secs: u64, max: Duration) -> Result<Duration, OutOfRange> {
    if secs == 0 || secs > max.as_secs() {
        return Err(OutOfRange {
            field,
            min: Duration::from_secs(1),
            max,
            got: format!("{secs} seconds"),
        });
    }
    Ok(Duration::from_secs(secs))
}

/// `now + d`, or `None` where the wall clock cannot represent it.
pub fn after(now: OffsetDateTime, d: Duration) -> Option<OffsetDateTime> {
    now.checked_add(time::Duration::try_from(d).ok()?)
}

/// A clap value parser: a humantime duration in `[1 s, max]`.
pub fn parser(
    field: &'static str,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s| {
        let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
        check(field, d, Duration::from_secs(1), max).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_values_are_refused_with_the_field_and_bound() {
        let e = seconds("ttl_seconds", 999_999_999_999, MAX_JOIN_TOKEN_TTL).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("ttl_seconds"), "{msg}");
        assert!(msg.contains("31536000"), "{msg}");
        assert!(seconds("ttl_seconds", 0, MAX_JOIN_TOKEN_TTL).is_err());
        assert!(seconds("ttl_seconds", u64::MAX, MAX_JOIN_TOKEN_TTL).is_err());
        assert_eq!(
            seconds("ttl_seconds", 3600, MAX_JOIN_TOKEN_TTL),
            Ok(Duration::from_secs(3600))
        );
    }

    #[test]
    fn after_never_panics() {
        let now = OffsetDateTime::now_utc();
        assert!(after(now, Duration::MAX).is_none());
        assert!(after(now, Duration::from_secs(u64::MAX / 2)).is_none());
        assert!(after(now, MAX_CONFIG_DURATION).is_some());
    }

    #[test]
    fn the_cli_parser_checks_the_bound() {
        let p = parser("--ttl", MAX_JOIN_TOKEN_TTL);
        assert_eq!(p("1h"), Ok(Duration::from_secs(3600)));
        let e = p("400d").unwrap_err();
        assert!(e.contains("--ttl") && e.contains("365 days"), "{e}");
        assert!(p("0s").is_err());
        assert!(p("soon").is_err());
    }
}
