//! A container's environment and argv the way the kubelet builds them: plain
//! values, `valueFrom` (fieldRef, secretKeyRef, configMapKeyRef) and `$(VAR)`
//! expansion against the variables defined before.
//! See <https://kubernetes.io/docs/tasks/inject-data-application/define-interdependent-environment-variables/>.

use base64::Engine;
use serde_json::Value;

use crate::apiserver::store::Store;

/// Expands `$(VAR)` from `vars`; `$$(` escapes to a literal `$(`; unknown
/// references stay as written.
pub fn expand(s: &str, vars: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(after_escape) = after.strip_prefix("$(") {
            out.push_str("$(");
            rest = after_escape;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn field_ref(pod: &Value, path: &str, pod_ip: &str) -> String {
    match path {
        "metadata.name" => pod["metadata"]["name"].as_str().unwrap_or_default().into(),
        "metadata.namespace" => pod["metadata"]["namespace"].as_str().unwrap_or_default().into(),
        "metadata.uid" => pod["metadata"]["uid"].as_str().unwrap_or_default().into(),
        "status.podIP" | "status.hostIP" => pod_ip.into(),
        "spec.nodeName" => "sandbox".into(),
        "spec.serviceAccountName" => pod["spec"]["serviceAccountName"].as_str().unwrap_or("default").into(),
        other => {
            // metadata.labels['key'] / metadata.annotations['key']
            for (prefix, field) in [
                ("metadata.labels['", "labels"),
                ("metadata.annotations['", "annotations"),
            ] {
                if let Some(key) = other.strip_prefix(prefix).and_then(|k| k.strip_suffix("']")) {
                    return pod["metadata"][field][key].as_str().unwrap_or_default().into();
                }
            }
            String::new()
        }
    }
}

fn key_ref(store: &Store, ns: &str, plural: &str, r: &Value) -> Option<String> {
    let res = store.resource("", "v1", plural)?;
    let obj = store.get(&res, ns, r["name"].as_str()?).ok()?;
    let key = r["key"].as_str()?;
    if plural == "secrets" {
        if let Some(s) = obj["stringData"][key].as_str() {
            return Some(s.into());
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(obj["data"][key].as_str()?)
            .ok()?;
        return String::from_utf8(raw).ok();
    }
    obj["data"][key].as_str().map(str::to_string)
}

/// The environment of a pod's container, in definition order (later wins).
pub fn container_env(store: &Store, pod: &Value, container: &Value, pod_ip: &str) -> Vec<(String, String)> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut vars: Vec<(String, String)> = vec![
        ("POD_IP".into(), pod_ip.into()),
        (
            "HOSTNAME".into(),
            pod["metadata"]["name"].as_str().unwrap_or_default().into(),
        ),
    ];
    for e in container["env"].as_array().into_iter().flatten() {
        let Some(name) = e["name"].as_str() else { continue };
        let value = if let Some(v) = e["value"].as_str() {
            expand(v, &vars)
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            field_ref(pod, path, pod_ip)
        } else if e["valueFrom"]["secretKeyRef"].is_object() {
            key_ref(store, ns, "secrets", &e["valueFrom"]["secretKeyRef"]).unwrap_or_default()
        } else if e["valueFrom"]["configMapKeyRef"].is_object() {
            key_ref(store, ns, "configmaps", &e["valueFrom"]["configMapKeyRef"]).unwrap_or_default()
        } else {
            String::new()
        };
        vars.retain(|(k, _)| k != name);
        vars.push((name.to_string(), value));
    }
    vars
}

/// `command` + `args`, each expanded against the container's environment.
pub fn container_argv(container: &Value, env: &[(String, String)]) -> Vec<String> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str())
            .map(|s| expand(s, env))
            .collect()
    };
    let mut argv = strings(&container["command"]);
    argv.extend(strings(&container["args"]));
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_uses_earlier_vars_and_keeps_unknown_and_escaped() {
        let vars = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
    }
}
