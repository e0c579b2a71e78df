//! `autogit-test-runner`: a stand-in for `gitlab-runner run-single` in tests.
//!
//! It speaks the runner side of GitLab's runner API against any GitLab (in tests, the
//! simulator) and accepts the official command line:
//!
//! ```text
//! autogit-test-runner run-single --url URL --token TOKEN [--executor X] [--docker-image Y]
//!                     [--max-builds N] [--wait-timeout SECONDS] [other official flags...]
//! ```
//!
//! with `CI_SERVER_URL`, `CI_SERVER_TOKEN`, `RUNNER_EXECUTOR` and `DOCKER_IMAGE` as
//! environment equivalents (a flag wins over its variable). AutoGit's runner
//! containers get the URL and token only from the environment. Other `--flags` of the official runner are accepted and
//! ignored. It verifies its token (`POST /runners/verify` with a `system_id`), polls
//! `POST /jobs/request` every 150 ms, and for each job: reports `running`, sleeps for the
//! job variable `AUTOGIT_SIM_DURATION_MS` (default 0), appends a log line through
//! `PATCH /jobs/:id/trace`, and reports `success`.
//!
//! With `--executor docker` (or `RUNNER_EXECUTOR=docker`), when it runs in a
//! container with a Docker socket mounted, it mimics the docker executor's
//! footprint on the host through that socket (see
//! `test_runner/docker_executor.rs`): a labelled build container from
//! `--docker-image` (`DOCKER_IMAGE`) and a labelled cache volume per job; the
//! container is removed at a normal job end, the volume kept unless
//! `--docker-disable-cache` (`DOCKER_DISABLE_CACHE=true`). Like the real
//! executor it pulls the job image and the `--docker-helper-image`
//! (`DOCKER_HELPER_IMAGE`) first, per `--docker-pull-policy`
//! (`DOCKER_PULL_POLICY`: `always`, the default, `if-not-present`, `never`).
//!
//! Exit: 0 after `--max-builds` jobs (0 = no limit) or when `--wait-timeout` seconds pass
//! without a job (0 = wait forever); 1 when the token is rejected or GitLab cannot be
//! reached. Signals, like the official runner: SIGQUIT finishes the running job and
//! exits 0; SIGTERM/SIGINT abort the job (reported `failed`) and exit 143/130.
//! Tokens never appear in the output.

#![forbid(unsafe_code)]

#[path = "test_runner/docker_executor.rs"]
mod docker_executor;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use serde_json::{Value, json};

const VERSION: &str = "18.2.0-autogit-test";
const POLL_INTERVAL: Duration = Duration::from_millis(150);
/// Longest `Retry-After` the runner honours before trying again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Options of `run-single` that this runner acts on.
struct Opts {
    url: String,
    token: String,
    executor: String,
    docker_image: Option<String>,
    docker_helper_image: Option<String>,
    docker_pull_policy: docker_executor::PullPolicy,
    disable_cache: bool,
    max_builds: u64,
    wait_timeout: Duration,
}

fn log(msg: &str) {
    println!("autogit-test-runner: {msg}");
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut it = args.iter().peekable();
    // `docker run IMAGE gitlab-runner run-single ...` style: skip a leading program name.
    if it.peek().is_some_and(|a| a.as_str() == "gitlab-runner") {
        it.next();
    }
    match it.next().map(String::as_str) {
        Some("run-single") => {}
        Some("--version") | Some("-v") => return Err("version".into()),
        Some(other) => return Err(format!("unsupported command {other:?}; only run-single")),
        None => return Err("missing command; usage: run-single --url URL --token TOKEN".into()),
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut url = env("CI_SERVER_URL");
    let mut token = env("CI_SERVER_TOKEN");
    let mut executor = env("RUNNER_EXECUTOR").unwrap_or_else(|| "shell".into());
    let mut docker_image = env("DOCKER_IMAGE");
    let mut docker_helper_image = env("DOCKER_HELPER_IMAGE");
    let mut docker_pull_policy = env("DOCKER_PULL_POLICY");
    let mut disable_cache = env("DOCKER_DISABLE_CACHE").is_some_and(|v| v == "true" || v == "1");
    let mut max_builds = 0u64;
    let mut wait_timeout = 0u64;
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (flag, None),
        };
        let value = |it: &mut std::iter::Peekable<std::slice::Iter<'_, String>>| {
            inline
                .clone()
                .or_else(|| it.next_if(|v| !v.starts_with("--")).cloned())
        };
        match name {
            "url" | "u" => url = value(&mut it),
            "token" | "t" => token = value(&mut it),
            "executor" => executor = value(&mut it).unwrap_or(executor),
            "docker-image" => docker_image = value(&mut it),
            "docker-helper-image" => docker_helper_image = value(&mut it),
            "docker-pull-policy" => docker_pull_policy = value(&mut it),
            // A boolean flag: never takes the next argument.
            "docker-disable-cache" => {
                disable_cache = inline.as_deref().is_none_or(|v| v == "true" || v == "1")
            }
            "max-builds" => {
                max_builds = value(&mut it)
                    .ok_or("--max-builds needs a value")?
                    .parse()
                    .map_err(|_| "--max-builds must be a number")?
            }
            "wait-timeout" => {
                wait_timeout = value(&mut it)
                    .ok_or("--wait-timeout needs a value")?
                    .parse()
                    .map_err(|_| "--wait-timeout must be a number of seconds")?
            }
            // Accepted and ignored, like every other official flag.
            _ => {
                let _ = value(&mut it);
            }
        }
    }
    let url = url.ok_or("--url (or CI_SERVER_URL) is required")?;
    let token = token.ok_or("--token (or CI_SERVER_TOKEN) is required")?;
    let docker_pull_policy = match docker_pull_policy.as_deref() {
        None => docker_executor::PullPolicy::default(),
        Some(p) => p.parse()?,
    };
    Ok(Opts {
        url: url.trim_end_matches('/').to_owned(),
        token,
        executor,
        docker_image,
        docker_helper_image,
        docker_pull_policy,
        disable_cache,
        max_builds,
        wait_timeout: Duration::from_secs(wait_timeout),
    })
}

