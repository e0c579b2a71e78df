//! `cargo xtask test`: install missing Debian packages from
//! `xtask/debian-packages.txt` (as root; otherwise say how), install the
//! SSO tests' npm packages (`tests/oidc`, `npm ci`), build every
//! binary, make sure a Docker engine answers (starting a private `dockerd`
//! without a bridge network when none runs and we are root), run the whole
//! workspace's tests, stop what we started.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{cargo, root};

/// A dockerd we started; stopped on drop.
pub struct Dockerd {
    child: Child,
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn docker_answers(socket: &Path) -> bool {
    // `docker version` talks to the socket and fails fast when nothing answers.
    Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The socket of a working Docker engine, and the daemon if we had to start one.
pub fn ensure_docker() -> anyhow::Result<(PathBuf, Option<Dockerd>)> {
    if let Some(h) = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        && docker_answers(&h)
    {
        return Ok((h, None));
    }
    let default = PathBuf::from("/var/run/docker.sock");
    if docker_answers(&default) {
        return Ok((default, None));
    }
    if Command::new("dockerd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        bail!(
            "the tests need a Docker engine and none answers; install one (Debian: `apt-get install docker.io`)"
        );
    }
    if !nix_is_root() {
        bail!("no Docker engine answers and starting one needs root; start dockerd or run as root");
    }
    let base = std::env::temp_dir().join("autogit-xtask-docker");
    std::fs::create_dir_all(&base)?;
    let socket = base.join("docker.sock");
    let log = std::fs::File::create(base.join("dockerd.log"))?;
    eprintln!(
        "xtask: starting a private dockerd (no bridge network) at {}",
        socket.display()
    );
    let child = Command::new("dockerd")
        .args([
            "--bridge=none",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
        ])
        .arg(format!("--data-root={}", base.join("root").display()))
        .arg(format!("--exec-root={}", base.join("exec").display()))
        .arg(format!("--pidfile={}", base.join("dockerd.pid").display()))
        .arg(format!("--host=unix://{}", socket.display()))
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .context("start dockerd")?;
    let d = Dockerd { child };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !docker_answers(&socket) {
        if Instant::now() > deadline {
            bail!(
                "dockerd did not answer within 60 s; see {}",
                base.join("dockerd.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok((socket, Some(d)))
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// `npm ci` in `tests/oidc` (the OpenID provider and the browser driver of
/// `tests/tests/oidc.rs`) unless `node_modules` is already newer than the
/// lock file. Needs Node.js 20 and npm, which the machine has.
fn ensure_oidc_packages() -> anyhow::Result<()> {
    let dir = root().join("tests/oidc");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(lock), Some(installed)) = (
        modified(&dir.join("package-lock.json")),
        modified(&dir.join("node_modules/.package-lock.json")),
    ) && installed >= lock
    {
        return Ok(());
    }
    eprintln!("xtask: npm ci in tests/oidc (the SSO tests' OpenID provider and browser driver)");
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .status()
        .context("run npm: the SSO tests need Node.js 20 and npm")?;
    if !status.success() {
        bail!("`npm ci` in tests/oidc failed ({status})");
    }
    Ok(())
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    crate::packages::ensure("tests")?;
    ensure_oidc_packages()?;
    let mut build = cargo();
    build.args(["build", "--workspace", "--bins"]);
    crate::run(build)?;
    let (socket, _dockerd) = ensure_docker()?;
    let mut t = cargo();
    t.args(["test", "--workspace", "--no-fail-fast"]).args(args);
    t.env("DOCKER_HOST", format!("unix://{}", socket.display()));
    t.env("AUTOGIT_BIN_DIR", root().join("target/debug"));
    // Docker-backed tests must fail, not skip, when run through this command.
    t.env("AUTOGIT_REQUIRE_DOCKER", "1");
    // And the SSO tests, when their npm packages or Chromium are missing.
    t.env("AUTOGIT_REQUIRE_OIDC", "1");
    // And the database tests' PostgreSQL half (tests/src/postgres.rs).
    t.env("AUTOGIT_REQUIRE_POSTGRES", "1");
    crate::run(t)
}
