//! End to end, `RolloutRestart`: a leaking pod makes poolwarden stamp
//! `poolwarden.io/restartedAt` on the workload's template, every pod is replaced,
//! and the record names the workload (no single pod).

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use support::e2e::{Cluster, app_get, database_url, eventually};

const POLICY: &str = "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {name: pools}
spec:
  selector: {matchLabels: {team: odds}}
  interval: 1s
  database: {urlSecretRef: {name: pg, key: url}}
  pool: {minSize: 0, maxSize: 5, maxIdleSeconds: 2, maxLifetimeSeconds: 3}
  discrepancy: {measure: LifetimeOverrun, max: 1, sustainedFor: 2s, grace: 1s}
  remediation: {action: RolloutRestart, cooldown: 1h, maxRestartsPerHour: 2, minAvailableReplicas: 1}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_under_rollout_restart_replaces_every_pod_of_the_workload() {
    let cluster = Cluster::start("rollout").await;
    cluster.database_secret("pg", &database_url()).await;
    let env = [
        ("PGAPPNAME", "fieldRef:metadata.name"),
        ("DB_POOL_MIN", "0"),
        ("DB_POOL_MAX", "5"),
        ("DB_POOL_MAX_IDLE", "2"),
        ("DB_POOL_MAX_LIFETIME", "3"),
    ];
    cluster
        .create_deployment("odds", &BTreeMap::from([("team", "odds")]), 2, &env)
        .await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            cluster.ready_pods("odds").await.len() == 2
        })
        .await
    );
    let before: Vec<String> = cluster.ready_pods("odds").await.iter().map(|p| p.name_any()).collect();
    let leaking = cluster.ready_pods("odds").await.remove(0);
    assert!(app_get(&leaking, "/untracked?n=3").await.is_some());
    cluster.create_policy(POLICY).await;
    let controller = cluster.controller("solo", false);

    let stamped = eventually(Duration::from_secs(40), || async {
        let d = cluster.api::<Deployment>().get("odds").await.unwrap();
        d.spec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .is_some_and(|a| a.contains_key("poolwarden.io/restartedAt"))
    })
    .await;
    assert!(stamped, "the template carries poolwarden.io/restartedAt");
    let replaced = eventually(Duration::from_secs(60), || async {
        let now: Vec<String> = cluster.ready_pods("odds").await.iter().map(|p| p.name_any()).collect();
        now.len() == 2 && now.iter().all(|n| !before.contains(n))
    })
    .await;
    assert!(replaced, "every pod replaced");
    let status = cluster.policy("pools").await.status.unwrap();
    assert_eq!(status.remediations.len(), 1);
    assert_eq!(status.remediations[0].pod, None);
    assert_eq!(status.remediations[0].workload, "odds");
    if cluster.sandbox.is_none() {
        // The real Deployment controller rolls through a new ReplicaSet (the
        // sandbox owns pods from the Deployment directly).
        let sets = cluster
            .api::<k8s_openapi::api::apps::v1::ReplicaSet>()
            .list(&Default::default())
            .await
            .unwrap();
        let of_odds = sets.items.iter().filter(|r| r.name_any().starts_with("odds-")).count();
        assert!(of_odds >= 2, "a new ReplicaSet for the restart, found {of_odds}");
    }

    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}
