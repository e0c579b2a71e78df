//! HTTP adapters: GitLab's REST, runner and GraphQL endpoints plus the `/sim` controls.
//!
//! Handlers are thin: they read parameters, lock the [`World`](super::state::World)
//! once, call into it and render GitLab entities. Errors map to GitLab's bodies in
//! exactly one place, [`ApiError::into_response`]:
//! - Grape parameter errors: 400 `{"error":"<param> is missing"}`;
//! - `bad_request!`: 400 `{"message":"400 Bad request - <reason>"}`;
//! - `unauthorized!`: 401 `{"message":"401 Unauthorized"}`;
//! - `forbidden!`: 403 `{"message":"403 Forbidden"}` or `"403 Forbidden - <reason>"`;
//! - `not_found!('Project')`: 404 `{"message":"404 Project Not Found"}`; a missing
//!   record: 404 `{"message":"404 Not found"}`; an unknown route: 404
//!   `{"error":"404 Not Found"}` (lib/api/helpers.rb, lib/api/api.rb).

pub mod control;
pub mod graphql;
pub mod rest;
pub mod runner_api;
pub mod runners;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use serde_json::json;

use super::params::Params;
use super::server::Shared;
use super::state::{User, World};

/// Every error answer the simulator gives, in GitLab's shapes.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// Grape validation errors, joined with ", ".
    Params(Vec<String>),
    BadRequest(String),
    /// A raw 400 message (e.g. `400 Missing header Content-Range`).
    BadRequestRaw(String),
    Unauthorized,
    Forbidden(Option<String>),
    /// 403 from the runner API that also tells the runner the job's status.
    JobForbidden {
        job_status: String,
        reason: String,
    },
    NotFound(Option<&'static str>),
    RecordNotFound,
    RangeNotSatisfiable {
        size: usize,
    },
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body, mut headers) = match self {
            ApiError::Params(errs) => (
                StatusCode::BAD_REQUEST,
                json!({ "error": errs.join(", ") }),
                HeaderMap::new(),
            ),
            ApiError::BadRequest(reason) => (
                StatusCode::BAD_REQUEST,
                json!({ "message": format!("400 Bad request - {reason}") }),
                HeaderMap::new(),
            ),
            ApiError::BadRequestRaw(msg) => (
                StatusCode::BAD_REQUEST,
                json!({ "message": msg }),
                HeaderMap::new(),
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({ "message": "401 Unauthorized" }),
                HeaderMap::new(),
            ),
            ApiError::Forbidden(reason) => (
                StatusCode::FORBIDDEN,
                json!({ "message": match reason {
                    Some(r) => format!("403 Forbidden - {r}"),
                    None => "403 Forbidden".to_owned(),
                }}),
                HeaderMap::new(),
            ),
            ApiError::JobForbidden { job_status, reason } => {
                let mut h = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(&job_status) {
                    h.insert("job-status", v);
                }
                (
                    StatusCode::FORBIDDEN,
                    json!({ "message": format!("403 Forbidden - {reason}") }),
                    h,
                )
            }
            ApiError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                json!({ "message": match what {
                    Some(w) => format!("404 {w} Not Found"),
                    None => "404 Not Found".to_owned(),
                }}),
                HeaderMap::new(),
            ),
            ApiError::RecordNotFound => (
                StatusCode::NOT_FOUND,
                json!({ "message": "404 Not found" }),
                HeaderMap::new(),
            ),
            ApiError::RangeNotSatisfiable { size } => {
                let mut h = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(&format!("0-{size}")) {
                    h.insert("range", v);
                }
                (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    json!({ "message": "416 Range Not Satisfiable" }),
                    h,
                )
            }
        };
        let mut resp = (status, axum::Json(body)).into_response();
        resp.headers_mut().extend(headers.drain());
        resp
    }
}

/// A request with its parameters merged from query and body, as Grape sees them.
pub struct ApiReq {
    pub uri: Uri,
    pub headers: HeaderMap,
    pub params: Params,
    pub body: Bytes,
}

/// Largest body accepted (GitLab's default `max_request_size` is far larger; job logs
/// sent here in tests are small).
const MAX_BODY: usize = 16 * 1024 * 1024;

impl<S: Send + Sync> FromRequest<S> for ApiReq {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|_| ApiError::BadRequest("request body too large".into()))?;
        let query = Params::from_query(parts.uri.query().unwrap_or(""));
        let ct = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let parse_body = match ct.as_deref() {
            None => true,
            Some(c) => {
                let c = c.to_ascii_lowercase();
                c.starts_with("application/json")
                    || c.starts_with("application/x-www-form-urlencoded")
            }
        };
        let params = if parse_body {
            let from_body =
                Params::from_body(ct.as_deref(), &body).map_err(ApiError::BadRequest)?;
            query.merge(from_body)
        } else {
            query
        };
        Ok(ApiReq {
            uri: parts.uri,
            headers: parts.headers,
            params,
            body,
        })
    }
}

