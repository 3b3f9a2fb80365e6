//! The FleetIndex: every envoy the server knows, in memory.
//!
//! The check-in hot path reads and updates only this index; persistence goes
//! through the batching writer. Locks are held for map lookups and updates only,
//! never across I/O or signature checks.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use vigo_pki::PublicKey;

use crate::policy::{Policy, SignedBundle};

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
    pub last_report: Option<Arc<String>>,
    pub report_seq: i64,
    /// The bundle chosen for this envoy under the policy number it was chosen for.
    pub bundle: Option<(i64, Arc<SignedBundle>)>,
    /// The age X25519 recipient its secrets are sealed to (`None`: enrolled before
    /// secrets existed; its bundles carry no secret values).
    pub age_recipient: Option<String>,
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
