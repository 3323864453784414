//! End to end behind PgBouncer (Debian's 1.18, started by the test in front of the
//! test PostgreSQL), once in session and once in transaction mode: three workloads
//! of one pod each connect through the pooler and hold 1, 2 and 4 connections open.
//! pg_stat_activity sees only the pooler; poolwarden counts each pod's client
//! connections exactly as `SHOW CLIENTS` (read directly here) lists them, and finds
//! and evicts only the pod above the limit.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use poolwarden::policy::Measure;
use serde_json::Value;
use support::{
    e2e::{Cluster, app_get, database_url, eventually},
    pgbouncer::PgBouncer,
};

const POLICY: &str = "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {name: pooled}
spec:
  selector:
    matchLabels: {app.kubernetes.io/part-of: pooled}
  interval: 1s
  database:
    urlSecretRef: {name: pg, key: url}
    pooler: {type: PgBouncer, adminUrlSecretRef: {name: pgbouncer-stats, key: url}}
  pool: {minSize: 0, maxSize: 5, maxIdleSeconds: 2, maxLifetimeSeconds: 3}
  discrepancy: {measure: LifetimeOverrun, max: 2, sustainedFor: 3s, grace: 1s}
  remediation: {action: RestartPod, cooldown: 1h, maxRestartsPerHour: 2, minAvailableReplicas: 0}
";

fn upstream_port() -> u16 {
    poolwarden::observe::conninfo::ConnInfo::parse(&database_url())
        .ok()
        .and_then(|i| i.identity.endpoints.first().map(|e| e.port))
        .unwrap_or(5432)
}

async fn named_with_lifetime(cluster: &Cluster, name: &str) -> bool {
    let pods = cluster.ready_pods(name).await;
    let mut ok = pods.len() == 1;
    for p in &pods {
        let body = app_get(p, "/health/detailed").await.unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let config = &v["checks"]["database_pool"]["config"];
        ok &= config["max_lifetime_seconds"] == 3 && config["application_name"] == p.name_any().as_str();
    }
    ok
}

/// Per workload (one pod each), the total connections the policy's status reports.
async fn status_totals(cluster: &Cluster) -> BTreeMap<String, Option<u32>> {
    let status = cluster.policy("pooled").await.status.unwrap_or_default();
    status
        .workloads
        .iter()
        .map(|w| (w.name.clone(), w.connections.as_ref().map(|c| c.total)))
        .collect()
}

async fn only_the_leaking_pod_is_evicted_behind_pgbouncer(mode: &'static str) {
    let bouncer = PgBouncer::start(mode, upstream_port());
    let cluster = Cluster::start(&format!("pgb-{mode}")).await;
    let part_of = BTreeMap::from([("app.kubernetes.io/part-of", "pooled")]);
    let app_url = bouncer.app_url();
    for name in ["web", "worker", "odds"] {
        cluster
            .create_deployment(name, &part_of, 1, &[("DATABASE_URL", app_url.as_str())])
            .await;
    }
    cluster.database_secret("pg", &database_url()).await;
    cluster.database_secret("pgbouncer-stats", &bouncer.admin_url()).await;
    cluster.create_policy(POLICY).await;
    let controller = cluster.controller("solo", false);

    for name in ["web", "worker", "odds"] {
        let ok = eventually(Duration::from_secs(60), || named_with_lifetime(&cluster, name)).await;
        assert!(ok, "{name} runs with the policy's pool and PGAPPNAME");
    }
    // Connections the app's pool does not manage, through the pooler: 1, 2 and 4.
    let mut pods = BTreeMap::new();
    for (name, n) in [("web", 1), ("worker", 2), ("odds", 4)] {
        let pod = cluster.ready_pods(name).await.remove(0);
        assert!(app_get(&pod, &format!("/untracked?n={n}")).await.is_some());
        pods.insert(name, (pod.name_any(), n));
    }
    // PgBouncer's own list, read directly, is what the pods hold.
    for (name, (pod, n)) in &pods {
        assert_eq!(bouncer.clients_of(pod).await, *n as usize, "{mode}: {name}'s clients");
    }

    // poolwarden's per-pod counts are exactly SHOW CLIENTS' (each workload has one pod).
    let exact = eventually(Duration::from_secs(30), || async {
        let totals = status_totals(&cluster).await;
        let mut ok = true;
        for (name, (pod, _)) in &pods {
            let direct = bouncer.clients_of(pod).await as u32;
            ok &= totals.get(*name) == Some(&Some(direct));
        }
        ok
    })
    .await;
    assert!(
        exact,
        "{mode}: status {:?} vs SHOW CLIENTS {:?}",
        status_totals(&cluster).await,
        bouncer.show_clients().await
    );

    // odds' pod holds 4 connections past maxLifetime + grace (> max 2): it and only it goes.
    let (leaking, _) = pods["odds"].clone();
    let evicted = eventually(Duration::from_secs(40), || async {
        cluster.api::<Pod>().get_opt(&leaking).await.ok().flatten().is_none()
    })
    .await;
    assert!(evicted, "{mode}: the leaking pod {leaking} is evicted");
    let gone = eventually(Duration::from_secs(15), || async {
        bouncer.clients_of(&leaking).await == 0
    })
    .await;
    assert!(gone, "{mode}: its client connections leave SHOW CLIENTS");
    for name in ["web", "worker"] {
        let (pod, _) = &pods[name];
        assert!(
            cluster.api::<Pod>().get_opt(pod).await.unwrap().is_some(),
            "{mode}: {pod} was not restarted"
        );
    }
    let status = cluster.policy("pooled").await.status.unwrap();
    assert_eq!(status.remediations.len(), 1, "{:?}", status.remediations);
    let record = &status.remediations[0];
    assert_eq!(record.pod.as_deref(), Some(leaking.as_str()));
    assert_eq!(record.measure, Measure::LifetimeOverrun);
    assert!(record.values.iter().all(|v| *v > 2), "{record:?}");
    if let Some(sandbox) = cluster.sandbox() {
        assert_eq!(sandbox.writes("pods/eviction"), 1, "exactly one eviction");
    }

    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_counts_each_pods_clients_exactly_and_evicts_only_the_leaking_pod() {
    only_the_leaking_pod_is_evicted_behind_pgbouncer("session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_counts_each_pods_clients_exactly_and_evicts_only_the_leaking_pod() {
    only_the_leaking_pod_is_evicted_behind_pgbouncer("transaction").await;
}
