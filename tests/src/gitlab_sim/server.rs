//! Starting, stopping and driving a simulator instance.
//!
//! [`serve`] runs the simulator on a bound listener until a shutdown future resolves
//! (the house pattern for servers under test); [`spawn`] binds `127.0.0.1:0` and runs it
//! in the background. [`SimHandle`] is the in-process twin of the `/sim` endpoints.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::model::{
    CreatedUser, FaultSpec, NewHook, NewJob, NewUser, SimDelivery, SimFaults, SimHook, SimJob,
    SimRunner, SimSnapshot,
};
use super::state::{DeliveryTask, JobStatus, Settings, World};

/// The GitLab version the simulator claims to be (`GET /version`, `User-Agent`).
pub const SIM_GITLAB_VERSION: &str = "18.2.1";

/// How a simulator instance is set up.
#[derive(Clone)]
pub struct SimConfig {
    /// Personal access token of the `root` administrator.
    pub admin_token: String,
    /// The instance URL used in links, `web_url`s and `X-Gitlab-Instance`. Defaults to
    /// `http://<listen address>`.
    pub external_url: Option<String>,
    /// Timeout for one webhook delivery (GitLab's default `webhook_timeout` is 10 s).
    pub webhook_timeout: Duration,
    /// First temporary disable period after the 4th consecutive failed delivery
    /// (GitLab: 1 minute, doubling up to [`Self::hook_max_backoff`]).
    pub hook_initial_backoff: Duration,
    /// Longest temporary disable period (GitLab: 1 day).
    pub hook_max_backoff: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            admin_token: format!("glpat-{}", super::state::random_token(20)),
            external_url: None,
            webhook_timeout: Duration::from_secs(10),
            hook_initial_backoff: Duration::from_secs(60),
            hook_max_backoff: Duration::from_secs(24 * 3600),
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("admin_token", &"[REDACTED]")
            .field("external_url", &self.external_url)
            .field("webhook_timeout", &self.webhook_timeout)
            .field("hook_initial_backoff", &self.hook_initial_backoff)
            .field("hook_max_backoff", &self.hook_max_backoff)
            .finish()
    }
}

/// State shared by all handlers and the webhook dispatcher.
pub struct Shared {
    world: Mutex<World>,
    dispatch_tx: mpsc::UnboundedSender<DeliveryTask>,
    dispatch_rx: Mutex<Option<mpsc::UnboundedReceiver<DeliveryTask>>>,
}

impl Shared {
    /// Runs `f` under the world lock, then hands queued webhook deliveries to the
    /// dispatcher. Never hold the lock across an `.await`: `f` is synchronous.
    pub fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let mut w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut w);
        for task in w.outbox.drain(..) {
            // The receiver only goes away when the server stops; nothing to deliver then.
            let _ = self.dispatch_tx.send(task);
        }
        r
    }
}

/// Cheap, cloneable control handle for one simulator instance.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("external_url", &self.base_url())
            .finish()
    }
}

