//! `deploy/install.sh` and the systemd unit it installs, for real: the
//! script runs against a temporary root (`--root`, never the real host),
//! `systemd-analyze` checks the unit, `shellcheck` the scripts, and a real
//! coordinator enrolls the installed agent.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use autogit_tests::harness::{Agent, Coordinator, bin};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn deploy(f: &str) -> PathBuf {
    repo().join("deploy").join(f)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `install.sh --root ROOT ARGS...`; always into a temporary root.
fn install_sh(root: &Path, args: &[&str], path_prefix: Option<&Path>) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(deploy("install.sh"))
        .arg("--root")
        .arg(root)
        .args(args);
    cmd.env_remove("AUTOGIT_JOIN_TOKEN");
    if let Some(p) = path_prefix {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", p.display()));
    }
    cmd.output().expect("run install.sh")
}

fn install_ok(root: &Path, args: &[&str]) -> String {
    let out = install_sh(root, args, None);
    assert!(
        out.status.success(),
        "install.sh {args:?} failed:\n{}",
        text(&out)
    );
    text(&out)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `key=value` lines of a unit file, in order (comments and sections dropped).
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn agent_bin() -> String {
    bin("autogit-agent").display().to_string()
}

/// A minimal ELF header for `machine`, enough for install.sh's arch check.
fn fake_elf(path: &Path, machine: u16) {
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    b.extend_from_slice(path.file_name().unwrap().as_encoded_bytes());
    std::fs::write(path, b).unwrap();
}

/// A directory with a `uname` that reports `machine` for `-m`.
fn fake_uname(dir: &Path, machine: &str) -> PathBuf {
    let bin = dir.join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let p = bin.join("uname");
    std::fs::write(
        &p,
        format!("#!/bin/sh\n[ \"$1\" = -m ] && echo {machine} && exit 0\nexec /bin/uname \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn need_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is needed by this test: apt-get install -y {package} (.ci/run installs it)"
    );
}

#[test]
fn install_into_a_root_writes_binary_config_unit_user_with_the_right_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let out = install_ok(root, &["--binary", &agent_bin()]);
    assert!(out.contains("not enrolled yet"), "{out}");

    let binary = root.join("usr/local/bin/autogit-agent");
    assert_eq!(mode(&binary), 0o755);
    assert_eq!(
        std::fs::read(&binary).unwrap(),
        std::fs::read(bin("autogit-agent")).unwrap()
    );
    let config = root.join("etc/autogit/agent.toml");
    assert_eq!(mode(&config), 0o640, "config is not world-readable");
    assert_eq!(read(&config), read(&deploy("agent.toml")));
    assert!(
        read(&config)
            .lines()
            .any(|l| l == "state_dir = \"/var/lib/autogit-agent\"")
    );
    let unit = root.join("etc/systemd/system/autogit-agent.service");
    assert_eq!(mode(&unit), 0o644);
    assert_eq!(read(&unit), read(&deploy("autogit-agent.service")));
    assert_eq!(
        mode(&root.join("var/lib/autogit-agent")),
        0o700,
        "state dir holds the private key"
    );

    let passwd = read(&root.join("etc/passwd"));
    assert!(
        passwd.lines().any(|l| l.starts_with("autogit:")
            && l.ends_with(":/var/lib/autogit-agent:/usr/sbin/nologin")),
        "{passwd}"
    );
    let group = read(&root.join("etc/group"));
    let docker = group
        .lines()
        .find(|l| l.starts_with("docker:"))
        .expect("docker group");
    assert!(
        docker
            .rsplit(':')
            .next()
            .unwrap()
            .split(',')
            .any(|m| m == "autogit"),
        "{group}"
    );

    // Running it again changes nothing and duplicates nothing.
    install_ok(root, &["--binary", &agent_bin()]);
    assert_eq!(read(&root.join("etc/passwd")), passwd);
    assert_eq!(read(&root.join("etc/group")), group);
}

#[test]
fn unit_is_hardened_and_still_reaches_docker_sys_and_proc() {
    let unit = read(&deploy("autogit-agent.service"));
    let d = directives(&unit);
    let has = |k: &str, v: &str| d.iter().any(|(dk, dv)| dk == k && dv == v);
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/lib/autogit-agent"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("Restart", "always"),
        ("RestartPreventExitStatus", "78"),
        ("User", "autogit"),
        ("SupplementaryGroups", "docker"),
        ("CapabilityBoundingSet", ""),
        ("ProtectKernelModules", "yes"),
        (
            "ExecStart",
            "/usr/local/bin/autogit-agent --config /etc/autogit/agent.toml run",
        ),
        ("ConditionPathExists", "/var/lib/autogit-agent/agent.json"),
    ] {
        assert!(has(k, v), "{k}={v} missing from the unit");
    }
    // What inventory and Docker need must not be taken away.
    for (k, forbidden) in [
        ("PrivateDevices", "yes"),
        ("ProcSubset", "pid"),
        ("PrivateUsers", "yes"),
        ("PrivateNetwork", "yes"),
        ("InaccessiblePaths", "/var/run/docker.sock"),
    ] {
        assert!(!has(k, forbidden), "{k}={forbidden} would break the agent");
    }
    let families = d
        .iter()
        .find(|(k, _)| k == "RestrictAddressFamilies")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(
        families.split_whitespace().any(|f| f == "AF_UNIX"),
        "docker.sock needs AF_UNIX: {families}"
    );
    // The agent's revoked exit code is the one the unit stops restarting on.
    assert_eq!(autogit_agent::cli::EXIT_REFUSED, 78);
}

