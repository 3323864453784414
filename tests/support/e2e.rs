//! The end-to-end harness: "a cluster" reached through a kubeconfig, the controller
//! run in-process against it, and the leaky test workload.
//!
//! By default the cluster is the project's sandbox (in-memory API server + process
//! kubelet). With `POOLWARDEN_E2E_KUBECONFIG` set, the same tests run against that
//! cluster instead; it then needs the CRD installable by the kubeconfig's user, an
//! image of the leaky test workload (`POOLWARDEN_E2E_IMAGE`, built from
//! `sandbox/src/bin/leaky-app`), and a PostgreSQL reachable from the pods
//! (`POOLWARDEN_E2E_APP_DATABASE_URL`) and from the tests (`DATABASE_URL`). Checks
//! that count API requests or inject faults need the sandbox and are skipped, with a
//! message, on a real cluster.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{Namespace, Pod, Secret},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PostParams},
};
use poolwarden::{
    platform::kubernetes::controller::{Options, run},
    policy::PoolPolicy,
};
use poolwarden_sandbox::Sandbox;
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

pub const APP_PORT: u16 = 8080;

// Each test binary uses its own few of these.
#[allow(unused_imports)]
pub use super::local::{database_url, http_get, pg, unique};
pub use super::waits::eventually;

pub struct Cluster {
    pub client: Client,
    pub evict_client: Client,
    pub kubeconfig: PathBuf,
    /// Present when the cluster is the sandbox: request counters and fault injection.
    pub sandbox: Option<Sandbox>,
    pub namespace: String,
    /// Log files of the controller processes this test started, for the diagnostics.
    process_logs: Arc<Mutex<Vec<PathBuf>>>,
    /// Keeps the controller processes' log files until the test ends.
    logs_dir: Arc<tempfile::TempDir>,
}

impl Cluster {
    pub async fn start(namespace_prefix: &str) -> Cluster {
        let (client, evict_client, kubeconfig, sandbox) = match std::env::var_os("POOLWARDEN_E2E_KUBECONFIG") {
            Some(path) => {
                let path = PathBuf::from(path);
                let (c, e) = clients(&path).await;
                (c, e, path, None)
            }
            None => {
                let sandbox = Sandbox::start().await.expect("sandbox");
                let path = sandbox.kubeconfig_path().to_path_buf();
                let (c, e) = clients(&path).await;
                (c, e, path, Some(sandbox))
            }
        };
        let namespace = unique(namespace_prefix);
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        let cluster = Cluster {
            client,
            evict_client,
            kubeconfig,
            sandbox,
            namespace,
            process_logs: Arc::default(),
            logs_dir: Arc::new(tempfile::tempdir().expect("tempdir for controller logs")),
        };
        super::waits::capture_logs();
        let (client, namespace, logs) = (
            cluster.client.clone(),
            cluster.namespace.clone(),
            cluster.process_logs.clone(),
        );
        super::waits::show_on_timeout(Arc::new(move || {
            let (client, namespace, logs) = (client.clone(), namespace.clone(), logs.clone());
            Box::pin(async move { diagnostics(&client, &namespace, &logs).await })
        }));
        cluster.install_crd().await;
        cluster
    }

