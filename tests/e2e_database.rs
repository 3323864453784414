//! End to end, the database goes down and comes back: `DatabaseReachable=False`,
//! no remediation while it is down (a leaking pod stays), recovery when it returns.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use support::{
    e2e::{Cluster, app_get, eventually},
    throwaway_pg::ThrowawayPg,
};

const POLICY: &str = "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {name: pools}
spec:
  selector: {matchLabels: {team: odds}}
  interval: 1s
  database: {urlSecretRef: {name: pg, key: url}}
  pool: {minSize: 0, maxSize: 5, maxIdleSeconds: 2, maxLifetimeSeconds: 3}
  discrepancy: {measure: LifetimeOverrun, max: 1, sustainedFor: 3s, grace: 1s}
  remediation: {action: RestartPod, cooldown: 1h, maxRestartsPerHour: 2, minAvailableReplicas: 0}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_blocks_remediation_and_is_reported_until_it_returns() {
    let mut db = ThrowawayPg::start(&[]);
    let cluster = Cluster::start("dbdown").await;
    cluster.database_secret("pg", &db.url()).await;
    // The app uses the same database; the pool env is declared as the policy wants it.
    let url = db.url();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("PGAPPNAME", "fieldRef:metadata.name"),
        ("DB_POOL_MIN", "0"),
        ("DB_POOL_MAX", "5"),
        ("DB_POOL_MAX_IDLE", "2"),
        ("DB_POOL_MAX_LIFETIME", "3"),
    ];
    cluster
        .create_deployment("odds", &BTreeMap::from([("team", "odds")]), 1, &env)
        .await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            cluster.ready_pods("odds").await.len() == 1
        })
        .await
    );
    cluster.create_policy(POLICY).await;
    let controller = cluster.controller("solo", false);
    let reachable = |want: &'static str| {
        let cluster = &cluster;
        async move {
            cluster
                .condition("pools", "DatabaseReachable")
                .await
                .is_some_and(|c| c.0 == want)
        }
    };
    assert!(eventually(Duration::from_secs(20), || reachable("True")).await);

    // Down. The pod leaks meanwhile (its connections are gone with the server, but
    // poolwarden cannot know that) — nothing may be restarted on missing data.
    let pod = cluster.ready_pods("odds").await.remove(0);
    db.stop();
    assert!(
        eventually(Duration::from_secs(20), || reachable("False")).await,
        "DatabaseReachable=False"
    );
    let (_, reason, message) = cluster.condition("pools", "DatabaseReachable").await.unwrap();
    assert_eq!(reason, "SampleFailed");
    assert!(!message.is_empty() && !message.contains("password"), "{message}");
    assert_eq!(
        cluster.condition("pools", "Degraded").await.map(|c| c.1),
        Some("DatabaseUnreachable".into())
    );
    let status = cluster.policy("pools").await.status.unwrap();
    assert!(
        status.workloads[0].connections.is_none(),
        "unknown, not zero: {:?}",
        status.workloads[0]
    );
    assert!(status.workloads[0].worst_value.is_none());
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(cluster.api::<Pod>().get_opt(&pod.name_any()).await.unwrap().is_some());
    assert!(cluster.policy("pools").await.status.unwrap().remediations.is_empty());

    // Back: sampled again, and a real leak is then acted on.
    db.start_server();
    assert!(
        eventually(Duration::from_secs(40), || reachable("True")).await,
        "recovers"
    );
    let leaked = eventually(Duration::from_secs(20), || async {
        app_get(&pod, "/untracked?n=3").await.is_some()
    })
    .await;
    assert!(leaked, "the app reconnects");
    let evicted = eventually(Duration::from_secs(40), || async {
        cluster
            .api::<Pod>()
            .get_opt(&pod.name_any())
            .await
            .ok()
            .flatten()
            .is_none()
    })
    .await;
    assert!(evicted, "remediation resumes with data");

    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
    db.stop();
}
