//! The batching writer: one task that turns a stream of check-in updates into
//! few, large transactions, so the check-in path never waits on the database.

use std::time::Duration;

use tokio::sync::mpsc;
use vigo_store::{Store, WriteOp};

/// Most operations written in one transaction.
const MAX_BATCH: usize = 1024;
/// How long the writer gathers more operations after the first one arrives.
const LINGER: Duration = Duration::from_millis(50);

/// The sending side, cloned into every task that writes.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<WriteOp>,
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
        let task = tokio::spawn(run(store, rx, stopped));
        (Self { tx }, WriterHandle { stop, task })
    }

    /// Queues an operation; when the queue is full the caller waits (back-pressure).
    pub async fn send(&self, op: WriteOp) {
        if self.tx.send(op).await.is_err() {
            tracing::error!("batching writer has stopped; an update was lost");
        }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<WriteOp>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut backlog = false;
    loop {
        let first = tokio::select! {
            op = rx.recv() => op,
            _ = stopped.changed() => None,
        };
        let Some(first) = first else { break };
        batch.push(first);
        // The batch gathers in the channel while this task sleeps: waiting on the
        // channel instead would wake the task for every check-in. A backlog that
        // already fills a batch is written at once.
        if !backlog {
            tokio::time::sleep(LINGER).await;
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        backlog = batch.len() >= MAX_BATCH;
        write(&store, &mut batch).await;
    }
    // Stopping: everything already queued is written before the task ends.
    rx.close();
    while let Some(op) = rx.recv().await {
        batch.push(op);
        if batch.len() >= MAX_BATCH {
            write(&store, &mut batch).await;
        }
    }
    write(&store, &mut batch).await;
}

async fn write(store: &Store, batch: &mut Vec<WriteOp>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = store.apply_batch(batch).await {
        tracing::error!(error = %e, ops = batch.len(), "batch write failed");
    }
    batch.clear();
}
