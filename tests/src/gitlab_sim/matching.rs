//! Which runner may take which job: GitLab's matching rules, as pure functions.
//!
//! From doc/ci/runners/configure_runners.md ("Use tags to control which jobs a runner
//! can run") and `Ci::RegisterJobService` / `Ci::Runner#matches_build?`:
//! - a paused or deleted runner gets nothing;
//! - a `project_type` runner only takes jobs of the projects it is assigned to, a
//!   `group_type` runner only jobs of projects in its group, an `instance_type` runner
//!   jobs of every project (shared runners are enabled on every simulated project);
//! - every tag of the job must be among the runner's tags (the job's tags are a subset);
//! - an untagged job only goes to a runner with `run_untagged = true`;
//! - a `ref_protected` runner only takes jobs running for a protected ref.
//!
//! Order: project and group runners take the oldest pending job first; instance
//! runners use GitLab's fair-usage queue, which prefers projects with fewer jobs
//! already running on instance runners, then the oldest job.

use std::collections::BTreeMap;

use super::state::{Job, JobStatus, Project, Runner, RunnerType};

/// True if `runner` may run `job` (ignoring whether the job is still pending).
pub fn runner_matches(runner: &Runner, job: &Job, project: &Project) -> bool {
    if runner.is_deleted() || runner.paused {
        return false;
    }
    let scope_ok = match runner.runner_type {
        RunnerType::Instance => true,
        RunnerType::Group => runner.group_id == Some(project.group_id),
        RunnerType::Project => runner.project_ids.contains(&job.project_id),
    };
    if !scope_ok {
        return false;
    }
    if runner.access_level == "ref_protected" && !job.protected {
        return false;
    }
    if job.tags.is_empty() {
        return runner.run_untagged;
    }
    job.tags
        .iter()
        .all(|t| runner.tags.iter().any(|rt| rt == t))
}

/// The pending job `runner` should get next, if any.
pub fn pick_job(
    runner: &Runner,
    jobs: &BTreeMap<u64, Job>,
    projects: &BTreeMap<u64, Project>,
) -> Option<u64> {
    let candidates = jobs
        .values()
        .filter(|j| j.status == JobStatus::Pending)
        .filter(|j| {
            projects
                .get(&j.project_id)
                .is_some_and(|p| runner_matches(runner, j, p))
        });
    if runner.runner_type != RunnerType::Instance {
        return candidates.map(|j| j.id).min();
    }
    let running_on_instance = |project_id: u64| {
        jobs.values()
            .filter(|j| j.project_id == project_id && j.status == JobStatus::Running)
            .filter(|j| j.runner_id.is_some())
            .count()
    };
    candidates
        .map(|j| (running_on_instance(j.project_id), j.id))
        .min()
        .map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitlab_sim::state::Secret;
    use time::OffsetDateTime;

    fn runner(kind: RunnerType, tags: &[&str], run_untagged: bool) -> Runner {
        Runner {
            id: 1,
            token: Secret("glrt-x".into()),
            runner_type: kind,
            project_ids: vec![10],
            group_id: Some(1),
            description: String::new(),
            paused: false,
            locked: false,
            run_untagged,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            access_level: "not_protected".into(),
            maximum_timeout: None,
            maintenance_note: None,
            creator_id: 1,
            created_at: OffsetDateTime::now_utc(),
            contacted_at: None,
            deleted_at: None,
            managers: vec![],
            jobs: vec![],
        }
    }

    fn job(id: u64, project_id: u64, tags: &[&str]) -> Job {
        Job {
            id,
            project_id,
            pipeline_id: id,
            name: "build".into(),
            stage: "test".into(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            status: JobStatus::Pending,
            protected: true,
            duration_ms: 0,
            user_id: 1,
            sha: String::new(),
            git_ref: "main".into(),
            token: Secret("t".into()),
            created_at: OffsetDateTime::now_utc(),
            queued_at: None,
            started_at: None,
            finished_at: None,
            failure_reason: None,
            runner_id: None,
            runner_manager_id: None,
            assignment_count: 0,
            trace: vec![],
        }
    }

    fn project(id: u64, group_id: u64) -> Project {
        Project {
            id,
            name: String::new(),
            path: String::new(),
            group_id,
            created_at: OffsetDateTime::now_utc(),
            last_activity_at: OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn job_tags_must_be_subset_of_runner_tags() {
        let r = runner(RunnerType::Instance, &["gpu", "linux"], false);
        let p = project(10, 1);
        assert!(runner_matches(&r, &job(1, 10, &["gpu"]), &p));
        assert!(runner_matches(&r, &job(1, 10, &["linux", "gpu"]), &p));
        assert!(!runner_matches(&r, &job(1, 10, &["gpu", "arm64"]), &p));
    }

    #[test]
    fn untagged_jobs_need_run_untagged() {
        let p = project(10, 1);
        assert!(!runner_matches(
            &runner(RunnerType::Instance, &["a"], false),
            &job(1, 10, &[]),
            &p
        ));
        assert!(runner_matches(
            &runner(RunnerType::Instance, &["a"], true),
            &job(1, 10, &[]),
            &p
        ));
        // run_untagged does not let a runner take tagged jobs it lacks tags for.
        assert!(!runner_matches(
            &runner(RunnerType::Instance, &[], true),
            &job(1, 10, &["a"]),
            &p
        ));
    }

    #[test]
    fn paused_deleted_and_scoped_runners() {
        let p10 = project(10, 1);
        let p11 = project(11, 2);
        let mut r = runner(RunnerType::Project, &["a"], false);
        assert!(runner_matches(&r, &job(1, 10, &["a"]), &p10));
        assert!(!runner_matches(&r, &job(1, 11, &["a"]), &p11));
        r.paused = true;
        assert!(!runner_matches(&r, &job(1, 10, &["a"]), &p10));
        r.paused = false;
        r.deleted_at = Some(OffsetDateTime::now_utc());
        assert!(!runner_matches(&r, &job(1, 10, &["a"]), &p10));
        let g = runner(RunnerType::Group, &["a"], false);
        assert!(runner_matches(&g, &job(1, 10, &["a"]), &p10));
        assert!(!runner_matches(&g, &job(1, 11, &["a"]), &p11));
    }

    #[test]
    fn ref_protected_runner_skips_unprotected_jobs() {
        let p = project(10, 1);
        let mut r = runner(RunnerType::Instance, &["a"], false);
        r.access_level = "ref_protected".into();
        let mut j = job(1, 10, &["a"]);
        assert!(runner_matches(&r, &j, &p));
        j.protected = false;
        assert!(!runner_matches(&r, &j, &p));
    }

    #[test]
    fn instance_runner_prefers_projects_with_fewer_running_jobs() {
        let mut jobs = BTreeMap::new();
        let mut busy = job(1, 10, &["a"]);
        busy.status = JobStatus::Running;
        busy.runner_id = Some(9);
        jobs.insert(1, busy);
        jobs.insert(2, job(2, 10, &["a"]));
        jobs.insert(3, job(3, 11, &["a"]));
        let mut projects = BTreeMap::new();
        projects.insert(10, project(10, 1));
        projects.insert(11, project(11, 1));
        let r = runner(RunnerType::Instance, &["a"], false);
        assert_eq!(pick_job(&r, &jobs, &projects), Some(3));
        let mut pr = runner(RunnerType::Project, &["a"], false);
        pr.project_ids = vec![10, 11];
        assert_eq!(pick_job(&pr, &jobs, &projects), Some(2));
    }
}
