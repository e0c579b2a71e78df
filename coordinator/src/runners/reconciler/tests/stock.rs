//! A pool's stock of GitLab runners created ahead of demand (`stock.rs`):
//! a start takes one without waiting for GitLab, the stock stays within
//! its bound through bursts and reloads, and nothing of it outlives the
//! coordinator that made it.

use std::collections::BTreeSet;

use secrecy::ExposeSecret;

use super::*;

fn stocked_pool(stock: u32) -> Pool {
    let mut p = Pool::new("amd64", &["amd64"], Arch::X86_64);
    p.max_runners = 8;
    p.stock = stock;
    p
}

impl Harness {
    /// GitLab runners that exist but no active runner holds: the stock,
    /// and anything leaked.
    async fn unheld(&self) -> BTreeSet<u64> {
        self.settle().await;
        let held: BTreeSet<u64> = self
            .db
            .active_runners()
            .await
            .unwrap()
            .iter()
            .filter_map(|r| r.gitlab_runner_id.map(|g| g as u64))
            .collect();
        self.gitlab
            .live()
            .into_iter()
            .filter(|g| !held.contains(g))
            .collect()
    }

    /// The reconciler dies without its shutdown (a SIGKILL) and a new one
    /// starts on the same database, fleet and GitLab.
    async fn crash_and_restart(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        self.launch();
        self.settle().await;
    }
}

/// GitLab takes 10 s to create a runner; the paused clock never gets there.
/// A job still gets its start at once: from the stock, whose GitLab runner
/// the record names before the agent hears of it.
#[tokio::test(start_paused = true)]
async fn a_start_takes_a_stocked_runner_without_waiting_for_gitlab() {
    let mut h = Harness::start_with(vec![stocked_pool(2)], Clock::following_tokio()).await;
    let mut rx = h.connect(vec![]);
    h.settle().await;
    assert_eq!(h.gitlab.creates(), 2, "two created ahead of demand");
    assert_eq!(h.unheld().await.len(), 2);
    quiet(&mut rx);
    assert_eq!(h.handle.status().stock.get("amd64"), Some(&2));

    h.gitlab.delay(Duration::from_secs(10));
    let stock = h.unheld().await;
    let start = h.start_for_one_job(&mut rx).await;
    let rec = h.record(start.runner_id).await;
    let gitlab_id = rec
        .gitlab_runner_id
        .expect("the record names its GitLab runner");
    assert!(stock.contains(&gitlab_id), "taken from the stock");
    let token = start
        .spec
        .env
        .iter()
        .find(|(k, _)| k == "CI_SERVER_TOKEN")
        .map(|(_, v)| v.expose_secret().to_owned());
    assert_eq!(
        token,
        Some(format!("glrt-fake-{gitlab_id}")),
        "the stocked runner's token"
    );
    assert_eq!(h.handle.status().stock.get("amd64"), Some(&1));

    // GitLab answers; the stock is whole again, the job's runner still its own.
    h.run_for(Duration::from_secs(11), TICK).await;
    assert_eq!(h.unheld().await.len(), 2);
    assert_eq!(h.gitlab.creates(), 3, "one more, to refill");
    assert!(h.gitlab.live().contains(&gitlab_id));
}

