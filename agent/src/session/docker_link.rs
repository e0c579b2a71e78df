//! Reaching Docker late: an agent that starts while the engine is down (or
//! before it is up, as at boot) keeps trying in the background, with capped,
//! jittered backoff, until Docker answers or the agent stops. The session
//! takes the link when it arrives and reports `docker.available = true` in
//! its next inventory, so runners can be placed on the host without
//! restarting the agent.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::docker::{self, DockerEngine, RunnerEvent, SupervisorConfig, SupervisorHandle};

/// First pause between attempts to reach Docker.
pub const RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest pause between attempts to reach Docker (as the runner
/// lifecycles' `SupervisorConfig::engine_retry_max`).
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// A working Docker engine and the runner supervisor on it.
pub type DockerLink = (DockerEngine, SupervisorHandle);

/// How to reach Docker and start the supervisor; cloned for each attempt.
#[derive(Debug, Clone)]
pub struct DockerSetup {
    /// `docker.socket`, else `DOCKER_HOST`, else the default socket.
    pub socket: Option<PathBuf>,
    pub supervisor: SupervisorConfig,
}

impl DockerSetup {
    /// Connect, then start the supervisor (which adopts the managed
    /// containers already there). The error is one line for the inventory.
    pub async fn connect(self, events: mpsc::Sender<RunnerEvent>) -> Result<DockerLink, String> {
        let engine = DockerEngine::connect(self.socket.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        let sup = docker::spawn(Arc::new(engine.clone()), self.supervisor, events)
            .await
            .map_err(|e| e.to_string())?;
        Ok((engine, sup))
    }

    /// Keep trying in a task until Docker answers or `shutdown`; the link
    /// is sent on `ready` (the session's receiver).
    pub fn retry_in_background(
        self,
        events: mpsc::Sender<RunnerEvent>,
        ready: mpsc::Sender<DockerLink>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let attempt = || self.clone().connect(events.clone());
            let backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX);
            if let Some(link) = until_ok(attempt, backoff, &shutdown).await {
                tracing::info!("Docker answers now; runners can start on this host");
                if let Err(mpsc::error::SendError((_, sup))) = ready.send(link).await {
                    sup.shutdown().await;
                }
            }
        })
    }
}

/// Run `attempt` until it succeeds (`Some`) or `shutdown` is cancelled
/// (`None`), sleeping `backoff`'s next delay after each failure. A failure
/// is logged when its reason differs from the previous one, so a host
/// without Docker logs one line, not one per attempt.
pub async fn until_ok<T, F, Fut>(
    mut attempt: F,
    mut backoff: Backoff,
    shutdown: &CancellationToken,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut last_error: Option<String> = None;
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = attempt() => r,
        };
        match result {
            Ok(v) => return Some(v),
            Err(e) => {
                if last_error.as_ref() != Some(&e) {
                    tracing::info!(error = %e, "Docker still unavailable; retrying in the background");
                    last_error = Some(e);
                }
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn keeps_trying_with_growing_pauses_until_it_works() {
        let attempts = &AtomicU32::new(0);
        let start = Instant::now();
        let got = until_ok(
            move || async move {
                let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                if n < 5 {
                    Err(format!("down ({n})"))
                } else {
                    Ok(n)
                }
            },
            Backoff::new(Duration::from_secs(1), Duration::from_secs(4)),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(got, Some(5));
        // Four pauses of caps 1, 2, 4, 4 s, each in [cap/2, cap].
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(5_500), "{waited:?}");
        assert!(waited <= Duration::from_secs(11), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_the_agent_stops_and_never_spins() {
        let attempts = &AtomicU32::new(0);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(600)).await;
            stop.cancel();
        });
        let got: Option<()> = until_ok(
            move || async move {
                attempts.fetch_add(1, Ordering::SeqCst);
                Err("connection refused".to_string())
            },
            Backoff::new(RETRY_INITIAL, RETRY_MAX),
            &shutdown,
        )
        .await;
        assert_eq!(got, None);
        let n = attempts.load(Ordering::SeqCst);
        // Pauses reach the 30 s cap (each at least 15 s) after a few
        // doublings: about 40 attempts in 10 minutes at most, and more than
        // a handful, so it neither spins nor gives up.
        assert!((8..=50).contains(&n), "{n} attempts in 10 minutes");
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_in_flight_is_abandoned_at_shutdown() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let got: Option<()> = until_ok(
            std::future::pending::<Result<(), String>>,
            Backoff::new(RETRY_INITIAL, RETRY_MAX),
            &shutdown,
        )
        .await;
        assert_eq!(got, None);
    }
}
