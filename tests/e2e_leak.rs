//! End to end, the seeds' story: web, worker-odds and worker-settlement share one
//! database; one worker-odds pod of three keeps an untracked pool whose connections
//! never recycle. poolwarden finds it by LifetimeOverrun alone (no cooperation from
//! the app), evicts that pod and only that pod, records the evidence in status and
//! an Event, and the pod's backends leave pg_stat_activity.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{core::v1::Pod, events::v1::Event};
use kube::{ResourceExt, api::ListParams};
use poolwarden::policy::Measure;
use serde_json::Value;
use support::e2e::{Cluster, app_get, backends_of, database_url, eventually, pg};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_leak_is_found_by_lifetime_overrun_and_only_the_leaking_pod_is_evicted() {
    let cluster = Cluster::start("leak").await;
    let part_of = BTreeMap::from([("app.kubernetes.io/part-of", "sportsbook")]);
    cluster.create_deployment("web", &part_of, 1, &[]).await;
    cluster.create_deployment("worker-odds", &part_of, 3, &[]).await;
    cluster.create_deployment("worker-settlement", &part_of, 1, &[]).await;
    cluster.database_secret("pg", &database_url()).await;
    cluster.create_policy(POLICY).await;
    let controller = cluster.controller("solo", false);

    for (name, n) in [("web", 1), ("worker-odds", 3), ("worker-settlement", 1)] {
        let ok = eventually(Duration::from_secs(60), || rolled_with_lifetime(&cluster, name, n)).await;
        assert!(ok, "{name} runs with the policy's pool");
    }
    let mut before = Vec::new();
    for name in ["web", "worker-odds", "worker-settlement"] {
        before.extend(cluster.ready_pods(name).await.iter().map(|p| p.name_any()));
    }
    assert_eq!(before.len(), 5);

    // The forgotten second pool: connections the app's pool does not manage.
    let odds = cluster.ready_pods("worker-odds").await;
    let leaking = odds[1].clone();
    let leaking_name = leaking.name_any();
    assert!(app_get(&leaking, "/untracked?n=3").await.is_some());
    let db = pg().await;
    assert_eq!(backends_of(&db, &leaking_name).await, 3);

    // After maxLifetime + grace and sustainedFor, that pod is evicted.
    let evicted = eventually(Duration::from_secs(40), || async {
        cluster
            .api::<Pod>()
            .get_opt(&leaking_name)
            .await
            .ok()
            .flatten()
            .is_none()
    })
    .await;
    assert!(evicted, "the leaking pod is evicted");
    let gone = eventually(Duration::from_secs(15), || async {
        backends_of(&db, &leaking_name).await == 0
    })
    .await;
    assert!(gone, "its connections leave pg_stat_activity");

    // Only that pod.
    let still: Vec<String> = before.iter().filter(|n| **n != leaking_name).cloned().collect();
    for name in &still {
        assert!(
            cluster.api::<Pod>().get_opt(name).await.unwrap().is_some(),
            "{name} was not restarted"
        );
    }

    // The evidence, in status and in an Event.
    let status = cluster.policy("sportsbook").await.status.unwrap();
    assert_eq!(status.remediations.len(), 1, "{:?}", status.remediations);
    let record = &status.remediations[0];
    assert_eq!(record.pod.as_deref(), Some(leaking_name.as_str()));
    assert_eq!(record.workload, "worker-odds");
    assert_eq!(record.measure, Measure::LifetimeOverrun);
    assert_eq!(record.limit, 1);
    assert!(
        record.values.len() >= 2 && record.values.iter().all(|v| *v > 1),
        "{record:?}"
    );
    let row = status.workloads.iter().find(|w| w.name == "worker-odds").unwrap();
    assert_eq!(row.last_remediation.as_ref(), Some(record));

    let events = cluster.api::<Event>().list(&ListParams::default()).await.unwrap().items;
    let restarted = |kind: &str| -> Vec<&Event> {
        events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("Restarted"))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some(kind))
            .collect()
    };
    let on_policy = restarted("PoolPolicy");
    assert_eq!(on_policy.len(), 1, "{events:?}");
    let note = on_policy[0].note.clone().unwrap_or_default();
    assert!(
        note.contains(&leaking_name) && note.contains("LifetimeOverrun"),
        "{note}"
    );
    let on_pod = restarted("Pod");
    assert_eq!(on_pod.len(), 1, "{events:?}");
    assert_eq!(
        on_pod[0].regarding.as_ref().and_then(|r| r.name.clone()),
        Some(leaking_name.clone())
    );

    // The replacement runs, and the workload is back within the limit.
    let back = eventually(Duration::from_secs(30), || {
        rolled_with_lifetime(&cluster, "worker-odds", 3)
    })
    .await;
    assert!(back, "worker-odds has three ready pods again");
    if let Some(sandbox) = cluster.sandbox() {
        assert_eq!(sandbox.writes("pods/eviction"), 1, "exactly one eviction");
    }

    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}
