//! Self-reported hardware is a claim: a real agent process whose NVIDIA
//! fixture (debug builds only) changes under it reports different GPUs, and
//! the real coordinator audits `agent.hardware_changed` with a before/after
//! summary, both within a session (an `Inventory` message after `Hello`) and
//! across a reconnect (a `Hello` compared with the stored inventory). The
//! first `Hello` has nothing to compare with and is not audited.

use std::path::Path;
use std::time::Duration;

use autogit_tests::harness::{Agent, Coordinator, wait_for};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

/// Write an NVIDIA fixture claiming these GPUs (uuid, memory).
fn claim_gpus(path: &Path, gpus: &[(&str, u64)]) {
    let gpus: Vec<Value> = gpus
        .iter()
        .enumerate()
        .map(|(i, (uuid, mem))| {
            json!({"index": i, "uuid": uuid, "name": "NVIDIA H100 80GB HBM3", "memory_bytes": mem})
        })
        .collect();
    let body = json!({"driver_version": "550.54.15", "cuda_version": "12.4", "gpus": gpus});
    // Write then rename: the agent re-reads the file on every scan.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body.to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The audit events about `agent`, newest first.
fn events(c: &Coordinator, agent: &str) -> Vec<Value> {
    let out = c
        .cli_ok(&[
            "events", "--agent", agent, "--limit", "200", "--output", "json",
        ])
        .unwrap();
    let page: Value = serde_json::from_str(&out).unwrap();
    page["events"].as_array().cloned().unwrap_or_default()
}

fn hardware_changes(c: &Coordinator, agent: &str) -> Vec<Value> {
    events(c, agent)
        .into_iter()
        .filter(|e| e["kind"] == "agent.hardware_changed")
        .collect()
}

const GIB80: u64 = 80 << 30;

#[test]
fn hardware_changes_after_hello_and_across_a_reconnect_are_audited() {
    let mut c = Coordinator::init("").unwrap();
    c.start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("gpus.json");
    claim_gpus(&fixture, &[("GPU-claim-1", GIB80)]);
    let cfg = format!(
        "[inventory]\nnvidia_fixture = \"{}\"\nrescan_interval = \"1s\"\n",
        fixture.display()
    );
    let mut a = Agent::new(&cfg).unwrap();
    let id = a.join_ok(&c.grpc_addr(), &c.token(&[]).unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T).unwrap();
    // The first Hello is audited as `agent.connected` only (a change from
    // that Hello would be recorded before it).
    wait_for(T, "agent.connected", || {
        events(&c, &id)
            .iter()
            .any(|e| e["kind"] == "agent.connected")
            .then_some(())
    })
    .unwrap();
    assert!(
        hardware_changes(&c, &id).is_empty(),
        "{:?}",
        events(&c, &id)
    );

    // Within the session: the agent suddenly claims a second GPU.
    claim_gpus(&fixture, &[("GPU-claim-1", GIB80), ("GPU-claim-2", GIB80)]);
    let change = wait_for(T, "agent.hardware_changed after Hello", || {
        hardware_changes(&c, &id).into_iter().next()
    })
    .unwrap_or_else(|e| panic!("{e}\ncoordinator:\n{}\nagent:\n{}", c.logs(), a.logs()));
    assert_eq!(change["agent_id"], id.as_str());
    assert_eq!(change["actor"], "system");
    let d = &change["detail"];
    assert_eq!(d["seen_in"], "inventory", "{d}");
    assert_eq!(d["changed"], json!(["gpus"]), "{d}");
    assert_eq!(
        (d["before"]["gpus"].as_u64(), d["after"]["gpus"].as_u64()),
        (Some(1), Some(2)),
        "{d}"
    );
    assert_eq!(
        d["gpus_added"],
        json!([format!("nvidia GPU-claim-2 ({GIB80} bytes)")]),
        "{d}"
    );
    assert_eq!(d["gpus_removed"], json!([]), "{d}");
    assert!(
        !d["hostname"].as_str().unwrap_or_default().is_empty(),
        "{d}"
    );
    assert_eq!(d["before"]["arch"], d["after"]["arch"], "{d}");
    assert!(
        c.logs()
            .contains("agent reports different hardware than before"),
        "a warning is logged too:\n{}",
        c.logs()
    );
    // Placement uses the new claim.
    let agent = c.wait_agent_state(&id, "ready", T).unwrap();
    assert_eq!(agent["gpus"].as_array().map(Vec::len), Some(2), "{agent}");

    // Across a reconnect: the next Hello claims no GPU at all.
    a.kill();
    claim_gpus(&fixture, &[]);
    a.start().unwrap();
    let change = wait_for(T, "agent.hardware_changed at reconnect", || {
        hardware_changes(&c, &id)
            .into_iter()
            .find(|e| e["detail"]["seen_in"] == "hello")
    })
    .unwrap_or_else(|e| panic!("{e}\ncoordinator:\n{}\nagent:\n{}", c.logs(), a.logs()));
    let d = &change["detail"];
    assert_eq!(d["changed"], json!(["gpus"]), "{d}");
    assert_eq!(
        (d["before"]["gpus"].as_u64(), d["after"]["gpus"].as_u64()),
        (Some(2), Some(0)),
        "{d}"
    );
    assert_eq!(d["gpus_removed"].as_array().map(Vec::len), Some(2), "{d}");
    assert_eq!(hardware_changes(&c, &id).len(), 2, "one event per change");
}
