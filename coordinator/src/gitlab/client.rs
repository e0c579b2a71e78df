//! [`GitLabClient`]: the reqwest implementation of the [`GitLab`] trait.
//!
//! One client per token. Every call goes through [`GitLabClient::execute`],
//! which applies the client-side rate limit, the retry policy
//! ([`super::retry`]) and maps HTTP statuses to [`GitLabError`]. Listings
//! follow pagination ([`super::pagination`]) up to a page cap.
//!
//! The token travels only in the `PRIVATE-TOKEN` header, marked sensitive;
//! redirects are not followed (a redirect to another host would carry the
//! header along), and neither `Debug` nor any error contains it.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use super::GitLab;
use super::config::{GitLabClientConfig, api_urls};
use super::error::{GitLabError, GitLabResult};
use super::graphql;
use super::job::{Job, JobScope};
use super::pagination::next_page_url;
use super::rate_limit::RateLimiter;
use super::retry::{RetryPolicy, retry_after};
use super::runner::{CreateRunner, CreateRunnerBody, CreatedRunner, RunnerFilter, RunnerInfo};
use super::types::{Project, User, Version};

/// Header GitLab reads personal/project/group access tokens from.
const PRIVATE_TOKEN: &str = "PRIVATE-TOKEN";

/// Whether a call may be repeated after GitLab might have processed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idempotency {
    /// Reads and deletes: retry on 5xx and transport errors.
    Idempotent,
    /// Creations: retry only when the connection was never established.
    NotIdempotent,
}

/// Which client-side rate budget a call draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budget {
    /// Listings (jobs, projects, runners, GraphQL) and other reads.
    Reads,
    /// `GET /projects/:id/jobs/:job_id`: confirming one job (a webhook hint
    /// of a running or finished job). GitLab's 600/min limit is on
    /// *listing* jobs; confirmations of a finished burst must not make the
    /// next burst's pending listing wait in line.
    JobReads,
    /// `POST /user/runners`, `DELETE /runners/:id`.
    Runners,
}

/// GitLab API client over HTTPS (or HTTP for loopback tests).
#[derive(Clone)]
pub struct GitLabClient {
    http: reqwest::Client,
    /// Kept only to scrub it from error texts.
    token: SecretString,
    api: Url,
    graphql: Url,
    retry: RetryPolicy,
    /// Job listings and reads, GraphQL, runner listings: GitLab's
    /// documented 600/min for listing a project's jobs.
    limiter: Option<Arc<RateLimiter>>,
    /// Runner creation and deletion: a budget of their own, so a burst of
    /// new runners does not queue behind the poller (and the other way round).
    runner_limiter: Option<Arc<RateLimiter>>,
    job_limiter: Option<Arc<RateLimiter>>,
    max_pages: u32,
    per_page: u32,
    max_body_bytes: usize,
    observer: Option<super::config::RequestObserver>,
}

impl fmt::Debug for GitLabClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitLabClient")
            .field("api", &self.api.as_str())
            .field("token", &"[REDACTED]")
            .field("retry", &self.retry)
            .field("rate_limited", &self.limiter.is_some())
            .field("runner_rate_limited", &self.runner_limiter.is_some())
            .field("job_rate_limited", &self.job_limiter.is_some())
            .field("max_pages", &self.max_pages)
            .finish()
    }
}

impl GitLabClient {
    /// Builds a client. Fails on an unusable base URL or a token that cannot
    /// be an HTTP header value.
    pub fn new(config: GitLabClientConfig) -> GitLabResult<Self> {
        let (api, graphql) = api_urls(&config.base_url)?;
        if api.scheme() == "http" && !is_loopback(&api) {
            tracing::warn!(
                api = %api,
                "GitLab URL uses plain HTTP: the access token travels unencrypted"
            );
        }
        let mut token =
            HeaderValue::from_str(config.token.expose_secret().trim()).map_err(|_| {
                GitLabError::Config(
                    "the GitLab token contains characters not allowed in a header".into(),
                )
            })?;
        token.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(PRIVATE_TOKEN, token);
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let http = reqwest::Client::builder()
            .user_agent(concat!("autogit/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| GitLabError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(GitLabClient {
            http,
            token: SecretString::from(config.token.expose_secret().trim()),
            api,
            graphql,
            retry: RetryPolicy {
                max_attempts: config.retry.max_attempts.max(1),
                ..config.retry
            },
            limiter: config
                .requests_per_minute
                .map(|rpm| Arc::new(RateLimiter::per_minute(rpm))),
            runner_limiter: config
                .runner_requests_per_minute
                .map(|rpm| Arc::new(RateLimiter::per_minute(rpm))),
            job_limiter: config
                .job_requests_per_minute
                .map(|rpm| Arc::new(RateLimiter::per_minute(rpm))),
            max_pages: config.max_pages.max(1),
            per_page: config.per_page.clamp(1, 100),
            max_body_bytes: config.max_body_bytes,
            observer: config.observer,
        })
    }

