//! Pool schedules: `[[pools.schedule]]` windows that override a pool's
//! `idle_min` and `max_runners` while they are active, for example four warm
//! runners on weekdays from 08:00 to 18:00 in Europe/Berlin:
//!
//! ```toml
//! [[pools.schedule]]
//! cron = "* 8-17 * * mon-fri"   # every minute of 08:00-17:59, Monday to Friday
//! timezone = "Europe/Berlin"    # IANA name; default "UTC"
//! idle_min = 4
//! max_runners = 12              # optional, like idle_min; one of them is required
//! ```
//!
//! A window is **active during every minute its cron pattern matches**, in
//! its time zone (five fields: minute, hour, day of month, month, day of
//! week; parsed by the `croner` crate, with Vixie cron's rule that a
//! restricted day of month *or* day of week matches). So the window above
//! opens at 08:00 and closes at 18:00 local time, through daylight-saving
//! changes.
//!
//! **Overlapping windows** combine key by key: for `idle_min` and for
//! `max_runners` separately, the last active window in config order that
//! sets the key wins, and the pool's own value applies when none does. An
//! exception (a holiday, a release week) is therefore written *after* the
//! rule it overrides. If the result has `idle_min` above `max_runners`,
//! `idle_min` is lowered to `max_runners`.
//!
//! Everything here is a pure function of the time it is given: the
//! reconciler applies [`Pool::at`] to each pool before every plan, so a
//! window edge takes effect on the next pass (within half a second), and
//! what happens to runners then is the plan's ordinary rules: runners beyond
//! a lowered `max_runners` that are idle or provisioning are stopped, busy
//! runners never are, and idle runners beyond the new `idle_min` are stopped
//! once idle for `idle_timeout` (warm runners usually have been).

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use time::OffsetDateTime;

use super::pool::Pool;

/// How far ahead [`Pool::next_change`] looks.
pub const LOOKAHEAD_MINUTES: i64 = 8 * 24 * 60;

/// One schedule window of a pool.
#[derive(Clone, PartialEq)]
pub struct Window {
    /// The five-field pattern as configured (for display and TOML).
    pub cron_text: String,
    pub cron: Cron,
    pub timezone: Tz,
    /// Warm runners while active; `None` leaves the key to other windows or
    /// the pool.
    pub idle_min: Option<u32>,
    pub max_runners: Option<u32>,
}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Window")
            .field("cron", &self.cron_text)
            .field("timezone", &self.timezone.name())
            .field("idle_min", &self.idle_min)
            .field("max_runners", &self.max_runners)
            .finish()
    }
}

/// Why a window is not acceptable; the caller adds the pool and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("is not a five-field cron pattern (minute hour day-of-month month day-of-week): {0}")]
    Cron(String),
    #[error("is not an IANA time zone name (like \"Europe/Berlin\" or \"UTC\"): '{0}'")]
    TimeZone(String),
}

impl Window {
    /// Parses `cron` (exactly five fields, no seconds or years) and the IANA
    /// `timezone`.
    pub fn new(
        cron: &str,
        timezone: &str,
        idle_min: Option<u32>,
        max_runners: Option<u32>,
    ) -> Result<Window, WindowError> {
        let fields = cron.split_whitespace().count();
        if fields != 5 {
            return Err(WindowError::Cron(format!(
                "'{cron}' has {fields} fields, a window needs 5"
            )));
        }
        let parsed = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(cron)
            .map_err(|e| WindowError::Cron(format!("'{cron}': {e}")))?;
        let timezone: Tz = timezone
            .parse()
            .map_err(|_| WindowError::TimeZone(timezone.to_owned()))?;
        Ok(Window {
            cron_text: cron.to_owned(),
            cron: parsed,
            timezone,
            idle_min,
            max_runners,
        })
    }

    /// Whether the window is active during the minute that holds `now`.
    pub fn active_at(&self, now: OffsetDateTime) -> bool {
        let minute = now.unix_timestamp().div_euclid(60) * 60;
        let Some(utc) = DateTime::<Utc>::from_timestamp(minute, 0) else {
            return false;
        };
        self.cron
            .is_time_matching(&utc.with_timezone(&self.timezone))
            .unwrap_or(false)
    }
}

