//! The writes poolwarden makes, each only on fields it owns: pool env by
//! server-side apply (never forced), a pod eviction (PodDisruptionBudgets decide), a
//! rollout restart annotation, the policy's status, and Events.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{ObjectReference, Pod},
};
use kube::{
    Api, Client,
    api::{EvictParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::{
    decide::{EnvConflict, EnvValue},
    policy::{PoolPolicy, PoolPolicyStatus, RESTARTED_AT_ANNOTATION, WorkloadKind},
};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "poolwarden";

/// The apply configuration of a workload's pool env: only poolwarden's entries.
pub fn env_apply_body(
    kind: WorkloadKind,
    name: &str,
    namespace: &str,
    containers: &BTreeMap<String, BTreeMap<String, EnvValue>>,
) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|(container, env)| {
            let env: Vec<Value> = env
                .iter()
                .filter_map(|(name, value)| match value {
                    EnvValue::Literal(v) => Some(json!({"name": name, "value": v})),
                    // The downward API gives each pod its own name.
                    EnvValue::InstanceName => {
                        Some(json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}))
                    }
                    EnvValue::Other(_) => None,
                })
                .collect();
            json!({"name": container, "env": env})
        })
        .collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": super::workloads::kind_name(kind),
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"spec": {"containers": containers}}},
    })
}

/// What became of an env apply.
#[derive(Debug)]
pub enum EnvOutcome {
    Applied,
    /// Another manager owns some entries: nothing was written.
    Conflicts(Vec<EnvConflict>),
    Failed(kube::Error),
}

pub async fn apply_env(client: &Client, kind: WorkloadKind, namespace: &str, name: &str, body: &Value) -> EnvOutcome {
    let result = match kind {
        WorkloadKind::Deployment => apply_unread::<Deployment>(client, namespace, name, body).await,
        WorkloadKind::StatefulSet => apply_unread::<StatefulSet>(client, namespace, name, body).await,
    };
    match result {
        Ok(()) => EnvOutcome::Applied,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let conflicts = conflicts_from(name, &status);
            if conflicts.is_empty() {
                EnvOutcome::Failed(kube::Error::Api(status))
            } else {
                EnvOutcome::Conflicts(conflicts)
            }
        }
        Err(e) => EnvOutcome::Failed(e),
    }
}

/// Server-side applies `body` (never forced), as `Api::patch` does, without reading the
/// object the server answers into a `K`: the watch brings the change, and decoding the
/// whole workload with its managedFields, to drop it, is CPU spent on nothing.
async fn apply_unread<K: kube::Resource<DynamicType = ()>>(
    client: &Client,
    namespace: &str,
    name: &str,
    body: &Value,
) -> Result<(), kube::Error> {
    let url = K::url_path(&(), Some(namespace));
    let mut request = kube::core::Request::new(url)
        .patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(body))
        .map_err(kube::Error::BuildRequest)?;
    request.extensions_mut().insert("patch");
    // The answer is read whole (an error status becomes `Error::Api`) and dropped.
    client.request_text(request).await.map(drop)
}

