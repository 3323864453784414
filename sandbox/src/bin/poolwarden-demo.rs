//! `make demo`: the seeds' story, live, on the sandbox and the local PostgreSQL.
//!
//! Three workloads (web, worker-odds, worker-settlement) run leaky-app with the
//! seeds' original pool (5 kept + 10 overflow, nothing ever closed, from a ConfigMap
//! nobody looks at); the sportsbook policy from `examples/` is applied and the real
//! `poolwarden controller` process is started against the sandbox. It sets the pool
//! env, the pods roll; then one worker-odds pod opens a second, untracked pool whose
//! connections never recycle, and poolwarden finds it by LifetimeOverrun alone and
//! evicts it. Ends by itself with a summary and leaves nothing running.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use clap::Parser;
use k8s_openapi::api::{core::v1::Pod, events::v1::Event};
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
};
use poolwarden_sandbox::{
    Sandbox,
    cluster::{ClusterOptions, RealCluster},
    manifests,
};
use serde_json::{Value, json};

const NAMESPACE: &str = "sportsbook";
const WORKLOADS: [(&str, i32); 3] = [("web", 2), ("worker-odds", 2), ("worker-settlement", 1)];
const PORT: u16 = 8080;
/// The longest line the demo prints: it must read in a terminal of 120 columns.
const WIDTH: usize = 120;

/// The application name the demo's pods use before poolwarden names them after
/// themselves; this run's own, so other programs on the same database do not count.
fn anonymous_name() -> String {
    format!("leaky-app-demo-{}", std::process::id())
}

#[derive(Parser, Debug)]
#[command(about = "poolwarden's demo: the seeds' leak found and fixed, live")]
struct Args {
    /// The poolwarden binary (default: next to this one).
    #[arg(long)]
    poolwarden: Option<PathBuf>,
    /// Shorter windows (for the test that runs the demo in CI).
    #[arg(long)]
    fast: bool,
    /// Give up after this many seconds (default 90 with --fast, else 150).
    #[arg(long)]
    deadline: Option<u64>,
    /// At the end, print `kubectl poolwarden status` of the demo's policy (run as
    /// `poolwarden status` against the sandbox before it stops).
    #[arg(long)]
    show_status: bool,
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Run on the real control plane (`poolwarden-cluster`: kube-apiserver,
    /// kube-controller-manager, etcd and the process node agent) from this bin
    /// dir, instead of the sandbox.
    #[arg(long, env = "POOLWARDEN_CLUSTER_BIN")]
    cluster: Option<PathBuf>,
}

/// Where the story runs: the sandbox, or the real control plane.
enum Target {
    Sandbox(Sandbox),
    Real(RealCluster),
}

impl Target {
    fn client(&self) -> kube::Client {
        match self {
            Target::Sandbox(s) => s.client(),
            Target::Real(r) => r.client(),
        }
    }

    fn kubeconfig_path(&self) -> &Path {
        match self {
            Target::Sandbox(s) => s.kubeconfig_path(),
            Target::Real(r) => r.kubeconfig_path(),
        }
    }

    fn pod_pids(&self) -> Vec<i32> {
        match self {
            Target::Sandbox(s) => s.pod_pids(),
            Target::Real(r) => r.pod_pids(),
        }
    }

