//! Winning and keeping the leader lease (ADR 0018).
//!
//! [`acquire`] waits until this replica holds the lease; [`keep`] renews it
//! and cancels `lost` when leadership cannot be proven any longer. The rule
//! that keeps a paused or cut-off leader from acting: a lease obtained by a
//! request that *started* at local instant `t` runs in the database until
//! at least `t + ttl` (the database stamps it later than `t`). The leader
//! therefore stops at `t + ttl - margin` unless a later renewal succeeded,
//! whatever the database or the network are doing. A process that was
//! paused past that instant notices first thing when it runs again.
//!
//! The store is a trait so these rules run against a fake under a paused
//! tokio clock (the tests below); the server uses [`Db`].

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::db::{Db, DbError};

/// How long a lease runs, and what follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub ttl: Duration,
}

impl LeaseTiming {
    /// A holder renews this often: three tries per lease.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// A leader stops acting this long before its lease could end.
    pub fn margin(&self) -> Duration {
        self.ttl / 5
    }

    fn ttl_ms(&self) -> i64 {
        self.ttl.as_millis() as i64
    }
}

/// Where the lease lives.
pub trait LeaseStore: Send + Sync {
    fn now_ms(&self) -> impl Future<Output = Result<i64, DbError>> + Send;
    fn take(
        &self,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> impl Future<Output = Result<Option<i64>, DbError>> + Send;
    fn renew(
        &self,
        holder: &str,
        epoch: i64,
        now: i64,
        ttl_ms: i64,
    ) -> impl Future<Output = Result<bool, DbError>> + Send;
    /// The epoch in force, whoever holds it (followers watch it).
    fn epoch(&self) -> impl Future<Output = Result<i64, DbError>> + Send;
}

/// The database as the lease store. A single coordinator on SQLite takes
/// the lease at once (`force`): the newest process on the file leads, and
/// an older one still running is fenced off.
#[derive(Clone, Debug)]
pub struct DbLease {
    pub db: Db,
}

impl LeaseStore for DbLease {
    async fn now_ms(&self) -> Result<i64, DbError> {
        self.db.now_ms().await
    }
    async fn take(&self, holder: &str, now: i64, ttl_ms: i64) -> Result<Option<i64>, DbError> {
        let force = self.db.backend() == crate::db::Backend::Sqlite;
        self.db.take_lease(holder, now, ttl_ms, force).await
    }
    async fn renew(
        &self,
        holder: &str,
        epoch: i64,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, DbError> {
        self.db.renew_lease(holder, epoch, now, ttl_ms).await
    }
    async fn epoch(&self) -> Result<i64, DbError> {
        Ok(self.db.lease().await?.epoch)
    }
}

/// Leadership won: the epoch, and the local instant by which it must have
/// been renewed or given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Won {
    pub epoch: i64,
    pub act_until: Instant,
}

/// One try for the lease.
pub async fn try_once(store: &impl LeaseStore, holder: &str, timing: LeaseTiming) -> Option<Won> {
    let started = Instant::now();
    let attempt = async {
        let now = store.now_ms().await?;
        store.take(holder, now, timing.ttl_ms()).await
    };
    match tokio::time::timeout(timing.renew_every(), attempt).await {
        Ok(Ok(Some(epoch))) => Some(Won {
            epoch,
            act_until: started + timing.ttl - timing.margin(),
        }),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "lease: the database refused or failed the take");
            None
        }
        Err(_) => {
            tracing::warn!("lease: the database did not answer in time");
            None
        }
    }
}

/// Try for the lease every `renew_every` until it is won (`Some`) or
/// `shutdown` (`None`). `seen` hears every epoch observed meanwhile.
pub async fn acquire(
    store: &impl LeaseStore,
    holder: &str,
    timing: LeaseTiming,
    shutdown: &CancellationToken,
    mut seen: impl FnMut(i64),
) -> Option<Won> {
    loop {
        let started = Instant::now();
        if let Some(won) = try_once(store, holder, timing).await {
            return Some(won);
        }
        if let Ok(Ok(epoch)) = tokio::time::timeout(timing.renew_every(), store.epoch()).await {
            seen(epoch);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep_until(started + timing.renew_every()) => {}
        }
    }
}

/// Why [`keep`] gave leadership up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// Another replica holds the lease now.
    TakenOver,
    /// No renewal succeeded before the lease could have ended.
    Unproven,
}

