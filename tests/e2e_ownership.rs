//! End to end, one owner per workload: two policies selecting one Deployment do not
//! fight over its env (the older governs, the younger reports `Conflict=True` naming
//! it), and the cooldown holds per workload across them.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use support::e2e::{Cluster, app_get, database_url, eventually};

fn policy(name: &str, max_size: u32, remediation: &str) -> String {
    format!(
        "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{team: odds}}}}
  interval: 1s
  database: {{urlSecretRef: {{name: pg, key: url}}}}
  pool: {{minSize: 0, maxSize: {max_size}, maxIdleSeconds: 2, maxLifetimeSeconds: 3}}
  discrepancy: {{measure: LifetimeOverrun, max: 1, sustainedFor: 2s, grace: 1s}}
  remediation: {remediation}
"
    )
}

const OBSERVE: &str = "{action: None}";
const RESTART: &str = "{action: RestartPod, cooldown: 1h, maxRestartsPerHour: 5, minAvailableReplicas: 0}";

/// Issue 14, defect 2: pol-a (maxSize 5) and pol-b (maxSize 10) on one Deployment
/// took it from generation 1 to 235 in 60 s, both reporting Conflict=False.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_policies_selecting_one_deployment_do_not_fight_the_oldest_governs() {
    let cluster = Cluster::start("owner").await;
    cluster.database_secret("pg", &database_url()).await;
    let labels = BTreeMap::from([("team", "odds")]);
    cluster.create_deployment("web", &labels, 1, &[]).await;
    cluster.create_policy(&policy("pol-a", 5, OBSERVE)).await;
    // creationTimestamp has a resolution of a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    cluster.create_policy(&policy("pol-b", 10, OBSERVE)).await;
    let controller = cluster.controller("solo", false);

    let reported = eventually(Duration::from_secs(30), || async {
        cluster
            .condition("pol-b", "Conflict")
            .await
            .is_some_and(|(status, reason, _)| status == "True" && reason == "GovernedByOtherPolicy")
    })
    .await;
    assert!(reported, "pol-b reports the conflict");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (_, _, message) = cluster.condition("pol-b", "Conflict").await.unwrap();
    assert!(
        message.contains("pol-a") && message.contains("Deployment/web"),
        "{message}"
    );
    let env = cluster.template_env("Deployment", "web").await;
    assert_eq!(env.get("DB_POOL_MAX").and_then(|v| v.as_str()), Some("5"), "{env:?}");
    let d = cluster.api::<Deployment>().get("web").await.unwrap();
    assert!(
        d.metadata.generation.unwrap_or(0) <= 2,
        "one env write, no fight: generation {:?}",
        d.metadata.generation
    );
    let a = cluster.condition("pol-a", "Conflict").await.unwrap();
    assert_eq!(a.0, "False", "{a:?}");
    if let Some(sandbox) = cluster.sandbox() {
        // The test's own create, and the governing policy's one env apply.
        assert_eq!(sandbox.writes("deployments"), 2, "only the governing policy writes");
    }
    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}

/// Issue 14, defect 3: under two overlapping policies both pods of one workload were
/// evicted 1.5 s apart, under a per-workload cooldown of 1h.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_policies_restart_a_workload_once_per_cooldown() {
    let cluster = Cluster::start("overlap").await;
    let Some(sandbox) = cluster.sandbox() else {
        eprintln!("skipped: counts evictions on the sandbox");
        return;
    };
    cluster.database_secret("pg", &database_url()).await;
    let labels = BTreeMap::from([("team", "odds")]);
    let env = [
        ("PGAPPNAME", "fieldRef:metadata.name"),
        ("DB_POOL_MIN", "0"),
        ("DB_POOL_MAX", "5"),
        ("DB_POOL_MAX_IDLE", "2"),
        ("DB_POOL_MAX_LIFETIME", "3"),
    ];
    cluster.create_deployment("web", &labels, 2, &env).await;
    let ready = eventually(Duration::from_secs(40), || async {
        cluster.ready_pods("web").await.len() == 2
    })
    .await;
    assert!(ready);
    for p in cluster.ready_pods("web").await {
        assert!(app_get(&p, "/untracked?n=3").await.is_some(), "{}", p.name_any());
    }
    cluster.create_policy(&policy("pol-a", 5, RESTART)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    cluster.create_policy(&policy("pol-b", 5, RESTART)).await;
    let controller = cluster.controller("solo", false);
    let one = eventually(Duration::from_secs(30), || async { !sandbox.evictions().is_empty() }).await;
    assert!(one, "the leaking workload is restarted");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let evictions = sandbox.evictions();
    assert_eq!(evictions.len(), 1, "one restart per cooldown: {evictions:?}");
    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}