    /// Creates or updates `obj`: into the sandbox's store, or with
    /// `kubectl apply --server-side` (waiting for a CRD to be Established).
    fn apply(&self, obj: Value) -> Result<(), String> {
        match self {
            Target::Sandbox(s) => manifests::apply_object(s.store(), &obj)
                .map(|_| ())
                .map_err(|e| format!("{e:?}")),
            Target::Real(r) => {
                use std::io::Write;
                let mut child = Command::new("kubectl")
                    .arg("--kubeconfig")
                    .arg(r.kubeconfig_path())
                    .args(["apply", "--server-side", "-f", "-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("kubectl: {e}"))?;
                if let Some(mut input) = child.stdin.take() {
                    input.write_all(obj.to_string().as_bytes()).map_err(|e| e.to_string())?;
                }
                let out = child.wait_with_output().map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(format!("kubectl apply: {}", String::from_utf8_lossy(&out.stderr)));
                }
                if obj["kind"] == "CustomResourceDefinition" {
                    let name = format!("crd/{}", obj["metadata"]["name"].as_str().unwrap_or_default());
                    let _ = Command::new("kubectl")
                        .arg("--kubeconfig")
                        .arg(r.kubeconfig_path())
                        .args(["wait", "--for", "condition=Established", "--timeout", "30s", &name])
                        .stdout(Stdio::null())
                        .status();
                }
                Ok(())
            }
        }
    }

    async fn shutdown(self) {
        match self {
            Target::Sandbox(s) => s.shutdown().await,
            Target::Real(r) => r.shutdown().await,
        }
    }
}

struct Timings {
    interval: &'static str,
    max_idle: u32,
    max_lifetime: u32,
    grace: &'static str,
    sustained: &'static str,
    deadline: Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} not found: build it first (make demo does)", path.display()))
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mut t = if args.fast {
        Timings {
            interval: "1s",
            max_idle: 3,
            max_lifetime: 4,
            grace: "1s",
            sustained: "4s",
            deadline: Duration::from_secs(90),
        }
    } else {
        Timings {
            interval: "2s",
            max_idle: 5,
            max_lifetime: 15,
            grace: "2s",
            sustained: "10s",
            deadline: Duration::from_secs(150),
        }
    };
    if let Some(seconds) = args.deadline {
        t.deadline = Duration::from_secs(seconds);
    }
    let poolwarden = match args.poolwarden {
        Some(p) => p,
        None => sibling("poolwarden")?,
    };
    let leaky_app = sibling("leaky-app")?;

    // The database first: without it there is nothing to show.
    let db = match tokio::time::timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(&args.database_url, tokio_postgres::NoTls),
    )
    .await
    {
        Ok(Ok((client, conn))) => {
            tokio::spawn(conn);
            client
        }
        Ok(Err(e)) => return Err(no_database(&args.database_url, &e.to_string())),
        Err(_) => return Err(no_database(&args.database_url, "timed out")),
    };

