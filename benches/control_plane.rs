//! The controller on the real control plane (kube-apiserver, kube-controller-manager,
//! etcd: `tests/cluster/build.sh`, as `make test-cluster`): one policy over N
//! Deployments (replicas 0). Prints the baseline — the same N env applies (the very
//! bodies poolwarden sends) by a minimal client at poolwarden's concurrency — then
//! poolwarden's start → every env applied and start → the status says in sync, the
//! controller's CPU and peak RSS, the API server's and etcd's CPU over the same time,
//! and the policy's status in bytes. With `--leak`, one more Deployment runs
//! leaky-app with a leak, and the bench times its pod's eviction.
//!
//! `POOLWARDEN_CLUSTER_BIN=$(tests/cluster/build.sh | tail -1) cargo bench --bench
//! control_plane -- --deployments 10000 [--leak]`; the leak needs `cargo build -p
//! poolwarden-sandbox --bin leaky-app` and a PostgreSQL at `DATABASE_URL`. Hold
//! `flock /var/tmp/pw-cluster.lock` around it on a shared machine: the control
//! plane's ports are fixed.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Namespace, Pod, Secret},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use poolwarden::{
    decide::env::desired_env,
    platform::kubernetes::{actions::env_apply_body, reconcile::WRITE_CONCURRENCY},
    policy::{PoolPolicy, WorkloadKind, validate},
};
use poolwarden_sandbox::cluster::{ClusterOptions, RealCluster};
use serde_json::{Value, json};

const NS: &str = "bench";
const BASELINE_NS: &str = "baseline";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// CPU time (user + system) of a process so far, from /proc/PID/stat.
fn cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// (VmHWM, VmRSS) in KiB.
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body.split_once("\r\n\r\n")?.1.to_owned())
}

/// The sum of every series of `metric` whose labels contain `label`.
fn sum(metrics: &str, metric: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(metric) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn policy_yaml(leak: bool) -> Value {
    let mut spec = json!({
        "selector": {"matchLabels": {"bench": "fleet"}},
        "interval": "2s",
        "database": {"urlSecretRef": {"name": "pg", "key": "url"}},
        "pool": {"minSize": 0, "maxSize": 5, "maxIdleSeconds": 2, "maxLifetimeSeconds": 3},
    });
    if leak {
        spec["discrepancy"] = json!({"measure": "LifetimeOverrun", "max": 1, "sustainedFor": "3s", "grace": "1s"});
        spec["remediation"] =
            json!({"action": "RestartPod", "cooldown": "1h", "maxRestartsPerHour": 2, "minAvailableReplicas": 0});
    }
    json!({"apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPolicy",
           "metadata": {"name": "fleet", "namespace": NS}, "spec": spec})
}

fn deployment(name: &str, ns: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"bench": "fleet"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{
                "name": "app", "image": "example/app:1.0",
                "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": "8080"}]}]}}}
    }))
    .expect("a Deployment")
}

/// The leaky app, one replica, in the policy's selection.
fn leaky(app: &str, database_url: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "leaky", "namespace": NS, "labels": {"bench": "fleet"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "leaky"}},
            "template": {"metadata": {"labels": {"app": "leaky"}}, "spec": {
                "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "app", "image": "leaky-app", "command": [app],
                // Already the policy's pool env: the leaky pod is not rolled when the
                // policy comes, while the kube-controller-manager rolls the N others
                // (at its default 20 requests a second, minutes for thousands).
                "env": [{"name": "PORT", "value": "8080"}, {"name": "DATABASE_URL", "value": database_url},
                        {"name": "DB_POOL_MIN", "value": "0"}, {"name": "DB_POOL_MAX", "value": "5"},
                        {"name": "DB_POOL_MAX_IDLE", "value": "2"}, {"name": "DB_POOL_MAX_LIFETIME", "value": "3"},
                        {"name": "PGAPPNAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}}]}}}
    }))
    .expect("a Deployment")
}

async fn create_all(client: &Client, ns: &str, n: usize) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &deployment(&format!("app-{i:05}"), ns))
                    .await
                    .map(drop)
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .expect("creating Deployments");
}

/// The baseline: the env apply poolwarden would send to each Deployment of `ns`, sent
/// by a plain client at `concurrency`, the answer read and dropped as poolwarden does.
async fn baseline(client: &Client, ns: &str, n: usize, concurrency: usize) -> Duration {
    let policy = validate(&serde_json::from_value(policy_yaml(false)["spec"].clone()).expect("spec")).expect("valid");
    let env: BTreeMap<String, _> = desired_env(&policy).into_iter().collect();
    let owned = BTreeMap::from([("app".to_owned(), env)]);
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let name = format!("app-{i:05}");
            let body = env_apply_body(WorkloadKind::Deployment, &name, ns, &owned);
            let client = client.clone();
            async move {
                let url = format!("/apis/apps/v1/namespaces/{ns}/deployments");
                let request = kube::core::Request::new(url)
                    .patch(&name, &PatchParams::apply("bench-baseline"), &Patch::Apply(&body))
                    .expect("request");
                client.request_text(request).await.map(drop)
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await
        .expect("baseline applies");
    started.elapsed()
}

/// CPU of the control plane's processes so far, by name.
fn plane_cpu(cluster: &RealCluster) -> BTreeMap<&'static str, Duration> {
    cluster
        .process_ids()
        .into_iter()
        .filter_map(|(name, pid)| Some((name, cpu(pid)?)))
        .collect()
}

