//! A [`GitLab`] for reconciler tests: keeps runners in memory, counts every
//! create and delete, and can fail or delay them (a delay is a tokio sleep,
//! so it follows the paused clock).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::gitlab::{
    CreateRunner, CreatedRunner, GitLab, GitLabError, GitLabResult, Job, JobScope, Project,
    RunnerFilter, RunnerInfo, User, Version,
};

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Live runners: id → description.
    runners: BTreeMap<u64, Option<String>>,
    creates: u32,
    /// Every delete call, in order.
    deletes: Vec<u64>,
    fail_creates: bool,
    fail_deletes: bool,
    delay: Duration,
    unrecorded_creates: u32,
}

#[derive(Debug, Default)]
pub struct FakeGitLab {
    state: Mutex<State>,
    /// When set, every create looks its runner's record up here first and
    /// counts creates whose record was not committed yet.
    records: Mutex<Option<crate::db::Db>>,
}

fn server_error(endpoint: &str) -> GitLabError {
    GitLabError::Server {
        endpoint: endpoint.to_string(),
        status: 500,
    }
}

impl FakeGitLab {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn creates(&self) -> u32 {
        self.lock().creates
    }

    /// Check, at every create, that the runner's record is already in `db`.
    pub fn check_records_in(&self, db: crate::db::Db) {
        *self.records.lock().unwrap_or_else(|e| e.into_inner()) = Some(db);
    }

    /// Creates that reached GitLab before their runner's record was committed.
    pub fn unrecorded_creates(&self) -> u32 {
        self.lock().unrecorded_creates
    }

    pub fn deletes(&self) -> Vec<u64> {
        self.lock().deletes.clone()
    }

    /// GitLab runners that exist now.
    pub fn live(&self) -> Vec<u64> {
        self.lock().runners.keys().copied().collect()
    }

    pub fn fail_creates(&self, fail: bool) {
        self.lock().fail_creates = fail;
    }

    pub fn fail_deletes(&self, fail: bool) {
        self.lock().fail_deletes = fail;
    }

    /// Every create and delete takes this long.
    pub fn delay(&self, d: Duration) {
        self.lock().delay = d;
    }

    async fn wait(&self) {
        let d = self.lock().delay;
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

#[async_trait]
impl GitLab for FakeGitLab {
    async fn current_user(&self) -> GitLabResult<User> {
        Ok(User {
            id: 1,
            username: "root".into(),
            name: None,
            state: None,
            is_admin: true,
            bot: false,
        })
    }

    async fn version(&self) -> GitLabResult<Version> {
        Ok(Version {
            version: "18.0.0".into(),
            revision: None,
            enterprise: None,
        })
    }

    async fn member_projects(&self) -> GitLabResult<Vec<Project>> {
        Ok(Vec::new())
    }

    async fn project(&self, _project_id: u64) -> GitLabResult<Project> {
        Err(GitLabError::NotFound {
            endpoint: "GET /projects/:id".into(),
        })
    }

    async fn jobs(&self, _project_id: u64, _scopes: &[JobScope]) -> GitLabResult<Vec<Job>> {
        Ok(Vec::new())
    }

    async fn job(&self, _project_id: u64, _job_id: u64) -> GitLabResult<Job> {
        Err(GitLabError::NotFound {
            endpoint: "GET /projects/:id/jobs/:job_id".into(),
        })
    }

    async fn instance_pending_jobs(&self) -> GitLabResult<Vec<Job>> {
        Ok(Vec::new())
    }

    async fn create_runner(&self, request: &CreateRunner) -> GitLabResult<CreatedRunner> {
        self.wait().await;
        let db = self
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(db) = db {
            let id = request
                .description
                .as_deref()
                .unwrap_or_default()
                .split_whitespace()
                .find_map(|w| w.strip_prefix("runner="))
                .unwrap_or_default()
                .to_string();
            if !matches!(db.get_runner(&id).await, Ok(Some(_))) {
                self.lock().unrecorded_creates += 1;
            }
        }
        let mut s = self.lock();
        s.creates += 1;
        if s.fail_creates {
            return Err(server_error("POST /user/runners"));
        }
        s.next_id += 1;
        let id = 1000 + s.next_id;
        s.runners.insert(id, request.description.clone());
        Ok(CreatedRunner {
            id,
            token: SecretString::from(format!("glrt-fake-{id}")),
            token_expires_at: None,
        })
    }

    async fn delete_runner(&self, runner_id: u64) -> GitLabResult<()> {
        self.wait().await;
        let mut s = self.lock();
        s.deletes.push(runner_id);
        if s.fail_deletes {
            return Err(server_error("DELETE /runners/:id"));
        }
        match s.runners.remove(&runner_id) {
            Some(_) => Ok(()),
            None => Err(GitLabError::NotFound {
                endpoint: "DELETE /runners/:id".into(),
            }),
        }
    }

    async fn list_runners(&self, _filter: &RunnerFilter) -> GitLabResult<Vec<RunnerInfo>> {
        Ok(self
            .lock()
            .runners
            .iter()
            .map(|(id, description)| RunnerInfo {
                id: *id,
                description: description.clone(),
                runner_type: None,
                paused: None,
                active: None,
                is_shared: None,
                online: None,
                status: None,
                tag_list: Vec::new(),
            })
            .collect())
    }
}
