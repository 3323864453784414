//! Deployments, StatefulSets and Pods as the decision core sees them (the controller
//! caches these views, not the objects: see `cache`).

use std::net::IpAddr;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{Container as K8sContainer, EnvVar, Pod, PodTemplateSpec},
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use kube::ResourceExt;

use crate::{
    decide::{Container, EnvValue, Instance, Workload},
    policy::{PAUSED_ANNOTATION, ResolvedPolicy, WorkloadKind, database_user},
};

use super::selector;

/// One selected workload, whatever its kind.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkloadView {
    pub kind: WorkloadKind,
    pub name: String,
    pub namespace: String,
    pub uid: Option<String>,
    pub labels: selector::Labels,
    pub replicas: u32,
    pub ready_replicas: u32,
    pub max_surge: u32,
    pub rollout_in_progress: bool,
    pub paused: bool,
    /// The database role of the workload, for User attribution.
    pub database_user: String,
    pub containers: Vec<Container>,
    /// [`template_digest`] of the pod template.
    #[serde(default)]
    pub template: Option<String>,
}

/// Annotations a restart puts on a pod template (poolwarden's and `kubectl rollout
/// restart`'s): a restart is not a new release, so they are left out of the digest.
const RESTART_ANNOTATIONS: [&str; 2] = [
    crate::policy::RESTARTED_AT_ANNOTATION,
    "kubectl.kubernetes.io/restartedAt",
];

/// A digest of a pod template without its restart annotations.
pub fn template_digest(template: &PodTemplateSpec) -> Option<String> {
    let mut t = template.clone();
    if let Some(annotations) = t.metadata.as_mut().and_then(|m| m.annotations.as_mut()) {
        for a in RESTART_ANNOTATIONS {
            annotations.remove(a);
        }
    }
    // serde_json writes struct fields in declaration order and maps sorted: stable.
    serde_json::to_vec(&t).ok().map(|bytes| crate::digest::short(&bytes))
}

impl WorkloadView {
    pub fn from_deployment(d: &Deployment) -> Self {
        let spec = &d.spec;
        let status = d.status.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1).max(0) as u32;
        let updated = status.updated_replicas.unwrap_or(0).max(0) as u32;
        let max_surge = match spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) {
            Some("Recreate") => 0,
            _ => {
                let surge = spec
                    .strategy
                    .as_ref()
                    .and_then(|s| s.rolling_update.as_ref())
                    .and_then(|r| r.max_surge.clone())
                    .unwrap_or(IntOrString::String("25%".into()));
                // The Deployment controller rounds maxSurge up.
                scaled(&surge, replicas, true)
            }
        };
        let rollout_in_progress = status.observed_generation < d.metadata.generation
            || updated < replicas
            || status.replicas.unwrap_or(0).max(0) as u32 > updated;
        Self::build(
            WorkloadKind::Deployment,
            d,
            Some(&spec.template),
            replicas,
            status.ready_replicas,
            max_surge,
            rollout_in_progress,
        )
    }

    pub fn from_statefulset(s: &StatefulSet) -> Self {
        let spec = &s.spec;
        let status = s.status.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1).max(0) as u32;
        let revisions_differ = match (&status.current_revision, &status.update_revision) {
            (Some(c), Some(u)) => c != u,
            _ => false,
        };
        let rollout_in_progress = status.observed_generation < s.metadata.generation
            || (status.updated_replicas.unwrap_or(0).max(0) as u32) < replicas
            || revisions_differ;
        Self::build(
            WorkloadKind::StatefulSet,
            s,
            Some(&spec.template),
            replicas,
            status.ready_replicas,
            0,
            rollout_in_progress,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        kind: WorkloadKind,
        obj: &impl ResourceExt,
        template: Option<&PodTemplateSpec>,
        replicas: u32,
        ready: Option<i32>,
        max_surge: u32,
        rollout_in_progress: bool,
    ) -> Self {
        let containers = template
            .and_then(|t| t.spec.as_ref())
            .map(|s| s.containers.iter().map(container).collect())
            .unwrap_or_default();
        WorkloadView {
            kind,
            name: obj.name_any(),
            namespace: obj.namespace().unwrap_or_default(),
            uid: obj.uid(),
            labels: obj.labels().into(),
            replicas,
            ready_replicas: ready.unwrap_or(0).max(0) as u32,
            max_surge,
            rollout_in_progress,
            paused: obj.annotations().get(PAUSED_ANNOTATION).is_some_and(|v| v == "true"),
            database_user: database_user(&obj.name_any(), Some(obj.annotations())).to_owned(),
            containers,
            template: template.and_then(template_digest),
        }
    }

    /// Whether the policy selects this workload.
    pub fn selected_by(&self, policy: &ResolvedPolicy) -> bool {
        policy.selector().is_some_and(|s| {
            s.kinds.contains(&self.kind) && selector::matches(&s.match_labels, &s.match_expressions, &self.labels)
        })
    }

    /// The decision core's view, with the instances given.
    pub fn to_workload(&self, instances: Vec<Instance>) -> Workload {
        Workload {
            kind: self.kind.into(),
            name: self.name.clone(),
            replicas: self.replicas,
            ready_replicas: self.ready_replicas,
            max_surge: self.max_surge,
            // Known to the index, not the workload (`gather::subjects` sets them).
            autoscaler_max: None,
            terminating: 0,
            rollout_in_progress: self.rollout_in_progress,
            paused: self.paused,
            containers: self.containers.clone(),
            instances,
            workload_samples: None,
            template: self.template.clone(),
        }
    }
}

