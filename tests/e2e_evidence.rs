//! End to end, issue 19: leaky-app leaks through each of the seeds' three paths, and
//! the evidence poolwarden records tells them apart — (1) an unconfigured second pool:
//! idle backends opened at start-up, as many as the pool's size; (2) an undisposed
//! engine per health check: one more backend per check, `SELECT $1`; (3) a borrowed
//! connection never returned: `idle in transaction`, the route's statement. The
//! second pool leaks again in every replacement, so the recurrence guard stops after
//! `recurrence.count` restarts with LeakRecurring=True, and a new release resumes it.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, events::v1::Event};
use kube::api::{ListParams, Patch, PatchParams};
use poolwarden::policy::{PodEvidence, RemediationRecord};
use support::e2e::{Cluster, app_get, database_url, eventually};

const POLICY: &str = "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {name: evidence}
spec:
  selector:
    matchLabels: {app.kubernetes.io/part-of: evidence}
  interval: 1s
  database: {urlSecretRef: {name: pg, key: url}}
  pool: {minSize: 0, maxSize: 5, maxIdleSeconds: 2, maxLifetimeSeconds: 3}
  discrepancy: {measure: LifetimeOverrun, max: 1, sustainedFor: 3s, grace: 1s}
  remediation:
    action: RestartPod
    cooldown: 1s
    maxRestartsPerHour: 30
    minAvailableReplicas: 0
    recurrence: {count: 2, within: 1h}
";

async fn records(cluster: &Cluster, workload: &str) -> Vec<RemediationRecord> {
    let status = cluster.policy("evidence").await.status.unwrap_or_default();
    let mut r: Vec<RemediationRecord> = status
        .remediations
        .into_iter()
        .filter(|r| r.workload == workload)
        .collect();
    r.sort_by_key(|x| x.at);
    r
}

async fn first_evidence(cluster: &Cluster, workload: &str) -> Option<PodEvidence> {
    records(cluster, workload)
        .await
        .first()
        .and_then(|r| r.evidence.clone())
}