/// Renew `won` every `renew_every` until `shutdown` (`None`) or until it is
/// lost (`Some`, with `lost` cancelled at that instant, before the lease
/// can have run out).
pub async fn keep(
    store: &impl LeaseStore,
    holder: &str,
    won: Won,
    timing: LeaseTiming,
    lost: &CancellationToken,
    shutdown: &CancellationToken,
) -> Option<Lost> {
    let mut act_until = won.act_until;
    let mut next = Instant::now() + timing.renew_every();
    let why = loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep_until(act_until) => break Lost::Unproven,
            _ = tokio::time::sleep_until(next) => {}
        }
        let started = Instant::now();
        let attempt = async {
            let now = store.now_ms().await?;
            store.renew(holder, won.epoch, now, timing.ttl_ms()).await
        };
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep_until(act_until) => break Lost::Unproven,
            r = attempt => r,
        };
        match outcome {
            Ok(true) => {
                act_until = started + timing.ttl - timing.margin();
                next = started + timing.renew_every();
            }
            Ok(false) => break Lost::TakenOver,
            Err(e) => {
                tracing::warn!(error = %e, "lease: renewal failed; retrying");
                next = Instant::now() + Duration::from_millis(500).min(timing.renew_every());
            }
        }
    };
    lost.cancel();
    Some(why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A lease store on tokio's clock. `hang` makes every call wait
    /// forever (a paused or cut-off database); `fail` makes calls error.
    #[derive(Default)]
    struct Fake {
        lease: Mutex<(Option<String>, i64, i64)>,
        hang: std::sync::atomic::AtomicBool,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Fake {
        async fn gate(&self) -> Result<(), DbError> {
            if self.hang.load(std::sync::atomic::Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(DbError::Corrupt {
                    what: "connection",
                    detail: "reset".into(),
                });
            }
            Ok(())
        }
        fn holder(&self) -> Option<String> {
            self.lease.lock().unwrap().0.clone()
        }
        fn expires(&self) -> i64 {
            self.lease.lock().unwrap().2
        }
    }

    fn clock_ms() -> i64 {
        // Milliseconds of the paused tokio clock since the test began.
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let start = *START.get_or_init(Instant::now);
        Instant::now().saturating_duration_since(start).as_millis() as i64 + 1_000_000
    }

    impl LeaseStore for Fake {
        async fn now_ms(&self) -> Result<i64, DbError> {
            self.gate().await?;
            Ok(clock_ms())
        }
        async fn take(&self, holder: &str, now: i64, ttl: i64) -> Result<Option<i64>, DbError> {
            self.gate().await?;
            let mut l = self.lease.lock().unwrap();
            if l.2 <= now {
                *l = (Some(holder.into()), l.1 + 1, now + ttl);
                return Ok(Some(l.1));
            }
            Ok(None)
        }
        async fn renew(
            &self,
            holder: &str,
            epoch: i64,
            now: i64,
            ttl: i64,
        ) -> Result<bool, DbError> {
            self.gate().await?;
            let mut l = self.lease.lock().unwrap();
            if l.0.as_deref() == Some(holder) && l.1 == epoch && l.2 > now {
                l.2 = now + ttl;
                return Ok(true);
            }
            Ok(false)
        }
        async fn epoch(&self) -> Result<i64, DbError> {
            self.gate().await?;
            Ok(self.lease.lock().unwrap().1)
        }
    }

    const TIMING: LeaseTiming = LeaseTiming {
        ttl: Duration::from_secs(10),
    };

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_renew_stops_before_its_lease_can_end() {
        let store = Fake::default();
        let stop = CancellationToken::new();
        let won = acquire(&store, "a", TIMING, &stop, |_| {})
            .await
            .expect("won");
        assert_eq!(won.epoch, 1);
        let expires = store.expires();
        // The database stops answering (cut off, or paused with us).
        store.hang.store(true, std::sync::atomic::Ordering::SeqCst);
        let lost = CancellationToken::new();
        let why = keep(&store, "a", won, TIMING, &lost, &stop).await;
        assert_eq!(why, Some(Lost::Unproven));
        assert!(lost.is_cancelled());
        assert!(
            clock_ms() < expires,
            "stopped at {} ms, the lease ran until {expires} ms",
            clock_ms()
        );
        assert!(expires - clock_ms() >= TIMING.margin().as_millis() as i64);
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_keep_a_leader_and_errors_within_the_lease_are_retried() {
        let store = Fake::default();
        let stop = CancellationToken::new();
        let won = acquire(&store, "a", TIMING, &stop, |_| {})
            .await
            .expect("won");
        let lost = CancellationToken::new();
        let keeper = {
            let lost = lost.clone();
            let stop = stop.clone();
            let store = &store;
            async move { keep(store, "a", won, TIMING, &lost, &stop).await }
        };
        let driver = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            assert!(!lost.is_cancelled(), "renewed for a minute");
            // Two seconds of errors: retried, still leader.
            store.fail.store(true, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(2)).await;
            store.fail.store(false, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(20)).await;
            assert!(!lost.is_cancelled(), "a short outage is survived");
            stop.cancel();
        };
        let (why, ()) = tokio::join!(keeper, driver);
        assert_eq!(why, None, "shut down, not lost");
        assert_eq!(store.holder().as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_taken_over_lease_is_given_up_and_a_follower_wins_it_after_it_runs_out() {
        let store = Fake::default();
        let stop = CancellationToken::new();
        let won = acquire(&store, "a", TIMING, &stop, |_| {})
            .await
            .expect("won");
        let started = Instant::now();
        // "a" dies: nobody renews. "b" keeps trying and wins once it runs out.
        let mut seen = Vec::new();
        let b = acquire(&store, "b", TIMING, &stop, |e| seen.push(e))
            .await
            .expect("b won");
        assert_eq!(b.epoch, 2);
        assert!(
            started.elapsed() <= TIMING.ttl + TIMING.renew_every(),
            "{:?}",
            started.elapsed()
        );
        assert!(seen.iter().all(|e| *e == 1));
        // "a" wakes up and tries to go on: its renewal is refused.
        let lost = CancellationToken::new();
        let late = Won {
            act_until: Instant::now() + TIMING.ttl,
            ..won
        };
        assert_eq!(
            keep(&store, "a", late, TIMING, &lost, &stop).await,
            Some(Lost::TakenOver)
        );
        assert!(lost.is_cancelled());
    }
}
