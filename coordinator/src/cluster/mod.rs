//! Several coordinators on one PostgreSQL: who leads, and what the others
//! do meanwhile (ADR 0018).
//!
//! * [`lease`]: winning and keeping the leader lease; its epoch fences the
//!   leader's writes (`db/cluster.rs`) and its commands to agents.
//! * [`follower`]: a replica that does not hold the lease serves health,
//!   readiness (503, naming the leader) and metrics, refuses agent
//!   connections so agents move on to the next address, and watches the
//!   lease until it can take it.
//! * [`inbox`]: Job Hooks a follower accepts wait in the database for the
//!   leader.
//! * [`Replica`]: what each replica reports about itself for
//!   `autogit-coordinator cluster status`.
//!
//! Only the leader runs agent sessions, the reconciler, the scheduler,
//! GitLab polling, runner creation and deletion, and GC; `server.rs` starts
//! all of it once the lease is won and exits when it is lost, so a
//! supervisor restarts the process as a follower.

pub mod follower;
pub mod inbox;
pub mod lease;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::db::{self, Db, ReplicaRow};

/// This process, as the other replicas see it.
#[derive(Debug, Clone)]
pub struct Replica {
    pub id: String,
    pub hostname: String,
    pub http_addr: String,
    pub grpc_addr: String,
    pub started_at: i64,
}

impl Replica {
    /// A fresh identity for this process (a restart is a new replica, and
    /// so a new lease holder with a new epoch).
    pub fn new(advertise_host: Option<&str>, http: SocketAddr, grpc: SocketAddr) -> Self {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".into());
        let addr = |a: SocketAddr| match advertise_host {
            Some(h) => format!("{h}:{}", a.port()),
            None if a.ip().is_unspecified() => format!("{hostname}:{}", a.port()),
            None => a.to_string(),
        };
        Replica {
            id: uuid::Uuid::new_v4().to_string(),
            hostname: hostname.clone(),
            http_addr: addr(http),
            grpc_addr: addr(grpc),
            started_at: db::to_ms(time::OffsetDateTime::now_utc()),
        }
    }

    fn row(&self, now: i64) -> ReplicaRow {
        ReplicaRow {
            id: self.id.clone(),
            hostname: self.hostname.clone(),
            http_addr: self.http_addr.clone(),
            grpc_addr: self.grpc_addr.clone(),
            started_at: self.started_at,
            last_seen: now,
        }
    }
}

/// Report `replica` every `every` until `stop`.
pub async fn report_loop(db: Db, replica: Replica, every: Duration, stop: CancellationToken) {
    loop {
        match db.now_ms().await {
            Ok(now) => {
                if let Err(e) = db.report_replica(&replica.row(now)).await {
                    tracing::debug!(error = %e, "report this replica");
                }
            }
            Err(e) => tracing::debug!(error = %e, "read the database clock"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// `cluster status`: the lease and every replica seen within three lease
/// lengths.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub epoch: i64,
    /// The replica id holding the lease, if it is still running.
    pub leader: Option<String>,
    /// Milliseconds since the lease was taken, by the database's clock.
    pub lease_age_ms: Option<i64>,
    /// Milliseconds until it runs out unless renewed (negative: it has).
    pub lease_expires_in_ms: i64,
    pub replicas: Vec<ReplicaStatus>,
    /// Every change of leader, newest first (at most 20).
    pub recent_epochs: Vec<db::EpochRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    pub id: String,
    pub role: &'static str,
    pub hostname: String,
    pub http_addr: String,
    pub grpc_addr: String,
    pub started_at: i64,
    pub last_seen_ms_ago: i64,
}

pub async fn status(db: &Db, lease_ttl: Duration) -> Result<Status, db::DbError> {
    let now = db.now_ms().await?;
    let lease = db.lease().await?;
    let live = lease.expires_at > now;
    let replicas = db
        .replicas(now - 3 * lease_ttl.as_millis() as i64)
        .await?
        .into_iter()
        .map(|r| ReplicaStatus {
            role: if live && lease.holder.as_deref() == Some(r.id.as_str()) {
                "leader"
            } else {
                "follower"
            },
            last_seen_ms_ago: now - r.last_seen,
            id: r.id,
            hostname: r.hostname,
            http_addr: r.http_addr,
            grpc_addr: r.grpc_addr,
            started_at: r.started_at,
        })
        .collect();
    let mut recent_epochs = db.epochs().await?;
    recent_epochs.reverse();
    recent_epochs.truncate(20);
    Ok(Status {
        epoch: lease.epoch,
        leader: lease.holder.filter(|_| live),
        lease_age_ms: (lease.acquired_at > 0).then(|| now - lease.acquired_at),
        lease_expires_in_ms: lease.expires_at - now,
        replicas,
        recent_epochs,
    })
}

/// The leader's advertised HTTP address, if a live leader is known.
pub async fn leader_http_addr(db: &Db, lease_ttl: Duration) -> Option<String> {
    let s = status(db, lease_ttl).await.ok()?;
    s.replicas
        .into_iter()
        .find(|r| r.role == "leader")
        .map(|r| r.http_addr)
}
