//! The pools in force, shared by everything that reads them (demand
//! matching, the reconciler, the API, metrics) and replaced as one value by
//! a reload ([`crate::reload`]). Readers take [`LivePools::current`] once
//! per pass, so one pass never sees half of an old and half of a new config;
//! the demand tracker also [`LivePools::subscribe`]s, to re-match pending
//! jobs when the pools change.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;

use crate::scheduler::Pool;

/// A cheap, cloneable handle on the current pools.
#[derive(Debug, Clone)]
pub struct LivePools {
    tx: Arc<watch::Sender<Arc<Vec<Pool>>>>,
}

impl LivePools {
    pub fn new(pools: Vec<Pool>) -> Self {
        LivePools {
            tx: Arc::new(watch::Sender::new(Arc::new(pools))),
        }
    }

    /// The pools now, in config order.
    pub fn current(&self) -> Arc<Vec<Pool>> {
        self.tx.borrow().clone()
    }

    /// Replace every pool at once; subscribers are woken.
    pub fn replace(&self, pools: Vec<Pool>) {
        self.tx.send_replace(Arc::new(pools));
    }

    /// Wakes on every [`Self::replace`].
    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<Pool>>> {
        self.tx.subscribe()
    }
}

impl From<Vec<Pool>> for LivePools {
    fn from(pools: Vec<Pool>) -> Self {
        LivePools::new(pools)
    }
}

/// What a new set of pools changes, by pool name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Changed in what its runners are made of (image, command, tags,
    /// limits, ...): idle and provisioning runners are replaced.
    pub changed: Vec<String>,
    /// Changed only in sizing (`max_runners`, `idle_min`, `idle_timeout`,
    /// `schedule`), `wait_objective` or `registry` credentials (read again
    /// from their file: a reload rotates them): runners are kept.
    pub resized: Vec<String>,
}

impl PoolChanges {
    pub fn between(old: &[Pool], new: &[Pool]) -> Self {
        let names = |ps: &[Pool]| ps.iter().map(|p| p.name.clone()).collect::<BTreeSet<_>>();
        let (old_names, new_names) = (names(old), names(new));
        let mut c = PoolChanges {
            added: new_names.difference(&old_names).cloned().collect(),
            removed: old_names.difference(&new_names).cloned().collect(),
            ..Default::default()
        };
        for n in new {
            let Some(o) = old.iter().find(|o| o.name == n.name) else {
                continue;
            };
            if !o.makes_same_runners_as(n) {
                c.changed.push(n.name.clone());
            } else if o != n {
                c.resized.push(n.name.clone());
            }
        }
        c
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.resized.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Arch;

    #[test]
    fn changes_tell_runner_spec_from_sizing() {
        let a = Pool::new("a", &["a"], Arch::X86_64);
        let b = Pool::new("b", &["b"], Arch::X86_64);
        let c = Pool::new("c", &["c"], Arch::Aarch64);
        let mut a2 = a.clone();
        a2.image = "registry.example/runner:2".into();
        let mut b2 = b.clone();
        b2.max_runners = 9;
        let d = Pool::new("d", &["d"], Arch::X86_64);
        let mut d2 = d.clone();
        d2.wait_objective = Some(std::time::Duration::from_secs(30));
        let changes = PoolChanges::between(&[a.clone(), b.clone(), d.clone()], &[a2, b2, c, d2]);
        assert_eq!(changes.added, vec!["c"]);
        assert_eq!(changes.changed, vec!["a"]);
        assert_eq!(changes.resized, vec!["b", "d"]);
        assert!(changes.removed.is_empty());
        let gone = PoolChanges::between(&[a.clone(), b.clone()], std::slice::from_ref(&b));
        assert_eq!(gone.removed, vec!["a"]);
        let same = std::slice::from_ref(&a);
        assert!(PoolChanges::between(same, same).is_empty());
    }

    #[test]
    fn the_field_by_field_comparison_agrees_with_the_runner_spec() {
        let base = Pool::new("a", &["a"], Arch::X86_64);
        let mut variants = Vec::new();
        let mut v = |f: fn(&mut Pool)| {
            let mut p = base.clone();
            f(&mut p);
            variants.push(p);
        };
        v(|p| p.tags.push("b".into()));
        v(|p| p.run_untagged = true);
        v(|p| p.image = "other".into());
        v(|p| p.command.push("--debug".into()));
        v(|p| p.cpu_limit = 0.5);
        v(|p| p.docker_socket = false);
        v(|p| p.network_mode = Some("host".into()));
        v(|p| p.max_runners = 40);
        v(|p| p.idle_min = 1);
        v(|p| p.idle_timeout = std::time::Duration::from_secs(1));
        for p in &variants {
            assert_eq!(
                base.makes_same_runners_as(p),
                base.runner_spec() == p.runner_spec(),
                "{p:?}"
            );
        }
    }

    #[tokio::test]
    async fn replace_wakes_subscribers_with_the_new_pools() {
        let live = LivePools::new(vec![Pool::new("a", &["a"], Arch::X86_64)]);
        let mut rx = live.subscribe();
        live.replace(vec![]);
        rx.changed().await.unwrap();
        assert!(rx.borrow_and_update().is_empty());
        assert!(live.current().is_empty());
    }
}
