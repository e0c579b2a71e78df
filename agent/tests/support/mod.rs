//! Helpers for tests against the real Docker daemon: a local busybox image
//! built without a registry, a connected engine, a cleanup guard that removes
//! a test's containers even when the test fails, and bounded event waits.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use autogit_agent::docker::{DockerEngine, RunnerEvent, RunnerId, RunnerState};
use tokio::sync::mpsc;

pub mod fake_engine;

/// A tiny local image: Debian's static busybox as `/bin/busybox` plus applet links.
pub const BUSYBOX_IMAGE: &str = "autogit-test/busybox:dev";

/// How long any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// Connect to the daemon the tests use (`DOCKER_HOST` or the default socket).
pub async fn engine() -> DockerEngine {
    DockerEngine::connect(None)
        .await
        .expect("connect to the Docker daemon")
}

/// Build [`BUSYBOX_IMAGE`] once per test binary (and only if it is missing).
pub fn ensure_busybox_image() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = BUILT.get_or_init(build_busybox_image) {
        panic!("build {BUSYBOX_IMAGE}: {e}");
    }
}

fn build_busybox_image() -> Result<(), String> {
    let present = Command::new("docker")
        .args(["image", "inspect", BUSYBOX_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("run docker: {e}"))?
        .success();
    if present {
        return Ok(());
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        let ok = Command::new("apt-get")
            .args(["install", "-y", "busybox-static"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("run apt-get: {e}"))?
            .success();
        if !ok || !busybox.exists() {
            return Err("/bin/busybox missing and `apt-get install busybox-static` failed".into());
        }
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().join("root");
    for d in ["bin", "tmp", "etc", "proc", "sys", "dev", "out"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    std::fs::copy(busybox, root.join("bin/busybox")).map_err(|e| format!("copy busybox: {e}"))?;
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("busybox --list: {e}"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
            .map_err(|e| format!("link {applet}: {e}"))?;
    }
    let script = format!(
        "tar -C '{}' -c . | docker import - {BUSYBOX_IMAGE}",
        root.display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .map_err(|e| format!("run tar | docker import: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A unique scope per test, so concurrent tests never adopt each other's containers.
pub fn unique_scope(test: &str) -> String {
    format!(
        "test-{test}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Removes every container carrying `autogit.scope=<scope>` when dropped,
/// so a failing test leaves nothing behind.
pub struct Cleanup {
    scope: String,
}

impl Cleanup {
    pub fn new(scope: &str) -> Self {
        Self {
            scope: scope.to_owned(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let script = format!(
            "docker ps -aq --filter label=autogit.scope={} | xargs -r docker rm -f >/dev/null",
            self.scope
        );
        let _ = Command::new("sh").args(["-c", &script]).status();
    }
}

/// The next event, or a panic after [`WAIT`].
pub async fn next_event(rx: &mut mpsc::Receiver<RunnerEvent>) -> RunnerEvent {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("event channel closed"),
        Err(_) => panic!("no runner event within {WAIT:?}"),
    }
}

/// Events of one runner up to and including `Removed` (bounded by [`WAIT`] each).
pub async fn events_until_removed(
    rx: &mut mpsc::Receiver<RunnerEvent>,
    runner: RunnerId,
) -> Vec<RunnerEvent> {
    let mut out = Vec::new();
    for _ in 0..64 {
        let ev = next_event(rx).await;
        if ev.runner_id != runner {
            continue;
        }
        let done = ev.state == RunnerState::Removed;
        out.push(ev);
        if done {
            return out;
        }
    }
    panic!("no Removed among 64 events: {out:?}");
}

/// Wait for the runner's event matching `pred`, returning it and everything before it.
pub async fn events_until(
    rx: &mut mpsc::Receiver<RunnerEvent>,
    runner: RunnerId,
    pred: impl Fn(&RunnerState) -> bool,
) -> Vec<RunnerEvent> {
    let mut out = Vec::new();
    for _ in 0..64 {
        let ev = next_event(rx).await;
        if ev.runner_id != runner {
            continue;
        }
        let done = pred(&ev.state);
        out.push(ev);
        if done {
            return out;
        }
    }
    panic!("no matching event among 64: {out:?}");
}

/// Just the states, for order assertions.
pub fn states(events: &[RunnerEvent]) -> Vec<RunnerState> {
    events.iter().map(|e| e.state.clone()).collect()
}

/// Poll until `path` exists (bounded by [`WAIT`]).
pub async fn wait_for_file(path: &Path) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
