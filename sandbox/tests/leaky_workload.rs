//! A Deployment of leaky-app on the sandbox: pods run as processes, become
//! Ready and connect to PostgreSQL under their pod names; a template change
//! rolls them and the new processes run with the new pool settings; a PDB
//! blocks eviction (429) until it allows it, and then the pod is replaced;
//! shutdown leaves no process and no backend behind.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{backends, eventually, http_ok, pg, process_exists, unique};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams};
use poolwarden_sandbox::Sandbox;
use serde_json::{Value, json};

const PORT: u16 = 8080;

fn deployment(name: &str, max_idle: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "app",
                        "image": "leaky-app",
                        "command": [env!("CARGO_BIN_EXE_leaky-app")],
                        "ports": [{"containerPort": PORT}],
                        "env": [
                            {"name": "DATABASE_URL", "value": common::database_url()},
                            {"name": "PGAPPNAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "DB_POOL_MIN", "value": "0"},
                            {"name": "DB_POOL_MAX", "value": "5"},
                            {"name": "DB_POOL_MAX_IDLE", "value": max_idle},
                            {"name": "PORT", "value": PORT.to_string()},
                        ],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": PORT}, "periodSeconds": 1},
                    }],
                },
            },
        },
    }))
    .unwrap()
}

async fn ready_pods(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .collect()
}

async fn rolled_out(deploys: &Api<Deployment>, name: &str) -> bool {
    let Ok(d) = deploys.get(name).await else { return false };
    let s = d.status.unwrap_or_default();
    s.observed_generation == d.metadata.generation
        && s.updated_replicas == Some(2)
        && s.ready_replicas == Some(2)
        && s.replicas == Some(2)
}

fn pod_ip(p: &Pod) -> String {
    p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()
}

fn names(ps: &[Pod]) -> BTreeSet<String> {
    ps.iter().filter_map(|p| p.metadata.name.clone()).collect()
}

async fn detailed(p: &Pod) -> Value {
    let body = http_ok(&pod_ip(p), PORT, "/health/detailed").await.unwrap_or_default();
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaky_deployment_runs_rolls_evicts_and_cleans_up() {
    let sandbox = Sandbox::start().await.unwrap();
    let name = unique("leaky");
    let deploys: Api<Deployment> = Api::default_namespaced(sandbox.client());
    let pods: Api<Pod> = Api::default_namespaced(sandbox.client());
    // kube's default client retries 429s (with the server's Retry-After) for
    // minutes; evictions are checked with a client that does not.
    let mut no_retry = sandbox.kube_config();
    no_retry.default_retry = false;
    let evictions: Api<Pod> = Api::default_namespaced(kube::Client::try_from(no_retry).unwrap());
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(sandbox.client());
    let db = pg().await;
    deploys
        .create(&PostParams::default(), &deployment(&name, "30"))
        .await
        .unwrap();

    // Pods start as processes and become Ready.
    assert!(
        eventually(Duration::from_secs(30), || rolled_out(&deploys, &name)).await,
        "first rollout"
    );
    let first = ready_pods(&pods, &name).await;
    assert_eq!(first.len(), 2);
    for p in &first {
        let pod_name = p.metadata.name.clone().unwrap();
        assert!(
            pod_name.starts_with(&format!("{name}-")) && pod_name.len() == name.len() + 17,
            "{pod_name}"
        );
        assert!(pod_ip(p).starts_with("127.0.0.") && pod_ip(p) != "127.0.0.1");
        // Hold one connection per pod so each shows in pg_stat_activity.
        assert!(http_ok(&pod_ip(p), PORT, "/leak?n=1").await.is_some());
        assert_eq!(
            detailed(p).await["checks"]["database_pool"]["config"]["max_idle_seconds"],
            30
        );
    }
    let seen: BTreeSet<String> = backends(&db, &name).await.into_iter().map(|(app, _)| app).collect();
    assert_eq!(
        seen,
        names(&first),
        "backends are attributed to the pods by application_name"
    );

    // Changing DB_POOL_MAX_IDLE in the template rolls the pods.
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "DB_POOL_MAX_IDLE", "value": "5"}]}]}}}});
    deploys
        .patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let rolled = eventually(Duration::from_secs(40), || async {
        let now = ready_pods(&pods, &name).await;
        rolled_out(&deploys, &name).await && now.len() == 2 && names(&now).is_disjoint(&names(&first))
    })
    .await;
    assert!(rolled, "second rollout");
    let second = ready_pods(&pods, &name).await;
    for p in &second {
        assert_eq!(
            detailed(p).await["checks"]["database_pool"]["config"]["max_idle_seconds"],
            5
        );
    }
    // The old processes are gone, and with them their leaked connections.
    let old_gone = eventually(Duration::from_secs(10), || async {
        let apps: BTreeSet<String> = backends(&db, &name).await.into_iter().map(|(a, _)| a).collect();
        apps.is_disjoint(&names(&first))
    })
    .await;
    assert!(old_gone, "old pods' backends closed");

    // With max idle 5s and min 0, an idle pool connection disappears; a leaked one stays.
    let p = &second[0];
    let p_name = p.metadata.name.clone().unwrap();
    assert!(http_ok(&pod_ip(p), PORT, "/leak?n=1").await.is_some());
    assert!(http_ok(&pod_ip(p), PORT, "/work").await.is_some());
    let count = |want: usize| {
        let db = &db;
        let p_name = p_name.clone();
        async move { backends(db, &p_name).await.len() == want }
    };
    assert!(
        eventually(Duration::from_secs(5), || count(2)).await,
        "leaked + idle connection"
    );
    assert!(
        eventually(Duration::from_secs(12), || count(1)).await,
        "idle connection reaped, leaked one kept"
    );
    let stats = detailed(p).await;
    assert_eq!(stats["checks"]["database_pool"]["tracking_discrepancy"], 1);

    // A PDB that allows no disruption blocks eviction with 429.
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": name}}}}))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    let counted = eventually(Duration::from_secs(10), || async {
        pdbs.get(&name)
            .await
            .ok()
            .and_then(|b| b.status)
            .is_some_and(|s| s.expected_pods == Some(2) && s.current_healthy == Some(2))
    })
    .await;
    assert!(counted, "PDB status follows pod readiness");
    let err = evictions.evict(&p_name, &EvictParams::default()).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 429 && s.reason == "TooManyRequests"),
        "{err:?}"
    );

    // Once the budget allows one disruption, eviction deletes the pod and it is replaced.
    pdbs.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"minAvailable": 1}})),
    )
    .await
    .unwrap();
    let allowed = eventually(Duration::from_secs(10), || async {
        pdbs.get(&name)
            .await
            .ok()
            .and_then(|b| b.status)
            .is_some_and(|s| s.disruptions_allowed == Some(1))
    })
    .await;
    assert!(allowed);
    evictions.evict(&p_name, &EvictParams::default()).await.unwrap();
    let replaced = eventually(Duration::from_secs(30), || async {
        let now = ready_pods(&pods, &name).await;
        now.len() == 2 && !names(&now).contains(&p_name)
    })
    .await;
    assert!(replaced, "evicted pod replaced");

    // Shutdown leaves no process and no backend behind.
    let pids = sandbox.pod_pids();
    assert_eq!(pids.len(), 2);
    sandbox.shutdown().await;
    for pid in pids {
        assert!(!process_exists(pid), "pod process {pid} outlived the sandbox");
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            backends(&db, &name).await.is_empty()
        })
        .await
    );
}
