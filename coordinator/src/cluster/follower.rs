//! A replica without the lease: it serves the read-only admin API and the
//! dashboard from the database, what a load balancer needs, and GitLab's
//! webhooks (kept for the leader, `inbox.rs`); it sends everything else to
//! the leader, turns agents away, and waits for the lease.
//!
//! The routes are the leader's (`http::router` with
//! [`Serving::Follower`](crate::http::Serving)); here are the parts that
//! differ: `/readyz` (503 naming the leader, so a load balancer routes
//! there), the webhook, and [`to_leader`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::{HttpState, Serving};

/// Reads a follower cannot answer from the database: pending jobs live in
/// the leader's memory, and a sign-in's state in the memory of the replica
/// that began it.
const LEADER_ONLY_READS: [&str; 2] = ["/api/v1/jobs", "/oidc/"];

fn lease_ttl(s: &HttpState) -> Duration {
    match s.serving {
        Serving::Follower { lease_ttl, .. } => lease_ttl,
        Serving::Leader => Duration::ZERO,
    }
}

/// The leader's HTTP address, from the replicas it reported.
async fn leader(s: &HttpState) -> Option<String> {
    super::leader_http_addr(&s.db, lease_ttl(s)).await
}

/// `POST /webhooks/gitlab` on a follower: checked and kept for the leader.
pub fn webhook_router(state: HttpState) -> Router {
    Router::new()
        .route(
            crate::demand::WEBHOOK_PATH,
            post(webhook).layer(axum::extract::DefaultBodyLimit::max(
                crate::demand::MAX_WEBHOOK_BODY,
            )),
        )
        .with_state(state)
}

async fn webhook(State(s): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let secret = match &s.serving {
        Serving::Follower { webhook_secret, .. } => webhook_secret.as_ref(),
        Serving::Leader => None,
    };
    let (status, message) = super::inbox::accept(&s.db, secret, &headers, &body).await;
    (status, format!("{message}\n")).into_response()
}

/// `/readyz` on a follower: 503, with the leader's address.
pub async fn readyz(State(s): State<HttpState>) -> Response {
    let leader = leader(&s)
        .await
        .unwrap_or_else(|| "none (an election is under way)".into());
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [("x-autogit-role", "follower")],
        format!("follower\nleader: {leader}\n"),
    )
        .into_response()
}

/// Whether a follower answers `method path` itself.
fn answers_itself(method: &Method, path: &str) -> bool {
    let read = *method == Method::GET || *method == Method::HEAD;
    let webhook = *method == Method::POST && path == crate::demand::WEBHOOK_PATH;
    webhook || (read && !LEADER_ONLY_READS.iter().any(|p| path.starts_with(p)))
}

/// Middleware on a follower: reads and webhooks go on; anything that would
/// change state (and the leader-only reads) is a `307 Temporary Redirect`
/// to the same path on the leader, which keeps the method and body; `503`
/// while no replica leads.
pub async fn to_leader(State(s): State<HttpState>, req: Request, next: Next) -> Response {
    if answers_itself(req.method(), req.uri().path()) {
        let mut res = next.run(req).await;
        res.headers_mut().insert(
            "x-autogit-role",
            header::HeaderValue::from_static("follower"),
        );
        return res;
    }
    let role = [("x-autogit-role", "follower")];
    let Some(leader) = leader(&s).await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            role,
            axum::Json(serde_json::json!({
                "error": "this coordinator is a follower and no replica leads now (an election is under way); try again",
            })),
        )
            .into_response();
    };
    let scheme = if s.sessions.secure { "https" } else { "http" };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("{scheme}://{leader}{target}");
    match header::HeaderValue::from_str(&location) {
        Ok(location) => (
            StatusCode::TEMPORARY_REDIRECT,
            role,
            [(header::LOCATION, location)],
            axum::Json(serde_json::json!({
                "error": format!("this coordinator is a follower; the leader is at {leader}"),
                "leader": leader,
            })),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            role,
            "the leader's address is not valid in a URL\n",
        )
            .into_response(),
    }
}

/// The listeners a follower serves on, and hands back to the leader it
/// becomes.
pub struct Listeners {
    pub http: Arc<TcpListener>,
    pub http_tls: Option<Arc<rustls::ServerConfig>>,
    pub http_limits: crate::http::HttpLimits,
    pub grpc: Arc<TcpListener>,
}

/// A follower's serving tasks, stopped with [`Following::stop`].
pub struct Following {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Following {
    /// Stop serving as a follower; open follower connections are drained.
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Serve `routes` on the HTTP listener and turn agents away on the gRPC one.
pub fn serve(listeners: Listeners, routes: Router) -> Following {
    let stop = CancellationToken::new();
    let http = tokio::spawn({
        let stop = stop.clone();
        async move {
            let _ = crate::http::serve(
                listeners.http,
                listeners.http_tls,
                routes,
                listeners.http_limits,
                stop,
            )
            .await;
        }
    });
    let grpc = tokio::spawn(turn_agents_away(listeners.grpc, stop.clone()));
    Following {
        stop,
        tasks: vec![http, grpc],
    }
}

/// Close every connection on the agents' port at once: an agent tries its
/// next coordinator address instead of waiting here.
pub async fn turn_agents_away(listener: Arc<TcpListener>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((tcp, _)) => drop(tcp),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_answers_reads_and_webhooks_and_sends_the_rest_to_the_leader() {
        let (get, head, post) = (Method::GET, Method::HEAD, Method::POST);
        for (method, path) in [
            (&get, "/api/v1/agents"),
            (&head, "/api/v1/runners"),
            (&get, "/"),
            (&get, "/readyz"),
            (&get, "/metrics"),
            (&post, crate::demand::WEBHOOK_PATH),
        ] {
            assert!(answers_itself(method, path), "{method} {path}");
        }
        for (method, path) in [
            (&post, "/api/v1/agents/x/cordon"),
            (&post, "/api/v1/tokens"),
            (&Method::DELETE, "/api/v1/agents"),
            (&Method::PUT, "/api/v1/agents"),
            (&post, "/login"),
            (&get, "/api/v1/jobs"),
            (&get, "/oidc/login"),
            (&get, "/oidc/callback"),
        ] {
            assert!(!answers_itself(method, path), "{method} {path}");
        }
    }
}