pub fn kind_name(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
    }
}

/// An int-or-percent of `total`, rounded as the controllers round it.
fn scaled(v: &IntOrString, total: u32, round_up: bool) -> u32 {
    match v {
        IntOrString::Int(n) => (*n).max(0) as u32,
        IntOrString::String(s) => {
            let pct: u64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let x = pct * u64::from(total);
            (if round_up { x.div_ceil(100) } else { x / 100 }) as u32
        }
    }
}

fn container(c: &K8sContainer) -> Container {
    Container {
        name: c.name.clone(),
        env: c.env.iter().flatten().map(|e| (e.name.clone(), env_value(e))).collect(),
    }
}

fn env_value(e: &EnvVar) -> EnvValue {
    match &e.value_from {
        None => EnvValue::Literal(e.value.clone().unwrap_or_default()),
        Some(from) => match (&from.field_ref, &from.secret_key_ref, &from.config_map_key_ref) {
            (Some(f), _, _) if f.field_path == "metadata.name" => EnvValue::InstanceName,
            (Some(f), _, _) => EnvValue::Other(format!("fieldRef {}", f.field_path)),
            (_, Some(s), _) => EnvValue::Other(format!("secretKeyRef {}/{}", s.name, s.key)),
            (_, _, Some(c)) => EnvValue::Other(format!("configMapKeyRef {}/{}", c.name, c.key)),
            _ => EnvValue::Other("valueFrom".to_owned()),
        },
    }
}

/// One pod as the controller needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    pub name: String,
    pub ip: Option<IpAddr>,
    pub ready: bool,
    pub started_at: Option<jiff::Timestamp>,
    pub terminating: bool,
}

impl PodView {
    pub fn from_pod(p: &Pod) -> Self {
        let status = p.status.as_ref();
        PodView {
            name: p.name_any(),
            ip: status.and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok()),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            started_at: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
            terminating: p.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// The workload a pod belongs to, from its owner reference: a StatefulSet directly;
/// a Deployment through its ReplicaSet, whose name is the Deployment's name and the
/// pod's `pod-template-hash`.
pub fn owner_of(meta: &ObjectMeta) -> Option<(WorkloadKind, String)> {
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?;
    match owner.kind.as_str() {
        "StatefulSet" => Some((WorkloadKind::StatefulSet, owner.name.clone())),
        "Deployment" => Some((WorkloadKind::Deployment, owner.name.clone())),
        "ReplicaSet" => {
            let hash = meta.labels.as_ref()?.get("pod-template-hash")?;
            let name = owner.name.strip_suffix(hash.as_str())?.strip_suffix('-')?;
            Some((WorkloadKind::Deployment, name.to_owned()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deployment_becomes_a_workload_with_surge_rollout_and_env() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "prod", "generation": 3,
                         "labels": {"app": "web"}, "annotations": {"poolwarden.io/paused": "true"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                        "name": "app", "image": "x", "env": [
                          {"name": "DB_POOL_MAX", "value": "20"},
                          {"name": "PGAPPNAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                          {"name": "DB_URL", "valueFrom": {"secretKeyRef": {"name": "pg", "key": "url"}}}]}]}}},
            "status": {"observedGeneration": 3, "replicas": 4, "updatedReplicas": 3, "readyReplicas": 3}
        }))
        .unwrap();
        let v = WorkloadView::from_deployment(&d);
        assert_eq!(v.max_surge, 1, "25% of 3 rounded up");
        assert!(v.rollout_in_progress, "an old pod is still there");
        assert!(v.paused);
        let env = &v.containers[0].env;
        assert_eq!(env.get("DB_POOL_MAX"), Some(&EnvValue::Literal("20".into())));
        assert_eq!(env.get("PGAPPNAME"), Some(&EnvValue::InstanceName));
        assert_eq!(env.get("DB_URL"), Some(&EnvValue::Other("secretKeyRef pg/url".into())));
    }

    #[test]
    fn pod_owner_through_the_replicaset_name() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-7d4b9c-abcde", "labels": {"pod-template-hash": "7d4b9c"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c",
                                              "uid": "u", "controller": true}]}}))
        .unwrap();
        assert_eq!(owner_of(&p.metadata), Some((WorkloadKind::Deployment, "web".into())));
    }
}
