//! Serde helpers for the quirks of GitLab's JSON.
//!
//! GitLab writes timestamps in more than one format (ISO 8601 in the REST API,
//! `2021-02-23 02:41:37 UTC` in older webhook fields), sends `null` where a
//! list is empty, and sometimes sends numeric ids as strings. These helpers
//! accept all of those, so one odd field does not reject a whole payload.

use serde::{Deserialize, Deserializer, de};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// Parses a GitLab timestamp: RFC 3339 (`2015-12-24T15:51:21.802Z`,
/// `...+01:00`), `2021-02-23 02:41:37 UTC`, or `2021-04-28 21:50:00 +0200`.
pub fn parse_gitlab_time(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t);
    }
    if let Some(naive) = text.strip_suffix(" UTC") {
        let fmt = format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        if let Ok(t) = time::PrimitiveDateTime::parse(naive, &fmt) {
            return Some(t.assume_utc());
        }
    }
    let fmt = format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
    );
    OffsetDateTime::parse(text, &fmt).ok()
}

/// `Option<OffsetDateTime>` from `null`, a missing field, or any format
/// [`parse_gitlab_time`] accepts.
pub fn opt_time<'de, D>(deserializer: D) -> Result<Option<OffsetDateTime>, D::Error>
where
    D: Deserializer<'de>,
{
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => parse_gitlab_time(&s)
            .map(Some)
            .ok_or_else(|| de::Error::custom(format!("unrecognised timestamp {s:?}"))),
    }
}

/// `T::default()` when the field is `null` (GitLab sends `"tag_list": null`
/// in places).
pub fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// `Some(T)` when the field holds a valid `T`, `None` when it is missing,
/// `null` or a value this code does not know (a newer GitLab's enum value).
pub fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrString {
    Num(u64),
    Str(String),
}

/// A `u64` id sent either as a number or as a numeric string.
pub fn flexible_u64<'de, D>(deserializer: D) -> Result<u64, D::Error>
where
    D: Deserializer<'de>,
{
    match NumOrString::deserialize(deserializer)? {
        NumOrString::Num(n) => Ok(n),
        NumOrString::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| de::Error::custom(format!("expected a numeric id, got {s:?}"))),
    }
}

/// The numeric id at the end of a GraphQL global id such as
/// `gid://gitlab/Ci::Build/1977`.
pub fn parse_global_id(gid: &str) -> Option<u64> {
    gid.strip_prefix("gid://gitlab/")?
        .rsplit_once('/')?
        .1
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_timestamp_formats_gitlab_uses() {
        let iso = parse_gitlab_time("2015-12-24T15:51:21.802Z").expect("iso");
        assert_eq!(iso.unix_timestamp(), 1_450_972_281);
        let offset = parse_gitlab_time("2015-12-24T16:51:14.000+01:00").expect("offset");
        assert_eq!(offset.unix_timestamp(), 1_450_972_274);
        let utc = parse_gitlab_time("2019-11-21 13:34:18 UTC").expect("utc suffix");
        assert_eq!(utc.unix_timestamp(), 1_574_343_258);
        let hook = parse_gitlab_time("2021-04-28 21:50:00 +0200").expect("numeric offset");
        assert_eq!(hook.unix_timestamp(), 1_619_639_400);
        assert!(parse_gitlab_time("yesterday").is_none());
        assert!(parse_gitlab_time("").is_none());
    }

    #[test]
    fn global_ids_yield_their_number() {
        assert_eq!(parse_global_id("gid://gitlab/Ci::Build/1977"), Some(1977));
        assert_eq!(parse_global_id("gid://gitlab/Project/380"), Some(380));
        assert_eq!(parse_global_id("1977"), None);
        assert_eq!(parse_global_id("gid://gitlab/Project/abc"), None);
    }
}
