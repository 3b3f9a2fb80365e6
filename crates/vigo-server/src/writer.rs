//! The batching writer: one task that turns a stream of check-in updates into
//! few, large transactions, so the check-in path never waits on the database.

use std::time::Duration;

use tokio::sync::mpsc;
use vigo_store::{Store, WriteOp};

/// Most operations written in one transaction.
const MAX_BATCH: usize = 1024;
/// How long the writer gathers more operations after the first one arrives.
const LINGER: Duration = Duration::from_millis(50);

/// The sending side; dropping every clone makes the task flush and stop.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<WriteOp>,
}

impl Writer {
    /// Starts the writer task; await the handle after dropping the writer to flush.
    pub fn start(store: Store) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(64 * 1024);
        (Self { tx }, tokio::spawn(run(store, rx)))
    }

    /// Queues an operation; when the queue is full the caller waits (back-pressure).
    pub async fn send(&self, op: WriteOp) {
        if self.tx.send(op).await.is_err() {
            tracing::error!("batching writer has stopped; an update was lost");
        }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<WriteOp>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(op)) => batch.push(op),
                Ok(None) | Err(_) => break,
            }
        }
        if let Err(e) = store.apply_batch(&batch).await {
            tracing::error!(error = %e, ops = batch.len(), "batch write failed");
        }
        batch.clear();
    }
}
