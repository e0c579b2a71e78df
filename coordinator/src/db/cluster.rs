//! Leadership and replicas (ADR 0018): the lease row, its epoch log, and
//! the fence that every leader write checks.
//!
//! The lease's clock is the database's (PostgreSQL's `clock_timestamp()`),
//! so replicas with skewed clocks still agree on when a lease ends. SQLite
//! is one host, whose clock it uses.

use super::{Db, DbError, Pool, on_pool};

/// The lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LeaseRow {
    pub holder: Option<String>,
    pub epoch: i64,
    pub acquired_at: i64,
    pub expires_at: i64,
}

/// A replica as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReplicaRow {
    pub id: String,
    pub hostname: String,
    pub http_addr: String,
    pub grpc_addr: String,
    pub started_at: i64,
    pub last_seen: i64,
}

/// One change of leader.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct EpochRow {
    pub epoch: i64,
    pub holder: String,
    pub acquired_at: i64,
    /// Until when its lease ran (or runs, if it is the current one).
    pub expires_at: i64,
}

/// Which leadership a [`Db`]'s writes are made under: a write commits only
/// while the lease still carries this holder and epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub epoch: i64,
}

/// Checks the fence inside a transaction `$tx` of a fenced `Db` `$db`:
/// `Err(DbError::Fenced)` out of the enclosing function when another
/// leader has taken over. On PostgreSQL the `UPDATE` also locks the lease
/// row until commit, so a takeover waits for this write or this write sees
/// the takeover; SQLite's writer lock does the same.
macro_rules! check_fence {
    ($db:expr, $tx:expr) => {
        if let Some(f) = &$db.fence {
            let n = sqlx::query(
                "UPDATE leader_lease SET epoch = epoch WHERE id = 1 AND holder = $1 AND epoch = $2",
            )
            .bind(&f.holder)
            .bind(f.epoch)
            .execute(&mut *$tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Err($crate::db::DbError::Fenced { epoch: f.epoch });
            }
        }
    };
}
pub(crate) use check_fence;

impl Db {
    /// This store with every leader write fenced by `fence`.
    pub fn fenced(&self, fence: Fence) -> Db {
        Db {
            fence: Some(std::sync::Arc::new(fence)),
            ..self.clone()
        }
    }

    /// The epoch this handle's writes are fenced by, if any.
    pub fn epoch(&self) -> Option<i64> {
        self.fence.as_ref().map(|f| f.epoch)
    }

    /// The database's clock, Unix milliseconds.
    pub async fn now_ms(&self) -> Result<i64, DbError> {
        Ok(match &self.pool {
            Pool::Postgres(p) => {
                sqlx::query_scalar("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT")
                    .fetch_one(p)
                    .await?
            }
            Pool::Sqlite(_) => super::to_ms(time::OffsetDateTime::now_utc()),
        })
    }

    pub async fn lease(&self) -> Result<LeaseRow, DbError> {
        let q = "SELECT holder, epoch, acquired_at, expires_at FROM leader_lease WHERE id = 1";
        Ok(on_pool!(self, p => sqlx::query_as(q).fetch_one(p).await)?)
    }