/// The env entries named in a server-side apply conflict, with their owners. The API
/// server names each field as
/// `.spec.template.spec.containers[name="app"].env[name="DB_POOL_MAX"].value` and its
/// owner as `conflict with "argocd-controller" using apps/v1`.
pub fn conflicts_from(workload: &str, status: &kube::core::Status) -> Vec<EnvConflict> {
    let causes = status.details.as_ref().map(|d| d.causes.as_slice()).unwrap_or_default();
    let mut out: Vec<EnvConflict> = causes
        .iter()
        .filter_map(|c| {
            let manager = between(&c.message, "conflict with \"", "\"")?;
            let container = between(&c.field, "containers[name=\"", "\"]")?;
            let env = between(&c.field, ".env[name=\"", "\"]")?;
            Some(EnvConflict {
                workload: workload.to_owned(),
                container: container.to_owned(),
                env: env.to_owned(),
                manager: manager.to_owned(),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.container, &a.env).cmp(&(&b.container, &b.env)));
    out.dedup_by(|a, b| a.container == b.container && a.env == b.env);
    out
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &s[s.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

/// What became of an eviction.
#[derive(Debug)]
pub enum EvictOutcome {
    Evicted,
    /// 429: a PodDisruptionBudget allows no disruption now.
    Blocked(String),
    /// The pod is already gone.
    Gone,
    Failed(kube::Error),
}

/// Evicts through the Eviction API. `client` must not retry 429 answers (kube's
/// default client does, for minutes, which would stall the pass).
pub async fn evict(client: &Client, namespace: &str, pod: &str) -> EvictOutcome {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match pods.evict(pod, &EvictParams::default()).await {
        Ok(_) => EvictOutcome::Evicted,
        Err(kube::Error::Api(s)) if s.code == 429 => EvictOutcome::Blocked(s.message.clone()),
        Err(kube::Error::Api(s)) if s.code == 404 => EvictOutcome::Gone,
        Err(e) => EvictOutcome::Failed(e),
    }
}

/// Restarts every pod of a workload by stamping its template, as `kubectl rollout
/// restart` does (with poolwarden's own annotation).
pub async fn rollout_restart(
    client: &Client,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    at: &str,
) -> Result<(), kube::Error> {
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: at}}}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    match kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), namespace)
            .patch(name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), namespace)
            .patch(name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
    }
}

/// Publishes the status. The status is poolwarden's alone, so the apply is forced:
/// it also removes what the new status no longer has. With `resource_version` the
/// write is conditional: 409 when the policy changed since it was read at that
/// version, so a writer never overwrites records it has not seen. Returns the
/// policy's new resourceVersion.
pub async fn write_status(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &PoolPolicyStatus,
    resource_version: Option<&str>,
) -> Result<Option<String>, kube::Error> {
    let api: Api<PoolPolicy> = Api::namespaced(client.clone(), namespace);
    let mut body = json!({
        "apiVersion": "poolwarden.io/v1alpha1",
        "kind": "PoolPolicy",
        "status": status,
    });
    if let Some(rv) = resource_version {
        body["metadata"] = json!({"resourceVersion": rv});
    }
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map(|p| p.metadata.resource_version)
}

/// A reference to a workload or pod for an Event.
pub fn reference(api_version: &str, kind: &str, namespace: &str, name: &str, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.to_owned()),
        kind: Some(kind.to_owned()),
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        uid,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_name_container_env_and_manager() {
        let status: kube::core::Status = serde_json::from_value(json!({
            "code": 409, "reason": "Conflict",
            "message": "Apply failed with 2 conflicts: ...",
            "details": {"causes": [
                {"reason": "FieldManagerConflict", "message": "conflict with \"argocd-controller\" using apps/v1",
                 "field": ".spec.template.spec.containers[name=\"app\"].env[name=\"DB_POOL_MAX\"].value"},
                {"reason": "FieldManagerConflict", "message": "conflict with \"argocd-controller\" using apps/v1",
                 "field": ".spec.template.spec.containers[name=\"app\"].env[name=\"DB_POOL_MAX\"].valueFrom"},
                {"reason": "FieldManagerConflict", "message": "conflict with \"helm\" using apps/v1",
                 "field": ".spec.replicas"}
            ]}
        }))
        .unwrap();
        assert_eq!(
            conflicts_from("web", &status),
            vec![EnvConflict {
                workload: "web".into(),
                container: "app".into(),
                env: "DB_POOL_MAX".into(),
                manager: "argocd-controller".into()
            }]
        );
    }

    #[test]
    fn the_apply_body_carries_only_owned_entries() {
        let env = BTreeMap::from([(
            "app".to_owned(),
            BTreeMap::from([
                ("DB_POOL_MAX".to_owned(), EnvValue::Literal("20".into())),
                ("PGAPPNAME".to_owned(), EnvValue::InstanceName),
            ]),
        )]);
        let body = env_apply_body(WorkloadKind::StatefulSet, "db-worker", "prod", &env);
        assert_eq!(
            body,
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                   "metadata": {"name": "db-worker", "namespace": "prod"},
                   "spec": {"template": {"spec": {"containers": [{"name": "app", "env": [
                       {"name": "DB_POOL_MAX", "value": "20"},
                       {"name": "PGAPPNAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}}})
        );
    }
}