#[test]
fn systemd_analyze_verifies_the_installed_unit_and_rates_it_ok() {
    need_tool("systemd-analyze", "systemd");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    install_ok(&root, &["--binary", &agent_bin()]);
    // `verify` checks that ExecStart's binary exists, on this host, and its
    // `--root` mode cannot see the target units the unit depends on. So
    // verify a copy whose only change is ExecStart pointing at the binary
    // install.sh put into the temporary root.
    let installed = read(&root.join("etc/systemd/system/autogit-agent.service"));
    let copy_dir = tmp.path().join("verify");
    std::fs::create_dir_all(&copy_dir).unwrap();
    let copy = copy_dir.join("autogit-agent.service");
    let binary = root.join("usr/local/bin/autogit-agent");
    std::fs::write(
        &copy,
        installed.replace(
            "/usr/local/bin/autogit-agent",
            &binary.display().to_string(),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify:\n{}",
        text(&out)
    );

    // The check can fail: a typo and a missing binary are both reported.
    let bad = copy_dir.join("autogit-agent-bad.service");
    std::fs::write(
        &bad,
        installed
            .replace("ProtectSystem=strict", "ProtectSystem=stricter")
            .replace("/usr/local/bin/autogit-agent", "/nonexistent/autogit-agent"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stricter") && err.contains("/nonexistent/autogit-agent"),
        "{err}"
    );

    // systemd's own exposure rating (0 best, 10 worst): keep it "OK" or better.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&copy)
        .output()
        .unwrap();
    let report = text(&out);
    let level: f64 = report
        .lines()
        .find_map(|l| l.split("exposure level for autogit-agent.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(
        level <= 2.5,
        "exposure level {level} (was 2.0 when written):\n{report}"
    );
}

#[test]
fn deploy_scripts_are_shellcheck_clean() {
    need_tool("shellcheck", "shellcheck");
    let scripts = ["install.sh", "build-image.sh", "coordinator-entrypoint.sh"].map(deploy);
    let out = Command::new("shellcheck").args(&scripts).output().unwrap();
    assert!(out.status.success(), "shellcheck:\n{}", text(&out));
    // shellcheck does flag problems here (guards against a no-op run).
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.sh");
    std::fs::write(&bad, "#!/bin/sh\nrm -rf $1/*\n").unwrap();
    assert!(
        !Command::new("shellcheck")
            .arg(&bad)
            .output()
            .unwrap()
            .status
            .success()
    );
}

#[test]
fn uninstall_removes_what_it_installed_and_keeps_state_unless_purged() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    install_ok(root, &["--binary", &agent_bin()]);
    let state = root.join("var/lib/autogit-agent");
    std::fs::write(state.join("agent.json"), "{}").unwrap();

    let out = install_ok(root, &["--uninstall"]);
    for f in [
        "usr/local/bin/autogit-agent",
        "etc/systemd/system/autogit-agent.service",
        "etc/autogit/agent.toml",
        "etc/autogit",
    ] {
        assert!(!root.join(f).exists(), "{f} survived --uninstall");
    }
    assert!(
        state.join("agent.json").exists(),
        "identity kept without --purge"
    );
    assert!(out.contains("kept") && out.contains("--purge"), "{out}");
    assert!(read(&root.join("etc/passwd")).contains("autogit:"));

    let out = install_ok(root, &["--uninstall", "--purge"]);
    assert!(!state.exists(), "{out}");
    assert!(!read(&root.join("etc/passwd")).contains("autogit:"));
    let group = read(&root.join("etc/group"));
    assert!(!group.contains("autogit"), "{group}");
    assert!(
        group.lines().any(|l| l.starts_with("docker:")),
        "the docker group is Docker's, not ours: {group}"
    );
}

#[test]
fn an_edited_config_survives_reinstall_and_uninstall() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    install_ok(root, &["--binary", &agent_bin()]);
    let config = root.join("etc/autogit/agent.toml");
    let edited = format!("{}\n[labels]\nrack = \"b3\"\n", read(&config));
    std::fs::write(&config, &edited).unwrap();
    let out = install_ok(root, &["--binary", &agent_bin()]);
    assert!(out.contains("kept the existing"), "{out}");
    assert_eq!(read(&config), edited);
    let out = install_ok(root, &["--uninstall"]);
    assert!(out.contains("it was changed"), "{out}");
    assert_eq!(read(&config), edited);
    install_ok(root, &["--uninstall", "--purge"]);
    assert!(!config.exists());
}

#[test]
fn picks_the_binary_for_the_architecture_uname_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let dist = tmp.path().join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    for (arch, machine) in [("x86_64", 62), ("aarch64", 183), ("riscv64", 243)] {
        fake_elf(&dist.join(format!("autogit-agent-{arch}")), machine);
    }
    let dist_s = dist.display().to_string();
    for (uname, arch) in [
        ("x86_64", "x86_64"),
        ("amd64", "x86_64"),
        ("aarch64", "aarch64"),
        ("arm64", "aarch64"),
        ("riscv64", "riscv64"),
    ] {
        let root = tmp.path().join(format!("root-{uname}"));
        let fake = fake_uname(&tmp.path().join(uname), uname);
        let out = install_sh(&root, &["--dist", &dist_s], Some(&fake));
        assert!(out.status.success(), "{uname}: {}", text(&out));
        assert_eq!(
            std::fs::read(root.join("usr/local/bin/autogit-agent")).unwrap(),
            std::fs::read(dist.join(format!("autogit-agent-{arch}"))).unwrap(),
            "uname -m {uname} must install the {arch} binary"
        );
    }
    // An architecture we do not ship is refused, and nothing is installed.
    let root = tmp.path().join("root-sparc");
    let out = install_sh(
        &root,
        &["--dist", &dist_s],
        Some(&fake_uname(&tmp.path().join("sparc"), "sparc64")),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unsupported architecture sparc64"),
        "{}",
        text(&out)
    );
    assert!(!root.join("usr/local/bin/autogit-agent").exists());
}