    // The real control plane's data; removed at the end, after it has stopped.
    let mut _data_dir = None;
    let sandbox = match args.cluster {
        Some(bin_dir) => {
            say("starting the real control plane (etcd, kube-apiserver, kube-controller-manager, process node)");
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let cluster = RealCluster::start(ClusterOptions {
                bin_dir,
                kubeconfig: dir.path().join("demo.kubeconfig"),
                data_dir: Some(dir.path().join("data")),
                images: Default::default(),
            })
            .await
            .map_err(|e| e.to_string())?;
            _data_dir = Some(dir);
            Target::Real(cluster)
        }
        None => {
            say("starting the sandbox (in-memory API server + process kubelet)");
            Target::Sandbox(Sandbox::start().await.map_err(|e| e.to_string())?)
        }
    };
    let result = story(&sandbox, &db, &args.database_url, &poolwarden, &leaky_app, &t).await;
    let pods = pod_names(&sandbox, &result).await;
    if args.show_status {
        let out = std::process::Command::new(&poolwarden)
            .arg("status")
            .arg("--kubeconfig")
            .arg(sandbox.kubeconfig_path())
            .args(["-n", NAMESPACE])
            .output()
            .map_err(|e| format!("running {} status: {e}", poolwarden.display()))?;
        println!(
            "\n$ kubectl poolwarden status -n {NAMESPACE}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let pids = sandbox.pod_pids();
    sandbox.shutdown().await;
    let running = pids
        .iter()
        .filter(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(**pid), None).is_ok())
        .count();
    // Every pod process is gone; so must their connections be.
    let mut left = -1i64;
    for _ in 0..50 {
        left = backends(&db, &pods).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (summary, _) = result?;
    println!("\n{summary}");
    println!("Left running: {running} pod processes, {left} database backends of the demo's pods.");
    if left != 0 || running != 0 {
        return Err(format!("{running} pod processes and {left} backends are still there"));
    }
    Ok(())
}

fn no_database(url: &str, why: &str) -> String {
    let shown = match url.split_once('@') {
        Some((creds, rest)) if creds.contains(':') && creds.contains("//") => {
            format!("{}//***@{rest}", creds.split("//").next().unwrap_or_default())
        }
        _ => url.to_owned(),
    };
    format!("the demo needs a PostgreSQL: {shown} is not reachable ({why}). Start one, or set DATABASE_URL.")
}

fn say(s: &str) {
    print_wrapped("==> ", "    ", s);
}

/// Prints `text` after `first`, wrapped at word boundaries to [`WIDTH`] columns, the
/// following lines after `rest`.
fn print_wrapped(first: &str, rest: &str, text: &str) {
    for line in wrap(first, rest, text) {
        println!("{line}");
    }
}

fn wrap(first: &str, rest: &str, text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            lines.push(std::mem::replace(&mut line, rest.to_owned()));
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    lines.push(line);
    lines
}

async fn story(
    sandbox: &Target,
    db: &tokio_postgres::Client,
    database_url: &str,
    poolwarden: &Path,
    leaky_app: &Path,
    t: &Timings,
) -> Result<(String, BTreeSet<String>), String> {
    let apply = |obj: Value| sandbox.apply(obj);
    let crd = Command::new(poolwarden)
        .arg("crd")
        .output()
        .map_err(|e| format!("running {} crd: {e}", poolwarden.display()))?;
    for doc in manifests::parse_documents(&String::from_utf8_lossy(&crd.stdout))? {
        apply(doc)?;
    }
    apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))?;
    apply(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg-monitor", "namespace": NAMESPACE},
        "stringData": {"url": database_url}}),
    )?;
    // The seeds' original pool: 5 kept, 10 overflow, nothing ever closed.
    apply(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sportsbook-pool", "namespace": NAMESPACE},
        "data": {"DB_POOL_MIN": "5", "DB_POOL_MAX": "15", "DB_POOL_MAX_IDLE": "0", "DB_POOL_MAX_LIFETIME": "0",
                 "PGAPPNAME": anonymous_name()}}),
    )?;
    for (name, replicas) in WORKLOADS {
        apply(workload(name, replicas, database_url, leaky_app))?;
    }
    say("web (2), worker-odds (2), worker-settlement (1) deployed with the seeds' pool: min 5, max 15, never closed");

    let pods: Api<Pod> = Api::namespaced(sandbox.client(), NAMESPACE);
    wait_ready(&pods, 5, Duration::from_secs(60)).await?;
    let traffic = tokio::spawn(traffic(pods.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut seen_pods: BTreeSet<String> = BTreeSet::new();
    let mut current = current_pods(&pods).await;
    seen_pods.extend(current.iter().cloned());
    let before = backends(db, &[anonymous_name()]).await;
    say(&format!(
        "before poolwarden: {before} connections, every one named {:?}: nobody can tell whose they are",
        anonymous_name()
    ));

    // The policy from examples/, with its windows shortened so the demo fits in two minutes.
    let example = include_str!("../../../examples/sportsbook.yaml");
    let mut policy = manifests::parse_documents(example)?
        .into_iter()
        .next()
        .ok_or("examples/sportsbook.yaml is empty")?;
    policy["metadata"]["namespace"] = json!(NAMESPACE);
    policy["spec"]["interval"] = json!(t.interval);
    if policy["spec"]["poolStats"].is_object() {
        // A scrape may not take longer than a pass (poolStats.timeout ≤ interval).
        policy["spec"]["poolStats"]["timeout"] = json!(t.interval);
    }
    policy["spec"]["pool"]["maxIdleSeconds"] = json!(t.max_idle);
    policy["spec"]["pool"]["maxLifetimeSeconds"] = json!(t.max_lifetime);
    policy["spec"]["discrepancy"]["grace"] = json!(t.grace);
    policy["spec"]["discrepancy"]["sustainedFor"] = json!(t.sustained);
    apply(policy.clone())?;
    say("applied examples/sportsbook.yaml");
    say(&format!(
        "(windows shortened for the demo: interval {}, maxIdleSeconds {}, maxLifetimeSeconds {}, grace {}, sustainedFor {})",
        t.interval, t.max_idle, t.max_lifetime, t.grace, t.sustained
    ));

    say("starting `poolwarden controller`");
    let mut controller = Controller(
        Command::new(poolwarden)
            .arg("controller")
            .arg("--kubeconfig")
            .arg(sandbox.kubeconfig_path())
            .args(["--namespace", NAMESPACE, "--metrics-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the controller: {e}"))?,
    );

    let gvk = GroupVersionKind::gvk("poolwarden.io", "v1alpha1", "PoolPolicy");
    let policies: Api<DynamicObject> = Api::namespaced_with(sandbox.client(), NAMESPACE, &ApiResource::from_gvk(&gvk));
    let events: Api<Event> = Api::namespaced(sandbox.client(), NAMESPACE);
    let started = Instant::now();
    let mut seen_events = BTreeSet::new();
    let mut leaker: Option<String> = None;
    let mut held_when_leak_began = 0;
    let mut finished = None;
    while started.elapsed() < t.deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let status = policies
            .get("sportsbook")
            .await
            .ok()
            .map(|p| p.data["status"].clone())
            .unwrap_or(Value::Null);
        println!("\n[{:>3}s] {}", started.elapsed().as_secs(), conditions(&status));
        for row in status["workloads"].as_array().into_iter().flatten() {
            for line in render_row(row) {
                println!("        {line}");
            }
        }
        let now = current_pods(&pods).await;
        for line in pod_changes(&current, &now) {
            print_wrapped("        ", "          ", &line);
        }
        seen_pods.extend(now.iter().cloned());
        current = now;
        let mut new_events: Vec<Event> = events
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("PoolPolicy"))
            .filter(|e| seen_events.insert(e.name_any()))
            .collect();
        new_events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        for e in new_events {
            let text = format!("event {}: {}", e.reason.unwrap_or_default(), e.note.unwrap_or_default());
            print_wrapped("        ", "          ", &text);
        }
        let in_sync = status["workloads"]
            .as_array()
            .is_some_and(|ws| ws.len() == 3 && ws.iter().all(|w| w["envInSync"] == true));
        let settled = in_sync && status_condition(&status, "Reconciling") == Some(false);
        match &leaker {
            None if settled && ready_count(&pods).await == 5 => {
                let odds = ready_pods(&pods, "worker-odds").await;
                if let Some(p) = odds.first() {
                    let name = p.name_any();
                    get(p, "/untracked?n=5").await;
                    say(&format!(
                        "{name} opens a second pool of 5 connections that never recycle (the forgotten ORM pool)"
                    ));
                    held_when_leak_began = backends(db, std::slice::from_ref(&name)).await;
                    leaker = Some(name);
                }
            }
            Some(name) => {
                let gone = pods.get_opt(name).await.ok().flatten().is_none();
                if gone && backends(db, std::slice::from_ref(name)).await == 0 && ready_count(&pods).await == 5 {
                    finished = Some(status.clone());
                    break;
                }
            }
            None => {}
        }
    }
    traffic.abort();
    controller.stop();
    let Some(status) = finished else {
        return Err(format!("the demo did not finish within {}s", t.deadline.as_secs()));
    };
    let leaker = leaker.unwrap_or_default();
    let after = backends(db, &current.iter().cloned().collect::<Vec<_>>()).await;
    let anonymous_after = backends(db, &[anonymous_name()]).await;
    let record = status["remediations"]
        .as_array()
        .and_then(|r| r.iter().find(|h| h["pod"] == json!(leaker)))
        .cloned()
        .unwrap_or(Value::Null);
    let summary = [
        format!(
            "Found:  {leaker} held connections older than maxLifetimeSeconds + grace ({}: per-pod values {}, limit {}, \
             exceeding since {}); it held {held_when_leak_began} connections when the leak began.",
            record["measure"].as_str().unwrap_or("?"),
            record["values"],
            record["limit"],
            record["since"].as_str().unwrap_or("?"),
        ),
        format!(
            "Done:   pool env set on 3 workloads: DB_POOL_MIN 5 -> {}, DB_POOL_MAX 15 -> {}, idle timeout never -> {}s, \
             lifetime never -> {}s, PGAPPNAME = the pod's name; {} pods replaced by the rollouts.",
            policy["spec"]["pool"]["minSize"],
            policy["spec"]["pool"]["maxSize"],
            t.max_idle,
            t.max_lifetime,
            seen_pods.len().saturating_sub(current.len()),
        ),
        format!(
            "        {leaker} evicted at {} ({}).",
            record["at"].as_str().unwrap_or("?"),
            record["reason"].as_str().unwrap_or("?"),
        ),
        format!(
            "Before: {before} connections, all named {:?}: none could be told apart.",
            anonymous_name()
        ),
        format!(
            "After:  {after} connections, each named after its pod ({anonymous_after} still anonymous); \
             the leaking pod's are gone."
        ),
    ];
    let mut text = String::from("Summary");
    for line in summary {
        for wrapped in wrap("", "        ", &line) {
            text.push('\n');
            text.push_str(&wrapped);
        }
    }
    Ok((text, seen_pods))
}

