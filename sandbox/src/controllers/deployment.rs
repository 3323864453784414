//! The Deployment controller, reduced to what poolwarden relies on: pods named
//! `<deployment>-<pod-template-hash>-<random>`, a rolling update that replaces
//! pods when the template changes within maxSurge/maxUnavailable (or Recreate),
//! replacement of deleted pods, and a status with observedGeneration, replica
//! counts and the Available/Progressing conditions.
//! Pods are owned by the Deployment directly (no ReplicaSets are served).
//! See <https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#rolling-update-deployment>.

use serde_json::{Value, json};

use crate::apiserver::disruption::pod_is_ready;
use crate::apiserver::store::{Store, now_rfc3339};

use super::workload::{
    MANAGER, create_pod, delete_pod, list_all, meta, owned_by, resource, scaled, set_condition, template_hash,
};

const HASH_LABEL: &str = "pod-template-hash";

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn reconcile_all(store: &Store) {
    let (Some(pods_res), Some(deploys_res)) = (
        resource(store, "", "v1", "pods"),
        resource(store, "apps", "v1", "deployments"),
    ) else {
        return;
    };
    let deploys = list_all(store, &deploys_res);
    if deploys.is_empty() {
        return;
    }
    let pods = list_all(store, &pods_res);
    for d in &deploys {
        if !d["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        reconcile(store, d, &pods);
    }
}

fn reconcile(store: &Store, d: &Value, pods: &[Value]) {
    let spec = &d["spec"];
    let replicas = spec["replicas"].as_i64().unwrap_or(1);
    let hash = template_hash(&spec["template"]);
    let owned = owned_by(pods, d);
    let (new, old): (Vec<&Value>, Vec<&Value>) = owned
        .iter()
        .partition(|p| p["metadata"]["labels"][HASH_LABEL].as_str() == Some(hash.as_str()));
    let ready = |ps: &[&Value]| ps.iter().filter(|p| pod_is_ready(p)).count() as i64;
    let total = owned.len() as i64;
    let available = ready(&owned);
    let name = meta(d, "name");
    let create = |n: i64| {
        for _ in 0..n.max(0) {
            create_pod(
                store,
                d,
                "Deployment",
                &format!("{name}-{hash}-{}", random_suffix()),
                &[(HASH_LABEL, &hash)],
            );
        }
    };
    let strategy = &spec["strategy"];
    let (surge, unavailable) = if strategy["type"] == "Recreate" {
        (0, replicas)
    } else {
        let ru = &strategy["rollingUpdate"];
        let surge = scaled(&ru["maxSurge"], replicas, true, "25%");
        let unavailable = scaled(&ru["maxUnavailable"], replicas, false, "25%");
        (surge, if surge == 0 && unavailable == 0 { 1 } else { unavailable })
    };

    if strategy["type"] == "Recreate" {
        if !old.is_empty() {
            old.iter().for_each(|p| delete_pod(store, p));
        } else {
            create(replicas - new.len() as i64);
        }
    } else {
        // Scale up the new pods within the surge budget.
        let room = replicas + surge - total;
        create((replicas - new.len() as i64).min(room));
        // Old pods that are not ready cost no availability: remove them first.
        let mut old_sorted: Vec<&&Value> = old.iter().collect();
        old_sorted.sort_by_key(|p| pod_is_ready(p));
        let min_available = replicas - unavailable;
        let mut budget = available - min_available;
        // Never go below the desired count of pods in total while new ones are not up.
        let mut excess = total - replicas;
        for p in old_sorted {
            if !pod_is_ready(p) {
                delete_pod(store, p);
                excess -= 1;
            } else if budget > 0 && (excess > 0 || unavailable > 0) {
                delete_pod(store, p);
                budget -= 1;
                excess -= 1;
            }
        }
        if old.is_empty() && new.len() as i64 > replicas {
            let mut extra: Vec<&&Value> = new.iter().collect();
            extra.sort_by_key(|p| pod_is_ready(p));
            extra
                .iter()
                .take(new.len() - replicas as usize)
                .for_each(|p| delete_pod(store, p));
        }
    }

    let updated = new.len() as i64;
    let ready_count = available;
    let now = now_rfc3339();
    let prev = &d["status"]["conditions"];
    let is_available = available >= replicas - unavailable;
    let complete = updated == replicas && total == replicas && available == replicas;
    let conditions = json!([
        set_condition(
            prev,
            "Available",
            is_available,
            if is_available {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
            if is_available {
                "Deployment has minimum availability."
            } else {
                "Deployment does not have minimum availability."
            },
            &now,
        ),
        set_condition(
            prev,
            "Progressing",
            true,
            if complete {
                "NewReplicaSetAvailable"
            } else {
                "ReplicaSetUpdated"
            },
            &format!(
                "ReplicaSet \"{name}-{hash}\" {}",
                if complete {
                    "has successfully progressed."
                } else {
                    "is progressing."
                }
            ),
            &now,
        ),
    ]);
    let mut status = json!({
        "observedGeneration": d["metadata"]["generation"],
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready_count,
        "availableReplicas": available,
        "conditions": conditions,
    });
    if replicas - available > 0 {
        status["unavailableReplicas"] = json!(replicas - available);
    }
    if let Some(res) = resource(store, "apps", "v1", "deployments") {
        let _ = store.modify(&res, meta(d, "namespace"), name, true, MANAGER, |obj| {
            obj["status"] = status
        });
    }
}