#[test]
fn refuses_a_binary_built_for_another_architecture_or_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let out = install_sh(
        &root,
        &["--arch", "aarch64", "--binary", &agent_bin()],
        None,
    );
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("built for x86_64, but this host is aarch64") || !cfg!(target_arch = "x86_64"),
        "{msg}"
    );
    assert!(
        !root.join("usr/local/bin/autogit-agent").exists(),
        "nothing installed on refusal"
    );
    assert!(!root.join("etc/passwd").exists(), "no user made on refusal");

    let out = install_sh(
        &root,
        &["--dist", &tmp.path().join("empty").display().to_string()],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("cargo xtask dist"),
        "says how to get a binary: {}",
        text(&out)
    );

    let out = install_sh(
        &root,
        &["--binary", &deploy("install.sh").display().to_string()],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not an ELF executable"),
        "{}",
        text(&out)
    );

    let out = install_sh(
        &root,
        &["--binary", &agent_bin(), "--coordinator", "127.0.0.1:1"],
        None,
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("needs a join token"), "{}", text(&out));
}

#[test]
fn install_with_a_token_enrolls_and_the_installed_agent_becomes_ready() {
    let mut c = Coordinator::init("").unwrap();
    c.start().unwrap();
    let addr = c.grpc_addr();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");

    // A bad token fails the install loudly and never echoes the token.
    let bogus = "agjt_not-a-real-token-0123456789";
    let out = install_sh(
        &root,
        &[
            "--binary",
            &agent_bin(),
            "--coordinator",
            &addr,
            "--token",
            bogus,
        ],
        None,
    );
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("enrollment failed"), "{msg}");
    assert!(
        !msg.contains(bogus),
        "the token leaked into the output:\n{msg}"
    );
    assert!(!root.join("var/lib/autogit-agent/agent.json").exists());

    let token = c.token(&["--uses", "1"]).unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let out = install_ok(
        &root,
        &[
            "--binary",
            &agent_bin(),
            "--coordinator",
            &addr,
            "--token-file",
            &token_file.display().to_string(),
        ],
    );
    assert!(
        !out.contains(&token),
        "the token leaked into the output:\n{out}"
    );
    let state = root.join("var/lib/autogit-agent");
    assert_eq!(
        mode(&state.join("identity.pem")) & 0o077,
        0,
        "private key is private"
    );

    // Run the installed agent the way the unit does (config from the root).
    let mut a = Agent::new("").unwrap();
    a.state_dir = state;
    a.config = root.join("etc/autogit/agent.toml");
    let id = a.id().unwrap();
    a.start().unwrap();
    let agent = c
        .wait_agent_state(&id, "ready", Duration::from_secs(30))
        .unwrap();
    assert_eq!(agent["arch"], std::env::consts::ARCH);
}