/// A pool's sizing at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    pub idle_min: u32,
    pub max_runners: u32,
    /// Indexes (config order) of the windows active then.
    pub active: ActiveWindows,
}

/// A set of window indexes, as a bit set (a pool has at most
/// [`MAX_WINDOWS`] windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActiveWindows(u64);

/// Most windows one pool may have.
pub const MAX_WINDOWS: usize = 64;

impl ActiveWindows {
    pub fn contains(self, i: usize) -> bool {
        i < MAX_WINDOWS && self.0 & (1 << i) != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn indexes(self) -> impl Iterator<Item = usize> {
        (0..MAX_WINDOWS).filter(move |&i| self.contains(i))
    }
}

impl Pool {
    /// Which windows are active at `now`, and the `idle_min` and
    /// `max_runners` that follow (see the module docs for how they combine).
    pub fn sizing_at(&self, now: OffsetDateTime) -> Sizing {
        let mut idle_min = self.idle_min;
        let mut max_runners = self.max_runners;
        let mut active = 0u64;
        for (i, w) in self.schedule.iter().enumerate().take(MAX_WINDOWS) {
            if w.active_at(now) {
                active |= 1 << i;
                idle_min = w.idle_min.unwrap_or(idle_min);
                max_runners = w.max_runners.unwrap_or(max_runners);
            }
        }
        Sizing {
            idle_min: idle_min.min(max_runners),
            max_runners,
            active: ActiveWindows(active),
        }
    }

    /// The pool as it is sized at `now`: `idle_min` and `max_runners` from
    /// [`Self::sizing_at`], everything else unchanged.
    pub fn at(&self, now: OffsetDateTime) -> Pool {
        let mut p = self.clone();
        if !self.schedule.is_empty() {
            let s = self.sizing_at(now);
            p.idle_min = s.idle_min;
            p.max_runners = s.max_runners;
        }
        p
    }

