//! What the controller caches of Deployments, StatefulSets and Pods: only what a pass
//! reads, in poolwarden's own compact types, held once, in the selection index
//! (`index.rs`). A k8s-openapi `Pod` costs about 2.5 KB in memory even with its spec
//! dropped (every optional field of its spec and status is still laid out), a
//! Deployment with its template's env about 7 KB, and even an empty `ObjectMeta` about
//! 330 bytes; these are a few hundred bytes. At 10,000 workloads and 30,000 pods that
//! is most of the controller's memory, so they carry no `ObjectMeta` and are not kept
//! in kube-runtime reflector stores too.
//!
//! Each also says which of its changes make a difference to a pass: the rest (a
//! workload's status counts, a pod's restarts) is stored without triggering one.

use std::net::IpAddr;

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::Pod,
};
use kube::runtime::watcher::Event;

use super::{
    decoded::{Decoded, Lean},
    workloads::{PodView, WorkloadView, owner_of},
};
use crate::policy::WorkloadKind;

/// A Deployment or StatefulSet as a pass reads it.
#[derive(Clone, Debug)]
pub struct CachedWorkload {
    /// Its spec's generation, which a change of the env or the template bumps.
    pub generation: Option<i64>,
    pub view: WorkloadView,
}

impl From<Deployment> for CachedWorkload {
    fn from(d: Deployment) -> Self {
        CachedWorkload {
            generation: d.metadata.generation,
            view: WorkloadView::from_deployment(&d),
        }
    }
}

impl From<StatefulSet> for CachedWorkload {
    fn from(s: StatefulSet) -> Self {
        CachedWorkload {
            generation: s.metadata.generation,
            view: WorkloadView::from_statefulset(&s),
        }
    }
}

impl CachedWorkload {
    /// Whether going from `self` to `next` makes a difference to a pass: its spec
    /// (generation), its labels (selection) and poolwarden's annotations — not its
    /// status, which its pods' changes already trigger on.
    pub fn differs_for_a_pass(&self, next: &CachedWorkload) -> bool {
        let (a, b) = (&self.view, &next.view);
        self.generation != next.generation
            || a.labels != b.labels
            || a.paused != b.paused
            || a.database_user != b.database_user
    }
}

/// A Pod as a pass reads it: its name, its workload (from its controlling owner,
/// resolved once as it arrives) and the view. Labels are not kept: a pod whose labels
/// stop matching its ReplicaSet's or StatefulSet's selector is orphaned by that
/// controller (its ownerReference removed), so the owner alone says whose pod it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedPod {
    pub namespace: String,
    pub name: String,
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
            owner: owner_of(&p.metadata),
            namespace: p.metadata.namespace.unwrap_or_default(),
            name: view.name,
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
            name: self.name.clone(),
            ip: self.ip,
            ready: self.ready,
            started_at: self.started_at,
            terminating: self.terminating,
        }
    }

    /// Whether going from `self` to `next` makes a difference to a pass: its owner,
    /// readiness, address, start or termination (what sampling and the verdicts read).
    pub fn differs_for_a_pass(&self, next: &CachedPod) -> bool {
        self != next
    }
}

/// A HorizontalPodAutoscaler (autoscaling/v2) as the connection budget reads it:
/// the workload it scales and the most replicas it may give it. Its status (metrics,
/// current replicas) is not read: the budget must hold at `maxReplicas` whatever the
/// load, so no metrics server is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedAutoscaler {
    pub namespace: String,
    pub name: String,
    /// `scaleTargetRef`, when it names a Deployment or StatefulSet (`apps/v1`).
    pub target: Option<(WorkloadKind, String)>,
    pub max_replicas: u32,
}

impl From<HorizontalPodAutoscaler> for CachedAutoscaler {
    fn from(h: HorizontalPodAutoscaler) -> Self {
        let spec = h.spec;
        let r = &spec.scale_target_ref;
        let apps = r.api_version.as_deref().is_none_or(|v| v == "apps/v1");
        let kind = match r.kind.as_str() {
            "Deployment" if apps => Some(WorkloadKind::Deployment),
            "StatefulSet" if apps => Some(WorkloadKind::StatefulSet),
            _ => None,
        };
        CachedAutoscaler {
            namespace: h.metadata.namespace.unwrap_or_default(),
            name: h.metadata.name.unwrap_or_default(),
            target: kind.map(|k| (k, r.name.clone())),
            // The API server requires maxReplicas >= 1; a negative one is not a limit.
            max_replicas: u32::try_from(spec.max_replicas).unwrap_or(0),
        }
    }
}

impl<K: Lean> From<Decoded<K>> for CachedWorkload
where
    CachedWorkload: From<K>,
{
    fn from(d: Decoded<K>) -> Self {
        d.into_full().into()
    }
}

impl From<Decoded<Pod>> for CachedPod {
    fn from(d: Decoded<Pod>) -> Self {
        d.into_full().into()
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
        assert_eq!(cached.namespace, "prod");
        assert_eq!(cached.owner, Some((WorkloadKind::Deployment, "web".to_owned())));
        // Smaller than the metadata alone of the object it stands for.
        assert!(
            std::mem::size_of::<CachedPod>()
                < std::mem::size_of::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>() / 2
        );
    }
}
