//! What the controller decodes of the Deployments, StatefulSets and Pods it watches:
//! each object as its k8s-openapi type, but without `metadata.managedFields` and
//! (for a pod) without its spec, which nothing reads. The server sends both with
//! every object and every watch event; decoding `managedFields` alone was 12% of the
//! controller's CPU samples while 10,000 workloads came into sync (`perf record` of
//! `cargo bench --bench controller`), only to drop them at once (`cache.rs`).
//!
//! [`Decoded<K>`] is a resource of its own for kube's watcher (same group, kind and
//! path as `K`) and becomes a `K` with those fields empty.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStatus, StatefulSet, StatefulSetSpec, StatefulSetStatus},
        core::v1::{Pod, PodStatus},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
};
use serde::{Deserialize, Deserializer, de::DeserializeOwned, de::IgnoredAny};

/// A watched kind: what of its spec and status is decoded, and how they make a `Self`.
pub trait Lean: k8s_openapi::Resource + Clone + std::fmt::Debug + Sized {
    type Spec: DeserializeOwned + Clone + std::fmt::Debug + Send + Sync;
    type Status: DeserializeOwned + Clone + std::fmt::Debug + Send + Sync;
    fn assemble(metadata: ObjectMeta, spec: Option<Self::Spec>, status: Option<Self::Status>) -> Self;
}

/// A workload kind, whose spec is not optional: one without a spec decodes as the
/// default one, as k8s-openapi decodes it.
macro_rules! lean_workload {
    ($kind:ident, $spec:ty, $status:ty) => {
        impl Lean for $kind {
            type Spec = $spec;
            type Status = $status;
            fn assemble(metadata: ObjectMeta, spec: Option<$spec>, status: Option<$status>) -> Self {
                let spec = spec.unwrap_or_default();
                $kind {
                    metadata,
                    spec,
                    status,
                }
            }
        }
    };
}

lean_workload!(Deployment, DeploymentSpec, DeploymentStatus);
lean_workload!(StatefulSet, StatefulSetSpec, StatefulSetStatus);

impl Lean for Pod {
    /// Skipped: a pass reads a pod's metadata and status only.
    type Spec = IgnoredAny;
    type Status = PodStatus;
    fn assemble(metadata: ObjectMeta, _: Option<IgnoredAny>, status: Option<PodStatus>) -> Self {
        Pod {
            metadata,
            spec: None,
            status,
        }
    }
}

/// A watched object as decoded; [`into_full`](Self::into_full) makes it a `K`.
#[derive(Clone, Debug, Deserialize)]
#[serde(bound(deserialize = ""))]
pub struct Decoded<K: Lean> {
    #[serde(default, deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<K::Spec>,
    #[serde(default)]
    status: Option<K::Status>,
}

impl<K: Lean> Decoded<K> {
    pub fn into_full(self) -> K {
        K::assemble(self.metadata, self.spec, self.status)
    }
}

impl<K: Lean> k8s_openapi::Resource for Decoded<K> {
    const API_VERSION: &'static str = K::API_VERSION;
    const GROUP: &'static str = K::GROUP;
    const KIND: &'static str = K::KIND;
    const VERSION: &'static str = K::VERSION;
    const URL_PATH_SEGMENT: &'static str = K::URL_PATH_SEGMENT;
    type Scope = K::Scope;
}

impl<K: Lean> k8s_openapi::Metadata for Decoded<K> {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// `ObjectMeta` but `managedFields`, which is skipped unread.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanMeta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

fn lean_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = LeanMeta::deserialize(d)?;
    Ok(ObjectMeta {
        annotations: m.annotations,
        creation_timestamp: m.creation_timestamp,
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        deletion_timestamp: m.deletion_timestamp,
        finalizers: m.finalizers,
        generate_name: m.generate_name,
        generation: m.generation,
        labels: m.labels,
        managed_fields: None,
        name: m.name,
        namespace: m.namespace,
        owner_references: m.owner_references,
        resource_version: m.resource_version,
        self_link: m.self_link,
        uid: m.uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn managed() -> Value {
        json!([{"manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}])
    }

    #[test]
    fn a_decoded_object_is_the_full_one_without_managed_fields_or_a_pods_spec() {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "prod", "uid": "u1", "resourceVersion": "7", "generation": 3,
                         "labels": {"team": "a"}, "annotations": {"poolwarden.io/paused": "true"},
                         "creationTimestamp": "2026-11-23T10:00:00Z", "managedFields": managed()},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "app", "env": [{"name": "DB_POOL_MAX", "value": "5"}]}]}}},
            "status": {"replicas": 3, "readyReplicas": 2, "observedGeneration": 3}
        });
        let mut full: Deployment = serde_json::from_value(deployment.clone()).unwrap();
        let decoded: Decoded<Deployment> = serde_json::from_value(deployment).unwrap();
        full.metadata.managed_fields = None;
        assert_eq!(decoded.into_full(), full);

        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "prod", "deletionTimestamp": "2026-11-23T10:00:00Z",
                         "deletionGracePeriodSeconds": 30, "finalizers": ["x.io/keep"], "generateName": "web-",
                         "selfLink": "/api/v1/namespaces/prod/pods/web-1",
                         "labels": {"pod-template-hash": "7d4b9c"}, "managedFields": managed(),
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c",
                                              "uid": "u", "controller": true}]},
            "spec": {"containers": [{"name": "app", "image": "x"}]},
            "status": {"podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": "True"}]}
        });
        let mut full: Pod = serde_json::from_value(pod.clone()).unwrap();
        let decoded: Decoded<Pod> = serde_json::from_value(pod).unwrap();
        (full.metadata.managed_fields, full.spec) = (None, None);
        assert_eq!(decoded.into_full(), full);
    }

    #[test]
    fn the_decoded_resource_is_served_where_the_full_one_is() {
        use kube::Resource;
        assert_eq!(
            Decoded::<Deployment>::url_path(&(), Some("prod")),
            Deployment::url_path(&(), Some("prod"))
        );
        assert_eq!(Decoded::<Pod>::url_path(&(), None), Pod::url_path(&(), None));
        assert_eq!(Decoded::<StatefulSet>::kind(&()), "StatefulSet");
    }
}
