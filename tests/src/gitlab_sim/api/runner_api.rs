//! The API runner processes use (lib/api/ci/runner.rb; doc/api/runners.md "Verify
//! authentication for a registered runner" and "Delete a runner by authentication
//! token"; gitlab-runner's network client).
//!
//! - `POST /runners/verify` `{token, system_id}`: 200 `{id, token, token_expires_at}`,
//!   403 for an unknown token. `system_id` is required for `glrt-` tokens.
//! - `DELETE /runners` `{token}`: 204.
//! - `POST /jobs/request` `{token, system_id?, info?, last_update?}`: 201 with the job
//!   payload, or 204 with `X-GitLab-Last-Update` when nothing fits (always for a paused
//!   runner). The job becomes `running` at this moment.
//! - `PUT /jobs/:id` `{token: <job token>, state}`: 200; 403 with `Job-Status` when the
//!   job is no longer running (e.g. canceled), which tells the runner to abort.
//! - `PATCH /jobs/:id/trace` with `JOB-TOKEN` and `Content-Range: <from>-<to>`: 202
//!   with `Range: 0-<size>`; 416 when `<from>` is not the current size.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, ApiReq, int_id};
use crate::gitlab_sim::entities;
use crate::gitlab_sim::server::Shared;
use crate::gitlab_sim::state::{JobStatus, World};

fn runner_token(req: &ApiReq) -> Result<String, ApiError> {
    req.params
        .string("token")
        .ok_or_else(|| ApiError::Params(vec!["token is missing".into()]))
}

/// `authenticate_runner!`: 403 unless the token belongs to a live runner.
fn authenticate_runner(w: &World, token: &str) -> Result<u64, ApiError> {
    w.runner_id_by_token(token).ok_or(ApiError::Forbidden(None))
}

pub async fn verify(State(s): State<Arc<Shared>>, req: ApiReq) -> Result<Response, ApiError> {
    let token = runner_token(&req)?;
    let system_id = req.params.string("system_id");
    s.with_world(|w| {
        let id = authenticate_runner(w, &token)?;
        if token.starts_with("glrt-") && system_id.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::Params(vec!["system_id is missing".into()]));
        }
        w.touch_runner(id, system_id.as_deref(), req.params.object("info"));
        Ok(Json(json!({ "id": id, "token": token, "token_expires_at": null })).into_response())
    })
}

pub async fn delete_by_token(
    State(s): State<Arc<Shared>>,
    req: ApiReq,
) -> Result<Response, ApiError> {
    let token = runner_token(&req)?;
    s.with_world(|w| {
        let id = authenticate_runner(w, &token)?;
        w.delete_runner(id);
        Ok(StatusCode::NO_CONTENT.into_response())
    })
}

fn no_content_with_last_update() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let stamp = crate::gitlab_sim::state::random_token(32);
    if let Ok(v) = HeaderValue::from_str(&stamp) {
        resp.headers_mut().insert("x-gitlab-last-update", v);
    }
    resp
}

pub async fn request_job(State(s): State<Arc<Shared>>, req: ApiReq) -> Result<Response, ApiError> {
    let token = runner_token(&req)?;
    let system_id = req.params.string("system_id");
    s.with_world(|w| {
        let id = authenticate_runner(w, &token)?;
        let manager = w.touch_runner(id, system_id.as_deref(), req.params.object("info"));
        if w.runners.get(&id).is_some_and(|r| r.paused) {
            return Ok(no_content_with_last_update());
        }
        let Some(job_id) = w.assign_job(id, manager) else {
            return Ok(no_content_with_last_update());
        };
        let job = w.jobs.get(&job_id).ok_or(ApiError::RecordNotFound)?;
        Ok((
            StatusCode::CREATED,
            Json(entities::job_request_payload(w, job)),
        )
            .into_response())
    })
}

/// `authenticate_job!`: the job token (param `token` or header `JOB-TOKEN`) must belong
/// to job `id`, and the job must still be running.
fn authenticate_job(w: &World, req: &ApiReq, raw_id: &str) -> Result<u64, ApiError> {
    let id = int_id(raw_id, "id")?;
    let token = req
        .header("job-token")
        .map(str::to_owned)
        .or_else(|| req.params.string("token"))
        .ok_or(ApiError::Forbidden(None))?;
    let job = w.job_by_token(&token).ok_or(ApiError::Forbidden(None))?;
    if job.id != id {
        return Err(ApiError::Forbidden(None));
    }
    if job.status != JobStatus::Running {
        return Err(ApiError::JobForbidden {
            job_status: job.status.as_str().to_owned(),
            reason: "Job is not processing on runner".into(),
        });
    }
    Ok(id)
}

fn heartbeat(w: &mut World, job_id: u64) {
    let runner = w.jobs.get(&job_id).and_then(|j| j.runner_id);
    if let Some(r) = runner.and_then(|r| w.runners.get_mut(&r)) {
        r.contacted_at = Some(time::OffsetDateTime::now_utc());
    }
}

pub async fn update_job(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: ApiReq,
) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let job_id = authenticate_job(w, &req, &id)?;
        heartbeat(w, job_id);
        match req.params.string("state").as_deref() {
            None | Some("running") => {}
            Some("success") => w.set_job_status(job_id, JobStatus::Success, None),
            Some("failed") => {
                let reason = req.params.string("failure_reason");
                w.set_job_status(job_id, JobStatus::Failed, reason.as_deref());
            }
            Some(_) => return Err(ApiError::BadRequest("Unknown job state".into())),
        }
        let mut resp = (StatusCode::OK, "200").into_response();
        resp.headers_mut().insert(
            "x-gitlab-trace-update-interval",
            HeaderValue::from_static("60"),
        );
        Ok(resp)
    })
}

/// Parses `Content-Range: <from>-<to>` (inclusive, as gitlab-runner sends it).
fn content_range_start(v: &str) -> Option<usize> {
    let v = v.trim();
    let v = v.strip_prefix("bytes ").unwrap_or(v);
    v.split('-').next()?.trim().parse().ok()
}

pub async fn patch_trace(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: ApiReq,
) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let job_id = authenticate_job(w, &req, &id)?;
        heartbeat(w, job_id);
        let range = req
            .header("content-range")
            .ok_or_else(|| ApiError::BadRequestRaw("400 Missing header Content-Range".into()))?;
        let job = w.jobs.get_mut(&job_id).ok_or(ApiError::RecordNotFound)?;
        let size = job.trace.len();
        if content_range_start(range) != Some(size) {
            return Err(ApiError::RangeNotSatisfiable { size });
        }
        job.trace.extend_from_slice(&req.body);
        let new_size = job.trace.len();
        let status = job.status.as_str();
        let mut resp = StatusCode::ACCEPTED.into_response();
        let h = resp.headers_mut();
        for (k, v) in [
            ("job-status", status.to_owned()),
            ("range", format!("0-{new_size}")),
            ("x-gitlab-trace-update-interval", "60".to_owned()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        }
        Ok(resp)
    })
}
