//! Timestamps the way GitLab's REST API writes them.
//!
//! GitLab serialises `ActiveSupport::TimeWithZone` as ISO 8601 in UTC with millisecond
//! precision, e.g. `"2016-01-25T16:39:48.066Z"` (doc/api/runners.md, `contacted_at`;
//! doc/api/jobs.md, `created_at`). The Job Hook example in
//! doc/user/project/integrations/webhook_events.md uses the same shape
//! (`"build_created_at": "2021-02-23T02:41:37.886Z"`).

use time::OffsetDateTime;
use time::macros::format_description;

/// Formats `t` as GitLab does: `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC.
pub fn iso(t: OffsetDateTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000Z"))
}

/// Formats an optional timestamp, mapping `None` to JSON `null`.
pub fn iso_opt(t: Option<OffsetDateTime>) -> serde_json::Value {
    match t {
        Some(t) => serde_json::Value::String(iso(t)),
        None => serde_json::Value::Null,
    }
}

/// Seconds between two instants as a float, the unit GitLab uses for `duration`.
pub fn secs_between(from: OffsetDateTime, to: OffsetDateTime) -> f64 {
    let d = to - from;
    d.as_seconds_f64().max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_like_gitlab() {
        assert_eq!(
            iso(datetime!(2016-01-25 16:39:48.066 UTC)),
            "2016-01-25T16:39:48.066Z"
        );
        assert_eq!(
            iso(datetime!(2016-01-25 18:39:48 +2)),
            "2016-01-25T16:39:48.000Z"
        );
    }
}
