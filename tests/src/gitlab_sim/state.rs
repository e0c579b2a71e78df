//! The simulator's world: users, projects, jobs, runners, hooks and faults.
//!
//! All of it lives in one [`World`] behind one mutex (see `server.rs`). Every operation
//! that changes a job's status goes through [`World::set_job_status`], which also queues
//! the Job Hook deliveries for that change, so webhooks can never disagree with the REST
//! view. Handing out a job (`POST /jobs/request`) happens under the same lock, which is
//! what guarantees a job goes to exactly one runner even under concurrent requests.

use std::collections::BTreeMap;
use std::fmt;

use rand::Rng;
use rand::distr::Alphanumeric;
use time::OffsetDateTime;

use super::model::{
    AttemptOutcome, SimAttempt, SimDelivery, SimFaults, SimHook, SimJob, SimManager, SimProject,
    SimRunner, SimUser,
};
use super::timefmt::{iso, iso_opt};

/// A secret string whose `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Random token body from `[A-Za-z0-9]`.
pub fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: u64,
    pub username: String,
    pub name: String,
    pub is_admin: bool,
    pub token: Secret,
    pub project_ids: Vec<u64>,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub id: u64,
    pub name: String,
    pub path: String,
}

#[derive(Debug, Clone)]
pub struct Project {
    pub id: u64,
    pub name: String,
    pub path: String,
    pub group_id: u64,
    pub created_at: OffsetDateTime,
    pub last_activity_at: OffsetDateTime,
}

/// GitLab CI job statuses the simulator produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Created,
    Pending,
    Running,
    Success,
    Failed,
    Canceled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "created",
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Success | JobStatus::Failed | JobStatus::Canceled
        )
    }
}

/// Every value GitLab accepts for the jobs API `scope` filter
/// (`::Ci::HasStatus::AVAILABLE_STATUSES`, doc/api/jobs.md "List project jobs").
pub const AVAILABLE_JOB_SCOPES: &[&str] = &[
    "created",
    "waiting_for_resource",
    "preparing",
    "waiting_for_callback",
    "pending",
    "running",
    "success",
    "failed",
    "canceling",
    "canceled",
    "skipped",
    "manual",
    "scheduled",
];

#[derive(Debug, Clone)]
pub struct Job {
    pub id: u64,
    pub project_id: u64,
    pub pipeline_id: u64,
    pub name: String,
    pub stage: String,
    pub tags: Vec<String>,
    pub status: JobStatus,
    pub protected: bool,
    pub duration_ms: u64,
    pub user_id: u64,
    pub sha: String,
    pub git_ref: String,
    pub token: Secret,
    pub created_at: OffsetDateTime,
    pub queued_at: Option<OffsetDateTime>,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub failure_reason: Option<String>,
    pub runner_id: Option<u64>,
    pub runner_manager_id: Option<u64>,
    pub assignment_count: u32,
    pub trace: Vec<u8>,
}

impl Job {
    /// Seconds spent queued (GitLab's `queued_duration`).
    pub fn queued_duration(&self, now: OffsetDateTime) -> Option<f64> {
        let queued = self.queued_at?;
        Some(super::timefmt::secs_between(
            queued,
            self.started_at.unwrap_or(now),
        ))
    }

