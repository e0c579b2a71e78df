//! Secure fleet foundation, end to end: real coordinator and agent processes
//! over loopback TLS, real SQLite files, SIGKILL.

use std::time::Duration;

use autogit_tests::harness::{Agent, Coordinator, agent_fixture, wait_for};

const T: Duration = Duration::from_secs(20);

fn running() -> (Coordinator, String) {
    let mut c = Coordinator::init("").unwrap();
    c.start().unwrap();
    let addr = c.grpc_addr();
    (c, addr)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn enroll_connect_and_inventory_visible_with_real_arch() {
    let (c, addr) = running();
    let token = c.token(&["--label", "rack=b3", "--uses", "1"]).unwrap();
    let mut a = Agent::new("[labels]\nzone = \"lab\"\n").unwrap();
    let id = a.join_ok(&addr, &token).unwrap();
    // Key material stays private on disk.
    use std::os::unix::fs::PermissionsExt;
    assert!(
        !a.state_dir.join("key.pem").exists(),
        "key and certificate live together in identity.pem"
    );
    let mode = std::fs::metadata(a.state_dir.join("identity.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "identity.pem holds the private key");
    a.start().unwrap();
    let agent = c.wait_agent_state(&id, "ready", T).unwrap();
    let uname = nix::sys::utsname::uname().unwrap();
    assert_eq!(agent["arch"], uname.machine().to_str().unwrap());
    assert_eq!(
        agent["hostname"],
        nix::unistd::gethostname().unwrap().to_str().unwrap()
    );
    assert_eq!(agent["trust_labels"]["rack"], "b3", "token label");
    assert_eq!(agent["reported_labels"]["zone"], "lab", "config label");
    assert!(
        agent["trust_labels"].get("zone").is_none(),
        "what the agent reports is never a trust label: {agent:#}"
    );
    assert!(agent["gpus"].as_array().unwrap().is_empty());
    assert!(agent["inventory"]["cpu_threads"].as_u64().unwrap() > 0);
    assert!(agent["inventory"]["mem_total_bytes"].as_u64().unwrap() > 0);
    // Table output works too.
    let table = c.cli_ok(&["agents", "list"]).unwrap();
    assert!(table.contains(&id) && table.contains("ready"), "{table}");
}

#[test]
fn single_use_token_is_refused_the_second_time() {
    let (c, addr) = running();
    let token = c.token(&["--uses", "1"]).unwrap();
    Agent::new("").unwrap().join_ok(&addr, &token).unwrap();
    let second = Agent::new("").unwrap();
    let out = second.join(&addr, &token).unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("no uses left"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    assert!(
        !second.state_dir.join("agent.json").exists(),
        "nothing half-written"
    );
    assert_eq!(c.agents().unwrap().len(), 1);
}

#[test]
fn expired_token_is_refused() {
    let (c, addr) = running();
    let token = c.token(&["--ttl", "1s"]).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let out = Agent::new("").unwrap().join(&addr, &token).unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));
    assert!(c.agents().unwrap().is_empty());
}

#[test]
fn revoked_and_malformed_tokens_are_refused_with_named_causes() {
    let (c, addr) = running();
    let token = c.token(&[]).unwrap();
    let id = c.tokens().unwrap()[0]["id"].as_str().unwrap().to_string();
    c.cli_ok(&["token", "revoke", &id]).unwrap();
    let out = Agent::new("").unwrap().join(&addr, &token).unwrap();
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));
    let out = Agent::new("").unwrap().join(&addr, "AGT1nonsense").unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("malformed join token"),
        "{}",
        stderr(&out)
    );
    // A token with the right format but a wrong secret.
    let forged = format!("{}{}", &token[..token.len() - 4], "AAAA");
    let out = Agent::new("").unwrap().join(&addr, &forged).unwrap();
    assert!(stderr(&out).contains("not valid"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains(&token[token.len() - 20..]),
        "secret echoed"
    );
}

#[test]
fn wrong_ca_fingerprint_makes_the_agent_refuse_before_sending_the_secret() {
    let (c, addr) = running();
    let token = c.token(&["--uses", "5"]).unwrap();
    let other = Coordinator::init("").unwrap();
    let other_token = other.token(&[]).unwrap();
    // Our token's id and secret, but the other cluster's CA fingerprint.
    let forged = format!("{}{}", &other_token[..68], &token[68..]);
    let out = Agent::new("").unwrap().join(&addr, &forged).unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("does not match the fingerprint"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // The coordinator never saw the secret: the token is unused.
    assert_eq!(c.tokens().unwrap()[0]["uses"], 0);
}

#[test]
fn unreachable_coordinator_is_a_one_line_error() {
    let c = Coordinator::init("").unwrap();
    let token = c.token(&[]).unwrap();
    // Reserve a port and close it so nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Agent::new("")
        .unwrap()
        .join(&format!("127.0.0.1:{port}"), &token)
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("cannot reach coordinator"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn revoked_agent_is_cut_off_and_cannot_reconnect() {
    let (c, addr) = running();
    let mut a = Agent::new("").unwrap();
    let id = a.join_ok(&addr, &c.token(&[]).unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T).unwrap();
    c.cli_ok(&["agent", "revoke", &id]).unwrap();
    let status = a
        .proc
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(10))
        .unwrap();
    assert_eq!(status.code(), Some(78), "agent log:\n{}", a.logs());
    assert!(a.logs().contains("revoked"), "{}", a.logs());
    assert_eq!(c.agents().unwrap()[0]["state"], "revoked");
    // Reconnecting is refused too.
    a.start().unwrap();
    let status = a
        .proc
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(10))
        .unwrap();
    assert_eq!(status.code(), Some(78));
    assert!(c.logs().contains("session refused"), "{}", c.logs());
}

#[test]
fn coordinator_sigkill_and_restart_keeps_state_and_agent_reconnects() {
    let (mut c, addr) = running();
    let token = c.token(&["--uses", "3"]).unwrap();
    let mut a = Agent::new("").unwrap();
    let id = a.join_ok(&addr, &token).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T).unwrap();
    c.kill();
    // Without a coordinator the agent keeps retrying (and does not exit).
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        a.proc.as_mut().unwrap().try_exit().is_none(),
        "agent exited: {}",
        a.logs()
    );
    c.start().unwrap();
    wait_for(T, "agent to reconnect to the new process", || {
        c.logs().contains("agent session opened").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", a.logs()));
    c.wait_agent_state(&id, "ready", T).unwrap();
    let tokens = c.tokens().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["uses"], 1, "token use count survived");
    // Enrolling still works after the restart.
    Agent::new("").unwrap().join_ok(&addr, &token).unwrap();
    assert_eq!(c.agents().unwrap().len(), 2);
}