/// The real (not `--root`) install path: useradd, group membership,
/// ownership and `join` through `runuser` as the service user. It runs in a
/// private mount namespace on a throwaway overlay of this host's `/`
/// (upper layer on tmpfs), so the host itself is never changed; systemd is
/// not running there, so no `systemctl` either.
#[test]
fn real_install_in_an_overlay_creates_the_user_and_enrolls_as_that_user() {
    if !nix::unistd::Uid::effective().is_root() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the overlay install test needs root"
        );
        return;
    }
    let mut c = Coordinator::init("").unwrap();
    c.start().unwrap();
    let token = c.token(&["--uses", "1"]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::create_dir_all(t.join("rw")).unwrap();
    let token_file = t.join("token");
    std::fs::write(&token_file, &token).unwrap();
    let script = format!(
        r#"set -eu
mount -t tmpfs tmpfs "{t}/rw"
mkdir -p "{t}/rw/upper" "{t}/rw/work" "{t}/merged"
mount -t overlay overlay -o "lowerdir=/,upperdir={t}/rw/upper,workdir={t}/rw/work" "{t}/merged"
for d in proc sys dev; do mount --rbind "/$d" "{t}/merged/$d"; done
chroot "{t}/merged" /bin/sh -eu -c '
    sh {install} --binary {agent} --coordinator {addr} --token-file {token_file} --no-start
    echo "USER $(id -un autogit) $(id -Gn autogit)"
    echo "STAT $(stat -c "%U:%G:%a" /usr/local/bin/autogit-agent /etc/autogit/agent.toml /var/lib/autogit-agent /var/lib/autogit-agent/identity.pem /var/lib/autogit-agent/agent.json | tr "\n" " ")"
    sh {install} --uninstall --purge
    if id autogit >/dev/null 2>&1; then echo "PURGE user-left"; else echo "PURGE user-gone"; fi
    ls /var/lib/autogit-agent /usr/local/bin/autogit-agent /etc/systemd/system/autogit-agent.service 2>/dev/null || echo "PURGE files-gone"
'
"#,
        t = t.display(),
        install = deploy("install.sh").display(),
        agent = agent_bin(),
        addr = c.grpc_addr(),
        token_file = token_file.display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let log = text(&out);
    assert!(out.status.success(), "overlay install failed:\n{log}");
    assert!(
        !log.contains(&token),
        "the token leaked into the output:\n{log}"
    );
    let line = |tag: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(tag))
            .unwrap_or_else(|| panic!("no {tag} in:\n{log}"))
            .to_string()
    };
    let groups = line("USER autogit ");
    assert!(
        groups.split_whitespace().any(|g| g == "docker"),
        "autogit is not in docker: {groups}"
    );
    let stat: Vec<String> = line("STAT ")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(
        stat[..4],
        [
            "root:root:755",
            "root:autogit:640",
            "autogit:autogit:700",
            "autogit:autogit:600"
        ],
        "binary, config, state dir, private key"
    );
    assert!(
        stat[4].starts_with("autogit:autogit:"),
        "join wrote agent.json as the service user: {}",
        stat[4]
    );
    assert_eq!(line("PURGE "), "user-gone");
    assert!(log.contains("PURGE files-gone"), "{log}");
    assert_eq!(c.agents().unwrap().len(), 1, "the host enrolled once");
}

