//! Nothing of GitLab's docker executor is left on the host, end to end: the
//! GitLab simulator, a real coordinator and agent, a real dockerd, and the
//! test runner with the Docker socket mounted, which creates a labelled build
//! container and cache volume per job the way `gitlab-runner --executor
//! docker` does. The runner is SIGKILLed mid-job (its build container keeps
//! running) or finishes normally (its cache volume is kept by design); either
//! way the agent removes everything labelled with the runner's short token,
//! and leaves a host owner's own (foreign) gitlab-runner objects alone.

use std::process::{Command, Stdio};
use std::time::Duration;

use autogit_tests::gitlab_sim::NewJob;
use autogit_tests::harness::{
    Agent, Coordinator, Sim, docker_containers, docker_inspect, test_runner_image, wait_for,
};

const T: Duration = Duration::from_secs(60);
const RUNNER_ID_LABEL: &str = "com.gitlab.gitlab-runner.runner.id";

/// The daemon's socket as the agent and the docker CLI see it.
fn docker_socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".into())
}

/// A pool whose runners use the docker executor through the mounted socket.
/// The job image is local only, so it is never pulled (`if-not-present`).
fn docker_pool(extra_flags: &str) -> String {
    let image = test_runner_image();
    format!(
        r#"
[[pools]]
name = "dock"
tags = ["dock"]
arch = "x86_64"
image = "{image}"
command = ["run-single", "--executor", "docker", "--docker-image", "{image}", "--docker-pull-policy", "if-not-present", "--max-builds", "1", "--wait-timeout", "60"{extra_flags}]
network_mode = "host"
docker_socket = false
mounts = [{{ source = "{socket}", target = "/var/run/docker.sock" }}]
cpu_limit = 0.5
mem_limit = "256MiB"
max_runners = 2
"#,
        socket = docker_socket()
    )
}

fn setup(pool: &str, agent_config: &str) -> (Sim, Coordinator, Agent, String) {
    let sim = Sim::start().unwrap();
    let cfg = format!(
        "{}\n[demand]\npoll_interval = \"1s\"\n[scheduler]\ngc_interval = \"2s\"\nprovision_timeout = \"60s\"\n{pool}",
        sim.gitlab_config()
    );
    let mut c = Coordinator::init(&cfg).unwrap();
    c.start().unwrap();
    let mut a = Agent::new(agent_config).unwrap();
    a.env.push(("AUTOGIT_LOG".into(), "debug".into()));
    let id = a.join_ok(&c.grpc_addr(), &c.token(&[]).unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T).unwrap();
    (sim, c, a, id)
}