/// 0: no signal; otherwise the signal number received last that matters.
#[derive(Clone)]
struct Signals(Arc<AtomicI32>);

impl Signals {
    /// Blocks SIGQUIT/SIGTERM/SIGINT for this (and every later) thread and waits for
    /// them on a dedicated thread, so no unsafe signal handler is needed.
    fn install() -> Result<Self, String> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGQUIT);
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        set.thread_block()
            .map_err(|e| format!("block signals: {e}"))?;
        let flag = Arc::new(AtomicI32::new(0));
        let f = flag.clone();
        thread::spawn(move || {
            while let Ok(sig) = set.wait() {
                // An abort signal wins over a graceful one.
                let prev = f.load(Ordering::SeqCst);
                if prev == 0 || prev == Signal::SIGQUIT as i32 {
                    f.store(sig as i32, Ordering::SeqCst);
                }
                println!("autogit-test-runner: received {sig}");
            }
        });
        Ok(Signals(flag))
    }

    fn graceful(&self) -> bool {
        self.0.load(Ordering::SeqCst) == Signal::SIGQUIT as i32
    }

    fn abort(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            s if s == Signal::SIGTERM as i32 => Some(143),
            s if s == Signal::SIGINT as i32 => Some(130),
            _ => None,
        }
    }

    fn any(&self) -> bool {
        self.0.load(Ordering::SeqCst) != 0
    }
}