/// Every key `agent.toml` documents (commented out) is one the agent
/// accepts: uncommented, the file still loads. The agent rejects unknown
/// keys, so documentation drift fails here.
#[test]
fn every_documented_agent_config_key_is_accepted_by_the_agent() {
    let shipped = read(&deploy("agent.toml"));
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let uncommented: String = shipped
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest)
                if rest.starts_with('[') || rest.contains(" = ") && !rest.starts_with(' ') =>
            {
                rest.to_string()
            }
            _ => l.to_string(),
        })
        .map(|l| {
            if l.starts_with("state_dir") {
                format!("state_dir = \"{}\"", state.display())
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let sections = uncommented.lines().filter(|l| l.starts_with('[')).count();
    assert_eq!(
        sections, 6,
        "labels, docker, inventory, session, images, policy:\n{uncommented}"
    );
    let run = |toml: &str| {
        let f = tmp.path().join("agent.toml");
        std::fs::write(&f, toml).unwrap();
        Command::new(bin("autogit-agent"))
            .arg("--config")
            .arg(&f)
            .arg("inventory")
            .env_remove("AUTOGIT_LOG")
            .output()
            .unwrap()
    };
    let out = run(&uncommented);
    assert!(
        out.status.success(),
        "uncommented agent.toml rejected:\n{}\n{uncommented}",
        text(&out)
    );
    let inv: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inv["labels"]["rack"], "b3", "the example label is read");
    // The check can fail: a key the agent does not know is refused.
    let out = run(&uncommented.replace("rescan_interval", "rescan_intervall"));
    assert!(
        !out.status.success() && text(&out).contains("rescan_intervall"),
        "{}",
        text(&out)
    );
}
