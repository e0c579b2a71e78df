//! What GitLab's docker executor leaves on the host, and how the agent finds
//! it: the runner's *short token*, the labels the executor puts on its job,
//! helper and service containers, cache volumes and per-build networks, and
//! the garbage collector's choice of what to remove.
//!
//! `gitlab-runner run-single --executor docker` labels everything it creates
//! with `com.gitlab.gitlab-runner.runner.id=<short token>`
//! (gitlab-runner `executors/docker/internal/labels/labels.go`). The short
//! token is derived from the runner's `glrt-` token
//! (`helpers/shorten_token.go`): from runner 18.2, strip `glrt-` and any
//! `t1_`/`t2_`/`t3_` partition prefix and keep 9 characters; up to 18.1 it
//! was characters 5..14 of the token. The agent does not know which runner
//! version a pool runs, so it keeps both candidates and matches either.
//!
//! The short token is what GitLab shows in its UI; it is not a secret. The
//! full token never leaves [`find_runner_token`]'s caller.
//!
//! `runner.system_id` is deliberately *not* a removal key: it comes from the
//! runner container's `/etc/machine-id`, which every container of one image
//! may share, so matching on it could remove another runner's work.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

/// Label prefix of everything the docker executor creates.
pub const GITLAB_LABEL_PREFIX: &str = "com.gitlab.gitlab-runner.";
/// `com.gitlab.gitlab-runner.managed=true` on every executor object.
pub const GITLAB_LABEL_MANAGED: &str = "com.gitlab.gitlab-runner.managed";
/// `com.gitlab.gitlab-runner.runner.id=<short token>`.
pub const GITLAB_LABEL_RUNNER_ID: &str = "com.gitlab.gitlab-runner.runner.id";
/// `com.gitlab.gitlab-runner.runner.system_id=<system id>` (runner 18.4+).
pub const GITLAB_LABEL_SYSTEM_ID: &str = "com.gitlab.gitlab-runner.runner.system_id";

/// How many characters the short token keeps.
const SHORT_TOKEN_LEN: usize = 9;
/// The prefix of a runner authentication token.
const RUNNER_TOKEN_PREFIX: &str = "glrt-";

/// The short-token candidates of a runner token: the 18.2+ rule first, then
/// the older one when it differs. Empty when `token` is not a `glrt-` token.
pub fn short_tokens(token: &str) -> Vec<String> {
    let Some(rest) = token.strip_prefix(RUNNER_TOKEN_PREFIX) else {
        return Vec::new();
    };
    let stripped = ["t1_", "t2_", "t3_"]
        .iter()
        .find_map(|p| rest.strip_prefix(p))
        .unwrap_or(rest);
    let mut out = Vec::with_capacity(2);
    for candidate in [stripped, rest] {
        let short: String = candidate.chars().take(SHORT_TOKEN_LEN).collect();
        if is_short_token(&short) && !out.contains(&short) {
            out.push(short);
        }
    }
    out
}

/// A short token as it may appear in a label filter: non-empty, at most 9
/// characters of the token alphabet (`[A-Za-z0-9_-]`).
pub fn is_short_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars().count() <= SHORT_TOKEN_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The runner's `glrt-` token among a container's command and environment:
/// `--token X`, `-t X`, `--token=X`, or any value that is a `glrt-` token
/// (`CI_SERVER_TOKEN=glrt-...`). Returns the first found.
pub fn find_runner_token<'a>(
    command: impl IntoIterator<Item = &'a str>,
    env_values: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let looks_like = |v: &&str| v.starts_with(RUNNER_TOKEN_PREFIX);
    command
        .into_iter()
        .map(|a| a.strip_prefix("--token=").unwrap_or(a))
        .chain(env_values)
        .find(looks_like)
}

/// What kind of object a leftover is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeftoverKind {
    /// A job, helper, predefined or service container.
    Container,
    /// A cache or build volume.
    Volume,
    /// A per-build network.
    Network,
}

/// One object created by the docker executor, as listed by the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Container, volume or network.
    pub kind: LeftoverKind,
    /// Its id (or a volume's name).
    pub id: String,
    /// Its `com.gitlab.gitlab-runner.runner.id` label (empty when missing).
    pub short_token: String,
}

/// How many objects a cleanup removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeftoverCount {
    /// Containers removed (forced, running or not).
    pub containers: usize,
    /// Volumes removed.
    pub volumes: usize,
    /// Networks removed.
    pub networks: usize,
}

impl LeftoverCount {
    /// Nothing was removed.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// All objects removed.
    pub fn total(&self) -> usize {
        self.containers + self.volumes + self.networks
    }
}

impl std::ops::AddAssign for LeftoverCount {
    fn add_assign(&mut self, o: Self) {
        self.containers += o.containers;
        self.volumes += o.volumes;
        self.networks += o.networks;
    }
}

impl fmt::Display for LeftoverCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} container(s), {} volume(s), {} network(s)",
            self.containers, self.volumes, self.networks
        )
    }
}

