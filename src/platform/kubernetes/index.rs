//! The caches' index for selection, and the controller's only copy of the workloads and
//! pods: the workloads of each namespace by label, and the pods of each workload (by
//! their controlling owner). A pass reads the workloads its policy's `matchLabels` name
//! and the pods of those workloads only, so its cost is what it selects, not every
//! cached object (with one policy per team or per app, a scan per pass made the
//! controller's work policies × objects).
//!
//! It is kept by the watch streams (`follow.rs`): each change is put or removed here,
//! and a relist replaces a kind whole. Each write answers what it replaced, so the
//! stream can tell which changes concern which policies.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, RwLock},
};

use super::{
    cache::{CachedAutoscaler, CachedPod, CachedWorkload},
    gather::Selected,
    workloads::WorkloadView,
};
use crate::policy::{ResolvedPolicy, WorkloadKind};

type WorkloadKey = (WorkloadKind, String);

/// A pod's workload: (namespace, kind, name).
pub type Owner = (String, WorkloadKind, String);

/// One namespace's workloads, and which carry each label (key, value).
#[derive(Default)]
struct Namespace {
    workloads: BTreeMap<WorkloadKey, CachedWorkload>,
    by_label: HashMap<(String, String), BTreeSet<WorkloadKey>>,
}

#[derive(Default)]
struct Inner {
    namespaces: HashMap<String, Namespace>,
    /// Pods by owner, each workload's sorted by name. A pod without a controlling
    /// workload is no workload's: nothing selects it, and it is not kept. A `Vec`, not
    /// a `BTreeMap`: a workload has a few pods, and a map's first node has room for
    /// eleven (at 30,000 pods, heaptrack put 24.7 MB of the heap's peak in `put_pod`).
    pods: HashMap<Owner, Vec<CachedPod>>,
    /// Each kept pod's owner, to find it again when it changes or goes.
    pod_owners: HashMap<(String, String), (WorkloadKind, String)>,
    /// `maxReplicas` of the HorizontalPodAutoscalers targeting each workload, by
    /// autoscaler name (two on one workload is a mistake Kubernetes allows).
    autoscalers: HashMap<Owner, BTreeMap<String, u32>>,
    /// Each kept autoscaler's target, to find it again when it changes or goes.
    autoscaler_targets: HashMap<(String, String), Owner>,
}

/// The index; cheap to clone (one shared state).
#[derive(Clone, Default)]
pub struct SelectionIndex {
    inner: Arc<RwLock<Inner>>,
}

impl SelectionIndex {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        // A panic elsewhere while writing leaves whole entries (each write is one
        // insert or remove), so the state is still usable.
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a workload; answers the one it replaced.
    pub fn put_workload(&self, workload: CachedWorkload) -> Option<CachedWorkload> {
        let mut inner = self.write();
        let v = &workload.view;
        let key = (v.kind, v.name.clone());
        let ns = inner.namespaces.entry(v.namespace.clone()).or_default();
        ns.unlabel(&key);
        for (k, value) in v.labels.iter() {
            ns.by_label
                .entry((k.to_owned(), value.to_owned()))
                .or_default()
                .insert(key.clone());
        }
        ns.workloads.insert(key, workload)
    }

    pub fn remove_workload(&self, namespace: &str, kind: WorkloadKind, name: &str) -> Option<CachedWorkload> {
        let mut inner = self.write();
        let ns = inner.namespaces.get_mut(namespace)?;
        let key = (kind, name.to_owned());
        ns.unlabel(&key);
        let gone = ns.workloads.remove(&key);
        if ns.workloads.is_empty() {
            inner.namespaces.remove(namespace);
        }
        gone
    }

    /// Replaces every workload of `kind` (after a relist); answers those that went.
    pub fn replace_workloads(&self, kind: WorkloadKind, workloads: Vec<CachedWorkload>) -> Vec<CachedWorkload> {
        let mut stale: BTreeSet<(String, String)> = {
            let inner = self.read();
            let per_ns = inner.namespaces.iter();
            per_ns
                .flat_map(|(ns, n)| {
                    n.workloads
                        .keys()
                        .filter(|k| k.0 == kind)
                        .map(|k| (ns.clone(), k.1.clone()))
                })
                .collect()
        };
        for w in workloads {
            stale.remove(&(w.view.namespace.clone(), w.view.name.clone()));
            self.put_workload(w);
        }
        stale
            .into_iter()
            .filter_map(|(ns, name)| self.remove_workload(&ns, kind, &name))
            .collect()
    }