impl ApiReq {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The personal access token: `PRIVATE-TOKEN`, `Authorization: Bearer`, or the
    /// `private_token` / `access_token` parameters (doc/api/rest/authentication.md).
    pub fn user_token(&self) -> Option<String> {
        if let Some(t) = self.header("private-token") {
            return Some(t.trim().to_owned());
        }
        if let Some(a) = self.header("authorization") {
            let mut it = a.splitn(2, ' ');
            if let (Some(scheme), Some(tok)) = (it.next(), it.next())
                && scheme.eq_ignore_ascii_case("bearer")
            {
                return Some(tok.trim().to_owned());
            }
        }
        self.params
            .string("private_token")
            .or_else(|| self.params.string("access_token"))
    }
}

/// Resolves the request's user or fails with 401 like GitLab's `authenticate!`.
pub fn authenticate<'w>(w: &'w World, req: &ApiReq) -> Result<&'w User, ApiError> {
    let token = req.user_token().ok_or(ApiError::Unauthorized)?;
    w.user_by_token(&token).ok_or(ApiError::Unauthorized)
}

/// Builds the full router for a simulator instance.
pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/api/v4/version", get(rest::version))
        .route("/api/v4/user", get(rest::current_user))
        .route("/api/v4/user/runners", post(runners::create_user_runner))
        .route("/api/v4/projects", get(rest::list_projects))
        .route("/api/v4/projects/{id}", get(rest::get_project))
        .route("/api/v4/projects/{id}/jobs", get(rest::list_jobs))
        .route("/api/v4/projects/{id}/jobs/{job_id}", get(rest::get_job))
        .route(
            "/api/v4/projects/{id}/jobs/{job_id}/trace",
            get(rest::get_trace),
        )
        .route(
            "/api/v4/projects/{id}/jobs/{job_id}/cancel",
            post(rest::cancel_job),
        )
        .route(
            "/api/v4/projects/{id}/hooks",
            get(rest::list_hooks).post(rest::add_hook),
        )
        .route(
            "/api/v4/projects/{id}/hooks/{hook_id}",
            delete(rest::delete_hook),
        )
        .route(
            "/api/v4/runners",
            get(runners::list_owned).delete(runner_api::delete_by_token),
        )
        .route("/api/v4/runners/all", get(runners::list_all))
        .route("/api/v4/runners/verify", post(runner_api::verify))
        .route(
            "/api/v4/runners/{id}",
            get(runners::get_runner).delete(runners::delete_runner),
        )
        .route("/api/v4/runners/{id}/managers", get(runners::list_managers))
        .route("/api/v4/jobs/request", post(runner_api::request_job))
        .route("/api/v4/jobs/{id}", put(runner_api::update_job))
        .route("/api/v4/jobs/{id}/trace", patch(runner_api::patch_trace))
        .route("/api/graphql", post(graphql::graphql))
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            super::faults::apply,
        ));
    let sim = Router::new()
        .route("/sim/jobs", post(control::create_job))
        .route("/sim/jobs/{id}", get(control::get_job))
        .route("/sim/jobs/{id}/cancel", post(control::cancel_job))
        .route("/sim/hooks", post(control::add_hook))
        .route("/sim/hooks/{id}/enable", post(control::enable_hook))
        .route("/sim/deliveries/{id}/redeliver", post(control::redeliver))
        .route(
            "/sim/faults",
            post(control::set_faults).get(control::get_faults),
        )
        .route("/sim/users", post(control::create_user))
        .route("/sim/state", get(control::state))
        .route_layer(axum::middleware::from_fn(control::loopback_only));
    Router::new()
        .merge(api)
        .merge(sim)
        .fallback(not_found_route)
        .with_state(shared)
}

/// Grape's answer for a route that does not exist.
async fn not_found_route() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "error": "404 Not Found" })),
    )
        .into_response()
}

/// Joins messages like Rails' `Array#to_sentence`.
pub fn to_sentence(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [a, b] => format!("{a} and {b}"),
        [init @ .., last] => format!("{}, and {last}", init.join(", ")),
    }
}

/// Parses a numeric path id the way Grape validates `type: Integer`.
pub fn int_id(raw: &str, name: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>()
        .map_err(|_| ApiError::Params(vec![format!("{name} is invalid")]))
}