/// The controller process; SIGTERM on stop, SIGKILL if it is still there on drop.
struct Controller(Child);

impl Controller {
    fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn workload(name: &str, replicas: i32, database_url: &str, leaky_app: &Path) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {
            "app.kubernetes.io/part-of": "sportsbook", "app.kubernetes.io/component": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/component": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/part-of": "sportsbook", "app.kubernetes.io/component": name}},
                "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                    "name": "app", "image": "leaky-app", "command": [leaky_app.display().to_string()],
                    "envFrom": [{"configMapRef": {"name": "sportsbook-pool"}}],
                    "env": [{"name": "DATABASE_URL", "value": database_url}, {"name": "PORT", "value": PORT.to_string()}],
                    "ports": [{"containerPort": PORT}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": PORT}, "periodSeconds": 1},
                }]},
            },
        },
    })
}

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn ready_pods(pods: &Api<Pod>, component: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("app.kubernetes.io/component={component}"));
    let mut ps: Vec<Pod> = pods
        .list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(is_ready)
        .collect();
    ps.sort_by_key(|p| p.name_any());
    ps
}

async fn ready_count(pods: &Api<Pod>) -> usize {
    pods.list(&ListParams::default())
        .await
        .map(|l| l.items.iter().filter(|p| is_ready(p)).count())
        .unwrap_or(0)
}

