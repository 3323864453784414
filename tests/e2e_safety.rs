//! End to end, the safety rails: another field manager owning a pool variable
//! yields `Conflict` and no fight; dry run and the pause annotation make no
//! workload write and no eviction, and still report what they would do.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, events::v1::Event};
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use support::e2e::{Cluster, app_get, database_url, eventually};

fn policy(name: &str, annotations: &str, remediation: &str) -> String {
    format!(
        "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {{name: {name}, annotations: {{{annotations}}}}}
spec:
  selector: {{matchLabels: {{team: odds}}}}
  interval: 1s
  database: {{urlSecretRef: {{name: pg, key: url}}}}
  pool: {{minSize: 0, maxSize: 20, maxIdleSeconds: 2, maxLifetimeSeconds: 3}}
  discrepancy: {{measure: LifetimeOverrun, max: 1, sustainedFor: 2s, grace: 1s}}
  remediation: {{action: RestartPod, cooldown: 1h, maxRestartsPerHour: 5, minAvailableReplicas: 0, {remediation}}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variable_owned_by_another_manager_is_reported_and_left_alone() {
    let cluster = Cluster::start("conflict").await;
    cluster.database_secret("pg", &database_url()).await;
    // GitOps applies the Deployment with DB_POOL_MAX declared in Git.
    let labels = BTreeMap::from([("team", "odds")]);
    cluster.create_deployment("odds", &labels, 1, &[]).await;
    let gitops = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "odds"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "DB_POOL_MAX", "value": "9"}]}]}}}
    });
    cluster
        .api::<Deployment>()
        .patch("odds", &PatchParams::apply("argocd-controller"), &Patch::Apply(&gitops))
        .await
        .expect("GitOps apply");
    cluster.create_policy(&policy("pools", "", "dryRun: false")).await;
    let controller = cluster.controller("solo", false);

    let conflict = eventually(Duration::from_secs(30), || async {
        cluster
            .condition("pools", "Conflict")
            .await
            .is_some_and(|c| c.0 == "True")
    })
    .await;
    assert!(conflict, "Conflict condition");
    let (_, reason, message) = cluster.condition("pools", "Conflict").await.unwrap();
    assert_eq!(reason, "FieldOwnedByOtherManager");
    assert!(
        message.contains("DB_POOL_MAX") && message.contains("argocd-controller"),
        "{message}"
    );
    assert_eq!(
        cluster.condition("pools", "Stalled").await.map(|c| c.0),
        Some("True".into())
    );

    // All or nothing (issue 14, defect 7): with DB_POOL_MAX in GitOps' hands none
    // of poolwarden's entries is written, so no half-applied pair (DB_POOL_MIN above
    // DB_POOL_MAX) reaches the pods; the owned one keeps GitOps' value.
    let writes_then = cluster.writes("deployments");
    let env = cluster.template_env("Deployment", "odds").await;
    for ours in ["DB_POOL_MIN", "DB_POOL_MAX_IDLE", "DB_POOL_MAX_LIFETIME", "PGAPPNAME"] {
        assert!(
            !env.contains_key(ours),
            "{ours} written next to a foreign DB_POOL_MAX: {env:?}"
        );
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        cluster.template_env("Deployment", "odds").await.get("DB_POOL_MAX"),
        Some(&json!("9")),
        "no fight"
    );
    assert_eq!(cluster.writes("deployments"), writes_then, "no retries in a loop");
    let events = cluster.api::<Event>().list(&ListParams::default()).await.unwrap().items;
    assert!(
        events.iter().any(|e| e.reason.as_deref() == Some("Conflict")
            && e.note.as_deref().unwrap_or_default().contains("argocd-controller")),
        "{events:?}"
    );

    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}

/// A leaking pod under a policy that must not act: nothing is written to the
/// workload and nothing is evicted, but the status and Events say what would be done.
async fn reports_without_acting(annotations: &str, remediation: &str, skip_label: &str) {
    let cluster = Cluster::start("rails").await;
    cluster.database_secret("pg", &database_url()).await;
    // The pods name themselves to the database already, so their leak is measured.
    let env = [("PGAPPNAME", "fieldRef:metadata.name")];
    cluster
        .create_deployment("odds", &BTreeMap::from([("team", "odds")]), 1, &env)
        .await;
    let ready = eventually(Duration::from_secs(30), || async {
        cluster.ready_pods("odds").await.len() == 1
    })
    .await;
    assert!(ready);
    let pod = cluster.ready_pods("odds").await.remove(0);
    assert!(app_get(&pod, "/untracked?n=3").await.is_some());
    cluster.create_policy(&policy("pools", annotations, remediation)).await;
    let writes = |c: &Cluster| (c.writes("deployments"), c.writes("pods"));
    let before = writes(&cluster);
    let controller = cluster.controller("solo", false);

    let judged = eventually(Duration::from_secs(30), || async {
        cluster
            .policy("pools")
            .await
            .status
            .is_some_and(|s| s.leaking_pods == 1 && !s.workloads[0].env_in_sync)
    })
    .await;
    assert!(judged, "{:?}", cluster.policy("pools").await.status);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(writes(&cluster), before, "no workload write, no eviction");
    // The Events are written after the status: wait for them rather than race them.
    let reported = eventually(Duration::from_secs(20), || async {
        let events = cluster
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        events.iter().any(|e| {
            e.reason.as_deref() == Some("RemediationSkipped")
                && e.note.as_deref().unwrap_or_default().contains(skip_label)
        }) && events.iter().any(|e| e.reason.as_deref() == Some("PoolEnvSkipped"))
    })
    .await;
    assert!(reported, "RemediationSkipped ({skip_label}) and PoolEnvSkipped Events");
    let status = cluster.policy("pools").await.status.unwrap();
    assert!(status.remediations.is_empty());
    if cluster.sandbox.is_some() {
        let skipped = controller
            .metric(&format!(
                "poolwarden_remediations_skipped_total{{namespace=\"{}\",policy=\"pools\",reason=\"{skip_label}\"}}",
                cluster.namespace
            ))
            .await;
        assert!(skipped.is_some_and(|n| n >= 1.0), "{skipped:?}");
    }
    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing_to_workloads_and_evicts_nothing() {
    reports_without_acting("", "dryRun: true", "dry_run").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pause_annotation_writes_nothing_to_workloads_and_evicts_nothing() {
    reports_without_acting("poolwarden.io/paused: 'true'", "dryRun: false", "paused").await;
}
