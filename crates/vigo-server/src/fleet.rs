//! The FleetIndex: every envoy the server knows, in memory.
//!
//! The check-in hot path reads and updates only this index; persistence goes
//! through the batching writer. Locks are held for map lookups and updates only,
//! never across I/O or signature checks.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use vigo_pki::PublicKey;

use vigo_store::Repeats;

use crate::policy::{Policy, SignedBundle};
use crate::runs::Streak;

/// One envoy as the server holds it.
#[derive(Clone)]
pub struct Envoy {
    pub name: String,
    pub key: PublicKey,
    pub cert_fingerprint: String,
    pub enrolled_at: i64,
    pub revoked_at: Option<i64>,
    pub last_checkin: Option<i64>,
    pub traits: Option<Arc<Value>>,
    pub traits_digest: Option<String>,
    pub policy_version: Option<String>,
    /// Its newest stored report row.
    pub last_report: Option<Arc<String>>,
    /// How far its queued run reports got: handed to the writer, and stored.
    pub reports: ReportProgress,
    /// The bundle chosen for this envoy under the policy number it was chosen for.
    pub bundle: Option<(i64, Arc<SignedBundle>)>,
    /// The age X25519 recipient its secrets are sealed to (`None`: enrolled before
    /// secrets existed; its bundles carry no secret values).
    pub age_recipient: Option<String>,
}

impl Envoy {
    /// Sequence number of `last_report`, 0 without one.
    pub fn report_seq(&self) -> i64 {
        self.reports.stored_run.map_or(0, |s| i64::try_from(s.seq).unwrap_or(i64::MAX))
    }

    /// The stored runs that repeated `last_report`'s outcome.
    pub fn repeats(&self) -> Option<Repeats> {
        self.reports.stored_run.and_then(|s| s.repeats)
    }
}

/// An envoy's queued run reports on their way to the store. The agent numbers its
/// reports and sends the unacknowledged ones, oldest first, at every check-in; it
/// forgets those up to the sequence number an answer acknowledges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportProgress {
    /// Everything the agent sent up to here is stored (or was dropped as unusable):
    /// what may be acknowledged.
    pub stored: u64,
    /// Everything up to here was handed to the writer; a resend of it is not
    /// written again.
    pub queued: u64,
    /// The newest report row and its repeats, as far as stored and as far as handed
    /// to the writer: the next report is a repeat when its outcome is `queued_run`'s.
    pub stored_run: Option<Streak>,
    pub queued_run: Option<Streak>,
}

impl ReportProgress {
    /// An envoy loaded from the store: its reports are stored up to `stored`, its
    /// newest row is `run`. A row stored beyond the mark (after a delivery that was
    /// not) is not what the next report is compared with: the missing reports come
    /// again and are stored as rows.
    pub fn loaded(run: Option<Streak>, stored: u64) -> Self {
        let queued_run = run.filter(|r| r.reach() <= stored);
        Self { stored, queued: stored, stored_run: run, queued_run }
    }

    /// A check-in carried reports up to `highest`. Returns `Some(base)` when some
    /// of them are new, that is above `base`, and marks them queued; `None` when
    /// all were already queued.
    pub fn claim(&mut self, highest: u64) -> Option<u64> {
        (highest > self.queued).then(|| std::mem::replace(&mut self.queued, highest))
    }

    /// The writer's outcome for reports claimed as `(base, highest]`. Stored ones
    /// count only when everything up to `base` is stored too: after a failed commit
    /// a later one would otherwise acknowledge the lost reports. A failure, or such a
    /// gap (also two check-ins of one envoy committed out of order), makes whatever is
    /// not known stored new again, so the agent's resend is written (a report stored
    /// twice stays one row), and the streak is the stored one again. `run` is the
    /// streak the write left. Returns whether the reports count as stored.
    pub fn settle(&mut self, base: u64, highest: u64, stored: bool, run: Option<Streak>) -> bool {
        if stored && self.stored >= base {
            self.stored = self.stored.max(highest);
            if run.map(|r| r.reach()) > self.stored_run.map(|r| r.reach()) {
                self.stored_run = run;
            }
            true
        } else {
            self.queued = self.queued.min(self.stored);
            self.queued_run = self.stored_run;
            false
        }
    }

    /// The acknowledgement for a check-in whose reports went up to `highest`: never
    /// more than the agent sent.
    pub fn ack(&self, highest: u64) -> u64 {
        self.stored.min(highest)
    }
}

/// The in-memory fleet.
#[derive(Default)]
pub struct FleetIndex {
    envoys: RwLock<HashMap<String, Envoy>>,
    policy: RwLock<Option<Arc<Policy>>>,
}

impl FleetIndex {
    pub fn insert(&self, e: Envoy) {
        self.write().insert(e.name.clone(), e);
    }

    pub fn get(&self, name: &str) -> Option<Envoy> {
        self.read().get(name).cloned()
    }

