//! The live fleet: which agents exist, which have a session, when each was
//! last heard from, and the channel to send each one [`AgentCommand`]s
//! (the gRPC adapter turns them into wire messages).
//!
//! Heartbeats only touch memory. Liveness reaches SQLite in batches (every
//! `persist_interval`) and on state transitions, so thousands of agents do
//! not cost a write per heartbeat. Revocation is checked here on every session
//! open and renewal; revoking cuts the live session at once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use autogit_certs::AgentId;
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

use super::agent::{AgentState, AgentView, Drain, Load};
use super::command::{AgentCommand, CloseReason};
use super::inventory::Inventory;
use crate::db::{self, AgentRow, Liveness};
use crate::scheduler::{self, Arch, GpuView, Labels};

/// Commands to one agent's session.
pub type SessionTx = mpsc::Sender<AgentCommand>;

/// Identifies one session of an agent (an agent reconnecting gets a new one).
pub type SessionId = u64;

/// Timing of liveness decisions.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub heartbeat_interval: Duration,
    pub unreachable_after: Duration,
    pub lost_after: Duration,
}

/// Why a session or renewal is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("agent {0} is revoked")]
    Revoked(AgentId),
    #[error("agent {0} is unknown to this coordinator")]
    Unknown(AgentId),
}

/// A state change worth an audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub agent: AgentId,
    pub from: AgentState,
    pub to: AgentState,
}

#[derive(Debug)]
struct Live {
    hostname: String,
    arch: String,
    /// `arch` as the scheduler knows it, parsed once when it changes; `None`
    /// for an architecture no pool can use.
    known_arch: Option<Arch>,
    /// Set on the coordinator only (join token, `agent label set`); the
    /// agent's own `inventory.labels` never land here.
    trust_labels: Labels,
    cordoned: bool,
    state: AgentState,
    inventory: Option<Inventory>,
    /// The inventory's images, normalised once per inventory for placement.
    held: Arc<BTreeSet<String>>,
    load: Option<Load>,
    last_seen: Option<Instant>,
    last_seen_wall: Option<OffsetDateTime>,
    session: Option<(SessionId, SessionTx)>,
    drain: Option<super::agent::Drain>,
    enrolled_at: i64,
    cert_not_after: i64,
    dirty: bool,
}

#[derive(Debug)]
struct Inner {
    agents: Mutex<HashMap<AgentId, Live>>,
    revoked: RwLock<HashSet<AgentId>>,
    next_session: std::sync::atomic::AtomicU64,
    /// Set when a state change should reach SQLite at the next tick rather
    /// than at the next coarse flush.
    urgent: std::sync::atomic::AtomicBool,
    timings: Timings,
    changed: watch::Sender<u64>,
    /// Serialises trust label changes, so SQLite and memory apply them in
    /// the same order ([`Fleet::label_writes`]).
    label_writes: tokio::sync::Mutex<()>,
}

/// Cheap handle to the live fleet.
#[derive(Debug, Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

/// The normalised references of the images an inventory lists.
fn held_images(inv: Option<&Inventory>) -> Arc<BTreeSet<String>> {
    Arc::new(
        inv.map(|i| {
            i.images
                .iter()
                .map(|h| scheduler::images::normalise(&h.reference))
                .collect()
        })
        .unwrap_or_default(),
    )
}

fn live_from_row(row: &AgentRow) -> Live {
    let stored: AgentState = row.state.parse().unwrap_or(AgentState::Unreachable);
    // After a restart nobody has a session yet: agents that were up are
    // unreachable until they reconnect (they do so on their own).
    let state = match stored {
        AgentState::Ready => AgentState::Unreachable,
        s => s,
    };
    let view = AgentView::from_row(row).ok();
    Live {
        hostname: row.hostname.clone(),
        arch: row.arch.clone(),
        known_arch: row.arch.parse().ok(),
        trust_labels: serde_json::from_str(&row.labels).unwrap_or_default(),
        cordoned: row.cordoned,
        state,
        inventory: view.as_ref().and_then(|v| v.inventory.clone()),
        held: held_images(view.as_ref().and_then(|v| v.inventory.as_ref())),
        load: view.and_then(|v| v.load),
        last_seen: None,
        last_seen_wall: row.last_seen.map(db::from_ms),
        session: None,
        drain: None,
        enrolled_at: row.enrolled_at,
        cert_not_after: row.cert_not_after,
        dirty: state != stored,
    }
}