    /// Take the lease for `holder` if nobody holds it at `now` (or at once
    /// with `force`: a single coordinator on SQLite deposes any earlier
    /// process on the same file): the epoch grows by one and is logged.
    /// `None` when another holder's lease runs.
    pub async fn acquire_lease(
        &self,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<Option<i64>, DbError> {
        self.take_lease(holder, now, ttl_ms, false).await
    }

    pub async fn take_lease(
        &self,
        holder: &str,
        now: i64,
        ttl_ms: i64,
        force: bool,
    ) -> Result<Option<i64>, DbError> {
        Ok(on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let epoch: Option<i64> = sqlx::query_scalar(
                "UPDATE leader_lease SET holder = $1, epoch = epoch + 1, acquired_at = $2, expires_at = $3 \
                 WHERE id = 1 AND (expires_at <= $2 OR $4) RETURNING epoch",
            )
            .bind(holder)
            .bind(now)
            .bind(now + ttl_ms)
            .bind(force)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(epoch) = epoch {
                // A forced take ends the lease it replaces now.
                sqlx::query(
                    "UPDATE leader_epochs SET expires_at = $1 WHERE epoch = $2 AND expires_at > $1",
                )
                .bind(now)
                .bind(epoch - 1)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO leader_epochs (epoch, holder, acquired_at, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(epoch)
                .bind(holder)
                .bind(now)
                .bind(now + ttl_ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            epoch
        }))
    }

    /// Extend `holder`'s lease of `epoch` to `now + ttl`, if it still holds
    /// it and it has not run out. False: leadership is lost.
    pub async fn renew_lease(
        &self,
        holder: &str,
        epoch: i64,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, DbError> {
        let q = "UPDATE leader_lease SET expires_at = $1 \
                 WHERE id = 1 AND holder = $2 AND epoch = $3 AND expires_at > $4";
        let renewed = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query(q)
                .bind(now + ttl_ms)
                .bind(holder)
                .bind(epoch)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                sqlx::query("UPDATE leader_epochs SET expires_at = $1 WHERE epoch = $2")
                    .bind(now + ttl_ms)
                    .bind(epoch)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            n == 1
        });
        Ok(renewed)
    }

    /// Give the lease up at once (a clean shutdown), so a follower need not
    /// wait for it to run out.
    /// Its epoch's record ends at `now`.
    pub async fn release_lease(&self, holder: &str, epoch: i64, now: i64) -> Result<(), DbError> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query(
                "UPDATE leader_lease SET expires_at = 0 WHERE id = 1 AND holder = $1 AND epoch = $2",
            )
            .bind(holder)
            .bind(epoch)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                sqlx::query(
                    "UPDATE leader_epochs SET expires_at = $1 WHERE epoch = $2 AND expires_at > $1",
                )
                .bind(now)
                .bind(epoch)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Every change of leader, oldest first.
    pub async fn epochs(&self) -> Result<Vec<EpochRow>, DbError> {
        let q = "SELECT epoch, holder, acquired_at, expires_at FROM leader_epochs ORDER BY epoch";
        Ok(on_pool!(self, p => sqlx::query_as(q).fetch_all(p).await)?)
    }

    /// Record (or refresh) this replica.
    pub async fn report_replica(&self, r: &ReplicaRow) -> Result<(), DbError> {
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO replicas (id, hostname, http_addr, grpc_addr, started_at, last_seen) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen",
            )
            .bind(&r.id)
            .bind(&r.hostname)
            .bind(&r.http_addr)
            .bind(&r.grpc_addr)
            .bind(r.started_at)
            .bind(r.last_seen)
            .execute(p)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    /// Replicas seen since `since`, oldest first; older ones are deleted.
    pub async fn replicas(&self, since: i64) -> Result<Vec<ReplicaRow>, DbError> {
        Ok(on_pool!(self, p => {
            sqlx::query("DELETE FROM replicas WHERE last_seen < $1").bind(since).execute(p).await?;
            sqlx::query_as(
                "SELECT id, hostname, http_addr, grpc_addr, started_at, last_seen FROM replicas \
                 ORDER BY started_at, id",
            )
            .fetch_all(p)
            .await?
        }))
    }

    /// Keep a Job Hook a follower accepted, unless `max` are waiting
    /// already (false: refused, so GitLab sees the failure).
    pub async fn inbox_webhook(&self, body: &[u8], now: i64, max: i64) -> Result<bool, DbError> {
        let q = "INSERT INTO webhook_inbox (received_at, body) \
                 SELECT $1, $2 WHERE (SELECT COUNT(*) FROM webhook_inbox) < $3";
        let n = on_pool!(self, p => {
            sqlx::query(q).bind(now).bind(body).bind(max).execute(p).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// Take up to `limit` kept Job Hooks, oldest first, deleting them in
    /// the same transaction (the leader's handle is fenced, so a deposed
    /// leader takes none).
    pub async fn take_inbox(&self, limit: i64) -> Result<Vec<Vec<u8>>, DbError> {
        Ok(on_pool!(self, p => {
            let mut tx = p.begin().await?;
            check_fence!(self, tx);
            let rows: Vec<(i64, Vec<u8>)> =
                sqlx::query_as("SELECT id, body FROM webhook_inbox ORDER BY id LIMIT $1")
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
            if let Some((last, _)) = rows.last() {
                sqlx::query("DELETE FROM webhook_inbox WHERE id <= $1")
                    .bind(last)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            rows.into_iter().map(|(_, body)| body).collect()
        }))
    }
}