    /// Reads one workload.
    pub fn with_workload<R>(
        &self,
        namespace: &str,
        kind: WorkloadKind,
        name: &str,
        f: impl FnOnce(&CachedWorkload) -> R,
    ) -> Option<R> {
        let inner = self.read();
        let ns = inner.namespaces.get(namespace)?;
        ns.workloads.get(&(kind, name.to_owned())).map(f)
    }

    /// Stores a pod (or, without an owner, forgets it).
    pub fn put_pod(&self, pod: CachedPod) {
        self.remove_pod(&pod.namespace, &pod.name);
        let Some((kind, owner)) = pod.owner.clone() else { return };
        let mut inner = self.write();
        inner
            .pod_owners
            .insert((pod.namespace.clone(), pod.name.clone()), (kind, owner.clone()));
        let pods = inner.pods.entry((pod.namespace.clone(), kind, owner)).or_default();
        // `remove_pod` above took out any pod of that name.
        let at = pods.partition_point(|p| p.name < pod.name);
        pods.insert(at, pod);
    }

    pub fn remove_pod(&self, namespace: &str, name: &str) -> Option<CachedPod> {
        let mut inner = self.write();
        let (kind, owner) = inner.pod_owners.remove(&(namespace.to_owned(), name.to_owned()))?;
        let key = (namespace.to_owned(), kind, owner);
        let pods = inner.pods.get_mut(&key)?;
        let gone = at_name(pods, name).map(|at| pods.remove(at));
        if pods.is_empty() {
            inner.pods.remove(&key);
        } else if pods.capacity() > 2 * pods.len() + 4 {
            // A workload scaled down from many pods does not keep their room.
            pods.shrink_to_fit();
        }
        gone
    }

    /// Replaces every pod (after a relist); answers those that went.
    pub fn replace_pods(&self, pods: Vec<CachedPod>) -> Vec<CachedPod> {
        let mut stale: BTreeSet<(String, String)> = self.read().pod_owners.keys().cloned().collect();
        for p in pods {
            stale.remove(&(p.namespace.clone(), p.name.clone()));
            self.put_pod(p);
        }
        stale
            .into_iter()
            .filter_map(|(ns, name)| self.remove_pod(&ns, &name))
            .collect()
    }

    /// Stores an autoscaler; answers the workload it targeted before, if another.
    pub fn put_autoscaler(&self, a: CachedAutoscaler) -> Option<Owner> {
        let before = self.remove_autoscaler(&a.namespace, &a.name);
        if let Some((kind, target)) = a.target {
            let owner = (a.namespace.clone(), kind, target);
            let mut inner = self.write();
            inner
                .autoscaler_targets
                .insert((a.namespace.clone(), a.name.clone()), owner.clone());
            inner
                .autoscalers
                .entry(owner)
                .or_default()
                .insert(a.name, a.max_replicas);
        }
        before
    }

    /// Forgets an autoscaler; answers the workload it targeted.
    pub fn remove_autoscaler(&self, namespace: &str, name: &str) -> Option<Owner> {
        let mut inner = self.write();
        let owner = inner
            .autoscaler_targets
            .remove(&(namespace.to_owned(), name.to_owned()))?;
        if let Some(by_name) = inner.autoscalers.get_mut(&owner) {
            by_name.remove(name);
            if by_name.is_empty() {
                inner.autoscalers.remove(&owner);
            }
        }
        Some(owner)
    }

    /// Replaces every autoscaler (after a relist); answers the workloads whose
    /// autoscalers went.
    pub fn replace_autoscalers(&self, autoscalers: Vec<CachedAutoscaler>) -> Vec<Owner> {
        let mut stale: BTreeSet<(String, String)> = self.read().autoscaler_targets.keys().cloned().collect();
        for a in autoscalers {
            stale.remove(&(a.namespace.clone(), a.name.clone()));
            self.put_autoscaler(a);
        }
        stale
            .into_iter()
            .filter_map(|(ns, name)| self.remove_autoscaler(&ns, &name))
            .collect()
    }

