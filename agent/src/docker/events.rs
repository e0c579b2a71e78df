//! What the agent reports about runner containers: [`RunnerEvent`] (one state
//! change, sent as `RunnerStatus`) and [`ManagedContainer`] (one row of the
//! list sent on every (re)connect), with their conversions to the wire types.
//!
//! Life of a runner, as reported: `Creating` (container created) → `Running`
//! → `Exited { code }` → (`Failed` when the exit code is non-zero and nobody
//! asked it to stop) → `Removed`. A runner that never got a container (the
//! image pull failed, or it was stopped while pulling) reports `Failed` and/or
//! `Removed` without a container id. `Removed` is always the last event.

use std::time::{SystemTime, UNIX_EPOCH};

use autogit_proto::v1 as pb;

use super::spec::RunnerId;

/// A runner's state as reported to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerState {
    /// The container exists but has not started yet.
    Creating,
    /// The container is running.
    Running,
    /// The container exited with this code.
    Exited {
        /// Exit code of the container's main process.
        code: i64,
    },
    /// Something went wrong; the last lines of the container log come along.
    Failed {
        /// A human-readable reason (names the image, the failing step, ...).
        reason: String,
        /// The last lines of the container log (empty when there was no container).
        log_tail: Vec<String>,
    },
    /// The container is gone (or never existed); nothing is left on the host.
    Removed,
}

impl RunnerState {
    fn to_proto(&self) -> pb::RunnerState {
        match self {
            Self::Creating => pb::RunnerState::Creating,
            Self::Running => pb::RunnerState::Running,
            Self::Exited { .. } => pb::RunnerState::Exited,
            Self::Failed { .. } => pb::RunnerState::Failed,
            Self::Removed => pb::RunnerState::Removed,
        }
    }
}

/// One state change of one runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerEvent {
    /// Which runner.
    pub runner_id: RunnerId,
    /// Its container, once one exists.
    pub container_id: Option<String>,
    /// The new state.
    pub state: RunnerState,
    /// When the agent observed it.
    pub at: SystemTime,
    /// A note for the operator (e.g. what the docker executor left behind
    /// and the agent removed); sent as the status's `reason` when the state
    /// has none of its own.
    pub detail: Option<String>,
    /// On `Running` of a runner this agent just started: the image its
    /// container runs (to record when an image was last used).
    pub image: Option<String>,
    /// On `Running`: how long the runner waited for its image to be pulled
    /// (its own pull or another runner's of the same image); 0 when the
    /// image was already there.
    pub image_pull_ms: u64,
}

impl RunnerEvent {
    /// An event observed now.
    pub fn now(runner_id: RunnerId, container_id: Option<String>, state: RunnerState) -> Self {
        Self {
            runner_id,
            container_id,
            state,
            at: SystemTime::now(),
            detail: None,
            image: None,
            image_pull_ms: 0,
        }
    }

    /// The same event naming the runner's image and its pull wait.
    pub fn with_image(mut self, image: Option<String>, pull_ms: u64) -> Self {
        self.image = image;
        self.image_pull_ms = pull_ms;
        self
    }

    /// The same event with a note for the operator.
    pub fn with_detail(mut self, detail: Option<String>) -> Self {
        self.detail = detail;
        self
    }
}

impl From<RunnerEvent> for pb::RunnerStatus {
    fn from(ev: RunnerEvent) -> Self {
        let state = ev.state.to_proto() as i32;
        let image_pull_ms = match ev.state {
            RunnerState::Running => ev.image_pull_ms,
            _ => 0,
        };
        let (exit_code, reason, log_tail) = match ev.state {
            RunnerState::Exited { code } => (clamp_exit_code(code), String::new(), Vec::new()),
            RunnerState::Failed { reason, log_tail } => (0, reason, log_tail),
            _ => (0, ev.detail.unwrap_or_default(), Vec::new()),
        };
        Self {
            runner_id: ev.runner_id.to_string(),
            container_id: ev.container_id.unwrap_or_default(),
            state,
            exit_code,
            reason,
            log_tail,
            at_unix_ms: unix_ms(ev.at),
            image_pull_ms,
        }
    }
}

/// What Docker says about a managed container right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    /// Created, never started.
    Created,
    /// Running (also paused or restarting).
    Running,
    /// Not running any more (exited or dead).
    Exited {
        /// Exit code of the main process.
        code: i64,
    },
}

