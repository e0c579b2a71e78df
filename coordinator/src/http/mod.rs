//! The HTTP edge (axum): health now; webhooks and the admin API mount here.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::db::Db;

/// Shared state of HTTP handlers.
#[derive(Clone, Debug)]
pub struct HttpState {
    pub db: Db,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    match sqlx::query("SELECT 1").execute(s.db.pool()).await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
}

/// Serve `router` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