/// Whose leftovers the garbage collector may remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GcPolicy {
    /// Only leftovers of runners this agent started (their short token is in
    /// the agent's issued set). The default: a shared host's own
    /// gitlab-runner work is never touched.
    #[default]
    IssuedOnly,
    /// Every `com.gitlab.gitlab-runner.managed=true` leftover whose runner is
    /// not live on this agent (dedicated hosts).
    AllManaged,
}

/// The short tokens whose leftovers the garbage collector removes: those
/// with a short token, not live (`live`: short tokens of the runners this
/// agent supervises now), and allowed by the policy. Pure, for tests.
pub fn select_for_gc(
    leftovers: &[Leftover],
    live: &HashSet<String>,
    issued: &HashSet<String>,
    policy: GcPolicy,
) -> BTreeMap<String, usize> {
    let mut chosen: BTreeMap<String, usize> = BTreeMap::new();
    for l in leftovers {
        let t = &l.short_token;
        if !is_short_token(t) || live.contains(t) {
            continue;
        }
        if policy == GcPolicy::IssuedOnly && !issued.contains(t) {
            continue;
        }
        *chosen.entry(t.clone()).or_default() += 1;
    }
    chosen
}

/// The distinct short tokens of a set of leftovers (for logs).
pub fn tokens_of(leftovers: &[Leftover]) -> BTreeSet<&str> {
    leftovers.iter().map(|l| l.short_token.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_token_follows_both_runner_rules() {
        // gitlab-runner helpers/shorten_token_test.go, plus the pre-18.2 rule.
        assert_eq!(short_tokens("glrt-t9Wkyj-HGRkqQ-VWTGAr"), vec!["t9Wkyj-HG"]);
        assert_eq!(
            short_tokens("glrt-t1_t9Wkyj-HGRkqQ-VWTGAr"),
            vec!["t9Wkyj-HG".to_owned(), "t1_t9Wkyj".to_owned()]
        );
        assert_eq!(
            short_tokens("glrt-t3_abcdefghijkl"),
            vec!["abcdefghi".to_owned(), "t3_abcdef".to_owned()]
        );
        // t4_ is no partition prefix: both rules agree.
        assert_eq!(short_tokens("glrt-t4_abcdefghijkl"), vec!["t4_abcdef"]);
        assert_eq!(short_tokens("glrt-short"), vec!["short"]);
        assert!(short_tokens("glpat-abcdefghijkl").is_empty());
        assert!(short_tokens("glrt-").is_empty());
        // Never more than 9 characters of the token: the rest is secret.
        for t in short_tokens("glrt-t1_0123456789abcdefghij") {
            assert!(t.len() <= 9, "{t}");
            assert!(!t.contains("9abcdefghij"));
        }
    }

    #[test]
    fn runner_token_is_found_in_flags_or_env() {
        let cmd = ["run-single", "--url", "http://x", "--token", "glrt-abc"];
        assert_eq!(find_runner_token(cmd, []), Some("glrt-abc"));
        assert_eq!(
            find_runner_token(["run-single", "--token=glrt-def"], []),
            Some("glrt-def")
        );
        assert_eq!(
            find_runner_token(["run-single"], ["http://x", "glrt-env"]),
            Some("glrt-env")
        );
        assert_eq!(
            find_runner_token(["run-single", "--token", "x"], ["y"]),
            None
        );
    }

    fn lo(kind: LeftoverKind, short: &str) -> Leftover {
        Leftover {
            kind,
            id: format!("{short}-{kind:?}"),
            short_token: short.into(),
        }
    }

    #[test]
    fn gc_takes_only_dead_runners_and_by_default_only_ours() {
        let leftovers = vec![
            lo(LeftoverKind::Container, "ours-dead"),
            lo(LeftoverKind::Volume, "ours-dead"),
            lo(LeftoverKind::Volume, "ours-live"),
            lo(LeftoverKind::Container, "foreign"),
            lo(LeftoverKind::Network, ""),
        ];
        let live: HashSet<String> = ["ours-live".to_owned()].into();
        let issued: HashSet<String> = ["ours-dead".to_owned(), "ours-live".to_owned()].into();
        let ours = select_for_gc(&leftovers, &live, &issued, GcPolicy::IssuedOnly);
        assert_eq!(
            ours.into_iter().collect::<Vec<_>>(),
            vec![("ours-dead".to_owned(), 2)]
        );
        let all = select_for_gc(&leftovers, &live, &issued, GcPolicy::AllManaged);
        assert_eq!(
            all.keys().cloned().collect::<Vec<_>>(),
            vec!["foreign".to_owned(), "ours-dead".to_owned()],
            "never a live runner's, never an unlabelled one"
        );
    }

    #[test]
    fn count_displays_each_kind() {
        let mut c = LeftoverCount {
            containers: 2,
            volumes: 1,
            networks: 0,
        };
        c += LeftoverCount {
            containers: 0,
            volumes: 0,
            networks: 1,
        };
        assert_eq!(c.to_string(), "2 container(s), 1 volume(s), 1 network(s)");
        assert_eq!(c.total(), 4);
        assert!(LeftoverCount::default().is_empty());
    }
}
