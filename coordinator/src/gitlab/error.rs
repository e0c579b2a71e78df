//! Errors of the GitLab client, typed so callers can branch on them.
//!
//! Every variant names the endpoint as `METHOD /path` (the path under
//! `/api/v4`, never the query string and never a token), so a log line says
//! which call failed without leaking anything secret.

use std::time::Duration;

/// A failed call to GitLab.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitLabError {
    /// 401: the token is missing, invalid, expired or revoked.
    #[error("{endpoint}: GitLab rejected the token (401 Unauthorized)")]
    Unauthorized {
        /// `METHOD /path` of the call.
        endpoint: String,
    },
    /// 403: the token is valid but lacks the scope or role for this call.
    #[error("{endpoint}: the token lacks the scope or role for this call (403 Forbidden)")]
    Forbidden {
        /// `METHOD /path` of the call.
        endpoint: String,
    },
    /// 404: the resource does not exist or is not visible to the token.
    /// Deleting a runner that is already gone ends here: callers treat it as
    /// success.
    #[error("{endpoint}: not found or not visible to this token (404 Not Found)")]
    NotFound {
        /// `METHOD /path` of the call.
        endpoint: String,
    },
    /// 429: rate limited, and waiting as GitLab asked was not possible within
    /// the retry budget.
    #[error("{endpoint}: rate limited by GitLab (429), retry after {retry_after:?}")]
    RateLimited {
        /// `METHOD /path` of the call.
        endpoint: String,
        /// The `Retry-After` GitLab sent, if any.
        retry_after: Option<Duration>,
    },
    /// 5xx after the retries were spent (or on a call that is not retried).
    #[error("{endpoint}: GitLab server error (HTTP {status})")]
    Server {
        /// `METHOD /path` of the call.
        endpoint: String,
        /// The HTTP status code.
        status: u16,
    },
    /// Any other unexpected status (400, 409, 422, a redirect, ...). Never
    /// retried.
    #[error("{endpoint}: unexpected HTTP {status}: {message}")]
    Status {
        /// `METHOD /path` of the call.
        endpoint: String,
        /// The HTTP status code.
        status: u16,
        /// GitLab's `message`/`error` field or the start of the body.
        message: String,
    },
    /// The request did not complete: DNS, connect, TLS, timeout, reset.
    #[error("{endpoint}: cannot reach GitLab: {detail}")]
    Transport {
        /// `METHOD /path` of the call.
        endpoint: String,
        /// The transport error and its causes, without the URL.
        detail: String,
    },
    /// The response arrived but did not have the documented shape.
    #[error("{endpoint}: cannot decode {what}: {detail}")]
    Decode {
        /// `METHOD /path` of the call.
        endpoint: String,
        /// What was being decoded ("list of jobs", "Link header", ...).
        what: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// The GraphQL endpoint answered with `errors`.
    #[error("{endpoint}: GraphQL error: {message}")]
    GraphQl {
        /// `METHOD /path` of the call.
        endpoint: String,
        /// The joined error messages.
        message: String,
    },
    /// A paginated listing went past the configured page cap.
    #[error("{endpoint}: more than {limit} pages; stopped following pagination")]
    TooManyPages {
        /// `METHOD /path` of the call.
        endpoint: String,
        /// The configured cap.
        limit: u32,
    },
    /// The client configuration is unusable (bad base URL, bad token bytes).
    #[error("invalid GitLab client configuration: {0}")]
    Config(String),
}

impl GitLabError {
    /// True for a 404, which callers of idempotent deletes treat as success.
    pub fn is_not_found(&self) -> bool {
        matches!(self, GitLabError::NotFound { .. })
    }

    /// True for errors worth another try later (rate limits, 5xx,
    /// transport). Authentication and other 4xx errors are not: retrying them
    /// only burns the rate limit.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GitLabError::RateLimited { .. }
                | GitLabError::Server { .. }
                | GitLabError::Transport { .. }
        )
    }

    /// The HTTP status behind this error, if there was one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            GitLabError::Unauthorized { .. } => Some(401),
            GitLabError::Forbidden { .. } => Some(403),
            GitLabError::NotFound { .. } => Some(404),
            GitLabError::RateLimited { .. } => Some(429),
            GitLabError::Server { status, .. } | GitLabError::Status { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

impl GitLabError {
    /// Replaces every occurrence of `secret` in the error's text with
    /// `[REDACTED]`: a last line of defence should GitLab (or a proxy) ever
    /// echo the token into a body that ends up in an error message.
    pub(crate) fn redact(self, secret: &str) -> Self {
        if secret.is_empty() {
            return self;
        }
        let r = |s: String| {
            if s.contains(secret) {
                s.replace(secret, "[REDACTED]")
            } else {
                s
            }
        };
        match self {
            GitLabError::Unauthorized { endpoint } => GitLabError::Unauthorized {
                endpoint: r(endpoint),
            },
            GitLabError::Forbidden { endpoint } => GitLabError::Forbidden {
                endpoint: r(endpoint),
            },
            GitLabError::NotFound { endpoint } => GitLabError::NotFound {
                endpoint: r(endpoint),
            },
            GitLabError::RateLimited {
                endpoint,
                retry_after,
            } => GitLabError::RateLimited {
                endpoint: r(endpoint),
                retry_after,
            },
            GitLabError::Server { endpoint, status } => GitLabError::Server {
                endpoint: r(endpoint),
                status,
            },
            GitLabError::Status {
                endpoint,
                status,
                message,
            } => GitLabError::Status {
                endpoint: r(endpoint),
                status,
                message: r(message),
            },
            GitLabError::Transport { endpoint, detail } => GitLabError::Transport {
                endpoint: r(endpoint),
                detail: r(detail),
            },
            GitLabError::Decode {
                endpoint,
                what,
                detail,
            } => GitLabError::Decode {
                endpoint: r(endpoint),
                what,
                detail: r(detail),
            },
            GitLabError::GraphQl { endpoint, message } => GitLabError::GraphQl {
                endpoint: r(endpoint),
                message: r(message),
            },
            GitLabError::TooManyPages { endpoint, limit } => GitLabError::TooManyPages {
                endpoint: r(endpoint),
                limit,
            },
            GitLabError::Config(message) => GitLabError::Config(r(message)),
        }
    }
}

/// Result of a GitLab call.
pub type GitLabResult<T> = Result<T, GitLabError>;