impl SimHandle {
    /// Creates a simulator world (not yet serving).
    pub fn new(config: SimConfig) -> Self {
        let to_time = |d: Duration| time::Duration::try_from(d).unwrap_or(time::Duration::MAX);
        let settings = Settings {
            // Empty until `serve` knows the listen address, unless configured.
            external_url: config
                .external_url
                .clone()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned(),
            version: SIM_GITLAB_VERSION.to_owned(),
            revision: "5b2b1a1e".to_owned(),
            webhook_timeout: config.webhook_timeout,
            hook_initial_backoff: to_time(config.hook_initial_backoff),
            hook_max_backoff: to_time(config.hook_max_backoff),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        SimHandle {
            shared: Arc::new(Shared {
                world: Mutex::new(World::new(settings, &config.admin_token)),
                dispatch_tx: tx,
                dispatch_rx: Mutex::new(Some(rx)),
            }),
        }
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        SimHandle { shared }
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// The instance URL, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        self.shared.with_world(|w| w.settings.external_url.clone())
    }

    /// Enqueues a pending job (creating its project if needed).
    pub fn create_job(&self, job: NewJob) -> SimJob {
        self.shared.with_world(|w| {
            let id = w.create_job(
                job.project_id,
                job.name.as_deref().unwrap_or("build"),
                job.stage.as_deref().unwrap_or("test"),
                job.tags,
                job.duration_ms.unwrap_or(0),
                job.protected.unwrap_or(true),
            );
            let j = w.jobs.get(&id).map(|j| w.sim_job(j));
            j.unwrap_or_else(|| unreachable_job(id))
        })
    }

    pub fn job(&self, id: u64) -> Option<SimJob> {
        self.shared
            .with_world(|w| w.jobs.get(&id).map(|j| w.sim_job(j)))
    }

    pub fn jobs(&self) -> Vec<SimJob> {
        self.shared
            .with_world(|w| w.jobs.values().map(|j| w.sim_job(j)).collect())
    }

    /// Cancels a job that has not finished (as a user pressing "Cancel" would).
    pub fn cancel_job(&self, id: u64) -> Option<SimJob> {
        self.shared.with_world(|w| {
            let status = w.jobs.get(&id)?.status;
            if !status.is_finished() {
                w.set_job_status(id, JobStatus::Canceled, None);
            }
            w.jobs.get(&id).map(|j| w.sim_job(j))
        })
    }

    pub fn runner(&self, id: u64) -> Option<SimRunner> {
        self.shared
            .with_world(|w| w.runners.get(&id).map(|r| w.sim_runner(r)))
    }

    /// The short tokens (as gitlab-runner labels its docker executor's
    /// containers with) of every runner ever created: tests look for leftovers
    /// by them. The full token stays inside the simulator.
    pub fn runner_short_tokens(&self) -> Vec<String> {
        self.shared.with_world(|w| {
            w.runners
                .values()
                .flat_map(|r| crate::faults::short_tokens(&r.token.0))
                .collect()
        })
    }

    /// All runners ever created, deleted ones included.
    pub fn runners(&self) -> Vec<SimRunner> {
        self.shared
            .with_world(|w| w.runners.values().map(|r| w.sim_runner(r)).collect())
    }

    /// Registers a Job Hook target. Only loopback URLs are accepted.
    pub fn add_hook(&self, hook: NewHook) -> Result<SimHook, String> {
        check_hook_url(&hook.url)?;
        Ok(self.shared.with_world(|w| {
            let id = w.add_hook(hook.url, hook.token, hook.project_id, true);
            match w.hooks.get(&id) {
                Some(h) => w.sim_hook(h),
                None => unreachable_hook(id),
            }
        }))
    }

    pub fn hooks(&self) -> Vec<SimHook> {
        self.shared
            .with_world(|w| w.hooks.values().map(|h| w.sim_hook(h)).collect())
    }

    /// Clears a hook's failure count and disable period.
    pub fn enable_hook(&self, id: u64) -> bool {
        self.shared.with_world(|w| w.enable_hook(id))
    }

    pub fn deliveries(&self) -> Vec<SimDelivery> {
        self.shared
            .with_world(|w| w.deliveries.iter().map(World::sim_delivery).collect())
    }

    /// Sends an existing delivery again with the same `Idempotency-Key`.
    pub fn redeliver(&self, delivery_id: u64) -> bool {
        self.shared.with_world(|w| w.redeliver(delivery_id))
    }

    /// Applies a fault specification and returns the faults now in force.
    pub fn set_faults(&self, spec: FaultSpec) -> SimFaults {
        self.shared.with_world(|w| {
            if spec.reset {
                w.faults = SimFaults::default();
            }
            let f = &mut w.faults;
            if let Some(v) = spec.latency_ms {
                f.latency_ms = v;
            }
            if let Some(v) = spec.hold_response_ms {
                f.hold_response_ms = v;
            }
            if let Some(v) = spec.fail_next {
                f.fail_next = v;
            }
            if let Some(v) = spec.fail_status {
                f.fail_status = v;
            }
            if let Some(v) = spec.rate_limit_next {
                f.rate_limit_next = v;
            }
            if let Some(v) = spec.retry_after_secs {
                f.retry_after_secs = v;
            }
            if let Some(v) = spec.drop_webhooks {
                f.drop_webhooks = v;
            }
            if spec.path_prefix.is_some() {
                f.path_prefix = spec.path_prefix.clone();
            }
            f.clone()
        })
    }

    pub fn faults(&self) -> SimFaults {
        self.shared.with_world(|w| w.faults.clone())
    }

    /// Creates a user with a personal access token.
    pub fn create_user(&self, user: NewUser) -> CreatedUser {
        self.shared.with_world(|w| {
            let u = w.create_user(&user.username, user.admin, &user.project_ids);
            CreatedUser {
                id: u.id,
                username: u.username,
                is_admin: u.is_admin,
                token: u.token.0,
            }
        })
    }

    /// Requests served so far for `"METHOD /matched/path"`, e.g.
    /// `"POST /api/v4/jobs/request"`.
    pub fn request_count(&self, key: &str) -> u64 {
        self.shared
            .with_world(|w| w.requests.get(key).copied().unwrap_or(0))
    }

    pub fn snapshot(&self) -> SimSnapshot {
        self.shared.with_world(|w| w.snapshot())
    }

    /// Polls `cond` against fresh snapshots every 20 ms until it holds or `timeout`
    /// passes; returns the last snapshot either way together with the verdict.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&SimSnapshot) -> bool,
    ) -> (bool, SimSnapshot) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let snap = self.snapshot();
            if cond(&snap) {
                return (true, snap);
            }
            if tokio::time::Instant::now() >= deadline {
                return (false, snap);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn unreachable_job(id: u64) -> SimJob {
    // `create_job` just inserted the job; this only exists to avoid a panic path.
    SimJob {
        id,
        project_id: 0,
        pipeline_id: 0,
        name: String::new(),
        stage: String::new(),
        tags: Vec::new(),
        status: "unknown".into(),
        assignment_count: 0,
        runner_id: None,
        runner_system_id: None,
        duration_ms: 0,
        protected: false,
        created_at: String::new(),
        started_at: None,
        finished_at: None,
        failure_reason: None,
        trace_bytes: 0,
    }
}

fn unreachable_hook(id: u64) -> SimHook {
    SimHook {
        id,
        url: String::new(),
        project_id: None,
        recent_failures: 0,
        disabled_until: None,
        alert_status: "executable".into(),
        deleted: true,
    }
}

/// Webhook targets must be on this machine: the simulator behaves as if the admin
/// enabled "Allow requests to the local network from webhooks", and the test
/// workplace forbids traffic anywhere else.
pub fn check_hook_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| "Invalid url given".to_owned())?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err("Invalid url given: the simulator only delivers webhooks to loopback addresses".into())
    }
}

