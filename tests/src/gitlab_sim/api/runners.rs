//! Runner management endpoints for users and administrators.
//!
//! References: doc/api/users.md "Create a runner linked to a user" (`POST /user/runners`,
//! lib/api/users.rb and app/services/ci/runners/create_runner_service.rb with its
//! strategies), doc/api/runners.md (`GET /runners`, `GET /runners/all`,
//! `GET /runners/:id`, `GET /runners/:id/managers`, `DELETE /runners/:id`) and
//! lib/api/ci/runners.rb for the filters and permission messages.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::rest::paged;
use super::{ApiError, ApiReq, authenticate, int_id, to_sentence};
use crate::gitlab_sim::entities;
use crate::gitlab_sim::state::{Runner, RunnerType, User, World};

const ACCESS_LEVELS: &[&str] = &["not_protected", "ref_protected"];

/// Validated `POST /user/runners` input.
struct CreateParams {
    runner_type: RunnerType,
    group_id: Option<i64>,
    project_id: Option<i64>,
    description: String,
    paused: bool,
    locked: bool,
    run_untagged: bool,
    tags: Vec<String>,
    access_level: String,
    maximum_timeout: Option<i64>,
    maintenance_note: Option<String>,
}

/// Grape-level validation: types and allowed values, all errors reported together.
fn parse_create(req: &ApiReq) -> Result<CreateParams, ApiError> {
    let p = &req.params;
    let mut errors = Vec::new();
    let runner_type = match p.string("runner_type") {
        None => {
            errors.push("runner_type is missing".to_owned());
            None
        }
        Some(t) => match RunnerType::parse(&t) {
            Some(t) => Some(t),
            None => {
                errors.push("runner_type does not have a valid value".to_owned());
                None
            }
        },
    };
    let mut int = |k: &str| {
        p.integer(k).unwrap_or_else(|e| {
            errors.push(e);
            None
        })
    };
    let group_id = int("group_id");
    let project_id = int("project_id");
    let maximum_timeout = int("maximum_timeout");
    let mut boolean = |k: &str| {
        p.boolean(k).unwrap_or_else(|e| {
            errors.push(e);
            None
        })
    };
    let paused = boolean("paused");
    let locked = boolean("locked");
    let run_untagged = boolean("run_untagged");
    let access_level = p.string("access_level");
    if let Some(a) = &access_level
        && !ACCESS_LEVELS.contains(&a.as_str())
    {
        errors.push("access_level does not have a valid value".to_owned());
    }
    match (runner_type, errors.is_empty()) {
        (Some(runner_type), true) => Ok(CreateParams {
            runner_type,
            group_id,
            project_id,
            description: p.string("description").unwrap_or_default(),
            paused: paused.unwrap_or(false),
            locked: locked.unwrap_or(false),
            run_untagged: run_untagged.unwrap_or(true),
            tags: p.comma_list("tag_list").unwrap_or_default(),
            access_level: access_level.unwrap_or_else(|| "not_protected".to_owned()),
            maximum_timeout,
            maintenance_note: p.string("maintenance_note"),
        }),
        _ => Err(ApiError::Params(errors)),
    }
}

