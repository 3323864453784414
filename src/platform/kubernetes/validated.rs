//! The cached policies, each validated once per version, by namespace and by one of
//! their `matchLabels` pairs. Ownership (every pass) and the watch mappers (every
//! workload and pod event) ask which valid policies select a workload; scanning every
//! cached policy for that made a namespace of 1,000 policies cost 1,000 selector
//! checks per workload per pass and per event (`cargo bench --bench controller --
//! --policies 1000`). A workload carries every `matchLabels` pair of a policy that
//! selects it, so the policies filed under any one of their pairs are found from the
//! workload's own labels; a policy without `matchLabels` is tried on every workload.
//!
//! Kept by the policy watch stream (like [`super::index::SelectionIndex`]): an
//! applied policy is validated again (every write changes its `resourceVersion`, so
//! a changed spec is never judged by its old validation), a deleted one removed, and
//! a relist rebuilds the whole.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, RwLock},
    time::Duration,
};

use kube::{
    ResourceExt,
    runtime::{
        reflector::{ObjectRef, Store},
        watcher::Event,
    },
};

use super::workloads::WorkloadView;
use crate::policy::{PoolPolicy, RemediationRecord, ResolvedPolicy, validate_for_kubernetes};

/// A cached policy that is valid, and what it resolves to.
#[derive(Clone, Debug)]
pub struct Validated {
    pub policy: Arc<PoolPolicy>,
    pub resolved: Arc<ResolvedPolicy>,
}

type Label = (String, String);

/// One namespace's valid policies.
#[derive(Default)]
struct Namespace {
    by_name: BTreeMap<String, Validated>,
    /// Names filed under the first `matchLabels` pair of their selector.
    by_label: HashMap<Label, BTreeSet<String>>,
    /// Names of the policies whose selector has no `matchLabels`.
    unlabelled: BTreeSet<String>,
}

impl Namespace {
    /// Where a policy is filed: under its first `matchLabels` pair, or with the
    /// unlabelled ones.
    fn filing(resolved: &ResolvedPolicy) -> Option<Label> {
        let selector = resolved.selector()?;
        selector.match_labels.iter().next().map(|(k, v)| (k.clone(), v.clone()))
    }

    fn remove(&mut self, name: &str) {
        let Some(old) = self.by_name.remove(name) else { return };
        match Self::filing(&old.resolved) {
            Some(label) => {
                if let Some(names) = self.by_label.get_mut(&label) {
                    names.remove(name);
                    if names.is_empty() {
                        self.by_label.remove(&label);
                    }
                }
            }
            None => {
                self.unlabelled.remove(name);
            }
        }
    }

    fn insert(&mut self, name: String, v: Validated) {
        match Self::filing(&v.resolved) {
            Some(label) => {
                self.by_label.entry(label).or_default().insert(name.clone());
            }
            None => {
                self.unlabelled.insert(name.clone());
            }
        }
        self.by_name.insert(name, v);
    }
}

/// The index; cheap to clone (one shared state).
#[derive(Clone, Default)]
pub struct ValidatedPolicies {
    inner: Arc<RwLock<HashMap<String, Namespace>>>,
}

impl ValidatedPolicies {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Namespace>> {
        // A panic elsewhere while writing leaves whole entries (each write is one
        // insert or remove), so the state is still usable.
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Namespace>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Files `policy` anew: validated, or left out when it is not valid.
    pub fn put(&self, policy: Arc<PoolPolicy>) {
        let (namespace, name) = (policy.namespace().unwrap_or_default(), policy.name_any());
        let resolved = validate_for_kubernetes(&policy.spec).ok().map(Arc::new);
        let mut all = self.write();
        let ns = all.entry(namespace.clone()).or_default();
        ns.remove(&name);
        match resolved {
            Some(resolved) => ns.insert(name, Validated { policy, resolved }),
            None if ns.by_name.is_empty() => {
                all.remove(&namespace);
            }
            None => {}
        }
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        let mut all = self.write();
        if let Some(ns) = all.get_mut(namespace) {
            ns.remove(name);
            if ns.by_name.is_empty() {
                all.remove(namespace);
            }
        }
    }

    /// Replaces every policy (after a relist).
    pub fn replace(&self, policies: impl IntoIterator<Item = Arc<PoolPolicy>>) {
        self.write().clear();
        for p in policies {
            self.put(p);
        }
    }

    /// The valid policies of the workload's namespace whose selector picks it, by name.
    pub fn selecting(&self, view: &WorkloadView) -> Vec<Validated> {
        let all = self.read();
        let Some(ns) = all.get(&view.namespace) else {
            return Vec::new();
        };
        let mut names: BTreeSet<&String> = ns.unlabelled.iter().collect();
        for (k, v) in view.labels.iter() {
            if let Some(filed) = ns.by_label.get(&(k.to_owned(), v.to_owned())) {
                names.extend(filed);
            }
        }
        names
            .into_iter()
            .filter_map(|n| ns.by_name.get(n))
            .filter(|v| view.selected_by(&v.resolved))
            .cloned()
            .collect()
    }

