//! End to end, the database-wide connection budget: a HorizontalPodAutoscaler's
//! `maxReplicas` (a real autoscaling/v2 object; nothing needs to scale, so no metrics
//! server) turns `BudgetExceeded` true where the replicas alone would not, and two
//! policies whose pools share one database are summed. Each test gets a database of
//! its own with a `CONNECTION LIMIT` (datconnlimit), so the limit that decides is
//! one no other test's backends count against.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{autoscaling::v2::HorizontalPodAutoscaler, events::v1::Event};
use kube::api::{ListParams, PostParams};
use serde_json::json;
use support::e2e::{Cluster, database_url, eventually, pg, unique};

/// The database's connection limit: small, so that the sums are small too.
const DATCONNLIMIT: u32 = 30;

/// A database of the test's own with `CONNECTION LIMIT`, dropped when dropped.
struct LimitedDatabase {
    name: String,
    url: String,
}

impl LimitedDatabase {
    async fn create(prefix: &str) -> LimitedDatabase {
        let name = unique(prefix).replace('-', "_");
        pg().await
            .batch_execute(&format!("CREATE DATABASE {name} CONNECTION LIMIT {DATCONNLIMIT}"))
            .await
            .expect("create the test's database");
        let base = database_url();
        let (server, _) = base.rsplit_once('/').expect("DATABASE_URL names a database");
        LimitedDatabase {
            url: format!("{server}/{name}"),
            name,
        }
    }

    async fn drop(self) {
        // FORCE (PostgreSQL 13+): the controller's sampler may still be connected.
        let _ = pg()
            .await
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .await;
    }
}

fn policy(name: &str, app: &str, max_size: u32) -> String {
    format!(
        "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {app}}}}}
  interval: 1s
  database: {{urlSecretRef: {{name: pg, key: url}}}}
  pool: {{maxSize: {max_size}}}
"
    )
}

/// A Deployment of one replica whose env is already the policy's (nothing rolls).
async fn deployment(cluster: &Cluster, name: &str, max_size: u32) {
    let labels = BTreeMap::from([("app", name)]);
    let max = max_size.to_string();
    cluster
        .create_deployment(
            name,
            &labels,
            1,
            &[("PGAPPNAME", "fieldRef:metadata.name"), ("DB_POOL_MAX", max.as_str())],
        )
        .await;
}

/// Waits until the policy's `BudgetExceeded` condition has `status`; answers its message.
async fn budget_becomes(cluster: &Cluster, policy: &str, status: &str) -> String {
    let seen = &std::sync::Mutex::new(None);
    let ok = eventually(Duration::from_secs(60), || async move {
        let now = cluster.condition(policy, "BudgetExceeded").await;
        let done = now.as_ref().is_some_and(|(s, _, _)| s == status);
        *seen.lock().unwrap() = now;
        done
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert!(ok, "{policy}: BudgetExceeded never became {status}; last seen {seen:?}");
    seen.map(|(_, _, message)| message).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autoscalers_max_replicas_exceeds_the_budget_where_the_replicas_alone_do_not() {
    let db = LimitedDatabase::create("pwhpa").await;
    let cluster = Cluster::start("budget-hpa").await;
    cluster.database_secret("pg", &db.url).await;
    // One replica (+1 surge) × 5 = 10 of 30; with maxReplicas 20: (20 + 1) × 5 = 105.
    deployment(&cluster, "web", 5).await;
    cluster.create_policy(&policy("web", "web", 5)).await;
    let controller = cluster.controller("solo", false);

    let within = budget_becomes(&cluster, "web", "False").await;
    assert!(within.contains("within") && !within.contains("HPA"), "{within}");
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "minReplicas": 1,
            "maxReplicas": 20,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]
        }
    }))
    .unwrap();
    cluster
        .api::<HorizontalPodAutoscaler>()
        .create(&PostParams::default(), &hpa)
        .await
        .expect("create the HorizontalPodAutoscaler");

    let exceeded = budget_becomes(&cluster, "web", "True").await;
    assert!(exceeded.contains("20 (HPA maxReplicas)"), "{exceeded}");
    assert!(
        exceeded.contains(&format!("datconnlimit of database {:?} = {DATCONNLIMIT}", db.name)),
        "{exceeded}"
    );
    // The transition is an Event on the policy, and the gauges say the same figures.
    let seen = &std::sync::Mutex::new(Vec::new());
    let events = cluster.api::<Event>();
    let evented = eventually(Duration::from_secs(30), || {
        let events = events.clone();
        async move {
            let now = events
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            let found = now.iter().any(|e| {
                e.reason.as_deref() == Some("BudgetExceeded") && e.note.as_deref().is_some_and(|n| n.contains("HPA"))
            });
            *seen.lock().unwrap() = now;
            found
        }
    })
    .await;
    assert!(evented, "{:?}", seen.lock().unwrap());
    let ns = &cluster.namespace;
    let need = controller
        .metric(&format!(
            "poolwarden_database_budget_need_connections{{namespace=\"{ns}\",policy=\"web\"}}"
        ))
        .await;
    let limit = controller
        .metric(&format!(
            "poolwarden_database_budget_limit_connections{{namespace=\"{ns}\",policy=\"web\"}}"
        ))
        .await;
    assert!(need.is_some_and(|n| n >= 105.0), "need {need:?}");
    assert_eq!(limit, Some(f64::from(DATCONNLIMIT)));

    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_policies_on_one_database_are_summed() {
    let db = LimitedDatabase::create("pwsum").await;
    let cluster = Cluster::start("budget-sum").await;
    cluster.database_secret("pg", &db.url).await;
    // Each alone: (1 + 1 surge) × 10 = 20 of 30. Both: 40.
    deployment(&cluster, "a", 10).await;
    cluster.create_policy(&policy("pa", "a", 10)).await;
    let controller = cluster.controller("solo", false);
    let alone = budget_becomes(&cluster, "pa", "False").await;
    assert!(alone.contains("within"), "{alone}");

    deployment(&cluster, "b", 10).await;
    cluster.create_policy(&policy("pb", "b", 10)).await;
    for p in ["pa", "pb"] {
        let summed = budget_becomes(&cluster, p, "True").await;
        let ns = &cluster.namespace;
        assert!(
            summed.contains(&format!("Deployment/a ({ns}/pa)")) && summed.contains(&format!("Deployment/b ({ns}/pb)")),
            "{p}: {summed}"
        );
        assert!(
            summed.contains("need 40 connections")
                && summed.contains(&format!(
                    "exceeds datconnlimit of database {:?} = {DATCONNLIMIT}",
                    db.name
                )),
            "{p}: {summed}"
        );
    }

    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
    db.drop().await;
}
