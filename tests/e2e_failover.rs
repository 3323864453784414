//! End to end, the controller fails: killed in the middle of a remediation, its
//! successor does not restart the same workload again within the cooldown (the
//! history is in the policy's status); with two replicas one leads, and when it is
//! killed the other takes over within the lease duration and converges; a graceful
//! stop releases the lease.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Pod, events::v1::Event};
use kube::{ResourceExt, api::ListParams};
use serde_json::json;
use support::e2e::{Cluster, ControllerProcess, app_get, database_url, eventually};

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
  remediation: {action: RestartPod, cooldown: 1h, maxRestartsPerHour: 5, minAvailableReplicas: 0}
";

const IN_SYNC: [(&str, &str); 5] = [
    ("PGAPPNAME", "fieldRef:metadata.name"),
    ("DB_POOL_MIN", "0"),
    ("DB_POOL_MAX", "5"),
    ("DB_POOL_MAX_IDLE", "2"),
    ("DB_POOL_MAX_LIFETIME", "3"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_remediation_does_not_restart_the_workload_again() {
    let cluster = Cluster::start("crash").await;
    let Some(sandbox) = cluster.sandbox.as_ref() else {
        eprintln!("needs the sandbox's eviction counter; skipped on a real cluster");
        return;
    };
    cluster.database_secret("pg", &database_url()).await;
    cluster
        .create_deployment("odds", &BTreeMap::from([("team", "odds")]), 1, &IN_SYNC)
        .await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            cluster.ready_pods("odds").await.len() == 1
        })
        .await
    );
    let first = cluster.ready_pods("odds").await.remove(0);
    assert!(app_get(&first, "/untracked?n=3").await.is_some());
    cluster.create_policy(POLICY).await;

    // Killed (SIGKILL) as soon as the eviction reaches the API server.
    let a = ControllerProcess::spawn(&cluster, "a", false);
    let evicted = eventually(Duration::from_secs(40), || async {
        sandbox.writes("pods/eviction") >= 1
    })
    .await;
    assert!(evicted);
    a.kill();

    // The replacement pod leaks too, and a new controller starts.
    let replaced = eventually(Duration::from_secs(30), || async {
        let pods = cluster.ready_pods("odds").await;
        pods.len() == 1 && pods[0].name_any() != first.name_any()
    })
    .await;
    assert!(replaced);
    let second = cluster.ready_pods("odds").await.remove(0);
    assert!(app_get(&second, "/untracked?n=3").await.is_some());
    let b = ControllerProcess::spawn(&cluster, "b", false);

    // Long past sustainedFor + grace: the cooldown recorded by the first controller holds.
    let cooled = eventually(Duration::from_secs(30), || async {
        let events = cluster.api::<Event>().list(&ListParams::default()).await.unwrap().items;
        events.iter().any(|e| {
            e.reason.as_deref() == Some("RemediationSkipped")
                && e.note.as_deref().unwrap_or_default().contains("cooldown")
                && e.note.as_deref().unwrap_or_default().contains(&second.name_any())
        })
    })
    .await;
    assert!(cooled, "the second controller skips for the cooldown");
    assert_eq!(sandbox.writes("pods/eviction"), 1, "no second restart");
    assert!(
        cluster
            .api::<Pod>()
            .get_opt(&second.name_any())
            .await
            .unwrap()
            .is_some()
    );
    let status = cluster.policy("pools").await.status.unwrap();
    assert_eq!(status.remediations.len(), 1);
    assert_eq!(status.remediations[0].pod.as_deref(), Some(first.name_any().as_str()));

    b.terminate();
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}

async fn leader_of(cluster: &Cluster) -> Option<String> {
    let lease = cluster.api::<Lease>().get_opt("poolwarden-leader").await.ok()??;
    lease.spec?.holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_the_other_takes_over_when_it_dies() {
    let cluster = Cluster::start("ha").await;
    cluster.database_secret("pg", &database_url()).await;
    let labels = BTreeMap::from([("team", "odds")]);
    cluster.create_deployment("one", &labels, 1, &[]).await;
    cluster.create_policy(POLICY).await;
    let mut replicas = vec![
        ControllerProcess::spawn(&cluster, "replica-a", true),
        ControllerProcess::spawn(&cluster, "replica-b", true),
    ];
    let synced = |name: &'static str| {
        let cluster = &cluster;
        async move { cluster.template_env("Deployment", name).await.get("DB_POOL_MAX") == Some(&json!("5")) }
    };
    assert!(
        eventually(Duration::from_secs(30), || synced("one")).await,
        "the leader applies the env"
    );
    let leader = leader_of(&cluster).await.expect("a lease holder");
    let (leading, following): (Vec<_>, Vec<_>) = replicas.drain(..).partition(|r| r.identity == leader);
    let (leading, following) = (
        leading.into_iter().next().unwrap(),
        following.into_iter().next().unwrap(),
    );
    assert_eq!(leading.metric("poolwarden_leader").await, Some(1.0));
    assert_eq!(following.metric("poolwarden_leader").await, Some(0.0));
    let ns = &cluster.namespace;
    let follower_writes = following
        .metric(&format!(
            "poolwarden_env_writes_total{{namespace=\"{ns}\",policy=\"pools\",result=\"applied\"}}"
        ))
        .await;
    assert_eq!(follower_writes, None, "only the leader writes");

    // The leader dies without releasing; the follower takes over after the lease expires.
    leading.kill();
    cluster.create_deployment("two", &labels, 1, &[]).await;
    assert!(
        eventually(Duration::from_secs(20), || synced("two")).await,
        "the new leader converges"
    );
    assert_eq!(leader_of(&cluster).await.as_deref(), Some(following.identity.as_str()));

    // A graceful stop releases the lease.
    let status = following.terminate().expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    let released = eventually(Duration::from_secs(5), || async { leader_of(&cluster).await.is_none() }).await;
    assert!(released, "lease holder after SIGTERM: {:?}", leader_of(&cluster).await);

    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}
