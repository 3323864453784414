//! End to end, `poolwarden plan`: the env diff per workload and the exit status
//! against a live cluster and database, JSON output, no write at all, an invalid
//! policy refused, and an unreachable database shown as unknown — never as zero.

mod support;

use std::{collections::BTreeMap, process::Command, time::Duration};

use serde_json::Value;
use support::e2e::{Cluster, database_url, eventually};

const POLICY: &str = "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {name: pools}
spec:
  selector: {matchLabels: {team: odds}}
  database: {urlSecretRef: {name: pg, key: url}}
  pool: {minSize: 0, maxSize: 20, maxLifetimeSeconds: 600}
  discrepancy: {measure: LifetimeOverrun, max: 2, sustainedFor: 10m}
";

fn plan(cluster: &Cluster, file: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .arg("plan")
        .arg("-f")
        .arg(file)
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["--namespace", &cluster.namespace])
        .args(extra)
        .output()
        .expect("poolwarden plan");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_prints_the_env_diff_and_writes_nothing() {
    let cluster = Cluster::start("plan").await;
    cluster.database_secret("pg", &database_url()).await;
    let labels = BTreeMap::from([("team", "odds")]);
    cluster
        .create_deployment("odds", &labels, 1, &[("DB_POOL_MAX", "5")])
        .await;
    cluster.create_statefulset("ledger", &labels, 1, &[]).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            cluster.ready_pods("odds").await.len() == 1
        })
        .await
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, POLICY).unwrap();
    let writes = |c: &Cluster| ["deployments", "statefulsets", "pods", "poolpolicies", "events"].map(|r| c.writes(r));
    let before = writes(&cluster);

    let (code, out, err) = plan(&cluster, &file, &[]);
    assert_eq!(code, 3, "changes due: {out}\n{err}");
    assert!(out.contains("Deployment/odds"), "{out}");
    assert!(out.contains("env app DB_POOL_MAX: \"5\" -> \"20\""), "{out}");
    assert!(
        out.contains("env app PGAPPNAME: (unset) -> fieldRef metadata.name"),
        "{out}"
    );
    assert!(out.contains("StatefulSet/ledger"), "{out}");
    assert!(out.contains("database: sampled at"), "{out}");
    assert!(out.contains("remediation history: none"), "{out}");
    // The database budget, as the controller would write it (docs/budget.md); within
    // or not depends on what else holds the shared server's slots now.
    let budget = out
        .lines()
        .find(|l| l.starts_with("connection budget: "))
        .unwrap_or_default();
    assert!(
        (budget.contains(": within: ") || budget.contains(": exceeded: "))
            && budget.contains(" need ")
            && budget.contains(" connections ("),
        "{out}"
    );

    let (code, json, _) = plan(&cluster, &file, &["-o", "json"]);
    assert_eq!(code, 3);
    let v: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["changes"], true);
    assert_eq!(v["workloads"].as_array().map(Vec::len), Some(2));
    let odds = v["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "odds")
        .unwrap();
    assert!(
        odds["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "DB_POOL_MIN" && d["current"].is_null())
    );

    // An unreachable database: the env diff still shows; the verdicts are unknown.
    let (code, out, _) = plan(
        &cluster,
        &file,
        &["--database-url", "postgres://x:hunter2@127.0.0.1:1/none"],
    );
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("database: unknown:") && out.contains("env app DB_POOL_MAX"),
        "{out}"
    );
    assert!(out.contains(": unknown: database:"), "pods unknown, not zero: {out}");
    assert!(!out.contains("hunter2"), "{out}");

    if cluster.sandbox().is_some() {
        assert_eq!(writes(&cluster), before, "plan writes nothing");
    }

    // The policy's Secret cannot be read: nothing could be measured, so the plan is
    // not "nothing to do" but exit 2, naming the Secret.
    std::fs::write(&file, POLICY.replace("name: pg, key: url", "name: missing, key: url")).unwrap();
    let (code, out, err) = plan(&cluster, &file, &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("Secret") && err.contains("missing"), "{err}");

    // An invalid policy: the check's problem lines, exit 1.
    std::fs::write(&file, POLICY.replace("maxSize: 20", "maxSize: 0")).unwrap();
    let (code, out, err) = plan(&cluster, &file, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("maxSize"), "{err}");

    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}
