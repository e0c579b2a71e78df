//! An agent that starts while its Docker engine does not answer (a host
//! booting, dockerd being upgraded) keeps trying in the background and
//! serves runners once Docker comes up, without a restart: real coordinator,
//! GitLab simulator, agent process and a private dockerd (never the shared
//! one) that is down when the agent starts.
//!
//! Needs root and `dockerd`; skipped otherwise, unless
//! `AUTOGIT_REQUIRE_DOCKER` is set (then missing pieces fail the test).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use autogit_tests::faults::{Fixture, PrivateDockerd, Setup};
use autogit_tests::harness::{test_runner_image, wait_for};

const T: Duration = Duration::from_secs(60);

fn can_run() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let dockerd = Command::new("dockerd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if root && dockerd {
        return true;
    }
    assert!(
        std::env::var_os("AUTOGIT_REQUIRE_DOCKER").is_none(),
        "a private dockerd needs root and dockerd (root: {root}, dockerd: {dockerd})"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: a private dockerd needs root and dockerd"
    );
    false
}

#[test]
fn an_agent_started_before_dockerd_runs_jobs_once_it_answers() {
    if !can_run() {
        return;
    }
    // Start it once to load the runner image, then take it down.
    let mut d = PrivateDockerd::start().unwrap();
    d.load_image(&test_runner_image()).unwrap();
    d.stop();
    assert!(!d.answers());

    let mut fx = Fixture::start(Setup::default()).unwrap();
    let i = fx
        .add_agent(
            None,
            &format!("[docker]\nsocket = \"{}\"\n", d.socket().display()),
        )
        .unwrap();
    let id = fx.agents[i].1.clone();
    let docker_available = |fx: &Fixture| {
        fx.c.agents()
            .ok()?
            .into_iter()
            .find(|a| a["id"] == id.as_str())
            .map(|a| a["inventory"]["docker"]["available"].as_bool())
    };
    assert_eq!(
        docker_available(&fx),
        Some(Some(false)),
        "the agent reports Docker unavailable at first"
    );

    d.restart(Duration::ZERO).unwrap();
    wait_for(T, "the agent to report Docker available", || {
        (docker_available(&fx) == Some(Some(true))).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nagent:\n{}", fx.agents[i].0.logs()));

    // And it runs a job's runner on that engine, with no restart.
    let scope = format!("autogit.scope={id}");
    let job = fx.job(31, 300);
    fx.wait_job(job.id, "success", T)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", fx.diagnostics()));
    assert!(
        fx.agents[i].0.logs().contains("Docker answers now"),
        "{}",
        fx.agents[i].0.logs()
    );
    let _ = wait_for(Duration::from_secs(30), "runner containers gone", || {
        d.containers(&scope).is_empty().then_some(())
    });
    d.remove(&scope);
}
