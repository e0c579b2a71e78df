//! Warm images: the coordinator's `WarmImages` names every image this
//! agent's pools may need (runner, helper and default job images); the
//! [`ImageKeeper`] pulls those that are missing before a runner needs them,
//! remembers what AutoGit pulled ([`super::pulled`]) and, under disk
//! pressure, removes what it pulled and nobody wants ([`super::image_gc`]).
//!
//! The keeper is an actor on its own task: the session hands it messages
//! and never waits for a pull. Each `WarmImages` replaces the wanted set.
//! Pulls run at most `images.pull_concurrency` at a time, each reference
//! once (a new set while a pull runs does not start a second one). An
//! image that the host policy's `allowed_images` refuses is never pulled
//! (logged once). A failed pull is retried after [`RETRY_AFTER`] or when a
//! new set arrives. With `images.prepull = false` nothing is pulled ahead,
//! but the wanted set still protects its images from the collector.
//! Registry credentials stay in memory; `Debug` hides them.
//! After each pull or removal the keeper signals `changed`, and the session
//! resends the inventory.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use autogit_proto::v1 as pb;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use super::engine::{EngineError, pull_failure_cause};
use super::image_gc::{self, FreeSpace, canonical_reference};
use super::images::ImageStore;
use super::pulled::{PulledImages, now_unix};
use super::spec::{RegistryAuth, parse_registry_auth};
use crate::policy::glob_match;

/// How long a failed warm pull waits before it is tried again (unless a new
/// `WarmImages` comes first).
pub const RETRY_AFTER: Duration = Duration::from_secs(300);

/// One image the coordinator wants on this host.
#[derive(Debug, Clone)]
pub struct WantedImage {
    /// The reference to pull, as the coordinator sent it.
    pub reference: String,
    /// Credentials for its registry (`Debug` hides the password).
    pub auth: Option<RegistryAuth>,
}

impl WantedImage {
    /// The wanted set of a `WarmImages`: empty references are dropped, and
    /// invalid credentials are logged and dropped (the pull is tried
    /// without them).
    pub fn from_proto(msg: pb::WarmImages) -> Vec<Self> {
        msg.images
            .into_iter()
            .filter(|i| !i.reference.trim().is_empty())
            .map(|i| {
                let auth = i.registry_auth.and_then(|a| match parse_registry_auth(a) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        tracing::warn!(image = %i.reference, error = %e, "warm image: ignoring invalid registry credentials");
                        None
                    }
                });
                WantedImage { reference: i.reference, auth }
            })
            .collect()
    }
}

/// How the keeper works (`[images]` and `policy.allowed_images`).
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    /// `false`: keep the wanted set (the collector spares it) but pull
    /// nothing ahead (`images.prepull`).
    pub prepull: bool,
    /// Pulls at a time (at least 1).
    pub pull_concurrency: usize,
    /// Collect images when Docker's free space is below this; 0: never.
    pub gc_below_free: u64,
    /// The host policy's image globs; others are never pulled.
    pub allowed_images: Vec<String>,
    /// Pause before a failed pull is tried again.
    pub retry_after: Duration,
}

enum Command {
    Want(Vec<WantedImage>),
    Collect,
    RunnerStarted { image: String, pulled: bool },
}

