//! `serve`: open the store and the listeners, serve as a follower until this
//! replica holds the leader lease (at once on SQLite), then build every
//! part of the coordinator, run it, and shut it down in order (listeners,
//! then background tasks, then state) within a deadline. A leader that
//! loses its lease stops acting and returns an error: the process exits and
//! its supervisor starts it again, as a follower (ADR 0018).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::cluster::{self, follower, lease};
use crate::config::Config;
use crate::db::{Backend, Db, Fence};
use crate::enroll::Enroller;
use crate::fleet::session::Sessions;
use crate::fleet::{self, Fleet, Timings};
use crate::gitlab::{GitLabClient, GitLabClientConfig, SharedGitLab};
use crate::reload::{ConfigSource, Reloader};
use crate::runners::{Reconciler, ReconcilerConfig, ReconcilerHandle};
use crate::{demand, grpc, http, pki};

/// How long shutdown may take before tasks are abandoned.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// The addresses actually bound (ports may have been 0).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub grpc: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
}

/// Run the coordinator until `shutdown` is cancelled. `on_bound` is called
/// once the listeners are bound. `reload_from` reads the config again for a
/// reload (SIGHUP, `POST /api/v1/reload`); `None` refuses reloads.
pub async fn run(
    cfg: Config,
    reload_from: Option<ConfigSource>,
    shutdown: CancellationToken,
    on_bound: impl FnOnce(Bound),
) -> anyhow::Result<()> {
    raise_open_file_limit();
    // Before anything is opened: the data dir and its secrets are private,
    // whatever an older release or the image left.
    if cfg.data_dir.exists() {
        crate::datadir::make_private_logged(&cfg.data_dir)?;
    }
    let ca = Arc::new(pki::load(&cfg.data_dir)?);
    let database = cfg.database_url();
    let db = Db::connect(&database)
        .await
        .context("open state database")?;
    tracing::info!(%database, "state store opened");
    let (chain, key) = ca
        .issue_server_cert(&cfg.server_names(), cfg.tls.server_cert_ttl)
        .context("issue coordinator server certificate")?;
    let tls = autogit_certs::tls::server_config(ca.cert_pem(), &chain, &key)
        .context("build TLS config")?;

    let grpc_listener = TcpListener::bind(cfg.grpc_listen)
        .await
        .with_context(|| format!("bind gRPC listener {}", cfg.grpc_listen))?;
    let http_listener = TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("bind HTTP listener {}", cfg.http_listen))?;
    let bound = Bound {
        grpc: grpc_listener.local_addr()?,
        http: http_listener.local_addr()?,
    };
    tracing::info!(grpc = %bound.grpc, http = %bound.http, ca_fingerprint = %ca.fingerprint(), "coordinator listening");
    on_bound(bound);
    let grpc_listener = Arc::new(grpc_listener);
    let http_listener = Arc::new(http_listener);
    let http_tls = if cfg.http_tls {
        let mut c = (*autogit_certs::tls::server_config(ca.cert_pem(), &chain, &key)
            .context("build HTTPS config")?)
        .clone();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(Arc::new(c))
    } else {
        None
    };
    let metrics = Arc::new(crate::metrics::Metrics::new());

    // Leadership: followers serve health and readiness until the lease is theirs.
    let replica = cluster::Replica::new(
        cfg.cluster.advertise_host.as_deref(),
        bound.http,
        bound.grpc,
    );
    let timing = lease::LeaseTiming {
        ttl: cfg.cluster.lease_ttl,
    };
    // The lease and the replica reports on connections of their own: a
    // renewal must never wait behind the fleet's writes.
    let lease_db = match db.backend() {
        Backend::Postgres => Db::connect_pooled(&database, 2)
            .await
            .context("open the lease's database connections")?,
        Backend::Sqlite => db.clone(),
    };
    let store = lease::DbLease {
        db: lease_db.clone(),
    };
    let reporting = CancellationToken::new();
    let reporter = tokio::spawn(cluster::report_loop(
        lease_db.clone(),
        replica.clone(),
        timing.renew_every(),
        reporting.clone(),
    ));
    // The HTTP edge's state; the leader replaces the live parts. A
    // follower's is this, read-only, from the database.
    let pools = crate::pools::LivePools::new(cfg.effective_pools());
    let timings = Timings {
        heartbeat_interval: cfg.agents.heartbeat_interval,
        unreachable_after: cfg.agents.unreachable_after,
        lost_after: cfg.agents.lost_after,
    };
    let edge = {
        let audit = Audit::new(db.clone());
        http::HttpState {
            db: db.clone(),
            fleet: Fleet::new(&[], &[], timings),
            reconciler: ReconcilerHandle::default(),
            demand: None,
            pools: pools.clone(),
            reloader: Reloader::new(None, cfg.clone(), pools.clone(), audit.clone()),
            audit,
            ca_fingerprint: ca.fingerprint(),
            metrics: Some(metrics.clone()),
            metrics_access: cfg.metrics,
            sessions: http::SessionSettings {
                ttl: cfg.session_ttl,
                secure: cfg.http_tls,
            },
            proxy: Arc::new(http::proxy::ProxyTrust::new(&cfg.proxy, &cfg.roles)),
            oidc: oidc(&cfg)?,
            serving: http::Serving::Leader,
        }
    };
    let won = match lease::try_once(&store, &replica.id, timing).await {
        Some(won) => Some(won),
        None => {
            tracing::info!(replica = %replica.id, "following: another replica leads; waiting for the lease");
            let routes = http::router(http::HttpState {
                serving: http::Serving::Follower {
                    lease_ttl: timing.ttl,
                    webhook_secret: cfg.demand.webhook_secret.clone(),
                },
                ..edge.clone()
            });
            let listeners = follower::Listeners {
                http: http_listener.clone(),
                http_tls: http_tls.clone(),
                http_limits: http::HttpLimits::from(&cfg.limits),
                grpc: grpc_listener.clone(),
            };
            let following = follower::serve(listeners, routes);
            let won = lease::acquire(&store, &replica.id, timing, &shutdown, |epoch| {
                metrics.set_leadership(false, epoch)
            })
            .await;
            following.stop().await;
            won
        }
    };
    let Some(won) = won else {
        reporting.cancel();
        let _ = reporter.await;
        lease_db.close().await;
        db.close().await;
        return Ok(());
    };
    metrics.set_leadership(true, won.epoch);
    tracing::info!(replica = %replica.id, epoch = won.epoch, "leading: this replica holds the lease");
    let unfenced = db.clone();
    let db = db.fenced(Fence {
        holder: replica.id.clone(),
        epoch: won.epoch,
    });
    let lost = CancellationToken::new();
    let keeper = {
        let (store, holder, lost, shutdown) = (
            store.clone(),
            replica.id.clone(),
            lost.clone(),
            shutdown.clone(),
        );
        tokio::spawn(
            async move { lease::keep(&store, &holder, won, timing, &lost, &shutdown).await },
        )
    };

    let audit = Audit::new(db.clone());
    let fleet = Fleet::new(
        &db.list_agents().await?,
        &db.revoked_agent_ids().await?,
        timings,
    );

    let enroller = Enroller::new(
        db.clone(),
        ca.clone(),
        fleet.clone(),
        audit.clone(),
        cfg.tls.agent_cert_ttl,
    );
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let sessions = Sessions {
        fleet: fleet.clone(),
        db: db.clone(),
        audit: audit.clone(),
        events: events_tx,
    };

    let listeners = CancellationToken::new();
    let tasks = CancellationToken::new();

    // Demand and runners exist only when a GitLab instance is configured.
    let mut background = Vec::new();
    let mut reconciler_handle = ReconcilerHandle::default();
    let mut demand_handle = None;
    match &cfg.gitlab {
        Some(g) => {
            let mut client_cfg = GitLabClientConfig::new(g.url.clone(), g.token.clone());
            client_cfg.requests_per_minute = Some(g.requests_per_minute);
            client_cfg.runner_requests_per_minute = Some(g.runner_requests_per_minute);
            client_cfg.job_requests_per_minute = Some(g.job_requests_per_minute);
            client_cfg.observer = Some(metrics.gitlab_observer());
            let gitlab: SharedGitLab =
                Arc::new(GitLabClient::new(client_cfg).context("build GitLab client")?);
            let (demand, activity) = demand::spawn(
                gitlab.clone(),
                pools.clone(),
                cfg.demand.clone(),
                tasks.clone(),
            );
            demand_handle = Some(demand.clone());
            // Job Hooks followers kept while this replica was not leading.
            background.push(tokio::spawn(cluster::inbox::drain_loop(
                db.clone(),
                demand.clone(),
                Duration::from_millis(500),
                tasks.clone(),
            )));
            let reconciler = Reconciler::new(
                ReconcilerConfig {
                    pools: pools.clone(),
                    metrics: Some(metrics.clone()),
                    strategy: cfg.scheduler.strategy,
                    runner_url: g.runner_url.clone().unwrap_or_else(|| g.url.clone()),
                    cluster: ca.fingerprint().to_string()[..16].to_string(),
                    provision_timeout: cfg.scheduler.provision_timeout,
                    gc_interval: cfg.scheduler.gc_interval,
                    stop_grace: cfg.scheduler.stop_grace,
                },
                db.clone(),
                fleet.clone(),
                gitlab,
                demand,
            );
            reconciler_handle = reconciler.handle();
            background.push(tokio::spawn(reconciler.run(
                events_rx,
                activity,
                tasks.clone(),
            )));
            tracing::info!(gitlab = %g.url, "provisioning runners for GitLab");
        }
        None => {
            tracing::warn!(
                "no [gitlab] configured: agents can enroll, but no runners are provisioned"
            );
            let tasks = tasks.clone();
            background.push(tokio::spawn(async move {
                let mut events_rx = events_rx;
                loop {
                    tokio::select! {
                        _ = tasks.cancelled() => break,
                        ev = events_rx.recv() => if ev.is_none() { break },
                    }
                }
            }));
        }
    }
    let server_cert_expiry = autogit_certs::CertInfo::from_pem(&chain)
        .map(|i| i.not_after.unix_timestamp())
        .unwrap_or(0);
    metrics.attach(crate::metrics::Sources {
        fleet: fleet.clone(),
        reconciler: reconciler_handle.clone(),
        demand: demand_handle.clone(),
        server_cert_expiry,
        pools: pools.clone(),
    });
    // Agents pull the pools' images ahead of demand (`fleet/warm.rs`).
    background.push(tokio::spawn(fleet::warm::run(
        fleet.clone(),
        pools.clone(),
        tasks.clone(),
    )));
    let reloader = Reloader::new(reload_from, cfg.clone(), pools.clone(), audit.clone());
    background.push(tokio::spawn(reload_on_sighup(
        reloader.clone(),
        tasks.clone(),
    )));
    let router = http::router(http::HttpState {
        db: db.clone(),
        fleet: fleet.clone(),
        audit: audit.clone(),
        reconciler: reconciler_handle,
        demand: demand_handle,
        reloader,
        ..edge
    });
    let grpc_task = tokio::spawn(grpc::serve(
        grpc_listener.clone(),
        tls,
        grpc::GrpcLimits::from(&cfg.limits),
        grpc::EnrollmentService::new(enroller.clone(), &cfg.limits),
        grpc::FleetService::new(sessions, enroller, &cfg.limits),
        listeners.clone(),
    ));
    let http_task = tokio::spawn(http::serve(
        http_listener.clone(),
        http_tls,
        router,
        http::HttpLimits::from(&cfg.limits),
        listeners.clone(),
    ));
    let monitor = tokio::spawn(fleet::monitor::run(
        fleet.clone(),
        db.clone(),
        audit.clone(),
        cfg.agents.persist_interval,
        tasks.clone(),
    ));

    background.push(tokio::spawn(crate::admin::sessions::purge_loop(
        db.clone(),
        crate::admin::sessions::PURGE_INTERVAL,
        tasks.clone(),
    )));

    let lost_leadership = tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = lost.cancelled() => true,
    };
    if lost_leadership {
        // Stop acting at once: no session, no command, no write after this.
        tracing::error!(replica = %replica.id, epoch = won.epoch, "lost the leader lease: stopping");
    } else {
        tracing::info!("shutting down");
    }
    let drain = async {
        listeners.cancel();
        fleet.close_all_sessions();
        let _ = grpc_task.await;
        let _ = http_task.await;
        tasks.cancel();
        let _ = monitor.await;
        for t in background {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(DRAIN_DEADLINE, drain).await.is_err() {
        tracing::warn!("shutdown deadline passed; abandoning remaining tasks");
    }
    let why = keeper.await.ok().flatten();
    reporting.cancel();
    let _ = reporter.await;
    if why.is_none() {
        // A clean stop hands the lease on at once.
        if let Ok(now) = lease_db.now_ms().await {
            let _ = lease_db.release_lease(&replica.id, won.epoch, now).await;
        }
    }
    lease_db.close().await;
    unfenced.close().await;
    match why {
        Some(why) => anyhow::bail!(
            "lost the leader lease (epoch {}, {why:?}); exiting so this replica restarts as a follower",
            won.epoch
        ),
        None => Ok(()),
    }
}

/// Single sign-on (`[oidc]`): the client secret is read at start, so a
/// missing one stops startup with the key named.
fn oidc(cfg: &Config) -> anyhow::Result<Option<Arc<crate::admin::oidc::Oidc>>> {
    let Some(o) = &cfg.oidc else { return Ok(None) };
    let secret = o
        .client_secret(|name| std::env::var(name).ok())
        .map_err(|(key, problem)| anyhow::anyhow!("invalid configuration: {key}: {problem}"))?;
    Ok(Some(Arc::new(
        crate::admin::oidc::Oidc::new(o.clone(), secret, cfg.roles.clone())
            .map_err(anyhow::Error::msg)?,
    )))
}

/// SIGHUP reloads the config (see [`crate::reload`]); the outcome is logged
/// and audited there.
async fn reload_on_sighup(reloader: Reloader, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: reload through the API instead");
        return;
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            got = hup.recv() => {
                if got.is_none() {
                    return;
                }
                tracing::info!("SIGHUP: reloading the config");
                let _ = reloader.reload("signal").await;
            }
        }
    }
}

/// Every agent session holds a socket: raise the soft open-file limit to the
/// hard limit so a large fleet does not hit the common 1,024 default.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "could not raise the open-file limit"),
        },
        Ok((soft, _)) if soft < 4096 => {
            tracing::warn!(
                limit = soft,
                "open-file limit is low: each agent session needs one descriptor"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "read the open-file limit"),
    }
}
