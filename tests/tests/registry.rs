//! Real pulls end to end: a real registry (`docker-registry`) on loopback,
//! the GitLab simulator, a real coordinator and agent, and the test dockerd.
//!
//! * The runner image is pulled from the registry on first use, not again.
//! * A missing tag, an unreachable registry and a registry answering 500
//!   fail the runner with a reason naming the image, and leave nothing.
//! * The docker executor's job and helper images come from the registry too.
//! * Behind auth, the pool's credentials (`registry = { username,
//!   password_file }`) pull; without them the runner fails clearly; the
//!   password is in no log.

use std::time::Duration;

use autogit_tests::gitlab_sim::{NewHook, NewJob};
use autogit_tests::harness::{
    Agent, Coordinator, PREPULL_ENV, Sim, assert_nothing_left, docker_containers,
    test_pool_with_image, test_runner_image, wait_for,
};
use autogit_tests::registry::{
    FailingRegistry, Registry, local_image_exists, remove_local_image, unreachable_registry,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const SECRET: &str = "hook-secret-registry";
const REPO: &str = "autogit-test/runner";

fn setup(pools: &str) -> (Sim, Coordinator) {
    let sim = Sim::start().unwrap();
    let cfg = format!(
        "{}\n[demand]\npoll_interval = \"1s\"\nwebhook_secret = \"{SECRET}\"\n[scheduler]\ngc_interval = \"2s\"\nprovision_timeout = \"60s\"\n{pools}",
        sim.gitlab_config()
    );
    let mut c = Coordinator::init(&cfg).unwrap();
    c.env.push(("AUTOGIT_LOG".into(), "debug".into()));
    c.start().unwrap();
    sim.handle
        .add_hook(NewHook {
            url: c.http_url("/webhooks/gitlab"),
            token: Some(SECRET.into()),
            project_id: None,
        })
        .unwrap();
    (sim, c)
}

fn agent(c: &Coordinator) -> (Agent, String) {
    agent_with(c, &[])
}

fn agent_with(c: &Coordinator, env: &[(&str, &str)]) -> (Agent, String) {
    let mut a = Agent::new("").unwrap();
    a.env
        .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    // Debug logging: pull progress is logged, secrets still are not.
    a.env.push(("AUTOGIT_LOG".into(), "debug".into()));
    let id = a.join_ok(&c.grpc_addr(), &c.token(&[]).unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T).unwrap();
    (a, id)
}

fn job(sim: &Sim, tag: &str) -> u64 {
    sim.handle
        .create_job(NewJob {
            project_id: 4,
            tags: vec![tag.into()],
            duration_ms: Some(200),
            ..Default::default()
        })
        .id
}

fn wait_job_done(sim: &Sim, c: &Coordinator, a: &Agent, id: u64) {
    wait_for(T, &format!("job {id} success"), || {
        sim.handle
            .job(id)
            .is_some_and(|j| j.status == "success")
            .then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nrunners: {:#?}\ncoordinator:\n{}\nagent:\n{}",
            c.runners().unwrap(),
            c.logs(),
            a.logs()
        )
    });
}

/// The first failed runner of `pool`, once its GitLab runner is deleted.
fn failed_runner(c: &Coordinator, a: &Agent, pool: &str) -> Value {
    wait_for(T, &format!("pool {pool}: a failed runner"), || {
        c.runners().unwrap().into_iter().find(|r| {
            r["pool"] == pool && r["state"] == "failed" && r["gitlab_deleted_at"].is_string()
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{:#?}\nagent:\n{}", c.runners().unwrap(), a.logs()))
}

/// Removes a pulled image when the test ends, pass or fail.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = remove_local_image(&self.0);
    }
}

/// A burst of jobs that all miss the image on one host: one pull, which
/// the other runners wait for, not one pull each.
#[test]
fn a_burst_of_runners_missing_the_same_image_shares_one_pull() {
    let reg = Registry::start().unwrap();
    // The test image plus a layer of its own (16 MiB of random bytes), so
    // that the pull really downloads something and takes long enough for
    // the burst's creates to meet it.
    let dir = tempfile::tempdir().unwrap();
    let mut noise = vec![0u8; 16 << 20];
    rand::fill(&mut noise[..]);
    std::fs::write(dir.path().join("noise.bin"), &noise).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {}\nCOPY noise.bin /noise.bin\n", test_runner_image()),
    )
    .unwrap();
    let local = format!("autogit-test/burst-{}:1", std::process::id());
    let built = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &local])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let image = reg.push(&local, &format!("{REPO}:burst")).unwrap();
    remove_local_image(&local).unwrap();
    let _cleanup = RemoveImage(image.clone());
    assert!(!local_image_exists(&image));
    let (sim, c) = setup(&test_pool_with_image(
        "amd64",
        &["amd64"],
        "x86_64",
        &image,
        "",
    ));
    let (a, agent_id) = agent(&c);
    let jobs: Vec<u64> = (0..4).map(|_| job(&sim, "amd64")).collect();
    for id in &jobs {
        wait_job_done(&sim, &c, &a, *id);
    }
    let logs = a.logs();
    let starts = logs.matches("creating container").count();
    assert!(starts >= 4, "four runners were created:\n{logs}");
    assert_eq!(
        logs.matches("pulling image").count(),
        1,
        "one pull for the burst:\n{logs}"
    );
    assert_nothing_left(&sim, &c, &agent_id);
}

#[test]
fn runner_image_is_pulled_from_the_local_registry_on_first_use_and_not_on_second() {
    let reg = Registry::start().unwrap();
    let image = reg
        .push(&test_runner_image(), &format!("{REPO}:dev"))
        .unwrap();
    let _cleanup = RemoveImage(image.clone());
    assert!(
        !local_image_exists(&image),
        "{image} must not be on the host before the first job"
    );
    let pushed = reg.manifest_requests(REPO);

    let (sim, c) = setup(&test_pool_with_image(
        "amd64",
        &["amd64"],
        "x86_64",
        &image,
        "",
    ));
    let (a, agent_id) = agent(&c);

    let first = job(&sim, "amd64");
    wait_job_done(&sim, &c, &a, first);
    assert!(local_image_exists(&image), "the first job pulled {image}");
    let after_first = reg.manifest_requests(REPO);
    assert!(
        after_first > pushed,
        "the registry served the manifest to the pull:\n{}",
        reg.logs()
    );
    assert_eq!(
        a.logs().matches("image pulled").count(),
        1,
        "one pull:\n{}",
        a.logs()
    );
    assert!(
        a.logs().contains("pull") && a.logs().contains(&image),
        "pull progress logged at debug with the image"
    );

    let second = job(&sim, "amd64");
    wait_job_done(&sim, &c, &a, second);
    assert_eq!(
        reg.manifest_requests(REPO),
        after_first,
        "the second job used the image on the host, without asking the registry:\n{}",
        reg.logs()
    );
    assert_eq!(
        a.logs().matches("image pulled").count(),
        1,
        "no second pull"
    );
    assert_nothing_left(&sim, &c, &agent_id);
}

#[test]
fn missing_tag_unreachable_registry_and_registry_500_fail_the_runner_naming_the_image() {
    let reg = Registry::start().unwrap();
    reg.push(&test_runner_image(), &format!("{REPO}:dev"))
        .unwrap();
    let missing = reg.image(&format!("{REPO}:no-such-tag"));
    let unreachable = format!("{}/{REPO}:dev", unreachable_registry().unwrap());
    let broken_registry = FailingRegistry::start().unwrap();
    let broken = format!("{}/{REPO}:dev", broken_registry.host());
    let cases = [
        (
            "missing",
            missing.as_str(),
            "the registry has no such image or tag",
        ),
        (
            "unreachable",
            unreachable.as_str(),
            "the registry cannot be reached",
        ),
        (
            "broken",
            broken.as_str(),
            "the registry answered with a server error",
        ),
    ];
    let pools: String = cases
        .iter()
        .map(|(pool, image, _)| test_pool_with_image(pool, &[pool], "x86_64", image, ""))
        .collect();
    let (sim, c) = setup(&pools);
    let (a, agent_id) = agent(&c);
    let jobs: Vec<u64> = cases.iter().map(|(pool, _, _)| job(&sim, pool)).collect();

    for (pool, image, cause) in cases {
        let rec = failed_runner(&c, &a, pool);
        let reason = rec["reason"].as_str().unwrap_or_default();
        eprintln!("pool {pool}: runner failed: {reason}");
        assert!(
            reason.starts_with(&format!("pull image {image}: {cause}: ")),
            "pool {pool}: {reason}"
        );
        assert!(
            rec["container_id"].is_null() || rec["container_id"] == "",
            "no container was ever created: {rec:#}"
        );
        assert!(!local_image_exists(image));
    }
    assert!(
        broken_registry.requests() > 0,
        "dockerd really asked the broken registry"
    );
    // Nothing at any point: no container was created for any of them.
    assert!(docker_containers(&format!("autogit.scope={agent_id}")).is_empty());
    for id in jobs {
        sim.handle.cancel_job(id);
    }
    assert_nothing_left(&sim, &c, &agent_id);
}

#[test]
fn registry_with_auth_pulls_with_the_pools_credentials_and_never_logs_the_password() {
    const PASSWORD: &str = "reg-pw-5f1d9c-SECRET";
    let reg = Registry::start_with_auth("ci-puller", PASSWORD).unwrap();
    let image = reg
        .push(&test_runner_image(), &format!("{REPO}:auth"))
        .unwrap();
    let _cleanup = RemoveImage(image.clone());
    assert!(!local_image_exists(&image));

    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("registry-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let with = test_pool_with_image(
        "with-creds",
        &["with-creds"],
        "x86_64",
        &image,
        &format!(
            "registry = {{ username = \"ci-puller\", password_file = {:?} }}",
            password_file.display().to_string()
        ),
    );
    let without = test_pool_with_image("no-creds", &["no-creds"], "x86_64", &image, "");
    let wrong_file = dir.path().join("wrong-password");
    std::fs::write(&wrong_file, "not-the-password\n").unwrap();
    let wrong = test_pool_with_image(
        "wrong-creds",
        &["wrong-creds"],
        "x86_64",
        &image,
        &format!(
            "registry = {{ username = \"ci-puller\", password_file = {:?} }}",
            wrong_file.display().to_string()
        ),
    );
    let (sim, c) = setup(&format!("{with}{without}{wrong}"));
    let (a, agent_id) = agent(&c);

    // Without and with wrong credentials first, while the image is not on
    // the host.
    for pool in ["no-creds", "wrong-creds"] {
        let refused = job(&sim, pool);
        let rec = failed_runner(&c, &a, pool);
        let reason = rec["reason"].as_str().unwrap_or_default();
        eprintln!("pool {pool}: runner failed: {reason}");
        assert!(
            reason.starts_with(&format!(
                "pull image {image}: the registry refused the pull: missing or wrong credentials"
            )),
            "{reason}"
        );
        assert!(!local_image_exists(&image));
        sim.handle.cancel_job(refused);
    }

    let authed = job(&sim, "with-creds");
    wait_job_done(&sim, &c, &a, authed);
    assert!(local_image_exists(&image));
    assert_nothing_left(&sim, &c, &agent_id);

    for (who, log) in [("agent", a.logs()), ("coordinator", c.logs())] {
        assert!(!log.is_empty(), "{who} logged");
        assert!(
            !log.contains(PASSWORD),
            "the registry password is in the {who} log"
        );
    }
    assert!(
        !c.cli_ok(&["runners", "list", "--output", "json"])
            .unwrap()
            .contains(PASSWORD)
    );
}

/// The Docker socket as the agent and the docker CLI see it.
fn docker_socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".into())
}

