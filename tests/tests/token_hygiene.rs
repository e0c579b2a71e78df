//! The runner token stays out of sight (issue 9): while a runner container
//! serves a job, its `glrt-` token is in no process's argv on the host
//! (`/proc/*/cmdline`, readable by every local user) and not in the
//! container's `Path`/`Args` (`docker inspect`); it reaches the runner as
//! `CI_SERVER_TOKEN` in the container's environment. Neither the coordinator
//! nor the agent logs it, at debug level.

use std::time::Duration;

use autogit_tests::gitlab_sim::NewJob;
use autogit_tests::harness::{
    Agent, Coordinator, Sim, docker_containers, docker_inspect, test_pool, wait_for,
};

const T: Duration = Duration::from_secs(45);

/// Every process's argv on this host, as (pid, arguments).
fn all_cmdlines() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // Processes come and go while we read.
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let args = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            out.push((name, args));
        }
    }
    out
}

#[test]
fn runner_token_is_in_no_argv_inspect_args_or_debug_log() {
    let sim = Sim::start().unwrap();
    let cfg = format!(
        "{}\n[demand]\npoll_interval = \"1s\"\n[scheduler]\ngc_interval = \"2s\"\nprovision_timeout = \"60s\"\n{}",
        sim.gitlab_config(),
        test_pool("hygiene", &["hygiene"], "x86_64", "")
    );
    let mut c = Coordinator::init(&cfg).unwrap();
    c.env.push(("AUTOGIT_LOG".into(), "debug".into()));
    c.start().unwrap();
    let mut a = Agent::new("").unwrap();
    a.env.push(("AUTOGIT_LOG".into(), "debug".into()));
    let agent_id = a.join_ok(&c.grpc_addr(), &c.token(&[]).unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&agent_id, "ready", T).unwrap();

    // A job long enough to look at its runner while it runs.
    let job = sim.handle.create_job(NewJob {
        project_id: 7,
        tags: vec!["hygiene".into()],
        duration_ms: Some(4000),
        ..Default::default()
    });
    wait_for(T, "job running", || {
        sim.handle
            .job(job.id)
            .is_some_and(|j| j.status == "running")
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let container = wait_for(T, "runner container", || {
        docker_containers(&format!("autogit.scope={agent_id}"))
            .into_iter()
            .next()
    })
    .unwrap();
    let inspect = docker_inspect(&container).unwrap();
    let shorts = sim.handle.runner_short_tokens();
    assert!(!shorts.is_empty(), "the simulator created a runner");

    // docker inspect: not in Path/Args; in Config.Env as CI_SERVER_TOKEN.
    let argv = format!("{} {}", inspect["Path"], inspect["Args"]);
    assert!(argv.contains("run-single"), "unexpected argv {argv}");
    assert!(
        !argv.contains("glrt-"),
        "runner token in docker inspect Path/Args"
    );
    let env: Vec<&str> = inspect["Config"]["Env"]
        .as_array()
        .expect("Config.Env")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        env.iter().any(|e| e.starts_with("CI_SERVER_TOKEN=glrt-")),
        "the token reaches the runner as CI_SERVER_TOKEN"
    );
    assert!(
        env.iter().any(|e| e.starts_with("CI_SERVER_URL=http")),
        "the URL reaches the runner as CI_SERVER_URL"
    );

    // /proc: the scan sees the runner's own process (same PID namespace as
    // dockerd), and no process on the host has this runner's token in argv.
    let pid = inspect["State"]["Pid"].as_u64().expect("State.Pid");
    let cmdlines = all_cmdlines();
    let runner = cmdlines
        .iter()
        .find(|(p, _)| *p == pid.to_string())
        .unwrap_or_else(|| {
            panic!("runner process {pid} is not visible in /proc: dockerd runs in another PID namespace")
        });
    assert!(
        runner.1.iter().any(|a| a == "run-single"),
        "pid {pid} is the runner: {:?}",
        runner.1.first()
    );
    for (p, args) in &cmdlines {
        let leaked = args
            .iter()
            .any(|a| a.contains("glrt-") && shorts.iter().any(|s| a.contains(s.as_str())));
        assert!(!leaked, "process {p} has the runner token in its argv");
    }

    wait_for(T, "job success", || {
        sim.handle
            .job(job.id)
            .is_some_and(|j| j.status == "success")
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert!(
        !c.logs().contains("glrt-"),
        "runner token in coordinator log"
    );
    assert!(!a.logs().contains("glrt-"), "runner token in agent log");
    assert!(
        a.logs().contains("DEBUG") && c.logs().contains("DEBUG"),
        "both really logged at debug level"
    );
}