    /// The start of the first minute after `now` in which the set of active
    /// windows differs from now's, if that is within [`LOOKAHEAD_MINUTES`].
    pub fn next_change(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        if self.schedule.is_empty() {
            return None;
        }
        let current = self.sizing_at(now).active;
        let start = now.unix_timestamp().div_euclid(60) * 60;
        (1..=LOOKAHEAD_MINUTES)
            .filter_map(|m| OffsetDateTime::from_unix_timestamp(start + m * 60).ok())
            .find(|t| self.sizing_at(*t).active != current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Arch;
    use time::macros::datetime;

    fn office_hours() -> Window {
        Window::new("* 8-17 * * mon-fri", "Europe/Berlin", Some(4), Some(12)).unwrap()
    }

    fn pool(schedule: Vec<Window>) -> Pool {
        let mut p = Pool::new("cpu", &["linux"], Arch::X86_64);
        p.idle_min = 0;
        p.max_runners = 6;
        p.schedule = schedule;
        p
    }

    #[test]
    fn a_window_is_active_in_its_own_time_zone() {
        let w = office_hours();
        // Monday 2026-11-30; Berlin is UTC+1 in winter.
        assert!(
            !w.active_at(datetime!(2026-11-30 06:59:59 UTC)),
            "07:59 in Berlin"
        );
        assert!(
            w.active_at(datetime!(2026-11-30 07:00:00 UTC)),
            "08:00 in Berlin"
        );
        assert!(
            w.active_at(datetime!(2026-11-30 16:59:59 UTC)),
            "17:59 in Berlin"
        );
        assert!(
            !w.active_at(datetime!(2026-11-30 17:00:00 UTC)),
            "18:00 in Berlin"
        );
        // Saturday.
        assert!(!w.active_at(datetime!(2026-12-05 10:00:00 UTC)));
        // Summer time: 08:00 in Berlin is 06:00 UTC.
        assert!(w.active_at(datetime!(2026-07-06 06:00:00 UTC)));
        assert!(!w.active_at(datetime!(2026-07-06 16:00:00 UTC)));
    }

    #[test]
    fn sizing_follows_the_window_and_falls_back_to_the_pool() {
        let p = pool(vec![office_hours()]);
        let open = p.sizing_at(datetime!(2026-11-30 09:00:00 UTC));
        assert_eq!((open.idle_min, open.max_runners), (4, 12));
        assert!(open.active.contains(0));
        let closed = p.sizing_at(datetime!(2026-11-30 20:00:00 UTC));
        assert_eq!((closed.idle_min, closed.max_runners), (0, 6));
        assert!(closed.active.is_empty());
        let at = p.at(datetime!(2026-11-30 09:00:00 UTC));
        assert_eq!((at.idle_min, at.max_runners), (4, 12));
        assert_eq!(at.image, p.image);
    }

    #[test]
    fn overlapping_windows_combine_key_by_key_and_the_later_one_wins() {
        let weekday = office_hours();
        // A release afternoon: more warm runners, but the cap of the office
        // window stays (this window does not set max_runners).
        let release = Window::new("* 14-15 30 11 *", "Europe/Berlin", Some(10), None).unwrap();
        let p = pool(vec![weekday.clone(), release.clone()]);
        let s = p.sizing_at(datetime!(2026-11-30 13:30:00 UTC));
        assert_eq!((s.idle_min, s.max_runners), (10, 12));
        assert_eq!(s.active.indexes().collect::<Vec<_>>(), vec![0, 1]);
        // Reversed order: the office window is later and wins idle_min.
        let p = pool(vec![release, weekday]);
        let s = p.sizing_at(datetime!(2026-11-30 13:30:00 UTC));
        assert_eq!((s.idle_min, s.max_runners), (4, 12));
    }

    #[test]
    fn idle_min_never_exceeds_the_resulting_cap() {
        let night = Window::new("* 0-5 * * *", "UTC", None, Some(2)).unwrap();
        let mut p = pool(vec![night]);
        p.idle_min = 3;
        let s = p.sizing_at(datetime!(2026-11-30 01:00:00 UTC));
        assert_eq!((s.idle_min, s.max_runners), (2, 2));
    }

    #[test]
    fn next_change_finds_both_edges() {
        let p = pool(vec![office_hours()]);
        assert_eq!(
            p.next_change(datetime!(2026-11-30 06:30:10 UTC)),
            Some(datetime!(2026-11-30 07:00:00 UTC)),
            "opens at 08:00 Berlin"
        );
        assert_eq!(
            p.next_change(datetime!(2026-11-30 09:00:00 UTC)),
            Some(datetime!(2026-11-30 17:00:00 UTC)),
            "closes at 18:00 Berlin"
        );
        // Friday evening: next opening is Monday.
        assert_eq!(
            p.next_change(datetime!(2026-12-04 18:00:00 UTC)),
            Some(datetime!(2026-12-07 07:00:00 UTC))
        );
        assert_eq!(
            pool(vec![]).next_change(datetime!(2026-12-04 18:00:00 UTC)),
            None
        );
        let always = Window::new("* * * * *", "UTC", Some(1), None).unwrap();
        assert_eq!(
            pool(vec![always]).next_change(datetime!(2026-12-04 18:00:00 UTC)),
            None
        );
    }

    #[test]
    fn bad_windows_are_named() {
        let e = Window::new("0 * 8-17 * * mon-fri", "UTC", Some(1), None).unwrap_err();
        assert!(e.to_string().contains("has 6 fields"), "{e}");
        let e = Window::new("* 25 * * *", "UTC", Some(1), None).unwrap_err();
        assert!(e.to_string().contains("'* 25 * * *'"), "{e}");
        let e = Window::new("* 8 * * *", "Europe/Atlantis", Some(1), None).unwrap_err();
        assert!(e.to_string().contains("Europe/Atlantis"), "{e}");
    }
}
