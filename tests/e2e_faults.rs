//! End to end, an unreliable API server: watches dropped, history expired (410 on
//! resume, so every cache relists), and bursts of 409, 429 and 500 on reads and
//! writes. The controller converges anyway and reports no panic.

mod support;

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;
use support::e2e::{Cluster, database_url, eventually};

const POLICY: &str = "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {name: pools}
spec:
  selector: {matchLabels: {team: odds}}
  interval: 1s
  database: {urlSecretRef: {name: pg, key: url}}
  pool: {minSize: 0, maxSize: 6}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_converges_through_dropped_watches_expired_history_and_error_bursts() {
    let cluster = Cluster::start("faults").await;
    let Some(sandbox) = cluster.sandbox.as_ref() else {
        eprintln!("fault injection needs the sandbox; skipped on a real cluster");
        return;
    };
    cluster.database_secret("pg", &database_url()).await;
    let labels = BTreeMap::from([("team", "odds")]);
    cluster.create_deployment("before", &labels, 1, &[]).await;
    cluster.create_policy(POLICY).await;
    let controller = cluster.controller("solo", false);
    let synced = |name: &'static str| {
        let cluster = &cluster;
        async move { cluster.template_env("Deployment", name).await.get("DB_POOL_MAX") == Some(&json!("6")) }
    };
    assert!(eventually(Duration::from_secs(30), || synced("before")).await);

    // Writes fail first: conflicts, throttling, server errors on the env apply and status.
    sandbox.fail_next(Some("patch"), Some("deployments"), 409, 2);
    sandbox.fail_next(Some("patch"), Some("deployments"), 500, 2);
    sandbox.fail_next(Some("patch"), Some("deployments"), 429, 1);
    sandbox.fail_next(Some("patch"), Some("poolpolicies/status"), 500, 3);
    sandbox.fail_next(Some("get"), Some("secrets"), 500, 2);
    // Then the watches break, and the history they would resume from is gone.
    sandbox.drop_watches();
    sandbox.fail_next(Some("list"), None, 500, 3);
    sandbox.expire_history();

    cluster.create_deployment("after", &labels, 1, &[]).await;
    cluster.create_statefulset("stateful", &labels, 1, &[]).await;
    assert!(
        eventually(Duration::from_secs(60), || synced("after")).await,
        "converged after the faults"
    );
    let sts_synced = eventually(Duration::from_secs(30), || async {
        cluster.template_env("StatefulSet", "stateful").await.get("DB_POOL_MAX") == Some(&json!("6"))
    })
    .await;
    assert!(sts_synced);
    sandbox.drop_watches();
    let ready = eventually(Duration::from_secs(30), || async {
        cluster.condition("pools", "Ready").await.is_some_and(|c| c.0 == "True")
            && cluster
                .policy("pools")
                .await
                .status
                .is_some_and(|s| s.workload_count == 3)
    })
    .await;
    assert!(ready, "{:?}", cluster.policy("pools").await.status);
    let (code, _) = controller.get("/healthz").await.expect("still serving");
    assert_eq!(code, 200);

    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}

/// A database Secret the controller may not read (RBAC: 403 on `get secrets`) shows
/// in the policy's status and in the controller's log — once per change, with the
/// policy and the Secret named, as every other reason a database cannot be read —
/// and its recovery is logged too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_secret_the_controller_may_not_read_is_logged_once_per_change() {
    let cluster = Cluster::start("secret403").await;
    let Some(sandbox) = cluster.sandbox.as_ref() else {
        eprintln!("fault injection needs the sandbox; skipped on a real cluster");
        return;
    };
    cluster.database_secret("pg-forbidden", &database_url()).await;
    cluster
        .create_deployment("odds", &BTreeMap::from([("team", "odds")]), 1, &[])
        .await;
    sandbox.fail_next(Some("get"), Some("secrets"), 403, usize::MAX);
    cluster
        .create_policy(&POLICY.replace("name: pg,", "name: pg-forbidden,"))
        .await;
    let controller = cluster.controller("solo", false);
    let refused = eventually(Duration::from_secs(30), || async {
        cluster
            .condition("pools", "DatabaseReachable")
            .await
            .is_some_and(|(status, _, message)| status == "False" && message.contains("403"))
    })
    .await;
    assert!(refused, "DatabaseReachable=False says the Secret read was refused");

    // Several passes later, still one line: the reason did not change.
    let gets = sandbox.requests("secrets", "get");
    let passes = eventually(Duration::from_secs(30), || async {
        sandbox.requests("secrets", "get") >= gets + 3
    })
    .await;
    assert!(passes, "the controller keeps trying to read the Secret");
    let policy = format!("{}/pools", cluster.namespace);
    let lines =
        |needle: &'static str| support::waits::log_lines_matching(|l| l.contains(&policy) && l.contains(needle), 100);
    let logged = lines("pg-forbidden");
    assert_eq!(
        logged.len(),
        1,
        "one line per change, naming the policy and the Secret: {logged:?}"
    );
    assert!(logged[0].contains("WARN") && logged[0].contains("403"), "{logged:?}");
    assert!(!logged[0].contains("postgres://"), "never the URL: {logged:?}");

    // Readable again: sampled, and the change logged once.
    sandbox.faults().clear();
    let sampled = eventually(Duration::from_secs(30), || async {
        cluster
            .condition("pools", "DatabaseReachable")
            .await
            .is_some_and(|(status, _, _)| status == "True")
    })
    .await;
    assert!(sampled, "DatabaseReachable=True once the Secret can be read");
    let back = lines("database URL read again");
    assert_eq!(back.len(), 1, "{back:?}");
    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}
