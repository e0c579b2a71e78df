//! Test controls under `/sim`: enqueue jobs, register hooks, inject faults, make users
//! and dump state. No authentication, but only loopback peers are served.
//!
//! Every endpoint mirrors a [`SimHandle`](crate::gitlab_sim::SimHandle) method and uses
//! the types in [`model`](crate::gitlab_sim::model), so the JSON is the serde form of
//! those types.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::gitlab_sim::model::{FaultSpec, NewHook, NewJob, NewUser};
use crate::gitlab_sim::server::{Shared, SimHandle};

fn handle(s: &Arc<Shared>) -> SimHandle {
    SimHandle::from_shared(s.clone())
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "message": format!("404 {what} Not Found") })),
    )
        .into_response()
}

/// Refuses `/sim` requests that do not come from a loopback address.
pub async fn loopback_only(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if peer.ip().is_loopback() {
        next.run(req).await
    } else {
        (
            StatusCode::FORBIDDEN,
            Json(json!({ "message": "403 Forbidden - /sim is loopback only" })),
        )
            .into_response()
    }
}

pub async fn create_job(State(s): State<Arc<Shared>>, Json(job): Json<NewJob>) -> Response {
    (StatusCode::CREATED, Json(handle(&s).create_job(job))).into_response()
}

pub async fn get_job(State(s): State<Arc<Shared>>, Path(id): Path<u64>) -> Response {
    match handle(&s).job(id) {
        Some(j) => Json(j).into_response(),
        None => not_found("Job"),
    }
}

pub async fn cancel_job(State(s): State<Arc<Shared>>, Path(id): Path<u64>) -> Response {
    match handle(&s).cancel_job(id) {
        Some(j) => Json(j).into_response(),
        None => not_found("Job"),
    }
}

pub async fn add_hook(State(s): State<Arc<Shared>>, Json(hook): Json<NewHook>) -> Response {
    match handle(&s).add_hook(hook) {
        Ok(h) => (StatusCode::CREATED, Json(h)).into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "message": e })),
        )
            .into_response(),
    }
}

pub async fn enable_hook(State(s): State<Arc<Shared>>, Path(id): Path<u64>) -> Response {
    if handle(&s).enable_hook(id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found("Hook")
    }
}

pub async fn redeliver(State(s): State<Arc<Shared>>, Path(id): Path<u64>) -> Response {
    if handle(&s).redeliver(id) {
        StatusCode::ACCEPTED.into_response()
    } else {
        not_found("Delivery")
    }
}

pub async fn set_faults(State(s): State<Arc<Shared>>, Json(spec): Json<FaultSpec>) -> Response {
    Json(handle(&s).set_faults(spec)).into_response()
}

pub async fn get_faults(State(s): State<Arc<Shared>>) -> Response {
    Json(handle(&s).faults()).into_response()
}

pub async fn create_user(State(s): State<Arc<Shared>>, Json(user): Json<NewUser>) -> Response {
    if user.username.trim().is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "username is missing" })),
        )
            .into_response();
    }
    (StatusCode::CREATED, Json(handle(&s).create_user(user))).into_response()
}

pub async fn state(State(s): State<Arc<Shared>>) -> Response {
    Json(handle(&s).snapshot()).into_response()
}