#[test]
fn runner_job_and_helper_images_all_come_from_the_local_registry() {
    let reg = Registry::start().unwrap();
    let local = test_runner_image();
    // The test runner image stands in for all three: the runner, the
    // default job image (alpine) and gitlab-runner's helper.
    let runner = reg.push(&local, &format!("{REPO}:dev")).unwrap();
    let job_image = reg.push(&local, "library/alpine:3.20").unwrap();
    let helper = reg
        .push(&local, "gitlab-org/gitlab-runner-helper:x86_64-latest")
        .unwrap();
    let _cleanup = [&runner, &job_image, &helper].map(|i| RemoveImage(i.clone()));
    for image in [&runner, &job_image, &helper] {
        assert!(
            !local_image_exists(image),
            "{image} on the host before the job"
        );
    }
    // The docker executor (the test runner's stand-in for it) gets the
    // socket and pulls the job and helper images like gitlab-runner does.
    let pool = format!(
        r#"
[[pools]]
name = "dock"
tags = ["dock"]
arch = "x86_64"
image = "{runner}"
command = ["run-single", "--executor", "docker", "--docker-image", "{job_image}", "--docker-helper-image", "{helper}", "--max-builds", "1", "--wait-timeout", "60"]
network_mode = "host"
docker_socket = false
mounts = [{{ source = "{socket}", target = "/var/run/docker.sock" }}]
cpu_limit = 0.5
mem_limit = "256MiB"
max_runners = 2
"#,
        socket = docker_socket()
    );
    let images = [
        (&runner, REPO),
        (&job_image, "library/alpine"),
        (&helper, "gitlab-org/gitlab-runner-helper"),
    ];
    let pushed: Vec<usize> = images
        .iter()
        .map(|(_, repo)| reg.manifest_requests(repo))
        .collect();
    let (sim, c) = setup(&pool);
    let (a, agent_id) = agent(&c);
    let id = job(&sim, "dock");
    wait_job_done(&sim, &c, &a, id);
    for ((image, repo), before) in images.iter().zip(pushed) {
        assert!(local_image_exists(image), "{image} was pulled");
        assert!(
            reg.manifest_requests(repo) > before,
            "{repo}: the registry served the pull:\n{}",
            reg.logs()
        );
    }
    assert_nothing_left(&sim, &c, &agent_id);
    assert!(
        docker_containers("com.gitlab.gitlab-runner.managed=true").is_empty(),
        "the build container is gone"
    );
}

