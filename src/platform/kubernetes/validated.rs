//! Each cached policy validated once per version. Ownership (every pass) and the
//! watch mappers (every workload and pod event) ask which of a namespace's policies
//! are valid and what they select; validating every policy for each of those made a
//! namespace of 1,000 policies cost 1,000 validations per pass and per event
//! (`cargo bench --bench controller -- --policies 1000`).
//!
//! Keyed by uid and `resourceVersion`, which changes on every write of the object,
//! so a changed spec is never judged by its old validation.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::policy::{PoolPolicy, ResolvedPolicy, validate_for_kubernetes};

type Validation = Option<Arc<ResolvedPolicy>>;

/// The memo; cheap to clone (one shared state).
#[derive(Clone, Default)]
pub struct ValidatedPolicies {
    by_uid: Arc<Mutex<HashMap<String, (String, Validation)>>>,
}

impl ValidatedPolicies {
    /// `policy` resolved for Kubernetes, or `None` when it is not valid.
    pub fn resolved(&self, policy: &PoolPolicy) -> Validation {
        let meta = &policy.metadata;
        let (Some(uid), Some(version)) = (meta.uid.as_ref(), meta.resource_version.as_ref()) else {
            // Not from the API server (no identity to key on): validate every time.
            return validate_for_kubernetes(&policy.spec).ok().map(Arc::new);
        };
        // A panic while holding the lock leaves whole entries: the map stays usable.
        let mut memo = self.by_uid.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, validation)) = memo.get(uid)
            && seen == version
        {
            return validation.clone();
        }
        let validation = validate_for_kubernetes(&policy.spec).ok().map(Arc::new);
        memo.insert(uid.clone(), (version.clone(), validation.clone()));
        validation
    }

    /// Drops what is kept for policies no longer in `cached` once the memo holds more
    /// entries than the cache (a policy was deleted), so a cluster that churns
    /// policies does not grow the memo for ever; a cheap length check otherwise.
    pub fn forget_deleted(&self, cached: &[Arc<PoolPolicy>]) {
        let mut memo = self.by_uid.lock().unwrap_or_else(|e| e.into_inner());
        if memo.len() <= cached.len() {
            return;
        }
        let live: std::collections::HashSet<&str> = cached.iter().filter_map(|p| p.metadata.uid.as_deref()).collect();
        memo.retain(|uid, _| live.contains(uid.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy that is valid unless `min` is above the max size (10).
    fn policy(uid: &str, version: &str, min: u32) -> PoolPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "poolwarden.io/v1alpha1",
            "kind": "PoolPolicy",
            "metadata": {"name": "p", "namespace": "n", "uid": uid, "resourceVersion": version},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "database": {"urlSecretRef": {"name": "db", "key": "url"}},
                "pool": {"minSize": min, "maxSize": 10},
            },
        }))
        .expect("a policy")
    }

    #[test]
    fn a_new_version_is_validated_again_and_an_old_one_is_not() {
        let memo = ValidatedPolicies::default();
        let valid = policy("u1", "1", 1);
        assert!(memo.resolved(&valid).is_some());
        // The same version again: the memo answers (the same Arc).
        let first = memo.resolved(&valid).unwrap();
        assert!(Arc::ptr_eq(&first, &memo.resolved(&valid).unwrap()));
        // A new version with an invalid spec is judged on its own.
        assert!(memo.resolved(&policy("u1", "2", 20)).is_none());
        assert!(memo.resolved(&policy("u1", "3", 1)).is_some());
    }

    #[test]
    fn deleted_policies_are_forgotten() {
        let memo = ValidatedPolicies::default();
        memo.resolved(&policy("u1", "1", 1));
        memo.resolved(&policy("u2", "1", 1));
        memo.forget_deleted(&[Arc::new(policy("u2", "1", 1))]);
        let kept: Vec<String> = memo.by_uid.lock().unwrap().keys().cloned().collect();
        assert_eq!(kept, vec!["u2".to_owned()]);
    }
}
