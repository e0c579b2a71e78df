//! The coordinator's configuration: one serde struct, loaded in layers.
//!
//! Precedence (later wins): built-in defaults → TOML file (`--config` or
//! `AUTOGIT_CONFIG`) → `AUTOGIT_*` environment variables (nested keys with
//! `__`, e.g. `AUTOGIT_AGENTS__LOST_AFTER=10m`) → command-line flags.
//! Validated once; every error names the key. `docs/configuration.md` lists
//! every key with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub mod pool;
mod registry;
mod values;

pub mod oidc;
pub mod proxy;
pub use pool::{PoolError, default_command, pools_or_defaults, validate_pools};

/// Top-level keys, so `AUTOGIT_*` variables meant for other programs (the
/// agent's, say) are ignored rather than rejected.
const KEYS: &[&str] = &[
    "data_dir",
    "grpc_listen",
    "http_listen",
    "http_tls",
    "metrics",
    "tls",
    "agents",
    "gitlab",
    "demand",
    "scheduler",
    "pools",
    "limits",
    "session_ttl",
    "proxy",
    "roles",
    "oidc",
    "database",
    "cluster",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the CA, the SQLite database and other state live.
    pub data_dir: PathBuf,
    /// Where the state lives when not in the data dir's SQLite file.
    #[serde(default, skip_serializing)]
    pub database: DatabaseConfig,
    /// Leadership among replicas that share one PostgreSQL.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// gRPC (mTLS) listener for agents.
    pub grpc_listen: SocketAddr,
    /// HTTP listener: /healthz, /readyz, webhooks, admin API.
    pub http_listen: SocketAddr,
    /// Serve the HTTP listener over TLS with the coordinator's certificate;
    /// admin client certificates (`admin-cert create`) are then accepted too.
    #[serde(default)]
    pub http_tls: bool,
    /// `/metrics`: `anonymous` (default), `authenticated` (admin token) or `off`.
    #[serde(default)]
    pub metrics: MetricsAccess,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub agents: AgentsConfig,
    /// The GitLab instance to serve. Without it no runners are provisioned.
    #[serde(default, skip_serializing)]
    pub gitlab: Option<GitLabConfig>,
    /// Webhook and polling settings (see `demand::DemandConfig`).
    #[serde(default, skip_serializing)]
    pub demand: crate::demand::DemandConfig,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// Runner pools; the built-in defaults apply when none are configured.
    #[serde(default, skip_serializing)]
    pub pools: Vec<crate::scheduler::Pool>,
    /// What a peer on the network may hold: connections, timeouts, rates.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Dashboard sessions (`POST /login`) end this long after sign-in
    /// (at most 7 days).
    #[serde(default = "default_session_ttl", with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Reverse proxies in front of the HTTP listener, and forward auth.
    #[serde(default)]
    pub proxy: proxy::ProxyConfig,
    /// Which of a person's groups give which role.
    #[serde(default)]
    pub roles: proxy::RolesConfig,
    /// Single sign-on through an OpenID Connect provider; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<oidc::OidcConfig>,
}

/// `[database]`: the state store (`db/url.rs`, ADR 0017).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`;
    /// unset: `sqlite://<data_dir>/autogit.db`.
    pub url: Option<crate::db::DatabaseUrl>,
}

/// `[cluster]`: the leader lease (ADR 0018).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// How long a leader's lease runs without renewal. A dead leader is
    /// replaced within about `lease_ttl * 4/3`; a leader that cannot renew
    /// stops acting `lease_ttl / 5` before its lease could end.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// The host name or IP other replicas and operators reach this one by
    /// (shown by `cluster status` and by followers' `/readyz`). Default:
    /// the listen address, or the host name when listening on all.
    pub advertise_host: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            lease_ttl: Duration::from_secs(10),
            advertise_host: None,
        }
    }
}

impl Config {
    /// The store to open: `database.url`, or the data dir's SQLite file.
    pub fn database_url(&self) -> crate::db::DatabaseUrl {
        self.database
            .url
            .clone()
            .unwrap_or_else(|| crate::db::DatabaseUrl::in_data_dir(&self.data_dir))
    }
}