/// The handle to the keeper's task; dropping it stops the task.
#[derive(Debug)]
pub struct ImageKeeper {
    tx: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl Drop for ImageKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ImageKeeper {
    /// Start the keeper. `changed` gets a message (coalesced) after each
    /// pull or removal.
    pub fn spawn(
        store: Arc<dyn ImageStore>,
        free: Arc<dyn FreeSpace>,
        pulled: PulledImages,
        cfg: KeeperConfig,
        changed: mpsc::Sender<()>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let keeper = Keeper {
            permits: Arc::new(Semaphore::new(cfg.pull_concurrency.max(1))),
            store,
            free,
            pulled,
            cfg,
            changed,
            wanted: Vec::new(),
            in_flight: HashSet::new(),
            retry_at: HashMap::new(),
            refused: HashSet::new(),
            pulls: JoinSet::new(),
        };
        let task = tokio::spawn(keeper.run(rx));
        Self { tx, task }
    }

    /// Replace the wanted set (a `WarmImages`).
    pub fn want(&self, images: Vec<WantedImage>) {
        let _ = self.tx.send(Command::Want(images));
    }

    /// Retry due pulls and collect images if the disk is short (the
    /// inventory rescan tick).
    pub fn collect(&self) {
        let _ = self.tx.send(Command::Collect);
    }

    /// A runner container of `image` started; `pulled` when its image was
    /// pulled for it.
    pub fn runner_started(&self, image: String, pulled: bool) {
        let _ = self.tx.send(Command::RunnerStarted { image, pulled });
    }
}

/// How one warm pull ended.
enum PullEnd {
    /// The image was there already (an operator's, or pulled meanwhile).
    Present,
    /// AutoGit pulled it; its id when it could be read.
    Pulled(Option<String>),
    Failed(EngineError),
}

struct Keeper {
    store: Arc<dyn ImageStore>,
    free: Arc<dyn FreeSpace>,
    pulled: PulledImages,
    cfg: KeeperConfig,
    changed: mpsc::Sender<()>,
    permits: Arc<Semaphore>,
    wanted: Vec<WantedImage>,
    /// Canonical references being pulled.
    in_flight: HashSet<String>,
    /// Canonical reference → when a failed pull may be tried again.
    retry_at: HashMap<String, Instant>,
    /// Canonical references refused by policy (logged once).
    refused: HashSet<String>,
    pulls: JoinSet<(String, String, PullEnd)>,
}

impl Keeper {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        loop {
            let next_retry = self.retry_at.values().min().copied();
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => break,
                    Some(Command::Want(images)) => {
                        self.set_wanted(images);
                        self.schedule();
                        self.collect().await;
                    }
                    Some(Command::Collect) => {
                        self.schedule();
                        self.collect().await;
                    }
                    Some(Command::RunnerStarted { image, pulled }) => self.runner_started(&image, pulled).await,
                },
                Some(done) = self.pulls.join_next(), if !self.pulls.is_empty() => {
                    if let Ok((key, reference, end)) = done {
                        self.finished(key, &reference, end);
                    }
                }
                () = sleep_until(next_retry.unwrap_or_else(Instant::now)), if next_retry.is_some() => self.schedule(),
            }
        }
        self.pulls.abort_all();
    }

    fn set_wanted(&mut self, images: Vec<WantedImage>) {
        let mut seen = HashSet::new();
        self.wanted = images
            .into_iter()
            .filter(|w| seen.insert(canonical_reference(&w.reference)))
            .collect();
        // A new set retries failed pulls now.
        self.retry_at.clear();
        self.refused.retain(|r| seen.contains(r));
        tracing::info!(
            images = self.wanted.len(),
            "warm images: wanted set replaced"
        );
    }

    /// Start a pull for each wanted image not being pulled, not waiting for
    /// a retry and allowed by the host policy.
    fn schedule(&mut self) {
        if !self.cfg.prepull {
            return;
        }
        let now = Instant::now();
        self.retry_at.retain(|_, at| *at > now);
        for w in &self.wanted {
            let key = canonical_reference(&w.reference);
            if self.in_flight.contains(&key) || self.retry_at.contains_key(&key) {
                continue;
            }
            if !self
                .cfg
                .allowed_images
                .iter()
                .any(|p| glob_match(p, &w.reference))
            {
                if self.refused.insert(key) {
                    tracing::warn!(image = %w.reference, rule = "policy.allowed_images", allowed = ?self.cfg.allowed_images, "warm image not pulled: it does not match policy.allowed_images");
                }
                continue;
            }
            self.in_flight.insert(key.clone());
            let (store, permits, reference, auth) = (
                self.store.clone(),
                self.permits.clone(),
                w.reference.clone(),
                w.auth.clone(),
            );
            self.pulls.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let end = warm_pull(store.as_ref(), &reference, auth.as_ref()).await;
                (key, reference, end)
            });
        }
    }

    fn finished(&mut self, key: String, reference: &str, end: PullEnd) {
        self.in_flight.remove(&key);
        match end {
            PullEnd::Present => {}
            PullEnd::Pulled(id) => {
                if let Some(id) = id {
                    self.pulled.record_pull(&id, &key, now_unix());
                }
                let _ = self.changed.try_send(());
            }
            PullEnd::Failed(e) => {
                let retry_in = self.cfg.retry_after;
                match pull_failure_cause(&e) {
                    Some(cause) => {
                        tracing::warn!(image = %reference, cause, error = %e, ?retry_in, "warm pull failed")
                    }
                    None => {
                        tracing::warn!(image = %reference, error = %e, ?retry_in, "warm pull failed")
                    }
                }
                self.retry_at.insert(key, Instant::now() + retry_in);
            }
        }
    }

    async fn collect(&mut self) {
        let wanted: Vec<String> = self.wanted.iter().map(|w| w.reference.clone()).collect();
        let removed = image_gc::collect(
            self.store.as_ref(),
            self.free.as_ref(),
            &mut self.pulled,
            &wanted,
            self.cfg.gc_below_free,
        )
        .await;
        if !removed.is_empty() {
            let _ = self.changed.try_send(());
        }
    }

    async fn runner_started(&mut self, image: &str, pulled: bool) {
        let id = match self.store.image_id(image).await {
            Ok(Some(id)) => id,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(%image, error = %e, "cannot read the id of a runner's image");
                return;
            }
        };
        if pulled {
            self.pulled
                .record_pull(&id, &canonical_reference(image), now_unix());
            let _ = self.changed.try_send(());
        } else {
            self.pulled.record_use(&id, now_unix());
        }
    }
}

/// Pull `reference` unless it is here already.
async fn warm_pull(
    store: &dyn ImageStore,
    reference: &str,
    auth: Option<&RegistryAuth>,
) -> PullEnd {
    match store.image_id(reference).await {
        Ok(Some(_)) => return PullEnd::Present,
        Ok(None) => {}
        Err(e) => return PullEnd::Failed(e),
    }
    tracing::info!(image = %reference, "warm pull");
    match store.pull(reference, auth).await {
        Ok(()) => PullEnd::Pulled(store.image_id(reference).await.ok().flatten()),
        Err(e) => PullEnd::Failed(e),
    }
}
