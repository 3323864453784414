//! The Helm chart installed as a team would, on the real control plane
//! (`make test-cluster`): Helm's Go SDK installs charts/poolwarden with two
//! replicas of the image `make image` built, which the node agent runs under
//! runc with the pod's ServiceAccount token, its probes and in-cluster config.
//! Then the seeds' leak story runs against it — one leader, the pool env set,
//! the leaking pod restarted, `/metrics` served through the chart's Service —
//! the leader's container is killed and the other replica takes over (the
//! failover time is printed), `helm upgrade` rolls the controller without two
//! leaders at once, and `helm uninstall` leaves the CRD and the policies.
//!
//! Skipped, with a message, unless `POOLWARDEN_E2E_KUBECONFIG` names a real
//! cluster; there it needs `POOLWARDEN_E2E_CONTROLLER_IMAGE` (the image name the
//! node runs, e.g. `poolwarden:dev`) and `POOLWARDEN_E2E_CLUSTER_DIR` (the data
//! directory of `poolwarden-cluster`: the node's runc state and the pod logs),
//! which tests/cluster/test-cluster.sh sets.

mod support;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{Pod, Service, ServiceAccount},
        events::v1::Event,
        rbac::v1::{Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{Api, ResourceExt, api::ListParams};
use poolwarden::policy::{Measure, PoolPolicy};
use poolwarden_sandbox::cluster::service::endpoints;
use serde_json::{Value, json};
use support::e2e::{Cluster, app_get, backends_of, eventually, http_get, pg};

const RELEASE: &str = "poolwarden";
const SELECTOR: &str = "app.kubernetes.io/name=poolwarden,app.kubernetes.io/instance=poolwarden";
const LEASE: &str = "poolwarden-leader";
const LEASE_SECONDS: u64 = 15;

const POLICY: &str = "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {name: sportsbook}
spec:
  selector:
    matchLabels: {app.kubernetes.io/part-of: sportsbook}
  interval: 1s
  database: {urlSecretRef: {name: pg, key: url}}
  pool: {minSize: 0, maxSize: 5, maxIdleSeconds: 2, maxLifetimeSeconds: 3}
  discrepancy: {measure: LifetimeOverrun, max: 1, sustainedFor: 3s, grace: 1s}
  remediation: {action: RestartPod, cooldown: 1h, maxRestartsPerHour: 2, minAvailableReplicas: 1}
";

struct Setup {
    image: String,
    runc_root: PathBuf,
    pod_logs: PathBuf,
}

fn setup() -> Option<Setup> {
    std::env::var_os("POOLWARDEN_E2E_KUBECONFIG").or_else(|| {
        eprintln!("skipping: a real-control-plane test (set POOLWARDEN_E2E_KUBECONFIG; `make test-cluster`)");
        None
    })?;
    let need = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: the chart test needs the node agent to run the controller image (`make test-cluster` sets it)")
        })
    };
    let dir = PathBuf::from(need("POOLWARDEN_E2E_CLUSTER_DIR"));
    Some(Setup {
        image: need("POOLWARDEN_E2E_CONTROLLER_IMAGE"),
        runc_root: dir.join("node/runc"),
        pod_logs: dir.join("pod-logs"),
    })
}

fn packaging_python() -> PathBuf {
    let venv = std::env::var_os("POOLWARDEN_PACKAGING_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/poolwarden-packaging-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no {} (run .ci/check-packaging once: it installs the Helm SDK)",
        python.display()
    );
    python
}

