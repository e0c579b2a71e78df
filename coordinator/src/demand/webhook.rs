//! `POST /webhooks/gitlab`: GitLab's Job Hook, the fast path of demand.
//!
//! The handler is a thin adapter: it reads the headers and body, asks
//! [`DemandHandle::receive_webhook`] what to do, and maps the
//! [`WebhookOutcome`] to a status in [`reply`]. It never calls GitLab: an
//! accepted event goes to the tracker over a bounded queue, and GitLab gets
//! its answer within microseconds (it gives up after 10 s and disables
//! hooks that keep failing).
//!
//! | Situation | Answer | Effect |
//! |---|---|---|
//! | no webhook secret configured | 401 | none; logged once: webhooks are disabled, polling still finds demand |
//! | `X-Gitlab-Token` missing or wrong (constant-time compare) | 401 | none |
//! | `X-Gitlab-Event` is not `Job Hook` (or `object_kind` is not `build`) | 200 | ignored |
//! | `Idempotency-Key` (else `X-Gitlab-Webhook-UUID`) already accepted | 200 | none (counted as duplicate) |
//! | body is not a valid Job Hook | 400 naming the problem | none |
//! | tracker queue full | 503 | none; GitLab may resend, polling covers |
//! | otherwise | 200 | event queued for the tracker, which treats it as a hint and confirms it by fetching the job |
//!
//! A delivery's key is remembered (bounded LRU) only once the event was
//! queued, so a delivery answered 400 or 503 can be resent successfully.

use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::mpsc::error::TrySendError;

use super::DemandHandle;
use super::state::JobEvent;
use super::stats::WebhookOutcome;
use crate::gitlab::webhook::{
    HEADER_EVENT, HEADER_IDEMPOTENCY_KEY, HEADER_TOKEN, HEADER_WEBHOOK_UUID, JOB_HOOK_EVENT,
    WebhookError, parse_job_hook, token_matches,
};

/// Where GitLab delivers Job Hooks.
pub const WEBHOOK_PATH: &str = "/webhooks/gitlab";

/// Largest body accepted (Job Hook payloads are a few KiB).
pub const MAX_WEBHOOK_BODY: usize = 1024 * 1024;

/// Longest de-duplication key remembered; longer keys are not de-duplicated.
const MAX_KEY_LEN: usize = 256;

/// The answer to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookReply {
    /// What happened (also counted in the stats).
    pub outcome: WebhookOutcome,
    /// A short explanation for GitLab's "Recent events" page.
    pub message: String,
}

/// The headers the endpoint looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct WebhookHeaders<'a> {
    /// `X-Gitlab-Token`.
    pub token: Option<&'a [u8]>,
    /// `X-Gitlab-Event`.
    pub event: Option<&'a str>,
    /// `Idempotency-Key`, else `X-Gitlab-Webhook-UUID`.
    pub delivery_key: Option<&'a str>,
}

impl<'a> WebhookHeaders<'a> {
    /// Picks the relevant headers out of a request's.
    pub fn from_map(headers: &'a HeaderMap) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        WebhookHeaders {
            token: headers.get(HEADER_TOKEN).map(|v| v.as_bytes()),
            event: text(HEADER_EVENT),
            delivery_key: text(HEADER_IDEMPOTENCY_KEY)
                .or_else(|| text(HEADER_WEBHOOK_UUID))
                .map(str::trim)
                .filter(|k| !k.is_empty()),
        }
    }
}

/// The router serving [`WEBHOOK_PATH`]; merge it into the coordinator's.
pub fn webhook_router(handle: DemandHandle) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(receive))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BODY))
        .with_state(handle)
}

async fn receive(State(handle): State<DemandHandle>, headers: HeaderMap, body: Bytes) -> Response {
    reply(handle.receive_webhook(WebhookHeaders::from_map(&headers), &body))
}

/// The one place outcomes become HTTP statuses.
fn reply(r: WebhookReply) -> Response {
    let status = match r.outcome {
        WebhookOutcome::Accepted | WebhookOutcome::Duplicate | WebhookOutcome::Ignored => {
            StatusCode::OK
        }
        WebhookOutcome::Unauthorized => StatusCode::UNAUTHORIZED,
        WebhookOutcome::Malformed => StatusCode::BAD_REQUEST,
        WebhookOutcome::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, format!("{}\n", r.message)).into_response()
}