/// Warm images: a pool that a reload adds is pulled onto the agent before
/// any job of it exists (the agent reports the image in its inventory), so
/// even the pool's first runner finds its image on the host and the
/// registry sees no request for it.
#[test]
fn a_pool_added_by_a_reload_is_pulled_ahead_so_even_its_first_job_is_warm() {
    let reg = Registry::start().unwrap();
    let image = reg
        .push(&test_runner_image(), &format!("{REPO}:warm"))
        .unwrap();
    let _cleanup = RemoveImage(image.clone());
    assert!(!local_image_exists(&image));
    // A pool whose image is on the host already: nothing to pull for it.
    let first_pool = test_pool_with_image("other", &["other"], "x86_64", &test_runner_image(), "");
    let (sim, c) = setup(&first_pool);
    let (a, agent_id) = agent_with(&c, &[(PREPULL_ENV, "true")]);
    assert!(!local_image_exists(&image), "no pool wants {image} yet");

    // The reload adds the pool; no job of it exists.
    let text = std::fs::read_to_string(&c.config).unwrap();
    let added = test_pool_with_image("warm", &["warm"], "x86_64", &image, "");
    std::fs::write(
        &c.config,
        text.replacen(&first_pool, &format!("{first_pool}{added}"), 1),
    )
    .unwrap();
    c.proc
        .as_ref()
        .expect("running")
        .signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(T, "the agent pulled the new pool's image", || {
        local_image_exists(&image).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\ncoordinator:\n{}\nagent:\n{}", c.logs(), a.logs()));
    wait_for(T, "the agent's inventory lists the image", || {
        c.cli_ok(&["agents", "list", "--output", "json"])
            .ok()
            .filter(|out| out.contains(&image))
            .map(|_| ())
    })
    .unwrap();
    let pulled = reg.manifest_requests(REPO);
    assert!(
        sim.handle.runners().is_empty(),
        "no runner was needed for the pull"
    );

    let first = job(&sim, "warm");
    wait_job_done(&sim, &c, &a, first);
    let runner = c
        .runners()
        .unwrap()
        .into_iter()
        .find(|r| r["pool"] == "warm")
        .expect("a runner of the pool");
    assert_eq!(runner["image"], "warm image", "{runner:#}");
    assert_eq!(runner["image_pull_ms"], 0, "{runner:#}");
    assert_eq!(
        reg.manifest_requests(REPO),
        pulled,
        "the first job did not ask the registry:\n{}",
        reg.logs()
    );
    assert_nothing_left(&sim, &c, &agent_id);
}
