//! The real GitLab client against a running AutoGit GitLab simulator.
//!
//! Ignored by default because it needs a simulator process. Run it with
//! ```text
//! autogit-gitlab-sim --listen 127.0.0.1:0 --admin-token TOKEN   # prints its URL
//! AUTOGIT_GITLAB_SIM_URL=http://127.0.0.1:PORT AUTOGIT_SIM_ADMIN_TOKEN=TOKEN \
//!   cargo test -p autogit-coordinator --test gitlab_client_sim -- --ignored
//! ```
//! It fails (rather than passing vacuously) when those variables are unset.
//! The full end-to-end suite in the `tests/` crate starts the simulator
//! itself; this file checks that the client and the simulator agree on every
//! call of the `GitLab` trait.

use std::time::Duration;

use autogit_coordinator::gitlab::{
    CreateRunner, GitLab, GitLabClient, GitLabClientConfig, GitLabError, JobScope, JobStatus,
    RetryPolicy, RunnerFilter, RunnerType,
};
use secrecy::{ExposeSecret, SecretString};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("set {name} (see the module docs)"))
}

fn client(base: &str, token: &str, per_page: u32) -> GitLabClient {
    let mut cfg = GitLabClientConfig::new(base, SecretString::from(token));
    cfg.per_page = per_page;
    cfg.retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(2),
    };
    GitLabClient::new(cfg).expect("client")
}

#[tokio::test]
#[ignore = "needs a running GitLab simulator: AUTOGIT_GITLAB_SIM_URL and AUTOGIT_SIM_ADMIN_TOKEN"]
async fn client_agrees_with_the_simulator() {
    let base = env("AUTOGIT_GITLAB_SIM_URL");
    let admin_token = env("AUTOGIT_SIM_ADMIN_TOKEN");
    assert!(
        base.starts_with("http://127.") || base.starts_with("http://[::1]"),
        "loopback only: {base}"
    );
    let http = reqwest::Client::new();
    let project_id = 7000 + u64::from(std::process::id() % 1000);

    // Seed three pending jobs and a non-admin member through the control API.
    let mut seeded = Vec::new();
    for i in 0..3 {
        let job: serde_json::Value = http
            .post(format!("{base}/sim/jobs"))
            .json(&serde_json::json!({"project_id": project_id, "tags": ["gpu", "sim"], "name": format!("j{i}")}))
            .send()
            .await
            .expect("seed job")
            .json()
            .await
            .expect("seed job answer");
        seeded.push(job["id"].as_u64().expect("seeded job id"));
    }
    let dev: serde_json::Value = http
        .post(format!("{base}/sim/users"))
        .json(&serde_json::json!({"username": format!("dev{project_id}"), "admin": false, "project_ids": [project_id]}))
        .send()
        .await
        .expect("seed user")
        .json()
        .await
        .expect("seed user answer");
    let dev_token = dev["token"].as_str().expect("dev token").to_owned();

    let admin = client(&base, &admin_token, 2);
    let me = admin.current_user().await.expect("GET /user");
    assert!(me.is_admin);
    admin.version().await.expect("GET /version");

    // per_page=2 with 3 jobs: the second page must be followed.
    let jobs = admin
        .jobs(project_id, &[JobScope::Pending])
        .await
        .expect("GET /projects/:id/jobs");
    let mut ids: Vec<u64> = jobs.iter().map(|j| j.id).collect();
    ids.sort_unstable();
    let mut want = seeded.clone();
    want.sort_unstable();
    assert_eq!(ids, want);
    assert!(jobs.iter().all(|j| j.status == JobStatus::Pending
        && j.project_id == project_id
        && j.tag_list == vec!["gpu", "sim"]));
    let one = admin.job(project_id, seeded[0]).await.expect("GET job");
    assert_eq!(one.id, seeded[0]);
    assert_eq!(one.tag_list, vec!["gpu", "sim"]);

    let pending = admin.instance_pending_jobs().await.expect("GraphQL jobs");
    for id in &seeded {
        assert!(
            pending
                .iter()
                .any(|j| j.id == *id && j.project_id == project_id),
            "job {id} in GraphQL answer"
        );
    }

    let created = admin
        .create_runner(&CreateRunner {
            tag_list: vec!["gpu".into(), "sim".into()],
            run_untagged: Some(false),
            description: Some(format!("autogit-sim-check-{project_id}")),
            ..CreateRunner::new(RunnerType::InstanceType)
        })
        .await
        .expect("POST /user/runners");
    assert!(created.token.expose_secret().starts_with("glrt-"));
    let listed = admin
        .list_runners(&RunnerFilter {
            all: true,
            tag_list: vec!["gpu".into()],
            ..RunnerFilter::default()
        })
        .await
        .expect("GET /runners/all");
    assert!(listed.iter().any(|r| r.id == created.id));
    admin.delete_runner(created.id).await.expect("DELETE");
    let again = admin.delete_runner(created.id).await.expect_err("gone");
    assert!(again.is_not_found(), "{again:?}");

    let member = client(&base, &dev_token, 100);
    let projects = member.member_projects().await.expect("GET /projects");
    assert!(projects.iter().any(|p| p.id == project_id));
    match member.instance_pending_jobs().await {
        // GitLab itself answers non-admins with an empty list.
        Ok(jobs) => assert!(jobs.is_empty(), "non-admin must not see instance jobs"),
        Err(e) => assert!(matches!(e, GitLabError::Forbidden { .. }), "{e:?}"),
    }
    let err = member
        .list_runners(&RunnerFilter {
            all: true,
            ..RunnerFilter::default()
        })
        .await
        .expect_err("non-admin on /runners/all");
    assert!(matches!(err, GitLabError::Forbidden { .. }), "{err:?}");

    let bad = client(&base, "glpat-not-a-real-token", 100);
    let err = bad.current_user().await.expect_err("bad token");
    assert!(matches!(err, GitLabError::Unauthorized { .. }), "{err:?}");
}
