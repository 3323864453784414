//! The caches' index for selection: the workloads of each namespace by label, and the
//! pods of each workload (by their controlling owner). A pass reads the workloads its
//! policy's `matchLabels` name and the pods of those workloads only, so its cost is
//! what it selects, not every cached object (with one policy per team or per app, a
//! scan per pass made the controller's work policies × objects).
//!
//! It holds the reflector stores' own `Arc`s (no second copy of any object), and is
//! kept by the watch streams: an applied object is looked up in its store once the
//! reflector has stored it, a deleted one removed, and a relist (`InitDone`) rebuilds
//! the kind from the store, as the reflector swaps its state in at that point.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, RwLock},
};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::runtime::{
    reflector::{ObjectRef, Store},
    watcher::Event,
};

use super::{
    cache::{CachedPod, CachedWorkload},
    gather::Selected,
    workloads::WorkloadView,
};
use crate::policy::{ResolvedPolicy, WorkloadKind};

/// A cached workload of either kind.
#[derive(Clone, Debug)]
pub enum Entry {
    Deployment(Arc<CachedWorkload<Deployment>>),
    StatefulSet(Arc<CachedWorkload<StatefulSet>>),
}

impl Entry {
    pub fn view(&self) -> &WorkloadView {
        match self {
            Entry::Deployment(d) => &d.view,
            Entry::StatefulSet(s) => &s.view,
        }
    }
}

type WorkloadKey = (WorkloadKind, String);

/// One namespace's workloads, and which carry each label (key, value).
#[derive(Default)]
struct Namespace {
    workloads: BTreeMap<WorkloadKey, Entry>,
    by_label: HashMap<(String, String), BTreeSet<WorkloadKey>>,
}

#[derive(Default)]
struct Inner {
    namespaces: HashMap<String, Namespace>,
    /// Pods by (namespace, owner kind, owner name), each workload's by name.
    pods: HashMap<(String, WorkloadKind, String), BTreeMap<String, Arc<CachedPod>>>,
    /// Each pod's owner as indexed, to find it again when it changes or goes.
    pod_owners: HashMap<(String, String), (WorkloadKind, String)>,
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

    pub fn put_workload(&self, entry: Entry) {
        let mut inner = self.write();
        let v = entry.view();
        let key = (v.kind, v.name.clone());
        let ns = inner.namespaces.entry(v.namespace.clone()).or_default();
        ns.unlabel(&key);
        for (k, value) in v.labels.iter() {
            ns.by_label
                .entry((k.to_owned(), value.to_owned()))
                .or_default()
                .insert(key.clone());
        }
        ns.workloads.insert(key, entry);
    }

    pub fn remove_workload(&self, namespace: &str, kind: WorkloadKind, name: &str) {
        let mut inner = self.write();
        if let Some(ns) = inner.namespaces.get_mut(namespace) {
            let key = (kind, name.to_owned());
            ns.unlabel(&key);
            ns.workloads.remove(&key);
            if ns.workloads.is_empty() {
                inner.namespaces.remove(namespace);
            }
        }
    }

