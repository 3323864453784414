//! `kubectl poolwarden`: the binary installed as `kubectl-poolwarden` on PATH is a
//! kubectl plugin (`kubectl plugin list` finds it), `kubectl poolwarden status` prints
//! a reconciled policy per workload (text and `-o json`), and `kubectl wait
//! --for=condition=Ready ppol/NAME` returns once the policy is Ready.

mod support;

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use serde_json::Value;
use support::e2e::{Cluster, database_url, eventually};

const POLICY: &str = "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {name: sportsbook}
spec:
  selector:
    matchLabels: {app.kubernetes.io/part-of: sportsbook}
  interval: 1s
  database: {urlSecretRef: {name: pg, key: url}}
  pool: {minSize: 0, maxSize: 5, maxIdleSeconds: 2, maxLifetimeSeconds: 30}
  discrepancy: {measure: LifetimeOverrun, max: 1, sustainedFor: 1m, grace: 1s}
  remediation: {action: RestartPod, cooldown: 1h, maxRestartsPerHour: 2, minAvailableReplicas: 1}
";

/// A PATH whose first directory holds `kubectl-poolwarden`, a symlink to the binary.
fn plugin_path(dir: &Path) -> String {
    let link = dir.join("kubectl-poolwarden");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_poolwarden"), &link).expect("symlink");
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

fn kubectl(path: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .args(args)
        .env("PATH", path)
        .output()
        .expect("kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kubectl_plugin_list_finds_kubectl_poolwarden() {
    let dir = tempfile::tempdir().unwrap();
    let path = plugin_path(dir.path());
    let (_, out, err) = kubectl(&path, &["plugin", "list"]);
    assert!(
        out.contains(&format!("{}/kubectl-poolwarden", dir.path().display())),
        "{out}{err}"
    );
    let (ok, out, err) = kubectl(&path, &["poolwarden", "--help"]);
    assert!(ok && out.contains("Usage: kubectl poolwarden"), "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_each_workload_and_kubectl_wait_sees_ready() {
    let cluster = Cluster::start("plugin").await;
    let part_of = BTreeMap::from([("app.kubernetes.io/part-of", "sportsbook")]);
    cluster.create_deployment("web", &part_of, 1, &[]).await;
    cluster.create_deployment("worker-odds", &part_of, 2, &[]).await;
    cluster.database_secret("pg", &database_url()).await;
    cluster.create_policy(POLICY).await;
    let dir = tempfile::tempdir().unwrap();
    let path = plugin_path(dir.path());
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let ns = cluster.namespace.clone();

    // Before any controller: no status yet, and kubectl wait times out.
    let (ok, out, err) = kubectl(
        &path,
        &[
            "wait",
            "--for=condition=Ready",
            "ppol/sportsbook",
            "-n",
            &ns,
            "--kubeconfig",
            &kubeconfig,
            "--timeout=2s",
        ],
    );
    assert!(!ok, "not Ready before the controller runs: {out}{err}");

    let controller = cluster.controller("solo", false);
    let path2 = path.clone();
    let (kc, ns2) = (kubeconfig.clone(), ns.clone());
    let waited = tokio::task::spawn_blocking(move || {
        kubectl(
            &path2,
            &[
                "wait",
                "--for=condition=Ready",
                "ppol/sportsbook",
                "-n",
                &ns2,
                "--kubeconfig",
                &kc,
                "--timeout=120s",
            ],
        )
    })
    .await
    .unwrap();
    assert!(waited.0, "kubectl wait: {}{}", waited.1, waited.2);
    assert!(waited.1.contains("condition met"), "{}", waited.1);

    // Rolled out: both workloads in sync, connections known.
    let synced = eventually(Duration::from_secs(60), || async {
        let s = cluster.policy("sportsbook").await.status.unwrap_or_default();
        s.workloads.len() == 2 && s.workloads.iter().all(|w| w.env_in_sync && w.connections.is_some())
    })
    .await;
    assert!(synced);

    let (ok, out, err) = kubectl(
        &path,
        &[
            "poolwarden",
            "status",
            "sportsbook",
            "-n",
            &ns,
            "--kubeconfig",
            &kubeconfig,
        ],
    );
    assert!(ok, "{out}{err}");
    eprintln!("{out}");
    for needle in [
        format!("PoolPolicy {ns}/sportsbook"),
        "LifetimeOverrun".into(),
        "Deployment/web".into(),
        "Deployment/worker-odds".into(),
        "in sync".into(),
        "Ready".into(),
        "DatabaseReachable".into(),
    ] {
        assert!(out.contains(&needle), "{needle:?} missing from:\n{out}");
    }

    let (ok, out, err) = kubectl(
        &path,
        &[
            "poolwarden",
            "status",
            "-n",
            &ns,
            "--kubeconfig",
            &kubeconfig,
            "-o",
            "json",
        ],
    );
    assert!(ok, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let policies = v["policies"].as_array().expect("policies");
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0]["name"], "sportsbook");
    assert_eq!(policies[0]["status"]["workloads"].as_array().map(Vec::len), Some(2));

    let (ok, out, err) = kubectl(
        &path,
        &["poolwarden", "status", "nope", "-n", &ns, "--kubeconfig", &kubeconfig],
    );
    assert!(!ok && err.contains("nope"), "{out}{err}");

    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}