async fn wait_ready(pods: &Api<Pod>, n: usize, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready_count(pods).await >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(format!("{n} pods did not become ready within {}s", timeout.as_secs()))
}

/// Every pod the demo ran (those still listed and those it saw replaced) and the
/// anonymous name: exact names, so another program's backends never count.
async fn pod_names(sandbox: &Target, result: &Result<(String, BTreeSet<String>), String>) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(sandbox.client(), NAMESPACE);
    let mut names: BTreeSet<String> = pods
        .list(&ListParams::default())
        .await
        .map(|l| l.items.iter().map(|p| p.name_any()).collect())
        .unwrap_or_default();
    if let Ok((_, seen)) = result {
        names.extend(seen.iter().cloned());
    }
    names.insert(anonymous_name());
    names.into_iter().collect()
}

/// The names of the pods not being deleted.
async fn current_pods(pods: &Api<Pod>) -> BTreeSet<String> {
    pods.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| p.name_any())
                .collect()
        })
        .unwrap_or_default()
}

/// One line per workload whose pods changed since the last look: which were
/// replaced by which.
fn pod_changes(before: &BTreeSet<String>, now: &BTreeSet<String>) -> Vec<String> {
    let mut lines = Vec::new();
    for (workload, _) in WORKLOADS {
        // Pod names are `<workload>-<template hash>-<suffix>`: the hash has no dash.
        let of = |name: &&String| {
            name.strip_prefix(workload)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|rest| rest.matches('-').count() == 1)
        };
        let gone: Vec<&str> = before.difference(now).filter(of).map(String::as_str).collect();
        let new: Vec<&str> = now.difference(before).filter(of).map(String::as_str).collect();
        if gone.is_empty() && new.is_empty() {
            continue;
        }
        let mut line = format!("pods of {workload}:");
        if !gone.is_empty() {
            line.push_str(&format!(" {} replaced", gone.join(", ")));
        }
        if !new.is_empty() {
            line.push_str(&format!(
                "{} {} started",
                if gone.is_empty() { "" } else { ";" },
                new.join(", ")
            ));
        }
        lines.push(line);
    }
    lines
}