    /// Removes the token from any error text (see [`GitLabError::redact`]).
    fn scrub<T>(&self, result: GitLabResult<T>) -> GitLabResult<T> {
        result.map_err(|e| e.redact(self.token.expose_secret()))
    }

    /// The normalised REST base (`.../api/v4`).
    pub fn api_url(&self) -> &Url {
        &self.api
    }

    /// `base/api/v4{path}` with the given query.
    fn url(&self, path: &str, query: &[(&str, String)]) -> GitLabResult<Url> {
        let mut url = Url::parse(&format!(
            "{}{path}",
            self.api.as_str().trim_end_matches('/')
        ))
        .map_err(|e| GitLabError::Config(format!("cannot build URL for {path}: {e}")))?;
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// Sends one call with rate limiting and retries; returns the successful
    /// response or the mapped error.
    async fn execute(
        &self,
        method: Method,
        url: &Url,
        endpoint: &str,
        body: Option<&[u8]>,
        idempotency: Idempotency,
        budget: Budget,
    ) -> GitLabResult<reqwest::Response> {
        let limiter = match budget {
            Budget::Reads => &self.limiter,
            Budget::JobReads => &self.job_limiter,
            Budget::Runners => &self.runner_limiter,
        };
        let max = self.retry.max_attempts;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let last = attempt >= max;
            if let Some(limiter) = limiter {
                limiter.acquire().await;
            }
            let mut req = self.http.request(method.clone(), url.clone());
            if let Some(body) = body {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_vec());
            }
            let sent = req.send().await;
            if let Some(obs) = &self.observer {
                let code = match &sent {
                    Ok(r) => r.status().as_u16().to_string(),
                    Err(_) => "transport".to_string(),
                };
                (obs.0)(&super::config::endpoint_template(endpoint), &code);
            }
            let resp = match sent {
                Ok(resp) => resp,
                Err(e) => {
                    let retryable = idempotency == Idempotency::Idempotent || e.is_connect();
                    let err = GitLabError::Transport {
                        endpoint: endpoint.to_owned(),
                        detail: error_chain(&e.without_url()),
                    };
                    if retryable && !last {
                        let wait = self.retry.backoff(attempt);
                        tracing::warn!(%endpoint, attempt, wait_ms = wait.as_millis() as u64, error = %err, "GitLab call failed; retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(err);
                }
            };
            let status = resp.status();
            tracing::debug!(%endpoint, attempt, status = status.as_u16(), "GitLab call");
            if status.is_success() {
                return Ok(resp);
            }
            match status {
                StatusCode::TOO_MANY_REQUESTS => {
                    let asked = retry_after(resp.headers());
                    let wait = asked.unwrap_or_else(|| self.retry.backoff(attempt));
                    if !last && wait <= self.retry.max_retry_after {
                        tracing::warn!(%endpoint, attempt, wait_ms = wait.as_millis() as u64, "GitLab rate limit (429); waiting as asked");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(GitLabError::RateLimited {
                        endpoint: endpoint.to_owned(),
                        retry_after: asked,
                    });
                }
                s if s.is_server_error() => {
                    if idempotency == Idempotency::Idempotent && !last {
                        let wait = self.retry.backoff(attempt);
                        tracing::warn!(%endpoint, attempt, status = s.as_u16(), wait_ms = wait.as_millis() as u64, "GitLab server error; retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(GitLabError::Server {
                        endpoint: endpoint.to_owned(),
                        status: s.as_u16(),
                    });
                }
                StatusCode::UNAUTHORIZED => {
                    return Err(GitLabError::Unauthorized {
                        endpoint: endpoint.to_owned(),
                    });
                }
                StatusCode::FORBIDDEN => {
                    return Err(GitLabError::Forbidden {
                        endpoint: endpoint.to_owned(),
                    });
                }
                StatusCode::NOT_FOUND => {
                    return Err(GitLabError::NotFound {
                        endpoint: endpoint.to_owned(),
                    });
                }
                s => {
                    let message = if s.is_redirection() {
                        let to = resp
                            .headers()
                            .get(reqwest::header::LOCATION)
                            .and_then(|v| v.to_str().ok())
                            .map(strip_query)
                            .unwrap_or_default();
                        format!(
                            "redirect to {to:?} not followed; check the GitLab URL (http vs https, path)"
                        )
                    } else {
                        let body = self.read_body(resp, endpoint).await.unwrap_or_default();
                        error_message(&body)
                    };
                    return Err(GitLabError::Status {
                        endpoint: endpoint.to_owned(),
                        status: s.as_u16(),
                        message,
                    });
                }
            }
        }
    }

    /// Reads a body up to the configured size.
    async fn read_body(
        &self,
        mut resp: reqwest::Response,
        endpoint: &str,
    ) -> GitLabResult<Vec<u8>> {
        let mut buf = Vec::new();
        loop {
            let chunk = resp.chunk().await.map_err(|e| GitLabError::Transport {
                endpoint: endpoint.to_owned(),
                detail: error_chain(&e.without_url()),
            })?;
            let Some(chunk) = chunk else {
                return Ok(buf);
            };
            if buf.len() + chunk.len() > self.max_body_bytes {
                return Err(GitLabError::Decode {
                    endpoint: endpoint.to_owned(),
                    what: "response body",
                    detail: format!("larger than {} bytes", self.max_body_bytes),
                });
            }
            buf.extend_from_slice(&chunk);
        }
    }

    /// Reads and decodes a JSON body.
    async fn decode<T: DeserializeOwned>(
        &self,
        resp: reqwest::Response,
        endpoint: &str,
        what: &'static str,
    ) -> GitLabResult<T> {
        let body = self.read_body(resp, endpoint).await?;
        serde_json::from_slice(&body).map_err(|e| GitLabError::Decode {
            endpoint: endpoint.to_owned(),
            what,
            detail: e.to_string(),
        })
    }

    /// `GET` of one JSON object.
    async fn get_one<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &'static str,
        budget: Budget,
    ) -> GitLabResult<T> {
        let endpoint = format!("GET {path}");
        let url = self.url(path, &[])?;
        let resp = self
            .execute(
                Method::GET,
                &url,
                &endpoint,
                None,
                Idempotency::Idempotent,
                budget,
            )
            .await?;
        self.decode(resp, &endpoint, what).await
    }

    /// `GET` of a paginated JSON array, following `Link`/`X-Next-Page`.
    async fn get_all<T: DeserializeOwned>(
        &self,
        path: &str,
        mut query: Vec<(&str, String)>,
        what: &'static str,
    ) -> GitLabResult<Vec<T>> {
        let endpoint = format!("GET {path}");
        query.push(("per_page", self.per_page.to_string()));
        let mut url = self.url(path, &query)?;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for page in 1..=self.max_pages {
            let resp = self
                .execute(
                    Method::GET,
                    &url,
                    &endpoint,
                    None,
                    Idempotency::Idempotent,
                    Budget::Reads,
                )
                .await?;
            let next = next_page_url(&url, resp.headers());
            let items: Vec<T> = self.decode(resp, &endpoint, what).await?;
            tracing::trace!(%endpoint, page, items = items.len(), "GitLab page");
            out.extend(items);
            let Some(next) = next else {
                return Ok(out);
            };
            seen.insert(url.to_string());
            if !seen.insert(next.to_string()) {
                return Err(GitLabError::Decode {
                    endpoint,
                    what: "pagination headers",
                    detail: format!("next page points back to an earlier page (page {page})"),
                });
            }
            url = next;
        }
        Err(GitLabError::TooManyPages {
            endpoint,
            limit: self.max_pages,
        })
    }
}

/// The calls themselves; the [`GitLab`] impl wraps each in [`GitLabClient::scrub`].
impl GitLabClient {
    async fn do_current_user(&self) -> GitLabResult<User> {
        self.get_one("/user", "user", Budget::Reads).await
    }

