//! `kubectl poolwarden`: the binary installed as `kubectl-poolwarden` on PATH is a
//! kubectl plugin (`kubectl plugin list` finds it), `kubectl poolwarden status` prints
//! a reconciled policy per workload (text and `-o json`), and `kubectl wait
//! --for=condition=Ready ppol/NAME` returns once the policy is Ready.

mod support;

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
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

const FLEET: &str = "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {name: fleet}
spec:
  selector:
    matchLabels: {app.kubernetes.io/part-of: fleet}
  interval: 1s
  database: {urlSecretRef: {name: pg, key: url}}
  pool: {minSize: 0, maxSize: 5}
";

/// A policy over more workloads than the status shows: the status counts all 60,
/// shows 20 (the three whose env stays out of sync, paused, among them though they
/// sort last), and `status` says how to see the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_big_policy_shows_the_totals_the_worst_rows_and_how_to_see_the_rest() {
    let cluster = Cluster::start("plugin-big").await;
    let part_of = BTreeMap::from([("app.kubernetes.io/part-of", "fleet")]);
    for i in 0..60 {
        cluster
            .create_deployment(&format!("fleet-{i:02}"), &part_of, 0, &[])
            .await;
    }
    let paused = json!({"metadata": {"annotations": {"poolwarden.io/paused": "true"}}});
    for name in ["fleet-57", "fleet-58", "fleet-59"] {
        cluster
            .api::<Deployment>()
            .patch(name, &PatchParams::default(), &Patch::Merge(&paused))
            .await
            .expect("pause");
    }
    cluster.database_secret("pg", &database_url()).await;
    cluster.create_policy(FLEET).await;
    let controller = cluster.controller("solo", false);
    let counted = eventually(Duration::from_secs(120), || async {
        let s = cluster.policy("fleet").await.status.unwrap_or_default();
        s.workload_count == 60 && s.out_of_sync_count == 3
    })
    .await;
    assert!(counted, "{:?}", cluster.policy("fleet").await.status);
    let status = cluster.policy("fleet").await.status.unwrap_or_default();
    assert!(status.workloads_truncated);
    assert_eq!(status.workloads.len(), 20);
    let out_of_sync: Vec<&str> = status
        .workloads
        .iter()
        .filter(|w| !w.env_in_sync)
        .map(|w| w.name.as_str())
        .collect();
    assert_eq!(out_of_sync, ["fleet-57", "fleet-58", "fleet-59"]);

    let dir = tempfile::tempdir().unwrap();
    let path = plugin_path(dir.path());
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let ns = cluster.namespace.clone();
    let (ok, out, err) = kubectl(
        &path,
        &["poolwarden", "status", "fleet", "-n", &ns, "--kubeconfig", &kubeconfig],
    );
    assert!(ok, "{out}{err}");
    for needle in [
        "workloads 60, leaking pods 0".to_owned(),
        "pods 0, env out of sync 3, exceeding 0, unknown 0".to_owned(),
        "Deployment/fleet-59  pods 0  env NOT in sync".to_owned(),
        "... 20 of 60 workloads shown".to_owned(),
        format!("kubectl get ppol fleet -n {ns} -o yaml | kubectl poolwarden plan -f -"),
    ] {
        assert!(out.contains(&needle), "{needle:?} missing from:\n{out}");
    }
    // The way to the rest works: every workload, measured now.
    let piped = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "kubectl get ppol fleet -n {ns} --kubeconfig {kubeconfig} -o yaml | kubectl poolwarden plan -f - --kubeconfig {kubeconfig} -o json"
        ))
        .env("PATH", &path)
        .output()
        .expect("sh");
    let text = String::from_utf8_lossy(&piped.stdout);
    let plan: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&piped.stderr)));
    assert_eq!(plan["workloads"].as_array().map(Vec::len), Some(60), "{text}");

    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}
