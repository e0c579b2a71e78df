//! Real processes against the GitLab simulator: the `autogit-gitlab-sim` binary, the
//! `autogit-test-runner` binary (job flow, wait timeout, bad token, SIGTERM and SIGQUIT),
//! the `autogit-test/runner:dev` image run with `docker run --network host`, and
//! python-gitlab (Debian's python3-gitlab) as an independent GitLab client.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use autogit_tests::gitlab_sim::{self, NewJob, SimConfig, SimServer};
use autogit_tests::runner_image::{TEST_RUNNER_IMAGE, docker_available, ensure_test_runner_image};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const ADMIN: &str = "glpat-admin-for-process-tests";
const RUNNER_BIN: &str = env!("CARGO_BIN_EXE_autogit-test-runner");
const SIM_BIN: &str = env!("CARGO_BIN_EXE_autogit-gitlab-sim");

async fn start() -> SimServer {
    gitlab_sim::spawn(SimConfig {
        admin_token: ADMIN.into(),
        ..SimConfig::default()
    })
    .await
    .expect("start simulator")
}

async fn create_runner(sim: &SimServer, tags: &[&str]) -> (u64, String) {
    let v: Value = reqwest::Client::new()
        .post(format!("{}/api/v4/user/runners", sim.url()))
        .header("PRIVATE-TOKEN", ADMIN)
        .json(&json!({ "runner_type": "instance_type", "tag_list": tags }))
        .send()
        .await
        .expect("create runner")
        .json()
        .await
        .expect("json");
    (
        v["id"].as_u64().expect("id"),
        v["token"].as_str().expect("token").to_owned(),
    )
}

fn runner_cmd(url: &str, token: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(RUNNER_BIN);
    c.args(["run-single", "--url", url, "--token", token])
        .args(extra);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Waits for a child off the async runtime, killing it after `limit`.
async fn wait_output(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let waiter = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(limit, waiter).await {
        Ok(out) => out.expect("join").expect("wait"),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            panic!("process {pid} did not exit within {limit:?}");
        }
    }
}

async fn wait_status(sim: &SimServer, job_id: u64, status: &str) -> bool {
    sim.handle()
        .wait_until(Duration::from_secs(10), |s| {
            s.jobs.iter().any(|j| j.id == job_id && j.status == status)
        })
        .await
        .0
}

#[tokio::test]
async fn sim_binary_prints_its_address_and_serves() {
    let mut child = Command::new(SIM_BIN)
        .args(["--listen", "127.0.0.1:0", "--admin-token", ADMIN])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sim");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("read");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("`listening on URL` line")
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let client = reqwest::Client::new();
    let v: Value = client
        .get(format!("{url}/api/v4/version"))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("version")
        .json()
        .await
        .expect("json");
    assert_eq!(v["version"], gitlab_sim::SIM_GITLAB_VERSION);
    let unauth = client
        .get(format!("{url}/api/v4/version"))
        .send()
        .await
        .expect("unauth");
    assert_eq!(unauth.status(), reqwest::StatusCode::UNAUTHORIZED);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("sigterm");
    let out = wait_output(child, Duration::from_secs(10)).await;
    assert!(
        out.status.success(),
        "sim exits cleanly on SIGTERM: {:?}",
        out.status
    );
}

