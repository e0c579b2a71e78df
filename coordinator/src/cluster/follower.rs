//! A replica without the lease: it serves what a load balancer and an
//! operator need, turns agents away, and waits for the lease.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::metrics::Metrics;

#[derive(Clone)]
struct FollowerState {
    db: Db,
    lease_ttl: Duration,
    metrics: Option<Arc<Metrics>>,
    webhook_secret: Option<SecretString>,
}

/// The follower's HTTP routes: `/healthz` 200, `/readyz` 503 naming the
/// leader (so a load balancer routes to the leader), `/metrics` when they
/// are anonymous, GitLab's webhooks kept for the leader (`inbox.rs`), and
/// 503 with the leader's address for everything else.
pub fn router(
    db: Db,
    lease_ttl: Duration,
    metrics: Option<Arc<Metrics>>,
    webhook_secret: Option<SecretString>,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .route(
            crate::demand::WEBHOOK_PATH,
            post(webhook).layer(axum::extract::DefaultBodyLimit::max(
                crate::demand::MAX_WEBHOOK_BODY,
            )),
        )
        .fallback(elsewhere)
        .with_state(FollowerState {
            db,
            lease_ttl,
            metrics,
            webhook_secret,
        })
}

async fn webhook(State(s): State<FollowerState>, headers: HeaderMap, body: Bytes) -> Response {
    let (status, message) =
        super::inbox::accept(&s.db, s.webhook_secret.as_ref(), &headers, &body).await;
    (status, format!("{message}\n")).into_response()
}

async fn leader(s: &FollowerState) -> String {
    super::leader_http_addr(&s.db, s.lease_ttl)
        .await
        .unwrap_or_else(|| "none (an election is under way)".into())
}

async fn readyz(State(s): State<FollowerState>) -> Response {
    let leader = leader(&s).await;
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [("x-autogit-role", "follower")],
        format!("follower\nleader: {leader}\n"),
    )
        .into_response()
}

async fn scrape(State(s): State<FollowerState>) -> Response {
    match s.metrics.as_ref().map(|m| m.encode()) {
        Some(Ok(body)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Some(Err(_)) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        None => elsewhere(State(s)).await,
    }
}

async fn elsewhere(State(s): State<FollowerState>) -> Response {
    let leader = leader(&s).await;
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [("x-autogit-role", "follower")],
        axum::Json(serde_json::json!({
            "error": format!("this coordinator is a follower; the leader is at {leader}"),
            "leader": leader,
        })),
    )
        .into_response()
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