/// Some work on every ready pod each second, so the pools are used as in production.
async fn traffic(pods: Api<Pod>) {
    loop {
        for p in pods
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .iter()
            .filter(|p| is_ready(p))
        {
            get(p, "/work").await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn get(p: &Pod, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ip = p.status.as_ref()?.pod_ip.clone()?;
    let fut = async {
        let mut s = tokio::net::TcpStream::connect((ip.as_str(), PORT)).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), fut).await.ok().flatten()
}

/// Backends whose application_name is exactly one of `names`.
async fn backends(db: &tokio_postgres::Client, names: &[String]) -> i64 {
    db.query_one(
        "select count(*) from pg_stat_activity where application_name = any($1)",
        &[&names],
    )
    .await
    .map(|r| r.get(0))
    .unwrap_or(-1)
}

fn status_condition(status: &Value, type_: &str) -> Option<bool> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| c["status"] == "True")
}

fn conditions(status: &Value) -> String {
    let mut out = Vec::new();
    for t in ["Ready", "Reconciling", "Degraded", "DatabaseReachable", "Conflict"] {
        if let Some(v) = status_condition(status, t) {
            out.push(format!("{t}={}", if v { "True" } else { "False" }));
        }
    }
    if out.is_empty() {
        "waiting for the first status".into()
    } else {
        out.join(" ")
    }
}

fn render_row(row: &Value) -> Vec<String> {
    let c = &row["connections"];
    let conns = if c.is_null() {
        "connections unknown".to_owned()
    } else {
        format!(
            "{} connections (active {}, idle {}, idle in transaction {})",
            c["total"].as_u64().unwrap_or(0),
            c["active"].as_u64().unwrap_or(0),
            c["idle"].as_u64().unwrap_or(0),
            c["idleInTransaction"].as_u64().unwrap_or(0)
        )
    };
    let worst = match row["worstValue"].as_u64() {
        Some(v) => v.to_string(),
        None => "unknown".into(),
    };
    let pods = row["pods"].as_u64().unwrap_or(0);
    let mut lines = vec![format!(
        "{:<18} {pods} {}  {conns}  env {}",
        row["name"].as_str().unwrap_or("?"),
        if pods == 1 { "pod " } else { "pods" },
        if row["envInSync"] == true { "in sync" } else { "pending" },
    )];
    if let Some(measure) = row["measure"].as_str() {
        lines.push(format!(
            "{:<18} {measure}: worst pod {worst}, limit {} per pod",
            "", row["limit"]
        ));
    }
    for e in row["exceeding"].as_array().into_iter().flatten() {
        lines.push(format!(
            "{:<18} EXCEEDING: {} since {}",
            "",
            e["pod"].as_str().unwrap_or("?"),
            e["since"].as_str().unwrap_or("?")
        ));
    }
    lines
}