    /// Replaces every workload of `kind` (after a relist).
    pub fn replace_workloads(&self, kind: WorkloadKind, entries: impl IntoIterator<Item = Entry>) {
        let stale: Vec<(String, String)> = {
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
        for (ns, name) in stale {
            self.remove_workload(&ns, kind, &name);
        }
        for e in entries {
            self.put_workload(e);
        }
    }

    pub fn put_pod(&self, pod: Arc<CachedPod>) {
        let (Some(ns), Some(name)) = (pod.metadata.namespace.clone(), pod.metadata.name.clone()) else {
            return;
        };
        self.remove_pod(&ns, &name);
        // A pod without a controlling workload is no workload's: nothing selects it.
        let Some((kind, owner)) = pod.owner.clone() else { return };
        let mut inner = self.write();
        inner
            .pod_owners
            .insert((ns.clone(), name.clone()), (kind, owner.clone()));
        inner.pods.entry((ns, kind, owner)).or_default().insert(name, pod);
    }

    pub fn remove_pod(&self, namespace: &str, name: &str) {
        let mut inner = self.write();
        let Some((kind, owner)) = inner.pod_owners.remove(&(namespace.to_owned(), name.to_owned())) else {
            return;
        };
        let key = (namespace.to_owned(), kind, owner);
        if let Some(pods) = inner.pods.get_mut(&key) {
            pods.remove(name);
            if pods.is_empty() {
                inner.pods.remove(&key);
            }
        }
    }

    /// Replaces every pod (after a relist).
    pub fn replace_pods(&self, pods: impl IntoIterator<Item = Arc<CachedPod>>) {
        {
            let mut inner = self.write();
            inner.pods.clear();
            inner.pod_owners.clear();
        }
        for p in pods {
            self.put_pod(p);
        }
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
            .map(Entry::view)
            .filter(|v| v.selected_by(policy))
            .collect();
        views
            .into_iter()
            .map(|view| {
                let pods = inner
                    .pods
                    .get(&(namespace.to_owned(), view.kind, view.name.clone()))
                    .into_iter()
                    .flat_map(BTreeMap::values)
                    .filter(|p| !p.terminating)
                    .map(|p| p.view())
                    .collect();
                Selected {
                    view: view.clone(),
                    pods,
                }
            })
            .collect()
    }
}

impl Namespace {
    fn unlabel(&mut self, key: &WorkloadKey) {
        let Some(old) = self.workloads.get(key) else { return };
        for (k, v) in old.view().labels.iter() {
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

/// What a workload watch event does to the index, once its reflector has stored it.
pub fn follow_workloads<K>(
    index: SelectionIndex,
    store: Store<CachedWorkload<K>>,
    kind: WorkloadKind,
    wrap: fn(Arc<CachedWorkload<K>>) -> Entry,
) -> impl FnMut(&Event<CachedWorkload<K>>)
where
    CachedWorkload<K>: kube::Resource<DynamicType = ()> + Clone,
{
    move |event| match event {
        Event::Apply(w) => {
            if let Some(stored) = store.get(&ObjectRef::from_obj(w)) {
                index.put_workload(wrap(stored));
            }
        }
        Event::Delete(w) => index.remove_workload(&w.view.namespace, kind, &w.view.name),
        Event::InitDone => index.replace_workloads(kind, store.state().into_iter().map(wrap)),
        Event::Init | Event::InitApply(_) => {}
    }
}

/// What a pod watch event does to the index, once its reflector has stored it.
pub fn follow_pods(index: SelectionIndex, store: Store<CachedPod>) -> impl FnMut(&Event<CachedPod>) {
    move |event| match event {
        Event::Apply(p) => {
            if let Some(stored) = store.get(&ObjectRef::from_obj(p)) {
                index.put_pod(stored);
            }
        }
        Event::Delete(p) => {
            if let (Some(ns), Some(name)) = (&p.metadata.namespace, &p.metadata.name) {
                index.remove_pod(ns, name);
            }
        }
        Event::InitDone => index.replace_pods(store.state()),
        Event::Init | Event::InitApply(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{PoolPolicySpec, validate_for_kubernetes};
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::{Value, json};

    fn policy(selector: Value) -> ResolvedPolicy {
        let spec: PoolPolicySpec = serde_json::from_value(json!({
            "selector": selector,
            "database": {"urlSecretRef": {"name": "pg", "key": "url"}},
            "pool": {"minSize": 0, "maxSize": 10}
        }))
        .unwrap();
        validate_for_kubernetes(&spec).unwrap()
    }

    fn deployment(ns: &str, name: &str, labels: Value) -> Entry {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "app"}]}}}
        }))
        .unwrap();
        Entry::Deployment(Arc::new(d.into()))
    }

    fn pod(ns: &str, name: &str, owner: Option<&str>, terminating: bool) -> Arc<CachedPod> {
        let owners: Vec<Value> = owner
            .into_iter()
            .map(|o| json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": o, "uid": "u", "controller": true}))
            .collect();
        let mut meta = json!({"name": name, "namespace": ns, "ownerReferences": owners});
        if terminating {
            meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let p: Pod = serde_json::from_value(json!({"metadata": meta, "spec": {"containers": []}})).unwrap();
        Arc::new(p.into())
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
        index.replace_pods([pod("prod", "web-4", Some("web"), false)]);
        assert_eq!(picked(&index, &team_a, "prod"), [owned("web", &["web-4"])]);
        index.replace_workloads(
            WorkloadKind::Deployment,
            [deployment("prod", "api", json!({"team": "a"}))],
        );
        assert_eq!(picked(&index, &team_a, "prod"), [owned("api", &[])]);
        index.remove_workload("prod", WorkloadKind::Deployment, "api");
        assert_eq!(picked(&index, &team_a, "prod"), []);
    }
}
