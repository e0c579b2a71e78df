//! Settings of the GitLab REST/GraphQL client and base-URL normalisation.
//!
//! Users may write the instance URL (`https://gitlab.example.com`), a URL
//! with a relative root (`https://example.com/gitlab`) or the API URL
//! (`https://gitlab.example.com/api/v4`); all three end up as the same API
//! base. URLs carrying credentials, a query or a fragment are refused.

use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;

use super::error::GitLabError;
use super::pagination::{DEFAULT_MAX_PAGES, DEFAULT_PER_PAGE};
use super::retry::RetryPolicy;

/// GitLab's default limit for listing a project's jobs, per user and minute.
pub const GITLAB_DEFAULT_JOBS_RATE_LIMIT: u32 = 600;

/// Default client-side budget for creating and deleting runners: 1200 a
/// minute (a burst of 120, then 18 a second). Self-managed GitLab has no
/// specific limit on these endpoints (its general authenticated-API limit
/// is off by default); lower it when an instance-wide limit is enabled.
pub const DEFAULT_RUNNER_REQUESTS_PER_MINUTE: u32 = 1200;

/// Default client-side budget for fetching single jobs (confirming webhook
/// hints): 600 a minute, GitLab's listing figure, though that limit is on
/// listing jobs, not on `GET /projects/:id/jobs/:job_id`.
pub const DEFAULT_JOB_REQUESTS_PER_MINUTE: u32 = 600;

/// Largest response body the client reads (a page of 100 jobs is well
/// under 1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Settings of [`GitLabClient`](super::GitLabClient).
#[derive(Debug, Clone)]
pub struct GitLabClientConfig {
    /// Instance URL or API URL (see the module docs).
    pub base_url: String,
    /// Personal, group, project or admin access token, sent as
    /// `PRIVATE-TOKEN`.
    pub token: SecretString,
    /// Limit for establishing a connection (TCP + TLS).
    pub connect_timeout: Duration,
    /// Limit for one whole request, body included (per attempt).
    pub request_timeout: Duration,
    /// Retry behaviour.
    pub retry: RetryPolicy,
    /// Client-side cap on requests per minute (all calls of this client
    /// together); `None` disables the limiter. Defaults to GitLab's default
    /// jobs-listing limit, 600.
    pub requests_per_minute: Option<u32>,
    /// Client-side cap on runner creations and deletions per minute, a
    /// budget of its own (GitLab's jobs-listing limit does not apply to
    /// them); `None` disables it. Defaults to
    /// [`DEFAULT_RUNNER_REQUESTS_PER_MINUTE`].
    pub runner_requests_per_minute: Option<u32>,
    /// Client-side cap on single-job fetches per minute, a budget of its
    /// own so confirmations never delay a pending-jobs listing; `None`
    /// disables it. Defaults to [`DEFAULT_JOB_REQUESTS_PER_MINUTE`].
    pub job_requests_per_minute: Option<u32>,
    /// Most pages one listing follows before giving up with
    /// [`GitLabError::TooManyPages`].
    pub max_pages: u32,
    /// `per_page` of listings (GitLab's maximum is 100).
    pub per_page: u32,
    /// Largest response body accepted.
    pub max_body_bytes: usize,
    /// Told the outcome of every HTTP attempt (for metrics).
    pub observer: Option<RequestObserver>,
}

/// A callback told `(endpoint, code)` for every HTTP attempt: the endpoint
/// as `METHOD /path` with numeric ids replaced by `:id`, the code as the HTTP
/// status or `transport`.
#[derive(Clone)]
pub struct RequestObserver(pub std::sync::Arc<ObserveFn>);

/// `(endpoint, code)` callback of a [`RequestObserver`].
pub type ObserveFn = dyn Fn(&str, &str) + Send + Sync;

impl std::fmt::Debug for RequestObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestObserver")
    }
}

/// `GET /projects/7/jobs/42` → `GET /projects/:id/jobs/:id` (bounded label values).
pub fn endpoint_template(endpoint: &str) -> String {
    endpoint
        .split('/')
        .map(|seg| {
            if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                ":id"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl GitLabClientConfig {
    /// Defaults: 10 s connect, 30 s request, 4 attempts, 600 requests per
    /// minute, 100 per page, at most 1000 pages.
    pub fn new(base_url: impl Into<String>, token: SecretString) -> Self {
        GitLabClientConfig {
            base_url: base_url.into(),
            token,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            requests_per_minute: Some(GITLAB_DEFAULT_JOBS_RATE_LIMIT),
            runner_requests_per_minute: Some(DEFAULT_RUNNER_REQUESTS_PER_MINUTE),
            job_requests_per_minute: Some(DEFAULT_JOB_REQUESTS_PER_MINUTE),
            max_pages: DEFAULT_MAX_PAGES,
            per_page: DEFAULT_PER_PAGE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            observer: None,
        }
    }
}

/// The REST base (`.../api/v4`, no trailing slash) and the GraphQL endpoint
/// (`.../api/graphql`) for a user-supplied URL.
pub fn api_urls(base_url: &str) -> Result<(Url, Url), GitLabError> {
    let url = Url::parse(base_url.trim()).map_err(|e| {
        GitLabError::Config(format!(
            "GitLab URL {:?} is not a URL: {e}",
            redact(base_url)
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(GitLabError::Config(format!(
            "GitLab URL must be http or https, not {:?}",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(GitLabError::Config(
            "GitLab URL must not contain credentials; configure the token instead".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(GitLabError::Config(
            "GitLab URL must not contain a query or fragment".into(),
        ));
    }
    if url.host_str().is_none() {
        return Err(GitLabError::Config("GitLab URL has no host".into()));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    let root = path.strip_suffix("/api/v4").unwrap_or(&path);
    let mut api = url.clone();
    api.set_path(&format!("{root}/api/v4"));
    let mut graphql = url;
    graphql.set_path(&format!("{root}/api/graphql"));
    Ok((api, graphql))
}

/// The URL for an error message, or a placeholder if it might carry
/// credentials (`user:password@`).
fn redact(raw: &str) -> String {
    if raw.contains('@') {
        "<URL with credentials, not shown>".to_owned()
    } else {
        raw.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(s: &str) -> (String, String) {
        let (a, g) = api_urls(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (a.to_string(), g.to_string())
    }

    #[test]
    fn instance_and_api_urls_normalise_to_the_same_base() {
        let expected = (
            "https://gitlab.example.com/api/v4".to_owned(),
            "https://gitlab.example.com/api/graphql".to_owned(),
        );
        assert_eq!(urls("https://gitlab.example.com"), expected);
        assert_eq!(urls("https://gitlab.example.com/"), expected);
        assert_eq!(urls("https://gitlab.example.com/api/v4"), expected);
        assert_eq!(urls("https://gitlab.example.com/api/v4/"), expected);
        assert_eq!(
            urls("http://127.0.0.1:8080/gitlab"),
            (
                "http://127.0.0.1:8080/gitlab/api/v4".to_owned(),
                "http://127.0.0.1:8080/gitlab/api/graphql".to_owned()
            )
        );
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_credentials() {
        let err = api_urls("https://user:hunter2@gitlab.example.com").expect_err("credentials");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(api_urls("ftp://gitlab.example.com").is_err());
        assert!(api_urls("https://gitlab.example.com/?private_token=x").is_err());
        assert!(api_urls("not a url").is_err());
        let err = api_urls("https://user:hunter2@exa mple.com").expect_err("unparsable");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
