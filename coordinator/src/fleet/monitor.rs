//! The fleet's housekeeping loop: heartbeat timeouts, coarse persistence of
//! liveness, and revocations written to SQLite by CLI commands.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Fleet, Transition};
use crate::audit::{Audit, SYSTEM};
use crate::db::Db;

/// How often the loop wakes; bounds how late a revocation or timeout lands.
const TICK: Duration = Duration::from_millis(500);

pub async fn run(
    fleet: Fleet,
    db: Db,
    audit: Audit,
    persist_interval: Duration,
    shutdown: CancellationToken,
) {
    let mut last_flush = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let transitions = fleet.tick(Instant::now());
        for Transition { agent, from, to } in &transitions {
            tracing::warn!(%agent, %from, %to, "agent state changed");
            audit
                .record(
                    "agent.state",
                    SYSTEM,
                    Some(&agent.to_string()),
                    None,
                    json!({"from": from, "to": to}),
                )
                .await;
        }
        match db.revoked_agent_ids().await {
            Ok(ids) => {
                for id in ids.iter().filter_map(|s| s.parse().ok()) {
                    if !fleet.is_revoked(&id) {
                        tracing::warn!(agent = %id, "agent revoked; closing its session");
                        fleet.revoke(&id);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "read revocations"),
        }
        if fleet.take_urgent() || last_flush.elapsed() >= persist_interval {
            flush(&fleet, &db).await;
            last_flush = Instant::now();
        }
    }
    flush(&fleet, &db).await;
}

async fn flush(fleet: &Fleet, db: &Db) {
    let batch = fleet.take_dirty();
    if let Err(e) = db.flush_liveness(&batch).await {
        tracing::warn!(error = %e, agents = batch.len(), "persist agent liveness");
    }
}
