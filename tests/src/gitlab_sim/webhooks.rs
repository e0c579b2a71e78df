//! Asynchronous Job Hook delivery, one ordered queue per hook.
//!
//! Headers follow app/services/web_hook_service.rb (`build_headers`):
//! `Content-Type: application/json`, `User-Agent: GitLab/<version>`, `Idempotency-Key`
//! (one per event and hook, reused on retries), `X-Gitlab-Event: Job Hook`,
//! `X-Gitlab-Webhook-UUID` (new per attempt), `X-Gitlab-Instance` (the instance URL),
//! `X-Gitlab-Event-UUID` (one per event) and `X-Gitlab-Token` when the hook has one.
//!
//! A delivery succeeds on a 2xx or 3xx answer (redirects are not followed), and fails
//! on any other status, a connection error or the timeout (GitLab: 10 s). Failures feed
//! GitLab's auto-disabling (app/models/concerns/web_hooks/auto_disabling.rb): after the
//! 4th consecutive failure the hook is disabled for 1 minute, doubling per further
//! failure up to 1 day, and disabled for good after 40; a success resets the count.
//!
//! Simplifications: GitLab runs each delivery as a Sidekiq job and does not retry a
//! failed HTTP delivery by itself; the simulator likewise makes one attempt per event.
//! A "Resend request" (same `Idempotency-Key`) is available as
//! [`SimHandle::redeliver`](super::SimHandle::redeliver). Events for one hook are sent
//! in order; GitLab does not promise any order.

use std::collections::HashMap;
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::model::{AttemptOutcome, SimAttempt};
use super::server::Shared;
use super::state::DeliveryTask;
use super::timefmt::iso;

/// Fans delivery tasks out to one worker per hook until the channel closes.
pub async fn run_dispatcher(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<DeliveryTask>) {
    let timeout = shared.with_world(|w| w.settings.webhook_timeout);
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "build webhook HTTP client");
            return;
        }
    };
    let mut workers: HashMap<u64, mpsc::UnboundedSender<DeliveryTask>> = HashMap::new();
    let mut tasks = JoinSet::new();
    while let Some(task) = rx.recv().await {
        let tx = workers.entry(task.hook_id).or_insert_with(|| {
            let (tx, wrx) = mpsc::unbounded_channel();
            tasks.spawn(hook_worker(shared.clone(), client.clone(), wrx));
            tx
        });
        let _ = tx.send(task);
    }
}

/// What to do with one task, decided under the lock.
enum Plan {
    Skip(AttemptOutcome),
    Send {
        url: String,
        token: Option<String>,
        body: Vec<u8>,
        idempotency_key: String,
        event_uuid: String,
        instance: String,
        user_agent: String,
    },
    Gone,
}

async fn hook_worker(
    shared: Arc<Shared>,
    client: reqwest::Client,
    mut rx: mpsc::UnboundedReceiver<DeliveryTask>,
) {
    while let Some(task) = rx.recv().await {
        let plan = shared.with_world(|w| {
            let now = OffsetDateTime::now_utc();
            let Some(d) = w.deliveries.iter().find(|d| d.id == task.delivery_id) else {
                return Plan::Gone;
            };
            let Some(h) = w.hooks.get(&task.hook_id) else {
                return Plan::Gone;
            };
            if !h.executable(now) {
                return Plan::Skip(AttemptOutcome::SkippedDisabled);
            }
            if w.faults.drop_webhooks {
                return Plan::Skip(AttemptOutcome::Dropped);
            }
            Plan::Send {
                url: h.url.clone(),
                token: h.token.as_ref().map(|t| t.expose().to_owned()),
                body: serde_json::to_vec(&d.payload).unwrap_or_default(),
                idempotency_key: d.idempotency_key.clone(),
                event_uuid: d.event_uuid.clone(),
                instance: w.settings.external_url.clone(),
                user_agent: format!("GitLab/{}", w.settings.version),
            }
        });
        let webhook_uuid = uuid::Uuid::new_v4().to_string();
        let outcome = match plan {
            Plan::Gone => continue,
            Plan::Skip(outcome) => outcome,
            Plan::Send {
                url,
                token,
                body,
                idempotency_key,
                event_uuid,
                instance,
                user_agent,
            } => {
                let mut req = client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .header("User-Agent", user_agent)
                    .header("Idempotency-Key", idempotency_key)
                    .header("X-Gitlab-Event", "Job Hook")
                    .header("X-Gitlab-Webhook-UUID", webhook_uuid.clone())
                    .header("X-Gitlab-Instance", instance)
                    .header("X-Gitlab-Event-UUID", event_uuid)
                    .body(body);
                if let Some(t) = token {
                    req = req.header("X-Gitlab-Token", t.replace(['\r', '\n'], ""));
                }
                match req.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        if status.is_success() || status.is_redirection() {
                            AttemptOutcome::Delivered {
                                status: status.as_u16(),
                            }
                        } else {
                            AttemptOutcome::Failed {
                                status: Some(status.as_u16()),
                                error: format!("HTTP {}", status.as_u16()),
                            }
                        }
                    }
                    Err(e) => AttemptOutcome::Failed {
                        status: None,
                        error: if e.is_timeout() {
                            "timeout".to_owned()
                        } else {
                            "connection failed".to_owned()
                        },
                    },
                }
            }
        };
        shared.with_world(|w| {
            w.record_attempt(
                task.delivery_id,
                SimAttempt {
                    webhook_uuid,
                    at: iso(OffsetDateTime::now_utc()),
                    outcome,
                },
            );
        });
    }
}
