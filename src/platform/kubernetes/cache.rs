//! What the controller caches of Deployments, StatefulSets and Pods: only what a pass
//! reads, in poolwarden's own compact types. A k8s-openapi `Pod` costs about 2.5 KB
//! in memory even with its spec dropped (every optional field of its spec and status
//! is still laid out), a Deployment with its template's env about 7 KB; these are a
//! few hundred bytes. At 10,000 workloads and 30,000 pods that is most of the
//! controller's memory.
//!
//! Both implement `kube::Resource` under the kind they stand for, so kube-runtime's
//! reflectors, stores and predicates work on them unchanged.

use std::{borrow::Cow, marker::PhantomData, net::IpAddr};

use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::Pod,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Resource, runtime::watcher::Event};
use serde::{Deserialize, Serialize};

use super::workloads::{PodView, WorkloadView, owner_of};
use crate::policy::WorkloadKind;

/// The fields a cached workload keeps of its metadata: its key in the store and the
/// generation its change predicate reads (the view has the rest).
fn identity(m: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        generation: m.generation,
        ..Default::default()
    }
}

/// A Deployment or StatefulSet as a pass reads it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct CachedWorkload<K> {
    pub metadata: ObjectMeta,
    pub view: WorkloadView,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

impl<K> CachedWorkload<K> {
    fn new(metadata: &ObjectMeta, view: WorkloadView) -> Self {
        CachedWorkload {
            metadata: identity(metadata),
            view,
            kind: PhantomData,
        }
    }
}

impl From<Deployment> for CachedWorkload<Deployment> {
    fn from(d: Deployment) -> Self {
        Self::new(&d.metadata, WorkloadView::from_deployment(&d))
    }
}

impl From<StatefulSet> for CachedWorkload<StatefulSet> {
    fn from(s: StatefulSet) -> Self {
        Self::new(&s.metadata, WorkloadView::from_statefulset(&s))
    }
}

impl<K> Resource for CachedWorkload<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A Pod as a pass reads it: its name, its workload (from its controlling owner,
/// resolved once as it arrives) and the view. Labels are not kept: a pod whose labels
/// stop matching its ReplicaSet's or StatefulSet's selector is orphaned by that
/// controller (its ownerReference removed), so the owner alone says whose pod it is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CachedPod {
    pub metadata: ObjectMeta,
    pub owner: Option<(WorkloadKind, String)>,
    pub ip: Option<IpAddr>,
    pub ready: bool,
    pub started_at: Option<jiff::Timestamp>,
    pub terminating: bool,
}

impl From<Pod> for CachedPod {
    fn from(p: Pod) -> Self {
        let view = PodView::from_pod(&p);
        CachedPod {
            metadata: ObjectMeta {
                name: p.metadata.name.clone(),
                namespace: p.metadata.namespace.clone(),
                ..Default::default()
            },
            owner: owner_of(&p.metadata),
            ip: view.ip,
            ready: view.ready,
            started_at: view.started_at,
            terminating: view.terminating,
        }
    }
}

impl CachedPod {
    pub fn view(&self) -> PodView {
        PodView {
            name: self.metadata.name.clone().unwrap_or_default(),
            ip: self.ip,
            ready: self.ready,
            started_at: self.started_at,
            terminating: self.terminating,
        }
    }
}

impl Resource for CachedPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Pod::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        Pod::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        Pod::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        Pod::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A watch event with its object converted (the full object is dropped at once).
pub fn convert<A, B: From<A>>(event: Event<A>) -> Event<B> {
    match event {
        Event::Apply(o) => Event::Apply(o.into()),
        Event::Delete(o) => Event::Delete(o.into()),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(o.into()),
        Event::InitDone => Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cached_pod_keeps_what_a_pass_reads() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-7d4b9c-abcde", "namespace": "prod", "uid": "u1", "resourceVersion": "7",
                         "labels": {"app": "web", "pod-template-hash": "7d4b9c"},
                         "annotations": {"big": "x".repeat(1000)},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c",
                                              "uid": "u", "controller": true}]},
            "spec": {"containers": [{"name": "app", "image": "x"}]},
            "status": {"podIP": "10.0.0.7", "startTime": "2026-11-23T10:00:00Z",
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let full = PodView::from_pod(&p);
        let cached = CachedPod::from(p);
        assert_eq!(cached.view(), full);
        assert!(cached.metadata.annotations.is_none() && cached.metadata.labels.is_none());
        assert_eq!(cached.owner, Some((WorkloadKind::Deployment, "web".to_owned())));
        assert!(std::mem::size_of::<CachedPod>() < std::mem::size_of::<Pod>() / 3);
    }
}
