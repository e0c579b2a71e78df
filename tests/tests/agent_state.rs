//! The agent's state dir under faults, end to end: real coordinator and
//! agent processes. A state dir written by an older release, or left behind
//! by an interrupted certificate renewal, must still start; a key that does
//! not belong to its certificate must end with a message that says how to
//! re-join, and never with exit status 78 (which means "revoked": systemd
//! would then never restart the agent).

use std::path::Path;
use std::time::Duration;

use autogit_tests::harness::{Agent, Coordinator};

const T: Duration = Duration::from_secs(20);

fn running() -> (Coordinator, String) {
    let mut c = Coordinator::init("").unwrap();
    c.start().unwrap();
    let addr = c.grpc_addr();
    (c, addr)
}

/// Rewrite the state dir in the layout of releases before `identity.pem`:
/// separate `key.pem` and `cert.pem`.
fn to_legacy_layout(dir: &Path, cert_pem: &str, key_pem: &str) {
    let _ = std::fs::remove_file(dir.join("identity.pem"));
    std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), key_pem).unwrap();
}

/// The agent's current key, from whichever layout the state dir has.
fn key_pem(dir: &Path) -> String {
    match std::fs::read_to_string(dir.join("key.pem")) {
        Ok(k) => k,
        Err(_) => {
            let bundle = std::fs::read_to_string(dir.join("identity.pem")).unwrap();
            let start = bundle.find("-----BEGIN PRIVATE KEY-----").unwrap();
            let end = bundle.find("-----END PRIVATE KEY-----").unwrap()
                + "-----END PRIVATE KEY-----".len();
            format!("{}\n", &bundle[start..end])
        }
    }
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_not_exit_78_and_says_how_to_rejoin() {
    let (c, addr) = running();
    let mut a = Agent::new("").unwrap();
    a.join_ok(&addr, &c.token(&[]).unwrap()).unwrap();
    let cert = a.cert_pem().unwrap();
    let foreign = autogit_certs::csr::generate("other").unwrap().key_pem;
    to_legacy_layout(&a.state_dir, &cert, &foreign);
    a.start().unwrap();
    let status = a.proc.as_mut().unwrap().wait_exit(T).unwrap();
    let logs = a.logs();
    assert_ne!(status.code(), Some(78), "78 means revoked; log:\n{logs}");
    assert!(!status.success(), "{logs}");
    assert!(logs.contains("autogit-agent join --force"), "{logs}");
    assert!(
        logs.contains(&addr),
        "the message names the coordinator: {logs}"
    );
}

#[test]
fn a_state_dir_from_the_previous_release_still_connects() {
    let (c, addr) = running();
    let mut a = Agent::new("").unwrap();
    let id = a.join_ok(&addr, &c.token(&[]).unwrap()).unwrap();
    let (cert, key) = (a.cert_pem().unwrap(), key_pem(&a.state_dir));
    to_legacy_layout(&a.state_dir, &cert, &key);
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T)
        .unwrap_or_else(|e| panic!("{e}: {}", a.logs()));
}

#[test]
fn an_interrupted_renewal_of_the_previous_release_recovers_the_new_pair() {
    let (c, addr) = running();
    let mut a = Agent::new("").unwrap();
    let id = a.join_ok(&addr, &c.token(&[]).unwrap()).unwrap();
    let (cert, key) = (a.cert_pem().unwrap(), key_pem(&a.state_dir));
    // The previous release renamed key.pem.new over key.pem and died before
    // renaming cert.pem.new: key.pem is new, cert.pem is old, and the new
    // certificate waits in cert.pem.new. Here the "old" certificate is one
    // issued to another key.
    to_legacy_layout(&a.state_dir, &cert, &key);
    let other_cert = {
        let ca = autogit_certs::ClusterCa::load(
            &std::fs::read_to_string(c.dir.join("ca.pem")).unwrap(),
            &std::fs::read_to_string(c.dir.join("ca-key.pem")).unwrap(),
        )
        .unwrap();
        let k = autogit_certs::csr::generate("old").unwrap();
        ca.sign_agent_csr(&k.csr_pem, id.parse().unwrap(), Duration::from_secs(600))
            .unwrap()
            .cert_pem
    };
    std::fs::write(a.state_dir.join("cert.pem"), other_cert).unwrap();
    std::fs::write(a.state_dir.join("cert.pem.new"), &cert).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T)
        .unwrap_or_else(|e| panic!("{e}: {}", a.logs()));
    assert!(
        !a.state_dir.join("cert.pem.new").exists(),
        "leftover removed: {}",
        a.logs()
    );
    assert!(
        a.logs().contains("interrupted"),
        "the recovery is logged: {}",
        a.logs()
    );
}
