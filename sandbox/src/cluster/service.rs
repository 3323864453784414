//! A Service's endpoints, worked out the way the EndpointSlice controller does:
//! the Service's selector picks the pods, only Ready ones that are not being
//! deleted serve, and a named `targetPort` is looked up among each pod's
//! container ports. The node's pod addresses are loopback ones (127.0.0.x, see
//! `kubelet/ips.rs`), which the API server refuses in an EndpointSlice
//! ("may not be in the loopback range"), so the controller cannot publish them:
//! clients of the real control plane resolve a Service with this instead.
//! See <https://kubernetes.io/docs/concepts/services-networking/service/#defining-a-service>.

use serde_json::Value;

/// The `(pod IP, port)` endpoints of `service`'s port `port_name` among `pods`.
pub fn endpoints(service: &Value, port_name: &str, pods: &[Value]) -> Vec<(String, u16)> {
    let Some(selector) = service["spec"]["selector"].as_object().filter(|s| !s.is_empty()) else {
        // A Service without a selector has no endpoints of the controller's.
        return Vec::new();
    };
    let Some(port) = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == port_name)
    else {
        return Vec::new();
    };
    let target = match &port["targetPort"] {
        Value::Null => port["port"].clone(),
        t => t.clone(),
    };
    let mut out = Vec::new();
    for pod in pods {
        let labels = &pod["metadata"]["labels"];
        if !selector.iter().all(|(k, v)| labels[k] == *v) || !pod["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let Some(ip) = pod["status"]["podIP"].as_str().filter(|_| ready) else {
            continue;
        };
        let number = match &target {
            Value::String(name) => pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .find(|p| p["name"] == name.as_str())
                .and_then(|p| p["containerPort"].as_u64()),
            n => n.as_u64(),
        };
        if let Some(n) = number.and_then(|n| u16::try_from(n).ok()) {
            out.push((ip.to_string(), n));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, app: &str) -> Value {
        json!({
            "metadata": {"name": name, "labels": {"app": app, "x": "y"}},
            "spec": {"containers": [{"ports": [{"name": "metrics", "containerPort": 9090}]}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        })
    }

    #[test]
    fn ready_selected_pods_serve_on_the_named_container_port() {
        let svc = json!({"spec": {"selector": {"app": "pw"},
                                  "ports": [{"name": "metrics", "port": 8080, "targetPort": "metrics"}]}});
        let mut deleting = pod("d", "127.0.0.4", true, "pw");
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let pods = [
            pod("a", "127.0.0.3", true, "pw"),
            pod("b", "127.0.0.2", true, "pw"),
            pod("c", "127.0.0.5", false, "pw"),
            pod("e", "127.0.0.6", true, "other"),
            deleting,
        ];
        assert_eq!(
            endpoints(&svc, "metrics", &pods),
            [("127.0.0.2".to_string(), 9090), ("127.0.0.3".to_string(), 9090)]
        );
        assert!(endpoints(&svc, "http", &pods).is_empty());
        let numbered = json!({"spec": {"selector": {"app": "pw"}, "ports": [{"name": "m", "port": 8080}]}});
        assert_eq!(endpoints(&numbered, "m", &pods[..1]), [("127.0.0.3".to_string(), 8080)]);
        let no_selector = json!({"spec": {"ports": [{"name": "m", "port": 8080}]}});
        assert!(endpoints(&no_selector, "m", &pods).is_empty());
    }
}
