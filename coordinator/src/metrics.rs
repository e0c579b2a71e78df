//! Prometheus metrics (OpenMetrics text, via `prometheus-client`).
//!
//! Two kinds:
//! * event metrics, recorded where things happen: job wait and provisioning
//!   latency histograms ([`Metrics::job_wait`], [`Metrics::provisioned`]),
//!   GitLab API requests by endpoint and code ([`Metrics::gitlab_observer`]);
//! * state metrics, read from the live fleet, reconciler and demand at every
//!   scrape by [`StateCollector`]: agents by state and arch, GPUs by vendor
//!   and assignment, runners by pool and state, pending demand by pool,
//!   webhook deliveries by outcome, active gRPC sessions, certificate expiry,
//!   and each pool's `wait_objective` with the share of jobs that met it
//!   over 1 h and 24 h (from [`ReconcilerHandle::wait_shares`]).
//!   Series with a known label set (every agent state for every supported
//!   architecture, every runner phase and pending count for every configured
//!   pool) are exported at zero from the start, so an alert such
//!   as "no ready agent" fires on an empty fleet too.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::demand::DemandHandle;
use crate::fleet::Fleet;
use crate::runners::ReconcilerHandle;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GitLabLabels {
    endpoint: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabels {
    state: String,
    arch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GpuLabels {
    vendor: String,
    assigned: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunnerLabels {
    pool: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolWindowLabels {
    pool: String,
    window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentIdLabel {
    agent: String,
}

fn latency_histogram() -> Histogram {
    // 50 ms .. ~13 min
    Histogram::new(exponential_buckets(0.05, 2.0, 15))
}

/// The coordinator's metrics. Cheap to share (`Arc`).
pub struct Metrics {
    registry: Registry,
    job_wait: Family<PoolLabel, Histogram, fn() -> Histogram>,
    provisioning: Family<PoolLabel, Histogram, fn() -> Histogram>,
    gitlab_requests: Family<GitLabLabels, Counter>,
    leader: Gauge<i64>,
    leader_epoch: Gauge<i64>,
    leader_changes: Counter<u64>,
    sources: Arc<OnceLock<Sources>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Where state metrics are read from at scrape time.
#[derive(Clone, Debug)]
pub struct Sources {
    pub fleet: Fleet,
    pub reconciler: ReconcilerHandle,
    pub demand: Option<DemandHandle>,
    /// Unix seconds when the coordinator's server certificate expires.
    pub server_cert_expiry: i64,
    /// The pools in force: their series start at zero.
    pub pools: crate::pools::LivePools,
}

/// Agent states exported at zero when no agent is in them.
const AGENT_STATES: [crate::fleet::AgentState; 5] = {
    use crate::fleet::AgentState::*;
    [Enrolled, Ready, Unreachable, Lost, Revoked]
};

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("autogit");
        let job_wait = Family::<PoolLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let provisioning = Family::<PoolLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let gitlab_requests = Family::<GitLabLabels, Counter>::default();
        let leader = Gauge::<i64>::default();
        let leader_epoch = Gauge::<i64>::default();
        let leader_changes = Counter::<u64>::default();
        registry.register(
            "leader",
            "1 on the replica that holds the leader lease, 0 on followers",
            leader.clone(),
        );
        registry.register(
            "leader_epoch",
            "The lease epoch this replica last saw; it grows at every change of leader",
            leader_epoch.clone(),
        );
        registry.register(
            "leader_changes",
            "Changes of leader (epoch increases) this replica has seen",
            leader_changes.clone(),
        );
        registry.register(
            "job_wait_seconds",
            "Time from a job first seen pending to a runner taking it",
            job_wait.clone(),
        );
        registry.register(
            "runner_provisioning_seconds",
            "Time from deciding to start a runner to its container running",
            provisioning.clone(),
        );
        registry.register(
            "gitlab_requests",
            "GitLab API requests by endpoint and HTTP code",
            gitlab_requests.clone(),
        );
        let sources = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(StateCollector {
            sources: sources.clone(),
            seen_webhook: Mutex::new(HashSet::new()),
        }));
        Metrics {
            registry,
            job_wait,
            provisioning,
            gitlab_requests,
            leader,
            leader_epoch,
            leader_changes,
            sources,
        }
    }

    /// This replica's role and the epoch it saw; a higher epoch than the
    /// last one counts as a change of leader.
    pub fn set_leadership(&self, is_leader: bool, epoch: i64) {
        self.leader.set(i64::from(is_leader));
        let before = self.leader_epoch.get();
        if epoch > before {
            if before > 0 {
                self.leader_changes.inc();
            }
            self.leader_epoch.set(epoch);
        }
    }

    /// Attach the live state read at scrape time (once).
    pub fn attach(&self, sources: Sources) {
        let _ = self.sources.set(sources);
    }

    pub fn job_wait(&self, pool: &str, seconds: f64) {
        self.job_wait
            .get_or_create(&PoolLabel { pool: pool.into() })
            .observe(seconds);
    }

    pub fn provisioned(&self, pool: &str, seconds: f64) {
        self.provisioning
            .get_or_create(&PoolLabel { pool: pool.into() })
            .observe(seconds);
    }

    /// An observer for the GitLab client.
    pub fn gitlab_observer(self: &Arc<Self>) -> crate::gitlab::RequestObserver {
        let me = self.clone();
        crate::gitlab::RequestObserver(Arc::new(move |endpoint: &str, code: &str| {
            me.gitlab_requests
                .get_or_create(&GitLabLabels {
                    endpoint: endpoint.into(),
                    code: code.into(),
                })
                .inc();
        }))
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Reads fleet, reconciler and demand state at scrape time.
#[derive(Debug)]
struct StateCollector {
    sources: Arc<OnceLock<Sources>>,
    seen_webhook: Mutex<HashSet<String>>,
}

/// A gauge of fractional values (seconds, ratios).
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

fn emit<
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    M: EncodeMetric + TypedMetric + Default,
>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    family: &Family<L, M>,
) -> Result<(), std::fmt::Error> {
    let m = encoder.encode_descriptor(name, help, None, family.metric_type())?;
    family.encode(m)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(src) = self.sources.get() else {
            return Ok(());
        };
        let agents = src.fleet.snapshot();
        let status = src.reconciler.status();

        let by_state = Family::<AgentLabels, Gauge>::default();
        let gpus = Family::<GpuLabels, Gauge>::default();
        let cert = Family::<AgentIdLabel, Gauge>::default();
        for arch in crate::scheduler::Arch::ALL {
            for state in AGENT_STATES {
                let _ = by_state.get_or_create(&AgentLabels {
                    state: state.to_string(),
                    arch: arch.to_string(),
                });
            }
        }
        let mut assigned: HashSet<String> = HashSet::new();
        assigned.extend(status.gpus_in_use.iter().cloned());
        for a in &agents {
            by_state
                .get_or_create(&AgentLabels {
                    state: a.state.to_string(),
                    arch: a.arch.clone(),
                })
                .inc();
            for g in &a.gpus {
                let is = assigned.contains(&format!("{}/{}", a.id, g.uuid));
                gpus.get_or_create(&GpuLabels {
                    vendor: g.vendor.as_str().into(),
                    assigned: is.to_string(),
                })
                .inc();
            }
            if let Ok(t) = time::OffsetDateTime::parse(
                &a.cert_expires_at,
                &time::format_description::well_known::Rfc3339,
            ) {
                cert.get_or_create(&AgentIdLabel {
                    agent: a.id.clone(),
                })
                .set(t.unix_timestamp());
            }
        }
        emit(
            &mut encoder,
            "agents",
            "Agents by state and architecture",
            &by_state,
        )?;
        emit(
            &mut encoder,
            "gpus",
            "GPUs by vendor and whether a runner holds them",
            &gpus,
        )?;
        emit(
            &mut encoder,
            "agent_cert_expiry_timestamp_seconds",
            "When each agent's certificate expires",
            &cert,
        )?;

        let runners = Family::<RunnerLabels, Gauge>::default();
        for pool in src.pools.current().iter().map(|p| &p.name) {
            for phase in crate::runners::Phase::ALL {
                let _ = runners.get_or_create(&RunnerLabels {
                    pool: pool.clone(),
                    state: phase.as_str().into(),
                });
            }
        }
        for (pool, phases) in &status.runners {
            for (phase, n) in phases {
                runners
                    .get_or_create(&RunnerLabels {
                        pool: pool.clone(),
                        state: phase.clone(),
                    })
                    .set(i64::from(*n));
            }
        }
        emit(
            &mut encoder,
            "runners",
            "Active runners by pool and state",
            &runners,
        )?;

        let pending = Family::<PoolLabel, Gauge>::default();
        for pool in src.pools.current().iter().map(|p| &p.name) {
            let _ = pending.get_or_create(&PoolLabel { pool: pool.clone() });
        }
        if let Some(d) = &src.demand {
            for (pool, n) in d.snapshot().per_pool {
                pending.get_or_create(&PoolLabel { pool }).set(i64::from(n));
            }
            let s = d.stats();
            let hooks = Family::<OutcomeLabel, Counter>::default();
            for (outcome, n) in [
                ("accepted", s.webhooks.accepted),
                ("duplicate", s.webhooks.duplicate),
                ("unauthorized", s.webhooks.unauthorized),
                ("malformed", s.webhooks.malformed),
                ("ignored", s.webhooks.ignored),
                ("overloaded", s.webhooks.overloaded),
            ] {
                hooks
                    .get_or_create(&OutcomeLabel {
                        outcome: outcome.into(),
                    })
                    .inc_by(n);
                if let Ok(mut seen) = self.seen_webhook.lock() {
                    seen.insert(outcome.to_string());
                }
            }
            let m = encoder.encode_descriptor(
                "webhook_deliveries",
                "GitLab webhook deliveries by outcome",
                None,
                hooks.metric_type(),
            )?;
            hooks.encode(m)?;
        }
        emit(
            &mut encoder,
            "pending_jobs",
            "Pending jobs counted per pool",
            &pending,
        )?;

        let stocked = Family::<PoolLabel, Gauge>::default();
        for pool in src.pools.current().iter().filter(|p| p.stock > 0) {
            let n = status.stock.get(&pool.name).copied().unwrap_or(0);
            stocked
                .get_or_create(&PoolLabel {
                    pool: pool.name.clone(),
                })
                .set(i64::from(n));
        }
        emit(
            &mut encoder,
            "pool_stocked_runners",
            "GitLab runners in a pool's stock, created ahead of demand (pools with a stock only)",
            &stocked,
        )?;

        let objective = Family::<PoolLabel, FloatGauge>::default();
        let met_ratio = Family::<PoolWindowLabels, FloatGauge>::default();
        let measured = Family::<PoolWindowLabels, Gauge>::default();
        for pool in src.pools.current().iter() {
            let Some(shares) = src.reconciler.wait_shares(pool) else {
                continue;
            };
            objective
                .get_or_create(&PoolLabel {
                    pool: pool.name.clone(),
                })
                .set(shares.objective.as_secs_f64());
            for (window, tally) in [("1h", shares.last_hour), ("24h", shares.last_day)] {
                let labels = PoolWindowLabels {
                    pool: pool.name.clone(),
                    window: window.into(),
                };
                measured.get_or_create(&labels).set(i64::from(tally.total));
                // No job measured: no ratio (an alert on it stays quiet).
                if let Some(r) = tally.ratio() {
                    met_ratio.get_or_create(&labels).set(r);
                }
            }
        }
        emit(
            &mut encoder,
            "pool_wait_objective_seconds",
            "How long a job of the pool should wait for its runner at most (wait_objective)",
            &objective,
        )?;
        emit(
            &mut encoder,
            "pool_wait_objective_met_ratio",
            "Share of the pool's jobs measured in the window whose wait met its objective",
            &met_ratio,
        )?;
        emit(
            &mut encoder,
            "pool_wait_objective_jobs",
            "Jobs of the pool whose wait was measured against its objective in the window",
            &measured,
        )?;

        let sessions = Gauge::<i64>::default();
        sessions.set(src.fleet.connected_count() as i64);
        let m = encoder.encode_descriptor(
            "grpc_sessions",
            "Active agent gRPC sessions",
            None,
            sessions.metric_type(),
        )?;
        sessions.encode(m)?;
        let server = Gauge::<i64>::default();
        server.set(src.server_cert_expiry);
        let m = encoder.encode_descriptor(
            "server_cert_expiry_timestamp_seconds",
            "When the coordinator's TLS server certificate expires",
            None,
            server.metric_type(),
        )?;
        server.encode(m)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use time::OffsetDateTime;

    use super::*;
    use crate::scheduler::{Arch, Pool};

    /// The value of the series `name{labels}` in an exposition.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// The exposition of a coordinator with no agents, this reconciler and
    /// these pools.
    fn exposition(reconciler: ReconcilerHandle, pools: Vec<Pool>) -> String {
        let secs = Duration::from_secs;
        let metrics = Metrics::new();
        metrics.attach(Sources {
            fleet: Fleet::new(
                &[],
                &[],
                crate::fleet::Timings {
                    heartbeat_interval: secs(1),
                    unreachable_after: secs(3),
                    lost_after: secs(10),
                },
            ),
            reconciler,
            demand: None,
            server_cert_expiry: 0,
            pools: crate::pools::LivePools::new(pools),
        });
        metrics.encode().unwrap()
    }

    #[test]
    fn wait_objective_gauges_report_the_share_met_per_window() {
        let mut fast = Pool::new("fast", &["fast"], Arch::X86_64);
        fast.wait_objective = Some(Duration::from_secs(30));
        let mut quiet = Pool::new("quiet", &["quiet"], Arch::X86_64);
        quiet.wait_objective = Some(Duration::from_millis(1500));
        let plain = Pool::new("plain", &["plain"], Arch::X86_64);
        let pools = vec![fast, quiet, plain];
        let reconciler = ReconcilerHandle::default();
        let now = OffsetDateTime::now_utc();
        let secs = Duration::from_secs;
        for wait in [secs(10), secs(30), secs(45)] {
            reconciler.record_wait(&pools, "fast", wait, now);
        }
        // Two hours ago: in the 24 h window only.
        reconciler.record_wait(&pools, "fast", secs(1), now - time::Duration::hours(2));
        // A pool without an objective records nothing.
        reconciler.record_wait(&pools, "plain", secs(1), now);

        let text = exposition(reconciler, pools);
        let v = |series: &str| value(&text, series);

        assert_eq!(
            v("autogit_pool_wait_objective_seconds{pool=\"fast\"}"),
            Some(30.0),
            "{text}"
        );
        assert_eq!(
            v("autogit_pool_wait_objective_seconds{pool=\"quiet\"}"),
            Some(1.5)
        );
        let ratio = |pool: &str, window: &str| {
            v(&format!(
                "autogit_pool_wait_objective_met_ratio{{pool=\"{pool}\",window=\"{window}\"}}"
            ))
        };
        let jobs = |pool: &str, window: &str| {
            v(&format!(
                "autogit_pool_wait_objective_jobs{{pool=\"{pool}\",window=\"{window}\"}}"
            ))
        };
        assert_eq!(ratio("fast", "1h"), Some(2.0 / 3.0), "{text}");
        assert_eq!(jobs("fast", "1h"), Some(3.0));
        assert_eq!(ratio("fast", "24h"), Some(0.75));
        assert_eq!(jobs("fast", "24h"), Some(4.0));
        // An objective but no job yet: counted at zero, no ratio to alert on.
        assert_eq!(jobs("quiet", "1h"), Some(0.0));
        assert_eq!(ratio("quiet", "1h"), None, "{text}");
        let plain = text
            .lines()
            .filter(|l| l.starts_with("autogit_pool_wait_objective") && l.contains("\"plain\""));
        assert_eq!(plain.count(), 0, "no objective, no series: {text}");
    }

    #[test]
    fn a_pool_with_a_stock_has_a_stocked_runners_gauge_from_zero() {
        let mut stocked = Pool::new("stocked", &["s"], Arch::X86_64);
        stocked.stock = 2;
        let plain = Pool::new("plain", &["plain"], Arch::X86_64);
        let text = exposition(ReconcilerHandle::default(), vec![stocked, plain]);
        assert_eq!(
            value(&text, "autogit_pool_stocked_runners{pool=\"stocked\"}"),
            Some(0.0),
            "nothing stocked yet: {text}"
        );
        assert!(
            !text.contains("autogit_pool_stocked_runners{pool=\"plain\"}"),
            "no stock, no series: {text}"
        );
    }
}