    async fn do_version(&self) -> GitLabResult<Version> {
        self.get_one("/version", "version", Budget::Reads).await
    }

    async fn do_member_projects(&self) -> GitLabResult<Vec<Project>> {
        self.get_all(
            "/projects",
            vec![("membership", "true".into())],
            "list of projects",
        )
        .await
    }

    async fn do_project(&self, project_id: u64) -> GitLabResult<Project> {
        self.get_one(&format!("/projects/{project_id}"), "project", Budget::Reads)
            .await
    }

    async fn do_jobs(&self, project_id: u64, scopes: &[JobScope]) -> GitLabResult<Vec<Job>> {
        let query = scopes
            .iter()
            .map(|s| ("scope[]", s.as_str().to_owned()))
            .collect();
        let jobs: Vec<Job> = self
            .get_all(
                &format!("/projects/{project_id}/jobs"),
                query,
                "list of jobs",
            )
            .await?;
        Ok(jobs
            .into_iter()
            .map(|j| j.with_project_fallback(Some(project_id)))
            .collect())
    }

    async fn do_job(&self, project_id: u64, job_id: u64) -> GitLabResult<Job> {
        let job: Job = self
            .get_one(
                &format!("/projects/{project_id}/jobs/{job_id}"),
                "job",
                Budget::JobReads,
            )
            .await?;
        Ok(job.with_project_fallback(Some(project_id)))
    }

