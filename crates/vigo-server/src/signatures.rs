//! Request signatures checked in batches. Every signed call hands its pending
//! signature to one task, which checks whatever has gathered meanwhile as one batch
//! (about half the work per signature of checking each alone) and answers each
//! caller with its own outcome.

use tokio::sync::{mpsc, oneshot};
use vigo_pki::PendingRequest;

/// Most signatures checked in one batch (a few milliseconds of work).
const MAX_BATCH: usize = 64;

type Job = (PendingRequest, oneshot::Sender<(PendingRequest, bool)>);

/// The handle signed calls use; cheap to clone.
#[derive(Clone)]
pub struct SignatureChecker {
    tx: mpsc::UnboundedSender<Job>,
}

impl SignatureChecker {
    /// Starts the checking task on the current runtime.
    pub fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx));
        Self { tx }
    }

    /// Checks `pending`'s signature together with the others waiting; returns it
    /// with the outcome, or `None` when the task has stopped (the runtime is
    /// shutting down).
    pub async fn check(&self, pending: PendingRequest) -> Option<(PendingRequest, bool)> {
        let (done, outcome) = oneshot::channel();
        self.tx.send((pending, done)).ok()?;
        outcome.await.ok()
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    // Batches and signatures since the last summary (debug log, every 10 s).
    let (mut batches, mut checked, mut since) = (0u64, 0u64, std::time::Instant::now());
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        // Calls decoded in this round of the scheduler join the batch: each sits
        // waiting for its answer, so nothing is held up but the checks themselves.
        tokio::task::yield_now().await;
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let pending: Vec<&PendingRequest> = jobs.iter().map(|(p, _)| p).collect();
        let outcomes = vigo_pki::check_signatures(&pending);
        batches += 1;
        checked += jobs.len() as u64;
        if since.elapsed() >= std::time::Duration::from_secs(10) {
            tracing::debug!(batches, checked, mean = checked as f64 / batches as f64, "request signatures checked");
            (batches, checked, since) = (0, 0, std::time::Instant::now());
        }
        for ((pending, done), valid) in jobs.drain(..).zip(outcomes) {
            // A caller that went away (its connection closed) no longer listens.
            let _ = done.send((pending, valid));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigo_pki::{SigningKey, Verifier, sign_request};

    /// Concurrent callers, some with bad signatures, each get their own outcome.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checks_each_get_their_own_outcome() {
        let checker = SignatureChecker::start();
        let verifier = std::sync::Arc::new(Verifier::default());
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..40 {
            let (checker, verifier) = (checker.clone(), verifier.clone());
            calls.spawn(async move {
                let key = SigningKey::generate();
                let now = 1_800_000_000;
                let sig = sign_request(&key, "CheckIn", b"body", now);
                let checked_body: &[u8] = if i % 7 == 3 { b"forged" } else { b"body" };
                let pending = verifier.prepare(&key.public_key(), "CheckIn", checked_body, &sig, now).expect("form");
                let (pending, valid) = checker.check(pending).await.expect("checker runs");
                (i, valid, verifier.admit(&pending, valid, now).is_ok())
            });
        }
        let mut seen = 0;
        while let Some(joined) = calls.join_next().await {
            let (i, valid, admitted) = joined.expect("task");
            assert_eq!(valid, i % 7 != 3, "call {i}");
            assert_eq!(admitted, valid, "call {i}");
            seen += 1;
        }
        assert_eq!(seen, 40);
    }
}