    /// Reads one kept pod.
    pub fn with_pod<R>(&self, namespace: &str, name: &str, f: impl FnOnce(&CachedPod) -> R) -> Option<R> {
        let inner = self.read();
        let (kind, owner) = inner.pod_owners.get(&(namespace.to_owned(), name.to_owned()))?;
        let pods = inner.pods.get(&(namespace.to_owned(), *kind, owner.clone()))?;
        at_name(pods, name).map(|at| f(&pods[at]))
    }

    /// The workloads of `namespace` the policy selects, sorted by kind and name, each
    /// with its pods that are not terminating, sorted by name.
    pub fn select(&self, policy: &ResolvedPolicy, namespace: &str) -> Vec<Selected> {
        let inner = self.read();
        let Some(ns) = inner.namespaces.get(namespace) else {
            return Vec::new();
        };
        let views: Vec<&WorkloadView> = ns
            .candidates(policy)
            .into_iter()
            .filter_map(|k| ns.workloads.get(k))
            .map(|w| &w.view)
            .filter(|v| v.selected_by(policy))
            .collect();
        views
            .into_iter()
            .map(|view| {
                let owner = (namespace.to_owned(), view.kind, view.name.clone());
                let all = inner.pods.get(&owner).map(Vec::as_slice).unwrap_or_default();
                let pods = all.iter().filter(|p| !p.terminating).map(CachedPod::view).collect();
                Selected {
                    view: view.clone(),
                    pods,
                    terminating: all.iter().filter(|p| p.terminating).count() as u32,
                    autoscaler_max: inner
                        .autoscalers
                        .get(&owner)
                        .and_then(|by_name| by_name.values().max().copied()),
                }
            })
            .collect()
    }
}

/// Where the pod called `name` is in a workload's pods (sorted by name).
fn at_name(pods: &[CachedPod], name: &str) -> Option<usize> {
    pods.binary_search_by(|p| p.name.as_str().cmp(name)).ok()
}

impl Namespace {
    fn unlabel(&mut self, key: &WorkloadKey) {
        let Some(old) = self.workloads.get(key) else { return };
        for (k, v) in old.view.labels.iter() {
            let label = (k.to_owned(), v.to_owned());
            if let Some(set) = self.by_label.get_mut(&label) {
                set.remove(key);
                if set.is_empty() {
                    self.by_label.remove(&label);
                }
            }
        }
    }