/// Serves `handle`'s simulator on `listener` until `shutdown` resolves. The instance
/// URL becomes `http://<listen address>` unless [`SimConfig::external_url`] named one.
pub async fn serve(
    listener: TcpListener,
    handle: SimHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let shared = handle.shared();
    shared.with_world(|w| {
        if w.settings.external_url.is_empty() {
            w.settings.external_url = format!("http://{addr}");
        }
    });
    let rx = shared
        .dispatch_rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let dispatcher = rx.map(|rx| tokio::spawn(super::webhooks::run_dispatcher(shared.clone(), rx)));
    let app = super::api::router(shared).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    if let Some(d) = dispatcher {
        d.abort();
    }
    result
}

/// A simulator running in the background on `127.0.0.1:<random port>`.
pub struct SimServer {
    handle: SimHandle,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl fmt::Debug for SimServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimServer")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Binds `127.0.0.1:0` and starts a simulator with `config` in the background.
pub async fn spawn(config: SimConfig) -> std::io::Result<SimServer> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    spawn_on(listener, config).await
}

/// Starts a simulator with `config` on an already bound listener.
pub async fn spawn_on(listener: TcpListener, config: SimConfig) -> std::io::Result<SimServer> {
    let addr = listener.local_addr()?;
    let handle = SimHandle::new(config);
    handle.shared().with_world(|w| {
        if w.settings.external_url.is_empty() {
            w.settings.external_url = format!("http://{addr}");
        }
    });
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, handle.clone(), async move {
        let _ = rx.await;
    }));
    Ok(SimServer {
        handle,
        addr,
        stop: Some(tx),
        task: Some(task),
    })
}

impl SimServer {
    pub fn handle(&self) -> &SimHandle {
        &self.handle
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.handle.base_url()
    }

    /// Stops accepting requests and waits for in-flight ones to finish.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            None => Ok(()),
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
