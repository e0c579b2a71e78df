//! The shipped agent (`target/dist/autogit-agent-<arch>`, built by
//! `cargo xtask dist` with the release settings) refuses test-only inventory
//! options at config load, so nobody who can write its `agent.toml` or its
//! environment can make it claim GPUs the host does not have
//! (`docs/adr/0012-test-only-inventory-fixtures.md`). The debug agents the
//! other end-to-end tests run still take them.
//!
//! Skipped, with a message, when the dist agent for this machine is absent;
//! a failure instead when `AUTOGIT_REQUIRE_DIST` is set (CI).

use std::io::Write;
use std::process::Output;

use autogit_tests::harness::{Agent, agent_fixture, dist_agent};

/// Says why a test did nothing, past libtest's output capture.
fn skipped(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// The native dist agent with `extra_config`, or `None` (after saying why).
fn native_dist_agent(extra_config: &str) -> Option<Agent> {
    let agent = dist_agent(std::env::consts::ARCH, extra_config).expect("dist agent");
    if agent.is_none() {
        skipped(&format!(
            "SKIPPED: target/dist/autogit-agent-{} is absent; build it with `cargo xtask dist`",
            std::env::consts::ARCH
        ));
    }
    agent
}

/// `join` against nothing: the config is loaded (and refused) before any
/// connection is tried, so the port is never reached.
fn join_nowhere(agent: &Agent) -> Output {
    agent
        .join("127.0.0.1:1", "AGT1not-a-token")
        .expect("run the dist agent")
}

const REFUSAL: &str = "inventory.nvidia_fixture is a test-only option and this is a release build";

#[test]
fn the_release_agent_refuses_a_fixture_in_its_config_file() {
    let cfg = format!(
        "[inventory]\nnvidia_fixture = \"{}\"\n",
        agent_fixture("nvidia/two-gpus.json").display()
    );
    let Some(agent) = native_dist_agent(&cfg) else {
        return;
    };
    let out = join_nowhere(&agent);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a config error exits 1: {stderr}"
    );
    assert!(stderr.contains(REFUSAL), "{stderr}");
    assert!(
        !agent.state_dir.join("agent.json").exists(),
        "nothing was enrolled"
    );
}

#[test]
fn the_release_agent_refuses_a_fixture_from_the_environment() {
    let Some(mut agent) = native_dist_agent("") else {
        return;
    };
    agent.env.push((
        "AUTOGIT_INVENTORY__NVIDIA_FIXTURE".into(),
        agent_fixture("nvidia/two-gpus.json").display().to_string(),
    ));
    let out = join_nowhere(&agent);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(REFUSAL), "{stderr}");
}

#[test]
fn the_release_agent_keeps_the_inventory_roots() {
    // sysfs_root / proc_root are legitimate (a containerised agent reads the
    // host's /sys and /proc mounted elsewhere): the same join gets past the
    // config and fails on the token instead.
    let cfg = format!(
        "[inventory]\nsysfs_root = \"{}\"\nproc_root = \"/proc\"\n",
        agent_fixture("sysfs/amd").display()
    );
    let Some(agent) = native_dist_agent(&cfg) else {
        return;
    };
    let out = join_nowhere(&agent);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bogus token cannot enroll");
    assert!(!stderr.contains("invalid configuration"), "{stderr}");
    assert!(!stderr.contains("test-only"), "{stderr}");
}