    /// The signing key of an active envoy (the first step of a check-in).
    pub fn active_key(&self, name: &str) -> Result<(PublicKey, String), &'static str> {
        match self.read().get(name) {
            None => Err("unknown envoy"),
            Some(e) if e.revoked_at.is_some() => Err("envoy is revoked"),
            Some(e) => Ok((e.key, e.cert_fingerprint.clone())),
        }
    }

    /// The certificate issued to an active envoy (SHA-256 hex), as transfer orders name it.
    pub fn active_certificate(&self, name: &str) -> Option<String> {
        self.read().get(name).filter(|e| e.revoked_at.is_none()).map(|e| e.cert_fingerprint.clone())
    }

    /// An envoy's report progress, read without copying the envoy.
    pub fn reports(&self, name: &str) -> Option<ReportProgress> {
        self.read().get(name).map(|e| e.reports)
    }

    /// Changes one envoy under the write lock; `None` when it is unknown.
    pub fn update<T>(&self, name: &str, f: impl FnOnce(&mut Envoy) -> T) -> Option<T> {
        self.write().get_mut(name).map(f)
    }

    pub fn all(&self) -> Vec<Envoy> {
        let mut v: Vec<Envoy> = self.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn policy(&self) -> Option<Arc<Policy>> {
        self.policy.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn set_policy(&self, p: Arc<Policy>) {
        *self.policy.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(p);
    }

    /// The bundle an envoy should hold under the current policy, computed from its
    /// traits and cached on the envoy until the policy or its traits change.
    pub fn bundle_for(&self, name: &str) -> Option<Arc<SignedBundle>> {
        let policy = self.policy()?;
        // Every check-in asks; the cached answer is read without copying the envoy.
        let (traits, age_recipient) = {
            let envoys = self.read();
            let envoy = envoys.get(name)?;
            if let Some((number, b)) = &envoy.bundle
                && *number == policy.number
            {
                return Some(b.clone());
            }
            (envoy.traits.clone(), envoy.age_recipient.clone())
        };
        let empty = Value::Object(Default::default());
        let traits = traits.as_deref().unwrap_or(&empty);
        let modules = policy.assignments.modules_for(name, traits);
        let bundle = policy.bundle_for(&modules, name, age_recipient.as_deref());
        self.update(name, |e| e.bundle = Some((policy.number, bundle.clone())));
        Some(bundle)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Envoy>> {
        self.envoys.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Envoy>> {
        self.envoys.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl crate::vigosync::Certificates for FleetIndex {
    fn certificate(&self, envoy: &str) -> Option<String> {
        self.active_certificate(envoy)
    }
}

#[cfg(test)]
mod tests {
    use super::ReportProgress;
    use crate::runs::Streak;

    fn at(seq: u64) -> ReportProgress {
        ReportProgress { stored: seq, queued: seq, ..ReportProgress::default() }
    }

    #[test]
    fn resends_are_claimed_once_and_acknowledged_once_stored() {
        let mut p = at(3);
        assert_eq!(p.claim(3), None, "nothing new");
        assert_eq!(p.claim(5), Some(3));
        assert_eq!(p.claim(5), None, "a resend before the commit is not written twice");
        assert_eq!(p.ack(5), 3, "not stored yet");
        p.settle(3, 5, true, None);
        assert_eq!(p.ack(5), 5);
        assert_eq!(p.ack(4), 4, "never more than the agent sent");
    }

    #[test]
    fn a_failed_commit_acknowledges_nothing_after_it() {
        let mut p = ReportProgress::default();
        assert_eq!(p.claim(1), Some(0));
        assert_eq!(p.claim(2), Some(1));
        // The batch holding report 1 fails; the one holding report 2 commits.
        p.settle(0, 1, false, None);
        p.settle(1, 2, true, None);
        assert_eq!(p.ack(2), 0, "report 1 is lost, so 2 cannot be acknowledged");
        // The agent resends both; they are new again and both written.
        assert_eq!(p.claim(2), Some(0));
        p.settle(0, 2, true, None);
        assert_eq!(p, at(2));
    }

    #[test]
    fn commits_out_of_order_are_written_again_not_lost() {
        let mut p = ReportProgress::default();
        let first = p.claim(1).expect("new");
        let second = p.claim(2).expect("new");
        p.settle(second, 2, true, None);
        assert_eq!(p.ack(2), 0, "report 1 is not known stored yet");
        p.settle(first, 1, true, None);
        assert_eq!(p.ack(2), 1);
        // The resend of report 2 is written again, so it is acknowledged at last.
        let again = p.claim(2).expect("new again");
        p.settle(again, 2, true, None);
        assert_eq!(p.ack(2), 2);
    }

    #[test]
    fn commits_settle_in_order() {
        let mut p = at(10);
        let first = p.claim(11).expect("new");
        let second = p.claim(12).expect("new");
        p.settle(first, 11, true, None);
        assert_eq!(p.ack(12), 11);
        p.settle(second, 12, true, None);
        assert_eq!(p.ack(12), 12);
    }

    #[test]
    fn a_failed_commit_brings_back_the_stored_streak() {
        let run = |seq, outcome| Some(Streak { seq, outcome: [outcome; 32], repeats: None });
        let mut p = ReportProgress::loaded(run(4, 1), 4);
        assert_eq!((p.stored, p.queued), (4, 4));
        let base = p.claim(5).expect("new");
        p.queued_run = run(5, 2);
        assert!(!p.settle(base, 5, false, run(5, 2)), "not stored");
        assert_eq!((p.queued, p.queued_run), (4, run(4, 1)), "report 5 is new again, after row 4");
        let base = p.claim(5).expect("new again");
        p.queued_run = run(5, 2);
        assert!(p.settle(base, 5, true, run(5, 2)));
        assert_eq!((p.stored, p.stored_run), (5, run(5, 2)));
        // A late settle of a shorter streak does not move the stored one back.
        assert!(p.settle(4, 5, true, run(4, 1)));
        assert_eq!(p.stored_run, run(5, 2));
    }

    #[test]
    fn a_row_beyond_the_stored_mark_is_not_compared_with() {
        let row = Some(Streak { seq: 6, outcome: [1; 32], repeats: None });
        let p = ReportProgress::loaded(row, 4);
        assert_eq!((p.stored, p.queued, p.stored_run, p.queued_run), (4, 4, row, None));
        assert_eq!(p.ack(6), 4, "reports 5 and 6 are resent");
        assert_eq!(ReportProgress::loaded(row, 6).queued_run, row);
    }
}