fn default_session_ttl() -> Duration {
    crate::admin::sessions::DEFAULT_TTL
}

/// Bounds on what peers can make the coordinator hold (`[limits]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Concurrent HTTP connections; further ones are accepted and closed at once.
    pub http_max_connections: usize,
    /// A request's head must arrive within this long; it also bounds how
    /// long a keep-alive connection may wait for its next request.
    #[serde(with = "humantime_serde")]
    pub http_header_read_timeout: Duration,
    /// An HTTP connection with no byte read or written this long is closed.
    #[serde(with = "humantime_serde")]
    pub http_idle_timeout: Duration,
    /// TLS handshakes (gRPC, and HTTPS with `http_tls`) must finish within this.
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    /// Concurrent gRPC connections (agents plus enrolling hosts).
    pub grpc_max_connections: usize,
    /// Concurrent gRPC connections without a client certificate (they can
    /// only enroll); counted within `grpc_max_connections` too.
    pub grpc_max_enrollment_connections: usize,
    /// A connection without a client certificate idle this long is closed
    /// (it makes one `Enroll` call). Must be below 20s, the HTTP/2 keep-alive
    /// ping interval.
    #[serde(with = "humantime_serde")]
    pub grpc_enrollment_idle_timeout: Duration,
    /// Enrollment attempts per peer IP (IPv6: per /64): sustained rate.
    pub enroll_per_ip_per_minute: u32,
    /// Enrollment attempts per peer IP allowed at once.
    pub enroll_per_ip_burst: u32,
    /// Refusals (enrollment, sessions, connection limits) are logged at most
    /// once per peer per this interval, with a count of those suppressed.
    #[serde(with = "humantime_serde")]
    pub refusal_log_interval: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            http_max_connections: 1024,
            http_header_read_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            grpc_max_connections: 16_384,
            grpc_max_enrollment_connections: 128,
            grpc_enrollment_idle_timeout: Duration::from_secs(10),
            enroll_per_ip_per_minute: 60,
            enroll_per_ip_burst: 20,
            refusal_log_interval: Duration::from_secs(10),
        }
    }
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_string(),
            })
        };
        for (key, n) in [
            ("limits.http_max_connections", self.http_max_connections),
            ("limits.grpc_max_connections", self.grpc_max_connections),
            (
                "limits.grpc_max_enrollment_connections",
                self.grpc_max_enrollment_connections,
            ),
            (
                "limits.enroll_per_ip_per_minute",
                self.enroll_per_ip_per_minute as usize,
            ),
            (
                "limits.enroll_per_ip_burst",
                self.enroll_per_ip_burst as usize,
            ),
        ] {
            if n == 0 {
                return invalid(key, "must be at least 1");
            }
            if n > 1_000_000 {
                return invalid(key, "must be at most 1000000");
            }
        }
        if self.grpc_max_enrollment_connections > self.grpc_max_connections {
            return invalid(
                "limits.grpc_max_enrollment_connections",
                "must not exceed limits.grpc_max_connections",
            );
        }
        for (key, d, min, max) in [
            (
                "limits.http_header_read_timeout",
                self.http_header_read_timeout,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            ),
            (
                "limits.http_idle_timeout",
                self.http_idle_timeout,
                Duration::from_millis(100),
                Duration::from_secs(24 * 3600),
            ),
            (
                "limits.tls_handshake_timeout",
                self.tls_handshake_timeout,
                Duration::from_millis(100),
                Duration::from_secs(600),
            ),
            (
                "limits.grpc_enrollment_idle_timeout",
                self.grpc_enrollment_idle_timeout,
                Duration::from_millis(100),
                Duration::from_secs(19),
            ),
            (
                "limits.refusal_log_interval",
                self.refusal_log_interval,
                Duration::ZERO,
                Duration::from_secs(24 * 3600),
            ),
        ] {
            if let Err(e) = crate::bounds::check(key, d, min, max) {
                return Err(ConfigError::Invalid {
                    key,
                    problem: e.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Who may read `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    #[default]
    Anonymous,
    Authenticated,
    Off,
}

/// Where GitLab is and how to reach it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitLabConfig {
    /// GitLab's base URL, e.g. `https://gitlab.example.com`.
    pub url: String,
    /// A token with the `create_runner` and `read_api` scopes (admin for
    /// instance runners). Prefer `AUTOGIT_GITLAB__TOKEN` to a file.
    pub token: secrecy::SecretString,
    /// The URL runner containers use to reach GitLab (default: `url`).
    #[serde(default)]
    pub runner_url: Option<String>,
    /// Client-side cap on REST requests per minute (GitLab's default limit
    /// for listing jobs is 600 per user).
    #[serde(default = "default_rpm")]
    pub requests_per_minute: u32,
    /// Client-side cap on runner creations and deletions per minute, a
    /// budget separate from `requests_per_minute`.
    #[serde(default = "default_runner_rpm")]
    pub runner_requests_per_minute: u32,
    /// Client-side cap on single-job fetches (confirming webhook hints) per
    /// minute, a budget separate from `requests_per_minute`.
    #[serde(default = "default_job_rpm")]
    pub job_requests_per_minute: u32,
}

fn default_rpm() -> u32 {
    600
}

fn default_runner_rpm() -> u32 {
    crate::gitlab::DEFAULT_RUNNER_REQUESTS_PER_MINUTE
}

fn default_job_rpm() -> u32 {
    crate::gitlab::DEFAULT_JOB_REQUESTS_PER_MINUTE
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// `spread` (fewest runners first) or `bin-pack` (fullest agent that fits).
    pub strategy: crate::scheduler::Strategy,
    /// A runner not running within this long is failed and cleaned up.
    #[serde(with = "humantime_serde")]
    pub provision_timeout: Duration,
    /// How often GitLab is searched for AutoGit runners without a record.
    #[serde(with = "humantime_serde")]
    pub gc_interval: Duration,
    /// Idle runners asked to stop get this long to finish a job they took.
    #[serde(with = "humantime_serde")]
    pub stop_grace: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            strategy: crate::scheduler::Strategy::Spread,
            provision_timeout: Duration::from_secs(300),
            gc_interval: Duration::from_secs(300),
            stop_grace: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Extra DNS names / IPs for the coordinator's server certificate
    /// (`autogit-coordinator`, `localhost`, 127.0.0.1, ::1 and the host name
    /// are always included).
    pub server_names: Vec<String>,
    /// Lifetime of agent certificates; agents renew at about 2/3 of it.
    #[serde(with = "humantime_serde")]
    pub agent_cert_ttl: Duration,
    /// Lifetime of the coordinator's server certificate (re-issued at start).
    #[serde(with = "humantime_serde")]
    pub server_cert_ttl: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            server_names: Vec::new(),
            agent_cert_ttl: Duration::from_secs(24 * 3600),
            server_cert_ttl: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// How often agents send heartbeats (told to them at session start).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A ready agent silent this long becomes `unreachable`.
    #[serde(with = "humantime_serde")]
    pub unreachable_after: Duration,
    /// An unreachable agent without a session this long becomes `lost`.
    #[serde(with = "humantime_serde")]
    pub lost_after: Duration,
    /// How often heartbeat-derived liveness is written to SQLite.
    #[serde(with = "humantime_serde")]
    pub persist_interval: Duration,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            heartbeat_interval: Duration::from_secs(5),
            unreachable_after: Duration::from_secs(20),
            lost_after: Duration::from_secs(600),
            persist_interval: Duration::from_secs(30),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/autogit"),
            database: DatabaseConfig::default(),
            cluster: ClusterConfig::default(),
            grpc_listen: "0.0.0.0:7443".parse().expect("valid literal"),
            http_listen: "0.0.0.0:8080".parse().expect("valid literal"),
            http_tls: false,
            metrics: MetricsAccess::Anonymous,
            tls: TlsConfig::default(),
            agents: AgentsConfig::default(),
            gitlab: None,
            demand: crate::demand::DemandConfig::default(),
            scheduler: SchedulerConfig::default(),
            pools: Vec::new(),
            limits: LimitsConfig::default(),
            session_ttl: default_session_ttl(),
            proxy: proxy::ProxyConfig::default(),
            roles: proxy::RolesConfig::default(),
            oidc: None,
        }
    }
}

/// Values given on the command line (highest precedence).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--database`, as `database.url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseOverride>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<SocketAddr>,
}