fn docker_ids(kind: &str, label: &str) -> Vec<String> {
    let args: Vec<String> = match kind {
        "container" => vec!["ps".into(), "-a".into(), "-q".into(), "--no-trunc".into()],
        other => vec![other.into(), "ls".into(), "-q".into()],
    };
    let out = Command::new("docker")
        .args(&args)
        .args(["--filter", &format!("label={label}")])
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Containers, volumes and networks labelled `runner.id=<short>`.
fn leftovers(short: &str) -> Vec<String> {
    let label = format!("{RUNNER_ID_LABEL}={short}");
    ["container", "volume", "network"]
        .iter()
        .flat_map(|k| {
            docker_ids(k, &label)
                .into_iter()
                .map(move |id| format!("{k} {id}"))
        })
        .collect()
}

/// The short token the executor put on the job's build container, checked
/// against the candidates the agent recorded on the runner container (job
/// ids repeat across simulators sharing the daemon, so both must match).
fn short_token_of_job(agent_id: &str, job: u64) -> String {
    // Listed and inspected in one step: a container listed a moment before
    // it is removed is skipped, not a failure.
    let runner = wait_for(T, "the runner container", || {
        docker_containers(&format!("autogit.scope={agent_id}"))
            .into_iter()
            .find_map(|id| docker_inspect(&id).ok())
    })
    .unwrap();
    let labels = runner["Config"]["Labels"].clone();
    assert!(
        !labels.to_string().contains("glrt-"),
        "the runner token is never a label: {labels:#}"
    );
    let recorded: Vec<String> = labels["autogit.gitlab-short-tokens"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .map(str::to_owned)
        .collect();
    wait_for(
        T,
        "the job's build container with the runner's short token",
        || {
            recorded.iter().find_map(|short| {
                // The build container, or the cache volume the runner keeps.
                let lists: [&[&str]; 2] = [&["ps", "-aq"], &["volume", "ls", "-q"]];
                lists
                    .iter()
                    .any(|list| {
                        Command::new("docker")
                            .args(*list)
                            .arg("--filter")
                            .arg(format!("label=com.gitlab.gitlab-runner.job.id={job}"))
                            .arg("--filter")
                            .arg(format!("label={RUNNER_ID_LABEL}={short}"))
                            .output()
                            .is_ok_and(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
                    })
                    .then(|| short.clone())
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e}: the agent recorded {recorded:?}"))
}

/// A host owner's own gitlab-runner work on the same daemon, removed on drop.
struct Foreign {
    short: String,
}

impl Foreign {
    fn create() -> Self {
        let short = uuid::Uuid::new_v4().simple().to_string()[..9].to_owned();
        let labels = [
            "--label".to_owned(),
            "com.gitlab.gitlab-runner.managed=true".to_owned(),
            "--label".to_owned(),
            format!("{RUNNER_ID_LABEL}={short}"),
        ];
        let run = |args: &[&str]| {
            let ok = Command::new("docker")
                .args(args)
                .args(&labels)
                .args(if args[0] == "create" {
                    vec![test_runner_image()]
                } else {
                    vec![]
                })
                .stdout(Stdio::null())
                .status()
                .expect("run docker")
                .success();
            assert!(ok, "docker {args:?}");
        };
        run(&["create", "--network", "none"]);
        run(&["volume", "create"]);
        Foreign { short }
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        let label = format!("{RUNNER_ID_LABEL}={}", self.short);
        for id in docker_ids("container", &label) {
            let _ = Command::new("docker")
                .args(["rm", "-f", &id])
                .stdout(Stdio::null())
                .status();
        }
        for id in docker_ids("volume", &label) {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", &id])
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// Removes whatever a failing test left with this short token.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        let label = format!("{RUNNER_ID_LABEL}={}", self.0);
        for id in docker_ids("container", &label) {
            let _ = Command::new("docker")
                .args(["rm", "-f", &id])
                .stdout(Stdio::null())
                .status();
        }
        for id in docker_ids("volume", &label) {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", &id])
                .stdout(Stdio::null())
                .status();
        }
    }
}

#[test]
fn sigkilled_runner_leaves_no_job_container_volume_or_network_and_foreign_work_is_untouched() {
    let foreign = Foreign::create();
    // The collector runs every 2 s: it must still leave foreign work alone.
    let (sim, c, a, agent_id) = setup(
        &docker_pool(""),
        "[docker]\nleftover_gc_interval = \"2s\"\n",
    );
    let job = sim.handle.create_job(NewJob {
        project_id: 4104,
        tags: vec!["dock".into()],
        duration_ms: Some(120_000),
        ..Default::default()
    });
    let short = short_token_of_job(&agent_id, job.id);
    let _sweep = Sweep(short.clone());
    // The executor creates the cache volume, then the build container.
    wait_for(T, "the executor's build container and cache volume", || {
        let found = leftovers(&short);
        (found.iter().any(|l| l.starts_with("container"))
            && found.iter().any(|l| l.starts_with("volume")))
        .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", leftovers(&short)));
    let runner = docker_containers(&format!("autogit.scope={agent_id}"));
    assert_eq!(runner.len(), 1, "{runner:?}");

    let ok = Command::new("docker")
        .args(["kill", "-s", "KILL", &runner[0]])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "docker kill");

    wait_for(T, "no leftovers of the SIGKILLed runner", || {
        leftovers(&short).is_empty().then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\nagent log:\n{}", leftovers(&short), a.logs()));
    wait_for(T, "runner container removed", || {
        docker_containers(&format!("autogit.scope={agent_id}"))
            .is_empty()
            .then_some(())
    })
    .unwrap();
    assert!(
        a.logs()
            .contains("removed what the docker executor left behind"),
        "the agent says what it removed:\n{}",
        a.logs()
    );
    // A few collector passes later, the host owner's own work is still there.
    std::thread::sleep(Duration::from_secs(5));
    let still = leftovers(&foreign.short);
    assert_eq!(
        still.len(),
        2,
        "foreign container and volume are untouched: {still:?}"
    );
    assert!(!a.logs().contains("glrt-"), "runner token in the agent log");
    drop(c);
}

#[test]
fn normally_finished_runner_leaves_no_kept_cache_volume() {
    // Collector off: the runner's own end removes what the executor kept.
    let (sim, c, a, agent_id) = setup(
        &docker_pool(""),
        "[docker]\nleftover_gc_interval = \"0s\"\n",
    );
    let job = sim.handle.create_job(NewJob {
        project_id: 4105,
        tags: vec!["dock".into()],
        duration_ms: Some(3000),
        ..Default::default()
    });
    let short = short_token_of_job(&agent_id, job.id);
    let _sweep = Sweep(short.clone());
    wait_for(T, "job success", || {
        sim.handle
            .job(job.id)
            .is_some_and(|j| j.status == "success")
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    wait_for(T, "runner container removed", || {
        docker_containers(&format!("autogit.scope={agent_id}"))
            .is_empty()
            .then_some(())
    })
    .unwrap();
    let left = leftovers(&short);
    assert!(
        left.is_empty(),
        "left behind: {left:?}\nagent log:\n{}",
        a.logs()
    );
    // The runner removed its build container and kept its cache volume;
    // the agent removed the volume.
    assert!(
        a.logs().contains("1 volume(s)"),
        "the agent removed the kept cache volume:\n{}",
        a.logs()
    );
}