pub async fn create_user_runner(
    State(s): State<Arc<Shared>>,
    req: ApiReq,
) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let user = authenticate(w, &req)?.clone();
        let c = parse_create(&req)?;
        // Strategy: validate the scope, then authorize (CreateRunnerService#execute).
        let (project_ids, group_id) = match c.runner_type {
            RunnerType::Instance => {
                if !user.is_admin {
                    return Err(ApiError::Forbidden(Some("Insufficient permissions".into())));
                }
                (Vec::new(), None)
            }
            RunnerType::Group => {
                let g = c
                    .group_id
                    .and_then(|g| u64::try_from(g).ok())
                    .and_then(|g| w.group(g))
                    .ok_or_else(|| ApiError::BadRequest("Missing/invalid group".into()))?;
                if !user.is_admin {
                    return Err(ApiError::Forbidden(Some("Insufficient permissions".into())));
                }
                (Vec::new(), Some(g.id))
            }
            RunnerType::Project => {
                let pid = c
                    .project_id
                    .and_then(|p| u64::try_from(p).ok())
                    .filter(|p| w.projects.contains_key(p))
                    .ok_or_else(|| ApiError::BadRequest("Missing/invalid project".into()))?;
                if !w.can_read_project(&user, pid) {
                    return Err(ApiError::Forbidden(Some("Insufficient permissions".into())));
                }
                (vec![pid], None)
            }
        };
        // Model validations (Ci::Runner), reported as one sentence.
        let mut invalid = Vec::new();
        if c.tags.is_empty() && !c.run_untagged {
            invalid.push(
                "Tags list can not be empty when runner is not allowed to pick untagged jobs"
                    .to_owned(),
            );
        }
        if c.maximum_timeout.is_some_and(|t| t < 600) {
            invalid.push("Maximum timeout needs to be at least 10 minutes".to_owned());
        }
        if c.maintenance_note
            .as_ref()
            .is_some_and(|n| n.chars().count() > 1024)
        {
            invalid.push("Maintenance note is too long (maximum is 1024 characters)".to_owned());
        }
        if !invalid.is_empty() {
            return Err(ApiError::BadRequest(to_sentence(&invalid)));
        }
        let r = w.create_runner(
            user.id,
            c.runner_type,
            project_ids,
            group_id,
            c.description,
            c.paused,
            c.locked,
            c.run_untagged,
            c.tags,
            c.access_level,
            c.maximum_timeout.and_then(|t| u64::try_from(t).ok()),
            c.maintenance_note,
        );
        Ok((
            StatusCode::CREATED,
            Json(json!({
                "id": r.id,
                "token": r.token.expose(),
                "token_expires_at": null,
            })),
        )
            .into_response())
    })
}

use crate::gitlab_sim::server::Shared;

/// Filters shared by `GET /runners` and `GET /runners/all`.
fn apply_filters<'w>(
    req: &ApiReq,
    mut runners: Vec<&'w Runner>,
    allowed_scopes: &[&str],
    now: OffsetDateTime,
) -> Result<Vec<&'w Runner>, ApiError> {
    let p = &req.params;
    let mut errors = Vec::new();
    let scope = p.string("scope");
    if let Some(s) = &scope
        && !ALL_SCOPES.contains(&s.as_str())
    {
        errors.push("scope does not have a valid value".to_owned());
    }
    let kind = p.string("type");
    if let Some(t) = &kind
        && RunnerType::parse(t).is_none()
    {
        errors.push("type does not have a valid value".to_owned());
    }
    let status = p.string("status");
    if let Some(s) = &status
        && !STATUSES.contains(&s.as_str())
    {
        errors.push("status does not have a valid value".to_owned());
    }
    let paused = p.boolean("paused").unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    if !errors.is_empty() {
        return Err(ApiError::Params(errors));
    }
    if let Some(s) = &scope
        && !allowed_scopes.contains(&s.as_str())
    {
        return Err(ApiError::BadRequestRaw(
            "Scope contains invalid value".into(),
        ));
    }
    let matches_scope = |r: &Runner, s: &str| match s {
        "specific" => r.runner_type != RunnerType::Instance,
        "shared" | "instance_type" => r.runner_type == RunnerType::Instance,
        "group_type" => r.runner_type == RunnerType::Group,
        "project_type" => r.runner_type == RunnerType::Project,
        "active" => !r.paused,
        "paused" => r.paused,
        "offline" => r.status(now) != "online",
        other => r.status(now) == other,
    };
    if let Some(s) = &scope {
        runners.retain(|r| matches_scope(r, s));
    }
    if let Some(t) = &kind {
        runners.retain(|r| r.runner_type.as_str() == t);
    }
    if let Some(s) = &status {
        runners.retain(|r| matches_scope(r, s));
    }
    if let Some(paused) = paused {
        runners.retain(|r| r.paused == paused);
    }
    if let Some(tags) = p.comma_list("tag_list") {
        runners.retain(|r| tags.iter().all(|t| r.tags.contains(t)));
    }
    if let Some(prefix) = p.string("version_prefix") {
        runners.retain(|r| {
            r.managers
                .iter()
                .any(|m| m.version.as_deref().is_some_and(|v| v.starts_with(&prefix)))
        });
    }
    runners.sort_by_key(|r| r.id);
    Ok(runners)
}