    async fn install_crd(&self) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&poolwarden::crd::crd_yaml()).expect("CRD YAML");
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("installing the CRD: {e}"),
        }
        let policies: Api<PoolPolicy> = Api::namespaced(self.client.clone(), &self.namespace);
        assert!(
            eventually(Duration::from_secs(20), || async {
                policies.list(&ListParams::default()).await.is_ok()
            })
            .await,
            "the PoolPolicy API is served"
        );
    }

    pub fn sandbox(&self) -> Option<&Sandbox> {
        if self.sandbox.is_none() {
            eprintln!("skipping a sandbox-only check (request counters / fault injection) on a real cluster");
        }
        self.sandbox.as_ref()
    }

    /// Write requests for `resource` (sandbox only; 0 on a real cluster).
    pub fn writes(&self, resource: &str) -> u64 {
        self.sandbox.as_ref().map(|s| s.writes(resource)).unwrap_or(0)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates a Secret holding `url` under key `url`.
    pub async fn database_secret(&self, name: &str, url: &str) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name},
            "stringData": {"url": url},
        }))
        .unwrap();
        self.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .expect("create Secret");
    }

    pub async fn create_policy(&self, yaml: &str) -> PoolPolicy {
        let policy: PoolPolicy = serde_saphyr::from_str(yaml).expect("policy YAML");
        self.api::<PoolPolicy>()
            .create(&PostParams::default(), &policy)
            .await
            .expect("create PoolPolicy")
    }

    pub async fn policy(&self, name: &str) -> PoolPolicy {
        self.api::<PoolPolicy>().get(name).await.expect("get PoolPolicy")
    }

    /// The status of the condition `type_` of the policy, if set.
    pub async fn condition(&self, policy: &str, type_: &str) -> Option<(String, String, String)> {
        let p = self.api::<PoolPolicy>().get(policy).await.ok()?;
        p.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status, c.reason, c.message))
    }

    pub async fn create_deployment(
        &self,
        name: &str,
        labels: &BTreeMap<&str, &str>,
        replicas: i32,
        env: &[(&str, &str)],
    ) {
        self.create_deployment_running(name, labels, replicas, env, None).await;
    }

    /// A Deployment whose container runs `command` (the leaky app when `None`).
    pub async fn create_deployment_running(
        &self,
        name: &str,
        labels: &BTreeMap<&str, &str>,
        replicas: i32,
        env: &[(&str, &str)],
        command: Option<&[String]>,
    ) {
        let d: Deployment =
            serde_json::from_value(workload_json(name, labels, replicas, env, "Deployment", command)).unwrap();
        self.api::<Deployment>()
            .create(&PostParams::default(), &d)
            .await
            .expect("create Deployment");
    }

    pub async fn create_statefulset(
        &self,
        name: &str,
        labels: &BTreeMap<&str, &str>,
        replicas: i32,
        env: &[(&str, &str)],
    ) {
        let s: StatefulSet =
            serde_json::from_value(workload_json(name, labels, replicas, env, "StatefulSet", None)).unwrap();
        self.api::<StatefulSet>()
            .create(&PostParams::default(), &s)
            .await
            .expect("create StatefulSet");
    }

    /// Ready pods whose name starts with `prefix-`.
    pub async fn ready_pods(&self, prefix: &str) -> Vec<Pod> {
        let mut pods: Vec<Pod> = self
            .api::<Pod>()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.name_any().starts_with(&format!("{prefix}-")))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .collect();
        pods.sort_by_key(|p| p.name_any());
        pods
    }

    /// The literal env of the first container of a workload's template.
    pub async fn template_env(&self, kind: &str, name: &str) -> BTreeMap<String, Value> {
        let obj: Value = match kind {
            "Deployment" => serde_json::to_value(self.api::<Deployment>().get(name).await.unwrap()).unwrap(),
            _ => serde_json::to_value(self.api::<StatefulSet>().get(name).await.unwrap()).unwrap(),
        };
        obj["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                let v = if e["value"].is_null() {
                    e["valueFrom"].clone()
                } else {
                    e["value"].clone()
                };
                (e["name"].as_str().unwrap_or_default().to_owned(), v)
            })
            .collect()
    }

    /// Starts the controller in this process.
    pub fn controller(&self, identity: &str, leader_election: bool) -> RunningController {
        self.controller_with(identity, leader_election, 3)
    }

    pub fn controller_with(&self, identity: &str, leader_election: bool, lease_duration: u64) -> RunningController {
        let metrics_addr: SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr")
        };
        let options = Options {
            namespace: Some(self.namespace.clone()),
            metrics_addr,
            leader_election,
            lease_name: "poolwarden-leader".into(),
            lease_namespace: self.namespace.clone(),
            lease_duration,
            identity: identity.into(),
            // Sizing's peak window: a second, so a policy with spec.sizing has a
            // recommendation within seconds (docs/sizing.md).
            sizing_window: Duration::from_secs(1),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run(
            self.client.clone(),
            self.evict_client.clone(),
            options,
            async move {
                let _ = rx.await;
            },
        ));
        RunningController {
            stop: Some(tx),
            task,
            metrics_addr,
        }
    }
}

async fn clients(path: &Path) -> (Client, Client) {
    poolwarden::cli::kube_client::clients(Some(&path.to_path_buf()))
        .await
        .expect("kube clients")
}

pub struct RunningController {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), poolwarden::platform::kubernetes::controller::RunError>>,
    pub metrics_addr: SocketAddr,
}

impl RunningController {
    /// SIGTERM: stop writing, release the lease, return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), &mut self.task).await;
    }

    /// A crash: the task is gone mid-flight; the lease is not released.
    pub fn kill(self) {
        self.task.abort();
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.metrics_addr.ip().to_string(), self.metrics_addr.port(), path).await
    }

    /// The value of one metric line (exact label text), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
    }
}

/// GET on a pod's leaky-app.
pub async fn app_get(pod: &Pod, path: &str) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    match http_get(&ip, APP_PORT, path).await {
        Some((200, body)) => Some(body),
        _ => None,
    }
}

/// Backends whose application_name is exactly `name`.
pub async fn backends_of(pg: &tokio_postgres::Client, name: &str) -> i64 {
    pg.query_one(
        "select count(*) from pg_stat_activity where application_name = $1",
        &[&name],
    )
    .await
    .map(|r| r.get(0))
    .unwrap_or(-1)
}

