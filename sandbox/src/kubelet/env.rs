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

/// Every key of a ConfigMap or Secret (`envFrom`), decoded.
fn all_keys(store: &Store, ns: &str, plural: &str, r: &Value) -> Vec<(String, String)> {
    let Some(res) = store.resource("", "v1", plural) else {
        return Vec::new();
    };
    let Some(obj) = r["name"].as_str().and_then(|n| store.get(&res, ns, n).ok()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (field, encoded) in [("data", plural == "secrets"), ("stringData", false)] {
        for (k, v) in obj[field].as_object().into_iter().flatten() {
            let Some(v) = v.as_str() else { continue };
            let value = if encoded {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .ok()
                    .and_then(|raw| String::from_utf8(raw).ok())
            } else {
                Some(v.to_owned())
            };
            if let Some(value) = value {
                out.push((k.clone(), value));
            }
        }
    }
    out
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
    // envFrom first: `env` entries override what it defines, as in the kubelet.
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or_default();
        let (plural, r) = if from["configMapRef"].is_object() {
            ("configmaps", &from["configMapRef"])
        } else if from["secretRef"].is_object() {
            ("secrets", &from["secretRef"])
        } else {
            continue;
        };
        for (key, value) in all_keys(store, ns, plural, r) {
            let name = format!("{prefix}{key}");
            vars.retain(|(k, _)| *k != name);
            vars.push((name, value));
        }
    }
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
    fn env_from_a_config_map_and_a_secret_is_overridden_by_env() {
        let store = Store::new();
        let cm = store.resource("", "v1", "configmaps").unwrap();
        let secret = store.resource("", "v1", "secrets").unwrap();
        let opts = crate::apiserver::store::WriteOptions::manager("test");
        let namespaces = store.resource("", "v1", "namespaces").unwrap();
        store
            .create(&namespaces, "", serde_json::json!({"metadata": {"name": "ns"}}), &opts)
            .unwrap();
        store
            .create(
                &cm,
                "ns",
                serde_json::json!({"metadata": {"name": "pool"},
                "data": {"DB_POOL_MIN": "5", "DB_POOL_MAX": "15"}}),
                &opts,
            )
            .unwrap();
        store
            .create(
                &secret,
                "ns",
                serde_json::json!({"metadata": {"name": "db"},
                "data": {"URL": "cG9zdGdyZXM6Ly94"}}),
                &opts,
            )
            .unwrap();
        let pod = serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}});
        let container = serde_json::json!({
            "envFrom": [{"configMapRef": {"name": "pool"}}, {"secretRef": {"name": "db"}, "prefix": "PG_"}],
            "env": [{"name": "DB_POOL_MIN", "value": "0"}],
        });
        let env = container_env(&store, &pod, &container, "127.0.0.9");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("DB_POOL_MIN"), Some("0"), "env overrides envFrom");
        assert_eq!(get("DB_POOL_MAX"), Some("15"));
        assert_eq!(get("PG_URL"), Some("postgres://x"));
    }

    #[test]
    fn expansion_uses_earlier_vars_and_keeps_unknown_and_escaped() {
        let vars = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
    }
}