    /// Seconds spent running (GitLab's `duration`).
    pub fn duration(&self, now: OffsetDateTime) -> Option<f64> {
        let started = self.started_at?;
        Some(super::timefmt::secs_between(
            started,
            self.finished_at.unwrap_or(now),
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerType {
    Instance,
    Group,
    Project,
}

impl RunnerType {
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerType::Instance => "instance_type",
            RunnerType::Group => "group_type",
            RunnerType::Project => "project_type",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "instance_type" => Some(RunnerType::Instance),
            "group_type" => Some(RunnerType::Group),
            "project_type" => Some(RunnerType::Project),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Manager {
    pub id: u64,
    pub system_id: String,
    pub version: Option<String>,
    pub revision: Option<String>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    pub created_at: OffsetDateTime,
    pub contacted_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct Runner {
    pub id: u64,
    pub token: Secret,
    pub runner_type: RunnerType,
    pub project_ids: Vec<u64>,
    pub group_id: Option<u64>,
    pub description: String,
    pub paused: bool,
    pub locked: bool,
    pub run_untagged: bool,
    pub tags: Vec<String>,
    pub access_level: String,
    pub maximum_timeout: Option<u64>,
    pub maintenance_note: Option<String>,
    pub creator_id: u64,
    pub created_at: OffsetDateTime,
    pub contacted_at: Option<OffsetDateTime>,
    pub deleted_at: Option<OffsetDateTime>,
    pub managers: Vec<Manager>,
    pub jobs: Vec<u64>,
}

/// A runner counts as online if it contacted GitLab within the last 2 hours
/// (`Ci::Runner::ONLINE_CONTACT_TIMEOUT`, doc/api/runners.md `status`).
pub const ONLINE_CONTACT_TIMEOUT: time::Duration = time::Duration::hours(2);

impl Runner {
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// `online` as GitLab exposes it: `null` when never contacted.
    pub fn online(&self, now: OffsetDateTime) -> Option<bool> {
        self.contacted_at.map(|c| c > now - ONLINE_CONTACT_TIMEOUT)
    }

    /// `status`: `online`, `offline` or `never_contacted` (the simulator never makes
    /// runners old enough to be `stale`).
    pub fn status(&self, now: OffsetDateTime) -> &'static str {
        match self.online(now) {
            None => "never_contacted",
            Some(true) => "online",
            Some(false) => "offline",
        }
    }
}

/// Webhook target with GitLab's auto-disabling counters
/// (app/models/concerns/web_hooks/auto_disabling.rb).
#[derive(Debug, Clone)]
pub struct Hook {
    pub id: u64,
    pub url: String,
    pub token: Option<Secret>,
    pub project_id: Option<u64>,
    pub job_events: bool,
    pub created_at: OffsetDateTime,
    pub recent_failures: u32,
    pub disabled_until: Option<OffsetDateTime>,
    pub deleted: bool,
}

/// GitLab's `TEMPORARILY_DISABLED_FAILURE_THRESHOLD`: a hook is disabled once
/// `recent_failures` exceeds this, i.e. after the 4th consecutive failure.
pub const TEMPORARILY_DISABLED_FAILURE_THRESHOLD: u32 = 3;
/// GitLab's `PERMANENTLY_DISABLED_FAILURE_THRESHOLD`: disabled for good after 40 failures.
pub const PERMANENTLY_DISABLED_FAILURE_THRESHOLD: u32 = 39;

impl Hook {
    pub fn temporarily_disabled(&self, now: OffsetDateTime) -> bool {
        self.disabled_until.is_some_and(|d| d >= now)
            && (TEMPORARILY_DISABLED_FAILURE_THRESHOLD + 1..=PERMANENTLY_DISABLED_FAILURE_THRESHOLD)
                .contains(&self.recent_failures)
    }

    pub fn permanently_disabled(&self) -> bool {
        self.recent_failures > PERMANENTLY_DISABLED_FAILURE_THRESHOLD
    }

    pub fn executable(&self, now: OffsetDateTime) -> bool {
        !self.deleted && !self.temporarily_disabled(now) && !self.permanently_disabled()
    }

    pub fn alert_status(&self, now: OffsetDateTime) -> &'static str {
        if self.temporarily_disabled(now) {
            "temporarily_disabled"
        } else if self.permanently_disabled() {
            "disabled"
        } else {
            "executable"
        }
    }
}

/// One event routed to one hook.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: u64,
    pub hook_id: u64,
    pub job_id: u64,
    pub build_status: String,
    pub event_uuid: String,
    pub idempotency_key: String,
    pub payload: serde_json::Value,
    pub attempts: Vec<SimAttempt>,
}

/// A delivery the webhook dispatcher should attempt (built under the lock, sent after).
#[derive(Debug, Clone)]
pub struct DeliveryTask {
    pub delivery_id: u64,
    pub hook_id: u64,
}

/// Static settings fixed at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub external_url: String,
    pub version: String,
    pub revision: String,
    pub webhook_timeout: std::time::Duration,
    pub hook_initial_backoff: time::Duration,
    pub hook_max_backoff: time::Duration,
}

#[derive(Debug, Default)]
struct Ids {
    user: u64,
    group: u64,
    project: u64,
    job: u64,
    pipeline: u64,
    runner: u64,
    manager: u64,
    hook: u64,
    delivery: u64,
}

/// The whole simulated instance.
#[derive(Debug)]
pub struct World {
    pub settings: Settings,
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub projects: BTreeMap<u64, Project>,
    pub jobs: BTreeMap<u64, Job>,
    pub runners: BTreeMap<u64, Runner>,
    pub hooks: BTreeMap<u64, Hook>,
    pub deliveries: Vec<Delivery>,
    pub faults: SimFaults,
    pub requests: BTreeMap<String, u64>,
    /// Deliveries queued under the lock; the server drains this to the dispatcher.
    pub outbox: Vec<DeliveryTask>,
    ids: Ids,
}

/// The namespace every simulated project lives in.
pub const SIM_GROUP_ID: u64 = 1;

impl World {
    pub fn new(settings: Settings, admin_token: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        let mut w = World {
            settings,
            users: Vec::new(),
            groups: Vec::new(),
            projects: BTreeMap::new(),
            jobs: BTreeMap::new(),
            runners: BTreeMap::new(),
            hooks: BTreeMap::new(),
            deliveries: Vec::new(),
            faults: SimFaults::default(),
            requests: BTreeMap::new(),
            outbox: Vec::new(),
            ids: Ids::default(),
        };
        w.ids.user += 1;
        w.users.push(User {
            id: w.ids.user,
            username: "root".into(),
            name: "Administrator".into(),
            is_admin: true,
            token: Secret(admin_token.to_owned()),
            project_ids: Vec::new(),
            created_at: now,
        });
        w.ids.group += 1;
        w.groups.push(Group {
            id: w.ids.group,
            name: "AutoGit Sim".into(),
            path: "autogit-sim".into(),
        });
        w
    }

    pub fn user_by_token(&self, token: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| constant_time_eq(u.token.expose().as_bytes(), token.as_bytes()))
    }

    pub fn user(&self, id: u64) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    pub fn group(&self, id: u64) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == id)
    }

    /// Creates project `id` (owned by root, in the sim group) unless it exists.
    pub fn ensure_project(&mut self, id: u64) -> &Project {
        let now = OffsetDateTime::now_utc();
        if id > self.ids.project {
            self.ids.project = id;
        }
        self.projects.entry(id).or_insert_with(|| Project {
            id,
            name: format!("project-{id}"),
            path: format!("project-{id}"),
            group_id: SIM_GROUP_ID,
            created_at: now,
            last_activity_at: now,
        })
    }

    pub fn project_path(&self, p: &Project) -> String {
        let ns = self
            .group(p.group_id)
            .map(|g| g.path.clone())
            .unwrap_or_else(|| "root".into());
        format!("{ns}/{}", p.path)
    }

    /// Finds a project by numeric id or `namespace/path`.
    pub fn find_project(&self, key: &str) -> Option<&Project> {
        if let Ok(id) = key.parse::<u64>() {
            return self.projects.get(&id);
        }
        self.projects.values().find(|p| self.project_path(p) == key)
    }

    pub fn can_read_project(&self, user: &User, project_id: u64) -> bool {
        user.is_admin || user.project_ids.contains(&project_id)
    }

    pub fn create_user(&mut self, username: &str, is_admin: bool, project_ids: &[u64]) -> User {
        for p in project_ids {
            self.ensure_project(*p);
        }
        self.ids.user += 1;
        let user = User {
            id: self.ids.user,
            username: username.to_owned(),
            name: username.to_owned(),
            is_admin,
            token: Secret(format!("glpat-{}", random_token(20))),
            project_ids: project_ids.to_vec(),
            created_at: OffsetDateTime::now_utc(),
        };
        self.users.push(user.clone());
        user
    }

    /// Enqueues a job: it is created, then immediately pending, with one Job Hook
    /// event for each status, as GitLab does for a job without `when: manual`.
    pub fn create_job(
        &mut self,
        project_id: u64,
        name: &str,
        stage: &str,
        tags: Vec<String>,
        duration_ms: u64,
        protected: bool,
    ) -> u64 {
        self.ensure_project(project_id);
        let now = OffsetDateTime::now_utc();
        self.ids.job += 1;
        self.ids.pipeline += 1;
        let id = self.ids.job;
        let job = Job {
            id,
            project_id,
            pipeline_id: self.ids.pipeline,
            name: name.to_owned(),
            stage: stage.to_owned(),
            tags,
            status: JobStatus::Created,
            protected,
            duration_ms,
            user_id: 1,
            sha: format!("{:040x}", u128::from(id) * 0x9e37_79b9_7f4a_7c15),
            git_ref: "main".into(),
            token: Secret(format!("glcbt-{}", random_token(24))),
            created_at: now,
            queued_at: None,
            started_at: None,
            finished_at: None,
            failure_reason: None,
            runner_id: None,
            runner_manager_id: None,
            assignment_count: 0,
            trace: Vec::new(),
        };
        self.jobs.insert(id, job);
        self.emit_job_event(id);
        self.set_job_status(id, JobStatus::Pending, None);
        id
    }

    /// Moves a job to `status`, stamps its times and queues Job Hook deliveries.
    pub fn set_job_status(&mut self, job_id: u64, status: JobStatus, failure_reason: Option<&str>) {
        let now = OffsetDateTime::now_utc();
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if job.status == status {
            return;
        }
        job.status = status;
        match status {
            JobStatus::Pending => job.queued_at = Some(now),
            JobStatus::Running => job.started_at = Some(now),
            JobStatus::Success | JobStatus::Canceled => job.finished_at = Some(now),
            JobStatus::Failed => {
                job.finished_at = Some(now);
                job.failure_reason = Some(failure_reason.unwrap_or("unknown_failure").to_owned());
            }
            JobStatus::Created => {}
        }
        let project_id = job.project_id;
        if let Some(p) = self.projects.get_mut(&project_id) {
            p.last_activity_at = now;
        }
        self.emit_job_event(job_id);
    }

    /// Builds the Job Hook payload for the job's current state and routes it to every
    /// executable hook that wants job events for the job's project.
    fn emit_job_event(&mut self, job_id: u64) {
        let Some(payload) = super::entities::job_hook_payload(self, job_id) else {
            return;
        };
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        let project_id = job.project_id;
        let build_status = job.status.as_str().to_owned();
        let event_uuid = uuid::Uuid::new_v4().to_string();
        let hook_ids: Vec<u64> = self
            .hooks
            .values()
            .filter(|h| !h.deleted && h.job_events)
            .filter(|h| h.project_id.is_none_or(|p| p == project_id))
            .map(|h| h.id)
            .collect();
        for hook_id in hook_ids {
            self.ids.delivery += 1;
            let delivery_id = self.ids.delivery;
            self.deliveries.push(Delivery {
                id: delivery_id,
                hook_id,
                job_id,
                build_status: build_status.clone(),
                event_uuid: event_uuid.clone(),
                idempotency_key: uuid::Uuid::new_v4().to_string(),
                payload: payload.clone(),
                attempts: Vec::new(),
            });
            self.outbox.push(DeliveryTask {
                delivery_id,
                hook_id,
            });
        }
    }

    /// Queues another attempt of an existing delivery (GitLab's "Resend request"):
    /// same `Idempotency-Key` and `X-Gitlab-Event-UUID`, new `X-Gitlab-Webhook-UUID`.
    pub fn redeliver(&mut self, delivery_id: u64) -> bool {
        let Some(d) = self.deliveries.iter().find(|d| d.id == delivery_id) else {
            return false;
        };
        let task = DeliveryTask {
            delivery_id,
            hook_id: d.hook_id,
        };
        self.outbox.push(task);
        true
    }

    pub fn add_hook(
        &mut self,
        url: String,
        token: Option<String>,
        project_id: Option<u64>,
        job_events: bool,
    ) -> u64 {
        if let Some(p) = project_id {
            self.ensure_project(p);
        }
        self.ids.hook += 1;
        let id = self.ids.hook;
        self.hooks.insert(
            id,
            Hook {
                id,
                url,
                token: token.filter(|t| !t.is_empty()).map(Secret),
                project_id,
                job_events,
                created_at: OffsetDateTime::now_utc(),
                recent_failures: 0,
                disabled_until: None,
                deleted: false,
            },
        );
        id
    }

    /// Records one attempt and applies GitLab's `backoff!` / `enable!` rules.
    pub fn record_attempt(&mut self, delivery_id: u64, attempt: SimAttempt) {
        let now = OffsetDateTime::now_utc();
        let Some(d) = self.deliveries.iter_mut().find(|d| d.id == delivery_id) else {
            return;
        };
        let outcome = attempt.outcome.clone();
        d.attempts.push(attempt);
        let initial = self.settings.hook_initial_backoff.as_seconds_f64();
        let max = self.settings.hook_max_backoff.as_seconds_f64();
        let Some(hook) = self.hooks.get_mut(&d.hook_id) else {
            return;
        };
        match outcome {
            AttemptOutcome::Delivered { .. } => {
                hook.recent_failures = 0;
                hook.disabled_until = None;
            }
            AttemptOutcome::Failed { .. } if hook.executable(now) => {
                let old = hook.recent_failures;
                let new = (old + 1).clamp(1, PERMANENTLY_DISABLED_FAILURE_THRESHOLD + 1);
                hook.recent_failures = new;
                if new > TEMPORARILY_DISABLED_FAILURE_THRESHOLD {
                    let exp = old
                        .saturating_sub(TEMPORARILY_DISABLED_FAILURE_THRESHOLD)
                        .min(60);
                    let secs = (initial * 2f64.powi(exp as i32)).clamp(initial, max.max(initial));
                    hook.disabled_until = Some(now + time::Duration::seconds_f64(secs));
                }
            }
            _ => {}
        }
    }

    /// Resets a hook's failure counters (GitLab's `enable!`).
    pub fn enable_hook(&mut self, hook_id: u64) -> bool {
        match self.hooks.get_mut(&hook_id) {
            Some(h) => {
                h.recent_failures = 0;
                h.disabled_until = None;
                true
            }
            None => false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create_runner(
        &mut self,
        creator_id: u64,
        runner_type: RunnerType,
        project_ids: Vec<u64>,
        group_id: Option<u64>,
        description: String,
        paused: bool,
        locked: bool,
        run_untagged: bool,
        tags: Vec<String>,
        access_level: String,
        maximum_timeout: Option<u64>,
        maintenance_note: Option<String>,
    ) -> &Runner {
        self.ids.runner += 1;
        let id = self.ids.runner;
        let runner = Runner {
            id,
            token: Secret(format!("glrt-{}", random_token(20))),
            runner_type,
            project_ids,
            group_id,
            description,
            paused,
            locked,
            run_untagged,
            tags,
            access_level,
            maximum_timeout,
            maintenance_note,
            creator_id,
            created_at: OffsetDateTime::now_utc(),
            contacted_at: None,
            deleted_at: None,
            managers: Vec::new(),
            jobs: Vec::new(),
        };
        self.runners.entry(id).or_insert(runner)
    }

    /// Live (not deleted) runner by its authentication token.
    pub fn runner_id_by_token(&self, token: &str) -> Option<u64> {
        self.runners
            .values()
            .filter(|r| !r.is_deleted())
            .find(|r| constant_time_eq(r.token.expose().as_bytes(), token.as_bytes()))
            .map(|r| r.id)
    }

    /// Marks the runner as contacted now and records the machine (`system_id`) as a
    /// runner manager, creating it on first contact.
    pub fn touch_runner(
        &mut self,
        runner_id: u64,
        system_id: Option<&str>,
        info: Option<&serde_json::Value>,
    ) -> Option<u64> {
        let now = OffsetDateTime::now_utc();
        let next_manager_id = self.ids.manager + 1;
        let runner = self.runners.get_mut(&runner_id)?;
        runner.contacted_at = Some(now);
        let system_id = system_id.filter(|s| !s.is_empty())?;
        let info_str = |k: &str| {
            info.and_then(|i| i.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        if let Some(m) = runner
            .managers
            .iter_mut()
            .find(|m| m.system_id == system_id)
        {
            m.contacted_at = now;
            if info.is_some() {
                m.version = info_str("version").or(m.version.take());
                m.revision = info_str("revision").or(m.revision.take());
                m.platform = info_str("platform").or(m.platform.take());
                m.architecture = info_str("architecture").or(m.architecture.take());
            }
            return Some(m.id);
        }
        runner.managers.push(Manager {
            id: next_manager_id,
            system_id: system_id.to_owned(),
            version: info_str("version"),
            revision: info_str("revision"),
            platform: info_str("platform"),
            architecture: info_str("architecture"),
            created_at: now,
            contacted_at: now,
        });
        self.ids.manager = next_manager_id;
        Some(next_manager_id)
    }

    /// Hands the best pending job this runner may take to it, or `None`.
    pub fn assign_job(&mut self, runner_id: u64, manager_id: Option<u64>) -> Option<u64> {
        let runner = self.runners.get(&runner_id)?;
        let job_id = super::matching::pick_job(runner, &self.jobs, &self.projects)?;
        let job = self.jobs.get_mut(&job_id)?;
        job.runner_id = Some(runner_id);
        job.runner_manager_id = manager_id;
        job.assignment_count += 1;
        if let Some(r) = self.runners.get_mut(&runner_id) {
            r.jobs.push(job_id);
        }
        self.set_job_status(job_id, JobStatus::Running, None);
        Some(job_id)
    }

    pub fn job_by_token(&self, token: &str) -> Option<&Job> {
        self.jobs
            .values()
            .find(|j| constant_time_eq(j.token.expose().as_bytes(), token.as_bytes()))
    }

    pub fn delete_runner(&mut self, runner_id: u64) -> bool {
        match self.runners.get_mut(&runner_id) {
            Some(r) if !r.is_deleted() => {
                r.deleted_at = Some(OffsetDateTime::now_utc());
                true
            }
            _ => false,
        }
    }

    pub fn count_request(&mut self, key: String) {
        *self.requests.entry(key).or_insert(0) += 1;
    }

    // ---- views -------------------------------------------------------------------

    pub fn sim_job(&self, job: &Job) -> SimJob {
        let system_id = job.runner_id.and_then(|r| {
            let runner = self.runners.get(&r)?;
            let mid = job.runner_manager_id?;
            runner
                .managers
                .iter()
                .find(|m| m.id == mid)
                .map(|m| m.system_id.clone())
        });
        SimJob {
            id: job.id,
            project_id: job.project_id,
            pipeline_id: job.pipeline_id,
            name: job.name.clone(),
            stage: job.stage.clone(),
            tags: job.tags.clone(),
            status: job.status.as_str().to_owned(),
            assignment_count: job.assignment_count,
            runner_id: job.runner_id,
            runner_system_id: system_id,
            duration_ms: job.duration_ms,
            protected: job.protected,
            created_at: iso(job.created_at),
            started_at: job.started_at.map(iso),
            finished_at: job.finished_at.map(iso),
            failure_reason: job.failure_reason.clone(),
            trace_bytes: job.trace.len(),
        }
    }

    pub fn sim_runner(&self, r: &Runner) -> SimRunner {
        SimRunner {
            id: r.id,
            runner_type: r.runner_type.as_str().to_owned(),
            description: r.description.clone(),
            paused: r.paused,
            locked: r.locked,
            run_untagged: r.run_untagged,
            tags: r.tags.clone(),
            access_level: r.access_level.clone(),
            maximum_timeout: r.maximum_timeout,
            project_ids: r.project_ids.clone(),
            group_id: r.group_id,
            created_at: iso(r.created_at),
            contacted_at: r.contacted_at.map(iso),
            deleted: r.is_deleted(),
            deleted_at: r.deleted_at.map(iso),
            managers: r
                .managers
                .iter()
                .map(|m| SimManager {
                    id: m.id,
                    system_id: m.system_id.clone(),
                    version: m.version.clone(),
                    platform: m.platform.clone(),
                    architecture: m.architecture.clone(),
                    created_at: iso(m.created_at),
                    contacted_at: iso(m.contacted_at),
                })
                .collect(),
            jobs: r.jobs.clone(),
        }
    }

    pub fn sim_hook(&self, h: &Hook) -> SimHook {
        let now = OffsetDateTime::now_utc();
        SimHook {
            id: h.id,
            url: h.url.clone(),
            project_id: h.project_id,
            recent_failures: h.recent_failures,
            disabled_until: h.disabled_until.map(iso),
            alert_status: h.alert_status(now).to_owned(),
            deleted: h.deleted,
        }
    }

    pub fn sim_delivery(d: &Delivery) -> SimDelivery {
        SimDelivery {
            id: d.id,
            hook_id: d.hook_id,
            job_id: d.job_id,
            build_status: d.build_status.clone(),
            event_uuid: d.event_uuid.clone(),
            idempotency_key: d.idempotency_key.clone(),
            attempts: d.attempts.clone(),
        }
    }

    pub fn snapshot(&self) -> super::model::SimSnapshot {
        super::model::SimSnapshot {
            users: self
                .users
                .iter()
                .map(|u| SimUser {
                    id: u.id,
                    username: u.username.clone(),
                    is_admin: u.is_admin,
                    project_ids: u.project_ids.clone(),
                })
                .collect(),
            projects: self
                .projects
                .values()
                .map(|p| SimProject {
                    id: p.id,
                    path_with_namespace: self.project_path(p),
                    group_id: p.group_id,
                })
                .collect(),
            jobs: self.jobs.values().map(|j| self.sim_job(j)).collect(),
            runners: self.runners.values().map(|r| self.sim_runner(r)).collect(),
            hooks: self.hooks.values().map(|h| self.sim_hook(h)).collect(),
            deliveries: self.deliveries.iter().map(World::sim_delivery).collect(),
            faults: self.faults.clone(),
            requests: self.requests.clone(),
        }
    }
}

/// Compares secrets without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `iso_opt` re-exported for entity builders.
pub fn ts(t: Option<OffsetDateTime>) -> serde_json::Value {
    iso_opt(t)
}
