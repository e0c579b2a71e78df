//! The agent's configuration: one serde struct, loaded in layers.
//!
//! Precedence (later wins): defaults → TOML (`--config` or `AUTOGIT_CONFIG`,
//! default `/etc/autogit/agent.toml` when it exists) → `AUTOGIT_*`
//! environment (nested keys with `__`) → flags. Every error names the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::policy::PolicyConfig;

/// The system-wide config file read when no `--config` is given.
pub const DEFAULT_CONFIG: &str = "/etc/autogit/agent.toml";

const KEYS: &[&str] = &["state_dir", "labels", "docker", "inventory", "session", "policy", "images"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Key, certificate, CA and agent id (written by `join`).
    pub state_dir: PathBuf,
    /// Labels reported with the inventory (e.g. `rack = "b3"`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub docker: DockerConfig,
    #[serde(default)]
    pub inventory: InventoryConfig,
    #[serde(default)]
    pub session: SessionConfig,
    /// What this host lets the coordinator run (the owner's veto).
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Warm image pulls and disk-pressure image collection.
    #[serde(default)]
    pub images: ImagesConfig,
}

/// `[images]`: pulling the images the coordinator wants here ahead of
/// runners, and removing AutoGit's images when the disk runs short.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// Pull the images the coordinator wants here ahead of runners
    /// (default `true`). `false`: runners pull their own image when they
    /// start, and nothing else is pulled (a metered link, a tiny disk).
    pub prepull: bool,
    /// Warm pulls at a time (at least 1).
    pub pull_concurrency: usize,
    /// When Docker's root dir has less free space than this (bytes, or a
    /// string such as `"10GiB"`), images AutoGit pulled that are not wanted
    /// and not used are removed, least recently used first. `0` disables it.
    #[serde(with = "byte_size")]
    pub gc_below_free: u64,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig { prepull: true, pull_concurrency: 2, gc_below_free: 10 << 30 }
    }
}