impl DemandHandle {
    /// A Job Hook a follower already accepted (its token checked, its body
    /// parsed) and kept in the database (`cluster/inbox.rs`): queued as a
    /// fresh delivery would be.
    pub fn replay(&self, body: &[u8]) -> WebhookOutcome {
        let outcome = match parse_job_hook(body) {
            Ok(hook) => match self.inner.hooks.try_send(JobEvent::from(&hook)) {
                Ok(()) => WebhookOutcome::Accepted,
                Err(_) => WebhookOutcome::Overloaded,
            },
            Err(WebhookError::NotAJobEvent { .. }) => WebhookOutcome::Ignored,
            Err(WebhookError::Malformed(_)) => WebhookOutcome::Malformed,
        };
        self.inner.counters.webhook(outcome);
        outcome
    }

    /// Processes one webhook delivery (see the module table). Never blocks
    /// and never calls GitLab.
    pub fn receive_webhook(&self, headers: WebhookHeaders<'_>, body: &[u8]) -> WebhookReply {
        let r = self.decide(headers, body);
        self.inner.counters.webhook(r.outcome);
        r
    }

    fn decide(&self, headers: WebhookHeaders<'_>, body: &[u8]) -> WebhookReply {
        let answer = |outcome, message: &str| WebhookReply {
            outcome,
            message: message.to_owned(),
        };
        let Some(secret) = &self.inner.webhook_secret else {
            if !self.inner.disabled_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "a GitLab webhook arrived but no demand.webhook_secret is configured: \
                     webhooks are disabled and refused with 401; polling still finds pending jobs"
                );
            }
            return answer(
                WebhookOutcome::Unauthorized,
                "webhooks are disabled on this AutoGit coordinator (no secret configured)",
            );
        };
        if !token_matches(secret, headers.token) {
            tracing::debug!(
                token_present = headers.token.is_some(),
                "webhook refused: wrong or missing X-Gitlab-Token"
            );
            return answer(
                WebhookOutcome::Unauthorized,
                "missing or wrong X-Gitlab-Token",
            );
        }
        if headers.event != Some(JOB_HOOK_EVENT) {
            return answer(
                WebhookOutcome::Ignored,
                "ignored: AutoGit only needs Job Hook events",
            );
        }
        let key = headers.delivery_key.filter(|k| k.len() <= MAX_KEY_LEN);
        if let Some(key) = key {
            let mut seen = self.inner.dedup.lock().unwrap_or_else(|p| p.into_inner());
            if !seen.insert(key.to_owned()) {
                return answer(
                    WebhookOutcome::Duplicate,
                    "duplicate delivery; already processed",
                );
            }
        }
        // From here on, forget the key unless the event is queued, so a
        // resend of a refused delivery is processed.
        let forget = |this: &Self| {
            if let Some(key) = key {
                let mut seen = this.inner.dedup.lock().unwrap_or_else(|p| p.into_inner());
                seen.remove(key);
            }
        };
        let hook = match parse_job_hook(body) {
            Ok(hook) => hook,
            Err(WebhookError::NotAJobEvent { object_kind }) => {
                forget(self);
                return WebhookReply {
                    outcome: WebhookOutcome::Ignored,
                    message: format!("ignored: object_kind {object_kind:?} is not a job event"),
                };
            }
            Err(WebhookError::Malformed(problem)) => {
                forget(self);
                tracing::debug!(problem = %crate::edge::wire(&problem), "malformed Job Hook");
                return WebhookReply {
                    outcome: WebhookOutcome::Malformed,
                    message: format!("malformed Job Hook: {problem}"),
                };
            }
        };
        match self.inner.hooks.try_send(JobEvent::from(&hook)) {
            Ok(()) => answer(WebhookOutcome::Accepted, "accepted"),
            Err(TrySendError::Full(_)) => {
                forget(self);
                if let Some(suppressed) = self
                    .inner
                    .overload_log
                    .admit(&(), tokio::time::Instant::now())
                {
                    tracing::warn!(
                        job_id = hook.build_id,
                        suppressed,
                        "demand tracker queue full; refusing webhook with 503 (polling covers)"
                    );
                }
                answer(
                    WebhookOutcome::Overloaded,
                    "busy; try again later (polling will also pick this job up)",
                )
            }
            Err(TrySendError::Closed(_)) => {
                forget(self);
                answer(WebhookOutcome::Overloaded, "shutting down; try again later")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demand::test_handle;
    use crate::gitlab::JobStatus;

    fn headers<'a>(token: &'a str, key: &'a str) -> WebhookHeaders<'a> {
        WebhookHeaders {
            token: Some(token.as_bytes()),
            event: Some(JOB_HOOK_EVENT),
            delivery_key: Some(key),
        }
    }

    fn body(job_id: u64) -> Vec<u8> {
        serde_json::json!({
            "object_kind": "build", "build_id": job_id, "build_status": "running",
            "project_id": 3, "runner": {"id": 9, "tags": null}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_full_queue_answers_503_and_the_delivery_can_be_resent() {
        let (handle, mut rx) = test_handle(Some("s"), 1);
        let r = handle.receive_webhook(headers("s", "a"), &body(1));
        assert_eq!(r.outcome, WebhookOutcome::Accepted);
        let r = handle.receive_webhook(headers("s", "b"), &body(2));
        assert_eq!(r.outcome, WebhookOutcome::Overloaded);
        assert_eq!(reply(r).status(), StatusCode::SERVICE_UNAVAILABLE);
        // The tracker catches up; GitLab resends "b": processed, not a duplicate.
        let first = rx.try_recv().expect("first event queued");
        assert_eq!(first.job_id, 1);
        assert_eq!(first.status, JobStatus::Running);
        assert_eq!(first.runner_id, Some(9));
        let r = handle.receive_webhook(headers("s", "b"), &body(2));
        assert_eq!(r.outcome, WebhookOutcome::Accepted);
        let r = handle.receive_webhook(headers("s", "b"), &body(2));
        assert_eq!(r.outcome, WebhookOutcome::Duplicate);
        let stats = handle.stats().webhooks;
        assert_eq!(
            (stats.accepted, stats.overloaded, stats.duplicate),
            (2, 1, 1)
        );
    }

    #[test]
    fn malformed_deliveries_are_not_remembered_as_seen() {
        let (handle, mut rx) = test_handle(Some("s"), 4);
        let r = handle.receive_webhook(headers("s", "k"), b"{not json");
        assert_eq!(r.outcome, WebhookOutcome::Malformed);
        assert_eq!(reply(r).status(), StatusCode::BAD_REQUEST);
        let r = handle.receive_webhook(headers("s", "k"), &body(5));
        assert_eq!(r.outcome, WebhookOutcome::Accepted);
        assert_eq!(rx.try_recv().map(|e| e.job_id).ok(), Some(5));
    }

    #[test]
    fn without_a_secret_everything_is_unauthorized() {
        let (handle, mut rx) = test_handle(None, 4);
        for token in ["", "s", "anything"] {
            let r = handle.receive_webhook(headers(token, "k"), &body(1));
            assert_eq!(r.outcome, WebhookOutcome::Unauthorized);
            assert_eq!(reply(r).status(), StatusCode::UNAUTHORIZED);
        }
        let no_token = WebhookHeaders {
            token: None,
            ..headers("", "k")
        };
        assert_eq!(
            handle.receive_webhook(no_token, &body(1)).outcome,
            WebhookOutcome::Unauthorized
        );
        assert!(rx.try_recv().is_err(), "nothing reached the tracker");
        assert_eq!(handle.stats().webhooks.unauthorized, 4);
    }

    #[test]
    fn headers_fall_back_to_the_webhook_uuid_for_the_key() {
        let mut map = HeaderMap::new();
        map.insert(HEADER_WEBHOOK_UUID, "uuid-1".parse().expect("header"));
        map.insert(HEADER_EVENT, JOB_HOOK_EVENT.parse().expect("header"));
        let h = WebhookHeaders::from_map(&map);
        assert_eq!(h.delivery_key, Some("uuid-1"));
        assert_eq!(h.token, None);
        map.insert(HEADER_IDEMPOTENCY_KEY, "idem-1".parse().expect("header"));
        assert_eq!(WebhookHeaders::from_map(&map).delivery_key, Some("idem-1"));
    }
}
