//! The batching writer: one task that turns a stream of check-in updates into
//! few, large transactions.
//!
//! Most updates are queued and forgotten: the check-in path never waits on the
//! database for them. An update whose caller must learn that it is stored (queued
//! run reports, which the agent forgets once acknowledged) carries a callback that
//! runs once the batch it lands in is committed, or fails. A caller may also wait
//! for that commit: a group commit, so many check-ins share one transaction instead
//! of each paying for its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};
use vigo_store::{Store, WriteOp};

/// Most operations written in one transaction.
const MAX_BATCH: usize = 1024;
/// How long the writer gathers more operations after the first one arrives, unless
/// one of them has a caller waiting for its commit.
const LINGER: Duration = Duration::from_millis(50);
/// Updates a second from which the writer counts as busy (about 1,500 envoys at a
/// 15 s interval).
pub const BUSY_RATE: u32 = 100;

/// Runs on the writer task with the outcome of the commit (true: stored). It must
/// be quick: the next batch waits for it.
pub type OnCommit = Box<dyn FnOnce(bool) + Send>;

/// Operations queued together, and who learns of their commit.
struct Queued {
    ops: Vec<WriteOp>,
    on_commit: Option<OnCommit>,
    /// A caller waits for the commit, so the writer does not linger.
    urgent: bool,
}

/// The sending side, cloned into every task that writes.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Queued>,
    /// Cuts a linger short when a caller waits for a commit.
    urgent: Arc<Notify>,
    /// How many updates were queued lately.
    rate: Arc<std::sync::Mutex<Rate>>,
}

/// Updates queued per second: the current second's count and the previous one's.
struct Rate {
    epoch: Instant,
    second: u64,
    current: u32,
    previous: u32,
}

impl Default for Rate {
    fn default() -> Self {
        Self { epoch: Instant::now(), second: 0, current: 0, previous: 0 }
    }
}

impl Rate {
    /// Counts one update in second `now` (since the epoch).
    fn count(&mut self, now: u64) {
        self.roll(now);
        self.current = self.current.saturating_add(1);
    }

    /// True when second `now` or the one before it saw [`BUSY_RATE`] updates.
    fn busy(&mut self, now: u64) -> bool {
        self.roll(now);
        self.current.max(self.previous) >= BUSY_RATE
    }

    fn roll(&mut self, now: u64) {
        if now != self.second {
            self.previous = if now == self.second + 1 { self.current } else { 0 };
            self.current = 0;
            self.second = now;
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }
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
        (Self { tx, urgent, rate: Arc::default() }, WriterHandle { stop, task })
    }

    /// Queues an operation; when the queue is full the caller waits (back-pressure).
    pub async fn send(&self, op: WriteOp) {
        self.queue(Queued { ops: vec![op], on_commit: None, urgent: false }).await;
    }

    /// Queues `ops` for one transaction with whatever else is queued; `on_commit` runs
    /// with its outcome (false when it failed, with the error logged, or when the
    /// writer has stopped).
    pub async fn send_then(&self, ops: Vec<WriteOp>, on_commit: OnCommit) {
        self.queue(Queued { ops, on_commit: Some(on_commit), urgent: false }).await;
    }

    /// Like [`Writer::send_then`], and waits until `on_commit` has run; the writer
    /// commits without lingering. Returns the outcome.
    pub async fn write_durably_then(&self, ops: Vec<WriteOp>, on_commit: OnCommit) -> bool {
        let (committed, outcome) = oneshot::channel();
        let on_commit: OnCommit = Box::new(move |stored| {
            on_commit(stored);
            let _ = committed.send(stored);
        });
        self.queue(Queued { ops, on_commit: Some(on_commit), urgent: true }).await;
        self.urgent.notify_one();
        outcome.await.unwrap_or(false)
    }

    /// True when at least [`BUSY_RATE`] updates were queued in the current or the
    /// previous second: batches then follow each other closely, and a caller that
    /// waits for a commit waits for a batch already being written too.
    pub fn busy(&self) -> bool {
        let mut rate = self.rate();
        let now = rate.now();
        rate.busy(now)
    }

