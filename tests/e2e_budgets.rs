//! End to end, the budgets: with more leaking pods than `maxRestartsPerHour`,
//! exactly the budget is restarted and the rest are reported as skipped; a
//! PodDisruptionBudget that allows no disruption is a skip with its reason, retried,
//! and the eviction happens once the budget allows it.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{core::v1::Pod, events::v1::Event, policy::v1::PodDisruptionBudget};
use kube::{
    ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::e2e::{Cluster, ControllerProcess, app_get, database_url, eventually, http_get};

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
  remediation: {action: RestartPod, cooldown: 1h, maxRestartsPerHour: 2, minAvailableReplicas: 0}
";

/// The policy's env, declared up front so that nothing rolls when poolwarden starts.
const IN_SYNC: [(&str, &str); 5] = [
    ("PGAPPNAME", "fieldRef:metadata.name"),
    ("DB_POOL_MIN", "0"),
    ("DB_POOL_MAX", "5"),
    ("DB_POOL_MAX_IDLE", "2"),
    ("DB_POOL_MAX_LIFETIME", "3"),
];

/// Creates the Deployments and makes the first `leak` pods of each keep an untracked pool.
async fn leaking_deployments(cluster: &Cluster, names: &[&str], replicas: usize, leak: usize) -> Vec<String> {
    let labels = BTreeMap::from([("team", "odds")]);
    for name in names {
        cluster
            .create_deployment(name, &labels, replicas as i32, &IN_SYNC)
            .await;
    }
    let mut leaking = Vec::new();
    for name in names {
        let ok = eventually(Duration::from_secs(40), || async {
            cluster.ready_pods(name).await.len() == replicas
        })
        .await;
        assert!(ok, "{name} ready");
        for pod in cluster.ready_pods(name).await.into_iter().take(leak) {
            assert!(app_get(&pod, "/untracked?n=3").await.is_some());
            leaking.push(pod.name_any());
        }
    }
    leaking
}

async fn pod_exists(cluster: &Cluster, name: &str) -> bool {
    cluster.api::<Pod>().get_opt(name).await.ok().flatten().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_leaking_pods_than_the_hourly_budget_restarts_exactly_the_budget() {
    let cluster = Cluster::start("budget").await;
    cluster.database_secret("pg", &database_url()).await;
    let leaking = leaking_deployments(&cluster, &["a", "b", "c"], 1, 1).await;
    cluster.create_policy(POLICY).await;
    let controller = cluster.controller("solo", false);

    let two_gone = eventually(Duration::from_secs(40), || async {
        let mut gone = 0;
        for p in &leaking {
            gone += usize::from(!pod_exists(&cluster, p).await);
        }
        gone == 2
    })
    .await;
    assert!(two_gone, "two of the three leaking pods are restarted");
    // Well past sustainedFor: the third stays, reported as over budget.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut remaining = Vec::new();
    for p in &leaking {
        if pod_exists(&cluster, p).await {
            remaining.push(p.clone());
        }
    }
    assert_eq!(remaining.len(), 1, "exactly the budget: {remaining:?}");
    let status = cluster.policy("pools").await.status.unwrap();
    assert_eq!(status.remediations.len(), 2, "{:?}", status.remediations);
    let events = cluster.api::<Event>().list(&ListParams::default()).await.unwrap().items;
    let skipped = events.iter().any(|e| {
        let note = e.note.as_deref().unwrap_or_default();
        e.reason.as_deref() == Some("RemediationSkipped")
            && note.contains("hourly_budget")
            && note.contains(&remaining[0])
    });
    assert!(skipped, "{events:?}");
    if let Some(sandbox) = cluster.sandbox() {
        assert_eq!(sandbox.writes("pods/eviction"), 2);
    }
    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disruption_budget_blocking_eviction_is_a_skip_then_the_eviction_happens_when_allowed() {
    let cluster = Cluster::start("pdb").await;
    cluster.database_secret("pg", &database_url()).await;
    // One pod of two leaks; the PDB allows no disruption at all.
    let leaking = leaking_deployments(&cluster, &["d"], 2, 1).await;
    let leaker = leaking[0].clone();
    let healthy = cluster
        .ready_pods("d")
        .await
        .into_iter()
        .map(|p| p.name_any())
        .find(|n| *n != leaker)
        .unwrap();
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({"metadata": {"name": "d"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "d"}}}}))
    .unwrap();
    let pdbs = cluster.api::<PodDisruptionBudget>();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    cluster.create_policy(POLICY).await;
    let controller = cluster.controller("solo", false);

    let blocked = eventually(Duration::from_secs(30), || async {
        let events = cluster.api::<Event>().list(&ListParams::default()).await.unwrap().items;
        events.iter().any(|e| {
            e.reason.as_deref() == Some("RemediationSkipped")
                && e.note.as_deref().unwrap_or_default().contains("eviction of")
        })
    })
    .await;
    assert!(blocked, "the refused eviction is reported");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(pod_exists(&cluster, &leaker).await, "PDB honoured");
    let status = cluster.policy("pools").await.status.unwrap();
    assert!(
        status.remediations.is_empty(),
        "a refused eviction is not a restart: {:?}",
        status.remediations
    );
    let ns = &cluster.namespace;
    let errors = controller
        .metric(&format!(
            "poolwarden_reconcile_errors_total{{namespace=\"{ns}\",policy=\"pools\",reason=\"status_write\"}}"
        ))
        .await;
    assert_eq!(errors, None, "a skip, not an error loop");
    let skips = controller
        .metric(&format!(
            "poolwarden_remediations_skipped_total{{namespace=\"{ns}\",policy=\"pools\",reason=\"disruption_budget\"}}"
        ))
        .await;
    assert!(skips.is_some_and(|n| n >= 1.0), "{skips:?}");

    // The budget allows one disruption: the leaking pod goes.
    pdbs.patch(
        "d",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"minAvailable": 1}})),
    )
    .await
    .unwrap();
    let evicted = eventually(Duration::from_secs(30), || async {
        !pod_exists(&cluster, &leaker).await
    })
    .await;
    assert!(evicted, "evicted once the PDB allows it");
    assert!(pod_exists(&cluster, &healthy).await, "the healthy pod stays");
    let status = cluster.policy("pools").await.status.unwrap();
    assert_eq!(status.remediations.len(), 1);

    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}

