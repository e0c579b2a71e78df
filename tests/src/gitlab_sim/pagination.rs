//! Offset pagination exactly as GitLab's REST API does it.
//!
//! Source: doc/api/rest/_index.md "Pagination" and
//! lib/gitlab/pagination/offset_header_builder.rb:
//! - query `page` (default 1) and `per_page` (default 20, at most 100; GitLab's
//!   Kaminari `max_per_page` caps larger values, `per_page=0` is rejected);
//! - headers `X-Per-Page`, `X-Page`, `X-Next-Page` and `X-Prev-Page` (empty when there
//!   is no such page), `X-Total`, `X-Total-Pages` (at least 1);
//! - `Link` lists `prev` and `next` when they exist, then always `first` and `last`,
//!   each URL being the request URL with all its parameters plus `page`/`per_page`,
//!   sorted by key the way Rails' `Hash#to_query` does.

use axum::http::{HeaderMap, HeaderValue};

use super::params::Params;

pub const DEFAULT_PER_PAGE: usize = 20;
pub const MAX_PER_PAGE: usize = 100;

/// A resolved page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: usize,
    pub per_page: usize,
}

impl PageRequest {
    /// Reads `page` and `per_page` the way Grape + Kaminari do. Returns the Grape-style
    /// validation error text on bad input.
    pub fn from_params(params: &Params) -> Result<Self, String> {
        let page = match params.first("page") {
            None | Some("") => 1,
            Some(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| "page is invalid".to_owned())?,
        };
        let per_page = match params.first("per_page") {
            None | Some("") => DEFAULT_PER_PAGE as i64,
            Some(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| "per_page is invalid".to_owned())?,
        };
        if per_page == 0 {
            return Err("per_page has a value not allowed".to_owned());
        }
        // Kaminari: a negative per_page keeps the default, a page below 1 is page 1.
        let per_page = if per_page < 0 {
            DEFAULT_PER_PAGE
        } else {
            usize::try_from(per_page)
                .unwrap_or(MAX_PER_PAGE)
                .min(MAX_PER_PAGE)
        };
        let page = usize::try_from(page.max(1)).unwrap_or(1);
        Ok(PageRequest { page, per_page })
    }
}

/// One page cut out of a full result list, with the numbers for the headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: usize,
    pub per_page: usize,
    pub total: usize,
    pub total_pages: usize,
    pub next_page: Option<usize>,
    pub prev_page: Option<usize>,
}

/// Slices `all` like Kaminari (`next_page`/`prev_page` are absent out of range).
pub fn paginate<T>(all: Vec<T>, req: PageRequest) -> Page<T> {
    let total = all.len();
    let kaminari_pages = total.div_ceil(req.per_page);
    let out_of_range = req.page > kaminari_pages;
    let next_page = (!out_of_range && req.page < kaminari_pages).then_some(req.page + 1);
    let prev_page = (!out_of_range && req.page > 1).then_some(req.page - 1);
    let start = (req.page - 1).saturating_mul(req.per_page);
    let items = all.into_iter().skip(start).take(req.per_page).collect();
    Page {
        items,
        page: req.page,
        per_page: req.per_page,
        total,
        total_pages: kaminari_pages.max(1),
        next_page,
        prev_page,
    }
}

/// Writes GitLab's pagination headers for `page` into `headers`.
/// `base_url` is the instance URL (scheme, host, port), `path` the request path.
pub fn write_headers<T>(
    headers: &mut HeaderMap,
    page: &Page<T>,
    base_url: &str,
    path: &str,
    params: &Params,
) {
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("x-per-page", page.per_page.to_string());
    set("x-page", page.page.to_string());
    set(
        "x-next-page",
        page.next_page.map(|p| p.to_string()).unwrap_or_default(),
    );
    set(
        "x-prev-page",
        page.prev_page.map(|p| p.to_string()).unwrap_or_default(),
    );
    let href = |n: usize| {
        format!(
            "{}{}?{}",
            base_url.trim_end_matches('/'),
            path,
            params.to_query_with_page(n, page.per_page)
        )
    };
    let mut links = Vec::new();
    if let Some(p) = page.prev_page {
        links.push(format!("<{}>; rel=\"prev\"", href(p)));
    }
    if let Some(n) = page.next_page {
        links.push(format!("<{}>; rel=\"next\"", href(n)));
    }
    links.push(format!("<{}>; rel=\"first\"", href(1)));
    links.push(format!("<{}>; rel=\"last\"", href(page.total_pages)));
    set("link", links.join(", "));
    set("x-total", page.total.to_string());
    set("x-total-pages", page.total_pages.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(page: usize, per_page: usize) -> PageRequest {
        PageRequest { page, per_page }
    }

    #[test]
    fn middle_first_last_and_out_of_range_pages() {
        let p = paginate((1..=45).collect::<Vec<_>>(), req(2, 20));
        assert_eq!(p.items.first(), Some(&21));
        assert_eq!(
            (p.prev_page, p.next_page, p.total_pages),
            (Some(1), Some(3), 3)
        );
        let last = paginate((1..=45).collect::<Vec<_>>(), req(3, 20));
        assert_eq!(
            (last.items.len(), last.next_page, last.prev_page),
            (5, None, Some(2))
        );
        let beyond = paginate((1..=45).collect::<Vec<_>>(), req(9, 20));
        assert!(beyond.items.is_empty());
        assert_eq!((beyond.next_page, beyond.prev_page), (None, None));
        let empty = paginate(Vec::<u8>::new(), req(1, 20));
        assert_eq!(
            (empty.total, empty.total_pages, empty.next_page),
            (0, 1, None)
        );
    }

    #[test]
    fn per_page_rules() {
        let parse = |q: &str| PageRequest::from_params(&Params::from_query(q));
        assert_eq!(parse(""), Ok(req(1, 20)));
        assert_eq!(parse("per_page=500&page=0"), Ok(req(1, 100)));
        assert_eq!(parse("per_page=-3"), Ok(req(1, 20)));
        assert!(parse("per_page=0").is_err());
        assert!(parse("page=abc").is_err());
    }
}
