//! The reconciler's database writer: a task of its own, so the actor never
//! waits for SQLite on its hot path. The actor journals a pass's runner
//! records and audit events and hands them over here in one batch
//! ([`Reconciler::flush`](super::Reconciler)); batches that queue up while
//! one commits are committed together, in order, in one transaction. The
//! GitLab runners of a batch are created only after it is committed, so a
//! record always exists before its GitLab runner; a runner given a stocked
//! GitLab runner reaches its agent only after that, too. A batch can carry an
//! acknowledgement for the actor's few read-after-write needs (reading a
//! runner back, answering an operator or a `Settle`).

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::Op;
use super::gitlab_ops::spawn_create;
use crate::db::{Db, RunnerWrite};
use crate::gitlab::{CreateRunner, SharedGitLab};

/// One pass's writes.
pub(super) struct Batch {
    pub writes: Vec<RunnerWrite>,
    /// GitLab runners to create once `writes` are committed.
    pub creates: Vec<(Uuid, CreateRunner)>,
    /// Runners given a stocked GitLab runner: handed back to the loop once
    /// `writes` are committed.
    pub taken: Vec<Op>,
    /// Told once `writes` are committed.
    pub done: Option<oneshot::Sender<()>>,
}

/// Commits batches until every sender is gone.
pub(super) async fn run(
    db: Db,
    gitlab: SharedGitLab,
    ops: mpsc::UnboundedSender<Op>,
    mut batches: mpsc::UnboundedReceiver<Batch>,
) {
    while let Some(first) = batches.recv().await {
        let mut taken = vec![first];
        while let Ok(more) = batches.try_recv() {
            taken.push(more);
        }
        let writes: Vec<RunnerWrite> = taken
            .iter_mut()
            .flat_map(|b| std::mem::take(&mut b.writes))
            .collect();
        if !writes.is_empty()
            && let Err(e) = db.write_runners(&writes).await
        {
            tracing::error!(writes = writes.len(), error = %e, "persist runner records and events");
        }
        for b in taken {
            for (id, req) in b.creates {
                spawn_create(&gitlab, &ops, id, req);
            }
            for op in b.taken {
                let _ = ops.send(op);
            }
            if let Some(done) = b.done {
                let _ = done.send(());
            }
        }
    }
}
