//! What `gitlab-runner`'s docker executor does on the host, reduced to what
//! AutoGit must clean up: for each job it creates, through the Docker socket,
//! a labelled cache volume and a labelled build container (from
//! `--docker-image`, running `sleep` with no network), removes the container
//! at a normal job end and keeps the cache volume unless
//! `--docker-disable-cache` was given. It pulls the job image and the helper
//! image first, per `--docker-pull-policy` (the helper is pulled, not run). A SIGKILLed runner leaves both, the
//! container still running.
//!
//! Labels and names follow gitlab-runner's `executors/docker/internal/labels`
//! and `helpers/shorten_token.go` (the 18.2+ short-token rule). The Docker
//! Engine API is spoken as plain HTTP/1.0 over the unix socket (no chunked
//! answers), without a client library.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

/// gitlab-runner's `helpers.ShortenToken` for runner tokens (18.2+): strip
/// `glrt-` and a `t1_`/`t2_`/`t3_` partition prefix, keep 9 characters.
pub fn short_token(token: &str) -> String {
    let rest = token.strip_prefix("glrt-").unwrap_or(token);
    let rest = ["t1_", "t2_", "t3_"]
        .iter()
        .find_map(|p| rest.strip_prefix(p))
        .unwrap_or(rest);
    rest.chars().take(9).collect()
}

/// Whether to act like the docker executor: as a runner container's main
/// process (PID 1: the image's entrypoint) with a Docker socket mounted, i.e.
/// in a runner container of a pool that mounts the socket. Run as an ordinary
/// process (the simulator's own tests), the runner keeps running jobs itself.
pub fn available() -> bool {
    std::process::id() == 1 && socket().exists()
}

/// The Docker socket the executor would use: `DOCKER_HOST` (unix://) or
/// `/var/run/docker.sock`.
pub fn socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// One Engine API call; returns the status and the body.
fn call(
    sock: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    let mut s =
        UnixStream::connect(sock).map_err(|e| format!("connect {}: {e}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{method} {path}: no HTTP status in the answer"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn ok(res: Result<(u16, String), String>, what: &str) -> Result<String, String> {
    match res? {
        (s, body) if (200..300).contains(&s) => Ok(body),
        (s, body) => Err(format!("{what}: HTTP {s}: {}", body.trim())),
    }
}

/// gitlab-runner's `--docker-pull-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull before every job (gitlab-runner's default).
    #[default]
    Always,
    /// Pull only when the engine lacks the image.
    IfNotPresent,
    /// Never pull; a missing image fails the job.
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "if-not-present" => Ok(Self::IfNotPresent),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "--docker-pull-policy {other:?}: expected always, if-not-present or never"
            )),
        }
    }
}

/// The images a job needs and how to get them.
pub struct Images<'a> {
    /// The job's image (`--docker-image`).
    pub build: &'a str,
    /// The helper image (`--docker-helper-image`); pulled, not run.
    pub helper: Option<&'a str>,
    pub pull_policy: PullPolicy,
}

/// Make sure the engine has `image`, pulling it per `policy`. A pull's
/// errors come in its 200 answer's JSON lines (`{"error": ...}`).
fn ensure_image(sock: &Path, image: &str, policy: PullPolicy) -> Result<(), String> {
    let present =
        || call(sock, "GET", &format!("/images/{image}/json"), None).map(|(s, _)| s == 200);
    match policy {
        PullPolicy::IfNotPresent if present()? => return Ok(()),
        PullPolicy::Never if present()? => return Ok(()),
        PullPolicy::Never => {
            return Err(format!(
                "image {image} is not present and the pull policy is never"
            ));
        }
        _ => {}
    }
    let body = ok(
        call(
            sock,
            "POST",
            &format!("/images/create?fromImage={image}"),
            None,
        ),
        &format!("pull image {image}"),
    )?;
    for line in body.lines() {
        if let Some(err) = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        {
            return Err(format!("pull image {image}: {err}"));
        }
    }
    Ok(())
}

/// What one job created on the host.
pub struct JobObjects {
    sock: PathBuf,
    container: String,
    volume: String,
}

