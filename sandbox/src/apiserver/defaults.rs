//! The defaults the real API server fills in on write that a client can see in
//! what it reads back, for the fields poolwarden and its tests compare.
//! See `k8s.io/kubernetes/pkg/apis/core/v1/defaults.go`.

use serde_json::{Value, json};

use super::resources::ResourceInfo;

/// The pod spec inside an object of `res`, if it has one.
fn pod_spec<'a>(res: &ResourceInfo, obj: &'a mut Value) -> Option<&'a mut Value> {
    match (res.group.as_str(), res.plural.as_str()) {
        ("", "pods") => obj.get_mut("spec"),
        ("apps", "deployments" | "statefulsets" | "replicasets" | "daemonsets") | ("batch", "jobs") => {
            obj.get_mut("spec")?.get_mut("template")?.get_mut("spec")
        }
        _ => None,
    }
}

/// `SetDefaults_ObjectFieldSelector`: a `fieldRef` without `apiVersion` gets `v1`.
pub fn apply(res: &ResourceInfo, obj: &mut Value) {
    let Some(spec) = pod_spec(res, obj) else { return };
    for list in ["containers", "initContainers"] {
        for c in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            for e in c.get_mut("env").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(f) = e.pointer_mut("/valueFrom/fieldRef").and_then(Value::as_object_mut) {
                    f.entry("apiVersion").or_insert_with(|| json!("v1"));
                }
            }
        }
    }
}