/// `helm install/upgrade/uninstall` through Helm's Go SDK (tests/cluster/helm.py).
fn helm(cluster: &Cluster, action: &str, values: Option<&Value>) -> Value {
    let mut cmd = Command::new(packaging_python());
    cmd.arg("tests/cluster/helm.py")
        .arg(action)
        .arg(&cluster.kubeconfig)
        .arg(&cluster.namespace)
        .arg(RELEASE);
    if let Some(v) = values {
        cmd.arg(v.to_string());
    }
    let out = cmd.output().expect("tests/cluster/helm.py");
    assert!(
        out.status.success(),
        "helm {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("helm.py's JSON line")
}

fn values(setup: &Setup, ns: &str, log_level: &str) -> Value {
    let (repository, tag) = setup
        .image
        .rsplit_once(':')
        .expect("POOLWARDEN_E2E_CONTROLLER_IMAGE is NAME:TAG");
    json!({
        "replicaCount": 2,
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        // Only this namespace: other tests' policies run on the same cluster at once.
        "watchNamespace": ns,
        "databaseSecrets": [{"namespace": ns, "names": ["pg"]}],
        "leaderElection": {"leaseDurationSeconds": LEASE_SECONDS},
        "logFormat": "text",
        "logLevel": log_level,
    })
}

/// The controller's pods, not being deleted.
async fn controller_pods(cluster: &Cluster) -> Vec<Pod> {
    let mut pods: Vec<Pod> = cluster
        .api::<Pod>()
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    pods.sort_by_key(|p| p.name_any());
    pods
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(p: &Pod) -> String {
    p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()
}

fn container_status(p: &Pod) -> Value {
    serde_json::to_value(p).unwrap()["status"]["containerStatuses"][0].clone()
}

async fn holder(cluster: &Cluster) -> Option<String> {
    cluster
        .api::<Lease>()
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// The value of `poolwarden_leader` a pod reports on its metrics port.
async fn leader_gauge(p: &Pod) -> Option<f64> {
    let (code, body) = http_get(&pod_ip(p), 8080, "/metrics").await?;
    (code == 200).then_some(())?;
    body.lines()
        .find_map(|l| l.strip_prefix("poolwarden_leader ").and_then(|v| v.trim().parse().ok()))
}

/// The last lines of every controller pod's log (for a failed wait's message).
fn controller_logs(setup: &Setup, ns: &str) -> String {
    let mut out = String::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&setup.pod_logs)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let name = f.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if name.starts_with(&format!("{ns}_poolwarden-")) {
            out.push_str(&format!("== {name}\n"));
            for line in support::waits::tail_file(&f, 12) {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out
}

fn runc(setup: &Setup, args: &[&str]) -> (bool, String) {
    let out = Command::new("runc")
        .arg("--root")
        .arg(&setup.runc_root)
        .args(args)
        .output()
        .expect("runc");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The container's runc id (`runc://ID` in the pod's status).
fn container_id(p: &Pod) -> String {
    let id = container_status(p)["containerID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    id.strip_prefix("runc://")
        .unwrap_or_else(|| panic!("{} does not run under runc: containerID {id:?}", p.name_any()))
        .to_string()
}

/// The user ids, capabilities and no_new_privs of the container's process, from /proc.
fn process_facts(setup: &Setup, p: &Pod) -> BTreeMap<String, String> {
    let (ok, state) = runc(setup, &["state", &container_id(p)]);
    assert!(ok, "runc state: {state}");
    let pid = serde_json::from_str::<Value>(&state).unwrap()["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| matches!(*k, "Uid" | "Gid" | "CapEff" | "CapBnd" | "NoNewPrivs"))
        .map(|(k, v)| (k.to_string(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect()
}

async fn rolled_with_lifetime(cluster: &Cluster, name: &str, replicas: usize) -> bool {
    let pods = cluster.ready_pods(name).await;
    let mut ok = pods.len() == replicas;
    for p in &pods {
        let body = app_get(p, "/health/detailed").await.unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        ok &= v["checks"]["database_pool"]["config"]["max_lifetime_seconds"] == 3;
    }
    ok
}

/// The chart's metrics Service resolved to its endpoints as the EndpointSlice
/// controller would (the API server refuses the node's loopback pod addresses
/// in a slice: poolwarden_sandbox::cluster::service).
async fn service_endpoints(cluster: &Cluster) -> Vec<(String, u16)> {
    let Ok(svc) = cluster.api::<Service>().get("poolwarden-metrics").await else {
        return Vec::new();
    };
    let pods: Vec<Value> = cluster
        .api::<Pod>()
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .iter()
        .map(|p| serde_json::to_value(p).unwrap())
        .collect();
    endpoints(&serde_json::to_value(&svc).unwrap(), "metrics", &pods)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_the_image_elects_one_leader_fixes_the_leak_fails_over_upgrades_and_uninstalls() {
    let Some(setup) = setup() else { return };
    let cluster = Cluster::start("chart").await;
    let ns = cluster.namespace.clone();
    let part_of = BTreeMap::from([("app.kubernetes.io/part-of", "sportsbook")]);
    cluster.create_deployment("web", &part_of, 1, &[]).await;
    cluster.create_deployment("worker-odds", &part_of, 3, &[]).await;
    cluster.create_deployment("worker-settlement", &part_of, 1, &[]).await;
    cluster.database_secret("pg", &support::e2e::database_url()).await;
    cluster.create_policy(POLICY).await;

    // The node refuses what a kubelet refuses, and says why in the pod's status.
    let root: Pod = serde_json::from_value(json!({
        "metadata": {"name": "as-root"},
        "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 0},
                 "containers": [{"name": "c", "image": setup.image}]},
    }))
    .unwrap();
    cluster
        .api::<Pod>()
        .create(&Default::default(), &root)
        .await
        .expect("create as-root");
    let refused = eventually(Duration::from_secs(30), || async {
        let p = cluster.api::<Pod>().get("as-root").await.ok();
        let waiting = p.as_ref().map(|p| container_status(p)["state"]["waiting"].clone());
        waiting.is_some_and(|w| {
            w["reason"] == "CreateContainerConfigError"
                && w["message"].as_str().is_some_and(|m| m.contains("runAsNonRoot"))
        })
    })
    .await;
    assert!(
        refused,
        "a runAsNonRoot pod of user 0 is refused: {:?}",
        cluster.api::<Pod>().get("as-root").await.ok().and_then(|p| p.status)
    );
    cluster
        .api::<Pod>()
        .delete("as-root", &Default::default())
        .await
        .expect("delete as-root");

    // helm install, two replicas of the built image.
    let release = helm(&cluster, "install", Some(&values(&setup, &ns, "info")));
    assert_eq!(release["status"], "deployed", "{release}");
    assert_eq!(release["revision"], 1, "{release}");
    let installed = Instant::now();
    let two_ready = eventually(Duration::from_secs(120), || async {
        let pods = controller_pods(&cluster).await;
        pods.len() == 2 && pods.iter().all(is_ready)
    })
    .await;
    assert!(
        two_ready,
        "two controller pods Ready: {:#?}",
        controller_pods(&cluster).await
    );
    let pods = controller_pods(&cluster).await;
    eprintln!(
        "chart: 2 controller pods Ready {:.1} s after helm install: {:?}",
        installed.elapsed().as_secs_f64(),
        pods.iter()
            .map(|p| (p.name_any(), pod_ip(p), container_id(p)))
            .collect::<Vec<_>>()
    );
    // The image's entrypoint runs as the chart's user, with no capabilities and no_new_privs.
    for p in &pods {
        let facts = process_facts(&setup, p);
        assert_eq!(facts["Uid"], "65532 65532 65532 65532", "{facts:?}");
        assert_eq!(facts["Gid"], "65532 65532 65532 65532", "{facts:?}");
        assert_eq!(facts["CapEff"], "0000000000000000", "{facts:?}");
        assert_eq!(facts["CapBnd"], "0000000000000000", "{facts:?}");
        assert_eq!(facts["NoNewPrivs"], "1", "{facts:?}");
    }

    // One leader: the Lease names one of the pods, and only that pod's gauge is 1.
    let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    let one_leader = eventually(Duration::from_secs(60), || async {
        let h = holder(&cluster).await;
        let mut gauges = Vec::new();
        for p in &controller_pods(&cluster).await {
            gauges.push((p.name_any(), leader_gauge(p).await));
        }
        let leading: Vec<&String> = gauges.iter().filter(|(_, g)| *g == Some(1.0)).map(|(n, _)| n).collect();
        h.is_some_and(|h| names.contains(&h) && leading == [&h]) && gauges.iter().all(|(_, g)| g.is_some())
    })
    .await;
    assert!(
        one_leader,
        "exactly one leader, the Lease's holder\n{}",
        controller_logs(&setup, &ns)
    );
    let leader = holder(&cluster).await.unwrap();

    // The leak story, with the controller in the chart's pods.
    for (name, n) in [("web", 1), ("worker-odds", 3), ("worker-settlement", 1)] {
        let ok = eventually(Duration::from_secs(90), || rolled_with_lifetime(&cluster, name, n)).await;
        assert!(ok, "{name} runs with the policy's pool env");
    }
    let mut before = Vec::new();
    for name in ["web", "worker-odds", "worker-settlement"] {
        before.extend(cluster.ready_pods(name).await.iter().map(|p| p.name_any()));
    }
    assert_eq!(before.len(), 5);
    let odds = cluster.ready_pods("worker-odds").await;
    let leaking_name = odds[1].name_any();
    assert!(app_get(&odds[1], "/untracked?n=3").await.is_some());
    let db = pg().await;
    assert_eq!(backends_of(&db, &leaking_name).await, 3);
    let evicted = eventually(Duration::from_secs(60), || async {
        cluster
            .api::<Pod>()
            .get_opt(&leaking_name)
            .await
            .ok()
            .flatten()
            .is_none()
    })
    .await;
    assert!(evicted, "the leaking pod is restarted");
    assert!(
        eventually(Duration::from_secs(15), || async {
            backends_of(&db, &leaking_name).await == 0
        })
        .await,
        "its connections leave pg_stat_activity"
    );
    for name in before.iter().filter(|n| **n != leaking_name) {
        assert!(
            cluster.api::<Pod>().get_opt(name).await.unwrap().is_some(),
            "{name} was not restarted"
        );
    }
    let status = cluster.policy("sportsbook").await.status.unwrap();
    assert_eq!(status.remediations.len(), 1, "{:?}", status.remediations);
    assert_eq!(status.remediations[0].pod.as_deref(), Some(leaking_name.as_str()));
    assert_eq!(status.remediations[0].measure, Measure::LifetimeOverrun);
    let events = cluster.api::<Event>().list(&ListParams::default()).await.unwrap().items;
    let restarted: Vec<&Event> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Restarted"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(leaking_name.as_str()))
        .collect();
    assert_eq!(restarted.len(), 1, "{events:?}");
    assert!(
        eventually(Duration::from_secs(60), || rolled_with_lifetime(
            &cluster,
            "worker-odds",
            3
        ))
        .await,
        "worker-odds has three ready pods again"
    );

    // /metrics through the chart's Service: both replicas are its endpoints;
    // the leader's counts the restart.
    let by_ip: BTreeMap<String, String> = pods.iter().map(|p| (pod_ip(p), p.name_any())).collect();
    let endpoints_ok = eventually(Duration::from_secs(60), || async {
        service_endpoints(&cluster).await.len() == 2
    })
    .await;
    assert!(
        endpoints_ok,
        "the Service's endpoints: {:?}",
        service_endpoints(&cluster).await
    );
    let mut leader_restarts = None;
    for (ip, port) in service_endpoints(&cluster).await {
        assert_eq!(port, 8080);
        let (code, body) = http_get(&ip, port, "/metrics").await.expect("GET /metrics");
        assert_eq!(code, 200);
        assert!(body.contains("poolwarden_leader "), "{body}");
        if by_ip.get(&ip) == Some(&leader) {
            leader_restarts = body
                .lines()
                .filter(|l| l.starts_with("poolwarden_restarts_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .reduce(|a, b| a + b);
        }
    }
    assert_eq!(
        leader_restarts,
        Some(1.0),
        "the leader's restart counter, through the Service"
    );

    // The leader's container crashes: the node restarts it in the same pod,
    // whose name is its identity in the Lease, so it keeps leading.
    let leader_pod = controller_pods(&cluster)
        .await
        .into_iter()
        .find(|p| p.name_any() == leader)
        .unwrap();
    let (ok, out) = runc(&setup, &["kill", &container_id(&leader_pod), "KILL"]);
    assert!(ok, "runc kill: {out}");
    let crashed = Instant::now();
    let leads_again = eventually(Duration::from_secs(60), || async {
        let pods = controller_pods(&cluster).await;
        let Some(p) = pods.iter().find(|p| p.name_any() == leader) else {
            return false;
        };
        container_status(p)["restartCount"].as_i64() >= Some(1) && is_ready(p) && leader_gauge(p).await == Some(1.0)
    })
    .await;
    assert!(
        leads_again,
        "the crashed container is restarted in its pod and leads again"
    );
    assert_eq!(holder(&cluster).await.as_deref(), Some(leader.as_str()));
    eprintln!(
        "chart: the leader's container killed (SIGKILL), restarted in its pod and leading again after {:.1} s",
        crashed.elapsed().as_secs_f64()
    );

    // The leader's pod dies (its container killed, the pod force-deleted: the
    // lease is not released): the other replica takes over once it expires.
    let leader_pod = controller_pods(&cluster)
        .await
        .into_iter()
        .find(|p| p.name_any() == leader)
        .unwrap();
    let (ok, out) = runc(&setup, &["kill", &container_id(&leader_pod), "KILL"]);
    assert!(ok, "runc kill: {out}");
    let killed = Instant::now();
    let force = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    cluster
        .api::<Pod>()
        .delete(&leader, &force)
        .await
        .expect("force-deleting the leader's pod");
    // Either the other replica or the ReplicaSet's replacement, whichever
    // tries first once the lease has expired.
    let took_over = eventually(Duration::from_secs(4 * LEASE_SECONDS), || async {
        let live: Vec<String> = controller_pods(&cluster).await.iter().map(|p| p.name_any()).collect();
        holder(&cluster).await.is_some_and(|h| h != leader && live.contains(&h))
    })
    .await;
    let failover = killed.elapsed();
    assert!(
        took_over,
        "another replica takes over from {leader}; the Lease: {:?}\n{}",
        cluster
            .api::<Lease>()
            .get_opt(LEASE)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec),
        controller_logs(&setup, &ns)
    );
    let new_leader = holder(&cluster).await.unwrap();
    eprintln!(
        "chart: failover after the leader's pod was killed: {:.1} s to {new_leader} (lease duration {LEASE_SECONDS} s)",
        failover.as_secs_f64()
    );
    let replaced = eventually(Duration::from_secs(60), || async {
        let pods = controller_pods(&cluster).await;
        pods.len() == 2 && pods.iter().all(is_ready) && !pods.iter().any(|p| p.name_any() == leader)
    })
    .await;
    assert!(replaced, "the ReplicaSet replaced the killed pod");
    let names: Vec<String> = controller_pods(&cluster).await.iter().map(|p| p.name_any()).collect();
    for p in controller_pods(&cluster)
        .await
        .iter()
        .filter(|p| p.name_any() != new_leader)
    {
        assert_eq!(
            leader_gauge(p).await,
            Some(0.0),
            "the replacement {} follows",
            p.name_any()
        );
    }

    // helm upgrade: a changed value rolls the Deployment; sample the Lease and
    // every pod's leader gauge until the rollout is done: never two leaders.
    let release = helm(&cluster, "upgrade", Some(&values(&setup, &ns, "info,poolwarden=debug")));
    assert_eq!(release["revision"], 2, "{release}");
    let started = Instant::now();
    let mut holders: Vec<String> = Vec::new();
    let mut most_leaders = 0;
    let deadline = support::waits::scaled(Duration::from_secs(180));
    let rolled = loop {
        let current = controller_pods(&cluster).await;
        let mut leading = Vec::new();
        for p in &current {
            if leader_gauge(p).await == Some(1.0) {
                leading.push(p);
            }
        }
        // The pods are read one after the other: a handover between two reads
        // looks like two leaders. Two that are leaders read again in the other
        // order too were leaders at the same time.
        if leading.len() > 1 {
            let mut again = Vec::new();
            for p in leading.iter().rev() {
                if leader_gauge(p).await == Some(1.0) {
                    again.push(*p);
                }
            }
            leading = again;
        }
        most_leaders = most_leaders.max(leading.len());
        if let Some(h) = holder(&cluster).await
            && holders.last() != Some(&h)
        {
            holders.push(h);
        }
        let new: Vec<&Pod> = current.iter().filter(|p| !names.contains(&p.name_any())).collect();
        let all_pods = cluster
            .api::<Pod>()
            .list(&ListParams::default().labels(SELECTOR))
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        let done = new.len() == 2 && new.iter().all(|p| is_ready(p)) && all_pods == 2;
        if done && holders.last().is_some_and(|h| new.iter().any(|p| p.name_any() == *h)) {
            break true;
        }
        if started.elapsed() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        rolled,
        "the upgrade rolled both pods; Lease holders seen: {holders:?}\n{}",
        controller_logs(&setup, &ns)
    );
    assert_eq!(most_leaders, 1, "pods reporting leader=1 at once during the rollout");
    eprintln!(
        "chart: helm upgrade rolled in {:.1} s; Lease holders in order: {holders:?}; at most {most_leaders} leader at a time",
        started.elapsed().as_secs_f64()
    );
    let template = serde_json::to_value(cluster.api::<Deployment>().get("poolwarden").await.unwrap()).unwrap();
    let env = &template["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "RUST_LOG" && e["value"] == "info,poolwarden=debug"),
        "{env}"
    );

    // helm uninstall: the chart's objects go; the CRD, the policy, the env it
    // wrote and the Lease (the controller's, not the chart's) stay.
    let out = helm(&cluster, "uninstall", None);
    eprintln!("chart: helm uninstall: {out}");
    let gone = eventually(Duration::from_secs(90), || async {
        controller_pods(&cluster).await.is_empty()
            && cluster
                .api::<Pod>()
                .list(&ListParams::default().labels(SELECTOR))
                .await
                .map(|l| l.items.is_empty())
                .unwrap_or(false)
    })
    .await;
    assert!(gone, "the controller pods are gone");
    assert!(
        cluster
            .api::<Deployment>()
            .get_opt("poolwarden")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        cluster
            .api::<Service>()
            .get_opt("poolwarden-metrics")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        cluster
            .api::<ServiceAccount>()
            .get_opt("poolwarden")
            .await
            .unwrap()
            .is_none()
    );
    let roles = cluster.api::<Role>().list(&ListParams::default()).await.unwrap().items;
    assert!(
        roles.is_empty(),
        "{:?}",
        roles.iter().map(|r| r.name_any()).collect::<Vec<_>>()
    );
    let bindings = cluster
        .api::<RoleBinding>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        bindings.is_empty(),
        "{:?}",
        bindings.iter().map(|r| r.name_any()).collect::<Vec<_>>()
    );
    assert!(
        Api::<CustomResourceDefinition>::all(cluster.client.clone())
            .get_opt("poolpolicies.poolwarden.io")
            .await
            .unwrap()
            .is_some(),
        "the CRD stays"
    );
    assert!(
        cluster
            .api::<PoolPolicy>()
            .get_opt("sportsbook")
            .await
            .unwrap()
            .is_some(),
        "the policy stays"
    );
    let odds_env = cluster.template_env("Deployment", "worker-odds").await;
    assert!(
        odds_env.contains_key("DB_POOL_MAX"),
        "the env poolwarden wrote stays: {odds_env:?}"
    );
    assert!(
        cluster.api::<Lease>().get_opt(LEASE).await.unwrap().is_some(),
        "the Lease stays"
    );
}