#[test]
fn agent_killed_becomes_unreachable_then_ready_again() {
    let (c, addr) = running();
    let mut a = Agent::new("").unwrap();
    let id = a.join_ok(&addr, &c.token(&[]).unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T).unwrap();
    a.kill();
    c.wait_agent_state(&id, "unreachable", T).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T).unwrap();
}

#[test]
fn gpu_fixtures_reach_the_coordinator() {
    let (c, addr) = running();
    let cfg = format!(
        "[inventory]\nsysfs_root = \"{}\"\nnvidia_fixture = \"{}\"\n",
        agent_fixture("sysfs/amd").display(),
        agent_fixture("nvidia/two-gpus.json").display()
    );
    let mut a = Agent::new(&cfg).unwrap();
    let id = a.join_ok(&addr, &c.token(&[]).unwrap()).unwrap();
    a.start().unwrap();
    let agent = c.wait_agent_state(&id, "ready", T).unwrap();
    let gpus = agent["gpus"].as_array().unwrap();
    let vendors: Vec<&str> = gpus.iter().map(|g| g["vendor"].as_str().unwrap()).collect();
    assert!(vendors.contains(&"amd"), "{gpus:?}");
    assert!(vendors.contains(&"nvidia"), "{gpus:?}");
    let amd = gpus.iter().find(|g| g["vendor"] == "amd").unwrap();
    assert_eq!(amd["render_node"], "/dev/dri/renderD128");
    assert!(amd["memory_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn certificate_is_renewed_before_expiry() {
    let mut c = Coordinator::init("[tls]\nagent_cert_ttl = \"6s\"\n").unwrap();
    c.start().unwrap();
    let mut a = Agent::new("").unwrap();
    let id = a.join_ok(&c.grpc_addr(), &c.token(&[]).unwrap()).unwrap();
    let first = autogit_certs::CertInfo::from_pem(&a.cert_pem().unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T).unwrap();
    let renewed = wait_for(Duration::from_secs(8), "certificate renewal", || {
        let info = autogit_certs::CertInfo::from_pem(&a.cert_pem().ok()?).ok()?;
        (info.serial_hex != first.serial_hex).then_some(info)
    })
    .unwrap();
    assert!(
        time::OffsetDateTime::now_utc() < first.not_after,
        "renewed before the old certificate expired"
    );
    assert!(renewed.not_after > first.not_after);
    assert_eq!(renewed.agent_id(), first.agent_id());
    // Past the first certificate's expiry, a fresh connection still works.
    std::thread::sleep(Duration::from_secs(7));
    a.kill();
    a.start().unwrap();
    wait_for(T, "new session with the renewed certificate", || {
        a.logs().contains("session established").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", a.logs()));
    c.wait_agent_state(&id, "ready", T).unwrap();
}

/// Inodes of the TCP/UDP sockets in LISTEN (or bound, for UDP) state on this host.
fn listening_inodes() -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    for (file, listen_state) in [("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && cols[3] == listen_state {
                out.insert(cols[9].to_string());
            }
        }
    }
    out
}

#[test]
fn the_agent_opens_no_listening_port() {
    let (c, addr) = running();
    let mut a = Agent::new("").unwrap();
    let id = a.join_ok(&addr, &c.token(&[]).unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T).unwrap();
    let pid = a.proc.as_ref().unwrap().pid().unwrap();
    let listening = listening_inodes();
    let mut sockets = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
            sockets += 1;
            assert!(
                !listening.contains(inode),
                "the agent listens on a socket (inode {inode})"
            );
        }
    }
    assert!(sockets >= 1, "the agent holds its outbound connection");
    // The same check does see the coordinator's listeners.
    let cpid = c.proc.as_ref().unwrap().pid().unwrap();
    let coordinator_listens = std::fs::read_dir(format!("/proc/{cpid}/fd"))
        .unwrap()
        .flatten()
        .any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|t| {
                let t = t.to_string_lossy().to_string();
                t.strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .is_some_and(|i| listening.contains(i))
            })
        });
    assert!(coordinator_listens, "listener detection works");
}
