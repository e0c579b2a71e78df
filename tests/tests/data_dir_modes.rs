//! Private state on disk, whatever an older version left: real coordinator
//! and agent processes. The coordinator image creates its data dir 0755, so
//! before every `serve` made it private the database ended up 0644; an agent
//! state dir copied or written by an older release may be just as open.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use autogit_tests::harness::{Agent, Coordinator};

const T: Duration = Duration::from_secs(20);

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn set(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

#[test]
fn an_open_data_dir_and_database_are_private_after_start() {
    let mut c = Coordinator::init("").unwrap();
    // As an older version in the image (data dir 0755, umask 022) left it.
    set(&c.dir, 0o755);
    set(&c.dir.join("autogit.db"), 0o644);
    set(&c.dir.join("ca-key.pem"), 0o644);
    c.start().unwrap();
    assert_eq!(mode(&c.dir), 0o700, "data dir");
    assert_eq!(mode(&c.dir.join("autogit.db")), 0o600, "database");
    assert_eq!(mode(&c.dir.join("ca-key.pem")), 0o600, "CA key");
    assert_eq!(
        mode(&c.dir.join("ca.pem")),
        0o644,
        "the CA certificate stays public"
    );
    // The running coordinator writes through WAL; SQLite gives the new
    // -wal and -shm files the database's mode.
    c.token(&[]).unwrap();
    for f in ["autogit.db-wal", "autogit.db-shm"] {
        let p = c.dir.join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
    let logs = c.logs();
    assert!(
        logs.contains("tightened permissions in the data dir"),
        "{logs}"
    );
    assert!(
        logs.contains("autogit.db"),
        "the log names the file: {logs}"
    );
}

/// A fresh install is private from the start, so its first `serve` has
/// nothing to tighten and no warning about it (before, SQLite created the
/// database 0644 under umask 022 and every new install began with that WARN).
#[test]
fn a_fresh_install_is_private_from_init_and_starts_without_a_warning() {
    let mut c = Coordinator::init("").unwrap();
    assert_eq!(mode(&c.dir), 0o700, "data dir after init");
    assert_eq!(
        mode(&c.dir.join("autogit.db")),
        0o600,
        "database after init"
    );
    assert_eq!(mode(&c.dir.join("ca-key.pem")), 0o600, "CA key after init");
    c.start().unwrap();
    c.token(&[]).unwrap();
    let logs = c.logs();
    assert!(!logs.contains("tightened permissions"), "{logs}");
}

#[test]
fn an_open_agent_state_dir_and_identity_are_private_after_start() {
    let mut c = Coordinator::init("").unwrap();
    c.start().unwrap();
    let mut a = Agent::new("").unwrap();
    let id = a.join_ok(&c.grpc_addr(), &c.token(&[]).unwrap()).unwrap();
    set(&a.state_dir, 0o755);
    set(&a.state_dir.join("identity.pem"), 0o644);
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T).unwrap();
    assert_eq!(mode(&a.state_dir), 0o700, "state dir");
    assert_eq!(
        mode(&a.state_dir.join("identity.pem")),
        0o600,
        "key and certificate"
    );
    assert!(
        a.logs().contains("tightened permissions in the state dir"),
        "{}",
        a.logs()
    );
}
