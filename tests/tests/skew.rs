//! Clock skew, end to end: the real agent binary under Debian's `faketime`
//! (LD_PRELOAD, so the dynamically linked debug build) against a real,
//! freshly initialised coordinator on the true clock. The agent must join,
//! connect, renew its certificate before it expires, and not renew in a loop.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use autogit_tests::harness::{Agent, Coordinator, bin, wait_for};

const T: Duration = Duration::from_secs(20);
/// Short enough to see a renewal (at about 2/3 of it), long enough that the
/// next one is seconds away.
const TTL: &str = "9s";

/// `faketime` on PATH, or `None` (with a message) where the test may skip.
fn faketime() -> Option<PathBuf> {
    let found = Command::new("faketime")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(PathBuf::from("faketime"));
    }
    assert!(
        std::env::var_os("AUTOGIT_REQUIRE_DOCKER").is_none(),
        "faketime is missing (apt-get install faketime) and AUTOGIT_REQUIRE_DOCKER is set"
    );
    eprintln!("SKIPPED: faketime is not installed (apt-get install faketime)");
    None
}

/// An agent whose every command runs under `faketime -f OFFSET`.
fn skewed_agent(offset: &str, scratch: &tempfile::TempDir) -> Option<Agent> {
    faketime()?;
    let wrapper = scratch.path().join("skewed");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec faketime -f \"{offset}\" \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut a = Agent::new("").unwrap();
    a.runner = Some((wrapper, bin("autogit-agent")));
    Some(a)
}

fn renewals(c: &Coordinator) -> usize {
    c.logs().matches("agent certificate renewed").count()
}

fn joins_connects_and_renews_once(offset: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let Some(mut a) = skewed_agent(offset, &scratch) else {
        return;
    };
    // The wrapper really skews the clock.
    let out = Command::new(a.runner.as_ref().unwrap().0.as_os_str())
        .args(["date", "+%s"])
        .output()
        .unwrap();
    let skewed: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (skewed - now).abs() > 7 * 3600,
        "faketime -f {offset} did not skew the clock"
    );

    let mut c = Coordinator::init(&format!("[tls]\nagent_cert_ttl = \"{TTL}\"\n")).unwrap();
    c.start().unwrap();
    let id = a.join_ok(&c.grpc_addr(), &c.token(&[]).unwrap()).unwrap();
    let first = autogit_certs::CertInfo::from_pem(&a.cert_pem().unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T)
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", a.logs()));
    wait_for(T, "the first certificate renewal", || {
        (renewals(&c) >= 1).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", a.logs()));
    assert!(
        time::OffsetDateTime::now_utc() < first.not_after,
        "renewed only after the certificate expired"
    );
    // The next renewal is due about 6 s later: a quiet 3 s shows there is no loop.
    let after_first = renewals(&c);
    std::thread::sleep(Duration::from_secs(3));
    let n = renewals(&c);
    assert!(
        n <= after_first,
        "{} renewals in 3 s: renewing in a loop\nagent log:\n{}",
        n - after_first,
        a.logs()
    );
    assert_eq!(c.agents().unwrap()[0]["state"], "ready");
}

#[test]
fn an_agent_25_hours_ahead_connects_and_does_not_renew_in_a_loop() {
    joins_connects_and_renews_once("+25h");
}

#[test]
fn an_agent_25_hours_behind_connects_to_a_fresh_coordinator() {
    joins_connects_and_renews_once("-25h");
}

#[test]
fn an_agent_8_hours_behind_renews_before_expiry() {
    joins_connects_and_renews_once("-8h");
}