    /// What the valid policies of `namespace` other than `me` recorded about the
    /// workloads `about` says yes to (kind, name).
    pub fn records_of_others(
        &self,
        namespace: &str,
        me: &str,
        about: impl Fn(&RemediationRecord) -> bool,
    ) -> Vec<RemediationRecord> {
        let all = self.read();
        let Some(ns) = all.get(namespace) else {
            return Vec::new();
        };
        ns.by_name
            .iter()
            .filter(|(name, _)| name.as_str() != me)
            .filter_map(|(_, v)| v.policy.status.as_ref())
            .flat_map(|st| &st.remediations)
            .filter(|r| about(r))
            .cloned()
            .collect()
    }

    /// The shortest interval of any valid policy.
    pub fn shortest_interval(&self) -> Option<Duration> {
        let all = self.read();
        all.values()
            .flat_map(|ns| ns.by_name.values())
            .map(|v| v.resolved.interval)
            .min()
    }
}

/// What a policy watch event does to the index, once its reflector has stored it.
pub fn follow(index: ValidatedPolicies, store: Store<PoolPolicy>) -> impl FnMut(&Event<PoolPolicy>) {
    move |event| match event {
        Event::Apply(p) => {
            if let Some(stored) = store.get(&ObjectRef::from_obj(p)) {
                index.put(stored);
            }
        }
        Event::Delete(p) => index.remove(&p.namespace().unwrap_or_default(), &p.name_any()),
        Event::InitDone => index.replace(store.state()),
        Event::Init | Event::InitApply(_) => {}
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{Value, json};

    pub(crate) fn policy(ns: &str, name: &str, selector: Value, min: u32) -> Arc<PoolPolicy> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "poolwarden.io/v1alpha1",
                "kind": "PoolPolicy",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "selector": selector,
                    "database": {"urlSecretRef": {"name": "db", "key": "url"}},
                    // Valid unless `min` is above the max size.
                    "pool": {"minSize": min, "maxSize": 10},
                },
            }))
            .expect("a policy"),
        )
    }

    fn workload(ns: &str, labels: Value) -> WorkloadView {
        let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
            "metadata": {"name": "w", "namespace": ns, "labels": labels},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "app"}]}}}
        }))
        .unwrap();
        super::super::cache::CachedWorkload::from(d).view
    }

    fn names(index: &ValidatedPolicies, view: &WorkloadView) -> Vec<String> {
        index.selecting(view).iter().map(|v| v.policy.name_any()).collect()
    }

    #[test]
    fn a_workload_finds_the_valid_policies_of_its_namespace_that_select_it() {
        let index = ValidatedPolicies::default();
        index.put(policy("prod", "by-team", json!({"matchLabels": {"team": "a"}}), 0));
        // Filed under its first pair (team), selects only with both.
        index.put(policy(
            "prod",
            "team-and-tier",
            json!({"matchLabels": {"team": "a", "tier": "web"}}),
            0,
        ));
        index.put(policy("prod", "other-team", json!({"matchLabels": {"team": "b"}}), 0));
        index.put(policy(
            "prod",
            "expressions",
            json!({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]}),
            0,
        ));
        index.put(policy("prod", "invalid", json!({"matchLabels": {"team": "a"}}), 20));
        index.put(policy("dev", "by-team", json!({"matchLabels": {"team": "a"}}), 0));
        let web = workload("prod", json!({"team": "a", "tier": "web"}));
        assert_eq!(names(&index, &web), ["by-team", "expressions", "team-and-tier"]);
        let api = workload("prod", json!({"team": "a", "tier": "api"}));
        assert_eq!(names(&index, &api), ["by-team", "expressions"]);
        assert_eq!(
            names(&index, &workload("prod", json!({"tier": "web"}))),
            Vec::<String>::new()
        );
        assert_eq!(names(&index, &workload("dev", json!({"team": "a"}))), ["by-team"]);
    }

    #[test]
    fn a_new_version_is_judged_on_its_own_and_deletes_and_relists_are_followed() {
        let index = ValidatedPolicies::default();
        let web = workload("prod", json!({"team": "a"}));
        index.put(policy("prod", "p", json!({"matchLabels": {"team": "a"}}), 0));
        assert_eq!(names(&index, &web), ["p"]);
        // An edit that makes it invalid, then one that moves it to other labels.
        index.put(policy("prod", "p", json!({"matchLabels": {"team": "a"}}), 20));
        assert_eq!(names(&index, &web), Vec::<String>::new());
        index.put(policy("prod", "p", json!({"matchLabels": {"team": "b"}}), 0));
        assert_eq!(names(&index, &web), Vec::<String>::new());
        index.put(policy("prod", "p", json!({"matchLabels": {"team": "a"}}), 0));
        index.remove("prod", "p");
        assert_eq!(names(&index, &web), Vec::<String>::new());
        index.put(policy("prod", "q", json!({"matchLabels": {"team": "a"}}), 0));
        index.replace([policy("prod", "r", json!({"matchLabels": {"team": "a"}}), 0)]);
        assert_eq!(names(&index, &web), ["r"]);
        assert_eq!(index.shortest_interval(), Some(Duration::from_secs(30)));
        index.replace([]);
        assert_eq!(index.shortest_interval(), None);
        assert!(index.read().is_empty(), "no namespace kept for nothing");
    }
}
