//! One pass: pending demand, active runners and the fleet go into the pure
//! `scheduler::plan` (which also places each start, GPU devices included,
//! in `scheduler/placement.rs::place`); its starts and stops are executed
//! here, and the status operators see is published.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::refusals;
use super::view::{effective_pending, to_sched_runner};
use super::{Reconciler, ReconcilerStatus};
use crate::runners::Phase;
use crate::scheduler::{self, PlanInput};

impl Reconciler {
    pub(super) async fn reconcile(&mut self) {
        let now = self.clock.now_utc();
        let pools = self.cfg.pools.current();
        self.replace_outdated(&pools).await;
        let demand = self.demand.snapshot();
        let runners: Vec<scheduler::RunnerView> = self
            .active
            .values()
            .map(|a| to_sched_runner(a, now))
            .collect();
        let taken = self.active.values().filter_map(|a| a.rec.job_id).collect();
        let pending = effective_pending(&demand, &taken, &mut self.credits);
        for j in &demand.jobs {
            if j.pool.is_some() {
                self.job_seen.entry(j.job_id).or_insert(j.seen_at);
            }
        }
        if self.job_seen.len() > 100_000 {
            let cutoff = now - Duration::from_secs(24 * 3600);
            self.job_seen.retain(|_, t| *t > cutoff);
        }
        let input = PlanInput {
            // Each pool sized by its schedule windows active now.
            pools: pools.iter().map(|p| p.at(now)).collect(),
            pending,
            runners,
            // One fleet snapshot per pass.
            agents: self.fleet.scheduler_view(),
            strategy: self.cfg.strategy,
            now,
        };
        let refused = self.refusals.live(&input.pools, Instant::now());
        let plan = refusals::plan_around(&input, &refused);
        let mut unmet: BTreeMap<String, String> = plan
            .unmet
            .iter()
            .map(|u| {
                let reason = refusals::unmet_reason(&u.pool, &refused)
                    .unwrap_or_else(|| u.reason.to_string());
                (u.pool.clone(), reason)
            })
            .collect();
        for start in plan.starts {
            if refusals::blocked(&start.pool, start.placement.agent_id, &refused) {
                continue;
            }
            if let Some(b) = self.create_backoff.get(&start.pool)
                && Instant::now() < b.until
            {
                unmet
                    .entry(start.pool.clone())
                    .or_insert_with(|| format!("GitLab refused to create a runner: {}", b.error));
                continue;
            }
            let agent = input
                .agents
                .iter()
                .find(|a| a.id == start.placement.agent_id);
            let hostname = agent.map(|a| a.hostname.clone()).unwrap_or_default();
            // Placement preferred a warm agent; this one must pull first.
            let cold_image = input
                .pools
                .iter()
                .find(|p| p.name == start.pool)
                .map(|p| p.image_for(start.placement.arch))
                .filter(|image| agent.is_some_and(|a| !a.holds(image)))
                .map(str::to_owned);
            self.start_runner(&start.pool, start.placement, &hostname, cold_image)
                .await;
        }
        for stop in plan.stops {
            let until = Instant::now() + self.cfg.stop_grace;
            self.stop_runner(
                stop.runner_id,
                &format!("{:?}", stop.reason),
                until,
                Phase::Exited,
            )
            .await;
        }
        if unmet != self.logged_unmet {
            for (pool, reason) in &unmet {
                if self.logged_unmet.get(pool) != Some(reason) {
                    tracing::warn!(%pool, %reason, "pending jobs cannot get a runner");
                }
            }
            self.logged_unmet = unmet.clone();
        }
        self.tend_stock(&pools);
        self.publish_status(unmet);
    }

    /// Runners made from an earlier definition of a pool that a reload
    /// changed (image, command, tags, limits, ...) and that have no job are
    /// stopped, so the plan replaces them with runners of the new
    /// definition. Busy runners finish their job first; runners of removed
    /// pools are the plan's ([`scheduler::StopReason::PoolRemoved`]).
    async fn replace_outdated(&mut self, pools: &[scheduler::Pool]) {
        let outdated: Vec<_> = self
            .active
            .iter()
            .filter(|(_, a)| {
                a.stop.is_none()
                    && matches!(
                        a.rec.phase,
                        Phase::Provisioning | Phase::Starting | Phase::Idle
                    )
            })
            .filter(|(_, a)| {
                let current = pools.iter().find(|p| p.name == a.rec.pool);
                matches!((&a.spec, current), (Some(made), Some(now)) if !made.makes_same_runners_as(now))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in outdated {
            let until = Instant::now() + self.cfg.stop_grace;
            self.stop_runner(id, "PoolChanged", until, Phase::Exited)
                .await;
        }
    }

    fn publish_status(&self, unmet: BTreeMap<String, String>) {
        let mut st = ReconcilerStatus {
            unmet,
            ..Default::default()
        };
        for a in self.active.values() {
            if let Some(c) = &a.cold
                && matches!(a.rec.phase, Phase::Provisioning | Phase::Starting)
            {
                st.cold_starts.entry(a.rec.pool.clone()).or_insert_with(|| {
                    format!(
                        "runner starting on {}: pulling {} first (no agent that fits holds it yet)",
                        crate::edge::logsafe::clean(&c.hostname),
                        c.image
                    )
                });
            }
            let agent = a.rec.agent.to_string();
            st.gpus_in_use
                .extend(a.placement.gpus.iter().map(|g| format!("{agent}/{g}")));
            *st.per_agent.entry(agent).or_default() += 1;
            *st.runners
                .entry(a.rec.pool.clone())
                .or_default()
                .entry(a.rec.phase.to_string())
                .or_default() += 1;
        }
        st.stock = self.stock.counts();
        st.create_errors = self
            .create_backoff
            .iter()
            .map(|(p, b)| (p.clone(), b.error.clone()))
            .collect();
        self.handle.publish(st);
    }
}