    async fn do_instance_pending_jobs(&self) -> GitLabResult<Vec<Job>> {
        let endpoint = "POST /api/graphql".to_owned();
        let mut after: Option<String> = None;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for _ in 0..self.max_pages {
            let body = serde_json::to_vec(&graphql::Request {
                query: graphql::PENDING_JOBS_QUERY,
                variables: graphql::Variables {
                    first: graphql::PAGE_SIZE,
                    after: after.as_deref(),
                },
            })
            .map_err(|e| GitLabError::Decode {
                endpoint: endpoint.clone(),
                what: "GraphQL request",
                detail: e.to_string(),
            })?;
            let resp = self
                .execute(
                    Method::POST,
                    &self.graphql,
                    &endpoint,
                    Some(&body),
                    Idempotency::Idempotent,
                    Budget::Reads,
                )
                .await?;
            let page: graphql::Response = self.decode(resp, &endpoint, "GraphQL jobs").await?;
            let jobs = page.data.and_then(|d| d.jobs);
            if !page.errors.is_empty() {
                let message = page
                    .errors
                    .iter()
                    .map(|e| e.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                // GitLab's standard "resource not available" error.
                if jobs.is_none() && message.contains("don't have permission") {
                    return Err(GitLabError::Forbidden { endpoint });
                }
                return Err(GitLabError::GraphQl { endpoint, message });
            }
            let Some(conn) = jobs else {
                // `jobs: null` instead of a connection: not allowed to see
                // instance jobs.
                return Err(GitLabError::Forbidden { endpoint });
            };
            out.extend(
                conn.nodes
                    .into_iter()
                    .flatten()
                    .filter_map(graphql::Node::into_job),
            );
            match (conn.page_info.has_next_page, conn.page_info.end_cursor) {
                (true, Some(cursor)) => {
                    if !seen.insert(cursor.clone()) {
                        return Err(GitLabError::Decode {
                            endpoint,
                            what: "GraphQL pageInfo",
                            detail: "endCursor repeats an earlier page".into(),
                        });
                    }
                    after = Some(cursor);
                }
                _ => return Ok(out),
            }
        }
        Err(GitLabError::TooManyPages {
            endpoint,
            limit: self.max_pages,
        })
    }

    async fn do_create_runner(&self, request: &CreateRunner) -> GitLabResult<CreatedRunner> {
        let path = "/user/runners";
        let endpoint = format!("POST {path}");
        let body = serde_json::to_vec(&CreateRunnerBody::new(request)).map_err(|e| {
            GitLabError::Decode {
                endpoint: endpoint.clone(),
                what: "runner creation request",
                detail: e.to_string(),
            }
        })?;
        let url = self.url(path, &[])?;
        let resp = self
            .execute(
                Method::POST,
                &url,
                &endpoint,
                Some(&body),
                Idempotency::NotIdempotent,
                Budget::Runners,
            )
            .await?;
        let created: CreatedRunner = self.decode(resp, &endpoint, "created runner").await?;
        tracing::info!(
            runner_id = created.id,
            runner_type = request.runner_type.kind().as_str(),
            "created GitLab runner"
        );
        Ok(created)
    }

    async fn do_delete_runner(&self, runner_id: u64) -> GitLabResult<()> {
        let path = format!("/runners/{runner_id}");
        let endpoint = format!("DELETE {path}");
        let url = self.url(&path, &[])?;
        self.execute(
            Method::DELETE,
            &url,
            &endpoint,
            None,
            Idempotency::Idempotent,
            Budget::Runners,
        )
        .await?;
        Ok(())
    }

    async fn do_list_runners(&self, filter: &RunnerFilter) -> GitLabResult<Vec<RunnerInfo>> {
        let path = if filter.all {
            "/runners/all"
        } else {
            "/runners"
        };
        let mut query = Vec::new();
        if let Some(kind) = filter.kind {
            query.push(("type", kind.as_str().to_owned()));
        }
        if let Some(status) = &filter.status {
            query.push(("status", status.as_str().to_owned()));
        }
        if let Some(paused) = filter.paused {
            query.push(("paused", paused.to_string()));
        }
        if !filter.tag_list.is_empty() {
            query.push(("tag_list", filter.tag_list.join(",")));
        }
        self.get_all(path, query, "list of runners").await
    }
}

#[async_trait]
impl GitLab for GitLabClient {
    async fn current_user(&self) -> GitLabResult<User> {
        self.scrub(self.do_current_user().await)
    }

