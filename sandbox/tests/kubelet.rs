//! The kubelet side: StatefulSet pods by ordinal, env with fieldRef and
//! `$(VAR)` expansion, restart of exited processes and of processes failing
//! their liveness probe, replacement of deleted pods, and no process surviving
//! a dropped sandbox.

mod common;

use std::time::Duration;

use common::{eventually, process_exists};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use poolwarden_sandbox::Sandbox;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pods_run_with_expanded_env_and_die_with_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap().to_string();
    let sandbox = Sandbox::start().await.unwrap();
    let sets: Api<StatefulSet> = Api::default_namespaced(sandbox.client());
    let pods: Api<Pod> = Api::default_namespaced(sandbox.client());
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 2,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "sh",
                    "command": ["sh", "-c"],
                    "args": [format!("echo $(GREETING) $POD_IP > {out}/$(ME); exec sleep 600")],
                    "env": [
                        {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "GREETING", "value": "hello-$(ME)"},
                    ]}]}},
        },
    }))
    .unwrap();
    sets.create(&PostParams::default(), &sts).await.unwrap();
    let ready = eventually(Duration::from_secs(20), || async {
        sets.get("db")
            .await
            .ok()
            .and_then(|s| s.status)
            .is_some_and(|s| s.ready_replicas == Some(2))
    })
    .await;
    assert!(ready, "statefulset ready");
    for ordinal in 0..2 {
        let name = format!("db-{ordinal}");
        let pod = pods.get(&name).await.unwrap();
        let ip = pod.status.unwrap().pod_ip.unwrap();
        let written = std::fs::read_to_string(dir.path().join(&name)).unwrap();
        assert_eq!(written.trim(), format!("hello-{name} {ip}"));
    }

    // A deleted pod is replaced (same name, new uid).
    let old_uid = pods.get("db-0").await.unwrap().metadata.uid;
    pods.delete("db-0", &DeleteParams::default()).await.unwrap();
    let replaced = eventually(Duration::from_secs(20), || async {
        pods.get("db-0").await.ok().is_some_and(|p| {
            p.metadata.uid != old_uid
                && p.status
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
    })
    .await;
    assert!(replaced, "db-0 replaced");

    let pids = sandbox.pod_pids();
    assert_eq!(pids.len(), 2);
    drop(sandbox);
    assert!(
        eventually(Duration::from_secs(5), || async {
            pids.iter().all(|p| !process_exists(*p))
        })
        .await,
        "pod processes outlived a dropped sandbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exited_process_is_restarted() {
    let sandbox = Sandbox::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(sandbox.client());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "flaky"},
        "spec": {"containers": [{"name": "c", "image": "sh", "command": ["sh", "-c", "sleep 0.2; exit 3"]}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let restarted = eventually(Duration::from_secs(10), || async {
        pods.get("flaky")
            .await
            .ok()
            .and_then(|p| p.status?.container_statuses?.first().map(|c| c.restart_count))
            .is_some_and(|n| n >= 1)
    })
    .await;
    assert!(restarted);
    sandbox.shutdown().await;
}

/// A web server on the pod's address; its liveness probe asks for `live_path`.
fn server_pod(name: &str, live_path: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "c", "image": "python3",
                "command": ["sh", "-c", "exec python3 -m http.server 8080 --bind \"$POD_IP\""],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                "livenessProbe": {"httpGet": {"path": live_path, "port": "http"}, "periodSeconds": 1, "failureThreshold": 2,
                                  "initialDelaySeconds": 1},
            }],
        },
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_failing_its_liveness_probe_is_restarted_and_a_live_one_is_not() {
    let sandbox = Sandbox::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(sandbox.client());
    // The server answers 404 for a file that does not exist: a failed probe.
    pods.create(&PostParams::default(), &server_pod("dead", "/no-such-file"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &server_pod("alive", "/"))
        .await
        .unwrap();
    let restarts = |name: &'static str| {
        let pods = pods.clone();
        async move {
            pods.get(name)
                .await
                .ok()
                .and_then(|p| p.status?.container_statuses?.first().map(|c| c.restart_count))
        }
    };
    let restarted = eventually(Duration::from_secs(30), || async { restarts("dead").await >= Some(1) }).await;
    assert!(
        restarted,
        "dead: {:?}",
        pods.get("dead").await.ok().and_then(|p| p.status)
    );
    // Probed as often for as long, the live one was never restarted and is Ready.
    assert_eq!(restarts("alive").await, Some(0));
    let alive = pods.get("alive").await.unwrap();
    let ready = alive
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    assert!(ready, "alive is Ready");
    sandbox.shutdown().await;
}
