//! A runner's lifecycle survives a real dockerd restart: a private dockerd
//! (its own data root, exec root and socket; never the shared daemon; with
//! `--live-restore`, so containers outlive it) is stopped while a runner
//! runs and a stop for it arrives, then started again. The agent must queue
//! the stop, wait Docker out, re-adopt the still-running container by label,
//! deliver the stop, and report `Removed` only once Docker confirms it is
//! gone.
//!
//! Needs root and `dockerd` (Debian's docker.io); skipped otherwise, unless
//! `AUTOGIT_REQUIRE_DOCKER` is set (then missing pieces fail the test).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autogit_agent::docker::{
    self, DockerEngine, RunnerId, RunnerSpec, RunnerState, StopOutcome, StopRequest,
    SupervisorConfig,
};
use support::{BUSYBOX_IMAGE, ensure_busybox_image, events_until, states};
use tokio::sync::mpsc;

/// A private dockerd, stopped (SIGTERM, then SIGKILL) on drop.
struct PrivateDockerd {
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateDockerd {
    fn socket(&self) -> PathBuf {
        self.dir.join("d.sock")
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .expect("dockerd log");
        let child = Command::new("dockerd")
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--shutdown-timeout=1",
                // Containers outlive the daemon, as on production hosts
                // that restart dockerd for upgrades.
                "--live-restore",
            ])
            .arg(format!("--data-root={}", self.dir.join("root").display()))
            .arg(format!("--exec-root={}", self.dir.join("x").display()))
            .arg(format!("--pidfile={}", self.dir.join("d.pid").display()))
            .arg(format!("--host=unix://{}", self.socket().display()))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start dockerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "private dockerd did not answer within 60 s:\n{}",
                std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn answers(&self) -> bool {
        self.cli()
            .args(["version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn cli(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", format!("unix://{}", self.socket().display()));
        c
    }

    /// SIGTERM and wait (bounded), like `systemctl stop docker`.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Remove what the test created, then stop the daemon.
            let _ = Command::new("sh")
                .arg("-c")
                .arg("docker ps -aq | xargs -r docker rm -f")
                .env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        self.stop();
        // dockerd leaves its data root bind-mounted and a netns file
        // mounted; unmount them (deepest first) so the temp dir can go.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| Path::new(m).starts_with(&self.dir))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
}

fn can_run() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let dockerd = Command::new("dockerd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if root && dockerd {
        return true;
    }
    assert!(
        std::env::var_os("AUTOGIT_REQUIRE_DOCKER").is_none(),
        "a private dockerd needs root and dockerd (root: {root}, dockerd: {dockerd})"
    );
    eprintln!("SKIPPED: a private dockerd needs root and dockerd");
    false
}

/// Copy the test image from the test daemon into the private one.
fn load_image(d: &PrivateDockerd) {
    let mut save = Command::new("docker")
        .args(["save", BUSYBOX_IMAGE])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker save");
    let out = save.stdout.take().expect("save output");
    let ok = d
        .cli()
        .args(["load", "-q"])
        .stdin(Stdio::from(out))
        .stdout(Stdio::null())
        .status()
        .expect("docker load")
        .success();
    assert!(
        save.wait().expect("wait save").success() && ok,
        "copy {BUSYBOX_IMAGE}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_dockerd_restart_is_delivered_and_confirmed() {
    if !can_run() {
        return;
    }
    ensure_busybox_image();
    // A short path: the socket's path must fit a sockaddr_un.
    let tmp = tempfile::Builder::new()
        .prefix("ag-dr")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let mut d = PrivateDockerd {
        dir: tmp.path().to_owned(),
        child: None,
    };
    d.start();
    load_image(&d);

    let engine = DockerEngine::connect_socket(&d.socket())
        .await
        .expect("connect");
    let (tx, mut events) = mpsc::channel(64);
    let cfg = SupervisorConfig {
        scope: Some("dockerd-restart".into()),
        engine_retry_max: Duration::from_secs(1),
        abort_timeout: Duration::from_secs(1),
        leftover_gc_interval: Duration::ZERO,
        ..Default::default()
    };
    let sup = docker::spawn(Arc::new(engine.clone()), cfg, tx)
        .await
        .expect("spawn");
    let runner = RunnerId::new_v4();
    let mut spec = RunnerSpec::new(runner, "p", BUSYBOX_IMAGE);
    spec.command = vec!["/bin/sleep".into(), "300".into()];
    spec.network_mode = Some("host".into());
    sup.start(spec).await.expect("start");
    events_until(&mut events, runner, |s| *s == RunnerState::Running).await;

    d.stop();
    let stop = StopRequest {
        runner_id: runner,
        graceful: false,
        grace_period: None,
    };
    let out = sup.stop(stop).await.expect("stop");
    assert_eq!(
        out,
        StopOutcome::Queued,
        "Docker is down: the stop waits for it"
    );
    // Several retries pass without any report.
    let quiet = tokio::time::timeout(Duration::from_secs(4), events.recv()).await;
    assert!(quiet.is_err(), "reported while Docker was down: {quiet:?}");

    d.start();
    let evs = events_until(&mut events, runner, |s| *s == RunnerState::Removed).await;
    let st = states(&evs);
    // SIGTERM after the restart; `sleep` as PID 1 ignores it, so the abort
    // timeout's SIGKILL ends it.
    assert!(matches!(st[0], RunnerState::Exited { .. }), "{st:?}");
    assert_eq!(st.last(), Some(&RunnerState::Removed));
    assert!(
        !st.iter().any(|s| matches!(s, RunnerState::Failed { .. })),
        "an asked-for stop is no failure: {st:?}"
    );
    let left = d
        .cli()
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=autogit.runner-id={runner}"),
        ])
        .output()
        .expect("ps");
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "the container is gone"
    );
    sup.shutdown().await;
}