    fn rate(&self) -> std::sync::MutexGuard<'_, Rate> {
        self.rate.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn queue(&self, queued: Queued) {
        {
            let mut rate = self.rate();
            let now = rate.now();
            rate.count(now);
        }
        if let Err(mpsc::error::SendError(lost)) = self.tx.send(queued).await {
            tracing::error!("batching writer has stopped; an update was lost");
            if let Some(on_commit) = lost.on_commit {
                on_commit(false);
            }
        }
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
        if !backlog && !batch.urgent {
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

/// Operations gathered for one transaction, and the callbacks waiting for it.
#[derive(Default)]
struct Batch {
    ops: Vec<WriteOp>,
    on_commit: Vec<OnCommit>,
    urgent: bool,
}

impl Batch {
    fn push(&mut self, queued: Queued) {
        self.ops.extend(queued.ops);
        self.on_commit.extend(queued.on_commit);
        self.urgent |= queued.urgent;
    }

    async fn write(&mut self, store: &Store) {
        if self.ops.is_empty() && self.on_commit.is_empty() {
            return;
        }
        let began = Instant::now();
        let stored = match store.apply_batch(&self.ops).await {
            Ok(()) => {
                tracing::debug!(ops = self.ops.len(), callbacks = self.on_commit.len(), urgent = self.urgent, took = ?began.elapsed(), "batch written");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, ops = self.ops.len(), "batch write failed");
                false
            }
        };
        self.ops.clear();
        self.urgent = false;
        // In queue order: a later update's callback may rely on an earlier one's.
        for on_commit in self.on_commit.drain(..) {
            on_commit(stored);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Writer {
        /// Queues `ops` and waits for their commit: true once they are stored.
        async fn write_durably(&self, ops: Vec<WriteOp>) -> bool {
            self.write_durably_then(ops, Box::new(|_| {})).await
        }
    }
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
        WriteOp::new_reports(envoy, 5, seqs.iter().map(|s| (*s, format!("{{\"run\":{s}}}"))).collect())
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

    /// An update queued without a wait learns of its commit through its callback, in
    /// queue order, whatever the outcome.
    #[tokio::test]
    async fn callbacks_run_after_the_commit_in_queue_order() {
        let (_dir, store) = store_with(&["web-1"]).await;
        let (writer, handle) = Writer::start(store.clone());
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Each callback reports (its update, the outcome).
        let note = |seq: i64| -> OnCommit {
            let tx = tx.clone();
            Box::new(move |stored| {
                let _ = tx.send((seq, stored));
            })
        };
        for seq in [1, 2] {
            writer.send_then(vec![reports("web-1", &[seq])], note(seq)).await;
        }
        assert_eq!(rx.recv().await, Some((1, true)));
        assert_eq!(rx.recv().await, Some((2, true)));
        assert_eq!(store.reports("web-1").await.expect("reports").len(), 2, "stored when the callbacks ran");
        // A failed commit reaches its callback too.
        let bad = WriteOp::new_reports("web-1", 5, vec![(3, "not json".into())]);
        writer.send_then(vec![bad], note(3)).await;
        assert_eq!(rx.recv().await, Some((3, false)));
        handle.close().await;
        // So does an update the stopped writer never took.
        writer.send_then(vec![reports("web-1", &[4])], note(4)).await;
        assert_eq!(rx.recv().await, Some((4, false)));
    }

    /// The writer is busy from [`BUSY_RATE`] updates a second on, for that second
    /// and the next.
    #[test]
    fn busy_from_the_busy_rate() {
        let mut rate = Rate::default();
        for _ in 1..BUSY_RATE {
            rate.count(7);
        }
        assert!(!rate.busy(7));
        rate.count(7);
        assert!(rate.busy(7));
        assert!(rate.busy(8), "the previous second counts");
        assert!(!rate.busy(10), "two quiet seconds later");
        // Split over two seconds, the same number is not busy.
        for _ in 0..BUSY_RATE / 2 {
            rate.count(11);
        }
        for _ in 0..BUSY_RATE / 2 {
            rate.count(12);
        }
        assert!(!rate.busy(12));
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
        let bad = WriteOp::new_reports("web-1", 5, vec![(1, "not json".into())]);
        assert!(!writer.write_durably(vec![bad]).await);
        assert!(store.reports("web-1").await.expect("reports").is_empty());
        assert!(writer.write_durably(vec![reports("web-1", &[1])]).await);
        assert_eq!(store.reports("web-1").await.expect("reports").len(), 1);
        handle.close().await;
        // A stopped writer acknowledges nothing.
        assert!(!writer.write_durably(vec![reports("web-1", &[2])]).await);
    }
}
