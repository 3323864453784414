//! A container's environment and argv the way the kubelet builds them: plain
//! values, `valueFrom` (fieldRef, secretKeyRef, configMapKeyRef) and `$(VAR)`
//! expansion against the variables defined before.
//! See <https://kubernetes.io/docs/tasks/inject-data-application/define-interdependent-environment-variables/>.
//!
//! The ConfigMaps and Secrets a container refers to are read by the caller (the
//! sandbox from its store, the node agent from the API server): [`referenced`]
//! names them, and [`container_env`] takes them as an [`EnvSources`].

use std::collections::HashMap;

use base64::Engine;
use serde_json::Value;

/// Where the pod runs, for the downward API (`spec.nodeName`, `status.hostIP`).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub host_ip: String,
}

/// The ConfigMaps and Secrets a container's env refers to, keyed by
/// (`configmaps` or `secrets`, name); one that does not exist is absent.
pub type EnvSources = HashMap<(&'static str, String), Value>;

/// The (plural, name) of every ConfigMap and Secret the container's `env` and
/// `envFrom` refer to.
pub fn referenced(container: &Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut add = |plural: &'static str, r: &Value| {
        if let Some(name) = r["name"].as_str()
            && !out.iter().any(|(p, n): &(&str, String)| *p == plural && n == name)
        {
            out.push((plural, name.to_string()));
        }
    };
    for from in container["envFrom"].as_array().into_iter().flatten() {
        add("configmaps", &from["configMapRef"]);
        add("secrets", &from["secretRef"]);
    }
    for e in container["env"].as_array().into_iter().flatten() {
        add("configmaps", &e["valueFrom"]["configMapKeyRef"]);
        add("secrets", &e["valueFrom"]["secretKeyRef"]);
    }
    out
}

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

pub fn field_ref(pod: &Value, path: &str, pod_ip: &str, node: &NodeInfo) -> String {
    match path {
        "metadata.name" => pod["metadata"]["name"].as_str().unwrap_or_default().into(),
        "metadata.namespace" => pod["metadata"]["namespace"].as_str().unwrap_or_default().into(),
        "metadata.uid" => pod["metadata"]["uid"].as_str().unwrap_or_default().into(),
        "status.podIP" | "status.podIPs" => pod_ip.into(),
        "status.hostIP" | "status.hostIPs" => node.host_ip.clone(),
        "spec.nodeName" => node.name.clone(),
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

fn key_ref(sources: &EnvSources, plural: &'static str, r: &Value) -> Option<String> {
    let obj = sources.get(&(plural, r["name"].as_str()?.to_string()))?;
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
fn all_keys(sources: &EnvSources, plural: &'static str, r: &Value) -> Vec<(String, String)> {
    let Some(obj) = r["name"].as_str().and_then(|n| sources.get(&(plural, n.to_string()))) else {
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
pub fn container_env(
    sources: &EnvSources,
    pod: &Value,
    container: &Value,
    pod_ip: &str,
    node: &NodeInfo,
) -> Vec<(String, String)> {
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
        for (key, value) in all_keys(sources, plural, r) {
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
            field_ref(pod, path, pod_ip, node)
        } else if e["valueFrom"]["secretKeyRef"].is_object() {
            key_ref(sources, "secrets", &e["valueFrom"]["secretKeyRef"]).unwrap_or_default()
        } else if e["valueFrom"]["configMapKeyRef"].is_object() {
            key_ref(sources, "configmaps", &e["valueFrom"]["configMapKeyRef"]).unwrap_or_default()
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
        let container = serde_json::json!({
            "envFrom": [{"configMapRef": {"name": "pool"}}, {"secretRef": {"name": "db"}, "prefix": "PG_"}],
            "env": [{"name": "DB_POOL_MIN", "value": "0"},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        });
        assert_eq!(
            referenced(&container),
            vec![("configmaps", "pool".to_string()), ("secrets", "db".to_string())]
        );
        let mut sources = EnvSources::new();
        sources.insert(
            ("configmaps", "pool".into()),
            serde_json::json!({"data": {"DB_POOL_MIN": "5", "DB_POOL_MAX": "15"}}),
        );
        sources.insert(
            ("secrets", "db".into()),
            serde_json::json!({"data": {"URL": "cG9zdGdyZXM6Ly94"}}),
        );
        let pod = serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}});
        let node = NodeInfo {
            name: "n1".into(),
            host_ip: "127.0.0.1".into(),
        };
        let env = container_env(&sources, &pod, &container, "127.0.0.9", &node);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("DB_POOL_MIN"), Some("0"), "env overrides envFrom");
        assert_eq!(get("DB_POOL_MAX"), Some("15"));
        assert_eq!(get("PG_URL"), Some("postgres://x"));
        assert_eq!(get("NODE"), Some("n1"));
    }

    #[test]
    fn expansion_uses_earlier_vars_and_keeps_unknown_and_escaped() {
        let vars = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
    }
}