pub fn leaky_app_path() -> String {
    // Test binaries live in target/<profile>/deps; the workspace's binaries one level up.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join("leaky-app");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "poolwarden-sandbox", "--bin", "leaky-app"])
            .status()
            .expect("cargo build leaky-app");
        assert!(status.success(), "building leaky-app");
    }
    path.display().to_string()
}

fn workload_json(
    name: &str,
    labels: &BTreeMap<&str, &str>,
    replicas: i32,
    env: &[(&str, &str)],
    kind: &str,
    command: Option<&[String]>,
) -> Value {
    let mut pod_labels = labels.clone();
    pod_labels.insert("app", name);
    let app_db = std::env::var("POOLWARDEN_E2E_APP_DATABASE_URL").unwrap_or_else(|_| database_url());
    let mut env_list = vec![json!({"name": "PORT", "value": APP_PORT.to_string()})];
    if !env.iter().any(|(k, _)| *k == "DATABASE_URL") {
        env_list.push(json!({"name": "DATABASE_URL", "value": app_db}));
    }
    // `fieldRef:PATH` declares a downward-API variable.
    env_list.extend(env.iter().map(|(k, v)| match v.strip_prefix("fieldRef:") {
        Some(path) => json!({"name": k, "valueFrom": {"fieldRef": {"fieldPath": path}}}),
        None => json!({"name": k, "value": v}),
    }));
    let container = match (command, std::env::var("POOLWARDEN_E2E_IMAGE")) {
        // Pods are local processes (sandbox kubelet, node agent): the image is not used.
        (Some(command), _) => json!({"name": "app", "image": "local-process", "command": command}),
        (None, Ok(image)) => json!({"name": "app", "image": image}),
        (None, Err(_)) => json!({"name": "app", "image": "leaky-app", "command": [leaky_app_path()]}),
    };
    let mut container = container;
    container["env"] = json!(env_list);
    container["ports"] = json!([{"containerPort": APP_PORT}]);
    container["readinessProbe"] = json!({"httpGet": {"path": "/healthz", "port": APP_PORT}, "periodSeconds": 1});
    let mut spec = json!({
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": pod_labels},
            "spec": {"terminationGracePeriodSeconds": 2, "containers": [container]},
        },
    });
    if kind == "Deployment" {
        spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    } else {
        spec["serviceName"] = json!(name);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    })
}

/// The controller as its own process (the `poolwarden controller` binary), for
/// crashes (SIGKILL) and graceful stops (SIGTERM).
pub struct ControllerProcess {
    child: std::process::Child,
    pub metrics_addr: SocketAddr,
    pub identity: String,
}

impl ControllerProcess {
    pub fn spawn(cluster: &Cluster, identity: &str, leader_election: bool) -> ControllerProcess {
        let metrics_addr: SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr")
        };
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_poolwarden"));
        cmd.arg("controller")
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args(["--namespace", &cluster.namespace])
            .args(["--metrics-addr", &metrics_addr.to_string()])
            .args(["--identity", identity])
            .args(["--lease-namespace", &cluster.namespace])
            .args(["--lease-duration", "3"])
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
        if std::env::var_os("RUST_LOG").is_none() {
            // Into a file of the test's own: a wait that runs out shows its last lines.
            let path = cluster
                .logs_dir
                .path()
                .join(format!("controller-{identity}-{}.log", unique("run")));
            match std::fs::File::create(&path) {
                Ok(file) => {
                    cmd.stderr(file);
                    cluster
                        .process_logs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(path);
                }
                Err(_) => {
                    cmd.stderr(std::process::Stdio::null());
                }
            }
        }
        if leader_election {
            cmd.arg("--leader-election");
        }
        let child = cmd.spawn().expect("poolwarden controller");
        ControllerProcess {
            child,
            metrics_addr,
            identity: identity.to_owned(),
        }
    }

    /// A crash: SIGKILL, nothing released.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for the exit.
    pub fn terminate(mut self) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = http_get(
            &self.metrics_addr.ip().to_string(),
            self.metrics_addr.port(),
            "/metrics",
        )
        .await?;
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `K` of the namespace, as JSON.
async fn list_json<K>(client: &Client, namespace: &str) -> Result<Vec<Value>, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let list = Api::<K>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap_or_default())
        .collect())
}