    /// The workloads that can match: those carrying the policy's rarest `matchLabels`
    /// pair, or (a selector of expressions only) all of the namespace's. Sorted by
    /// kind and name. The caller still applies the whole selector.
    fn candidates(&self, policy: &ResolvedPolicy) -> Vec<&WorkloadKey> {
        let Some(selector) = policy.selector() else {
            return Vec::new();
        };
        let postings = selector
            .match_labels
            .iter()
            .map(|(k, v)| self.by_label.get(&(k.clone(), v.clone())));
        match postings.min_by_key(|p| p.map_or(0, BTreeSet::len)) {
            Some(Some(set)) => set.iter().collect(),
            // A matchLabels pair no workload carries: none can match.
            Some(None) => Vec::new(),
            None => self.workloads.keys().collect(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy::{PoolPolicySpec, validate_for_kubernetes};
    use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
    use serde_json::{Value, json};

    pub(crate) fn policy(selector: Value) -> ResolvedPolicy {
        let spec: PoolPolicySpec = serde_json::from_value(json!({
            "selector": selector,
            "database": {"urlSecretRef": {"name": "pg", "key": "url"}},
            "pool": {"minSize": 0, "maxSize": 10}
        }))
        .unwrap();
        validate_for_kubernetes(&spec).unwrap()
    }

    pub(crate) fn deployment(ns: &str, name: &str, labels: Value) -> CachedWorkload {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "app"}]}}}
        }))
        .unwrap();
        d.into()
    }

    pub(crate) fn pod(ns: &str, name: &str, owner: Option<&str>, terminating: bool) -> CachedPod {
        let owners: Vec<Value> = owner
            .into_iter()
            .map(|o| json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": o, "uid": "u", "controller": true}))
            .collect();
        let mut meta = json!({"name": name, "namespace": ns, "ownerReferences": owners});
        if terminating {
            meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let p: Pod = serde_json::from_value(json!({"metadata": meta, "spec": {"containers": []}})).unwrap();
        p.into()
    }

    fn picked(index: &SelectionIndex, p: &ResolvedPolicy, ns: &str) -> Vec<(String, Vec<String>)> {
        let selected = index.select(p, ns);
        selected
            .into_iter()
            .map(|s| (s.view.name, s.pods.into_iter().map(|p| p.name).collect()))
            .collect()
    }

    fn owned(name: &str, pods: &[&str]) -> (String, Vec<String>) {
        (name.to_owned(), pods.iter().map(|p| (*p).to_owned()).collect())
    }

    #[test]
    fn a_pass_gets_the_workloads_its_labels_select_in_its_namespace_with_their_live_pods() {
        let index = SelectionIndex::default();
        index.put_workload(deployment("prod", "web", json!({"team": "a", "tier": "web"})));
        index.put_workload(deployment("prod", "api", json!({"team": "a", "tier": "api"})));
        index.put_workload(deployment("prod", "other", json!({"team": "b"})));
        index.put_workload(deployment("dev", "web", json!({"team": "a"})));
        for (name, owner, terminating) in [
            ("web-2", Some("web"), false),
            ("web-1", Some("web"), false),
            ("web-old", Some("web"), true),
            ("loose", None, false),
            ("api-1", Some("api"), false),
        ] {
            index.put_pod(pod("prod", name, owner, terminating));
        }
        let team_a = policy(json!({"matchLabels": {"team": "a"}}));
        assert_eq!(
            picked(&index, &team_a, "prod"),
            [owned("api", &["api-1"]), owned("web", &["web-1", "web-2"])]
        );
        let web = policy(json!({"matchLabels": {"team": "a", "tier": "web"}}));
        assert_eq!(picked(&index, &web, "prod"), [owned("web", &["web-1", "web-2"])]);
        let nobody = policy(json!({"matchLabels": {"team": "a", "tier": "none"}}));
        assert_eq!(picked(&index, &nobody, "prod"), []);
        // A selector of expressions only is applied to every workload of the namespace.
        let not_a = policy(json!({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}));
        assert_eq!(picked(&index, &not_a, "prod"), [owned("other", &[])]);
        assert_eq!(picked(&index, &team_a, "dev"), [owned("web", &[])]);
    }

    #[test]
    fn relabels_moved_pods_deletes_and_relists_are_followed() {
        let index = SelectionIndex::default();
        let team_a = policy(json!({"matchLabels": {"team": "a"}}));
        index.put_workload(deployment("prod", "web", json!({"team": "a"})));
        index.put_pod(pod("prod", "web-1", Some("web"), false));
        index.put_pod(pod("prod", "web-2", Some("web"), false));
        // Relabelled out of the policy, and back in.
        index.put_workload(deployment("prod", "web", json!({"team": "b"})));
        assert_eq!(picked(&index, &team_a, "prod"), []);
        index.put_workload(deployment("prod", "web", json!({"team": "a"})));
        // A pod orphaned by its ReplicaSet (owner removed) is no longer the workload's.
        index.put_pod(pod("prod", "web-2", None, false));
        assert_eq!(picked(&index, &team_a, "prod"), [owned("web", &["web-1"])]);
        index.remove_pod("prod", "web-1");
        assert_eq!(picked(&index, &team_a, "prod"), [owned("web", &[])]);
        // A relist replaces what the kind held: what is gone from it goes.
        index.put_pod(pod("prod", "web-3", Some("web"), false));
        index.replace_pods(vec![pod("prod", "web-4", Some("web"), false)]);
        assert_eq!(picked(&index, &team_a, "prod"), [owned("web", &["web-4"])]);
        index.replace_workloads(
            WorkloadKind::Deployment,
            vec![deployment("prod", "api", json!({"team": "a"}))],
        );
        assert_eq!(picked(&index, &team_a, "prod"), [owned("api", &[])]);
        index.remove_workload("prod", WorkloadKind::Deployment, "api");
        assert_eq!(picked(&index, &team_a, "prod"), []);
    }
}
