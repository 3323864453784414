//! What only a real API server can show (kube-apiserver, kube-controller-manager
//! and etcd, as `poolwarden-cluster` starts them; `make test-cluster`): the CRD's
//! schema and CEL rules as the server compiles and enforces them, the OpenAPI
//! `kubectl explain` reads, namespace existence, and the controller running as a
//! ServiceAccount under exactly the Helm chart's RBAC, its Events passing
//! events.k8s.io/v1 validation.
//!
//! Each test is skipped, with a message, unless `POOLWARDEN_E2E_KUBECONFIG`
//! names a real cluster. The chart is rendered with the Helm SDK of
//! `.ci/check-packaging`'s virtualenv (`POOLWARDEN_PACKAGING_VENV`, default
//! `/var/tmp/poolwarden-packaging-venv`).

mod support;

use std::{collections::BTreeMap, path::PathBuf, process::Command, time::Duration};

use k8s_openapi::{
    api::{authorization::v1::SelfSubjectAccessReview, core::v1::ServiceAccount, events::v1::Event as K8sEvent},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams, PostParams},
    discovery::ApiResource,
};
use poolwarden::{
    platform::kubernetes::controller::{Options, run},
    policy::PoolPolicy,
};
use serde_json::{Value, json};
use support::e2e::{Cluster, database_url, eventually};

/// The invalid fixtures only `poolwarden check` can refuse, each with why the
/// server cannot: every other one the server must refuse too.
const CHECK_ONLY: &[(&str, &str)] = &[
    (
        "duplicated-key.yaml",
        "YAML: a client's parser keeps the last key before the server sees JSON",
    ),
    ("not-yaml.yaml", "YAML: nothing reaches the server"),
    (
        "wrong-api-version.yaml",
        "the server does not serve poolwarden.io/v1: no mapping for the client",
    ),
    (
        "extra-env-clashes.yaml",
        "two names in a list and an env-name pattern: no CEL rule for them yet",
    ),
    (
        "selector-bad-operator.yaml",
        "matchExpressions' operator and values: no CEL rule for them yet",
    ),
    (
        "pool-stats-pointer-not-json-pointer.yaml",
        "the field also takes a Prometheus metric name: which one is meant is `check`'s guess",
    ),
];

fn real() -> bool {
    if std::env::var_os("POOLWARDEN_E2E_KUBECONFIG").is_none() {
        eprintln!("skipping: a real-control-plane test (set POOLWARDEN_E2E_KUBECONFIG; `make test-cluster`)");
        return false;
    }
    true
}

