//! The HTTP edge (axum): health, metrics, GitLab webhooks, the admin API and
//! the dashboard.
//!
//! Anonymous: `/healthz`, `/readyz`, `/metrics` (when `anonymous`), the
//! login form, `POST /login` and the single sign-on pair `GET /oidc/login`
//! and `GET /oidc/callback` ([`oidc`]). `POST /logout` ends a dashboard
//! session.
//! Everything else needs an admin ([`auth`]: bearer token, client
//! certificate, or a session cookie under the CSRF rules). GitLab webhooks
//! authenticate with their own secret.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod metrics;
pub mod oidc;
pub mod proxy;
pub mod serve;
pub mod tls;

pub use serve::{HttpLimits, serve};

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};

use crate::audit::Audit;
use crate::db::Db;
use crate::demand::DemandHandle;
use crate::fleet::Fleet;
use crate::runners::ReconcilerHandle;

/// Shared state of HTTP handlers.
#[derive(Clone, Debug)]
pub struct HttpState {
    pub db: Db,
    pub fleet: Fleet,
    pub audit: Audit,
    pub reconciler: ReconcilerHandle,
    pub demand: Option<DemandHandle>,
    pub pools: crate::pools::LivePools,
    /// `POST /api/v1/reload`.
    pub reloader: crate::reload::Reloader,
    pub ca_fingerprint: autogit_certs::Fingerprint,
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    pub metrics_access: crate::config::MetricsAccess,
    pub sessions: SessionSettings,
    /// Reverse proxies believed, and forward auth (`[proxy]`, `[roles]`).
    pub proxy: Arc<proxy::ProxyTrust>,
    /// Single sign-on (`[oidc]`); `None`: off.
    pub oidc: Option<Arc<crate::admin::oidc::Oidc>>,
    /// The leader serves from its memory; a follower from the database.
    pub serving: Serving,
}

/// Which replica serves the HTTP edge (ADR 0018).
#[derive(Clone, Debug)]
pub enum Serving {
    /// The leader (or the one SQLite coordinator): every route, live views.
    Leader,
    /// A follower (`cluster/follower.rs`): the read-only API and dashboard
    /// from the database, GitLab's webhooks kept for the leader, and a
    /// redirect to the leader for everything else.
    Follower {
        lease_ttl: std::time::Duration,
        webhook_secret: Option<secrecy::SecretString>,
    },
}

/// Dashboard session cookie settings.
#[derive(Clone, Copy, Debug)]
pub struct SessionSettings {
    /// Session lifetime (`session_ttl`).
    pub ttl: std::time::Duration,
    /// Mark the cookie `Secure` (served over HTTPS: `http_tls`).
    pub secure: bool,
}

pub fn router(state: HttpState) -> Router {
    use crate::config::MetricsAccess;
    let mut protected = api::router()
        .route("/", get(dashboard::index))
        .route("/dashboard.js", get(dashboard::script));
    let mut public = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            match state.serving {
                Serving::Leader => get(readyz),
                Serving::Follower { .. } => get(crate::cluster::follower::readyz),
            },
        )
        .route("/login", post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/oidc/login", get(oidc::login))
        .route("/oidc/callback", get(oidc::callback));
    match (state.metrics.is_some(), state.metrics_access) {
        (true, MetricsAccess::Anonymous) => public = public.route("/metrics", get(metrics::scrape)),
        (true, MetricsAccess::Authenticated) => {
            protected = protected.route("/metrics", get(metrics::scrape))
        }
        _ => {}
    }
    let protected = protected.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_admin,
    ));
    let mut app = protected.merge(public).with_state(state.clone());
    match (&state.demand, &state.serving) {
        (Some(d), Serving::Leader) => app = app.merge(crate::demand::webhook_router(d.clone())),
        (_, Serving::Follower { .. }) => {
            app = app
                .merge(crate::cluster::follower::webhook_router(state.clone()))
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    crate::cluster::follower::to_leader,
                ))
        }
        (None, Serving::Leader) => {}
    }
    app
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    match s.db.ping().await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
}