#[derive(Clone, Default, Serialize)]
pub struct DatabaseOverride {
    pub url: String,
}

impl std::fmt::Debug for DatabaseOverride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password; show it as the parsed form would.
        match crate::db::DatabaseUrl::parse(&self.url) {
            Ok(u) => write!(f, "{u}"),
            Err(_) => f.write_str("<invalid database URL>"),
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

impl Config {
    /// Load from the layers. `env` is the process environment (passed in so
    /// tests never touch the real one).
    pub fn load(
        file: Option<&Path>,
        env: &[(String, String)],
        flags: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::MissingFile(f.to_path_buf()));
            }
            fig = fig.merge(Toml::file_exact(f));
        }
        fig = fig
            .merge(env_provider(env))
            .merge(Serialized::defaults(flags));
        let cfg: Config = fig
            .extract()
            .map_err(|e| ConfigError::Parse(format_figment(e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let a = &self.agents;
        let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        if a.heartbeat_interval < Duration::from_millis(100) {
            return invalid("agents.heartbeat_interval", "must be at least 100ms".into());
        }
        if a.unreachable_after <= a.heartbeat_interval {
            return invalid(
                "agents.unreachable_after",
                format!(
                    "must be longer than agents.heartbeat_interval ({})",
                    humantime::format_duration(a.heartbeat_interval)
                ),
            );
        }
        if a.lost_after <= a.unreachable_after {
            return invalid(
                "agents.lost_after",
                "must be longer than agents.unreachable_after".into(),
            );
        }
        if let Err((key, problem)) = self.proxy.validate(&self.roles) {
            return invalid(key, problem);
        }
        if let Some(Err((key, problem))) = self.oidc.as_ref().map(oidc::OidcConfig::validate) {
            return invalid(key, problem);
        }
        if !(Duration::from_secs(3)..=Duration::from_secs(300)).contains(&self.cluster.lease_ttl) {
            return invalid("cluster.lease_ttl", "must be between 3s and 5m".into());
        }
        if self.tls.agent_cert_ttl < Duration::from_secs(5) {
            return invalid("tls.agent_cert_ttl", "must be at least 5s".into());
        }
        if self.tls.server_cert_ttl < Duration::from_secs(3600) {
            return invalid("tls.server_cert_ttl", "must be at least 1h".into());
        }
        if let Some(g) = &self.gitlab {
            for (key, url) in [
                ("gitlab.url", Some(&g.url)),
                ("gitlab.runner_url", g.runner_url.as_ref()),
            ] {
                if let Some(u) = url
                    && !(u.starts_with("http://") || u.starts_with("https://"))
                {
                    return invalid(key, format!("{u:?} must be an http:// or https:// URL"));
                }
            }
            if g.requests_per_minute == 0 {
                return invalid(
                    "gitlab.requests_per_minute",
                    "must be greater than 0".into(),
                );
            }
            if g.runner_requests_per_minute == 0 {
                return invalid(
                    "gitlab.runner_requests_per_minute",
                    "must be greater than 0".into(),
                );
            }
            if g.job_requests_per_minute == 0 {
                return invalid(
                    "gitlab.job_requests_per_minute",
                    "must be greater than 0".into(),
                );
            }
        }
        self.demand.validate().map_err(|e| ConfigError::Invalid {
            key: "demand",
            problem: e.to_string(),
        })?;
        validate_pools(&self.pools).map_err(|e| ConfigError::Invalid {
            key: "pools",
            problem: e.to_string(),
        })?;
        if self.scheduler.provision_timeout < Duration::from_secs(1) {
            return invalid("scheduler.provision_timeout", "must be at least 1s".into());
        }
        if self.scheduler.gc_interval < Duration::from_secs(1) {
            return invalid("scheduler.gc_interval", "must be at least 1s".into());
        }
        // Every duration is added to a clock somewhere: bound them all, so
        // no value can overflow that arithmetic (the release build aborts on
        // panic).
        let max = crate::bounds::MAX_CONFIG_DURATION;
        let durations = [
            ("agents.heartbeat_interval", a.heartbeat_interval),
            ("agents.unreachable_after", a.unreachable_after),
            ("agents.lost_after", a.lost_after),
            ("agents.persist_interval", a.persist_interval),
            ("tls.agent_cert_ttl", self.tls.agent_cert_ttl),
            ("tls.server_cert_ttl", self.tls.server_cert_ttl),
            (
                "scheduler.provision_timeout",
                self.scheduler.provision_timeout,
            ),
            ("scheduler.gc_interval", self.scheduler.gc_interval),
            ("scheduler.stop_grace", self.scheduler.stop_grace),
        ];
        for (key, d) in durations {
            if d > max {
                return invalid(key, "must be at most 3650 days".into());
            }
        }
        if let Some(p) = self.pools.iter().find(|p| p.idle_timeout > max) {
            return invalid(
                "pools",
                format!("pool {:?}: idle_timeout must be at most 3650 days", p.name),
            );
        }
        self.limits.validate()?;
        if let Err(e) = crate::bounds::check(
            "session_ttl",
            self.session_ttl,
            crate::bounds::MIN_SESSION_TTL,
            crate::bounds::MAX_SESSION_TTL,
        ) {
            return invalid("session_ttl", e.to_string());
        }
        Ok(())
    }

    /// The pools in effect: the configured ones, or the built-in defaults.
    pub fn effective_pools(&self) -> Vec<crate::scheduler::Pool> {
        pools_or_defaults(self.pools.clone())
    }

    /// Names on the coordinator's server certificate.
    pub fn server_names(&self) -> Vec<String> {
        let mut names = vec![
            autogit_certs::tls::COORDINATOR_NAME.to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        if let Ok(h) = nix_hostname() {
            names.push(h);
        }
        names.extend(self.tls.server_names.iter().cloned());
        names.sort();
        names.dedup();
        names
    }
}

fn nix_hostname() -> std::io::Result<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    let h = h.trim().to_string();
    if h.is_empty() || h.contains(' ') {
        Err(std::io::Error::other("no hostname"))
    } else {
        Ok(h)
    }
}

fn env_provider(env: &[(String, String)]) -> Serialized<figment::value::Dict> {
    // Figment's Env provider reads the real environment; we build the same
    // nested dictionary from the given pairs so tests stay hermetic.
    let mut fig = Figment::new();
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("AUTOGIT_") else {
            continue;
        };
        let path = rest.to_ascii_lowercase().replace("__", ".");
        let top = path.split('.').next().unwrap_or_default();
        if !KEYS.contains(&top) {
            continue;
        }
        let value: figment::value::Value = v.parse().unwrap_or_else(|_| v.clone().into());
        fig = fig.merge(Serialized::default(&path, value));
    }
    let dict = fig.extract::<figment::value::Dict>().unwrap_or_default();
    Serialized::defaults(dict)
}