/// Bursts, a slow GitLab and reloads that shrink and then remove the
/// stock: at no point are more runners unheld than the pool's stock.
#[tokio::test(start_paused = true)]
async fn the_stock_never_exceeds_its_bound_and_goes_when_the_pool_does() {
    let mut h = Harness::start_with(vec![stocked_pool(3)], Clock::following_tokio()).await;
    let mut rx = h.connect(vec![]);
    h.gitlab.delay(Duration::from_millis(300));
    let mut next_job = 1;
    for burst in [5_u64, 1, 8, 0, 3] {
        h.pending_ids(next_job..next_job + burst);
        next_job += burst;
        for _ in 0..6 {
            h.run_for(TICK, TICK).await;
            let unheld = h.unheld().await.len();
            assert!(
                unheld <= 3,
                "burst of {burst}: {unheld} unheld GitLab runners"
            );
        }
        // The burst's runners run their jobs and exit.
        let (starts, _) = drain_msgs(&mut rx);
        h.pending_ids([]);
        for s in starts {
            h.agent_reports(report(s.runner_id, ContainerState::Exited, 0));
        }
        h.run_for(Duration::from_secs(2), TICK).await;
        assert!(h.unheld().await.len() <= 3);
    }
    assert_eq!(
        h.unheld().await.len(),
        3,
        "whole again once GitLab answered"
    );

    let mut smaller = stocked_pool(1);
    smaller.max_runners = 9;
    h.pools.replace(vec![smaller]);
    h.run_for(Duration::from_secs(2), TICK).await;
    assert_eq!(
        h.unheld().await.len(),
        1,
        "a reload to stock = 1 deletes two"
    );

    // New tags: a runner registered for the old ones serves no job now.
    let mut retagged = stocked_pool(1);
    retagged.tags = vec!["amd64".into(), "big".into()];
    let old = h.unheld().await;
    h.pools.replace(vec![retagged]);
    h.run_for(Duration::from_secs(2), TICK).await;
    let now = h.unheld().await;
    assert_eq!(now.len(), 1);
    assert!(old.is_disjoint(&now), "the old registration was replaced");

    h.pools
        .replace(vec![Pool::new("arm64", &["arm64"], Arch::Aarch64)]);
    h.run_for(Duration::from_secs(2), TICK).await;
    assert!(h.unheld().await.is_empty(), "a removed pool keeps no stock");
    assert_eq!(h.handle.status().stock.get("amd64"), None);
}

/// A coordinator killed with its stock in GitLab: the next one's collector
/// deletes the dead one's stock (marked, unrecorded, not its own) and keeps
/// its own. A coordinator that shuts down deletes its stock itself.
#[tokio::test(start_paused = true)]
async fn a_killed_coordinators_stock_is_collected_and_a_shutdown_deletes_its_own() {
    let mut h = Harness::start_with(vec![stocked_pool(2)], Clock::following_tokio()).await;
    let _rx = h.connect(vec![]);
    h.settle().await;
    let first = h.unheld().await;
    assert_eq!(first.len(), 2);

    h.crash_and_restart().await;
    let after = h.unheld().await;
    assert_eq!(after.len(), 4, "the new coordinator stocks its own");
    // The first collection runs 5 s after start.
    h.run_for(Duration::from_secs(6), TICK).await;
    let kept = h.unheld().await;
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        first.is_disjoint(&kept),
        "the dead coordinator's stock is gone"
    );
    assert_eq!(
        h.gitlab.creates(),
        4,
        "its own stock was not collected and made again"
    );

    // A second collection changes nothing.
    h.run_for(Duration::from_secs(61), TICK).await;
    assert_eq!(h.unheld().await, kept);

    h.shutdown.cancel();
    bounded("reconciler stops", h.task.take().unwrap())
        .await
        .unwrap();
    assert!(h.gitlab.live().is_empty(), "a shutdown deletes the stock");
}

/// GitLab refuses to create: the stock backs off instead of hammering it,
/// and the pool says why.
#[tokio::test(start_paused = true)]
async fn a_refused_stock_creation_backs_off() {
    let h = Harness::start_with(vec![stocked_pool(0)], Clock::following_tokio()).await;
    h.gitlab.fail_creates(true);
    h.pools.replace(vec![stocked_pool(2)]);
    h.run_for(Duration::from_secs(30), TICK).await;
    let tried = h.gitlab.creates();
    // 2 at start, then 2 per retry after 2, 4, 8 and 16 s (the first two
    // may overlap a retry): far below one per tick.
    assert!(tried <= 12, "{tried} creates in 30 s");
    assert!(
        h.handle.status().create_errors.contains_key("amd64"),
        "{tried} {:?}",
        h.handle.status()
    );
    h.gitlab.fail_creates(false);
    h.run_for(Duration::from_secs(70), TICK).await;
    assert_eq!(h.unheld().await.len(), 2);
    assert!(h.handle.status().create_errors.is_empty());
}
