//! A private Docker engine a scenario may restart (the shared one is never
//! touched): its own data root, exec root and socket, no bridge network, and
//! `--live-restore` so containers outlive a daemon restart the way they do on
//! a well-run build host.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub struct PrivateDockerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateDockerd {
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("agd").tempdir_in("/tmp")?;
        let mut d = PrivateDockerd { dir, child: None };
        d.spawn()?;
        Ok(d)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("d.sock")
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let p = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p.join("dockerd.log"))?;
        let child = Command::new("dockerd")
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--live-restore",
            ])
            .arg(format!("--data-root={}", p.join("root").display()))
            .arg(format!("--exec-root={}", p.join("exec").display()))
            .arg(format!("--pidfile={}", p.join("dockerd.pid").display()))
            .arg(format!("--host={}", self.host()))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("start a private dockerd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.answers() {
            if Instant::now() > deadline {
                bail!("the private dockerd did not answer within 60 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    pub fn answers(&self) -> bool {
        Command::new("docker")
            .args(["-H", &self.host(), "version", "--format", "{{.Server.APIVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// SIGTERM the daemon and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop, stay down for `down`, start again.
    pub fn restart(&mut self, down: Duration) -> anyhow::Result<()> {
        self.stop();
        std::thread::sleep(down);
        self.spawn()
    }

    /// Copy `image` from the shared engine into this one.
    pub fn load_image(&self, image: &str) -> anyhow::Result<()> {
        let save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()?;
        let status = Command::new("docker")
            .args(["-H", &self.host(), "load", "-q"])
            .stdin(save.stdout.context("docker save stdout")?)
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("docker load of {image} into the private dockerd failed");
        }
        Ok(())
    }

    /// Containers on this engine with `label`.
    pub fn containers(&self, label: &str) -> Vec<String> {
        Command::new("docker")
            .args(["-H", &self.host(), "ps", "-a", "-q", "--filter", &format!("label={label}")])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Remove every container with `label` (cleanup after counting).
    pub fn remove(&self, label: &str) {
        let ids = self.containers(label);
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["-H", &self.host(), "rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        self.stop();
        // Mounts under the data root (overlay, shm) must go before the dir.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.path().display()
            ))
            .status();
    }
}
