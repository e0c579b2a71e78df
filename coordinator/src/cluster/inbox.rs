//! Job Hooks that reach a follower (ADR 0018): it checks them as the leader
//! would (the secret, the event, the body) and keeps them in the database;
//! the leader takes them in. A webhook sent while there is no leader is
//! served once one is elected, not only by its first poll.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::db::{Db, DbError};
use crate::demand::DemandHandle;
use crate::gitlab::webhook::{
    HEADER_EVENT, HEADER_TOKEN, JOB_HOOK_EVENT, WebhookError, parse_job_hook, token_matches,
};

/// At most this many Job Hooks wait for a leader; later ones get 503.
pub const MAX_WAITING: i64 = 10_000;

/// A follower's answer to one delivery: the status and a message for
/// GitLab's "Recent events" page.
pub async fn accept(
    db: &Db,
    secret: Option<&SecretString>,
    headers: &HeaderMap,
    body: &Bytes,
) -> (StatusCode, String) {
    let Some(secret) = secret else {
        return (
            StatusCode::UNAUTHORIZED,
            "webhooks are disabled (no secret configured)".into(),
        );
    };
    if !token_matches(secret, headers.get(HEADER_TOKEN).map(|v| v.as_bytes())) {
        return (
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-Gitlab-Token".into(),
        );
    }
    if headers.get(HEADER_EVENT).and_then(|v| v.to_str().ok()) != Some(JOB_HOOK_EVENT) {
        return (
            StatusCode::OK,
            "ignored: AutoGit only needs Job Hook events".into(),
        );
    }
    match parse_job_hook(body) {
        Ok(_) => {}
        Err(WebhookError::NotAJobEvent { object_kind }) => {
            return (
                StatusCode::OK,
                format!("ignored: object_kind {object_kind:?} is not a job event"),
            );
        }
        Err(WebhookError::Malformed(problem)) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("malformed Job Hook: {problem}"),
            );
        }
    }
    let now = match db.now_ms().await {
        Ok(now) => now,
        Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable".into(),
            );
        }
    };
    match db.inbox_webhook(body, now, MAX_WAITING).await {
        Ok(true) => (
            StatusCode::OK,
            "accepted by a follower; the leader takes it in".into(),
        ),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many webhooks waiting for a leader".into(),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable".into(),
        ),
    }
}

/// The leader: take kept Job Hooks in every `every` until `stop`, or until
/// its writes are fenced (it is no longer leader).
pub async fn drain_loop(db: Db, demand: DemandHandle, every: Duration, stop: CancellationToken) {
    const BATCH: i64 = 256;
    loop {
        let full = match db.take_inbox(BATCH).await {
            Ok(bodies) => {
                if !bodies.is_empty() {
                    tracing::info!(
                        count = bodies.len(),
                        "taking in webhooks that followers kept"
                    );
                }
                for body in &bodies {
                    demand.replay(body);
                }
                bodies.len() as i64 == BATCH
            }
            Err(DbError::Fenced { .. }) => return,
            Err(e) => {
                tracing::debug!(error = %e, "read the webhook inbox");
                false
            }
        };
        if full {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
