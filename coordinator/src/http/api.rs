//! The admin REST API under `/api/v1`: thin adapters over the fleet, the
//! reconciler, demand and the database (on a follower, the database alone:
//! `cluster/follower.rs`). Every mutating call is written to the
//! audit log with the caller ([`Actor`]). Errors are `{"error": "..."}`.
//!
//! [`routes`] lists every route; the router is built from it and a test
//! checks that `openapi.json` documents exactly these.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{HttpState, Serving};
use crate::admin::actions::{ActionError, Actions};
use crate::admin::{Actor, Role, sessions};
use crate::bounds;
use crate::db::{self, EventFilter};
use crate::fleet::{AgentState, AgentView};
use crate::runners::wait_objective::WaitShares;
use crate::runners::{ReconcilerStatus, RunnerView};
use crate::tokens;

/// An API error: status + message.
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    fn not_found(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
    fn unavailable(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        tracing::error!(error = %e, "admin API database error");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "database error".into())
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Every API route: (method, path, handler, the least role it needs;
/// `admin/roles.rs`).
pub fn routes() -> Vec<(&'static str, &'static str, MethodRouter<HttpState>, Role)> {
    use Role::{Admin, Operator, Viewer};
    vec![
        ("get", "/api/v1/whoami", get(whoami), Viewer),
        ("get", "/api/v1/agents", get(list_agents), Viewer),
        ("get", "/api/v1/agents/{id}", get(get_agent), Viewer),
        ("post", "/api/v1/agents/{id}/cordon", post(cordon), Operator),
        (
            "post",
            "/api/v1/agents/{id}/uncordon",
            post(uncordon),
            Operator,
        ),
        ("post", "/api/v1/agents/{id}/drain", post(drain), Operator),
        (
            "post",
            "/api/v1/agents/{id}/revoke",
            post(revoke_agent),
            Admin,
        ),
        (
            "post",
            "/api/v1/agents/{id}/labels",
            post(change_labels),
            Admin,
        ),
        ("get", "/api/v1/runners", get(list_runners), Viewer),
        ("get", "/api/v1/runners/{id}", get(get_runner), Viewer),
        (
            "post",
            "/api/v1/runners/{id}/stop",
            post(stop_runner),
            Operator,
        ),
        ("get", "/api/v1/pools", get(list_pools), Viewer),
        ("get", "/api/v1/jobs", get(list_jobs), Viewer),
        ("post", "/api/v1/reload", post(reload), Admin),
        ("get", "/api/v1/tokens", get(list_tokens), Viewer),
        ("post", "/api/v1/tokens", post(create_token), Admin),
        (
            "post",
            "/api/v1/tokens/{id}/revoke",
            post(revoke_token),
            Admin,
        ),
        ("get", "/api/v1/sessions", get(list_sessions), Admin),
        (
            "post",
            "/api/v1/sessions/{id}/revoke",
            post(revoke_session),
            Admin,
        ),
        ("get", "/api/v1/events", get(list_events), Viewer),
        ("get", "/api/v1/openapi.json", get(openapi), Viewer),
    ]
}

/// The routes, each behind its role check.
pub fn router() -> Router<HttpState> {
    let mut r = Router::new();
    for (_, path, handler, role) in routes() {
        r = r.route(
            path,
            handler.route_layer(axum::middleware::from_fn(move |req, next| {
                super::auth::require_role(role, req, next)
            })),
        );
    }
    r
}

/// Who the caller is and what it may do (the dashboard hides the rest).
async fn whoami(Extension(actor): Extension<Actor>) -> Json<Value> {
    Json(json!({"actor": actor.0, "role": actor.1}))
}

pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

// ------------------------------------------------------------------ agents

/// An agent with what the reconciler knows of it.
#[derive(Debug, Serialize)]
pub struct AgentOut {
    #[serde(flatten)]
    pub agent: AgentView,
    /// Runners holding resources on the agent now.
    pub runners: u32,
}

/// The reconciler's status: the leader's last pass, or on a follower what
/// the database holds of it.
async fn reconciler_status(s: &HttpState) -> Result<ReconcilerStatus, ApiError> {
    Ok(match s.serving {
        Serving::Leader => s.reconciler.status(),
        Serving::Follower { .. } => ReconcilerStatus::stored(&s.db.active_runners().await?),
    })
}

/// Every agent: the leader's live fleet, or on a follower the agents as
/// the leader last wrote them (state and last seen are flushed every
/// `agents.persist_interval`; `connected` is "ready" then).
async fn agents_out(s: &HttpState) -> Result<Vec<AgentOut>, ApiError> {
    let per_agent = reconciler_status(s).await?.per_agent;
    let agents = match s.serving {
        Serving::Leader => s.fleet.snapshot(),
        Serving::Follower { .. } => {
            let mut views = Vec::new();
            for row in s.db.list_agents().await? {
                let mut v = AgentView::from_row(&row)?;
                v.connected = v.state == AgentState::Ready;
                views.push(v);
            }
            views
        }
    };
    Ok(agents
        .into_iter()
        .map(|a| AgentOut {
            runners: per_agent.get(&a.id).copied().unwrap_or(0),
            agent: a,
        })
        .collect())
}

fn parse_agent(id: &str) -> Result<autogit_certs::AgentId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad(format!("{id:?} is not an agent id (a UUID)")))
}

