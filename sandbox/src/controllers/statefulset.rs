//! The StatefulSet controller, reduced: pods `<name>-<ordinal>` created in order
//! (or all at once with `podManagementPolicy: Parallel`), a rolling update that
//! replaces the highest-ordinal outdated pod once all pods are Ready, and the
//! status fields with current/update revisions.
//! See <https://kubernetes.io/docs/concepts/workloads/controllers/statefulset/#rolling-updates>.

use serde_json::{Value, json};

use crate::apiserver::disruption::pod_is_ready;
use crate::apiserver::store::Store;

use super::workload::{MANAGER, create_pod, delete_pod, list_all, meta, owned_by, resource, template_hash};

const REVISION_LABEL: &str = "controller-revision-hash";

pub fn reconcile_all(store: &Store) {
    let (Some(pods_res), Some(sets_res)) = (
        resource(store, "", "v1", "pods"),
        resource(store, "apps", "v1", "statefulsets"),
    ) else {
        return;
    };
    let sets = list_all(store, &sets_res);
    if sets.is_empty() {
        return;
    }
    let pods = list_all(store, &pods_res);
    for s in sets.iter().filter(|s| s["metadata"]["deletionTimestamp"].is_null()) {
        reconcile(store, s, &pods);
    }
}

fn ordinal(pod: &Value, set_name: &str) -> Option<i64> {
    meta(pod, "name")
        .strip_prefix(set_name)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn reconcile(store: &Store, s: &Value, pods: &[Value]) {
    let name = meta(s, "name");
    let replicas = s["spec"]["replicas"].as_i64().unwrap_or(1);
    let revision = format!("{name}-{}", template_hash(&s["spec"]["template"]));
    let parallel = s["spec"]["podManagementPolicy"] == "Parallel";
    let owned = owned_by(pods, s);
    let by_ordinal = |i: i64| owned.iter().find(|p| ordinal(p, name) == Some(i)).copied();

    // Create missing pods in ordinal order; OrderedReady waits for each to be Ready.
    for i in 0..replicas {
        match by_ordinal(i) {
            Some(p) if pod_is_ready(p) || parallel => continue,
            Some(_) => break,
            None => {
                let pod_name = format!("{name}-{i}");
                create_pod(
                    store,
                    s,
                    "StatefulSet",
                    &pod_name,
                    &[
                        (REVISION_LABEL, &revision),
                        ("statefulset.kubernetes.io/pod-name", &pod_name),
                    ],
                );
                if !parallel {
                    break;
                }
            }
        }
    }
    // Scale down from the highest ordinal.
    let mut extra: Vec<&Value> = owned
        .iter()
        .copied()
        .filter(|p| ordinal(p, name).is_none_or(|i| i >= replicas))
        .collect();
    extra.sort_by_key(|p| std::cmp::Reverse(ordinal(p, name)));
    if let Some(p) = extra.first() {
        delete_pod(store, p);
    }
    // Rolling update: once every pod is up and Ready, replace the highest outdated one.
    let in_range: Vec<&Value> = owned
        .iter()
        .copied()
        .filter(|p| ordinal(p, name).is_some_and(|i| i < replicas))
        .collect();
    let partition = s["spec"]["updateStrategy"]["rollingUpdate"]["partition"]
        .as_i64()
        .unwrap_or(0);
    let on_delete = s["spec"]["updateStrategy"]["type"] == "OnDelete";
    if !on_delete && in_range.len() as i64 == replicas && in_range.iter().all(|p| pod_is_ready(p)) {
        let mut outdated: Vec<&Value> = in_range
            .iter()
            .copied()
            .filter(|p| p["metadata"]["labels"][REVISION_LABEL].as_str() != Some(revision.as_str()))
            .filter(|p| ordinal(p, name).is_some_and(|i| i >= partition))
            .collect();
        outdated.sort_by_key(|p| std::cmp::Reverse(ordinal(p, name)));
        if let Some(p) = outdated.first() {
            delete_pod(store, p);
        }
    }

    let ready = owned.iter().filter(|p| pod_is_ready(p)).count() as i64;
    let updated = owned
        .iter()
        .filter(|p| p["metadata"]["labels"][REVISION_LABEL].as_str() == Some(revision.as_str()))
        .count() as i64;
    let current_revision = if updated == replicas {
        revision.clone()
    } else {
        s["status"]["currentRevision"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| revision.clone())
    };
    let status = json!({
        "observedGeneration": s["metadata"]["generation"],
        "replicas": owned.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": if updated == replicas { updated } else { owned.len() as i64 - updated },
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": revision,
        "collisionCount": 0,
    });
    if let Some(res) = resource(store, "apps", "v1", "statefulsets") {
        let _ = store.modify(&res, meta(s, "namespace"), name, true, MANAGER, |obj| {
            obj["status"] = status
        });
    }
}
