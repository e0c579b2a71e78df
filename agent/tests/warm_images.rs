//! The warm-image keeper against a fake image store: bounded pull
//! concurrency, one pull per reference across `WarmImages` updates, the
//! host policy, retries after a failure, and the record of what AutoGit
//! pulled. Docker itself is exercised in `warm_docker.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use autogit_agent::docker::EngineError;
use autogit_agent::docker::RegistryAuth;
use autogit_agent::docker::image_gc::FreeSpace;
use autogit_agent::docker::images::{ImageStore, LocalImage};
use autogit_agent::docker::pulled::{PULLED_FILE, PulledImages};
use autogit_agent::docker::warm::{ImageKeeper, KeeperConfig, WantedImage};
use tokio::sync::mpsc;

#[derive(Default)]
struct State {
    /// Reference → image id, for images on the "host".
    present: HashMap<String, String>,
    /// Each pull's reference, in order.
    pulls: Vec<String>,
    running: usize,
    max_running: usize,
    /// Pulls of these fail this many more times.
    failures: HashMap<String, usize>,
}

#[derive(Default)]
struct FakeStore {
    state: Mutex<State>,
    delay: Duration,
}

impl FakeStore {
    fn with_delay(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay,
            ..Default::default()
        })
    }
    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
    fn pulls(&self) -> Vec<String> {
        self.st().pulls.clone()
    }
}

#[async_trait]
impl ImageStore for FakeStore {
    async fn list_images(&self) -> Result<Vec<LocalImage>, EngineError> {
        Ok(self
            .st()
            .present
            .iter()
            .map(|(r, id)| LocalImage {
                id: id.clone(),
                tags: vec![r.clone()],
                digests: Vec::new(),
                size_bytes: 1,
            })
            .collect())
    }
    async fn image_id(&self, reference: &str) -> Result<Option<String>, EngineError> {
        Ok(self.st().present.get(reference).cloned())
    }
    async fn pull(&self, reference: &str, _auth: Option<&RegistryAuth>) -> Result<(), EngineError> {
        {
            let mut s = self.st();
            s.pulls.push(reference.to_owned());
            s.running += 1;
            s.max_running = s.max_running.max(s.running);
        }
        tokio::time::sleep(self.delay).await;
        let mut s = self.st();
        s.running -= 1;
        if let Some(n) = s.failures.get_mut(reference).filter(|n| **n > 0) {
            *n -= 1;
            return Err(EngineError::NotFound {
                op: "pull image",
                message: format!("manifest for {reference} not found: manifest unknown"),
            });
        }
        let id = format!("sha256:{reference}");
        s.present.insert(reference.to_owned(), id);
        Ok(())
    }
    async fn remove_image(&self, _name: &str) -> Result<(), EngineError> {
        Ok(())
    }
    async fn images_in_use(&self) -> Result<HashSet<String>, EngineError> {
        Ok(HashSet::new())
    }
}

struct Plenty;

#[async_trait]
impl FreeSpace for Plenty {
    async fn free_bytes(&self) -> Option<u64> {
        Some(u64::MAX)
    }
}

fn cfg(concurrency: usize, allowed: &[&str]) -> KeeperConfig {
    KeeperConfig {
        prepull: true,
        pull_concurrency: concurrency,
        gc_below_free: 1 << 30,
        allowed_images: allowed.iter().map(|s| s.to_string()).collect(),
        retry_after: Duration::from_secs(300),
    }
}

fn wanted(refs: &[&str]) -> Vec<WantedImage> {
    refs.iter()
        .map(|r| WantedImage {
            reference: r.to_string(),
            auth: None,
        })
        .collect()
}

fn keeper(
    store: Arc<FakeStore>,
    cfg: KeeperConfig,
    pulled: PulledImages,
) -> (ImageKeeper, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel(1);
    (
        ImageKeeper::spawn(store, Arc::new(Plenty), pulled, cfg, tx),
        rx,
    )
}