/// Issue 14, defect 1: with the PoolPolicy watch failing, the controller decided from
/// its cached policy and built each status write from that stale copy: 9 evictions
/// in 45 s under a budget of 2 an hour, and the records wiped. The budget is now
/// counted from the status read fresh from the server, and written conditionally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_watch_outage_neither_bypasses_the_hourly_budget_nor_loses_records() {
    let cluster = Cluster::start("stale").await;
    let Some(sandbox) = cluster.sandbox() else {
        eprintln!("skipped: needs the sandbox's fault injection");
        return;
    };
    cluster.database_secret("pg", &database_url()).await;
    leaking_deployments(&cluster, &["a", "b", "c"], 1, 0).await;
    cluster.create_policy(POLICY).await;
    let controller = ControllerProcess::spawn(&cluster, "solo", false);
    let addr = controller.metrics_addr;
    let ready = eventually(Duration::from_secs(30), || async {
        http_get(&addr.ip().to_string(), addr.port(), "/readyz")
            .await
            .is_some_and(|(code, _)| code == 200)
    })
    .await;
    assert!(ready, "controller ready");
    // The policy cache goes stale: every list and watch of policies fails from now on.
    sandbox.fail_next(Some("watch"), Some("poolpolicies"), 500, 1_000_000);
    sandbox.fail_next(Some("list"), Some("poolpolicies"), 500, 1_000_000);
    sandbox.drop_watches();
    for pod in ["a", "b", "c"] {
        for p in cluster.ready_pods(pod).await {
            assert!(app_get(&p, "/untracked?n=3").await.is_some());
        }
    }
    let two = eventually(Duration::from_secs(40), || async { sandbox.evictions().len() >= 2 }).await;
    assert!(two, "the budget's two restarts happen");
    // Well past sustainedFor + grace, with every pod still leaking.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let evictions = sandbox.evictions();
    assert_eq!(evictions.len(), 2, "exactly the budget: {evictions:?}");
    let status = cluster.policy("pools").await.status.unwrap();
    assert_eq!(status.remediations.len(), 2, "{:?}", status.remediations);
    for e in &evictions {
        assert!(
            status
                .remediations
                .iter()
                .any(|r| r.pod.as_deref() == Some(e.pod.as_str())),
            "{e:?} has its record: {:?}",
            status.remediations
        );
    }
    controller.kill();
    sandbox.faults().clear();
}
