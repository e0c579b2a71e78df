//! Following GitLab's REST pagination.
//!
//! GitLab answers a listing with a `Link` header (`<...>; rel="next"`, the
//! only mechanism for keyset pagination) and, for offset pagination,
//! `X-Next-Page` (empty on the last page). `X-Total` and `X-Total-Pages` may be
//! absent on large instances, so they are never relied on.
//!
//! The next page's query string is taken from the link, but scheme, host,
//! port and path stay those of the request: a misconfigured `external_url`
//! on the GitLab side then cannot send our token to another host.

use reqwest::Url;
use reqwest::header::HeaderMap;

/// Default page size: the largest GitLab allows.
pub const DEFAULT_PER_PAGE: u32 = 100;

/// Default cap on pages per listing, so every loop ends (100 000 rows at
/// 100 per page).
pub const DEFAULT_MAX_PAGES: u32 = 1000;

/// The URL of the page after `current`, or `None` on the last page.
///
/// `Link: <...>; rel="next"` wins; `X-Next-Page: N` is the fallback. A
/// malformed header counts as absent (logged), which ends the listing.
pub fn next_page_url(current: &Url, headers: &HeaderMap) -> Option<Url> {
    if let Some(link) = next_link(headers) {
        match current.join(&link) {
            Ok(target) => {
                let mut next = current.clone();
                next.set_query(target.query());
                return Some(next);
            }
            Err(e) => tracing::warn!(error = %e, "ignoring unparsable Link rel=next"),
        }
    }
    let page = headers
        .get("x-next-page")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())?;
    let Ok(page) = page.parse::<u64>() else {
        tracing::warn!(value = page, "ignoring non-numeric X-Next-Page");
        return None;
    };
    Some(with_query_param(current, "page", &page.to_string()))
}

/// The target of the `rel="next"` entry of all `Link` headers, if any.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_link_values)
        .find_map(|entry| {
            let (target, params) = parse_link_entry(entry)?;
            params
                .iter()
                .any(|(k, v)| {
                    k.eq_ignore_ascii_case("rel")
                        && v.split_ascii_whitespace()
                            .any(|r| r.eq_ignore_ascii_case("next"))
                })
                .then(|| target.to_owned())
        })
}

/// Splits one `Link` header value into its comma-separated entries, keeping
/// commas inside `<...>` and quoted strings.
fn split_link_values(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut in_angle, mut in_quote, mut start) = (false, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            '<' if !in_quote => in_angle = true,
            '>' if !in_quote => in_angle = false,
            '"' if !in_angle => in_quote = !in_quote,
            ',' if !in_angle && !in_quote => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// `<target>; k=v; k="v"` into the target and its parameters.
fn parse_link_entry(entry: &str) -> Option<(&str, Vec<(&str, &str)>)> {
    let entry = entry.trim();
    let rest = entry.strip_prefix('<')?;
    let end = rest.find('>')?;
    let target = rest[..end].trim();
    let params = rest[end + 1..]
        .split(';')
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim(), v.trim().trim_matches('"')))
        })
        .collect();
    Some((target, params))
}

/// `url` with query parameter `key` set to `value` (replacing any previous
/// value), other parameters kept in order.
pub fn with_query_param(url: &Url, key: &str, value: &str) -> Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != key)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut next = url.clone();
    {
        let mut q = next.query_pairs_mut();
        q.clear();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        q.append_pair(key, value);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    #[test]
    fn follows_documented_link_header_keeping_our_origin() {
        // Shape from doc/api/rest/_index.md: several rels, absolute URLs on
        // GitLab's external_url.
        let current = url("http://127.0.0.1:8080/api/v4/projects/8/jobs?per_page=3&page=1");
        let h = headers(&[(
            "link",
            "<https://gitlab.example.com/api/v4/projects/8/jobs?page=1&per_page=3>; rel=\"prev\", \
             <https://gitlab.example.com/api/v4/projects/8/jobs?page=3&per_page=3>; rel=\"next\", \
             <https://gitlab.example.com/api/v4/projects/8/jobs?page=1&per_page=3>; rel=\"first\"",
        )]);
        let next = next_page_url(&current, &h).expect("has next");
        assert_eq!(
            next.as_str(),
            "http://127.0.0.1:8080/api/v4/projects/8/jobs?page=3&per_page=3"
        );
    }

    #[test]
    fn keyset_link_with_cursor_is_followed() {
        let current = url("http://127.0.0.1:1/api/v4/projects?pagination=keyset&per_page=2");
        let h = headers(&[(
            "link",
            "<http://127.0.0.1:1/api/v4/projects?id_after=42&pagination=keyset&per_page=2>; rel=\"next\"",
        )]);
        let next = next_page_url(&current, &h).expect("has next");
        assert_eq!(
            next.query(),
            Some("id_after=42&pagination=keyset&per_page=2")
        );
    }

    #[test]
    fn x_next_page_is_the_fallback_and_empty_means_done() {
        let current = url("http://127.0.0.1:1/api/v4/runners?per_page=100&page=2");
        let next = next_page_url(&current, &headers(&[("x-next-page", "3")])).expect("has next");
        assert_eq!(next.query(), Some("per_page=100&page=3"));
        assert!(next_page_url(&current, &headers(&[("x-next-page", "")])).is_none());
        assert!(next_page_url(&current, &headers(&[("x-next-page", "abc")])).is_none());
        assert!(next_page_url(&current, &HeaderMap::new()).is_none());
    }

    #[test]
    fn link_without_next_ends_even_if_other_rels_exist() {
        let current = url("http://127.0.0.1:1/api/v4/runners?page=3");
        let h = headers(&[(
            "link",
            "<http://x/api/v4/runners?page=1>; rel=\"first\", <http://x/api/v4/runners?page=3>; rel=\"last\"",
        )]);
        assert!(next_page_url(&current, &h).is_none());
    }

    #[test]
    fn unquoted_rel_and_multiple_link_headers_are_understood() {
        let h = headers(&[
            ("link", "<http://x/a?page=1>; rel=first"),
            ("link", "<http://x/a?page=2>; rel=next"),
        ]);
        assert_eq!(next_link(&h).as_deref(), Some("http://x/a?page=2"));
    }
}
