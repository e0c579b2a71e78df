//! Which GitLab runners are AutoGit's: AutoGit marks every runner it creates
//! in the description; [`list_ours`] lists GitLab's runners and returns the
//! marked ones to the reconciler's garbage collection, which deletes those
//! without a live record (the reconciler decides, so a runner created while the listing was
//! in flight is never deleted by mistake).

use uuid::Uuid;

use crate::gitlab::{GitLab, RunnerFilter};

/// The description of a runner AutoGit creates:
/// `autogit/<cluster> pool=<pool> agent=<hostname> runner=<uuid>`.
pub fn description(cluster: &str, pool: &str, hostname: &str, runner: &Uuid) -> String {
    format!("autogit/{cluster} pool={pool} agent={hostname} runner={runner}")
}

/// If `description` marks a runner of `cluster`, its AutoGit runner id (or
/// `Some(None)` when marked but without a parseable id).
pub fn parse_description(cluster: &str, description: &str) -> Option<Option<Uuid>> {
    let mut words = description.split_whitespace();
    if words.next()? != format!("autogit/{cluster}") {
        return None;
    }
    Some(
        words
            .find_map(|w| w.strip_prefix("runner="))
            .and_then(|s| s.parse().ok()),
    )
}

/// List GitLab's runners and return ours: (GitLab id, our runner id). `None`
/// when GitLab could not be asked (logged; the next round tries again).
pub async fn list_ours(gitlab: &dyn GitLab, cluster: &str) -> Option<Vec<(u64, Option<Uuid>)>> {
    let all = match gitlab.current_user().await {
        Ok(u) => u.is_admin,
        Err(e) => {
            tracing::warn!(error = %e, "runner GC: read current user");
            return None;
        }
    };
    let filter = RunnerFilter {
        all,
        ..Default::default()
    };
    match gitlab.list_runners(&filter).await {
        Ok(list) => {
            let found: Vec<(u64, Option<Uuid>)> = list
                .iter()
                .filter_map(|r| {
                    parse_description(cluster, r.description.as_deref()?).map(|id| (r.id, id))
                })
                .collect();
            tracing::debug!(
                total = list.len(),
                ours = found.len(),
                "runner GC listed GitLab runners"
            );
            Some(found)
        }
        Err(e) => {
            tracing::warn!(error = %e, "runner GC: list GitLab runners");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_other_clusters() {
        let id = Uuid::new_v4();
        let d = description("abc123", "arm64", "pi-1", &id);
        assert_eq!(parse_description("abc123", &d), Some(Some(id)));
        assert_eq!(
            parse_description("zzz", &d),
            None,
            "another coordinator's runner is not ours"
        );
        assert_eq!(parse_description("abc123", "my own runner"), None);
        assert_eq!(
            parse_description("abc123", "autogit/abc123 pool=x"),
            Some(None)
        );
    }
}
