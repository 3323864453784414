//! What the workload controllers share: reading objects from the store, making
//! pods from a template, owner references and garbage collection.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Value, json};

use crate::apiserver::resources::ResourceInfo;
use crate::apiserver::selector::{FieldSelector, LabelSelector};
use crate::apiserver::store::{DeleteOptions, Store, WriteOptions};

pub const MANAGER: &str = "kube-controller-manager";

pub fn resource(store: &Store, group: &str, version: &str, plural: &str) -> Option<ResourceInfo> {
    store.resource(group, version, plural)
}

pub fn list_all(store: &Store, res: &ResourceInfo) -> Vec<Value> {
    store
        .list(res, None, &LabelSelector::default(), &FieldSelector::default())
        .1
}

pub fn meta<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

/// A stable short hash of a pod template, in the alphabet Kubernetes uses for
/// `pod-template-hash` so pod names look like real ones.
pub fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = DefaultHasher::new();
    template.to_string().hash(&mut h);
    let mut n = h.finish();
    let mut out = String::new();
    for _ in 0..10 {
        out.push(ALPHABET[(n % ALPHABET.len() as u64) as usize] as char);
        n /= ALPHABET.len() as u64;
    }
    out
}

pub fn owned_by<'a>(pods: &'a [Value], owner: &Value) -> Vec<&'a Value> {
    let uid = meta(owner, "uid");
    pods.iter()
        .filter(|p| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["uid"] == uid && r["controller"] == true)
        })
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

/// `IntOrString` against a total; percentages round up or down as asked
/// (maxSurge rounds up, maxUnavailable down).
pub fn scaled(v: &Value, total: i64, round_up: bool, default: &str) -> i64 {
    let v = if v.is_null() { json!(default) } else { v.clone() };
    match &v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => {
            let pct: i64 = s.trim_end_matches('%').trim().parse().unwrap_or(0);
            if round_up {
                (pct * total + 99) / 100
            } else {
                pct * total / 100
            }
        }
        _ => 0,
    }
}

pub fn create_pod(store: &Store, owner: &Value, owner_kind: &str, name: &str, extra_labels: &[(&str, &str)]) {
    let Some(pods) = resource(store, "", "v1", "pods") else {
        return;
    };
    let template = &owner["spec"]["template"];
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    for (k, v) in extra_labels {
        labels[*k] = json!(v);
    }
    let ns = meta(owner, "namespace");
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels,
            "annotations": template["metadata"]["annotations"],
            "ownerReferences": [{
                "apiVersion": owner["apiVersion"].as_str().unwrap_or("apps/v1"),
                "kind": owner_kind,
                "name": meta(owner, "name"),
                "uid": meta(owner, "uid"),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": template["spec"],
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    });
    let mut pod = pod;
    if pod["metadata"]["annotations"].is_null()
        && let Some(m) = pod["metadata"].as_object_mut()
    {
        m.remove("annotations");
    }
    if let Err(e) = store.create(&pods, ns, pod, &WriteOptions::manager(MANAGER)) {
        tracing::debug!(pod = name, error = %e, "creating pod");
    }
}

pub fn delete_pod(store: &Store, pod: &Value) {
    let Some(pods) = resource(store, "", "v1", "pods") else {
        return;
    };
    let _ = store.delete(
        &pods,
        meta(pod, "namespace"),
        meta(pod, "name"),
        &DeleteOptions::default(),
    );
}

/// Replaces a condition of a status conditions list, keeping its transition
/// time when its status did not change (so a converged object is not rewritten).
pub fn set_condition(existing: &Value, ctype: &str, status: bool, reason: &str, message: &str, now: &str) -> Value {
    let status_str = if status { "True" } else { "False" };
    let prev = existing.as_array().into_iter().flatten().find(|c| c["type"] == ctype);
    let same = prev.is_some_and(|p| p["status"] == status_str);
    let transition = if same {
        prev.map(|p| p["lastTransitionTime"].clone()).unwrap_or(json!(now))
    } else {
        json!(now)
    };
    let update = if same && prev.is_some_and(|p| p["reason"] == reason) {
        prev.map(|p| p["lastUpdateTime"].clone()).unwrap_or(json!(now))
    } else {
        json!(now)
    };
    json!({"type": ctype, "status": status_str, "reason": reason, "message": message,
        "lastTransitionTime": transition, "lastUpdateTime": update})
}

/// Deletes pods whose controlling Deployment or StatefulSet no longer exists.
pub fn collect_orphans(store: &Store) {
    let (Some(pods), Some(deploys), Some(sets)) = (
        resource(store, "", "v1", "pods"),
        resource(store, "apps", "v1", "deployments"),
        resource(store, "apps", "v1", "statefulsets"),
    ) else {
        return;
    };
    let mut owners: Vec<String> = list_all(store, &deploys)
        .iter()
        .map(|d| meta(d, "uid").to_string())
        .collect();
    owners.extend(list_all(store, &sets).iter().map(|s| meta(s, "uid").to_string()));
    for pod in list_all(store, &pods) {
        let orphaned = pod["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| {
                r["controller"] == true
                    && matches!(r["kind"].as_str(), Some("Deployment") | Some("StatefulSet"))
                    && !owners.iter().any(|u| r["uid"] == u.as_str())
            });
        if orphaned && pod["metadata"]["deletionTimestamp"].is_null() {
            delete_pod(store, &pod);
        }
    }
}