fn kubectl(cluster: &Cluster, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.unwrap_or_default().as_bytes());
    }
    let out = child.wait_with_output().expect("kubectl output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The fixture with every `namespace:` of its objects made `ns`.
fn in_namespace(text: &str, ns: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix("  namespace:") {
            Some(_) => format!("  namespace: {ns}"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_is_established_and_the_server_refuses_what_check_refuses() {
    if !real() {
        return;
    }
    let cluster = Cluster::start("real-crd").await;
    let crd = Api::<CustomResourceDefinition>::all(cluster.client.clone())
        .get("poolpolicies.poolwarden.io")
        .await
        .unwrap();
    let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
    for wanted in ["Established", "NamesAccepted"] {
        assert!(
            conditions.iter().any(|c| c.type_ == wanted && c.status == "True"),
            "CRD condition {wanted}: {conditions:?}"
        );
    }
    // Applying crds/ itself (what users do): accepted, every CEL rule compiled
    // within the cost limits (the server refuses a CRD whose rules do not).
    let (ok, out) = kubectl(
        &cluster,
        &["apply", "--server-side", "--force-conflicts", "-f", "crds/"],
        None,
    );
    assert!(ok, "kubectl apply -f crds/: {out}");

    let mut accepted_invalid = Vec::new();
    let mut messages = Vec::new();
    for file in yaml_files("tests/fixtures/invalid") {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = in_namespace(&std::fs::read_to_string(&file).unwrap(), &cluster.namespace);
        let (ok, out) = kubectl(
            &cluster,
            &["create", "--dry-run=server", "--validate=strict", "-f", "-"],
            Some(&text),
        );
        // A fixture may hold other objects too (a ConfigMap): the policy is what counts.
        let policy_accepted = ok && out.contains("poolpolicy.poolwarden.io/");
        if policy_accepted {
            accepted_invalid.push(name.clone());
        } else {
            messages.push(format!("{name}: {}", out.trim()));
        }
    }
    let want: Vec<String> = {
        let mut v: Vec<String> = CHECK_ONLY
            .iter()
            .filter(|(f, _)| !matches!(*f, "not-yaml.yaml" | "wrong-api-version.yaml"))
            .map(|(f, _)| f.to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        accepted_invalid, want,
        "the invalid fixtures the real server accepts are exactly the check-only ones"
    );
    // The CEL messages are check's own (one source for both).
    let joined = messages.join("\n");
    for expected in [
        "minSize must not exceed maxSize",
        "give exactly one target",
        "discrepancy.measure IdleOverrun needs pool.maxIdleSeconds",
        "interval must be at least 1s",
    ] {
        assert!(joined.contains(expected), "server message {expected:?} in:\n{joined}");
    }
    for file in yaml_files("examples") {
        let text = in_namespace(&std::fs::read_to_string(&file).unwrap(), &cluster.namespace);
        let (ok, out) = kubectl(
            &cluster,
            &["create", "--dry-run=server", "--validate=strict", "-f", "-"],
            Some(&text),
        );
        assert!(ok, "{} is accepted: {out}", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_prints_the_pool_field_docs() {
    if !real() {
        return;
    }
    let cluster = Cluster::start("real-explain").await;
    let (ok, out) = kubectl(&cluster, &["explain", "poolpolicy.spec.pool"], None);
    assert!(ok, "kubectl explain: {out}");
    assert!(
        out.contains("KIND:       PoolPolicy") || out.contains("KIND:     PoolPolicy"),
        "{out}"
    );
    for field in ["maxSize", "minSize", "maxIdleSeconds", "maxLifetimeSeconds", "env"] {
        assert!(out.contains(field), "explain names {field}:\n{out}");
    }
    assert!(
        out.contains("environment variables"),
        "explain prints the description:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_in_a_namespace_that_does_not_exist_is_refused() {
    if !real() {
        return;
    }
    let cluster = Cluster::start("real-nons").await;
    let missing = format!("{}-missing", cluster.namespace);
    let policy: PoolPolicy = serde_saphyr::from_str(
        "apiVersion: poolwarden.io/v1alpha1\nkind: PoolPolicy\nmetadata: {name: p}\nspec:\n  \
         selector: {matchLabels: {app: x}}\n  database: {urlSecretRef: {name: pg, key: url}}\n  pool: {maxSize: 5}\n",
    )
    .unwrap();
    let err = Api::<PoolPolicy>::namespaced(cluster.client.clone(), &missing)
        .create(&PostParams::default(), &policy)
        .await
        .expect_err("a policy in a missing namespace");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 404, "{s:?}");
            assert!(
                s.message.contains(&format!("namespaces \"{missing}\" not found")),
                "{s:?}"
            );
        }
        other => panic!("unexpected error {other}"),
    }
}

fn packaging_python() -> PathBuf {
    let venv = std::env::var_os("POOLWARDEN_PACKAGING_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/poolwarden-packaging-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no {} (run .ci/check-packaging once: it installs the Helm SDK)",
        python.display()
    );
    python
}

/// The chart's ServiceAccount and RBAC objects, rendered for namespace `ns`
/// watching only `ns`, with `secret` as its database Secret.
fn chart_rbac(ns: &str, secret: &str) -> Vec<Value> {
    let values = json!({"watchNamespace": ns, "databaseSecrets": [{"namespace": ns, "names": [secret]}]});
    let out = Command::new(packaging_python())
        .arg("tests/cluster/render-chart.py")
        .arg(ns)
        .arg(values.to_string())
        .output()
        .expect("render-chart.py");
    assert!(
        out.status.success(),
        "rendering the chart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).expect("chart YAML");
    docs.into_iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("ServiceAccount" | "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding")
            )
        })
        .collect()
}

async fn create_object(client: &Client, obj: &Value) {
    let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), obj["apiVersion"].as_str().unwrap().to_string()),
    };
    let kind = obj["kind"].as_str().unwrap();
    let gvk = kube::api::GroupVersionKind::gvk(&group, &version, kind);
    let plural = format!("{}s", kind.to_lowercase());
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let dynamic: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.create(&PostParams::default(), &dynamic)
        .await
        .unwrap_or_else(|e| panic!("creating {kind} {}: {e}", obj["metadata"]["name"]));
}

/// A kubeconfig like the admin's, authenticating with `token` instead.
fn token_kubeconfig(admin: &std::path::Path, token: &str, dir: &std::path::Path) -> PathBuf {
    let mut kc: Value = serde_saphyr::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    kc["users"] = json!([{"name": "poolwarden-sa", "user": {"token": token}}]);
    for c in kc["contexts"].as_array_mut().into_iter().flatten() {
        c["context"]["user"] = json!("poolwarden-sa");
    }
    let path = dir.join("sa.kubeconfig");
    std::fs::write(&path, serde_json::to_string(&kc).unwrap()).unwrap();
    path
}

async fn allowed(client: &Client, ns: &str, verb: &str, group: &str, resource: &str, name: Option<&str>) -> bool {
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({
        "spec": {"resourceAttributes": {"namespace": ns, "verb": verb, "group": group,
                 "resource": resource, "name": name.unwrap_or_default()}}
    }))
    .unwrap();
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .is_some_and(|s| s.allowed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_works_as_the_charts_service_account_and_its_events_pass_validation() {
    if !real() {
        return;
    }
    let cluster = Cluster::start("real-rbac").await;
    let ns = cluster.namespace.clone();
    for obj in chart_rbac(&ns, "pg") {
        create_object(&cluster.client, &obj).await;
    }
    let token_request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                               "spec": {"expirationSeconds": 3600}});
    let token: Value = Api::<ServiceAccount>::namespaced(cluster.client.clone(), &ns)
        .create_subresource("token", "poolwarden", &PostParams::default(), &token_request)
        .await
        .expect("TokenRequest for the chart's ServiceAccount");
    let token = token["status"]["token"].as_str().expect("a token").to_string();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = token_kubeconfig(&cluster.kubeconfig, &token, dir.path());
    let (client, evict_client) = poolwarden::cli::kube_client::clients(Some(&kubeconfig)).await.unwrap();

    // Not admin: exactly what the chart grants.
    for (verb, group, resource, name, want) in [
        ("get", "", "secrets", Some("pg"), true),
        ("get", "", "secrets", Some("other"), false),
        ("list", "", "secrets", None, false),
        ("patch", "apps", "deployments", None, true),
        ("update", "apps", "deployments", None, false),
        ("delete", "", "pods", None, false),
        ("create", "", "pods/eviction", None, true),
        ("patch", "poolwarden.io", "poolpolicies/status", None, true),
        ("patch", "poolwarden.io", "poolpolicies", None, false),
        ("create", "events.k8s.io", "events", None, true),
    ] {
        assert_eq!(
            allowed(&client, &ns, verb, group, resource, name).await,
            want,
            "{verb} {group}/{resource} {name:?} as the chart's ServiceAccount"
        );
    }

    cluster
        .create_deployment("web", &BTreeMap::from([("team", "rbac")]), 1, &[])
        .await;
    cluster.database_secret("pg", &database_url()).await;
    cluster
        .create_policy(
            "apiVersion: poolwarden.io/v1alpha1\nkind: PoolPolicy\nmetadata: {name: pools}\nspec:\n  \
             selector: {matchLabels: {team: rbac}}\n  interval: 1s\n  database: {urlSecretRef: {name: pg, key: url}}\n  \
             pool: {minSize: 0, maxSize: 6, maxIdleSeconds: 30, maxLifetimeSeconds: 600}\n",
        )
        .await;
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let options = Options {
        namespace: Some(ns.clone()),
        metrics_addr,
        leader_election: true,
        lease_name: "poolwarden-leader".into(),
        lease_namespace: ns.clone(),
        lease_duration: 3,
        identity: "sa".into(),
        sizing_window: Duration::from_secs(60),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(client.clone(), evict_client, options, async move {
        let _ = stopped.await;
    }));

    let synced = eventually(Duration::from_secs(60), || async {
        cluster.template_env("Deployment", "web").await.get("DB_POOL_MAX") == Some(&json!("6"))
    })
    .await;
    assert!(synced, "the controller, as the ServiceAccount, sets the pool env");
    let ready = eventually(Duration::from_secs(30), || async {
        cluster
            .condition("pools", "Ready")
            .await
            .is_some_and(|(status, _, _)| status == "True")
    })
    .await;
    assert!(ready, "status written: {:?}", cluster.condition("pools", "Ready").await);
    // Status went through the status subresource, by poolwarden.
    let policy = cluster.policy("pools").await;
    assert!(
        policy
            .managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("poolwarden") && m.subresource.as_deref() == Some("status")),
        "managedFields: {:?}",
        policy.managed_fields()
    );
    // Every Event it wrote passed the server's events.k8s.io/v1 validation (or
    // it would not be there) and reads back as the new API's, no legacy fields.
    let has_events = eventually(Duration::from_secs(30), || async {
        !poolwarden_events(&cluster.client, &ns).await.is_empty()
    })
    .await;
    assert!(has_events, "the controller wrote Events");
    for e in &poolwarden_events(&cluster.client, &ns).await {
        // A qualified name ([prefix/]name), which "poolwarden" is: the server checked it.
        assert!(e.reporting_instance.is_some(), "{e:?}");
        assert!(
            e.reason.as_deref().is_some_and(|r| !r.is_empty() && r.len() <= 128),
            "{e:?}"
        );
        assert!(
            e.action.as_deref().is_some_and(|a| !a.is_empty() && a.len() <= 128),
            "{e:?}"
        );
        assert!(e.note.as_deref().unwrap_or_default().len() <= 1024, "{e:?}");
        // The server names the writer after the client's User-Agent (was "unknown").
        assert!(
            e.metadata
                .managed_fields
                .as_ref()
                .is_some_and(|m| m.iter().all(|f| f.manager.as_deref() == Some("poolwarden"))),
            "{:?}",
            e.metadata.managed_fields
        );
        // The server reads back an empty `deprecatedSource`; nothing legacy was sent.
        assert!(
            e.deprecated_source
                .as_ref()
                .is_none_or(|s| s.component.is_none() && s.host.is_none())
                && e.deprecated_count.is_none()
                && e.deprecated_first_timestamp.is_none(),
            "{e:?}"
        );
    }
    // The leader Lease is the chart's one.
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(cluster.client.clone(), &ns)
        .get("poolwarden-leader")
        .await
        .expect("the leader Lease");
    assert_eq!(lease.spec.and_then(|s| s.holder_identity).as_deref(), Some("sa"));

    // Nothing it was refused: a 403 anywhere would show in its log, as kube's
    // error for it prints ("…is forbidden: User…: Forbidden (Status {… code: 403 …})").
    // Not a bare "403": a timestamp's microseconds can hold those digits.
    let forbidden = support::waits::log_lines_matching(refused, 5);
    assert!(forbidden.is_empty(), "the controller was refused: {forbidden:?}");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
}

/// Whether a log line reports a request the API server refused (403).
fn refused(line: &str) -> bool {
    line.contains("Forbidden") || line.contains("forbidden") || line.contains("code: 403")
}

/// The Events poolwarden wrote in `ns` (its reporting controller), as the server stored them.
async fn poolwarden_events(client: &kube::Client, ns: &str) -> Vec<K8sEvent> {
    Api::<K8sEvent>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reporting_controller
                .as_deref()
                .is_some_and(|c| c.starts_with("poolwarden"))
        })
        .collect()
}

#[test]
fn a_refusal_is_told_from_a_timestamp_that_holds_403() {
    let status: kube::core::Status = serde_json::from_value(json!({
        "status": "Failure", "code": 403, "reason": "Forbidden",
        "message": "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:x:poolwarden\" cannot update"
    }))
    .unwrap();
    let error = kube::Error::Api(Box::new(status));
    assert!(refused(&format!("WARN poolwarden: write failed error={error}")));
    assert!(!refused(
        "2026-12-03T14:37:30.140364Z  INFO poolwarden::platform::kubernetes::controller: cache synced cache=\"deployments\""
    ));
}