/// `Ci::Runner::AVAILABLE_SCOPES` (types and statuses, deprecated ones included).
const ALL_SCOPES: &[&str] = &[
    "specific",
    "shared",
    "instance_type",
    "group_type",
    "project_type",
    "active",
    "paused",
    "online",
    "offline",
    "stale",
    "never_contacted",
];
/// `Ci::Runner::AVAILABLE_STATUSES_INCL_DEPRECATED`.
const STATUSES: &[&str] = &[
    "active",
    "paused",
    "online",
    "offline",
    "stale",
    "never_contacted",
];

/// Runners the user owns: group/project runners of namespaces they administer.
fn owned(w: &World, user: &User) -> Vec<u64> {
    w.runners
        .values()
        .filter(|r| !r.is_deleted())
        .filter(|r| match r.runner_type {
            RunnerType::Instance => false,
            RunnerType::Group => user.is_admin,
            RunnerType::Project => r.project_ids.iter().any(|p| w.can_read_project(user, *p)),
        })
        .map(|r| r.id)
        .collect()
}

pub async fn list_owned(State(s): State<Arc<Shared>>, req: ApiReq) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let user = authenticate(w, &req)?;
        let now = OffsetDateTime::now_utc();
        let ids = owned(w, user);
        let runners = w.runners.values().filter(|r| ids.contains(&r.id)).collect();
        let runners = apply_filters(&req, runners, STATUSES, now)?;
        let items = runners
            .iter()
            .map(|r| entities::runner(w, r, now))
            .collect();
        paged(w, &req, items)
    })
}

pub async fn list_all(State(s): State<Arc<Shared>>, req: ApiReq) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let user = authenticate(w, &req)?;
        if !user.is_admin {
            return Err(ApiError::Forbidden(None));
        }
        let now = OffsetDateTime::now_utc();
        let runners = w.runners.values().filter(|r| !r.is_deleted()).collect();
        let runners = apply_filters(&req, runners, ALL_SCOPES, now)?;
        let items: Vec<Value> = runners
            .iter()
            .map(|r| entities::runner(w, r, now))
            .collect();
        paged(w, &req, items)
    })
}

/// `get_runner` + `authenticate_show_runner!`.
fn shown_runner<'w>(w: &'w World, user: &User, raw_id: &str) -> Result<&'w Runner, ApiError> {
    let id = int_id(raw_id, "id")?;
    let r = w
        .runners
        .get(&id)
        .filter(|r| !r.is_deleted())
        .ok_or(ApiError::RecordNotFound)?;
    let allowed = user.is_admin
        || r.runner_type == RunnerType::Instance
        || r.project_ids.iter().any(|p| w.can_read_project(user, *p));
    if allowed {
        Ok(r)
    } else {
        Err(ApiError::Forbidden(Some("No access granted".into())))
    }
}

pub async fn get_runner(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: ApiReq,
) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let user = authenticate(w, &req)?;
        let r = shown_runner(w, user, &id)?;
        Ok(Json(entities::runner_details(w, r, OffsetDateTime::now_utc())).into_response())
    })
}

pub async fn list_managers(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: ApiReq,
) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let user = authenticate(w, &req)?;
        let r = shown_runner(w, user, &id)?;
        let now = OffsetDateTime::now_utc();
        let items: Vec<Value> = r
            .managers
            .iter()
            .map(|m| entities::runner_manager(w, r.id, m, now))
            .collect();
        Ok(Json(Value::Array(items)).into_response())
    })
}

pub async fn delete_runner(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: ApiReq,
) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let user = authenticate(w, &req)?.clone();
        let rid = int_id(&id, "id")?;
        let r = w
            .runners
            .get(&rid)
            .filter(|r| !r.is_deleted())
            .ok_or(ApiError::RecordNotFound)?;
        if !user.is_admin {
            if r.project_ids.len() > 1 {
                return Err(ApiError::Forbidden(Some(
                    "Runner associated with more than one project".into(),
                )));
            }
            let may = r.runner_type == RunnerType::Project
                && r.project_ids.iter().all(|p| w.can_read_project(&user, *p));
            if !may {
                return Err(ApiError::Forbidden(Some("No access granted".into())));
            }
        }
        w.delete_runner(rid);
        Ok(StatusCode::NO_CONTENT.into_response())
    })
}