async fn list_agents(State(s): State<HttpState>) -> ApiResult<Vec<AgentOut>> {
    Ok(Json(agents_out(&s).await?))
}

async fn get_agent(State(s): State<HttpState>, Path(id): Path<String>) -> ApiResult<AgentOut> {
    parse_agent(&id)?;
    agents_out(&s)
        .await?
        .into_iter()
        .find(|a| a.agent.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no agent with id {id}")))
}

fn actions(s: &HttpState) -> Actions {
    Actions::live(
        s.db.clone(),
        s.audit.clone(),
        s.fleet.clone(),
        s.reconciler.clone(),
    )
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        match e {
            ActionError::Invalid(m) => ApiError::bad(m),
            ActionError::NotFound(m) => ApiError::not_found(m),
            ActionError::Unavailable(m) => ApiError::unavailable(m),
            ActionError::Db(e) => e.into(),
        }
    }
}

async fn cordon(
    State(s): State<HttpState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<Value> {
    let agent = actions(&s).set_cordon(&actor.0, &id, true).await?;
    Ok(Json(json!({"id": agent.to_string(), "cordoned": true})))
}

async fn uncordon(
    State(s): State<HttpState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<Value> {
    let agent = actions(&s).set_cordon(&actor.0, &id, false).await?;
    Ok(Json(json!({"id": agent.to_string(), "cordoned": false})))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// Seconds the agent's runners get to finish their current job
    /// (default 3600, at most 604800).
    pub deadline_seconds: Option<u64>,
}

async fn drain(
    State(s): State<HttpState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Option<Json<DrainRequest>>,
) -> ApiResult<Value> {
    let secs = body.and_then(|b| b.0.deadline_seconds).unwrap_or(3600);
    let started = actions(&s)
        .drain(&actor.0, &id, std::time::Duration::from_secs(secs))
        .await?;
    Ok(Json(
        json!({"id": id, "runners_stopping": started.runners, "deadline": crate::fleet::rfc3339(db::to_ms(started.deadline))}),
    ))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    #[serde(default)]
    pub reason: String,
}

async fn revoke_agent(
    State(s): State<HttpState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Option<Json<RevokeRequest>>,
) -> ApiResult<Value> {
    let reason = body.map(|b| b.0.reason).unwrap_or_default();
    let agent = actions(&s).revoke_agent(&actor.0, &id, &reason).await?;
    Ok(Json(json!({"id": agent.to_string(), "revoked": true})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsRequest {
    /// Trust labels to add or replace.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Keys of trust labels to drop (absent ones are ignored).
    #[serde(default)]
    pub remove: Vec<String>,
}

async fn change_labels(
    State(s): State<HttpState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(req): Json<LabelsRequest>,
) -> ApiResult<Value> {
    let change = actions(&s)
        .change_labels(&actor.0, &id, &req.set, &req.remove)
        .await?;
    Ok(Json(
        json!({"id": change.agent.to_string(), "old": change.old, "trust_labels": change.new}),
    ))
}

// ----------------------------------------------------------------- runners

#[derive(Debug, Deserialize)]
pub struct RunnersQuery {
    /// How many finished runners to include (default 50).
    pub finished: Option<u32>,
}

async fn list_runners(
    State(s): State<HttpState>,
    Query(q): Query<RunnersQuery>,
) -> ApiResult<Vec<RunnerView>> {
    let rows =
        s.db.list_runners(q.finished.unwrap_or(50).min(1000))
            .await?;
    Ok(Json(rows.iter().map(Into::into).collect()))
}

async fn get_runner(State(s): State<HttpState>, Path(id): Path<String>) -> ApiResult<RunnerView> {
    s.db.get_runner(&id)
        .await?
        .map(|r| Json((&r).into()))
        .ok_or_else(|| ApiError::not_found(format!("no runner with id {id}")))
}

async fn stop_runner(
    State(s): State<HttpState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<Value> {
    actions(&s).stop_runner(&actor.0, &id).await?;
    Ok(Json(json!({"id": id, "stopping": true})))
}

// ------------------------------------------------------------ pools / jobs

async fn reload(
    State(s): State<HttpState>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<crate::reload::Reloaded> {
    use crate::reload::ReloadError;
    match s.reloader.reload(&actor.0).await {
        Ok(r) => Ok(Json(r)),
        Err(e @ ReloadError::Invalid(_)) => {
            Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
        }
        Err(e @ ReloadError::NoSource) => Err(ApiError(StatusCode::CONFLICT, e.to_string())),
    }
}

#[derive(Debug, Serialize)]
pub struct PoolOut {
    pub name: String,
    pub tags: Vec<String>,
    pub arch: String,
    pub gpu: Option<Value>,
    /// Trust labels an agent must hold to get this pool's runners.
    pub agent_selector: BTreeMap<String, String>,
    /// In force now: the pool's value or an active schedule window's.
    pub max_runners: u32,
    pub idle_min: u32,
    /// The schedule windows, in config order.
    pub schedule: Vec<WindowOut>,
    /// When the set of active windows next changes (RFC 3339).
    pub next_change: Option<String>,
    /// Pending jobs counted for this pool.
    pub demand: u32,
    /// Runners by phase.
    pub runners: BTreeMap<String, u32>,
    /// Runners with a running container (idle + busy).
    pub running: u32,
    pub idle: u32,
    /// Why wanted runners cannot start, when demand is unmet.
    pub unmet_reason: Option<String>,
    /// The pool's `wait_objective` and how it was met; `None` without one.
    pub wait_objective: Option<WaitObjectiveOut>,
    /// GitLab runners the pool keeps created ahead of demand (`stock`).
    pub stock: u32,
    /// Of those, in stock now (the leader's memory; 0 on a follower).
    pub stocked: u32,
}

/// A pool's `wait_objective` and the share of its jobs that met it.
#[derive(Debug, Serialize, PartialEq)]
pub struct WaitObjectiveOut {
    /// As configured, e.g. `30s`.
    pub target: String,
    pub target_seconds: f64,
    /// Share (0 to 1) of the jobs measured in the last hour that met it;
    /// `None` when no job was.
    pub met_1h: Option<f64>,
    pub jobs_1h: u32,
    /// The same over the last 24 hours.
    pub met_24h: Option<f64>,
    pub jobs_24h: u32,
}

impl From<WaitShares> for WaitObjectiveOut {
    fn from(s: WaitShares) -> Self {
        WaitObjectiveOut {
            target: humantime::format_duration(s.objective).to_string(),
            target_seconds: s.objective.as_secs_f64(),
            met_1h: s.last_hour.ratio(),
            jobs_1h: s.last_hour.total,
            met_24h: s.last_day.ratio(),
            jobs_24h: s.last_day.total,
        }
    }
}

/// One schedule window of a pool, and whether it is active now.
#[derive(Debug, Serialize)]
pub struct WindowOut {
    pub cron: String,
    pub timezone: String,
    pub idle_min: Option<u32>,
    pub max_runners: Option<u32>,
    pub active: bool,
}

async fn list_pools(State(s): State<HttpState>) -> ApiResult<Vec<PoolOut>> {
    let now = time::OffsetDateTime::now_utc();
    let status = reconciler_status(&s).await?;
    let demand = s
        .demand
        .as_ref()
        .map(|d| d.snapshot().per_pool)
        .unwrap_or_default();
    Ok(Json(
        s.pools
            .current()
            .iter()
            .map(|p| {
                let runners = status.runners.get(&p.name).cloned().unwrap_or_default();
                let n = |k: &str| runners.get(k).copied().unwrap_or(0);
                let sizing = p.sizing_at(now);
                PoolOut {
                    name: p.name.clone(),
                    tags: p.tags.clone(),
                    arch: p
                        .arch
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    gpu: p.gpu.as_ref().and_then(|g| serde_json::to_value(g).ok()),
                    agent_selector: p.agent_selector.clone(),
                    max_runners: sizing.max_runners,
                    idle_min: sizing.idle_min,
                    schedule: p
                        .schedule
                        .iter()
                        .enumerate()
                        .map(|(i, w)| WindowOut {
                            cron: w.cron_text.clone(),
                            timezone: w.timezone.name().to_owned(),
                            idle_min: w.idle_min,
                            max_runners: w.max_runners,
                            active: sizing.active.contains(i),
                        })
                        .collect(),
                    next_change: p.next_change(now).and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    }),
                    demand: demand.get(&p.name).copied().unwrap_or(0),
                    running: n("idle") + n("busy"),
                    idle: n("idle"),
                    runners,
                    unmet_reason: status.unmet.get(&p.name).cloned(),
                    wait_objective: s.reconciler.wait_shares(p).map(WaitObjectiveOut::from),
                    stock: p.stock,
                    stocked: status.stock.get(&p.name).copied().unwrap_or(0),
                }
            })
            .collect(),
    ))
}

#[derive(Debug, Serialize)]
pub struct JobOut {
    pub project_id: u64,
    pub job_id: u64,
    pub name: String,
    pub tags: Vec<String>,
    /// The pool serving it, if any.
    pub pool: Option<String>,
    /// Why it is still pending: no pool fits, the pool's unmet reason, or
    /// its runner is pulling the image on an agent that lacked it.
    pub reason: Option<String>,
    pub seen_at: String,
    pub via: String,
}

async fn list_jobs(State(s): State<HttpState>) -> ApiResult<Vec<JobOut>> {
    let Some(demand) = &s.demand else {
        return Ok(Json(Vec::new()));
    };
    let status = s.reconciler.status();
    let (unmet, cold) = (status.unmet, status.cold_starts);
    Ok(Json(
        demand
            .snapshot()
            .jobs
            .into_iter()
            .map(|j| JobOut {
                reason: j
                    .unmatched_reason
                    .clone()
                    .or_else(|| j.pool.as_ref().and_then(|p| unmet.get(p).cloned()))
                    .or_else(|| j.pool.as_ref().and_then(|p| cold.get(p).cloned())),
                project_id: j.project_id,
                job_id: j.job_id,
                name: j.name,
                tags: j.tags,
                pool: j.pool,
                seen_at: j
                    .seen_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                via: format!("{}", j.via),
            })
            .collect(),
    ))
}

// ------------------------------------------------------------------ tokens

async fn list_tokens(State(s): State<HttpState>) -> ApiResult<Vec<tokens::TokenView>> {
    Ok(Json(tokens::list(&s.db).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Validity in seconds (default 3600).
    pub ttl_seconds: Option<u64>,
    /// Enrolments allowed (default 1).
    pub uses: Option<u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub description: String,
}

async fn create_token(
    State(s): State<HttpState>,
    Extension(actor): Extension<Actor>,
    Json(req): Json<CreateTokenRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ttl = bounds::seconds(
        "ttl_seconds",
        req.ttl_seconds.unwrap_or(3600),
        bounds::MAX_JOIN_TOKEN_TTL,
    )
    .map_err(|e| ApiError::bad(e.to_string()))?;
    let uses = req.uses.unwrap_or(1);
    if uses == 0 {
        return Err(ApiError::bad("uses must be greater than 0"));
    }
    let new = tokens::NewToken {
        ttl,
        uses,
        labels: req.labels,
        description: req.description,
    };
    let token = actions(&s)
        .create_token(&actor.0, s.ca_fingerprint, &new)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": token.id().as_str(), "token": token.expose(), "uses": uses, "ttl_seconds": ttl.as_secs()}),
        ),
    ))
}

async fn revoke_token(
    State(s): State<HttpState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<Value> {
    actions(&s).revoke_token(&actor.0, &id).await?;
    Ok(Json(json!({"id": id, "revoked": true})))
}

// ---------------------------------------------------------------- sessions

async fn list_sessions(State(s): State<HttpState>) -> ApiResult<Vec<sessions::SessionView>> {
    Ok(Json(sessions::list(&s.db).await?))
}

async fn revoke_session(
    State(s): State<HttpState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<Value> {
    if !sessions::revoke(&s.db, &id).await? {
        return Err(ApiError::not_found(format!("no live session with id {id}")));
    }
    s.audit
        .record(
            "admin_session.revoked",
            &actor.0,
            None,
            None,
            json!({"session": id}),
        )
        .await;
    Ok(Json(json!({"id": id, "revoked": true})))
}

// ------------------------------------------------------------------ events

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    pub agent: Option<String>,
    pub runner: Option<String>,
    /// Only events with an id lower than this (the `next_before` of the previous page).
    pub before: Option<i64>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<u32>,
}

async fn list_events(State(s): State<HttpState>, Query(q): Query<EventsQuery>) -> ApiResult<Value> {
    let filter = EventFilter {
        agent_id: q.agent,
        runner_id: q.runner,
        before: q.before,
        limit: q.limit.unwrap_or(100),
    };
    Ok(Json(crate::audit::page(&s.db, &filter).await?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn openapi_documents_exactly_the_routes() {
        let doc: serde_json::Value =
            serde_json::from_str(super::OPENAPI).expect("openapi.json is JSON");
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for method in ops.as_object().expect("operations").keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String)> = super::routes()
            .into_iter()
            .map(|(m, p, _, _)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, served, "openapi.json and the router disagree");
        for (method, path, _, role) in super::routes() {
            assert_eq!(
                doc["paths"][path][method]["x-autogit-role"],
                role.as_str(),
                "{method} {path}: the documented role is the enforced one"
            );
        }
    }

    fn keys(v: &serde_json::Value) -> BTreeSet<String> {
        v.as_object().expect("an object").keys().cloned().collect()
    }

    #[test]
    fn a_pools_wait_objective_is_shown_with_its_shares_and_documented() {
        use std::time::Duration;

        use crate::runners::wait_objective::{Tally, WaitShares};

        let shares = WaitShares {
            objective: Duration::from_secs(90),
            last_hour: Tally { met: 0, total: 0 },
            last_day: Tally { met: 3, total: 4 },
        };
        let out = super::WaitObjectiveOut::from(shares);
        let shown = serde_json::to_value(&out).unwrap();
        assert_eq!(
            shown,
            serde_json::json!({
                "target": "1m 30s", "target_seconds": 90.0,
                "met_1h": null, "jobs_1h": 0,
                "met_24h": 0.75, "jobs_24h": 4,
            })
        );

        // openapi.json's Pool schema names every field the API sends.
        let pool = super::PoolOut {
            name: "p".into(),
            tags: vec![],
            arch: "x86_64".into(),
            gpu: None,
            agent_selector: Default::default(),
            max_runners: 1,
            idle_min: 0,
            schedule: vec![],
            next_change: None,
            demand: 0,
            runners: Default::default(),
            running: 0,
            idle: 0,
            unmet_reason: None,
            wait_objective: Some(out),
            stock: 2,
            stocked: 1,
        };
        let pool = serde_json::to_value(&pool).unwrap();
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let schema = &doc["components"]["schemas"]["Pool"]["properties"];
        assert_eq!(
            keys(schema),
            keys(&pool),
            "Pool schema and PoolOut disagree"
        );
        assert_eq!(
            keys(&schema["wait_objective"]["properties"]),
            keys(&pool["wait_objective"]),
            "Pool.wait_objective schema and WaitObjectiveOut disagree"
        );
    }
}
