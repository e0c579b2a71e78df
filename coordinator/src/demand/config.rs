//! Settings of the demand module: polling cadence and budget, which projects
//! to watch, the webhook secret, and the bounds of every queue and table.
//!
//! Deserialisable from the coordinator's TOML (`[demand]`, durations in
//! humantime form such as `"10s"`), with a default for every key. Call
//! [`DemandConfig::validate`] once after loading.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// GitLab drops a pending job after one day without a runner
/// (`stuck_pending`), so a job older than this is no longer demand.
pub const GITLAB_PENDING_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How the demand module finds and tracks pending jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemandConfig {
    /// Pause between the starts of two polls (default 10 s). A poll that
    /// needs longer under [`Self::poll_requests_per_minute`] stretches the
    /// cycle instead.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Projects to poll. `None`: every project the token's user is a member
    /// of, re-listed every [`Self::project_refresh_polls`] polls. Projects
    /// that a webhook reported jobs for are polled as well, so their jobs
    /// are confirmed or removed by polling too.
    pub projects: Option<Vec<u64>>,
    /// Use GitLab's instance-wide GraphQL listing of pending jobs instead of
    /// listing each project. Only honoured when the token belongs to an
    /// administrator (GitLab answers other tokens with an empty list); the
    /// poller checks `GET /user` and otherwise falls back to project polling.
    pub instance_jobs: bool,
    /// Shared secret GitLab sends in `X-Gitlab-Token`. Without one every
    /// webhook delivery is refused with 401 (webhooks are disabled) and
    /// polling alone finds demand.
    pub webhook_secret: Option<SecretString>,
    /// Webhook deliveries remembered for de-duplication (default 10 000).
    pub dedup_capacity: usize,
    /// A pending job created longer ago than this is dropped (default one
    /// day, GitLab's own timeout for pending jobs).
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// With `projects = None`: re-list member projects every this many polls
    /// (default 6, i.e. every minute at 10 s: a new project's jobs are found
    /// by polling within a minute even when its webhook is missing).
    pub project_refresh_polls: u32,
    /// Most GitLab requests the poller makes per minute (default 300, half
    /// of GitLab's default 600 per user, leaving the rest to webhook job
    /// fetches, runner management and the user's other tools). Requests of
    /// one poll are spaced `60 s / this` apart.
    pub poll_requests_per_minute: u32,
    /// Job fetches (`GET /projects/:id/jobs/:job_id`) in flight at once
    /// (default 4).
    pub fetch_concurrency: usize,
    /// Job fetches queued at most; beyond it events are dropped and polling
    /// catches up (default 1024).
    pub max_queued_fetches: usize,
    /// Webhook events waiting for the tracker; a full queue answers 503 so
    /// GitLab retries (default 1024).
    pub webhook_queue: usize,
    /// Most pending jobs tracked (default 100 000); further jobs are
    /// ignored with a warning.
    pub max_jobs: usize,
}

impl Default for DemandConfig {
    fn default() -> Self {
        DemandConfig {
            poll_interval: Duration::from_secs(10),
            projects: None,
            instance_jobs: false,
            webhook_secret: None,
            dedup_capacity: 10_000,
            stale_after: GITLAB_PENDING_TIMEOUT,
            project_refresh_polls: 6,
            poll_requests_per_minute: 300,
            fetch_concurrency: 4,
            max_queued_fetches: 1024,
            webhook_queue: 1024,
            max_jobs: 100_000,
        }
    }
}

/// A demand setting that cannot work. Displays as
/// `demand.poll_interval: must be at least 100ms`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("demand.{key}: {problem}")]
pub struct DemandConfigError {
    /// The key at fault.
    pub key: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl DemandConfig {
    /// Checks every setting once; the error names the key.
    pub fn validate(&self) -> Result<(), DemandConfigError> {
        let err = |key, problem: &str| {
            Err(DemandConfigError {
                key,
                problem: problem.to_owned(),
            })
        };
        if self.poll_interval < Duration::from_millis(100) {
            return err("poll_interval", "must be at least 100ms");
        }
        for (key, value) in [
            ("poll_interval", self.poll_interval),
            ("stale_after", self.stale_after),
        ] {
            if value > crate::bounds::MAX_CONFIG_DURATION {
                return err(key, "must be at most 3650 days");
            }
        }
        if self.stale_after < Duration::from_secs(1) {
            return err("stale_after", "must be at least 1s");
        }
        if self.poll_requests_per_minute == 0 {
            return err("poll_requests_per_minute", "must be at least 1");
        }
        if self.project_refresh_polls == 0 {
            return err("project_refresh_polls", "must be at least 1");
        }
        for (key, value) in [
            ("dedup_capacity", self.dedup_capacity),
            ("fetch_concurrency", self.fetch_concurrency),
            ("max_queued_fetches", self.max_queued_fetches),
            ("webhook_queue", self.webhook_queue),
            ("max_jobs", self.max_jobs),
        ] {
            if value == 0 {
                return err(key, "must be at least 1");
            }
        }
        if self.projects.as_ref().is_some_and(|p| p.contains(&0)) {
            return err("projects", "project ids start at 1");
        }
        if let Some(secret) = &self.webhook_secret {
            use secrecy::ExposeSecret;
            if secret.expose_secret().trim().is_empty() {
                return err(
                    "webhook_secret",
                    "must not be empty (leave it unset to disable webhooks)",
                );
            }
        }
        Ok(())
    }

    /// The pause between two of the poller's requests.
    pub fn request_gap(&self) -> Duration {
        Duration::from_secs(60) / self.poll_requests_per_minute.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Figment;
    use figment::providers::{Format, Toml};

    fn parse(toml: &str) -> Result<DemandConfig, String> {
        Figment::from(Toml::string(toml))
            .extract()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_parse_from_toml() {
        DemandConfig::default().validate().expect("defaults");
        let cfg = parse(
            r#"
            poll_interval = "30s"
            projects = [3, 4]
            webhook_secret = "s3cret"
            "#,
        )
        .expect("parses");
        assert_eq!(cfg.poll_interval, Duration::from_secs(30));
        assert_eq!(cfg.projects, Some(vec![3, 4]));
        assert_eq!(cfg.stale_after, GITLAB_PENDING_TIMEOUT);
        cfg.validate().expect("valid");
        assert!(
            !format!("{cfg:?}").contains("s3cret"),
            "Debug hides the secret"
        );
        assert_eq!(cfg.request_gap(), Duration::from_millis(200));
    }

    #[test]
    fn bad_values_name_the_key() {
        let cfg = DemandConfig {
            poll_interval: Duration::from_millis(1),
            ..DemandConfig::default()
        };
        let e = cfg.validate().expect_err("too fast");
        assert_eq!(e.key, "poll_interval");
        assert!(e.to_string().starts_with("demand.poll_interval"), "{e}");
        let cfg = DemandConfig {
            webhook_secret: Some(SecretString::from("  ")),
            ..DemandConfig::default()
        };
        assert_eq!(cfg.validate().expect_err("blank").key, "webhook_secret");
        let cfg = DemandConfig {
            fetch_concurrency: 0,
            ..DemandConfig::default()
        };
        assert_eq!(cfg.validate().expect_err("zero").key, "fetch_concurrency");
        assert!(
            parse("pol_interval = \"1s\"").is_err(),
            "unknown keys are errors"
        );
    }
}
