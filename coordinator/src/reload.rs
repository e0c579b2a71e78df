//! Reload without restart: SIGHUP, `autogit-coordinator reload` and
//! `POST /api/v1/reload` all come here. The config is read again from where
//! `serve` read it (the file, `AUTOGIT_*` variables and flags as they were
//! at start) and validated completely before anything changes; an invalid
//! config changes nothing and says why.
//!
//! A reload applies `[[pools]]` (with their schedules). What happens to
//! runners is the reconciler's ordinary work on the new pools
//! ([`crate::pools::LivePools`]): a new pool gets runners as demand comes;
//! idle and provisioning runners of a changed pool are replaced; runners of
//! a removed pool that have no job stop, busy ones finish their job and are
//! not replaced. No running job is ever stopped by a reload. Every other
//! section is read at start only; a reload that finds one changed says so
//! (it takes effect at the next restart).
//!
//! Every reload, applied or refused, is an audit event (`config.reloaded`
//! with what changed, or `config.reload_refused` with why).

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use crate::audit::Audit;
use crate::config::{Config, ConfigError};
use crate::pools::{LivePools, PoolChanges};

/// Reads the config again from the sources `serve` used.
pub type ConfigSource = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reloaded {
    pub pools: PoolChanges,
    /// Top-level sections other than `pools` that differ from the config
    /// in force: they apply at the next restart.
    pub restart_needed: Vec<String>,
}

/// A reload that changed nothing, and why.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the config is invalid; nothing was changed: {0}")]
    Invalid(#[from] ConfigError),
    #[error("this coordinator was started without a config source to reload from")]
    NoSource,
}

/// Applies reloads, one at a time. Cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    source: Option<ConfigSource>,
    pools: LivePools,
    audit: Audit,
    /// The config in force (its pools are `pools`'s), to tell what a reload
    /// leaves for a restart.
    running: Arc<tokio::sync::Mutex<Config>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("has_source", &self.source.is_some())
            .finish_non_exhaustive()
    }
}

impl Reloader {
    pub fn new(
        source: Option<ConfigSource>,
        running: Config,
        pools: LivePools,
        audit: Audit,
    ) -> Self {
        Reloader {
            source,
            pools,
            audit,
            running: Arc::new(tokio::sync::Mutex::new(running)),
        }
    }

    /// Read, validate and apply the config. `actor` is who asked (an admin
    /// token's name, or `signal` for SIGHUP).
    pub async fn reload(&self, actor: &str) -> Result<Reloaded, ReloadError> {
        let mut running = self.running.lock().await;
        let Some(source) = &self.source else {
            return Err(ReloadError::NoSource);
        };
        let source = source.clone();
        let loaded = tokio::task::spawn_blocking(move || source())
            .await
            .unwrap_or_else(|e| {
                Err(ConfigError::Parse(format!(
                    "reading the config failed: {e}"
                )))
            });
        let new = match loaded {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %crate::edge::wire(&e.to_string()), "config reload refused; nothing changed");
                self.audit
                    .record(
                        "config.reload_refused",
                        actor,
                        None,
                        None,
                        json!({"error": e.to_string()}),
                    )
                    .await;
                return Err(e.into());
            }
        };
        let pools = new.effective_pools();
        let changes = PoolChanges::between(&self.pools.current(), &pools);
        let restart_needed = sections_needing_restart(&running, &new);
        if !changes.is_empty() {
            self.pools.replace(pools);
        }
        *running = new;
        tracing::info!(
            added = ?changes.added,
            removed = ?changes.removed,
            changed = ?changes.changed,
            resized = ?changes.resized,
            ?restart_needed,
            "config reloaded"
        );
        self.audit
            .record(
                "config.reloaded",
                actor,
                None,
                None,
                json!({"pools": changes, "restart_needed": restart_needed}),
            )
            .await;
        Ok(Reloaded {
            pools: changes,
            restart_needed,
        })
    }
}

/// Top-level keys other than `pools` whose values differ, compared in their
/// serialised form. Sections that are never serialised (`gitlab`, which
/// holds the token) are not compared; they too apply at the next restart.
fn sections_needing_restart(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| k.as_str() != "pools")
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}