/// Wait (paused clock) until `cond` holds, or panic after an hour.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..3600 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(start_paused = true)]
async fn pulls_missing_images_at_most_n_at_a_time_and_records_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = FakeStore::with_delay(Duration::from_secs(10));
    store
        .st()
        .present
        .insert("reg/have:1".into(), "sha256:have".into());
    let refs: Vec<String> = (0..6).map(|n| format!("reg/img{n}:1")).collect();
    let mut all: Vec<&str> = refs.iter().map(String::as_str).collect();
    all.push("reg/have:1");
    let (k, mut changed) = keeper(
        store.clone(),
        cfg(2, &["*"]),
        PulledImages::load(&dir.path().join(PULLED_FILE)),
    );
    k.want(wanted(&all));
    until("all pulled", || {
        store.pulls().len() == 6 && store.st().running == 0
    })
    .await;
    assert_eq!(
        store.st().max_running,
        2,
        "images.pull_concurrency bounds the pulls"
    );
    assert!(
        !store.pulls().contains(&"reg/have:1".to_owned()),
        "a present image is not pulled"
    );
    assert!(
        changed.recv().await.is_some(),
        "the session hears of the pulls"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let record = PulledImages::load(&dir.path().join(PULLED_FILE));
    for r in &refs {
        let p = record
            .get(&format!("sha256:{r}"))
            .unwrap_or_else(|| panic!("{r} not recorded"));
        assert!(p.references.contains(r), "{p:?}");
    }
    assert!(
        record.get("sha256:have").is_none(),
        "an image AutoGit did not pull is not recorded"
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_set_while_pulls_run_starts_no_second_pull() {
    let store = FakeStore::with_delay(Duration::from_secs(30));
    let (k, _changed) = keeper(store.clone(), cfg(4, &["*"]), PulledImages::in_memory());
    k.want(wanted(&["reg/a:1", "reg/b:1"]));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(store.st().running, 2);
    k.want(wanted(&["reg/a:1", "reg/b:1", "reg/a:1", "reg/c:1"]));
    k.want(wanted(&["reg/b:1", "reg/c:1", "reg/a:1"]));
    until("all pulled", || {
        store.st().present.len() == 3 && store.st().running == 0
    })
    .await;
    let mut pulls = store.pulls();
    pulls.sort();
    assert_eq!(
        pulls,
        ["reg/a:1", "reg/b:1", "reg/c:1"],
        "each reference pulled once"
    );
}

#[tokio::test(start_paused = true)]
async fn images_the_host_policy_refuses_are_not_pulled() {
    let store = FakeStore::with_delay(Duration::from_secs(1));
    let (k, _changed) = keeper(
        store.clone(),
        cfg(2, &["reg.example/ok/*"]),
        PulledImages::in_memory(),
    );
    k.want(wanted(&["reg.example/ok/runner:1", "evil.example/miner:1"]));
    until("allowed one pulled", || {
        store.st().present.contains_key("reg.example/ok/runner:1")
    })
    .await;
    k.collect();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(store.pulls(), ["reg.example/ok/runner:1"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_pull_is_retried_after_the_backoff_or_on_a_new_set() {
    let store = FakeStore::with_delay(Duration::from_secs(1));
    store.st().failures.insert("reg/flaky:1".into(), 2);
    let (k, _changed) = keeper(store.clone(), cfg(2, &["*"]), PulledImages::in_memory());
    k.want(wanted(&["reg/flaky:1"]));
    until("first pull", || {
        store.pulls().len() == 1 && store.st().running == 0
    })
    .await;
    // Not before the backoff (300 s), even on a rescan tick.
    tokio::time::sleep(Duration::from_secs(200)).await;
    k.collect();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(store.pulls().len(), 1, "retried before the backoff");
    // After it, by itself.
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(store.pulls().len(), 2, "not retried after the backoff");
    // Failed again: a new WarmImages retries at once.
    tokio::time::sleep(Duration::from_secs(5)).await;
    k.want(wanted(&["reg/flaky:1"]));
    until("third pull succeeds", || {
        store.st().present.contains_key("reg/flaky:1")
    })
    .await;
    assert_eq!(store.pulls().len(), 3);
}

#[test]
fn registry_credentials_never_show_in_debug() {
    use autogit_proto::v1 as pb;
    let msg = pb::WarmImages {
        images: vec![
            pb::WarmImage {
                reference: "reg/private:1".into(),
                registry_auth: Some(pb::RegistryAuth {
                    username: "puller".into(),
                    password: "s3cret-PASSWORD".into(),
                }),
            },
            pb::WarmImage {
                reference: " ".into(),
                registry_auth: None,
            },
        ],
    };
    let w = WantedImage::from_proto(msg);
    assert_eq!(w.len(), 1, "an empty reference is dropped");
    assert_eq!(
        w[0].auth.as_ref().map(|a| a.username.as_str()),
        Some("puller")
    );
    assert!(!format!("{w:?}").contains("s3cret"), "{w:?}");
}

#[tokio::test(start_paused = true)]
async fn with_prepull_off_nothing_is_pulled_ahead() {
    let store = FakeStore::with_delay(Duration::from_secs(1));
    let mut c = cfg(2, &["*"]);
    c.prepull = false;
    let (k, _changed) = keeper(store.clone(), c, PulledImages::in_memory());
    k.want(wanted(&["reg/a:1", "reg/b:1"]));
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(store.pulls().is_empty(), "images.prepull = false: {:?}", store.pulls());
}