/// A byte size: a number of bytes, or a string such as `"10GiB"`, `"500MB"`
/// or `"0"` (units B, KB/MB/GB/TB in powers of 1000, KiB/MiB/GiB/TiB in
/// powers of 1024); written as a number.
pub mod byte_size {
    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    /// Parse `"10GiB"`, `"500 MB"`, `"123"`.
    pub fn parse(text: &str) -> Result<u64, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("{text:?} is not a byte size such as \"10GiB\""))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            u => return Err(format!("unknown unit {u:?} in {text:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)")),
        };
        n.checked_mul(mult).ok_or_else(|| format!("{text:?} is too large"))
    }

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = u64;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of bytes or a string such as \"10GiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
                Ok(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
                u64::try_from(v).map_err(|_| E::custom(format!("byte size must not be negative, got {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
                parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Docker Engine socket path; when unset, `DOCKER_HOST` (unix://) and
    /// then `/var/run/docker.sock` are used.
    pub socket: Option<PathBuf>,
    /// Keep failed runner containers this long for inspection before removal.
    #[serde(with = "humantime_serde")]
    pub keep_failed_for: Duration,
    /// How often leftovers of GitLab's docker executor (job, helper and
    /// service containers, cache volumes, networks) of runners that are not
    /// live here are collected; also once at start. `0s` disables it.
    #[serde(with = "humantime_serde")]
    pub leftover_gc_interval: Duration,
    /// `false` (default): collect only leftovers of runners this agent
    /// started (their short token is in the state dir). `true`: collect every
    /// `com.gitlab.gitlab-runner.managed=true` leftover whose runner is not
    /// live here, for hosts dedicated to AutoGit.
    pub gc_foreign_runner_leftovers: bool,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            socket: None,
            keep_failed_for: Duration::ZERO,
            leftover_gc_interval: Duration::from_secs(600),
            gc_foreign_runner_leftovers: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryConfig {
    /// Root of sysfs, for AMD/Intel GPU discovery (tests point it at
    /// fixtures; an agent in a container reads the host's sysfs mounted
    /// elsewhere).
    pub sysfs_root: PathBuf,
    /// Root of procfs (cpuinfo, meminfo).
    pub proc_root: PathBuf,
    /// Test builds only: a JSON file of fake NVIDIA GPUs used instead of
    /// NVML. A release build refuses a config that sets it
    /// ([`test_only_options`]).
    pub nvidia_fixture: Option<PathBuf>,
    /// How often the inventory is re-collected to detect changes.
    #[serde(with = "humantime_serde")]
    pub rescan_interval: Duration,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        InventoryConfig {
            sysfs_root: "/sys".into(),
            proc_root: "/proc".into(),
            nvidia_fixture: None,
            rescan_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// First reconnect delay; doubles per failure up to `reconnect_max`, with jitter.
    #[serde(with = "humantime_serde")]
    pub reconnect_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Timeout for TCP + TLS connection setup.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            reconnect_initial: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: "/var/lib/autogit-agent".into(),
            labels: BTreeMap::new(),
            docker: DockerConfig::default(),
            inventory: InventoryConfig::default(),
            session: SessionConfig::default(),
            policy: PolicyConfig::default(),
            images: ImagesConfig::default(),
        }
    }
}

/// Flag values (highest precedence).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
    #[error("invalid configuration: {key} is a test-only option and this is a release build; remove it ({what})")]
    TestOnly { key: &'static str, what: &'static str },
}

impl Config {
    /// Load the layers; `explicit` is `--config`/`AUTOGIT_CONFIG` (must exist);
    /// otherwise [`DEFAULT_CONFIG`] is read if present.
    pub fn load(explicit: Option<&Path>, env: &[(String, String)], flags: &Overrides) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match explicit {
            Some(f) if !f.exists() => return Err(ConfigError::MissingFile(f.to_path_buf())),
            Some(f) => fig = fig.merge(Toml::file_exact(f)),
            None if Path::new(DEFAULT_CONFIG).exists() => fig = fig.merge(Toml::file_exact(DEFAULT_CONFIG)),
            None => {}
        }
        fig = fig.merge(env_layer(env)).merge(Serialized::defaults(flags));
        let cfg: Config = fig.extract().map_err(|e| ConfigError::Parse(format_figment(e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.session;
        if s.reconnect_initial.is_zero() {
            return Err(ConfigError::Invalid { key: "session.reconnect_initial", problem: "must be greater than 0".into() });
        }
        if s.reconnect_max < s.reconnect_initial {
            return Err(ConfigError::Invalid { key: "session.reconnect_max", problem: "must be at least session.reconnect_initial".into() });
        }
        let gc = self.docker.leftover_gc_interval;
        if !gc.is_zero() && gc < Duration::from_secs(1) {
            return Err(ConfigError::Invalid { key: "docker.leftover_gc_interval", problem: "must be 0s (off) or at least 1s".into() });
        }
        if self.inventory.rescan_interval < Duration::from_secs(1) {
            return Err(ConfigError::Invalid { key: "inventory.rescan_interval", problem: "must be at least 1s".into() });
        }
        if self.images.pull_concurrency == 0 {
            return Err(ConfigError::Invalid { key: "images.pull_concurrency", problem: "must be at least 1".into() });
        }
        self.policy.validate().map_err(|(key, problem)| ConfigError::Invalid { key, problem })?;
        test_only_options(&self.inventory, BuildKind::current())?;
        for k in self.labels.keys() {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
                return Err(ConfigError::Invalid { key: "labels", problem: format!("label key {k:?} must use only [A-Za-z0-9-_./]") });
            }
        }
        Ok(())
    }
}

/// Which kind of binary is loading the config: test-only options are
/// honoured only by a [`BuildKind::Test`] build (`debug_assertions` on, as
/// in `target/debug`); see `docs/adr/0012-test-only-inventory-fixtures.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildKind {
    Test,
    Release,
}

impl BuildKind {
    /// This binary's kind.
    pub const fn current() -> Self {
        if cfg!(debug_assertions) { BuildKind::Test } else { BuildKind::Release }
    }
}

/// Refuse options that exist only to make a test agent lie about its
/// hardware, unless `build` is a test build. A release agent that honoured
/// `inventory.nvidia_fixture` would let anyone who can write `agent.toml`
/// (or set `AUTOGIT_INVENTORY__NVIDIA_FIXTURE`) claim GPUs the host lacks.
/// `sysfs_root` and `proc_root` stay: an agent in a container reads the
/// host's `/sys` and `/proc` mounted elsewhere (see `docs/security.md`).
pub fn test_only_options(inv: &InventoryConfig, build: BuildKind) -> Result<(), ConfigError> {
    if build == BuildKind::Release && inv.nvidia_fixture.is_some() {
        return Err(ConfigError::TestOnly { key: "inventory.nvidia_fixture", what: "it reports fake NVIDIA GPUs instead of asking NVML" });
    }
    Ok(())
}

fn env_layer(env: &[(String, String)]) -> Serialized<figment::value::Dict> {
    let mut fig = Figment::new();
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("AUTOGIT_") else { continue };
        let path = rest.to_ascii_lowercase().replace("__", ".");
        if !KEYS.contains(&path.split('.').next().unwrap_or_default()) {
            continue;
        }
        let value: figment::value::Value = v.parse().unwrap_or_else(|_| v.clone().into());
        fig = fig.merge(Serialized::default(&path, value));
    }
    Serialized::defaults(fig.extract::<figment::value::Dict>().unwrap_or_default())
}

fn format_figment(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = if e.path.is_empty() { String::new() } else { format!("{}: ", e.path.join(".")) };
            let src = e.metadata.as_ref().and_then(|m| m.source.as_ref()).map(|s| format!(" (from {s})")).unwrap_or_default();
            // One line, whatever the parser's message looks like.
            let kind = e.kind.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
            format!("{key}{kind}{src}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_and_key_named_errors() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.toml");
        std::fs::write(&f, "state_dir = \"/x\"\n[labels]\nrack = \"b3\"\n[session]\nreconnect_max = \"5s\"\n").unwrap();
        let env = vec![("AUTOGIT_SESSION__RECONNECT_INITIAL".to_string(), "1s".to_string()), ("AUTOGIT_GRPC_LISTEN".into(), "ignored".into())];
        let c = Config::load(Some(&f), &env, &Overrides { state_dir: Some("/y".into()) }).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/y"));
        assert_eq!(c.session.reconnect_initial, Duration::from_secs(1));
        assert_eq!(c.session.reconnect_max, Duration::from_secs(5));
        assert_eq!(c.labels["rack"], "b3");
        std::fs::write(&f, "[docker]\nsockit = \"x\"\n").unwrap();
        let e = Config::load(Some(&f), &[], &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("sockit"), "{e}");
        std::fs::write(&f, "[docker]\nleftover_gc_interval = \"10ms\"\n").unwrap();
        let e = Config::load(Some(&f), &[], &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("docker.leftover_gc_interval"), "{e}");
        std::fs::write(&f, "[docker]\ngc_foreign_runner_leftovers = true\nleftover_gc_interval = \"0s\"\n").unwrap();
        let c = Config::load(Some(&f), &[], &Overrides::default()).unwrap();
        assert!(c.docker.gc_foreign_runner_leftovers);
        assert!(c.docker.leftover_gc_interval.is_zero());
        assert!(!Config::default().docker.gc_foreign_runner_leftovers, "collect only our own leftovers by default");
        std::fs::write(&f, "[session]\nreconnect_initial = \"10s\"\nreconnect_max = \"1s\"\n").unwrap();
        let e = Config::load(Some(&f), &[], &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("session.reconnect_max"), "{e}");
    }

    #[test]
    fn a_release_build_refuses_the_nvidia_fixture_and_a_test_build_takes_it() {
        let with_fixture = InventoryConfig { nvidia_fixture: Some("/tmp/gpus.json".into()), ..InventoryConfig::default() };
        let e = test_only_options(&with_fixture, BuildKind::Release).unwrap_err().to_string();
        assert!(e.contains("inventory.nvidia_fixture is a test-only option and this is a release build"), "{e}");
        assert!(test_only_options(&with_fixture, BuildKind::Test).is_ok());
        // The roots are not fixture-only: a containerised agent needs them.
        let roots = InventoryConfig { sysfs_root: "/host/sys".into(), proc_root: "/host/proc".into(), ..InventoryConfig::default() };
        assert!(test_only_options(&roots, BuildKind::Release).is_ok());
        assert!(test_only_options(&InventoryConfig::default(), BuildKind::Release).is_ok());
    }

    #[test]
    fn loading_a_fixture_config_follows_this_build() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.toml");
        std::fs::write(&f, "[inventory]\nnvidia_fixture = \"/tmp/gpus.json\"\n").unwrap();
        let from_file = Config::load(Some(&f), &[], &Overrides::default());
        std::fs::write(&f, "").unwrap();
        let env = vec![("AUTOGIT_INVENTORY__NVIDIA_FIXTURE".to_string(), "/tmp/gpus.json".to_string())];
        let from_env = Config::load(Some(&f), &env, &Overrides::default());
        for loaded in [from_file, from_env] {
            match BuildKind::current() {
                BuildKind::Test => assert_eq!(loaded.unwrap().inventory.nvidia_fixture, Some(PathBuf::from("/tmp/gpus.json"))),
                BuildKind::Release => {
                    let e = loaded.unwrap_err().to_string();
                    assert!(e.contains("inventory.nvidia_fixture is a test-only option"), "{e}");
                }
            }
        }
    }

    #[test]
    fn images_section_defaults_sizes_and_bad_values() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.toml");
        std::fs::write(&f, "").unwrap();
        let c = Config::load(Some(&f), &[], &Overrides::default()).unwrap();
        assert_eq!((c.images.pull_concurrency, c.images.gc_below_free), (2, 10 << 30));
        std::fs::write(&f, "[images]\npull_concurrency = 4\ngc_below_free = \"500MB\"\n").unwrap();
        let c = Config::load(Some(&f), &[], &Overrides::default()).unwrap();
        assert_eq!((c.images.pull_concurrency, c.images.gc_below_free), (4, 500_000_000));
        let env = vec![("AUTOGIT_IMAGES__GC_BELOW_FREE".to_string(), "0".to_string())];
        assert_eq!(Config::load(Some(&f), &env, &Overrides::default()).unwrap().images.gc_below_free, 0);
        let env = vec![("AUTOGIT_IMAGES__GC_BELOW_FREE".to_string(), "2GiB".to_string())];
        assert_eq!(Config::load(Some(&f), &env, &Overrides::default()).unwrap().images.gc_below_free, 2 << 30);
        std::fs::write(&f, "[images]\ngc_below_free = \"10 potatoes\"\n").unwrap();
        let e = Config::load(Some(&f), &[], &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("images.gc_below_free") && e.contains("potatoes"), "{e}");
        std::fs::write(&f, "[images]\npull_concurrency = 0\n").unwrap();
        let e = Config::load(Some(&f), &[], &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("images.pull_concurrency"), "{e}");
    }

    #[test]
    fn policy_section_loads_and_names_bad_keys() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.toml");
        std::fs::write(&f, "state_dir = \"/x\"\n").unwrap();
        let c = Config::load(Some(&f), &[], &Overrides::default()).unwrap();
        assert_eq!(c.policy, PolicyConfig::default(), "no [policy] means the documented defaults");
        assert!(!c.policy.allow_host_network && c.policy.allow_docker_socket);
        assert_eq!(c.policy.allowed_images, ["*"]);
        std::fs::write(&f, "[policy]\nallowed_images = [\"registry.example/*\"]\nallowed_mount_sources = [\"/srv/cache\"]\nallow_host_network = true\nmax_cpu = 2.5\nmax_memory = 1073741824\n").unwrap();
        let c = Config::load(Some(&f), &[], &Overrides::default()).unwrap();
        assert_eq!(c.policy.allowed_images, ["registry.example/*"]);
        assert_eq!(c.policy.allowed_mount_sources, [PathBuf::from("/srv/cache")]);
        assert!(c.policy.allow_host_network);
        assert_eq!((c.policy.max_cpu, c.policy.max_memory), (Some(2.5), Some(1 << 30)));
        let env = vec![("AUTOGIT_POLICY__ALLOW_HOST_NETWORK".to_string(), "false".to_string())];
        assert!(!Config::load(Some(&f), &env, &Overrides::default()).unwrap().policy.allow_host_network);
        std::fs::write(&f, "[policy]\nallowed_mount_sources = [\"srv\"]\n").unwrap();
        let e = Config::load(Some(&f), &[], &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("policy.allowed_mount_sources"), "{e}");
        std::fs::write(&f, "[policy]\nallow_everything = true\n").unwrap();
        let e = Config::load(Some(&f), &[], &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("allow_everything"), "{e}");
    }
}
