//! End to end: a policy sets the pool env on every selected Deployment and
//! StatefulSet and leaves the others alone; the pods roll and the new processes
//! run with the new settings; then nothing more is written; status, /readyz and
//! /metrics report it.

mod support;

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};
use support::e2e::{Cluster, app_get, database_url, eventually};

const POLICY: &str = "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {name: pools}
spec:
  selector:
    matchLabels: {team: sportsbook}
    kinds: [Deployment, StatefulSet]
  interval: 1s
  database: {urlSecretRef: {name: pg, key: url}}
  pool: {minSize: 0, maxSize: 7, maxIdleSeconds: 30, maxLifetimeSeconds: 600}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_sets_the_pool_env_of_selected_workloads_only_and_then_writes_nothing() {
    let cluster = Cluster::start("env").await;
    let team = BTreeMap::from([("team", "sportsbook")]);
    let other = BTreeMap::from([("team", "accounts")]);
    // The pool env is not declared in the manifests (as it must not be in Git): a
    // value declared by another manager is that manager's, and poolwarden does not
    // take it by force (tests/e2e_conflict.rs).
    cluster.create_deployment("web", &team, 2, &[]).await;
    cluster.create_statefulset("odds", &team, 1, &[]).await;
    cluster
        .create_deployment("ledger", &other, 1, &[("DB_POOL_MAX", "5")])
        .await;
    cluster.database_secret("pg", &database_url()).await;
    cluster.create_policy(POLICY).await;
    let controller = cluster.controller("solo", false);

    let want = |env: &BTreeMap<String, Value>| {
        env.get("DB_POOL_MIN") == Some(&json!("0"))
            && env.get("DB_POOL_MAX") == Some(&json!("7"))
            && env.get("DB_POOL_MAX_IDLE") == Some(&json!("30"))
            && env.get("DB_POOL_MAX_LIFETIME") == Some(&json!("600"))
            // The API server defaults a fieldRef's apiVersion (the sandbox too).
            && env.get("PGAPPNAME") == Some(&json!({"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}))
    };
    for (kind, name) in [("Deployment", "web"), ("StatefulSet", "odds")] {
        let ok = eventually(Duration::from_secs(30), || async {
            want(&cluster.template_env(kind, name).await)
        })
        .await;
        assert!(ok, "{kind}/{name} env: {:?}", cluster.template_env(kind, name).await);
    }
    let ledger = cluster.template_env("Deployment", "ledger").await;
    assert_eq!(
        ledger.get("DB_POOL_MAX"),
        Some(&json!("5")),
        "unselected workload untouched"
    );
    assert!(!ledger.contains_key("PGAPPNAME"));

    // The pods roll and the new processes run with the policy's pool.
    let rolled = eventually(Duration::from_secs(60), || async {
        let pods = cluster.ready_pods("web").await;
        let mut all = pods.len() == 2;
        for p in &pods {
            let body = app_get(p, "/health/detailed").await.unwrap_or_default();
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            all &= v["checks"]["database_pool"]["config"]["max_size"] == 7
                && v["checks"]["database_pool"]["config"]["max_idle_seconds"] == 30;
        }
        all
    })
    .await;
    assert!(rolled, "web pods run with maxSize 7 and maxIdle 30");

    let ready = eventually(Duration::from_secs(60), || async {
        cluster.condition("pools", "Ready").await.is_some_and(|c| c.0 == "True")
    })
    .await;
    assert!(ready, "Ready: {:?}", cluster.condition("pools", "Ready").await);
    let status = cluster.policy("pools").await.status.unwrap();
    assert_eq!(status.workload_count, 2);
    assert!(status.workloads.iter().all(|w| w.env_in_sync), "{:?}", status.workloads);
    assert_eq!(
        cluster.condition("pools", "DatabaseReachable").await.map(|c| c.0),
        Some("True".into())
    );

    // Steady state: passes every second, and no workload write.
    if let Some(sandbox) = cluster.sandbox() {
        let before = (sandbox.writes("deployments"), sandbox.writes("statefulsets"));
        tokio::time::sleep(Duration::from_secs(4)).await;
        let after = (sandbox.writes("deployments"), sandbox.writes("statefulsets"));
        assert_eq!(before, after, "no workload writes in steady state");
    }

    // Telemetry.
    // Readiness is set once every cache has listed, apart from the passes: wait for it.
    let ready = eventually(Duration::from_secs(20), || async {
        controller.get("/readyz").await.is_some_and(|(code, _)| code == 200)
    })
    .await;
    assert!(ready, "/readyz: {:?}", controller.get("/readyz").await);
    let ns = &cluster.namespace;
    // Every workload in sync: the policy's total says so (a workload in sync with no
    // discrepancy has no per-workload series).
    let out_of_sync = controller
        .metric(&format!(
            "poolwarden_policy_workloads_env_out_of_sync{{namespace=\"{ns}\",policy=\"pools\"}}"
        ))
        .await;
    assert_eq!(out_of_sync, Some(0.0));
    let (_, metrics) = controller.get("/metrics").await.unwrap();
    assert!(metrics.contains("poolwarden_policy_connections{"), "{metrics}");
    assert!(
        metrics.contains("poolwarden_reconcile_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("poolwarden_database_sample_duration_seconds_count"),
        "{metrics}"
    );

    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}