impl Fleet {
    /// Build the registry from stored agents and revocations.
    pub fn new(rows: &[AgentRow], revoked: &[String], timings: Timings) -> Self {
        let agents = rows
            .iter()
            .filter_map(|r| {
                r.id.parse::<AgentId>()
                    .ok()
                    .map(|id| (id, live_from_row(r)))
            })
            .collect();
        let revoked = revoked.iter().filter_map(|s| s.parse().ok()).collect();
        let (changed, _) = watch::channel(0);
        Fleet {
            inner: Arc::new(Inner {
                agents: Mutex::new(agents),
                revoked: RwLock::new(revoked),
                next_session: 1.into(),
                urgent: true.into(),
                timings,
                changed,
                label_writes: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn timings(&self) -> Timings {
        self.inner.timings
    }

    /// A receiver that ticks whenever placement-relevant fleet state changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    fn notify(&self) {
        self.inner
            .urgent
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.inner.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Whether a state change happened since the last call.
    pub fn take_urgent(&self) -> bool {
        self.inner
            .urgent
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Live>> {
        // A poisoned lock means a panic mid-update; the map is still usable.
        self.inner.agents.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_revoked(&self, id: &AgentId) -> bool {
        self.inner
            .revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    /// Check that `id` may hold a session or renew its certificate.
    pub fn admit(&self, id: &AgentId) -> Result<(), Refusal> {
        if self.is_revoked(id) {
            return Err(Refusal::Revoked(*id));
        }
        if !self.lock().contains_key(id) {
            return Err(Refusal::Unknown(*id));
        }
        Ok(())
    }

    /// A newly enrolled agent.
    pub fn insert_enrolled(&self, row: &AgentRow) {
        if let Ok(id) = row.id.parse() {
            self.lock().insert(id, live_from_row(row));
        }
    }

    /// Open a session: the agent becomes ready. An older session of the same
    /// agent is closed (an agent has at most one).
    pub fn connect(
        &self,
        id: AgentId,
        inventory: Inventory,
        tx: SessionTx,
    ) -> Result<(SessionId, AgentState), Refusal> {
        if self.is_revoked(&id) {
            return Err(Refusal::Revoked(id));
        }
        let sid = self
            .inner
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prev_state;
        {
            let mut agents = self.lock();
            let live = agents.get_mut(&id).ok_or(Refusal::Unknown(id))?;
            if let Some((_, old)) = live.session.take() {
                let _ = old.try_send(AgentCommand::Close(CloseReason::Replaced));
            }
            prev_state = live.state;
            live.hostname = inventory.hostname.clone();
            live.arch = inventory.arch.clone();
            live.known_arch = inventory.arch.parse().ok();
            live.held = held_images(Some(&inventory));
            live.inventory = Some(inventory);
            live.state = AgentState::Ready;
            live.last_seen = Some(Instant::now());
            live.last_seen_wall = Some(OffsetDateTime::now_utc());
            live.session = Some((sid, tx));
            live.dirty = true;
        }
        self.notify();
        Ok((sid, prev_state))
    }

    pub fn heartbeat(&self, id: &AgentId, sid: SessionId, load: Load) {
        let mut agents = self.lock();
        if let Some(live) = agents.get_mut(id)
            && live.session.as_ref().is_some_and(|(s, _)| *s == sid)
        {
            live.load = Some(load);
            live.last_seen = Some(Instant::now());
            live.last_seen_wall = Some(OffsetDateTime::now_utc());
            live.dirty = true;
        }
    }

    /// Replace an agent's inventory; returns true if it changed.
    pub fn update_inventory(&self, id: &AgentId, inventory: Inventory) -> bool {
        let changed = {
            let mut agents = self.lock();
            match agents.get_mut(id) {
                Some(live) if live.inventory.as_ref() != Some(&inventory) => {
                    live.hostname = inventory.hostname.clone();
                    live.arch = inventory.arch.clone();
                    live.known_arch = inventory.arch.parse().ok();
                    live.held = held_images(Some(&inventory));
                    live.inventory = Some(inventory);
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.notify();
        }
        changed
    }

    /// The session `sid` ended. Returns the transition if the agent was ready.
    pub fn disconnect(&self, id: &AgentId, sid: SessionId) -> Option<Transition> {
        let t = {
            let mut agents = self.lock();
            let live = agents.get_mut(id)?;
            if live.session.as_ref().is_none_or(|(s, _)| *s != sid) {
                return None; // an older, already replaced session
            }
            live.session = None;
            live.dirty = true;
            if live.state == AgentState::Ready {
                live.state = AgentState::Unreachable;
                Some(Transition {
                    agent: *id,
                    from: AgentState::Ready,
                    to: AgentState::Unreachable,
                })
            } else {
                None
            }
        };
        self.notify();
        t
    }

    /// Revoke: refuse from now on and cut any live session.
    pub fn revoke(&self, id: &AgentId) {
        self.inner
            .revoked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*id);
        {
            let mut agents = self.lock();
            if let Some(live) = agents.get_mut(id) {
                if let Some((_, tx)) = live.session.take() {
                    let _ = tx.try_send(AgentCommand::Close(CloseReason::Revoked));
                }
                live.state = AgentState::Revoked;
                live.dirty = true;
            }
        }
        self.notify();
    }

    /// Held while one trust label change reads, writes SQLite and calls
    /// [`Fleet::set_trust_labels`], so concurrent changes cannot leave
    /// memory and the database disagreeing.
    pub async fn label_writes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.label_writes.lock().await
    }

    /// An agent's trust labels (`None` for an unknown agent).
    pub fn trust_labels(&self, id: &AgentId) -> Option<Labels> {
        self.lock().get(id).map(|l| l.trust_labels.clone())
    }

    /// Replace an agent's trust labels; placement sees them from the next
    /// pass, which this wakes. Returns false for an unknown agent.
    pub fn set_trust_labels(&self, id: &AgentId, labels: Labels) -> bool {
        let found = match self.lock().get_mut(id) {
            Some(live) => {
                live.trust_labels = labels;
                true
            }
            None => false,
        };
        self.notify();
        found
    }

    pub fn set_cordoned(&self, id: &AgentId, cordoned: bool) -> bool {
        let found = match self.lock().get_mut(id) {
            Some(live) => {
                live.cordoned = cordoned;
                true
            }
            None => false,
        };
        self.notify();
        found
    }

    /// Start (Some) or clear (None) a drain. A draining agent takes no new
    /// runners. Returns false for an unknown agent.
    pub fn set_drain(&self, id: &AgentId, drain: Option<super::agent::Drain>) -> bool {
        let found = match self.lock().get_mut(id) {
            Some(live) => {
                live.drain = drain;
                true
            }
            None => false,
        };
        self.notify();
        found
    }

    /// Mark a drain finished (all runners gone); returns true the first time.
    pub fn drain_done(&self, id: &AgentId) -> bool {
        match self.lock().get_mut(id).and_then(|l| l.drain.as_mut()) {
            Some(d) if d.drained_at.is_none() => {
                d.drained_at = Some(super::agent::now_rfc3339());
                true
            }
            _ => false,
        }
    }

    pub fn record_cert(&self, id: &AgentId, not_after: i64) {
        if let Some(live) = self.lock().get_mut(id) {
            live.cert_not_after = not_after;
        }
    }

    /// Send a command to an agent's live session.
    pub fn send(&self, id: &AgentId, cmd: AgentCommand) -> Result<(), NotConnected> {
        let tx = {
            let agents = self.lock();
            agents
                .get(id)
                .and_then(|l| l.session.as_ref().map(|(_, tx)| tx.clone()))
        };
        match tx {
            Some(tx) => tx.try_send(cmd).map_err(|_| NotConnected(*id)),
            None => Err(NotConnected(*id)),
        }
    }

    /// The live session of every connected agent.
    pub fn session_ids(&self) -> HashMap<AgentId, SessionId> {
        self.lock()
            .iter()
            .filter_map(|(id, l)| l.session.as_ref().map(|(sid, _)| (*id, *sid)))
            .collect()
    }

    /// Close every live session (shutdown); agents reconnect on their own.
    pub fn close_all_sessions(&self) {
        for live in self.lock().values_mut() {
            if let Some((_, tx)) = live.session.take() {
                let _ = tx.try_send(AgentCommand::Close(CloseReason::ShuttingDown));
            }
        }
    }

    /// End an agent's session.
    pub fn close(&self, id: &AgentId, reason: CloseReason) -> Result<(), NotConnected> {
        self.send(id, AgentCommand::Close(reason))
    }

    /// Apply the heartbeat timeouts: ready agents silent for
    /// `unreachable_after` become unreachable (their session is closed), and
    /// agents without a session for `lost_after` become lost.
    pub fn tick(&self, now: Instant) -> Vec<Transition> {
        let t = self.inner.timings;
        let mut out = Vec::new();
        {
            let mut agents = self.lock();
            for (id, live) in agents.iter_mut() {
                let silent = live.last_seen.map(|s| now.saturating_duration_since(s));
                let next = match (live.state, silent) {
                    (AgentState::Ready, Some(d)) if d > t.unreachable_after => {
                        if let Some((_, tx)) = live.session.take() {
                            let _ = tx.try_send(AgentCommand::Close(CloseReason::Silent));
                        }
                        Some(AgentState::Unreachable)
                    }
                    (AgentState::Unreachable, Some(d)) if d > t.lost_after => {
                        Some(AgentState::Lost)
                    }
                    // Unreachable since a restart: never heard from in this process.
                    (AgentState::Unreachable, None) => {
                        live.last_seen = Some(now);
                        None
                    }
                    _ => None,
                };
                if let Some(to) = next {
                    out.push(Transition {
                        agent: *id,
                        from: live.state,
                        to,
                    });
                    live.state = to;
                    live.dirty = true;
                }
            }
        }
        if !out.is_empty() {
            self.notify();
        }
        out
    }

    /// Take the liveness of agents changed since the last flush.
    pub fn take_dirty(&self) -> Vec<Liveness> {
        let mut agents = self.lock();
        agents
            .iter_mut()
            .filter(|(_, l)| l.dirty)
            .map(|(id, l)| {
                l.dirty = false;
                Liveness {
                    id: id.to_string(),
                    state: l.state.as_str().to_string(),
                    last_seen: l.last_seen_wall.map(db::to_ms).unwrap_or(0),
                    load: l.load.and_then(|x| serde_json::to_string(&x).ok()),
                }
            })
            .collect()
    }

    pub fn connected_count(&self) -> usize {
        self.lock().values().filter(|l| l.session.is_some()).count()
    }

    /// The scheduler's view of every agent, from one lock: typed ids, arches
    /// and GPUs, nothing parsed back from strings. Only agents with a live
    /// session are `Ready` (commands reach no one else); a cordoned or
    /// draining agent is cordoned. Agents without an inventory, or with an
    /// architecture the scheduler does not know, are left out. Ordered by id.
    pub fn scheduler_view(&self) -> Vec<scheduler::AgentView> {
        let agents = self.lock();
        let mut out: Vec<scheduler::AgentView> = agents
            .iter()
            .filter_map(|(id, l)| {
                let arch = l.known_arch?;
                let inv = l.inventory.as_ref()?;
                let mut v = scheduler::AgentView::new(
                    id.0,
                    &l.hostname,
                    arch,
                    inv.cpu_threads,
                    inv.mem_total_bytes,
                );
                v.state = match (l.state, l.session.is_some()) {
                    (AgentState::Ready, true) => scheduler::AgentState::Ready,
                    (AgentState::Lost, _) => scheduler::AgentState::Lost,
                    (AgentState::Revoked, _) => scheduler::AgentState::Revoked,
                    _ => scheduler::AgentState::Unreachable,
                };
                v.cordoned = l.cordoned || l.drain.is_some();
                v.trust_labels = l.trust_labels.clone();
                v.gpus = inv
                    .gpus
                    .iter()
                    .map(|g| GpuView {
                        vendor: g.vendor,
                        uuid: g.uuid.clone(),
                        memory: g.memory_bytes.unwrap_or(0),
                        render_node: g.render_node.clone(),
                    })
                    .collect();
                v.images = l.held.clone();
                Some(v)
            })
            .collect();
        out.sort_by_key(|v| v.id);
        out
    }

    /// Every known agent's liveness state.
    pub fn states(&self) -> HashMap<AgentId, AgentState> {
        self.lock().iter().map(|(id, l)| (*id, l.state)).collect()
    }

    /// Agents with a drain that has not finished yet.
    pub fn unfinished_drains(&self) -> Vec<(AgentId, Drain)> {
        self.lock()
            .iter()
            .filter_map(|(id, l)| {
                let d = l.drain.as_ref()?;
                d.drained_at.is_none().then(|| (*id, d.clone()))
            })
            .collect()
    }

    /// A consistent snapshot of every agent, for listings.
    pub fn snapshot(&self) -> Vec<AgentView> {
        let agents = self.lock();
        let mut v: Vec<AgentView> = agents
            .iter()
            .map(|(id, l)| AgentView {
                id: id.to_string(),
                hostname: l.hostname.clone(),
                arch: l.arch.clone(),
                state: l.state,
                cordoned: l.cordoned,
                connected: l.session.is_some(),
                last_seen: l
                    .last_seen_wall
                    .map(|t| super::agent::rfc3339(db::to_ms(t))),
                enrolled_at: super::agent::rfc3339(l.enrolled_at),
                cert_expires_at: super::agent::rfc3339(l.cert_not_after),
                trust_labels: l.trust_labels.clone(),
                reported_labels: l
                    .inventory
                    .as_ref()
                    .map(|i| i.labels.clone())
                    .unwrap_or_default(),
                gpus: l
                    .inventory
                    .as_ref()
                    .map(|i| i.gpus.clone())
                    .unwrap_or_default(),
                load: l.load,
                inventory: l.inventory.clone(),
                drain: l.drain.clone(),
            })
            .collect();
        v.sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
        v
    }
}

/// A freshly enrolled x86_64 agent's stored row, for tests.
#[cfg(test)]
pub(crate) fn enrolled_row(id: &AgentId, hostname: &str) -> AgentRow {
    AgentRow {
        id: id.to_string(),
        hostname: hostname.into(),
        arch: "x86_64".into(),
        state: "enrolled".into(),
        cordoned: false,
        labels: "{}".into(),
        inventory: None,
        load: None,
        cert_serial: "01".into(),
        cert_not_after: 0,
        token_id: None,
        enrolled_at: 0,
        last_seen: None,
        revoked_at: None,
    }
}

/// The agent has no live session to send to.
#[derive(Debug, Clone, thiserror::Error)]
#[error("agent {0} has no live session")]
pub struct NotConnected(pub AgentId);

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &AgentId) -> AgentRow {
        enrolled_row(id, "h")
    }

    fn timings() -> Timings {
        Timings {
            heartbeat_interval: Duration::from_secs(1),
            unreachable_after: Duration::from_secs(3),
            lost_after: Duration::from_secs(10),
        }
    }

    fn inv() -> Inventory {
        Inventory {
            hostname: "h".into(),
            arch: "x86_64".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn ready_unreachable_lost_and_back() {
        let id = AgentId::new_random();
        let fleet = Fleet::new(&[row(&id)], &[], timings());
        let (tx, mut rx) = mpsc::channel(4);
        let (sid, prev) = fleet.connect(id, inv(), tx).unwrap();
        assert_eq!(prev, AgentState::Enrolled);
        let t0 = Instant::now();
        assert!(fleet.tick(t0 + Duration::from_secs(2)).is_empty());
        let t = fleet.tick(t0 + Duration::from_secs(4));
        assert_eq!(
            t,
            vec![Transition {
                agent: id,
                from: AgentState::Ready,
                to: AgentState::Unreachable
            }]
        );
        // the silent session was closed
        assert!(matches!(
            rx.recv().await,
            Some(AgentCommand::Close(CloseReason::Silent))
        ));
        let t = fleet.tick(t0 + Duration::from_secs(15));
        assert_eq!(t[0].to, AgentState::Lost);
        fleet.disconnect(&id, sid);
        let (tx2, _rx2) = mpsc::channel(4);
        let (_, prev) = fleet.connect(id, inv(), tx2).unwrap();
        assert_eq!(prev, AgentState::Lost);
        assert_eq!(fleet.snapshot()[0].state, AgentState::Ready);
    }

    #[tokio::test]
    async fn revoke_cuts_session_and_refuses() {
        let id = AgentId::new_random();
        let fleet = Fleet::new(&[row(&id)], &[], timings());
        let (tx, mut rx) = mpsc::channel(4);
        fleet.connect(id, inv(), tx).unwrap();
        fleet.revoke(&id);
        let msg = rx.recv().await.unwrap();
        assert!(
            matches!(msg, AgentCommand::Close(CloseReason::Revoked)),
            "{msg:?}"
        );
        let (tx2, _rx2) = mpsc::channel(4);
        assert_eq!(
            fleet.connect(id, inv(), tx2).unwrap_err(),
            Refusal::Revoked(id)
        );
        assert_eq!(fleet.admit(&id), Err(Refusal::Revoked(id)));
        let stranger = AgentId::new_random();
        assert_eq!(fleet.admit(&stranger), Err(Refusal::Unknown(stranger)));
    }

    #[test]
    fn heartbeats_stay_in_memory_until_flushed() {
        let id = AgentId::new_random();
        let fleet = Fleet::new(&[row(&id)], &[], timings());
        let (tx, _rx) = mpsc::channel(4);
        let (sid, _) = fleet.connect(id, inv(), tx).unwrap();
        assert_eq!(fleet.take_dirty().len(), 1);
        assert!(fleet.take_dirty().is_empty());
        for _ in 0..100 {
            fleet.heartbeat(
                &id,
                sid,
                Load {
                    runner_containers: 2,
                    ..Default::default()
                },
            );
        }
        let d = fleet.take_dirty();
        assert_eq!(d.len(), 1, "100 heartbeats make one pending write");
        assert!(
            d[0].load
                .as_deref()
                .unwrap()
                .contains("\"runner_containers\":2")
        );
    }

    #[tokio::test]
    async fn only_trust_labels_reach_the_scheduler_never_reported_ones() {
        let id = AgentId::new_random();
        let mut r = row(&id);
        r.labels = r#"{"rack":"b3"}"#.into();
        let fleet = Fleet::new(&[r], &[], timings());
        let mut claims = inv();
        claims.labels.insert("trust".into(), "deploy".into());
        claims.labels.insert("rack".into(), "a1".into());
        let (tx, _rx) = mpsc::channel(4);
        fleet.connect(id, claims, tx).unwrap();

        let view = fleet.scheduler_view();
        let want: Labels = [("rack".to_owned(), "b3".to_owned())].into();
        assert_eq!(
            view[0].trust_labels, want,
            "the agent's trust=deploy is a claim"
        );
        let listed = &fleet.snapshot()[0];
        assert_eq!(listed.trust_labels, want);
        assert_eq!(listed.reported_labels["trust"], "deploy", "shown apart");

        let mut rx = fleet.subscribe();
        rx.borrow_and_update();
        let deploy: Labels = [("trust".to_owned(), "deploy".to_owned())].into();
        assert!(fleet.set_trust_labels(&id, deploy.clone()));
        assert!(rx.has_changed().unwrap(), "placement is woken at once");
        assert_eq!(fleet.scheduler_view()[0].trust_labels, deploy);
        assert_eq!(fleet.trust_labels(&id), Some(deploy));
        assert!(!fleet.set_trust_labels(&AgentId::new_random(), Labels::new()));
    }

    #[test]
    fn the_scheduler_view_is_typed_and_follows_sessions_drains_and_gpus() {
        let id = AgentId::new_random();
        let odd = AgentId::new_random();
        let mut odd_row = row(&odd);
        odd_row.arch = "ppc64le".into();
        let fleet = Fleet::new(&[row(&id), odd_row], &[], timings());
        assert!(fleet.scheduler_view().is_empty(), "no inventory yet");
        let mut inv = Inventory {
            hostname: "gpu-1".into(),
            arch: "x86_64".into(),
            cpu_threads: 16,
            mem_total_bytes: 64 << 30,
            ..Default::default()
        };
        inv.gpus.push(super::super::inventory::Gpu {
            vendor: crate::scheduler::GpuVendor::Amd,
            index: 0,
            uuid: "GPU-A".into(),
            name: "MI210".into(),
            memory_bytes: Some(64 << 30),
            driver_version: None,
            cuda_version: None,
            mig_enabled: false,
            pci_id: None,
            pci_bus_id: None,
            render_node: Some("/dev/dri/renderD128".into()),
        });
        let (tx, _rx) = mpsc::channel(4);
        let (sid, _) = fleet.connect(id, inv, tx).unwrap();
        let (tx2, _rx2) = mpsc::channel(4);
        let ppc = Inventory {
            hostname: "p".into(),
            arch: "ppc64le".into(),
            ..Default::default()
        };
        fleet.connect(odd, ppc, tx2).unwrap();

        let view = fleet.scheduler_view();
        assert_eq!(
            view.len(),
            1,
            "an arch the scheduler does not know is left out"
        );
        let v = &view[0];
        assert_eq!(
            (v.id, v.arch, v.state),
            (id.0, Arch::X86_64, scheduler::AgentState::Ready)
        );
        assert_eq!((v.cpu_threads, v.memory_total), (16, 64 << 30));
        assert!(!v.cordoned);
        assert_eq!(v.gpus.len(), 1);
        assert_eq!(v.gpus[0].vendor, crate::scheduler::GpuVendor::Amd);
        assert_eq!(
            v.gpus[0].render_node.as_deref(),
            Some("/dev/dri/renderD128")
        );

        let drain = Drain {
            started_at: String::new(),
            deadline: String::new(),
            drained_at: None,
            deadline_ms: 0,
        };
        fleet.set_drain(&id, Some(drain));
        assert!(
            fleet.scheduler_view()[0].cordoned,
            "draining counts as cordoned"
        );
        assert_eq!(fleet.unfinished_drains().len(), 1);
        assert!(fleet.drain_done(&id));
        assert!(fleet.unfinished_drains().is_empty());

        fleet.disconnect(&id, sid);
        assert_eq!(
            fleet.scheduler_view()[0].state,
            scheduler::AgentState::Unreachable,
            "no session: nothing can be sent there"
        );
        assert_eq!(fleet.states()[&id], AgentState::Unreachable);
    }
}