#[tokio::main]
async fn main() {
    let n = arg("--deployments", 2000) as usize;
    let leak = flag("--leak");
    let bin_dir =
        PathBuf::from(std::env::var("POOLWARDEN_CLUSTER_BIN").expect(
            "POOLWARDEN_CLUSTER_BIN: the control plane's binaries, as `tests/cluster/build.sh | tail -1` prints",
        ));
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = RealCluster::start(ClusterOptions {
        bin_dir,
        kubeconfig: dir.path().join("bench.kubeconfig"),
        data_dir: Some(dir.path().join("data")),
        images: Default::default(),
    })
    .await
    .expect("the control plane");
    let client = cluster.client();
    let database_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = crd_object(&poolwarden::crd::crd_yaml());
    crds.create(&PostParams::default(), &crd).await.expect("the CRD");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [NS, BASELINE_NS] {
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .expect("namespace");
    }
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "pg"}, "stringData": {"url": database_url}})).unwrap();
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    // The CRD is served once established.
    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    let t = Instant::now();
    while policies.list(&ListParams::default()).await.is_err() && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    if leak {
        let app = leaky_app();
        Api::<Deployment>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &leaky(&app, &database_url))
            .await
            .expect("leaky Deployment");
        assert!(
            ready_leaky_pod(&client).await.is_some(),
            "the leaky pod did not become ready in 120 s"
        );
    }
    let setup = Instant::now();
    create_all(&client, BASELINE_NS, n).await;
    create_all(&client, NS, n).await;
    println!(
        "setup: 2 × {n} Deployments (replicas 0) in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let plane_before = plane_cpu(&cluster);
    let base = baseline(&client, BASELINE_NS, n, WRITE_CONCURRENCY).await;
    let plane_base = plane_cpu(&cluster);
    let base_one = if n <= 2000 {
        Some(baseline(&client, BASELINE_NS, n, 1).await)
    } else {
        None
    };

    let policy: PoolPolicy = serde_json::from_value(policy_yaml(leak)).unwrap();
    policies.create(&PostParams::default(), &policy).await.expect("policy");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let plane_start = plane_cpu(&cluster);
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .arg("controller")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(["--namespace", NS, "--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("poolwarden controller");
    let pid = child.id();
    let expected = n + usize::from(leak);
    let mut peak = 0u64;
    let (mut applied_at, mut reported_at) = (None, None);
    while started.elapsed() < Duration::from_secs(600) && reported_at.is_none() {
        if let Some((hwm, _)) = memory(pid) {
            peak = peak.max(hwm);
        }
        let metrics = scrape(port).unwrap_or_default();
        // Every apply counted, or a pass that found every env in sync: an apply in
        // flight when a pass's deadline cut it may have landed uncounted.
        let out_of_sync = metrics
            .lines()
            .find(|l| l.starts_with("poolwarden_policy_workloads_env_out_of_sync"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        let applied = sum(&metrics, "poolwarden_env_writes_total", "result=\"applied\"");
        if applied_at.is_none() && (applied >= n as f64 || out_of_sync == Some(0.0)) {
            applied_at = Some(started.elapsed());
        }
        let status = policies.get_status("fleet").await.ok().and_then(|p| p.status);
        if status.is_some_and(|s| s.workload_count as usize == expected && s.out_of_sync_count == 0) {
            reported_at = Some(started.elapsed());
            applied_at.get_or_insert(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let controller_cpu = cpu(pid);
    let plane_end = plane_cpu(&cluster);

    let evicted_after = if leak { Some(leak_and_wait(&client).await) } else { None };
    let metrics = scrape(port).unwrap_or_default();
    let errors = sum(&metrics, "poolwarden_reconcile_errors_total", "");
    let status = policies
        .get_status("fleet")
        .await
        .ok()
        .and_then(|p| p.status)
        .unwrap_or_default();
    let status_bytes = serde_json::to_vec(&status).map_or(0, |v| v.len());
    if leak && evicted_after.flatten().is_none() {
        // What the controller saw, to say why nothing was evicted.
        let row = status.workloads.iter().find(|w| w.name == "leaky");
        println!(
            "no eviction; the leaky row: {}",
            serde_json::to_string(&row).unwrap_or_default()
        );
        println!(
            "conditions: {}",
            serde_json::to_string(&status.conditions).unwrap_or_default()
        );
        println!(
            "remediations: {}",
            serde_json::to_string(&status.remediations).unwrap_or_default()
        );
    }
    let (hwm, rss) = memory(pid).unwrap_or((peak, 0));
    let apiserver_rss = cluster
        .process_ids()
        .into_iter()
        .filter_map(|(name, pid)| Some((name, memory(pid)?.1)))
        .collect::<Vec<_>>();
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = child.wait();
    cluster.shutdown().await;

    let secs = |d: Option<Duration>| {
        d.map_or("not reached in 600 s".to_owned(), |d| {
            format!("{:.1} s", d.as_secs_f64())
        })
    };
    let spent = |a: &BTreeMap<&str, Duration>, b: &BTreeMap<&str, Duration>, name: &str| {
        b.get(name)
            .zip(a.get(name))
            .map_or(0.0, |(b, a)| b.saturating_sub(*a).as_secs_f64())
    };
    println!("\n| figure ({n} Deployments, one policy) | value |");
    println!("| --- | --- |");
    println!(
        "| baseline: {n} env applies at concurrency {WRITE_CONCURRENCY} | {:.1} s (API server CPU {:.1} s, etcd {:.1} s) |",
        base.as_secs_f64(),
        spent(&plane_before, &plane_base, "kube-apiserver"),
        spent(&plane_before, &plane_base, "etcd")
    );
    if let Some(one) = base_one {
        println!("| baseline at concurrency 1 | {:.1} s |", one.as_secs_f64());
    }
    println!("| poolwarden: start → every env applied | {} |", secs(applied_at));
    println!("| poolwarden: start → status says in sync | {} |", secs(reported_at));
    if let (Some(a), true) = (applied_at, base > Duration::ZERO) {
        println!(
            "| start → applied / baseline | {:.2}× |",
            a.as_secs_f64() / base.as_secs_f64()
        );
    }
    println!(
        "| CPU to sync: controller / API server / etcd | {:.1} s / {:.1} s / {:.1} s |",
        controller_cpu.map_or(0.0, |c| c.as_secs_f64()),
        spent(&plane_start, &plane_end, "kube-apiserver"),
        spent(&plane_start, &plane_end, "etcd")
    );
    println!(
        "| controller peak RSS (VmHWM) / at the end | {:.1} MiB / {:.1} MiB |",
        hwm.max(peak) as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    for (name, kib) in apiserver_rss {
        println!("| {name} RSS at the end | {:.0} MiB |", kib as f64 / 1024.0);
    }
    println!(
        "| policy status | {status_bytes} bytes, {} rows, truncated {} |",
        status.workloads.len(),
        status.workloads_truncated
    );
    println!("| failed passes | {} |", errors as u64);
    if let Some(after) = evicted_after {
        let after = after.map_or("not within 180 s".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        println!("| leak opened → leaking pod evicted | {after} |");
    }
}

/// The YAML of the CRD as an object.
fn crd_object(yaml: &str) -> CustomResourceDefinition {
    let docs = poolwarden_sandbox::manifests::parse_documents(yaml).expect("the CRD's YAML");
    serde_json::from_value(docs.into_iter().next().expect("one document")).expect("a CRD")
}

/// leaky-app, next to the bench's own target directory's binaries.
fn leaky_app() -> String {
    let exe = std::env::current_exe().expect("current exe");
    let target = exe
        .parent()
        .and_then(|d| d.parent())
        .and_then(|d| d.parent())
        .expect("target dir");
    for profile in ["release", "debug"] {
        let path = target.join(profile).join("leaky-app");
        if path.exists() {
            return path.display().to_string();
        }
    }
    panic!("leaky-app not built: cargo build -p poolwarden-sandbox --bin leaky-app");
}

/// The leaky app's ready pod, once there is one (within 120 s).
async fn ready_leaky_pod(client: &Client) -> Option<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let lp = ListParams::default().labels("app=leaky");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(120) {
        let ready = pods.list(&lp).await.ok()?.items.into_iter().find(|p| {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            ready && p.metadata.deletion_timestamp.is_none()
        });
        if ready.is_some() {
            return ready;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Opens 3 connections outside the leaky pod's pool; returns how long until the pod
/// was evicted (None: not within 180 s).
async fn leak_and_wait(client: &Client) -> Option<Duration> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod = ready_leaky_pod(client).await?;
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let name = pod.name_any();
    let answer = http_get(&ip, "/untracked?n=3").await;
    println!("leak opened in {name} ({ip}): {}", answer.is_some());
    let leaked = Instant::now();
    while leaked.elapsed() < Duration::from_secs(180) {
        // Evicted: being deleted (its grace period runs), or gone.
        let pod = pods.get_opt(&name).await.ok()?;
        if pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some()) {
            return Some(leaked.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

async fn http_get(host: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((host, 8080)).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}
