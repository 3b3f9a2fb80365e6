//! The batching writer: one task that turns a stream of check-in updates into
//! few, large transactions.
//!
//! Most updates are queued and forgotten: the check-in path never waits on the
//! database for them. An update whose caller must know it is stored (queued run
//! reports, which the agent forgets once acknowledged) waits for the commit of the
//! batch it lands in: a group commit, so thousands of check-ins a second share a few
//! dozen transactions instead of each paying for its own.

use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};
use vigo_store::{Store, WriteOp};

/// Most operations written in one transaction.
const MAX_BATCH: usize = 1024;
/// How long the writer gathers more operations after the first one arrives, unless
/// one of them has a caller waiting for its commit.
const LINGER: Duration = Duration::from_millis(50);

/// Operations queued together, and who waits for their commit.
struct Queued {
    ops: Vec<WriteOp>,
    committed: Option<oneshot::Sender<bool>>,
}

/// The sending side, cloned into every task that writes.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Queued>,
    /// Cuts a linger short when a caller waits for a commit.
    urgent: Arc<Notify>,
}

/// Stops the writer task: it writes everything already queued, then ends, even
/// while senders (open connections) still exist.
pub struct WriterHandle {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl WriterHandle {
    pub async fn close(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl Writer {
    /// Starts the writer task.
    pub fn start(store: Store) -> (Self, WriterHandle) {
        let (tx, rx) = mpsc::channel(64 * 1024);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let urgent = Arc::new(Notify::new());
        let task = tokio::spawn(run(store, rx, stopped, urgent.clone()));
        (Self { tx, urgent }, WriterHandle { stop, task })
    }

    /// Queues an operation; when the queue is full the caller waits (back-pressure).
    pub async fn send(&self, op: WriteOp) {
        if self.tx.send(Queued { ops: vec![op], committed: None }).await.is_err() {
            tracing::error!("batching writer has stopped; an update was lost");
        }
    }

    /// Queues `ops` to be written in one transaction with whatever else is queued, and
    /// waits for its commit: true once they are stored, false when the transaction
    /// failed (the error is logged) or the writer has stopped.
    pub async fn write_durably(&self, ops: Vec<WriteOp>) -> bool {
        let (committed, outcome) = oneshot::channel();
        if self.tx.send(Queued { ops, committed: Some(committed) }).await.is_err() {
            return false;
        }
        self.urgent.notify_one();
        outcome.await.unwrap_or(false)
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Queued>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    urgent: Arc<Notify>,
) {
    let mut batch = Batch::default();
    let mut backlog = false;
    loop {
        let first = tokio::select! {
            queued = rx.recv() => queued,
            _ = stopped.changed() => None,
        };
        let Some(first) = first else { break };
        batch.push(first);
        // The batch gathers in the channel while this task sleeps: waiting on the
        // channel instead would wake the task for every check-in. A backlog that
        // already fills a batch, or a caller waiting for the commit, ends the wait; the
        // operations that queue up while a commit runs then make the next batch.
        if !backlog && batch.waiting.is_empty() {
            tokio::select! {
                () = tokio::time::sleep(LINGER) => {}
                () = urgent.notified() => {}
            }
        }
        while batch.ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        backlog = batch.ops.len() >= MAX_BATCH;
        batch.write(&store).await;
    }
    // Stopping: everything already queued is written before the task ends.
    rx.close();
    while let Some(queued) = rx.recv().await {
        batch.push(queued);
        if batch.ops.len() >= MAX_BATCH {
            batch.write(&store).await;
        }
    }
    batch.write(&store).await;
}

/// Operations gathered for one transaction, and the callers waiting for it.
#[derive(Default)]
struct Batch {
    ops: Vec<WriteOp>,
    waiting: Vec<oneshot::Sender<bool>>,
}

impl Batch {
    fn push(&mut self, queued: Queued) {
        self.ops.extend(queued.ops);
        self.waiting.extend(queued.committed);
    }

    async fn write(&mut self, store: &Store) {
        if self.ops.is_empty() {
            return;
        }
        let began = std::time::Instant::now();
        let stored = match store.apply_batch(&self.ops).await {
            Ok(()) => {
                tracing::debug!(ops = self.ops.len(), waiting = self.waiting.len(), took = ?began.elapsed(), "batch written");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, ops = self.ops.len(), "batch write failed");
                false
            }
        };
        for waiting in self.waiting.drain(..) {
            // A caller that gave up (its connection closed) no longer listens.
            let _ = waiting.send(stored);
        }
        self.ops.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigo_store::EnvoyRow;

    async fn store_with(envoys: &[&str]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&format!("sqlite://{}", dir.path().join("vigo.db").display())).await.expect("open");
        for name in envoys {
            let row = EnvoyRow::enrolled(name, vec![1; 32], &format!("sha256:{name}"), 1);
            store.insert_envoy(&row).await.expect("enroll");
        }
        (dir, store)
    }

    fn reports(envoy: &str, seqs: &[i64]) -> WriteOp {
        WriteOp::Reports {
            envoy: envoy.into(),
            at: 5,
            reports: seqs.iter().map(|s| (*s, format!("{{\"run\":{s}}}"))).collect(),
        }
    }

    fn check_in(envoy: &str, at: i64) -> WriteOp {
        WriteOp::CheckIn { envoy: envoy.into(), at, traits_json: None, policy_version: "v1".into() }
    }

    /// A durable write is readable as soon as it is acknowledged, and so is what was
    /// queued before it without a wait: they share the commit.
    #[tokio::test]
    async fn a_durable_write_is_stored_when_acknowledged() {
        let (_dir, store) = store_with(&["web-1", "web-2"]).await;
        let (writer, handle) = Writer::start(store.clone());
        writer.send(check_in("web-2", 7)).await;
        assert!(writer.write_durably(vec![reports("web-1", &[1, 2]), check_in("web-1", 8)]).await);
        let stored: Vec<i64> = store.reports("web-1").await.expect("reports").iter().map(|r| r.seq).collect();
        assert_eq!(stored, [1, 2]);
        let envoys = store.envoys().await.expect("envoys");
        let checkins: Vec<_> = envoys.iter().map(|e| (e.name.as_str(), e.last_checkin)).collect();
        assert_eq!(checkins, [("web-1", Some(8)), ("web-2", Some(7))]);
        handle.close().await;
    }

    /// Many callers waiting at once all learn the outcome of the commit they shared.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_durable_writes_are_all_acknowledged() {
        let names: Vec<String> = (0..40).map(|i| format!("web-{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (_dir, store) = store_with(&refs).await;
        let (writer, handle) = Writer::start(store.clone());
        let mut calls = tokio::task::JoinSet::new();
        for name in names.clone() {
            let writer = writer.clone();
            calls.spawn(async move { writer.write_durably(vec![reports(&name, &[1, 2, 3])]).await });
        }
        while let Some(acked) = calls.join_next().await {
            assert!(acked.expect("task"), "every write is acknowledged");
        }
        for name in &names {
            assert_eq!(store.reports(name).await.expect("reports").len(), 3, "{name}");
        }
        handle.close().await;
    }

    /// A batch that cannot be stored is reported as such to the caller waiting for it,
    /// and the writer carries on with the next batch.
    #[tokio::test]
    async fn a_failed_commit_is_not_acknowledged() {
        let (_dir, store) = store_with(&["web-1"]).await;
        let (writer, handle) = Writer::start(store.clone());
        let bad = WriteOp::Reports { envoy: "web-1".into(), at: 5, reports: vec![(1, "not json".into())] };
        assert!(!writer.write_durably(vec![bad]).await);
        assert!(store.reports("web-1").await.expect("reports").is_empty());
        assert!(writer.write_durably(vec![reports("web-1", &[1])]).await);
        assert_eq!(store.reports("web-1").await.expect("reports").len(), 1);
        handle.close().await;
        // A stopped writer acknowledges nothing.
        assert!(!writer.write_durably(vec![reports("web-1", &[2])]).await);
    }
}