    async fn version(&self) -> GitLabResult<Version> {
        self.scrub(self.do_version().await)
    }

    async fn member_projects(&self) -> GitLabResult<Vec<Project>> {
        self.scrub(self.do_member_projects().await)
    }

    async fn project(&self, project_id: u64) -> GitLabResult<Project> {
        self.scrub(self.do_project(project_id).await)
    }

    async fn jobs(&self, project_id: u64, scopes: &[JobScope]) -> GitLabResult<Vec<Job>> {
        self.scrub(self.do_jobs(project_id, scopes).await)
    }

    async fn job(&self, project_id: u64, job_id: u64) -> GitLabResult<Job> {
        self.scrub(self.do_job(project_id, job_id).await)
    }

    async fn instance_pending_jobs(&self) -> GitLabResult<Vec<Job>> {
        self.scrub(self.do_instance_pending_jobs().await)
    }

    async fn create_runner(&self, request: &CreateRunner) -> GitLabResult<CreatedRunner> {
        self.scrub(self.do_create_runner(request).await)
    }

    async fn delete_runner(&self, runner_id: u64) -> GitLabResult<()> {
        self.scrub(self.do_delete_runner(runner_id).await)
    }

    async fn list_runners(&self, filter: &RunnerFilter) -> GitLabResult<Vec<RunnerInfo>> {
        self.scrub(self.do_list_runners(filter).await)
    }
}

/// The error and its causes, joined; without any URL.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    let mut depth = 0;
    while let Some(s) = source {
        depth += 1;
        if depth > 8 {
            break;
        }
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// GitLab's `message` / `error` field, else the start of the body.
fn error_message(body: &[u8]) -> String {
    const MAX: usize = 300;
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => v
            .get("message")
            .or_else(|| v.get("error"))
            .map(|m| match m {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| v.to_string()),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let text = text.trim();
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

/// `url` without its query string (a redirect target could carry secrets).
fn strip_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or_default().to_owned()
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_prefers_gitlab_fields_and_truncates() {
        assert_eq!(
            error_message(br#"{"message": {"tag_list": ["is invalid"]}}"#),
            r#"{"tag_list":["is invalid"]}"#
        );
        assert_eq!(
            error_message(br#"{"error": "runner_type is missing"}"#),
            "runner_type is missing"
        );
        let long = "x".repeat(1000);
        assert!(error_message(long.as_bytes()).len() < 320);
    }

    #[test]
    fn redirect_targets_lose_their_query() {
        assert_eq!(strip_query("https://x/y?token=1#f"), "https://x/y");
    }
}