/// What the cluster shows for one test's namespace: its policies' status, workloads,
/// pods, recent Events, the database backends of its pods, and the controllers' last
/// log lines. Printed when a wait runs out.
pub async fn diagnostics(client: &Client, namespace: &str, process_logs: &Mutex<Vec<PathBuf>>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "namespace {namespace}");
    match Api::<PoolPolicy>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => {
            for p in list.items {
                let status = p.status.as_ref();
                let conditions: Vec<String> = status
                    .map(|s| {
                        s.conditions
                            .iter()
                            .map(|c| format!("{}={} ({}: {})", c.type_, c.status, c.reason, c.message))
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "policy {} generation {:?} observed {:?}\n  conditions: {}\n  workloads: {}\n  remediations: {}",
                    p.name_any(),
                    p.metadata.generation,
                    status.and_then(|s| s.observed_generation),
                    conditions.join("; "),
                    status
                        .map(|s| serde_json::to_string(&s.workloads).unwrap_or_default())
                        .unwrap_or_default(),
                    status
                        .map(|s| serde_json::to_string(&s.remediations).unwrap_or_default())
                        .unwrap_or_default(),
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "policies: {e}");
        }
    }
    let deployments = list_json::<Deployment>(client, namespace).await;
    let statefulsets = list_json::<StatefulSet>(client, namespace).await;
    for (kind, list) in [("deployment", deployments), ("statefulset", statefulsets)] {
        match list {
            Ok(items) => {
                for w in items {
                    let env: Vec<String> = w["spec"]["template"]["spec"]["containers"][0]["env"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|e| e["name"] != "DATABASE_URL")
                        .map(|e| {
                            format!(
                                "{}={}",
                                e["name"].as_str().unwrap_or("?"),
                                e.get("value").unwrap_or(&e["valueFrom"])
                            )
                        })
                        .collect();
                    let _ = writeln!(
                        out,
                        "{kind} {} generation {} replicas {} ready {} updated {}\n  env: {}",
                        w["metadata"]["name"].as_str().unwrap_or("?"),
                        w["metadata"]["generation"],
                        w["spec"]["replicas"],
                        w["status"]["readyReplicas"],
                        w["status"]["updatedReplicas"],
                        env.join(" ")
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "{kind}s: {e}");
            }
        }
    }
    let mut pod_names = Vec::new();
    match Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => {
            for p in list.items {
                let status = p.status.clone().unwrap_or_default();
                let ready = status
                    .conditions
                    .as_ref()
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                let _ = writeln!(
                    out,
                    "pod {} {} {} ip {}{}",
                    p.name_any(),
                    status.phase.as_deref().unwrap_or("?"),
                    if ready { "ready" } else { "not-ready" },
                    status.pod_ip.as_deref().unwrap_or("-"),
                    if p.metadata.deletion_timestamp.is_some() {
                        " (deleting)"
                    } else {
                        ""
                    }
                );
                pod_names.push(p.name_any());
            }
        }
        Err(e) => {
            let _ = writeln!(out, "pods: {e}");
        }
    }
    match Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => {
            let mut events = list.items;
            events.sort_by_key(|e| e.metadata.creation_timestamp.clone());
            let skip = events.len().saturating_sub(15);
            let _ = writeln!(out, "events ({} in all, the last 15):", events.len());
            for e in events.into_iter().skip(skip) {
                let _ = writeln!(
                    out,
                    "  {} {} {}/{}: {}",
                    e.type_.as_deref().unwrap_or("?"),
                    e.reason.as_deref().unwrap_or("?"),
                    e.regarding.as_ref().and_then(|r| r.kind.clone()).unwrap_or_default(),
                    e.regarding.as_ref().and_then(|r| r.name.clone()).unwrap_or_default(),
                    e.note.as_deref().unwrap_or("")
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "events: {e}");
        }
    }
    let backends = async {
        let (pg, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        pg.query(
            "select application_name, coalesce(state, '?'), count(*) from pg_stat_activity \
             where application_name = any($1) group by 1, 2 order by 1, 2",
            &[&pod_names],
        )
        .await
    };
    match tokio::time::timeout(Duration::from_secs(10), backends).await {
        Ok(Ok(rows)) => {
            let counts: Vec<String> = rows
                .iter()
                .map(|r| {
                    format!(
                        "{} {}={}",
                        r.get::<_, String>(0),
                        r.get::<_, String>(1),
                        r.get::<_, i64>(2)
                    )
                })
                .collect();
            let _ = writeln!(out, "database backends of these pods: {}", counts.join(", "));
        }
        Ok(Err(e)) => {
            let _ = writeln!(out, "database backends: {e}");
        }
        Err(_) => {
            let _ = writeln!(out, "database backends: no answer within 10 s");
        }
    }
    let in_process = super::waits::log_lines_with(namespace, 40);
    if !in_process.is_empty() {
        let _ = writeln!(out, "in-process controller log (last lines naming {namespace}):");
        for line in in_process {
            let _ = writeln!(out, "  {line}");
        }
    }
    for path in process_logs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(out, "controller process log {} (last 40 lines):", path.display());
        for line in super::waits::tail_file(path, 40) {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}
