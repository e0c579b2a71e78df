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
}

#[derive(Debug, Default)]
pub struct FakeGitLab {
    state: Mutex<State>,
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