fn groups(e: &PodEvidence) -> Vec<(u32, &str, &str)> {
    e.groups
        .iter()
        .map(|g| {
            (
                g.count,
                g.state.as_deref().unwrap_or(""),
                g.statement.as_deref().unwrap_or(""),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_tells_the_three_leaks_apart_and_the_guard_stops_a_leak_that_always_comes_back() {
    let cluster = Cluster::start("evidence").await;
    let part_of = BTreeMap::from([("app.kubernetes.io/part-of", "evidence")]);
    cluster
        .create_deployment("second-pool", &part_of, 1, &[("LEAKY_SECOND_POOL", "3")])
        .await;
    cluster.create_deployment("health-engine", &part_of, 1, &[]).await;
    cluster.create_deployment("borrowed", &part_of, 1, &[]).await;
    cluster.database_secret("pg", &database_url()).await;
    cluster.create_policy(POLICY).await;
    let controller = cluster.controller("solo", false);

    // Paths 2 and 3 leak when asked, once each pod runs with the policy's pool.
    for name in ["health-engine", "borrowed"] {
        let ready = eventually(Duration::from_secs(60), || async {
            let pods = cluster.ready_pods(name).await;
            let Some(pod) = pods.first().filter(|_| pods.len() == 1) else {
                return false;
            };
            let body = app_get(pod, "/health/detailed").await.unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            v["checks"]["database_pool"]["config"]["max_lifetime_seconds"] == 3
        })
        .await;
        assert!(ready, "{name} runs");
    }
    let checks = eventually(Duration::from_secs(60), || async {
        let pods = cluster.ready_pods("health-engine").await;
        let Some(pod) = pods.first() else { return false };
        let mut ok = true;
        for _ in 0..3 {
            ok &= app_get(pod, "/health/engine").await.is_some();
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        ok
    })
    .await;
    assert!(checks, "three health checks, each leaving an engine");
    let borrowed = eventually(Duration::from_secs(60), || async {
        let pods = cluster.ready_pods("borrowed").await;
        match pods.first() {
            Some(pod) => app_get(pod, "/odds/leak?n=2").await.is_some(),
            None => false,
        }
    })
    .await;
    assert!(borrowed, "two connections borrowed and never returned");

    // Each is restarted with its evidence, and the evidence tells them apart.
    let found = eventually(Duration::from_secs(90), || async {
        let mut all = true;
        for name in ["second-pool", "health-engine", "borrowed"] {
            all &= first_evidence(&cluster, name).await.is_some();
        }
        all
    })
    .await;
    assert!(found, "every workload restarted with evidence");
    let pool = first_evidence(&cluster, "second-pool").await.unwrap();
    assert_eq!(groups(&pool), vec![(3, "idle", "select pg_catalog.version()")]);
    assert!(
        pool.groups[0].opened_within_seconds_of_start.is_some_and(|s| s <= 5),
        "opened at start-up: {pool:?}"
    );
    let engine = first_evidence(&cluster, "health-engine").await.unwrap();
    assert_eq!(groups(&engine), vec![(3, "idle", "SELECT $1")]);
    assert!(
        engine.groups[0].opened_over_seconds.is_some_and(|s| s >= 1),
        "one per check, spread out: {engine:?}"
    );
    let route = first_evidence(&cluster, "borrowed").await.unwrap();
    assert_eq!(
        groups(&route),
        vec![(
            2,
            "idle in transaction",
            "SELECT relname FROM pg_class WHERE oid = $1 AND relname <> $2"
        )]
    );
    let g = &route.groups[0];
    assert_eq!(g.tags.get("route").map(String::as_str), Some("/odds/<id>"));
    assert!(g.oldest_transaction_start.is_some(), "{g:?}");

    // The second pool comes back in every replacement: two restarts, then LeakRecurring.
    let recurring = eventually(Duration::from_secs(90), || async {
        cluster
            .condition("evidence", "LeakRecurring")
            .await
            .is_some_and(|(status, _, _)| status == "True")
    })
    .await;
    assert!(recurring, "LeakRecurring=True");
    let (_, reason, message) = cluster.condition("evidence", "LeakRecurring").await.unwrap();
    assert_eq!(reason, "RestartsDoNotHelp");
    assert!(
        message.starts_with("Deployment/second-pool: restarting does not fix this: the leak came back")
            && message.contains("select pg_catalog.version()"),
        "{message}"
    );
    // It stays stopped: a few more passes, no third restart.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stopped = records(&cluster, "second-pool").await;
    assert_eq!(stopped.len(), 2, "{stopped:#?}");
    let events = cluster.api::<Event>().list(&ListParams::default()).await.unwrap().items;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("LeakRecurring") && e.type_.as_deref() == Some("Warning")),
        "a Warning Event"
    );
    // Nothing secret anywhere: the literals of the borrowed route's statement.
    let everything = format!(
        "{:?}{:?}",
        cluster.policy("evidence").await.status,
        events.iter().map(|e| e.note.clone()).collect::<Vec<_>>()
    );
    assert!(
        !everything.contains("hunter2") && !everything.contains("4242"),
        "a literal leaked: {everything}"
    );

    // A new release (the pod template changes) resumes restarts.
    let release = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"release": "2"}}}}});
    cluster
        .api::<Deployment>()
        .patch("second-pool", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    let resumed = eventually(Duration::from_secs(90), || async {
        records(&cluster, "second-pool").await.len() >= 3
    })
    .await;
    assert!(resumed, "restarted again after the release");
    let after = records(&cluster, "second-pool").await;
    assert_ne!(after[2].template, after[1].template, "{after:?}");
    assert!(after[2].returned_after_seconds.is_empty(), "a new row of restarts");

    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}