/// Like `gitlab-runner run-single`, the test runner reads the URL and token
/// from `CI_SERVER_URL` / `CI_SERVER_TOKEN` (what AutoGit's runner containers
/// get), and a flag, when given, wins over the environment.
#[tokio::test]
async fn test_runner_reads_url_and_token_from_the_environment() {
    let sim = start().await;
    let job = sim.handle().create_job(NewJob {
        project_id: 1,
        tags: vec!["env".into()],
        ..NewJob::default()
    });
    let (rid, token) = create_runner(&sim, &["env"]).await;
    let child = Command::new(RUNNER_BIN)
        .args(["run-single", "--max-builds", "1", "--wait-timeout", "20"])
        .env("CI_SERVER_URL", sim.url())
        .env("CI_SERVER_TOKEN", &token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runner");
    let out = wait_output(child, Duration::from_secs(30)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "runner failed: {stdout}");
    assert!(!stdout.contains(&token), "runner logged its token");
    let j = sim.handle().job(job.id).expect("job");
    assert_eq!((j.status.as_str(), j.runner_id), ("success", Some(rid)));

    // --token overrides CI_SERVER_TOKEN: a bad flag is rejected although the env is good.
    let child = Command::new(RUNNER_BIN)
        .args(["run-single", "--token", "glrt-wrong", "--wait-timeout", "5"])
        .env("CI_SERVER_URL", sim.url())
        .env("CI_SERVER_TOKEN", &token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runner");
    let out = wait_output(child, Duration::from_secs(30)).await;
    assert_eq!(out.status.code(), Some(1), "the flag's bad token was used");
}

#[tokio::test]
async fn test_runner_takes_a_job_and_reports_success() {
    let sim = start().await;
    let job = sim.handle().create_job(NewJob {
        project_id: 1,
        tags: vec!["gpu".into()],
        duration_ms: Some(300),
        ..NewJob::default()
    });
    let (rid, token) = create_runner(&sim, &["gpu"]).await;
    let started = Instant::now();
    let child = runner_cmd(
        &sim.url(),
        &token,
        // Official flags the test runner must accept and ignore.
        &[
            "--executor",
            "docker",
            "--docker-image",
            "alpine:3",
            "--max-builds",
            "1",
            "--wait-timeout",
            "20",
            "--docker-privileged",
            "--name=runner-1",
            "--limit",
            "1",
        ],
    )
    .spawn()
    .expect("spawn runner");
    let out = wait_output(child, Duration::from_secs(30)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "runner failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "job duration not honoured"
    );
    assert!(!stdout.contains(&token), "runner logged its token");
    let j = sim.handle().job(job.id).expect("job");
    assert_eq!(j.status, "success");
    assert_eq!(j.runner_id, Some(rid));
    assert!(j.trace_bytes > 0, "no trace was sent");
    let r = sim.handle().runner(rid).expect("runner");
    assert_eq!(r.managers.len(), 1, "one machine verified and requested");
    assert_eq!(r.jobs, vec![job.id]);
}

#[tokio::test]
async fn test_runner_honours_env_wait_timeout_and_bad_tokens() {
    let sim = start().await;
    let (_, token) = create_runner(&sim, &["idle"]).await;
    // No job: exits 0 once --wait-timeout passes; URL and token from the environment.
    let started = Instant::now();
    let child = Command::new(RUNNER_BIN)
        .args(["run-single", "--wait-timeout", "1"])
        .env("CI_SERVER_URL", sim.url())
        .env("CI_SERVER_TOKEN", &token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = wait_output(child, Duration::from_secs(15)).await;
    assert!(out.status.success());
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(
        sim.handle().request_count("POST /api/v4/jobs/request") >= 3,
        "it polled"
    );

    let bad = runner_cmd(&sim.url(), "glrt-not-a-runner", &["--wait-timeout", "5"])
        .spawn()
        .expect("spawn");
    let out = wait_output(bad, Duration::from_secs(15)).await;
    assert_eq!(out.status.code(), Some(1), "a rejected token is an error");
    let usage = Command::new(RUNNER_BIN)
        .arg("register")
        .output()
        .expect("run");
    assert_eq!(usage.status.code(), Some(2));
}

#[tokio::test]
async fn sigterm_aborts_the_job_and_sigquit_finishes_it() {
    let sim = start().await;
    let (_, token) = create_runner(&sim, &["sig"]).await;

    let long = sim.handle().create_job(NewJob {
        project_id: 1,
        tags: vec!["sig".into()],
        duration_ms: Some(20_000),
        ..NewJob::default()
    });
    let child = runner_cmd(&sim.url(), &token, &["--wait-timeout", "20"])
        .spawn()
        .expect("spawn");
    assert!(
        wait_status(&sim, long.id, "running").await,
        "job never started"
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("sigterm");
    let out = wait_output(child, Duration::from_secs(15)).await;
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let j = sim.handle().job(long.id).expect("job");
    assert_eq!(j.status, "failed");
    assert_eq!(j.failure_reason.as_deref(), Some("runner_system_failure"));

    let first = sim.handle().create_job(NewJob {
        project_id: 1,
        tags: vec!["sig".into()],
        duration_ms: Some(1_500),
        ..NewJob::default()
    });
    let second = sim.handle().create_job(NewJob {
        project_id: 1,
        tags: vec!["sig".into()],
        ..NewJob::default()
    });
    let child = runner_cmd(&sim.url(), &token, &["--wait-timeout", "20"])
        .spawn()
        .expect("spawn");
    assert!(wait_status(&sim, first.id, "running").await);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGQUIT).expect("sigquit");
    let out = wait_output(child, Duration::from_secs(15)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        sim.handle().job(first.id).map(|j| j.status),
        Some("success".into())
    );
    assert_eq!(
        sim.handle().job(second.id).map(|j| j.status),
        Some("pending".into()),
        "after SIGQUIT the runner must not take another job"
    );
}

#[tokio::test]
async fn runner_image_runs_a_job_from_the_simulator() {
    if !docker_available() {
        assert!(
            std::env::var_os("AUTOGIT_REQUIRE_DOCKER").is_none(),
            "AUTOGIT_REQUIRE_DOCKER is set but no Docker daemon answers"
        );
        eprintln!("SKIPPED: no Docker daemon reachable (set DOCKER_HOST or start dockerd)");
        return;
    }
    let image = tokio::task::spawn_blocking(|| ensure_test_runner_image(Path::new(RUNNER_BIN)))
        .await
        .expect("join")
        .expect("build runner image");
    assert_eq!(image, TEST_RUNNER_IMAGE);
    // Second call is a cache hit.
    let t = Instant::now();
    tokio::task::spawn_blocking(|| ensure_test_runner_image(Path::new(RUNNER_BIN)))
        .await
        .expect("join")
        .expect("image again");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "rebuilt an unchanged image"
    );

    let sim = start().await;
    let job = sim.handle().create_job(NewJob {
        project_id: 4,
        tags: vec!["docker-e2e".into()],
        duration_ms: Some(200),
        ..NewJob::default()
    });
    let (rid, token) = create_runner(&sim, &["docker-e2e"]).await;
    let name = format!("autogit-sim-e2e-{}", std::process::id());
    let child = Command::new("docker")
        .args(["run", "--rm", "--network", "host", "--name", &name, &image])
        .args([
            "run-single",
            "--url",
            &sim.url(),
            "--token",
            &token,
            "--executor",
            "shell",
        ])
        .args(["--max-builds", "1", "--wait-timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker run");
    let out = wait_output(child, Duration::from_secs(90)).await;
    let _ = Command::new("docker").args(["rm", "-f", &name]).output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "container failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains(&token));
    let j = sim.handle().job(job.id).expect("job");
    assert_eq!(j.status, "success");
    assert_eq!(j.runner_id, Some(rid));
    let system_id = j.runner_system_id.unwrap_or_default();
    assert!(
        system_id.starts_with("r_"),
        "a fresh container is a new machine: {system_id}"
    );
}

const PYTHON_CHECK: &str = r#"
import os, sys
import gitlab
url, token, n_projects = os.environ["SIM_URL"], os.environ["SIM_TOKEN"], int(os.environ["SIM_PROJECTS"])
gl = gitlab.Gitlab(url, private_token=token, per_page=2, retry_transient_errors=True)
gl.auth()
assert gl.user.username == "root", gl.user.username
projects = gl.projects.list(membership=True, get_all=True)
assert len(projects) == n_projects, len(projects)
it = gl.projects.list(membership=True, iterator=True)
assert it.total == n_projects and it.total_pages == (n_projects + 1) // 2, (it.total, it.total_pages)
assert len(list(it)) == n_projects
pending = 0
for p in projects:
    jobs = p.jobs.list(scope=["pending"], get_all=True)
    pending += len(jobs)
    for j in jobs:
        assert j.status == "pending" and isinstance(j.tag_list, list)
assert pending == int(os.environ["SIM_PENDING"]), pending
created = gl.http_post("/user/runners", post_data={"runner_type": "instance_type", "tag_list": ["gpu", "cuda"], "description": "py"})
assert created["token"].startswith("glrt-")
r = gl.runners.get(created["id"])
assert sorted(r.tag_list) == ["cuda", "gpu"] and r.description == "py" and r.runner_type == "instance_type"
assert created["id"] in [x.id for x in gl.runners_all.list(get_all=True)]
assert created["id"] in [x.id for x in gl.runners_all.list(tag_list=["gpu"], get_all=True)]
gl.runners.delete(created["id"])
try:
    gl.runners.get(created["id"])
    sys.exit("deleted runner still readable")
except gitlab.exceptions.GitlabGetError as e:
    assert e.response_code == 404
try:
    gitlab.Gitlab(url, private_token="glpat-wrong").auth()
    sys.exit("bad token accepted")
except gitlab.exceptions.GitlabAuthenticationError as e:
    assert e.response_code == 401
print("python-gitlab OK", gitlab.__version__)
"#;

#[tokio::test]
async fn python_gitlab_drives_the_simulator() {
    let python = "/usr/bin/python3";
    let has_module = Command::new(python)
        .args(["-c", "import gitlab"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_module {
        eprintln!("SKIPPED: python-gitlab is not installed (apt-get install -y python3-gitlab)");
        return;
    }
    let sim = start().await;
    for (project, tags) in [
        (1, vec!["gpu"]),
        (2, vec![]),
        (3, vec!["a", "b"]),
        (3, vec![]),
        (5, vec![]),
    ] {
        sim.handle().create_job(NewJob {
            project_id: project,
            tags: tags.into_iter().map(String::from).collect(),
            ..NewJob::default()
        });
    }
    let child = Command::new(python)
        .args(["-c", PYTHON_CHECK])
        .env("SIM_URL", sim.url())
        .env("SIM_TOKEN", ADMIN)
        .env("SIM_PROJECTS", "4")
        .env("SIM_PENDING", "5")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    let out = wait_output(child, Duration::from_secs(60)).await;
    assert!(
        out.status.success(),
        "python-gitlab check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("python-gitlab OK"));
}