/// A runner identity like the official one: `s_` + machine id, or `r_` + random.
fn system_id() -> String {
    if let Ok(id) = std::env::var("AUTOGIT_TEST_RUNNER_SYSTEM_ID")
        && !id.is_empty()
    {
        return id;
    }
    if let Ok(mid) = std::fs::read_to_string("/etc/machine-id") {
        let mid: String = mid
            .trim()
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(12)
            .collect();
        if mid.len() == 12 {
            return format!("s_{mid}");
        }
    }
    let mut bytes = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        ^ u128::from(std::process::id());
    let hex: String = bytes
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{:02x}", b ^ (nanos >> (i * 8)) as u8))
        .collect();
    format!("r_{hex}")
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The HTTP answer, reduced to what the runner needs.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    fn new(base: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Client {
            agent,
            base: format!("{base}/api/v4"),
        }
    }

    fn answer(
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer, String> {
        let mut resp = resp.map_err(|e| format!("request failed: {e}"))?;
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    fn post_json(&self, path: &str, body: &Value) -> Result<Answer, String> {
        Self::answer(
            self.agent
                .post(&format!("{}{path}", self.base))
                .send_json(body),
        )
    }

    fn put_json(&self, path: &str, body: &Value) -> Result<Answer, String> {
        Self::answer(
            self.agent
                .put(&format!("{}{path}", self.base))
                .send_json(body),
        )
    }

    fn patch_trace(
        &self,
        job_id: u64,
        job_token: &str,
        offset: usize,
        data: &str,
    ) -> Result<Answer, String> {
        let end = (offset + data.len()).saturating_sub(1);
        Self::answer(
            self.agent
                .patch(&format!("{}/jobs/{job_id}/trace", self.base))
                .header("JOB-TOKEN", job_token)
                .header("Content-Type", "text/plain")
                .header("Content-Range", &format!("{offset}-{end}"))
                .send(data.as_bytes()),
        )
    }
}

/// Sleeps `d` in small steps; returns early (true) if `stop` says so.
fn sleep_unless(d: Duration, stop: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        if stop() {
            return true;
        }
        thread::sleep(Duration::from_millis(25).min(deadline - Instant::now()));
    }
    stop()
}

/// Retries `call` on connection errors, 429 and 5xx (bounded), honouring `Retry-After`.
fn with_retries(
    what: &str,
    signals: &Signals,
    mut call: impl FnMut() -> Result<Answer, String>,
) -> Result<Answer, String> {
    let mut last = String::new();
    for attempt in 0..8u32 {
        match call() {
            Ok(a) if a.status == 429 || a.status >= 500 => {
                let wait = a
                    .retry_after
                    .unwrap_or(Duration::from_millis(200 * u64::from(attempt + 1)))
                    .min(MAX_BACKOFF);
                log(&format!(
                    "{what}: HTTP {}, retrying in {:?}",
                    a.status, wait
                ));
                last = format!("HTTP {}", a.status);
                if sleep_unless(wait, || signals.abort().is_some()) {
                    break;
                }
            }
            Ok(a) => return Ok(a),
            Err(e) => {
                log(&format!("{what}: {e}"));
                last = e;
                if sleep_unless(Duration::from_millis(300), || signals.abort().is_some()) {
                    break;
                }
            }
        }
    }
    Err(format!("{what}: giving up after retries ({last})"))
}

enum JobEnd {
    Succeeded,
    /// Reported failed (the executor could not prepare the job).
    Failed,
    Aborted(i32),
    CanceledByServer,
}

/// How jobs run: in this process (shell) or with the docker executor's
/// objects on the host.
struct Executor<'a> {
    opts: &'a Opts,
    system_id: &'a str,
}