/// A container on this host that carries `autogit.managed=true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedContainer {
    /// From the `autogit.runner-id` label.
    pub runner_id: RunnerId,
    /// Docker's container id.
    pub container_id: String,
    /// From the `autogit.pool` label.
    pub pool: String,
    /// What Docker says it is doing.
    pub status: ContainerStatus,
    /// The container's configured stop signal, if any (used for graceful stops).
    pub stop_signal: Option<String>,
    /// The runner's GitLab short-token candidates, from the container's
    /// labels (empty for containers created before the agent recorded them).
    pub short_tokens: Vec<String>,
}

impl From<ManagedContainer> for pb::ManagedContainer {
    fn from(c: ManagedContainer) -> Self {
        let (state, exit_code) = match c.status {
            ContainerStatus::Created => (pb::RunnerState::Creating, 0),
            ContainerStatus::Running => (pb::RunnerState::Running, 0),
            ContainerStatus::Exited { code } => (pb::RunnerState::Exited, clamp_exit_code(code)),
        };
        Self {
            runner_id: c.runner_id.to_string(),
            container_id: c.container_id,
            pool: c.pool,
            state: state as i32,
            exit_code,
        }
    }
}

fn clamp_exit_code(code: i64) -> i32 {
    i32::try_from(code).unwrap_or(if code < 0 { i32::MIN } else { i32::MAX })
}

fn unix_ms(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn failed_event_carries_reason_and_log_tail() {
        let id = RunnerId::new_v4();
        let ev = RunnerEvent {
            runner_id: id,
            container_id: Some("abc".into()),
            state: RunnerState::Failed {
                reason: "boom".into(),
                log_tail: vec!["l1".into()],
            },
            at: UNIX_EPOCH + Duration::from_millis(1234),
            detail: None,
            image: None,
            image_pull_ms: 7,
        };
        let st = pb::RunnerStatus::from(ev);
        assert_eq!(st.runner_id, id.to_string());
        assert_eq!(st.container_id, "abc");
        assert_eq!(st.state, pb::RunnerState::Failed as i32);
        assert_eq!(st.reason, "boom");
        assert_eq!(st.log_tail, vec!["l1".to_owned()]);
        assert_eq!(st.at_unix_ms, 1234);
        assert_eq!(st.image_pull_ms, 0, "pull time goes on RUNNING only");
    }

    #[test]
    fn running_event_carries_its_image_pull_time() {
        let ev = RunnerEvent::now(RunnerId::new_v4(), Some("c".into()), RunnerState::Running)
            .with_image(Some("r:1".into()), 1500);
        assert_eq!(pb::RunnerStatus::from(ev).image_pull_ms, 1500);
    }

    #[test]
    fn exited_event_carries_code() {
        let ev = RunnerEvent::now(RunnerId::new_v4(), None, RunnerState::Exited { code: 137 });
        let st = pb::RunnerStatus::from(ev);
        assert_eq!(st.state, pb::RunnerState::Exited as i32);
        assert_eq!(st.exit_code, 137);
        assert_eq!(st.container_id, "");
        assert!(st.at_unix_ms > 0);
    }

    #[test]
    fn removed_event_carries_its_detail_as_reason() {
        let ev = RunnerEvent::now(RunnerId::new_v4(), None, RunnerState::Removed)
            .with_detail(Some("removed 2 container(s)".into()));
        let st = pb::RunnerStatus::from(ev);
        assert_eq!(st.state, pb::RunnerState::Removed as i32);
        assert_eq!(st.reason, "removed 2 container(s)");
    }

    #[test]
    fn managed_container_maps_state() {
        let id = RunnerId::new_v4();
        let c = ManagedContainer {
            runner_id: id,
            container_id: "c1".into(),
            pool: "p".into(),
            status: ContainerStatus::Exited { code: i64::MAX },
            stop_signal: None,
            short_tokens: Vec::new(),
        };
        let m = pb::ManagedContainer::from(c);
        assert_eq!(m.state, pb::RunnerState::Exited as i32);
        assert_eq!(m.exit_code, i32::MAX);
        assert_eq!(m.runner_id, id.to_string());
        let c = ManagedContainer {
            runner_id: id,
            container_id: "c1".into(),
            pool: "p".into(),
            status: ContainerStatus::Created,
            stop_signal: None,
            short_tokens: Vec::new(),
        };
        assert_eq!(
            pb::ManagedContainer::from(c).state,
            pb::RunnerState::Creating as i32
        );
    }
}
