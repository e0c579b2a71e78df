//! Warm images: every connected agent is told which images to hold for the
//! pools it could serve, so that even a pool's first job finds its runner
//! image on the host.
//!
//! [`wanted`] is the pure half: for one agent, the runner image, helper
//! image and default job image ([`Pool::warm_images`]) of every pool whose
//! `agent_selector` its trust labels meet, whose architectures include its
//! own, and whose GPUs it has (a cordoned agent stays warm for when it is
//! uncordoned). A pool's `registry` credentials go with the images on the
//! registry host of its runner image, and nowhere else.
//!
//! [`run`] is the loop: when the pools change (a reload), when the fleet
//! changes (an agent connects, its labels or inventory change) and once a
//! minute, it sends each agent's set as one `WarmImages` command, but only
//! when it differs from the set last sent on that agent's current session.
//! A new session always gets the set: that is how an agent that joins, or
//! reconnects after a coordinator restart, learns it. The agent pulls what
//! it lacks, a few at a time and within its host policy
//! (`agent/src/docker/warm.rs`), and reports what it holds in its inventory,
//! which placement then prefers (`scheduler/placement.rs`).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use autogit_certs::AgentId;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use super::command::{AgentCommand, WarmImage};
use super::registry::{Fleet, SessionId};
use crate::pools::LivePools;
use crate::scheduler::images::{normalise, registry_host};
use crate::scheduler::{AgentView, Pool, placement};

/// How often the sets are compared even when nothing signalled a change.
const RESEND_CHECK: Duration = Duration::from_secs(60);
/// The least time between two passes, so a fleet-wide reconnect costs one
/// pass per second, not one per agent.
const MIN_PASS_GAP: Duration = Duration::from_secs(1);

/// Whether runners of `pool` could ever be placed on `a`: trust labels,
/// architecture and GPUs (state, cordon and free resources change too often
/// to un-warm an agent for).
fn could_serve(pool: &Pool, a: &AgentView) -> bool {
    placement::admits(pool, a)
        && pool.gpu.as_ref().is_none_or(|g| {
            a.gpus.iter().filter(|x| x.vendor == g.vendor).count() >= g.count as usize
        })
}

/// The images `a` should hold for `pools`, each once, sorted by reference.
/// Pure.
pub fn wanted(pools: &[Pool], a: &AgentView) -> Vec<WarmImage> {
    let mut out: BTreeMap<String, WarmImage> = BTreeMap::new();
    for pool in pools.iter().filter(|p| could_serve(p, a)) {
        let runner_registry = registry_host(pool.image_for(a.arch));
        for image in pool.warm_images(a.arch) {
            let auth = pool
                .registry
                .as_ref()
                .filter(|_| registry_host(&image) == runner_registry)
                .cloned();
            // The first pool to name an image decides its credentials.
            out.entry(normalise(&image)).or_insert(WarmImage {
                reference: image,
                registry_auth: auth,
            });
        }
    }
    out.into_values().collect()
}

/// A digest of a set as sent, credentials included (a changed password is
/// sent again); kept in memory only.
fn digest(set: &[WarmImage]) -> u64 {
    let mut h = DefaultHasher::new();
    for i in set {
        i.reference.hash(&mut h);
        if let Some(a) = &i.registry_auth {
            a.username.hash(&mut h);
            a.password.expose_secret().hash(&mut h);
        }
    }
    h.finish()
}

/// What was last sent to each agent, per session.
#[derive(Debug, Default)]
pub struct Sent(HashMap<AgentId, (SessionId, u64)>);

impl Sent {
    /// One pass: send every connected agent whose wanted set differs from
    /// what its session last got. Returns how many agents were sent a set.
    pub fn pass(&mut self, fleet: &Fleet, pools: &[Pool]) -> usize {
        let sessions = fleet.session_ids();
        self.0.retain(|id, _| sessions.contains_key(id));
        let mut sent = 0;
        for a in fleet.scheduler_view() {
            let id = AgentId(a.id);
            let Some(&sid) = sessions.get(&id) else {
                continue;
            };
            let set = wanted(pools, &a);
            let d = digest(&set);
            if self.0.get(&id) == Some(&(sid, d)) {
                continue;
            }
            let count = set.len();
            match fleet.send(&id, AgentCommand::WarmImages(set)) {
                Ok(()) => {
                    tracing::debug!(agent = %id, images = count, "sent the images to keep warm");
                    self.0.insert(id, (sid, d));
                    sent += 1;
                }
                // Gone or its queue is full: the next pass tries again.
                Err(e) => tracing::debug!(agent = %id, error = %e, "warm images not sent"),
            }
        }
        sent
    }
}

