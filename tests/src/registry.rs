//! Image registries for tests, all on 127.0.0.1.
//!
//! * [`Registry`]: a real OCI registry, Debian's `docker-registry` package
//!   (CNCF distribution 2.8), serving a temporary directory on a free
//!   loopback port, optionally behind htpasswd (bcrypt) basic auth. It is
//!   killed when dropped. [`Registry::push`] pushes a local image to it
//!   through the test Docker engine (`DOCKER_HOST`) and then removes the
//!   local tag, so the engine must pull it back. dockerd treats
//!   `127.0.0.0/8` registries as insecure (plain HTTP) by default.
//! * [`FailingRegistry`]: a loopback HTTP server that answers every request
//!   with 500, a registry that is up but broken.
//! * [`unreachable_registry`]: a loopback port that nothing listens on.
//!
//! Pulls are counted from the registry's access log
//! ([`Registry::manifest_requests`]): every pull asks for the manifest.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::harness::wait_for;

/// The registry binary of Debian's `docker-registry` package.
pub const REGISTRY_BIN: &str = "docker-registry";

/// A loopback `host:port` with nothing listening: pulls from it are refused.
pub fn unreachable_registry() -> anyhow::Result<String> {
    Ok(format!(
        "127.0.0.1:{}",
        crate::harness::free_port("127.0.0.1")
    ))
}

/// Basic-auth credentials of a test registry.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A running `docker-registry serve`; killed on drop.
pub struct Registry {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
    auth: Option<Credentials>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// A registry without authentication.
    pub fn start() -> anyhow::Result<Self> {
        Self::spawn(None)
    }

    /// A registry that wants `username` / `password` (htpasswd, bcrypt) for
    /// every request.
    pub fn start_with_auth(username: &str, password: &str) -> anyhow::Result<Self> {
        Self::spawn(Some(Credentials {
            username: username.into(),
            password: password.into(),
        }))
    }

    fn spawn(auth: Option<Credentials>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("create the registry's directory")?;
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage)?;
        let port = crate::harness::free_port("127.0.0.1");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let auth_section = match &auth {
            Some(c) => {
                // Cost 4 (bcrypt's least): the registry checks it per request.
                let hash = bcrypt::hash(&c.password, 4).context("bcrypt the test password")?;
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{}:{hash}\n", c.username))?;
                format!(
                    "auth:\n  htpasswd:\n    realm: autogit-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            None => String::new(),
        };
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n\
                 {auth_section}",
                storage.display()
            ),
        )?;
        let log = dir.path().join("registry.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .with_context(|| {
                format!(
                    "start {REGISTRY_BIN} (Debian package docker-registry; `cargo xtask test` installs it)"
                )
            })?;
        let mut reg = Registry {
            child: Some(child),
            addr,
            log,
            auth,
            dir,
        };
        // Ready when /v2/ answers at all (200, or 401 behind auth).
        let url = format!("http://{addr}/v2/");
        let ready = wait_for(Duration::from_secs(20), "the registry to answer", || {
            if let Some(c) = reg.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Some(Err(anyhow::anyhow!("{REGISTRY_BIN} exited: {status}")));
            }
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(2)))
                .build()
                .new_agent();
            let status = agent.get(&url).call().ok()?.status().as_u16();
            matches!(status, 200 | 401).then_some(Ok(()))
        });
        match ready {
            Ok(Ok(())) => Ok(reg),
            Ok(Err(e)) | Err(e) => Err(e.context(format!("registry log:\n{}", reg.logs()))),
        }
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `127.0.0.1:PORT/<repo_tag>`.
    pub fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host())
    }

    /// The registry's log (access log and its own lines).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times the manifests of `repo` were asked for (GET or HEAD):
    /// a pull asks at least once, a push at least once.
    pub fn manifest_requests(&self, repo: &str) -> usize {
        let needle = format!("/v2/{repo}/manifests/");
        self.logs()
            .lines()
            .filter(|l| l.contains(&needle))
            .filter(|l| l.contains("\"GET ") || l.contains("\"HEAD "))
            .count()
    }

    /// Push the local image `local` to `<this registry>/<repo_tag>`, then
    /// remove that local tag (the image itself stays under `local`), so
    /// the Docker engine has to pull `<registry>/<repo_tag>` to use it.
    /// With auth, logs in with a throw-away `DOCKER_CONFIG`, so no
    /// credentials are stored for the user. Returns the full reference.
    pub fn push(&self, local: &str, repo_tag: &str) -> anyhow::Result<String> {
        let target = self.image(repo_tag);
        let docker_config = self.dir.path().join("docker-config");
        std::fs::create_dir_all(&docker_config)?;
        let docker = |args: &[&str], stdin: Option<&str>| -> anyhow::Result<()> {
            let mut cmd = Command::new("docker");
            cmd.env("DOCKER_CONFIG", &docker_config)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                });
            let mut child = cmd.spawn().with_context(|| format!("docker {args:?}"))?;
            if let Some(input) = stdin {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .context("docker stdin")?
                    .write_all(input.as_bytes())?;
            }
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!(
                    "docker {}: {}",
                    args.first().unwrap_or(&""),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        };
        docker(&["tag", local, &target], None)?;
        if let Some(c) = &self.auth {
            docker(
                &[
                    "login",
                    &self.host(),
                    "--username",
                    &c.username,
                    "--password-stdin",
                ],
                Some(&c.password),
            )?;
        }
        let pushed = docker(&["push", &target], None);
        let untagged = remove_local_image(&target);
        pushed.with_context(|| format!("registry log:\n{}", self.logs()))?;
        untagged?;
        Ok(target)
    }

    /// The registry's temporary directory: `config.yml`, `storage/`,
    /// `registry.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `docker rmi REF` (only the tag when other tags share the image); Ok if
/// there was no such image.
pub fn remove_local_image(reference: &str) -> anyhow::Result<()> {
    let out = Command::new("docker")
        .args(["rmi", reference])
        .output()
        .context("docker rmi")?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || err.contains("No such image") {
        Ok(())
    } else {
        bail!("docker rmi {reference}: {}", err.trim())
    }
}

/// True when the Docker engine has an image by this reference.
pub fn local_image_exists(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A loopback HTTP server that answers every request with 500 Internal
/// Server Error: a registry that is up but broken. Stops on drop.
pub struct FailingRegistry {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FailingRegistry {
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = axum::Router::new().fallback(move || {
                    let counter = Arc::clone(&counter);
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            "registry broken on purpose (test)\n",
                        )
                    }
                });
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        Ok(FailingRegistry {
            addr,
            requests,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Requests answered so far (all with 500).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FailingRegistry {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