fn run_job(
    client: &Client,
    job: &Value,
    signals: &Signals,
    exec: &Executor<'_>,
) -> Result<JobEnd, String> {
    let id = job
        .get("id")
        .and_then(Value::as_u64)
        .ok_or("job payload without id")?;
    let job_token = job
        .get("token")
        .and_then(Value::as_str)
        .ok_or("job payload without token")?
        .to_owned();
    let name = job
        .pointer("/job_info/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let duration_ms = job
        .get("variables")
        .and_then(Value::as_array)
        .and_then(|vars| {
            vars.iter()
                .find(|v| v.get("key").and_then(Value::as_str) == Some("AUTOGIT_SIM_DURATION_MS"))
        })
        .and_then(|v| v.get("value").and_then(Value::as_str))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    log(&format!(
        "job {id} ({name}) received, running for {duration_ms} ms"
    ));
    let update = |state: &str, reason: Option<&str>| {
        let mut body = json!({ "token": job_token, "state": state });
        if let Some(r) = reason {
            body["failure_reason"] = json!(r);
        }
        with_retries("update job", signals, || {
            client.put_json(&format!("/jobs/{id}"), &body)
        })
    };
    if update("running", None)?.status == 403 {
        log(&format!(
            "job {id} is no longer running on GitLab; dropping it"
        ));
        return Ok(JobEnd::CanceledByServer);
    }
    let mut offset = 0usize;
    let mut trace = |text: &str| -> Result<(), String> {
        let a = with_retries("append trace", signals, || {
            client.patch_trace(id, &job_token, offset, text)
        })?;
        if a.status == 202 {
            offset += text.len();
        }
        Ok(())
    };
    trace(&format!(
        "Running with autogit-test-runner {VERSION}\n$ sleep {duration_ms}ms\n"
    ))?;
    let objects = if exec.opts.executor == "docker" && docker_executor::available() {
        let project_id = job
            .pointer("/job_info/project_id")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let image = exec.opts.docker_image.as_deref().unwrap_or("alpine:3.20");
        let images = docker_executor::Images {
            build: image,
            helper: exec.opts.docker_helper_image.as_deref(),
            pull_policy: exec.opts.docker_pull_policy,
        };
        match docker_executor::start_job(&images, &exec.opts.token, exec.system_id, id, project_id) {
            Ok(o) => {
                log(&format!(
                    "job {id}: build container and cache volume created"
                ));
                Some(o)
            }
            Err(e) => {
                log(&format!("job {id}: docker executor failed: {e}"));
                trace(&format!("ERROR: Preparation failed: {e}\n"))?;
                update("failed", Some("runner_system_failure"))?;
                return Ok(JobEnd::Failed);
            }
        }
    } else {
        None
    };
    let aborted = sleep_unless(Duration::from_millis(duration_ms), || {
        signals.abort().is_some()
    });
    if let Some(o) = objects {
        // The executor's cleanup runs on a normal end and on SIGTERM/SIGQUIT alike.
        if let Err(e) = o.finish(exec.opts.disable_cache) {
            log(&format!("job {id}: docker executor cleanup failed: {e}"));
        }
    }
    if aborted && let Some(code) = signals.abort() {
        trace("ERROR: Job aborted: the runner received a termination signal\n")?;
        update("failed", Some("runner_system_failure"))?;
        log(&format!("job {id} aborted and reported failed"));
        return Ok(JobEnd::Aborted(code));
    }
    trace("Job succeeded\n")?;
    let a = update("success", None)?;
    if a.status == 403 {
        log(&format!(
            "job {id} was canceled on GitLab before it finished"
        ));
        return Ok(JobEnd::CanceledByServer);
    }
    log(&format!("job {id} succeeded"));
    Ok(JobEnd::Succeeded)
}

fn run(opts: Opts, signals: &Signals) -> Result<ExitCode, String> {
    let client = Client::new(&opts.url);
    let system_id = system_id();
    log(&format!(
        "starting: url={} executor={} system_id={system_id} max_builds={} wait_timeout={}s",
        opts.url,
        opts.executor,
        opts.max_builds,
        opts.wait_timeout.as_secs()
    ));
    let verify = with_retries("verify runner", signals, || {
        client.post_json(
            "/runners/verify",
            &json!({ "token": opts.token, "system_id": system_id }),
        )
    })?;
    match verify.status {
        200 | 201 => log("runner token verified"),
        403 => {
            log("runner token rejected (403 Forbidden)");
            return Ok(ExitCode::from(1));
        }
        s => {
            log(&format!("unexpected answer to verify: HTTP {s}"));
            return Ok(ExitCode::from(1));
        }
    }
    let info = json!({
        "name": "autogit-test-runner",
        "version": VERSION,
        "revision": "autogit",
        "platform": "linux",
        "architecture": arch(),
        "executor": opts.executor,
        "features": { "variables": true, "trace_reset": true, "trace_checksum": false, "cancelable": true },
    });
    let mut builds = 0u64;
    let mut idle_since = Instant::now();
    loop {
        if let Some(code) = signals.abort() {
            log("terminated while waiting for a job");
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
        if signals.graceful() {
            log("SIGQUIT received, no job running: exiting");
            return Ok(ExitCode::SUCCESS);
        }
        if !opts.wait_timeout.is_zero() && idle_since.elapsed() >= opts.wait_timeout {
            log("wait timeout reached without a job: exiting");
            return Ok(ExitCode::SUCCESS);
        }
        let body = json!({ "token": opts.token, "system_id": system_id, "info": info });
        let a = with_retries("request job", signals, || {
            client.post_json("/jobs/request", &body)
        })?;
        match a.status {
            201 => {
                let job: Value = serde_json::from_str(&a.body)
                    .map_err(|e| format!("job payload is not JSON: {e}"))?;
                let exec = Executor {
                    opts: &opts,
                    system_id: &system_id,
                };
                match run_job(&client, &job, signals, &exec)? {
                    JobEnd::Aborted(code) => {
                        return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
                    }
                    JobEnd::Succeeded | JobEnd::Failed | JobEnd::CanceledByServer => {}
                }
                builds += 1;
                if opts.max_builds != 0 && builds >= opts.max_builds {
                    log(&format!("processed {builds} build(s): exiting"));
                    return Ok(ExitCode::SUCCESS);
                }
                if signals.graceful() {
                    log("SIGQUIT received: job finished, exiting");
                    return Ok(ExitCode::SUCCESS);
                }
                idle_since = Instant::now();
            }
            204 => {
                sleep_unless(POLL_INTERVAL, || signals.any());
            }
            403 => {
                log("runner token no longer valid (403 Forbidden): exiting");
                return Ok(ExitCode::from(1));
            }
            s => {
                log(&format!("unexpected answer to job request: HTTP {s}"));
                sleep_unless(POLL_INTERVAL, || signals.any());
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) if e == "version" => {
            println!("Version:      {VERSION}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("autogit-test-runner: {e}");
            return ExitCode::from(2);
        }
    };
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("autogit-test-runner: {e}");
            return ExitCode::from(1);
        }
    };
    match run(opts, &signals) {
        Ok(code) => code,
        Err(e) => {
            log(&format!("error: {e}"));
            ExitCode::from(1)
        }
    }
}