fn format_figment(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", e.path.join("."))
            };
            let src = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref())
                .map(|s| format!(" (from {s})"))
                .unwrap_or_default();
            // One line, whatever the parser's message looks like.
            let kind = e
                .kind
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            format!("{key}{kind}{src}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.toml");
        std::fs::write(&f, "grpc_listen = \"127.0.0.1:1\"\nhttp_listen = \"127.0.0.1:2\"\n[agents]\nlost_after = \"1h\"\n").unwrap();
        let e = env(&[
            ("AUTOGIT_HTTP_LISTEN", "127.0.0.1:3"),
            ("AUTOGIT_AGENTS__HEARTBEAT_INTERVAL", "2s"),
            ("AUTOGIT_STATE_DIR", "/x"),
        ]);
        let flags = Overrides {
            grpc_listen: Some("127.0.0.1:4".parse().unwrap()),
            ..Default::default()
        };
        let c = Config::load(Some(&f), &e, &flags).unwrap();
        assert_eq!(c.grpc_listen.port(), 4, "flag beats file");
        assert_eq!(c.http_listen.port(), 3, "env beats file");
        assert_eq!(
            c.agents.lost_after,
            Duration::from_secs(3600),
            "file beats default"
        );
        assert_eq!(c.agents.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(
            c.agents.unreachable_after,
            Duration::from_secs(20),
            "default kept"
        );
    }

    #[test]
    fn huge_durations_and_zero_limits_are_refused_by_key() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.toml");
        for (toml, key) in [
            (
                "[tls]\nagent_cert_ttl = \"100000years\"\n",
                "tls.agent_cert_ttl",
            ),
            (
                "[agents]\nlost_after = \"50000years\"\n",
                "agents.lost_after",
            ),
            (
                "[scheduler]\nstop_grace = \"20000years\"\n",
                "scheduler.stop_grace",
            ),
            (
                "[demand]\npoll_interval = \"20000years\"\n",
                "poll_interval",
            ),
            (
                "[limits]\nhttp_max_connections = 0\n",
                "limits.http_max_connections",
            ),
            (
                "[limits]\ngrpc_enrollment_idle_timeout = \"30s\"\n",
                "limits.grpc_enrollment_idle_timeout",
            ),
        ] {
            std::fs::write(&f, toml).unwrap();
            let err = Config::load(Some(&f), &[], &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        std::fs::write(&f, "[limits]\nhttp_header_read_timeout = \"2s\"\n").unwrap();
        let e = env(&[("AUTOGIT_LIMITS__ENROLL_PER_IP_BURST", "5")]);
        let c = Config::load(Some(&f), &e, &Overrides::default()).unwrap();
        assert_eq!(c.limits.http_header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.limits.enroll_per_ip_burst, 5, "from the environment");
        assert_eq!(c.limits.http_max_connections, 1024, "default kept");
    }

    #[test]
    fn oidc_comes_from_the_environment_too_and_a_missing_key_is_named() {
        let e = env(&[
            ("AUTOGIT_OIDC__ISSUER", "https://id.example/realms/ci"),
            ("AUTOGIT_OIDC__CLIENT_ID", "autogit"),
            ("AUTOGIT_OIDC__CLIENT_SECRET_FILE", "/run/secrets/oidc"),
            (
                "AUTOGIT_OIDC__REDIRECT_URL",
                "https://ci.example/oidc/callback",
            ),
        ]);
        let c = Config::load(None, &e, &Overrides::default()).unwrap();
        let o = c.oidc.expect("[oidc] from AUTOGIT_OIDC__*");
        assert_eq!(o.client_id, "autogit");
        assert_eq!(o.groups_claim, "groups", "default kept");
        assert!(
            Config::load(None, &[], &Overrides::default())
                .unwrap()
                .oidc
                .is_none()
        );
        let e = env(&[("AUTOGIT_OIDC__ISSUER", "https://id.example")]);
        let err = Config::load(None, &e, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("client_id"), "{err}");
    }

    #[test]
    fn the_database_url_is_a_secret_and_cluster_keys_are_checked_by_name() {
        let c = Config::load(None, &[], &Overrides::default()).unwrap();
        assert_eq!(
            c.database_url().to_string(),
            "sqlite:///var/lib/autogit/autogit.db",
            "the data dir's SQLite file by default"
        );
        assert_eq!(c.cluster.lease_ttl, Duration::from_secs(10));
        let pg = env(&[(
            "AUTOGIT_DATABASE__URL",
            "postgres://autogit:hunter2@db/autogit",
        )]);
        let c = Config::load(None, &pg, &Overrides::default()).unwrap();
        assert!(c.database_url().is_postgres());
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "Debug hides the password"
        );
        // The flag wins over the environment.
        let flag = Overrides {
            database: Some(DatabaseOverride {
                url: "sqlite:///tmp/x.db".into(),
            }),
            ..Default::default()
        };
        assert!(!format!("{flag:?}").contains("hunter2"));
        let c = Config::load(None, &pg, &flag).unwrap();
        assert_eq!(c.database_url().to_string(), "sqlite:///tmp/x.db");
        let bad = env(&[("AUTOGIT_DATABASE__URL", "mysql://root:hunter2@db/x")]);
        let err = Config::load(None, &bad, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        for ttl in ["1s", "10m"] {
            let e = env(&[("AUTOGIT_CLUSTER__LEASE_TTL", ttl)]);
            let err = Config::load(None, &e, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("cluster.lease_ttl"), "{ttl}: {err}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.toml");
        std::fs::write(&f, "[agents]\nheartbeat_interval = \"soon\"\n").unwrap();
        let err = Config::load(Some(&f), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("agents.heartbeat_interval"), "{err}");
        std::fs::write(&f, "grpc_listn = \"x\"\n").unwrap();
        let err = Config::load(Some(&f), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("grpc_listn"), "{err}");
        std::fs::write(&f, "[agents]\nheartbeat_interval = \"30s\"\n").unwrap();
        let err = Config::load(Some(&f), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("agents.unreachable_after"), "{err}");
        let err = Config::load(
            Some(&d.path().join("nope.toml")),
            &[],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::MissingFile(_)));
    }

    #[test]
    fn schedule_windows_load_round_trip_and_name_their_faults() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.toml");
        let pool = |window: &str| {
            format!(
                "[[pools]]\nname = \"p\"\ntags = [\"p\"]\narch = \"x86_64\"\nmax_runners = 6\n\
                 [[pools.schedule]]\n{window}\n"
            )
        };
        std::fs::write(
            &f,
            pool("cron = \"* 8-17 * * mon-fri\"\ntimezone = \"Europe/Berlin\"\nidle_min = 4"),
        )
        .unwrap();
        let c = Config::load(Some(&f), &[], &Overrides::default()).unwrap();
        let w = &c.pools[0].schedule[0];
        assert_eq!(
            (w.cron_text.as_str(), w.timezone.name()),
            ("* 8-17 * * mon-fri", "Europe/Berlin")
        );
        assert_eq!((w.idle_min, w.max_runners), (Some(4), None));
        // Serialised (as the API and `config show` do), it reads back the same.
        let shown = serde_json::to_string(&c.pools[0]).unwrap();
        let back: crate::scheduler::Pool = serde_json::from_str(&shown).unwrap();
        assert_eq!(back, c.pools[0], "{shown}");

        for (window, key) in [
            ("cron = \"* 25 * * *\"\nidle_min = 1", "schedule[0].cron"),
            ("cron = \"0 0 8 * * *\"\nidle_min = 1", "schedule[0].cron"),
            (
                "cron = \"* 8 * * *\"\ntimezone = \"Mars/Olympus\"\nidle_min = 1",
                "schedule[0].timezone",
            ),
            ("cron = \"* 8 * * *\"", "schedule[0]"),
            ("cron = \"* 8 * * *\"\nidle_min = 7", "schedule[0].idle_min"),
            (
                "cron = \"* 8 * * *\"\nmax_runners = 0",
                "schedule[0].max_runners",
            ),
            (
                "cron = \"* 8 * * *\"\nidle_min = 1\nidle_max = 2",
                "idle_max",
            ),
        ] {
            std::fs::write(&f, pool(window)).unwrap();
            let err = Config::load(Some(&f), &[], &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{window}: {err}");
        }
    }

    #[test]
    fn wait_objective_loads_round_trips_and_refuses_zero_and_over_a_day() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.toml");
        let pool = |objective: &str| {
            format!(
                "[[pools]]\nname = \"p\"\ntags = [\"p\"]\narch = \"x86_64\"\n\
                 wait_objective = {objective}\n"
            )
        };
        std::fs::write(&f, pool("\"1m 30s\"")).unwrap();
        let c = Config::load(Some(&f), &[], &Overrides::default()).unwrap();
        assert_eq!(c.pools[0].wait_objective, Some(Duration::from_secs(90)));
        let shown = serde_json::to_string(&c.pools[0]).unwrap();
        assert!(shown.contains("\"wait_objective\":\"1m 30s\""), "{shown}");
        let back: crate::scheduler::Pool = serde_json::from_str(&shown).unwrap();
        assert_eq!(back, c.pools[0], "{shown}");

        std::fs::write(
            &f,
            "[[pools]]\nname = \"p\"\ntags = [\"p\"]\narch = \"x86_64\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), &[], &Overrides::default()).unwrap();
        assert_eq!(c.pools[0].wait_objective, None, "absent: no objective");

        for (objective, problem) in [
            (
                "\"0s\"",
                "pool 'p': wait_objective must be longer than zero",
            ),
            (
                "\"25h\"",
                "pool 'p': wait_objective must be at most 1day (the longest window it is \
                 measured over), got 1day 1h",
            ),
            ("\"soon\"", "wait_objective"),
            ("30", "wait_objective"),
        ] {
            std::fs::write(&f, pool(objective)).unwrap();
            let err = Config::load(Some(&f), &[], &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(problem), "{objective}: {err}");
        }
    }

    #[test]
    fn stock_loads_round_trips_defaults_to_none_and_refuses_too_many() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.toml");
        let pool = |extra: &str| {
            format!("[[pools]]\nname = \"p\"\ntags = [\"p\"]\narch = \"x86_64\"\n{extra}")
        };
        std::fs::write(&f, pool("stock = 3\n")).unwrap();
        let c = Config::load(Some(&f), &[], &Overrides::default()).unwrap();
        assert_eq!(c.pools[0].stock, 3);
        let shown = serde_json::to_string(&c.pools[0]).unwrap();
        assert!(shown.contains("\"stock\":3"), "{shown}");
        let back: crate::scheduler::Pool = serde_json::from_str(&shown).unwrap();
        assert_eq!(back, c.pools[0], "{shown}");

        std::fs::write(&f, pool("")).unwrap();
        let c = Config::load(Some(&f), &[], &Overrides::default()).unwrap();
        assert_eq!(c.pools[0].stock, 0, "absent: no stock");
        let shown = serde_json::to_string(&c.pools[0]).unwrap();
        assert!(
            !shown.contains("stock"),
            "the default is not written: {shown}"
        );

        for (value, problem) in [
            (
                "65",
                "pool 'p': stock must be at most 64 (each is a GitLab runner kept unused), got 65",
            ),
            ("-1", "stock"),
            ("\"2\"", "stock"),
        ] {
            std::fs::write(&f, pool(&format!("stock = {value}\n"))).unwrap();
            let err = Config::load(Some(&f), &[], &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(problem), "{value}: {err}");
        }
    }

    #[test]
    fn runner_token_on_the_command_line_is_refused_at_load() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.toml");
        let pool = |command: &str, env: &str| {
            format!(
                "[[pools]]\nname = \"p\"\ntags = [\"p\"]\narch = \"x86_64\"\ncommand = {command}\nenv = {env}\n"
            )
        };
        std::fs::write(
            &f,
            pool(
                r#"["run-single", "--url", "{gitlab_url}", "--token", "{runner_token}"]"#,
                "{}",
            ),
        )
        .unwrap();
        let err = Config::load(Some(&f), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pool 'p': command[4]") && err.contains("CI_SERVER_TOKEN"),
            "names the argument and what to use instead: {err}"
        );
        std::fs::write(
            &f,
            pool(r#"["run-single", "--token={runner_token}"]"#, "{}"),
        )
        .unwrap();
        let err = Config::load(Some(&f), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("command[1]"), "{err}");
        // In env it is how the token gets in, so it stays allowed.
        std::fs::write(
            &f,
            pool(r#"["run-single"]"#, r#"{ MY_TOKEN = "{runner_token}" }"#),
        )
        .unwrap();
        let c = Config::load(Some(&f), &[], &Overrides::default()).expect("env may use it");
        assert_eq!(c.pools[0].env["MY_TOKEN"], "{runner_token}");
    }

    #[test]
    fn metrics_and_session_ttl_come_from_the_environment_and_are_bounded() {
        let e = env(&[
            ("AUTOGIT_METRICS", "authenticated"),
            ("AUTOGIT_SESSION_TTL", "1h"),
        ]);
        let c = Config::load(None, &e, &Overrides::default()).unwrap();
        assert_eq!(c.metrics, MetricsAccess::Authenticated);
        assert_eq!(c.session_ttl, Duration::from_secs(3600));
        let d = Config::load(None, &[], &Overrides::default()).unwrap();
        assert_eq!(d.session_ttl, Duration::from_secs(12 * 3600));
        for bad in ["8d", "0s"] {
            let e = env(&[("AUTOGIT_SESSION_TTL", bad)]);
            let err = Config::load(None, &e, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("session_ttl"), "{bad}: {err}");
        }
    }
}
