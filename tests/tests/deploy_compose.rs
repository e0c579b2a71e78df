//! `deploy/compose.yaml` with the real coordinator image: the image is built
//! offline by `deploy/build-image.sh` from the static coordinator in
//! `target/dist/` (`cargo xtask dist`), Debian's docker-compose 1.29 starts
//! it on the test Docker daemon, and a real agent from `target/debug`
//! enrolls through the published gRPC port.
//!
//! The test daemon has no bridge network, so the service runs with host
//! networking (a compose override) and the coordinator binds 127.0.0.1 on
//! free ports. docker-compose refuses published ports with host networking
//! and 1.29 cannot remove a list in an override, so the test runs a copy of
//! the shipped file without the coordinator's `ports:` block, and checks
//! separately that the shipped file publishes the chosen ports. Everything
//! else is the shipped compose file. Everything is torn down (`down -v`,
//! image removed) even when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use autogit_tests::harness::{Agent, free_port, wait_for};
use serde_json::Value;

/// Says why a test did nothing, past libtest's output capture (a passing
/// test's `eprintln!` is hidden), so a skip is never silent.
fn skipped(msg: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn docker_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn has(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Skip (with the reason) unless everything the test needs is here; under
/// `cargo xtask test` a missing Docker or docker-compose is a failure.
fn prerequisites() -> Option<PathBuf> {
    let coordinator = repo()
        .join("target/dist")
        .join(format!("autogit-coordinator-{}", std::env::consts::ARCH));
    if !coordinator.exists() {
        skipped(format!(
            "SKIPPED: {} is absent; build it with `cargo xtask dist` (docs/building.md)",
            coordinator.display()
        ));
        return None;
    }
    let required = std::env::var_os("AUTOGIT_REQUIRE_DOCKER").is_some();
    for (ok, what) in [
        (docker_answers(), "a Docker daemon"),
        (
            has("docker-compose"),
            "docker-compose (apt-get install docker-compose)",
        ),
    ] {
        if !ok {
            assert!(
                !required,
                "AUTOGIT_REQUIRE_DOCKER is set but {what} is missing"
            );
            skipped(format!("SKIPPED: needs {what}"));
            return None;
        }
    }
    Some(coordinator)
}

/// `compose` without the coordinator's `ports:` block (the first one).
fn without_coordinator_ports(compose: &str) -> String {
    let lines: Vec<&str> = compose.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == "    ports:")
        .expect("coordinator has a ports: block");
    let len = lines[start + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || l.starts_with("      "))
        .count();
    let block = lines[start..=start + len].join("\n");
    assert!(
        block.contains("AUTOGIT_GRPC_PORT") && block.contains("AUTOGIT_HTTP_PORT"),
        "unexpected block:\n{block}"
    );
    let mut out: Vec<&str> = lines[..start].to_vec();
    out.extend_from_slice(&lines[start + 1 + len..]);
    out.join("\n") + "\n"
}

/// One compose project on the test daemon; `down -v` and the image removal
/// run on drop, pass or fail.
struct Project {
    name: String,
    image: String,
    files: Vec<PathBuf>,
    env: Vec<(&'static str, String)>,
    _dir: tempfile::TempDir,
}

impl Project {
    fn compose(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.arg("-p").arg(&self.name).args(["--ansi", "never"]);
        for f in &self.files {
            c.arg("-f").arg(f);
        }
        for v in [
            "AUTOGIT_GITLAB__URL",
            "AUTOGIT_GITLAB__TOKEN",
            "AUTOGIT_DEMAND__WEBHOOK_SECRET",
            "AUTOGIT_SERVER_NAMES",
            "AUTOGIT_LOG",
        ] {
            c.env_remove(v);
        }
        c.envs(self.env.iter().map(|(k, v)| (*k, v)));
        c
    }

    fn container(&self) -> String {
        let id = ok(self.compose().args(["ps", "-q", "coordinator"]))
            .trim()
            .to_string();
        assert!(!id.is_empty(), "no coordinator container");
        id
    }

    fn logs(&self) -> String {
        self.compose()
            .args(["logs", "--no-color", "coordinator"])
            .output()
            .map(|o| text(&o))
            .unwrap_or_default()
    }

    /// Waits until Docker's health check (busybox wget /healthz) passes.
    fn wait_healthy(&self) -> String {
        let id = self.container();
        let status = wait_for(
            Duration::from_secs(90),
            "coordinator container to be healthy",
            || {
                let s = Command::new("docker")
                    .args([
                        "inspect",
                        "-f",
                        "{{.State.Status}} {{.State.Health.Status}}",
                        &id,
                    ])
                    .output()
                    .ok()?;
                let s = String::from_utf8_lossy(&s.stdout).trim().to_string();
                (s == "running healthy" || s.starts_with("exited") || s.ends_with("unhealthy"))
                    .then_some(s)
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        assert_eq!(status, "running healthy", "{}", self.logs());
        id
    }

    fn exec(&self, id: &str, args: &[&str]) -> String {
        ok(Command::new("docker")
            .args(["exec", id, "autogit-coordinator"])
            .args(args)
            .args(["--data-dir", "/var/lib/autogit"]))
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self
            .compose()
            .args(["down", "-v", "--remove-orphans", "--timeout", "5"])
            .output();
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

#[test]
fn compose_runs_the_coordinator_image_and_a_real_agent_enrolls() {
    let Some(coordinator) = prerequisites() else {
        return;
    };
    let unique = format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let image = format!("autogit-test/coordinator:compose-{unique}");
    let dir = tempfile::tempdir().unwrap();
    let shipped = repo().join("deploy/compose.yaml");
    let without_ports = dir.path().join("compose.yaml");
    std::fs::write(
        &without_ports,
        without_coordinator_ports(&std::fs::read_to_string(&shipped).unwrap()),
    )
    .unwrap();
    // Only what this daemon needs differs from the shipped file.
    let override_file = dir.path().join("compose.test.yaml");
    std::fs::write(
        &override_file,
        "services:\n  coordinator:\n    network_mode: host\n",
    )
    .unwrap();
    let (grpc, http) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let project = Project {
        name: format!("autogitcompose{unique}"),
        image: image.clone(),
        files: vec![without_ports, override_file],
        env: vec![
            ("AUTOGIT_IMAGE", image.clone()),
            ("AUTOGIT_GRPC_PORT", grpc.to_string()),
            ("AUTOGIT_HTTP_PORT", http.to_string()),
            ("AUTOGIT_LISTEN_ADDR", "127.0.0.1".into()),
        ],
        _dir: dir,
    };

    // The shipped file publishes the chosen ports, container port = host port.
    let mut shipped_project = Command::new("docker-compose");
    shipped_project.arg("-f").arg(&shipped).arg("config");
    shipped_project.envs(project.env.iter().map(|(k, v)| (*k, v)));
    let config = ok(&mut shipped_project);
    for port in [grpc, http] {
        assert!(
            config.contains(&format!("- published: {port}\n      target: {port}\n")),
            "compose.yaml does not publish {port}:\n{config}"
        );
    }

    // The offline image build (it also proves the binary runs in FROM scratch).
    let built = ok(Command::new("sh")
        .arg(repo().join("deploy/build-image.sh"))
        .arg("--binary")
        .arg(&coordinator)
        .args(["--tag", &image]));
    assert_eq!(built.trim(), image);

    ok(project.compose().args(["up", "-d"]));
    let id = project.wait_healthy();
    let logs = project.logs();
    assert!(
        logs.contains("running init") && logs.contains("CA fingerprint (SHA-256)"),
        "first start runs init:\n{logs}"
    );
    let body = ureq::get(&format!("http://127.0.0.1:{http}/healthz"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert_eq!(body.trim(), "ok");

    // What compose.yaml asks for is what Docker runs.
    let inspect: Value =
        serde_json::from_str(&ok(Command::new("docker").args(["inspect", &id]))).unwrap();
    let c = &inspect[0];
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    assert_eq!(c["HostConfig"]["Memory"], 512 * 1024 * 1024);
    assert_eq!(c["HostConfig"]["NanoCpus"], 1_000_000_000u64);
    assert_eq!(c["HostConfig"]["PidsLimit"], 512);
    assert_eq!(c["HostConfig"]["ReadonlyRootfs"], true);
    assert_eq!(
        c["Config"]["User"], "10001:10001",
        "not root in the container"
    );
    let env: Vec<&str> = c["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !env.iter()
            .any(|e| e.starts_with("AUTOGIT_GITLAB__") && e.contains('=')),
        "unset pass-through variables stay unset: {env:?}"
    );
    let volume = c["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/var/lib/autogit")
        .expect("data volume");
    assert_eq!(volume["Type"], "volume");
    let volume_name = volume["Name"].as_str().unwrap().to_string();

    // Enroll a real agent from outside through the published gRPC port.
    let token = project
        .exec(&id, &["token", "create"])
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(!token.is_empty());
    let mut agent = Agent::new("").unwrap();
    let agent_id = agent.join_ok(&format!("127.0.0.1:{grpc}"), &token).unwrap();
    agent.start().unwrap();
    let ready = |project: &Project, id: &str| {
        wait_for(
            Duration::from_secs(30),
            "agent ready in `agents list`",
            || {
                let list: Vec<Value> = serde_json::from_str(
                    &project.exec(id, &["agents", "list", "--output", "json"]),
                )
                .ok()?;
                list.into_iter()
                    .find(|a| a["id"] == agent_id.as_str() && a["state"] == "ready")
            },
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e}\ncoordinator:\n{}\nagent:\n{}",
                project.logs(),
                agent.logs()
            )
        })
    };
    let seen = ready(&project, &id);
    assert_eq!(seen["arch"], std::env::consts::ARCH);

    // A new container on the same volume keeps the CA: no second init, and
    // the enrolled agent's certificate is still accepted when it reconnects.
    ok(project.compose().args(["down", "--timeout", "5"]));
    ok(project.compose().args(["up", "-d"]));
    let id2 = project.wait_healthy();
    assert_ne!(id, id2, "a new container");
    assert!(
        !project.logs().contains("running init"),
        "init ran again on a data volume with a CA:\n{}",
        project.logs()
    );
    wait_for(Duration::from_secs(30), "the agent to reconnect", || {
        (agent.logs().matches("session established").count() >= 2).then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nagent:\n{}\ncoordinator:\n{}",
            agent.logs(),
            project.logs()
        )
    });
    ready(&project, &id2);

    // `down -v` removes the container and the data volume.
    agent.kill();
    ok(project.compose().args(["down", "-v", "--timeout", "5"]));
    let left = ok(Command::new("docker").args([
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("name={volume_name}"),
    ]));
    assert!(
        left.trim().is_empty(),
        "volume {volume_name} survived down -v"
    );
    let left = ok(Command::new("docker").args(["ps", "-aq", "--filter", &format!("id={id2}")]));
    assert!(left.trim().is_empty(), "container survived down -v");
}

/// `deploy/`, for the tests that only run `docker-compose config`; `None`
/// (skipped, said on stderr) without docker-compose, unless
/// `AUTOGIT_REQUIRE_DOCKER` makes that a failure.
fn compose_only() -> Option<PathBuf> {
    if !has("docker-compose") {
        assert!(
            std::env::var_os("AUTOGIT_REQUIRE_DOCKER").is_none(),
            "AUTOGIT_REQUIRE_DOCKER is set but docker-compose is missing"
        );
        skipped("SKIPPED: needs docker-compose".into());
        return None;
    }
    Some(repo().join("deploy"))
}

/// The Traefik overlay composes with the shipped file, and the coordinator
/// trusts exactly the address Traefik gets (`docs/operations.md`, "Behind a
/// reverse proxy"). Only `docker-compose config`: no Traefik image offline.
#[test]
fn the_traefik_overlay_composes_and_trusts_only_traefiks_address() {
    let Some(deploy) = compose_only() else {
        return;
    };
    let config = ok(Command::new("docker-compose")
        .current_dir(&deploy)
        .env_remove("TRAEFIK_IP")
        .args(["-f", "compose.yaml", "-f", "compose.traefik.yaml", "config"]));
    for line in [
        "ipv4_address: 172.30.0.2",
        "AUTOGIT_PROXY__TRUSTED: '[\"172.30.0.2\"]'",
        "AUTOGIT_PROXY__USER_HEADER: Remote-User",
        "forwardauth.authResponseHeaders: Remote-User,Remote-Groups",
    ] {
        assert!(config.contains(line), "{line:?} missing from:\n{config}");
    }
}

/// `deploy/compose.ha.yaml` composes: PostgreSQL and two coordinators on
/// one database and one CA volume, the second started after the first has
/// made the CA; without a database password it refuses to compose. Only
/// `docker-compose config`: no PostgreSQL image offline (`tests/tests/ha.rs`
/// runs the replicas themselves against a real PostgreSQL).
#[test]
fn the_ha_compose_file_runs_two_replicas_on_one_database_and_needs_a_password() {
    let Some(deploy) = compose_only() else {
        return;
    };
    let config = ok(Command::new("docker-compose")
        .current_dir(&deploy)
        .env("AUTOGIT_DB_PASSWORD", "s3cret")
        .args(["-f", "compose.ha.yaml", "config"]));
    // A service's block: from its name to the next key at its indent.
    let service = |name: &str| -> String {
        let start = config
            .find(&format!("\n  {name}:\n"))
            .unwrap_or_else(|| panic!("{name} missing from:\n{config}"))
            + 1;
        let rest = &config[start..];
        let end = rest
            .match_indices("\n  ")
            .map(|(i, _)| i)
            .find(|&i| !rest[i + 3..].starts_with(' '))
            .unwrap_or(rest.len());
        rest[..end].to_string()
    };
    for name in ["coordinator-a", "coordinator-b"] {
        let s = service(name);
        for line in [
            "AUTOGIT_DATABASE__URL: postgres://autogit:s3cret@postgres:5432/autogit",
            "coordinator-data:/var/lib/autogit",
            "restart: unless-stopped",
            "condition: service_healthy",
        ] {
            assert!(s.contains(line), "{name}: {line:?} missing from:\n{s}");
        }
    }
    assert!(service("coordinator-a").contains("published: 7443"));
    assert!(
        service("coordinator-b").contains("published: 7444"),
        "each replica has its own ports"
    );
    assert!(
        service("coordinator-b").contains("coordinator-a:\n        condition: service_healthy"),
        "b starts once a has made the CA:\n{}",
        service("coordinator-b")
    );
    let refused = Command::new("docker-compose")
        .current_dir(&deploy)
        .env_remove("AUTOGIT_DB_PASSWORD")
        .args(["-f", "compose.ha.yaml", "config"])
        .output()
        .expect("run docker-compose");
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("set AUTOGIT_DB_PASSWORD"),
        "{}",
        text(&refused)
    );
}