/// Keep every connected agent's warm set current until `cancel`.
pub async fn run(fleet: Fleet, pools: LivePools, cancel: CancellationToken) {
    let mut pools_rx = pools.subscribe();
    let mut fleet_rx = fleet.subscribe();
    let mut sent = Sent::default();
    loop {
        sent.pass(&fleet, &pools.current());
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(MIN_PASS_GAP) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = pools_rx.changed() => if r.is_err() { return },
            r = fleet_rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(RESEND_CHECK) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;
    use uuid::Uuid;

    use super::*;
    use crate::scheduler::{
        Arch, Archs, GpuRequirement, GpuVendor, GpuView, PasswordSource, RegistryAuth,
    };

    fn agent(arch: Arch) -> AgentView {
        AgentView::new(Uuid::from_u128(1), "h", arch, 8, 16 << 30)
    }

    fn auth(user: &str) -> RegistryAuth {
        RegistryAuth {
            username: user.into(),
            password: SecretString::from("pw"),
            password_from: PasswordSource::Env("PW".into()),
        }
    }

    fn refs(set: &[WarmImage]) -> Vec<&str> {
        set.iter().map(|i| i.reference.as_str()).collect()
    }

    #[test]
    fn an_agent_warms_the_images_of_the_pools_it_could_serve_and_no_others() {
        let mut x86 = Pool::new("x86", &["x86"], Arch::X86_64);
        x86.image = "reg:5000/runner:v1".into();
        x86.command = vec!["--docker-image".into(), "reg:5000/job:1".into()];
        let mut both = Pool::new("both", &["any"], Arch::X86_64);
        both.arch = Archs::of([Arch::X86_64, Arch::Aarch64]).unwrap();
        both.image = "reg:5000/runner:v1".into();
        both.images
            .insert(Arch::Aarch64, "reg:5000/runner:arm".into());
        both.helper_image
            .insert(Arch::Aarch64, "reg:5000/helper:arm".into());
        let mut labelled = Pool::new("secure", &["secure"], Arch::X86_64);
        labelled.image = "reg:5000/secure:1".into();
        labelled
            .agent_selector
            .insert("zone".into(), "secure".into());
        let mut gpu = Pool::new("gpu", &["gpu"], Arch::X86_64);
        gpu.image = "reg:5000/cuda:12".into();
        gpu.gpu = Some(GpuRequirement {
            vendor: GpuVendor::Nvidia,
            count: 1,
            min_memory: None,
        });
        let pools = [x86, both, labelled, gpu];

        let plain = agent(Arch::X86_64);
        assert_eq!(
            refs(&wanted(&pools, &plain)),
            ["alpine:3.20", "reg:5000/job:1", "reg:5000/runner:v1"],
            "the shared runner image once, the default job image; no labelled or GPU pool"
        );
        let arm = agent(Arch::Aarch64);
        assert_eq!(
            refs(&wanted(&pools, &arm)),
            ["alpine:3.20", "reg:5000/helper:arm", "reg:5000/runner:arm"],
            "the arm image and helper of the two-arch pool"
        );
        let mut trusted = agent(Arch::X86_64);
        trusted.trust_labels.insert("zone".into(), "secure".into());
        trusted.gpus.push(GpuView {
            vendor: GpuVendor::Nvidia,
            uuid: "GPU-1".into(),
            memory: 1 << 30,
            render_node: None,
        });
        trusted.cordoned = true;
        assert_eq!(
            refs(&wanted(&pools, &trusted)),
            [
                "alpine:3.20",
                "reg:5000/cuda:12",
                "reg:5000/job:1",
                "reg:5000/runner:v1",
                "reg:5000/secure:1"
            ],
            "trust labels and GPUs add pools; a cordon does not un-warm"
        );
        let riscv = agent(Arch::Riscv64);
        assert!(wanted(&pools, &riscv).is_empty());
    }

    #[test]
    fn credentials_go_only_with_images_on_the_runner_images_registry() {
        let mut p = Pool::new("p", &["p"], Arch::X86_64);
        p.image = "private.example:5000/runner:v1".into();
        p.helper_image
            .insert(Arch::X86_64, "private.example:5000/helper:v1".into());
        p.command = vec!["--docker-image=alpine:3.20".into()];
        p.registry = Some(auth("puller"));
        let set = wanted(&[p], &agent(Arch::X86_64));
        let by_ref: BTreeMap<&str, Option<&str>> = set
            .iter()
            .map(|i| {
                (
                    i.reference.as_str(),
                    i.registry_auth.as_ref().map(|a| a.username.as_str()),
                )
            })
            .collect();
        assert_eq!(by_ref["private.example:5000/runner:v1"], Some("puller"));
        assert_eq!(by_ref["private.example:5000/helper:v1"], Some("puller"));
        assert_eq!(
            by_ref["alpine:3.20"], None,
            "Docker Hub never sees the password"
        );
    }

    #[test]
    fn a_changed_password_changes_the_digest() {
        let one = vec![WarmImage {
            reference: "r:1".into(),
            registry_auth: Some(auth("u")),
        }];
        let mut two = one.clone();
        if let Some(a) = two[0].registry_auth.as_mut() {
            a.password = SecretString::from("other");
        }
        assert_ne!(digest(&one), digest(&two));
        assert_eq!(digest(&one), digest(&one.clone()));
    }

    fn sets(rx: &mut tokio::sync::mpsc::Receiver<AgentCommand>) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        while let Ok(cmd) = rx.try_recv() {
            if let AgentCommand::WarmImages(set) = cmd {
                out.push(set.into_iter().map(|i| i.reference).collect());
            }
        }
        out
    }

    #[tokio::test]
    async fn a_set_is_sent_once_per_session_and_again_when_the_pools_change() {
        use crate::fleet::{Inventory, Timings};
        let id = AgentId::new_random();
        let row = crate::fleet::registry::enrolled_row(&id, "h");
        let fleet = Fleet::new(
            &[row],
            &[],
            Timings {
                heartbeat_interval: Duration::from_secs(1),
                unreachable_after: Duration::from_secs(3),
                lost_after: Duration::from_secs(10),
            },
        );
        let inv = Inventory {
            hostname: "h".into(),
            arch: "x86_64".into(),
            cpu_threads: 4,
            mem_total_bytes: 8 << 30,
            ..Default::default()
        };
        let mut pool = Pool::new("p", &["p"], Arch::X86_64);
        pool.image = "reg:5000/runner:v1".into();
        pool.command = vec!["run-single".into()];
        let mut sent = Sent::default();
        assert_eq!(sent.pass(&fleet, &[pool.clone()]), 0, "nobody connected");

        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let (sid, _) = fleet.connect(id, inv.clone(), tx).unwrap();
        assert_eq!(sent.pass(&fleet, &[pool.clone()]), 1);
        assert_eq!(sets(&mut rx), [["reg:5000/runner:v1"]]);
        assert_eq!(
            sent.pass(&fleet, &[pool.clone()]),
            0,
            "unchanged: not resent"
        );
        assert!(sets(&mut rx).is_empty());

        pool.image = "reg:5000/runner:v2".into();
        sent.pass(&fleet, &[pool.clone()]);
        assert_eq!(sets(&mut rx), [["reg:5000/runner:v2"]], "a reload is sent");
        sent.pass(&fleet, &[]);
        assert_eq!(
            sets(&mut rx),
            [Vec::<String>::new()],
            "no pool left: nothing wanted"
        );

        fleet.disconnect(&id, sid);
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        fleet.connect(id, inv, tx).unwrap();
        sent.pass(&fleet, &[]);
        assert_eq!(
            sets(&mut rx),
            [Vec::<String>::new()],
            "a new session gets the set even when it did not change"
        );
    }
}