/// Creates the job's cache volume and build container and starts it.
pub fn start_job(
    images: &Images<'_>,
    token: &str,
    system_id: &str,
    job_id: u64,
    project_id: u64,
) -> Result<JobObjects, String> {
    let sock = socket();
    let image = images.build;
    // Images first, as the executor does: nothing is created when one fails.
    if let Some(helper) = images.helper {
        ensure_image(&sock, helper, images.pull_policy)?;
    }
    ensure_image(&sock, image, images.pull_policy)?;
    let short = short_token(token);
    let labels = |kind: &str| {
        json!({
            "com.gitlab.gitlab-runner.managed": "true",
            "com.gitlab.gitlab-runner.type": kind,
            "com.gitlab.gitlab-runner.runner.id": short,
            "com.gitlab.gitlab-runner.runner.local_id": "0",
            "com.gitlab.gitlab-runner.runner.system_id": system_id,
            "com.gitlab.gitlab-runner.job.id": job_id.to_string(),
            "com.gitlab.gitlab-runner.project.id": project_id.to_string(),
        })
    };
    let base = format!("runner-{short}-project-{project_id}-concurrent-0");
    let volume = format!("{base}-cache-{job_id:08x}");
    ok(
        call(
            &sock,
            "POST",
            "/volumes/create",
            Some(&json!({ "Name": volume, "Labels": labels("cache") })),
        ),
        "create cache volume",
    )?;
    let body = json!({
        "Image": image,
        "Entrypoint": ["/bin/sleep"],
        "Cmd": ["3600"],
        "Labels": labels("build"),
        "HostConfig": {
            "NetworkMode": "none",
            "Mounts": [{ "Type": "volume", "Source": volume, "Target": "/cache" }],
        },
    });
    let create = || -> Result<String, String> {
        let created = ok(
            call(
                &sock,
                "POST",
                &format!("/containers/create?name={base}-{job_id:08x}-build"),
                Some(&body),
            ),
            "create build container",
        )?;
        serde_json::from_str::<Value>(&created)
            .ok()
            .and_then(|v| v.get("Id").and_then(Value::as_str).map(str::to_owned))
            .ok_or_else(|| format!("create build container: no Id in {created}"))
    };
    let container = match create() {
        Ok(c) => c,
        Err(e) => {
            // Like the executor's cleanup after a failed preparation.
            let _ = call(&sock, "DELETE", &format!("/volumes/{volume}"), None);
            return Err(e);
        }
    };
    let objects = JobObjects {
        sock,
        container,
        volume,
    };
    if let Err(e) = ok(
        call(
            &objects.sock,
            "POST",
            &format!("/containers/{}/start", objects.container),
            None,
        ),
        "start build container",
    ) {
        let _ = objects.finish(true);
        return Err(e);
    }
    Ok(objects)
}

impl JobObjects {
    /// A normal job end: the build container goes; the cache volume stays
    /// unless the cache is disabled.
    pub fn finish(self, disable_cache: bool) -> Result<(), String> {
        ok(
            call(
                &self.sock,
                "DELETE",
                &format!("/containers/{}?force=1&v=1", self.container),
                None,
            ),
            "remove build container",
        )?;
        if disable_cache {
            ok(
                call(
                    &self.sock,
                    "DELETE",
                    &format!("/volumes/{}", self.volume),
                    None,
                ),
                "remove cache volume",
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_takes_gitlab_runners_values_and_defaults_to_always() {
        assert_eq!(PullPolicy::default(), PullPolicy::Always);
        assert_eq!("always".parse(), Ok(PullPolicy::Always));
        assert_eq!("if-not-present".parse(), Ok(PullPolicy::IfNotPresent));
        assert_eq!("never".parse(), Ok(PullPolicy::Never));
        let e = "sometimes".parse::<PullPolicy>().unwrap_err();
        assert!(
            e.contains("sometimes") && e.contains("if-not-present"),
            "{e}"
        );
    }

    #[test]
    fn short_token_follows_gitlab_runner() {
        assert_eq!(short_token("glrt-t9Wkyj-HGRkqQ-VWTGAr"), "t9Wkyj-HG");
        assert_eq!(short_token("glrt-t1_t9Wkyj-HGRkqQ-VWTGAr"), "t9Wkyj-HG");
        assert_eq!(short_token("glrt-abc"), "abc");
    }
}
